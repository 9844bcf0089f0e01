"""Settings without a server: A1111's options in `Options`, the folder rule, the UI's checkpoint
dropdown and Settings tab, and inpainting_mask_weight in the engine's 9-channel conditioning."""

from __future__ import annotations

import json
import os

import pytest
from pydantic import ValidationError

from modules.a1111_options import A1111_DEFAULTS, PATH_OPTIONS
from modules.paths import Paths
from modules.settings import NO_EFFECT_YET, Options, SettingsStore
from modules.settings_paths import escaping_paths


def test_every_a1111_option_has_a1111s_default_unless_this_app_types_it():
    dumped = Options().model_dump()
    for name, default in A1111_DEFAULTS.items():
        assert name in dumped, name
        if name not in Options.model_fields:
            assert dumped[name] == default, name
    assert set(NO_EFFECT_YET) == set(A1111_DEFAULTS) - set(Options.model_fields)
    assert "inpainting_mask_weight" not in NO_EFFECT_YET and "send_seed" in NO_EFFECT_YET


def test_a1111_options_are_typed_by_their_default_and_unknown_names_refused():
    opts = Options().updated({"directories_max_prompt_words": 12.0, "img_downscale_threshold": 5})
    assert opts.directories_max_prompt_words == 12 and opts.img_downscale_threshold == 5.0
    with pytest.raises(ValidationError) as err:
        Options().updated({"show_progress_grid": "no"})
    assert err.value.errors()[0]["loc"] == ("show_progress_grid",)
    with pytest.raises(KeyError, match="no_such_option"):
        Options().updated({"no_such_option": 1})


def test_settings_file_keeps_a1111_values_and_drops_unknown_names(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"send_seed": False, "lora_preferred_name": "x", "jpeg_quality": 90}), encoding="utf-8")
    store = SettingsStore(path)
    assert store.get().send_seed is False and store.get().jpeg_quality == 90
    store.update({"send_size": False})
    on_disk = json.loads(path.read_text(encoding="utf-8"))
    assert on_disk["send_seed"] is False and on_disk["send_size"] is False and "lora_preferred_name" not in on_disk


def test_folder_rule(tmp_path):
    paths = Paths(data_dir=tmp_path)
    (tmp_path / "outputs").mkdir()
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    os.symlink(outside, tmp_path / "outputs" / "out")
    bad = {"outdir_samples": "../../x", "outdir_grids": str(outside), "outdir_img2img_samples": "out/y",
           "temp_dir": "~"}
    good = {"outdir_txt2img_samples": "pics", "outdir_txt2img_grids": str(tmp_path / "grids"),
            "outdir_img2img_grids": "", "outdir_save": "log/images", "jpeg_quality": 50}
    assert set(escaping_paths({**bad, **good}, paths)) == set(bad)
    assert {"outdir_samples", "outdir_extras_samples", "outdir_init_images", "temp_dir"} <= set(PATH_OPTIONS)


def _ui_context(tmp_path, *flags):
    from modules.app_factory import create_context
    from modules.cmd_args import parse_args

    return create_context(parse_args(["--data-dir", str(tmp_path), "--use-cpu", *flags]))


def test_checkpoint_dropdown_shows_the_full_title_from_the_start(tmp_path):
    from webui import app

    ctx = _ui_context(tmp_path)
    try:
        demo = app.build_ui(ctx)
        assert demo.sd_ui.quick.checkpoint.value == "shapes64 [54d0762e74]"
        assert "shapes64 [54d0762e74]" in [c[0] for c in demo.sd_ui.quick.checkpoint.choices]
    finally:
        ctx.queue.shutdown()


@pytest.mark.parametrize("flags, allowed", [((), True), (("--listen",), False), (("--share",), False)])
def test_settings_tab_folder_rule_applies_when_others_can_reach_the_ui(tmp_path, flags, allowed):
    from webui.env import UiEnv
    from webui.settings_tab import FolderOutsideDataDir, apply_changes

    ctx = _ui_context(tmp_path, *flags)
    try:
        env = UiEnv(ctx=ctx, ui_config=None, styles=None)
        elsewhere = str(tmp_path.parent / "elsewhere")
        if allowed:
            changed, new = apply_changes(env, {"outdir_samples": elsewhere})
            assert changed == ["outdir_samples"] and new.outdir_samples == elsewhere
        else:
            with pytest.raises(FolderOutsideDataDir, match="outdir_samples"):
                apply_changes(env, {"outdir_samples": elsewhere})
            assert ctx.settings.get().outdir_samples == ""
    finally:
        ctx.queue.shutdown()


def test_mask_weight_one_is_the_old_conditioning_and_zero_shows_the_picture():
    """weight 1 gives exactly the conditioning built before the setting existed (the picture with
    the masked part zeroed); weight 0 encodes the whole picture, as A1111's lerp does."""
    import torch

    from modules.processing import latents as latent_ops
    from modules.processing.engine import _latent_inpaint
    from tests.api.helpers import centre_mask, picture
    from tests.tiny_model import tiny_loaded_model

    model = tiny_loaded_model(seed=5, in_channels=9)
    image, mask = picture(), centre_mask()
    with torch.inference_mode():
        old = latent_ops.encode_images(model.vae, latent_ops.pil_to_tensor([image])
                                       * (latent_ops.mask_to_tensor([mask]) < 0.5))
        whole = latent_ops.encode_images(model.vae, latent_ops.pil_to_tensor([image]))
        one = _latent_inpaint(model, [image], [mask], blend=False, mask_weight=1.0).masked_image_latents
        zero = _latent_inpaint(model, [image], [mask], blend=False, mask_weight=0.0).masked_image_latents
        half = _latent_inpaint(model, [image], [mask], blend=False, mask_weight=0.5).masked_image_latents
    assert torch.equal(one, old)
    assert torch.equal(zero, whole)
    assert not torch.equal(half, one) and not torch.equal(half, zero)


def test_a1111_config_with_null_face_restorer_still_loads_and_bad_names_are_refused(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"face_restoration_model": None, "code_former_weight": 0.25}))
    options = SettingsStore(path).get()
    assert (options.face_restoration_model, options.code_former_weight) == ("CodeFormer", 0.25)
    with pytest.raises(ValidationError, match="face_restoration_model"):
        options.updated({"face_restoration_model": "NoSuchRestorer"})
