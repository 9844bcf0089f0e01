"""The one place that owns loaded models: scan, load, cache, switch (implements ModelProvider).

    registry = ModelRegistry(paths, ModelOptions(...))     # built once in launch.py, passed in
    model = registry.get()                                  # the current default model
    model = registry.get("other.safetensors [abc123def0]", vae="vae-ft-mse.safetensors")
    registry.select("other.safetensors")                    # change the default (loads it)

A per-request checkpoint or VAE loads that model for the request without changing the default.
Up to `checkpoints_limit` checkpoints stay loaded (LRU); a dropped one is freed. A VAE override
shares the checkpoint's UNet and text encoders (a second pipeline object over the same modules,
with the other VAE); the two most recent VAE overrides per checkpoint are kept.

Importing this module does not import torch (the web UI lists models through it); loading does.
"""

from __future__ import annotations

import dataclasses
import gc
import inspect
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from ..paths import EMBEDDED_MODEL_DIR, Paths
from .catalog import VAE_AUTOMATIC, CheckpointInfo, ModelCatalog, VaeInfo
from .errors import CheckpointError, NoModelError, UnknownModelError, UnsupportedModelError
from .options import MemoryMode, ModelOptions

if TYPE_CHECKING:  # pragma: no cover
    from .loaded import LoadedModel

log = logging.getLogger(__name__)

VAE_VARIANTS_KEPT = 2


@dataclass
class _Entry:
    info: CheckpointInfo
    base: "LoadedModel"
    variants: "OrderedDict[str, LoadedModel]" = field(default_factory=OrderedDict)


