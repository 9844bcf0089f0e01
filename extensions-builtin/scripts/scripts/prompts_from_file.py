"""Prompts from file or textbox: one sub-job per line, in one queue slot.

A line is a prompt, or (when it holds "--") A1111's per-line options, split as a shell would:
    --prompt "a red circle" --negative_prompt blurry --steps 10 --seed 1 --cfg_scale 5
    --sampler_name "Euler a" --width 64 --height 64 --batch_size 2 --n_iter 1
`--prompt` / `--negative_prompt` take every word up to the next `--option`. The line's prompt goes
before ("start") or after ("end") the tab's prompt, joined by a space (A1111). An unknown option,
a value that does not parse or is out of range is refused before anything runs, naming the line
and the option (A1111 logs it and runs the line as a plain prompt instead).

A1111's positional script_args: checkbox_iterate, checkbox_iterate_batch, prompt_position
("start"/"end"), prompt_txt. Before A1111 1.6 there was no prompt_position:
checkbox_iterate, checkbox_iterate_batch, prompt_txt.
"""

from __future__ import annotations

import random
import shlex
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modules.extensions.selectable import ScriptArgsError, ScriptRun, ScriptServices, SelectableScript
from modules.generation.request import GenerationRequest
from modules.generation.result import GenerationResult

from selectable_scripts.collect import Collector

MAX_LINES = 1000
FIELDS = ("checkbox_iterate", "checkbox_iterate_batch", "prompt_position", "prompt_txt")
FIELDS_OLD = ("checkbox_iterate", "checkbox_iterate_batch", "prompt_txt")


