"""The documentation's promises, checked: every example in kronnet's
docstrings runs as a doctest, and every public object has a numpydoc
docstring with an Examples section (and Parameters, when it takes any).

The modules are imported from the installed ``kronnet`` package, never read
from ``python/``, so this runs the same from the source tree and against an
installed wheel. The numpydoc checks need numpydoc (the ``docs`` extra) and
are skipped without it.
"""

import doctest
import importlib
import inspect
import pkgutil

import kronnet
import kronnet.sklearn
import pytest

#: Every module of the library (the command line, which runs programs, and
#: the compiled core aside): their docstrings' examples all run.
MODULES = sorted(
    ["kronnet"]
    + [
        info.name
        for info in pkgutil.walk_packages(kronnet.__path__, "kronnet.")
        if not info.name.startswith(("kronnet.cli", "kronnet._core", "kronnet.__main__"))
    ]
)
#: Modules that must have at least one example of their own.
MODULES_WITH_EXAMPLES = {
    "kronnet.data.kron",
    "kronnet.data.pairs",
    "kronnet.data.generators",
    "kronnet.model.net",
    "kronnet.training.trainer",
    "kronnet.training.lr",
    "kronnet.training.history",
    "kronnet.training.config",
    "kronnet.errors",
    "kronnet.tree",
    "kronnet.sklearn",
    "kronnet.placement.mpi",
    "kronnet.placement.base",
    "kronnet.roofline",
    "kronnet.training.ridge",
    "kronnet.training.output_start",
}
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
#: A floor on the number of doctest examples over all modules, so that
#: examples cannot silently disappear (there are about 220).
MIN_EXAMPLES = 150

#: Classes whose public methods and properties are checked one by one.
CLASSES = [
    kronnet.TwoLayerNet,
    kronnet.Trainer,
    kronnet.KronPoints,
    kronnet.KronData,
    kronnet.PairData,
    kronnet.History,
    kronnet.AsyncTree,
    kronnet.sklearn.KronNetRegressor,
    kronnet.sklearn.KronNetClassifier,
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    failed, attempted = doctest.testmod(module, optionflags=FLAGS, report=True, verbose=False)
    assert failed == 0, f"{failed} of {attempted} doctest examples of {name} failed (see the captured output)"
    if name in MODULES_WITH_EXAMPLES:
        assert attempted > 0, f"{name} has no doctest examples"


def test_enough_doctest_examples():
    finder = doctest.DocTestFinder()
    total = 0
    for name in MODULES:
        module = importlib.import_module(name)
        total += sum(len(test.examples) for test in finder.find(module))
    assert total > MIN_EXAMPLES


# -- numpydoc -----------------------------------------------------------------


def _public_api():
    """(qualified name, object) of every class and function in kronnet.__all__."""
    for name in kronnet.__all__:
        obj = getattr(kronnet, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            yield f"kronnet.{name}", obj


def _public_members():
    """(qualified name, member, is_property) of the checked classes' public
    methods and properties (those the class itself defines)."""
    for cls in CLASSES:
        for name, raw in vars(cls).items():
            if name.startswith("_"):
                continue
            qualname = f"kronnet.{cls.__name__}.{name}"
            if isinstance(raw, property):
                yield qualname, raw, True
            elif isinstance(raw, (staticmethod, classmethod)) or inspect.isfunction(raw):
                yield qualname, getattr(cls, name), False


def _parameter_names(obj):
    """The names a caller can pass (no self/cls), or None without a signature."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    names = []
    for p in sig.parameters.values():
        if p.name in ("self", "cls"):
            continue
        prefix = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}.get(p.kind, "")
        names.append(prefix + p.name)
    return names


def _check_numpydoc(qualname, obj, doc):
    assert doc["Summary"] and doc["Summary"][0].strip(), f"{qualname}: no summary line"
    assert doc["Examples"], f"{qualname}: no Examples section"
    assert any(">>>" in line for line in doc["Examples"]), f"{qualname}: the Examples section has no doctest lines"
    names = _parameter_names(obj)
    if names:
        assert doc["Parameters"], f"{qualname}: takes {names} but has no Parameters section"
        documented = set()
        for param in doc["Parameters"]:
            assert param.type, f"{qualname}: parameter {param.name!r} has no type (`name : type`)"
            documented.update(n.strip() for n in param.name.split(","))
        missing = [n for n in names if n not in documented and n.lstrip("*") not in documented]
        assert not missing, f"{qualname}: parameters {missing} are not documented"


@pytest.mark.parametrize(("qualname", "obj"), list(_public_api()), ids=lambda x: x if isinstance(x, str) else "")
def test_public_api_has_numpydoc_docstring(qualname, obj):
    docscrape = pytest.importorskip("numpydoc.docscrape")
    if inspect.isclass(obj):
        doc = docscrape.ClassDoc(obj, config={"show_class_members": False})
    else:
        doc = docscrape.FunctionDoc(obj)
    _check_numpydoc(qualname, obj, doc)


@pytest.mark.parametrize(
    ("qualname", "obj", "is_property"), list(_public_members()), ids=lambda x: x if isinstance(x, str) else ""
)
def test_public_members_have_numpydoc_docstrings(qualname, obj, is_property):
    docscrape = pytest.importorskip("numpydoc.docscrape")
    if is_property:
        # Properties need only a summary line.
        assert obj.__doc__ and obj.__doc__.strip().splitlines()[0].strip(), f"{qualname}: no summary line"
        docscrape.NumpyDocString(inspect.cleandoc(obj.__doc__))  # and it must parse
        return
    _check_numpydoc(qualname, obj, docscrape.FunctionDoc(obj))


def test_every_checked_class_has_members():
    # Guards the member listing above against silently finding nothing.
    members = {q for q, _, _ in _public_members()}
    for q in (
        "kronnet.Trainer.fit",
        "kronnet.Trainer.restore",
        "kronnet.Trainer.estimate_memory",
        "kronnet.History.steps",
    ):
        assert q in members
