"""A1111's `p` (StableDiffusionProcessing) and `Processed`, as views over this app's job state.

`Processing` reads and writes `JobState` (and the current `BatchState`) under A1111's field names,
so an A1111 script's `p.prompt`, `p.all_seeds`, `p.extra_generation_params[...] = ...` work. Where
a field lives on the frozen `GenerationRequest` (steps, cfg_scale, sampler_name, seed...), a write
replaces `job.request` with a re-validated copy: a bad value fails at once with an error naming
the field. Attributes this app does not know are kept on the object when written (extensions stash
state on `p`) and raise AttributeError naming the field when read before being written.

Prompts follow A1111's order: `all_prompts` is derived from `p.prompt` BEFORE `process` runs, so
changing `p.prompt` in `process` does not change `all_prompts` (A1111 scripts change both); a
change made in `before_process` is carried into `all_prompts` (A1111 derives them after it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

from pydantic import ValidationError

if TYPE_CHECKING:
    from modules.processing.job_state import BatchState, JobState
    from modules.generation.result import GenerationResult

# A1111's img2img resize_mode is an index into these (ours is an enum of the same names).
_RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")
_INPAINTING_FILL = ("fill", "original", "latent noise", "latent nothing")


class ProcessingValueError(ValueError):
    """A script wrote a value the request does not accept; names the `p` field and the reason."""

    def __init__(self, name: str, value: Any, err: ValidationError) -> None:
        reasons = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or name}: {e['msg']}"
                            for e in err.errors(include_url=False))
        self.field = name
        super().__init__(f"p.{name} = {value!r} is not valid: {reasons}")


class _Field:
    """A `p` attribute backed by this app's state; `set_name` gives it its A1111 name."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, p: Optional["Processing"], owner: type) -> Any:
        if p is None:
            return self
        return self.read(p)

    def __set__(self, p: "Processing", value: Any) -> None:
        raise AttributeError(f"p.{self.name} cannot be changed by a script in this app")

    def read(self, p: "Processing") -> Any:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError


class _RequestField(_Field):
    """A field of GenerationRequest, converted both ways where A1111's type differs."""

    def __init__(self, request_field: Optional[str] = None, *, get: Callable[[Any], Any] = lambda v: v,
                 put: Callable[[Any], Any] = lambda v: v) -> None:
        self.request_field, self.get, self.put = request_field, get, put

    def __set_name__(self, owner: type, name: str) -> None:
        super().__set_name__(owner, name)
        self.request_field = self.request_field or name

    def read(self, p: "Processing") -> Any:
        return self.get(getattr(p._job.request, self.request_field))

    def __set__(self, p: "Processing", value: Any) -> None:
        p._update_request(self.name, value, {self.request_field: self.put(value)})


class _ReadOnly(_Field):
    def __init__(self, getter: Callable[["Processing"], Any]) -> None:
        self.getter = getter

    def read(self, p: "Processing") -> Any:
        return self.getter(p)


class _JobList(_Field):
    """One of JobState's per-image lists (all_prompts...); a write replaces the job's list."""

    def read(self, p: "Processing") -> Any:
        return getattr(p._job, self.name)

    def __set__(self, p: "Processing", value: Any) -> None:
        setattr(p._job, self.name, list(value))


class _BatchList(_Field):
    """The current batch's list (A1111's p.prompts / p.seeds...), the same list the hooks get."""

    def __init__(self, batch_attr: str) -> None:
        self.batch_attr = batch_attr

    def read(self, p: "Processing") -> Any:
        return getattr(p._current_batch(self.name), self.batch_attr)

    def __set__(self, p: "Processing", value: Any) -> None:
        setattr(p._current_batch(self.name), self.batch_attr, list(value))


class _PromptField(_RequestField):
    """p.prompt / p.negative_prompt: in before_process a change is carried into the all_* list."""

    def __init__(self, request_field: str, all_list: str) -> None:
        super().__init__(request_field)
        self.all_list = all_list

    def __set__(self, p: "Processing", value: Any) -> None:
        old = getattr(p._job.request, self.request_field)
        super().__set__(p, value)
        if p._derive_prompts and value != old:
            entries = getattr(p._job, self.all_list)
            setattr(p._job, self.all_list, [_restyled(entry, old, value) for entry in entries])


def _restyled(entry: str, old: str, new: str) -> str:
    """`entry`, derived from prompt `old` (maybe with styles), derived from `new` instead. A style
    holds the prompt at "{prompt}" or after it, joined by ", " (A1111's rule)."""
    if entry == old:
        return new
    if old:
        return entry.replace(old, new, 1) if old in entry else entry
    return ", ".join(x for x in (new.strip(), entry.strip()) if x)


