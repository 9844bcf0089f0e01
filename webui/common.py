"""Small helpers every tab uses: readable error text, tool buttons, the model catalog view.

Torch-free. The registry is duck-typed here (its type is imported only for checkers) so the UI can
be built around an already-built registry without importing what loads models.
"""

from __future__ import annotations

import html
import logging
from typing import TYPE_CHECKING, Any, Iterable, Optional

import gradio as gr
from pydantic import ValidationError

from webui.icons import icon_class

if TYPE_CHECKING:
    from modules.models.registry import ModelRegistry

log = logging.getLogger("webui")

AUTOMATIC_VAE = "Automatic"
NO_VAE = "None"


# ---------------------------------------------------------------------------------------------
# errors


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem, naming the field and what is allowed."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__") or "request"
        msg = err.get("msg", "invalid value")
        msg = msg.removeprefix("Value error, ")
        value = err.get("input")
        shown = "" if isinstance(value, dict) or value is None or not where or len(repr(value)) > 60 \
            else f" (got {value!r})"
        lines.append(f"{where}: {msg}{shown}" if where != "request" else f"{msg}")
    return "\n".join(lines) or str(exc)


def is_out_of_memory(exc: BaseException) -> bool:
    return type(exc).__name__ in ("OutOfMemoryError", "OutOfMemory") or "out of memory" in str(exc).lower()


def format_error(exc: BaseException) -> str:
    """A message a user can act on; never a bare traceback."""
    if isinstance(exc, ValidationError):
        return "Invalid settings:\n" + format_validation_error(exc)
    if is_out_of_memory(exc):
        return ("Out of memory while generating. Try a smaller width/height or batch size, "
                f"or start with --medvram / --lowvram. ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
    text = str(exc).strip()
    name = type(exc).__name__
    if not text:
        return name
    # Our own error classes carry full messages; builtin ones get their kind as a prefix.
    if type(exc).__module__ == "builtins" and name not in ("ValueError", "RuntimeError"):
        return f"{name}: {text}"
    return text


def error(exc: BaseException) -> gr.Error:
    """A gr.Error for `exc`, logged with its traceback on the server."""
    if not isinstance(exc, (ValidationError, ValueError, LookupError)):
        log.exception("web UI action failed", exc_info=exc)
    return gr.Error(html.escape(format_error(exc)).replace("\n", "<br>"), duration=12, title="Error")


# ---------------------------------------------------------------------------------------------
# widgets


TOOLTIP_ATTR = "sd_tooltip"  # where a tool button keeps its own tooltip (read by tooltips())


def tool_button(symbol: str, tooltip: str, elem_id: str, visible: bool = True) -> gr.Button:
    """A small square button like A1111's ToolButton, named by its emoji but drawn as an SVG icon
    (webui/icons.py: no emoji font needed). The page script gives it `tooltip` as its title."""
    button = gr.Button("", elem_id=elem_id, elem_classes=["tool", icon_class(symbol)], size="sm", min_width=40,
                       scale=0, visible=visible)
    setattr(button, TOOLTIP_ATTR, tooltip)
    return button


def tooltips(demo: gr.Blocks) -> dict[str, str]:
    """elem_id → tooltip for every tool button in `demo`."""
    return {block.elem_id: getattr(block, TOOLTIP_ATTR) for block in demo.blocks.values()
            if getattr(block, TOOLTIP_ATTR, None) and block.elem_id}


def escape(text: Any) -> str:
    return html.escape(str(text))


# ---------------------------------------------------------------------------------------------
# the model catalog as the UI sees it


def _titles(items: Iterable[Any], attr: str = "title") -> list[str]:
    out = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
        elif getattr(item, "usable", True):
            value = getattr(item, attr, None) or getattr(item, "name", None)
            if value:
                out.append(str(value))
    return out


def checkpoint_titles(registry: "ModelRegistry") -> list[str]:
    if registry is None:
        return []
    if hasattr(registry, "checkpoint_titles"):
        return list(registry.checkpoint_titles())
    return _titles(registry.checkpoints())


def vae_choices(registry: "ModelRegistry") -> list[str]:
    names: list[str] = []
    if registry is not None:
        if hasattr(registry, "vae_choices"):
            names = [n for n in registry.vae_choices() if n not in (AUTOMATIC_VAE, NO_VAE)]
        else:
            names = _titles(registry.vaes(), attr="name")
    return [AUTOMATIC_VAE, NO_VAE, *names]


def current_checkpoint(registry: "ModelRegistry", fallback: str = "") -> Optional[str]:
    if registry is not None:
        try:
            title = registry.current_title()
        except Exception:  # nothing loaded or selectable yet: the dropdown just stays empty
            title = None
        if title:
            return title
    return fallback or None


_FAMILY_SIZE = {"sd1": 512, "sd1-inpaint": 512, "sd2": 512, "sd2-v": 768, "sdxl": 1024, "sdxl-inpaint": 1024,
                "sdxl-refiner": 1024}


def native_size_hint(registry: "ModelRegistry", fallback: int = 512) -> int:
    """The current model's native image size, read without loading it (A1111's 512 otherwise).

    A diffusers folder says it in unet/config.json (sample_size × the VAE's downscale factor);
    a single file's detected architecture gives the family's size.
    """
    try:
        info = registry.current()
    except Exception:  # no model yet, or a registry without `current`
        return fallback
    try:
        if getattr(info, "kind", "") == "diffusers":
            import json
            from pathlib import Path

            folder = Path(info.path)
            unet = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
            vae = json.loads((folder / "vae" / "config.json").read_text(encoding="utf-8"))
            sample = unet.get("sample_size")
            sample = sample[0] if isinstance(sample, (list, tuple)) else sample
            factor = 2 ** (len(vae.get("block_out_channels", [0, 0, 0, 0])) - 1)
            size = int(sample) * factor
            return size if 64 <= size <= 2048 and size % 8 == 0 else fallback
        return _FAMILY_SIZE.get(str(getattr(info, "architecture", "") or ""), fallback)
    except (OSError, ValueError, TypeError):
        return fallback
