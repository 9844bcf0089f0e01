"""IP-Adapter: a reference picture steers generation through extra cross-attention keys/values.

Files are h94's (`ip-adapter_sd15.safetensors`, `ip-adapter-plus_sd15`, `ip-adapter_sdxl`,
`ip-adapter_sdxl_vit-h`, `ip-adapter-plus_sdxl_vit-h`, `ip-adapter-full-face_sd15`, ...):
`image_proj.*` (the projection of the CLIP image embedding into tokens) and
`ip_adapter.<N>.to_k_ip/to_v_ip.weight`, N = 1, 3, 5, ... counting the UNet's attention processors in
diffusers' order (cross-attention ones are the odd positions). `.bin` files hold the same two groups
as nested dicts. The projection is rebuilt with diffusers' own converter, so the variants diffusers
supports (plain, plus/Resampler, full-face) load; FaceID files need face embeddings and are refused.

At generation time (`IPAdapterRun`) the picture goes through the CLIP vision encoder once; the
UNet gets diffusers' IP-Adapter inputs: `encoder_hid_proj` (a MultiIPAdapterImageProjection) and
`added_cond_kwargs["image_embeds"]`, so its forward builds the (text, image tokens) pair itself.
Each cross-attention layer gets an `IPCrossAttention` processor that runs the layer's own processor
on the text and adds `scale * attention(query, image tokens)` through the output projection; at scale
0 it is exactly the layer's own processor, so weight 0 or a step outside start/end changes nothing.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

from controlnet_ext.clip_vision import (
    ClipVisionCache,
    ClipVisionFileError,
    ClipVisionMissingError,
    find_clip_vision,
    load_clip_vision,
    preprocess,
    require_clip_vision,
)

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from modules.extensions.hooks import UNetStep

FAMILIES: dict[int, tuple[str, str]] = {768: ("sd1", "SD 1.x"), 1024: ("sd2", "SD 2.x"), 2048: ("sdxl", "SDXL")}
_LAYER_KEY = re.compile(r"^(\d+)\.to_([kv])_ip\.weight$")


class IPAdapterFileError(ValueError):
    """A file that is not a usable IP-Adapter: names it and says why."""

    def __init__(self, label: str, why: str) -> None:
        self.label = label
        super().__init__(f"IP-Adapter {label}: {why}")


class IPAdapterMismatchError(ValueError):
    """An IP-Adapter that does not fit the UNet or the CLIP vision encoder: names both sides."""


def family_of(cross_attention_dim: int) -> tuple[str, str]:
    """(family, label) as ControlModel has them, from the cross-attention width the adapter feeds."""
    return FAMILIES.get(cross_attention_dim, ("custom", f"custom (cross-attention {cross_attention_dim})"))


def split_state(state: dict) -> tuple[dict, dict]:
    """(image_proj, ip_adapter) from a nested .bin dict or a flat safetensors dict with prefixes."""
    if isinstance(state.get("image_proj"), dict) or isinstance(state.get("ip_adapter"), dict):
        return dict(state.get("image_proj") or {}), dict(state.get("ip_adapter") or {})
    proj = {k[len("image_proj."):]: v for k, v in state.items() if k.startswith("image_proj.")}
    layers = {k[len("ip_adapter."):]: v for k, v in state.items() if k.startswith("ip_adapter.")}
    return proj, layers


class _ConverterHost:
    """What diffusers' image-projection converter reads from its UNet (only with low_cpu_mem_usage)."""

    device = None
    dtype = None


