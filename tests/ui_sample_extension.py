"""A user extension for the web UI tests: an A1111 script with an accordion whose checkbox inverts
the picture (postprocess_image) and writes an infotext field (process), an on_ui_tabs tab, a
javascript file and a style.css; plus a typed extension with its own Args in the same file."""

from __future__ import annotations

from pathlib import Path

from tests.extension_factory import commit_all, make_extension

NAME = "sample-ui-ext"
SCRIPT_TITLE = "Sample Invert"
TYPED_NAME = "sample_typed"

SCRIPT = '''
import gradio as gr
from PIL import ImageOps
from pydantic import BaseModel
from modules import scripts, script_callbacks
from modules.extensions.hooks import JobExtension


class SampleInvert(scripts.Script):
    def title(self):
        return "Sample Invert"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        with gr.Accordion("Sample Invert", open=False, elem_id=self.elem_id("accordion")):
            invert = gr.Checkbox(label="Invert colours", value=False, elem_id=self.elem_id("invert"))
            note = gr.Textbox(label="Sample note", value="hello")
        return [invert, note]

    def process(self, p, invert, note):
        if invert:
            p.extra_generation_params["Sample invert"] = note

    def postprocess_image(self, p, pp, invert, note):
        if invert:
            pp.image = ImageOps.invert(pp.image.convert("RGB"))


class TypedArgs(BaseModel):
    enabled: bool = False
    strength: float = 0.5


class SampleTyped(JobExtension):
    name = "sample_typed"
    title = "Sample Typed"
    Args = TypedArgs

    def visible(self, is_img2img):
        return not is_img2img

    def ui(self, is_img2img):
        return [gr.Checkbox(label="Enable typed", value=False), gr.Slider(0, 1, value=0.5, label="Typed strength")]

    def process(self, job, args):
        job.extra_params["Sample typed"] = args.strength


def on_tabs():
    with gr.Blocks(analytics_enabled=False) as block:
        gr.Markdown("Hello from the sample tab", elem_id="sample_tab_text")
    return [(block, "Sample Tab", "sample_tab")]


script_callbacks.on_ui_tabs(on_tabs)
'''

JAVASCRIPT = "window.SAMPLE_UI_EXT_LOADED = (window.SAMPLE_UI_EXT_LOADED || 0) + 1;\n"
STYLE = "#tab_sample_tab { outline: 3px solid rgb(1, 2, 3); }\n"


def make_sample_extension(extensions_dir: Path, git: bool = True) -> Path:
    """extensions_dir/sample-ui-ext (a git repository when `git`: the table shows its commit)."""
    folder = make_extension(extensions_dir, NAME, {"scripts/sample_invert.py": SCRIPT,
                                                   "javascript/sample.js": JAVASCRIPT, "style.css": STYLE})
    if git:
        commit_all(folder)
    return folder
