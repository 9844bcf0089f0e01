"""Train a ControlNet for the embedded model that puts the shape where a silhouette map says, and save it
as a diffusers folder (the one the built-in ControlNet extension offers out of the box).

    python -m tools.default_model.train_controlnet --minutes 40

The control map is the shape's silhouette: white shape on black, 64x64 RGB (``silhouette``). The base
model only ever drew shapes of 50-75% of the image near the centre; here the scenes have the shape's size
and position varied widely (``sample_scene``), so the ControlNet has to move and resize the shape, which
the prompt cannot do.

Data: the base trainer's scenes and captions (with dropout for classifier-free guidance), rendered and
VAE-encoded once into a pool as train_lora does. ``HELD_OUT`` (one shape kind, and a box of shape
centres) never appears in training; the evaluator (evaluate_controlnet.py) draws its control maps there.
Sizes below ~0.3 of the image are left out: the base VAE (trained on 50-75% shapes) cannot round-trip
them, so no latent the UNet can make decodes to them.

The ControlNet is ``ControlNetModel.from_unet`` of the base UNet (its down blocks and mid block copied,
zero convolutions on the residuals) with a conditioning embedding whose three stride-2 convolutions take
the 64x64 map to the 8x8 latents. Text encoder, UNet and VAE stay frozen.
"""

from __future__ import annotations

import os

# On a shared CPU, OpenMP threads that spin while waiting make torch 10-20x slower; must be set
# before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from modules.paths import EMBEDDED_MODEL_DIR, REPO_ROOT  # noqa: E402

from . import dataset  # noqa: E402

CONTROLNET_NAME = "control_shapes64_silhouette"
DEFAULT_OUT = REPO_ROOT / "models" / "embedded" / "ControlNet" / CONTROLNET_NAME
# Image-space channels of the conditioning embedding's convolutions: three stride-2 steps, 64 -> 8.
COND_CHANNELS = (16, 32, 64, 64)
MARGIN = 0.02  # the whole shape stays this far inside the frame
TRAIN_SIZES = (0.3, 0.8)  # shape extent as a fraction of the image side (base model: 0.5-0.75)


@dataclass(frozen=True)
class HeldOut:
    """What training never shows: one shape kind anywhere, and every shape whose centre is in a box
    (image coordinates in [0, 1], x to the right, y down)."""

    shape: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1

    def in_box(self, cx: float, cy: float) -> bool:
        x0, y0, x1, y1 = self.box
        return x0 <= cx <= x1 and y0 <= cy <= y1

    def excludes(self, spec: dataset.SceneSpec) -> bool:
        return spec.shape == self.shape or self.in_box(spec.cx, spec.cy)


# The one definition of the held-out set: stars, and centres in the upper-right box.
HELD_OUT = HeldOut(shape="star", box=(0.58, 0.2, 0.78, 0.4))
TRAIN_SHAPES: tuple[str, ...] = tuple(s for s in dataset.SHAPES if s != HELD_OUT.shape)


def place(rng: np.random.Generator, size: float) -> tuple[float, float]:
    """A centre anywhere that keeps a shape of this extent inside the frame."""
    lo, hi = size / 2 + MARGIN, 1 - size / 2 - MARGIN
    return float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))


def sample_scene(rng: np.random.Generator, shape: str | None = None, sizes: tuple[float, float] = TRAIN_SIZES,
                 fg: str | None = None, bg: str | None = None) -> dataset.SceneSpec:
    """A base-dataset scene with the shape's size and position drawn over the whole frame."""
    spec = dataset.sample_spec(rng, shape=shape, fg=fg, bg=bg)
    size = float(rng.uniform(*sizes))
    cx, cy = place(rng, size)
    return replace(spec, size=size, cx=cx, cy=cy)


def sample_training_scene(rng: np.random.Generator) -> dataset.SceneSpec:
    """A scene outside ``HELD_OUT`` (rejection sampling; the box is a small share of the frame)."""
    while True:
        spec = sample_scene(rng, shape=TRAIN_SHAPES[rng.integers(len(TRAIN_SHAPES))])
        if not HELD_OUT.excludes(spec):
            return spec


