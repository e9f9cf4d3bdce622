"""Sphinx configuration of kronnet's documentation.

Build with warnings as errors (as CI does)::

    sphinx-build -W -b html docs docs/_build/html

The API pages are generated from the docstrings of the *installed* kronnet
(``pip install -e ".[docs]"``), which follow the numpydoc convention; the
Markdown pages are read by MyST.
"""

from __future__ import annotations

import kronnet

# -- Project -----------------------------------------------------------------

project = "kronnet"
author = "the kronnet developers"
copyright = "the kronnet developers"
# The version lives only in Cargo.toml; the built package reports it.
release = kronnet.__version__
version = ".".join(release.split(".")[:2])

# -- General -----------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# The benchmark JSON and plot are data, not pages.
exclude_patterns = ["_build", "**.json", "**.png", "Thumbs.db", ".DS_Store"]

# -- autodoc / autosummary / numpydoc ---------------------------------------

autodoc_typehints = "none"  # the types are in the numpydoc Parameters sections
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": False}
autosummary_generate = False  # the API page lists its objects explicitly

# Members are documented by autodoc's :members:, not by numpydoc's tables,
# so each method and property appears once.
numpydoc_show_class_members = False
numpydoc_show_inherited_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
# Every docstring must parse and have the sections the convention asks for
# (tests/test_docstrings.py checks Examples and Parameters too); with -W a
# violation fails the build.
numpydoc_validation_checks = {"GL08", "PR01", "PR02", "PR07", "RT03", "SS01"}
# A typing.Protocol's signature is Protocol's own (*args, **kwargs): the
# protocol takes no parameters of its own to document.
numpydoc_validation_exclude = {r"^kronnet\.placement\.Placement$"}

# -- MyST --------------------------------------------------------------------

myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3

# -- HTML --------------------------------------------------------------------

html_theme = "alabaster"
html_title = f"kronnet {release}"
html_static_path: list[str] = []
html_theme_options = {
    "description": "Exact Kronecker-structured SGD for two-layer networks",
    "fixed_sidebar": True,
}
