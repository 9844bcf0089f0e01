"""Cost of a LoRA in a job: the same job with `<lora:...:1>` (after its first load) and without it,
measured in one run through the real engine and the built-in LoRA extension.

    python -m bench.bench_lora [--model DIR] [--steps 20] [--runs 5] [--batch 1] [--rank 16]

DIR is a diffusers-format folder (default: the embedded model). The LoRA is a kohya file written
to a temporary data folder, with random rank-`--rank` changes to every attention and MLP linear
layer of the UNet and the text encoder. Runs alternate so drift hits both alike; prints the
median seconds of each and the ratio with/without (goal: <= 1.1).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from modules.cmd_args import parse_args
from modules.extensions.runner import ExtensionSet
from modules.extensions.startup import load_extensions
from modules.generation.request import GenerationRequest
from bench.common import OneModel, load_bench_model
from modules.paths import EMBEDDED_MODEL_DIR, Paths
from modules.processing.engine import Engine
from modules.settings import SettingsStore

PROMPT = "a red circle on a blue background"


def write_lora(pipe, path: Path, rank: int) -> int:
    """A kohya-layout LoRA for every attention/MLP linear layer; returns the layer count."""
    g, sd = torch.Generator().manual_seed(0), {}
    for component, prefix in (("unet", "lora_unet_"), ("text_encoder", "lora_te_")):
        for name, mod in getattr(pipe, component).named_modules():
            if not isinstance(mod, torch.nn.Linear) or not any(w in name for w in ("attn", "mlp", "ff")):
                continue
            if component == "text_encoder" and not name.startswith("text_model."):
                name = "text_model." + name  # the kohya naming (transformers 4 layout)
            key = prefix + name.replace(".", "_")
            sd[f"{key}.lora_down.weight"] = torch.randn(rank, mod.in_features, generator=g) * 0.05
            sd[f"{key}.lora_up.weight"] = torch.randn(mod.out_features, rank, generator=g) * 0.05
            sd[f"{key}.alpha"] = torch.tensor(float(rank))
    save_file(sd, str(path))
    return len(sd) // 3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=EMBEDDED_MODEL_DIR)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--fp16", action="store_true", help="half precision (CUDA)")
    args = ap.parse_args()

    loaded = load_bench_model(args.model, args.fp16)
    pipe, model, device, size = loaded.pipe, loaded.model, loaded.device, loaded.size
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        (data_dir / "models" / "Lora").mkdir(parents=True)
        layers = write_lora(pipe, data_dir / "models" / "Lora" / "bench.safetensors", args.rank)
        loaded = load_extensions(Paths(data_dir=data_dir), SettingsStore(None), parse_args(["--data-dir", tmp]))
        lora = loaded.extension_set.get("lora")
        engine = Engine(OneModel(model), SettingsStore(None), Paths(data_dir=data_dir), extensions=ExtensionSet([lora]))
        name = torch.cuda.get_device_name() if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
        print(f"device: {name}, dtype: {pipe.dtype}, model: {args.model}, size: {size}, steps: {args.steps}, "
              f"batch: {args.batch}, runs: {args.runs}, LoRA: rank {args.rank} on {layers} layers")

        def job(prompt: str):
            return GenerationRequest(prompt=prompt, seed=1, steps=args.steps, cfg_scale=7.0, sampler_name="Euler a",
                                     width=size, height=size, batch_size=args.batch, save_images=False)

        with_lora, without = job(PROMPT + " <lora:bench:1>"), job(PROMPT)

        def timed(request) -> float:
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            result = engine.generate(request)
            if device == "cuda":
                torch.cuda.synchronize()
            assert not result.warnings, result.warnings
            return time.perf_counter() - start

        first = timed(with_lora)  # first load: file read, layers matched, merge computed
        timed(without)
        a, b = [], []
        for _ in range(args.runs):
            a.append(timed(with_lora))
            b.append(timed(without))
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"first job with the LoRA (load + merge): {first:.4f} s")
        print(f"with LoRA {ma:.4f} s/job, without {mb:.4f} s/job, ratio with/without {ma / mb:.3f} (goal <= 1.1)")


if __name__ == "__main__":
    main()
