"""Selectable scripts: A1111's "Script" dropdown (X/Y/Z plot, prompt matrix, ...) on the typed API.

A selectable script is a `SelectableScript` subclass defined in an extension's `scripts/*.py`
(the built-in ones live in extensions-builtin/scripts/). The loader makes one instance of each
(`modules/extensions/startup.py`), calls its `setup(env)`, and keeps them in one `ScriptSet`.

    request.script = ScriptCall(name, Args)      the UI's dropdown / the API's script_name + script_args
    queue -> Engine.generate(request)            sees request.script and calls run_script(...)
    run_script -> script.run(ScriptRun, args)    the script runs sub-jobs with `run.generate(sub_request)`:
                                                 the real engine, inside the SAME queue slot, with the
                                                 job's progress and interrupt
               -> GenerationResult               grid + images, an infotext per image

Arguments: each script has a pydantic `Args`. The API's positional `script_args` (A1111's order) is
mapped onto it in ONE place, `args_from_api`, by default through `api_fields` (the Args field names
in A1111's order). Validation that needs the app (unknown sampler, checkpoint...) is `check`, run by
the API before the job is queued (422 naming the arg) and again by `run` itself.

Nothing here imports torch or gradio.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Optional, Sequence

from pydantic import BaseModel, ValidationError

from modules.extensions.hooks import ExtensionEnvironment, NoArgs
from modules.extensions.types import ScriptArgInfo
from modules.generation.request import GenerationRequest, Mode, ScriptCall
from modules.generation.result import GenerationResult, ImageParams
from modules.jobs.control import JobControl

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)


class ScriptArgsError(ValueError):
    """A script argument that cannot run. `field` is the Args field name (the API reports it at its
    position in script_args); the message names the value (and, for X/Y/Z, the axis)."""

    def __init__(self, field: str, message: str) -> None:
        self.field, self.message = field, message
        super().__init__(f"{field}: {message}")


class UnknownScriptNameError(ValueError):
    def __init__(self, name: str, valid: Sequence[str]) -> None:
        self.name, self.valid = name, list(valid)
        super().__init__(f"script {name!r} not found; available scripts: {', '.join(valid) or 'none'}")


@dataclass(frozen=True)
class ScriptServices:
    """What a script reads while checking and running: the app's model registry (checkpoint and VAE
    names), postprocessing (upscaler names), settings, paths and styles. Typed loosely: no app imports."""

    registry: Any = None  # modules.models.registry.ModelRegistry
    postprocess: Any = None  # modules.postprocess.services.Postprocessors
    settings: Any = None  # modules.settings.SettingsStore
    paths: Any = None  # modules.paths.Paths
    styles: Any = None  # modules.styles.StyleDatabase


class SelectableScript:
    """Base class of a script in the Script dropdown. Override `run` (and usually `check`, `ui`)."""

    name: ClassVar[str] = ""  # stable key ("xyz_grid")
    title: ClassVar[str] = ""  # A1111's title ("X/Y/Z plot"): the dropdown label and the API's script_name
    Args: ClassVar[type[BaseModel]] = NoArgs
    # A1111's positional script_args order, as Args field names ("" = a position A1111 has that this
    # app ignores). () = the Args field order.
    api_fields: ClassVar[tuple[str, ...]] = ()
    sort_order: ClassVar[int] = 0  # lower first in the dropdown

    @property
    def label(self) -> str:
        return self.title or self.name

    def visible(self, is_img2img: bool) -> bool:
        """Whether the txt2img (False) / img2img (True) dropdown offers it."""
        return True

    def setup(self, env: ExtensionEnvironment) -> None:
        """Once at start-up (folders, flags)."""

    # ---- arguments: the one place positional values become Args
    def positional_fields(self, values: Sequence[Any]) -> tuple[str, ...]:
        """The Args field of each position of `values` (override when A1111 versions differ)."""
        return self.api_fields or tuple(self.Args.model_fields)

    def args_from_api(self, value: Any) -> BaseModel:
        """script_args -> Args: a list in A1111's order (`positional_fields`; extra trailing values
        are ignored, missing ones take the Args defaults), or an object of Args fields."""
        if isinstance(value, self.Args):
            return value
        if value is None:
            value = {}
        if isinstance(value, (list, tuple)):
            names = self.positional_fields(value)
            value = {name: v for name, v in zip(names, value) if name}
        return self.Args.model_validate(value)

    def api_position(self, field_name: str, values: Sequence[Any] = ()) -> Optional[int]:
        """Where an Args field sits in A1111's positional script_args (for 422 locations)."""
        names = self.positional_fields(values)
        return names.index(field_name) if field_name in names else None

    def args_from_ui(self, values: list[Any]) -> BaseModel:
        """The values of the components `ui()` returned, in order -> Args (default: as the API's list)."""
        return self.args_from_api(list(values))

    def arg_infos(self, is_img2img: bool) -> list[ScriptArgInfo]:
        """/sdapi/v1/script-info's args, in A1111's positional order: from the Args fields' titles,
        defaults and bounds (`json_schema_extra={"step": .., "choices": [..]}` adds those)."""
        out = []
        fields = self.Args.model_fields
        for name in self.positional_fields(()):
            info = fields.get(name)
            if info is None:
                out.append(ScriptArgInfo(label=name))
                continue
            bounds: dict[str, Any] = {}
            for item in info.metadata:
                for attr, key in (("ge", "minimum"), ("gt", "minimum"), ("le", "maximum"), ("lt", "maximum")):
                    if getattr(item, attr, None) is not None:
                        bounds[key] = getattr(item, attr)
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            default = None if info.is_required() else info.get_default(call_default_factory=True)
            out.append(ScriptArgInfo(label=info.title or name, value=default, step=extra.get("step"),
                                     choices=extra.get("choices"), **bounds))
        return out

    # ---- UI (webui/ only; import gradio inside)
    def ui(self, is_img2img: bool) -> list[Any]:
        """Gradio components whose values, in order, `args_from_ui` reads."""
        return []

    # ---- running
    def check(self, request: GenerationRequest, args: BaseModel, services: ScriptServices) -> None:
        """Refuse what cannot run (ScriptArgsError naming the field and the value) before the job
        is queued. Must be cheap: no model loads, no sampling."""

    def run(self, run: "ScriptRun", args: BaseModel) -> GenerationResult:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# the set the app keeps


