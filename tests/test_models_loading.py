"""Loading single files offline, weight round trips, a sampling step, registry behaviour, VAEs."""

from __future__ import annotations

import gc
import shutil
import weakref
from pathlib import Path

import pytest
import torch

from modules.models.checkpoint_io import read_state_dict
from modules.models.detect import V_PREDICTION
from modules.models.errors import CheckpointError, NoModelError, UnknownModelError, UnsafeCheckpointError
from modules.models.loaded import LoadedModel, ModelFamily
from modules.models.options import MemoryMode, ModelOptions
from modules.models.registry import ModelRegistry
from modules.models.single_file import load_checkpoint_file
from modules.models.vae_decode import NAN_WARNING, decode_latents
from modules.paths import Paths
from tests.checkpoint_factory import (VARIANTS, make_checkpoint, make_corrupt_header, make_empty, make_malicious_ckpt,
                                      make_truncated, make_vae_file)

CPU = ModelOptions(device="cpu")
PIPELINES = {
    "sd1": "StableDiffusionPipeline", "sd2": "StableDiffusionPipeline", "sd1-inpaint": "StableDiffusionInpaintPipeline",
    "sd2-inpaint": "StableDiffusionInpaintPipeline", "sdxl": "StableDiffusionXLPipeline",
    "sdxl-inpaint": "StableDiffusionXLInpaintPipeline", "sdxl-refiner": "StableDiffusionXLImg2ImgPipeline",
}
FAMILIES = {"sd1": ModelFamily.SD1, "sd1-inpaint": ModelFamily.SD1, "sd2": ModelFamily.SD2, "sd2-inpaint": ModelFamily.SD2,
            "sdxl": ModelFamily.SDXL, "sdxl-inpaint": ModelFamily.SDXL, "sdxl-refiner": ModelFamily.SDXL_REFINER}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpts")
    return {
        v: make_checkpoint(d / f"{v}.safetensors", v, seed=10 * i, probe="epsilon" if v == "sd2" else None)
        for i, v in enumerate(VARIANTS)
    }


@pytest.fixture(scope="module")
def built(tiny):
    return {v: load_checkpoint_file(fc.path, CPU) for v, fc in tiny.items()}


def _module_state(pipe, comp):
    sd = getattr(pipe, comp).state_dict()
    return {k[len("text_model."):] if k.startswith("text_model.") and k[len("text_model."):] not in sd else k: v
            for k, v in sd.items()}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_family_loads_offline_with_every_weight_in_place(tiny, built, variant):
    fc, b = tiny[variant], built[variant]
    assert b.architecture.variant == variant
    assert b.architecture.family is FAMILIES[variant]
    assert type(b.pipe).__name__ == PIPELINES[variant]
    assert b.native_size == (1024 if variant.startswith("sdxl") else 512)
    assert b.pipe.unet.config.in_channels == (9 if variant.endswith("inpaint") else 4)
    assert b.pipe.scheduler.config.prediction_type == "epsilon"
    assert getattr(b.pipe, "safety_checker", None) is None
    for comp, tensors in fc.components.items():  # every tensor the file holds, in its diffusers place
        loaded = getattr(b.pipe, comp).state_dict()
        for key, value in tensors.items():
            target = loaded.get(key, loaded.get("text_model." + key))
            assert target is not None, f"{comp}.{key} missing"
            assert torch.equal(target, value), f"{comp}.{key} differs"
    # tokenizers: CLIP-L pads with <|endoftext|>, OpenCLIP with "!"
    if b.pipe.tokenizer is not None:
        assert b.pipe.tokenizer.pad_token == ("!" if variant.startswith("sd2") else "<|endoftext|>")
    if getattr(b.pipe, "tokenizer_2", None) is not None:
        assert b.pipe.tokenizer_2.pad_token == "!"