def silhouette(spec: dataset.SceneSpec) -> Image.Image:
    """The control map: the scene's shape in white on black, 64x64 RGB, anti-aliased like the scene."""
    drawn = np.asarray(dataset.render(replace(spec, fg="white", bg="black")), dtype=np.float32)[..., 0]
    lo, hi = dataset.PALETTE["black"][0], dataset.PALETTE["white"][0]
    gray = np.clip((drawn - lo) * 255.0 / (hi - lo), 0, 255).round().astype(np.uint8)
    return Image.fromarray(gray, "L").convert("RGB")


@dataclass
class ControlNetTrainArgs:
    out: Path = DEFAULT_OUT
    model: Path = EMBEDDED_MODEL_DIR
    minutes: float = 40.0  # wall-clock budget (0 = none): the run stops cleanly and saves when it is spent
    steps: int = 8000
    batch: int = 32
    lr: float = 5e-4
    warmup: int = 100
    pool: int = 6144
    caption_dropout: float = 0.2
    noise_offset: float = 0.05
    min_snr: float = 5.0
    ema: float = 0.999  # shipped weights: EMA with this decay (0 = the raw weights)
    export_every: int = 1000  # also save to <work-dir>/step-N every N steps (0 = never), to survive a crash
    work_dir: Path = REPO_ROOT / "tmp" / "train_controlnet"
    seed: int = 0
    threads: int = 1
    preview: bool = True
    info: Path | None = None  # training_info.json (default: beside the folder)
    # Ship the --export-every snapshot of this step instead of the last weights (0 = the last). Held-out
    # placement peaks mid-run and then falls as the ControlNet fits the training scenes (README).
    ship_step: int = 0


def parse_args(argv: list[str] | None = None) -> ControlNetTrainArgs:
    d = ControlNetTrainArgs()
    p = argparse.ArgumentParser(prog="python -m tools.default_model.train_controlnet",
                                description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=d.out, help="diffusers ControlNetModel folder to write")
    p.add_argument("--model", type=Path, default=d.model, help="base diffusers folder")
    p.add_argument("--minutes", type=float, default=d.minutes,
                   help="wall-clock budget; the lr schedule follows max(step, time) progress; 0 = steps only")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--pool", type=int, default=d.pool, help="scenes rendered and VAE-encoded once")
    p.add_argument("--caption-dropout", type=float, default=d.caption_dropout)
    p.add_argument("--noise-offset", type=float, default=d.noise_offset)
    p.add_argument("--min-snr", type=float, default=d.min_snr)
    p.add_argument("--ema", type=float, default=d.ema)
    p.add_argument("--export-every", type=int, default=d.export_every)
    p.add_argument("--work-dir", type=Path, default=d.work_dir, help="where the --export-every snapshots go")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--no-preview", dest="preview", action="store_false", help="skip the preview PNG")
    p.add_argument("--info", type=Path, default=None, help="training_info.json (default: beside the folder)")
    p.add_argument("--ship-step", type=int, default=d.ship_step,
                   help="ship the --export-every snapshot of this step (chosen on validation seeds) instead of the last")
    return ControlNetTrainArgs(**vars(p.parse_args(argv)))


def control_tensor(maps: np.ndarray):
    """uint8 (N, 64, 64) silhouettes -> float (N, 3, 64, 64) in [0, 1], the range diffusers' ControlNet
    pipeline and the extension feed the model."""
    import torch

    x = torch.from_numpy(maps).float().div_(255.0)
    return x[:, None].expand(-1, 3, -1, -1).contiguous()


