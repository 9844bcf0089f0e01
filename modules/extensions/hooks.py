"""The typed hook API: how an extension attaches to a generation job.

An extension is a `JobExtension` subclass with its own pydantic `Args` model. The engine runs a job
through named phases and calls each active extension's hooks between them, in this order:

    process(job)                      once, before anything: may edit job.all_prompts / seeds / request
    patch_model(job) -> context       entered once after process and ALWAYS exited (error, interrupt)
    for each batch:
        before_batch(job, batch)      may edit batch.prompts (tags such as <lora:x:1> included)
        process_batch(job, batch)     tags are parsed (batch.extra_networks); may return a context
                                      that patches the model for this batch only, always exited
        unet_step(job, batch, step)   before every UNet call: may add UNet keyword arguments
        after_batch(job, batch)       the batch's decoded images are in batch.images
        postprocess_image(job, img)   per image, may replace img.image and add img.extra_params
    postprocess(job, result)          once, after all images

Every call goes through `modules.extensions.runner`, which names the extension in any error. A
hook that raises ends the job cleanly (patches undone, no half-written files); the server keeps
serving. Nothing here imports torch or gradio: `ui()` imports gradio itself and runs only in webui/.

Infotext: job-wide fields go into `job.extra_params` (A1111's `p.extra_generation_params`),
per-image ones into `OutputImage.extra_params`; both are written after the core keys.

Besides jobs, an extension may take part in the app: `setup(env)` once at start-up, `api_router()`
for routes under /sdapi/v1 (auth and error mapping included), and `network_cards()` / `refresh()`
for the Extra Networks panel.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Optional

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from PIL import Image

    from modules.processing.job_state import BatchState, JobState
    from modules.generation.result import GenerationResult


class NoArgs(BaseModel):
    """The Args of an extension that takes none."""

    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass
class UNetStep:
    """One UNet call of the denoising loop, as an extension sees it.

    Tensors are the ones about to go into the UNet (CFG-doubled when CFG is on: uncond rows first).
    Rows come in blocks of the batch's B images: ``[uncond × B, cond × B]``, or with ``AND`` in the
    prompt ``[uncond × B, sub-prompt 1 × B, sub-prompt 2 × B, ...]``; `uncond_rows` says how many
    leading rows are uncond (0 without CFG), every row after them is a cond row.
    A hook adds keyword arguments for the UNet call to `unet_kwargs` (ControlNet:
    `down_block_additional_residuals`, `mid_block_additional_residual`); where two extensions add
    the same residual key, the runner sums them.
    """

    index: int  # 0-based step of this batch's sampling
    total: int
    timestep: Any  # torch scalar tensor
    sample: Any  # [B or 2B, C, h, w] scaled model input
    encoder_hidden_states: Any
    cfg: bool  # True when rows are (uncond..., cond...)
    unet_kwargs: dict[str, Any] = field(default_factory=dict)
    # The UNet's own `added_cond_kwargs` for this call (SDXL: text_embeds, time_ids; rows match
    # `sample`), None when it takes none. Read-only: SDXL ControlNets need the same inputs. A hook
    # that adds its own (IP-Adapter's image_embeds) puts `{"added_cond_kwargs": {...}}` into
    # `unet_kwargs`; those keys are merged into the UNet's.
    added_cond_kwargs: Optional[dict[str, Any]] = None
    pass_index: int = 0  # 0 = the first pass, 1 = hires fix's second pass
    uncond_rows: Optional[int] = None  # leading uncond rows; None: half the rows with cfg, else 0

    def __post_init__(self) -> None:
        if self.uncond_rows is None:
            rows = getattr(self.sample, "shape", (0,))[0]
            self.uncond_rows = rows // 2 if self.cfg else 0


@dataclass
class OutputImage:
    """One finished image on its way to the result and the disk."""

    index: int  # position in the job (0-based)
    image: "Image.Image"
    seed: int
    subseed: int
    prompt: str
    negative_prompt: str
    extra_params: dict[str, Any] = field(default_factory=dict)  # infotext fields for this image only


class AppHandle:
    """The running app's services (an AppContext: queue, registry, postprocess), filled in once the
    app is built: extensions load first, because the engine and the queue are built on them.
    Route handlers and UI callbacks read `context`; `setup` must not (it is still None then)."""

    context: Any = None


@dataclass(frozen=True)
class ExtensionEnvironment:
    """What an extension gets once at start-up (`JobExtension.setup`): where things live, the flags
    and the settings. Typed loosely here so this module stays free of app imports."""

    paths: Any  # modules.paths.Paths
    args: Any  # argparse.Namespace (preload.py flags included)
    settings: Any  # modules.settings.SettingsStore
    app: AppHandle = field(default_factory=AppHandle)  # the queue etc. (e.g. to run a QueueTask from a route)


@dataclass(frozen=True)
class NetworkCard:
    """One card of the Extra Networks panel (a LoRA, an embedding...): torch-free data for the UI."""

    kind: str  # the tab it shows under: "Lora", "Textual Inversion"
    name: str
    prompt_text: str  # what a click adds to the prompt: "<lora:name:1>", "name"
    path: str = ""
    preview: str = ""  # an image file beside the model ("name.png" / "name.preview.png"), "" if none
    description: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)  # e.g. the safetensors header's ss_* fields
    search_terms: tuple[str, ...] = ()


class JobExtension:
    """Base class for extensions that attach to jobs. Override only the hooks you need.

    `name` is the key of `GenerationRequest.extensions` and, compared without regard to case, of the
    API's `alwayson_scripts` (A1111 keys it by the script's title, so `title` matches too).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""  # shown in the UI; "" = name
    Args: ClassVar[type[BaseModel]] = NoArgs
    sort_order: ClassVar[int] = 0  # lower runs first; ties keep load order
    extra_network: ClassVar[str] = ""  # the prompt tag kind it consumes: "lora" for <lora:name:1>
    extra_network_aliases: ClassVar[tuple[str, ...]] = ()  # other kinds it also takes ("lyco")
    # Runs on every job, with default Args when the request does not name it (A1111's
    # AlwaysVisible scripts; extra-network handlers, whose tags may appear in any prompt).
    always_on: ClassVar[bool] = False

    # ---- identity and arguments
    @property
    def label(self) -> str:
        return self.title or self.name

    def visible(self, is_img2img: bool) -> bool:
        """Whether the UI shows its controls on the txt2img (False) or img2img (True) tab."""
        return True

    def args_from_api(self, value: Any) -> BaseModel:
        """`alwayson_scripts[title]` (A1111 sends {"args": [...]}) -> Args. The default accepts an
        object of Args fields, {"args": {...}}, or {"args": [...]} in Args field order."""
        if isinstance(value, dict) and set(value) == {"args"}:
            value = value["args"]
        if isinstance(value, (list, tuple)):
            value = dict(zip(self.Args.model_fields, value))
        return self.Args.model_validate(value or {})

    def is_enabled(self, args: BaseModel) -> bool:
        """A job runs the hooks only when this says so (an `enabled: bool` field is the usual rule)."""
        return bool(getattr(args, "enabled", True))

    def args_from_ui(self, values: list[Any]) -> BaseModel:
        """The values of the components `ui()` returned, in order -> Args (default: as the API's list)."""
        return self.args_from_api(list(values))

    def args_from_infotext(self, params: dict[str, str]) -> Optional[BaseModel]:
        """Args read back from an infotext's parameters (what `extra_params` wrote); None: not used."""
        return None

    def ui_values_from_args(self, args: BaseModel, count: int) -> Optional[list[Any]]:
        """Values for the `count` components `ui()` returned, in order, from Args (pasting an
        infotext into the UI: `args_from_infotext` then this); an entry may be a gradio update.
        None: pasting leaves the controls as they are."""
        return None

    def ui(self, is_img2img: bool) -> list[Any]:
        """Gradio components, one per Args field in field order (imported inside; webui/ only)."""
        return []

    # ---- app-level (not per job): start-up, HTTP routes, Extra Networks cards
    def setup(self, env: ExtensionEnvironment) -> None:
        """Called once at start-up, before any job (find model folders, read flags)."""

    def api_router(self) -> Any:
        """A fastapi.APIRouter whose routes join /sdapi/v1 behind its auth and error mapping
        (e.g. GET /loras); None for none."""
        return None

    def app_router(self) -> Any:
        """A fastapi.APIRouter whose routes join the app at its root, not under /sdapi/v1 (clients of
        sd-webui-controlnet call /controlnet/model_list), behind the same auth and error mapping;
        None for none."""
        return None

    def network_cards(self) -> list[NetworkCard]:
        """Cards for the Extra Networks panel; read again on every refresh."""
        return []

    def refresh(self) -> None:
        """Re-scan whatever `network_cards` lists (the panel's and the API's refresh)."""

    # ---- hooks (see the module docstring for the order)
    def process(self, job: "JobState", args: BaseModel) -> None:
        pass

    def patch_model(self, job: "JobState", args: BaseModel) -> Optional[AbstractContextManager]:
        return None

    def before_batch(self, job: "JobState", batch: "BatchState", args: BaseModel) -> None:
        pass

    def process_batch(self, job: "JobState", batch: "BatchState",
                      args: BaseModel) -> Optional[AbstractContextManager]:
        return None

    def unet_step(self, job: "JobState", batch: "BatchState", step: UNetStep, args: BaseModel) -> None:
        pass

    def after_batch(self, job: "JobState", batch: "BatchState", args: BaseModel) -> None:
        pass

    def postprocess_image(self, job: "JobState", image: OutputImage, args: BaseModel) -> None:
        pass

    def postprocess(self, job: "JobState", result: "GenerationResult", args: BaseModel) -> None:
        pass


HOOK_NAMES = ("process", "patch_model", "before_batch", "process_batch", "unet_step", "after_batch", "postprocess_image",
              "postprocess")


def overrides(extension: JobExtension, hook: str) -> bool:
    """True when the extension's class defines `hook` itself (the runner skips the no-op ones)."""
    return getattr(type(extension), hook) is not getattr(JobExtension, hook)


__all__ = ["JobExtension", "NoArgs", "UNetStep", "OutputImage", "ExtensionEnvironment", "AppHandle", "NetworkCard",
           "HOOK_NAMES", "overrides"]
