"""A1111 scripts on this app's typed hooks: the ONE place A1111's positional `*args` are mapped.

`load_a1111_scripts(catalog)` imports each extension's `scripts/*.py` (through the loader's
`import_extension_file`, with A1111-only imports refused by name), finds the `scripts.Script`
subclasses each file defines, and makes, as A1111 does, one instance per tab. Scripts whose
`show()` is `AlwaysVisible` become `A1111ScriptExtension`s for the `ExtensionSet`: their name is
the script's title, so the API's `alwayson_scripts` (keyed by title, any case) finds them. Their
Args is `{"args": [...]}`, A1111's positional list; missing trailing values take the defaults of
the script's ui() components, as A1111's API does.

Hook mapping (A1111 name -> ours): before_process + process -> process; before_process_batch ->
before_batch; process_batch -> process_batch; postprocess_image -> postprocess_image (pp.image written back);
postprocess -> postprocess (with a Processed made from the result). `p` is `a1111_p.Processing`.
"""

from __future__ import annotations

import inspect
import logging
import threading
import traceback
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Mapping, Optional

from pydantic import BaseModel, ConfigDict, Field

from modules import scripts as a1111_scripts
from modules.extensions.a1111_imports import guard_imports
from modules.extensions.a1111_p import Processed, processing_for
from modules.extensions.a1111_registry import COMPAT, LoadingFile
from modules.extensions.hooks import JobExtension, OutputImage
from modules.extensions.script_import import import_extension_file, module_name_for
from modules.extensions.types import Extension, ExtensionCatalog, ExtensionError, ExtensionFile, ScriptArgInfo

if TYPE_CHECKING:
    from modules.extensions.runner import ExtensionSet
    from modules.processing.job_state import BatchState, JobState
    from modules.generation.result import GenerationResult

log = logging.getLogger(__name__)
_UI_LOCK = threading.Lock()  # gradio's Blocks context is process-wide: build one script UI at a time


class A1111ScriptArgs(BaseModel):
    """`alwayson_scripts[title]`: A1111's positional values, in the order of the script's ui()."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    args: list[Any] = Field(default_factory=list)


# ---- what /sdapi/v1/script-info reports, read from the script's ui() components


@dataclass(frozen=True)
class ScriptInfo:
    """A1111's ScriptInfo: `name` is the lowercase title."""

    name: str
    is_alwayson: bool
    is_img2img: bool
    args: tuple[ScriptArgInfo, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"args": [asdict(a) for a in self.args]}


def _arg_info(component: Any) -> ScriptArgInfo:
    choices = getattr(component, "choices", None)
    if choices is not None:  # gradio lists (label, value) pairs; A1111 reports the labels
        choices = [c[0] if isinstance(c, (tuple, list)) else c for c in choices]
    return ScriptArgInfo(label=getattr(component, "label", None) or "", value=getattr(component, "value", None),
                         minimum=getattr(component, "minimum", None), maximum=getattr(component, "maximum", None),
                         step=getattr(component, "step", None), choices=choices)


def build_script_ui(script: a1111_scripts.Script, is_img2img: bool) -> list[Any]:
    """Calls `script.ui(is_img2img)` (inside the caller's gradio Blocks) and records what A1111
    records: `script.controls`, and `script.api_info` (our ScriptInfo). Returns the components."""
    controls = list(script.ui(is_img2img) or [])
    script.controls = controls
    script.api_info = ScriptInfo(name=(script.name or ""), is_alwayson=bool(script.alwayson), is_img2img=is_img2img,
                                 args=tuple(_arg_info(c) for c in controls))
    return controls