class _SeedField(_RequestField):
    """p.seed / p.subseed: the request's value, or the job's first actual seed when it asked for -1."""

    def __init__(self, request_field: str, all_list: str) -> None:
        super().__init__(request_field)
        self.all_list = all_list

    def read(self, p: "Processing") -> Any:
        value = getattr(p._job.request, self.request_field)
        values = getattr(p._job, self.all_list)
        return values[0] if value == -1 and values else value


class _SizeField(_RequestField):
    """Width/height: the job's resolved size (None on the request = the model's native size)."""

    def read(self, p: "Processing") -> Any:
        return getattr(p._job, self.name) or getattr(p._job.request, self.name) or 0

    def __set__(self, p: "Processing", value: Any) -> None:
        super().__set__(p, value)
        setattr(p._job, self.name, value)


def _inpaint(attr: str, convert: Callable[[Any], Any] = lambda v: v, missing: Any = None) -> _ReadOnly:
    def getter(p: "Processing") -> Any:
        inpaint = p._job.request.inpaint
        return missing if inpaint is None else convert(getattr(inpaint, attr))

    return _ReadOnly(getter)


def _outpath(kind: str) -> _ReadOnly:
    def getter(p: "Processing") -> str:
        options, mode = p._job.options, ("txt2img" if not p.is_img2img else "img2img")
        chosen = getattr(options, f"outdir_{mode}_{kind}", "") or getattr(options, f"outdir_{kind}", "")
        return chosen or f"outputs/{mode}-{'images' if kind == 'samples' else 'grids'}"

    return _ReadOnly(getter)


def _model_attr(attr: str) -> _ReadOnly:
    return _ReadOnly(lambda p: getattr(p._job.model, attr, None) if p._job.model is not None else None)


class Processing:
    """`p` for A1111 scripts; one per job, shared by every A1111 script of that job, as in A1111."""

    # text
    prompt = _PromptField("prompt", "all_prompts")
    negative_prompt = _PromptField("negative_prompt", "all_negative_prompts")
    styles = _RequestField(get=list, put=tuple)
    all_prompts = _JobList()
    all_negative_prompts = _JobList()
    main_prompt = _ReadOnly(lambda p: p._job.all_prompts[0] if p._job.all_prompts else p._job.request.prompt)
    main_negative_prompt = _ReadOnly(lambda p: p._job.all_negative_prompts[0] if p._job.all_negative_prompts
                                     else p._job.request.negative_prompt)
    # seeds
    seed = _SeedField("seed", "all_seeds")
    subseed = _SeedField("subseed", "all_subseeds")
    subseed_strength = _RequestField()
    seed_resize_from_w = _RequestField()
    seed_resize_from_h = _RequestField()
    all_seeds = _JobList()
    all_subseeds = _JobList()
    # sampling
    sampler_name = _RequestField()
    scheduler = _RequestField()
    steps = _RequestField()
    cfg_scale = _RequestField()
    eta = _RequestField()
    s_churn = _RequestField()
    s_tmin = _RequestField()
    s_tmax = _RequestField()
    s_noise = _RequestField()
    width = _SizeField()
    height = _SizeField()
    batch_size = _ReadOnly(lambda p: p._job.request.batch_size)
    n_iter = _ReadOnly(lambda p: p._job.request.batch_count)
    denoising_strength = _RequestField()
    # img2img / inpaint
    is_img2img = _ReadOnly(lambda p: p._job.request.mode.value != "txt2img")
    init_images = _RequestField(get=list, put=tuple)
    resize_mode = _ReadOnly(lambda p: _RESIZE_MODES.index(p._job.request.resize_mode.value))
    image_mask = _inpaint("mask")
    mask_blur = _inpaint("mask_blur", missing=0)
    inpainting_fill = _inpaint("masked_content", lambda v: _INPAINTING_FILL.index(v.value), missing=1)
    inpaint_full_res = _inpaint("inpaint_area", lambda v: v.value == "Only masked", missing=False)
    inpaint_full_res_padding = _inpaint("only_masked_padding", missing=32)
    inpainting_mask_invert = _inpaint("invert_mask", int, missing=0)
    # saving and infotext
    do_not_save_samples = _RequestField("save_images", get=lambda v: not v, put=lambda v: not v)
    do_not_save_grid = _RequestField("save_grid", get=lambda v: not v, put=lambda v: not v)
    outpath_samples = _outpath("samples")
    outpath_grids = _outpath("grids")
    restore_faces = _RequestField()
    tiling = _RequestField()
    sd_model_name = _model_attr("name")
    sd_model_hash = _model_attr("short_hash")
    sd_vae_name = _model_attr("vae_name")
    sd_vae_hash = _model_attr("vae_hash")
    # the current batch (set while a batch runs)
    iteration = _ReadOnly(lambda p: p._current_batch("iteration").index)
    prompts = _BatchList("prompts")
    negative_prompts = _BatchList("negative_prompts")
    seeds = _BatchList("seeds")
    subseeds = _BatchList("subseeds")

    def __init__(self, job: "JobState") -> None:
        object.__setattr__(self, "_job", job)
        object.__setattr__(self, "_batch", None)
        object.__setattr__(self, "_derive_prompts", False)
        self.batch_index = 0  # the image's position in its batch, during postprocess_image

    @property
    def extra_generation_params(self) -> dict[str, Any]:
        """The job's infotext fields (JobState.extra_params itself: changes go to the infotext)."""
        return self._job.extra_params

    @extra_generation_params.setter
    def extra_generation_params(self, value: dict[str, Any]) -> None:
        self._job.extra_params = dict(value)

    @property
    def job(self) -> "JobState":
        return self._job

    def set_batch(self, batch: Optional["BatchState"]) -> None:
        object.__setattr__(self, "_batch", batch)

    def _current_batch(self, name: str) -> "BatchState":
        if self._batch is None:
            raise AttributeError(f"p.{name} is only set while a batch runs (before_process_batch onwards)")
        return self._batch

    def _update_request(self, name: str, value: Any, update: dict[str, Any]) -> None:
        request = self._job.request
        try:
            self._job.request = type(request).model_validate({**dict(request), **update})
        except ValidationError as err:
            raise ProcessingValueError(name, value, err) from None

    def __getattr__(self, name: str) -> Any:
        # Only reached for names neither a field nor written by a script.
        if name.startswith("__"):
            raise AttributeError(name)
        known = getattr(type(self), name, None)
        if isinstance(known, _Field):  # a field that raised AttributeError: give its own reason
            return known.read(self)
        raise AttributeError(f"p.{name} is not provided by this app")


