"""`--compile`: torch.compile of the UNet and the VAE decoder, warmed up once per shape.

How shapes are kept: `torch.compile(..., dynamic=False)` makes one static graph per input
signature (shape, batch, dtype) and dynamo keeps every one of them in its cache for the module's
code, so going back to a size used before reuses its graph without compiling again. Static
graphs are what inductor makes fastest and what CUDA graphs (`--compile-mode reduce-overhead`)
need; `mark_dynamic` would give one graph for all sizes but slower kernels and no CUDA graphs.
Dynamo's per-code cache holds `recompile_limit` graphs (8 by default); `--compile` raises it to
`RECOMPILE_LIMIT` so a user switching between a handful of sizes and batch sizes never falls
back to eager.

`Compiler` remembers which (module, shape, dtype) keys are warm, so the first job at a new shape
is reported (log line + a note in the job's warnings, with the seconds the warm-up took) and the
number of graphs compiled can be counted (tests). When compiling fails (no C/C++ compiler for
inductor on a CPU, no triton on a GPU, an unsupported op), the module runs eagerly from then on
and the job says why once; pixels are the same either way.

Not compiled: UNets under `--medvram` / `--lowvram` (accelerate's offload hooks move weights
between calls) and per-job copies (seamless tiling), which would compile again every job.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

log = logging.getLogger(__name__)

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
RECOMPILE_LIMIT = 64


@dataclass(frozen=True)
class CompileOptions:
    enabled: bool = False
    mode: str = "default"  # torch.compile's mode; reduce-overhead adds CUDA graphs (fixed shapes)

    def __post_init__(self):
        if self.mode not in COMPILE_MODES:
            raise ValueError(f"compile mode must be one of {', '.join(COMPILE_MODES)}, got {self.mode!r}")


def _compile_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean 'compiling failed' (not 'the model failed'): eager retry is right."""
    errors: list[type[BaseException]] = []
    try:
        from torch._dynamo.exc import BackendCompilerFailed, TorchDynamoException

        errors += [BackendCompilerFailed, TorchDynamoException]
    except ImportError:  # pragma: no cover - torch without dynamo
        pass
    try:
        from torch._inductor.exc import CppCompileError, InductorError

        errors += [InductorError, CppCompileError]
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors) or (RuntimeError,)


def _graphs_compiled() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


@dataclass
class _Entry:
    """One module's compiled form and the input keys it has warmed up for."""

    compiled: Any
    warm: set = field(default_factory=set)
    failed: Optional[str] = None


