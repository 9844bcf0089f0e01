"""The Extensions tab: A1111's "Installed" (enable/disable, apply and restart) and "Install from URL".

Which extensions load is decided once, at start-up, from the `disabled_extensions` setting (an
A1111 key). "Apply and restart UI" writes that setting and then restarts the server process (a
re-exec of the same command line, `webui/restart.py`) when the app was started by launch.py; an
app embedded in another process (tests, notebooks) only saves and says a restart is needed.

"Install from URL" clones with `git_install.install_from_url`, which refuses it when the server
listens beyond this machine unless --enable-insecure-extension-access is given, as in A1111. The
new extension loads at the next start; until then the table lists it as installed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, AbstractSet, Callable, Optional

import gradio as gr

from modules.extensions import git_install
from modules.extensions.discovery import ExtensionSwitches, read_extension
from modules.extensions.types import Extension
from webui.common import escape
from webui.env import UiEnv
from webui.loaded_extensions import loaded_extensions

if TYPE_CHECKING:
    from modules.app_context import AppContext

log = logging.getLogger("webui")
TABLE_ID = "extensions_installed_table"
CHECKBOX_CLASS = "extension-enable"

_REFUSALS = {"forbidden": "not allowed", "invalid_url": "invalid URL", "invalid_name": "invalid folder name",
             "invalid_branch": "invalid branch", "exists": "already installed", "clone_failed": "git clone failed"}

# Collects the unchecked boxes of the table (A1111 does the same in extensions.js): the table is
# plain HTML, so its checkboxes are read in the browser and sent as one JSON list.
COLLECT_DISABLED_JS = (
    f"() => [JSON.stringify(Array.from(document.querySelectorAll('#{TABLE_ID} input.{CHECKBOX_CLASS}'))"
    ".filter((box) => !box.checked).map((box) => box.dataset.extension))]"
)
# After a restart was started: wait for the server to go away and come back, then reload.
RELOAD_WHEN_BACK_JS = """(message) => {
  if (!String(message).includes('data-restarting')) return [];
  const alive = () => fetch(location.href, {cache: 'no-store'}).then((r) => r.ok, () => false);
  const sleep = (ms) => new Promise((done) => setTimeout(done, ms));
  (async () => {
    for (let i = 0; i < 60 && await alive(); i++) await sleep(500);
    for (let i = 0; i < 240; i++) { if (await alive()) { location.reload(); return; } await sleep(500); }
  })();
  return [];
}"""


@dataclass(frozen=True)
class ExtensionRow:
    name: str
    url: str
    branch: str
    version: str  # short commit hash; "" when the folder is not a git repository
    builtin: bool
    enabled: bool  # the saved setting (what the next start does)
    status: str


@dataclass
class ExtensionsTab:
    table: gr.HTML
    disabled: gr.Textbox
    apply: gr.Button
    apply_result: gr.HTML
    url: gr.Textbox
    branch: gr.Textbox
    dirname: gr.Textbox
    install: gr.Button
    install_result: gr.HTML


# ---------------------------------------------------------------------------------------------
# what the table shows


def _status(ext: Extension, enabled_now: bool, loaded: bool) -> str:
    if not loaded:
        state = "installed: loads after a restart" if enabled_now else "installed (disabled)"
    elif ext.active:
        state = "loaded" if enabled_now else "loaded; disabled after a restart"
    elif not ext.enabled:
        state = "disabled; loads after a restart" if enabled_now else "disabled"
    else:
        state = f"not loaded: {ext.disabled_reason}"
    return f"{state}; error: {ext.error}" if ext.error else state


def extension_rows(ctx: "AppContext") -> list[ExtensionRow]:
    """Every extension found at start-up, plus folders installed since (not loaded yet)."""
    catalog = loaded_extensions(ctx).catalog
    disabled = set(ctx.settings.get().disabled_extensions or ())
    known = {e.path for e in catalog.extensions}
    found = [(e, True) for e in catalog.extensions]
    user_dir = ctx.paths.extensions_dir
    if user_dir.is_dir():
        switches = ExtensionSwitches.from_settings(ctx.settings.get(), ctx.args)
        for folder in sorted(user_dir.iterdir()):
            if folder.is_dir() and not folder.name.startswith(".") and folder.name != "__pycache__" \
                    and folder not in known:
                found.append((read_extension(folder, False, switches), False))
    return [ExtensionRow(name=e.name, url=e.version.remote, branch=e.version.branch, version=e.version.version,
                         builtin=e.is_builtin, enabled=e.name not in disabled,
                         status=_status(e, e.name not in disabled, loaded))
            for e, loaded in found]


def table_html(rows: list[ExtensionRow]) -> str:
    if not rows:
        return (f"<div id='{TABLE_ID}'><p class='note'>No extensions installed. Put extension folders in "
                "<code>extensions/</code> or use Install from URL.</p></div>")
    body = []
    for row in rows:
        checked = " checked" if row.enabled else ""
        url = f"<a href='{escape(row.url)}' target='_blank' rel='noopener'>{escape(row.url)}</a>" \
            if row.url.startswith(("https://", "http://")) else escape(row.url)
        body.append(
            f"<tr data-extension='{escape(row.name)}'>"
            f"<td><label><input type='checkbox' class='{CHECKBOX_CLASS}' data-extension='{escape(row.name)}'"
            f" name='enable_{escape(row.name)}'{checked}> {escape(row.name)}</label></td>"
            f"<td>{url}</td><td>{escape(row.branch)}</td><td><code>{escape(row.version)}</code></td>"
            f"<td>{'built-in' if row.builtin else 'user'}</td><td class='extension-status'>{escape(row.status)}</td>"
            "</tr>")
    return (f"<table id='{TABLE_ID}' class='extensions-table'><thead><tr><th>Extension (enabled)</th><th>URL</th>"
            "<th>Branch</th><th>Version</th><th>Type</th><th>Status</th></tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


# ---------------------------------------------------------------------------------------------
# actions (plain functions: the unit tests call them without a browser)


def parse_disabled(text: str) -> list[str]:
    """The JSON list the page sends; anything else is a client error, said plainly."""
    try:
        names = json.loads(text or "[]")
    except json.JSONDecodeError:
        raise ValueError("disabled extensions: expected a JSON list of extension names") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError("disabled extensions: expected a JSON list of extension names")
    return names


def apply_disabled(ctx: "AppContext", disabled: list[str]) -> list[str]:
    """Writes `disabled_extensions`: the unchecked extensions among those listed. Names of
    extensions no longer installed are dropped, as the table no longer offers them."""
    listed = {row.name for row in extension_rows(ctx)}
    unknown = sorted(set(disabled) - listed)
    if unknown:
        raise ValueError(f"disabled extensions: not installed: {', '.join(unknown)}")
    value = sorted(set(disabled))
    ctx.settings.update({"disabled_extensions": value})
    log.info("extensions: disabled_extensions set to %s", value)
    return value


def install_message(ctx: "AppContext", url: str, branch: str = "", dirname: str = "", *,
                    url_schemes: AbstractSet[str] = git_install.REMOTE_URL_SCHEMES) -> str:
    """Clone `url` into the user's extensions folder; HTML saying what happened. The UI passes the
    remote schemes only; tests inject {"file"} to clone a local bare repository."""
    try:
        installed = git_install.install_from_url(
            url or "", ctx.paths.extensions_dir, allow=git_install.install_allowed(ctx.args),
            dirname=dirname or None, branch=branch or None, url_schemes=url_schemes)
    except git_install.InstallFromUrlError as err:
        title = _REFUSALS.get(err.reason, err.reason)
        return (f"<p class='warning' data-reason='{escape(err.reason)}'>Install failed ({escape(title)}): "
                f"{escape(err.message)}</p>")
    version = f" at {installed.version.version}" if installed.version.version else ""
    return (f"<p class='note' data-installed='{escape(installed.name)}'>Installed {escape(installed.name)}{version} "
            f"into {escape(installed.path)}. Use \"Apply and restart UI\" (or restart the server) to load it.</p>")


# ---------------------------------------------------------------------------------------------
# the tab


def build(env: UiEnv, restart: Optional[Callable[[], None]] = None) -> ExtensionsTab:
    ctx = env.ctx
    with gr.Tabs(elem_id="tabs_extensions"):
        with gr.Tab("Installed", id="extensions_installed", elem_id="extensions_installed_tab"):
            with gr.Row():
                apply = gr.Button("Apply and restart UI" if restart else "Apply (restart the server to load)",
                                  variant="primary", elem_id="extensions_apply", scale=0, min_width=220)
                gr.HTML("<p class='hint'>Unchecked extensions are not loaded after the restart "
                                     "(setting <code>disabled_extensions</code>).</p>", padding=False)
            apply_result = gr.HTML("", elem_id="extensions_apply_result", padding=False)
            # A callable value is read on every page load: another page may have changed the list.
            table = gr.HTML(lambda: table_html(extension_rows(ctx)), elem_id="extensions_installed_html",
                            padding=False)
            disabled = gr.Textbox(visible=False, elem_id="extensions_disabled_list")
        with gr.Tab("Install from URL", id="extensions_install", elem_id="extensions_install_tab"):
            if not git_install.install_allowed(ctx.args):
                gr.HTML("<p class='warning'>Installing extensions is disabled because the server listens beyond "
                        "this machine (--listen, --share or --server-name). Start it with "
                        "--enable-insecure-extension-access to allow it.</p>", elem_id="extensions_install_disabled")
            url = gr.Textbox(label="URL for extension's git repository", elem_id="extension_install_url")
            branch = gr.Textbox(label="Specific branch name", placeholder="Leave empty for default main branch",
                                elem_id="extension_install_branch")
            dirname = gr.Textbox(label="Local directory name", placeholder="Leave empty for auto",
                                 elem_id="extension_install_dirname")
            install = gr.Button("Install", variant="primary", elem_id="extension_install_button")
            install_result = gr.HTML("", elem_id="extension_install_result", padding=False)
    tab = ExtensionsTab(table, disabled, apply, apply_result, url, branch, dirname, install, install_result)
    _wire(env, tab, restart)
    return tab


def _wire(env: UiEnv, tab: ExtensionsTab, restart: Optional[Callable[[], None]]) -> None:
    ctx = env.ctx

    def on_apply(disabled_json: str):
        try:
            value = apply_disabled(ctx, parse_disabled(disabled_json))
        except ValueError as exc:
            return f"<p class='warning'>{escape(exc)}</p>", gr.skip()
        shown = ", ".join(value) or "none"
        if restart is None:
            message = (f"<p class='note'>Saved (disabled: {escape(shown)}). Restart the server to load or unload "
                       "extensions.</p>")
        else:
            restart()
            message = (f"<p class='note' data-restarting='1'>Saved (disabled: {escape(shown)}). Restarting the "
                       "server; this page reloads when it is back.</p>")
        return message, table_html(extension_rows(ctx))

    tab.apply.click(on_apply, tab.disabled, [tab.apply_result, tab.table], js=COLLECT_DISABLED_JS,
                    show_progress="hidden", api_visibility="private").then(
        None, tab.apply_result, None, js=RELOAD_WHEN_BACK_JS, queue=False)

    def on_install(url: str, branch: str, dirname: str):
        return install_message(ctx, url, branch, dirname), table_html(extension_rows(ctx))

    tab.install.click(on_install, [tab.url, tab.branch, tab.dirname], [tab.install_result, tab.table],
                      show_progress="minimal", api_visibility="private")
