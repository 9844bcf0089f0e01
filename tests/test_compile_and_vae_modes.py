"""Speed and memory options (issue 18) on tiny real components, fp32 on the CPU: each gives pixels
within a small tolerance of the default path on the same seed. No timing assertions.

`--compile` really runs torch.compile (inductor, the system's C++ compiler) on the tiny UNet and
VAE decoder: about a minute on one CPU thread, hence `slow`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from PIL import Image

from modules.generation.request import GenerationRequest
from modules.jobs.control import JobControl
from modules.paths import Paths
from modules.processing import latents as latent_ops
from modules.processing.compiled import CompileOptions, Compiler
from modules.processing.engine import Engine
from modules.settings import Options, SettingsStore
from tests.tiny_model import FixedProvider, tiny_loaded_model


@pytest.fixture(scope="module")
def models():
    return FixedProvider(tiny_loaded_model(seed=0))


def make_engine(models, tmp_path, compiler=None, **options) -> Engine:
    return Engine(models, SettingsStore(None, Options(**options)), Paths(data_dir=tmp_path), compiler=compiler)


def request(**fields) -> GenerationRequest:
    base = dict(prompt="a red circle on a blue background", seed=1234, steps=3, sampler_name="Euler",
                save_images=False)
    return GenerationRequest(**{**base, **fields})


def px(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def close(a: Image.Image, b: Image.Image, max_diff: int, mean_diff: float) -> bool:
    diff = np.abs(px(a) - px(b))
    return diff.max() <= max_diff and diff.mean() <= mean_diff


class CallCounter:
    """A forward hook counting real calls of a module (and the batch sizes it saw)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.batches: list[int] = []
        self._handle = module.register_forward_hook(lambda mod, args, out: self.batches.append(args[0].shape[0]))

    def __enter__(self) -> "CallCounter":
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()


# ------------------------------------------------------------------------------------------ --compile
@pytest.fixture()
def own_model():
    """--compile compiles the VAE decoder in place (the loaded model is the app's): a model of its own."""
    return FixedProvider(tiny_loaded_model(seed=0))


@pytest.mark.slow
def test_compile_matches_eager_and_warms_up_once_per_shape(own_model, tmp_path):
    models = own_model
    eager = make_engine(models, tmp_path).generate(request())
    compiler = Compiler(CompileOptions(enabled=True))
    engine = make_engine(models, tmp_path, compiler=compiler)

    first = engine.generate(request())
    assert close(first.images[0], eager.images[0], max_diff=2, mean_diff=0.1)
    warmups = [w for w in first.warnings if "warm-up" in w]
    assert any(w.startswith("--compile: UNet warm-up for input 2x4x8x8") for w in warmups), first.warnings
    assert any(w.startswith("--compile: VAE decoder warm-up") for w in warmups), first.warnings
    compiled_graphs = compiler.graphs_compiled
    assert compiled_graphs >= 2 and compiler.warmups == 2

    second = engine.generate(request())  # same shape: nothing compiled, nothing reported
    assert compiler.graphs_compiled == compiled_graphs and compiler.warmups == 2
    assert not [w for w in second.warnings if "--compile" in w]
    assert np.array_equal(px(second.images[0]), px(first.images[0]))

    tiled = engine.generate(request(tiling=True))  # per-job model copies: left uncompiled, said so
    assert compiler.graphs_compiled == compiled_graphs
    assert any("not compiled" in w and "seamless tiling" in w for w in tiled.warnings)


@pytest.mark.slow
def test_compile_failure_falls_back_to_eager_with_a_clear_message(own_model, tmp_path):
    models = own_model
    import torch._inductor.config as inductor_config

    eager = make_engine(models, tmp_path).generate(request(width=72, height=64))
    engine = make_engine(models, tmp_path, compiler=Compiler(CompileOptions(enabled=True)))
    # no C++ compiler: inductor's build fails (caches off, or a cached kernel would need none)
    with inductor_config.patch({"cpp.cxx": (None, "/nonexistent/g++"), "fx_graph_cache": False}), \
            torch._functorch.config.patch(enable_autograd_cache=False):
        result = engine.generate(request(width=72, height=64))
        again = engine.generate(request(width=72, height=64))
    failed = [w for w in result.warnings if "compiling the UNet failed" in w]
    assert failed and "runs uncompiled" in failed[0] and "C++ compiler" in failed[0]
    assert np.array_equal(px(result.images[0]), px(eager.images[0]))
    assert not [w for w in again.warnings if "failed" in w]  # said once; later jobs simply run eagerly
    assert np.array_equal(px(again.images[0]), px(eager.images[0]))


