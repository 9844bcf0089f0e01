"""Prompt tokens laid out in 75-token chunks, A1111's rules, torch-free.

The one home of the chunk rules for the engine's text encoder (`conditioning.PromptEncoder`) and the
UI's live token counter (`webui/token_counter.py`): both give the same count for the same prompt.

- A ``BREAK`` closes the current chunk.
- A chunk that fills up within `COMMA_BACKTRACK` tokens after a comma is cut at that comma, and
  the tokens after it move to the next chunk, so a phrase is not cut in half.
- A textual-inversion trigger word (`TriggerWords`, matched on token ids as A1111 does) takes as
  many tokens as its embedding has vectors, and is never split across chunks.
- A count (A1111's "used/limit") is taken over the text the text encoder sees: extra-network tags
  (``<lora:x:1>``) parsed out by `extra_networks.parse_prompt`, prompt editing resolved for the
  number of steps, the longest of the resulting texts counting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence

from modules.processing.extra_networks import parse_prompt
from modules.processing.prompt_parser import PromptSchedule, WeightedText, parse_attention, split_and

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


EMBEDDING_PLACEHOLDER = 0  # the token id standing in for an embedding's vectors (A1111 uses 0 too)


@dataclass(frozen=True)
class EmbeddingSlot:
    """Where an embedding's vectors go in a chunk: `offset` counts prompt tokens (BOS not counted)."""

    offset: int
    name: str
    vectors: int


@dataclass
class PromptChunk:
    """Up to 75 prompt token ids and their weights, without BOS/EOS/padding. Embedding vectors
    stand as `EMBEDDING_PLACEHOLDER` tokens at the places `embeddings` lists (A1111's "fixes")."""

    tokens: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    embeddings: list[EmbeddingSlot] = field(default_factory=list)


@dataclass(frozen=True)
class TriggerMatch:
    name: str
    length: int  # prompt tokens the trigger word takes up
    vectors: int  # chunk tokens its embedding takes instead


class TriggerWords:
    """Textual-inversion trigger words, found by their token ids as A1111 finds them: at each prompt
    token, the longest trigger whose tokens follow from there wins. Torch-free, so the UI's counter
    can count an embedding's vectors as the engine does."""

    def __init__(self, vectors: Mapping[str, int], tokenize: Tokenize) -> None:
        names = [n for n, count in vectors.items() if 0 < count <= CHUNK_LENGTH]
        self._by_first: dict[int, list[tuple[tuple[int, ...], TriggerMatch]]] = {}
        for name, ids in zip(names, tokenize(names) if names else []):
            if ids:
                match = TriggerMatch(name, len(ids), int(vectors[name]))
                self._by_first.setdefault(ids[0], []).append((tuple(ids), match))
        for options in self._by_first.values():
            options.sort(key=lambda o: len(o[0]), reverse=True)

    def __bool__(self) -> bool:
        return bool(self._by_first)

    def match(self, tokens: Sequence[int], position: int) -> Optional[TriggerMatch]:
        for ids, found in self._by_first.get(tokens[position], ()):
            if tuple(tokens[position:position + len(ids)]) == ids:
                return found
        return None


def token_pieces(text: str, tokenize: Tokenize, emphasis: bool = True) -> TokenPieces:
    """`text` as weighted pieces with their token ids; BREAK pieces carry no ids. Without
    `emphasis` (A1111's emphasis "None") the text is one piece of weight 1, brackets and all."""
    parsed = parse_attention(text) if emphasis else [WeightedText(text, 1.0)]
    words = [p for p in parsed if not p.is_break]
    ids = iter(tokenize([p.text for p in words]) if words else [])
    return [([], p) if p.is_break else (list(next(ids)), p) for p in parsed]


