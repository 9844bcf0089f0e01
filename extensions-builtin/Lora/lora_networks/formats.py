"""LoRA file contents -> one weight delta per model layer, for every format A1111 reads.

A file is a flat dict of tensors. Each key is `<layer key><suffix>`; the suffixes say the format:

    kohya LoRA / LyCORIS LoCon   .lora_down.weight  .lora_up.weight  [.lora_mid.weight]  [.alpha]
    LyCORIS LoHa                 .hada_w1_a .hada_w1_b .hada_w2_a .hada_w2_b [.hada_t1 .hada_t2] [.alpha]
    LyCORIS LoKr                 .lokr_w1 | .lokr_w1_a .lokr_w1_b,  .lokr_w2 | .lokr_w2_a .lokr_w2_b [.lokr_t2]
    LyCORIS full difference      .diff
    PEFT / diffusers             .lora_A.weight .lora_B.weight, .lora.down/up.weight,
                                 .lora_linear_layer.down/up.weight, processor.to_q_lora.down/up.weight

and the delta (before the user's weight) is, with scale = alpha / rank (1 without alpha):

    LoRA   up @ down (convolutions: up [o, r, 1, 1], down [r, i, kh, kw]; with a Tucker core `mid`:
           delta[o, i, k, l] = sum up[o, n] mid[n, m, k, l] down[m, i])
    LoHa   (w1_a @ w1_b) * (w2_a @ w2_b)       (Tucker form per factor with t1/t2)
    LoKr   kron(w1, w2), w1 = w1_a @ w1_b when split, w2 likewise (or Tucker with t2)
    diff   the tensor itself

The layer key is still in the file's own naming; `modules_map` resolves it to a model layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import torch

# (suffix in the file, part name) -- longest suffixes first where one ends another
_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".lora_down.weight", "down"), (".lora_up.weight", "up"), (".lora_mid.weight", "mid"),
    (".lora_A.weight", "down"), (".lora_B.weight", "up"),
    (".lora_linear_layer.down.weight", "down"), (".lora_linear_layer.up.weight", "up"),
    ("_lora.down.weight", "down"), ("_lora.up.weight", "up"),  # diffusers attention processors
    (".lora.down.weight", "down"), (".lora.up.weight", "up"),
    (".hada_w1_a", "hada_w1_a"), (".hada_w1_b", "hada_w1_b"), (".hada_w2_a", "hada_w2_a"),
    (".hada_w2_b", "hada_w2_b"), (".hada_t1", "hada_t1"), (".hada_t2", "hada_t2"),
    (".lokr_w1_a", "lokr_w1_a"), (".lokr_w1_b", "lokr_w1_b"), (".lokr_w1", "lokr_w1"),
    (".lokr_w2_a", "lokr_w2_a"), (".lokr_w2_b", "lokr_w2_b"), (".lokr_w2", "lokr_w2"), (".lokr_t2", "lokr_t2"),
    (".diff", "diff"), (".alpha", "alpha"),
)


class LoraFormatError(ValueError):
    """The tensors of a layer do not form any known format."""


@dataclass(frozen=True)
class LayerWeights:
    """The tensors one file holds for one layer, by part name (see _SUFFIXES)."""

    key: str  # in the file's naming: "lora_unet_down_blocks_0_..." or "unet.down_blocks.0...."
    parts: Mapping[str, torch.Tensor]

    @property
    def kind(self) -> str:
        p = self.parts
        if "down" in p and "up" in p:
            return "lora"
        if all(k in p for k in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")):
            return "loha"
        if ("lokr_w1" in p or "lokr_w1_a" in p) and ("lokr_w2" in p or "lokr_w2_a" in p):
            return "lokr"
        if "diff" in p:
            return "diff"
        raise LoraFormatError(f"layer {self.key!r} has parts {sorted(p)}, which form no known LoRA format")

    def _scale(self, rank: Optional[int]) -> float:
        alpha = self.parts.get("alpha")
        if alpha is None or rank is None or rank == 0:
            return 1.0
        return float(alpha) / rank

    def delta(self, shape: torch.Size, device: torch.device) -> torch.Tensor:
        """The float32 difference this layer adds at weight 1, shaped as the model's weight `shape`
        (a linear delta for a 1x1 convolution, or the other way round, is reshaped)."""
        p = {k: v.to(device=device, dtype=torch.float32) for k, v in self.parts.items()}
        kind = self.kind
        if kind == "lora":
            up, down = p["up"].flatten(1), p["down"]
            rank = down.shape[0]
            if "mid" in p:
                delta = torch.einsum("nmkl,on,mi->oikl", p["mid"], up, down.flatten(1))
            else:
                delta = up @ down.flatten(1)
                if down.dim() == 4:
                    delta = delta.reshape(up.shape[0], *down.shape[1:])
        elif kind == "loha":
            rank = p["hada_w1_b"].shape[0]
            delta = _hada_factor(p, "1") * _hada_factor(p, "2")
        elif kind == "lokr":
            w1 = p["lokr_w1"] if "lokr_w1" in p else p["lokr_w1_a"] @ p["lokr_w1_b"]
            if "lokr_w2" in p:
                w2 = p["lokr_w2"]
            elif "lokr_t2" in p:
                w2 = _tucker(p["lokr_t2"], p["lokr_w2_a"], p["lokr_w2_b"])
            else:
                w2 = p["lokr_w2_a"] @ p["lokr_w2_b"]
            rank = (p["lokr_w1_b"].shape[0] if "lokr_w1_b" in p else
                    p["lokr_w2_b"].shape[0] if "lokr_w2_b" in p else None)
            if w2.dim() == 4:
                w1 = w1[:, :, None, None]
            delta = torch.kron(w1, w2)
        else:
            rank, delta = None, p["diff"]
        if delta.shape != shape:
            if delta.numel() != shape.numel():
                raise LoraFormatError(f"makes a {tuple(delta.shape)} change for a {tuple(shape)} weight")
            delta = delta.reshape(shape)
        return delta * self._scale(rank)


def _tucker(core: torch.Tensor, w_a: torch.Tensor, w_b: torch.Tensor) -> torch.Tensor:
    """LyCORIS' Tucker rebuild: core [r, r, kh, kw], w_a [r, out], w_b [r, in] -> [out, in, kh, kw]."""
    return torch.einsum("ijkl,jr,ip->prkl", core, w_b, w_a)


def _hada_factor(p: Mapping[str, torch.Tensor], n: str) -> torch.Tensor:
    if f"hada_t{n}" in p:
        return _tucker(p[f"hada_t{n}"], p[f"hada_w{n}_a"], p[f"hada_w{n}_b"])
    return p[f"hada_w{n}_a"] @ p[f"hada_w{n}_b"].flatten(1)


def split_layers(state_dict: Mapping[str, torch.Tensor]) -> tuple[list[LayerWeights], list[str]]:
    """Group a file's tensors by layer; keys with no known suffix come back as the second list."""
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    unknown: list[str] = []
    for key, tensor in state_dict.items():
        for suffix, part in _SUFFIXES:
            if key.endswith(suffix):
                grouped.setdefault(key[: -len(suffix)], {})[part] = tensor
                break
        else:
            unknown.append(key)
    return [LayerWeights(k, v) for k, v in grouped.items()], unknown


__all__ = ["LayerWeights", "LoraFormatError", "split_layers"]
