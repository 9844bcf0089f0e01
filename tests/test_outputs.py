"""Saving images: A1111 folder layout and numbering, patterns, atomic writes, hostile prompts."""

from __future__ import annotations

import datetime as dt
import os
import threading
from pathlib import Path

import pytest
from PIL import Image

from modules.generation.request import GenerationRequest, Mode
from modules.generation.result import ImageParams
from modules.infotext import build_infotext, read_infotext
from modules.outputs import (
    MAX_NAME_BYTES,
    SaveSettings,
    make_grid,
    next_sequence_number,
    sanitize_filename_part,
    save_image,
)

NOW = dt.datetime(2024, 5, 1, 13, 14, 15)
DATE = "2024-05-01"
INFOTEXT = (
    "a cat, sitting: on a mat\nNegative prompt: dog\n"
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 1234, Size: 64x48, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly"
)


# The structured record INFOTEXT is rendered from: pattern tokens read these, not the text.
REQUEST = GenerationRequest(prompt="a cat, sitting: on a mat", negative_prompt="dog", steps=20, cfg_scale=7.5,
                            seed=1234)
PARAMS = ImageParams(prompt="a cat, sitting: on a mat", negative_prompt="dog", seed=1234, subseed=1, width=64,
                     height=48, sampler_name="DPM++ 2M", scheduler="Karras", model_name="v1-5-pruned-emaonly",
                     model_hash="6ce0161689")


def test_the_record_renders_the_infotext():
    assert build_infotext(REQUEST, PARAMS) == INFOTEXT


def rgb(w: int = 64, h: int = 48, color=(200, 30, 30)) -> Image.Image:
    return Image.new("RGB", (w, h), color)


def save(tmp_path: Path, image=None, **kwargs) -> Path:
    args = dict(kind="txt2img", seed=1234, prompt="a cat, sitting: on a mat", infotext=INFOTEXT,
                settings=SaveSettings(), base_dir=tmp_path, now=NOW, params=PARAMS, request=REQUEST)
    args.update(kwargs)
    return save_image(image or rgb(), **args)


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------
# layout and numbering


def test_default_layout_and_counter(tmp_path):
    first = save(tmp_path)
    second = save(tmp_path, seed=1235)
    assert first == tmp_path / "txt2img-images" / DATE / "00000-1234.png"
    assert second == tmp_path / "txt2img-images" / DATE / "00001-1235.png"


def test_counter_continues_from_existing_files(tmp_path):
    folder = tmp_path / "txt2img-images" / DATE
    folder.mkdir(parents=True)
    (folder / "00007-1.png").write_bytes(b"")
    (folder / "00003-99-extra.jpg").write_bytes(b"")
    (folder / "notes.txt").write_bytes(b"")  # not a number: ignored
    (folder / "grid-0042.png").write_bytes(b"")  # grids count on their own
    assert next_sequence_number(folder) == 8
    assert save(tmp_path).name == "00008-1234.png"


def test_counter_skips_a_taken_name(tmp_path):
    folder = tmp_path / "txt2img-images" / DATE
    folder.mkdir(parents=True)
    (folder / "00002-5.png").write_bytes(b"")
    # an odd name that numbers cannot see but the next candidate would collide with
    (folder / "00003-1234.png").mkdir()
    assert save(tmp_path).name == "00004-1234.png"


def test_img2img_inpaint_extras_folders(tmp_path):
    assert save(tmp_path, kind="img2img").parent == tmp_path / "img2img-images" / DATE
    assert save(tmp_path, kind="inpaint").parent == tmp_path / "img2img-images" / DATE
    assert save(tmp_path, kind="extras").parent == tmp_path / "extras-images" / DATE
    with pytest.raises(ValueError, match="kind"):
        save(tmp_path, kind="../evil")


