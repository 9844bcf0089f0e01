"""launch.py with an extensions/ folder, as a user runs it: preload.py adds a flag that the command
line then sets, install.py runs before the scripts load, on_app_started adds a route, a broken
extension is listed with its error while the app serves, and a job runs an A1111 script."""

from __future__ import annotations

import base64
import io
import time

import httpx
import numpy as np
from PIL import Image

from tests.extension_factory import make_extension
from tests.test_launch import launched, wait_for  # noqa: F401 - the fixture, shared

PRELOAD = '''
def preload(parser):
    parser.add_argument("--sample-greeting", default="hello", help="what /sample/greeting answers")
'''

INSTALL = '''
from pathlib import Path
print("installing the sample")
Path("installed.txt").write_text("yes")
'''

SCRIPT = '''
import gradio as gr
from PIL import ImageOps
from modules import scripts, script_callbacks, shared


class Negative(scripts.Script):
    def title(self):
        return "Negative"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        return [gr.Checkbox(label="Negative", value=False)]

    def postprocess_image(self, p, pp, enabled):
        if enabled:
            pp.image = ImageOps.invert(pp.image.convert("RGB"))
            p.extra_generation_params["Negative"] = "on"


def on_started(demo, app):
    @app.get("/sample/greeting")
    def greeting():
        return {"greeting": shared.cmd_opts.sample_greeting, "demo": demo is not None}


script_callbacks.on_app_started(on_started)
'''


def pixels(body: dict) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(body["images"][0]))) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_launch_loads_extensions_with_their_flags_installers_and_callbacks(launched, tmp_path):  # noqa: F811
    user = tmp_path / "extensions"
    make_extension(user, "sample", {"preload.py": PRELOAD, "install.py": INSTALL, "scripts/negative.py": SCRIPT})
    make_extension(user, "broken", {"scripts/bad.py": "raise ImportError('no such wheel')\n"})
    url, proc = launched("--nowebui", "--use-cpu", "--sample-greeting", "hi there")
    wait_for(f"{url}/sdapi/v1/extensions", proc)

    assert httpx.get(f"{url}/sample/greeting").json() == {"greeting": "hi there", "demo": False}
    assert (user / "sample" / "installed.txt").read_text() == "yes"
    items = {i["name"]: i for i in httpx.get(f"{url}/sdapi/v1/extensions").json()}
    assert items["sample"]["error"] is None
    assert "scripts/bad.py failed to import: ImportError: no such wheel" in items["broken"]["error"]

    job = {"prompt": "a red circle", "steps": 2, "sampler_name": "Euler", "seed": 5}
    plain = httpx.post(f"{url}/sdapi/v1/txt2img", json=job, timeout=300).json()
    negative = httpx.post(f"{url}/sdapi/v1/txt2img", json={**job, "alwayson_scripts": {"negative": {"args": [True]}}},
                          timeout=300).json()
    assert np.array_equal(pixels(negative), 255 - pixels(plain))
    assert "Negative: on" in negative["info"]


def test_with_the_web_ui_on_app_started_gets_the_demo_and_its_app(launched, tmp_path):  # noqa: F811
    make_extension(tmp_path / "extensions", "sample", {"preload.py": PRELOAD, "scripts/negative.py": SCRIPT})
    url, proc = launched("--api")
    wait_for(f"{url}/", proc)
    deadline = time.monotonic() + 30  # the callback runs right after the server starts
    while (greeting := httpx.get(f"{url}/sample/greeting")).status_code == 404 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert greeting.status_code == 200, greeting.text
    assert greeting.json() == {"greeting": "hello", "demo": True}


NAMELESS = '''
from modules.extensions.hooks import JobExtension


class Helper(JobExtension):
    """No name: cannot be addressed, so it is reported instead of loaded."""


class Good(JobExtension):
    name = "good"


class SameName(JobExtension):
    name = "GOOD"
'''


def test_typed_extensions_are_made_once_and_bad_ones_are_listed_by_extension(tmp_path):
    from modules.app_factory import build_paths, build_settings
    from modules.extensions.a1111_registry import COMPAT
    from modules.extensions.preload import parse_args_with_extensions
    from modules.extensions.startup import load_extensions

    make_extension(tmp_path / "extensions", "typed", {"scripts/typed.py": NAMELESS,
                                                      "preload.py": "def preload(parser):\n    raise ValueError('bad flag')\n"})
    try:
        args, preloaded = parse_args_with_extensions(["--data-dir", str(tmp_path)], builtin_dir=None)
        paths = build_paths(args)
        loaded = load_extensions(paths, build_settings(args, paths), args, preloaded=preloaded, builtin_dir=None)
    finally:
        COMPAT.clear()
    assert loaded.extension_set.names == ["good"] and [type(e).__name__ for e in loaded.typed] == ["Good"]
    error = loaded.catalog.get("typed").error
    assert error.startswith("preload: preload(parser) failed: ValueError: bad flag")  # from the flags' parse
    assert "extension Helper failed to start: ValueError: Helper has no name" in error
    assert "extension SameName failed to start: ValueError: two extensions are named 'GOOD'" in error
