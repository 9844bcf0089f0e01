"""Evaluate the embedded default model with the deterministic analyzer.

    python -m tools.default_model.evaluate [--model models/embedded/shapes64] [--seeds 0 1]

Generation goes through a small typed generator interface: plain diffusers pipelines with Euler a
(the default), or the project's own engine with ``--generator engine``.
Default settings: 20 steps, Euler a, CFG 7, 64x64.

Reports: accuracy of foreground colour, background colour and shape over every colour x shape x
background combination (224, shape colour != background) for several seeds, per shape and overall;
plus extra checks (CFG 7 beats CFG 1; a negative prompt naming the foreground colour lowers its pixel
share; img2img at strength 0.3 keeps the colours; inpainting changes only the masked region).
"""

from __future__ import annotations

import os

# On a shared CPU, OpenMP threads that spin while waiting make torch 10-20x slower; must be set
# before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from . import dataset
from .analyze import Analysis, analyze, color_share

BAR = {"fg": 0.90, "bg": 0.90, "shape": 0.75}


class ImageGenerator(Protocol):
    """txt2img: one picture for one prompt and seed."""

    def __call__(self, prompt: str, negative_prompt: str, seed: int, cfg: float, steps: int) -> Image.Image: ...


class FullGenerator(ImageGenerator, Protocol):
    """txt2img plus the img2img and inpaint calls the extra checks use."""

    def generate_img2img(self, image: Image.Image, prompt: str, seed: int, strength: float, cfg: float,
                         steps: int) -> Image.Image: ...

    def generate_inpaint(self, image: Image.Image, mask: Image.Image, prompt: str, seed: int, cfg: float,
                         steps: int) -> Image.Image: ...


class DiffusersGenerator:
    """The three generators on plain diffusers pipelines sharing one set of components (Euler a)."""

    def __init__(self, model_dir: str | Path, device: str = "auto"):
        import torch
        from diffusers import (
            EulerAncestralDiscreteScheduler,
            StableDiffusionImg2ImgPipeline,
            StableDiffusionInpaintPipeline,
            StableDiffusionPipeline,
        )

        self._torch = torch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        pipe = StableDiffusionPipeline.from_pretrained(str(model_dir), safety_checker=None).to(device)
        pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        self.txt2img = pipe
        self.img2img = StableDiffusionImg2ImgPipeline(**pipe.components, requires_safety_checker=False)
        self.inpaint = StableDiffusionInpaintPipeline(**pipe.components, requires_safety_checker=False)
        for p in (self.img2img, self.inpaint):
            p.set_progress_bar_config(disable=True)

    def _gen(self, seed: int):
        return self._torch.Generator(device="cpu").manual_seed(seed)

    def __call__(self, prompt: str, negative_prompt: str, seed: int, cfg: float, steps: int) -> Image.Image:
        return self.txt2img(prompt, negative_prompt=negative_prompt or None, guidance_scale=cfg,
                            num_inference_steps=steps, generator=self._gen(seed)).images[0]

    def generate_img2img(self, image: Image.Image, prompt: str, seed: int, strength: float, cfg: float,
                         steps: int) -> Image.Image:
        return self.img2img(prompt, image=image, strength=strength, guidance_scale=cfg,
                            num_inference_steps=steps, generator=self._gen(seed)).images[0]

    def generate_inpaint(self, image: Image.Image, mask: Image.Image, prompt: str, seed: int, cfg: float,
                         steps: int) -> Image.Image:
        w, h = image.size
        return self.inpaint(prompt, image=image, mask_image=mask, height=h, width=w, guidance_scale=cfg,
                            num_inference_steps=steps, generator=self._gen(seed)).images[0]


# --------------------------------------------------------------------------- main accuracy table
@dataclass
class Sample:
    fg: str
    shape: str
    bg: str
    seed: int
    got: Analysis
    # share of pixels whose nearest palette colour is one the prompt names: a continuous measure of
    # prompt adherence that still moves when the accuracies are saturated
    prompt_share: float

    @classmethod
    def of(cls, image: Image.Image, fg: str, shape: str, bg: str, seed: int) -> "Sample":
        return cls(fg, shape, bg, seed, analyze(image), color_share(image, fg) + color_share(image, bg))

    @property
    def ok(self) -> dict[str, bool]:
        return {"fg": self.got.fg == self.fg, "bg": self.got.bg == self.bg, "shape": self.got.shape == self.shape}