@dataclass
class Processed:
    """A1111's `Processed`, what `postprocess(p, processed, *args)` receives. Its lists are the
    result's own, so a script that appends to `processed.images` changes what the job returns."""

    images: list[Any]
    seed: int
    info: str
    infotexts: list[str]
    all_prompts: list[str]
    all_negative_prompts: list[str]
    all_seeds: list[int]
    all_subseeds: list[int]
    subseed: int = -1
    prompt: str = ""
    negative_prompt: str = ""
    width: int = 0
    height: int = 0
    sampler_name: str = ""
    cfg_scale: float = 0.0
    steps: int = 0
    batch_size: int = 1
    index_of_first_image: int = 0
    extra_generation_params: dict[str, Any] = field(default_factory=dict)
    sd_model_name: Optional[str] = None
    sd_model_hash: Optional[str] = None

    @classmethod
    def of(cls, p: Processing, result: "GenerationResult") -> "Processed":
        job = p.job
        return cls(
            images=result.images, seed=result.seeds[0] if result.seeds else p.seed,
            info=result.infotexts[0] if result.infotexts else "", infotexts=result.infotexts,
            all_prompts=result.prompts or job.all_prompts,
            all_negative_prompts=result.negative_prompts or job.all_negative_prompts,
            all_seeds=result.seeds or job.all_seeds, all_subseeds=result.subseeds or job.all_subseeds,
            subseed=result.subseeds[0] if result.subseeds else p.subseed,
            prompt=job.request.prompt, negative_prompt=job.request.negative_prompt,
            width=result.width or p.width, height=result.height or p.height,
            sampler_name=result.sampler_name or job.request.sampler_name, cfg_scale=job.request.cfg_scale,
            steps=job.request.steps, batch_size=job.request.batch_size,
            extra_generation_params=job.extra_params, sd_model_name=p.sd_model_name, sd_model_hash=p.sd_model_hash,
        )


P_KEY = "a1111.p"  # JobState.extension_data key of the job's shared `p`


def processing_for(job: "JobState") -> Processing:
    """The job's `p`, made on first use and shared by all its A1111 scripts (they stash state on it)."""
    p = job.extension_data.get(P_KEY)
    if p is None:
        p = job.extension_data[P_KEY] = Processing(job)
    return p


__all__ = ["Processing", "Processed", "ProcessingValueError", "processing_for", "P_KEY"]
