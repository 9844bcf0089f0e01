"""Face restoration: GFPGAN, CodeFormer and RestoreFormer files with random weights in the
released layout (tests/face_model_files.py), restoring a real photograph (scikit-image's
astronaut) on the CPU.

Random weights make the face garbage, which is what the checks want: the face region visibly
changes while pixels far from it stay bit-identical. A restore costs 10-40 s on one CPU thread,
so the four model runs are made once (module fixture) and shared by the tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modules.models.errors import CheckpointError
from modules.paths import Paths
from modules.postprocess.face_restoration import (
    RESTORER_NAMES,
    FaceRestorerLoadError,
    FaceRestorerMissingError,
    UnknownFaceRestorerError,
)
from modules.postprocess.face_restoration.alignment import alignment_matrix, crop_face, paste_face
from modules.postprocess.face_restoration.catalog import spec_for
from modules.postprocess.face_restoration.detection import detect_faces
from modules.postprocess.face_restoration.networks import load_restorer
from modules.postprocess.services import Postprocessors
from modules.settings import Options, SettingsStore
from tests.face_model_files import BUILDERS, RELEASE_FILES, save_model_file, write_restorer

CPU = torch.device("cpu")
# The astronaut's face (Haar box 177,67 93x93) and regions well away from any face.
FACE = (slice(80, 150), slice(190, 260))
FAR = [(slice(240, None), slice(None)), (slice(None), slice(360, None)), (slice(None), slice(None, 100))]


def photo() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


def arr(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def postprocessors(root: Path, **options) -> Postprocessors:
    return Postprocessors(Paths(data_dir=root), SettingsStore(None, Options(**options)), device="cpu")


@pytest.fixture(scope="module")
def models_root(tmp_path_factory) -> Path:
    """models/GFPGAN/GFPGANv1.4.pth, models/GFPGAN/RestoreFormer.pth, models/Codeformer/codeformer.pth."""
    root = tmp_path_factory.mktemp("faces")
    for name in RESTORER_NAMES:
        write_restorer(root / "models", name)
    return root


@pytest.fixture(scope="module")
def restored(models_root) -> dict[str, Image.Image]:
    """The four model runs the tests share. Defaults come from the settings: GFPGAN, w = 1."""
    pp = postprocessors(models_root, face_restoration_model="GFPGAN", code_former_weight=1.0)
    restorers, image = pp.face_restorers, photo()
    return {
        "default": restorers.restore(image),  # face_restoration_model -> GFPGAN
        "CodeFormer w=setting": restorers.restore(image, "CodeFormer"),  # code_former_weight -> 1.0
        "CodeFormer w=0": restorers.restore(image, "CodeFormer", codeformer_weight=0.0),
        "RestoreFormer": restorers.restore(image, "RestoreFormer"),
    }


# ----------------------------------------------------------------------------- model files
@pytest.mark.parametrize("name", RESTORER_NAMES)
def test_released_pth_layout_is_recognised_by_spandrel(models_root, name):
    folder, release = RELEASE_FILES[name]
    path = models_root / "models" / folder / release
    assert list(torch.load(path, map_location="cpu", weights_only=True)) == ["params_ema"]
    loaded = load_restorer(spec_for(name), path, CPU, half=False)
    assert type(loaded.net).__name__ in {"GFPGANv1Clean", "CodeFormer", "RestoreFormer"}
    assert loaded.dtype == torch.float32


@pytest.mark.parametrize("name", RESTORER_NAMES)
def test_safetensors_file_is_recognised_by_spandrel(tmp_path, name):
    path = save_model_file(tmp_path / f"{name}.safetensors", BUILDERS[name](1))
    loaded = load_restorer(spec_for(name), path, CPU, half=False)
    assert loaded.spec.architecture == name


def test_every_restorer_is_listed_with_its_file(models_root):
    items = postprocessors(models_root).face_restorers.items()
    assert [i.name for i in items] == ["CodeFormer", "GFPGAN", "RestoreFormer"]
    assert all(i.usable and i.message is None for i in items)
    paths = {i.name: Path(i.model_path).relative_to(models_root / "models").as_posix() for i in items}
    assert paths == {"CodeFormer": "Codeformer/codeformer.pth", "GFPGAN": "GFPGAN/GFPGANv1.4.pth",
                     "RestoreFormer": "GFPGAN/RestoreFormer.pth"}


def test_gfpgan_v13_is_found_and_v14_preferred(tmp_path, models_root):
    folder = tmp_path / "models" / "GFPGAN"
    folder.mkdir(parents=True)
    (folder / "GFPGANv1.3.pth").symlink_to(models_root / "models" / "GFPGAN" / "GFPGANv1.4.pth")
    restorers = postprocessors(tmp_path).face_restorers
    assert restorers.names() == ["GFPGAN"]
    assert restorers.items()[1].model_path == str(folder / "GFPGANv1.3.pth")
    (folder / "GFPGANv1.4.pth").symlink_to(models_root / "models" / "GFPGAN" / "GFPGANv1.4.pth")
    assert restorers.items()[1].model_path == str(folder / "GFPGANv1.4.pth")


# ----------------------------------------------------------------------------- restoring
@pytest.mark.slow  # shares the four model runs (~2 min on one CPU thread)
@pytest.mark.parametrize("run", ["default", "CodeFormer w=setting", "CodeFormer w=0", "RestoreFormer"])
def test_face_changes_and_far_pixels_stay_identical(restored, run):
    before, after = photo(), restored[run]
    assert after.size == before.size and after.mode == "RGB"
    a, b = arr(before), arr(after)
    assert np.abs(a[FACE] - b[FACE]).mean() > 10, "the face region should be replaced"
    for region in FAR:
        assert np.array_equal(a[region], b[region]), f"pixels far from the face changed: {region}"


@pytest.mark.slow  # shares the four model runs (~2 min on one CPU thread)
def test_default_model_is_the_setting(restored, tmp_path):
    """The default run used the face_restoration_model setting (GFPGAN), not A1111's CodeFormer
    (which, with the same w, would equal the CodeFormer run); a missing one is named."""
    assert not np.array_equal(arr(restored["default"]), arr(restored["CodeFormer w=setting"]))
    empty = postprocessors(tmp_path, face_restoration_model="RestoreFormer").face_restorers
    with pytest.raises(FaceRestorerMissingError, match="put RestoreFormer.pth in"):
        empty.restore(photo())


@pytest.mark.slow  # shares the four model runs (~2 min on one CPU thread)
def test_codeformer_weight_reaches_the_model(restored):
    w1, w0 = arr(restored["CodeFormer w=setting"]), arr(restored["CodeFormer w=0"])
    assert np.abs(w1[FACE] - w0[FACE]).mean() > 1


def test_visibility_zero_and_a_photo_without_faces_come_back_unchanged(models_root):
    from skimage import data

    restorers = postprocessors(models_root).face_restorers
    image = photo()
    assert np.array_equal(arr(restorers.restore(image, "GFPGAN", visibility=0.0)), arr(image))
    coffee = Image.fromarray(data.coffee())
    out = restorers.restore(coffee, "GFPGAN")
    assert out.size == coffee.size and np.array_equal(arr(out), arr(coffee))


def test_bad_arguments_name_the_field(models_root):
    restorers = postprocessors(models_root).face_restorers
    with pytest.raises(UnknownFaceRestorerError, match="'Foo'.*CodeFormer, GFPGAN, RestoreFormer"):
        restorers.restore(photo(), "Foo")
    with pytest.raises(ValueError, match="visibility"):
        restorers.restore(photo(), "GFPGAN", visibility=1.5)
    with pytest.raises(ValueError, match="codeformer_weight"):
        restorers.restore(photo(), "CodeFormer", codeformer_weight=-0.1)


def test_settings_are_typed_with_a1111_defaults():
    from pydantic import ValidationError

    options = Options()
    assert (options.face_restoration_model, options.code_former_weight) == ("CodeFormer", 0.5)
    assert options.updated({"face_restoration_model": "RestoreFormer"}).face_restoration_model == "RestoreFormer"
    for field, bad in (("face_restoration_model", "Foo"), ("code_former_weight", 1.5)):
        with pytest.raises(ValidationError, match=field):
            options.updated({field: bad})


# ----------------------------------------------------------------------------- alignment
def test_aligned_crop_pasted_back_unchanged_reproduces_the_face():
    """An identity "model": crop, then paste the crop back: the face comes back (up to two
    bilinear resamplings) and nothing outside the crop is written."""
    image = np.asarray(photo())
    (face,) = detect_faces(image)
    assert face.eyes_found
    matrix = alignment_matrix(face)
    crop = crop_face(image, matrix)
    assert crop.shape == (512, 512, 3)
    target = image.copy()
    paste_face(target, crop.astype(np.float32), matrix, 1.0)
    assert np.abs(target[FACE].astype(int) - image[FACE]).mean() < 3
    for region in FAR:
        assert np.array_equal(target[region], image[region])


def test_visibility_blends_the_face_with_the_original():
    image = np.asarray(photo())
    (face,) = detect_faces(image)
    matrix = alignment_matrix(face)
    target = image.copy()
    paste_face(target, np.zeros((512, 512, 3), np.float32), matrix, 0.5)  # a black "restored" face
    centre = (slice(95, 125), slice(205, 245))  # inside the mask's flat middle
    assert np.abs(target[centre].astype(float) - image[centre] / 2).max() <= 1


# ----------------------------------------------------------------------------- missing and broken files
def test_missing_model_names_the_file_and_folder(tmp_path):
    gfpgan_dir = tmp_path / "elsewhere"
    pp = Postprocessors(Paths(data_dir=tmp_path, model_dir_overrides=(("GFPGAN", gfpgan_dir),)),
                        SettingsStore(None), device="cpu")
    with pytest.raises(FaceRestorerMissingError) as caught:
        pp.face_restorers.restore(photo(), "GFPGAN")
    assert caught.value.name == "GFPGAN"
    assert f"put GFPGANv1.4.pth (or GFPGANv1.3.pth) in {gfpgan_dir}" in str(caught.value)
    with pytest.raises(FaceRestorerMissingError, match=f"put codeformer.pth .*in {tmp_path / 'models' / 'Codeformer'}"):
        pp.face_restorers.restore(photo())  # the default: CodeFormer
    items = pp.face_restorers.items()
    assert [(i.name, i.usable) for i in items] == [("CodeFormer", False), ("GFPGAN", False), ("RestoreFormer", False)]
    assert "RestoreFormer.pth" in items[2].message and "--gfpgan-models-path" in items[2].message
    assert pp.face_restorers.names() == []


class _Payload:
    """Stands for code a pickle would run on load."""


@pytest.mark.parametrize("content, reason", [
    (b"", "empty"),
    (b"<html>404 Not Found</html>", "not a PyTorch checkpoint"),
    ("truncated", "not a PyTorch checkpoint"),
    ("unsafe", "refused to unpickle"),
    ("foreign", "recognises no architecture"),
    ("restoreformer", "holds a RestoreFormer model, not GFPGAN"),
])
def test_a_broken_file_gives_a_clear_error_and_listing_goes_on(tmp_path, models_root, content, reason):
    folder = tmp_path / "models" / "GFPGAN"
    folder.mkdir(parents=True)
    path = folder / "GFPGANv1.4.pth"
    if content == "truncated":
        whole = (models_root / "models" / "GFPGAN" / "GFPGANv1.4.pth").read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    elif content == "unsafe":
        torch.save({"params_ema": _Payload()}, path)
    elif content == "foreign":
        torch.save({"params_ema": {"conv.weight": torch.zeros(3, 3, 1, 1)}}, path)
    elif content == "restoreformer":
        path.symlink_to(models_root / "models" / "GFPGAN" / "RestoreFormer.pth")
    else:
        path.write_bytes(content)
    restorers = postprocessors(tmp_path).face_restorers
    restorers.items()  # listing never raises
    with pytest.raises(FaceRestorerLoadError, match=reason) as caught:
        restorers.restore(photo(), "GFPGAN")
    assert isinstance(caught.value, CheckpointError) and str(path) in str(caught.value)
    gfpgan = restorers.items()[1]
    assert not gfpgan.usable and str(path) in gfpgan.message and reason in gfpgan.message
    assert restorers.names() == []
    with pytest.raises(FaceRestorerLoadError, match=reason):  # remembered, not retried on every image
        restorers.restore(photo(), "GFPGAN")

