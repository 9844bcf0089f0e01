"""Upscalers: model files in the real releases' layouts (random weights) found, named as A1111 names
them and run through spandrel; built-ins equal PIL; sizes of every path; tiles; unusable files.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/test_upscalers.py -q
"""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modules.app_factory import build_paths
from modules.cmd_args import parse_args
from modules.paths import Paths
from modules.postprocess.services import Postprocessors
from modules.postprocess.tiled_inference import tile_spans
from modules.postprocess.upscalers import UnknownUpscalerError
from modules.settings import SettingsStore
from tests import upscaler_files as uf
from tests.torch_threads import one_torch_thread as single_torch_thread

# (folder, file name, builder, A1111's name, spandrel's architecture, scale)
RELEASES = [
    ("RealESRGAN", "RealESRGAN_x4plus.pth", uf.realesrgan_x4plus, "R-ESRGAN 4x+", "ESRGAN", 4),
    ("RealESRGAN", "RealESRGAN_x4plus_anime_6B.pth", uf.realesrgan_x4plus_anime_6b, "R-ESRGAN 4x+ Anime6B",
     "ESRGAN", 4),
    ("RealESRGAN", "RealESRGAN_x2plus.pth", uf.realesrgan_x2plus, "R-ESRGAN 2x+", "ESRGAN", 2),
    ("RealESRGAN", "realesr-general-x4v3.pth", uf.srvgg_compact, "R-ESRGAN General 4xV3", "RealESRGAN Compact", 4),
    ("RealESRGAN", "realesr-general-wdn-x4v3.pth", lambda: uf.srvgg_compact(seed=11), "R-ESRGAN General WDN 4xV3",
     "RealESRGAN Compact", 4),
    ("RealESRGAN", "realesr-animevideov3.pth", lambda: uf.srvgg_compact(num_conv=1, seed=12), "R-ESRGAN AnimeVideo",
     "RealESRGAN Compact", 4),
    ("ESRGAN", "4x_old_arch.pth", uf.esrgan_old_arch, "4x_old_arch", "ESRGAN", 4),
    ("ESRGAN", "2x_old_arch.safetensors", lambda: uf.esrgan_old_arch(scale=2), "2x_old_arch", "ESRGAN", 2),
    ("ESRGAN", "RRDB_ESRGAN_x4.pth", uf.esrgan_new_arch, "RRDB_ESRGAN_x4", "ESRGAN", 4),
    ("ESRGAN", "4x_realesrgan_converted.safetensors", uf.realesrgan_x4plus, "4x_realesrgan_converted", "ESRGAN", 4),
    ("SwinIR", "SwinIR_2x.pth", uf.swinir, "SwinIR_2x", "SwinIR", 2),
    ("SwinIR", "SwinIR_2x_st.safetensors", uf.swinir, "SwinIR_2x_st", "SwinIR", 2),
    ("ScuNET", "scunet_color_real_gan.pth", uf.scunet, "scunet_color_real_gan", "SCUNet", 1),
    ("DAT", "DAT_x2.pth", uf.dat, "DAT x2", "DAT", 2),
    ("DAT", "DAT_x3.safetensors", lambda: uf.dat(scale=3), "DAT x3", "DAT", 3),
]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    with single_torch_thread():
        yield


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory) -> Path:
    """A data folder holding one file of every layout above (built once; tests only read it)."""
    root = tmp_path_factory.mktemp("upscalers")
    for folder, filename, build, *_ in RELEASES:
        uf.write_model(root / "models" / folder / filename, build())
    return root


def make_registry(data_dir: Path, **settings):
    store = SettingsStore(None)
    if settings:
        store.update(settings)
    return Postprocessors(Paths(data_dir=data_dir), store, device="cpu").upscalers


@pytest.fixture()
def registry(release_dir):
    return make_registry(release_dir)


def photo(width: int = 40, height: int = 32) -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut()).resize((width, height), Image.Resampling.BICUBIC)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


# ---------------------------------------------------------------------------------------------
# finding and naming


