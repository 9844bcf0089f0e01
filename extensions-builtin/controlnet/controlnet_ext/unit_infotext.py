"""`ControlNet N` infotext fields, written and read back as sd-webui-controlnet does
(internal_controlnet/args.py `serialize` / `parse`, scripts/infotext.py).

One field per enabled unit, numbered among the enabled units:

    ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1.0, Resize Mode: Crop and
    Resize, Processor Res: 512, Threshold A: 100.0, Threshold B: 200.0, Guidance Start: 0.0, Guidance End: 1.0,
    Pixel Perfect: False, Control Mode: Balanced"

Values are Python's str() of the unit's (resolved) values: floats keep their ".0", booleans are
True/False, enums their text. The app's infotext writer quotes the whole value (it holds `,` and
`:`). Pasting reads each `Key: value` back into a unit field (`Resize Mode` -> `resize_mode`).
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Any, Mapping, Optional, Union

from controlnet_ext.units import ControlUnit

PREFIX = "ControlNet"
FIELDS = ("module", "model", "weight", "resize_mode", "processor_res", "threshold_a", "threshold_b",
          "guidance_start", "guidance_end", "pixel_perfect", "control_mode")
_KEY = re.compile(r"^ControlNet (\d+)$")
_FLOAT_FIELDS = {"weight", "threshold_a", "threshold_b", "guidance_start", "guidance_end"}


def field_to_display(name: str) -> str:
    return " ".join(word.capitalize() for word in name.split("_"))


def display_to_field(text: str) -> str:
    return "_".join(word.lower() for word in text.strip().split(" "))


def _text(name: str, value: Any) -> str:
    if isinstance(value, Enum):
        return str(value.value)
    if name in _FLOAT_FIELDS:
        return str(float(value))
    if name == "processor_res":
        return str(int(value))
    return str(value)


def serialize(unit: ControlUnit) -> str:
    """One unit's value (unit with resolved defaults and model title). Raises ValueError when a
    value would break the format (holds "," or ":"), which sd-webui-controlnet refuses too."""
    parts = []
    for name in FIELDS:
        text = _text(name, getattr(unit, name))
        if "," in text or ":" in text:
            raise ValueError(f"ControlNet infotext: {name} {text!r} holds ',' or ':'")
        parts.append(f"{field_to_display(name)}: {text}")
    return ", ".join(parts)


def write(units: list[ControlUnit]) -> dict[str, str]:
    """{"ControlNet 0": ..., ...} for the enabled units given, in order."""
    return {f"{PREFIX} {i}": serialize(unit) for i, unit in enumerate(units)}


def parse_value(text: str) -> Union[str, float, int, bool]:
    if text in ("True", "False"):
        return text == "True"
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def parse(text: str) -> dict[str, Any]:
    """One field's value -> ControlUnit fields (enabled, no image). ValueError on a malformed item."""
    fields: dict[str, Any] = {"enabled": True}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition(": ")
        if not sep:
            raise ValueError(f"ControlNet infotext item {item!r} is not 'Key: value'")
        name = display_to_field(key)
        if name in FIELDS:
            fields[name] = value.strip() if name in ("module", "model") else parse_value(value.strip())
    return fields


def units_from_params(params: Mapping[str, Any]) -> Optional[list[dict[str, Any]]]:
    """The units of an infotext's `ControlNet N` fields, in N order; None when there are none."""
    found = []
    for key, value in params.items():
        match = _KEY.match(str(key).strip())
        if match and isinstance(value, str):
            found.append((int(match.group(1)), parse(value)))
    if not found:
        return None
    return [fields for _, fields in sorted(found, key=lambda item: item[0])]


__all__ = ["serialize", "write", "parse", "units_from_params", "FIELDS", "PREFIX"]
