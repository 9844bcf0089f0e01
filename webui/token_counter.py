"""Prompt token counts for the "12/75" counters, torch-free.

Counts the way A1111 does: the prompt is expanded for every step of its schedule
(``[a:b:10]``, ``[a|b]``), emphasis is removed, ``<lora:...>`` extra-network tags are dropped,
and each text is split into 75-token chunks (``BREAK`` starts a new chunk; a chunk that fills up
within 20 tokens after a comma is split at that comma). The counter shows the largest count and
the chunk capacity it needs: "80/150".
"""

from __future__ import annotations

import math
import re
import threading
from functools import lru_cache

from modules.paths import CLIP_TOKENIZER_DIR
from modules.processing.prompt_parser import PromptSchedule, parse_attention

CHUNK = 75
COMMA_BACKTRACK = 20  # A1111's comma_padding_backtrack default
_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")
_lock = threading.Lock()


@lru_cache(maxsize=1)
def _tokenizer():
    from transformers import CLIPTokenizer  # torch-free; loaded on first count, not at import

    tok = CLIPTokenizer.from_pretrained(str(CLIP_TOKENIZER_DIR))
    tok.model_max_length = 10**9  # we chunk ourselves; silence "sequence too long" warnings
    return tok


@lru_cache(maxsize=1)
def _comma_token() -> int:
    return _tokenizer()(",", add_special_tokens=False)["input_ids"][0]


def _count_text(text: str) -> int:
    pieces = parse_attention(text)
    words = [p.text for p in pieces if not p.is_break]
    with _lock:  # the tokenizer is not documented as thread-safe
        ids = iter(_tokenizer()(words, add_special_tokens=False)["input_ids"] if words else [])
    comma = _comma_token()
    count = 0
    chunk: list[int] = []
    last_comma = -1
    for piece in pieces:
        if piece.is_break:
            count += CHUNK
            chunk, last_comma = [], -1
            continue
        for token in next(ids):
            if token == comma:
                last_comma = len(chunk)
            elif len(chunk) == CHUNK and last_comma != -1 and len(chunk) - last_comma <= COMMA_BACKTRACK:
                moved = chunk[last_comma + 1:]
                count += CHUNK
                chunk, last_comma = moved, -1
            if len(chunk) == CHUNK:
                count += CHUNK
                chunk, last_comma = [], -1
            chunk.append(token)
    return count + len(chunk)


def count_tokens(prompt: str, steps: int = 20) -> tuple[int, int]:
    """(tokens, capacity) for the longest text the prompt's schedule produces."""
    prompt = _EXTRA_NETWORK.sub("", prompt or "")
    texts = set(PromptSchedule.parse(prompt, max(1, int(steps or 1))).texts) or {""}
    count = max(_count_text(text) for text in texts)
    return count, math.ceil(max(count, 1) / CHUNK) * CHUNK


def warm_up() -> None:
    """Load the tokenizer ahead of the first keystroke (about 2 s); errors wait for real use."""
    try:
        count_tokens("warm up")
    except Exception:
        pass


def counter_text(prompt: str, steps: int = 20) -> str:
    count, capacity = count_tokens(prompt, steps)
    return f"{count}/{capacity}"


def counter_html(prompt: str, steps: int = 20) -> str:
    try:
        count, capacity = count_tokens(prompt, steps)
    except Exception:  # a counter must never break typing
        return "<span class='token-count'>?/75</span>"
    warn = " token-overflow" if capacity > CHUNK else ""
    return f"<span class='token-count{warn}' title='tokens / chunk capacity'>{count}/{capacity}</span>"
