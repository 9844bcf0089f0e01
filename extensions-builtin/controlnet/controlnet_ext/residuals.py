"""Per-step rules of a ControlNet unit, as sd-webui-controlnet applies them (scripts/hook.py):
when a unit is active, how its residuals are scaled, and which rows they reach.

- Active: the sampling progress `index / total` of this pass lies in [guidance_start,
  guidance_end]. One deviation, the issue's rule: guidance_end 0 means never (sd-webui-controlnet
  would still run the unit on step 0, where the progress is 0).
- hr_option: with hires fix, "Low res only" / "High res only" skip the other pass.
- Scales: "Balanced" multiplies every residual by the weight. The two other modes use soft
  injection: residual i of n is scaled by weight * 0.825 ** (12 - i) (SD 1.x: 12 down + the middle
  one: 0.825^12 .. 1; SDXL's 10 take the first 10 of those), T2I-Adapter features by weight *
  (0.25, 0.62, 0.825, 1.0). In hires fix's second pass canny and mlsd maps are soft-injected in any
  mode, as sd-webui-controlnet forces it against artifacts.
- "ControlNet is more important" (cfg injection): the residuals reach the cond rows only; the
  uncond rows get none, so the guidance pushes towards the control.
"""

from __future__ import annotations

from typing import Any, Sequence

from controlnet_ext.units import ControlMode, ControlUnit

SOFT_BASE = 0.825
ADAPTER_SOFT = (0.25, 0.62, 0.825, 1.0)


def progress(index: int, total: int) -> float:
    return index / total if total else 0.0


def active_at(unit: ControlUnit, index: int, total: int) -> bool:
    if unit.guidance_end <= 0.0:
        return False
    p = progress(index, total)
    return unit.guidance_start <= p <= unit.guidance_end


def runs_in_pass(unit: ControlUnit, pass_index: int, hires: bool) -> bool:
    if not hires or unit.hr_option == "Both":
        return True
    return pass_index == (0 if unit.hr_option == "Low res only" else 1)


def ever_active(unit: ControlUnit) -> bool:
    """False when the unit can change nothing: weight 0, or guidance_end 0. Such a unit is not run."""
    return unit.weight > 0.0 and unit.guidance_end > 0.0


def soft_injection(unit: ControlUnit, pass_index: int) -> bool:
    if unit.control_mode is not ControlMode.BALANCED:
        return True
    return pass_index == 1 and ("canny" in unit.module or "mlsd" in unit.module)


def controlnet_scales(unit: ControlUnit, count: int, pass_index: int) -> list[float]:
    if soft_injection(unit, pass_index):
        return [unit.weight * SOFT_BASE ** float(12 - i) for i in range(count)]
    return [unit.weight] * count


def adapter_scales(unit: ControlUnit, count: int, pass_index: int) -> list[float]:
    if soft_injection(unit, pass_index):
        return [unit.weight * ADAPTER_SOFT[min(i, len(ADAPTER_SOFT) - 1)] for i in range(count)]
    return [unit.weight] * count


def cond_rows_only(tensors: Sequence[Any], uncond_rows: int) -> list[Any]:
    """Zero the `uncond_rows` leading rows (UNetStep.uncond_rows: 0 without CFG, every row is cond;
    with AND in the prompt more cond rows follow than uncond ones)."""
    if not uncond_rows:
        return list(tensors)
    out = []
    for t in tensors:
        t = t.clone()
        t[:uncond_rows] = 0
        out.append(t)
    return out


def scaled(tensors: Sequence[Any], scales: Sequence[float]) -> list[Any]:
    return [t * s for t, s in zip(tensors, scales)]


def add_into(total: list[Any] | None, more: Sequence[Any]) -> list[Any]:
    if total is None:
        return list(more)
    return [a + b for a, b in zip(total, more)]


__all__ = ["progress", "active_at", "runs_in_pass", "ever_active", "soft_injection", "controlnet_scales",
           "adapter_scales", "cond_rows_only", "scaled", "add_into"]
