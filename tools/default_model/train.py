"""Train the embedded default model and write it as a diffusers folder.

    python -m tools.default_model.train --out models/embedded/shapes64

Two phases, both seeded and resumable (``--resume``; state lives in ``--work-dir``):
1. VAE: reconstruction (MSE + L1) plus a small KL term on freshly rendered scenes. Afterwards the
   latent scaling factor is set to 1/std of the latents, so diffusion sees ~unit-variance latents.
2. Text encoder + UNet: epsilon-prediction MSE on scaled VAE latents (SD 1.x schedule) with
   min-SNR-gamma weighting, and caption dropout so classifier-free guidance works. Latents come
   from a pool of scenes that is rendered and encoded once at the start of the phase
   (deterministic from the seed); captions are drawn fresh for every sample. An auxiliary loss
   (training-only linear heads) asks the text encoder's EOS and padding tokens, which the UNet
   attends to, to tell the shape's colour from the background's: without it they encode the set
   of colours but not which is which, and the model swaps them. The exported weights are an
   exponential moving average of the trained ones.
"""

from __future__ import annotations

import os

# On a shared CPU, OpenMP threads that spin while waiting make torch 10-20x slower; must be set
# before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, StableDiffusionPipeline
from tqdm.auto import tqdm

from modules.paths import CLIP_TOKENIZER_DIR, REPO_ROOT

from . import dataset
from .components import (
    EOS_TOKEN_ID,
    PRESETS,
    ModelConfig,
    build_scheduler,
    build_text_encoder,
    build_unet,
    build_vae,
    load_tokenizer,
)

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class TrainArgs:
    out: Path
    work_dir: Path
    # The defaults are the recipe of the shipped model: on the 2-core CPU the wall-clock budgets end
    # the phases (10 + 82 minutes); on a GPU the step counts do, much sooner.
    preset: str = "full"
    vae_steps: int = 5000
    vae_batch: int = 16
    vae_lr: float = 1.5e-3
    kl_weight: float = 2e-7
    unet_steps: int = 20000
    # Early stop: the lr schedule is laid out for unet_steps / unet_minutes, but the run ends here. Later,
    # sharper weights fit CFG 1-5 better and over-shoot colours at the default CFG 7 (see README).
    stop_at: int = 2000
    batch: int = 64
    vae_minutes: float = 10.0  # wall-clock budget per phase (0 = none), see PhaseClock
    unet_minutes: float = 82.0
    lr: float = 6e-4
    warmup: int = 100
    caption_dropout: float = 0.1
    noise_offset: float = 0.05
    min_snr: float = 5.0  # min-SNR-gamma loss weighting; 0 = plain MSE
    aux_weight: float = 0.05  # weight of the caption-attribute loss on the text encoder; 0 = off
    ema_decay: float = 0.999  # EMA of UNet + text encoder weights, which is what gets exported; 0 = off
    pool_size: int = 12288
    decoder_every: int = 4  # in phase 2, one decoder-only step (frozen encoder) every N UNet steps; 0 = off
    seed: int = 0
    resume: bool = False
    restart_schedule: bool = False
    checkpoint_every: int = 200
    export_every: int = 0  # also write a loadable snapshot to work_dir/snapshot every N UNet steps
    threads: int = 2
    device: str = "auto"