def test_original_keys_land_in_the_right_modules(tiny, built):
    sd1, xl = tiny["sd1"].original, tiny["sdxl"].original
    p1, px = built["sd1"].pipe, built["sdxl"].pipe
    pairs = [
        (sd1["model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"],
         p1.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_k.weight),
        (sd1["model.diffusion_model.output_blocks.2.1.conv.weight"], p1.unet.up_blocks[0].upsamplers[0].conv.weight),
        (sd1["model.diffusion_model.input_blocks.3.0.op.weight"], p1.unet.down_blocks[0].downsamplers[0].conv.weight),
        (sd1["model.diffusion_model.middle_block.2.out_layers.3.weight"], p1.unet.mid_block.resnets[1].conv2.weight),
        (sd1["first_stage_model.encoder.mid.attn_1.q.weight"][:, :, 0, 0], p1.vae.encoder.mid_block.attentions[0].to_q.weight),
        (sd1["first_stage_model.decoder.up.0.block.0.nin_shortcut.weight"], p1.vae.decoder.up_blocks[1].resnets[0].conv_shortcut.weight),
        (sd1["first_stage_model.decoder.up.1.upsample.conv.weight"], p1.vae.decoder.up_blocks[0].upsamplers[0].conv.weight),
        (sd1["cond_stage_model.transformer.text_model.encoder.layers.1.mlp.fc2.weight"],
         p1.text_encoder.state_dict()["encoder.layers.1.mlp.fc2.weight"]),
        (xl["model.diffusion_model.label_emb.0.0.weight"], px.unet.add_embedding.linear_1.weight),
        (xl["model.diffusion_model.input_blocks.7.1.transformer_blocks.1.attn1.to_v.weight"],
         px.unet.down_blocks[2].attentions[0].transformer_blocks[1].attn1.to_v.weight),
        (xl["model.diffusion_model.output_blocks.2.2.conv.weight"], px.unet.up_blocks[0].upsamplers[0].conv.weight),
        (xl["conditioner.embedders.1.model.transformer.resblocks.1.attn.in_proj_weight"][32:64],
         px.text_encoder_2.text_model.encoder.layers[1].self_attn.k_proj.weight),
        (xl["conditioner.embedders.1.model.text_projection"].T, px.text_encoder_2.text_projection.weight),
    ]
    for i, (written, loaded) in enumerate(pairs):
        assert torch.equal(written, loaded), i


def _one_step(pipe, variant):
    from diffusers import EulerDiscreteScheduler

    gen = torch.Generator().manual_seed(0)
    scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(2)
    added = None
    if variant.startswith("sdxl"):
        emb, _, pooled, _ = pipe.encode_prompt("a red cube", device=torch.device("cpu"), num_images_per_prompt=1,
                                               do_classifier_free_guidance=False)
        ids = [64.0, 64.0, 0.0, 0.0, 6.0] if variant == "sdxl-refiner" else [64.0, 64.0, 0.0, 0.0, 64.0, 64.0]
        added = {"text_embeds": pooled, "time_ids": torch.tensor([ids])}
    else:
        emb, _ = pipe.encode_prompt("a red cube", torch.device("cpu"), 1, False)
    latents = torch.randn(1, 4, 8, 8, generator=gen) * scheduler.init_noise_sigma
    t = scheduler.timesteps[0]
    x = scheduler.scale_model_input(latents, t)
    if pipe.unet.config.in_channels == 9:
        x = torch.cat([x, torch.ones(1, 1, 8, 8), torch.randn(1, 4, 8, 8, generator=gen)], 1)
    with torch.no_grad():
        noise = pipe.unet(x, t, encoder_hidden_states=emb, added_cond_kwargs=added).sample
    return scheduler.step(noise, t, latents).prev_sample


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_sampling_step_runs(built, variant):
    out = _one_step(built[variant].pipe, variant)
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()


def test_sd1_pipeline_runs_end_to_end(built):
    pipe = built["sd1"].pipe
    image = pipe("a red cube", num_inference_steps=2, height=32, width=32, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 32, 32, 3)


