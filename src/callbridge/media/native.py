"""Loading the native parts: compiled twins of hot loops, built by `pip install` when a C
compiler is present (see setup.py). ``CALLBRIDGE_NATIVE=0`` keeps every one of them off, so
the Python twins run (to compare, or to rule the C code out)."""

from __future__ import annotations

import importlib
import os
from typing import Any

__all__ = ["load_native"]


def load_native(module: str) -> Any:
    """The extension module `module` (a dotted name), or None when it is not built or native
    parts are turned off."""
    if os.environ.get("CALLBRIDGE_NATIVE", "1") == "0":
        return None
    try:
        return importlib.import_module(module)
    except ImportError:
        return None