@pytest.mark.parametrize("folder,filename,_build,name,arch,scale", RELEASES, ids=[r[1] for r in RELEASES])
def test_spandrel_detects_each_release_layout(registry, folder, filename, _build, name, arch, scale):
    model = {m.name: m for m in registry.models()}[name]
    assert model.path.name == filename and model.kind == folder
    assert (model.architecture, model.scale) == (arch, scale)
    item = {i.name: i for i in registry.items()}[name]
    assert (item.model_name, item.model_path, item.model_url, item.scale) == (arch, str(model.path), None, scale)


def test_names_are_builtins_then_models_sorted(registry):
    names = registry.names()
    assert names[:3] == ["None", "Lanczos", "Nearest"]
    assert names[3:] == sorted((r[3] for r in RELEASES), key=str.lower)
    assert registry.unusable() == []


def test_items_of_builtins_have_no_model(registry):
    builtins = registry.items()[:3]
    assert [(i.name, i.model_name, i.model_path, i.scale) for i in builtins] == [
        ("None", None, None, None), ("Lanczos", None, None, None), ("Nearest", None, None, None)]


def test_known_release_outside_its_folder_keeps_its_stem(tmp_path):
    uf.write_model(tmp_path / "models" / "ESRGAN" / "RealESRGAN_x4plus.pth", uf.realesrgan_x4plus())
    assert make_registry(tmp_path).names()[3:] == ["RealESRGAN_x4plus"]  # A1111 names it so from models/ESRGAN


def test_missing_release_is_not_listed_and_realesrgan_models_says_where_to_put_it(tmp_path):
    uf.write_model(tmp_path / "models" / "RealESRGAN" / "RealESRGAN_x4plus.pth", uf.realesrgan_x4plus())
    registry = make_registry(tmp_path)
    assert "R-ESRGAN 4x+ Anime6B" not in registry.names()
    releases = {r.name: r for r in registry.realesrgan_models()}
    assert list(releases) == ["R-ESRGAN General 4xV3", "R-ESRGAN General WDN 4xV3", "R-ESRGAN AnimeVideo",
                              "R-ESRGAN 4x+", "R-ESRGAN 4x+ Anime6B", "R-ESRGAN 2x+"]
    assert releases["R-ESRGAN 4x+"].installed
    anime = releases["R-ESRGAN 4x+ Anime6B"]
    assert not anime.installed and anime.scale == 4
    assert anime.local_path == str(tmp_path / "models" / "RealESRGAN" / "RealESRGAN_x4plus_anime_6B.pth")
    assert anime.path == ("https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.2.4/"
                          "RealESRGAN_x4plus_anime_6B.pth")
    with pytest.raises(UnknownUpscalerError) as err:
        registry.require("R-ESRGAN 4x+ Anime6B", "hr_upscaler")
    message = str(err.value)
    assert "RealESRGAN_x4plus_anime_6B.pth" in message and str(tmp_path / "models" / "RealESRGAN") in message
    assert not any(tmp_path.rglob("*anime_6B*"))  # nothing was fetched


def test_require_names_the_field_and_the_valid_names(registry):
    registry.require("R-ESRGAN 4x+", "hr_upscaler")
    registry.require("Lanczos", "upscaler_1")
    with pytest.raises(UnknownUpscalerError) as err:
        registry.require("R-ESRGAN 8x", "upscaler_2")
    assert err.value.field == "upscaler_2" and err.value.name == "R-ESRGAN 8x"
    assert err.value.valid_names == registry.names()
    assert str(err.value).startswith("upscaler_2: unknown upscaler 'R-ESRGAN 8x'.")
    with pytest.raises(UnknownUpscalerError):
        registry.require("Latent", "upscaler_1")  # latent modes are hires fix's, not upscalers


def test_esrgan_models_path_flag_is_honoured(tmp_path):
    elsewhere = tmp_path / "my-esrgan"
    uf.write_model(elsewhere / "4x_Elsewhere.pth", uf.esrgan_old_arch())
    uf.write_model(tmp_path / "data" / "models" / "ESRGAN" / "4x_Default.pth", uf.esrgan_old_arch())
    args = parse_args(["--data-dir", str(tmp_path / "data"), "--esrgan-models-path", str(elsewhere)])
    registry = Postprocessors(build_paths(args), SettingsStore(None), device="cpu").upscalers
    assert registry.names()[3:] == ["4x_Elsewhere"]


