"""X/Y/Z plot axis types, in A1111's order (its API clients send the index into the tab's list).

An axis changes a *draft* (a dict of GenerationRequest fields) for one cell. Axis types A1111 has
but this app cannot apply are listed (so indexes match) and refused by name when chosen.
Extensions add their own with `register_axis(AxisType(...))`; they follow the built-in ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations
from typing import Any, Callable, Optional

from modules.extensions.selectable import ScriptServices
from modules.generation.request import HiresOptions, RngSource

from selectable_scripts.values import expand_floats, expand_ints, format_number, split_csv

Draft = dict[str, Any]
ApplyFn = Callable[[Draft, Any, list, ScriptServices], None]
ConfirmFn = Callable[[Draft, list, ScriptServices], None]  # raises ValueError naming the bad value


@dataclass(frozen=True)
class AxisType:
    label: str
    kind: str  # "nothing" | "int" | "float" | "str" | "permutations"
    apply: Optional[ApplyFn]  # None: A1111 has it, this app cannot apply it
    tab: Optional[bool] = None  # None: both tabs; False: txt2img only; True: img2img only
    cost: float = 0.0  # slow to change (a checkpoint): its loop goes outermost
    choices: Optional[Callable[[ScriptServices], list[str]]] = None
    confirm: Optional[ConfirmFn] = None
    label_style: str = "labelled"  # "labelled" ("Steps: 4"), "plain", "join", "nothing"
    why_not: str = ""

    @property
    def supported(self) -> bool:
        return self.apply is not None or self.kind == "nothing"

    def parse(self, items: list[str]) -> list[Any]:
        """Items (CSV fields or dropdown picks) -> typed values; ValueError naming the bad one."""
        if self.kind == "nothing":
            return [None]
        if self.kind == "int":
            return expand_ints(items)
        if self.kind == "float":
            return expand_floats(items)
        if self.kind == "permutations":
            return [list(p) for p in permutations(items)]
        return list(items)

    def format(self, value: Any) -> str:
        if self.label_style == "nothing":
            return ""
        if self.label_style == "join":
            return ", ".join(value)
        text = format_number(value) if isinstance(value, float) else str(value)
        return f"{self.label}: {text}" if self.label_style == "labelled" else text


# ---------------------------------------------------------------------------------------------
# how each type changes a draft


def _field(name: str) -> ApplyFn:
    def apply(draft: Draft, value: Any, values: list, services: ScriptServices) -> None:
        draft[name] = value
    return apply


def _hires(name: str) -> ApplyFn:
    def apply(draft: Draft, value: Any, values: list, services: ScriptServices) -> None:
        hires = draft.get("hires")
        draft["hires"] = HiresOptions(**{**hires.model_dump(), name: value})
    return apply


def _needs_hires(draft: Draft, values: list, services: ScriptServices) -> None:
    if draft.get("hires") is None:
        raise ValueError("needs hires fix: turn on Hires. fix (API: enable_hr) for this axis")


def _prompt_sr(draft: Draft, value: str, values: list, services: ScriptServices) -> None:
    draft["prompt"] = draft["prompt"].replace(values[0], value)
    draft["negative_prompt"] = draft["negative_prompt"].replace(values[0], value)


def _confirm_prompt_sr(draft: Draft, values: list, services: ScriptServices) -> None:
    if values and values[0] not in draft["prompt"] and values[0] not in draft["negative_prompt"]:
        raise ValueError(f"Prompt S/R did not find {values[0]!r} in the prompt or negative prompt")


def _prompt_order(draft: Draft, value: list, values: list, services: ScriptServices) -> None:
    """The tokens in `value`'s order, each in the place where one of them stood (A1111's rule)."""
    prompt = draft["prompt"]
    found = sorted((prompt.find(token), token) for token in value)
    parts = []
    for _, token in found:
        n = prompt.find(token)
        parts.append(prompt[:n])
        prompt = prompt[n + len(token):]
    draft["prompt"] = "".join(part + value[i] for i, part in enumerate(parts)) + prompt


def _confirm_order(draft: Draft, values: list, services: ScriptServices) -> None:
    for token in (values[0] if values else []):
        if token not in draft["prompt"]:
            raise ValueError(f"Prompt order did not find {token!r} in the prompt")


def _sampler_names(services: ScriptServices) -> list[str]:
    from modules.processing import samplers

    return [s.name for s in samplers.SAMPLERS]


def _confirm_samplers(draft: Draft, values: list, services: ScriptServices) -> None:
    from modules.processing import samplers

    for value in values:
        try:
            samplers.split_sampler_name(value)
        except Exception:  # noqa: BLE001 - UnknownSamplerError: say which value
            raise ValueError(f"unknown sampler {value!r}; samplers: {', '.join(_sampler_names(services))}") from None


def _schedule_names(services: ScriptServices) -> list[str]:
    from modules.processing import samplers

    return [s.name for s in samplers.SCHEDULES]


def _confirm_schedules(draft: Draft, values: list, services: ScriptServices) -> None:
    from modules.processing import samplers

    for value in values:
        try:
            samplers.find_schedule(value)
        except Exception:  # noqa: BLE001
            raise ValueError(f"unknown schedule type {value!r}; types: {', '.join(_schedule_names(services))}") from None


def _checkpoint_names(services: ScriptServices) -> list[str]:
    return list(services.registry.checkpoint_titles()) if services.registry is not None else []


def _confirm_checkpoints(draft: Draft, values: list, services: ScriptServices) -> None:
    for value in values:
        try:
            services.registry.find_checkpoint(value)
        except Exception:  # noqa: BLE001 - UnknownModelError
            raise ValueError(f"unknown checkpoint {value!r}; checkpoints: "
                             f"{', '.join(_checkpoint_names(services)) or 'none'}") from None


def _checkpoint(draft: Draft, value: str, values: list, services: ScriptServices) -> None:
    draft["checkpoint"] = services.registry.find_checkpoint(value).title


def _vae_names(services: ScriptServices) -> list[str]:
    return list(services.registry.vae_choices()) if services.registry is not None else []


def _confirm_vaes(draft: Draft, values: list, services: ScriptServices) -> None:
    for value in values:
        if value.lower() in ("none", "automatic", "auto"):
            continue
        try:
            services.registry.find_vae(value)
        except Exception:  # noqa: BLE001
            raise ValueError(f"unknown VAE {value!r}; VAEs: {', '.join(_vae_names(services))}") from None


def _vae(draft: Draft, value: str, values: list, services: ScriptServices) -> None:
    low = value.lower()
    draft["vae"] = "None" if low == "none" else "Automatic" if low in ("automatic", "auto") else value


def _upscaler_names(services: ScriptServices) -> list[str]:
    from modules.processing.latent_upscale import LATENT_MODES

    names = list(LATENT_MODES)
    if services.postprocess is not None:
        names += services.postprocess.upscalers.names()
    return names


def _confirm_upscalers(draft: Draft, values: list, services: ScriptServices) -> None:
    _needs_hires(draft, values, services)
    known = _upscaler_names(services)
    for value in values:
        if value not in known:
            raise ValueError(f"unknown upscaler {value!r}; upscalers: {', '.join(known)}")


def _confirm_hires_samplers(draft: Draft, values: list, services: ScriptServices) -> None:
    _needs_hires(draft, values, services)
    _confirm_samplers(draft, values, services)


def _style_names(services: ScriptServices) -> list[str]:
    return list(services.styles.names()) if services.styles is not None else []


def _confirm_styles(draft: Draft, values: list, services: ScriptServices) -> None:
    known = _style_names(services)
    for value in values:
        for name in (n.strip() for n in value.split(",")):
            if name and name not in known:
                raise ValueError(f"unknown style {name!r}; styles: {', '.join(known) or 'none in styles.csv'}")


def _styles(draft: Draft, value: str, values: list, services: ScriptServices) -> None:
    names = [n.strip() for n in value.split(",") if n.strip()]
    draft["prompt"], draft["negative_prompt"] = services.styles.apply(draft["prompt"], draft["negative_prompt"], names)
    draft["styles"] = tuple(draft.get("styles", ())) + tuple(names)


def _parse_size(value: str) -> tuple[int, int]:
    text = value.lower().replace(" ", "")
    w, sep, h = text.partition("x")
    if not sep or not w.isdigit() or not h.isdigit():
        raise ValueError(f"size {value!r} is not WIDTHxHEIGHT, e.g. 512x768")
    return int(w), int(h)


def _confirm_sizes(draft: Draft, values: list, services: ScriptServices) -> None:
    for value in values:
        _parse_size(value)


def _size(draft: Draft, value: str, values: list, services: ScriptServices) -> None:
    draft["width"], draft["height"] = _parse_size(value)


_TRUE = ("true", "yes", "y", "1", "on")


def _confirm_face_restore(draft: Draft, values: list, services: ScriptServices) -> None:
    for value in values:
        if value.lower() not in (*_TRUE, "false", "no", "n", "0", "off"):
            raise ValueError(f"face restore {value!r}: use True or False (the model is the face_restoration_model "
                             "setting)")


def _face_restore(draft: Draft, value: str, values: list, services: ScriptServices) -> None:
    draft["restore_faces"] = value.lower() in _TRUE


def _confirm_rng(draft: Draft, values: list, services: ScriptServices) -> None:
    for value in values:
        if value not in ("GPU", "CPU"):
            raise ValueError(f"RNG source {value!r}: GPU or CPU (NV is not available)")


def _rng(draft: Draft, value: str, values: list, services: ScriptServices) -> None:
    draft["rng_source"] = RngSource(value)


def _nothing(draft: Draft, value: Any, values: list, services: ScriptServices) -> None:
    pass


def _unsupported(label: str, kind: str, tab: Optional[bool] = None, why: str = "") -> AxisType:
    return AxisType(label, kind, None, tab=tab, why_not=why or "not available in this app")


# A1111 1.10's axis_options, in its order (indexes are what its clients send)
BUILTIN_AXES: tuple[AxisType, ...] = (
    AxisType("Nothing", "nothing", _nothing, label_style="nothing"),
    AxisType("Seed", "int", _field("seed")),
    AxisType("Var. seed", "int", _field("subseed")),
    AxisType("Var. strength", "float", _field("subseed_strength")),
    AxisType("Steps", "int", _field("steps")),
    AxisType("Hires steps", "int", _hires("second_pass_steps"), tab=False, confirm=_needs_hires),
    AxisType("CFG Scale", "float", _field("cfg_scale")),
    _unsupported("Image CFG Scale", "float", tab=True, why="instruct-pix2pix models are not supported"),
    AxisType("Prompt S/R", "str", _prompt_sr, confirm=_confirm_prompt_sr, label_style="plain"),
    AxisType("Prompt order", "permutations", _prompt_order, confirm=_confirm_order, label_style="join"),
    AxisType("Sampler", "str", _field("sampler_name"), tab=False, choices=_sampler_names, confirm=_confirm_samplers,
             label_style="plain"),
    AxisType("Hires sampler", "str", _hires("sampler_name"), tab=False, choices=_sampler_names,
             confirm=_confirm_hires_samplers),
    AxisType("Sampler", "str", _field("sampler_name"), tab=True, choices=_sampler_names, confirm=_confirm_samplers,
             label_style="plain"),
    AxisType("Checkpoint name", "str", _checkpoint, cost=1.0, choices=_checkpoint_names, confirm=_confirm_checkpoints,
             label_style="plain"),
    _unsupported("Negative Guidance minimum sigma", "float"),
    AxisType("Sigma Churn", "float", _field("s_churn")),
    AxisType("Sigma min", "float", _field("s_tmin")),
    AxisType("Sigma max", "float", _field("s_tmax")),
    AxisType("Sigma noise", "float", _field("s_noise")),
    AxisType("Schedule type", "str", _field("scheduler"), choices=_schedule_names, confirm=_confirm_schedules),
    _unsupported("Schedule min sigma", "float"),
    _unsupported("Schedule max sigma", "float"),
    _unsupported("Schedule rho", "float"),
    AxisType("Eta", "float", _field("eta")),
    AxisType("Clip skip", "int", _field("clip_skip")),
    AxisType("Denoising", "float", _field("denoising_strength")),
    _unsupported("Initial noise multiplier", "float"),
    _unsupported("Extra noise", "float"),
    AxisType("Hires upscaler", "str", _hires("upscaler"), tab=False, choices=_upscaler_names,
             confirm=_confirm_upscalers),
    _unsupported("Cond. Image Mask Weight", "float", tab=True),
    AxisType("VAE", "str", _vae, cost=0.7, choices=_vae_names, confirm=_confirm_vaes),
    AxisType("Styles", "str", _styles, choices=_style_names, confirm=_confirm_styles),
    _unsupported("UniPC Order", "int"),
    AxisType("Face restore", "str", _face_restore, confirm=_confirm_face_restore, label_style="plain"),
    _unsupported("Token merging ratio", "float"),
    _unsupported("Token merging ratio high-res", "float"),
    _unsupported("Always discard next-to-last sigma", "str"),
    _unsupported("SGM noise multiplier", "str"),
    _unsupported("Refiner checkpoint", "str", why="the refiner is not available yet"),
    _unsupported("Refiner switch at", "float", why="the refiner is not available yet"),
    AxisType("RNG source", "str", _rng, choices=lambda s: ["GPU", "CPU"], confirm=_confirm_rng),
    _unsupported("FP8 mode", "str"),
    AxisType("Size", "str", _size, confirm=_confirm_sizes),
)

_EXTRA: list[AxisType] = []


def register_axis(axis: AxisType) -> None:
    """An extension's own axis type (after the built-in ones, as A1111 extensions append theirs)."""
    if any(a.label == axis.label and a.tab == axis.tab for a in _EXTRA):
        return
    _EXTRA.append(axis)


