"""The right-hand column of txt2img and img2img: progress, live preview, gallery, generation info,
and the image tools (open folder, save, zip, send to img2img / inpaint).

`generation_handler` is the one place a tab's Generate button runs: build request(s) from the
controls, submit through the queue, stream progress, show the result or a readable error.
"""

from __future__ import annotations

import csv
import datetime as _dt
import html
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Union

import gradio as gr
from PIL import Image

from modules.atomic_write import write_bytes_atomic
from modules.generation.request import GenerationRequest
from modules.generation.result import GenerationResult, ImageParams
from modules.image_files import encode_png
from modules.infotext import format_number
from webui import jobs
from webui.common import error, escape, format_error, tool_button
from webui.env import UiEnv
from webui.toprow import Toprow

GalleryItem = Union[str, Image.Image]


@dataclass(frozen=True)
class ShownParams:
    """The structured parameters of one shown image: the job's request and the image's record."""

    request: GenerationRequest
    image: ImageParams


@dataclass
class Shown:
    """What a session's gallery shows, item by item (a grid, when there is one, comes first).
    `infotexts` are shown and written into files; `params` are read (log.csv), never the text."""

    items: list[GalleryItem] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    params: list[Optional[ShownParams]] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    subseeds: list[int] = field(default_factory=list)
    first_image_index: int = 0
    folder: Optional[str] = None
    log: str = ""

    def clamp(self, index: Optional[int]) -> int:
        if not self.items:
            return -1
        index = 0 if index is None else int(index)
        return index if 0 <= index < len(self.items) else 0

    def image(self, index: Optional[int]) -> Optional[Image.Image]:
        i = self.clamp(index)
        if i < 0:
            return None
        item = self.items[i]
        if isinstance(item, Image.Image):
            return item
        with Image.open(item) as img:
            img.load()
            return img.copy()

    def infotext(self, index: Optional[int]) -> str:
        i = self.clamp(index)
        return self.infotexts[i] if 0 <= i < len(self.infotexts) else ""


@dataclass
class OutputPanel:
    tab: str
    progress: gr.HTML
    preview: gr.Image
    gallery: gr.Gallery
    open_folder: gr.Button
    save: gr.Button
    save_zip: gr.Button
    send_to_img2img: gr.Button
    send_to_inpaint: gr.Button
    send_to_extras: gr.Button
    download: gr.File
    info: gr.HTML
    log: gr.HTML
    shown: gr.State
    selected: gr.State
    job_id: gr.State


@dataclass
class JobStep:
    """One request of a Generate click; `after` may save or post-process its result."""

    request: GenerationRequest
    label: str = ""
    after: Optional[Callable[[GenerationResult], Optional[str]]] = None


def build(env: UiEnv, tab: str) -> OutputPanel:
    with gr.Column(elem_id=f"{tab}_results", elem_classes=["results"]):
        progress = gr.HTML("", elem_id=f"{tab}_progress", elem_classes=["progress-holder"], padding=False,
                           js_on_load=None)
        preview = gr.Image(label="Live preview", visible=False, interactive=False, elem_id=f"{tab}_preview",
                           show_label=True, format="png", height=360, buttons=["fullscreen"])
        gallery = gr.Gallery(label="Output", show_label=False, elem_id=f"{tab}_gallery", columns=4,
                             height=480, preview=True, object_fit="contain", format="png", interactive=False,
                             buttons=["download", "fullscreen"])
        with gr.Row(elem_id=f"image_buttons_{tab}", elem_classes=["image-buttons"]):
            open_folder = tool_button("📂", "Open images output directory", f"{tab}_open_folder")
            save = tool_button("💾", "Save the image to a dedicated directory (log/images)", f"save_{tab}")
            save_zip = tool_button("🗃️", "Save zip archive with images to a dedicated directory (log/images)",
                                   f"save_zip_{tab}")
            send_to_img2img = tool_button("🖼️", "Send image and generation parameters to img2img tab",
                                          f"{tab}_send_to_img2img")
            send_to_inpaint = tool_button("🎨", "Send image and generation parameters to img2img inpaint tab",
                                          f"{tab}_send_to_inpaint")
            send_to_extras = tool_button("📐", "Send image and generation parameters to extras tab",
                                         f"{tab}_send_to_extras")
        download = gr.File(label="Download", file_count="multiple", interactive=False, visible=False,
                           elem_id=f"download_files_{tab}")
        info = gr.HTML("", elem_id=f"html_info_{tab}", elem_classes=["infotext"], js_on_load=None)
        log = gr.HTML("", elem_id=f"html_log_{tab}", elem_classes=["html-log"], js_on_load=None)
    panel = OutputPanel(tab, progress, preview, gallery, open_folder, save, save_zip, send_to_img2img,
                        send_to_inpaint, send_to_extras, download, info, log, gr.State(None), gr.State(0),
                        gr.State(None))
    _wire_tools(env, panel)
    return panel


