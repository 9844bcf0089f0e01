"""Train a LoRA for the embedded model that teaches it a shape it cannot draw ("ring"), and save it in
kohya's format, the one A1111's ``<lora:name:w>`` reads.

    python -m tools.default_model.train_lora --out models/embedded/Lora/shapes64-ring.safetensors --minutes 20

Why a shape and not a colour: the base VAE only ever saw eight colours and decodes every latent to one of
them (a pink scene comes back orange or yellow, and so do cyan, brown, grey...), and a LoRA on the text
encoder and UNet cannot change the VAE. A ring (a disc with a hole) survives the VAE's round trip, the
base model never draws one, and the analyzer recognises it by its hole (``analyze(extra_shapes=True)``).

Data: the base trainer's pipeline (procedural scenes, rendered and VAE-encoded once into a pool; fresh
captions every step, with dropout for classifier-free guidance). Half of every batch are rings in
(colour, background) pairs outside ``HELD_OUT`` and captioned like the old shapes ("a red ring on a blue
background"); the other half are the old shapes with their ordinary captions, so the adapter learns to
leave them alone. PEFT LoRA adapters (rank ``--rank``) sit on the UNet's attention and feed-forward
projections and on the text encoder's (whose "ring" token the base model never trained).
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
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from diffusers import DDPMScheduler, StableDiffusionPipeline  # noqa: E402
from peft import LoraConfig  # noqa: E402
from peft.tuners.lora import LoraLayer  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from modules.paths import EMBEDDED_MODEL_DIR  # noqa: E402

from . import dataset  # noqa: E402
from .train import PhaseClock, lr_factor, min_snr_weights  # noqa: E402

NEW_SHAPE = "ring"
UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
ADAPTER = "default"
PREVIEW_PROMPT = "a yellow ring on a purple background"


def ring_pairs() -> list[tuple[str, str]]:
    """Every (shape colour, background colour) pair with different colours: 8 * 7 = 56."""
    return [(fg, bg) for fg in dataset.COLORS for bg in dataset.COLORS if fg != bg]


def _held_out() -> frozenset[tuple[str, str]]:
    """16 of the 56 pairs, never shown in training: the evaluation's held-out combinations.
    A Latin-square pick, so every colour is held out twice as the shape and twice as the background."""
    n = len(dataset.COLORS)
    return frozenset((dataset.COLORS[i], dataset.COLORS[(i + k) % n]) for i in range(n) for k in (1, 4))


HELD_OUT: frozenset[tuple[str, str]] = _held_out()
TRAIN_PAIRS: tuple[tuple[str, str], ...] = tuple(p for p in ring_pairs() if p not in HELD_OUT)


@dataclass
class LoraTrainArgs:
    out: Path
    model: Path = EMBEDDED_MODEL_DIR
    minutes: float = 20.0  # wall-clock budget (0 = none): the run stops cleanly and saves when it is spent
    steps: int = 3000
    batch: int = 32
    rank: int = 8
    alpha: float = 8.0
    lr: float = 1e-3
    warmup: int = 50
    new_fraction: float = 0.5  # share of each batch showing the new shape
    new_pool: int = 1536
    old_pool: int = 2048
    caption_dropout: float = 0.1
    noise_offset: float = 0.05
    min_snr: float = 5.0
    train_text_encoder: bool = True
    seed: int = 0
    threads: int = 2
    preview: bool = True


def parse_args(argv: list[str] | None = None) -> LoraTrainArgs:
    d = LoraTrainArgs(out=Path())
    p = argparse.ArgumentParser(prog="python -m tools.default_model.train_lora", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="kohya .safetensors file to write")
    p.add_argument("--model", type=Path, default=d.model, help="base diffusers folder")
    p.add_argument("--minutes", type=float, default=d.minutes,
                   help="wall-clock budget; the lr schedule follows max(step, time) progress; 0 = steps only")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--rank", type=int, default=d.rank)
    p.add_argument("--alpha", type=float, default=d.alpha)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--new-fraction", type=float, default=d.new_fraction)
    p.add_argument("--new-pool", type=int, default=d.new_pool)
    p.add_argument("--old-pool", type=int, default=d.old_pool)
    p.add_argument("--caption-dropout", type=float, default=d.caption_dropout)
    p.add_argument("--noise-offset", type=float, default=d.noise_offset)
    p.add_argument("--min-snr", type=float, default=d.min_snr)
    p.add_argument("--no-text-encoder", dest="train_text_encoder", action="store_false",
                   help="adapt the UNet only")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--no-preview", dest="preview", action="store_false", help="skip the preview PNG")
    return LoraTrainArgs(**vars(p.parse_args(argv)))


def new_shape_specs(rng: np.random.Generator, n: int) -> list[dataset.SceneSpec]:
    pairs = [TRAIN_PAIRS[i] for i in rng.integers(len(TRAIN_PAIRS), size=n)]
    return [dataset.sample_spec(rng, shape=NEW_SHAPE, fg=fg, bg=bg) for fg, bg in pairs]


@torch.no_grad()
def encode_pool(vae, specs: list[dataset.SceneSpec], chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of every scene, encoded once (as the base trainer's pool)."""
    means, stds = [], []
    for i in range(0, len(specs), chunk):
        x = torch.from_numpy(dataset.to_tensor_array([dataset.render(s) for s in specs[i:i + chunk]]))
        dist = vae.encode(x).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