class ScriptSet:
    """Every loaded selectable script, found by name or title without regard to letter case."""

    def __init__(self, scripts: Iterable[SelectableScript] = ()) -> None:
        self._ordered: list[SelectableScript] = []
        for script in scripts:
            self.add(script)

    def add(self, script: SelectableScript) -> None:
        if not script.name or not script.title:
            raise ValueError(f"{type(script).__name__} needs a name and a title")
        if self.find(script.name) or self.find(script.title):
            raise ValueError(f"two selectable scripts are named {script.title!r}")
        self._ordered.append(script)
        self._ordered.sort(key=lambda s: s.sort_order)

    def __iter__(self):
        return iter(self._ordered)

    def __len__(self) -> int:
        return len(self._ordered)

    def find(self, name: str) -> Optional[SelectableScript]:
        key = (name or "").strip().lower()
        return next((s for s in self._ordered if key in (s.name.lower(), s.title.lower())), None)

    def for_tab(self, is_img2img: bool) -> list[SelectableScript]:
        return [s for s in self._ordered if s.visible(is_img2img)]

    def get(self, name: str, is_img2img: bool) -> SelectableScript:
        script = self.find(name)
        if script is None or not script.visible(is_img2img):
            raise UnknownScriptNameError(name, [s.title for s in self.for_tab(is_img2img)])
        return script

    def call(self, name: str, script_args: Any, is_img2img: bool) -> ScriptCall:
        """script_name + script_args -> the request's ScriptCall (UnknownScriptNameError,
        pydantic ValidationError for Args that do not validate)."""
        script = self.get(name, is_img2img)
        return ScriptCall(name=script.name, args=script.args_from_api(script_args))


# ---------------------------------------------------------------------------------------------
# running: one queue slot, sub-jobs through the real engine


class _SubJobControl(JobControl):
    """A sub-job's control: its progress is reported as batches `offset..` of the script's job;
    interrupt and skip are the script job's own."""

    def __init__(self, parent: JobControl, offset: int) -> None:
        super().__init__(parent.preview_every)
        self._parent, self._offset = parent, offset
        self.previews_when_watched = parent.previews_when_watched

    @property
    def interrupted(self) -> bool:
        return self._parent.interrupted

    def take_skip(self) -> bool:
        return self._parent.take_skip()

    @property
    def skip_requested(self) -> bool:
        return self._parent.skip_requested

    def wants_preview(self, step: int) -> bool:
        return self._parent.wants_preview(step)

    def start(self, batch_count: int, total_steps: int) -> None:
        pass  # the script planned the whole job's count (ScriptRun.begin)

    def report_step(self, batch_index, step, total_steps, preview=None) -> None:
        self._parent.report_step(self._offset + batch_index, step, total_steps, preview)

    def finish(self, failed: bool = False, textinfo: str = "") -> None:
        pass


