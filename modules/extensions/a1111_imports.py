"""Which of A1111's `modules.*` an A1111 extension may import here, enforced per extension module.

Our package is also called `modules`, so `import modules.processing` or `from modules import paths`
would quietly hand an A1111 extension OUR module of that name, which it would then misuse. Each
extension file therefore runs with its own `__builtins__` whose `__import__` refuses every
`modules.X` but the compat modules, with a message that names what was imported. It applies to
the file's top-level imports and to imports inside its functions later (Python looks `__import__`
up in the module's builtins), and to nothing else in the process. Helper modules an extension
imports from its own folder run with the normal builtins: their `modules.X` imports get Python's
own error (or our module of that name) -- a known limit.
"""

from __future__ import annotations

import builtins
from types import ModuleType
from typing import Any, Mapping, Optional, Sequence

# A1111's modules this app provides (modules/scripts.py, script_callbacks.py, shared.py).
SUPPORTED_A1111_MODULES: tuple[str, ...] = ("scripts", "script_callbacks", "shared")
# This app's own typed extension API, which an extension written for this app imports.
OWN_API_MODULES: tuple[str, ...] = ("extensions.hooks",)


class UnsupportedA1111Module(ImportError):
    """An extension imported an A1111 module this app does not provide."""

    def __init__(self, module: str) -> None:
        super().__init__(f"needs {module}, which this app does not provide; "
                         f"supported: {', '.join(SUPPORTED_A1111_MODULES)}", name=module)


def _allowed(dotted: str) -> bool:
    """`dotted` is the part after "modules.": "scripts", "extensions.hooks", "sd_models.x"..."""
    head = dotted.split(".", 1)[0]
    if head in SUPPORTED_A1111_MODULES:
        return True
    return any(dotted == own or dotted.startswith(own + ".") for own in OWN_API_MODULES)


def check_import(name: str, fromlist: Optional[Sequence[str]], level: int) -> None:
    """Raises UnsupportedA1111Module for `import modules.X` / `from modules[.Y] import X` beyond the allowed set."""
    if level != 0:  # relative imports stay inside the extension
        return
    root, _, rest = name.partition(".")
    if root != "modules":
        return
    if rest:
        if not _allowed(rest):
            raise UnsupportedA1111Module(f"modules.{rest}")
        return
    for item in fromlist or ():
        if not _allowed(item):  # also refuses "*"
            raise UnsupportedA1111Module(f"modules.{item}")


def _guarded_import(name: str, globals: Optional[Mapping[str, Any]] = None, locals: Any = None,
                    fromlist: Sequence[str] = (), level: int = 0) -> ModuleType:
    check_import(name, fromlist, level)
    return builtins.__import__(name, globals, locals, fromlist, level)


def guard_imports(module: ModuleType) -> None:
    """Gives `module` builtins whose `__import__` checks its `modules.X` imports (an `init_module` hook)."""
    own = dict(vars(builtins))
    own["__import__"] = _guarded_import
    module.__dict__["__builtins__"] = own


__all__ = ["SUPPORTED_A1111_MODULES", "UnsupportedA1111Module", "check_import", "guard_imports"]
