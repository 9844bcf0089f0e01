"""An extension's `metadata.ini`, in A1111's format.

    [Extension]
    Name = sd-webui-controlnet
    Requires = other-ext, a|b          ; "a|b": whichever of them is installed
    Before = ext-x                     ; this app: applies to all of this extension's files, and
    After = ext-y                      ;           orders the extension itself (A1111 ignores these here)

    [scripts/xyz.py]                   ; one file; [scripts] applies to every file in scripts/
    Requires = ...
    Before = builtin/lora/lora_script.py   ; another script by canonical name, or an extension name
    After = ...

Lists are separated by commas and/or white space and compared in lower case, as A1111 does.
"""

from __future__ import annotations

import configparser
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

METADATA_FILE = "metadata.ini"
EXTENSION_SECTION = "Extension"
CALLBACKS_PREFIX = "callbacks/"


@dataclass(frozen=True)
class OrderRules:
    """Requires/Before/After of one [section]; names are lower case, "a|b" kept whole."""

    requires: tuple[str, ...] = ()
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()

    def merged(self, other: "OrderRules") -> "OrderRules":
        return OrderRules(self.requires + other.requires, self.before + other.before, self.after + other.after)


@dataclass(frozen=True)
class ExtensionMetadata:
    """What metadata.ini says. `canonical_name` is the folder name in lower case: A1111 keys
    Requires/Before/After on it. `declared_name` ([Extension] Name) is accepted as an alias."""

    canonical_name: str
    declared_name: str = ""
    extension_rules: OrderRules = OrderRules()
    file_rules: Mapping[str, OrderRules] = field(default_factory=dict)  # by section: "scripts/x.py", "scripts"
    # [callbacks/<name>] Before/After: ordering of script_callbacks, for the A1111 adapter.
    callback_rules: Mapping[str, OrderRules] = field(default_factory=dict)
    error: str = ""  # why the file could not be read; the extension still loads, unordered

    @property
    def names(self) -> frozenset[str]:
        """Every name other extensions may use to refer to this one."""
        return frozenset(n for n in (self.canonical_name, self.declared_name.lower().strip()) if n)

    def rules_for(self, subdir: str, filename: str) -> OrderRules:
        """A file's rules: its own [subdir/filename] section, then [subdir], then [Extension]'s Before/After."""
        own = self.file_rules.get(f"{subdir}/{filename}", OrderRules())
        shared = self.file_rules.get(subdir, OrderRules())
        ext = OrderRules(before=self.extension_rules.before, after=self.extension_rules.after)
        return own.merged(shared).merged(ext)


def parse_name_list(text: str) -> tuple[str, ...]:
    """'Ext1 ext2,  ext3' -> ('ext1', 'ext2', 'ext3')."""
    return tuple(x for x in re.split(r"[,\s]+", text.strip().lower()) if x)


def read_metadata(extension_dir: Path) -> ExtensionMetadata:
    canonical = extension_dir.name.lower().strip()
    path = extension_dir / METADATA_FILE
    if not path.is_file():
        return ExtensionMetadata(canonical_name=canonical)
    # No interpolation: a '%' in a value is text, not a syntax error.
    config = configparser.ConfigParser(interpolation=None)
    try:
        config.read_string(path.read_text(encoding="utf-8"), source=str(path))
    except (configparser.Error, UnicodeDecodeError, OSError) as exc:
        return ExtensionMetadata(canonical_name=canonical, error=f"{METADATA_FILE} is not valid: {exc}")

    def rules(section: str) -> OrderRules:
        return OrderRules(*(parse_name_list(config.get(section, key, fallback=""))
                            for key in ("Requires", "Before", "After")))

    return ExtensionMetadata(
        canonical_name=canonical,
        declared_name=config.get(EXTENSION_SECTION, "Name", fallback="").strip(),
        extension_rules=rules(EXTENSION_SECTION) if config.has_section(EXTENSION_SECTION) else OrderRules(),
        file_rules={s: rules(s) for s in config.sections()
                    if s != EXTENSION_SECTION and not s.startswith(CALLBACKS_PREFIX)},
        callback_rules={s[len(CALLBACKS_PREFIX):]: rules(s) for s in config.sections()
                        if s.startswith(CALLBACKS_PREFIX)},
    )
