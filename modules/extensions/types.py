"""What the loader found: extensions, their files and their errors (plain data, no behaviour)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from modules.extensions.metadata import ExtensionMetadata

# A1111's `disable_all_extensions` values: "extra" keeps only the built-in extensions.
DisableMode = Literal["none", "extra", "all"]
ErrorStage = Literal["metadata", "duplicate", "requires", "install", "preload", "import"]


@dataclass(frozen=True)
class ScriptArgInfo:
    """One entry of /sdapi/v1/script-info's `args` (A1111's ScriptArg): a script's argument,
    for A1111 scripts and selectable scripts alike."""

    label: str = ""
    value: Any = None
    minimum: Any = None
    maximum: Any = None
    step: Any = None
    choices: Optional[list[Any]] = None


@dataclass(frozen=True)
class ExtensionError:
    """One failure, always named by the extension it belongs to."""

    extension: str
    stage: ErrorStage
    message: str
    traceback: str = ""  # the Python traceback or the tail of a subprocess's output, when there is one

    def __str__(self) -> str:
        return f"extension {self.extension!r} ({self.stage}): {self.message}"


@dataclass(frozen=True)
class GitVersion:
    """A1111's version fields; all empty when the folder is not itself a git repository."""

    commit_hash: str = ""
    commit_date: Optional[int] = None  # unix time of HEAD's commit
    branch: str = ""  # "" when HEAD is detached
    remote: str = ""  # remote.origin.url

    @property
    def version(self) -> str:
        """The short hash A1111 shows (8 hex digits)."""
        return self.commit_hash[:8]


@dataclass(frozen=True)
class ExtensionFile:
    """A file of an extension (scripts/x.py, javascript/x.js), named as A1111's ordering names it."""

    extension: str  # the extension's folder name
    canonical_name: str  # "[builtin/]<extension canonical name>/<filename>"
    path: Path

    @property
    def filename(self) -> str:
        return self.path.name

    @property
    def basedir(self) -> Path:
        """The extension's folder (A1111's scripts.basedir() while the file loads)."""
        return self.path.parent.parent


@dataclass
class Extension:
    name: str  # folder name; what `disabled_extensions` lists
    path: Path
    is_builtin: bool
    enabled: bool  # the user's switch: not listed in `disabled_extensions`
    metadata: ExtensionMetadata
    version: GitVersion = GitVersion()
    scripts: tuple[ExtensionFile, ...] = ()  # scripts/*.py, sorted by file name
    javascript: tuple[ExtensionFile, ...] = ()  # javascript/*.js, sorted
    javascript_modules: tuple[ExtensionFile, ...] = ()  # javascript/*.mjs (A1111 adds them as type=module)
    stylesheet: Optional[Path] = None  # style.css
    install_script: Optional[Path] = None  # install.py
    preload_script: Optional[Path] = None  # preload.py
    # Why an enabled extension does not load ("" when it does): a global switch, a missing requirement...
    disabled_reason: str = ""
    errors: list[ExtensionError] = field(default_factory=list)

    @property
    def canonical_name(self) -> str:
        return self.metadata.canonical_name

    @property
    def active(self) -> bool:
        """Loaded: enabled by the user and not stopped by a switch, a requirement or a duplicate name."""
        return self.enabled and not self.disabled_reason

    @property
    def error(self) -> str:
        """All of this extension's errors in one line, for a table cell; "" when none."""
        return "; ".join(f"{e.stage}: {e.message}" for e in self.errors)


@dataclass
class ExtensionCatalog:
    """Every extension found, in load order, and the files of the active ones in A1111's order."""

    extensions: list[Extension]
    mode: DisableMode = "none"
    scripts: list[ExtensionFile] = field(default_factory=list)
    javascript: list[ExtensionFile] = field(default_factory=list)
    javascript_modules: list[ExtensionFile] = field(default_factory=list)
    stylesheets: list[Path] = field(default_factory=list)

    def active(self) -> list[Extension]:
        return [e for e in self.extensions if e.active]

    def get(self, name: str) -> Optional[Extension]:
        return next((e for e in self.extensions if e.name == name), None)

    def extension_of(self, file: ExtensionFile) -> Extension:
        # By folder, not by name: a user extension may share a built-in one's folder name.
        found = next((e for e in self.extensions if e.path == file.basedir), None)
        if found is None:
            raise KeyError(file.extension)
        return found

    def errors(self) -> list[ExtensionError]:
        return [err for e in self.extensions for err in e.errors]
