"""X/Y/Z plot: one sub-job per cell through the real engine, a labelled grid per Z value.

A1111's positional script_args (both layouts its versions send):
    1.10:  x_type, x_values, x_values_dropdown, y_type, y_values, y_values_dropdown, z_type, z_values,
           z_values_dropdown, draw_legend, include_lone_images, include_sub_grids, no_fixed_seeds,
           vary_seeds_x, vary_seeds_y, vary_seeds_z, margin_size, csv_mode
    older: ... no_fixed_seeds, margin_size, csv_mode[, raw_mode]
Types are indexes into the tab's axis list (selectable_scripts/axes.py) or labels.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from modules import grids
from modules.extensions.selectable import ScriptArgInfo, ScriptArgsError, ScriptRun, ScriptServices, SelectableScript
from modules.generation.request import GenerationRequest, Mode
from modules.generation.result import GenerationResult

from selectable_scripts.axes import Axis, axes_for, build_axis
from selectable_scripts.plot_result import CellResult, PlotOutput, assemble, blank_like, cell_from, grid_params
from selectable_scripts.values import to_csv

MAX_CELLS = 10_000

FIELDS_110 = ("x_type", "x_values", "x_values_dropdown", "y_type", "y_values", "y_values_dropdown", "z_type",
              "z_values", "z_values_dropdown", "draw_legend", "include_lone_images", "include_sub_grids",
              "no_fixed_seeds", "vary_seeds_x", "vary_seeds_y", "vary_seeds_z", "margin_size", "csv_mode")
FIELDS_OLD = ("x_type", "x_values", "x_values_dropdown", "y_type", "y_values", "y_values_dropdown", "z_type",
              "z_values", "z_values_dropdown", "draw_legend", "include_lone_images", "include_sub_grids",
              "no_fixed_seeds", "margin_size", "csv_mode", "")  # "" = raw_mode: ignored

AxisKind = Union[int, str]


class XyzArgs(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    x_type: AxisKind = Field(1, title="X type")
    x_values: str = Field("", title="X values")
    x_values_dropdown: list[str] = Field(default_factory=list, title="X values")
    y_type: AxisKind = Field(0, title="Y type")
    y_values: str = Field("", title="Y values")
    y_values_dropdown: list[str] = Field(default_factory=list, title="Y values")
    z_type: AxisKind = Field(0, title="Z type")
    z_values: str = Field("", title="Z values")
    z_values_dropdown: list[str] = Field(default_factory=list, title="Z values")
    draw_legend: bool = Field(True, title="Draw legend")
    include_lone_images: bool = Field(False, title="Include Sub Images")
    include_sub_grids: bool = Field(False, title="Include Sub Grids")
    no_fixed_seeds: bool = Field(False, title="Keep -1 for seeds")
    vary_seeds_x: bool = Field(False, title="Vary seeds for X")
    vary_seeds_y: bool = Field(False, title="Vary seeds for Y")
    vary_seeds_z: bool = Field(False, title="Vary seeds for Z")
    margin_size: int = Field(0, ge=0, le=500, title="Grid margins (px)", json_schema_extra={"step": 2})
    csv_mode: bool = Field(False, title="Use text inputs instead of dropdowns")

    @field_validator("x_values", "y_values", "z_values", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        if value is None:
            return ""
        if isinstance(value, (list, tuple)):  # some clients send the list itself
            return to_csv([str(v) for v in value])
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("x_values_dropdown", "y_values_dropdown", "z_values_dropdown", mode="before")
    @classmethod
    def _dropdown(cls, value: Any) -> Any:
        if value is None or value == "":
            return []
        if isinstance(value, (list, tuple)):
            return [str(v) for v in value]
        return value


@dataclass
class Plan:
    x: Axis
    y: Axis
    z: Axis
    cells: dict[tuple[int, int, int], GenerationRequest]
    order: list[tuple[int, int, int]]  # the running order: the costly axis outermost


def _draft(request: GenerationRequest) -> dict[str, Any]:
    return {name: getattr(request, name) for name in type(request).model_fields}


def _fix_seeds(request: GenerationRequest, args: XyzArgs) -> GenerationRequest:
    """A1111's fix_seed: -1 becomes one random seed for the whole plot, unless "Keep -1 for seeds"."""
    if args.no_fixed_seeds:
        return request
    changes = {}
    if request.seed == -1:
        changes["seed"] = random.randrange(2**32 - 1)
    if request.subseed == -1:
        changes["subseed"] = random.randrange(2**32 - 1)
    return request.model_copy(update=changes) if changes else request