def test_grids(tmp_path):
    grid = make_grid([rgb(), rgb(), rgb(), rgb()])
    first = save(tmp_path, image=grid, is_grid=True)
    second = save(tmp_path, image=grid, is_grid=True)
    assert first == tmp_path / "txt2img-grids" / DATE / "grid-0000.png"  # A1111: 4 digits for grids
    assert second.name == "grid-0001.png"
    extended = save(tmp_path, image=grid, is_grid=True, settings=SaveSettings(grid_extended_filename=True))
    assert extended.name == "grid-0002-1234.png"
    assert save(tmp_path, image=grid, is_grid=True, kind="img2img").parent == tmp_path / "img2img-grids" / DATE
    assert read_infotext(Image.open(first)) == INFOTEXT


def test_no_date_folder_and_custom_outdirs(tmp_path):
    settings = SaveSettings(save_to_dirs=False, outdir_samples="mine")
    assert save(tmp_path, settings=settings) == tmp_path / "mine" / "00000-1234.png"
    absolute = tmp_path / "elsewhere"
    settings = SaveSettings(outdir_grids=str(absolute), grid_save_to_dirs=False)
    assert save(tmp_path, settings=settings, is_grid=True) == absolute / "grid-0000.png"


def test_concurrent_savers_never_share_a_number(tmp_path):
    paths: list[Path] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        for j in range(5):
            p = save(tmp_path, seed=i * 10 + j)
            with lock:
                paths.append(p)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    numbers = sorted(int(p.name.split("-")[0]) for p in paths)
    assert numbers == list(range(20))
    assert len(set(paths)) == 20


# ---------------------------------------------------------------------------------------------
# atomic write and infotext


def test_atomic_write_leaves_no_temp_files(tmp_path):
    for fmt in ("png", "jpg", "webp"):
        save(tmp_path, settings=SaveSettings(samples_format=fmt))
    folder = tmp_path / "txt2img-images" / DATE
    assert sorted(os.listdir(folder)) == ["00000-1234.png", "00001-1234.jpg", "00002-1234.webp"]


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import modules.outputs as outputs

    def disk_full(fd):
        raise OSError("disk full")

    monkeypatch.setattr(outputs.os, "fsync", disk_full)
    with pytest.raises(OSError, match="disk full"):
        save(tmp_path)
    folder = tmp_path / "txt2img-images" / DATE
    assert os.listdir(folder) == []  # the temp file is gone and no final name appeared


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_infotext_readable_back(tmp_path, fmt):
    text = INFOTEXT.replace("a cat", "ein Kätzchen 猫 😀")
    path = save(tmp_path, infotext=text, settings=SaveSettings(samples_format=fmt))
    assert path.suffix == f".{fmt}"
    with Image.open(path) as opened:
        assert read_infotext(opened) == text
        assert opened.size == (64, 48)


def test_jpeg_converts_rgba_and_webp_keeps_alpha(tmp_path):
    rgba = Image.new("RGBA", (32, 32), (10, 20, 30, 128))
    jpg = save(tmp_path, image=rgba, settings=SaveSettings(samples_format="jpg"))
    with Image.open(jpg) as opened:
        assert opened.mode == "RGB"
        assert read_infotext(opened) == INFOTEXT
    webp = save(tmp_path, image=rgba, settings=SaveSettings(samples_format="webp", webp_lossless=True))
    with Image.open(webp) as opened:
        assert opened.mode == "RGBA"


def test_pnginfo_off_and_txt_sidecar(tmp_path):
    path = save(tmp_path, settings=SaveSettings(enable_pnginfo=False, save_txt=True))
    with Image.open(path) as opened:
        assert read_infotext(opened) is None
    assert path.with_suffix(".txt").read_text(encoding="utf-8") == INFOTEXT + "\n"


def test_settings_validation():
    with pytest.raises(ValueError, match="samples_format"):
        SaveSettings(samples_format="gif")
    with pytest.raises(ValueError, match="jpeg_quality"):
        SaveSettings(jpeg_quality=0)


