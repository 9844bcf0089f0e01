"""A1111 compatibility: an A1111-style extension in a temporary extensions/ folder, loaded by the
real loader, run through the real ExtensionSet on a real JobState (the engine's phases are driven
by hand here: prepare, process, one batch, postprocess_image, postprocess)."""

from __future__ import annotations

from contextlib import ExitStack

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from modules.cmd_args import parse_args
from modules.extensions.a1111_adapter import A1111ScriptArgs, A1111ScriptExtension, load_a1111_scripts, script_info
from modules.extensions.a1111_imports import check_import, UnsupportedA1111Module
from modules.extensions.a1111_p import Processing, ProcessingValueError, processing_for
from modules.extensions.a1111_registry import COMPAT
from modules.extensions.discovery import discover_extensions
from modules.extensions.hooks import OutputImage
from modules.extensions.runner import ExtensionHookError, ExtensionSet
from modules.jobs.control import JobControl
from modules.processing.job_state import BatchState, JobState
from modules.generation.request import GenerationRequest
from modules.generation.result import GenerationResult
from modules.settings import Options, SettingsStore
from tests.extension_factory import make_extension

SAMPLE = '''
import gradio as gr
from PIL import ImageOps
from modules import scripts, script_callbacks, shared

BASEDIR = scripts.basedir()


class SampleExt(scripts.Script):
    def title(self):
        return "Sample Ext"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        enabled = gr.Checkbox(label="Enable sample", value=False, elem_id=self.elem_id("enabled"))
        text = gr.Textbox(label="Sample text", value="default text")
        return [enabled, text]

    def process(self, p, enabled, text):
        if not enabled:
            return
        p.prompt = p.prompt + ", sample"
        p.all_prompts = [x + ", sample" for x in p.all_prompts]
        p.extra_generation_params["Sample"] = "yes"
        p.extra_generation_params["Sample text"] = text
        p.sample_state = "stashed in process"

    def before_process_batch(self, p, enabled, text, **kwargs):
        if enabled:
            kwargs["prompts"][:] = [x + " <lora:sample:1>" for x in kwargs["prompts"]]

    def process_batch(self, p, enabled, text, batch_number, prompts, seeds, subseeds):
        if enabled:
            p.extra_generation_params["Sample batch"] = f"{batch_number}:{seeds[0]}:{p.sample_state}"

    def postprocess_image(self, p, pp, enabled, text):
        if enabled:
            pp.image = ImageOps.invert(pp.image.convert("RGB"))

    def postprocess(self, p, processed, enabled, text):
        if enabled:
            p.extra_generation_params["Sample images"] = len(processed.images)


class HiddenHelper(scripts.Script):
    def title(self):
        return "Sample Selectable"

    def show(self, is_img2img):
        return not is_img2img


def on_tabs():
    with gr.Blocks(analytics_enabled=False) as block:
        gr.Markdown("sample tab")
    return [(block, "Sample Tab", "sample_tab")]


def on_started(demo, app):
    @app.get("/sample/ping")
    def ping():
        return {"basedir": BASEDIR, "format": shared.opts.samples_format}


def on_saved(params):
    with open(params.filename + ".sample.txt", "w", encoding="utf-8") as f:
        f.write(params.pnginfo["parameters"] + "|" + params.p.prompt)


script_callbacks.on_ui_tabs(on_tabs)
script_callbacks.on_app_started(on_started)
script_callbacks.on_image_saved(on_saved)
'''

BROKEN_IMPORT = '''
from modules import scripts
from modules import sd_models
'''

OUR_PACKAGE_IMPORT = '''
import modules.processing
'''

BROKEN_HOOKS = '''
from modules import scripts, script_callbacks


class BrokenHook(scripts.Script):
    def title(self):
        return "Broken Hook"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        raise RuntimeError("boom in process")


class BrokenCtor(scripts.Script):
    def __init__(self):
        raise RuntimeError("cannot start")

    def title(self):
        return "Broken Ctor"


def bad_saved(params):
    raise RuntimeError("callback boom")


script_callbacks.on_image_saved(bad_saved)
'''


@pytest.fixture(autouse=True)
def clean_compat():
    COMPAT.clear()
    yield
    COMPAT.clear()