class Compiler:
    """The app's one set of compiled modules (built once, shared by jobs on the engine's worker)."""

    def __init__(self, options: CompileOptions = CompileOptions()) -> None:
        self.options = options
        self._entries: "weakref.WeakKeyDictionary[torch.nn.Module, _Entry]" = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self.graphs_compiled = 0  # graphs dynamo compiled through this Compiler (warm-ups)
        self.warmups = 0  # (module, shape, dtype) keys met for the first time
        if options.enabled:
            import torch._dynamo

            config = torch._dynamo.config
            name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
            setattr(config, name, max(getattr(config, name), RECOMPILE_LIMIT))

    @property
    def enabled(self) -> bool:
        return self.options.enabled

    # ---------------------------------------------------------------- the UNet
    def unet(self, unet: torch.nn.Module, notes: list[str], skip: Optional[str] = None) -> Any:
        """What the sampler calls: a `CompiledUNet` over `unet`, or `unet` itself when off or not
        compilable (`skip`, or offload hooks; the reason goes to `notes`, the job's warnings)."""
        if not self.enabled:
            return unet
        reason = skip or skip_reason(unet)
        if reason:
            _note(notes, f"--compile: UNet not compiled ({reason}); it runs uncompiled")
            return unet
        return CompiledUNet(unet, self, notes)

    # ---------------------------------------------------------------- calls
    def _entry(self, module: torch.nn.Module, compile_fn: Callable[[], Any]) -> _Entry:
        with self._lock:
            entry = self._entries.get(module)
            if entry is None:
                entry = _Entry(compiled=compile_fn())
                self._entries[module] = entry
            return entry

    def call(self, what: str, module: torch.nn.Module, key: tuple, compiled_call: Callable[[Any], Any],
             eager_call: Callable[[], Any], notes: list[str], compile_fn: Callable[[], Any]) -> Any:
        """Run `compiled_call(entry.compiled)`; the first time at `key`, time and report the warm-up.
        A compile failure marks the module failed (eager from then on) and is reported once."""
        entry = self._entry(module, compile_fn)
        if entry.failed:
            return eager_call()
        if key in entry.warm:
            return compiled_call(entry.compiled)
        before, started = _graphs_compiled(), time.perf_counter()
        try:
            out = compiled_call(entry.compiled)
        except _compile_errors() as exc:
            entry.failed = _first_line(exc)
            message = (f"--compile: compiling the {what} failed, it runs uncompiled (same pixels, no speed-up): "
                       f"{entry.failed}. On a CPU inductor needs a C++ compiler (g++ or clang); on a GPU, triton.")
            log.warning(message)
            _note(notes, message)
            return eager_call()
        seconds = time.perf_counter() - started
        graphs = _graphs_compiled() - before
        entry.warm.add(key)
        self.warmups += 1
        self.graphs_compiled += graphs
        shape = "x".join(str(d) for d in key[0]) if key and isinstance(key[0], tuple) else str(key)
        message = (f"--compile: {what} warm-up for input {shape} ({str(key[-1]).replace('torch.', '')}): "
                   f"{graphs} graph(s) in {seconds:.1f} s; later jobs of this shape reuse it")
        log.info(message)
        _note(notes, message)
        return out

    # ---------------------------------------------------------------- the VAE decoder
    def decode(self, vae: torch.nn.Module, latents: torch.Tensor, decode: Callable[[], Any], notes: list[str],
               skip: Optional[str] = None) -> Any:
        """Run `decode()` (which calls vae.decode) with the VAE's decoder compiled in place.

        The decoder is compiled with nn.Module.compile (torch's own in-place API): vae.decode's
        tiling, slicing and fp32 retry stay diffusers' and ours; only the decoder network runs
        compiled. A failure restores it to eager. In place means the loaded model's decoder stays
        compiled for every later decode in this process (previews included), as the flag says."""
        if not self.enabled:
            return decode()
        decoder = getattr(vae, "decoder", None)
        reason = skip or (skip_reason(vae) if decoder is not None else "it has no .decoder")
        if reason:
            _note(notes, f"--compile: VAE decoder not compiled ({reason})")
            return decode()

        def compile_in_place():
            decoder.compile(dynamic=False, mode=_mode(self.options.mode))
            return decoder

        def eager():
            _uncompile(decoder)
            return decode()

        key = (tuple(latents.shape), bool(getattr(vae, "use_tiling", False)), vae.dtype)
        return self.call("VAE decoder", decoder, key, lambda _compiled: decode(), eager, notes, compile_in_place)


class CompiledUNet:
    """Stands in for the UNet in the denoising loop: same call, same `dtype`/`config`/`device`."""

    def __init__(self, unet: torch.nn.Module, compiler: Compiler, notes: list[str]) -> None:
        self.module = unet
        self._compiler = compiler
        self._notes = notes

    def __getattr__(self, name: str) -> Any:  # dtype, device, config, ... of the real UNet
        return getattr(self.module, name)

    def __call__(self, sample: torch.Tensor, timestep, **kwargs) -> Any:
        unet, compiler = self.module, self._compiler
        # extensions' extra inputs (ControlNet residuals) change the graph: part of the key
        extra = tuple(sorted(k for k, v in kwargs.items() if v is not None and k not in (
            "encoder_hidden_states", "return_dict")))
        hidden = kwargs.get("encoder_hidden_states")
        key = (tuple(sample.shape), tuple(hidden.shape) if hidden is not None else (), extra, sample.dtype)
        return compiler.call(
            "UNet", unet, key, lambda compiled: compiled(sample, timestep, **kwargs),
            lambda: unet(sample, timestep, **kwargs), self._notes,
            lambda: torch.compile(unet, dynamic=False, mode=_mode(compiler.options.mode)))


def skip_reason(module: torch.nn.Module) -> Optional[str]:
    """Why `module` is not compiled, or None."""
    if any(getattr(m, "_hf_hook", None) is not None for m in module.modules()):
        return "--medvram / --lowvram move its weights between calls"
    return None


def _mode(mode: str) -> Optional[str]:
    return None if mode == "default" else mode


def _uncompile(module: torch.nn.Module) -> None:
    # nn.Module.compile() stores the compiled __call__ here; None = eager again
    if hasattr(module, "_compiled_call_impl"):
        module._compiled_call_impl = None


def _note(notes: list[str], message: str) -> None:
    if message not in notes:
        notes.append(message)


__all__ = ["COMPILE_MODES", "CompileOptions", "CompiledUNet", "Compiler", "skip_reason"]