def parse_args(argv: list[str] | None = None) -> TrainArgs:
    d = TrainArgs(out=Path(), work_dir=Path())
    p = argparse.ArgumentParser(prog="python -m tools.default_model.train", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="diffusers folder to write")
    p.add_argument("--work-dir", type=Path, default=REPO_ROOT / "tmp" / "default_model_work",
                   help="checkpoints and snapshots (default: tmp/default_model_work)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=d.preset)
    p.add_argument("--vae-steps", type=int, default=d.vae_steps)
    p.add_argument("--vae-batch", type=int, default=d.vae_batch)
    p.add_argument("--vae-lr", type=float, default=d.vae_lr)
    p.add_argument("--kl-weight", type=float, default=d.kl_weight)
    p.add_argument("--steps", "--unet-steps", dest="unet_steps", type=int, default=d.unet_steps,
                   help="text encoder + UNet steps")
    p.add_argument("--stop-at", type=int, default=d.stop_at,
                   help="end the UNet phase at this step, schedule unchanged (0 = run the whole schedule)")
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--vae-minutes", type=float, default=d.vae_minutes,
                   help="wall-clock budget for the VAE phase; 0 = none (purely step-based, reproducible)")
    p.add_argument("--unet-minutes", type=float, default=d.unet_minutes,
                   help="wall-clock budget for the UNet phase; 0 = none. With a budget the schedule "
                   "advances by max(step fraction, time fraction) and the phase ends at whichever comes first")
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--caption-dropout", type=float, default=d.caption_dropout)
    p.add_argument("--noise-offset", type=float, default=d.noise_offset)
    p.add_argument("--min-snr", type=float, default=d.min_snr, help="min-SNR-gamma loss weighting (0 = off)")
    p.add_argument("--aux-weight", type=float, default=d.aux_weight,
                   help="weight of the auxiliary loss that makes the text encoder bind colours to shape and "
                   "background (0 = off)")
    p.add_argument("--ema-decay", type=float, default=d.ema_decay,
                   help="exported weights are this EMA of the UNet and text encoder (0 = export raw weights)")
    p.add_argument("--pool-size", type=int, default=d.pool_size)
    p.add_argument("--decoder-every", type=int, default=d.decoder_every,
                   help="phase 2 keeps training the VAE decoder (encoder frozen, so latents do not move): "
                   "one decoder step every N UNet steps; 0 = off")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--resume", action="store_true", help="continue from work-dir/checkpoint.pt if present")
    p.add_argument("--restart-schedule", action="store_true",
                   help="with --resume in phase 2: restart warm-up + cosine from the current step; "
                   "--unet-minutes then counts from the restart")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--export-every", type=int, default=d.export_every)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--device", default=d.device, help="auto (cuda when available), cpu or cuda")
    return TrainArgs(**vars(p.parse_args(argv)))


def lr_factor(step: int, progress: float, warmup: int) -> float:
    """Linear warm-up then cosine decay (over ``progress`` in [0, 1]) to 2% of the base rate."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class PhaseClock:
    """Progress of a phase: the step fraction, or the wall-time fraction when that is larger.

    A time budget keeps the run inside a wall-clock limit on a shared, unpredictable CPU; without one
    (``minutes=0``) training is purely step-based and reproducible from the seed.
    """

    def __init__(self, total_steps: int, minutes: float, elapsed: float = 0.0, first_step: int = 0):
        self.total_steps = total_steps
        self.first_step = first_step  # where the schedule (re)started
        self.budget = minutes * 60.0
        self.start = time.time() - elapsed

    @property
    def elapsed(self) -> float:
        return time.time() - self.start

    def progress(self, step: int) -> float:
        p = (step - self.first_step) / max(1, self.total_steps - self.first_step)
        if self.budget > 0:
            p = max(p, self.elapsed / self.budget)
        return min(1.0, p)


class CaptionHeads(torch.nn.Module):
    """Training-only linear probes from text-encoder token states to the scene attributes."""

    def __init__(self, hidden: int):
        super().__init__()
        self.fg = torch.nn.Linear(hidden, len(dataset.COLORS))
        self.bg = torch.nn.Linear(hidden, len(dataset.COLORS))
        self.shape = torch.nn.Linear(hidden, len(dataset.SHAPES))

    def loss(self, states: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on every token state in ``states`` (N, hidden); ``labels`` (N, 3), -100 = unnamed."""
        heads = (self.fg, self.bg, self.shape)
        losses = [F.cross_entropy(h(states), labels[:, i], ignore_index=-100) for i, h in enumerate(heads)
                  if bool((labels[:, i] >= 0).any())]
        return torch.stack(losses).mean() if losses else states.sum() * 0.0


