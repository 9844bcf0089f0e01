"""Upscaler model files with random weights, in the real releases' on-disk layouts, for tests.

Each builder returns what the release's file holds: the same key names and nesting
(`params_ema` for Real-ESRGAN's RRDBNet releases and SwinIR, `params` for the SRVGGNetCompact
releases and DAT, a bare dict for old ESRGAN and ScuNET), with tiny channel counts so the files
stay small and fast while spandrel still detects the architecture from them. `write_model` saves
one as .pth (torch.save, optionally in the legacy pre-zip format the 2018 ESRGAN files use) or as
.safetensors (flat, as converted releases are).

    from tests.upscaler_files import realesrgan_x4plus, write_model
    write_model(tmp / "models" / "RealESRGAN" / "RealESRGAN_x4plus.pth", realesrgan_x4plus())
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

StateDict = dict[str, torch.Tensor]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _conv(sd: StateDict, name: str, cin: int, cout: int, g: torch.Generator, k: int = 3, bias: bool = True,
          gain: float = 1.0) -> None:
    """A conv layer initialised like torch's default (uniform, 1/sqrt(fan_in)), times `gain`."""
    bound = gain / (cin * k * k) ** 0.5
    sd[f"{name}.weight"] = (torch.rand(cout, cin, k, k, generator=g) * 2 - 1) * bound
    if bias:
        sd[f"{name}.bias"] = (torch.rand(cout, generator=g) * 2 - 1) * bound


# ---------------------------------------------------------------------------------------------
# RRDBNet (ESRGAN, Real-ESRGAN)


def _rrdb_blocks(sd: StateDict, g: torch.Generator, num_feat: int, num_block: int, num_grow: int,
                 conv_name: str) -> None:
    """`conv_name(block, rdb, conv)` -> the key prefix of one dense-block conv."""
    for b in range(num_block):
        for r in range(1, 4):
            for c in range(1, 6):
                cin = num_feat + (c - 1) * num_grow
                cout = num_grow if c < 5 else num_feat
                _conv(sd, conv_name(b, r, c), cin, cout, g, gain=0.2)


def realesrgan_rrdbnet(scale: int = 4, num_feat: int = 8, num_block: int = 1, num_grow_ch: int = 32,
                       seed: int = 0) -> dict[str, StateDict]:
    """basicsr's RRDBNet as Real-ESRGAN ships it: {"params_ema": {conv_first, body.N.rdbM.convK,
    conv_body, conv_up1, conv_up2, conv_hr, conv_last}}. Scale 2 (and 1) take a pixel-unshuffled
    input, so conv_first sees 12 (48) channels, as RealESRGAN_x2plus.pth does."""
    g, sd = _gen(seed), {}
    in_ch = {4: 3, 2: 12, 1: 48}[scale]
    _conv(sd, "conv_first", in_ch, num_feat, g)
    _rrdb_blocks(sd, g, num_feat, num_block, num_grow_ch, lambda b, r, c: f"body.{b}.rdb{r}.conv{c}")
    _conv(sd, "conv_body", num_feat, num_feat, g)
    _conv(sd, "conv_up1", num_feat, num_feat, g)
    _conv(sd, "conv_up2", num_feat, num_feat, g)
    _conv(sd, "conv_hr", num_feat, num_feat, g)
    _conv(sd, "conv_last", num_feat, 3, g)
    return {"params_ema": sd}


def realesrgan_x4plus(num_feat: int = 8, num_block: int = 1, seed: int = 0) -> dict[str, StateDict]:
    """RealESRGAN_x4plus.pth's layout (the release: num_feat=64, num_block=23)."""
    return realesrgan_rrdbnet(4, num_feat, num_block, seed=seed)


def realesrgan_x4plus_anime_6b(num_feat: int = 8, seed: int = 1) -> dict[str, StateDict]:
    """RealESRGAN_x4plus_anime_6B.pth's layout: six RRDB blocks."""
    return realesrgan_rrdbnet(4, num_feat, num_block=6, seed=seed)


