"""Where the product data lives: ``targets/`` and ``tuned_logs/``.

In a source checkout (and an editable install) they are the top-level folders of the repository; a
wheel carries them inside the package as ``tvm_pipeline/shipped_targets`` and
``tvm_pipeline/shipped_logs`` (see ``[tool.setuptools.package-dir]`` in pyproject.toml).
"""

from __future__ import annotations

from pathlib import Path

from .errors import InputFileError

_PACKAGE = Path(__file__).resolve().parent
_INSTALLED_NAMES = {"targets": "shipped_targets", "tuned_logs": "shipped_logs"}


def data_dir(name: str) -> Path:
    """The folder holding the shipped ``targets`` or ``tuned_logs``."""
    installed = _PACKAGE / _INSTALLED_NAMES[name]
    if installed.is_dir():
        return installed
    checkout = _PACKAGE.parent / name
    if checkout.is_dir():
        return checkout
    raise InputFileError(f"The package data folder '{name}' is missing (looked in {installed} and "
                         f"{checkout}).", hint="Reinstall tvm-pipeline with `pip install .`.")