def _cell_error(axis: Axis, value: Any, err: ValidationError) -> str:
    first = err.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"])
    return (f"{axis.name} type {axis.type.label!r}, value {value!r}: "
            f"{where + ': ' if where else ''}{str(first['msg']).removeprefix('Value error, ')}")


def build_plan(request: GenerationRequest, args: XyzArgs, services: ScriptServices) -> Plan:
    """Every cell's request, before anything runs; ScriptArgsError naming the axis and the value."""
    is_img2img = request.mode is not Mode.TXT2IMG
    base = _draft(request)
    axes = []
    for name in ("x", "y", "z"):
        kind = getattr(args, f"{name}_type")
        try:
            axis = build_axis(name.upper(), kind, getattr(args, f"{name}_values"),
                              getattr(args, f"{name}_values_dropdown"), args.csv_mode, is_img2img, base, services)
        except ValueError as err:
            raise ScriptArgsError(f"{name}_values" if not _is_type_error(kind, is_img2img) else f"{name}_type",
                                  f"{name.upper()} axis: {err}") from None
        if not args.no_fixed_seeds and axis.type.label in ("Seed", "Var. seed"):
            axis.values = [random.randrange(2**32 - 1) if v in (None, -1) else v for v in axis.values]
            axis.labels = [axis.type.format(v) for v in axis.values]
        axes.append(axis)
    x, y, z = axes
    count = len(x) * len(y) * len(z)
    if count * request.n_images > MAX_CELLS:
        raise ScriptArgsError("x_values", f"the plot would make {count * request.n_images} images; at most {MAX_CELLS}")
    cells: dict[tuple[int, int, int], GenerationRequest] = {}
    for iz, zv in enumerate(z.values):
        for iy, yv in enumerate(y.values):
            for ix, xv in enumerate(x.values):
                draft = dict(base, save_grid=False, script=None, styles=tuple(base["styles"]))
                for axis, value in ((x, xv), (y, yv), (z, zv)):
                    try:
                        axis.type.apply(draft, value, axis.values, services)
                    except ValidationError as err:
                        raise ScriptArgsError(f"{axis.name.lower()}_values", _cell_error(axis, value, err)) from None
                    except ValueError as err:
                        raise ScriptArgsError(f"{axis.name.lower()}_values",
                                              f"{axis.name} axis {axis.type.label!r}, value {value!r}: {err}") from None
                if "seed" in draft and draft["seed"] != -1:
                    offset = ((ix if args.vary_seeds_x else 0) + (iy * len(x) if args.vary_seeds_y else 0)
                              + (iz * len(x) * len(y) if args.vary_seeds_z else 0))
                    draft["seed"] = (draft["seed"] + offset) % (2**32 - 1)
                try:
                    cells[(ix, iy, iz)] = type(request)(**draft)
                except ValidationError as err:
                    # the value that broke it: the axis whose field the error names, else the X one
                    axis, value = _guilty(err, (x, xv), (y, yv), (z, zv))
                    raise ScriptArgsError(f"{axis.name.lower()}_values", _cell_error(axis, value, err)) from None
    order = _running_order(x, y, z)
    return Plan(x, y, z, cells, order)


def _is_type_error(kind: Any, is_img2img: bool) -> bool:
    from selectable_scripts.axes import find_axis

    try:
        axis = find_axis(kind, is_img2img)
    except ValueError:
        return True
    return not axis.supported


_AXIS_FIELDS = {"Steps": "steps", "CFG Scale": "cfg_scale", "Seed": "seed", "Var. seed": "subseed",
                "Var. strength": "subseed_strength", "Clip skip": "clip_skip", "Denoising": "denoising_strength",
                "Size": "width", "Eta": "eta", "Sigma Churn": "s_churn", "Sigma min": "s_tmin",
                "Sigma max": "s_tmax", "Sigma noise": "s_noise", "Hires steps": "hires"}