def axes_for(is_img2img: bool) -> list[AxisType]:
    """The tab's list: A1111 leaves out the other tab's types, which shifts the indexes."""
    return [a for a in (*BUILTIN_AXES, *_EXTRA) if a.tab is None or a.tab == is_img2img]


def find_axis(kind: Any, is_img2img: bool) -> AxisType:
    """An index into the tab's list (A1111's clients) or a label (any case); ValueError otherwise."""
    axes = axes_for(is_img2img)
    if isinstance(kind, bool):
        raise ValueError(f"axis type {kind!r} is neither an index nor a label")
    if isinstance(kind, int) or (isinstance(kind, str) and kind.strip().lstrip("-").isdigit()):
        index = int(kind)
        if not 0 <= index < len(axes):
            raise ValueError(f"axis type index {index} is out of range 0..{len(axes) - 1}")
        return axes[index]
    wanted = str(kind).strip().lower()
    for axis in axes:
        if axis.label.lower() == wanted:
            return axis
    raise ValueError(f"unknown axis type {kind!r}; types: {', '.join(a.label for a in axes if a.supported)}")


@dataclass
class Axis:
    """One axis of a plot: its type, its values, their labels, and the text the user typed."""

    type: AxisType
    values: list[Any]
    labels: list[str]
    text: str = ""
    name: str = "X"

    def __len__(self) -> int:
        return len(self.values)


def build_axis(name: str, kind: Any, text: str, dropdown: list[str], csv_mode: bool, is_img2img: bool,
               draft: Draft, services: ScriptServices) -> Axis:
    """Parse and confirm one axis; ValueError with the message the user sees (the caller names the axis)."""
    axis_type = find_axis(kind, is_img2img)
    if not axis_type.supported:
        raise ValueError(f"axis type {axis_type.label!r} is {axis_type.why_not}")
    if axis_type.kind == "nothing":
        return Axis(axis_type, [None], [""], "", name)
    use_dropdown = axis_type.choices is not None and not csv_mode and dropdown
    items = [str(v).strip() for v in dropdown if str(v).strip()] if use_dropdown else split_csv(text)
    if not items:
        raise ValueError(f"{axis_type.label}: no values given")
    values = axis_type.parse(items)
    if axis_type.confirm is not None:
        axis_type.confirm(draft, values, services)
    return Axis(axis_type, values, [axis_type.format(v) for v in values], text if not use_dropdown else
                ", ".join(items), name)


__all__ = ["AxisType", "Axis", "BUILTIN_AXES", "register_axis", "axes_for", "find_axis", "build_axis"]
