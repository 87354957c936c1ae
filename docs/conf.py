"""Sphinx configuration of the minimalsgd documentation.

Build (after ``pip install ".[docs]"``, which installs minimalsgd itself: autodoc imports the
installed package, never the source tree, whose extension is not built in place)::

    python -m sphinx -W -n --keep-going -b html docs docs/_build/html

The code of the guides and the docstring examples run under the doctest builder
(``python -m sphinx -W -n -b doctest docs docs/_build/doctest``); ``.ci/docs.sh`` runs both.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import minimalsgd

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))  # the gallery's argv hook (a module: Sphinx pickles the config)

project = "minimalsgd"
author = "the minimalsgd authors"
copyright = "the minimalsgd authors, MIT License"
release = minimalsgd.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "sphinx_design",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "**/GALLERY_HEADER.rst", "auto_examples/*.ipynb", "auto_examples/**/*.ipynb"]
templates_path = []

# Warnings are errors in CI (-W) and every cross-reference must resolve (-n). There is no network
# at build time (no intersphinx), so names of other projects stay plain text; these patterns are
# the ones that numpydoc or autodoc turn into references on their own.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(numpy|np|torch|mpi4py|MPI|ml_dtypes|threadpoolctl)(\..*)?"),
    (r"py:.*", r"(optional|callable|array_like|ndarray|dtype|iterable|mapping|sequence|dict|list|tuple|int|float|bool|str|None|object|type)"),
]

# --- autodoc and numpydoc: the public names, documented from their docstrings -------------------
autodoc_typehints = "none"  # the types are in the numpydoc "Parameters" sections
autodoc_member_order = "bysource"
autodoc_default_options: dict[str, object] = {}
autosummary_generate = False
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_attributes_as_param_list = True
numpydoc_validation_checks = {"PR01", "PR02", "RT01"}

# --- MyST (Markdown pages) ----------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist", "dollarmath"]
myst_heading_anchors = 3

# --- doctest: the guides' code (testcode blocks) and the docstrings' examples -------------------
doctest_global_setup = """
import importlib.util

import numpy as np
import minimalsgd
"""
doctest_test_doctest_blocks = "default"

# --- sphinx-gallery: examples/ rendered with their plots -------------------------------------------
# The two NumPy examples run at every build in their --quick modes (a few seconds each); the MPI
# example and the C++ program are shown, not run.
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"(bf16_rounding|notebook_comparison)\.py$",
    "example_extensions": {".py", ".cpp"},
    "reset_argv": "gallery_argv.reset_argv",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "image_scrapers": ("matplotlib",),
    "write_computation_times": True,
    "show_signature": False,
}

# --- HTML -----------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"minimalsgd {release}"
html_static_path = []
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "header_links_before_dropdown": 6,
    "secondary_sidebar_items": ["page-toc"],
}
html_context = {"default_mode": "light"}
html_show_sourcelink = False


# --- the installed package must be this checkout's -------------------------------------------------
def _check_installed_package(app) -> None:
    """autodoc documents the installed minimalsgd; warn (an error under -W) when its Python files
    differ from the checkout's, so that stale docstrings never reach the pages."""
    from sphinx.util import logging

    source = ROOT / "python" / "minimalsgd"
    installed = Path(minimalsgd.__file__).resolve().parent
    if not source.is_dir() or installed == source.resolve():
        return
    differ = sorted(
        str(f.relative_to(source))
        for f in source.rglob("*.py")
        if not (installed / f.relative_to(source)).is_file()
        or (installed / f.relative_to(source)).read_bytes() != f.read_bytes()
    )
    if differ:
        logging.getLogger(__name__).warning(
            "the installed minimalsgd (%s) is not this checkout's: %s differ; run `pip install .` "
            "(or `pip install \".[docs]\"`) before building the docs", installed, ", ".join(differ[:5])
        )


def setup(app):
    app.connect("builder-inited", _check_installed_package)
