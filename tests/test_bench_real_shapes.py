"""bench.bench_real_shapes runs end to end on the CPU: real SD 1.5 shapes with random weights, the
engine and plain diffusers on one pipeline. Slow (building ~1 G random parameters and running a
real-size UNet takes about a minute on 2 cores); no timing assertions, only that every figure and
its hardware and command are printed."""

from __future__ import annotations

import re

import pytest
import torch

from tests.torch_threads import one_torch_thread

pytestmark = pytest.mark.slow


def test_reduced_cpu_run_prints_every_figure(capsys):
    from bench.bench_real_shapes import main

    with one_torch_thread():
        main(["--device", "cpu", "--size", "64", "--steps", "2", "--batch", "1", "--runs", "1"])
    out = capsys.readouterr().out
    assert "command: python -m bench.bench_real_shapes --device cpu --size 64" in out
    assert "hardware: CPU" in out
    line = next(l for l in out.splitlines() if "batch 1:" in l)
    assert line.startswith("[CPU ") and "sd1 64x64 batch 1" in line and "peak n/a (CPU)" in line
    figures = re.search(r"engine ([\d.]+) s/image, ([\d.]+) it/s.*diffusers ([\d.]+) s/image, ([\d.]+) it/s.*"
                        r"ratio engine/diffusers ([\d.]+) time", line)
    assert figures and all(float(x) > 0 for x in figures.groups()), line
    assert "peak RSS" in out


def test_random_sd1_model_has_the_real_shapes():
    from bench.random_models import build_random_model
    from modules.models.speed import current_attention

    with one_torch_thread():
        built = build_random_model("sd1", torch.device("cpu"), torch.bfloat16)
    unet = built.pipe.unet
    assert unet.config.block_out_channels == [320, 640, 1280, 1280] and unet.dtype == torch.bfloat16
    assert 1.0e9 < built.params < 1.1e9  # UNet 860 M + text encoder 123 M + VAE 84 M
    assert built.model.native_size == 512 and current_attention(unet) == "sdpa"
    assert all(torch.isfinite(p).all() for p in list(unet.parameters())[:20])
