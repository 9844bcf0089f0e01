"""Builds the long-lived services from the command-line flags (the only place that does)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from modules.app_context import AppContext
from modules.extensions.types import ExtensionCatalog
from modules.jobs.queue import JobQueue
from modules.paths import EXTENSIONS_BUILTIN_DIR, Paths
from modules.settings import Options, SettingsStore

if TYPE_CHECKING:
    from modules.serve.dispatch import RemoteEngine

log = logging.getLogger(__name__)


def build_paths(args: argparse.Namespace) -> Paths:
    from modules.cmd_args import MODEL_DIR_FLAGS
    from modules.paths import REPO_ROOT

    data_dir = Path(args.data_dir).resolve() if args.data_dir else REPO_ROOT
    overrides = tuple((kind, Path(getattr(args, flag.replace("-", "_"))).resolve())
                      for flag, kind in MODEL_DIR_FLAGS.items() if getattr(args, flag.replace("-", "_"), None))
    return Paths(data_dir=data_dir, ckpt_dirs=tuple(Path(d).resolve() for d in args.ckpt_dir),
                 model_dir_overrides=overrides)


def build_settings(args: argparse.Namespace, paths: Paths) -> SettingsStore:
    path = Path(args.ui_settings_file).resolve() if args.ui_settings_file else paths.config_file
    return SettingsStore(path)


def create_context(args: argparse.Namespace, *, preloaded: Optional[ExtensionCatalog] = None,
                   builtin_extensions_dir: Optional[Path] = EXTENSIONS_BUILTIN_DIR,
                   remote: Optional["RemoteEngine"] = None) -> AppContext:
    """`preloaded`: the catalog `preload.parse_args_with_extensions` ran preload.py on (its errors
    are listed with the rest). `remote` (--ray): generations run on its Ray Serve replicas, one
    queue worker per replica, and this process loads no model."""
    from modules.extensions.startup import image_saved_observer, load_extensions
    from modules.models.options import ModelOptions, resolve_device
    from modules.models.registry import ModelRegistry
    from modules.models.speed import attention_from_flags
    from modules.models.speed import describe as describe_speed
    from modules.postprocess.services import Postprocessors
    from modules.processing.compiled import CompileOptions, Compiler
    from modules.processing.engine import Engine
    from modules.processing.limits import request_size_check

    paths = build_paths(args)
    for folder in (paths.stable_diffusion_dir, paths.vae_dir, paths.outputs_dir):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except PermissionError as exc:  # e.g. a Docker bind mount that Docker created as root
            raise SystemExit(f"cannot create {folder}: {exc.strerror}. Make its parent folder writable for the "
                             "user the server runs as (in Docker: create the mounted host folders yourself, "
                             "before starting the container).") from exc
    settings = build_settings(args, paths)
    options = settings.get()
    model_options = ModelOptions.from_flags(
        medvram=args.medvram, lowvram=args.lowvram, device="cpu" if args.use_cpu else None,
        precision=args.precision, no_half=args.no_half, no_half_vae=args.no_half_vae, no_hashing=args.no_hashing,
        attention=attention_from_flags(args), channels_last=getattr(args, "opt_channelslast", False),
        checkpoints_limit=options.sd_checkpoints_limit, vae=options.sd_vae,
        default_checkpoint=args.ckpt or options.sd_model_checkpoint or None,
    )
    log.info("models: %s", describe_speed(model_options))
    registry = ModelRegistry(paths, model_options)
    extensions = load_extensions(paths, settings, args, preloaded=preloaded, builtin_dir=builtin_extensions_dir)
    postprocess = Postprocessors(paths, settings, device=resolve_device(model_options),
                                 half=not args.no_half and args.precision != "fp32")
    engine = Engine(registry, settings, paths, vae_tile_threshold=model_options.vae_tile_threshold,
                    extensions=extensions.extension_set, on_image_saved=image_saved_observer(),
                    postprocess=postprocess, scripts=extensions.selectable,
                    compiler=Compiler(CompileOptions(enabled=getattr(args, "compile", False),
                                                     mode=getattr(args, "compile_mode", "default"))))
    preview_every = options.show_progress_every_n_steps if options.live_previews_enable else 0
    size_check = request_size_check(lambda: settings.get().max_generation_pixels,
                                    resolve_device(model_options).type)
    generate, workers = engine.generate, 1
    if remote is not None:
        registry.loads_here = False
        generate, workers = remote.bind(settings, registry, paths).generate, remote.workers
    queue = JobQueue(generate, preview_every=preview_every, max_pending=options.queue_max_pending,
                     admit=size_check, workers=workers)
    settings.on_change(lambda old, new: apply_model_settings(registry, queue, old, new))
    ctx = AppContext(args=args, paths=paths, settings=settings, registry=registry, queue=queue,
                     extensions=extensions, postprocess=postprocess)
    extensions.app.context = ctx
    return ctx


def apply_model_settings(registry, queue: JobQueue, old: Options, new: Options) -> None:
    """Settings that act on live objects take effect at once, as A1111's do."""
    if new.sd_model_checkpoint and new.sd_model_checkpoint != old.sd_model_checkpoint:
        registry.select(new.sd_model_checkpoint)
    if new.sd_vae != old.sd_vae:
        registry.select_vae(new.sd_vae)
    if new.sd_checkpoints_limit != old.sd_checkpoints_limit:
        registry.set_checkpoints_limit(new.sd_checkpoints_limit)
    if (new.show_progress_every_n_steps, new.live_previews_enable) != (old.show_progress_every_n_steps,
                                                                         old.live_previews_enable):
        queue.set_preview_every(new.show_progress_every_n_steps if new.live_previews_enable else 0)
    if new.queue_max_pending != old.queue_max_pending:
        queue.set_max_pending(new.queue_max_pending)
