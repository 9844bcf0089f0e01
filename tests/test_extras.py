"""The Extras pipeline (modules/postprocess/extras.py) with the real upscaler registry and face
restorers: sizes by factor / to size / crop, upscaler 2 blended as PIL blends, the order of upscale
and face restoration, saved files and their text chunks, batch-from-directory names, folder rules,
and Extras jobs on the one JobQueue."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules.generation.result import GenerationResult
from modules.infotext import read_infotext
from modules.jobs.control import JobControl
from modules.jobs.queue import JobQueue
from modules.paths import Paths
from modules.postprocess import extras
from modules.postprocess.extras import (ExtrasInput, ExtrasInputError, ExtrasRequest, ExtrasSave, ExtrasTask,
                                        run_extras)
from modules.postprocess.services import Postprocessors
from modules.settings import Options, SettingsStore

LANCZOS, NEAREST = Image.Resampling.LANCZOS, Image.Resampling.NEAREST


@pytest.fixture()
def paths(tmp_path) -> Paths:
    return Paths(data_dir=tmp_path)


@pytest.fixture()
def pp(paths) -> Postprocessors:
    return Postprocessors(paths, SettingsStore(None), device="cpu")


def picture(w: int = 48, h: int = 32) -> Image.Image:
    image = Image.new("RGB", (w, h), (20, 40, 200))
    ImageDraw.Draw(image).ellipse((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=(220, 30, 30))
    ImageDraw.Draw(image).line((0, 0, w, h), fill=(250, 250, 0), width=2)
    return image


def with_parameters(image: Image.Image, text: str) -> Image.Image:
    image.info["parameters"] = text
    return image


def one(request: ExtrasRequest, image: Image.Image, pp, **kwargs):
    result = run_extras(request, [ExtrasInput(image)], pp, **kwargs)
    assert len(result.outputs) == 1
    return result.outputs[0]


def arr(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


# ---------------------------------------------------------------------------------------------
# sizes


@pytest.mark.parametrize("fields, source, size, crop", [
    ({"upscaling_resize": 2.5}, (30, 20), (75, 50), None),
    ({"upscaling_resize": 1}, (30, 20), (30, 20), None),
    ({"resize_mode": 1, "upscaling_resize_w": 100, "upscaling_resize_h": 80}, (64, 32), (160, 80), (100, 80)),
    ({"resize_mode": 1, "upscaling_resize_w": 100, "upscaling_resize_h": 80}, (32, 64), (100, 200), (100, 80)),
    ({"resize_mode": 1, "upscaling_resize_w": 100, "upscaling_resize_h": 80, "upscaling_crop": False},
     (64, 32), (160, 80), None),
    ({"resize_mode": 1, "upscaling_resize_w": 96, "upscaling_resize_h": 64}, (48, 32), (96, 64), (96, 64)),
])
def test_upscale_plan(fields, source, size, crop):
    plan = extras.upscale_plan(ExtrasRequest(upscaler_1="Lanczos", **fields), *source)
    assert (plan.size, plan.crop) == (size, crop)


def test_scale_by_factor_is_the_upscaler_at_that_size(pp):
    source = picture(30, 20)
    out = one(ExtrasRequest(upscaler_1="Lanczos", upscaling_resize=2.5), source, pp)
    assert out.image.size == (75, 50)
    assert np.array_equal(arr(out.image), arr(source.resize((75, 50), LANCZOS)))
    assert out.infotext == "Postprocess upscale by: 2.5, Postprocess upscaler: Lanczos"


def test_scale_to_with_crop_cuts_the_centre(pp):
    source = picture(64, 32)
    request = ExtrasRequest(upscaler_1="Nearest", resize_mode=1, upscaling_resize_w=100, upscaling_resize_h=80)
    out = one(request, source, pp)
    assert out.image.size == (100, 80)
    assert np.array_equal(arr(out.image), arr(source.resize((160, 80), NEAREST).crop((30, 0, 130, 80))))
    assert out.infotext == ("Postprocess upscale to: 100x80, Postprocess crop to: 100x80, "
                            "Postprocess upscaler: Nearest")


def test_scale_to_without_crop_covers_the_target(pp):
    request = ExtrasRequest(upscaler_1="Lanczos", resize_mode=1, upscaling_resize_w=100, upscaling_resize_h=80,
                            upscaling_crop=False)
    out = one(request, picture(32, 64), pp)
    assert out.image.size == (100, 200)
    assert out.infotext == "Postprocess upscale to: 100x80, Postprocess upscaler: Lanczos"


def test_upscaler_1_none_changes_nothing(pp):
    """A1111 1.x: no upscaler 1, no upscaling at all (upscaler 2 and the factor are ignored)."""
    source = picture()
    out = one(ExtrasRequest(upscaler_1="None", upscaler_2="Lanczos", extras_upscaler_2_visibility=1,
                            upscaling_resize=4), source, pp)
    assert np.array_equal(arr(out.image), arr(source))
    assert out.infotext == "" and out.info == {}


@pytest.mark.parametrize("visibility", [0.3, 1.0])
def test_upscaler_2_blend_equals_the_pil_blend(pp, visibility):
    source = picture()
    out = one(ExtrasRequest(upscaler_1="Lanczos", upscaler_2="Nearest", upscaling_resize=3,
                            extras_upscaler_2_visibility=visibility), source, pp)
    expected = Image.blend(source.resize((144, 96), LANCZOS), source.resize((144, 96), NEAREST), visibility)
    assert np.array_equal(arr(out.image), arr(expected))
    assert out.infotext.endswith("Postprocess upscaler: Lanczos, Postprocess upscaler 2: Nearest")


def test_upscaler_2_at_visibility_0_is_not_used(pp):
    source = picture()
    out = one(ExtrasRequest(upscaler_1="Lanczos", upscaler_2="Nearest", upscaling_resize=2), source, pp)
    assert np.array_equal(arr(out.image), arr(source.resize((96, 64), LANCZOS)))
    assert "upscaler 2" not in out.infotext


def test_result_too_large_is_refused_naming_the_field():
    request = ExtrasRequest(upscaler_1="Lanczos", upscaling_resize=8)
    extras.check_output_size(request, 1024, 1024)
    with pytest.raises(ExtrasInputError) as err:
        extras.check_output_size(request, 1025, 1025)
    assert err.value.field == "upscaling_resize" and "8200x8200" in err.value.message
    extras.check_output_size(ExtrasRequest(upscaler_1="None", upscaling_resize=8), 4096, 4096)  # no upscale


# ---------------------------------------------------------------------------------------------
# names and face restorers


def test_unknown_upscaler_names_the_field_and_lists_the_valid_names(pp):
    with pytest.raises(ExtrasInputError) as err:
        extras.check_names(ExtrasRequest(upscaler_1="Lanczos", upscaler_2="R-ESRGAN 4x+"), pp)
    assert err.value.field == "upscaler_2"
    assert "R-ESRGAN 4x+" in err.value.message and "Nearest" in err.value.message


def test_face_restoration_at_visibility_0_needs_no_model(pp, paths):
    assert not (paths.models_dir / "GFPGAN").exists()
    request = ExtrasRequest(upscaler_1="Lanczos", gfpgan_visibility=0, codeformer_visibility=0, codeformer_weight=1)
    extras.check_names(request, pp)
    out = one(request, picture(), pp)
    assert "GFPGAN" not in out.infotext and "CodeFormer" not in out.infotext


@pytest.mark.parametrize("field, file", [("gfpgan_visibility", "GFPGANv1.4.pth"),
                                         ("codeformer_visibility", "codeformer.pth")])
def test_missing_face_restorer_names_the_field_and_the_file(pp, field, file):
    with pytest.raises(ExtrasInputError) as err:
        extras.check_names(ExtrasRequest(**{field: 0.5}), pp)
    assert err.value.field == field and file in err.value.message


def test_steps_order_follows_upscale_first():
    names = lambda r: [s.__name__ for s in extras.steps_in_order(r)]  # noqa: E731
    assert names(ExtrasRequest(upscale_first=True)) == ["upscale_step", "gfpgan_step", "codeformer_step"]
    assert names(ExtrasRequest(upscale_first=False)) == ["gfpgan_step", "codeformer_step", "upscale_step"]


@pytest.fixture(scope="module")
def face_models(tmp_path_factory):
    """A GFPGANv1.4 file with random weights (released layout) and a photograph with a face."""
    from skimage import data

    from tests.face_model_files import write_restorer

    root = tmp_path_factory.mktemp("extras-faces")
    write_restorer(root / "models", "GFPGAN")
    return root, Image.fromarray(data.astronaut()).resize((256, 256), LANCZOS)


@pytest.mark.slow  # four passes of a 512 px GFPGAN on the CPU
def test_upscale_before_or_after_face_restoration(face_models):
    root, photo = face_models
    pp = Postprocessors(Paths(data_dir=root), SettingsStore(None), device="cpu")
    restore = lambda image: pp.face_restorers.restore(image, model="GFPGAN", visibility=0.7)  # noqa: E731
    upscale = lambda image: image.resize((384, 384), LANCZOS)  # noqa: E731
    fields = dict(upscaler_1="Lanczos", upscaling_resize=1.5, gfpgan_visibility=0.7)
    first = one(ExtrasRequest(**fields, upscale_first=True), photo, pp)
    after = one(ExtrasRequest(**fields, upscale_first=False), photo, pp)
    assert np.array_equal(arr(first.image), arr(restore(upscale(photo))))
    assert np.array_equal(arr(after.image), arr(upscale(restore(photo))))
    assert not np.array_equal(arr(first.image), arr(after.image))
    assert first.infotext == "Postprocess upscale by: 1.5, Postprocess upscaler: Lanczos, GFPGAN visibility: 0.7"
    assert after.infotext == "GFPGAN visibility: 0.7, Postprocess upscale by: 1.5, Postprocess upscaler: Lanczos"


# ---------------------------------------------------------------------------------------------
# saving


def test_saved_file_keeps_parameters_and_carries_the_postprocessing_text(pp, paths):
    save = ExtrasSave.from_options(Options(), paths.outputs_dir)
    source = with_parameters(picture(), "a cat\nNegative prompt: dog\nSteps: 20, Seed: 5")
    result = run_extras(ExtrasRequest(upscaler_1="Lanczos", upscaling_resize=2), [ExtrasInput(source)] * 2, pp,
                        save=save)
    names = [Path(out.path).name for out in result.outputs]
    assert names == ["00000.png", "00001.png"]
    assert all(Path(out.path).parent == paths.outputs_dir / "extras-images" for out in result.outputs)
    with Image.open(result.outputs[0].path) as file:
        assert file.size == (96, 64)
        text = "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"
        assert file.info == {"parameters": "a cat\nNegative prompt: dog\nSteps: 20, Seed: 5",
                             "postprocessing": text, "extras": text}
    assert not list((paths.outputs_dir / "extras-images").glob(".*"))  # no temporary file left behind


def test_output_folder_settings(pp, paths, tmp_path):
    # A1111: outdir_samples wins over outdir_extras_samples; its own default "outputs/extras-images"
    # (held by config files written before the option was typed) is this app's default folder
    stale = Options.model_validate({"outdir_extras_samples": "outputs/extras-images"})
    custom = Options().updated({"outdir_extras_samples": "mine"})
    both = Options().updated({"outdir_extras_samples": "mine", "outdir_samples": str(tmp_path / "all")})
    request = ExtrasRequest(upscaler_1="Nearest")
    for options, folder in ((stale, paths.outputs_dir / "extras-images"), (custom, paths.outputs_dir / "mine"),
                            (both, tmp_path / "all")):
        out = one(request, picture(), pp, save=ExtrasSave.from_options(options, paths.outputs_dir))
        assert Path(out.path).parent == folder


def test_jpeg_keeps_the_generation_parameters(pp, paths):
    options = Options().updated({"samples_format": "jpg"})
    source = with_parameters(picture(), "a cat\nSteps: 20, Seed: 5")
    out = one(ExtrasRequest(upscaler_1="Lanczos"), source, pp,
              save=ExtrasSave.from_options(options, paths.outputs_dir))
    assert out.path.endswith(".jpg")
    with Image.open(out.path) as file:
        assert read_infotext(file) == "a cat\nSteps: 20, Seed: 5"


def test_batch_from_directory_output_names(pp, paths, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name, size in (("b10.png", 20), ("b2.jpg", 16), ("a.webp", 12)):
        picture(size, size).save(folder / name)
    (folder / ".hidden.png").write_bytes(b"x")
    picture(1100, 1100).save(folder / "z-huge.png")  # its x8 result would be over MAX_OUTPUT_PIXELS
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    inputs = extras.list_folder_images(folder)
    assert [i.name for i in inputs] == ["a.webp", "b2.jpg", "b10.png", "notes.txt", "z-huge.png"]  # natural order
    out_dir = tmp_path / "out"
    (out_dir).mkdir()
    (out_dir / "a.png").write_bytes(b"old")  # A1111's original names replace what is there
    save = ExtrasSave.from_options(Options(), paths.outputs_dir, output_dir=out_dir)
    result = run_extras(ExtrasRequest(upscaler_1="Nearest", upscaling_resize=8), inputs, pp, save=save,
                        keep_images=False)
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.png", "b10.png", "b2.png"]
    assert [o.image for o in result.outputs] == [None, None, None]  # "show results" off: not kept
    assert len(result.warnings) == 2 and "notes.txt" in result.warnings[0]
    assert "z-huge.png" in result.warnings[1] and "8800x8800" in result.warnings[1]
    with Image.open(out_dir / "b10.png") as file:
        assert file.size == (160, 160) and "Postprocess upscaler: Nearest" in file.info["extras"]
    numbered = ExtrasSave.from_options(Options().updated({"use_original_name_batch": False}), paths.outputs_dir,
                                       output_dir=out_dir / "numbered")
    run_extras(ExtrasRequest(), inputs[:2], pp, save=numbered)
    assert sorted(p.name for p in (out_dir / "numbered").iterdir()) == ["00000.png", "00001.png"]


def test_batch_folders_stay_inside_the_data_folder_when_confined(paths, tmp_path):
    inside = paths.data_dir / "in"
    inside.mkdir()
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    os.symlink(outside, paths.data_dir / "link")
    assert extras.resolve_folder("in", "Input directory", paths, confined=True, must_exist=True) == inside.resolve()
    for value in (str(outside), "../", "link"):
        with pytest.raises(ExtrasInputError) as err:
            extras.resolve_folder(value, "Input directory", paths, confined=True, must_exist=True)
        assert err.value.field == "Input directory" and "outside the data folder" in err.value.message
    assert extras.resolve_folder(str(outside), "x", paths, confined=False, must_exist=True) == outside.resolve()
    with pytest.raises(ExtrasInputError, match="not a folder"):
        extras.resolve_folder("missing", "Input directory", paths, confined=False, must_exist=True)


# ---------------------------------------------------------------------------------------------
# the queue


def test_extras_jobs_wait_for_the_running_generation(pp):
    """One worker: an Extras job queued behind a generation starts only after it ends."""
    release, started, order = threading.Event(), threading.Event(), []

    def generate(request, control):
        started.set()
        release.wait(30)
        order.append("generation")
        return GenerationResult()

    queue = JobQueue(generate)
    try:
        from modules.generation.request import GenerationRequest

        first = queue.submit(GenerationRequest(prompt="x", steps=1))
        assert started.wait(30)
        job = queue.submit(ExtrasTask(ExtrasRequest(upscaler_1="Lanczos"), [ExtrasInput(picture())], pp))
        assert queue.position(job.id) == 1 and not job.future.done()
        release.set()
        result = job.result(30)
        order.append("extras")
        first.result(30)
        assert order == ["generation", "extras"]
        assert result.outputs[0].image.size == (96, 64)
        assert job.control.snapshot().state.value == "done"
    finally:
        release.set()
        queue.shutdown()


def test_interrupt_stops_before_the_next_image(pp):
    control = JobControl()
    control.interrupt()
    result = run_extras(ExtrasRequest(upscaler_1="Lanczos"), [ExtrasInput(picture())] * 3, pp, control=control)
    assert result.interrupted and result.outputs == []


def test_finished_extras_job_keeps_no_pixels(pp):
    task = ExtrasTask(ExtrasRequest(), [ExtrasInput(picture())], pp)
    assert task.without_pixels().inputs == [] and task.inputs


# ---------------------------------------------------------------------------------------------
# a model upscaler (a random-weight Real-ESRGAN file in the release's layout)


def test_model_upscaler_in_extras_with_a_second_upscaler(paths, pp):
    from tests.upscaler_files import realesrgan_x2plus, write_model

    write_model(paths.models_dir / "RealESRGAN" / "RealESRGAN_x2plus.pth", realesrgan_x2plus())
    name = "R-ESRGAN 2x+"
    assert name in pp.upscalers.names()
    source = picture(24, 16)
    request = ExtrasRequest(upscaler_1=name, upscaler_2="Lanczos", extras_upscaler_2_visibility=0.4,
                            resize_mode=1, upscaling_resize_w=40, upscaling_resize_h=40)
    extras.check_names(request, pp)
    out = one(request, source, pp)
    # to 60x40 (covers 40x40), then the centre 40x40; upscaler 2 blended over upscaler 1
    model = pp.upscalers.upscale_to(source, 60, 40, name).crop((10, 0, 50, 40))
    lanczos = source.resize((60, 40), LANCZOS).crop((10, 0, 50, 40))
    assert np.array_equal(arr(out.image), arr(Image.blend(model, lanczos, 0.4)))
    assert out.infotext == ("Postprocess upscale to: 40x40, Postprocess crop to: 40x40, "
                            f"Postprocess upscaler: {name}, Postprocess upscaler 2: Lanczos")


def test_extras_tab_names_the_missing_models_and_broken_files(tmp_path):
    """The tab never downloads: it says which file to put where, and why a file there is unusable."""
    from modules.postprocess.services import Postprocessors
    from webui.extras import models_note

    paths = Paths(data_dir=tmp_path)
    (tmp_path / "models" / "ESRGAN").mkdir(parents=True)
    (tmp_path / "models" / "ESRGAN" / "broken.pth").write_bytes(b"not a model")
    note = models_note(Postprocessors(paths, SettingsStore(None), device="cpu"))
    assert "codeformer.pth" in note and str(tmp_path / "models" / "Codeformer") in note
    assert "GFPGANv1.4.pth" in note and str(tmp_path / "models" / "GFPGAN") in note
    assert "`RealESRGAN_x4plus.pth` (R-ESRGAN 4x+)" in note and str(tmp_path / "models" / "RealESRGAN") in note
    assert "`broken.pth` cannot be used:" in note
