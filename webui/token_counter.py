"""Prompt token counts for the "12/75" counters, torch-free.

Counts by the rules the engine's text encoder uses (modules/processing/prompt_chunks.py): the
prompt without its extra-network tags (``<lora:...>``, parsed by the engine's own parser), expanded
for every step of its schedule (``[a:b:10]``, ``[a|b]``), emphasis removed, each text split into
75-token chunks (``BREAK`` starts a new chunk; a chunk that fills up within 20 tokens after a comma
is split at that comma). The counter shows the largest count and the chunk capacity it needs:
"80/150".
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Iterable, Optional

from modules.extensions.hooks import NetworkCard
from modules.paths import CLIP_TOKENIZER_DIR
from modules.processing import prompt_chunks

CHUNK = prompt_chunks.CHUNK_LENGTH
_lock = threading.Lock()


@lru_cache(maxsize=1)
def _tokenizer():
    from transformers import CLIPTokenizer  # torch-free; loaded on first count, not at import

    tok = CLIPTokenizer.from_pretrained(str(CLIP_TOKENIZER_DIR))
    tok.model_max_length = 10**9  # we chunk ourselves; silence "sequence too long" warnings
    return tok


def _tokenize(texts: list[str]) -> list[list[int]]:
    with _lock:  # the tokenizer is not documented as thread-safe
        return _tokenizer()(texts, add_special_tokens=False)["input_ids"]


@lru_cache(maxsize=1)
def _comma_token() -> int:
    return _tokenize([","])[0][0]


def _pieces(text: str) -> prompt_chunks.TokenPieces:
    return prompt_chunks.token_pieces(text, _tokenize)


EMBEDDING_KIND = "Textual Inversion"  # the Extra Networks card kind of textual-inversion embeddings


def triggers_from_cards(cards: Iterable[NetworkCard]) -> Optional[prompt_chunks.TriggerWords]:
    """The embeddings among Extra Networks cards, each counting as its number of vectors (as the
    engine counts them); None when there are none."""
    vectors = {c.name: int(c.metadata.get("vectors", 0) or 0) for c in cards if c.kind == EMBEDDING_KIND}
    vectors = {name: n for name, n in vectors.items() if n > 0}
    return prompt_chunks.TriggerWords(vectors, _tokenize) if vectors else None


def count_tokens(prompt: str, steps: int = 20, triggers: Optional[prompt_chunks.TriggerWords] = None,
                 positive: bool = True) -> tuple[int, int]:
    """(tokens, capacity) for the longest text the prompt's schedule produces; a positive prompt's
    AND sub-prompts count one by one (each is encoded on its own), as A1111's counter does."""
    count = prompt_chunks.count_tokens(prompt or "", steps, _pieces, _comma_token(), triggers=triggers,
                                       composable=positive)
    return count.used, count.limit


def warm_up() -> None:
    """Load the tokenizer ahead of the first keystroke (about 2 s); errors wait for real use."""
    try:
        count_tokens("warm up")
    except Exception:
        pass


def counter_text(prompt: str, steps: int = 20, positive: bool = True) -> str:
    count, capacity = count_tokens(prompt, steps, positive=positive)
    return f"{count}/{capacity}"


def counter_html(prompt: str, steps: int = 20, triggers: Optional[prompt_chunks.TriggerWords] = None,
                 positive: bool = True) -> str:
    try:
        count, capacity = count_tokens(prompt, steps, triggers, positive)
    except Exception:  # a counter must never break typing
        return "<span class='token-count'>?/75</span>"
    warn = " token-overflow" if capacity > CHUNK else ""
    return f"<span class='token-count{warn}' title='tokens / chunk capacity'>{count}/{capacity}</span>"
