"""The "Script" dropdown at the bottom of txt2img and img2img: "None" plus the tab's selectable
scripts (X/Y/Z plot, prompt matrix, ...). Each script's `ui(is_img2img)` is built once in its own
hidden group; choosing the script shows that group. `request_call(values)` is the one place the
controls' values become the request's `ScriptCall` (through the script's `args_from_ui`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Optional

import gradio as gr
from pydantic import ValidationError

from modules.extensions.selectable import SelectableScript
from modules.generation.request import ScriptCall
from webui.common import format_validation_error
from webui.env import UiEnv
from webui.loaded_extensions import loaded_extensions

log = logging.getLogger("webui")
NONE = "None"


@dataclass(frozen=True)
class ScriptUi:
    script: SelectableScript
    group: Any
    components: tuple[Any, ...]


@dataclass
class ScriptControls:
    tab: str
    dropdown: Any = None
    items: list[ScriptUi] = field(default_factory=list)

    def inputs(self) -> set:
        if self.dropdown is None:
            return set()
        return {self.dropdown, *(c for item in self.items for c in item.components)}

    def request_call(self, values: dict) -> Optional[ScriptCall]:
        """The chosen script with its Args from its controls; None for "None"."""
        if self.dropdown is None:
            return None
        chosen = values.get(self.dropdown) or NONE
        if chosen == NONE:
            return None
        item = next((i for i in self.items if i.script.title == chosen), None)
        if item is None:
            raise ValueError(f"Script: {chosen!r} is not available on the {self.tab} tab")
        try:
            args = item.script.args_from_ui([values[c] for c in item.components])
        except ValidationError as err:
            raise ValueError(f"{item.script.title}: {format_validation_error(err)}") from None
        return ScriptCall(name=item.script.name, args=args)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()


def build(env: UiEnv, tab: str, is_img2img: bool) -> ScriptControls:
    """The dropdown and every script's hidden controls (call at the bottom of the tab's settings)."""
    controls = ScriptControls(tab)
    scripts = loaded_extensions(env.ctx).selectable.for_tab(is_img2img)
    if not scripts:
        return controls
    with gr.Column(elem_id=f"{tab}_script_dropdown_container"):
        controls.dropdown = gr.Dropdown(label="Script", choices=[NONE, *(s.title for s in scripts)], value=NONE,
                                        elem_id=f"{tab}_script_dropdown")
        for script in scripts:
            with gr.Group(visible=False, elem_id=f"{tab}_script_{_slug(script.name)}") as group:
                try:
                    components = tuple(script.ui(is_img2img) or ())
                except Exception:  # noqa: BLE001 - one broken ui() must not take the page down
                    log.exception("script %r: ui() failed; it is left out of the Script dropdown", script.title)
                    continue
            controls.items.append(ScriptUi(script, group, components))
    groups = [item.group for item in controls.items]
    titles = [item.script.title for item in controls.items]
    controls.dropdown.change(lambda chosen: [gr.Group(visible=chosen == t) for t in titles], controls.dropdown,
                             groups, show_progress="hidden", queue=False, api_visibility="private")
    return controls


__all__ = ["ScriptControls", "ScriptUi", "build", "NONE"]