def caption_labels(spec: dataset.SceneSpec, cap: dataset.Caption) -> tuple[int, int, int]:
    return (
        dataset.COLORS.index(spec.fg) if cap.names_fg else -100,
        dataset.COLORS.index(spec.bg) if cap.names_bg else -100,
        dataset.SHAPES.index(spec.shape) if cap.names_shape else -100,
    )


def min_snr_weights(alphas_cumprod_t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample epsilon-loss weights min(SNR, gamma) / SNR (Hang et al. 2023): easy low-noise steps
    count less, so training spends its effort on the noisy steps where colours and layout are decided."""
    snr = alphas_cumprod_t / (1 - alphas_cumprod_t)
    return snr.clamp(max=gamma) / snr


class Ema:
    """Exponential moving average of a list of parameters, with the usual short warm-up."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float):
        self.params = params
        self.decay = decay
        self.shadow = [p.detach().clone() for p in params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1 - d)

    @contextlib.contextmanager
    def applied(self):
        """Temporarily load the averaged weights into the live parameters."""
        saved = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, s in zip(self.params, saved):
                    p.copy_(s)


class Trainer:
    def __init__(self, args: TrainArgs):
        self.args = args
        if args.device == "auto":
            self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        else:
            self.device = torch.device(args.device)
        if self.device.type == "cpu":
            torch.set_num_threads(args.threads)
        self.cfg: ModelConfig = PRESETS[args.preset]
        torch.manual_seed(args.seed)
        self.vae = build_vae(self.cfg).to(self.device)
        self.text_encoder = build_text_encoder(self.cfg).to(self.device)
        self.unet = build_unet(self.cfg).to(self.device)
        self.tokenizer = load_tokenizer()
        self.noise_scheduler = DDPMScheduler.from_config(build_scheduler().config)
        self.rng = np.random.default_rng(args.seed)
        self.phase = "vae"
        self.step = 0
        self.scaling_factor: float | None = None
        self.aux_heads = CaptionHeads(self.cfg.text_hidden).to(self.device)
        self.vae_opt = torch.optim.AdamW(self.vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
        model_params = list(self.unet.parameters()) + list(self.text_encoder.parameters())
        self.unet_opt = torch.optim.AdamW(
            model_params + list(self.aux_heads.parameters()), lr=args.lr, weight_decay=0.01
        )
        self.ema = Ema(model_params, args.ema_decay) if args.ema_decay else None
        decoder_params = list(self.vae.decoder.parameters()) + list(self.vae.post_quant_conv.parameters())
        self.dec_opt = torch.optim.AdamW(decoder_params, lr=args.vae_lr, weight_decay=0.0)
        self.history: list[dict] = []
        self.elapsed = 0.0  # training seconds over all (resumed) runs
        self.vae_steps_done = 0
        self.phase_elapsed = 0.0  # seconds spent in the current phase (restored on resume)
        self.clock: PhaseClock | None = None
        self.dec_mse: float | None = None
        self.schedule_start = 0  # UNet step where the lr schedule (re)started, see --restart-schedule
        args.work_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_path = args.work_dir / CHECKPOINT_NAME

    # ----------------------------------------------------------------- checkpointing
    def save_checkpoint(self) -> None:
        state = {
            "phase": self.phase,
            "step": self.step,
            "model_config": self.cfg.to_dict(),
            "preset": self.args.preset,
            "vae": self.vae.state_dict(),
            "text_encoder": self.text_encoder.state_dict(),
            "unet": self.unet.state_dict(),
            "aux_heads": self.aux_heads.state_dict(),
            "ema": self.ema.shadow if self.ema is not None else None,
            "vae_opt": self.vae_opt.state_dict(),
            "unet_opt": self.unet_opt.state_dict(),
            "dec_opt": self.dec_opt.state_dict(),
            "scaling_factor": self.scaling_factor,
            "np_rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "history": self.history,
            "elapsed": self.elapsed + (time.time() - self._t0),
            "vae_steps_done": self.vae_steps_done,
            "schedule_start": self.schedule_start,
            "phase_elapsed": self.clock.elapsed if self.clock is not None else 0.0,
        }
        tmp = self.ckpt_path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.ckpt_path)

    def load_checkpoint(self) -> bool:
        if not self.ckpt_path.exists():
            return False
        state = torch.load(self.ckpt_path, map_location=self.device, weights_only=False)
        if state["preset"] != self.args.preset:
            raise ValueError(f"checkpoint preset {state['preset']!r} != --preset {self.args.preset!r}")
        self.phase, self.step = state["phase"], state["step"]
        self.vae.load_state_dict(state["vae"])
        self.text_encoder.load_state_dict(state["text_encoder"])
        self.unet.load_state_dict(state["unet"])
        if state.get("aux_heads") is not None:
            self.aux_heads.load_state_dict(state["aux_heads"])
        if self.ema is not None:
            # a checkpoint from before EMA existed starts the average at its current weights
            shadow = state.get("ema") or [p.detach().clone() for p in self.ema.params]
            self.ema.shadow = [s.to(self.device) for s in shadow]
        self.vae_opt.load_state_dict(state["vae_opt"])
        self.unet_opt.load_state_dict(state["unet_opt"])
        self.dec_opt.load_state_dict(state["dec_opt"])
        self.scaling_factor = state["scaling_factor"]
        self.rng.bit_generator.state = state["np_rng"]
        torch.set_rng_state(state["torch_rng"])
        self.history = state["history"]
        self.elapsed = state["elapsed"]
        self.phase_elapsed = state.get("phase_elapsed", 0.0)
        self.vae_steps_done = state.get("vae_steps_done", 0)
        self.schedule_start = state.get("schedule_start", 0)
        if self.scaling_factor is not None:
            self.vae.register_to_config(scaling_factor=self.scaling_factor)
        return True

    # ----------------------------------------------------------------- phase 1: VAE
    def train_vae(self) -> None:
        a = self.args
        self.vae.train()
        clock = self.clock = PhaseClock(a.vae_steps, a.vae_minutes, self.phase_elapsed)
        bar = tqdm(range(self.step, a.vae_steps), initial=self.step, total=a.vae_steps, desc="vae", mininterval=5)
        for step in bar:
            progress = clock.progress(step)
            if progress >= 1.0:
                print(f"vae: time budget reached at step {step}", flush=True)
                break
            for g in self.vae_opt.param_groups:
                g["lr"] = a.vae_lr * lr_factor(step, progress, min(50, a.warmup, a.vae_steps // 10 + 1))
            x, _, _ = dataset.sample_batch(self.rng, a.vae_batch, caption_dropout=0.0)
            x = torch.from_numpy(x).to(self.device)
            post = self.vae.encode(x).latent_dist
            rec = self.vae.decode(post.sample()).sample
            mse = F.mse_loss(rec, x)
            loss = mse + 0.1 * F.l1_loss(rec, x) + a.kl_weight * post.kl().mean()
            self.vae_opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.vae.parameters(), 1.0)
            self.vae_opt.step()
            self.step = step + 1
            bar.set_postfix(mse=f"{mse.item():.5f}", refresh=False)
            if self.step % 50 == 0:
                self.history.append({"phase": "vae", "step": self.step, "mse": mse.item()})
            if self.step % a.checkpoint_every == 0:
                self.save_checkpoint()
        bar.close()

    @torch.no_grad()
    def compute_scaling_factor(self, n: int = 2048) -> float:
        self.vae.eval()
        rng = np.random.default_rng(self.args.seed + 12345)
        zs = []
        for i in range(0, n, 128):
            x, _, _ = dataset.sample_batch(rng, min(128, n - i), caption_dropout=0.0)
            zs.append(self.vae.encode(torch.from_numpy(x).to(self.device)).latent_dist.sample())
        std = torch.cat(zs).float().std().item()
        return 1.0 / std

    # ----------------------------------------------------------------- phase 2: text encoder + UNet
    @torch.no_grad()
    def build_pool(self) -> tuple[torch.Tensor, torch.Tensor, list[dataset.SceneSpec]]:
        """Render and encode ``pool_size`` scenes once: posterior mean/std and the scene specs."""
        self.vae.eval()
        rng = np.random.default_rng(self.args.seed + 777)
        means, stds, specs = [], [], []
        n = self.args.pool_size
        for i in tqdm(range(0, n, 256), desc="encode pool", mininterval=5):
            x, _, sp = dataset.sample_batch(rng, min(256, n - i), caption_dropout=0.0)
            dist = self.vae.encode(torch.from_numpy(x).to(self.device)).latent_dist
            means.append(dist.mean)
            stds.append(dist.std)
            specs.extend(sp)
        return torch.cat(means), torch.cat(stds), specs

    def tokenize(self, captions: list[str]) -> torch.Tensor:
        return self.tokenizer(
            captions, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.device)

    def draw_captions(self, specs: list[dataset.SceneSpec]) -> tuple[list[str], torch.Tensor]:
        """Fresh captions (empty with the dropout probability) and their attribute labels (N, 3)."""
        texts, labels = [], []
        for spec in specs:
            if self.rng.random() < self.args.caption_dropout:
                texts.append("")
                labels.append((-100, -100, -100))
            else:
                cap = dataset.labelled_caption(spec, self.rng)
                texts.append(cap.text)
                labels.append(caption_labels(spec, cap))
        return texts, torch.tensor(labels, dtype=torch.long, device=self.device)

    def aux_loss(self, ids: torch.Tensor, states: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Attribute loss on the EOS token and the padding after it (EOS id is also the pad id)."""
        tail = ids == EOS_TOKEN_ID  # (N, 77)
        n_tail = tail.sum(dim=1)
        return self.aux_heads.loss(states[tail], labels.repeat_interleave(n_tail, dim=0))

    def train_unet(self) -> None:
        a = self.args
        assert self.scaling_factor is not None
        self.vae.requires_grad_(False)
        means, stds, specs = self.build_pool()
        decoder_params = [p for g in self.dec_opt.param_groups for p in g["params"]]
        if a.decoder_every:
            for p in decoder_params:
                p.requires_grad_(True)
        self.unet.train()
        self.text_encoder.train()
        params = list(self.unet.parameters()) + list(self.text_encoder.parameters())
        alphas = self.noise_scheduler.alphas_cumprod.to(self.device)
        clock = self.clock = PhaseClock(a.unet_steps, a.unet_minutes, self.phase_elapsed, self.schedule_start)
        bar = tqdm(range(self.step, a.unet_steps), initial=self.step, total=a.unet_steps, desc="unet", mininterval=5)
        ema_loss = ema_aux = None
        for step in bar:
            progress = clock.progress(step)
            if progress >= 1.0:
                print(f"unet: time budget reached at step {step}", flush=True)
                break
            if a.stop_at and step >= a.stop_at:
                print(f"unet: stopping early at step {step} (--stop-at)", flush=True)
                break
            for g in self.unet_opt.param_groups:
                g["lr"] = a.lr * lr_factor(step - self.schedule_start, progress, a.warmup)
            idx = self.rng.integers(0, len(specs), size=a.batch)
            captions, labels = self.draw_captions([specs[i] for i in idx])
            idx_t = torch.from_numpy(idx).to(self.device)
            latents = (means[idx_t] + stds[idx_t] * torch.randn_like(means[idx_t])) * self.scaling_factor
            noise = torch.randn_like(latents)
            if a.noise_offset:
                noise = noise + a.noise_offset * torch.randn(latents.shape[0], latents.shape[1], 1, 1, device=self.device)
            t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (a.batch,), device=self.device)
            ab = alphas[t].view(-1, 1, 1, 1)
            noisy = ab.sqrt() * latents + (1 - ab).sqrt() * noise
            ids = self.tokenize(captions)
            states = self.text_encoder(ids)[0]
            pred = self.unet(noisy, t, states).sample
            per_sample = F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))
            weights = min_snr_weights(ab.view(-1), a.min_snr) if a.min_snr else torch.ones_like(per_sample)
            loss = (weights * per_sample).mean()
            total = loss
            if a.aux_weight:
                aux = self.aux_loss(ids, states, labels)
                total = total + a.aux_weight * aux
                ema_aux = aux.item() if ema_aux is None else 0.98 * ema_aux + 0.02 * aux.item()
            self.unet_opt.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            self.unet_opt.step()
            if self.ema is not None:
                self.ema.update(step)
            if a.decoder_every and step % a.decoder_every == 0:
                self.decoder_step(means, stds, specs, a.vae_lr * lr_factor(step - self.schedule_start, progress, a.warmup),
                                  decoder_params)
            self.step = step + 1
            ema_loss = loss.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * loss.item()
            bar.set_postfix(loss=f"{ema_loss:.4f}", aux=f"{ema_aux or 0:.3f}", dec_mse=f"{self.dec_mse or 0:.4f}",
                            refresh=False)
            if self.step % 50 == 0:
                self.history.append({"phase": "unet", "step": self.step, "loss": ema_loss, "aux": ema_aux,
                                     "dec_mse": self.dec_mse})
            if self.step % a.checkpoint_every == 0:
                self.save_checkpoint()
            if a.export_every and self.step % a.export_every == 0 and self.step < a.unet_steps:
                self.export(a.work_dir / "snapshot")
        bar.close()

    def decoder_step(self, means, stds, specs, lr: float, params) -> None:
        """Decoder-only VAE step on pool latents (the encoder is frozen, so the UNet's targets stay put)."""
        a = self.args
        idx = self.rng.integers(0, len(specs), size=a.vae_batch)
        x = torch.from_numpy(dataset.to_tensor_array([dataset.render(specs[i]) for i in idx])).to(self.device)
        idx_t = torch.from_numpy(idx).to(self.device)
        z = means[idx_t] + stds[idx_t] * torch.randn_like(means[idx_t])
        rec = self.vae.decode(z).sample
        mse = F.mse_loss(rec, x)
        loss = mse + 0.1 * F.l1_loss(rec, x)
        for g in self.dec_opt.param_groups:
            g["lr"] = lr
        self.dec_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        self.dec_opt.step()
        self.dec_mse = mse.item() if self.dec_mse is None else 0.95 * self.dec_mse + 0.05 * mse.item()

    # ----------------------------------------------------------------- output
    def export(self, out: Path, averaged: bool = True) -> None:
        """Write a diffusers folder that ``StableDiffusionPipeline.from_pretrained`` loads offline,
        with the EMA weights unless ``averaged`` is False (or there is no EMA)."""
        use_ema = averaged and self.ema is not None and self.phase in ("unet", "done")
        with self.ema.applied() if use_ema else contextlib.nullcontext():
            self._write_folder(out, use_ema)

    def _write_folder(self, out: Path, ema: bool) -> None:
        pipe = StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=build_scheduler(),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        tmp = out.with_name(out.name + ".partial")
        if tmp.exists():
            shutil.rmtree(tmp)
        pipe.save_pretrained(tmp, safe_serialization=True)
        # Ship the slow-tokenizer files (vocab.json + merges.txt, 1.5 MB) instead of the 3.6 MB
        # tokenizer.json that save_pretrained writes; CLIPTokenizer.from_pretrained reads either.
        shutil.rmtree(tmp / "tokenizer")
        shutil.copytree(CLIP_TOKENIZER_DIR, tmp / "tokenizer")
        info = {
            "preset": self.args.preset,
            "model_config": self.cfg.to_dict(),
            "seed": self.args.seed,
            "vae_steps": self.args.vae_steps,
            "vae_batch": self.args.vae_batch,
            "unet_steps": self.args.unet_steps,
            "stop_at": self.args.stop_at,
            "vae_steps_done": self.vae_steps_done,
            "unet_steps_done": self.step if self.phase in ("unet", "done") else 0,
            "batch": self.args.batch,
            "lr": self.args.lr,
            "caption_dropout": self.args.caption_dropout,
            "noise_offset": self.args.noise_offset,
            "min_snr": self.args.min_snr,
            "aux_weight": self.args.aux_weight,
            "ema_decay": self.args.ema_decay if ema else 0.0,
            "scaling_factor": self.scaling_factor,
            "command": "python -m tools.default_model.train " + " ".join(sys.argv[1:]),
            "train_seconds": round(self.elapsed + (time.time() - self._t0), 1),
            "device": self.device.type,
            "final_loss": next((h["loss"] for h in reversed(self.history) if "loss" in h), None),
            "final_vae_mse": next((h["mse"] for h in reversed(self.history) if "mse" in h), None),
            "final_decoder_mse": self.dec_mse,
            "decoder_every": self.args.decoder_every,
        }
        (tmp / "training_info.json").write_text(json.dumps(info, indent=2) + "\n")
        (tmp / "README.md").write_text(readme_text(info))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)

    def run(self) -> None:
        a = self.args
        self._t0 = time.time()
        if a.resume and self.load_checkpoint():
            print(f"resumed from {self.ckpt_path}: phase={self.phase} step={self.step}", flush=True)
        elif self.ckpt_path.exists() and not a.resume:
            print(f"note: {self.ckpt_path} exists; starting fresh (pass --resume to continue)", flush=True)
        if self.phase == "done" and self.step < a.unet_steps:
            # continue a finished run with more steps (and, with a budget, a larger --unet-minutes)
            print(f"continuing UNet training from step {self.step} to {a.unet_steps}", flush=True)
            self.phase = "unet"
        if a.restart_schedule and self.phase == "unet" and self.step > 0:
            # warm restart: a fresh warm-up + cosine over the remaining steps / --unet-minutes from here
            print(f"restarting the lr schedule at UNet step {self.step}", flush=True)
            self.schedule_start, self.phase_elapsed = self.step, 0.0
        if self.phase == "vae":
            self.train_vae()
            self.scaling_factor = self.compute_scaling_factor()
            self.vae.register_to_config(scaling_factor=self.scaling_factor)
            print(f"vae done; latent scaling_factor={self.scaling_factor:.4f}", flush=True)
            self.vae_steps_done = self.step
            self.phase, self.step = "unet", 0
            self.phase_elapsed, self.clock = 0.0, None
            self.save_checkpoint()
        if self.phase == "unet":
            self.train_unet()
            self.phase = "done"
            self.save_checkpoint()
        self.export(a.out)
        if self.ema is not None:
            self.export(a.work_dir / "final_raw", averaged=False)  # for comparison with the EMA weights
        print(f"wrote {a.out} ({folder_size(a.out) / 1e6:.1f} MB) after "
              f"{(self.elapsed + time.time() - self._t0) / 60:.1f} min of training", flush=True)


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def _fmt(x, spec: str = ".4f") -> str:
    return "n/a" if x is None else format(x, spec)


def readme_text(info: dict, evaluation: str = "") -> str:
    c = info["model_config"]
    command = info.get("command") or "python -m tools.default_model.train --out models/embedded/shapes64"
    repro = (
        f"python -m tools.default_model.train --out models/embedded/shapes64 --seed {info['seed']} "
        f"--vae-minutes 0 --unet-minutes 0 --vae-steps {info['vae_steps_done']} --steps {info['unet_steps']} "
        f"--stop-at {info['unet_steps_done']}"
    )
    text = f"""# shapes64: the embedded default model

A tiny text-to-image latent diffusion model trained by this project (`tools/default_model/`) and
shipped in git, so a fresh clone generates real pictures with no download. It only knows one kind of
picture: **one shape (circle, square, triangle, star) in one colour (red, green, blue, yellow, purple,
orange, white, black) on a background of another of those colours**, e.g.
`a red circle on a blue background`.

- **Native size: 64x64 pixels** (8x8 latents). Other sizes (multiples of 8) run but look worse.
- Layout: a standard diffusers `StableDiffusionPipeline` folder (safetensors, **fp32**) that
  `StableDiffusionPipeline.from_pretrained(path, safety_checker=None)` loads offline; no safety
  checker or feature extractor (`requires_safety_checker: false`).
- VAE: `AutoencoderKL`, block channels {tuple(c['vae_channels'])}, downsampling factor 8, 4 latent
  channels, `scaling_factor` {_fmt(info['scaling_factor'])} (1/std of the latents).
- Text encoder: `CLIPTextModel`, hidden size {c['text_hidden']}, {c['text_layers']} layers, on the real CLIP
  BPE vocabulary (49408 tokens, 77 positions; tokenizer files copied from `configs/clip_tokenizer`).
- UNet: `UNet2DConditionModel`, channels {tuple(c['unet_channels'])}, cross-attention dim {c['text_hidden']}.
- Noise schedule: SD 1.x (scaled_linear betas 0.00085..0.012, 1000 steps, epsilon prediction). The
  shipped scheduler is Euler a; every other diffusers scheduler works via `from_config`.
- Recommended settings: 64x64, 20+ steps, CFG 5-8, prompts phrased like the example above.

## Training
Data is procedural and generated on the fly (`tools/default_model/dataset.py`, seeded): shape size
50-75% of the image with position jitter, several caption phrasings, 10% empty captions (so
classifier-free guidance works).

1. VAE: {info['vae_steps_done']} steps, batch {info['vae_batch']}, MSE + 0.1 L1 + small KL (final MSE
   {_fmt(info['final_vae_mse'])}); the latent scaling factor is then set to 1/std of the latents.
2. Text encoder + UNet: {info['unet_steps_done']} steps, batch {info['batch']}, lr {info['lr']}, epsilon-prediction MSE
   on scaled latents, min-SNR-gamma weighting (gamma {info.get('min_snr', 0)}), noise offset {info['noise_offset']}
   (final loss {_fmt(info['final_loss'])}). An auxiliary cross-entropy (weight {info.get('aux_weight', 0)}; linear
   heads used only in training) teaches the text encoder's EOS and padding tokens to name the shape's
   colour, the background's colour and the shape, so the two colours are not swapped. Shipped weights:
   EMA with decay {info.get('ema_decay', 0)} (0 = the raw weights). Alongside, the VAE decoder keeps
   training on the frozen encoder's latents (one step every {info.get('decoder_every', 0)} UNet steps; final
   MSE {_fmt(info.get('final_decoder_mse'))}); the encoder, and so the latents, stay fixed.
   Early stop at step {info.get('stop_at') or info['unet_steps_done']} (`--stop-at`): with the same
   schedule run to its end (6669 steps in 82 minutes) the model is sharper at CFG 1-5 but over-shoots
   colours at CFG 7 (red turns orange, purple red: fg colour 84%, CFG 7 worse than CFG 1).

Seed {info['seed']}; {info['train_seconds'] / 60:.0f} minutes of training on a 2-core {info['device']}.
Command:

    {command}

The phases ran under wall-clock budgets (`--vae-minutes`, `--unet-minutes`), so the step counts depend
on the machine; to repeat the run by step count (same data and seed; the learning-rate curve differs
slightly): `{repro}`. Details: `training_info.json`.
"""
    if evaluation:
        text += "\n## Evaluation\n" + evaluation.rstrip() + "\n"
    return text


def main(argv: list[str] | None = None) -> None:
    Trainer(parse_args(argv)).run()


if __name__ == "__main__":
    main()