@dataclass
class Table:
    samples: list[Sample] = field(default_factory=list)

    def accuracy(self, key: str, shape: str | None = None) -> float:
        rows = [s for s in self.samples if shape is None or s.shape == shape]
        return float(np.mean([s.ok[key] for s in rows])) if rows else float("nan")

    def score(self) -> float:
        """Mean of the three accuracies (used to compare settings)."""
        return float(np.mean([self.accuracy(k) for k in ("fg", "bg", "shape")]))

    def prompt_share(self) -> float:
        return float(np.mean([s.prompt_share for s in self.samples]))

    def passes(self) -> bool:
        return all(self.accuracy(k) >= v for k, v in BAR.items())

    def format(self) -> str:
        lines = [f"{'':10s} {'n':>5s} {'fg color':>9s} {'bg color':>9s} {'shape':>9s}"]
        for shape in (*dataset.SHAPES, None):
            n = sum(1 for s in self.samples if shape is None or s.shape == shape)
            lines.append(
                f"{shape or 'overall':10s} {n:5d} "
                + " ".join(f"{100 * self.accuracy(k, shape):8.1f}%" for k in ("fg", "bg", "shape"))
            )
        lines.append("bar: fg >= 90%, bg >= 90%, shape >= 75% -> " + ("PASS" if self.passes() else "FAIL"))
        return "\n".join(lines)

    def color_errors(self) -> str:
        """How the colour mistakes split: foreground/background swapped, no shape found, other colour."""
        fg_err = [s for s in self.samples if not s.ok["fg"]]
        bg_err = [s for s in self.samples if not s.ok["bg"]]
        swapped = sum(1 for s in fg_err if s.got.fg == s.bg)
        missing = sum(1 for s in fg_err if s.got.fg is None)
        bg_as_fg = sum(1 for s in bg_err if s.got.bg == s.fg)
        wrong = defaultdict(int)
        for s in fg_err:
            if s.got.fg not in (None, s.bg):
                wrong[f"{s.fg}->{s.got.fg}"] += 1
        for s in bg_err:
            if s.got.bg != s.fg:
                wrong[f"bg {s.bg}->{s.got.bg}"] += 1
        top = ", ".join(f"{k} x{v}" for k, v in sorted(wrong.items(), key=lambda kv: -kv[1])[:8])
        return (f"fg errors {len(fg_err)} (took the background colour {swapped}, no shape {missing}); "
                f"bg errors {len(bg_err)} (took the shape colour {bg_as_fg}); other: {top or '-'}")

    def confusion(self) -> str:
        m = defaultdict(int)
        for s in self.samples:
            m[(s.shape, s.got.shape)] += 1
        names = [*dataset.SHAPES, None]
        head = "true\\got   " + " ".join(f"{str(n):>8s}" for n in names)
        rows = [f"{t:10s} " + " ".join(f"{m[(t, g)]:8d}" for g in names) for t in dataset.SHAPES]
        return "\n".join([head, *rows])


def eval_plan(seeds: list[int], fraction: float) -> list[tuple[str, str, str, int]]:
    """(fg, shape, bg, seed) jobs. With fraction < 1, each seed takes a different slice of the 224
    combinations, so that together the seeds still cover every combination when fraction*len(seeds) >= 1."""
    combos = dataset.all_combos()
    rng = np.random.default_rng(1234)
    order = [combos[i] for i in rng.permutation(len(combos))]
    per_seed = max(1, round(fraction * len(order)))
    jobs = []
    for k, seed in enumerate(seeds):
        start = (k * per_seed) % len(order)
        chosen = [order[(start + j) % len(order)] for j in range(per_seed)]
        jobs.extend((fg, shape, bg, seed) for fg, shape, bg in chosen)
    return jobs


def run_table(gen: ImageGenerator, jobs, cfg: float = 7.0, steps: int = 20, save_dir: Path | None = None,
              progress: bool = True) -> Table:
    table = Table()
    for i, (fg, shape, bg, seed) in enumerate(jobs):
        img = gen(dataset.canonical_prompt(fg, shape, bg), "", seed, cfg, steps)
        table.samples.append(Sample.of(img, fg, shape, bg, seed))
        if save_dir is not None:
            img.save(save_dir / f"{seed}_{fg}_{shape}_{bg}_cfg{cfg:g}.png")
        if progress and (i + 1) % 50 == 0:
            print(f"  {i + 1}/{len(jobs)} images", flush=True)
    return table


# --------------------------------------------------------------------------- extra checks
@dataclass
class CheckResult:
    name: str
    passed: bool
    detail: str


def check_cfg(gen: ImageGenerator, jobs, steps: int = 20) -> CheckResult:
    """CFG 7 should follow the prompt better than CFG 1 (no guidance) on the same prompts and seeds:
    a higher share of pixels in the prompt's two colours, and accuracies no lower."""
    t1 = run_table(gen, jobs, cfg=1.0, steps=steps, progress=False)
    t7 = run_table(gen, jobs, cfg=7.0, steps=steps, progress=False)
    share1, share7, acc1, acc7 = t1.prompt_share(), t7.prompt_share(), t1.score(), t7.score()
    return CheckResult("cfg7 > cfg1", share7 > share1 and acc7 >= acc1,
                       f"prompt-colour pixel share cfg7={share7:.4f} cfg1={share1:.4f}; mean fg/bg/shape "
                       f"accuracy cfg7={acc7:.3f} cfg1={acc1:.3f} on {len(jobs)} images")


