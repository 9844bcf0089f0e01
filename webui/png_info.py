"""PNG Info: drop an image, read its generation parameters, send them to txt2img or img2img."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import gradio as gr
from PIL import Image

from modules.infotext import INFOTEXT_KEY, read_infotext
from webui.common import escape
from webui.env import UiEnv

TAB = "pnginfo"


@dataclass
class PngInfoTab:
    image: gr.Image
    html: gr.HTML
    text: gr.Textbox
    send_to_txt2img: gr.Button
    send_to_img2img: gr.Button
    send_to_inpaint: gr.Button
    send_to_extras: gr.Button


def build(env: UiEnv) -> PngInfoTab:
    with gr.Row(equal_height=False, elem_id="pnginfo_row"):
        with gr.Column(variant="panel"):
            image = gr.Image(label="Source", sources=["upload", "clipboard"], type="filepath", image_mode=None,
                             elem_id="pnginfo_image", height=480)
        with gr.Column(variant="panel"):
            html = gr.HTML("", elem_id="pnginfo_html", elem_classes=["infotext"], js_on_load=None)
            text = gr.Textbox(label="Parameters", elem_id="pnginfo_generation_info", lines=6, max_lines=30,
                              interactive=False, buttons=["copy"])
            with gr.Row(elem_id="pnginfo_send_buttons"):
                send_to_txt2img = gr.Button("Send to txt2img", elem_id="pnginfo_send_txt2img")
                send_to_img2img = gr.Button("Send to img2img", elem_id="pnginfo_send_img2img")
                send_to_inpaint = gr.Button("Send to inpaint", elem_id="pnginfo_send_inpaint")
                send_to_extras = gr.Button("Send to extras", elem_id="pnginfo_send_extras")
    tab = PngInfoTab(image, html, text, send_to_txt2img, send_to_img2img, send_to_inpaint, send_to_extras)
    image.change(read_image_info, image, [html, text], show_progress="hidden", api_visibility="private")
    return tab


def read_image_info(path: Optional[str]) -> tuple[str, str]:
    if not path:
        return "", ""
    try:
        with Image.open(path) as img:
            text = read_infotext(img) or ""
            others = {k: v for k, v in img.info.items()
                      if k != INFOTEXT_KEY and isinstance(v, (str, int, float)) and k not in ("exif", "icc_profile")}
    except Exception as exc:
        return f"<div class='error'>Cannot read this image: {escape(exc)}</div>", ""
    if not text and not others:
        return "<div><p>Nothing found in the image.</p></div>", ""
    parts = []
    if text:
        body = "<br>".join(escape(line) for line in text.split("\n"))
        parts.append(f"<div class='pnginfo-item'><p><b>parameters</b><br>{body}</p></div>")
    for key, value in others.items():
        parts.append(f"<div class='pnginfo-item'><p><b>{escape(key)}</b><br>{escape(value)}</p></div>")
    return "".join(parts), text


def load_image(path: Optional[str]) -> Optional[Image.Image]:
    if not path:
        return None
    with Image.open(path) as img:
        img.load()
        return img.copy()
