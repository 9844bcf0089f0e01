"""Selectable-script pieces without the server: A1111's range syntax, the grid module (sizes,
labels drawn in the shipped font, margins, legend off), the axis list and the positional mapping.
The engine-level runs are in tests/api/test_scripts_api.py (real server, real engine)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PIL import Image

from modules import grids

SCRIPTS_EXT = Path(__file__).resolve().parents[1] / "extensions-builtin" / "scripts"
if str(SCRIPTS_EXT) not in sys.path:  # the loader puts it there while the scripts import; tests need it too
    sys.path.append(str(SCRIPTS_EXT))

from selectable_scripts import values as V  # noqa: E402
from selectable_scripts.axes import axes_for, find_axis  # noqa: E402


def axis_labels(is_img2img: bool) -> list[str]:
    return [a.label for a in axes_for(is_img2img)]


def xyz_call(ctx, x_type, x_values, y_type=0, y_values=""):
    """A ScriptCall for the X/Y/Z plot, from A1111's positional args (as the API maps them)."""
    from modules.generation.request import ScriptCall

    script = ctx.extensions.selectable.find("X/Y/Z plot")
    args = script.args_from_api([x_type, x_values, [], y_type, y_values, [], 0, "", [], True, True, False, False,
                                 False, False, False, 0, False])
    return ScriptCall(name=script.name, args=args)


@pytest.mark.parametrize("text,expected", [
    ("1-5", [1, 2, 3, 4, 5]),
    ("1-10 (+2)", [1, 3, 5, 7, 9]),
    ("10-1 (-3)", [10, 7, 4, 1]),
    ("1-10 [5]", [1, 3, 5, 7, 10]),
    ("1-3, 7", [1, 2, 3, 7]),
    ("-1, 5", [-1, 5]),
])
def test_int_ranges(text, expected):
    assert V.expand_ints(V.split_csv(text)) == expected


@pytest.mark.parametrize("text,expected", [
    ("0.5-1.5 (+0.25)", [0.5, 0.75, 1.0, 1.25, 1.5]),
    ("1-2 [3]", [1.0, 1.5, 2.0]),
    ("7, 7.5", [7.0, 7.5]),
    ("0-1 (+0.1)", [round(i / 10, 8) for i in range(11)]),
])
def test_float_ranges(text, expected):
    assert V.expand_floats(V.split_csv(text)) == expected


def test_csv_quoting_and_bad_values():
    assert V.split_csv('"a, b", c ,, d') == ["a, b", "c", "d"]
    assert V.to_csv(["a, b", "c"]) == '"a, b",c'
    with pytest.raises(ValueError, match="'x'"):
        V.expand_ints(["x"])
    with pytest.raises(ValueError, match="at most"):
        V.expand_ints(["1-100000"])
    with pytest.raises(ValueError, match="step of 0"):
        V.expand_floats(["1-2 (+0)"])


def test_axis_lists_follow_a1111_indexes():
    txt, img = axis_labels(False), axis_labels(True)
    assert txt[:7] == ["Nothing", "Seed", "Var. seed", "Var. strength", "Steps", "Hires steps", "CFG Scale"]
    assert img[:8] == ["Nothing", "Seed", "Var. seed", "Var. strength", "Steps", "CFG Scale", "Image CFG Scale",
                       "Prompt S/R"]
    assert "Hires upscaler" in txt and "Hires upscaler" not in img
    assert find_axis("steps", False).label == "Steps" and find_axis("4", False).label == "Steps"
    with pytest.raises(ValueError, match="out of range"):
        find_axis(500, False)


def test_grid_sizes_margins_and_labels():
    cells = [Image.new("RGB", (64, 48), (200, 0, 0)) for _ in range(6)]
    plain = grids.image_grid(cells, rows=2)
    assert plain.size == (192, 96)
    spaced = grids.image_grid(cells, rows=2, margin=10)
    assert spaced.size == (192 + 20, 96 + 10)
    bare = grids.labelled_grid(cells, 3, ["a", "b", "c"], ["x", "y"], legend=False)
    assert bare.size == (192, 96)
    labelled = grids.labelled_grid(cells, 3, ["Steps: 1", "Steps: 2", "Steps: 3"], ["CFG: 3", "CFG: 7"])
    assert labelled.width == 192 + 48 and labelled.height > 96  # left band 3/4 of a cell, top band
    top = labelled.crop((48, 0, labelled.width, labelled.height - 96)).convert("L")
    left = labelled.crop((0, labelled.height - 96, 48, labelled.height)).convert("L")
    assert min(top.getdata()) < 100 and min(left.getdata()) < 100  # text drawn in black
    assert labelled.getpixel((labelled.width - 1, 0)) == (255, 255, 255)
    assert labelled.getpixel((labelled.width - 1, labelled.height - 1)) == (200, 0, 0)


def test_inactive_labels_are_grey_and_the_font_ships_with_the_app():
    assert grids.FONT_PATH.is_file() and (grids.FONT_PATH.parent / "LICENSE-DejaVu.txt").is_file()
    cell = Image.new("RGB", (128, 128), (0, 0, 0))
    grid = grids.draw_annotations(grids.image_grid([cell, cell]), 128, 128,
                                  [[grids.GridAnnotation("on")], [grids.GridAnnotation("off", is_active=False)]],
                                  [], 0)
    band_h = grid.height - 128
    on = grid.crop((0, 0, 128, band_h)).convert("L")
    off = grid.crop((128, 0, 256, band_h)).convert("L")
    assert min(on.getdata()) < 60 and 100 < min(off.getdata()) < 200


def test_positional_layouts_map_to_args():
    from importlib import util

    spec = util.spec_from_file_location("xyz_grid_under_test", SCRIPTS_EXT / "scripts" / "xyz_grid.py")
    module = util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    script = module.XyzPlot()
    new = script.args_from_api([4, "1-3", None, 6, [3, 5], [], 0, "", [], False, True, True, True, True, False,
                                False, 24, True])
    assert (new.x_type, new.x_values, new.y_values, new.vary_seeds_x, new.margin_size, new.csv_mode) == (
        4, "1-3", "3,5", True, 24, True)
    old = script.args_from_api([4, "1-3", [], 0, "", [], 0, "", [], True, False, False, True, 12, False, False])
    assert (old.no_fixed_seeds, old.margin_size, old.vary_seeds_x) == (True, 12, False)
    assert script.api_position("margin_size", [0] * 15) == 13 and script.api_position("margin_size") == 16