class PromptsFromFileArgs(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    checkbox_iterate: bool = Field(False, title="Iterate seed every line")
    checkbox_iterate_batch: bool = Field(False, title="Use same random seed for all lines")
    prompt_position: Literal["start", "end"] = Field("start", title="Insert prompts at the",
                                                      json_schema_extra={"choices": ["start", "end"]})
    prompt_txt: str = Field("", title="List of prompt inputs")


class LineError(ValueError):
    """A line that cannot run: `tag` is the option at fault (None: the line as a whole)."""

    def __init__(self, tag: Optional[str], message: str) -> None:
        self.tag = tag
        super().__init__(message)


# ---- A1111's prompt_tags: option -> (request field, value parser)
def _text(value: str) -> str:
    return value


def _int(value: str) -> int:
    return int(value)


def _float(value: str) -> float:
    return float(value)


def _bool(value: str) -> bool:
    return value == "true"  # A1111: anything else is False


def _sampler(value: str) -> str:
    from modules.processing import samplers

    spec, _schedule = samplers.split_sampler_name(value)  # UnknownSamplerError names the valid ones
    return value if _schedule is not None else spec.name


def _sampler_index(value: str) -> str:
    from modules.processing import samplers

    index = int(value)
    if not 0 <= index < len(samplers.SAMPLERS):
        raise ValueError(f"sampler index {index} is out of range 0..{len(samplers.SAMPLERS) - 1}")
    return samplers.SAMPLERS[index].name


@dataclass(frozen=True)
class Tag:
    field: Optional[str]  # the GenerationRequest field; None = accepted and not applied (warned)
    parse: Callable[[str], Any]
    invert: bool = False


TAGS: dict[str, Tag] = {
    "sd_model": Tag("checkpoint", _text),
    "outpath_samples": Tag(None, _text),  # the app's output folders are its settings, not a request's
    "outpath_grids": Tag(None, _text),
    "prompt_for_display": Tag(None, _text),
    "prompt": Tag("prompt", _text),
    "negative_prompt": Tag("negative_prompt", _text),
    "styles": Tag("styles", _text),
    "seed": Tag("seed", _int),
    "subseed_strength": Tag("subseed_strength", _float),
    "subseed": Tag("subseed", _int),
    "seed_resize_from_h": Tag("seed_resize_from_h", _int),
    "seed_resize_from_w": Tag("seed_resize_from_w", _int),
    "sampler_index": Tag("sampler_name", _sampler_index),
    "sampler_name": Tag("sampler_name", _sampler),
    "batch_size": Tag("batch_size", _int),
    "n_iter": Tag("batch_count", _int),
    "steps": Tag("steps", _int),
    "cfg_scale": Tag("cfg_scale", _float),
    "width": Tag("width", _int),
    "height": Tag("height", _int),
    "restore_faces": Tag("restore_faces", _bool),
    "tiling": Tag("tiling", _bool),
    "do_not_save_samples": Tag("save_images", _bool, invert=True),
    "do_not_save_grid": Tag(None, _bool),  # a script's sub-jobs never save grids
}


def parse_line(line: str) -> dict[str, Any]:
    """A1111's cmdargs: `--tag value` pairs -> {tag: parsed value} (LineError naming the tag)."""
    try:
        words = shlex.split(line)
    except ValueError as err:  # an unclosed quote
        raise LineError(None, f"cannot split it into options ({err})") from None
    out: dict[str, Any] = {}
    pos = 0
    while pos < len(words):
        word = words[pos]
        if not word.startswith("--"):
            raise LineError(None, f"{word!r} is not an option: options start with \"--\"")
        tag = word[2:]
        if pos + 1 >= len(words):
            raise LineError(tag, f"--{tag} has no value")
        if tag in ("prompt", "negative_prompt"):  # every word up to the next option
            pos += 1
            parts = [words[pos]]
            pos += 1
            while pos < len(words) and not words[pos].startswith("--"):
                parts.append(words[pos])
                pos += 1
            out[tag] = " ".join(parts)
            continue
        spec = TAGS.get(tag)
        if spec is None:
            raise LineError(tag, f"unknown option --{tag}; options: {', '.join('--' + t for t in TAGS)}")
        try:
            out[tag] = spec.parse(words[pos + 1])
        except ValueError as err:
            raise LineError(tag, f"--{tag} {words[pos + 1]!r}: {err}") from None
        pos += 2
    return out


def prompt_lines(text: str) -> list[str]:
    return [line for line in (x.strip() for x in text.splitlines()) if line]


@dataclass
class LinePlan:
    number: int  # 1-based, among the non-empty lines
    line: str
    changes: dict[str, Any]
    ignored: list[str] = field(default_factory=list)


def _join(line_text: str, tab_text: str, position: str) -> str:
    if not (line_text and tab_text):
        return line_text or tab_text
    return f"{line_text} {tab_text}" if position == "start" else f"{tab_text} {line_text}"


def plan_lines(request: GenerationRequest, args: PromptsFromFileArgs, services: ScriptServices,
               base_seed: Optional[int] = None) -> list[tuple[LinePlan, GenerationRequest]]:
    """Every line as its sub-request (validated), in order. ScriptArgsError names the line and option."""
    lines = prompt_lines(args.prompt_txt)
    if not lines:
        raise ScriptArgsError("prompt_txt", "no prompts: write one prompt (or one line of --options) per line")
    if len(lines) > MAX_LINES:
        raise ScriptArgsError("prompt_txt", f"{len(lines)} lines; at most {MAX_LINES}")
    seed = request.seed if base_seed is None else base_seed
    out = []
    for number, line in enumerate(lines, 1):
        plan = LinePlan(number, line, {})
        try:
            tags = parse_line(line) if "--" in line else {"prompt": line}
            plan.changes = _changes(request, args, tags, services, plan.ignored)
            plan.changes.setdefault("seed", seed)
            values = {name: getattr(request, name) for name in type(request).model_fields}
            values.update(save_grid=False, script=None, **plan.changes)
            sub = type(request)(**values)
        except LineError as err:
            where = f" (--{err.tag})" if err.tag else ""
            raise ScriptArgsError("prompt_txt", f"line {number}{where}: {err}; the line: {line!r}") from None
        except ValidationError as err:
            first = err.errors(include_url=False)[0]
            name = str(first["loc"][0]) if first["loc"] else ""
            tag = next((t for t, spec in TAGS.items() if spec.field == name and t in line), name)
            msg = str(first["msg"]).removeprefix("Value error, ")
            raise ScriptArgsError("prompt_txt", f"line {number} (--{tag}): {msg}; the line: {line!r}") from None
        out.append((plan, sub))
        if args.checkbox_iterate and seed != -1:
            seed += request.batch_size * request.batch_count  # A1111 steps by the tab's batch, not the line's
    return out


def _changes(request: GenerationRequest, args: PromptsFromFileArgs, tags: dict[str, Any],
             services: ScriptServices, ignored: list[str]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for tag, value in tags.items():
        spec = TAGS.get(tag)
        if spec is None or spec.field is None:
            ignored.append(tag)
            continue
        changes[spec.field] = (not value) if spec.invert else value
    changes["prompt"] = _join(tags.get("prompt", ""), request.prompt, args.prompt_position)
    if "negative_prompt" in tags:
        changes["negative_prompt"] = _join(tags["negative_prompt"], request.negative_prompt, args.prompt_position)
    if "styles" in changes:
        names = [n.strip() for n in str(changes.pop("styles")).split(",") if n.strip()]
        db = services.styles
        unknown = [n for n in names if db is None or n not in db]
        if unknown:
            raise LineError("styles", f"unknown style(s) {', '.join(map(repr, unknown))}; styles: "
                                      f"{', '.join(db.names()) if db is not None else 'none'}")
        changes["prompt"], changes["negative_prompt"] = db.apply(
            changes["prompt"], changes.get("negative_prompt", request.negative_prompt), names)
        changes["styles"] = tuple(dict.fromkeys((*request.styles, *names)))
    if "checkpoint" in changes and services.registry is not None:
        try:
            changes["checkpoint"] = services.registry.find_checkpoint(changes["checkpoint"]).name
        except Exception as err:  # noqa: BLE001 - UnknownModelError lists close matches
            raise LineError("sd_model", str(err)) from None
    return changes


class PromptsFromFile(SelectableScript):
    name = "prompts_from_file"
    title = "Prompts from file or textbox"
    Args = PromptsFromFileArgs
    api_fields = FIELDS
    sort_order = 20

    def positional_fields(self, values: Sequence[Any]) -> tuple[str, ...]:
        if len(values) == 3 and values[2] not in ("start", "end"):
            return FIELDS_OLD
        return FIELDS

    def check(self, request: GenerationRequest, args: BaseModel, services: ScriptServices) -> None:
        assert isinstance(args, PromptsFromFileArgs)
        plan_lines(request, args, services)

    def run(self, run: ScriptRun, args: BaseModel) -> GenerationResult:
        assert isinstance(args, PromptsFromFileArgs)
        seed = run.request.seed
        if (args.checkbox_iterate or args.checkbox_iterate_batch) and seed == -1:
            seed = random.randrange(2**32 - 1)  # one seed for every line (and the base of iterating)
        plans = plan_lines(run.request, args, run.services, base_seed=seed)
        run.begin(sum(sub.batch_count for _, sub in plans))
        out = Collector(run)
        ignored = sorted({tag for plan, _ in plans for tag in plan.ignored})
        if ignored:
            run.warnings.append("Prompts from file: accepted but not applied: "
                                + ", ".join(f"--{t}" for t in ignored))
        for _plan, sub in plans:
            if run.interrupted:
                break
            out.add_result(run.generate(sub), sub)
        return out.finish()

    def ui(self, is_img2img: bool) -> list[Any]:
        import gradio as gr

        pre = f"script_{'img2img' if is_img2img else 'txt2img'}_prompts_from_file_"
        with gr.Row():
            iterate = gr.Checkbox(label="Iterate seed every line", value=False, elem_id=f"{pre}checkbox_iterate")
            same = gr.Checkbox(label="Use same random seed for all lines", value=False,
                               elem_id=f"{pre}checkbox_iterate_batch")
        position = gr.Radio(["start", "end"], label="Insert prompts at the", value="start",
                            elem_id=f"{pre}prompt_position")
        text = gr.Textbox(label="List of prompt inputs", value="", lines=2, elem_id=f"{pre}prompt_txt",
                          placeholder='one prompt per line, or options: --prompt "a cat" --steps 10 --seed 1')
        upload = gr.File(label="Upload prompt inputs", type="binary", elem_id=f"{pre}file")
        upload.change(load_prompt_file, inputs=[upload], outputs=[upload, text], show_progress="hidden",
                      queue=False, api_visibility="private")
        return [iterate, same, position, text]


def load_prompt_file(data: Optional[bytes]) -> tuple[Any, Any]:
    """The uploaded file's lines go into the textbox (A1111: UTF-8, undecodable bytes dropped)."""
    import gradio as gr

    if data is None:
        return None, gr.skip()
    lines = [x.strip() for x in bytes(data).decode("utf-8", errors="ignore").split("\n")]
    return None, gr.update(value="\n".join(lines), lines=7)