def split_into_chunks(pieces: Sequence[tuple[Sequence[int], WeightedText]], comma_token: Optional[int],
                      backtrack: int = COMMA_BACKTRACK, triggers: Optional[TriggerWords] = None,
                      ) -> tuple[list[PromptChunk], int]:
    """Lay out weighted token runs into chunks of at most 75 tokens, A1111-style.

    A ``BREAK`` piece closes the current chunk. When a chunk is full and a comma lies within
    `backtrack` tokens of its end, the tokens after that comma move to the next chunk so a phrase is
    not cut in half. A trigger word becomes its embedding's vectors, kept in one chunk. Returns the
    chunks (at least one) and A1111's token count: every chunk but the last counts as 75.
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
        position = 0
        while position < len(token_ids):
            token = token_ids[position]
            if token == comma_token:
                last_comma = len(chunk.tokens)
            elif (backtrack and len(chunk.tokens) == CHUNK_LENGTH and last_comma != -1
                  and len(chunk.tokens) - last_comma <= backtrack):
                cut = last_comma + 1
                moved_tokens, moved_weights = chunk.tokens[cut:], chunk.weights[cut:]
                moved_slots = [EmbeddingSlot(s.offset - cut, s.name, s.vectors)
                               for s in chunk.embeddings if s.offset >= cut]
                del chunk.tokens[cut:], chunk.weights[cut:]
                chunk.embeddings = [s for s in chunk.embeddings if s.offset < cut]
                close()
                chunk.tokens, chunk.weights, chunk.embeddings = moved_tokens, moved_weights, moved_slots
            if len(chunk.tokens) == CHUNK_LENGTH:
                close()
            found = triggers.match(token_ids, position) if triggers else None
            if found is None:
                chunk.tokens.append(token)
                chunk.weights.append(piece.weight)
                position += 1
                continue
            if len(chunk.tokens) + found.vectors > CHUNK_LENGTH:
                close()  # an embedding's vectors stay together in one chunk
            chunk.embeddings.append(EmbeddingSlot(len(chunk.tokens), found.name, found.vectors))
            chunk.tokens += [EMBEDDING_PLACEHOLDER] * found.vectors
            chunk.weights += [piece.weight] * found.vectors
            position += found.length

    if chunk.tokens or not chunks:
        close(is_last=True)
    return chunks, count


def count_tokens(prompt: str, steps: int, pieces: Callable[[str], TokenPieces], comma_token: Optional[int],
                 backtrack: int = COMMA_BACKTRACK, triggers: Optional[TriggerWords] = None,
                 composable: bool = False) -> TokenCount:
    """A1111's ``used/limit`` for `prompt` as the text encoder sees it: without extra-network tags,
    prompt editing resolved for `steps` steps, the longest resulting text counting. `pieces` turns
    one text into token pieces (`token_pieces` with the model's tokenizer); `triggers`: the
    embeddings, each counting as its number of vectors. `composable` (positive prompts, as A1111's
    is_positive): each ``AND`` sub-prompt counts on its own, the longest wins."""
    text = parse_prompt(prompt or "").text
    subs = [s.text for s in split_and(text)] if composable else [text]
    texts = [t for sub in subs for t in PromptSchedule.parse(sub, max(1, int(steps or 1))).texts]
    best: Optional[TokenCount] = None
    for candidate in dict.fromkeys(texts) or {"": None}:
        chunks, used = split_into_chunks(pieces(candidate), comma_token, backtrack, triggers)
        found = TokenCount(used, CHUNK_LENGTH * len(chunks))
        if best is None or (found.used, found.limit) > (best.used, best.limit):
            best = found
    return best or TokenCount(0, CHUNK_LENGTH)


__all__ = ["CHUNK_LENGTH", "COMMA_BACKTRACK", "EMBEDDING_PLACEHOLDER", "EmbeddingSlot", "PromptChunk", "TokenCount",
           "TokenPieces", "Tokenize", "TriggerMatch", "TriggerWords", "count_tokens", "split_into_chunks",
           "token_pieces"]