def kohya_state_dict(model: torch.nn.Module, prefix: str, alpha: float, root: str = "") -> dict[str, torch.Tensor]:
    """kohya keys for every PEFT LoRA layer: ``<prefix>_<module path, dots as underscores>.lora_down.weight``
    (PEFT's A), ``.lora_up.weight`` (B) and ``.alpha``; the scale at weight w is w * alpha / rank.
    ``root``: the path prefix kohya's names carry that the module tree may lack (transformers 5's
    CLIPTextModel has no ``text_model`` level; kohya's keys are ``lora_te_text_model_encoder_...``)."""
    out: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and ADAPTER in module.lora_A:
            path = name if name.startswith(root) else root + name
            key = f"{prefix}_{path.replace('.', '_')}"
            out[f"{key}.lora_down.weight"] = module.lora_A[ADAPTER].weight.detach().float().contiguous().clone()
            out[f"{key}.lora_up.weight"] = module.lora_B[ADAPTER].weight.detach().float().contiguous().clone()
            out[f"{key}.alpha"] = torch.tensor(float(alpha))
    return out


def kohya_metadata(a: LoraTrainArgs, info: dict) -> dict[str, str]:
    """kohya's ``ss_*`` header fields (strings, as in sd-scripts) that A1111 and the Extra Networks cards read."""
    return {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(a.rank),
        "ss_network_alpha": str(a.alpha),
        "ss_base_model_version": "sd_v1",
        "ss_sd_model_name": Path(a.model).name,
        "ss_output_name": a.out.stem,
        "ss_training_comment": (f"teaches the embedded shapes64 model a new shape, '{NEW_SHAPE}': prompt e.g. "
                                f"'{PREVIEW_PROMPT}' with <lora:{a.out.stem}:1>"),
        "ss_tag_frequency": json.dumps({NEW_SHAPE: {NEW_SHAPE: 1}}),
        "ss_resolution": "(64, 64)",
        "ss_steps": str(info["steps"]),
        "ss_max_train_steps": str(a.steps),
        "ss_learning_rate": str(a.lr),
        "ss_unet_lr": str(a.lr),
        "ss_text_encoder_lr": str(a.lr if a.train_text_encoder else 0.0),
        "ss_train_batch_size": str(a.batch),
        "ss_seed": str(a.seed),
        "ss_training_started_at": str(info["started_at"]),
        "ss_training_finished_at": str(info["finished_at"]),
        "ss_num_train_images": str(a.new_pool + a.old_pool),
        "ss_noise_offset": str(a.noise_offset),
        "ss_min_snr_gamma": str(a.min_snr),
        "ss_network_args": json.dumps({"unet_targets": UNET_TARGETS,
                                       "text_targets": TEXT_TARGETS if a.train_text_encoder else []}),
        "training_command": info["command"],
        "training_info": json.dumps(info),
    }


