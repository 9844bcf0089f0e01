"""Prompts to the tensors the denoising loop needs, the A1111 way.

`PromptEncoder` turns one text into a `Conditioning`: attention weights and ``BREAK`` from
`prompt_parser.parse_attention`, no 75-token limit (the text is cut into chunks of 75 tokens, each
encoded as its own 77-token CLIP sequence and the results joined along the token axis), A1111's clip
skip, and SDXL's two encoders plus pooled embedding.

`ScheduledConditioning` adds prompt editing and alternation for a batch: ``at(step)`` gives the
batched conditioning for a sampling step and hands back the very same object while nothing changes.

`EmbeddingTable` carries textual-inversion vectors into an encoding: a trigger word in the prompt
becomes its embedding's vectors in place of the token embeddings the text encoder would look up
(spliced in by a forward hook on the token-embedding layer for the one call, then removed).

`make_same_length` pads a positive/negative pair to the same number of chunks so they can go through
the UNet in one CFG batch.

Tensors returned here are shared (cached); treat them as read-only.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Hashable, Iterator, Optional, Sequence

import torch

from modules.processing import prompt_chunks
from modules.processing.prompt_chunks import (
    CHUNK_LENGTH,
    COMMA_BACKTRACK,
    PromptChunk,
    TokenCount,
    TriggerWords,
    split_into_chunks,
)
from modules.processing.prompt_parser import PromptSchedule

__all__ = [
    "CHUNK_TOKENS",
    "CHUNK_LENGTH",
    "EMPHASIS_MODES",
    "TokenCount",
    "Conditioning",
    "PromptEmbedding",
    "EmbeddingTable",
    "PromptChunk",
    "split_into_chunks",
    "PromptEncoder",
    "ScheduledConditioning",
    "ScheduledPair",
    "make_same_length",
]

CHUNK_TOKENS = CHUNK_LENGTH + 2  # with BOS and EOS: what CLIP sees
EMPHASIS_MODES = ("Original", "No norm", "None")


@dataclass(eq=False)  # tensors: compare with torch, not ==
class Conditioning:
    """Text conditioning for a batch.

    `embeds` is ``[B, 77*k, D]``; `pooled` is ``[B, P]`` for SDXL and None otherwise. `empty_chunk`
    (``[1, 77, D]``) is the encoding of an empty prompt chunk from the same encoder and clip skip,
    the filler when two conditionings must have the same number of chunks.
    """

    embeds: torch.Tensor
    pooled: Optional[torch.Tensor] = None
    empty_chunk: Optional[torch.Tensor] = field(default=None, repr=False, compare=False)
    embeddings_used: frozenset[str] = frozenset()  # textual-inversion names whose vectors went in

    @property
    def batch_size(self) -> int:
        return self.embeds.shape[0]

    @property
    def chunks(self) -> int:
        return self.embeds.shape[1] // CHUNK_TOKENS

    def pad_to_length(self, chunks: int) -> "Conditioning":
        """This conditioning with empty chunks appended up to `chunks` chunks (self if already)."""
        missing = chunks - self.chunks
        if missing <= 0:
            return self
        if self.empty_chunk is None:
            raise ValueError("cannot pad this conditioning: it carries no empty_chunk encoding")
        filler = self.empty_chunk.to(self.embeds.device, self.embeds.dtype)
        filler = filler.expand(self.batch_size, -1, -1).repeat(1, missing, 1)
        return Conditioning(torch.cat([self.embeds, filler], dim=1), self.pooled, self.empty_chunk,
                            self.embeddings_used)

    @staticmethod
    def cat(items: Sequence["Conditioning"]) -> "Conditioning":
        """Concatenate along the batch axis, padding shorter items with empty chunks first."""
        if not items:
            raise ValueError("Conditioning.cat needs at least one item")
        if len(items) == 1:
            return items[0]
        longest = max(c.chunks for c in items)
        padded = [c.pad_to_length(longest) for c in items]
        embeds = torch.cat([c.embeds for c in padded], dim=0)
        has_pooled = [c.pooled is not None for c in padded]
        if any(has_pooled) and not all(has_pooled):
            raise ValueError("Conditioning.cat: some items have a pooled embedding and some do not")
        pooled = torch.cat([c.pooled for c in padded], dim=0) if all(has_pooled) else None
        used = frozenset().union(*(c.embeddings_used for c in items))
        return Conditioning(embeds, pooled, items[0].empty_chunk, used)


def make_same_length(cond: Conditioning, uncond: Conditioning) -> tuple[Conditioning, Conditioning]:
    """Pad whichever of the two has fewer chunks with empty-chunk encodings (A1111's
    pad_cond_uncond), so that ``torch.cat([uncond.embeds, cond.embeds])`` works for CFG."""
    chunks = max(cond.chunks, uncond.chunks)
    return cond.pad_to_length(chunks), uncond.pad_to_length(chunks)


# Tokens to chunks: modules/processing/prompt_chunks.py (shared with the UI's token counter)


# --------------------------------------------------------------------------------------------------
# Textual-inversion vectors for an encoding
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PromptEmbedding:
    """One textual-inversion embedding ready for a model: `vectors[i]` is ``[n, width_i]`` for the
    model's i-th text encoder. `identity` changes whenever the vectors do (the file's hash)."""

    name: str
    vectors: tuple[torch.Tensor, ...]
    identity: Hashable

    @property
    def count(self) -> int:
        return int(self.vectors[0].shape[0])


class EmbeddingTable:
    """The trigger words a job's prompts may use (name -> `PromptEmbedding`), A1111's embedding
    database as one immutable value. `identity` names its content: the encoder's cache keys on it,
    so a table with other vectors never gets an encoding made with the old ones."""

    def __init__(self, embeddings: Sequence[PromptEmbedding] = ()) -> None:
        self.by_name: dict[str, PromptEmbedding] = {e.name: e for e in embeddings}
        self.identity: Hashable = tuple(sorted((e.name, e.identity) for e in self.by_name.values()))

    def __len__(self) -> int:
        return len(self.by_name)

    def vector_counts(self) -> dict[str, int]:
        return {name: e.count for name, e in self.by_name.items()}


# --------------------------------------------------------------------------------------------------
# The encoder
# --------------------------------------------------------------------------------------------------


class PromptEncoder:
    """CLIP text encoder(s) with A1111 prompt semantics.

    SD1/SD2: one ``CLIPTextModel``. SDXL: ``CLIPTextModel`` + ``CLIPTextModelWithProjection``
    (features concatenated, pooled from the second). SDXL refiner: the projection model alone.
    Assumes all tokenizers share one vocabulary (true for every SD family); only their padding
    token may differ.
    """

    def __init__(self, tokenizers: Sequence[Any], text_encoders: Sequence[torch.nn.Module], *,
                 is_xl: bool = False, device: Optional[torch.device | str] = None,
                 dtype: Optional[torch.dtype] = None, emphasis: str = "Original",
                 comma_backtrack: int = COMMA_BACKTRACK, cache_size: int = 64) -> None:
        if not tokenizers or len(tokenizers) != len(text_encoders):
            raise ValueError("PromptEncoder needs one tokenizer per text encoder, at least one")
        if emphasis not in EMPHASIS_MODES:
            raise ValueError(f"emphasis must be one of {EMPHASIS_MODES}, got {emphasis!r}")
        self.tokenizers = list(tokenizers)
        self.text_encoders = list(text_encoders)
        self.is_xl = is_xl
        first_param = next(self.text_encoders[0].parameters())
        self.device = torch.device(device) if device is not None else first_param.device
        self.dtype = dtype if dtype is not None else first_param.dtype
        self.emphasis = emphasis
        self.comma_backtrack = comma_backtrack
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, int, Hashable, Hashable], Conditioning] = OrderedDict()
        self._lock = threading.RLock()  # the UI thread and the worker may share one encoder
        self._triggers: OrderedDict[Hashable, TriggerWords] = OrderedDict()  # per EmbeddingTable identity

        tok = self.tokenizers[0]
        self.bos_id = tok.bos_token_id
        self.eos_id = tok.eos_token_id
        self.comma_id = tok.get_vocab().get(",</w>")
        self.pad_ids = [t.pad_token_id if t.pad_token_id is not None else t.eos_token_id
                        for t in self.tokenizers]

    @classmethod
    def from_model(cls, model, **kwargs) -> "PromptEncoder":
        """From a `LoadedModel`: its pipe's tokenizer(s)/text encoder(s), outputs on the UNet's
        device and dtype."""
        pipe = model.pipe
        pairs = [(getattr(pipe, tok, None), getattr(pipe, enc, None))
                 for tok, enc in (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"))]
        pairs = [(t, e) for t, e in pairs if t is not None and e is not None]
        if not pairs:
            raise ValueError(f"model {model.name!r} has no tokenizer/text encoder")
        kwargs.setdefault("device", model.device)
        kwargs.setdefault("dtype", model.dtype)
        return cls([t for t, _ in pairs], [e for _, e in pairs], is_xl=model.family.is_xl, **kwargs)

    # ---- tokens ----------------------------------------------------------------------------------

    def _pieces(self, text: str) -> prompt_chunks.TokenPieces:
        return prompt_chunks.token_pieces(text, self._tokenize, emphasis=self.emphasis != "None")

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        # verbose=False: a prompt longer than 77 tokens is the point here, not worth a warning.
        return self.tokenizers[0](texts, truncation=False, add_special_tokens=False,
                                  verbose=False)["input_ids"]

    def trigger_words(self, embeddings: Optional[EmbeddingTable]) -> Optional[TriggerWords]:
        """The token-id matcher of a table's trigger words (kept for the last few tables)."""
        if not embeddings:
            return None
        with self._lock:
            found = self._triggers.get(embeddings.identity)
            if found is None:
                found = TriggerWords(embeddings.vector_counts(), self._tokenize)
                self._triggers[embeddings.identity] = found
                while len(self._triggers) > 4:
                    self._triggers.popitem(last=False)
            else:
                self._triggers.move_to_end(embeddings.identity)
            return found

    def chunks(self, text: str, embeddings: Optional[EmbeddingTable] = None) -> tuple[list[PromptChunk], int]:
        """The 75-token chunks of `text` and A1111's token count (an embedding counts its vectors)."""
        return split_into_chunks(self._pieces(text), self.comma_id, self.comma_backtrack,
                                 self.trigger_words(embeddings))

    def count_tokens(self, text: str, steps: int = 20, embeddings: Optional[EmbeddingTable] = None) -> TokenCount:
        """A1111's ``used/limit`` counter, by the rules the UI's counter uses too
        (`prompt_chunks.count_tokens`: extra-network tags out, prompt editing resolved)."""
        return prompt_chunks.count_tokens(text, steps, self._pieces, self.comma_id, self.comma_backtrack,
                                          self.trigger_words(embeddings))

    # ---- encoding --------------------------------------------------------------------------------

    def encode(self, text: str, clip_skip: int = 1, state: Hashable = (),
               embeddings: Optional[EmbeddingTable] = None) -> Conditioning:
        """Encode one text (no scheduling): ``embeds [1, 77*k, D]``, ``pooled [1, P]`` for SDXL.

        `state` names what is patched into the text encoder(s) right now (LoRA weights:
        `BatchState.text_encoder_state`); `embeddings` are the textual-inversion trigger words the
        text may use. The cache keeps each state and each table's identity apart."""
        key = (text, int(clip_skip), state, embeddings.identity if embeddings else None)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
            chunks, _ = self.chunks(text, embeddings)
            cond = self._encode_chunks(chunks, int(clip_skip), embeddings)
            cond.empty_chunk = (cond.embeds[:, :CHUNK_TOKENS] if text == ""
                                else self.empty_chunk(clip_skip, state))
            self._cache[key] = cond
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return cond

    def empty_chunk(self, clip_skip: int = 1, state: Hashable = ()) -> torch.Tensor:
        """``[1, 77, D]``: the encoding of an empty prompt, used to pad to a common length."""
        return self.encode("", clip_skip, state).embeds

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    @torch.no_grad()
    def _encode_chunks(self, chunks: list[PromptChunk], clip_skip: int,
                       embeddings: Optional[EmbeddingTable] = None) -> Conditioning:
        weights = torch.tensor([[1.0] + c.weights + [1.0] * (CHUNK_TOKENS - 1 - len(c.weights))
                                for c in chunks], dtype=torch.float32)
        features, pooled = [], None
        for index, (encoder, pad_id) in enumerate(zip(self.text_encoders, self.pad_ids)):
            ids = torch.tensor([[self.bos_id] + c.tokens + [self.eos_id]
                                + [pad_id] * (CHUNK_TOKENS - 2 - len(c.tokens)) for c in chunks],
                               dtype=torch.long, device=_device_of(encoder))
            with _spliced_vectors(encoder, chunks, embeddings, index):
                out = encoder(input_ids=ids, output_hidden_states=True)
            z = self._select_layer(encoder, out, clip_skip)
            features.append(self._apply_weights(z, weights))
            if self.is_xl and getattr(out, "text_embeds", None) is not None:
                pooled = out.text_embeds[:1]  # the first chunk's, like A1111
        z = torch.cat(features, dim=-1)  # [k, 77, D]
        embeds = z.reshape(1, -1, z.shape[-1]).to(self.device, self.dtype)
        if pooled is not None:
            pooled = pooled.to(self.device, self.dtype)
        used = frozenset(slot.name for c in chunks for slot in c.embeddings)
        return Conditioning(embeds, pooled, embeddings_used=used)

    def _select_layer(self, encoder, out, clip_skip: int) -> torch.Tensor:
        hidden = out.hidden_states  # embeddings output + one per layer
        if self.is_xl:
            # Penultimate layer by default, without the final norm; clip skip goes further back.
            n = min(max(clip_skip, 1) + 1, len(hidden))
            return hidden[-n]
        n = min(max(clip_skip, 1), len(hidden))
        if n == 1:
            return out.last_hidden_state
        return _final_layer_norm(encoder)(hidden[-n])

    def _apply_weights(self, z: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if self.emphasis == "None" or bool((weights == 1.0).all()):
            return z
        z32 = z.float()
        w = weights.to(z.device).unsqueeze(-1)
        weighted = z32 * w
        if self.emphasis == "Original":
            # Per chunk: scale back to the mean the chunk had before weighting.
            original_mean = z32.mean(dim=(1, 2), keepdim=True)
            new_mean = weighted.mean(dim=(1, 2), keepdim=True)
            weighted = weighted * (original_mean / new_mean)
        return weighted.to(z.dtype)


def _device_of(module: torch.nn.Module) -> torch.device:
    device = getattr(module, "device", None)
    return device if isinstance(device, torch.device) else next(module.parameters()).device


@contextmanager
def _spliced_vectors(encoder: torch.nn.Module, chunks: Sequence[PromptChunk], embeddings: Optional[EmbeddingTable],
                     index: int) -> Iterator[None]:
    """While the block runs, the encoder's token-embedding layer returns the embeddings' vectors at
    their slots (A1111's EmbeddingsWithFixes). CLIPTextModel takes no `inputs_embeds`, and keeping
    `input_ids` keeps the pooled (EOS) output right. The hook acts only on this thread's call and is
    removed on the way out."""
    slots = [(row, slot) for row, c in enumerate(chunks) for slot in c.embeddings]
    if not slots or embeddings is None:
        yield
        return
    owner = threading.get_ident()

    def splice(_module, _args, output: torch.Tensor) -> torch.Tensor:
        if threading.get_ident() != owner:
            return output
        output = output.clone()
        for row, slot in slots:
            vectors = embeddings.by_name[slot.name].vectors[index]
            start = 1 + slot.offset  # after BOS
            output[row, start:start + slot.vectors] = vectors.to(output.device, output.dtype)
        return output

    handle = encoder.get_input_embeddings().register_forward_hook(splice)
    try:
        yield
    finally:
        handle.remove()


def _final_layer_norm(encoder: torch.nn.Module) -> torch.nn.Module:
    # transformers 5 flattened CLIPTextModel; CLIPTextModelWithProjection still nests text_model.
    return getattr(encoder, "text_model", encoder).final_layer_norm


# --------------------------------------------------------------------------------------------------
# Scheduled conditioning for a batch
# --------------------------------------------------------------------------------------------------


class ScheduledConditioning:
    """Per-step conditioning for a batch of prompts (one per image), with prompt editing and
    alternation. ``at(step)`` is cheap when nothing changed since the previous step: the same
    `Conditioning` object comes back."""

    def __init__(self, encoder: PromptEncoder, prompts: Sequence[str], steps: int, clip_skip: int = 1,
                 *, hires_steps: Optional[int] = None, max_cached: int = 32, state: Hashable = (),
                 embeddings: Optional[EmbeddingTable] = None) -> None:
        if not prompts:
            raise ValueError("ScheduledConditioning needs at least one prompt")
        self.encoder = encoder
        self.prompts = list(prompts)
        self.steps = steps
        self.clip_skip = clip_skip
        self.state = state  # the text encoder's patch state (see PromptEncoder.encode)
        self.embeddings = embeddings  # textual-inversion trigger words (see PromptEncoder.encode)
        self.embeddings_used: set[str] = set()  # over every step encoded so far (for infotext)
        parsed: dict[str, PromptSchedule] = {}
        for p in self.prompts:
            if p not in parsed:
                parsed[p] = PromptSchedule.parse(p, steps, hires_steps=hires_steps)
        self.schedules = [parsed[p] for p in self.prompts]
        self.max_cached = max_cached
        self._by_texts: OrderedDict[tuple[str, ...], Conditioning] = OrderedDict()
        self._last_key: Optional[tuple[str, ...]] = None
        self._last: Optional[Conditioning] = None

    @property
    def is_static(self) -> bool:
        """True when every step gets the same conditioning."""
        return all(s.is_static for s in self.schedules)

    def texts_at(self, step: int) -> tuple[str, ...]:
        return tuple(s.text_at(step) for s in self.schedules)

    def at(self, step: int) -> Conditioning:
        """The batched conditioning ``[B, T, D]`` for the 0-based sampling step `step`."""
        key = self.texts_at(step)
        if key == self._last_key:
            return self._last  # type: ignore[return-value]
        cond = self._by_texts.get(key)
        if cond is None:
            cond = Conditioning.cat([self.encoder.encode(t, self.clip_skip, self.state, self.embeddings)
                                     for t in key])
            self.embeddings_used |= cond.embeddings_used
            self._by_texts[key] = cond
            while len(self._by_texts) > self.max_cached:
                self._by_texts.popitem(last=False)
        else:
            self._by_texts.move_to_end(key)
        self._last_key, self._last = key, cond
        return cond


class ScheduledPair:
    """Positive and negative schedules for CFG: ``at(step)`` gives both at the same number of
    chunks, and the very same pair object while neither side changes."""

    def __init__(self, cond: ScheduledConditioning, uncond: ScheduledConditioning) -> None:
        self.cond = cond
        self.uncond = uncond
        self._last_sources: Optional[tuple[Conditioning, Conditioning]] = None
        self._last: Optional[tuple[Conditioning, Conditioning]] = None
        self._context_for: Optional[tuple[Conditioning, Conditioning]] = None
        self._context: Optional[Conditioning] = None

    @property
    def is_static(self) -> bool:
        return self.cond.is_static and self.uncond.is_static

    def at(self, step: int) -> tuple[Conditioning, Conditioning]:
        c, u = self.cond.at(step), self.uncond.at(step)
        last = self._last_sources
        if last is not None and last[0] is c and last[1] is u:
            return self._last  # type: ignore[return-value]
        self._last_sources, self._last = (c, u), make_same_length(c, u)
        return self._last

    def cfg_context(self, step: int) -> Conditioning:
        """``Conditioning.cat([uncond, cond])`` for the batched CFG forward, reused while unchanged."""
        pair = self.at(step)
        if self._context_for is not pair:
            self._context_for, self._context = pair, Conditioning.cat([pair[1], pair[0]])
        return self._context  # type: ignore[return-value]
