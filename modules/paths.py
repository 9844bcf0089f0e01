"""Where things live on disk. One `Paths` object is built at start-up from the flags and passed on."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS_DIR = REPO_ROOT / "configs"
CLIP_TOKENIZER_DIR = CONFIGS_DIR / "clip_tokenizer"
# The project's own small model, trained by tools/default_model and shipped in git.
EMBEDDED_MODEL_DIR = REPO_ROOT / "models" / "embedded" / "shapes64"
# Extensions shipped with the app (user drop-ins live in Paths.extensions_dir).
EXTENSIONS_BUILTIN_DIR = REPO_ROOT / "extensions-builtin"


@dataclass(frozen=True)
class Paths:
    data_dir: Path = REPO_ROOT
    ckpt_dirs: tuple[Path, ...] = field(default_factory=tuple)  # --ckpt-dir, scanned besides models/
    # (kind, folder) pairs from flags such as --esrgan-models-path (modules/cmd_args.MODEL_DIR_FLAGS)
    model_dir_overrides: tuple[tuple[str, Path], ...] = field(default_factory=tuple)

    def model_dir(self, kind: str) -> Path:
        """Where models of `kind` live: "ESRGAN", "RealESRGAN", "GFPGAN", "Codeformer", ...: the
        flag's folder when given, else models/<kind>."""
        return dict(self.model_dir_overrides).get(kind, self.models_dir / kind)

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def stable_diffusion_dir(self) -> Path:
        return self.models_dir / "Stable-diffusion"

    @property
    def vae_dir(self) -> Path:
        return self.models_dir / "VAE"

    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / "outputs"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "config.json"

    @property
    def ui_config_file(self) -> Path:
        return self.data_dir / "ui-config.json"

    @property
    def styles_file(self) -> Path:
        return self.data_dir / "styles.csv"

    @property
    def cache_file(self) -> Path:
        return self.data_dir / "cache.json"

    @property
    def extensions_dir(self) -> Path:
        return self.data_dir / "extensions"