@pytest.fixture()
def loaded(tmp_path):
    user = tmp_path / "extensions"
    make_extension(user, "sample-ext", {"scripts/sample.py": SAMPLE})
    make_extension(user, "broken-import", {"scripts/bad.py": BROKEN_IMPORT})
    make_extension(user, "our-package-import", {"scripts/bad.py": OUR_PACKAGE_IMPORT})
    make_extension(user, "broken-hooks", {"scripts/hooks.py": BROKEN_HOOKS})
    catalog = discover_extensions(user, tmp_path / "no-builtin", read_versions=False)
    scripts = load_a1111_scripts(catalog)
    extensions = ExtensionSet()
    assert scripts.add_to(extensions) == []
    return SimpleNamespace(catalog=catalog, scripts=scripts, extensions=extensions, user=user)


def start_job(request: GenerationRequest) -> JobState:
    """What the engine's prepare phase does before `process`: resolve size, prompts and seeds."""
    job = JobState(request=request, options=Options(), control=JobControl(), result=GenerationResult())
    job.width, job.height = request.width or 64, request.height or 64
    n = request.n_images
    job.all_prompts = [request.prompt] * n
    job.all_negative_prompts = [request.negative_prompt] * n
    job.all_seeds = [request.seed + i for i in range(n)]
    job.all_subseeds = [7 + i for i in range(n)]
    return job


def run_job(extensions: ExtensionSet, job: JobState, requested: dict) -> tuple[JobState, GenerationResult]:
    """Drives the hooks in the engine's order for one batch of solid (10, 20, 30) images."""
    # only the named scripts: every AlwaysVisible script would join otherwise, the broken ones too
    asked = {name.lower() for name in requested}
    hooks = ExtensionSet([e for e in extensions if e.name.lower() in asked]).for_request(requested)
    hooks.process(job)
    size = job.request.batch_size
    batch = BatchState(index=0, first_image=0, seeds=job.all_seeds[:size], subseeds=job.all_subseeds[:size],
                       prompts=job.all_prompts[:size], negative_prompts=job.all_negative_prompts[:size])
    hooks.before_batch(job, batch)
    hooks.process_batch(job, batch, ExitStack())
    result = job.result
    for i in range(size):
        out = OutputImage(i, Image.new("RGB", (8, 8), (10, 20, 30)), batch.seeds[i], batch.subseeds[i],
                          batch.prompts[i], batch.negative_prompts[i])
        hooks.postprocess_image(job, out)
        result.images.append(out.image)
        result.seeds.append(out.seed)
        result.prompts.append(out.prompt)
    job.extension_data["batch"] = batch
    hooks.postprocess(job, result)
    return job, result


# ---- loading


def test_sample_loads_with_its_scripts_and_broken_extensions_are_reported_by_name(loaded):
    ext = loaded.extensions.get("Sample Ext")
    assert isinstance(ext, A1111ScriptExtension) and ext.extension == "sample-ext"
    assert ext.visible(False) and ext.visible(True)
    assert [(s.title, s.is_img2img) for s in loaded.scripts.selectable] == [("Sample Selectable", False)]
    assert loaded.scripts.titles(False) == ["sample selectable", "broken hook", "sample ext"]  # folder order
    script = ext.scripts[False]
    assert script.name == "sample ext" and script.filename.endswith("scripts/sample.py")
    assert script.elem_id("enabled") == "script_txt2img_sample_ext_enabled"
    assert ext.scripts[True].is_img2img and ext.scripts[True].tabname == "img2img"

    errors = {e.extension: e.message for e in loaded.scripts.errors}
    assert errors["broken-import"] == ("scripts/bad.py failed to import: UnsupportedA1111Module: needs modules.sd_models, "
                                       "which this app does not provide; supported: scripts, script_callbacks, shared")
    # our own package is also called `modules`: an A1111 extension must not get our modules.processing
    assert "needs modules.processing, which this app does not provide" in errors["our-package-import"]
    assert "hooks.py: script BrokenCtor failed to start: RuntimeError: cannot start" in errors["broken-hooks"]
    # listed on the extension too, as /sdapi/v1/extensions shows it
    assert "needs modules.sd_models" in loaded.catalog.get("broken-import").error
    assert loaded.catalog.get("sample-ext").error == ""