def ensure_script_ui(script: a1111_scripts.Script) -> Optional[ScriptInfo]:
    """The script's ScriptInfo, building its ui() in a throwaway Blocks when no UI did (API-only
    start, or a job before the UI). None, logged, when ui() raises."""
    if getattr(script, "api_info", None) is None:
        with _UI_LOCK:
            if getattr(script, "api_info", None) is None:
                import gradio as gr

                try:
                    with gr.Blocks():
                        build_script_ui(script, bool(script.is_img2img))
                except Exception:  # noqa: BLE001 - a broken ui() must not break the API or a job
                    log.exception("A1111 script %r: ui() failed; its arguments have no defaults", script.name)
                    script.api_info = ScriptInfo(script.name or "", bool(script.alwayson), bool(script.is_img2img))
                    script.controls = None
    return script.api_info


def ui_defaults(script: a1111_scripts.Script) -> Optional[list[Any]]:
    """The values of the script's ui() components (A1111's default script_args), None if unknown."""
    ensure_script_ui(script)
    return None if script.controls is None else [getattr(c, "value", None) for c in script.controls]


# ---- the adapter


class A1111ScriptExtension(JobExtension):
    """One AlwaysVisible A1111 script class, as a typed extension. Holds one instance per tab
    where it is always visible (`self.scripts[is_img2img]`), as A1111 does."""

    Args = A1111ScriptArgs
    always_on = True  # AlwaysVisible: runs on every job of its tabs, with its UI defaults unless sent

    def __init__(self, title: str, scripts: Mapping[bool, a1111_scripts.Script], extension: str,
                 file: ExtensionFile) -> None:
        # name/title are per instance here (each wraps another script); JobExtension reads them so.
        self.name = title  # type: ignore[misc]
        self.title = title  # type: ignore[misc]
        self.scripts = dict(scripts)
        self.extension = extension  # the extension folder it came from
        self.file = file

    def __repr__(self) -> str:
        return f"A1111ScriptExtension({self.name!r} from {self.file.canonical_name})"

    # ---- identity, args, UI
    def visible(self, is_img2img: bool) -> bool:
        return is_img2img in self.scripts

    def is_enabled(self, args: BaseModel) -> bool:
        return True  # A1111 runs every always-on script; the script reads its own "enabled" arg

    def args_from_api(self, value: Any) -> A1111ScriptArgs:
        """{"args": [...]} as A1111 sends it, or the bare list; other keys are ignored as in A1111."""
        if isinstance(value, A1111ScriptArgs):
            return value
        if value is None:
            value = []
        if isinstance(value, Mapping):
            value = value.get("args", [])
        if isinstance(value, tuple):
            value = list(value)
        return A1111ScriptArgs.model_validate({"args": value})

    def ui(self, is_img2img: bool) -> list[Any]:
        """The script's components for that tab (call inside the tab's gradio Blocks); [] when the
        script is not on that tab or its ui() fails (logged by name, as A1111 does)."""
        script = self.scripts.get(is_img2img)
        if script is None:
            return []
        try:
            return build_script_ui(script, is_img2img)
        except Exception:  # noqa: BLE001
            log.exception("extension %r: ui() of script %r failed", self.extension, self.name)
            return []

    def positional_args(self, is_img2img: bool, args: A1111ScriptArgs) -> list[Any]:
        """What `*args` the script gets: the given values, cut to its ui() components' count and
        completed with their values (A1111's API rule); as given when ui() is unknown."""
        given = list(args.args)
        script = self.scripts.get(is_img2img)
        defaults = ui_defaults(script) if script is not None else None
        if defaults is None:
            return given
        return given[:len(defaults)] + defaults[len(given):]

    def info(self) -> list[ScriptInfo]:
        return [i for _, s in sorted(self.scripts.items()) if (i := ensure_script_ui(s)) is not None]

    # ---- hooks
    def _script(self, job: "JobState") -> tuple[a1111_scripts.Script, bool]:
        is_img2img = job.request.mode.value != "txt2img"
        script = self.scripts.get(is_img2img)
        if script is None:
            raise ValueError(f"script {self.name!r} is not shown on the {'img2img' if is_img2img else 'txt2img'} tab")
        return script, is_img2img

    def _call_args(self, job: "JobState", args: BaseModel) -> tuple[a1111_scripts.Script, list[Any]]:
        script, is_img2img = self._script(job)
        assert isinstance(args, A1111ScriptArgs)
        return script, self.positional_args(is_img2img, args)

    def process(self, job: "JobState", args: BaseModel) -> None:
        script, values = self._call_args(job, args)
        p = processing_for(job)
        object.__setattr__(p, "_derive_prompts", True)  # A1111 derives all_prompts after before_process
        try:
            script.before_process(p, *values)
        finally:
            object.__setattr__(p, "_derive_prompts", False)
        script.process(p, *values)

    def _batch_call(self, job: "JobState", batch: "BatchState", args: BaseModel, method: str) -> None:
        script, values = self._call_args(job, args)
        p = processing_for(job)
        p.set_batch(batch)
        getattr(script, method)(p, *values, batch_number=batch.index, prompts=batch.prompts, seeds=batch.seeds,
                                subseeds=batch.subseeds)

    def before_batch(self, job: "JobState", batch: "BatchState", args: BaseModel) -> None:
        """A1111's before_process_batch: before extra-network tags are parsed, so it may add some."""
        self._batch_call(job, batch, args, "before_process_batch")

    def process_batch(self, job: "JobState", batch: "BatchState", args: BaseModel) -> None:
        self._batch_call(job, batch, args, "process_batch")

    def postprocess_image(self, job: "JobState", image: OutputImage, args: BaseModel) -> None:
        from PIL import Image

        script, values = self._call_args(job, args)
        p = processing_for(job)
        p.batch_index = image.index % job.request.batch_size
        pp = a1111_scripts.PostprocessImageArgs(image.image)
        script.postprocess_image(p, pp, *values)
        if not isinstance(pp.image, Image.Image):
            raise TypeError(f"postprocess_image set pp.image to a {type(pp.image).__name__}, not a PIL image")
        image.image = pp.image

    def postprocess(self, job: "JobState", result: "GenerationResult", args: BaseModel) -> None:
        script, values = self._call_args(job, args)
        p = processing_for(job)
        processed = Processed.of(p, result)
        script.postprocess(p, processed, *values)
        if processed.images is not result.images:  # the script replaced the list
            result.images = list(processed.images)


