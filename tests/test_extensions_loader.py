"""The extension loader on real folders in tmp_path: discovery, metadata.ini ordering and Requires,
the disable switches, git versions, install.py, preload.py and isolated imports."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from modules.cmd_args import build_parser, parse_args
from modules.extensions.discovery import ExtensionSwitches, discover_extensions
from modules.extensions.installer import run_installer, run_installers
from modules.extensions.metadata import read_metadata
from modules.extensions.ordering import topological_order
from modules.extensions.preload import parse_args_with_extensions
from modules.extensions.script_import import import_extension_file
from modules.settings import Options
from tests.extension_factory import commit_all, make_extension


@pytest.fixture()
def dirs(tmp_path):
    user, builtin = tmp_path / "data" / "extensions", tmp_path / "extensions-builtin"
    user.mkdir(parents=True)
    builtin.mkdir()
    return SimpleNamespace(data=tmp_path / "data", user=user, builtin=builtin)


def names(files) -> list[str]:
    return [f.canonical_name for f in files]


# ---- discovery -------------------------------------------------------------------------------

def test_discovery_lists_both_folders_and_their_files_in_a1111_order(dirs):
    make_extension(dirs.builtin, "lora", {"scripts/lora_script.py": "", "style.css": "a{}"})
    make_extension(dirs.user, "sd-webui-b", {
        "scripts/b.py": "", "scripts/B_upper.py": "", "scripts/notes.txt": "", "scripts/sub/inner.py": "",
        "javascript/z.js": "", "javascript/a.js": "", "javascript/m.mjs": "",
        "style.css": "b{}", "install.py": "", "preload.py": "",
    })
    make_extension(dirs.user, ".installing-x-1234", {"scripts/hidden.py": ""})
    (dirs.user / "stray-file.txt").write_text("not an extension")

    catalog = discover_extensions(dirs.user, dirs.builtin)

    assert [(e.name, e.is_builtin, e.active) for e in catalog.extensions] == [
        ("lora", True, True), ("sd-webui-b", False, True)]
    b = catalog.get("sd-webui-b")
    # A1111 sorts file names as plain strings: upper case first; only *.py files directly in scripts/.
    assert [f.filename for f in b.scripts] == ["B_upper.py", "b.py"]
    assert [f.filename for f in b.javascript] == ["a.js", "z.js"]
    assert [f.filename for f in b.javascript_modules] == ["m.mjs"]
    assert b.install_script == b.path / "install.py" and b.preload_script == b.path / "preload.py"
    assert names(catalog.scripts) == ["builtin/lora/lora_script.py", "sd-webui-b/B_upper.py", "sd-webui-b/b.py"]
    assert catalog.stylesheets == [dirs.builtin / "lora" / "style.css", b.path / "style.css"]
    assert catalog.errors() == []


def test_missing_folders_give_an_empty_catalog(tmp_path):
    catalog = discover_extensions(tmp_path / "nope", tmp_path / "nope-either")
    assert catalog.extensions == [] and catalog.scripts == []


def test_before_and_after_order_scripts_across_extensions(dirs):
    make_extension(dirs.user, "alpha", {"scripts/a1.py": "", "scripts/a2.py": ""})
    make_extension(dirs.user, "beta", {"scripts/b.py": "", "scripts/b_late.py": ""}, metadata="""
        [scripts/b.py]
        Before = alpha
        [scripts/b_late.py]
        After = gamma/g.py
    """)
    make_extension(dirs.user, "gamma", {"scripts/g.py": ""}, metadata="""
        [scripts/g.py]
        Before = alpha/a2.py
    """)

    catalog = discover_extensions(dirs.user, None)

    order = names(catalog.scripts)
    assert order.index("beta/b.py") < order.index("alpha/a1.py")  # Before = a whole extension
    assert order.index("beta/b.py") < order.index("alpha/a2.py")
    assert order.index("gamma/g.py") < order.index("alpha/a2.py")  # Before = one script
    assert order.index("gamma/g.py") < order.index("beta/b_late.py")  # After = one script
    assert sorted(order) == sorted(["alpha/a1.py", "alpha/a2.py", "beta/b.py", "beta/b_late.py", "gamma/g.py"])


def test_extension_level_before_orders_extensions_and_their_files(dirs):
    make_extension(dirs.user, "aaa", {"scripts/a.py": "", "style.css": ""})
    make_extension(dirs.user, "zzz", {"scripts/z.py": "", "style.css": ""}, metadata="""
        [Extension]
        Name = zed
        Before = aaa
    """)

    catalog = discover_extensions(dirs.user, None)

    assert [e.name for e in catalog.extensions] == ["zzz", "aaa"]
    assert names(catalog.scripts) == ["zzz/z.py", "aaa/a.py"]
    assert catalog.stylesheets == [dirs.user / "zzz" / "style.css", dirs.user / "aaa" / "style.css"]


def test_topological_order_keeps_insertion_order_and_survives_cycles():
    assert topological_order({"a": [], "b": [], "c": []}) == ["a", "b", "c"]
    assert topological_order({"a": ["c"], "b": [], "c": []}) == ["c", "a", "b"]
    assert sorted(topological_order({"a": ["b"], "b": ["a"], "c": ["zz-unknown"]})) == ["a", "b", "c"]


def test_metadata_reads_a1111_format(tmp_path):
    folder = make_extension(tmp_path, "Sd-WebUI-X", metadata="""
        [Extension]
        Name = x-ext
        Requires = One two,three  a|b

        [scripts/main.py]
        After = Other

        [callbacks/x-ext/on_ui_tabs]
        Before = y
    """)
    meta = read_metadata(folder)
    assert meta.canonical_name == "sd-webui-x" and meta.names == {"sd-webui-x", "x-ext"}
    assert meta.extension_rules.requires == ("one", "two", "three", "a|b")
    assert meta.rules_for("scripts", "main.py").after == ("other",)
    assert meta.callback_rules["x-ext/on_ui_tabs"].before == ("y",)


def test_unreadable_metadata_is_listed_and_the_extension_still_loads(dirs):
    make_extension(dirs.user, "bad-meta", {"scripts/s.py": ""}, metadata="no section header here\n")
    ext = discover_extensions(dirs.user, None).get("bad-meta")
    assert ext.active and [e.stage for e in ext.errors] == ["metadata"]
    assert "metadata.ini is not valid" in ext.error


# ---- Requires ----------------------------------------------------------------------------------

def test_a_missing_requirement_disables_the_extension_and_what_requires_it(dirs):
    make_extension(dirs.user, "needs-ghost", {"scripts/n.py": ""}, metadata="[Extension]\nRequires = ghost\n")
    make_extension(dirs.user, "needs-needs", {"scripts/m.py": ""}, metadata="[Extension]\nRequires = needs-ghost\n")
    make_extension(dirs.user, "fine", {"scripts/f.py": ""})

    catalog = discover_extensions(dirs.user, None)

    ghost = catalog.get("needs-ghost")
    assert not ghost.active and ghost.enabled
    assert "requires 'ghost', which is not installed" in ghost.error
    chained = catalog.get("needs-needs")
    assert not chained.active and "requires 'needs-ghost', which is not loaded" in chained.error
    assert [e.name for e in catalog.active()] == ["fine"]
    assert names(catalog.scripts) == ["fine/f.py"]


def test_requirements_match_declared_names_alternatives_and_report_disabled_ones(dirs):
    make_extension(dirs.user, "sd-webui-controlnet", {"scripts/cn.py": ""}, metadata="[Extension]\nName = controlnet\n")
    make_extension(dirs.user, "by-alias", {}, metadata="[Extension]\nRequires = ControlNet\n")
    make_extension(dirs.user, "by-alternative", {}, metadata="[Extension]\nRequires = nothing|sd-webui-controlnet\n")
    make_extension(dirs.user, "off", {})
    make_extension(dirs.user, "needs-off", {}, metadata="[Extension]\nRequires = off\n")

    catalog = discover_extensions(dirs.user, None, ExtensionSwitches(disabled=frozenset({"off"})))

    assert catalog.get("by-alias").active and catalog.get("by-alternative").active
    needs_off = catalog.get("needs-off")
    assert not needs_off.active and "requires 'off', which is not loaded (disabled)" in needs_off.error


def test_a_script_whose_requirement_is_missing_is_skipped_with_an_error(dirs):
    make_extension(dirs.user, "partial", {"scripts/ok.py": "", "scripts/needy.py": "", "scripts/uses_js.py": ""},
                   metadata="""
                       [scripts/needy.py]
                       Requires = ghost-ext
                       [scripts/uses_js.py]
                       Requires = js-only
                   """)
    make_extension(dirs.user, "js-only", {"javascript/x.js": ""})  # loaded, though it has no scripts
    catalog = discover_extensions(dirs.user, None)
    assert names(catalog.scripts) == ["partial/ok.py", "partial/uses_js.py"]
    assert catalog.get("partial").error == (
        "requires: scripts/needy.py requires 'ghost-ext', which is not loaded; the file is skipped")


def test_duplicate_names_keep_the_builtin_one(dirs):
    make_extension(dirs.builtin, "lora", {"scripts/builtin.py": ""})
    make_extension(dirs.user, "LoRA", {"scripts/user.py": ""})
    catalog = discover_extensions(dirs.user, dirs.builtin)
    user = catalog.get("LoRA")
    assert not user.active and [e.stage for e in user.errors] == ["duplicate"]
    assert names(catalog.scripts) == ["builtin/lora/builtin.py"]


# ---- switches: settings and flags ----------------------------------------------------------------

def _two_kinds(dirs):
    make_extension(dirs.builtin, "builtin-one", {"scripts/b.py": ""})
    make_extension(dirs.user, "user-one", {"scripts/u.py": ""})
    make_extension(dirs.user, "user-two", {"scripts/v.py": ""})


@pytest.mark.parametrize("argv, setting, expected", [
    ([], "none", ["builtin-one", "user-one", "user-two"]),
    (["--disable-extra-extensions"], "none", ["builtin-one"]),
    (["--disable-all-extensions"], "none", []),
    ([], "extra", ["builtin-one"]),
    ([], "all", []),
    (["--disable-extra-extensions"], "all", []),  # the stronger switch wins
])
def test_disable_all_extensions_flags_and_setting(dirs, argv, setting, expected):
    _two_kinds(dirs)
    switches = ExtensionSwitches.from_settings(SimpleNamespace(disable_all_extensions=setting), parse_args(argv))
    catalog = discover_extensions(dirs.user, dirs.builtin, switches)
    assert [e.name for e in catalog.active()] == expected
    for ext in catalog.extensions:
        assert ext.enabled  # the per-extension switch is untouched; the reason says why it does not load
        assert (ext.disabled_reason == "") == (ext.name in expected)


def test_disabled_extensions_setting(dirs):
    _two_kinds(dirs)
    switches = ExtensionSwitches.from_settings(SimpleNamespace(disabled_extensions=["user-one", "builtin-one"]))
    catalog = discover_extensions(dirs.user, dirs.builtin, switches)
    assert [(e.name, e.enabled, e.active) for e in catalog.extensions] == [
        ("builtin-one", False, False), ("user-one", False, False), ("user-two", True, True)]
    assert names(catalog.scripts) == ["user-two/v.py"]


def test_switches_fall_back_when_the_options_lack_the_fields():
    assert ExtensionSwitches.from_settings(Options(), parse_args([])).mode in ("none",)
    assert ExtensionSwitches.from_settings(None, None) == ExtensionSwitches()
    assert ExtensionSwitches.from_settings({"disabled_extensions": ["a"]}).disabled == {"a"}
    assert ExtensionSwitches.from_settings(SimpleNamespace(disable_all_extensions="bogus")).mode == "none"


# ---- git version -------------------------------------------------------------------------------

def test_git_version_of_a_git_folder_and_none_for_a_plain_one(dirs):
    repo = make_extension(dirs.user, "versioned", {"scripts/s.py": ""})
    commit = commit_all(repo, branch="dev")
    make_extension(dirs.user, "plain", {"scripts/p.py": ""})
    # The data folder itself a repository: "plain" must not report the enclosing repository's commit.
    commit_all(dirs.data, branch="outer")

    catalog = discover_extensions(dirs.user, None)

    version = catalog.get("versioned").version
    assert version.commit_hash == commit and version.version == commit[:8] and version.branch == "dev"
    assert isinstance(version.commit_date, int) and version.remote == ""
    plain = catalog.get("plain").version
    assert (plain.commit_hash, plain.version, plain.branch) == ("", "", "")


# ---- install.py ---------------------------------------------------------------------------------

INSTALL_OK = """
    import os, sys
    from pathlib import Path
    import launch  # A1111's install.py files import launch; the app's root is on PYTHONPATH
    Path("installed.txt").write_text(sys.executable + "\\n" + os.getcwd())
    print("hello from install.py of good-ext", flush=True)
