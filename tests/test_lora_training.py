"""The LoRA trainer for the embedded model (tools/default_model/train_lora.py) and the LoRA it ships.

A two-step run on the embedded model must write a kohya file (the names A1111 reads, with alpha and the
ss_* header); the shipped file must load with diffusers' load_lora_weights, change the picture at weight 1
and leave it exactly as the base model's at weight 0.
"""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors import safe_open

from modules.paths import EMBEDDED_MODEL_DIR, REPO_ROOT
from tools.default_model import dataset, train_lora
from tools.default_model.analyze import analyze

SHIPPED = REPO_ROOT / "models" / "embedded" / "Lora" / "shapes64-ring.safetensors"
KOHYA_KEY = re.compile(r"^(lora_unet|lora_te)_([a-z0-9_]+)\.(lora_down\.weight|lora_up\.weight|alpha)$")


def read(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def modules_of(tensors) -> dict[str, set[str]]:
    parts = defaultdict(set)
    for key in tensors:
        m = KOHYA_KEY.match(key)
        assert m, f"not a kohya LoRA key: {key}"
        parts[f"{m[1]}_{m[2]}"].add(m[3])
    return parts


def test_trainer_writes_a_kohya_file(tmp_path):
    out = tmp_path / "tiny-ring.safetensors"
    train_lora.main(["--out", str(out), "--steps", "2", "--minutes", "0", "--batch", "2", "--new-pool", "4",
                     "--old-pool", "4", "--rank", "4", "--alpha", "2", "--lr", "1e-2", "--no-preview", "--threads", "1"])
    tensors, meta = read(out)
    parts = modules_of(tensors)
    assert all(p == {"lora_down.weight", "lora_up.weight", "alpha"} for p in parts.values())
    # kohya's SD 1.x names: diffusers UNet paths, and the text encoder under text_model
    cross_k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    assert tensors[f"{cross_k}.lora_down.weight"].shape == (4, 64)  # rank x cross-attention dim
    assert tensors[f"{cross_k}.lora_up.weight"].shape == (48, 4)
    assert "lora_unet_up_blocks_1_attentions_1_transformer_blocks_0_attn1_to_out_0" in parts
    assert "lora_te_text_model_encoder_layers_1_self_attn_q_proj" in parts
    assert "lora_te_text_model_encoder_layers_0_mlp_fc2" in parts
    assert all(float(t) == 2.0 for k, t in tensors.items() if k.endswith(".alpha"))
    # B starts at zero: after two steps it has moved, so the file holds trained weights
    assert any(t.abs().max() > 0 for k, t in tensors.items() if k.endswith("lora_up.weight"))
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2.0"
    assert meta["ss_base_model_version"] == "sd_v1" and meta["ss_output_name"] == "tiny-ring"
    assert meta["ss_network_module"] == "networks.lora" and "ring" in meta["ss_training_comment"]
    assert meta["ss_steps"] == "2"


def test_held_out_pairs_are_never_trained_on():
    assert len(train_lora.HELD_OUT) == 16 and len(train_lora.TRAIN_PAIRS) == 40
    assert not set(train_lora.TRAIN_PAIRS) & train_lora.HELD_OUT
    specs = train_lora.new_shape_specs(np.random.default_rng(0), 400)
    assert {s.shape for s in specs} == {"ring"} and not {(s.fg, s.bg) for s in specs} & train_lora.HELD_OUT


def test_analyzer_tells_rings_from_the_base_shapes():
    rng = np.random.default_rng(3)
    rings = [dataset.render(dataset.sample_spec(rng, shape="ring")) for _ in range(16)]
    assert all(analyze(im, extra_shapes=True).shape == "ring" for im in rings)
    old = [dataset.sample_spec(rng) for _ in range(40)]
    assert all(analyze(dataset.render(s), extra_shapes=True).shape == s.shape for s in old)


@pytest.fixture(scope="module")
def pipe():
    torch.set_num_threads(2)
    p = StableDiffusionPipeline.from_pretrained(str(EMBEDDED_MODEL_DIR), safety_checker=None)
    p.set_progress_bar_config(disable=True)
    return p


def draw(pipe, prompt="a yellow ring on a purple background") -> np.ndarray:
    return pipe(prompt, num_inference_steps=4, guidance_scale=7.0, output_type="np",
                generator=torch.Generator().manual_seed(0)).images[0]


def test_shipped_lora_loads_and_weight_zero_is_the_base_model(pipe):
    tensors, meta = read(SHIPPED)
    assert SHIPPED.stat().st_size < 2_000_000 and SHIPPED.with_suffix(".png").is_file()
    assert meta["ss_output_name"] == "shapes64-ring" and meta["ss_base_model_version"] == "sd_v1"
    base = draw(pipe)
    pipe.load_lora_weights(str(SHIPPED), adapter_name="ring")
    try:
        # every module of the file was attached (diffusers drops names it cannot map)
        attached = sum(1 for m in (pipe.unet, pipe.text_encoder) for n, _ in m.named_modules()
                       if n.endswith("lora_A.ring"))
        assert attached == len(modules_of(tensors))
        pipe.set_adapters(["ring"], adapter_weights=[1.0])
        on = draw(pipe)
        pipe.set_adapters(["ring"], adapter_weights=[0.0])
        off = draw(pipe)
    finally:
        pipe.unload_lora_weights()
    assert np.abs(on - base).mean() > 0.02  # the LoRA changes the picture
    assert np.abs(off - base).max() < 1e-5  # weight 0 is the plain model


def test_the_shipped_ring_lora_draws_rings_through_the_engine(tmp_path):
    """A fresh clone: the built-in Lora extension finds the shipped file, and `<lora:shapes64-ring:1>`
    makes the embedded model draw a ring, which it never does without the tag."""
    from tools.default_model.analyze import analyze
    from tools.default_model.engine_generator import EngineGenerator

    generate = EngineGenerator(data_dir=tmp_path, with_extensions=True)
    prompt = "a yellow ring on a purple background"  # a held-out pair
    with_lora = [analyze(generate(prompt + " <lora:shapes64-ring:1>", "", seed, 7.0, 20), extra_shapes=True)
                 for seed in (0, 1)]
    without = [analyze(generate(prompt, "", seed, 7.0, 20), extra_shapes=True) for seed in (0, 1)]
    assert [a.shape for a in with_lora] == ["ring", "ring"]
    assert "ring" not in [a.shape for a in without]
