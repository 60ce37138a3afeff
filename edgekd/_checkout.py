"""Source checkouts: make the repository's ``deploy/`` and ``benchmarks/`` folders ``edgekd.deploy`` and
``edgekd.benchmarks``, as the wheel's ``package-dir`` mapping does when edgekd is installed.

Only a checkout needs this (the repository root on ``sys.path``, e.g. ``python -m edgekd.cli`` from a clone,
or an editable install of *another* checkout); an installed wheel has ``edgekd/deploy`` on disk and the
finder is never registered. The finder answers for exactly those two names, so a user's own top-level
``deploy`` or ``benchmarks`` package is never touched.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_ROOT = _HERE.parent
MAPPED = {"edgekd.deploy": _ROOT / "deploy", "edgekd.benchmarks": _ROOT / "benchmarks"}


class CheckoutFinder(importlib.abc.MetaPathFinder):
    """Finds ``edgekd.deploy`` / ``edgekd.benchmarks`` in this checkout (their subpackages follow)."""

    def find_spec(self, fullname, path=None, target=None):
        folder = MAPPED.get(fullname)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(fullname, folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])


def install() -> None:
    """Register :class:`CheckoutFinder` first on ``sys.meta_path`` when this is a source checkout."""
    in_checkout = not (_HERE / "deploy").is_dir() and (_ROOT / "deploy" / "__init__.py").is_file()
    if in_checkout and not any(isinstance(f, CheckoutFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, CheckoutFinder())