class ModelRegistry:
    """Scans the model folders and hands out loaded models (see module doc)."""

    def __init__(
        self,
        paths: Paths,
        options: Optional[ModelOptions] = None,
        *,
        catalog: Optional[ModelCatalog] = None,
        embedded_dir: Optional[Path] = EMBEDDED_MODEL_DIR,
    ):
        self.paths = paths
        self.options = options if options is not None else ModelOptions()
        self.catalog = catalog if catalog is not None else ModelCatalog(
            paths, no_hashing=self.options.no_hashing, embedded_dir=embedded_dir
        )
        self._lock = threading.RLock()
        self._loaded: "OrderedDict[str, _Entry]" = OrderedDict()
        self._default: Optional[Union[str, Path]] = self.options.default_checkpoint
        self._vae_setting: str = self.options.vae or VAE_AUTOMATIC
        self._offload_owner: Any = None  # the pipeline whose hooks are live under --medvram
        self.warnings: list[str] = []  # from the last load (e.g. a memory mode without effect)
        self._warned_default: Optional[tuple[Any, str]] = None  # the last "default unusable" logged
        # False in a --ray front end: its replicas load models; this registry only lists and selects
        self.loads_here = True

    # -- listing --------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Rescan the folders (files added or removed since are picked up)."""
        self.catalog.refresh()

    def checkpoints(self) -> list[CheckpointInfo]:
        return self.catalog.checkpoints()

    def vaes(self) -> list[VaeInfo]:
        return self.catalog.vaes()

    def vae_choices(self) -> list[str]:
        """["Automatic", "None", *usable VAE names]."""
        return self.catalog.vae_choices()

    def checkpoint_titles(self) -> list[str]:
        """Titles of the usable checkpoints, for dropdowns."""
        return self.catalog.checkpoint_titles()

    def find_checkpoint(self, name: str) -> CheckpointInfo:
        """The entry `name` refers to; UnknownModelError (with close matches) if none."""
        return self.catalog.find_checkpoint(name)

    def find_vae(self, name: str) -> Optional[VaeInfo]:
        """The VAE file `name` refers to; None for "Automatic"/"None"; UnknownModelError if none."""
        if name.strip().lower() in ("automatic", "auto", "none"):
            return None
        return self.catalog.find_vae(name)

    def current(self) -> CheckpointInfo:
        """The default checkpoint's entry (raises NoModelError when there is none)."""
        return self._default_info()

    def current_title(self) -> Optional[str]:
        """The default model's full title ("name [hash]"), before it is loaded too: clients and the
        UI pick the current model by it (the hash is computed once and cached)."""
        try:
            return self.catalog.ensure_hash(self._default_info()).title
        except NoModelError:
            return None

    @property
    def vae_setting(self) -> str:
        return self._vae_setting

    def loaded_titles(self) -> list[str]:
        with self._lock:
            return [e.base.title for e in self._loaded.values()]

    # -- selection ------------------------------------------------------------------------------
    def select(self, name: str, *, load: bool = True) -> Optional["LoadedModel"]:
        """Make `name` the default model (and load it unless load=False)."""
        info = self._usable(self.catalog.find_checkpoint(name))
        with self._lock:
            previous = self._default
            self._default = info.path
            if not load or not self.loads_here:
                return None
            try:
                return self.get()
            except Exception:
                self._default = previous
                raise

    def select_vae(self, choice: str) -> None:
        """Change the VAE setting used when a request names none ("Automatic", "None" or a name)."""
        self.find_vae(choice)  # raises UnknownModelError with close matches
        self._vae_setting = choice

    def set_checkpoints_limit(self, limit: int) -> None:
        """Keep at most `limit` checkpoints loaded from now on (drops the least recent at once)."""
        with self._lock:
            self.options = dataclasses.replace(self.options, checkpoints_limit=limit)  # validates
            while len(self._loaded) > limit:
                _, old = self._loaded.popitem(last=False)
                self._free(old)

    # -- loading --------------------------------------------------------------------------------
    def get(self, checkpoint: Optional[str] = None, vae: Optional[str] = None) -> "LoadedModel":
        """The model for a request: `checkpoint` (title, name or hash; None = the default) with
        `vae` ("Automatic", "None", a VAE name; None = the VAE setting), loaded and ready."""
        info = self._default_info() if checkpoint is None else self._usable(self.catalog.find_checkpoint(checkpoint))
        vae_info = self.catalog.resolve_vae(self._vae_setting if vae is None else vae, info)
        if vae_info is not None and not vae_info.usable:
            from .file_check import verify_model_file

            verify_model_file(vae_info.path)
            raise CheckpointError(vae_info.path, vae_info.reason or "unusable VAE file")
        with self._lock:
            entry = self._entry_for(info)
            model = self._with_vae(entry, vae_info)
            self._activate(model)
            return model

    def unload(self) -> None:
        """Drop every loaded model and free its memory."""
        if not self.loads_here:
            log.info("models are loaded by the Ray replicas (each keeps sd_checkpoints_limit of them); nothing to unload here")
            return
        with self._lock:
            while self._loaded:
                _, entry = self._loaded.popitem(last=False)
                self._free(entry)

    def reload(self) -> "LoadedModel":
        """Unload everything and load the default model again from disk."""
        if not self.loads_here:
            log.info("models are loaded by the Ray replicas; a job loads the checkpoint it names there")
            return None
        with self._lock:
            self.unload()
            return self.get()

    def prefetch_hash(self) -> None:
        """Start hashing the default checkpoint now (start-up), so neither the first title nor the
        first load waits for it; a later request for the same hash joins this one."""
        if self.catalog.no_hashing:
            return
        try:
            info = self._default_info()
        except NoModelError:
            return
        _in_background(self.catalog.ensure_hash, info)

    # -- internals ------------------------------------------------------------------------------
    def _usable(self, info: CheckpointInfo) -> CheckpointInfo:
        """The entry if usable; else the precise error (unsafe pickle, truncated, unsupported...)."""
        if info.usable:
            return info
        if info.kind != "diffusers":
            from .file_check import verify_model_file

            verify_model_file(info.path)  # raises UnsafeCheckpointError / CheckpointError for bad files
            raise UnsupportedModelError(info.path, info.reason or "not a supported checkpoint")
        raise CheckpointError(info.path, info.reason or "unusable model folder")

    def _default_info(self) -> CheckpointInfo:
        wanted = self._default
        if wanted is not None:
            info = self._find_default(wanted)
            if info is not None and info.usable:
                return info
            why = self._why_unusable(wanted, info)
            if (wanted, why) != self._warned_default:  # once, not at every request
                self._warned_default = (wanted, why)
                log.warning("default checkpoint %s cannot be used: %s; using the first usable one", wanted, why)
        info = self.catalog.default_checkpoint()
        if info is None:
            raise NoModelError(
                "No usable Stable Diffusion checkpoint: put a .safetensors or .ckpt file in "
                f"{self.paths.stable_diffusion_dir} (or pass --ckpt-dir), and check the model list for files marked unusable."
            )
        return info

    def _by_path(self, path: Path) -> Optional[CheckpointInfo]:
        for c in self.catalog.checkpoints():
            if c.path == path:
                return c
        return None

    def _find_default(self, wanted: Union[str, Path]) -> Optional[CheckpointInfo]:
        """The catalog entry for a name, a title or a file path (--ckpt takes all three)."""
        if isinstance(wanted, Path):
            return self._by_path(wanted)
        try:
            return self.catalog.find_checkpoint(wanted)
        except UnknownModelError:
            path = Path(wanted).expanduser()
            return self._by_path(path.resolve()) if path.exists() else None

    def _why_unusable(self, wanted: Union[str, Path], info: Optional[CheckpointInfo]) -> str:
        """The real reason a default checkpoint cannot be used (a refused pickle is not "gone")."""
        if info is not None:
            return info.reason or "not a usable checkpoint"
        path = Path(wanted).expanduser()
        if not path.exists():
            return f"no such checkpoint in {self.paths.stable_diffusion_dir} or the --ckpt-dir folders"
        from .file_check import check_model_file

        report = check_model_file(path) if path.is_file() else None
        if report is not None and not report.usable:
            return report.reason or "not a usable checkpoint"
        return (f"the file is outside the model folders; put it in {self.paths.stable_diffusion_dir} "
                "or pass its folder with --ckpt-dir")

    def _entry_for(self, info: CheckpointInfo) -> _Entry:
        key = str(info.path)
        entry = self._loaded.get(key)
        if entry is not None:
            self._loaded.move_to_end(key)
            return entry
        while len(self._loaded) >= self.options.checkpoints_limit:
            _, old = self._loaded.popitem(last=False)
            log.info("unloading %s (checkpoints_limit=%d)", old.base.title, self.options.checkpoints_limit)
            self._free(old)
        entry = _Entry(info, self._load(info))
        self._loaded[key] = entry
        return entry

    def _load(self, info: CheckpointInfo) -> "LoadedModel":
        from .loaded import LoadedModel
        from .single_file import load_checkpoint_file, load_diffusers_folder

        log.info("loading %s", info.title)
        started = time.perf_counter()
        # hashing (for the title and infotext) reads the file beside the load instead of before it:
        # sha256 and file reads release the GIL, so a cold start pays max(load, hash), not the sum
        hashing = _in_background(self.catalog.ensure_hash, info)
        if info.kind == "diffusers":
            built = load_diffusers_folder(info.path, self.options)
        else:
            built = load_checkpoint_file(info.path, self.options)
        info = hashing.result()
        if self.options.memory_mode is MemoryMode.MEDVRAM and self._offloaded():
            self._offload_owner = built.pipe  # place_pipeline hooked it already
        self.warnings = list(built.warnings)
        for w in built.warnings:
            log.warning("%s: %s", info.name, w)
        log.info("model %s loaded in %.1f s", info.title, time.perf_counter() - started)
        return LoadedModel(
            title=info.title,
            name=info.model_name,
            family=built.architecture.family,
            pipe=built.pipe,
            native_size=built.native_size,
            short_hash=info.short_hash,
            path=str(info.path),
        )

    def _with_vae(self, entry: _Entry, vae_info: Optional[VaeInfo]) -> "LoadedModel":
        if vae_info is None:
            return entry.base
        key = str(vae_info.path)
        model = entry.variants.get(key)
        if model is not None:
            entry.variants.move_to_end(key)
            return model
        from .single_file import load_vae_file

        vae_info = self.catalog.ensure_hash(vae_info)
        base_pipe = entry.base.pipe
        offloaded = self._offloaded()
        vae = load_vae_file(vae_info.path, base_pipe.vae, dtype=base_pipe.vae.dtype, device=None if offloaded else _device_of(base_pipe))
        from .speed import set_attention

        set_attention(vae, self.options.attention)
        if offloaded and self.options.memory_mode is MemoryMode.LOWVRAM:
            from accelerate import cpu_offload

            from .options import resolve_device

            cpu_offload(vae, execution_device=resolve_device(self.options))
        model = dataclasses.replace(
            entry.base, pipe=_derive_pipe(base_pipe, vae=vae), vae_name=vae_info.name, vae_hash=vae_info.short_hash
        )
        entry.variants[key] = model
        while len(entry.variants) > VAE_VARIANTS_KEPT:
            entry.variants.popitem(last=False)
        return model

    def _offloaded(self) -> bool:
        if self.options.memory_mode is MemoryMode.NONE:
            return False
        from .options import resolve_device

        return resolve_device(self.options).type != "cpu"

    def _activate(self, model: "LoadedModel") -> None:
        """Under --medvram the offload hooks chain one pipeline's components: re-hook when another
        pipeline over shared modules (a VAE override) is handed out."""
        if self.options.memory_mode is not MemoryMode.MEDVRAM or not self._offloaded():
            return
        if self._offload_owner is not model.pipe:
            from .options import resolve_device

            model.pipe.enable_model_cpu_offload(device=resolve_device(self.options))
            self._offload_owner = model.pipe

    def _free(self, entry: _Entry) -> None:
        pipes = [entry.base.pipe, *(m.pipe for m in entry.variants.values())]
        if any(p is self._offload_owner for p in pipes):
            self._offload_owner = None
        entry.variants.clear()
        del pipes
        entry.base = None  # type: ignore[assignment]
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # pragma: no cover - freeing must never fail a request
            pass


def _in_background(fn, *args) -> Future:
    """Run fn in a daemon thread; its result or exception comes through the Future."""
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # handed to whoever reads the future
            future.set_exception(exc)

    threading.Thread(target=run, name="model-hash", daemon=True).start()
    return future


def _device_of(pipe):
    return pipe.unet.device


def _derive_pipe(pipe, **replace):
    """A second pipeline object over the same modules with some components replaced."""
    cls = type(pipe)
    kwargs = {**pipe.components, **replace}
    params = inspect.signature(cls.__init__).parameters
    for name in params:
        if name in ("self",) or name in kwargs:
            continue
        if name == "add_watermarker":
            kwargs[name] = False
        elif name in pipe.config:
            kwargs[name] = pipe.config[name]
    kwargs = {k: v for k, v in kwargs.items() if k in params}
    return cls(**kwargs)