"""


def test_install_py_runs_with_the_apps_python_in_its_folder_and_logs_its_output(dirs, caplog):
    folder = make_extension(dirs.user, "good-ext", {"install.py": INSTALL_OK})
    make_extension(dirs.user, "bad-ext", {"install.py": "print('about to fail')\nraise SystemExit(3)\n"})
    make_extension(dirs.user, "off-ext", {"install.py": "open('ran.txt', 'w').close()\n"})
    catalog = discover_extensions(dirs.user, None, ExtensionSwitches(disabled=frozenset({"off-ext"})))
    caplog.set_level(logging.INFO, logger="modules.extensions.installer")

    results = run_installers(catalog)

    assert [(r.extension, r.ok, r.returncode) for r in results] == [("bad-ext", False, 3), ("good-ext", True, 0)]
    python, cwd = (folder / "installed.txt").read_text().splitlines()
    assert python == sys.executable and Path(cwd) == folder
    assert "[good-ext install.py] hello from install.py of good-ext" in caplog.messages
    assert not (dirs.user / "off-ext" / "ran.txt").exists()
    bad = catalog.get("bad-ext")
    assert bad.errors[0].stage == "install" and "exit code 3" in bad.error
    assert "about to fail" in bad.errors[0].traceback
    assert bad.active  # as in A1111, a failed install.py is reported and the extension still loads
    assert catalog.get("good-ext").errors == []


def test_install_py_that_hangs_is_stopped_after_the_timeout(dirs):
    make_extension(dirs.user, "slow-ext", {"install.py": "import time\nprint('waiting', flush=True)\ntime.sleep(600)\n"})
    ext = discover_extensions(dirs.user, None).get("slow-ext")
    result = run_installer(ext, timeout=2)
    assert result.timed_out and not result.ok
    assert "did not finish in 2 s" in ext.error and "waiting" in ext.errors[0].traceback


# ---- importing scripts --------------------------------------------------------------------------

def test_a_script_with_a_syntax_error_is_reported_by_name_while_others_import(dirs):
    make_extension(dirs.user, "broken-ext", {"scripts/broken.py": "def oops(:\n    pass\n"})
    make_extension(dirs.user, "working-ext", {
        "helper_pkg_for_test/__init__.py": "VALUE = 41\n",
        "scripts/works.py": """
            from __future__ import annotations
            from dataclasses import dataclass
            from helper_pkg_for_test import VALUE  # the extension's folder is on sys.path while it loads

            @dataclass
            class Args:
                strength: float = 1.0

            ANSWER = VALUE + 1
        """,
    })
    catalog = discover_extensions(dirs.user, None)
    path_before = list(sys.path)

    modules = {f.canonical_name: import_extension_file(catalog.extension_of(f), f.path) for f in catalog.scripts}

    assert modules["broken-ext/broken.py"] is None
    broken = catalog.get("broken-ext")
    assert broken.errors[0].extension == "broken-ext" and broken.errors[0].stage == "import"
    assert "scripts/broken.py failed to import: SyntaxError" in broken.error
    assert "SyntaxError" in broken.errors[0].traceback
    works = modules["working-ext/works.py"]
    assert works.ANSWER == 42 and works.Args().strength == 1.0
    assert sys.modules[works.__name__] is works
    assert not any(name.endswith("broken") and name.startswith("sd_extensions") for name in sys.modules)
    assert sys.path == path_before
    sys.modules.pop(works.__name__, None)
    sys.modules.pop("helper_pkg_for_test", None)


def test_a_script_that_exits_or_fails_to_import_a_module_is_recorded(dirs):
    make_extension(dirs.user, "exits", {"scripts/e.py": "import sys\nsys.exit('needs more of A1111')\n"})
    make_extension(dirs.user, "wants-a1111", {"scripts/w.py": "from modules import sd_hijack_nonexistent\n"})
    catalog = discover_extensions(dirs.user, None)
    for f in catalog.scripts:
        assert import_extension_file(catalog.extension_of(f), f.path) is None
    assert "SystemExit: needs more of A1111" in catalog.get("exits").error
    assert "sd_hijack_nonexistent" in catalog.get("wants-a1111").error


# ---- preload.py and the flags ---------------------------------------------------------------------

PRELOAD_FLAG = """
    def preload(parser):
        parser.add_argument("--my-ext-strength", type=int, default=1, help="strength of my-ext")