# ---------------------------------------------------------------------------------------------
# showing results


def infotext_html(text: str) -> str:
    if not text:
        return ""
    lines = "<br>".join(escape(line) for line in text.split("\n"))
    return f"<div class='infotext-body'><p>{lines}</p></div>"


def _display_roots(env: UiEnv) -> list[Path]:
    roots = [Path.cwd(), Path(tempfile.gettempdir()), env.ctx.paths.outputs_dir, *map(Path, env.served_roots)]
    return [r.resolve() for r in roots]


def _gallery_item(env: UiEnv, path: Optional[str], image: Image.Image) -> GalleryItem:
    """The saved file when the browser may be served it (so downloads keep their infotext)."""
    if path:
        resolved = Path(path).resolve()
        if resolved.is_file() and any(resolved.is_relative_to(root) for root in _display_roots(env)):
            return str(resolved)
    return image


def _shown_params(result: GenerationResult, index: int) -> Optional[ShownParams]:
    if result.request is None or index >= len(result.params):
        return None
    return ShownParams(result.request, result.params[index])


def to_shown(env: UiEnv, results: list[tuple[GenerationResult, str]], notes: list[str]) -> Shown:
    shown = Shown()
    for result, _label in results:
        if result.grid is not None and len(results) == 1 and len(result.images) > 1:
            shown.items.append(_gallery_item(env, result.grid_path, result.grid))
            shown.infotexts.append(result.infotexts[0] if result.infotexts else "")
            shown.params.append(_shown_params(result, 0))
            shown.seeds.append(result.seed)
            shown.subseeds.append(result.subseeds[0] if result.subseeds else -1)
            shown.first_image_index = 1
        for i, image in enumerate(result.images):
            path = result.saved_paths[i] if i < len(result.saved_paths) else None
            shown.items.append(_gallery_item(env, path, image))
            shown.infotexts.append(result.infotexts[i] if i < len(result.infotexts) else "")
            shown.params.append(_shown_params(result, i))
            shown.seeds.append(result.seeds[i] if i < len(result.seeds) else -1)
            shown.subseeds.append(result.subseeds[i] if i < len(result.subseeds) else -1)
        if result.saved_paths and shown.folder is None:
            shown.folder = str(Path(result.saved_paths[0]).parent)
    # Extensions' pictures (ControlNet's detected maps) after all generations: not generations,
    # so no infotext, seed or parameters of their own.
    for result, _label in results:
        for image in result.extra_images:
            shown.items.append(image)
            shown.infotexts.append("")
            shown.params.append(None)
            shown.seeds.append(-1)
            shown.subseeds.append(-1)
    if results:
        total = sum(r.timings.total_s for r, _ in results)
        warnings = [w for r, _ in results for w in r.warnings]
        parts = [f"<p class='time'>Time taken: <b>{total:.2f} s</b></p>"]
        if any(r.interrupted for r, _ in results):
            parts.append("<p class='note'>Interrupted.</p>")
        parts += [f"<p class='warning'>{escape(w)}</p>" for w in warnings]
        parts += [f"<p class='note'>{escape(n)}</p>" for n in notes if n]
        shown.log = "".join(parts)
    return shown