def test_import_check_allows_only_the_compat_modules():
    for ok in [("modules", ("scripts", "shared")), ("modules.scripts", ()), ("modules.script_callbacks", ("on_ui_tabs",)),
               ("modules.extensions.hooks", ("JobExtension",)), ("os", ()), ("gradio", ())]:
        check_import(ok[0], ok[1], 0)
    for bad, fromlist, named in [("modules", ("scripts", "images"), "modules.images"),
                                 ("modules.processing", ("StableDiffusionProcessing",), "modules.processing"),
                                 ("modules.extensions", ("hooks",), "modules.extensions"),
                                 ("modules", ("*",), "modules.*")]:
        with pytest.raises(UnsupportedA1111Module) as err:
            check_import(bad, fromlist, 0)
        assert err.value.name == named and named in str(err.value)


def test_basedir_is_the_extension_folder_while_it_loads(loaded, tmp_path):
    module = next(m for f, m in loaded.scripts.modules if f.extension == "sample-ext")
    assert module.BASEDIR == str(loaded.user / "sample-ext")
    assert COMPAT.basedir() != module.BASEDIR  # reset after loading


# ---- a job through the hooks


def test_alwayson_args_change_the_job_through_process_and_postprocess_image(loaded):
    request = GenerationRequest(prompt="a cat", seed=100, steps=3, batch_size=2, width=64, height=64)
    job, result = run_job(loaded.extensions, start_job(request), {"sample ext": {"args": [True, "x"]}})

    assert job.all_prompts == ["a cat, sample", "a cat, sample"]  # once: A1111 derives all_prompts before process
    assert job.request.prompt == "a cat, sample"
    assert job.extra_params == {"Sample": "yes", "Sample text": "x", "Sample batch": "0:100:stashed in process",
                                "Sample images": 2}
    # before_process_batch edits the batch's prompt list in place
    assert job.extension_data["batch"].prompts == ["a cat, sample <lora:sample:1>"] * 2
    assert [img.getpixel((0, 0)) for img in result.images] == [(245, 235, 225)] * 2


def test_disabled_by_its_own_arg_changes_nothing(loaded):
    request = GenerationRequest(prompt="a cat", seed=1)
    job, result = run_job(loaded.extensions, start_job(request), {"SAMPLE EXT": {"args": [False]}})
    assert job.all_prompts == ["a cat"] and job.extra_params == {}
    assert result.images[0].getpixel((0, 0)) == (10, 20, 30)


def test_positional_args_map_with_ui_defaults_for_missing_trailing_values(loaded):
    ext = loaded.extensions.find("sAmPlE eXt")
    assert ext is loaded.extensions.get("Sample Ext")
    name, args = loaded.extensions.parse_args("SAMPLE EXT", {"args": [True]})
    assert name == "Sample Ext" and args == A1111ScriptArgs(args=[True])
    assert ext.positional_args(False, args) == [True, "default text"]
    assert ext.positional_args(False, A1111ScriptArgs()) == [False, "default text"]
    # more values than the ui() has components are cut, as A1111's API does
    assert ext.positional_args(True, A1111ScriptArgs(args=[True, "y", "extra"])) == [True, "y"]
    assert loaded.extensions.parse_args("sample ext", [True, "z"])[1].args == [True, "z"]

    job, _ = run_job(loaded.extensions, start_job(GenerationRequest(prompt="dog", seed=5)), {"Sample Ext": {"args": [True]}})
    assert job.extra_params["Sample text"] == "default text"


def test_alwayson_scripts_not_requested_run_with_their_defaults(loaded):
    requested = loaded.scripts.with_alwayson_defaults({"sample EXT": {"args": [True]}}, is_img2img=False)
    assert requested == {"sample EXT": {"args": [True]}, "Broken Hook": A1111ScriptArgs()}


def test_bad_args_are_a_named_validation_error(loaded):
    from modules.extensions.runner import ExtensionArgsError

    with pytest.raises(ExtensionArgsError) as err:
        loaded.extensions.for_request({"sample ext": {"args": "not a list"}})
    assert err.value.name == "Sample Ext"


