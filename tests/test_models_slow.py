"""A real-size SD 1.x fp16 checkpoint (~2 GB, random weights) through the whole path: catalog,
hash, detection, offline single-file load, a text encode, a UNet forward, a VAE decode.

Marked slow; it needs ~5 GB of RAM and ~2 GB of temporary disk.
"""

from __future__ import annotations

import gc
import hashlib
import shutil
import subprocess

import pytest
import torch

from modules.models.options import ModelOptions
from modules.models.registry import ModelRegistry
from modules.models.vae_decode import decode_latents
from modules.paths import Paths
from tests.checkpoint_factory import make_checkpoint

pytestmark = pytest.mark.slow

CHECKED = [
    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
    "model.diffusion_model.output_blocks.11.0.skip_connection.weight",
    "first_stage_model.encoder.mid.attn_1.q.weight",
    "cond_stage_model.transformer.text_model.encoder.layers.11.self_attn.out_proj.weight",
]


def test_real_size_sd1_fp16_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = tmp_path / "models" / "Stable-diffusion" / "real-sd15.safetensors"
    fc = make_checkpoint(path, "sd1", size="real", dtype=torch.float16, seed=1)
    written = {k: fc.original[k].clone() for k in CHECKED}
    assert len(fc.original) == 1131
    del fc
    gc.collect()
    size = path.stat().st_size
    assert 2.0e9 < size < 2.3e9

    reg = ModelRegistry(Paths(data_dir=tmp_path), ModelOptions(device="cpu", precision="fp16"), embedded_dir=None)
    info = reg.checkpoints()[0]
    assert info.usable and info.architecture == "sd1"

    model = reg.get()
    expected = (
        subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True).stdout.split()[0]
        if shutil.which("sha256sum") else hashlib.sha256(path.read_bytes()).hexdigest()
    )
    assert model.short_hash == expected[:10] and model.title == f"real-sd15.safetensors [{expected[:10]}]"
    assert model.native_size == 512 and model.dtype == torch.float16
    assert sum(p.numel() for p in model.unet.parameters()) == 859_520_964
    pipe = model.pipe
    assert torch.equal(written[CHECKED[0]], pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_k.weight)
    assert torch.equal(written[CHECKED[1]], pipe.unet.up_blocks[3].resnets[2].conv_shortcut.weight)
    assert torch.equal(written[CHECKED[2]][:, :, 0, 0], pipe.vae.encoder.mid_block.attentions[0].to_q.weight)
    assert torch.equal(written[CHECKED[3]], pipe.text_encoder.state_dict()["encoder.layers.11.self_attn.out_proj.weight"])

    with torch.no_grad():
        emb, _ = pipe.encode_prompt("a photograph of an astronaut", torch.device("cpu"), 1, False)
        assert emb.shape == (1, 77, 768)
        latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)).half()
        noise = pipe.unet(latents, torch.tensor([500]), encoder_hidden_states=emb).sample
        assert noise.shape == (1, 4, 8, 8) and torch.isfinite(noise).all()
    outcome = decode_latents(pipe.vae, latents / pipe.vae.config.scaling_factor, tile_threshold=0)
    assert outcome.images.shape == (1, 3, 64, 64)
    reg.unload()