def generation_handler(env: UiEnv, panel: OutputPanel, row: Toprow,
                       plan: Callable[[dict], list[JobStep]]) -> Callable:
    """The Generate click: a generator streaming progress; raises gr.Error with a readable text."""
    ctx = env.ctx

    def run(values: dict):
        try:
            steps = plan(values)
        except Exception as exc:
            raise error(exc)
        if not steps:
            raise gr.Error("Nothing to do: no images were found to process.")
        yield {row.generate: gr.Button(visible=False), row.interrupt: gr.Button(visible=True),
               row.skip: gr.Button(visible=True), panel.progress: jobs.progress_html(None),
               panel.download: gr.File(value=None, visible=False), panel.log: ""}
        results: list[tuple[GenerationResult, str]] = []
        notes: list[str] = []
        job_ids: list[str] = []
        for n, step in enumerate(steps):
            try:
                job = jobs.submit(ctx, step.request)
            except Exception as exc:
                raise error(exc)
            job_ids.append(job.id)
            yield {panel.job_id: job.id}
            label = step.label or (f"{n + 1}/{len(steps)}" if len(steps) > 1 else "")
            for update in jobs.follow(ctx, job):
                out: dict = {panel.progress: jobs.progress_html(update, label)}
                if update.new_preview:  # the preview takes the gallery's place while sampling
                    out[panel.preview] = gr.Image(value=update.snapshot.preview, visible=True)
                    out[panel.gallery] = gr.Gallery(visible=False)
                yield out
            try:
                result = job.future.result()
            except Exception as exc:
                if results:  # keep what finished; say what failed
                    gr.Warning(format_error(exc))
                    break
                raise error(exc)
            if step.after is not None:
                try:
                    notes.append(step.after(result) or "")
                except Exception as exc:
                    raise error(exc)
            results.append((result, step.label))
            if result.interrupted or job.control.interrupted:  # also stops a batch between two jobs
                break
        shown = to_shown(env, results, notes)
        # The job ids make every finished run's log unique (tests and scripts wait on a change).
        shown.log += f"<span class='job-ids' hidden>{' '.join(job_ids)}</span>"
        yield {
            panel.gallery: gr.Gallery(value=list(shown.items), selected_index=0 if shown.items else None,
                                      visible=True),
            panel.preview: gr.Image(value=None, visible=False),
            panel.info: infotext_html(shown.infotext(0)),
            panel.log: shown.log,
            panel.shown: shown,
            panel.selected: 0,
        }

    return run


def finished_outputs(panel: OutputPanel, row: Toprow) -> tuple[Callable, list]:
    """Run after every Generate, failed or not: buttons back, job forgotten, bar and preview gone."""

    def done():
        return (gr.Button(visible=True), gr.Button(visible=False), gr.Button(visible=False), None, "",
                gr.Image(visible=False), gr.Gallery(visible=True))

    return done, [row.generate, row.interrupt, row.skip, panel.job_id, panel.progress, panel.preview,
                  panel.gallery]


def wire_generation(env: UiEnv, panel: OutputPanel, row: Toprow, plan: Callable[[dict], list[JobStep]],
                    inputs: set) -> None:
    run = generation_handler(env, panel, row, plan)
    outputs = [row.generate, row.interrupt, row.skip, panel.progress, panel.preview, panel.gallery, panel.info,
               panel.log, panel.shown, panel.selected, panel.job_id, panel.download]
    done, done_outputs = finished_outputs(panel, row)
    row.generate.click(run, inputs, outputs, show_progress="hidden", concurrency_limit=None,
                       api_visibility="private").then(
        done, None, done_outputs, show_progress="hidden", queue=False)
    row.interrupt.click(lambda jid: jobs.interrupt(env.ctx, jid) and None, panel.job_id, None,
                        show_progress="hidden", concurrency_limit=None, api_visibility="private")
    row.skip.click(lambda jid: jobs.skip(env.ctx, jid) and None, panel.job_id, None,
                   show_progress="hidden", concurrency_limit=None, api_visibility="private")


# ---------------------------------------------------------------------------------------------
# tools under the gallery


def _save_dir(env: UiEnv) -> Path:
    return env.ctx.paths.data_dir / "log" / "images"


def _unique(folder: Path, name: str) -> Path:
    target = folder / name
    stem, suffix = target.stem, target.suffix
    n = 1
    while target.exists():
        target = folder / f"{stem}-{n}{suffix}"
        n += 1
    return target


def log_row(params: Optional[ShownParams], filename: str) -> list[str]:
    """A log.csv row in A1111's columns, read from the image's structured parameters."""
    if params is None:
        return ["", "", "", "", "", "", "", filename, "", ""]
    request, image = params.request, params.image
    return [image.prompt, str(image.seed), str(image.width), str(image.height), image.sampler_name,
            format_number(request.cfg_scale), str(request.steps), filename, image.negative_prompt,
            image.model_name or ""]