# ---------------------------------------------------------------------------------------------
# patterns


def test_pattern_tokens(tmp_path):
    pattern = "[seed]-[width]x[height]-[sampler]-[steps]-[cfg]-[model_name]-[model_hash]-[date]-[datetime]"
    path = save(tmp_path, settings=SaveSettings(filename_pattern=pattern, save_to_dirs=False))
    assert path.name == (
        f"00000-1234-64x48-DPM++ 2M-20-7.5-v1-5-pruned-emaonly-6ce0161689-{DATE}-20240501131415.png"
    )


def test_prompt_tokens(tmp_path):
    settings = SaveSettings(filename_pattern="[prompt]|[prompt_spaces]|[prompt_words]", save_to_dirs=False)
    path = save(tmp_path, settings=settings, prompt="a cat, sitting: on a mat")
    # "|" and ":" are not allowed in names and become "_"
    assert path.name == "00000-a_cat,_sitting__on_a_mat_a cat, sitting_ on a mat_a cat sitting on a mat.png"


def test_prompt_words_limit_and_empty(tmp_path):
    settings = SaveSettings(filename_pattern="[prompt_words]", save_to_dirs=False, directories_max_prompt_words=3)
    assert save(tmp_path, settings=settings, prompt="one, two; three four five").name == "00000-one two three.png"
    assert save(tmp_path, settings=settings, prompt=",,, ...").name == "00001-empty.png"


def test_datetime_format_argument_and_unknown_tokens(tmp_path):
    settings = SaveSettings(filename_pattern="[datetime<%Y_%m_%d>]-[nonsense]-[seed]", save_to_dirs=False)
    assert save(tmp_path, settings=settings).name == "00000-2024_05_01-[nonsense]-1234.png"


def test_extra_tokens_and_skip(tmp_path):
    settings = SaveSettings(filename_pattern="[seed]-[styles]-b[batch_number]", save_to_dirs=False)
    name = save(tmp_path, settings=settings, extra_tokens={"styles": "Cinematic/Film", "batch_number": None}).name
    assert name == "00000-1234-Cinematic_Film.png"


def test_directory_pattern_with_prompt_words(tmp_path):
    settings = SaveSettings(directories_filename_pattern="[date]/[prompt_words]")
    path = save(tmp_path, settings=settings, prompt="../../etc/passwd")
    assert path.parent == tmp_path / "txt2img-images" / DATE / "etc passwd"


# ---------------------------------------------------------------------------------------------
# hostile prompts


HOSTILE = [
    "../../../../etc/passwd",
    "/etc/passwd",
    "..\\..\\windows\\system32",
    "a\x00b\x01c\nd\re\tf",
    "x" * 300,
    "猫" * 300,
    "😀" * 300,
    "...",
    ". . .",
    "..",
    "   ",
    "",
    "CON",
    'all<bad>chars:"/\\|?*',
    "\u2028line\u2029sep",
    "\ud800 lone surrogate",
]


@pytest.mark.parametrize("prompt", HOSTILE)
@pytest.mark.parametrize("pattern", ["[prompt]", "[prompt_spaces]", "[prompt_words]", "[seed]-[prompt_spaces]-[prompt]"])
def test_hostile_prompts_stay_inside(tmp_path, prompt, pattern):
    base = tmp_path / "outputs"
    settings = SaveSettings(filename_pattern=pattern, directories_filename_pattern="[prompt_words]/[prompt]")
    path = save(base, prompt=prompt, settings=settings)
    root = (base / "txt2img-images").resolve()
    assert path.resolve().is_relative_to(root)
    assert path.exists() and path.is_file()
    for part in path.relative_to(base).parts:
        assert part not in ("", ".", "..")
        assert not part.startswith((".", " "))
        assert len(part.encode("utf-8")) <= MAX_NAME_BYTES
        assert not any(c in part for c in '<>:"/\\|?*') and all(ord(c) >= 32 for c in part)
    assert path.suffix == ".png"
    # nothing was written anywhere but the outputs folder
    assert all(p.is_relative_to(base) for p in tmp_path.rglob("*"))


