"""Face-restorer files with random weights, in the released files' on-disk layout.

The architectures are built with the released models' hyper-parameters (so spandrel recognises
them and they run at the real 512x512 size), seeded for repeatable weights, and saved as the
releases are: `torch.save({"params_ema": state_dict})` in a .pth, or the bare state dict in a
.safetensors (which cannot nest). Each file is 290-380 MB; write them once per module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch


def gfpgan_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """GFPGANv1.3 / v1.4 ("clean" architecture, 512 px, channel multiplier 2)."""
    from spandrel.architectures.GFPGAN import GFPGAN

    torch.manual_seed(seed)
    net = GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None,
                 fix_decoder=False, num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True)
    return net.state_dict()


def codeformer_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """codeformer.pth v0.1.0 (A1111's hyper-parameters)."""
    from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

    torch.manual_seed(seed)
    net = CodeFormer(dim_embd=512, codebook_size=1024, n_head=8, n_layers=9,
                     connect_list=["32", "64", "128", "256"])
    return net.state_dict()


def restoreformer_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """RestoreFormer.pth from GFPGAN's v1.3.4 release (the architecture's defaults)."""
    from spandrel.architectures.RestoreFormer import RestoreFormer

    torch.manual_seed(seed)
    return RestoreFormer().state_dict()


BUILDERS: dict[str, Callable[[int], dict[str, torch.Tensor]]] = {
    "GFPGAN": gfpgan_state_dict,
    "CodeFormer": codeformer_state_dict,
    "RestoreFormer": restoreformer_state_dict,
}
# The released file name and the models/ folder each one goes in (A1111's folders).
RELEASE_FILES: dict[str, tuple[str, str]] = {
    "GFPGAN": ("GFPGAN", "GFPGANv1.4.pth"),
    "CodeFormer": ("Codeformer", "codeformer.pth"),
    "RestoreFormer": ("GFPGAN", "RestoreFormer.pth"),
}


def save_model_file(path: Path, state_dict: dict[str, torch.Tensor], key: str = "params_ema") -> Path:
    """.pth: `{key: state_dict}` as the releases hold it; .safetensors: the bare tensors."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    else:
        torch.save({key: state_dict}, path)
    return path


def write_restorer(models_dir: Path, name: str, filename: str = "", seed: int = 0) -> Path:
    """Write restorer `name` ("GFPGAN", "CodeFormer", "RestoreFormer") with random weights into its
    folder under `models_dir` (models/GFPGAN or models/Codeformer), under its released file name
    unless `filename` is given; returns the file."""
    folder, release = RELEASE_FILES[name]
    return save_model_file(models_dir / folder / (filename or release), BUILDERS[name](seed))