def test_a_file_dropped_in_later_appears_and_a_removed_one_goes(tmp_path):
    registry = make_registry(tmp_path)
    assert registry.names() == ["None", "Lanczos", "Nearest"]
    path = uf.write_model(tmp_path / "models" / "DAT" / "4x_new.pth", uf.srvgg_compact())
    assert registry.names()[3:] == ["4x_new"]
    path.unlink()
    assert registry.names() == ["None", "Lanczos", "Nearest"]


def test_subfolders_are_scanned_and_a_link_loop_is_walked_once(tmp_path):
    folder = tmp_path / "models" / "ESRGAN"
    uf.write_model(folder / "anime" / "4x_Sub.pth", uf.esrgan_old_arch())
    (folder / "anime" / "loop").symlink_to(folder, target_is_directory=True)
    registry = make_registry(tmp_path)
    assert registry.names()[3:] == ["4x_Sub"] and registry.unusable() == []


def test_same_name_in_two_folders_keeps_the_first_and_says_why(tmp_path):
    first = uf.write_model(tmp_path / "models" / "ESRGAN" / "4x_Same.pth", uf.esrgan_old_arch())
    second = uf.write_model(tmp_path / "models" / "DAT" / "4x_Same.pth", uf.srvgg_compact())
    registry = make_registry(tmp_path)
    assert {m.name: m.path for m in registry.models()} == {"4x_Same": first}
    [bad] = registry.unusable()
    assert bad.path == second and "already has the name '4x_Same'" in bad.reason


# ---------------------------------------------------------------------------------------------
# unusable files


