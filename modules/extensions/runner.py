"""Which extensions a job runs, and the one place their hooks are called.

`ExtensionSet` is built once at start-up from every loaded `JobExtension` (built-in, user, and A1111
scripts through their adapter). For each request it turns `GenerationRequest.extensions` (name ->
Args, or raw JSON for that Args) into a `JobHooks`, which the engine calls between its phases.

Every hook call is wrapped: an exception becomes `ExtensionHookError`, which names the extension
and the hook. The engine lets it end the job; patches entered through `patch_models` are undone
whatever happens, because they live in an ExitStack the engine closes in `finally`.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional

from pydantic import BaseModel, ValidationError

from modules.extensions.hooks import JobExtension, OutputImage, UNetStep, overrides

if TYPE_CHECKING:
    from modules.processing.job_state import BatchState, JobState
    from modules.generation.result import GenerationResult

log = logging.getLogger(__name__)


class ExtensionHookError(RuntimeError):
    """An extension's hook raised; the message names the extension, the hook and the cause."""

    def __init__(self, extension: str, hook: str, cause: BaseException) -> None:
        self.extension, self.hook, self.cause = extension, hook, cause
        super().__init__(f"extension {extension!r} failed in {hook}: {type(cause).__name__}: {cause}")


class UnknownExtensionError(ValueError):
    def __init__(self, name: str, valid: Iterable[str]) -> None:
        self.name, self.valid = name, sorted(valid)
        super().__init__(f"unknown extension {name!r}; loaded: {', '.join(self.valid) or 'none'}")


class ExtensionArgsError(ValueError):
    """Args that do not validate; `errors` are pydantic's, `name` the extension's."""

    def __init__(self, name: str, err: ValidationError) -> None:
        self.name = name
        self.errors = err.errors(include_url=False)
        super().__init__(f"{name}: {err}")


@dataclass(frozen=True)
class ActiveExtension:
    extension: JobExtension
    args: BaseModel

    @property
    def name(self) -> str:
        return self.extension.name


def _key(name: str) -> str:
    return name.strip().lower()


class ExtensionSet:
    """Every loaded extension, by name (and title), without regard to letter case."""

    def __init__(self, extensions: Iterable[JobExtension] = ()) -> None:
        self._by_key: dict[str, JobExtension] = {}
        self._ordered: list[JobExtension] = []
        for ext in extensions:
            self.add(ext)

    def add(self, extension: JobExtension) -> None:
        if not extension.name:
            raise ValueError(f"{type(extension).__name__} has no name")
        if _key(extension.name) in self._by_key:
            raise ValueError(f"two extensions are named {extension.name!r}")
        self._ordered.append(extension)
        self._by_key[_key(extension.name)] = extension
        if extension.title:
            self._by_key.setdefault(_key(extension.title), extension)

    def remove(self, name: str) -> None:
        ext = self.get(name)
        self._ordered.remove(ext)
        self._by_key = {k: v for k, v in self._by_key.items() if v is not ext}

    def __iter__(self):
        return iter(self._ordered)

    def __len__(self) -> int:
        return len(self._ordered)

    @property
    def names(self) -> list[str]:
        return [e.name for e in self._ordered]

    def find(self, name: str) -> Optional[JobExtension]:
        return self._by_key.get(_key(name))

    def get(self, name: str) -> JobExtension:
        found = self.find(name)
        if found is None:
            raise UnknownExtensionError(name, self.names)
        return found

    def parse_args(self, name: str, value: Any) -> tuple[str, BaseModel]:
        """(canonical name, validated Args) for one entry of `alwayson_scripts` / `extensions`."""
        ext = self.get(name)
        if isinstance(value, ext.Args):
            return ext.name, value
        try:
            return ext.name, ext.args_from_api(value)
        except ValidationError as err:
            raise ExtensionArgsError(ext.name, err) from None

    @property
    def extra_network_kinds(self) -> frozenset[str]:
        """Prompt tag kinds some loaded extension handles (others are reported as unknown)."""
        return frozenset(kind for e in self._ordered for kind in (e.extra_network, *e.extra_network_aliases) if kind)

    def for_request(self, requested: Mapping[str, Any], is_img2img: bool = False) -> "JobHooks":
        """The job's extensions: those the request names (enabled by their Args) and the always-on
        ones of that tab it does not name, with default Args (A1111 runs every AlwaysVisible script
        on every job)."""
        chosen: dict[str, BaseModel] = {}
        for name, value in requested.items():
            canonical, args = self.parse_args(name, value)
            chosen[canonical] = args
        for ext in self._ordered:
            if ext.always_on and ext.name not in chosen and ext.visible(is_img2img):
                chosen[ext.name] = self.parse_args(ext.name, None)[1]
        active = [ActiveExtension(self.get(name), args) for name, args in chosen.items()
                  if self.get(name).is_enabled(args)]
        order = {id(e): i for i, e in enumerate(self._ordered)}
        active.sort(key=lambda a: (a.extension.sort_order, order[id(a.extension)]))
        return JobHooks(active)