def save_items(env: UiEnv, shown: Shown, indexes: Iterable[int]) -> list[Path]:
    """Copy shown images into log/images and add a log.csv row each, as A1111's Save does."""
    folder = _save_dir(env)
    folder.mkdir(parents=True, exist_ok=True)
    saved = []
    log_path = folder.parent / "log.csv"
    new_log = not log_path.exists()
    with open(log_path, "a", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        if new_log:
            writer.writerow(["prompt", "seed", "width", "height", "sampler", "cfgs", "steps", "filename",
                             "negative_prompt", "sd_model_name"])
        for i in indexes:
            item, text = shown.items[i], shown.infotexts[i]
            if isinstance(item, str):
                target = _unique(folder, Path(item).name)
                shutil.copy2(item, target)
            else:
                target = _unique(folder, f"{_dt.datetime.now():%Y%m%d%H%M%S}-{shown.seeds[i]}.png")
                write_bytes_atomic(target, encode_png(item, text))
            saved.append(target)
            writer.writerow(log_row(shown.params[i] if i < len(shown.params) else None, target.name))
    return saved


def zip_items(env: UiEnv, shown: Shown) -> Path:
    folder = _save_dir(env)
    folder.mkdir(parents=True, exist_ok=True)
    target = _unique(folder, f"images_{_dt.datetime.now():%Y%m%d_%H%M%S}.zip")
    tmp = target.with_name(f".{target.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(shown.first_image_index, len(shown.items)):
            item = shown.items[i]
            if isinstance(item, str):
                zf.write(item, arcname=f"{i - shown.first_image_index:05d}-{Path(item).name}")
            else:
                zf.writestr(f"{i - shown.first_image_index:05d}-{shown.seeds[i]}.png",
                            encode_png(item, shown.infotexts[i]))
    os.replace(tmp, target)
    return target


def outputs_folder(env: UiEnv, tab: str, shown: Optional[Shown]) -> Path:
    if shown is not None and shown.folder:
        return Path(shown.folder)
    opts = env.ctx.settings.get()
    configured = getattr(opts, f"outdir_{tab}_samples", "") or opts.outdir_samples
    if configured:
        path = Path(configured)
        return path if path.is_absolute() else env.ctx.paths.outputs_dir / path
    return env.ctx.paths.outputs_dir / f"{tab}-images"


def _wire_tools(env: UiEnv, panel: OutputPanel) -> None:
    def on_select(shown: Optional[Shown], evt: gr.SelectData):
        index = evt.index if isinstance(evt.index, int) else 0
        text = shown.infotext(index) if shown else ""
        return index, infotext_html(text)

    panel.gallery.select(on_select, panel.shown, [panel.selected, panel.info], show_progress="hidden",
                         api_visibility="private")

    def save(shown: Optional[Shown], selected: int):
        if not shown or not shown.items:
            raise gr.Error("Nothing to save: generate an image first.")
        try:
            paths = save_items(env, shown, [shown.clamp(selected)])
        except Exception as exc:
            raise error(exc)
        msg = f"Saved: {paths[0]}"
        return gr.File(value=[str(p) for p in paths], visible=True), f"<p class='note'>{escape(msg)}</p>"

    def save_zip(shown: Optional[Shown]):
        if not shown or not shown.items:
            raise gr.Error("Nothing to zip: generate an image first.")
        try:
            path = zip_items(env, shown)
        except Exception as exc:
            raise error(exc)
        return gr.File(value=[str(path)], visible=True), f"<p class='note'>{escape(f'Saved: {path}')}</p>"

    def open_folder(shown: Optional[Shown]):
        folder = outputs_folder(env, panel.tab, shown)
        gr.Info(f"Images are saved in {folder}")
        note = f"Outputs folder: <code>{html.escape(str(folder))}</code>"
        if not folder.exists():
            note += " (not created yet: nothing has been saved there)"
        return f"<p class='note'>{note}</p>"

    panel.save.click(save, [panel.shown, panel.selected], [panel.download, panel.log], show_progress="hidden",
                     api_visibility="private")
    panel.save_zip.click(save_zip, panel.shown, [panel.download, panel.log], show_progress="hidden",
                         api_visibility="private")
    panel.open_folder.click(open_folder, panel.shown, panel.log, show_progress="hidden", api_visibility="private")


def reuse_seed_handler(kind: str) -> Callable[[Optional[Shown], int], Any]:
    """♻️: the seed (or variation seed) of the image selected in the gallery, A1111's rule."""

    def reuse(shown: Optional[Shown], selected: int):
        if not shown or not shown.items:
            gr.Warning("No previous generation to take the seed from.")
            return gr.skip()
        values = shown.seeds if kind == "seed" else shown.subseeds
        index = shown.clamp(selected)
        return values[index] if 0 <= index < len(values) else values[0]

    return reuse
