""""Install from URL" with a local bare git repository standing in for the remote (no network)."""

from __future__ import annotations

import pytest

from modules.cmd_args import parse_args
from modules.extensions.discovery import discover_extensions
from modules.extensions.git_install import InstallFromUrlError, install_allowed, install_from_url
from tests.extension_factory import git, make_bare_repo

FILES = {"scripts/hello.py": "GREETING = 'hi'\n", "metadata.ini": "[Extension]\nName = hello\n"}
LOCAL = {"file"}  # test-only: the UI and API use the default remote schemes, which exclude file://


@pytest.fixture()
def remote(tmp_path):
    bare, commit = make_bare_repo(tmp_path / "remote", "sd-webui-hello", FILES)
    return bare, commit


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_clones_into_extensions_and_the_loader_finds_it_with_its_version(tmp_path, remote):
    bare, commit = remote
    extensions = tmp_path / "data" / "extensions"

    installed = install_from_url(f"file://{bare}", extensions, allow=True, url_schemes=LOCAL)

    assert installed.name == "sd-webui-hello" and installed.path == extensions / "sd-webui-hello"
    assert (installed.path / "scripts" / "hello.py").read_text() == "GREETING = 'hi'\n"
    assert installed.version.commit_hash == commit and installed.version.branch == "main"
    assert installed.version.remote == f"file://{bare}"
    assert leftovers(extensions) == ["sd-webui-hello"]  # no temporary folder left behind
    ext = discover_extensions(extensions, None).get("sd-webui-hello")
    assert ext.active and ext.version.version == commit[:8] and [f.filename for f in ext.scripts] == ["hello.py"]


def test_a_chosen_folder_name_and_branch(tmp_path, remote):
    bare, _ = remote
    work = tmp_path / "remote" / "work" / "sd-webui-hello"
    git(work, "checkout", "--quiet", "-b", "feature")
    (work / "feature.txt").write_text("on the branch")
    git(work, "add", "-A")
    git(work, "commit", "--quiet", "-m", "feature")
    git(work, "push", "--quiet", str(bare), "feature")

    installed = install_from_url(f"file://{bare}", tmp_path / "ext", True, dirname="my-hello",
                                 branch="feature", url_schemes=LOCAL)

    assert installed.path.name == "my-hello" and installed.version.branch == "feature"
    assert (installed.path / "feature.txt").read_text() == "on the branch"


def test_refused_unless_allowed_and_nothing_is_created(tmp_path, remote):
    bare, _ = remote
    with pytest.raises(InstallFromUrlError) as refused:
        install_from_url(f"file://{bare}", tmp_path / "ext", allow=False, url_schemes=LOCAL)
    assert refused.value.reason == "forbidden" and "--enable-insecure-extension-access" in refused.value.message
    assert not (tmp_path / "ext").exists()


@pytest.mark.parametrize("url_of", [
    lambda bare: f"file://{bare}",  # local files: only with the test-only scheme set
    lambda bare: str(bare),  # a plain local path is git's file transport too
    lambda bare: "ext::sh -c touch% /tmp/pwned",
    lambda bare: "fd::3",
    lambda bare: f"something::file://{bare}",
    lambda bare: "--upload-pack=touch /tmp/pwned",
    lambda bare: "https://example.com/a b.git",
    lambda bare: "ftp://example.com/repo.git",
    lambda bare: "",
])
def test_refuses_urls_that_are_not_remote_git_urls(tmp_path, remote, url_of):
    bare, _ = remote
    extensions = tmp_path / "ext"
    with pytest.raises(InstallFromUrlError) as refused:
        install_from_url(url_of(bare), extensions, allow=True)
    assert refused.value.reason == "invalid_url"
    assert leftovers(extensions) == []


@pytest.mark.parametrize("dirname", ["../escape", "..", ".hidden", "a/b", "-rf", "x" * 200, "bad name"])
def test_refuses_hostile_folder_names(tmp_path, remote, dirname):
    bare, _ = remote
    with pytest.raises(InstallFromUrlError) as refused:
        install_from_url(f"file://{bare}", tmp_path / "ext", True, dirname=dirname, url_schemes=LOCAL)
    assert refused.value.reason == "invalid_name"
    assert leftovers(tmp_path / "ext") == [] and not (tmp_path / "escape").exists()


def test_refuses_a_bad_branch_name(tmp_path, remote):
    bare, _ = remote
    with pytest.raises(InstallFromUrlError) as refused:
        install_from_url(f"file://{bare}", tmp_path / "ext", True, branch="--upload-pack=x", url_schemes=LOCAL)
    assert refused.value.reason == "invalid_branch"


def test_refuses_an_existing_folder_and_leaves_it_as_it_was(tmp_path, remote):
    bare, _ = remote
    existing = tmp_path / "ext" / "sd-webui-hello"
    existing.mkdir(parents=True)
    (existing / "mine.txt").write_text("keep")
    with pytest.raises(InstallFromUrlError) as refused:
        install_from_url(f"file://{bare}", tmp_path / "ext", True, url_schemes=LOCAL)
    assert refused.value.reason == "exists"
    assert leftovers(tmp_path / "ext") == ["sd-webui-hello"] and leftovers(existing) == ["mine.txt"]


def test_a_failed_clone_leaves_nothing(tmp_path):
    extensions = tmp_path / "ext"
    with pytest.raises(InstallFromUrlError) as failed:
        install_from_url(f"file://{tmp_path}/no-such-repo.git", extensions, True, url_schemes=LOCAL)
    assert failed.value.reason == "clone_failed" and "no-such-repo" in failed.value.message
    assert leftovers(extensions) == []


def test_git_itself_refuses_protocols_outside_the_allowed_set(tmp_path, remote):
    """Defence in depth: even a URL that passed the check is fetched only over the allowed protocols."""
    bare, _ = remote
    extensions = tmp_path / "ext"
    with pytest.raises(InstallFromUrlError) as failed:
        # "file" is accepted by the URL check here, but git is only allowed "https"
        install_from_url(f"file://{bare}", extensions, True, url_schemes=_AcceptsFileButAllowsHttps())
    assert failed.value.reason == "clone_failed"
    assert leftovers(extensions) == []


class _AcceptsFileButAllowsHttps(frozenset):
    """A scheme set whose membership test says yes to "file" while it iterates as {"https"}."""

    def __new__(cls):
        return super().__new__(cls, {"https"})

    def __contains__(self, item):
        return item in ("file", "https")


@pytest.mark.parametrize("argv, allowed", [
    ([], True),
    (["--server-name", "127.0.0.1"], True),
    (["--server-name", "localhost"], True),
    (["--listen"], False),
    (["--share"], False),
    (["--server-name", "0.0.0.0"], False),
    (["--server-name", "192.168.1.5"], False),
    (["--listen", "--enable-insecure-extension-access"], True),
    (["--share", "--enable-insecure-extension-access"], True),
])
def test_install_allowed_follows_a1111(argv, allowed):
    assert install_allowed(parse_args(argv)) is allowed
