"""ControlNet preprocessor modules (extensions-builtin/controlnet/controlnet_ext/preprocessors):
sd-webui-controlnet's names, aliases and sliders; the weight-free modules' pixels; the modules with
weights naming the file to put where; HED, lineart, PiDiNet and M-LSD on random-weight files in the
released key layouts (the tables below are written from the released files, independently of the
nets' code) and on files whose output is known exactly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from modules.paths import EXTENSIONS_BUILTIN_DIR
from tests.torch_threads import one_torch_thread

CONTROLNET_DIR = EXTENSIONS_BUILTIN_DIR / "controlnet"
if str(CONTROLNET_DIR) not in sys.path:
    sys.path.insert(0, str(CONTROLNET_DIR))

from controlnet_ext.preprocessors import (  # noqa: E402
    PreprocessInput,
    Preprocessors,
    PreprocessorUnavailableError,
    Slider,
    UnknownPreprocessorError,
)

# --- the released files' key layouts (lllyasviel/Annotators) ----------------------------------
HED_STAGES = ((3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3))


def hed_layout() -> dict[str, tuple[int, ...]]:
    """ControlNetHED.pth: norm, then block1..5 with convs.N and a 1x1 projection."""
    shapes: dict[str, tuple[int, ...]] = {"norm": (1, 3, 1, 1)}
    for index, (c_in, c_out, layers) in enumerate(HED_STAGES, start=1):
        for layer in range(layers):
            shapes[f"block{index}.convs.{layer}.weight"] = (c_out, c_in if layer == 0 else c_out, 3, 3)
            shapes[f"block{index}.convs.{layer}.bias"] = (c_out,)
        shapes[f"block{index}.projection.weight"] = (1, c_out, 1, 1)
        shapes[f"block{index}.projection.bias"] = (1,)
    return shapes


def sketch_layout() -> dict[str, tuple[int, ...]]:
    """sk_model.pth / sk_model2.pth (transposed convs store (in, out, k, k))."""
    shapes = {
        "model0.1.weight": (64, 3, 7, 7), "model0.1.bias": (64,),
        "model1.0.weight": (128, 64, 3, 3), "model1.0.bias": (128,),
        "model1.3.weight": (256, 128, 3, 3), "model1.3.bias": (256,),
        "model3.0.weight": (256, 128, 3, 3), "model3.0.bias": (128,),
        "model3.3.weight": (128, 64, 3, 3), "model3.3.bias": (64,),
        "model4.1.weight": (1, 64, 7, 7), "model4.1.bias": (1,),
    }
    for block in range(3):
        for conv in (1, 5):
            shapes[f"model2.{block}.conv_block.{conv}.weight"] = (256, 256, 3, 3)
            shapes[f"model2.{block}.conv_block.{conv}.bias"] = (256,)
    return shapes


def pidinet_layout() -> dict[str, tuple[int, ...]]:
    """table5_pidinet.pth (PiDiNet carv4, 60 channels, dilation modules of 24, attention)."""
    shapes: dict[str, tuple[int, ...]] = {"init_block.weight": (60, 3, 3, 3)}
    blocks = [("block1_%d" % i, 60, 60) for i in (1, 2, 3)]
    for stage, (c_in, c_out) in ((2, (60, 120)), (3, (120, 240)), (4, (240, 240))):
        blocks += [("block%d_1" % stage, c_in, c_out)] + [("block%d_%d" % (stage, i), c_out, c_out) for i in (2, 3, 4)]
    for name, c_in, c_out in blocks:
        shapes[f"{name}.conv1.weight"] = (c_in, 1, 3, 3)
        shapes[f"{name}.conv2.weight"] = (c_out, c_in, 1, 1)
        if name.endswith("_1") and name != "block1_1":        # the stride-2 blocks project their input
            shapes[f"{name}.shortcut.weight"] = (c_out, c_in, 1, 1)
            shapes[f"{name}.shortcut.bias"] = (c_out,)
    for index, channels in enumerate((60, 120, 240, 240)):
        shapes[f"dilations.{index}.conv1.weight"] = (24, channels, 1, 1)
        shapes[f"dilations.{index}.conv1.bias"] = (24,)
        for conv in range(1, 5):
            shapes[f"dilations.{index}.conv2_{conv}.weight"] = (24, 24, 3, 3)
        shapes[f"attentions.{index}.conv1.weight"] = (4, 24, 1, 1)
        shapes[f"attentions.{index}.conv1.bias"] = (4,)
        shapes[f"attentions.{index}.conv2.weight"] = (1, 4, 3, 3)
        shapes[f"conv_reduces.{index}.conv.weight"] = (1, 24, 1, 1)
        shapes[f"conv_reduces.{index}.conv.bias"] = (1,)
    shapes["classifier.weight"] = (1, 4, 1, 1)
    shapes["classifier.bias"] = (1,)
    return shapes


def _batch_norm(shapes: dict, prefix: str, channels: int) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"{prefix}.{name}"] = (channels,)
    shapes[f"{prefix}.num_batches_tracked"] = ()


def mlsd_layout() -> dict[str, tuple[int, ...]]:
    """mlsd_large_512_fp32.pth: a MobileNetV2 trunk (4-channel stem, stages up to 96 channels) and
    decoder blocks block15..block23."""
    shapes: dict[str, tuple[int, ...]] = {"backbone.features.0.0.weight": (32, 4, 3, 3)}
    _batch_norm(shapes, "backbone.features.0.1", 32)
    index, channels = 1, 32
    for expansion, c_out, repeats in ((1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3)):
        for _ in range(repeats):
            prefix, hidden, k = f"backbone.features.{index}.conv", channels * expansion, 0
            if expansion != 1:
                shapes[f"{prefix}.0.0.weight"] = (hidden, channels, 1, 1)
                _batch_norm(shapes, f"{prefix}.0.1", hidden)
                k = 1
            shapes[f"{prefix}.{k}.0.weight"] = (hidden, 1, 3, 3)
            _batch_norm(shapes, f"{prefix}.{k}.1", hidden)
            shapes[f"{prefix}.{k + 1}.weight"] = (c_out, hidden, 1, 1)
            _batch_norm(shapes, f"{prefix}.{k + 2}", c_out)
            index, channels = index + 1, c_out

    def conv_bn(prefix: str, c_out: int, c_in: int, kernel: int) -> None:
        shapes[f"{prefix}.0.weight"], shapes[f"{prefix}.0.bias"] = (c_out, c_in, kernel, kernel), (c_out,)
        _batch_norm(shapes, f"{prefix}.1", c_out)

    for block, skip, deep in ((15, 64, 96), (17, 32, 64), (19, 24, 64), (21, 16, 64)):
        conv_bn(f"block{block}.conv1", 64, deep, 1)
        conv_bn(f"block{block}.conv2", 64, skip, 1)
        conv_bn(f"block{block + 1}.conv1", 128, 128, 3)
        conv_bn(f"block{block + 1}.conv2", 64, 128, 3)
    conv_bn("block23.conv1", 64, 64, 3)
    conv_bn("block23.conv2", 64, 64, 3)
    shapes["block23.conv3.weight"], shapes["block23.conv3.bias"] = (16, 64, 1, 1), (16,)
    return shapes


def anime_unet_layout() -> dict[str, tuple[int, ...]]:
    """netG.pth: pix2pix U-Net, 8 levels nested as model.model.<i>; per level the down conv sits at
    index 1 (0 for the outermost) and the transposed up conv at 5 (3 for the innermost/outermost)."""
    # (outer, inner) channels from the outermost level in
    levels = [(1, 64), (64, 128), (128, 256), (256, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
    shapes: dict[str, tuple[int, ...]] = {}
    prefix = "model.model"
    for depth, (outer, inner) in enumerate(levels):
        outermost, innermost = depth == 0, depth == len(levels) - 1
        down, up = (0, 3) if outermost else (1, 3) if innermost else (1, 5)
        shapes[f"{prefix}.{down}.weight"] = (inner, 3 if outermost else outer, 4, 4)
        shapes[f"{prefix}.{down}.bias"] = (inner,)
        shapes[f"{prefix}.{up}.weight"] = (inner if innermost else inner * 2, outer, 4, 4)
        shapes[f"{prefix}.{up}.bias"] = (outer,)
        prefix += ".1.model" if outermost else ".3.model"
    return shapes


def random_state(layout: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout.items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        bound = 1.0 / np.sqrt(max(fan_in, 1))
        state[key] = (torch.rand(shape, generator=generator) * 2 - 1) * bound
    for key in state:
        if key.endswith("running_var"):
            state[key] = state[key].abs() + 0.5
        elif key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000)
    if "norm" in state:                            # HED's mean colour
        state["norm"] = torch.tensor([122.7, 116.7, 104.0]).view(1, 3, 1, 1)
    return state


def zero_state(layout: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {key: torch.zeros(shape) for key, shape in layout.items()}


# --- fixtures --------------------------------------------------------------------------------
@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    annotators, clip_vision = tmp_path / "ControlNet-annotators", tmp_path / "clip_vision"
    annotators.mkdir()
    clip_vision.mkdir()
    return annotators, clip_vision


@pytest.fixture
def pre(folders) -> Preprocessors:
    return Preprocessors(*folders)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


def photo(height: int = 90, width: int = 150, seed: int = 0) -> np.ndarray:
    """A smooth random picture with some edges (blurred noise plus a dark square)."""
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 2.0)
    image[height // 4: height // 2, width // 4: width // 2] = 20
    return image


def run(pre: Preprocessors, name: str, image: np.ndarray, resolution: int = 64, a: float = -1, b: float = -1, **kw):
    return pre.run(name, PreprocessInput(image, resolution, a, b, **kw))


# --- names, aliases, sliders -----------------------------------------------------------------
def test_names_aliases_and_unknown_module(pre: Preprocessors):
    names, labels = pre.names(), pre.names(alias_names=True)
    assert names[0] == "none" and labels[0] == "none" and len(names) == len(labels)
    assert labels[names.index("hed")] == "softedge_hed"           # the two lists line up, as module_list's
    for module in ("canny", "invert", "threshold", "scribble_xdog", "tile_resample", "inpaint_only", "shuffle",
                   "blur_gaussian", "binary", "color", "lineart_standard", "hed", "lineart", "depth", "openpose_full",
                   "ip-adapter_clip_sd15", "ip-adapter_clip_sdxl", "ip-adapter_clip_sdxl_plus_vith"):
        assert module in names
    for label in ("invert (from white bg & black line)", "lineart_standard (from white bg & black line)",
                  "softedge_hed", "softedge_hedsafe", "lineart_realistic", "depth_midas", "seg_ofade20k",
                  "t2ia_color_grid", "ip-adapter_clip_h"):
        assert label in labels
    assert "reference_only" not in names          # not a control map: not offered
    assert pre.entry("invert (from white bg & black line)").name == "invert"
    assert pre.entry("softedge_hed").name == "hed"
    assert pre.entry("lineart_realistic").name == "lineart"
    assert pre.entry("depth_midas").name == "depth"
    with pytest.raises(UnknownPreprocessorError) as error:
        pre.entry("cany")
    assert "'cany'" in str(error.value) and "canny" in str(error.value) and "lineart_standard" in str(error.value)


def test_sliders_as_sd_webui_controlnet(pre: Preprocessors):
    resolution = Slider("Preprocessor Resolution", 512, 64, 2048, 1)
    assert pre.entry("canny").sliders == (
        resolution, Slider("Canny Low Threshold", 100, 1, 255), Slider("Canny High Threshold", 200, 1, 255))
    assert pre.entry("tile_resample").sliders == (None, Slider("Down Sampling Rate", 1.0, 1.0, 8.0, 0.01))
    assert pre.entry("threshold").sliders == (resolution, Slider("Binarization Threshold", 127, 0, 255))
    assert pre.entry("scribble_xdog").sliders == (resolution, Slider("XDoG Threshold", 32, 1, 64))
    assert pre.entry("blur_gaussian").sliders == (resolution, Slider("Sigma", 9.0, 0.01, 64.0, 0.01))
    assert pre.entry("mlsd").sliders[1:] == (Slider("MLSD Value Threshold", 0.1, 0.01, 2.0, 0.01),
                                             Slider("MLSD Distance Threshold", 0.1, 0.01, 20.0, 0.01))
    assert pre.entry("none").sliders == () and pre.entry("invert").sliders == ()
    assert pre.entry("tile_resample").sliders_json() == [
        None, {"name": "Down Sampling Rate", "value": 1.0, "min": 1.0, "max": 8.0, "step": 0.01}]
    assert pre.entry("canny").model_free and not pre.entry("hed").model_free


def test_minus_one_means_the_modules_defaults(pre: Preprocessors):
    image = photo()
    default = run(pre, "canny", image, -1, -1, -1).image
    assert default.shape[:2] == (512, 853)
    assert np.array_equal(run(pre, "canny", image, 512, 100, 200).image, default)


def test_package_import_is_light():
    code = ("import sys; sys.path.insert(0, %r); from pathlib import Path; "
            "from controlnet_ext.preprocessors import Preprocessors; p = Preprocessors(Path('a'), Path('b')); "
            "p.names(True); p.missing('softedge_hed'); "
            "print(sorted(m for m in ('cv2', 'torch') if m in sys.modules))") % str(CONTROLNET_DIR)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- weight-free modules ---------------------------------------------------------------------
@pytest.mark.parametrize("module", ["canny", "threshold", "scribble_xdog", "binary", "blur_gaussian", "shuffle",
                                    "color", "lineart_standard"])
def test_map_short_side_is_processor_res(pre: Preprocessors, module: str):
    detected = run(pre, module, photo(90, 150), resolution=64, seed=1)
    assert detected.image.shape == (64, 107, 3) and detected.image.dtype == np.uint8
    tall = run(pre, module, photo(150, 90), resolution=80, seed=1)
    assert tall.image.shape == (133, 80, 3)


def test_canny_is_cv2_canny_on_the_resized_input(pre: Preprocessors):
    image = photo(128, 256)                                   # -> 64x128: no 64-padding involved
    resized = cv2.resize(image, (128, 64), interpolation=cv2.INTER_AREA)
    expected = cv2.Canny(resized, 50, 120)
    detected = run(pre, "canny", image, 64, 50, 120).image
    assert np.array_equal(detected[:, :, 0], expected)
    assert np.array_equal(detected[:, :, 0], detected[:, :, 2])
    assert expected.any() and not expected.all()
    up = run(pre, "canny", photo(32, 64), 64, 50, 120).image  # enlarging uses cubic
    enlarged = cv2.resize(photo(32, 64), (128, 64), interpolation=cv2.INTER_CUBIC)
    assert np.array_equal(up[:, :, 0], cv2.Canny(enlarged, 50, 120))


def test_invert_is_255_minus_input(pre: Preprocessors):
    image = photo(33, 47)
    assert np.array_equal(run(pre, "invert", image).image, 255 - image)
    gray = image[:, :, 0]
    assert np.array_equal(run(pre, "invert (from white bg & black line)", gray).image, 255 - np.stack([gray] * 3, 2))


def test_threshold_and_binary(pre: Preprocessors):
    image = photo(64, 80)                                     # short side = resolution: no resampling
    expected = np.where(image.min(axis=2) > 100, 255, 0)
    assert np.array_equal(run(pre, "threshold", image, 64, 100).image[:, :, 1], expected)
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    assert np.array_equal(run(pre, "binary", image, 64, 100).image[:, :, 0], np.where(gray > 100, 0, 255))
    two_tone = np.full((64, 64, 3), 200, np.uint8)
    two_tone[:, :20] = 30                                     # threshold 0 = Otsu: dark -> white
    otsu = run(pre, "binary", two_tone, 64, 0).image[:, :, 0]
    assert (otsu[:, :20] == 255).all() and (otsu[:, 20:] == 0).all()


def test_tile_resample_sizes(pre: Preprocessors):
    image = photo(100, 150)
    assert np.array_equal(run(pre, "tile_resample", image, 64, 1.0).image, image)
    assert np.array_equal(run(pre, "tile_resample", image, 64, -1).image, image)   # default rate 1
    assert run(pre, "tile_resample", image, 64, 2.0).image.shape == (50, 75, 3)
    assert run(pre, "tile_resample", image, 64, 3.5).image.shape == (28, 42, 3)


@pytest.mark.parametrize("module", ["inpaint_only", "inpaint_global_harmonious"])
def test_inpaint_hint_is_minus_one_where_masked(pre: Preprocessors, module: str):
    image = photo(40, 56)
    mask = np.zeros((40, 56), np.uint8)
    mask[10:20, 5:30] = 255
    detected = run(pre, module, image, mask=mask)
    masked = mask > 127
    assert detected.hint.dtype == np.float32 and detected.hint.shape == (40, 56, 3)
    assert (detected.hint[masked] == -1.0).all()
    assert np.array_equal(detected.hint[~masked], image[~masked].astype(np.float32) / 255.0)
    assert np.array_equal(detected.image[~masked], image[~masked])
    rgba = np.concatenate([image, mask[:, :, None]], axis=2)   # sd-webui-controlnet's alpha-as-mask form
    assert np.array_equal(run(pre, module, rgba).hint, detected.hint)


def test_shuffle_is_seeded_and_only_moves_pixels(pre: Preprocessors):
    image = photo(64, 96)
    first = run(pre, "shuffle", image, 64, seed=7).image
    assert np.array_equal(first, run(pre, "shuffle", image, 64, seed=7).image)
    assert not np.array_equal(first, run(pre, "shuffle", image, 64, seed=8).image)
    assert not np.array_equal(first, image)
    red_blue = np.zeros((64, 96, 3), np.uint8)
    red_blue[:, :48, 0] = 255
    red_blue[:, 48:, 2] = 255
    moved = run(pre, "shuffle", red_blue, 64, seed=3).image.astype(int)
    assert (moved[:, :, 1] == 0).all()                                   # only red/blue pixels are read
    assert (np.abs(moved[:, :, 0] + moved[:, :, 2] - 255) <= 1).all()   # (linear blends of the two at most)
    assert (moved[:, :, 0] == 255).any() and (moved[:, :, 2] == 255).any()
    flat = np.full((64, 64, 3), 77, np.uint8)
    assert (run(pre, "shuffle", flat, 64, seed=1).image == 77).all()


def test_xdog_lineart_standard_and_color(pre: Preprocessors):
    white = np.full((64, 64, 3), 255, np.uint8)
    line = white.copy()
    line[30:33, 8:56] = 0
    for module in ("scribble_xdog", "lineart_standard"):
        assert not run(pre, module, white).image.any()
        drawn = run(pre, module, line).image[:, :, 0]
        assert drawn[31, 10:54].min() > 100 and drawn[:10].max() == 0
    quadrants = np.zeros((128, 128, 3), np.uint8)
    quadrants[:64, 64:] = (255, 0, 0)
    quadrants[64:, :64] = (0, 255, 0)
    quadrants[64:, 64:] = (10, 20, 30)
    assert np.array_equal(run(pre, "color", quadrants, 128).image, quadrants)   # 64-pixel cells
    blurred = run(pre, "blur_gaussian", quadrants, 128, 3.0).image
    assert np.array_equal(blurred, cv2.GaussianBlur(quadrants, (0, 0), 3.0))


# --- modules with weights --------------------------------------------------------------------
def test_missing_weights_name_the_file_and_folder(pre: Preprocessors, folders):
    annotators, clip_vision = folders
    assert pre.missing("softedge_hed") == [annotators / "hed" / "ControlNetHED.pth"]
    assert pre.missing("openpose_full") == [annotators / "openpose" / name
                                            for name in ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth")]
    assert pre.missing("canny") == [] and pre.available("canny")
    with pytest.raises(PreprocessorUnavailableError) as error:
        run(pre, "softedge_hed", photo())
    assert str(annotators / "hed" / "ControlNetHED.pth") in str(error.value)
    assert error.value.missing == (annotators / "hed" / "ControlNetHED.pth",)
    with pytest.raises(PreprocessorUnavailableError) as error:
        run(pre, "depth_midas", photo())
    assert str(annotators / "midas" / "dpt_hybrid-midas-501f0c75.pt") in str(error.value)
    (annotators / "dpt_hybrid-midas-501f0c75.pt").write_bytes(b"x")      # flat (Annotators) layout counts
    assert pre.missing("depth_midas") == []
    assert not pre.available("depth_midas")                              # listed, not implemented here
    with pytest.raises(PreprocessorUnavailableError, match="not implemented"):
        run(pre, "depth_midas", photo())
    assert pre.missing("inpaint_only+lama") == [annotators / "lama" / "ControlNetLama.pth"]


def test_ip_adapter_modules_need_a_clip_vision_file(pre: Preprocessors, folders):
    _, clip_vision = folders
    assert pre.missing("ip-adapter_clip_sd15") == [clip_vision / "clip_h.pth"]
    assert pre.missing("ip-adapter_clip_sdxl") == [clip_vision / "clip_g.pth"]
    with pytest.raises(PreprocessorUnavailableError, match="clip_h.pth"):
        run(pre, "ip-adapter_clip_h", photo())
    (clip_vision / "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors").write_bytes(b"x")   # any accepted name
    assert pre.missing("ip-adapter_clip_sd15") == [] and pre.missing("ip-adapter_clip_sdxl_plus_vith") == []
    assert pre.missing("ip-adapter_clip_sdxl") == [clip_vision / "clip_g.pth"]
    image = photo(30, 40)
    assert np.array_equal(run(pre, "ip-adapter_clip_sd15", image).image, image)


def _save(state: dict[str, torch.Tensor], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)


def test_hed_on_a_random_weight_file_in_the_released_layout(pre: Preprocessors, folders):
    annotators, _ = folders
    _save(random_state(hed_layout(), seed=0), annotators / "hed" / "ControlNetHED.pth")
    assert pre.available("softedge_hed") and pre.available("softedge_hedsafe") and pre.available("scribble_hed")
    image = photo(90, 135)
    soft = run(pre, "softedge_hed", image, 64).image
    assert soft.shape == (64, 96, 3) and soft.dtype == np.uint8
    assert np.array_equal(soft[:, :, 0], soft[:, :, 1]) and len(np.unique(soft)) > 10
    safe = run(pre, "softedge_hedsafe", image, 64).image
    assert safe.shape == (64, 96, 3) and set(np.unique(safe)) <= {0, 127, 255}
    scribble = run(pre, "scribble_hed", image, 64).image
    assert scribble.shape == (64, 96, 3) and set(np.unique(scribble)) <= {0, 255}


def test_hed_math_on_a_known_file(pre: Preprocessors, folders):
    """All convolutions zero, side-output biases 1..5: every pixel is sigmoid(mean 3) * 255."""
    annotators, _ = folders
    state = zero_state(hed_layout())
    for index in range(1, 6):
        state[f"block{index}.projection.bias"] = torch.tensor([float(index)])
    _save(state, annotators / "ControlNetHED.pth")                       # flat layout
    expected = int(1.0 / (1.0 + np.exp(-3.0)) * 255.0)                   # 242
    assert (run(pre, "softedge_hed", photo(), 64).image == expected).all()
    assert (run(pre, "softedge_hedsafe", photo(), 64).image == 255).all()  # floor(0.95 * 3) / 2 = 1


def test_lineart_realistic_and_coarse_on_released_layout_files(pre: Preprocessors, folders):
    annotators, _ = folders
    _save(random_state(sketch_layout(), seed=1), annotators / "lineart" / "sk_model.pth")
    known = zero_state(sketch_layout())
    known["model4.1.bias"] = torch.tensor([1.0])
    _save(known, annotators / "lineart" / "sk_model2.pth")
    assert pre.missing("lineart_realistic") == [] and pre.missing("lineart_coarse") == []
    realistic = run(pre, "lineart_realistic", photo(90, 135), 64).image
    assert realistic.shape == (64, 96, 3) and realistic.dtype == np.uint8 and len(np.unique(realistic)) > 10
    # zero convolutions, head bias 1: sketch = sigmoid(1) everywhere, the map is 255 - that
    coarse = run(pre, "lineart_coarse", photo(90, 135), 64).image
    assert (coarse == 255 - int(1.0 / (1.0 + np.exp(-1.0)) * 255.0)).all()


def test_a_file_in_another_layout_is_a_clear_error(pre: Preprocessors, folders):
    annotators, _ = folders
    path = annotators / "lineart" / "sk_model.pth"
    _save({"model0.1.weight": torch.zeros(8, 3, 7, 7)}, path)
    with pytest.raises(ValueError, match="sk_model.pth"):
        run(pre, "lineart", photo(), 64)


def test_nets_are_loaded_once(pre: Preprocessors, folders):
    annotators, _ = folders
    path = annotators / "lineart" / "sk_model.pth"
    _save(random_state(sketch_layout(), seed=2), path)
    first = run(pre, "lineart", photo(), 64).image
    path.write_bytes(b"not a weights file")
    os.utime(path, ns=(0, 0))
    with pytest.raises(ValueError, match="cannot read weights file"):
        run(pre, "lineart", photo(), 64)                     # a changed file is re-read...
    _save(random_state(sketch_layout(), seed=2), path)
    stamp = path.stat().st_mtime_ns
    assert np.array_equal(run(pre, "lineart", photo(), 64).image, first)
    path.write_bytes(b"not a weights file")
    os.utime(path, ns=(stamp, stamp))
    assert np.array_equal(run(pre, "lineart", photo(), 64).image, first)   # ...an unchanged one is not


def test_pidinet_modules_on_a_released_layout_file(pre: Preprocessors, folders):
    annotators, _ = folders
    state = random_state(pidinet_layout(), seed=3)
    state = {"module." + key: value for key, value in state.items()}   # the release's DataParallel prefix
    _save({"state_dict": state}, annotators / "pidinet" / "table5_pidinet.pth")
    image = photo(90, 135)
    soft = run(pre, "softedge_pidinet", image, 64).image
    assert soft.shape == (64, 96, 3) and soft.dtype == np.uint8 and len(np.unique(soft)) > 10
    assert set(np.unique(run(pre, "softedge_pidisafe", image, 64).image)) <= {0, 127, 255}
    sketch = run(pre, "t2ia_sketch_pidi", image, 64).image
    assert set(np.unique(sketch)) <= {0, 255}
    # the sketch is the soft map thresholded at 0.5 (pixels within 1/255 of it may round either way)
    assert (sketch[:, :, 0] != np.where(soft[:, :, 0] > 127, 255, 0)).mean() < 0.01
    assert run(pre, "scribble_pidinet", image, 64).image.shape == (64, 96, 3)


def test_pidinet_math_on_a_known_file(pre: Preprocessors, folders):
    """Zero weights, classifier bias 2: every pixel is sigmoid(2) * 255."""
    annotators, _ = folders
    state = zero_state(pidinet_layout())
    state["classifier.bias"] = torch.tensor([2.0])
    _save(state, annotators / "table5_pidinet.pth")
    assert (run(pre, "softedge_pidinet", photo(), 64).image == int(1 / (1 + np.exp(-2.0)) * 255)).all()


def _shifted(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """x[p + (dy, dx)] with zeros outside."""
    padded = np.pad(x, 2)
    h, w = x.shape
    return padded[2 + dy: 2 + dy + h, 2 + dx: 2 + dx + w]


def test_pixel_difference_convolutions():
    """The kernels PiDiNet's convolutions reduce to, against their definitions written as sums of
    pixel differences: central (x_i - x_centre), angular (x_i - its clockwise neighbour), radial
    (the pixel two steps out minus the one a step out, per direction)."""
    from controlnet_ext.preprocessors.nets.pidinet import difference_kernel

    rng = np.random.default_rng(0)
    x = rng.normal(size=(9, 11))
    w = rng.normal(size=(3, 3))
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]            # tap i of the 3x3
    clockwise = {0: 1, 1: 2, 2: 5, 5: 8, 8: 7, 7: 6, 6: 3, 3: 0, 4: 4}
    expected = {
        "cd": sum(w.flat[i] * (_shifted(x, *offsets[i]) - x) for i in range(9)),
        "ad": sum(w.flat[i] * (_shifted(x, *offsets[i]) - _shifted(x, *offsets[clockwise[i]])) for i in range(9)),
        # radial: the file's 3x3 holds 9 numbers; the 8 directions (row-major, centre skipped) take
        # numbers 1..8 in order (number 0 is unused), as the released training code does
        "rd": sum(w.flat[k + 1] * (_shifted(x, 2 * dy, 2 * dx) - _shifted(x, dy, dx))
                  for k, (dy, dx) in enumerate(o for o in offsets if o != (0, 0))),
    }
    xt = torch.from_numpy(x)[None, None]
    for kind, want in expected.items():
        kernel, padding = difference_kernel(kind, torch.from_numpy(w)[None, None])
        got = torch.nn.functional.conv2d(xt, kernel, padding=padding)[0, 0].numpy()
        assert np.allclose(got, want, atol=1e-9), kind


def test_mlsd_on_released_layout_files(pre: Preprocessors, folders):
    annotators, _ = folders
    path = annotators / "mlsd" / "mlsd_large_512_fp32.pth"
    _save(random_state(mlsd_layout(), seed=4), path)
    lines = run(pre, "mlsd", photo(90, 135), 64, 0.01, 0.01).image
    assert lines.shape == (64, 96, 3) and set(np.unique(lines)) <= {0, 255}
    # zero weights: every centre scores sigmoid(3) = 0.95 and carries the offsets (-5, 0) -> (5, 0):
    # horizontal lines 10 half-resolution pixels long, drawn on even rows at full resolution
    known = zero_state(mlsd_layout())
    known["block23.conv3.bias"][7:12] = torch.tensor([3.0, -5.0, 0.0, 5.0, 0.0])
    _save(known, path)
    image = photo(128, 128)
    drawn = run(pre, "mlsd", image, 128, 0.9, 9.5).image[:, :, 0]
    rows = np.nonzero(drawn)[0]
    assert len(rows) > 0 and (rows % 2 == 0).all()
    assert not run(pre, "mlsd", image, 128, 0.96, 9.5).image.any()     # value threshold above the score
    assert not run(pre, "mlsd", image, 128, 0.9, 10.5).image.any()     # distance threshold above the length
    assert np.array_equal(run(pre, "mlsd", image, 128, -1, -1).image[:, :, 0], drawn)   # defaults 0.1 / 0.1


def test_lineart_anime_net_layout_and_output(pre: Preprocessors):
    """The released netG.pth is 217 MB, so this builds the net in memory: its keys and shapes are
    the release's, and a net whose output is known gives exactly that map."""
    from controlnet_ext.preprocessors.nets.lineart_anime import AnimeLineUNet, run_lineart_anime

    net = AnimeLineUNet().eval()
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == anime_unet_layout()
    inp = pre.with_defaults(pre.entry("lineart_anime"), PreprocessInput(photo(90, 135), 64, -1, -1))
    drawn = run_lineart_anime(inp, net).image
    assert drawn.shape == (64, 96, 3) and drawn.dtype == np.uint8 and len(np.unique(drawn)) > 10
    with torch.no_grad():
        for value in net.parameters():
            value.zero_()
        net.model.model[3].bias.fill_(0.5)                 # the outermost up conv: tanh(0.5) everywhere
    expected = 255 - int(np.tanh(0.5) * 127.5 + 127.5)
    assert (run_lineart_anime(inp, net).image == expected).all()
    assert pre.missing("lineart_anime") and pre.entry("lineart_anime").implemented