def realesrgan_x2plus(num_feat: int = 8, num_block: int = 1, seed: int = 2) -> dict[str, StateDict]:
    """RealESRGAN_x2plus.pth's layout: pixel-unshuffle by 2, then the x4 body."""
    return realesrgan_rrdbnet(2, num_feat, num_block, seed=seed)


def esrgan_old_arch(scale: int = 4, num_feat: int = 8, num_block: int = 1, num_grow_ch: int = 32,
                    seed: int = 3) -> StateDict:
    """The original ESRGAN repo's old-arch keys (RRDB_ESRGAN_x4_old_arch.pth, most community
    models such as 4x-UltraSharp): model.0, model.1.sub.N.RDBM.convK.0, model.1.sub.<NB>,
    then [upsample, conv, act] per x2 as model.3, model.6, ..., HR conv and last conv."""
    g, sd = _gen(seed), {}
    _conv(sd, "model.0", 3, num_feat, g)
    _rrdb_blocks(sd, g, num_feat, num_block, num_grow_ch, lambda b, r, c: f"model.1.sub.{b}.RDB{r}.conv{c}.0")
    _conv(sd, f"model.1.sub.{num_block}", num_feat, num_feat, g)
    n_up = {1: 0, 2: 1, 4: 2, 8: 3}[scale]
    for i in range(1, n_up + 1):
        _conv(sd, f"model.{3 * i}", num_feat, num_feat, g)
    last = 3 * n_up
    _conv(sd, f"model.{last + 2}", num_feat, num_feat, g)
    _conv(sd, f"model.{last + 4}", num_feat, 3, g)
    return sd


def esrgan_new_arch(num_feat: int = 8, num_block: int = 1, num_grow_ch: int = 32, seed: int = 4) -> StateDict:
    """The ESRGAN repo's new-arch keys (RRDB_ESRGAN_x4.pth, BSRGAN): conv_first,
    RRDB_trunk.N.RDBM.convK, trunk_conv, upconv1, upconv2, HRconv, conv_last. Always x4."""
    g, sd = _gen(seed), {}
    _conv(sd, "conv_first", 3, num_feat, g)
    _rrdb_blocks(sd, g, num_feat, num_block, num_grow_ch, lambda b, r, c: f"RRDB_trunk.{b}.RDB{r}.conv{c}")
    _conv(sd, "trunk_conv", num_feat, num_feat, g)
    _conv(sd, "upconv1", num_feat, num_feat, g)
    _conv(sd, "upconv2", num_feat, num_feat, g)
    _conv(sd, "HRconv", num_feat, num_feat, g)
    _conv(sd, "conv_last", num_feat, 3, g)
    return sd


# ---------------------------------------------------------------------------------------------
# SRVGGNetCompact (realesr-general-x4v3, realesr-animevideov3)


def srvgg_compact(scale: int = 4, num_feat: int = 8, num_conv: int = 2, seed: int = 5) -> dict[str, StateDict]:
    """Real-ESRGAN's SRVGGNetCompact as released: {"params": {body.0 conv, body.1 PReLU, (conv,
    PReLU) x num_conv, body.<last> conv to 3*scale^2}}. The releases: general-x4v3 has num_feat=64,
    num_conv=32; animevideov3 num_conv=16."""
    g, sd = _gen(seed), {}
    _conv(sd, "body.0", 3, num_feat, g)
    sd["body.1.weight"] = torch.full((num_feat,), 0.25)  # PReLU slopes
    for i in range(num_conv):
        _conv(sd, f"body.{2 + 2 * i}", num_feat, num_feat, g)
        sd[f"body.{3 + 2 * i}.weight"] = torch.full((num_feat,), 0.25)
    _conv(sd, f"body.{2 + 2 * num_conv}", num_feat, 3 * scale * scale, g)
    return {"params": sd}