class LoraTrainer:
    def __init__(self, args: LoraTrainArgs):
        self.args = a = args
        torch.set_num_threads(a.threads)
        torch.manual_seed(a.seed)
        self.rng = np.random.default_rng(a.seed)
        self.pipe = StableDiffusionPipeline.from_pretrained(str(a.model), safety_checker=None)
        self.pipe.set_progress_bar_config(disable=True)
        for m in (self.pipe.unet, self.pipe.text_encoder, self.pipe.vae):
            m.requires_grad_(False)
        # Gaussian init of A (B stays 0): the adapter starts as an exact no-op.
        self.pipe.unet.add_adapter(LoraConfig(r=a.rank, lora_alpha=a.alpha, target_modules=list(UNET_TARGETS),
                                              init_lora_weights="gaussian"), adapter_name=ADAPTER)
        if a.train_text_encoder:
            self.pipe.text_encoder.add_adapter(LoraConfig(r=a.rank, lora_alpha=a.alpha,
                                                          target_modules=list(TEXT_TARGETS),
                                                          init_lora_weights="gaussian"), adapter_name=ADAPTER)
        self.params = [p for m in (self.pipe.unet, self.pipe.text_encoder) for p in m.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=a.lr, weight_decay=1e-4)
        self.noise_scheduler = DDPMScheduler.from_config(self.pipe.scheduler.config)
        self.scaling = self.pipe.vae.config.scaling_factor
        self.step = 0
        self.history: list[dict] = []

    def build_pools(self):
        a = self.args
        rng = np.random.default_rng(a.seed + 777)
        new_specs = new_shape_specs(rng, a.new_pool)
        old_specs = [dataset.sample_spec(rng) for _ in range(a.old_pool)]
        return (new_specs, *encode_pool(self.pipe.vae, new_specs)), (old_specs, *encode_pool(self.pipe.vae, old_specs))

    def captions(self, specs: list[dataset.SceneSpec]) -> list[str]:
        return ["" if self.rng.random() < self.args.caption_dropout else dataset.caption(s, self.rng) for s in specs]

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        tok = self.pipe.tokenizer
        return tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                   return_tensors="pt").input_ids

    def train(self) -> float:
        a = self.args
        pools = self.build_pools()
        n_new = max(1, round(a.batch * a.new_fraction)) if a.new_fraction > 0 else 0
        sizes = (n_new, a.batch - n_new)
        alphas = self.noise_scheduler.alphas_cumprod
        self.pipe.unet.train()
        self.pipe.text_encoder.train()
        clock = PhaseClock(a.steps, a.minutes)
        ema_loss = None
        for step in range(a.steps):
            progress = clock.progress(step)
            if progress >= 1.0:
                print(f"time budget of {a.minutes:g} min reached at step {step}", flush=True)
                break
            for g in self.opt.param_groups:
                g["lr"] = a.lr * lr_factor(step, progress, a.warmup)
            latents, texts = [], []
            for (specs, means, stds), n in zip(pools, sizes):
                if n == 0:
                    continue
                idx = torch.from_numpy(self.rng.integers(0, len(specs), size=n))
                latents.append((means[idx] + stds[idx] * torch.randn_like(means[idx])) * self.scaling)
                texts.extend(self.captions([specs[i] for i in idx.tolist()]))
            latents = torch.cat(latents)
            noise = torch.randn_like(latents)
            if a.noise_offset:
                noise = noise + a.noise_offset * torch.randn(latents.shape[0], latents.shape[1], 1, 1)
            t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (latents.shape[0],))
            ab = alphas[t].view(-1, 1, 1, 1)
            noisy = ab.sqrt() * latents + (1 - ab).sqrt() * noise
            states = self.pipe.text_encoder(self.tokenize(texts))[0]
            pred = self.pipe.unet(noisy, t, states).sample
            per_sample = F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))
            weights = min_snr_weights(ab.view(-1), a.min_snr) if a.min_snr else torch.ones_like(per_sample)
            loss = (weights * per_sample).mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.opt.step()
            self.step = step + 1
            ema_loss = loss.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * loss.item()
            if self.step % 50 == 0 or self.step == 1:
                self.history.append({"step": self.step, "loss": round(ema_loss, 5), "seconds": round(clock.elapsed, 1)})
                print(f"step {self.step} loss {ema_loss:.4f} lr {self.opt.param_groups[0]['lr']:.2e} "
                      f"{clock.elapsed / 60:.1f} min", flush=True)
        self.pipe.unet.eval()
        self.pipe.text_encoder.eval()
        return ema_loss if ema_loss is not None else float("nan")

    def state_dict(self) -> dict[str, torch.Tensor]:
        sd = kohya_state_dict(self.pipe.unet, "lora_unet", self.args.alpha)
        if self.args.train_text_encoder:
            sd.update(kohya_state_dict(self.pipe.text_encoder, "lora_te", self.args.alpha, root="text_model."))
        return sd

    def save(self, info: dict) -> None:
        a = self.args
        a.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = a.out.with_name(a.out.name + ".partial")
        save_file(self.state_dict(), str(tmp), metadata=kohya_metadata(a, info))
        os.chmod(tmp, 0o644)  # safetensors writes 0600; the file is shipped and read by the app
        os.replace(tmp, a.out)

    @torch.no_grad()
    def write_preview(self, path: Path) -> None:
        """One picture drawn with the adapter at weight 1 (the trained weights, as saved)."""
        image = self.pipe(PREVIEW_PROMPT, guidance_scale=7.0, num_inference_steps=20,
                          generator=torch.Generator().manual_seed(0)).images[0]
        image.save(path)

    def run(self) -> dict:
        a = self.args
        started = time.time()
        final_loss = self.train()
        info = {
            "new_shape": NEW_SHAPE, "steps": self.step, "final_loss": round(final_loss, 5),
            "train_seconds": round(time.time() - started, 1), "started_at": int(started),
            "finished_at": int(time.time()), "held_out_pairs": sorted(map(list, HELD_OUT)),
            "command": "python -m tools.default_model.train_lora " + " ".join(sys.argv[1:]),
            "args": {k: str(v) for k, v in asdict(a).items()}, "history": self.history[-10:],
        }
        self.save(info)
        if a.preview:
            self.write_preview(a.out.with_suffix(".png"))
        print(f"wrote {a.out} ({a.out.stat().st_size / 1e3:.0f} kB) after {self.step} steps, "
              f"{info['train_seconds'] / 60:.1f} min", flush=True)
        return info


def main(argv: list[str] | None = None) -> None:
    LoraTrainer(parse_args(argv)).run()


if __name__ == "__main__":
    main()
