"""The extension system in the web UI, without a browser: controls -> request Args, the Extensions
tab's table / apply / install-from-URL, extension tabs and page assets. Real app context
(modules.app_factory.create_context) on the embedded model; the browser side is
tests/ui/test_extensions_ui.py."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from modules.extensions import git_install
from modules.extensions.a1111_adapter import A1111ScriptArgs
from tests.extension_factory import make_bare_repo
from tests.ui_sample_extension import NAME, SCRIPT_TITLE, TYPED_NAME, make_sample_extension


def make_context(data_dir, *flags: str):
    from modules.app_factory import create_context
    from modules.cmd_args import parse_args
    from modules.paths import EMBEDDED_MODEL_DIR

    args = parse_args(["--data-dir", str(data_dir), "--no-hashing", "--use-cpu", "--ckpt", EMBEDDED_MODEL_DIR.name,
                       *flags])
    return create_context(args, builtin_extensions_dir=None)


@pytest.fixture
def app(tmp_path):
    from modules import script_callbacks
    from webui.app import build_ui

    make_sample_extension(tmp_path / "extensions")
    ctx = make_context(tmp_path)
    demo = build_ui(ctx)
    yield SimpleNamespace(ctx=ctx, demo=demo, ui=demo.sd_ui, data_dir=tmp_path)
    ctx.queue.shutdown(timeout=10)
    script_callbacks.clear_callbacks()


def test_controls_become_request_args_and_change_the_job(app):
    from webui import jobs

    t2i = app.ui.txt2img.extensions
    names = [item.extension.name for item in t2i.items]
    assert names == [SCRIPT_TITLE, TYPED_NAME]
    assert [item.extension.name for item in app.ui.img2img.extensions.items] == [SCRIPT_TITLE]  # typed: txt2img only
    script, typed = t2i.items
    values = {script.components[0]: True, script.components[1]: "from the UI",
              typed.components[0]: True, typed.components[1]: 0.25}
    args = t2i.request_args(values)
    assert args[SCRIPT_TITLE] == A1111ScriptArgs(args=[True, "from the UI"])
    assert args[TYPED_NAME].enabled is True and args[TYPED_NAME].strength == 0.25
    assert t2i.inputs() == set(values)

    with pytest.raises(ValueError, match="Sample Typed: strength"):
        t2i.request_args({**values, typed.components[1]: "not a number"})

    from modules.generation.request import GenerationRequest, Mode

    def run(extensions):
        request = GenerationRequest(mode=Mode.TXT2IMG, prompt="a red circle", steps=4, width=64, height=64, seed=7,
                                    sampler_name="Euler", extensions=extensions, save_images=False)
        return jobs.wait_result(jobs.submit(app.ctx, request))

    plain = run(t2i.request_args({**values, script.components[0]: False, typed.components[0]: False}))
    inverted = run(args)
    import numpy as np

    a = np.asarray(plain.images[0].convert("RGB"), dtype=np.int16)
    b = np.asarray(inverted.images[0].convert("RGB"), dtype=np.int16)
    assert np.array_equal(b, 255 - a)
    assert "Sample invert: from the UI" in inverted.infotexts[0] and "Sample typed: 0.25" in inverted.infotexts[0]
    assert "Sample invert" not in plain.infotexts[0] and "Sample typed" not in plain.infotexts[0]


def test_extension_tab_and_page_assets(app):
    from webui import extension_assets
    from webui.loaded_extensions import loaded_extensions

    assert app.ui.extension_tabs == ["sample_tab"]
    catalog = loaded_extensions(app.ctx).catalog
    folder = (app.data_dir / "extensions" / NAME).resolve()
    served = extension_assets.served_files(catalog)
    assert sorted(served) == sorted([str(folder / "javascript" / "sample.js"), str(folder / "style.css")])
    head = extension_assets.head_html(catalog)
    assert f'src="gradio_api/file={folder.as_posix()}/javascript/sample.js?v=' in head
    assert f'href="gradio_api/file={folder.as_posix()}/style.css?v=' in head


def test_table_lists_versions_and_apply_writes_the_setting(app):
    from webui import extensions_tab

    (row,) = extensions_tab.extension_rows(app.ctx)
    assert (row.name, row.builtin, row.enabled, row.status, row.branch) == (NAME, False, True, "loaded", "main")
    assert len(row.version) == 8
    html = extensions_tab.table_html([row])
    assert f"data-extension='{NAME}'" in html and " checked" in html and row.version in html

    assert extensions_tab.apply_disabled(app.ctx, extensions_tab.parse_disabled(json.dumps([NAME]))) == [NAME]
    saved = json.loads(app.ctx.settings.path.read_text(encoding="utf-8"))
    assert saved["disabled_extensions"] == [NAME]
    (row,) = extensions_tab.extension_rows(app.ctx)
    assert not row.enabled and row.status == "loaded; disabled after a restart"
    assert " checked" not in extensions_tab.table_html([row])

    with pytest.raises(ValueError, match="not installed: nope"):
        extensions_tab.apply_disabled(app.ctx, ["nope"])
    with pytest.raises(ValueError, match="JSON list"):
        extensions_tab.parse_disabled("{not json")
    assert json.loads(app.ctx.settings.path.read_text(encoding="utf-8"))["disabled_extensions"] == [NAME]


def test_install_from_url_handler(app, tmp_path):
    from webui import extensions_tab

    bare, commit = make_bare_repo(tmp_path / "remote", "fresh-ext", {"scripts/x.py": "X = 1\n"})
    url = bare.as_uri()
    # The UI itself never allows file://; the handler says why.
    refused = extensions_tab.install_message(app.ctx, url)
    assert "data-reason='invalid_url'" in refused and "Install failed (invalid URL)" in refused
    assert "data-reason='invalid_url'" in extensions_tab.install_message(app.ctx, "  ")

    done = extensions_tab.install_message(app.ctx, url, "", "my-ext", url_schemes={"file"})
    assert "data-installed='my-ext'" in done and commit[:8] in done
    assert (app.data_dir / "extensions" / "my-ext" / "scripts" / "x.py").is_file()
    rows = {r.name: r for r in extensions_tab.extension_rows(app.ctx)}
    assert rows["my-ext"].status == "installed: loads after a restart" and rows["my-ext"].version == commit[:8]

    again = extensions_tab.install_message(app.ctx, url, "", "my-ext", url_schemes={"file"})
    assert "data-reason='exists'" in again
    bad_branch = extensions_tab.install_message(app.ctx, url, "no..pe", "other", url_schemes={"file"})
    assert "data-reason='invalid_branch'" in bad_branch


@pytest.mark.parametrize("flags, allowed", [
    ({"listen": True}, False),
    ({"share": True}, False),
    ({"server_name": "0.0.0.0"}, False),
    ({"listen": True, "enable_insecure_extension_access": True}, True),
    ({}, True),
])
def test_install_refused_beyond_loopback(tmp_path, flags, allowed):
    from webui import extensions_tab

    bare, _ = make_bare_repo(tmp_path / "remote", "net-ext", {"a.txt": "a"})
    ctx = SimpleNamespace(args=SimpleNamespace(**flags), paths=SimpleNamespace(extensions_dir=tmp_path / "extensions"))
    message = extensions_tab.install_message(ctx, bare.as_uri(), url_schemes={"file"})
    if allowed:
        assert "data-installed='net-ext'" in message
    else:
        assert "data-reason='forbidden'" in message and "--enable-insecure-extension-access" in message
        assert not (tmp_path / "extensions" / "net-ext").exists()
    assert git_install.install_allowed(ctx.args) is allowed
