"""The package's layout keeps its promises (docs/design.md, "Layout"):
imports flow one way (no cycle among the Python modules, none among the
Rust modules), no module reads another module's underscore names, and the
estimators and the command line use only public names.

The checks read the source (Python's own AST; the Rust files' ``use
crate::`` and ``crate::`` paths), so they hold for the tree as written, not
for what one run happens to import.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
from typing import Dict, List, Set, Tuple

import kronnet
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.dirname(os.path.abspath(kronnet.__file__))
RUST = os.path.join(ROOT, "src")


def modules() -> Dict[str, str]:
    """Dotted module name -> file, for every .py file of the package."""
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].split(os.sep)
            if rel[-1] == "__init__":
                rel = rel[:-1]
            out[".".join(rel)] = path
    return out


MODULES = modules()


def resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names (relative levels resolved)."""
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if MODULES[module].endswith("__init__.py") else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str) -> List[Tuple[str, List[str], int]]:
    """(imported module, names taken from it, line) for every import of
    `module`, at any depth (function-level imports count)."""
    tree = ast.parse(open(MODULES[module]).read())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = resolve(module, node)
            out.append((target, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                out.append((alias.name, [], node.lineno))
    return out


def is_module(name: str) -> bool:
    """Whether `name` is a module (a compiled extension counts)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def face_names(face: str) -> Dict[str, str]:
    """name -> the module it comes from, for the names a package's
    __init__ imports from its own modules."""
    out = {}
    for target, names, _ in imports_of(face):
        for n in names:
            full = f"{target}.{n}"
            out[n] = full if full in MODULES else target
    return out


def defining_module(package: str, name: str, seen: Set[str]) -> str:
    """The module a `from package import name` really reads: a submodule
    named `name`, else the module a package face took `name` from."""
    full = f"{package}.{name}"
    if full in MODULES:
        return full
    if MODULES.get(package, "").endswith("__init__.py") and package not in seen:
        source = face_names(package).get(name)
        if source is not None and source in MODULES and source != package:
            if source.endswith("." + name) and source in MODULES:
                return source
            return (
                defining_module(source, name, seen | {package}) if MODULES[source].endswith("__init__.py") else source
            )
    return package


def package_edges() -> Dict[str, Set[str]]:
    """module -> the package modules it imports, each name traced to the
    module that defines it (through package faces)."""
    edges: Dict[str, Set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for target, names, _ in imports_of(module):
            if not target.startswith("kronnet"):
                continue
            if not names:
                if target in MODULES:
                    edges[module].add(target)
                continue
            for n in names:
                full = f"{target}.{n}"
                if full not in MODULES and is_module(full):
                    continue  # the compiled extension, which imports nothing of ours
                if target in MODULES or full in MODULES:
                    edges[module].add(defining_module(target, n, set()))
        edges[module].discard(module)
    return edges


def find_cycle(edges: Dict[str, Set[str]]) -> List[str]:
    """One cycle of the graph (a list of nodes, first = last), or []."""
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def without_package_faces(edges: Dict[str, Set[str]]) -> Dict[str, Set[str]]:
    """The graph without the package faces (__init__ files that only hand
    names on): an import through one already counts as importing the module
    that defines the name; a face imported whole stands for what it imports."""
    faces = {m for m, path in MODULES.items() if path.endswith("__init__.py") and m != "kronnet"}
    faces.add("kronnet")

    def expand(node: str, seen: Set[str]) -> Set[str]:
        if node not in faces:
            return {node}
        out: Set[str] = set()
        for nxt in edges[node]:
            if nxt not in seen:
                out |= expand(nxt, seen | {nxt})
        return out

    return {m: set().union(*[expand(t, {t}) for t in targets]) - {m} for m, targets in edges.items() if m not in faces}


def test_python_imports_have_no_cycle():
    cycle = find_cycle(without_package_faces(package_edges()))
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_the_library_never_imports_the_command_line():
    edges = without_package_faces(package_edges())
    for module, targets in edges.items():
        # `python -m kronnet` is the command line.
        if module.startswith("kronnet.cli") or module == "kronnet.__main__":
            continue
        bad = {t for t in targets if t.startswith("kronnet.cli")}
        assert not bad, f"{module} imports {sorted(bad)}"


def own_private_names(tree: ast.AST) -> Set[str]:
    """Underscore names a module defines itself: functions, classes,
    module or class variables, attributes it assigns (self._x = ...)."""
    names: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for sub in ast.walk(t):
                    if isinstance(sub, ast.Attribute):
                        names.add(sub.attr)
                    elif isinstance(sub, ast.Name):
                        names.add(sub.id)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("setattr", "getattr"):
            if len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                names.add(node.args[1].value)
    return {n for n in names if n.startswith("_")}


def private_module(name: str) -> bool:
    """A private module of the package (kronnet._core, kronnet._validate):
    using them is how the package shares its own helpers."""
    return any(part.startswith("_") and not part.startswith("__") for part in name.split("."))


def reach_ins(module: str) -> List[str]:
    """Where `module` reads an underscore name that it does not define:
    another module's or another class's internals."""
    source = open(MODULES[module]).read()
    tree = ast.parse(source)
    own = own_private_names(tree)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            attr = node.attr
            if not attr.startswith("_") or (attr.startswith("__") and attr.endswith("__")):
                continue
            if attr in own:
                continue
            out.append(f"{module}:{node.lineno}: .{attr}")
        elif isinstance(node, ast.ImportFrom):
            target = resolve(module, node)
            for alias in node.names:
                name = alias.name
                full = f"{target}.{name}"
                if name.startswith("_") and not name.startswith("__") and not (full in MODULES or private_module(full)):
                    out.append(f"{module}:{node.lineno}: imports {name} from {target}")
    return out


def test_no_module_reads_another_modules_underscore_names():
    found = [hit for module in MODULES for hit in reach_ins(module)]
    assert not found, "reach-ins into other modules' internals:\n" + "\n".join(found)


def test_the_reach_in_check_flags_a_reach_in(tmp_path, monkeypatch):
    path = tmp_path / "probe.py"
    path.write_text(
        "class A:\n    def __init__(self):\n        self._mine = 1\n\ndef f(x):\n    return x._theirs, x._mine\n"
    )
    monkeypatch.setitem(MODULES, "probe", str(path))
    assert reach_ins("probe") == ["probe:6: ._theirs"]


@pytest.mark.parametrize("prefix", ["kronnet.sklearn", "kronnet.cli"])
def test_estimators_and_the_command_line_use_only_public_names(prefix):
    bad = []
    for module in MODULES:
        if not (module == prefix or module.startswith(prefix + ".")):
            continue
        for target, names, line in imports_of(module):
            if not target.startswith("kronnet"):
                continue
            if target.startswith(prefix):
                continue
            if private_module(target):
                bad.append(f"{module}:{line}: imports the private module {target}")
            bad += [
                f"{module}:{line}: imports {n} from {target}"
                for n in names
                if n.startswith("_") and not n.startswith("__")
            ]
            bad += [
                f"{module}:{line}: imports the private module {target}.{n}"
                for n in names
                if private_module(f"{target}.{n}")
            ]
        source = open(MODULES[module]).read()
        bad += [f"{module}: uses kn.{m.group(1)}" for m in re.finditer(r"\bkn\.(_[A-Za-z]\w*)", source)]
    assert not bad, "\n".join(bad)


# -- Rust --------------------------------------------------------------------


def rust_modules() -> Dict[str, str]:
    """crate path (index::tree, bindings::errors...) -> file."""
    out = {}
    for folder, _, files in os.walk(RUST):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, RUST)[:-3].split(os.sep)
            if rel[-1] == "mod":
                rel = rel[:-1]
            if rel == ["lib"]:
                continue
            out["::".join(rel)] = path
    return out


def rust_reexports(path: str, module: str) -> Dict[str, str]:
    """name -> submodule, for a folder's mod.rs `pub use sub::{A, B}` lines."""
    out = {}
    text = open(path).read()
    for m in re.finditer(r"pub use (\w+)::(\{[^}]*\}|\w+);", text):
        for name in re.findall(r"\w+", m.group(2)):
            out[name] = f"{module}::{m.group(1)}"
    return out


def rust_edges() -> Dict[str, Set[str]]:
    """module -> the crate modules it names (use crate::x::y, crate::x::f(),
    super::x inside a folder), outside its #[cfg(test)] part; a name
    re-exported by a folder's mod.rs counts as its defining file."""
    mods = rust_modules()
    reexports = {m: rust_reexports(p, m) for m, p in mods.items() if p.endswith("mod.rs")}
    edges: Dict[str, Set[str]] = {}
    for module, path in mods.items():
        text = open(path).read().split("#[cfg(test)]")[0]
        text = re.sub(r"//[^\n]*", "", text)
        here = module.split("::")
        parent = here if path.endswith("mod.rs") else here[:-1]
        found: Set[str] = set()
        for m in re.finditer(r"\b(crate|super)::((?:\w+::)*)(\{[^}]*\}|\w+)", text):
            prefix = [p for p in m.group(2).split("::") if p]
            base = [] if m.group(1) == "crate" else (here[:-1] if path.endswith("mod.rs") else parent[:-1])
            if m.group(1) == "super" and not path.endswith("mod.rs"):
                base = parent
            for last in re.findall(r"\w+", m.group(3)):
                full = base + prefix + [last]
                for k in range(len(full), 0, -1):
                    name = "::".join(full[:k])
                    if name in mods:
                        nxt = full[k] if k < len(full) else None
                        target = reexports.get(name, {}).get(nxt, name) if nxt else name
                        found.add(target)
                        break
        edges[module] = found - {module}
    faces = {m for m, p in mods.items() if p.endswith("mod.rs") and not re.search(r"\bfn \w+", open(p).read())}
    return {m: {t for t in ts if t not in faces} for m, ts in edges.items() if m not in faces}


def test_rust_modules_have_no_cycle():
    cycle = find_cycle(rust_edges())
    assert not cycle, "Rust module cycle: " + " -> ".join(cycle)


def test_each_mode_name_has_one_source_of_truth():
    """The Literal types of the public signatures spell exactly the names
    the compiled core parses (its NAMES tables), plus "auto" where a plan
    resolves it."""
    from typing import get_args

    from kronnet import _core
    from kronnet.model.net import InitName
    from kronnet.training import config

    assert get_args(config.Backend) == tuple(_core.BACKENDS) == config.BACKENDS
    assert get_args(config.IndexKind) == ("auto", *_core.INDEXES) == config.INDEXES
    assert get_args(config.GramMode) == ("auto", *_core.GRAM_MODES) == config.GRAM_MODES
    assert get_args(InitName) == tuple(_core.INITS)


# -- the text itself ----------------------------------------------------------------

#: Control characters other than tab, newline and carriage return: what a
#: Python string's escape makes of LaTeX written without a raw string
#: ("\alpha" is BEL + "lpha"; docs/guide.md carried one).
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def text_files() -> List[str]:
    """The package's Python files (.py, .pyi, wherever kronnet is imported
    from) and, in a source tree, README, CHANGELOG, docs/*.md and the Rust
    crate (a test run against an installed wheel has only the package)."""
    files = []
    for top, suffixes in ((PACKAGE, (".py", ".pyi")), (os.path.join(ROOT, "docs"), (".md",)), (RUST, (".rs",))):
        for folder, dirs, names in os.walk(top):
            dirs[:] = [d for d in dirs if not d.startswith(("_build", "."))]
            files += [os.path.join(folder, n) for n in names if n.endswith(suffixes)]
    return files + [p for p in (os.path.join(ROOT, n) for n in ("README.md", "CHANGELOG.md")) if os.path.exists(p)]


def test_text_has_no_control_characters():
    files = text_files()
    assert sum(f.endswith(".py") for f in files) > 20
    if os.path.isdir(os.path.join(ROOT, "docs")):
        assert any(f.endswith("guide.md") for f in files) and any(f.endswith(".rs") for f in files)
    bad = []
    for path in files:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if CONTROL.search(line):
                    bad.append(f"{path}:{number}: {line.strip()!r}")
    assert not bad, "\n".join(bad)
    assert CONTROL.search("over $P$ and $\alpha$") and not CONTROL.search("$\\alpha$\t\r\n")
