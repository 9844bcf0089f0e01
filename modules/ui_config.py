"""ui-config.json: user defaults for UI controls, keyed as A1111 keys them.

    "txt2img/Sampling steps/value": 20,
    "txt2img/Sampling steps/minimum": 1,
    "txt2img/Sampling steps/maximum": 150,
    "txt2img/Sampling steps/step": 1,
    "txt2img/Sampling steps/visible": true,

The UI builds each control through `UiConfig.component(...)`: stored values replace the built-in
ones, and every key the file lacks is recorded with its built-in value so `save_missing()` can
write a complete file the user then edits (A1111 writes the file the same way on start-up).
Gradio-free: the component class is passed in.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

from modules.settings import write_json_atomic

log = logging.getLogger(__name__)

ATTRIBUTES = ("value", "minimum", "maximum", "step", "visible")
T = TypeVar("T")


class UiConfig:
    def __init__(self, path: Optional[Path]) -> None:
        self.path = Path(path) if path is not None else None
        self.values: dict[str, Any] = {}
        self.errors: list[str] = []
        self._added = False
        if self.path is not None and self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                if not isinstance(data, dict):
                    raise ValueError("top level is not an object")
                self.values = data
            except (ValueError, UnicodeDecodeError) as exc:
                # A broken file must not stop the UI: use built-in defaults and leave it alone.
                self.errors.append(f"{self.path} is not valid JSON ({exc}); using built-in UI defaults")
                log.warning(self.errors[-1])
                self.path = None

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def resolve(self, prefix: str, kwargs: dict[str, Any],
                check: Optional[Callable[[str, Any], bool]] = None, remember: bool = True) -> dict[str, Any]:
        """`kwargs` with stored overrides for `<prefix>/<attr>`; records missing keys (the
        "value" key only when `remember`: a default that depends on the model stays live)."""
        out = dict(kwargs)
        for attr in ATTRIBUTES:
            if attr not in kwargs and attr != "visible":
                continue
            key = f"{prefix}/{attr}"
            builtin = kwargs.get(attr, True if attr == "visible" else None)
            if key in self.values:
                stored = self.values[key]
                if check is None or check(attr, stored):
                    out[attr] = stored
                else:
                    self.errors.append(f"{key}: ignored invalid value {stored!r}")
            elif _jsonable(builtin) and (remember or attr != "value"):
                self.values[key] = builtin
                self._added = True
        return out

    def component(self, cls: Callable[..., T], tab: str, label: str,
                  check: Optional[Callable[[str, Any], bool]] = None, _remember: bool = True, **kwargs: Any) -> T:
        """Build `cls(label=label, **kwargs)` with this file's values for "<tab>/<label>/...".

        A stored value that is not one of `choices`, or outside minimum..maximum, is ignored
        with a note in `errors`, so a stale file never breaks the page.
        """
        prefix = f"{tab}/{label}"
        out = self.resolve(prefix, kwargs, check, remember=_remember)
        if "value" in out and not _value_fits(out["value"], out):
            self.errors.append(f"{prefix}/value: ignored {out['value']!r} (not allowed here)")
            out["value"] = kwargs.get("value")
        return cls(label=label, **out)

    def save_missing(self) -> bool:
        """Write the file when keys were added (or it did not exist). True when written."""
        if self.path is None or not self._added:
            return False
        write_json_atomic(self.path, self.values)
        self._added = False
        return True


def _value_fits(value: Any, kwargs: dict[str, Any]) -> bool:
    choices = kwargs.get("choices")
    if choices is not None and value is not None:
        allowed = [c[1] if isinstance(c, (tuple, list)) else c for c in choices]
        values = value if kwargs.get("multiselect") and isinstance(value, list) else [value]
        if not all(v in allowed for v in values):
            return False
    lo, hi = kwargs.get("minimum"), kwargs.get("maximum")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            return False
    return True


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