class IPAdapterWeights:
    """An IP-Adapter file, parsed: the image projection as a diffusers module and one (to_k_ip,
    to_v_ip) weight pair per cross-attention layer, keyed by the file's layer numbers."""

    def __init__(self, label: str, kind: str, image_proj: Any, layers: dict[int, tuple[Any, Any]],
                 image_embed_dim: int, cross_attention_dim: int, num_tokens: int) -> None:
        self.label = label
        self.kind = kind  # "plain" | "plus" | "full"
        self.image_proj = image_proj  # diffusers ImageProjection / IPAdapterPlusImageProjection / ...Full...
        self.layers = layers
        self.image_embed_dim = image_embed_dim  # what the encoder must give: projected embeds or hidden width
        self.cross_attention_dim = cross_attention_dim
        self.num_tokens = num_tokens
        self.family, self.family_label = family_of(cross_attention_dim)

    @property
    def uses_hidden_states(self) -> bool:
        """Plus / full-face adapters take the encoder's penultimate hidden states, plain ones its image embeds."""
        return self.kind != "plain"

    @classmethod
    def from_state_dict(cls, state: dict, label: str) -> "IPAdapterWeights":
        import torch

        proj, raw_layers = split_state(state)
        if not proj or not raw_layers:
            raise IPAdapterFileError(label, "no image_proj.* and ip_adapter.* tensors: not an IP-Adapter file")
        if any("lora" in k for k in raw_layers) or "perceiver_resampler.proj_in.weight" in proj or (
                "norm.weight" in proj and "proj.weight" not in proj and "latents" not in proj and "proj.3.weight" not in proj):
            raise IPAdapterFileError(label, "IP-Adapter FaceID files need InsightFace face embeddings, which this app "
                                            "does not compute; use a CLIP-image IP-Adapter (ip-adapter_sd15, ...)")
        if "proj.weight" in proj:
            kind, embed_dim, out_dim, tokens = "plain", proj["proj.weight"].shape[1], proj["proj.weight"].shape[0] // 4, 4
        elif "proj.3.weight" in proj:
            kind, embed_dim, out_dim, tokens = "full", proj["proj.0.weight"].shape[1], proj["proj.3.weight"].shape[0], 257
        elif "latents" in proj and "proj_in.weight" in proj and "proj_out.weight" in proj:
            kind, embed_dim, out_dim = "plus", proj["proj_in.weight"].shape[1], proj["proj_out.weight"].shape[0]
            tokens = proj["latents"].shape[1]
        else:
            raise IPAdapterFileError(label, f"unknown image projection (keys {', '.join(sorted(proj)[:4])}, ...)")

        pairs: dict[int, dict[str, Any]] = {}
        for key, value in raw_layers.items():
            m = _LAYER_KEY.match(key)
            if m is None:
                raise IPAdapterFileError(label, f"unexpected tensor ip_adapter.{key}")
            pairs.setdefault(int(m.group(1)), {})[m.group(2)] = value
        layers: dict[int, tuple[Any, Any]] = {}
        for n, kv in sorted(pairs.items()):
            if set(kv) != {"k", "v"} or kv["k"].shape != kv["v"].shape or kv["k"].ndim != 2:
                raise IPAdapterFileError(label, f"layer {n} needs to_k_ip and to_v_ip weights of one shape")
            layers[n] = (kv["k"], kv["v"])
        cross_dims = {k.shape[1] for k, _ in layers.values()}
        if len(cross_dims) != 1:
            raise IPAdapterFileError(label, f"its layers take different cross-attention widths {sorted(cross_dims)}")
        cross = cross_dims.pop()
        if out_dim != cross:
            raise IPAdapterFileError(label, f"the image projection gives {out_dim}-wide tokens but the layers take {cross}")

        from diffusers.loaders.unet import UNet2DConditionLoadersMixin

        try:  # diffusers' own converter: the variants it supports, with its key renames
            module = UNet2DConditionLoadersMixin._convert_ip_adapter_image_proj_to_diffusers(
                _ConverterHost(), {k: v for k, v in proj.items()}, low_cpu_mem_usage=False)
        except (KeyError, RuntimeError, ValueError) as exc:
            raise IPAdapterFileError(label, f"its image projection does not load ({str(exc).splitlines()[0]})") from None
        dtype = next(iter(layers.values()))[0].dtype
        module = module.to(dtype=dtype if dtype.is_floating_point else torch.float32).eval().requires_grad_(False)
        return cls(label, kind, module, layers, int(embed_dim), int(cross), int(tokens))

    def to(self, device: Any = None, dtype: Any = None) -> "IPAdapterWeights":
        """Moves the weights in place (ControlModelCache keeps them on the model's device and dtype)."""
        self.image_proj.to(device=device, dtype=dtype)
        self.layers = {n: (k.to(device=device, dtype=dtype), v.to(device=device, dtype=dtype))
                       for n, (k, v) in self.layers.items()}
        return self