"""


def test_preload_adds_flags_that_then_parse_and_a_failing_preload_is_recorded(dirs):
    make_extension(dirs.user, "flag-ext", {"preload.py": PRELOAD_FLAG})
    make_extension(dirs.user, "raising-ext", {"preload.py": "def preload(parser):\n    raise RuntimeError('no')\n"})
    make_extension(dirs.builtin, "builtin-flag", {"preload.py": """
        def preload(parser):
            parser.add_argument("--builtin-flag", action="store_true")
    """})

    args, catalog = parse_args_with_extensions(
        ["--data-dir", str(dirs.data), "--my-ext-strength", "7", "--builtin-flag", "--port", "9000"],
        builtin_dir=dirs.builtin)

    assert args.my_ext_strength == 7 and args.builtin_flag is True and args.port == 9000
    raising = catalog.get("raising-ext")
    assert raising.errors[0].stage == "preload" and "RuntimeError: no" in raising.error


def test_help_lists_the_extensions_flags(dirs, capsys):
    make_extension(dirs.user, "flag-ext", {"preload.py": PRELOAD_FLAG})
    with pytest.raises(SystemExit) as exited:
        parse_args_with_extensions(["--data-dir", str(dirs.data), "--help"], builtin_dir=dirs.builtin)
    assert exited.value.code == 0 and "--my-ext-strength" in capsys.readouterr().out


@pytest.mark.parametrize("flag", ["--disable-all-extensions", "--disable-extra-extensions"])
def test_flags_keep_a_user_extensions_preload_from_running(dirs, flag, capsys):
    make_extension(dirs.user, "flag-ext", {"preload.py": PRELOAD_FLAG})
    args, catalog = parse_args_with_extensions(["--data-dir", str(dirs.data), flag], builtin_dir=dirs.builtin)
    assert not hasattr(args, "my_ext_strength") and catalog.active() == []
    with pytest.raises(SystemExit):  # its flag is then unknown, as it would be without the extension
        parse_args_with_extensions(["--data-dir", str(dirs.data), flag, "--my-ext-strength", "2"],
                                   builtin_dir=dirs.builtin)


def test_the_settings_file_keeps_a_disabled_extensions_preload_from_running(dirs):
    if "disabled_extensions" not in Options.model_fields and Options.model_config.get("extra") != "allow":
        pytest.skip("modules.settings.Options does not hold disabled_extensions yet (issue 11 adds A1111's keys)")
    make_extension(dirs.user, "flag-ext", {"preload.py": PRELOAD_FLAG})
    (dirs.data / "config.json").write_text('{"disabled_extensions": ["flag-ext"]}')
    args, catalog = parse_args_with_extensions(["--data-dir", str(dirs.data)], builtin_dir=dirs.builtin)
    assert not hasattr(args, "my_ext_strength") and not catalog.get("flag-ext").active


def test_the_base_parser_knows_the_extension_flags():
    args = build_parser().parse_args(["--disable-all-extensions", "--disable-extra-extensions",
                                      "--enable-insecure-extension-access"])
    assert args.disable_all_extensions and args.disable_extra_extensions and args.enable_insecure_extension_access
    defaults = parse_args([])
    assert not (defaults.disable_all_extensions or defaults.disable_extra_extensions
                or defaults.enable_insecure_extension_access)