def check_negative_prompt(gen: ImageGenerator, jobs, steps: int = 20) -> CheckResult:
    """A negative prompt naming the foreground colour lowers that colour's share of pixels."""
    with_neg, without = [], []
    for fg, shape, bg, seed in jobs:
        prompt = dataset.canonical_prompt(fg, shape, bg)
        without.append(color_share(gen(prompt, "", seed, 7.0, steps), fg))
        with_neg.append(color_share(gen(prompt, fg, seed, 7.0, steps), fg))
    a, b = float(np.mean(without)), float(np.mean(with_neg))
    lower = float(np.mean(np.array(with_neg) < np.array(without)))
    return CheckResult("negative prompt", b < a,
                       f"fg colour pixel share {a:.3f} -> {b:.3f} with the colour as negative prompt "
                       f"(lower in {100 * lower:.0f}% of {len(jobs)} pairs)")


def check_img2img(gen: FullGenerator, n: int = 24, strength: float = 0.3, steps: int = 20) -> CheckResult:
    """img2img at strength 0.3 on ground-truth scenes keeps foreground and background colours."""
    rng = np.random.default_rng(42)
    kept, diffs = [], []
    for i in range(n):
        spec = dataset.sample_spec(rng)
        src = dataset.render(spec)
        out = gen.generate_img2img(src, dataset.canonical_prompt(*spec.combo()), seed=i, strength=strength,
                                   cfg=7.0, steps=steps)
        a = analyze(out)
        kept.append(a.fg == spec.fg and a.bg == spec.bg)
        diffs.append(np.abs(np.asarray(out, np.float32) - np.asarray(src, np.float32)).mean())
    rate = float(np.mean(kept))
    return CheckResult(f"img2img strength {strength}", rate >= 0.9,
                       f"colours kept in {100 * rate:.0f}% of {n}; mean abs pixel change {np.mean(diffs):.1f}/255")


def inpaint_case(spec_seed: int):
    """A centred shape, a mask box (aligned to the 8 px latent grid) around it and a different shape."""
    rng = np.random.default_rng(1000 + spec_seed)
    spec = dataset.sample_spec(rng, size_range=(0.55, 0.55), jitter=0.0)
    src = dataset.render(spec)
    mask = np.zeros((dataset.IMAGE_SIZE, dataset.IMAGE_SIZE), dtype=np.uint8)
    mask[8:56, 8:56] = 255
    others = [s for s in dataset.SHAPES if s != spec.shape]
    new_shape = others[int(rng.integers(len(others)))]
    return spec, src, Image.fromarray(mask), new_shape


def check_inpaint(gen: FullGenerator, n: int = 16, steps: int = 20) -> CheckResult:
    """Inpainting a different shape changes the masked box and leaves the rest (the border ring) alone."""
    outside, inside, new_ok = [], [], []
    for i in range(n):
        spec, src, mask, new_shape = inpaint_case(i)
        out = gen.generate_inpaint(src, mask, dataset.canonical_prompt(spec.fg, new_shape, spec.bg), seed=i,
                                   cfg=7.0, steps=steps)
        d = np.abs(np.asarray(out, np.float32) - np.asarray(src, np.float32)).mean(-1)
        m = np.asarray(mask) > 127
        # skip a 2 px band on each side of the mask edge (VAE blur)
        ring = np.ones_like(m)
        ring[6:58, 6:58] = False
        core = np.zeros_like(m)
        core[10:54, 10:54] = True
        outside.append(d[ring].mean())
        inside.append(d[core].mean())
        new_ok.append(analyze(out).shape == new_shape)
    o, ins = float(np.mean(outside)), float(np.mean(inside))
    return CheckResult("inpaint", o < 12.0 and ins > 2 * o,
                       f"mean abs change outside mask {o:.1f}/255, inside {ins:.1f}/255; "
                       f"new shape recognised in {100 * np.mean(new_ok):.0f}% of {n}")


# --------------------------------------------------------------------------- analyzer self-check
def validate_analyzer(n: int = 500, seed: int = 7) -> Table:
    """The analyzer on ground-truth dataset images (should be ~100%)."""
    rng = np.random.default_rng(seed)
    table = Table()
    for _ in range(n):
        spec = dataset.sample_spec(rng)
        table.samples.append(Sample.of(dataset.render(spec), spec.fg, spec.shape, spec.bg, seed))
    return table