# ---------------------------------------------------------------------------------------------
# transformer upscalers: their layouts come from spandrel's copies of the original modules (same
# key names as the original code that saved the releases), with tiny sizes and seeded weights


def _module_state(module: torch.nn.Module) -> StateDict:
    return {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}


def swinir(scale: int = 2, embed_dim: int = 12, seed: int = 6) -> dict[str, StateDict]:
    """SwinIR as released (e.g. 003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth): {"params_ema":
    {conv_first, patch_embed, layers.N.residual_group.blocks.M (with relative_position_index and
    attn_mask), conv_after_body, conv_before_upsample, conv_up1, ..., conv_last}} ("nearest+conv")."""
    from spandrel.architectures.SwinIR import SwinIR

    torch.manual_seed(seed)
    model = SwinIR(upscale=scale, in_chans=3, img_size=16, window_size=4, img_range=1.0, depths=[2],
                   embed_dim=embed_dim, num_heads=[2], mlp_ratio=2, upsampler="nearest+conv",
                   resi_connection="1conv")
    return {"params_ema": _module_state(model)}


def scunet(dim: int = 64, seed: int = 7) -> StateDict:
    """SCUNet as released (scunet_color_real_gan.pth): a bare dict of m_head, m_down1..3, m_body,
    m_up3..1, m_tail. Denoising: scale 1. dim stays 64 (its attention heads are 32 wide); one
    block in the first and last stage keeps the file near 6 MB."""
    from spandrel.architectures.SCUNet import SCUNet

    torch.manual_seed(seed)
    model = SCUNet(in_nc=3, config=[1, 0, 0, 0, 0, 0, 1], dim=dim, input_resolution=64)
    return _module_state(model)


def dat(scale: int = 2, embed_dim: int = 16, seed: int = 8) -> dict[str, StateDict]:
    """DAT as released (DAT_x2.pth ...): {"params": {conv_first, before_RG, layers.N.blocks.M,
    norm, conv_after_body, conv_before_upsample, upsample, conv_last}}."""
    from spandrel.architectures.DAT import DAT

    torch.manual_seed(seed)
    model = DAT(img_size=16, in_chans=3, embed_dim=embed_dim, split_size=[2, 4], depth=[2], num_heads=[2],
                expansion_factor=2.0, upscale=scale, resi_connection="1conv", upsampler="pixelshuffle")
    return {"params": _module_state(model)}


def face_model_like(seed: int = 9) -> StateDict:
    """Not an upscaler: a state dict no architecture matches (any other model file dropped in)."""
    g = _gen(seed)
    return {"encoder.layer1.weight": torch.rand(4, 4, generator=g), "decoder.out.bias": torch.rand(4, generator=g)}


# ---------------------------------------------------------------------------------------------
# files


def write_model(path: Path, state: dict[str, Any], legacy_format: bool = False) -> Path:
    """Save `state` as the suffix says. .safetensors holds a flat dict: a `params_ema`/`params`
    wrapper is unwrapped, as converted releases are."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        flat = _unwrap(state)
        save_file({k: v.contiguous() for k, v in flat.items()}, str(path))
    else:
        torch.save(state, path, _use_new_zipfile_serialization=not legacy_format)
    return path


def _unwrap(state: dict[str, Any]) -> StateDict:
    for key in ("params_ema", "params"):
        if isinstance(state.get(key), dict):
            return state[key]
    return state


def write_truncated(path: Path, state: dict[str, Any], keep: float = 0.5) -> Path:
    """A file cut off part-way, as an interrupted download leaves it."""
    write_model(path, state)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def write_garbage(path: Path, content: Optional[bytes] = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if content is not None else b"this is not a model file\n" * 10)
    return path


__all__ = [
    "dat", "esrgan_new_arch", "esrgan_old_arch", "face_model_like", "realesrgan_rrdbnet", "realesrgan_x2plus",
    "realesrgan_x4plus", "realesrgan_x4plus_anime_6b", "scunet", "srvgg_compact", "swinir", "write_garbage",
    "write_model", "write_truncated",
]