def test_sanitize_filename_part():
    assert sanitize_filename_part("../a/b") == "__a_b"
    assert sanitize_filename_part("  .hidden") == "hidden"
    assert sanitize_filename_part("trailing. . ") == "trailing"
    assert sanitize_filename_part("a b", replace_spaces=True) == "a_b"
    assert sanitize_filename_part("x" * 300) == "x" * 128
    assert sanitize_filename_part("nul\x00byte") == "nul_byte"


def test_symlinked_date_folder_leading_out_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "outputs" / "txt2img-images"
    root.mkdir(parents=True)
    (root / DATE).symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match="outside"):
        save(tmp_path / "outputs")
    assert list(outside.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# grids


@pytest.mark.parametrize("n,rows,size", [(1, 1, (64, 48)), (2, 1, (128, 48)), (3, 2, (128, 96)),
                                          (4, 2, (128, 96)), (6, 2, (192, 96)), (9, 3, (192, 144))])
def test_make_grid_shape(n, rows, size):
    grid = make_grid([rgb() for _ in range(n)])
    assert grid.size == size and grid.mode == "RGB"


def test_make_grid_rows_and_order():
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    grid = make_grid([rgb(10, 10, c) for c in colors], rows=1)
    assert grid.size == (30, 10)
    assert [grid.getpixel((5 + 10 * i, 5)) for i in range(3)] == colors
    tall = make_grid([rgb(10, 10, c) for c in colors], rows=3)
    assert tall.size == (10, 30)
    with pytest.raises(ValueError):
        make_grid([])


# ---------------------------------------------------------------------------------------------
# one encoder, one record


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_saved_file_holds_exactly_the_shared_encoders_bytes(tmp_path, fmt):
    from modules.image_files import encode_image

    image = Image.effect_noise((64, 48), 40).convert("RGB")
    path = save(tmp_path, image=image, settings=SaveSettings(samples_format=fmt, jpeg_quality=70))
    assert path.read_bytes() == encode_image(image, fmt, INFOTEXT, quality=70).data


def test_pattern_tokens_come_from_the_record_not_the_text(tmp_path):
    # No text at all: the tokens still come from the structured parameters.
    pattern = "[sampler]-[steps]-[cfg]-[clip_skip]-[model_hash]-[denoising]"
    path = save(tmp_path, infotext="", settings=SaveSettings(filename_pattern=pattern, save_to_dirs=False))
    assert path.name == "00000-DPM++ 2M-20-7.5-1-6ce0161689.png"  # txt2img: no denoising, its "-" dropped
    img2img = REQUEST.model_copy(update={"mode": Mode.IMG2IMG, "init_images": (rgb(),), "denoising_strength": 0.5,
                                         "clip_skip": 2})
    path = save(tmp_path, request=img2img, settings=SaveSettings(filename_pattern=pattern, save_to_dirs=False))
    assert path.name == "00001-DPM++ 2M-20-7.5-2-6ce0161689-0.5.png"


def test_pattern_tokens_follow_an_extension_override_as_the_infotext_does(tmp_path):
    from modules.infotext import parse_infotext

    params = ImageParams(**{**PARAMS.__dict__, "extra": {"Sampler": "Euler a"}})
    text = build_infotext(REQUEST, params)
    path = save(tmp_path, infotext=text, params=params,
                settings=SaveSettings(filename_pattern="[sampler]", save_to_dirs=False))
    assert parse_infotext(text).params["Sampler"] == "Euler a"
    assert path.name == "00000-Euler a.png"


def test_params_without_their_request_are_refused(tmp_path):
    with pytest.raises(ValueError, match="request"):
        save(tmp_path, request=None)