class JobHooks:
    """The active extensions of one job, called in order, every call named on failure."""

    def __init__(self, active: list[ActiveExtension]) -> None:
        self.active = active

    def __bool__(self) -> bool:
        return bool(self.active)

    def _each(self, hook: str):
        for item in self.active:
            if overrides(item.extension, hook):
                yield item

    def _call(self, item: ActiveExtension, hook: str, *args: Any) -> Any:
        try:
            return getattr(item.extension, hook)(*args, item.args)
        except ExtensionHookError:
            raise
        except Exception as exc:  # noqa: BLE001 - named and re-raised for the job to fail cleanly
            log.error("extension %r failed in %s", item.name, hook, exc_info=exc)
            raise ExtensionHookError(item.name, hook, exc) from exc

    def process(self, job: "JobState") -> None:
        for item in self._each("process"):
            self._call(item, "process", job)

    def _enter_patches(self, hook: str, stack: ExitStack, *args: Any) -> None:
        """Call `hook` on each extension; the context managers they return are entered on `stack`."""
        for item in self._each(hook):
            patch = self._call(item, hook, *args)
            if patch is None:
                continue
            try:
                stack.enter_context(patch)
            except Exception as exc:  # noqa: BLE001
                raise ExtensionHookError(item.name, hook, exc) from exc

    def patch_models(self, job: "JobState", stack: ExitStack) -> None:
        """Enter every extension's model patch on `stack`; the caller closes it in `finally`."""
        self._enter_patches("patch_model", stack, job)

    def before_batch(self, job: "JobState", batch: "BatchState") -> None:
        for item in self._each("before_batch"):
            self._call(item, "before_batch", job, batch)

    def process_batch(self, job: "JobState", batch: "BatchState", stack: ExitStack) -> None:
        """Call every process_batch hook; per-batch patches they return go on `stack`."""
        self._enter_patches("process_batch", stack, job, batch)

    @property
    def wants_unet_steps(self) -> bool:
        return any(True for _ in self._each("unet_step"))

    def unet_step(self, job: "JobState", batch: "BatchState", step: UNetStep) -> dict[str, Any]:
        """The UNet keyword arguments every extension asked for; residual lists are summed."""
        merged: dict[str, Any] = {}
        for item in self._each("unet_step"):
            own = replace(step, unet_kwargs={})
            self._call(item, "unet_step", job, batch, own)
            for key, value in own.unet_kwargs.items():
                if key not in merged:
                    merged[key] = value
                elif key == "added_cond_kwargs":  # extra UNet inputs by name (image_embeds): each its own
                    merged[key] = {**merged[key], **value}
                else:
                    merged[key] = _sum_residuals(merged[key], value)
        return merged

    def after_batch(self, job: "JobState", batch: "BatchState") -> None:
        for item in self._each("after_batch"):
            self._call(item, "after_batch", job, batch)

    def postprocess_image(self, job: "JobState", image: OutputImage) -> None:
        for item in self._each("postprocess_image"):
            self._call(item, "postprocess_image", job, image)

    def postprocess(self, job: "JobState", result: "GenerationResult") -> None:
        for item in self._each("postprocess"):
            self._call(item, "postprocess", job, result)


def _sum_residuals(a: Any, b: Any) -> Any:
    """ControlNet residuals from two extensions add up, as two ControlNet units do."""
    if isinstance(a, (list, tuple)):
        return type(a)(x + y for x, y in zip(a, b))
    return a + b


__all__ = ["ExtensionSet", "JobHooks", "ActiveExtension", "ExtensionHookError", "UnknownExtensionError",
           "ExtensionArgsError"]
