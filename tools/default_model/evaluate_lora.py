"""Evaluate the embedded model's LoRA (train_lora.py) with the deterministic analyzer.

    python -m tools.default_model.evaluate_lora [--lora models/embedded/Lora/shapes64-ring.safetensors]

Reports, at LoRA weight 1 and weight 0 (20 steps, Euler a, CFG 7, 64x64):
- the new shape on the held-out (colour, background) pairs that training never showed
  (``train_lora.HELD_OUT``), prompt ``a <colour> ring on a <colour> background``: how often a ring is drawn
  (bar: >= 80% at weight 1, < 20% at weight 0), and the colour accuracies;
- the old concepts: the base evaluator's table (evaluate.run_table) on a slice of the 224 combinations.

Generators: ``diffusers`` loads the kohya file with diffusers' ``load_lora_weights`` in a plain pipeline and
sets the weight with ``set_adapters``; ``engine`` runs the project's engine with ``<lora:NAME:W>`` in the
prompt (needs the built-in Lora extension).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from . import dataset  # noqa: E402
from .analyze import analyze  # noqa: E402
from .evaluate import DiffusersGenerator, Table, eval_plan, run_table  # noqa: E402
from .train_lora import HELD_OUT, NEW_SHAPE  # noqa: E402

NEW_BAR_ON = 0.80  # share of rings drawn with the LoRA at weight 1
NEW_BAR_OFF = 0.20  # ... and the most allowed without it
DEFAULT_LORA = Path("models/embedded/Lora/shapes64-ring.safetensors")


class DiffusersLoraGenerator:
    """evaluate.ImageGenerator on a plain diffusers pipeline with the kohya file loaded as one adapter."""

    ADAPTER = "lora"

    def __init__(self, model_dir: Path, lora: Path):
        self.base = DiffusersGenerator(model_dir)
        self.base.txt2img.load_lora_weights(str(lora), adapter_name=self.ADAPTER)
        self.weight = 1.0

    def set_weight(self, weight: float) -> None:
        self.base.txt2img.set_adapters([self.ADAPTER], adapter_weights=[weight])
        self.weight = weight

    def __call__(self, prompt: str, negative_prompt: str, seed: int, cfg: float, steps: int) -> Image.Image:
        return self.base(prompt, negative_prompt, seed, cfg, steps)


class EngineLoraGenerator:
    """The project's engine: the weight goes into the prompt as ``<lora:NAME:W>`` (omitted at weight 0)."""

    def __init__(self, model_dir: Path, lora: Path):
        from .engine_generator import EngineGenerator

        self.gen = EngineGenerator(model_dir, with_extensions=True)
        self.name = lora.stem
        self.weight = 1.0

    def set_weight(self, weight: float) -> None:
        self.weight = weight

    def __call__(self, prompt: str, negative_prompt: str, seed: int, cfg: float, steps: int) -> Image.Image:
        tag = f" <lora:{self.name}:{self.weight:g}>" if self.weight else ""
        return self.gen(prompt + tag, negative_prompt, seed, cfg, steps)


@dataclass
class NewShapeResult:
    weight: float
    rings: list[bool] = field(default_factory=list)
    fg_ok: list[bool] = field(default_factory=list)
    bg_ok: list[bool] = field(default_factory=list)

    def rate(self, values: list[bool]) -> float:
        return float(np.mean(values)) if values else float("nan")

    def row(self) -> str:
        return (f"weight {self.weight:<4g} {len(self.rings):5d} {100 * self.rate(self.rings):8.1f}% "
                f"{100 * self.rate(self.fg_ok):8.1f}% {100 * self.rate(self.bg_ok):8.1f}%")


def held_out_jobs(seeds: list[int]) -> list[tuple[str, str, str, int]]:
    return [(fg, NEW_SHAPE, bg, seed) for seed in seeds for fg, bg in sorted(HELD_OUT)]


