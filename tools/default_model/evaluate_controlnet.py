"""Evaluate the embedded model's ControlNet (train_controlnet.py): does the shape sit where the control
map puts it, on maps training never showed?

    python -m tools.default_model.evaluate_controlnet [--generator diffusers|engine] [--seeds 0 1]

Control maps (``held_out_cases``, fixed per seed): the held-out shape kind anywhere in the frame, and the
other shapes with their centre in the held-out box (``train_controlnet.HELD_OUT``), sizes 40-75% of the
image, random colour pairs. Prompt ``a <colour> <shape> on a <colour> background``, 20 steps, Euler a,
CFG 7, 64x64. The generated shape's mask is every pixel whose nearest palette colour is the prompt's
shape colour (analyze.nearest_color); its IoU with the control's silhouette (pixels > 127) is the score.

Reports, with the control at weight 1 and without any control (the same prompts and seeds, to show the
control is what places the shape): the share of images with IoU >= 0.5 (bar: >= 90% with control) and the
mean IoU, per group; and that weight 0 gives exactly the pixels of no control.

Generators: ``diffusers`` (StableDiffusionControlNetPipeline on the shipped folder; no control = the plain
StableDiffusionPipeline on the same components) and ``engine`` (the app's engine with the built-in
ControlNet extension: ``GenerationRequest.extensions = {"controlnet": ControlNetArgs(units=(ControlUnit(
module="none", model=<name>, image=<map>, weight=W),))}``; no control = no extension entry).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Optional, Protocol  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from . import dataset  # noqa: E402
from .analyze import nearest_color  # noqa: E402
from .train_controlnet import CONTROLNET_NAME, DEFAULT_OUT, HELD_OUT, MARGIN, TRAIN_SHAPES, silhouette  # noqa: E402

IOU_OK = 0.5  # an image "places the shape" when its shape mask overlaps the control's this much
BAR = 0.90  # share of held-out maps that must place the shape, with the control at weight 1
EVAL_SIZES = (0.4, 0.75)  # shape extent; the base VAE cannot draw much smaller shapes (train_controlnet)
GROUPS = ("held-out shape", "held-out position")
SAMPLER = "Euler a"


@dataclass(frozen=True)
class ControlCase:
    group: str  # one of GROUPS
    spec: dataset.SceneSpec
    seed: int
    control: Image.Image  # the silhouette, 64x64 RGB

    @property
    def prompt(self) -> str:
        return dataset.canonical_prompt(self.spec.fg, self.spec.shape, self.spec.bg)

    @property
    def name(self) -> str:
        s = self.spec
        return f"{self.seed}_{s.fg}_{s.shape}_{s.bg}_{s.size:.2f}_{s.cx:.2f}_{s.cy:.2f}"


def _fits(size: float, cx: float, cy: float) -> bool:
    half = size / 2 + MARGIN
    return half <= cx <= 1 - half and half <= cy <= 1 - half


def _held_out_shape_spec(rng: np.random.Generator) -> dataset.SceneSpec:
    from .train_controlnet import sample_scene

    return sample_scene(rng, shape=HELD_OUT.shape, sizes=EVAL_SIZES)


def _held_out_position_spec(rng: np.random.Generator) -> dataset.SceneSpec:
    """A training shape whose centre is in the held-out box (rejection sampling on the size/position fit)."""
    x0, y0, x1, y1 = HELD_OUT.box
    base = dataset.sample_spec(rng, shape=TRAIN_SHAPES[rng.integers(len(TRAIN_SHAPES))])
    while True:
        size = float(rng.uniform(*EVAL_SIZES))
        cx, cy = float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1))
        if _fits(size, cx, cy):
            return replace(base, size=size, cx=cx, cy=cy)


def held_out_cases(seeds: list[int], per_group: int = 24) -> list[ControlCase]:
    """``per_group`` maps of each group per seed; the maps depend only on the seed."""
    cases = []
    for seed in seeds:
        rng = np.random.default_rng(10_000 + seed)
        for _ in range(per_group):
            for group, make in zip(GROUPS, (_held_out_shape_spec, _held_out_position_spec)):
                spec = make(rng)
                cases.append(ControlCase(group, spec, seed, silhouette(spec)))
    return cases


def control_mask(control: Image.Image) -> np.ndarray:
    return np.asarray(control.convert("L")) > 127


def shape_mask(image: Image.Image, color: str) -> np.ndarray:
    """Pixels whose nearest palette colour is the shape's colour (every one: a stray blob counts against)."""
    idx = nearest_color(np.asarray(image.convert("RGB"), dtype=np.float32))
    return idx == list(dataset.PALETTE).index(color)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 0.0