class ControlNetTrainer:
    def __init__(self, args: ControlNetTrainArgs):
        import torch
        from diffusers import ControlNetModel, DDPMScheduler, StableDiffusionPipeline

        from .train import Ema

        self.torch = torch
        self.args = a = args
        torch.set_num_threads(a.threads)
        torch.manual_seed(a.seed)
        self.rng = np.random.default_rng(a.seed)
        self.pipe = StableDiffusionPipeline.from_pretrained(str(a.model), safety_checker=None)
        self.pipe.set_progress_bar_config(disable=True)
        for m in (self.pipe.unet, self.pipe.text_encoder, self.pipe.vae):
            m.requires_grad_(False)
            m.eval()
        self.controlnet = ControlNetModel.from_unet(self.pipe.unet, conditioning_embedding_out_channels=COND_CHANNELS)
        self.params = [p for p in self.controlnet.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=a.lr, weight_decay=1e-4)
        self.ema = Ema(self.params, a.ema) if a.ema > 0 else None
        self.noise_scheduler = DDPMScheduler.from_config(self.pipe.scheduler.config)
        self.scaling = self.pipe.vae.config.scaling_factor
        self.step = 0
        self.history: list[dict] = []

    def build_pool(self):
        """Scenes outside HELD_OUT: their specs, VAE posterior mean/std and silhouettes (uint8)."""
        torch = self.torch
        rng = np.random.default_rng(self.args.seed + 777)
        specs = [sample_training_scene(rng) for _ in range(self.args.pool)]
        means, stds = [], []
        with torch.no_grad():
            for i in range(0, len(specs), 256):
                x = torch.from_numpy(dataset.to_tensor_array([dataset.render(s) for s in specs[i:i + 256]]))
                dist = self.pipe.vae.encode(x).latent_dist
                means.append(dist.mean)
                stds.append(dist.std)
        maps = np.stack([np.asarray(silhouette(s))[..., 0] for s in specs])
        return specs, torch.cat(means), torch.cat(stds), maps

    def captions(self, specs: list[dataset.SceneSpec]) -> list[str]:
        return ["" if self.rng.random() < self.args.caption_dropout else dataset.caption(s, self.rng) for s in specs]

    def encode_text(self, texts: list[str]):
        tok = self.pipe.tokenizer
        ids = tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        with self.torch.no_grad():
            return self.pipe.text_encoder(ids)[0]

    def train(self) -> float:
        import torch.nn.functional as F

        from .train import PhaseClock, lr_factor, min_snr_weights

        torch = self.torch
        a = self.args
        t0 = time.time()
        specs, means, stds, maps = self.build_pool()
        self.pool_seconds = time.time() - t0
        print(f"pool of {len(specs)} scenes encoded in {self.pool_seconds:.0f} s", flush=True)
        alphas = self.noise_scheduler.alphas_cumprod
        self.controlnet.train()
        clock = PhaseClock(a.steps, a.minutes)
        ema_loss = None
        for step in range(a.steps):
            progress = clock.progress(step)
            if progress >= 1.0:
                print(f"time budget of {a.minutes:g} min reached at step {step}", flush=True)
                break
            for g in self.opt.param_groups:
                g["lr"] = a.lr * lr_factor(step, progress, a.warmup)
            idx = torch.from_numpy(self.rng.integers(0, len(specs), size=a.batch))
            latents = (means[idx] + stds[idx] * torch.randn_like(means[idx])) * self.scaling
            cond = control_tensor(maps[idx.numpy()])
            states = self.encode_text(self.captions([specs[i] for i in idx.tolist()]))
            noise = torch.randn_like(latents)
            if a.noise_offset:
                noise = noise + a.noise_offset * torch.randn(latents.shape[0], latents.shape[1], 1, 1)
            t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (latents.shape[0],))
            ab = alphas[t].view(-1, 1, 1, 1)
            noisy = ab.sqrt() * latents + (1 - ab).sqrt() * noise
            down, mid = self.controlnet(noisy, t, states, controlnet_cond=cond, return_dict=False)
            pred = self.pipe.unet(noisy, t, states, down_block_additional_residuals=down,
                                  mid_block_additional_residual=mid).sample
            per_sample = F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))
            weights = min_snr_weights(ab.view(-1), a.min_snr) if a.min_snr else torch.ones_like(per_sample)
            loss = (weights * per_sample).mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.opt.step()
            if self.ema is not None:
                self.ema.update(step)
            self.step = step + 1
            ema_loss = loss.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * loss.item()
            if self.step % 50 == 0 or self.step == 1:
                self.history.append({"step": self.step, "loss": round(ema_loss, 5), "seconds": round(clock.elapsed, 1)})
                print(f"step {self.step} loss {ema_loss:.4f} lr {self.opt.param_groups[0]['lr']:.2e} "
                      f"{clock.elapsed / 60:.1f} min", flush=True)
            if a.export_every and self.step % a.export_every == 0:
                a.work_dir.mkdir(parents=True, exist_ok=True)
                self.save(a.work_dir / f"step-{self.step}")
        self.controlnet.eval()
        return ema_loss if ema_loss is not None else float("nan")

    def save(self, folder: Path) -> None:
        """The shipped weights (EMA when on) as a diffusers folder, written to a temporary name first."""
        import shutil
        import contextlib

        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        with self.ema.applied() if self.ema is not None else contextlib.nullcontext():
            self.controlnet.save_pretrained(str(tmp), safe_serialization=True)
        for f in tmp.iterdir():
            os.chmod(f, 0o644)  # safetensors writes 0600; the folder is shipped and read by the app
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)

    @staticmethod
    def ship_snapshot(snapshot: Path, out: Path) -> None:
        """The shipped folder becomes a copy of an --export-every snapshot (EMA weights of that step)."""
        import shutil

        if not (snapshot / "config.json").is_file():
            raise SystemExit(f"--ship-step: no snapshot at {snapshot} (steps are saved every --export-every)")
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(snapshot, tmp)
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)

    def write_preview(self, path: Path) -> None:
        """Four held-out control maps (top) and what the shipped weights draw for them (bottom), 2x."""
        from .evaluate_controlnet import DiffusersControlGenerator, held_out_cases

        gen = DiffusersControlGenerator(self.args.model, self.args.out)
        cases = held_out_cases([0])[::7][:4]
        sheet = Image.new("RGB", (64 * len(cases), 128))
        for i, case in enumerate(cases):
            sheet.paste(case.control, (64 * i, 0))
            sheet.paste(gen(case.prompt, case.control, case.seed, 1.0), (64 * i, 64))
        sheet.resize((sheet.width * 2, sheet.height * 2), Image.Resampling.NEAREST).save(path)

    def run(self) -> dict:
        a = self.args
        started = time.time()
        final_loss = self.train()
        a.out.parent.mkdir(parents=True, exist_ok=True)
        self.save(a.out)
        if a.ship_step:
            self.ship_snapshot(a.work_dir / f"step-{a.ship_step}", a.out)
        info = {
            "name": CONTROLNET_NAME, "steps": self.step, "final_loss": round(final_loss, 5),
            "shipped_step": a.ship_step or self.step,
            "pool_seconds": round(self.pool_seconds, 1),
            "train_seconds": round(time.time() - started - self.pool_seconds, 1),
            "started_at": int(started), "finished_at": int(time.time()),
            "held_out": {"shape": HELD_OUT.shape, "centre_box": list(HELD_OUT.box)},
            "train_shapes": list(TRAIN_SHAPES), "train_sizes": list(TRAIN_SIZES),
            "conditioning_embedding_out_channels": list(COND_CHANNELS),
            "params": sum(p.numel() for p in self.controlnet.parameters()),
            "command": "python -m tools.default_model.train_controlnet " + " ".join(sys.argv[1:]),
            "args": {k: str(v) for k, v in asdict(a).items()}, "history": self.history,
        }
        info_path = a.info or a.out.parent / "training_info.json"
        info_path.write_text(json.dumps(info, indent=1) + "\n")
        os.chmod(info_path, 0o644)
        if a.preview:
            self.write_preview(a.out.parent / f"{CONTROLNET_NAME}.png")
        size = sum(f.stat().st_size for f in a.out.iterdir())
        print(f"wrote {a.out} ({size / 1e6:.1f} MB) after {self.step} steps, "
              f"{info['train_seconds'] / 60:.1f} min (+{self.pool_seconds / 60:.1f} min pool)", flush=True)
        return info


def main(argv: list[str] | None = None) -> None:
    ControlNetTrainer(parse_args(argv)).run()


if __name__ == "__main__":
    main()