GenerateFn = Callable[[GenerationRequest, JobControl], GenerationResult]


@dataclass
class ScriptRun:
    """What `SelectableScript.run` gets: the base request (the tab's settings, `script` cleared),
    the app's services, and `generate` for sub-jobs."""

    request: GenerationRequest
    control: JobControl
    services: ScriptServices
    _generate: GenerateFn
    batches_done: int = 0  # sub-job batches run so far (progress offset)
    warnings: list[str] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        """True once the user interrupted the job: stop starting sub-jobs, keep what is done."""
        return self.control.interrupted

    @property
    def is_img2img(self) -> bool:
        return self.request.mode is not Mode.TXT2IMG

    def begin(self, total_batches: int, steps: Optional[int] = None) -> None:
        """Progress plan: the job is `total_batches` batches (every sub-job's batch_count together),
        so /progress counts every image of the plot."""
        self.control.start(max(1, total_batches), steps or self.request.steps)

    def derive(self, **changes: Any) -> GenerationRequest:
        """A validated copy of the base request with `changes` (pydantic ValidationError if a value
        is out of range). Sub-jobs never save their own grid."""
        values = {name: getattr(self.request, name) for name in type(self.request).model_fields}
        values.update(save_grid=False, script=None)
        values.update(changes)
        return type(self.request)(**values)

    def generate(self, request: GenerationRequest) -> GenerationResult:
        """Run one sub-job through the engine in this queue slot. Its batches count as the next
        `request.batch_count` batches of the job's progress."""
        control = _SubJobControl(self.control, self.batches_done)
        try:
            return self._generate(request, control)
        finally:
            self.batches_done += request.batch_count

    def save_grid(self, grid: "Image.Image", params: ImageParams, infotext: str, request: GenerationRequest,
                  ) -> Optional[str]:
        """Save a grid where the tab's grids go (A1111's outdir_*_grids), when the request saves
        images and the grid_save setting is on; returns the path or None."""
        opts = self.services.settings.get() if self.services.settings is not None else None
        if opts is None or not (self.request.save_images and self.request.save_grid and opts.grid_save):
            return None
        from modules import outputs
        from modules.processing.engine import save_settings

        path = outputs.save_image(grid, kind="img2img" if self.is_img2img else "txt2img", seed=params.seed,
                                  prompt=params.prompt, infotext=infotext, settings=save_settings(opts, request),
                                  base_dir=self.services.paths.outputs_dir, is_grid=True, params=params,
                                  request=request)
        return str(path)


def run_script(scripts: ScriptSet, request: GenerationRequest, control: JobControl, generate: GenerateFn,
               services: ScriptServices) -> GenerationResult:
    """The engine's entry for a request with `script` set (called from Engine.generate)."""
    call = request.script
    assert call is not None
    is_img2img = request.mode is not Mode.TXT2IMG
    script = scripts.get(call.name, is_img2img)
    args = script.args_from_api(call.args)
    started = time.perf_counter()
    run = ScriptRun(request.model_copy(update={"script": None}), control, services, generate)
    result = script.run(run, args)
    result.interrupted = result.interrupted or control.interrupted
    for warning in run.warnings:
        if warning not in result.warnings:
            result.warnings.append(warning)
    result.timings = replace(result.timings, total_s=time.perf_counter() - started)
    log.info("script %s: %d image(s)%s in %.1f s", script.title, len(result.images),
             " (interrupted)" if result.interrupted else "", result.timings.total_s)
    return result


def args_error_position(script: SelectableScript, err: ValidationError | ScriptArgsError,
                        sent: Any) -> list[tuple[tuple[Any, ...], str, str]]:
    """(loc under script_args, message, type) for each error: a position when the client sent a list."""
    items: list[tuple[Any, str, str]] = []
    if isinstance(err, ScriptArgsError):
        items.append(((err.field,), err.message, "value_error"))
    else:
        for e in err.errors(include_url=False):
            items.append((tuple(e["loc"]), str(e["msg"]).removeprefix("Value error, "), e["type"]))
    out = []
    for loc, msg, kind in items:
        if isinstance(sent, (list, tuple)) and loc and isinstance(loc[0], str):
            pos = script.api_position(loc[0], sent)
            if pos is not None:
                out.append(((pos, *loc[1:]), f"{loc[0]}: {msg}", kind))
                continue
        out.append((loc, msg, kind))
    return out


__all__ = ["SelectableScript", "ScriptSet", "ScriptRun", "ScriptServices", "ScriptArgsError", "ScriptArgInfo",
           "UnknownScriptNameError", "run_script", "args_error_position"]