def test_loads_in_a_fresh_process_offline_with_an_empty_hub_cache(tiny, tmp_path):
    import os
    import subprocess
    import sys

    from modules.paths import REPO_ROOT

    code = (
        "import sys; from modules.models.single_file import load_checkpoint_file; "
        "from modules.models.options import ModelOptions; "
        "b = load_checkpoint_file(sys.argv[1], ModelOptions(device='cpu')); print(b.architecture.variant)"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1"}
    out = subprocess.run([sys.executable, "-c", code, str(tiny["sdxl"].path)], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "sdxl"
    assert not (tmp_path / "hf" / "hub").exists() or not any((tmp_path / "hf" / "hub").iterdir())


# -- SD 2.x prediction type ---------------------------------------------------------------------


def test_sd2_v_prediction_found_by_probe_and_by_yaml(tmp_path):
    v = load_checkpoint_file(make_checkpoint(tmp_path / "v.safetensors", "sd2", seed=3, probe="v").path, CPU)
    assert (v.architecture.variant, v.architecture.prediction_source, v.native_size) == ("sd2-v", "probe", 768)
    assert v.pipe.scheduler.config.prediction_type == V_PREDICTION
    assert v.pipe.unet.config.upcast_attention is True

    eps_weights = make_checkpoint(tmp_path / "by-yaml.safetensors", "sd2", seed=4, probe="epsilon").path
    (tmp_path / "by-yaml.yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    y = load_checkpoint_file(eps_weights, CPU)
    assert (y.architecture.variant, y.architecture.prediction_source, y.native_size) == ("sd2-v", "yaml:by-yaml.yaml", 768)
    assert y.pipe.scheduler.config.prediction_type == V_PREDICTION


def test_ckpt_loads_through_weights_only_and_global_step_decides(tmp_path):
    path = make_checkpoint(tmp_path / "sd2-base.ckpt", "sd2", seed=5, probe="v", global_step=875000).path
    b = load_checkpoint_file(path, CPU)
    assert (b.architecture.variant, b.architecture.prediction_source) == ("sd2", "global_step")
    assert b.pipe.scheduler.config.prediction_type == "epsilon"


# -- bad files ----------------------------------------------------------------------------------


def test_malicious_pickle_is_refused_and_never_executed(tmp_path, monkeypatch):
    target = tmp_path / "PWNED"
    evil = tmp_path / "evil.ckpt"
    make_malicious_ckpt(evil, target)
    with pytest.raises(UnsafeCheckpointError) as err:
        read_state_dict(evil)
    assert "evil.ckpt" in str(err.value) and "exec" in str(err.value)
    # even with our opcode scan out of the way, torch.load(weights_only=True) refuses it
    monkeypatch.setattr("modules.models.checkpoint_io.check_pickle_file", lambda path: None)
    with pytest.raises(UnsafeCheckpointError) as err:
        read_state_dict(evil)
    assert "evil.ckpt" in str(err.value)
    assert not target.exists()


def test_corrupt_truncated_and_empty_files_give_clear_errors(tiny, tmp_path):
    cases = {"empty.safetensors": "empty", "empty.ckpt": "empty", "corrupt.safetensors": "corrupt",
             "cut.safetensors": "truncated", "cut.ckpt": "truncated"}
    make_empty(tmp_path / "empty.safetensors")
    make_empty(tmp_path / "empty.ckpt")
    make_corrupt_header(tmp_path / "corrupt.safetensors")
    make_truncated(tmp_path / "cut.safetensors", tiny["sd1"].path)
    make_checkpoint(tmp_path / "whole.ckpt", "sd1", seed=1)
    make_truncated(tmp_path / "cut.ckpt", tmp_path / "whole.ckpt")
    for name, word in cases.items():
        with pytest.raises(CheckpointError) as err:
            load_checkpoint_file(tmp_path / name, CPU)
        assert name in str(err.value) and word in str(err.value), str(err.value)


# -- registry -----------------------------------------------------------------------------------


def _registry(data_dir: Path, **opts) -> ModelRegistry:
    return ModelRegistry(Paths(data_dir=data_dir), ModelOptions(device="cpu", **opts), embedded_dir=None)


@pytest.fixture()
def three_models(tiny, tmp_path):
    sd = tmp_path / "models" / "Stable-diffusion"
    sd.mkdir(parents=True)
    for name, seed in (("alpha", 1), ("beta", 2), ("gamma", 3)):
        make_checkpoint(sd / f"{name}.safetensors", "sd1", seed=seed)
    return tmp_path


def test_default_selection_and_per_request_override(three_models):
    import hashlib

    reg = _registry(three_models, checkpoints_limit=2)
    model = reg.get()
    assert isinstance(model, LoadedModel) and model.family is ModelFamily.SD1
    sha = hashlib.sha256((three_models / "models" / "Stable-diffusion" / "alpha.safetensors").read_bytes()).hexdigest()
    assert (model.name, model.short_hash, model.title) == ("alpha", sha[:10], f"alpha.safetensors [{sha[:10]}]")
    assert model.native_size == 512 and model.vae_name is None
    assert reg.current_title() == model.title

    other = reg.get(checkpoint="beta.safetensors")
    assert other.name == "beta" and reg.current_title() == model.title  # override leaves the default alone
    assert reg.get() is model  # still cached (limit 2)

    reg.select("gamma")
    assert reg.current().name == "gamma.safetensors" and reg.get().name == "gamma"
    with pytest.raises(UnknownModelError) as err:
        reg.select("gama.safetensors")
    assert "gamma.safetensors" in " ".join(err.value.close_matches)
    assert reg.current().name == "gamma.safetensors"


def test_checkpoints_limit_evicts_least_recently_used_and_frees_it(three_models):
    reg = _registry(three_models, checkpoints_limit=1)
    first = weakref.ref(reg.get("alpha").pipe.unet)
    reg.get("beta")
    gc.collect()
    assert first() is None, "the evicted model was not freed"
    assert [t.split(" ")[0] for t in reg.loaded_titles()] == ["beta.safetensors"]

    reg = _registry(three_models, checkpoints_limit=2)
    reg.get("alpha"), reg.get("beta"), reg.get("alpha")  # alpha is now the most recent
    reg.get("gamma")
    assert sorted(t.split(" ")[0] for t in reg.loaded_titles()) == ["alpha.safetensors", "gamma.safetensors"]
    reg.set_checkpoints_limit(1)
    assert [t.split(" ")[0] for t in reg.loaded_titles()] == ["gamma.safetensors"]
    with pytest.raises(ValueError):
        reg.set_checkpoints_limit(0)
    reg.unload()
    assert reg.loaded_titles() == []
    assert reg.reload().name == "alpha"


def test_vae_override_changes_the_decoded_image(three_models):
    sd = three_models / "models" / "Stable-diffusion"
    vae_dir = three_models / "models" / "VAE"
    make_vae_file(vae_dir / "ft-mse.safetensors", seed=11)
    make_vae_file(vae_dir / "prefixed.pt", seed=12, prefix="first_stage_model.")
    diffusers_layout = make_vae_file(vae_dir / "diffusers-layout.safetensors", seed=13, layout="diffusers")
    make_vae_file(sd / "beta.vae.safetensors", seed=14)
    reg = _registry(three_models, checkpoints_limit=2)

    own = reg.get("alpha", vae="None")
    other = reg.get("alpha", vae="ft-mse.safetensors")
    assert other.vae_name == "ft-mse.safetensors" and len(other.vae_hash) == 10
    assert other.unet is own.unet and other.vae is not own.vae  # the override shares the heavy parts
    assert reg.get("alpha") is own  # Automatic: nothing named alpha.vae.* -> the checkpoint's own
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    a = decode_latents(own.vae, latents, 0).images
    b = decode_latents(other.vae, latents, 0).images
    assert a.shape == b.shape == (1, 3, 16, 16) and not torch.allclose(a, b)
    assert other.vae.config.scaling_factor == own.vae.config.scaling_factor

    assert reg.get("beta").vae_name == "beta.vae.safetensors"  # Automatic finds the VAE beside it
    assert reg.get("beta", vae="None").vae_name is None
    assert reg.get("alpha", vae="prefixed.pt").vae_name == "prefixed.pt"
    loaded = reg.get("alpha", vae="diffusers-layout").vae.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in diffusers_layout.items())

    reg.select_vae("ft-mse.safetensors")
    assert reg.get("alpha").vae_name == "ft-mse.safetensors"
    with pytest.raises(UnknownModelError) as err:
        reg.get("alpha", vae="ft-mse2.safetensors")
    assert "ft-mse.safetensors" in err.value.close_matches


def test_unusable_unknown_and_missing_models(three_models, tmp_path):
    sd = three_models / "models" / "Stable-diffusion"
    target = tmp_path / "PWNED"
    make_malicious_ckpt(sd / "evil.ckpt", target)
    reg = _registry(three_models)
    with pytest.raises(UnsafeCheckpointError) as err:
        reg.get("evil.ckpt")
    assert "evil.ckpt" in str(err.value)
    assert not target.exists()
    with pytest.raises(UnknownModelError) as err:
        reg.get("alpah")
    assert err.value.close_matches[0] == "alpha.safetensors"
    with pytest.raises(NoModelError):
        _registry(tmp_path / "empty").get()
    assert _registry(tmp_path / "empty").current_title() is None


def test_memory_mode_without_cuda_is_reported(three_models):
    reg = _registry(three_models, memory_mode=MemoryMode.MEDVRAM)
    reg.get()
    assert any("medvram" in w for w in reg.warnings)


def test_diffusers_folder_and_embedded_default(built, tmp_path):
    emb = tmp_path / "embedded" / "shapes64"
    built["sd1"].pipe.save_pretrained(emb, safe_serialization=True)
    shutil.rmtree(emb / "tokenizer")  # the shipped vocab is used when a folder has none
    reg = ModelRegistry(Paths(data_dir=tmp_path), ModelOptions(device="cpu"), embedded_dir=emb)
    model = reg.get()
    assert model.name == "shapes64" and model.family is ModelFamily.SD1 and len(model.short_hash) == 10
    assert model.native_size == built["sd1"].pipe.unet.config.sample_size * 2
    assert model.pipe.tokenizer.pad_token == "<|endoftext|>"
    ref = built["sd1"].pipe.unet.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in model.unet.state_dict().items())
    folder = tmp_path / "models" / "Stable-diffusion" / "my-diffusers"
    shutil.copytree(emb, folder)
    reg.refresh()
    assert [c.name for c in reg.checkpoints()] == ["my-diffusers", "shapes64"]
    assert reg.current_title().startswith("my-diffusers")  # a model in the folder beats the embedded one


# -- VAE decoding -------------------------------------------------------------------------------


def test_half_precision_nans_are_retried_in_fp32(built):
    vae = built["sd1"].pipe.vae
    half = type(vae).from_config(vae.config)
    half.load_state_dict(vae.state_dict())
    torch.nn.Module.to(half, dtype=torch.float16)

    def nan_in_half(module, args, output):
        return output * float("nan") if output.dtype == torch.float16 else output

    half.decoder.register_forward_hook(nan_in_half)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    outcome = decode_latents(half, latents, 0)
    assert outcome.warning == NAN_WARNING
    assert torch.isfinite(outcome.images).all() and outcome.images.dtype == torch.float32
    assert half.dtype == torch.float16  # put back as it was
    reference = decode_latents(vae, latents, 0)
    assert reference.warning is None
    assert torch.allclose(outcome.images, reference.images, atol=1e-2)  # weights went through fp16
    assert outcome.images.min() >= -1 and outcome.images.max() <= 1


def test_tiling_for_large_images_only(built):
    vae = built["sd1"].pipe.vae
    seen = []
    original = vae.decoder.forward

    def spy(*args, **kwargs):
        seen.append(vae.use_tiling)
        return original(*args, **kwargs)

    vae.decoder.forward = spy
    try:
        big = torch.randn(1, 4, 48, 48, generator=torch.Generator().manual_seed(2))  # 96 px > 64 px tiles
        outcome = decode_latents(vae, big, tile_threshold=64)
        assert outcome.tiled and any(seen) and outcome.images.shape == (1, 3, 96, 96)
        assert vae.use_tiling is False  # restored
        seen.clear()
        assert not decode_latents(vae, big, tile_threshold=0).tiled and not any(seen)
        assert not decode_latents(vae, big[..., :8, :8], tile_threshold=64).tiled
    finally:
        del vae.decoder.forward