def case_iou(image: Image.Image, case: ControlCase) -> float:
    return iou(shape_mask(image, case.spec.fg), control_mask(case.control))


class ControlGenerator(Protocol):
    """One 64x64 picture for a prompt, a control map at a weight (None: no control at all) and a seed."""

    def __call__(self, prompt: str, control: Image.Image, seed: int, weight: Optional[float]) -> Image.Image: ...


class DiffusersControlGenerator:
    """StableDiffusionControlNetPipeline on the ControlNet folder (Euler a); no control = the plain pipeline
    on the same components."""

    def __init__(self, model_dir: Path, controlnet_dir: Path, cfg: float = 7.0, steps: int = 20):
        import torch
        from diffusers import (ControlNetModel, EulerAncestralDiscreteScheduler, StableDiffusionControlNetPipeline,
                               StableDiffusionPipeline)

        self._torch = torch
        self.cfg, self.steps = cfg, steps
        pipe = StableDiffusionPipeline.from_pretrained(str(model_dir), safety_checker=None)
        pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        controlnet = ControlNetModel.from_pretrained(str(controlnet_dir)).eval()
        self.plain = pipe
        self.control = StableDiffusionControlNetPipeline(**pipe.components, controlnet=controlnet,
                                                         requires_safety_checker=False)
        self.control.set_progress_bar_config(disable=True)

    def __call__(self, prompt: str, control: Image.Image, seed: int, weight: Optional[float]) -> Image.Image:
        generator = self._torch.Generator().manual_seed(seed)
        common = dict(guidance_scale=self.cfg, num_inference_steps=self.steps, generator=generator,
                      height=64, width=64)
        if weight is None:
            return self.plain(prompt, **common).images[0]
        return self.control(prompt, image=control, controlnet_conditioning_scale=float(weight), **common).images[0]


class EngineControlGenerator:
    """The app's engine with the built-in ControlNet extension, one unit (module "none": the map as is)."""

    def __init__(self, model_dir: Path, controlnet_name: str = CONTROLNET_NAME, cfg: float = 7.0, steps: int = 20,
                 data_dir: Optional[Path] = None):
        from .engine_generator import EngineGenerator

        # data_dir: its models/ControlNet is scanned too (the shipped folder is always offered)
        self.gen = EngineGenerator(model_dir, data_dir=data_dir, with_extensions=True)
        from controlnet_ext.units import ControlNetArgs, ControlUnit  # on sys.path once the extensions load

        self._args, self._unit = ControlNetArgs, ControlUnit
        self.name, self.cfg, self.steps = controlnet_name, cfg, steps

    def request_fields(self, control: Image.Image, weight: Optional[float]) -> dict:
        if weight is None:
            return {}
        unit = self._unit(module="none", model=self.name, image=control, weight=float(weight))
        return {"extensions": {"controlnet": self._args(units=(unit,))}}

    def __call__(self, prompt: str, control: Image.Image, seed: int, weight: Optional[float]) -> Image.Image:
        return self.gen._run(prompt=prompt, seed=seed, cfg_scale=self.cfg, steps=self.steps, width=64, height=64,
                             **self.request_fields(control, weight))


@dataclass
class PlacementResult:
    label: str  # "control, weight 1" / "no control"
    ious: dict[str, list[float]] = field(default_factory=lambda: {g: [] for g in GROUPS})

    def values(self, group: Optional[str] = None) -> list[float]:
        return [v for g, vs in self.ious.items() if group in (None, g) for v in vs]

    def share_ok(self, group: Optional[str] = None) -> float:
        v = self.values(group)
        return float(np.mean([x >= IOU_OK for x in v])) if v else float("nan")

    def mean_iou(self, group: Optional[str] = None) -> float:
        v = self.values(group)
        return float(np.mean(v)) if v else float("nan")

    def rows(self) -> list[str]:
        return [f"{self.label:20s} {g or 'overall':18s} {len(self.values(g)):4d} {100 * self.share_ok(g):10.1f}% "
                f"{self.mean_iou(g):9.3f}" for g in (*GROUPS, None)]


