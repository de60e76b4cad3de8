"""The lab session hook as shipped (components/scripts/lab-session-hook), imported as a module.

The hook is a script without a `.py` suffix; tests that call its functions directly load it here,
once per import, from the file the image installs.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path
from types import ModuleType

HOOK = Path(__file__).resolve().parents[1] / "components" / "scripts" / "lab-session-hook"


def load_hook() -> ModuleType:
    """A fresh module object of the shipped hook (its top level run, nothing else)."""
    loader = importlib.machinery.SourceFileLoader("lab_session_hook", str(HOOK))
    spec = importlib.util.spec_from_loader("lab_session_hook", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module