# ---- loading


@dataclass(frozen=True)
class A1111SelectableScript:
    """A script shown in the Script dropdown of one tab (A1111's `script_name`; not run yet)."""

    title: str
    is_img2img: bool
    script: a1111_scripts.Script
    extension: str
    file: ExtensionFile


@dataclass
class LoadedScripts:
    extensions: list[A1111ScriptExtension] = field(default_factory=list)
    selectable: list[A1111SelectableScript] = field(default_factory=list)
    modules: list[tuple[ExtensionFile, ModuleType]] = field(default_factory=list)  # every file that imported
    errors: list[ExtensionError] = field(default_factory=list)

    def add_to(self, extension_set: "ExtensionSet") -> list[ExtensionError]:
        """Adds the always-on scripts; one whose title another extension already uses is reported
        (and left out) instead of stopping the others."""
        clashes = []
        for ext in self.extensions:
            try:
                extension_set.add(ext)
            except ValueError as exc:
                clashes.append(ExtensionError(ext.extension, "import", f"{ext.file.canonical_name}: {exc}"))
        self.errors.extend(clashes)
        return clashes

    def alwayson(self, is_img2img: bool) -> list[A1111ScriptExtension]:
        return [e for e in self.extensions if e.visible(is_img2img)]

    def titles(self, is_img2img: bool) -> list[str]:
        """A1111's /sdapi/v1/scripts list for a tab: selectable and always-on titles, lowercase."""
        return ([s.title.lower() for s in self.selectable if s.is_img2img == is_img2img]
                + [e.name.lower() for e in self.alwayson(is_img2img)])

    def with_alwayson_defaults(self, requested: Mapping[str, Any], is_img2img: bool) -> dict[str, Any]:
        """`requested` (alwayson_scripts / GenerationRequest.extensions) plus every always-on script
        of that tab it leaves out, with its default args: A1111 runs them all on every job."""
        out = dict(requested)
        asked = {str(k).strip().lower() for k in requested}
        for ext in self.alwayson(is_img2img):
            if ext.name.lower() not in asked:
                out[ext.name] = A1111ScriptArgs()
        return out