def _guilty(err: ValidationError, *pairs: tuple[Axis, Any]) -> tuple[Axis, Any]:
    fields = {str(e["loc"][0]) for e in err.errors(include_url=False) if e["loc"]}
    for axis, value in pairs:
        field = _AXIS_FIELDS.get(axis.type.label)
        if field in fields or (field == "width" and "height" in fields):
            return axis, value
    return next((p for p in pairs if p[0].type.kind != "nothing"), pairs[0])


def _running_order(x: Axis, y: Axis, z: Axis) -> list[tuple[int, int, int]]:
    """Costly axes outermost (a checkpoint loads once per value); ties keep A1111's z, y, x nesting."""
    nested = sorted([("z", z), ("y", y), ("x", x)], key=lambda item: -item[1].type.cost)
    sizes = {"x": len(x), "y": len(y), "z": len(z)}
    order: list[tuple[int, int, int]] = []

    def walk(depth: int, index: dict[str, int]) -> None:
        if depth == 3:
            order.append((index["x"], index["y"], index["z"]))
            return
        name = nested[depth][0]
        for i in range(sizes[name]):
            walk(depth + 1, {**index, name: i})

    walk(0, {})
    return order


class XyzPlot(SelectableScript):
    name = "xyz_grid"
    title = "X/Y/Z plot"
    Args = XyzArgs
    api_fields = FIELDS_110
    sort_order = 0

    def positional_fields(self, values: Sequence[Any]) -> tuple[str, ...]:
        """A1111 1.10 sends vary_seeds_x/y/z (bools) at 13..15; earlier versions margin_size there."""
        if len(values) > 13 and not isinstance(values[13], bool) and isinstance(values[13], (int, float)):
            return FIELDS_OLD
        return FIELDS_110

    def arg_infos(self, is_img2img: bool) -> list[ScriptArgInfo]:
        infos = super().arg_infos(is_img2img)
        labels = [a.label for a in axes_for(is_img2img)]
        return [ScriptArgInfo(a.label, a.value, a.minimum, a.maximum, a.step, labels) if i in (0, 3, 6) else a
                for i, a in enumerate(infos)]

    # ---- checking and running
    def check(self, request: GenerationRequest, args: BaseModel, services: ScriptServices) -> None:
        build_plan(request, args, services)

    def run(self, run: ScriptRun, args: BaseModel) -> GenerationResult:
        assert isinstance(args, XyzArgs)
        request = _fix_seeds(run.request, args)
        plan = build_plan(request, args, run.services)
        nx, ny, nz = len(plan.x), len(plan.y), len(plan.z)
        run.begin(len(plan.cells) * request.batch_count)
        cells: dict[tuple[int, int, int], CellResult] = {}
        first_error: Optional[Exception] = None
        for key in plan.order:
            if run.interrupted:
                break
            sub = plan.cells[key]
            try:
                cells[key] = cell_from(run.generate(sub), sub)
            except Exception as exc:  # noqa: BLE001 - A1111 keeps going; the cell stays black
                first_error = first_error or exc
                run.warnings.append(f"cell {self._where(plan, key)} failed: {type(exc).__name__}: {exc}")
        if first_error is not None and not any(c.image is not None for c in cells.values()):
            raise first_error
        if not cells:  # interrupted before the first cell
            return GenerationResult(request=run.request, interrupted=True)
        ordered = [cells.get((ix, iy, iz), CellResult()) for iz in range(nz) for iy in range(ny) for ix in range(nx)]
        width = request.width or 512
        blank = blank_like(ordered, width, request.height or width)
        output = PlotOutput(cells=ordered)
        sub_grids = []
        for iz in range(nz):
            part = ordered[iz * nx * ny:(iz + 1) * nx * ny]
            images = [c.image if c.image is not None else blank for c in part]
            grid = grids.labelled_grid(images, nx, plan.x.labels if nx > 1 or plan.x.labels[0] else [],
                                       plan.y.labels if ny > 1 or plan.y.labels[0] else [], args.margin_size,
                                       args.draw_legend)
            sub_grids.append((grid, next((c for c in part if c.image is not None), None)))
        if nz > 1:
            main = grids.labelled_grid([g for g, _ in sub_grids], nz, plan.z.labels, [], args.margin_size,
                                       args.draw_legend) if args.draw_legend else grids.image_grid(
                [g for g, _ in sub_grids], rows=1)
        else:
            main = sub_grids[0][0]
        first = next(c for c in ordered if c.image is not None)
        fields = self._infotext_fields(plan, args, include_z=True)
        params, text = grid_params(first, fields)
        output.grids.append((main, params, text, run.save_grid(main, params, text, first.request)))
        if args.include_sub_grids and nz > 1:
            for grid, cell in sub_grids:
                cell = cell or first
                p, t = grid_params(cell, self._infotext_fields(plan, args, include_z=False))
                output.grids.append((grid, p, t, run.save_grid(grid, p, t, cell.request)))
        result = assemble(run, output, args.include_lone_images)
        result.interrupted = run.interrupted or len(cells) < len(plan.cells)
        return result

    @staticmethod
    def _where(plan: Plan, key: tuple[int, int, int]) -> str:
        parts = [axis.labels[i] for axis, i in zip((plan.x, plan.y, plan.z), key) if axis.type.kind != "nothing"]
        return ", ".join(parts) or "1"

    @staticmethod
    def _infotext_fields(plan: Plan, args: XyzArgs, include_z: bool) -> dict[str, Any]:
        fields: dict[str, Any] = {"Script": "X/Y/Z plot"}
        for axis in (plan.x, plan.y, plan.z) if include_z else (plan.x, plan.y):
            if axis.type.kind == "nothing":
                continue
            fields[f"{axis.name} Type"] = axis.type.label
            fields[f"{axis.name} Values"] = axis.text
            if axis.type.label in ("Seed", "Var. seed") and not args.no_fixed_seeds:
                fields[f"Fixed {axis.name} Values"] = ", ".join(str(v) for v in axis.values)
        return fields

    # ---- UI
    def ui(self, is_img2img: bool) -> list[Any]:
        import gradio as gr

        labels = [a.label for a in axes_for(is_img2img) if a.supported]
        components = []
        pre = f"script_{'img2img' if is_img2img else 'txt2img'}_xyz_"  # A1111's elem_id style
        with gr.Column(elem_id=f"{pre}grid"):
            for name, default in (("X", "Seed"), ("Y", "Nothing"), ("Z", "Nothing")):
                with gr.Row():
                    kind = gr.Dropdown(label=f"{name} type", choices=labels, value=default,
                                       elem_id=f"{pre}{name.lower()}_type")
                    values = gr.Textbox(label=f"{name} values", lines=1, elem_id=f"{pre}{name.lower()}_values",
                                        placeholder="e.g. 1-5, 1-10 (+2), 0.5-1.5 (+0.25), \"a, b\", c")
                    dropdown = gr.Dropdown(label=f"{name} values", multiselect=True, choices=[], value=[],
                                           visible=False, elem_id=f"{pre}{name.lower()}_values_dropdown")
                components += [kind, values, dropdown]
            with gr.Row():
                draw_legend = gr.Checkbox(label="Draw legend", value=True, elem_id=f"{pre}draw_legend")
                no_fixed_seeds = gr.Checkbox(label="Keep -1 for seeds", value=False, elem_id=f"{pre}no_fixed_seeds")
                lone = gr.Checkbox(label="Include Sub Images", value=False, elem_id=f"{pre}include_lone_images")
                sub_grids = gr.Checkbox(label="Include Sub Grids", value=False, elem_id=f"{pre}include_sub_grids")
            with gr.Row():
                vary = [gr.Checkbox(label=f"Vary seeds for {n}", value=False, elem_id=f"{pre}vary_seeds_{n.lower()}")
                        for n in ("X", "Y", "Z")]
                margin = gr.Slider(label="Grid margins (px)", minimum=0, maximum=500, value=0, step=2,
                                   elem_id=f"{pre}margin_size")
        csv_mode = gr.State(True)  # the UI types values as text (dropdowns stay hidden)
        return components + [draw_legend, lone, sub_grids, no_fixed_seeds, *vary, margin, csv_mode]