def run_new_shape(gen, weight: float, jobs, cfg: float, steps: int, save_dir: Path | None) -> NewShapeResult:
    gen.set_weight(weight)
    res = NewShapeResult(weight)
    for fg, shape, bg, seed in jobs:
        img = gen(dataset.canonical_prompt(fg, shape, bg), "", seed, cfg, steps)
        a = analyze(img, extra_shapes=True)
        res.rings.append(a.shape == NEW_SHAPE)
        res.fg_ok.append(a.fg == fg)
        res.bg_ok.append(a.bg == bg)
        if save_dir is not None:
            img.save(save_dir / f"w{weight:g}_{seed}_{fg}_{shape}_{bg}.png")
    return res


def main(argv: list[str] | None = None) -> int:
    from modules.paths import EMBEDDED_MODEL_DIR, REPO_ROOT

    p = argparse.ArgumentParser(prog="python -m tools.default_model.evaluate_lora", description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=EMBEDDED_MODEL_DIR)
    p.add_argument("--lora", type=Path, default=REPO_ROOT / DEFAULT_LORA)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--old-fraction", type=float, default=0.25,
                   help="share of the 224 old combinations per seed for the old-concept table (0 = skip)")
    p.add_argument("--old-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=7.0)
    p.add_argument("--generator", choices=("diffusers", "engine"), default="diffusers")
    p.add_argument("--save-dir", type=Path, default=None)
    p.add_argument("--json", type=Path, default=REPO_ROOT / "tmp" / "eval_lora.json")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    t0 = time.time()
    cls = EngineLoraGenerator if args.generator == "engine" else DiffusersLoraGenerator
    gen = cls(args.model, args.lora)
    if args.save_dir:
        args.save_dir.mkdir(parents=True, exist_ok=True)
    jobs = held_out_jobs(args.seeds)
    print(f"new shape '{NEW_SHAPE}' on {len(HELD_OUT)} held-out colour/background pairs x seeds {args.seeds} "
          f"({args.generator}, {args.steps} steps, Euler a, CFG {args.cfg:g})")
    new = {w: run_new_shape(gen, w, jobs, args.cfg, args.steps, args.save_dir) for w in (1.0, 0.0)}
    print(f"{'':11s} {'n':>5s} {'ring':>9s} {'fg color':>9s} {'bg color':>9s}")
    for r in new.values():
        print(r.row())
    new_ok = new[1.0].rate(new[1.0].rings) >= NEW_BAR_ON and new[0.0].rate(new[0.0].rings) < NEW_BAR_OFF
    print(f"bar: ring >= {NEW_BAR_ON:.0%} at weight 1, < {NEW_BAR_OFF:.0%} at weight 0 -> {'PASS' if new_ok else 'FAIL'}")

    old: dict[float, Table] = {}
    if args.old_fraction > 0:
        old_jobs = eval_plan(args.old_seeds, args.old_fraction)
        for w in (0.0, 1.0):
            gen.set_weight(w)
            print(f"\nold concepts at weight {w:g} ({len(old_jobs)} images, seeds {args.old_seeds}):")
            old[w] = run_table(gen, old_jobs, cfg=args.cfg, steps=args.steps, progress=False)
            print(old[w].format())
    old_ok = all(t.passes() for w, t in old.items() if w == 0.0)
    print(f"\ntotal {time.time() - t0:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "lora": str(args.lora), "generator": args.generator, "seeds": args.seeds,
            "new_shape": {str(w): {"n": len(r.rings), "ring": r.rate(r.rings), "fg": r.rate(r.fg_ok),
                                   "bg": r.rate(r.bg_ok)} for w, r in new.items()},
            "old": {str(w): {k: t.accuracy(k) for k in ("fg", "bg", "shape")} | {"passes_bar": t.passes()}
                    for w, t in old.items()},
            "passes": new_ok and old_ok,
        }, indent=2) + "\n")
    return 0 if new_ok and old_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
