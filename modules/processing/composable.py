"""Composable diffusion: ``a cat AND a dog:1.2`` (A1111's AND, Liu et al. 2022).

Each ``AND``-separated sub-prompt (`prompt_parser.split_and`) is its own scheduled conditioning.
The UNet sees the rows ``[uncond × B, sub-prompt 1 × B, sub-prompt 2 × B, ...]`` (B = images in the
batch; the uncond block only when it is needed) and the guided prediction per image is

    uncond + sum_i weight_i * cfg_scale * (cond_i - uncond)

as A1111's combine_denoised computes it. Two choices keep the cost and the pixels right:

* A sub-prompt at weight 0 adds exactly nothing, so it is not sent through the UNet at all: ``a AND
  b:0`` runs the very computation of ``a`` alone, pixel for pixel. A prompt that comes down to one
  sub-prompt at weight 1 (every prompt without AND) takes the plain CFG path unchanged.
* At CFG scale 1 the uncond rows are skipped (as for plain prompts) when each image's weights sum
  to 1, where the formula is ``sum_i weight_i * cond_i``; otherwise they are computed.

Images of one batch may have different sub-prompt counts (a script's per-image prompts): the
shorter ones are filled up with weight-0 repeats of their last sub-prompt, so the rows stay in
equal blocks of B.
"""

from __future__ import annotations

import math
from typing import Hashable, Optional, Sequence, Union

import torch

from modules.processing.conditioning import Conditioning, EmbeddingTable, PromptEncoder, ScheduledConditioning
from modules.processing.prompt_parser import SubPrompt, split_and

__all__ = ["plan_sub_prompts", "ComposableConditioning", "ComposableContext", "as_composable", "guide"]


def plan_sub_prompts(prompts: Sequence[str]) -> tuple[list[list[str]], list[list[float]]]:
    """Per-image AND splits as equal groups: ``texts[k][b]`` and ``weights[k][b]`` for sub-prompt k
    of image b. Weight-0 sub-prompts are left out (one stays if all are 0); short images are filled
    with weight-0 repeats of their last sub-prompt."""
    per_image: list[list[SubPrompt]] = []
    for prompt in prompts:
        subs = split_and(prompt)
        kept = [s for s in subs if s.weight != 0.0] or [SubPrompt(subs[0].text, 0.0)]
        per_image.append(kept)
    count = max(len(s) for s in per_image)
    texts = [[s[k].text if k < len(s) else s[-1].text for s in per_image] for k in range(count)]
    weights = [[s[k].weight if k < len(s) else 0.0 for s in per_image] for k in range(count)]
    return texts, weights


class ComposableConditioning:
    """The positive conditioning of a batch, AND-aware: one `ScheduledConditioning` per sub-prompt
    group (`groups[k]` holds sub-prompt k of every image) and its per-image `weights[k][b]`."""

    def __init__(self, groups: Sequence[ScheduledConditioning], weights: Sequence[Sequence[float]],
                 prompts: Optional[Sequence[str]] = None) -> None:
        if not groups or len(groups) != len(weights):
            raise ValueError("ComposableConditioning needs one weight row per group, at least one group")
        self.groups = tuple(groups)
        self.weights = tuple(tuple(float(w) for w in row) for row in weights)
        self.prompts = list(prompts) if prompts is not None else list(groups[0].prompts)

    @classmethod
    def from_prompts(cls, encoder: PromptEncoder, prompts: Sequence[str], steps: int, clip_skip: int = 1, *,
                     hires_steps: Optional[int] = None, state: Hashable = (),
                     embeddings: Optional[EmbeddingTable] = None) -> "ComposableConditioning":
        if not prompts:
            raise ValueError("ComposableConditioning needs at least one prompt")
        texts, weights = plan_sub_prompts(prompts)
        groups = [ScheduledConditioning(encoder, group, steps, clip_skip, hires_steps=hires_steps, state=state,
                                        embeddings=embeddings) for group in texts]
        return cls(groups, weights, prompts)

    @classmethod
    def single(cls, cond: ScheduledConditioning) -> "ComposableConditioning":
        """A plain schedule as one group at weight 1 (no AND splitting)."""
        return cls([cond], [[1.0] * len(cond.prompts)])

    @property
    def count(self) -> int:
        """Sub-prompt groups: blocks of cond rows in the UNet call."""
        return len(self.groups)

    @property
    def is_plain(self) -> bool:
        """One sub-prompt at weight 1 for every image: plain CFG, bit for bit as without AND."""
        return self.count == 1 and all(w == 1.0 for w in self.weights[0])

    @property
    def is_static(self) -> bool:
        return all(g.is_static for g in self.groups)

    @property
    def embeddings_used(self) -> set[str]:
        """Textual-inversion names over every group and every step encoded so far (infotext)."""
        return set().union(*(g.embeddings_used for g in self.groups))

    def needs_uncond(self, cfg_scale: float) -> bool:
        """Whether the guided prediction depends on the uncond rows: always with CFG; at scale 1
        only where an image's weights do not sum to 1."""
        if cfg_scale != 1.0:
            return True
        return any(not math.isclose(sum(column), 1.0, rel_tol=0.0, abs_tol=1e-9) for column in zip(*self.weights))

    def weight_tensor(self, scale: float, device) -> torch.Tensor:
        """``[K, B, 1, 1, 1]`` float32: weight × scale per group and image (products taken in Python
        floats as A1111 does; float32 so that a half-precision UNet does not round them)."""
        values = [[w * scale for w in row] for row in self.weights]
        return torch.tensor(values, dtype=torch.float32, device=device)[..., None, None, None]


def as_composable(cond: Union[ScheduledConditioning, ComposableConditioning]) -> ComposableConditioning:
    return cond if isinstance(cond, ComposableConditioning) else ComposableConditioning.single(cond)


class ComposableContext:
    """``Conditioning.cat([uncond, cond_1, ..., cond_K])`` for a step (padded to one chunk count,
    SDXL pooled rows alike), the very same object while no source changes."""

    def __init__(self, cond: ComposableConditioning, uncond: Optional[ScheduledConditioning]) -> None:
        self.cond = cond
        self.uncond = uncond
        self._sources: Optional[tuple[Conditioning, ...]] = None
        self._context: Optional[Conditioning] = None

    def at(self, step: int) -> Conditioning:
        sources = tuple(([self.uncond.at(step)] if self.uncond is not None else [])
                        + [g.at(step) for g in self.cond.groups])
        last = self._sources
        if last is None or any(a is not b for a, b in zip(last, sources)):
            self._sources, self._context = sources, Conditioning.cat(list(sources))
        return self._context  # type: ignore[return-value]


def guide(pred: torch.Tensor, batch: int, weights: torch.Tensor, has_uncond: bool) -> torch.Tensor:
    """The guided prediction from the UNet's rows ``[uncond?, cond_1, ..., cond_K]`` (blocks of
    `batch`), `weights` ``[K, B, 1, 1, 1]`` already times the CFG scale."""
    if has_uncond:
        uncond = pred[:batch]
        out = uncond.clone()
        for k in range(weights.shape[0]):
            cond = pred[batch * (k + 1):batch * (k + 2)]
            out += (cond - uncond) * weights[k]
        return out
    out = pred[:batch] * weights[0]
    for k in range(1, weights.shape[0]):
        out += pred[batch * k:batch * (k + 1)] * weights[k]
    return out.to(pred.dtype)
