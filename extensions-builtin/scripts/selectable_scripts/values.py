"""A1111's axis value syntax: comma lists (CSV quoting: `"a, b", c`) and numeric ranges.

    1-5          1, 2, 3, 4, 5            (ints: the end is included)
    1-10 (+2)    1, 3, 5, 7, 9            (a step; negative steps count down: 10-1 (-3))
    1-10 [5]     1, 3, 5, 7, 10           (a count: evenly spaced, ints truncated as A1111's)
    0.5-1.5 (+0.25)   0.5, 0.75, 1.0, 1.25, 1.5
"""

from __future__ import annotations

import csv
import re
from io import StringIO
from itertools import chain

_NUM_INT = r"[+-]?\s*\d+"
_NUM_FLOAT = r"[+-]?\s*\d+(?:\.\d*)?"
RANGE_INT = re.compile(rf"\s*({_NUM_INT})\s*-\s*({_NUM_INT})(?:\s*\(([+-]\d+)\s*\))?\s*")
RANGE_INT_COUNT = re.compile(rf"\s*({_NUM_INT})\s*-\s*({_NUM_INT})\s*\[(\d+)\s*]\s*")
RANGE_FLOAT = re.compile(rf"\s*({_NUM_FLOAT})\s*-\s*({_NUM_FLOAT})(?:\s*\(([+-]\d+(?:\.\d*)?)\s*\))?\s*")
RANGE_FLOAT_COUNT = re.compile(rf"\s*({_NUM_FLOAT})\s*-\s*({_NUM_FLOAT})\s*\[(\d+(?:\.\d*)?)\s*]\s*")
MAX_VALUES = 1000  # per axis: a typo such as 1-100000 must not queue a day of work


def _num(text: str) -> str:
    return text.replace(" ", "")


def split_csv(text: str) -> list[str]:
    """A1111's csv_string_to_list_strip: CSV fields, stripped; empty fields dropped."""
    fields = chain.from_iterable(csv.reader(StringIO(text or "")))
    return [f.strip() for f in fields if f.strip()]


def to_csv(values: list[str]) -> str:
    with StringIO() as out:
        csv.writer(out).writerow(values)
        return out.getvalue().strip()


def _linspace(start: float, end: float, num: int) -> list[float]:
    if num <= 1:
        return [start]
    return [start + (end - start) * i / (num - 1) for i in range(num)]


def _check_count(n: int, text: str) -> None:
    if n > MAX_VALUES:
        raise ValueError(f"range {text!r} makes {n} values; at most {MAX_VALUES} per axis")


def expand_ints(items: list[str]) -> list[int]:
    out: list[int] = []
    for item in items:
        m, mc = RANGE_INT.fullmatch(item), RANGE_INT_COUNT.fullmatch(item)
        if m is not None:
            start, end = int(_num(m.group(1))), int(_num(m.group(2)))
            step = int(m.group(3)) if m.group(3) else 1
            if step == 0:
                raise ValueError(f"range {item!r} has a step of 0")
            values = list(range(start, end + (1 if step > 0 else -1), step))
            _check_count(len(values), item)
            out += values
        elif mc is not None:
            start, end, num = int(_num(mc.group(1))), int(_num(mc.group(2))), int(mc.group(3))
            _check_count(num, item)
            out += [int(v) for v in _linspace(start, end, num)]
        else:
            try:
                out.append(int(item))
            except ValueError:
                raise ValueError(f"{item!r} is not a whole number or a range such as 1-5") from None
    return out


def expand_floats(items: list[str]) -> list[float]:
    out: list[float] = []
    for item in items:
        m, mc = RANGE_FLOAT.fullmatch(item), RANGE_FLOAT_COUNT.fullmatch(item)
        if m is not None:
            start, end = float(_num(m.group(1))), float(_num(m.group(2)))
            step = float(m.group(3)) if m.group(3) else 1.0
            if step == 0:
                raise ValueError(f"range {item!r} has a step of 0")
            n = int((end - start) / step + 1e-9) + 1
            if n < 1:
                raise ValueError(f"range {item!r} is empty: the step goes away from the end")
            _check_count(n, item)
            out += [round(start + i * step, 8) for i in range(n)]
        elif mc is not None:
            start, end, num = float(_num(mc.group(1))), float(_num(mc.group(2))), int(float(mc.group(3)))
            _check_count(num, item)
            out += [round(v, 8) for v in _linspace(start, end, num)]
        else:
            try:
                out.append(float(item))
            except ValueError:
                raise ValueError(f"{item!r} is not a number or a range such as 0.5-1.5 (+0.25)") from None
    return out


def format_number(value: float) -> str:
    """7.0 -> '7', 0.25 -> '0.25' (labels and infotext)."""
    value = round(float(value), 8)
    return str(int(value)) if value.is_integer() else repr(value)


__all__ = ["split_csv", "to_csv", "expand_ints", "expand_floats", "format_number", "MAX_VALUES"]
