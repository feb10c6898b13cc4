"""Sphinx configuration of pyfastgrad's API reference (built from the docstrings).

Build: ``pip install ".[docs]" && sphinx-build -W -b html docs/api docs/api/_build`` (``.ci/docs``).
"""
import pyfastgrad

project = "pyfastgrad"
author = "pyfastgrad developers"
copyright = "pyfastgrad developers"
release = version = pyfastgrad.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax"]
napoleon_google_docstring = False  # the docstrings are numpydoc
napoleon_numpy_docstring = True
napoleon_use_rtype = False
autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": True,
                           "member-order": "bysource"}
autodoc_typehints = "description"
autodoc_class_signature = "separated"
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path = []
html_title = f"pyfastgrad {release} API reference"
