"""tools/install.sh --check: pip runs again only when the requirements, the Python or the venv changed.

Each case runs the real script in a temporary copy of the repository's install files, with a fake
.venv whose python is a wrapper around this test's Python (so its installed packages count).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tools import install_state

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture()
def checkout(tmp_path) -> Path:
    (tmp_path / "tools").mkdir()
    for name in ("tools/install.sh", "tools/install_state.py", "requirements.txt", "requirements-test.txt",
                 "requirements-nodeps.txt"):
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


def make_venv(root: Path, python: str = sys.executable) -> Path:
    venv = root / ".venv"
    (venv / "bin").mkdir(parents=True)
    wrapper = venv / "bin" / "python"
    wrapper.write_text(f'#!/bin/sh\nexec "{python}" "$@"\n')
    wrapper.chmod(0o755)
    return venv


def check(root: Path, *flags: str) -> tuple[int, str]:
    done = subprocess.run(["bash", "tools/install.sh", "--check", *flags], cwd=root, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHON": "/nonexistent-python"})
    return done.returncode, done.stdout.strip()


def stamp(root: Path, *flags: str) -> None:
    subprocess.run([str(root / ".venv/bin/python"), "tools/install_state.py", "stamp", "--venv", ".venv", *flags],
                   cwd=root, check=True, timeout=60)


def test_fresh_checkout_needs_an_install(checkout):
    assert check(checkout) == (1, "install needed: no virtual environment in .venv")


def test_venv_without_a_finished_install_needs_one(checkout):
    make_venv(checkout)
    assert check(checkout) == (1, "install needed: no finished install recorded (first run)")


def test_second_launch_skips_pip(checkout):
    make_venv(checkout)
    stamp(checkout)
    assert check(checkout) == (0, "up to date")
    # the test install still needs requirements-test.txt installed once
    assert check(checkout, "--test")[0] == 1


def test_test_install_also_stands_for_the_runtime_install(checkout):
    make_venv(checkout)
    stamp(checkout, "--test")
    assert check(checkout, "--test") == (0, "up to date")
    assert check(checkout) == (0, "up to date")


@pytest.mark.parametrize("edited", ["requirements.txt", "requirements-test.txt"])
def test_changed_requirements_need_an_install(checkout, edited):
    make_venv(checkout)
    stamp(checkout, "--test")
    with open(checkout / edited, "a", encoding="utf-8") as f:
        f.write("# a new pin would go here\n")
    rc, line = check(checkout, "--test")
    assert (rc, line) == (1, "install needed: the requirements files or the Python version changed")
    expect_runtime = 1 if edited == "requirements.txt" else 0
    assert check(checkout)[0] == expect_runtime


def test_other_python_version_needs_an_install(checkout):
    venv = make_venv(checkout)
    install_state.write_stamp(venv, "runtime", checkout, python_version="3.10.0 (old)")
    assert check(checkout) == (1, "install needed: the requirements files or the Python version changed")


def test_pinned_package_missing_from_the_venv_needs_an_install(checkout):
    venv = make_venv(checkout)
    with open(checkout / "requirements.txt", "a", encoding="utf-8") as f:
        f.write("surely-not-installed-package==1.0\n")
    stamp(checkout)
    rc, line = check(checkout)
    assert rc == 1 and line.startswith("install needed: the environment is incomplete")
    assert "surely-not-installed-package is not installed" in line
    assert install_state.decide(venv, "runtime", checkout).needed


def test_broken_venv_python_needs_an_install(checkout):
    venv = make_venv(checkout)
    stamp(checkout)
    (venv / "bin" / "python").write_text("#!/bin/sh\nexit 127\n")
    assert check(checkout) == (1, "install needed: the virtual environment in .venv is broken")


def test_requirement_files_follow_includes(checkout):
    names = [p.name for p in install_state.requirement_files("test", checkout)]
    assert names == ["requirements-test.txt", "requirements.txt", "requirements-nodeps.txt"]
    assert [p.name for p in install_state.requirement_files("runtime", checkout)] == ["requirements.txt",
                                                                                      "requirements-nodeps.txt"]
