"""A1111's `modules.script_callbacks`, the part simple extensions use: on_ui_tabs, on_app_started,
on_image_saved, and `ImageSaveParams`.

Extensions register at import time; the app runs the callbacks through `ui_tabs_callback()`,
`app_started_callback(demo, app)` and `image_saved_callback(params)`. A callback that raises is
logged with the extension that registered it and skipped. The registry itself is
`modules.extensions.a1111_registry.COMPAT` (the compat layer's one global; `clear_callbacks()`
empties it as A1111's does).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, NamedTuple, Optional

from modules.extensions.a1111_registry import CALLBACK_KINDS, COMPAT

log = logging.getLogger(__name__)


class ImageSaveParams:
    """A1111's: what an image was saved with. `pnginfo` holds the infotext under "parameters"."""

    def __init__(self, image: Any, p: Any, filename: str, pnginfo: dict[str, Any]) -> None:
        self.image = image  # the PIL image
        self.p = p  # the job's `p` (modules.extensions.a1111_p.Processing) or an object with its fields
        self.filename = filename  # where it was written
        self.pnginfo = pnginfo


class UiTab(NamedTuple):
    """One tab an extension adds: unpacks as A1111's (gradio block, title, elem_id)."""

    block: Any
    title: str
    elem_id: str


# ---- registration (A1111's names and signatures)

def on_ui_tabs(callback: Callable[[], Optional[list[tuple[Any, str, str]]]], *, name: Optional[str] = None) -> None:
    """`callback()` returns None or a list of (gradio Blocks, tab title, elem_id)."""
    COMPAT.add_callback("ui_tabs", callback, name)


def on_app_started(callback: Callable[[Any, Any], None], *, name: Optional[str] = None) -> None:
    """`callback(demo, app)`: the gradio Blocks (None without a UI) and the FastAPI app."""
    COMPAT.add_callback("app_started", callback, name)


def on_image_saved(callback: Callable[[ImageSaveParams], None], *, name: Optional[str] = None) -> None:
    """`callback(params)` after each image is written; changing `params` changes nothing."""
    COMPAT.add_callback("image_saved", callback, name)


# ---- what the app calls

def ui_tabs_callback() -> list[UiTab]:
    """The tabs every extension adds, in registration order. Call it before opening the app's own
    `gr.Blocks` (extensions build their tabs as separate Blocks), then render each in a tab."""
    tabs: list[UiTab] = []
    for registered, returned in COMPAT.run_callbacks("ui_tabs"):
        for item in returned or []:
            try:
                block, title, elem_id = item
            except (TypeError, ValueError):
                log.error("extension %r: on_ui_tabs returned %r, not (block, title, elem_id); skipped",
                          registered.owner, item)
                continue
            tabs.append(UiTab(block, str(title), str(elem_id)))
    return tabs


def app_started_callback(demo: Any, app: Any) -> None:
    COMPAT.run_callbacks("app_started", demo, app)


def image_saved_callback(params: ImageSaveParams) -> None:
    COMPAT.run_callbacks("image_saved", params)


def clear_callbacks() -> None:
    for registered in COMPAT.callbacks.values():
        registered.clear()


def __getattr__(name: str) -> Any:
    # Other A1111 callbacks (on_ui_settings, on_cfg_denoiser...) do nothing here: say so by name
    # instead of letting the extension believe it registered.
    raise AttributeError(f"script_callbacks.{name} is not provided by this app; supported: "
                         + ", ".join(f"on_{k}" for k in CALLBACK_KINDS))


__all__ = ["ImageSaveParams", "UiTab", "on_ui_tabs", "on_app_started", "on_image_saved", "ui_tabs_callback",
           "app_started_callback", "image_saved_callback", "clear_callbacks"]
