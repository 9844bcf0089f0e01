"""Extra-network tags in prompts (`<lora:name:0.8>`, `<hypernet:x:1>`), parsed once per prompt.

The engine, the UI's token counter and the infotext all use this one parser: the text encoder sees
the prompt without its tags, the infotext keeps them, and each extension receives the calls of the
kind it registered (`JobExtension.extra_network`). The grammar is A1111's: `<kind:arg1:arg2...>`
with a word-character kind and at least one argument; tags are removed wherever they stand.
Torch-free.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TAG_RE = re.compile(r"<(\w+):([^>]+)>")


@dataclass(frozen=True)
class ExtraNetworkCall:
    """One tag: `<lora:name:0.8>` -> kind "lora", items ("name", "0.8")."""

    kind: str
    items: tuple[str, ...]
    prompt_index: int = 0  # which prompt of the batch it came from

    @property
    def name(self) -> str:
        return self.items[0] if self.items else ""

    def number(self, position: int, default: float) -> float:
        """A numeric argument (the weight is items[1]); a missing or unreadable one gives `default`."""
        try:
            return float(self.items[position])
        except (IndexError, ValueError):
            return default


@dataclass(frozen=True)
class ParsedPrompt:
    text: str  # without the tags
    calls: tuple[ExtraNetworkCall, ...]


def parse_prompt(prompt: str, prompt_index: int = 0) -> ParsedPrompt:
    calls: list[ExtraNetworkCall] = []

    def take(match: re.Match) -> str:
        calls.append(ExtraNetworkCall(match.group(1), tuple(match.group(2).split(":")), prompt_index))
        return ""

    return ParsedPrompt(TAG_RE.sub(take, prompt), tuple(calls))


def parse_prompts(prompts: list[str]) -> tuple[list[str], list[ExtraNetworkCall]]:
    """Prompts without their tags, and every tag of every prompt (each knows its prompt_index)."""
    texts, calls = [], []
    for i, prompt in enumerate(prompts):
        parsed = parse_prompt(prompt, i)
        texts.append(parsed.text)
        calls.extend(parsed.calls)
    return texts, calls


__all__ = ["ExtraNetworkCall", "ParsedPrompt", "parse_prompt", "parse_prompts", "TAG_RE"]