# ---------------------------------------------------------------------------------------------
# the UNet patch


class IPCrossAttention:
    """A cross-attention processor: the layer's own processor on the text, plus `scale` times the
    attention of the same query over this adapter's image tokens, through the layer's output
    projection. Not an nn.Module, so installing it leaves the UNet's module tree alone."""

    def __init__(self, inner: Any, to_k: "torch.Tensor", to_v: "torch.Tensor", slot: int) -> None:
        self.inner = inner
        self.to_k, self.to_v = to_k, to_v
        self.slot = slot  # which entry of the UNet's image-token list is ours
        self.scale = 0.0

    def _inner_takes_pair(self) -> bool:
        return isinstance(self.inner, IPCrossAttention) or type(self.inner).__name__.startswith("IPAdapter")

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        import torch.nn.functional as F

        pair = encoder_hidden_states if isinstance(encoder_hidden_states, tuple) else None
        text = pair[0] if pair is not None else encoder_hidden_states
        out = self.inner(attn, hidden_states, pair if pair is not None and self._inner_takes_pair() else text,
                         attention_mask, temb, **kwargs)
        if pair is None or self.scale == 0:
            return out

        h = hidden_states
        if attn.spatial_norm is not None:
            h = attn.spatial_norm(h, temb)
        shape4 = h.shape if h.ndim == 4 else None
        if shape4 is not None:
            h = h.view(shape4[0], shape4[1], -1).transpose(1, 2)
        if attn.group_norm is not None:
            h = attn.group_norm(h.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(h)
        batch, heads = query.shape[0], attn.heads
        head_dim = query.shape[-1] // heads
        tokens = pair[1][self.slot]
        tokens = tokens.reshape(tokens.shape[0], -1, tokens.shape[-1]).to(query.dtype)
        key = F.linear(tokens, self.to_k.to(query.dtype)).view(batch, -1, heads, head_dim).transpose(1, 2)
        value = F.linear(tokens, self.to_v.to(query.dtype)).view(batch, -1, heads, head_dim).transpose(1, 2)
        q = query.view(batch, -1, heads, head_dim).transpose(1, 2)
        image_attn = F.scaled_dot_product_attention(q, key, value, dropout_p=0.0, is_causal=False)
        image_attn = image_attn.transpose(1, 2).reshape(batch, -1, heads * head_dim).to(query.dtype)
        proj = attn.to_out[0]  # affine: its linear part is proj(x) - proj(0)
        delta = proj(self.scale * image_attn) - proj(image_attn.new_zeros(1, 1, image_attn.shape[-1]))
        if shape4 is not None:
            delta = delta.transpose(-1, -2).reshape(shape4)
        return out + delta / attn.rescale_output_factor


@dataclass
class _Saved:
    """What patched() changed on the UNet, to put back exactly."""

    processors: list[tuple[Any, Any]]  # (Attention module, its processor before)
    proj_in_modules: bool  # encoder_hid_proj was a registered child (module or None) before
    proj: Any
    hid_dim_type: Any


def cross_attention_layers(unet) -> list[tuple[int, str, Any]]:
    """(file layer number, processor name, Attention module) of each cross-attention layer, numbered
    as IP-Adapter files number them: 1, 3, 5, ... over diffusers' attn_processors order."""
    out = []
    key_id = 1
    for name in unet.attn_processors:
        if name.startswith("encoder_hid_proj") or "motion_modules" in name or name.endswith("attn1.processor"):
            continue  # self-attention, and a Plus projection's own attention while another unit is patched
        out.append((key_id, name, unet.get_submodule(name[: -len(".processor")])))
        key_id += 2
    return out


def check_fits(weights: IPAdapterWeights, unet) -> list[tuple[int, str, Any]]:
    layers = cross_attention_layers(unet)
    unet_cross = unet.config.cross_attention_dim
    unet_label = f"the UNet ({family_of(unet_cross)[1]}: {len(layers)} cross-attention layers, width {unet_cross})"
    mine = f"IP-Adapter {weights.label} ({weights.family_label}: {len(weights.layers)} layers, width " \
           f"{weights.cross_attention_dim})"
    if weights.cross_attention_dim != unet_cross or sorted(weights.layers) != [n for n, _, _ in layers]:
        raise IPAdapterMismatchError(f"{mine} does not fit {unet_label}")
    for n, name, attn in layers:
        if weights.layers[n][0].shape[0] != attn.to_k.weight.shape[0]:
            raise IPAdapterMismatchError(f"{mine} does not fit {unet_label}: layer {n} ({name}) is "
                                         f"{attn.to_k.weight.shape[0]} wide, the adapter's {weights.layers[n][0].shape[0]}")
    return layers


def _set_proj(unet, proj: Any, in_modules: bool) -> None:
    """Set encoder_hid_proj as a registered child or as a plain attribute, as it was."""
    unet._modules.pop("encoder_hid_proj", None)
    unet.__dict__.pop("encoder_hid_proj", None)
    if in_modules:
        unet._modules["encoder_hid_proj"] = proj
    else:
        unet.__dict__["encoder_hid_proj"] = proj


@dataclass(frozen=True)
class _Span:
    guidance_start: float
    guidance_end: float


def guidance_active(index: int, total: int, start: float, end: float) -> bool:
    """Whether step `index` of `total` is inside [start, end]: the ControlNet units' rule
    (controlnet_ext.residuals.active_at, its one home; guidance_end 0 means never)."""
    from controlnet_ext.residuals import active_at

    return active_at(_Span(start, end), index, total)


# ---------------------------------------------------------------------------------------------
# one job's use


class IPAdapterRun:
    """One job's use of one IP-Adapter unit: the picture's CLIP embedding (computed once, here),
    the UNet patch, and the per-step inputs."""

    def __init__(self, weights: IPAdapterWeights, clip_vision_path: Path, image: "Image.Image", weight: float,
                 guidance_start: float, guidance_end: float, device: Any, dtype: Any,
                 encoders: Optional[ClipVisionCache] = None) -> None:
        import torch

        self.weights = weights
        self.weight = float(weight)
        self.guidance_start, self.guidance_end = float(guidance_start), float(guidance_end)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype or torch.float32
        self.clip_vision_path = Path(clip_vision_path)
        encoder = encoders.get(self.clip_vision_path, self.device, self.dtype) if encoders is not None else \
            load_clip_vision(self.clip_vision_path, self.device, self.dtype)
        gives = encoder.config.hidden_size if weights.uses_hidden_states else encoder.config.projection_dim
        if gives != weights.image_embed_dim:
            what = "hidden states" if weights.uses_hidden_states else "image embeds"
            raise IPAdapterMismatchError(
                f"IP-Adapter {weights.label} takes {weights.image_embed_dim}-wide CLIP {what}, but the encoder "
                f"{self.clip_vision_path.name} gives {gives}: pick the module whose encoder it was trained with "
                f"(ip-adapter_clip_sd15 / _sdxl_plus_vith: ViT-H, ip-adapter_clip_sdxl: ViT-bigG)")
        pixels = preprocess(image, encoder.config.image_size).to(self.device, self.dtype)
        with torch.no_grad():
            if weights.uses_hidden_states:  # Plus / full-face: penultimate hidden states; uncond: a zero image's
                both = encoder(torch.cat([torch.zeros_like(pixels), pixels]), output_hidden_states=True).hidden_states[-2]
                self.uncond, self.cond = both[:1], both[1:]
            else:  # plain: the projected image embedding; uncond: zeros, as diffusers' encode_image does
                self.cond = encoder(pixels).image_embeds
                self.uncond = torch.zeros_like(self.cond)
        self._processors: list[IPCrossAttention] = []
        self._unet: Any = None
        self.slot: Optional[int] = None

    @property
    def active(self) -> bool:
        return self._unet is not None

    def _projection(self):
        proj = self.weights.image_proj
        p = next(proj.parameters())
        if p.device == self.device and p.dtype == self.dtype:
            return proj
        import copy

        return copy.deepcopy(proj).to(self.device, self.dtype)

    @contextmanager
    def patched(self, unet) -> Iterator["IPAdapterRun"]:
        """Install this adapter on `unet` (processors and image projection); exit puts back exactly
        what was there. Several runs nest (each takes the next slot of the image-token list)."""
        from diffusers.models.embeddings import MultiIPAdapterImageProjection

        if self._unet is not None:
            raise RuntimeError(f"IP-Adapter {self.weights.label} is already patched on a UNet")
        layers = check_fits(self.weights, unet)
        existing = getattr(unet, "encoder_hid_proj", None)
        hid_type = getattr(unet.config, "encoder_hid_dim_type", None)
        if existing is None:
            previous_layers: list = []
        elif isinstance(existing, MultiIPAdapterImageProjection) and hid_type == "ip_image_proj":
            previous_layers = list(existing.image_projection_layers)
        else:
            raise IPAdapterMismatchError(f"IP-Adapter {self.weights.label}: the UNet has its own encoder_hid_proj "
                                         f"({hid_type}); IP-Adapter cannot be added to it")
        saved = _Saved([], "encoder_hid_proj" in unet._modules, existing, hid_type)
        self.slot = len(previous_layers)
        try:
            for n, _, attn in layers:
                k, v = self.weights.layers[n]
                proc = IPCrossAttention(attn.processor, k.to(self.device, self.dtype), v.to(self.device, self.dtype),
                                        self.slot)
                saved.processors.append((attn, attn.processor))
                attn.set_processor(proc)
                self._processors.append(proc)
            projection = MultiIPAdapterImageProjection([*previous_layers, self._projection()])
            projection.ip_runs = [*getattr(existing, "ip_runs", ()), self]  # slot order, for step_kwargs
            unet.encoder_hid_proj = projection
            unet.config.encoder_hid_dim_type = "ip_image_proj"
            self._unet = unet
            yield self
        finally:
            for attn, proc in reversed(saved.processors):
                attn.set_processor(proc)
            _set_proj(unet, saved.proj, saved.proj_in_modules)
            unet.config.encoder_hid_dim_type = saved.hid_dim_type
            self._processors, self._unet, self.slot = [], None, None

    def image_embeds(self, step: "UNetStep") -> "torch.Tensor":
        """This unit's entry of `image_embeds` for the step, rows matching step.sample: the
        picture's embedding on cond rows, the unconditional one on the leading uncond rows."""
        import torch

        uncond_rows = step.uncond_rows or 0  # with AND in the prompt, more cond rows than uncond ones
        cond = self.cond.unsqueeze(1).repeat_interleave(step.sample.shape[0] - uncond_rows, dim=0)
        if not uncond_rows:
            return cond  # [rows, 1 image, ...]
        return torch.cat([self.uncond.unsqueeze(1).repeat_interleave(uncond_rows, dim=0), cond])

    def step_kwargs(self, step: "UNetStep", on: bool = True) -> dict:
        """{"added_cond_kwargs": {"image_embeds": [...]}} for the step, and this unit's scale: its
        weight inside [guidance_start, guidance_end], 0 outside or when `on` is False (a pass the
        unit skips). Call it on every step while patched, `on` or not: the patched UNet needs its
        image_embeds on every call. The list holds every IP unit patched on the UNet (one entry per
        slot), so with several units any one's answer is the whole, identical list."""
        if self._unet is None:
            raise RuntimeError(f"IP-Adapter {self.weights.label}: step inputs asked for outside patched()")
        active = on and guidance_active(step.index, step.total, self.guidance_start, self.guidance_end)
        scale = self.weight if active else 0.0
        for proc in self._processors:
            proc.scale = scale
        runs = self._unet.encoder_hid_proj.ip_runs
        return {"added_cond_kwargs": {"image_embeds": [r.image_embeds(step) for r in runs]}}


__all__ = ["IPAdapterWeights", "IPAdapterRun", "IPCrossAttention", "IPAdapterFileError", "IPAdapterMismatchError",
           "ClipVisionMissingError", "ClipVisionFileError", "ClipVisionCache", "find_clip_vision", "require_clip_vision",
           "split_state", "family_of", "check_fits", "cross_attention_layers",
           "guidance_active"]
