"""The gradio web UI: `build_ui(ctx)` makes the Blocks, `launch_ui(ctx)` serves it with the flags.

Torch-free: everything heavy lives behind ctx.queue (the engine) and ctx.registry (passed in
already built). Each tab is its own module; this file lays them out and wires what crosses tabs
(send-to buttons, PNG Info, page-load refresh).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import gradio as gr
from PIL import Image

from modules import script_callbacks
from modules.credentials import ui_credentials
from modules.share_link import ShareOutcome, ShareTunnel, start_share
from modules.styles import StyleDatabase
from modules.ui_config import UiConfig
from webui import img2img, paste, png_info, quicksettings, settings_tab, token_counter, toprow, txt2img
from webui import extension_assets, extensions_tab, extras, icons
from webui.common import error, tooltips
from webui.env import UiEnv
from webui.loaded_extensions import loaded_extensions
from webui.restart import QUEUE_DRAIN_S, process_restarter

if TYPE_CHECKING:
    from modules.app_context import AppContext

log = logging.getLogger("webui")
ASSETS = Path(__file__).resolve().parent / "assets"
TITLE = "Stable Diffusion"


@dataclass
class Ui:
    """Handles on the built page, for wiring and tests."""

    env: UiEnv
    tabs: gr.Tabs
    quick: quicksettings.Quicksettings
    txt2img: txt2img.Txt2ImgTab
    img2img: img2img.Img2ImgTab
    extras: extras.ExtrasTab
    png_info: png_info.PngInfoTab
    settings: settings_tab.SettingsTab
    extensions: extensions_tab.ExtensionsTab
    extension_tabs: list[str]  # elem_ids of the tabs extensions added (on_ui_tabs)


def ui_config_path(ctx: "AppContext") -> Path:
    flag = getattr(ctx.args, "ui_config_file", None)
    return Path(flag) if flag else ctx.paths.ui_config_file


def build_ui(ctx: "AppContext", ui_config: Optional[UiConfig] = None,
             styles: Optional[StyleDatabase] = None, restart: Optional[Callable[[], None]] = None) -> gr.Blocks:
    """The whole page. The Ui handles are on `demo.sd_ui`. `restart` restarts the server process
    (the Extensions tab's "Apply and restart UI"); None: it only saves and says to restart."""
    env = UiEnv(ctx=ctx, ui_config=ui_config or UiConfig(ui_config_path(ctx)),
                styles=styles or StyleDatabase(ctx.paths.styles_file))
    added_tabs = _extension_ui_tabs(ctx)  # extensions build theirs as separate Blocks, before ours
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        quick = quicksettings.build(env)
        with gr.Tabs(elem_id="tabs", selected="txt2img") as tabs:
            with gr.Tab("txt2img", id="txt2img", elem_id="tab_txt2img"):
                t2i = txt2img.build(env, quick)
            with gr.Tab("img2img", id="img2img", elem_id="tab_img2img"):
                i2i = img2img.build(env, quick)
            with gr.Tab("Extras", id="extras", elem_id="tab_extras"):
                ext_tab = extras.build(env)
            with gr.Tab("PNG Info", id="pnginfo", elem_id="tab_pnginfo"):
                png = png_info.build(env)
            extension_tab_ids = _render_extension_tabs(added_tabs)
            with gr.Tab("Settings", id="settings", elem_id="tab_settings"):
                st = settings_tab.build(env)
            with gr.Tab("Extensions", id="extensions", elem_id="tab_extensions"):
                ext = extensions_tab.build(env, restart)
        ui = Ui(env, tabs, quick, t2i, i2i, ext_tab, png, st, ext, extension_tab_ids)
        for row in (t2i.toprow, i2i.toprow):
            toprow.wire_style_saving(env, row)
        _wire_send_to(ui)
        _wire_page_load(ui, demo)
    env.blocks = demo
    for problem in env.ui_config.errors:
        log.warning("ui-config: %s", problem)
    try:
        env.ui_config.save_missing()
    except OSError as exc:  # a read-only data dir must not stop the UI
        log.warning("could not write %s: %s", env.ui_config.path, exc)
    demo.sd_ui = ui
    return demo


OWN_TAB_IDS = frozenset({"txt2img", "img2img", "extras", "pnginfo", "settings", "extensions"})


def _extension_ui_tabs(ctx: "AppContext") -> list[script_callbacks.UiTab]:
    """A1111's on_ui_tabs tabs, when this app loaded extension scripts (the callbacks are the
    compat layer's process-wide registry, filled as those scripts import)."""
    if not loaded_extensions(ctx).scripts.modules:
        return []
    return script_callbacks.ui_tabs_callback()


def _render_extension_tabs(added: list[script_callbacks.UiTab]) -> list[str]:
    """Each extension Blocks in a tab of the main row; one that fails to render is logged and left out."""
    shown: list[str] = []
    for block, title, elem_id in added:
        if elem_id in OWN_TAB_IDS or elem_id in shown:
            log.error("extension tab %r: its id %r is already taken; not shown", title, elem_id)
            continue
        try:
            with gr.Tab(title, id=elem_id, elem_id=f"tab_{elem_id}"):
                block.render()
        except Exception:  # noqa: BLE001 - an extension's tab must not take the page down
            log.exception("extension tab %r could not be shown", title)
            continue
        shown.append(elem_id)
    return shown


def _targets(ui: Ui) -> tuple[paste.PasteTarget, paste.PasteTarget]:
    t, i = ui.txt2img, ui.img2img
    t2i = paste.PasteTarget(t.toprow, t.sampler, t.size, t.batch, t.seed, ui.quick, features=t.features,
                            hires=t.hires, extensions=t.extensions)
    i2i = paste.PasteTarget(i.toprow, i.sampler, i.size, i.batch, i.seed, ui.quick,
                            denoising_strength=i.denoising_strength, inpaint=i.inpaint, features=i.features,
                            extensions=i.extensions)
    return t2i, i2i


def _wire_send_to(ui: Ui) -> None:
    env = ui.env
    t2i_target, i2i_target = _targets(ui)
    i2i = ui.img2img
    i2i_switch = [ui.tabs, i2i.subtabs, i2i.mode, i2i.inpaint.group]

    def fill(text: str, target: paste.PasteTarget) -> dict:
        if not text:
            return {}
        try:
            return paste.paste_values(env, text, target)
        except ValueError as exc:
            gr.Warning(str(exc))
            return {}

    def image_to_img2img(mode: str):
        component = i2i.init_img if mode == "img2img" else i2i.inpaint_editor

        def send(image, text: str, brush_percent: float):
            if image is None:
                raise gr.Error("No image to send: generate or select an image first.")
            out = {ui.tabs: gr.Tabs(selected="img2img"), **img2img.switch_to(i2i, mode), **fill(text, i2i_target)}
            if mode == "img2img":
                out[component] = image
            else:  # the brush sized to this picture, as an upload gets it
                radius = img2img.brush_radius(image.size, brush_percent or img2img.BRUSH_PERCENT)
                out[component] = gr.ImageEditor(value={"background": image, "layers": [], "composite": image},
                                                brush=img2img.mask_brush(radius))
            return out

        return send, component

    outputs_i2i = [*i2i_switch, i2i.init_img, i2i.inpaint_editor, *i2i_target.components()]

    # gallery → img2img / inpaint (from both tabs' galleries)
    for panel in (ui.txt2img.panel, ui.img2img.panel):
        for button, mode in ((panel.send_to_img2img, "img2img"), (panel.send_to_inpaint, "inpaint")):
            send, _ = image_to_img2img(mode)

            def from_gallery(shown, selected, brush_percent, send=send):
                if not shown or not shown.items:
                    raise gr.Error("No image to send: generate an image first.")
                try:
                    image = shown.image(selected)
                except Exception as exc:
                    raise error(exc)
                return send(image, shown.infotext(selected), brush_percent)

            button.click(from_gallery, [panel.shown, panel.selected, i2i.brush_size], outputs_i2i,
                         show_progress="hidden", api_visibility="private")

    # gallery / PNG Info → Extras: the image with its generation parameters (kept in the result)
    def to_extras(image: Image.Image, text: str) -> dict:
        if text and "parameters" not in image.info:
            image.info["parameters"] = text
        return {ui.tabs: gr.Tabs(selected="extras"), **extras.switch_to_single(ui.extras, image)}

    def gallery_to_extras(shown, selected):
        if not shown or not shown.items:
            raise gr.Error("No image to send: generate an image first.")
        try:
            return to_extras(shown.image(selected), shown.infotext(selected))
        except Exception as exc:
            raise error(exc)

    extras_outputs = [ui.tabs, ui.extras.subtabs, ui.extras.mode, ui.extras.image]
    for panel in (ui.txt2img.panel, ui.img2img.panel):
        panel.send_to_extras.click(gallery_to_extras, [panel.shown, panel.selected], extras_outputs,
                                   show_progress="hidden", api_visibility="private")

    def png_to_extras(path, text):
        if not path:
            raise gr.Error("No image to send: drop an image into PNG Info first.")
        try:
            return to_extras(png_info.load_image(path), text)
        except Exception as exc:
            raise error(exc)

    ui.png_info.send_to_extras.click(png_to_extras, [ui.png_info.image, ui.png_info.text], extras_outputs,
                                     show_progress="hidden", api_visibility="private")

    # PNG Info → txt2img / img2img / inpaint
    def png_to_txt2img(text: str):
        if not text:
            raise gr.Error("This image holds no generation parameters.")
        return {ui.tabs: gr.Tabs(selected="txt2img"), **fill(text, t2i_target)}

    ui.png_info.send_to_txt2img.click(png_to_txt2img, ui.png_info.text, [ui.tabs, *t2i_target.components()],
                                      show_progress="hidden", api_visibility="private")
    for button, mode in ((ui.png_info.send_to_img2img, "img2img"), (ui.png_info.send_to_inpaint, "inpaint")):
        send, _ = image_to_img2img(mode)

        def from_png(path, text, brush_percent, send=send):
            try:
                image = png_info.load_image(path)
            except Exception as exc:
                raise error(exc)
            return send(image, text, brush_percent)

        button.click(from_png, [ui.png_info.image, ui.png_info.text, i2i.brush_size], outputs_i2i,
                     show_progress="hidden", api_visibility="private")

    # ↙️ in each prompt row: read the prompt box as an infotext, else the last generation
    for tab, target in ((ui.txt2img, t2i_target), (ui.img2img, i2i_target)):
        def paste_prompt(prompt: str, shown, selected, target=target):
            text = prompt if prompt and prompt.strip() else (shown.infotext(selected) if shown else "")
            if not text:
                raise gr.Error("Nothing to read: type or paste generation parameters into the prompt first.")
            return fill(text, target)

        tab.toprow.paste.click(paste_prompt, [tab.toprow.prompt, tab.panel.shown, tab.panel.selected],
                               target.components(), show_progress="hidden", api_visibility="private")


def _wire_page_load(ui: Ui, demo: gr.Blocks) -> None:
    """A freshly loaded page shows the settings as saved now (another tab may have changed them),
    and new-page defaults changed in Settings since start-up."""
    env = ui.env
    built = env.ctx.settings.get()
    default_targets = []
    for tab in (ui.txt2img, ui.img2img):
        default_targets.append((tab.sampler.sampler, "default_sampler"))
        default_targets.append((tab.sampler.scheduler, "default_scheduler"))
        default_targets.append((tab.sampler.steps, "default_steps"))
        default_targets.append((tab.batch.cfg_scale, "default_cfg_scale"))

    def on_load():
        opts = env.ctx.settings.get()
        out = {**quicksettings.current_values(env, ui.quick), **settings_tab.current_values(env, ui.settings)}
        names = env.styles.names()  # styles.csv may have been edited since start-up
        for dropdown in env.style_dropdowns:
            out[dropdown] = gr.Dropdown(choices=names)
        for component, name in default_targets:
            value = getattr(opts, name)
            out[component] = value if value != getattr(built, name) else gr.skip()
        out.update(extras.refreshed_choices(env, ui.extras))
        return out

    outputs = [ui.quick.checkpoint, ui.quick.vae, ui.quick.clip_skip, *ui.settings.components.values(),
               *[c for c, _ in default_targets], *env.style_dropdowns, ui.extras.upscaler_1, ui.extras.upscaler_2,
               ui.extras.models_note]
    # then mark the page as filled (body[data-sd-loaded]): browser tests wait for it before typing
    demo.load(on_load, None, outputs, show_progress="hidden", api_visibility="private").then(
        None, None, None, js="() => { document.body.dataset.sdLoaded = '1'; }", api_visibility="private")


# ---------------------------------------------------------------------------------------------
# serving


def head_html(theme: Optional[str] = None, tips_by_id: Optional[dict[str, str]] = None) -> str:
    """Page scripts; `tips_by_id` (elem_id → text) become the tool buttons' titles."""
    script = "\n".join((ASSETS / name).read_text(encoding="utf-8") for name in ("keyboard.js", "extra_networks.js"))
    tips = json.dumps(tips_by_id or {}, ensure_ascii=False).replace("</", "<\\/")
    parts = [f"<script>window.SD_WEBUI_TOOLTIPS = {tips};</script>", f"<script>{script}</script>"]
    if theme in ("light", "dark"):
        # A1111's --theme: gradio picks light/dark from the __theme URL parameter.
        parts.insert(0, "<script>(function(){const u=new URL(location.href);"
                        f"if(u.searchParams.get('__theme')!=='{theme}'){{u.searchParams.set('__theme','{theme}');"
                        "location.replace(u.href);}})();</script>")
    return "\n".join(parts)


def css() -> str:
    return (ASSETS / "style.css").read_text(encoding="utf-8") + "\n" + icons.css()


def theme() -> gr.themes.Base:
    # System fonts only: the default theme would fetch Google fonts, and we run offline.
    return gr.themes.Default(
        primary_hue="orange", secondary_hue="gray", neutral_hue="gray",
        font=["Source Sans Pro", "ui-sans-serif", "system-ui", "sans-serif"],
        font_mono=["IBM Plex Mono", "ui-monospace", "Consolas", "monospace"],
    )


def gradio_auth(args) -> list[tuple[str, str]]:
    """--gradio-auth "u:p,u2:p2" plus --gradio-auth-path; read in modules/credentials.py, which the
    API shares (without --api-auth it takes these same credentials)."""
    return ui_credentials(args)


def server_name(args) -> str:
    if getattr(args, "server_name", None):
        return args.server_name
    return "0.0.0.0" if getattr(args, "listen", False) else "127.0.0.1"


def startup_message(local_url: str, share_requested: bool) -> str:
    """Where the UI is, in the words of our own flags (the --share line follows from
    modules/share_link once the tunnel is up or has failed)."""
    lines = [f"Running on local URL:  {local_url.rstrip('/')}"]
    if not share_requested:
        lines.append("To create a public link, start with --share.")
    return "\n".join(lines)


def launch_ui(ctx: "AppContext", *, block: bool = False, quiet: bool = False,
              on_app: Optional[Callable[[Any], None]] = None, allow_restart: bool = False) -> gr.Blocks:
    """Serve the UI as the flags say; returns the running Blocks (call .close() to stop it).

    `on_app(fastapi_app)` runs once the server is up, e.g. to mount the /sdapi/v1 routes beside
    the UI for --api (as A1111 does). With block=True this call waits until the server stops
    (Ctrl+C), as launch.py wants. `allow_restart`: this process may re-execute itself (launch.py
    owns the process; an app embedded in a test or a notebook must not).
    """
    args = ctx.args
    # The web server is not closed before a restart: launch.py's main thread would return and end
    # the process first; its sockets are close-on-exec, so the new process can bind the port.
    share: list[ShareTunnel] = []  # the --share tunnel, once started

    def stop_services() -> None:
        for tunnel in share:
            tunnel.close()
        ctx.queue.shutdown(timeout=QUEUE_DRAIN_S)

    restart = process_restarter(stop_services) if allow_restart else None
    demo = build_ui(ctx, restart=restart)
    demo.queue(default_concurrency_limit=4, max_size=None)
    auth = gradio_auth(args)
    allowed = [str(ctx.paths.outputs_dir), str(ctx.paths.data_dir / "log")]
    opts = ctx.settings.get()
    for name in ("outdir_samples", "outdir_txt2img_samples", "outdir_img2img_samples", "outdir_extras_samples",
                 "outdir_grids", "outdir_txt2img_grids", "outdir_img2img_grids"):
        value = getattr(opts, name, "")
        if value and Path(value).is_absolute():
            allowed.append(value)
    demo.sd_ui.env.served_roots = list(allowed)
    catalog = loaded_extensions(ctx).catalog
    threading.Thread(target=token_counter.warm_up, name="tokenizer-warm-up", daemon=True).start()
    demo.launch(
        server_name=server_name(args),
        server_port=getattr(args, "port", None) or 7860,
        share=False,  # modules/share_link opens the tunnel after start-up, bounded and in one line
        inbrowser=bool(getattr(args, "autolaunch", False)),
        auth=auth or None,
        auth_message="Please log in to the Stable Diffusion web UI" if auth else None,
        prevent_thread_lock=True,
        show_error=True,
        quiet=True,  # gradio's hints name its own launch() arguments; ours name our flags
        allowed_paths=allowed + extension_assets.served_files(catalog),
        theme=theme(),
        css=css(),
        head=head_html(getattr(args, "theme", None), tooltips(demo)) + "\n" + extension_assets.head_html(catalog),
        footer_links=[],  # gradio's own API page is not our /sdapi/v1 API
    )
    share_requested = bool(getattr(args, "share", False))
    if not quiet:
        print(startup_message(demo.local_url, share_requested), flush=True)
    if share_requested:
        def on_share(outcome: ShareOutcome) -> None:
            demo.share_url, demo.share = outcome.url, bool(outcome.url)

        share.append(start_share(demo.local_url, server_name(args), demo.server_port, demo.share_token,
                                 on_outcome=on_share))
        demo.sd_share = share[0]  # .wait() returns the outcome (tests, notebooks)
    if on_app is not None:
        on_app(demo.app)
    if block:
        demo.block_thread()
    return demo


__all__ = ["build_ui", "launch_ui", "Ui", "gradio_auth", "server_name"]
