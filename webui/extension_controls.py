"""Each extension's controls on the txt2img / img2img tab, and their values as request Args.

`build(env, tab, is_img2img)` calls `ui(is_img2img)` of every extension shown on that tab (typed
extensions and A1111 scripts alike) and keeps which components belong to which extension.
`ExtensionControls.request_args(values)` is the one place those component values become
`GenerationRequest.extensions[name]`: handlers receive gradio's {component: value} dict, so no
positional slicing leaks into them.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
from pydantic import BaseModel, ValidationError

from modules.extensions.a1111_adapter import A1111ScriptExtension
from modules.extensions.hooks import JobExtension, overrides
from webui.common import format_validation_error
from webui.env import UiEnv
from webui.loaded_extensions import loaded_extensions

log = logging.getLogger("webui")


@dataclass(frozen=True)
class ExtensionUi:
    extension: JobExtension
    components: tuple[Any, ...]


@dataclass
class ExtensionControls:
    tab: str
    items: list[ExtensionUi] = field(default_factory=list)

    def inputs(self) -> set:
        return {c for item in self.items for c in item.components}

    def request_args(self, values: dict) -> dict[str, BaseModel]:
        """name -> Args from the components' values, in the order ui() returned them.

        Both kinds go through `args_from_api`: a typed extension maps the list onto its Args
        fields in order; an A1111 script keeps it as its positional `args`.
        """
        out: dict[str, BaseModel] = {}
        for item in self.items:
            ext = item.extension
            given = [values[c] for c in item.components]
            try:
                out[ext.name] = ext.args_from_ui(given)
            except ValidationError as err:
                raise ValueError(f"{ext.label}: {format_validation_error(err)}") from None
        return out

    def pastable(self) -> list[ExtensionUi]:
        """The extensions whose controls an infotext can fill (they read it and map Args back)."""
        return [item for item in self.items
                if overrides(item.extension, "args_from_infotext") and overrides(item.extension, "ui_values_from_args")]

    def paste_components(self) -> list:
        return [c for item in self.pastable() for c in item.components]

    def paste_values(self, params: dict[str, str]) -> dict:
        """Control updates from an infotext's parameters: each extension reads its Args back
        (`args_from_infotext`) and maps them onto its components (`ui_values_from_args`). One that
        fails is named in a warning and its controls are left as they are."""
        out: dict = {}
        for item in self.pastable():
            ext = item.extension
            try:
                args = ext.args_from_infotext(dict(params))
                if args is None:
                    continue
                if not isinstance(args, ext.Args):
                    args = ext.Args.model_validate(args)
                values = ext.ui_values_from_args(args, len(item.components))
            except ValidationError as err:
                gr.Warning(f"{ext.label}: the parameters hold values it refuses: {format_validation_error(err)}")
                continue
            except Exception as exc:  # noqa: BLE001 - one extension's bug must not stop the paste
                log.exception("extension %r could not read the infotext", ext.name)
                gr.Warning(f"{ext.label}: could not read its settings from the parameters ({exc})")
                continue
            if values is not None and len(values) == len(item.components):
                out.update(zip(item.components, values))
        return out


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_").lower() or "extension"


def build(env: UiEnv, tab: str, is_img2img: bool) -> ExtensionControls:
    """The controls of every extension visible on this tab (call inside the tab's layout)."""
    controls = ExtensionControls(tab)
    # An extension without its own ui() (an extra-network handler) has nothing to show.
    extensions = [e for e in loaded_extensions(env.ctx).extension_set if e.visible(is_img2img) and overrides(e, "ui")]
    if not extensions:
        return controls
    with gr.Column(elem_id=f"{tab}_script_container"):
        for ext in extensions:
            elem_id = f"{tab}_ext_{_slug(ext.name)}"
            # A1111 scripts draw their own accordion in ui() (their convention); a typed extension
            # returns bare components, so it gets one here.
            holder = (gr.Group(elem_id=elem_id, elem_classes=["extension-controls"])
                      if isinstance(ext, A1111ScriptExtension)
                      else gr.Accordion(ext.label, open=False, elem_id=elem_id, elem_classes=["extension-controls"]))
            with holder:
                try:
                    components = tuple(ext.ui(is_img2img) or ())
                except Exception:  # noqa: BLE001 - one broken ui() must not take the page down
                    log.exception("extension %r: ui() failed; its controls are left out", ext.name)
                    gr.Markdown(f"{ext.label}: its controls failed to load (see the server log).")
                    continue
            if components:
                controls.items.append(ExtensionUi(ext, components))
    return controls
