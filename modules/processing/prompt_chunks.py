"""Prompt tokens laid out in 75-token chunks, A1111's rules, torch-free.

The one home of the chunk rules for the engine's text encoder (`conditioning.PromptEncoder`) and the
UI's live token counter (`webui/token_counter.py`): both give the same count for the same prompt.

- A ``BREAK`` closes the current chunk.
- A chunk that fills up within `COMMA_BACKTRACK` tokens after a comma is cut at that comma, and
  the tokens after it move to the next chunk, so a phrase is not cut in half.
- A count (A1111's "used/limit") is taken over the text the text encoder sees: extra-network tags
  (``<lora:x:1>``) parsed out by `extra_networks.parse_prompt`, prompt editing resolved for the
  number of steps, the longest of the resulting texts counting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from modules.processing.extra_networks import parse_prompt
from modules.processing.prompt_parser import PromptSchedule, WeightedText, parse_attention

CHUNK_LENGTH = 75  # prompt tokens per chunk
COMMA_BACKTRACK = 20  # A1111's default "comma_padding_backtrack"

# Token ids for each of a list of texts, without BOS/EOS (a tokenizer's batch call)
Tokenize = Callable[[list[str]], list[list[int]]]
TokenPieces = list[tuple[list[int], WeightedText]]


@dataclass(frozen=True)
class TokenCount:
    """For the UI's live counter: ``used/limit``, as A1111 shows it."""

    used: int
    limit: int


@dataclass
class PromptChunk:
    """Up to 75 prompt token ids and their weights, without BOS/EOS/padding."""

    tokens: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)


def token_pieces(text: str, tokenize: Tokenize, emphasis: bool = True) -> TokenPieces:
    """`text` as weighted pieces with their token ids; BREAK pieces carry no ids. Without
    `emphasis` (A1111's emphasis "None") the text is one piece of weight 1, brackets and all."""
    parsed = parse_attention(text) if emphasis else [WeightedText(text, 1.0)]
    words = [p for p in parsed if not p.is_break]
    ids = iter(tokenize([p.text for p in words]) if words else [])
    return [([], p) if p.is_break else (list(next(ids)), p) for p in parsed]


def split_into_chunks(pieces: Sequence[tuple[Sequence[int], WeightedText]], comma_token: Optional[int],
                      backtrack: int = COMMA_BACKTRACK) -> tuple[list[PromptChunk], int]:
    """Lay out weighted token runs into chunks of at most 75 tokens, A1111-style.

    A ``BREAK`` piece closes the current chunk. When a chunk is full and a comma lies within
    `backtrack` tokens of its end, the tokens after that comma move to the next chunk so a phrase is
    not cut in half. Returns the chunks (at least one) and A1111's token count: every chunk but the
    last counts as 75.
    """
    chunks: list[PromptChunk] = []
    chunk = PromptChunk()
    last_comma = -1
    count = 0

    def close(is_last: bool = False) -> None:
        nonlocal chunk, last_comma, count
        count += len(chunk.tokens) if is_last else CHUNK_LENGTH
        chunks.append(chunk)
        chunk = PromptChunk()
        last_comma = -1

    for token_ids, piece in pieces:
        if piece.is_break:
            close()
            continue
        for token in token_ids:
            if token == comma_token:
                last_comma = len(chunk.tokens)
            elif (backtrack and len(chunk.tokens) == CHUNK_LENGTH and last_comma != -1
                  and len(chunk.tokens) - last_comma <= backtrack):
                cut = last_comma + 1
                moved_tokens, moved_weights = chunk.tokens[cut:], chunk.weights[cut:]
                del chunk.tokens[cut:], chunk.weights[cut:]
                close()
                chunk.tokens, chunk.weights = moved_tokens, moved_weights
            if len(chunk.tokens) == CHUNK_LENGTH:
                close()
            chunk.tokens.append(token)
            chunk.weights.append(piece.weight)

    if chunk.tokens or not chunks:
        close(is_last=True)
    return chunks, count


def count_tokens(prompt: str, steps: int, pieces: Callable[[str], TokenPieces], comma_token: Optional[int],
                 backtrack: int = COMMA_BACKTRACK) -> TokenCount:
    """A1111's ``used/limit`` for `prompt` as the text encoder sees it: without extra-network tags,
    prompt editing resolved for `steps` steps, the longest resulting text counting. `pieces` turns
    one text into token pieces (`token_pieces` with the model's tokenizer)."""
    text = parse_prompt(prompt or "").text
    best: Optional[TokenCount] = None
    for candidate in dict.fromkeys(PromptSchedule.parse(text, max(1, int(steps or 1))).texts) or {"": None}:
        chunks, used = split_into_chunks(pieces(candidate), comma_token, backtrack)
        found = TokenCount(used, CHUNK_LENGTH * len(chunks))
        if best is None or (found.used, found.limit) > (best.used, best.limit):
            best = found
    return best or TokenCount(0, CHUNK_LENGTH)


__all__ = ["CHUNK_LENGTH", "COMMA_BACKTRACK", "PromptChunk", "TokenCount", "TokenPieces", "Tokenize",
           "count_tokens", "split_into_chunks", "token_pieces"]
