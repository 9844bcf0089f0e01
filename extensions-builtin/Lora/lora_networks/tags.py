"""`<lora:name:w>`, `<lora:name:te_w:unet_w>`, `te=`/`unet=` named values, and `<lyco:...>`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from modules.processing.extra_networks import ExtraNetworkCall

KINDS = ("lora", "lyco")


@dataclass(frozen=True)
class LoraUse:
    name: str  # as written in the prompt (the infotext's hash list uses it)
    te: float
    unet: float

    @property
    def is_zero(self) -> bool:
        return self.te == 0 and self.unet == 0


def _number(text: str, field: str, tag: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{tag}: {field} weight {text!r} is not a number") from None


def lora_use(call: ExtraNetworkCall) -> LoraUse:
    """A1111's rule: te = 2nd value (default 1), unet = 3rd value (default te); `te=`/`unet=` win."""
    tag = f"<{call.kind}:{':'.join(call.items)}>"
    positional = [item for item in call.items[1:] if "=" not in item]
    named = dict(item.split("=", 1) for item in call.items[1:] if "=" in item)
    te = _number(positional[0], "te", tag) if positional else 1.0
    unet = _number(positional[1], "unet", tag) if len(positional) > 1 else te
    te = _number(named["te"], "te", tag) if "te" in named else te
    unet = _number(named["unet"], "unet", tag) if "unet" in named else unet
    return LoraUse(call.name.strip(), te, unet)


def batch_uses(calls: Iterable[ExtraNetworkCall]) -> tuple[list[LoraUse], list[str]]:
    """The union of a batch's LoRA tags (prompt and negative prompt; each distinct tag once, so a
    tag repeated in every prompt of the batch applies once), and a warning per unreadable tag."""
    uses: list[LoraUse] = []
    warnings: list[str] = []
    for call in calls:
        if call.kind not in KINDS:
            continue
        try:
            use = lora_use(call)
        except ValueError as exc:
            warnings.append(f"LoRA tag ignored: {exc}")
            continue
        if use not in uses:
            uses.append(use)
    return uses, warnings


__all__ = ["LoraUse", "lora_use", "batch_uses", "KINDS"]