def test_compile_off_by_default_runs_the_modules_themselves(models, tmp_path):
    engine = make_engine(models, tmp_path)
    assert not engine.compiler.enabled
    assert engine.compiler.unet(models.default.unet, []) is models.default.unet


def test_compile_flags_parse():
    from modules.cmd_args import parse_args

    args = parse_args(["--compile", "--compile-mode", "reduce-overhead"])
    assert args.compile and args.compile_mode == "reduce-overhead"
    assert not parse_args([]).compile
    with pytest.raises(ValueError, match="compile mode"):
        CompileOptions(enabled=True, mode="fastest")


# ------------------------------------------------------------------------------------------ VAE modes
def test_vae_tiling_splits_into_tiles_and_matches_the_plain_decode(models, tmp_path):
    vae = models.default.vae
    # the tiny VAE's tiles are 64 px (its sample_size): a 128x128 image is decoded in several
    plain = make_engine(models, tmp_path).generate(request(width=128, height=128))
    with CallCounter(vae.decoder) as calls:
        tiled = make_engine(models, tmp_path, vae_tiling=True).generate(request(width=128, height=128))
    assert len(calls.batches) > 1  # really tiled
    assert not vae.use_tiling  # put back after the decode
    # A tiled decode is approximate by nature: each tile has its own GroupNorm statistics and
    # attention context, and tiles blend over a 25 % overlap. With tiles this small (64 px, 8x8
    # latents) the difference is visible, so the bound is on likeness rather than equality:
    # measured corr 0.958, mean |diff| 8.2 of 255, channel means within 2.7 (SD's VAE tiles are 512 px).
    a, b = px(tiled.images[0]).astype(float), px(plain.images[0]).astype(float)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9
    assert np.abs(a - b).mean() < 12
    assert np.abs(a.mean(axis=(0, 1)) - b.mean(axis=(0, 1))).max() < 5
    assert not np.array_equal(a, b)  # the tiles really changed the decode


def test_vae_slicing_decodes_one_image_at_a_time_with_the_same_pixels(models, tmp_path):
    vae = models.default.vae
    plain = make_engine(models, tmp_path).generate(request(batch_size=2))
    with CallCounter(vae.decoder) as calls:
        sliced = make_engine(models, tmp_path, vae_slicing=True).generate(request(batch_size=2))
    assert calls.batches == [1, 1]
    assert not vae.use_slicing
    for a, b in zip(sliced.images, plain.images):
        assert close(a, b, max_diff=2, mean_diff=0.05)


def test_vae_mode_settings_are_this_apps_own_and_off_by_default():
    options = Options()
    assert options.vae_tiling is False and options.vae_slicing is False
    assert options.updated({"vae_tiling": True, "vae_slicing": True}).vae_tiling


# ------------------------------------------------------------------------------------------ live previews
def test_previews_come_every_n_steps(models, tmp_path):
    """show_progress_every_n_steps (the queue's preview_every): previews at steps 2 and 4 of 5 only."""
    control = JobControl(preview_every=2)
    previews = []
    original = control.report_step

    def spy(batch_index, step, total, preview=None):
        before = control.snapshot().preview
        original(batch_index, step, total, preview)
        if control.snapshot().preview is not before:
            previews.append(step)
    control.report_step = spy
    with CallCounter(models.default.vae.decoder) as calls:
        make_engine(models, tmp_path).generate(request(steps=5), control)
    assert previews == [2, 4]
    assert len(calls.batches) == 3  # two previews (small VAE: a real decode is as cheap) + the result


def test_cheap_preview_of_a_full_size_vae_needs_no_decode():
    """A1111's "Approx cheap": for a full-size VAE the preview is a linear map of the latents."""
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(128, 256), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, layers_per_block=1)
    assert sum(p.numel() for p in vae.parameters()) >= latent_ops.SMALL_VAE_PARAMS
    latents = torch.randn(2, 4, 6, 5)
    with CallCounter(vae.decoder) as calls:
        image = latent_ops.latent_preview(vae, latents, family_is_xl=False)
    assert calls.batches == []
    assert image.size == (5 * 8, 6 * 8)
    # the map itself: pixel (0, 0) is the first latent column through SD1_LATENT_RGB
    expected = (torch.tensor(latent_ops.SD1_LATENT_RGB).T @ latents[0, :, 0, 0]).clamp(-1, 1)
    expected = ((expected + 1) * 127.5).to(torch.uint8).numpy()
    assert np.abs(np.asarray(image)[0, 0].astype(int) - expected.astype(int)).max() <= 1
