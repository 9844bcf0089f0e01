"""Web UI pieces without a browser: torch-free import, token counts, ui-config, flags, paste, errors."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from modules.jobs.control import JobState, ProgressSnapshot
from modules.generation.request import GenerationRequest
from modules.ui_config import UiConfig

REPO = Path(__file__).resolve().parents[1]


def test_webui_is_torch_free():
    code = (
        "import sys, pkgutil, importlib, webui\n"
        "for mod in pkgutil.iter_modules(webui.__path__):\n"
        "    importlib.import_module('webui.' + mod.name)\n"
        "assert 'torch' not in sys.modules, 'importing webui pulled in torch'\n"
        "from webui.token_counter import counter_text\n"
        "assert counter_text('a cat') == '2/75'\n"
        "assert 'torch' not in sys.modules, 'counting tokens pulled in torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)
    for source in (REPO / "webui").rglob("*.py"):
        assert "import torch" not in source.read_text(), f"{source} imports torch"


@pytest.mark.parametrize("prompt, expected", [
    ("", "0/75"),
    ("a cat", "2/75"),
    ("a (cat:1.3) [dog]", "3/75"),
    ("a <lora:thing:0.8> cat", "2/75"),
    ("cat BREAK dog", "76/150"),
    ("word " * 80, "80/150"),
    ("[short:a much much longer second prompt here:3]", "7/75"),
])
def test_token_counter(prompt, expected):
    from webui.token_counter import counter_text

    assert counter_text(prompt, steps=20) == expected


def test_token_counter_leaves_extra_network_tags_out():
    # The engine's own parser takes the tags out: the text encoder never sees them.
    from webui.token_counter import counter_text

    assert counter_text("a cat <lora:x:1>") == counter_text("a cat") == "2/75"
    assert counter_text("<hypernet:h:0.5>" + ", word" * 37 + " <lora:x:1>") == counter_text(", word" * 37)


def test_ui_config_writes_defaults_and_applies_overrides(tmp_path):
    path = tmp_path / "ui-config.json"
    path.write_text(json.dumps({"tab/Steps/value": 30, "tab/Steps/maximum": 60, "tab/Mode/value": "gone"}))
    cfg = UiConfig(path)
    made = {}

    def record(**kwargs):
        made[kwargs["label"]] = kwargs
        return kwargs

    cfg.component(record, "tab", "Steps", minimum=1, maximum=150, step=1, value=20)
    cfg.component(record, "tab", "Mode", choices=["a", "b"], value="a")
    cfg.component(record, "tab", "Prompt", value="")
    assert made["Steps"]["value"] == 30 and made["Steps"]["maximum"] == 60
    assert made["Mode"]["value"] == "a"  # a stale choice is ignored, not passed to gradio
    assert any("tab/Mode/value" in e for e in cfg.errors)
    assert cfg.save_missing()
    written = json.loads(path.read_text())
    assert written["tab/Steps/value"] == 30 and written["tab/Steps/minimum"] == 1
    assert written["tab/Prompt/value"] == "" and written["tab/Prompt/visible"] is True
    assert not cfg.save_missing()  # nothing new to add


def test_ui_config_broken_file_is_left_alone(tmp_path):
    path = tmp_path / "ui-config.json"
    path.write_text("{not json")
    cfg = UiConfig(path)
    assert cfg.errors and cfg.path is None
    assert cfg.component(lambda **kw: kw, "t", "X", value=1)["value"] == 1
    assert not cfg.save_missing()
    assert path.read_text() == "{not json"


def test_launch_flags(tmp_path):
    from webui.app import gradio_auth, server_name

    args = argparse.Namespace(listen=False, server_name=None, gradio_auth=None, gradio_auth_path=None)
    assert server_name(args) == "127.0.0.1"
    args.listen = True
    assert server_name(args) == "0.0.0.0"
    args.server_name = "example.local"
    assert server_name(args) == "example.local"
    auth_file = tmp_path / "auth.txt"
    auth_file.write_text("carol:pw3\ndave:pw4,erin:pw5\n")
    args.gradio_auth, args.gradio_auth_path = "alice:pw1,bob:pw2", str(auth_file)
    assert gradio_auth(args) == [("alice", "pw1"), ("bob", "pw2"), ("carol", "pw3"), ("dave", "pw4"),
                                 ("erin", "pw5")]
    args.gradio_auth = "no-colon"
    with pytest.raises(ValueError, match="user:password"):
        gradio_auth(args)


def test_validation_errors_name_the_field():
    from webui.common import format_error

    with pytest.raises(ValidationError) as info:
        GenerationRequest(width=100, steps=500)
    text = format_error(info.value)
    assert "width must be a multiple of 8" in text
    assert "steps" in text and "150" in text


def test_out_of_memory_message():
    from webui.common import format_error

    class OutOfMemoryError(RuntimeError):
        pass

    assert "smaller width/height" in format_error(OutOfMemoryError("CUDA out of memory. Tried to allocate"))


def test_progress_text():
    from concurrent.futures import Future

    from webui.jobs import JobUpdate, progress_html, progress_text

    job = type("J", (), {"future": Future()})()
    snap = ProgressSnapshot(state=JobState.RUNNING, step=5, total_steps=20, batch_index=1, batch_count=2,
                            started_at=100.0, updated_at=130.0)
    text = progress_text(JobUpdate(job, snap, 0, False))
    assert text.startswith("62%") and "Step 5/20" in text and "Batch 2/2" in text and "ETA: 18s" in text
    queued = JobUpdate(job, ProgressSnapshot(), 2, False)
    assert progress_text(queued) == "Waiting in queue: 2 jobs ahead"
    assert "width:0.0%" in progress_html(queued)


def test_paste_fills_every_named_field(tmp_path):
    import gradio as gr

    from tests.tiny_model import save_tiny_model_dir
    from tests.ui.conftest import real_context
    from webui import app, paste

    save_tiny_model_dir(tmp_path / "models" / "Stable-diffusion" / "other" / "second", seed=1)
    ctx = real_context(tmp_path)
    second_title = ctx.registry.find_checkpoint("second").title
    try:
        demo = app.build_ui(ctx)
        ui = demo.sd_ui
        _t2i, i2i = app._targets(ui)
        text = ("a house\nNegative prompt: ugly\nSteps: 12, Sampler: DPM++ 2M Karras, CFG scale: 6.5, "
                "Seed: 99, Size: 128x192, Model hash: abcdef0123, Model: second, Variation seed: 5, "
                "Variation seed strength: 0.3, Denoising strength: 0.4, Clip skip: 2, Mask blur: 8, "
                "Mask mode: Inpaint not masked, Inpaint area: Only masked, Masked area padding: 16")
        out = paste.paste_values(ui.env, text, i2i)
        by_id = {c.elem_id: v for c, v in out.items() if getattr(c, "elem_id", None)}
        assert by_id["img2img_prompt"] == "a house" and by_id["img2img_neg_prompt"] == "ugly"
        assert by_id["img2img_sampling"] == "DPM++ 2M" and by_id["img2img_scheduler"] == "Karras"
        assert by_id["img2img_steps"] == 12 and by_id["img2img_cfg_scale"] == 6.5
        assert by_id["img2img_seed"] == 99 and by_id["img2img_width"] == 128 and by_id["img2img_height"] == 192
        assert by_id["img2img_subseed"] == 5 and by_id["img2img_subseed_strength"] == 0.3
        assert by_id["img2img_subseed_show"] is True
        assert by_id["img2img_denoising_strength"] == 0.4
        assert by_id["setting_CLIP_stop_at_last_layers"] == 2
        assert by_id["setting_sd_model_checkpoint"] == second_title
        assert by_id["img2img_mask_blur"] == 8 and by_id["img2img_mask_mode"] == "Inpaint not masked"
        assert by_id["img2img_inpaint_full_res"] == "Only masked"
        assert by_id["img2img_inpaint_full_res_padding"] == 16
        assert isinstance(out[ui.img2img.seed.extra_row], gr.Group)
    finally:
        ctx.queue.shutdown()


def test_save_and_zip_write_the_shared_png_and_log_the_structured_params(tmp_path):
    import csv
    import zipfile
    from types import SimpleNamespace

    from PIL import Image

    from modules.generation.result import GenerationResult, ImageParams
    from modules.image_files import encode_png
    from modules.infotext import build_infotext, parse_infotext
    from webui import output_panel

    request = GenerationRequest(prompt="a cat, on a mat", negative_prompt="dog", steps=12, cfg_scale=6.5)
    result = GenerationResult(request=request)
    for seed in (5, 6):
        params = ImageParams(prompt="a cat, on a mat", negative_prompt="dog", seed=seed, subseed=1, width=64,
                             height=48, sampler_name="Euler a", scheduler="Automatic", model_name="tiny",
                             model_hash="0123456789")
        result.add_image(Image.effect_noise((64, 48), 30).convert("RGB"), params, build_infotext(request, params))
    result.grid = Image.new("RGB", (128, 48))
    paths = SimpleNamespace(data_dir=tmp_path / "data", outputs_dir=tmp_path / "outputs")
    env = SimpleNamespace(ctx=SimpleNamespace(paths=paths), served_roots=[])
    shown = output_panel.to_shown(env, [(result, "")], [])
    assert shown.first_image_index == 1 and len(shown.params) == 3

    saved = output_panel.save_items(env, shown, [1, 2])
    assert [p.read_bytes() for p in saved] == [encode_png(img, text)
                                               for img, text in zip(result.images, result.infotexts)]
    with open(paths.data_dir / "log" / "log.csv", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))[1:]
    for row, text, path in zip(rows, result.infotexts, saved):
        data = parse_infotext(text)  # what the row held when it was parsed from the text
        width, height = data.params["Size"].split("x")
        assert row == [data.prompt, data.params["Seed"], width, height, data.params["Sampler"],
                       data.params["CFG scale"], data.params["Steps"], path.name, data.negative_prompt,
                       data.params["Model"]]
    assert rows[0][1:7] == ["5", "64", "48", "Euler a", "6.5", "12"]

    archive = output_panel.zip_items(env, shown)
    with zipfile.ZipFile(archive) as zf:
        assert [zf.read(name) for name in sorted(zf.namelist())] == [p.read_bytes() for p in saved]


def test_token_counter_counts_an_embedding_as_its_vectors():
    """As the engine does: a trigger word takes as many tokens as its embedding has vectors."""
    from modules.extensions.hooks import NetworkCard
    from webui.token_counter import count_tokens, triggers_from_cards

    cards = [NetworkCard(kind="Textual Inversion", name="shinyfoo", prompt_text="shinyfoo", metadata={"vectors": 8}),
             NetworkCard(kind="Lora", name="cat", prompt_text="<lora:cat:1>")]
    triggers = triggers_from_cards(cards)
    assert count_tokens("a shinyfoo cat", triggers=triggers) == (10, 75)
    assert count_tokens("a shinyfoo cat")[0] < 10  # without the embeddings: its word pieces
    assert count_tokens("a cat", triggers=triggers) == count_tokens("a cat")  # "cat" is a LoRA card, not TI
    assert triggers_from_cards(cards[1:]) is None


def test_token_counter_counts_and_sub_prompts_one_by_one_in_the_positive_prompt_only():
    from webui.token_counter import counter_text

    long_side = "word " * 60
    both = f"{long_side} AND {long_side}"
    assert counter_text(both) == counter_text(long_side) == "60/75"  # each sub-prompt is encoded alone
    assert counter_text(both, positive=False) == "121/150"  # a negative prompt has no AND