def test_a_failing_hook_is_named_and_the_next_job_is_unaffected(loaded):
    request = GenerationRequest(prompt="a cat", seed=1)
    with pytest.raises(ExtensionHookError) as err:
        run_job(loaded.extensions, start_job(request), {"broken hook": {"args": []}, "sample ext": {"args": [True]}})
    assert err.value.extension == "Broken Hook" and err.value.hook == "process"
    assert "boom in process" in str(err.value)

    job, result = run_job(loaded.extensions, start_job(request), {"sample ext": {"args": [True]}})
    assert job.all_prompts == ["a cat, sample"] and result.images[0].getpixel((0, 0)) == (245, 235, 225)


# ---- p


def test_p_reads_and_writes_job_state_with_validation():
    request = GenerationRequest(prompt="p", negative_prompt="n", seed=-1, steps=4, batch_size=2, batch_count=2,
                                sampler_name="Euler a", cfg_scale=5.0, width=64, height=96)
    job = start_job(request.model_copy(update={"seed": -1}))
    job.all_seeds = [41, 42, 43, 44]
    p = Processing(job)
    assert (p.prompt, p.negative_prompt, p.steps, p.cfg_scale, p.sampler_name) == ("p", "n", 4, 5.0, "Euler a")
    assert (p.width, p.height, p.batch_size, p.n_iter, p.seed) == (64, 96, 2, 2, 41)
    assert p.is_img2img is False and p.init_images == [] and p.outpath_samples == "outputs/txt2img-images"
    assert p.extra_generation_params is job.extra_params

    p.steps, p.cfg_scale, p.width = 9, 3.5, 128
    assert (job.request.steps, job.request.cfg_scale, job.request.width, job.width) == (9, 3.5, 128, 128)
    with pytest.raises(ProcessingValueError, match=r"p\.steps = 0 is not valid: steps: .*greater than or equal to 1"):
        p.steps = 0
    with pytest.raises(ProcessingValueError, match=r"p\.width = 100 is not valid: .*multiple of 8"):
        p.width = 100
    assert job.request.steps == 9  # the failed write left the request as it was
    with pytest.raises(AttributeError, match=r"p\.batch_size cannot be changed"):
        p.batch_size = 4

    p.all_seeds = [1, 2, 3, 4]
    assert job.all_seeds == [1, 2, 3, 4]
    p.my_extension_state = {"x": 1}  # extensions stash state on p
    assert p.my_extension_state == {"x": 1}
    with pytest.raises(AttributeError, match=r"p\.sd_model is not provided by this app"):
        p.sd_model
    with pytest.raises(AttributeError, match=r"p\.prompts is only set while a batch runs"):
        p.prompts
    assert processing_for(job) is processing_for(job)


def test_prompt_changed_in_before_process_is_carried_into_all_prompts(tmp_path):
    make_extension(tmp_path / "ext", "early", {"scripts/early.py": '''
from modules import scripts

class Early(scripts.Script):
    def title(self):
        return "Early"
    def show(self, is_img2img):
        return scripts.AlwaysVisible
    def before_process(self, p, *args):
        p.prompt = "new"
'''})
    scripts = load_a1111_scripts(discover_extensions(tmp_path / "ext", None, read_versions=False))
    job = start_job(GenerationRequest(prompt="old", batch_size=2))
    job.all_prompts = ["old", "old, styled"]
    ExtensionSet(scripts.extensions).for_request({"early": {}}).process(job)
    assert job.all_prompts == ["new", "new, styled"] and job.request.prompt == "new"


# ---- script-info and the UI


def test_script_info_reads_the_ui_components(loaded):
    infos = {(i.name, i.is_img2img): i for i in script_info(loaded.scripts)}
    assert set(infos) == {("sample ext", False), ("sample ext", True), ("broken hook", False),
                          ("broken hook", True), ("sample selectable", False)}
    sample = infos[("sample ext", False)].as_dict()
    assert sample["is_alwayson"] is True
    assert [(a["label"], a["value"]) for a in sample["args"]] == [("Enable sample", False), ("Sample text", "default text")]
    assert infos[("sample selectable", False)].is_alwayson is False and infos[("broken hook", True)].args == ()


def test_ui_builds_the_components_inside_the_tab_and_keeps_their_defaults(loaded):
    import gradio as gr

    ext = loaded.extensions.get("sample ext")
    with gr.Blocks():
        components = ext.ui(True)
    assert [type(c).__name__ for c in components] == ["Checkbox", "Textbox"]
    assert components[0].elem_id == "script_img2img_sample_ext_enabled"
    assert ext.scripts[True].controls == components
    assert ext.positional_args(True, A1111ScriptArgs(args=[True])) == [True, "default text"]


