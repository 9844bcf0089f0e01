"""Prompt styles: A1111's `styles.csv` (name, prompt, negative_prompt), read, applied and saved.

A style's prompt holding ``{prompt}`` wraps the user's prompt at that place; otherwise the style
text is appended after a comma, as A1111 does. Torch-free: the web UI and the API share it.

The file is re-read when it changes on disk and written atomically (temporary file, then rename),
so a crash while saving never leaves a half-written styles.csv.
"""

from __future__ import annotations

import csv
import io
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

from modules.atomic_write import write_text_atomic

PLACEHOLDER = "{prompt}"
FIELDS = ("name", "prompt", "negative_prompt")


@dataclass(frozen=True)
class PromptStyle:
    name: str
    prompt: str = ""
    negative_prompt: str = ""


class UnknownStyleError(KeyError):
    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.name = name
        listed = ", ".join(repr(k) for k in known) or "none are defined"
        super().__init__(f"unknown style {name!r}; styles: {listed}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


def merge_prompts(style_prompt: str, prompt: str) -> str:
    """One style applied to one prompt: fill ``{prompt}`` or append with ", "."""
    if PLACEHOLDER in style_prompt:
        return style_prompt.replace(PLACEHOLDER, prompt)
    return ", ".join(part for part in (prompt.strip(), style_prompt.strip()) if part)


def apply_styles(prompt: str, style_prompts: Iterable[str]) -> str:
    for style_prompt in style_prompts:
        prompt = merge_prompts(style_prompt, prompt)
    return prompt


class StyleDatabase:
    """The styles of one styles.csv, in file order. Thread-safe; re-reads the file when it changes."""

    def __init__(self, path: Optional[Path]) -> None:
        self._path = Path(path) if path is not None else None
        self._lock = threading.RLock()
        self._styles: dict[str, PromptStyle] = {}
        self._mtime: Optional[float] = None
        self.reload()

    @property
    def path(self) -> Optional[Path]:
        return self._path

    # ---- reading
    def reload(self) -> None:
        with self._lock:
            self._styles = self._read(self._path)
            self._mtime = self._stat()

    def _stat(self) -> Optional[float]:
        try:
            return self._path.stat().st_mtime_ns if self._path is not None else None
        except OSError:
            return None

    def _fresh(self) -> None:
        if self._stat() != self._mtime:
            self.reload()

    @staticmethod
    def _read(path: Optional[Path]) -> dict[str, PromptStyle]:
        if path is None or not path.exists():
            return {}
        styles: dict[str, PromptStyle] = {}
        with open(path, "r", encoding="utf-8-sig", newline="") as fh:
            for row in csv.DictReader(fh, skipinitialspace=True):
                name = (row.get("name") or "").strip()
                if not name or name == "None":  # A1111 once wrote a "None" placeholder row
                    continue
                prompt = row.get("prompt")
                if prompt is None:
                    prompt = row.get("text") or ""  # the oldest A1111 files named the column "text"
                styles[name] = PromptStyle(name, prompt, row.get("negative_prompt") or "")
        return styles

    def names(self) -> list[str]:
        with self._lock:
            self._fresh()
            return list(self._styles)

    def get(self, name: str) -> PromptStyle:
        with self._lock:
            self._fresh()
            if name not in self._styles:
                raise UnknownStyleError(name, list(self._styles))
            return self._styles[name]

    def __contains__(self, name: object) -> bool:
        with self._lock:
            self._fresh()
            return name in self._styles

    def split_known(self, names: Iterable[str]) -> tuple[list[str], list[str]]:
        """(names that exist, names that do not), each in the order given. A1111 skips a style
        that does not exist instead of failing the job; callers warn about the second list."""
        with self._lock:
            self._fresh()
            known, unknown = [], []
            for name in names:
                (known if name in self._styles else unknown).append(name)
            return known, unknown

    def _selected(self, names: Iterable[str]) -> list[PromptStyle]:
        return [self.get(name) for name in names]

    # ---- applying
    def apply_styles_to_prompt(self, prompt: str, names: Iterable[str]) -> str:
        return apply_styles(prompt, (s.prompt for s in self._selected(names)))

    def apply_negative_styles_to_prompt(self, negative_prompt: str, names: Iterable[str]) -> str:
        return apply_styles(negative_prompt, (s.negative_prompt for s in self._selected(names)))

    def apply(self, prompt: str, negative_prompt: str, names: Iterable[str]) -> tuple[str, str]:
        names = list(names)
        return (self.apply_styles_to_prompt(prompt, names),
                self.apply_negative_styles_to_prompt(negative_prompt, names))

    # ---- writing
    def save_style(self, style: PromptStyle) -> None:
        """Add `style`, or replace the one with its name (keeping its place), and save the file."""
        name = style.name.strip()
        if not name:
            raise ValueError("a style needs a name")
        if name == "None":
            raise ValueError("'None' is not allowed as a style name")
        with self._lock:
            self._fresh()
            self._styles[name] = PromptStyle(name, style.prompt, style.negative_prompt)
            self.save()

    def delete_style(self, name: str) -> None:
        with self._lock:
            self._fresh()
            if name not in self._styles:
                raise UnknownStyleError(name, list(self._styles))
            del self._styles[name]
            self.save()

    def save(self) -> None:
        if self._path is None:
            return
        with self._lock:
            buffer = io.StringIO(newline="")
            writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
            writer.writeheader()
            for style in self._styles.values():
                writer.writerow({"name": style.name, "prompt": style.prompt,
                                 "negative_prompt": style.negative_prompt})
            write_text_atomic(self._path, buffer.getvalue())
            self._mtime = self._stat()