def reanalyze(folder: Path, cfg: float = 7.0) -> Table:
    """Score images written by ``run_table(save_dir=...)`` (names ``SEED_FG_SHAPE_BG_cfgC.png``)."""
    table = Table()
    for f in sorted(Path(folder).glob(f"*_cfg{cfg:g}.png")):
        seed, fg, shape, bg, _ = f.stem.split("_")
        table.samples.append(Sample.of(Image.open(f), fg, shape, bg, int(seed)))
    return table


def main(argv: list[str] | None = None) -> int:
    from modules.paths import EMBEDDED_MODEL_DIR, REPO_ROOT

    p = argparse.ArgumentParser(prog="python -m tools.default_model.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=EMBEDDED_MODEL_DIR)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--fraction", type=float, default=1.0,
                   help="share of the 224 combinations per seed (seeds take different slices)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=7.0)
    p.add_argument("--extra-n", type=int, default=32, help="prompts per extra check")
    p.add_argument("--no-extra", action="store_true", help="skip the extra checks")
    p.add_argument("--save-dir", type=Path, default=None, help="also write every image here")
    p.add_argument("--json", type=Path, default=REPO_ROOT / "tmp" / "eval_default_model.json")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--generator", choices=("diffusers", "engine"), default="diffusers",
                   help="plain diffusers pipelines, or the project's engine (registry -> engine -> sampler)")
    p.add_argument("--reanalyze", type=Path, default=None,
                   help="only re-score images saved earlier with --save-dir (no generation)")
    p.add_argument("--write-readme", action="store_true",
                   help="rewrite MODEL/README.md from training_info.json with this evaluation appended")
    args = p.parse_args(argv)

    if args.reanalyze:
        table = reanalyze(args.reanalyze)
        print(table.format())
        print(table.confusion())
        print(table.color_errors())
        return 0 if table.passes() else 1

    import torch

    torch.set_num_threads(args.threads)
    t0 = time.time()
    print("analyzer on ground-truth dataset images:")
    print(validate_analyzer().format())
    if args.generator == "engine":
        from .engine_generator import EngineGenerator

        gen = EngineGenerator(args.model)
    else:
        gen = DiffusersGenerator(args.model)
    if args.save_dir:
        args.save_dir.mkdir(parents=True, exist_ok=True)
    jobs = eval_plan(args.seeds, args.fraction)
    print(f"\ngenerating {len(jobs)} images on {args.generator} ({args.steps} steps, Euler a, CFG {args.cfg:g}, "
          f"seeds {args.seeds})")
    table = run_table(gen, jobs, cfg=args.cfg, steps=args.steps, save_dir=args.save_dir)
    print(table.format())
    print(table.confusion())
    print(table.color_errors())
    checks: list[CheckResult] = []
    if not args.no_extra:
        sub = eval_plan([args.seeds[0]], args.extra_n / len(dataset.all_combos()))
        checks = [
            check_cfg(gen, sub, steps=args.steps),
            check_negative_prompt(gen, sub, steps=args.steps),
            check_img2img(gen, n=args.extra_n // 2, steps=args.steps),
            check_inpaint(gen, n=args.extra_n // 2, steps=args.steps),
        ]
        print("\nextra checks:")
        for c in checks:
            print(f"  [{'PASS' if c.passed else 'FAIL'}] {c.name}: {c.detail}")
    print(f"\ntotal {time.time() - t0:.0f} s")
    if args.write_readme:
        from .train import readme_text

        info = json.loads((args.model / "training_info.json").read_text())
        seeds = " ".join(map(str, args.seeds))
        body = (
            f"`python -m tools.default_model.evaluate --seeds {seeds} --fraction {args.fraction:g}` "
            f"({len(jobs)} images: {args.steps} steps, Euler a, CFG {args.cfg:g}, prompt "
            f"`a <colour> <shape> on a <colour> background`; deterministic numpy analyzer):\n\n"
            + "\n".join("    " + line for line in table.format().splitlines())
            + "\n\n" + "\n".join(f"- [{'PASS' if c.passed else 'FAIL'}] {c.name}: {c.detail}" for c in checks)
        )
        (args.model / "README.md").write_text(readme_text(info, body))
        print(f"wrote {args.model / 'README.md'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "model": str(args.model), "generator": args.generator, "seeds": args.seeds, "images": len(jobs),
            "accuracy": {k: table.accuracy(k) for k in ("fg", "bg", "shape")},
            "per_shape": {s: {k: table.accuracy(k, s) for k in ("fg", "bg", "shape")} for s in dataset.SHAPES},
            "passes_bar": table.passes(),
            "checks": [asdict(c) for c in checks],
        }, indent=2) + "\n")
    return 0 if table.passes() and all(c.passed for c in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