def _unsafe_pickle(path: Path, marker: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump({"model.0.weight": Evil()}, f)


def test_corrupt_truncated_and_unsupported_files_are_listed_with_reasons(tmp_path):
    esrgan = tmp_path / "models" / "ESRGAN"
    uf.write_model(esrgan / "4x_Good.pth", uf.esrgan_old_arch())
    uf.write_garbage(esrgan / "garbage.pth")
    uf.write_garbage(esrgan / "empty.safetensors", b"")
    uf.write_truncated(esrgan / "cut.safetensors", uf.realesrgan_x4plus())
    uf.write_truncated(esrgan / "cut.pth", uf.esrgan_old_arch())
    uf.write_model(esrgan / "not_an_upscaler.pth", uf.face_model_like())
    # ScuNET's key names with shapes that fit no ScuNET
    uf.write_model(esrgan / "ScuNET.pth", {"m_head.0.weight": torch.zeros(4, 3, 3, 3),
                                           "m_tail.0.weight": torch.zeros(3)})
    marker = tmp_path / "pwned"
    _unsafe_pickle(esrgan / "evil.pth", marker)
    (esrgan / "notes.txt").write_text("not scanned")

    registry = make_registry(tmp_path)  # start-up: building and listing must not raise
    assert registry.names() == ["None", "Lanczos", "Nearest", "4x_Good"]
    reasons = {u.path.name: u.reason for u in registry.unusable()}
    assert set(reasons) == {"garbage.pth", "empty.safetensors", "cut.safetensors", "cut.pth", "not_an_upscaler.pth",
                            "ScuNET.pth", "evil.pth"}
    assert all(reason.strip() for reason in reasons.values())
    assert "spandrel does not recognise" in reasons["not_an_upscaler.pth"]
    assert "do not fit" in reasons["ScuNET.pth"]
    assert "os" in reasons["evil.pth"] and not marker.exists()  # refused, never run
    assert "empty" in reasons["empty.safetensors"].lower()
    with pytest.raises(UnknownUpscalerError):
        registry.upscale(photo(), 2, "garbage")


def test_app_starts_and_api_lists_with_a_corrupt_upscaler(tmp_path):
    uf.write_garbage(tmp_path / "models" / "RealESRGAN" / "RealESRGAN_x4plus.pth")
    registry = make_registry(tmp_path)
    status = {r.name: r for r in registry.realesrgan_models()}["R-ESRGAN 4x+"]
    assert not status.installed and status.reason
    with pytest.raises(UnknownUpscalerError) as err:
        registry.require("R-ESRGAN 4x+", "hr_upscaler")
    assert "cannot be used" in str(err.value)


# ---------------------------------------------------------------------------------------------
# output sizes, built-ins


@pytest.mark.parametrize("name", ["None", "Lanczos", "Nearest", "R-ESRGAN General 4xV3", "R-ESRGAN 2x+", "DAT x3",
                                  "scunet_color_real_gan"])
@pytest.mark.parametrize("scale", [1, 2, 2.5, 4, 0.5])
def test_upscale_sizes(registry, name, scale):
    image = photo(30, 22)
    out = registry.upscale(image, scale, name)
    assert out.size == (round(30 * scale), round(22 * scale)) and out.mode == "RGB"


@pytest.mark.parametrize("name", ["None", "Lanczos", "Nearest", "R-ESRGAN 4x+", "R-ESRGAN 2x+", "SwinIR_2x"])
@pytest.mark.parametrize("size", [(37, 29), (64, 20), (12, 12)])
def test_upscale_to_exact_size(registry, name, size):
    assert registry.upscale_to(photo(30, 22), *size, name).size == size


def test_lanczos_and_nearest_equal_pil(registry):
    image = photo(33, 27)
    for scale in (2, 3.3, 0.7):
        size = (round(33 * scale), round(27 * scale))
        assert np.array_equal(pixels(registry.upscale(image, scale, "Lanczos")),
                              pixels(image.resize(size, Image.Resampling.LANCZOS)))
        assert np.array_equal(pixels(registry.upscale(image, scale, "Nearest")),
                              pixels(image.resize(size, Image.Resampling.NEAREST)))
        # "None": no model, only A1111's final Lanczos to the target
        assert np.array_equal(pixels(registry.upscale(image, scale, "None")),
                              pixels(image.resize(size, Image.Resampling.LANCZOS)))
    assert np.array_equal(pixels(registry.upscale_to(image, 50, 41, "Lanczos")),
                          pixels(image.resize((50, 41), Image.Resampling.LANCZOS)))


def test_model_runs_until_big_enough_then_lanczos_down(registry):
    image = photo(24, 20)
    passes = []
    # x2 model, x4 target: two passes (A1111 runs the model again while the image is too small)
    registry.upscale(image, 4, "R-ESRGAN 2x+", progress=lambda done, total: passes.append(total))
    assert len(passes) == 2
    # x4 model, x2 target: one pass to 96x80, then Lanczos down to 48x40
    passes.clear()
    out = registry.upscale(image, 2, "R-ESRGAN General 4xV3", progress=lambda done, total: passes.append(total))
    assert len(passes) == 1
    full = registry.upscale(image, 4, "R-ESRGAN General 4xV3")
    assert np.array_equal(pixels(out), pixels(full.resize((48, 40), Image.Resampling.LANCZOS)))
    # a scale-1 model (ScuNET denoise) runs once, whatever the target
    passes.clear()
    registry.upscale(image, 2, "scunet_color_real_gan", progress=lambda done, total: passes.append(total))
    assert len(passes) == 1


def test_model_changes_the_image_and_keeps_transparency(registry):
    image = photo(24, 20).convert("RGBA")
    alpha = Image.new("L", image.size, 0)
    alpha.paste(255, (0, 0, 12, 20))
    image.putalpha(alpha)
    out = registry.upscale(image, 2, "R-ESRGAN General 4xV3")
    assert out.mode == "RGBA" and out.size == (48, 40)
    assert np.array_equal(np.asarray(out.getchannel("A")), np.asarray(alpha.resize((48, 40), Image.Resampling.LANCZOS)))
    lanczos = registry.upscale(image, 2, "Lanczos").convert("RGB")
    assert np.abs(pixels(out.convert("RGB")) - pixels(lanczos)).mean() > 5  # the model did something


def test_two_models_differ_and_a_replaced_file_is_reloaded(tmp_path):
    path = uf.write_model(tmp_path / "models" / "ESRGAN" / "4x_Swap.pth", uf.srvgg_compact(seed=1))
    registry = make_registry(tmp_path)
    image = photo(24, 20)
    before = pixels(registry.upscale(image, 4, "4x_Swap"))
    assert np.array_equal(before, pixels(registry.upscale(image, 4, "4x_Swap")))  # cached model, same result
    uf.write_model(path, uf.srvgg_compact(seed=2))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    after = pixels(registry.upscale(image, 4, "4x_Swap"))
    assert not np.array_equal(before, after)


def test_concurrent_calls_give_the_same_pixels(registry):
    image = photo(24, 20)
    expected = pixels(registry.upscale(image, 4, "R-ESRGAN 4x+"))
    results, errors = [], []

    def work():
        try:
            results.append(pixels(registry.upscale(image, 4, "R-ESRGAN 4x+")))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(np.array_equal(r, expected) for r in results)


# ---------------------------------------------------------------------------------------------
# tiles


def test_tile_spans_cover_evenly():
    assert tile_spans(100, 192) == [(0, 100)]
    assert tile_spans(200, 192) == [(0, 100), (100, 200)]
    spans = tile_spans(517, 64)
    assert spans[0][0] == 0 and spans[-1][1] == 517 and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert max(e - s for s, e in spans) <= 64 and min(e - s for s, e in spans) >= 57


@pytest.mark.parametrize("name,setting", [("R-ESRGAN 4x+", "ESRGAN"), ("R-ESRGAN General 4xV3", "ESRGAN"),
                                          ("R-ESRGAN 2x+", "ESRGAN"), ("DAT x2", "DAT"), ("SwinIR_2x", "SWIN")])
def test_tiled_output_equals_whole_image_without_seams(release_dir, name, setting):
    image = photo(96, 72)
    whole = pixels(make_registry(release_dir, **{f"{setting}_tile": 0}).upscale(image, 2, name))
    tiles = []
    tiled_registry = make_registry(release_dir, **{f"{setting}_tile": 32, f"{setting}_tile_overlap": 8})
    tiled = pixels(tiled_registry.upscale(image, 2, name, progress=lambda done, total: tiles.append(total)))
    assert tiles[0] > 1  # it did tile
    diff = np.abs(tiled - whole)
    assert diff.max() <= 1 and diff.mean() < 0.05  # float rounding only: no seams


def test_tiles_without_overlap_show_seams_the_overlap_removes(release_dir):
    """The check above can see seams: with no context, tile edges differ from the whole image."""
    image = photo(64, 64)
    whole = pixels(make_registry(release_dir, ESRGAN_tile=0).upscale(image, 4, "R-ESRGAN General 4xV3"))
    seamy = pixels(make_registry(release_dir, ESRGAN_tile=32, ESRGAN_tile_overlap=0)
                   .upscale(image, 4, "R-ESRGAN General 4xV3"))
    diff = np.abs(seamy - whole).max(axis=2)
    seam = 32 * 4  # the tile edge, in output pixels
    assert diff[:, seam - 4:seam + 4].mean() > 10 * max(diff[:, :seam - 16].mean(), 0.01)


def test_folder_chooses_its_tile_setting(release_dir):
    counts = {}
    registry = make_registry(release_dir, ESRGAN_tile=16, DAT_tile=0)
    for name in ("R-ESRGAN General 4xV3", "DAT x2"):
        seen = []
        registry.upscale_to(photo(40, 32), 80, 64, name, progress=lambda done, total: seen.append(total))
        counts[name] = seen[0]
    assert counts == {"R-ESRGAN General 4xV3": 6, "DAT x2": 1}


def test_tile_settings_are_validated():
    store = SettingsStore(None)
    with pytest.raises(Exception):
        store.update({"ESRGAN_tile": 5000})
    assert store.update({"ESRGAN_tile": 8.0}).ESRGAN_tile == 8  # JSON clients send whole floats