# ---- callbacks


def test_ui_tabs_app_started_and_image_saved_callbacks(loaded, tmp_path, caplog):
    import gradio as gr
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from modules import script_callbacks, shared

    tabs = script_callbacks.ui_tabs_callback()
    assert [(t.title, t.elem_id, isinstance(t.block, gr.Blocks)) for t in tabs] == [("Sample Tab", "sample_tab", True)]
    block, title, elem_id = tabs[0]  # A1111's tuple shape

    store = SettingsStore(None, Options().updated({"samples_format": "webp"}))
    shared.bind(store, parse_args([]))
    app = FastAPI()
    script_callbacks.app_started_callback(None, app)
    body = TestClient(app).get("/sample/ping").json()
    assert body == {"basedir": str(loaded.user / "sample-ext"), "format": "webp"}

    saved = tmp_path / "00001-1.png"
    job = start_job(GenerationRequest(prompt="a cat"))
    with caplog.at_level(logging.ERROR):
        script_callbacks.image_saved_callback(script_callbacks.ImageSaveParams(
            Image.new("RGB", (8, 8)), processing_for(job), str(saved), {"parameters": "a cat\nSteps: 20"}))
    assert Path(str(saved) + ".sample.txt").read_text(encoding="utf-8") == "a cat\nSteps: 20|a cat"
    failed = [r for r in caplog.records if "callback boom" in (r.exc_text or "")]
    assert failed and "'broken-hooks'" in failed[0].getMessage()
    # the broken callback (first, by folder order) was skipped and the sample's still ran
    assert [c.owner for c in COMPAT.callbacks["image_saved"]] == ["broken-hooks", "sample-ext"]

    COMPAT.clear()
    assert script_callbacks.ui_tabs_callback() == []


def test_unsupported_callback_names_itself():
    from modules import script_callbacks

    with pytest.raises(AttributeError, match="script_callbacks.on_ui_settings is not provided by this app"):
        script_callbacks.on_ui_settings


# ---- shared


def test_shared_opts_is_a_read_only_view_of_the_current_settings(tmp_path):
    from modules import shared

    # before bind(): A1111's defaults
    assert shared.opts.samples_format == "png" and shared.opts.sd_vae == "Automatic"
    assert shared.opts.data["eta_ddim"] == 0.0 and shared.cmd_opts.port == 7860
    assert getattr(shared.opts, "no_such_option", "fallback") == "fallback"

    store = SettingsStore(tmp_path / "config.json")
    shared.bind(store, parse_args(["--port", "9999"]))
    assert shared.cmd_opts.port == 9999
    store.update({"samples_format": "jpg"})
    assert shared.opts.samples_format == "jpg" and shared.opts.data["samples_format"] == "jpg"

    data = shared.opts.data
    data["samples_format"] = "webp"  # a copy
    assert shared.opts.samples_format == "jpg"
    with pytest.raises(AttributeError, match="shared.opts is read-only in this app .*'samples_format'"):
        shared.opts.samples_format = "png"
    with pytest.raises(AttributeError, match="read-only"):
        shared.opts.set("samples_format", "png")
    assert store.get().samples_format == "jpg"
    with pytest.raises(AttributeError, match="shared.state is not provided by this app"):
        shared.state


def test_two_scripts_with_one_title_the_second_is_reported(tmp_path):
    script = '''
from modules import scripts

class Same(scripts.Script):
    def title(self):
        return "Same Title"
    def show(self, is_img2img):
        return scripts.AlwaysVisible
'''
    make_extension(tmp_path / "ext", "a-first", {"scripts/s.py": script})
    make_extension(tmp_path / "ext", "b-second", {"scripts/s.py": script.replace("Same Title", "same title")})
    scripts = load_a1111_scripts(discover_extensions(tmp_path / "ext", None, read_versions=False))
    extensions = ExtensionSet()
    clashes = scripts.add_to(extensions)
    assert extensions.get("SAME TITLE").extension == "a-first"
    assert [(e.extension, "two extensions are named 'same title'" in e.message) for e in clashes] == [("b-second", True)]