def _error(ext: Extension, file: ExtensionFile, what: str, exc: BaseException) -> ExtensionError:
    error = ExtensionError(ext.name, "import", f"{file.path.relative_to(ext.path).as_posix()}: {what}: "
                           f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    ext.errors.append(error)
    log.error("%s\n%s", error, error.traceback)
    return error


def _script_classes(module: ModuleType) -> list[type[a1111_scripts.Script]]:
    """Script subclasses the module itself defines (not ones it imported), in definition order."""
    return [c for c in vars(module).values()
            if inspect.isclass(c) and issubclass(c, a1111_scripts.Script) and c is not a1111_scripts.Script
            and c.__module__ == module.__name__]


def _load_file(ext: Extension, file: ExtensionFile, loaded: LoadedScripts) -> None:
    errors_before = len(ext.errors)
    module_name = module_name_for(ext, file.path)
    with COMPAT.loading_file(LoadingFile(ext.name, file.basedir, file.path, module_name)):
        # Built-in extensions are ours and may use this app's modules; user ones get A1111's surface.
        module = import_extension_file(ext, file.path, init_module=None if ext.is_builtin else guard_imports)
        if module is None:
            loaded.errors.extend(ext.errors[errors_before:])
            return
        loaded.modules.append((file, module))
        for cls in _script_classes(module):
            _instantiate(ext, file, cls, loaded)


def _instantiate(ext: Extension, file: ExtensionFile, cls: type[a1111_scripts.Script], loaded: LoadedScripts) -> None:
    alwayson: dict[bool, a1111_scripts.Script] = {}
    title = ""
    for is_img2img in (False, True):
        try:
            script = cls()
            script.filename = str(file.path)
            script.is_img2img, script.is_txt2img = is_img2img, not is_img2img
            script.tabname = "img2img" if is_img2img else "txt2img"
            title = str(script.title())
            script.name = title.lower()
            visibility = script.show(is_img2img)
        except Exception as exc:  # noqa: BLE001 - reported by name; the other scripts load
            loaded.errors.append(_error(ext, file, f"script {cls.__name__} failed to start", exc))
            return
        if visibility is a1111_scripts.AlwaysVisible:
            script.alwayson = True
            alwayson[is_img2img] = script
        elif visibility:
            loaded.selectable.append(A1111SelectableScript(title, is_img2img, script, ext.name, file))
    if alwayson:
        loaded.extensions.append(A1111ScriptExtension(title, alwayson, ext.name, file))


def load_a1111_scripts(catalog: ExtensionCatalog) -> LoadedScripts:
    """Imports `catalog.scripts` in order and collects their A1111 Script classes. Failures are
    recorded on the extension (listed with its error) and in `errors`; the rest load."""
    loaded = LoadedScripts()
    for file in catalog.scripts:
        _load_file(catalog.extension_of(file), file, loaded)
    return loaded


def script_info(loaded: LoadedScripts) -> list[ScriptInfo]:
    """/sdapi/v1/script-info: every script on every tab where it shows, args read from its ui()."""
    infos: list[ScriptInfo] = []
    for ext in loaded.extensions:
        infos.extend(ext.info())
    for selectable in loaded.selectable:
        info = ensure_script_ui(selectable.script)
        if info is not None:
            infos.append(info)
    return infos


__all__ = ["A1111ScriptArgs", "A1111ScriptExtension", "LoadedScripts", "A1111SelectableScript", "ScriptInfo",
           "ScriptArgInfo", "load_a1111_scripts", "script_info", "build_script_ui", "ensure_script_ui",
           "ui_defaults"]
