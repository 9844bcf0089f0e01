"""Whether tools/install.sh needs to run pip, or the virtual environment is up to date.

    .venv/bin/python tools/install_state.py check [--test]   prints "up to date" (exit 0)
                                                              or "install needed: <why>" (exit 1)
    .venv/bin/python tools/install_state.py stamp [--test]   records a finished install

Run it with the venv's own Python: the stamp holds a hash of the requirements files and of that
Python's version, and the check also confirms each pinned package is installed at its pin, so an
interrupted or hand-damaged install is caught too. Standard library only (it runs before pip).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parent.parent
STAMP_NAME = "sd-webui-install-{kind}.stamp"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(==\s*([^\s;#]+))?")


@dataclass(frozen=True)
class Decision:
    needed: bool
    reason: str

    def line(self) -> str:
        return f"install needed: {self.reason}" if self.needed else "up to date"


def requirement_files(kind: str, repo: Path = REPO) -> list[Path]:
    """The files an install of `kind` ("runtime" or "test") reads, includes (-r) followed."""
    top = repo / ("requirements-test.txt" if kind == "test" else "requirements.txt")
    seen: list[Path] = []

    def visit(path: Path) -> None:
        if path in seen:
            return
        seen.append(path)
        for line in _lines(path):
            if line.startswith(("-r ", "--requirement ")):
                visit(path.parent / line.split(None, 1)[1].strip())

    visit(top)
    nodeps = repo / "requirements-nodeps.txt"  # installed with --no-deps beside either kind
    if nodeps.is_file():
        visit(nodeps)
    return seen


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    return [line.split(" #")[0].strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def fingerprint(kind: str, repo: Path = REPO, python_version: str = sys.version) -> str:
    digest = hashlib.sha256(f"{kind}\n{python_version}\n".encode())
    for path in requirement_files(kind, repo):
        digest.update(path.name.encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"<missing>")
    return digest.hexdigest()


def stamp_path(venv: Path, kind: str) -> Path:
    return venv / STAMP_NAME.format(kind=kind)


def missing_pins(kind: str, repo: Path = REPO) -> list[str]:
    """Pinned packages (name==version) not installed at their pin in this Python."""
    problems = []
    for path in requirement_files(kind, repo):
        for line in _lines(path):
            match = _PIN.match(line)
            if line.startswith("-") or not match:
                continue
            name, pinned = match.group(1), match.group(3)
            try:
                installed = metadata.version(name)
            except metadata.PackageNotFoundError:
                problems.append(f"{name} is not installed")
                continue
            if pinned and installed.split("+")[0] != pinned.split("+")[0]:
                problems.append(f"{name} is {installed}, wanted {pinned}")
    return problems


def decide(venv: Path, kind: str, repo: Path = REPO, python_version: str = sys.version) -> Decision:
    stamp = stamp_path(venv, kind)
    try:
        recorded: Optional[str] = stamp.read_text(encoding="utf-8").strip()
    except OSError:
        return Decision(True, "no finished install recorded (first run)")
    if recorded != fingerprint(kind, repo, python_version):
        return Decision(True, "the requirements files or the Python version changed")
    problems = missing_pins(kind, repo)
    if problems:
        return Decision(True, "the environment is incomplete (" + "; ".join(problems[:3]) + ")")
    return Decision(False, "")


def write_stamp(venv: Path, kind: str, repo: Path = REPO, python_version: str = sys.version) -> None:
    # A test install includes requirements.txt, so it also stands for a runtime install.
    for each in ("runtime", "test") if kind == "test" else ("runtime",):
        stamp_path(venv, each).write_text(fingerprint(each, repo, python_version) + "\n", encoding="utf-8")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("check", "stamp"))
    parser.add_argument("--test", action="store_true", help="the test install (requirements-test.txt)")
    parser.add_argument("--venv", type=Path, default=Path(sys.prefix), help="the virtual environment (default: this Python's)")
    args = parser.parse_args(argv)
    kind = "test" if args.test else "runtime"
    if args.action == "stamp":
        write_stamp(args.venv, kind)
        return 0
    decision = decide(args.venv, kind)
    print(decision.line())
    return 1 if decision.needed else 0


if __name__ == "__main__":
    sys.exit(main())