HEADER = f"{'':20s} {'maps':18s} {'n':>4s} {'IoU >= 0.5':>11s} {'mean IoU':>9s}"


def run_placement(gen: ControlGenerator, cases: list[ControlCase], weight: Optional[float], label: str,
                  save_dir: Optional[Path] = None) -> PlacementResult:
    res = PlacementResult(label)
    for case in cases:
        img = gen(case.prompt, case.control, case.seed, weight)
        res.ious[case.group].append(case_iou(img, case))
        if save_dir is not None:
            tag = "none" if weight is None else f"w{weight:g}"
            img.save(save_dir / f"{tag}_{case.name}.png")
            case.control.save(save_dir / f"control_{case.name}.png")
    return res


def weight_zero_identical(gen: ControlGenerator, cases: list[ControlCase]) -> tuple[int, int, int]:
    """(identical pictures, pictures, largest pixel difference) between weight 0 and no control."""
    same, worst = 0, 0
    for case in cases:
        a = np.asarray(gen(case.prompt, case.control, case.seed, 0.0), dtype=np.int16)
        b = np.asarray(gen(case.prompt, case.control, case.seed, None), dtype=np.int16)
        diff = int(np.abs(a - b).max())
        same += diff == 0
        worst = max(worst, diff)
    return same, len(cases), worst


def main(argv: list[str] | None = None) -> int:
    from modules.paths import EMBEDDED_MODEL_DIR, REPO_ROOT

    p = argparse.ArgumentParser(prog="python -m tools.default_model.evaluate_controlnet",
                                description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=EMBEDDED_MODEL_DIR)
    p.add_argument("--controlnet", type=Path, default=DEFAULT_OUT,
                   help="diffusers ControlNet folder (diffusers generator); the engine finds it by its name")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--per-group", type=int, default=24, help="control maps of each group per seed")
    p.add_argument("--zero-checks", type=int, default=8, help="maps for the weight-0 == no-control check")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=7.0)
    p.add_argument("--generator", choices=("diffusers", "engine"), default="diffusers")
    p.add_argument("--no-baseline", dest="baseline", action="store_false", help="skip the no-control table")
    p.add_argument("--save-dir", type=Path, default=None)
    p.add_argument("--json", type=Path, default=REPO_ROOT / "tmp" / "eval_controlnet.json")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    t0 = time.time()
    if args.generator == "engine":
        gen: ControlGenerator = EngineControlGenerator(args.model, args.controlnet.name, args.cfg, args.steps)
    else:
        gen = DiffusersControlGenerator(args.model, args.controlnet, args.cfg, args.steps)
    if args.save_dir:
        args.save_dir.mkdir(parents=True, exist_ok=True)
    cases = held_out_cases(args.seeds, args.per_group)
    print(f"{len(cases)} held-out control maps (seeds {args.seeds}; {HELD_OUT.shape} anywhere, other shapes "
          f"centred in {HELD_OUT.box}); {args.generator}, {args.steps} steps, {SAMPLER}, CFG {args.cfg:g}")
    results = [run_placement(gen, cases, 1.0, "control, weight 1", args.save_dir)]
    if args.baseline:
        results.append(run_placement(gen, cases, None, "no control", args.save_dir))
    print(HEADER)
    for r in results:
        print("\n".join(r.rows()))
    ok = results[0].share_ok() >= BAR
    print(f"bar: IoU >= {IOU_OK} in >= {BAR:.0%} of maps with control -> {'PASS' if ok else 'FAIL'}")
    same, n, worst = weight_zero_identical(gen, cases[:args.zero_checks])
    print(f"weight 0 vs no control: {same}/{n} pictures identical (largest pixel difference {worst})")
    ok = ok and same == n
    print(f"total {time.time() - t0:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "controlnet": str(args.controlnet), "generator": args.generator, "seeds": args.seeds,
            "results": {r.label: {g or "overall": {"n": len(r.values(g)), "iou_ok": r.share_ok(g),
                                                   "mean_iou": r.mean_iou(g)} for g in (*GROUPS, None)}
                        for r in results},
            "weight_zero_identical": [same, n], "passes": ok,
        }, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
