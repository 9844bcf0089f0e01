"""Prompt conditioning with tiny real CLIP text encoders and the real tokenizer."""

from __future__ import annotations

import pytest
import torch

from modules.processing.conditioning import (
    CHUNK_TOKENS,
    Conditioning,
    PromptEncoder,
    ScheduledConditioning,
    ScheduledPair,
    TokenCount,
    make_same_length,
    split_into_chunks,
)
from modules.processing.prompt_parser import BREAK, WeightedText
from tests.tiny_text import HIDDEN, PROJECTION, tiny_sd1_model, tiny_sdxl_model


@pytest.fixture(scope="module")
def sd1() -> PromptEncoder:
    return PromptEncoder.from_model(tiny_sd1_model())


@pytest.fixture(scope="module")
def sdxl() -> PromptEncoder:
    return PromptEncoder.from_model(tiny_sdxl_model())


# --------------------------------------------------------------------------------------------------
# Chunk layout (pure python)
# --------------------------------------------------------------------------------------------------

COMMA = 267


def layout(*runs, backtrack=20):
    return split_into_chunks([(list(ids), WeightedText("x", 1.0)) if ids is not BREAK else ([], BREAK)
                              for ids in runs], COMMA, backtrack)


def test_chunks_of_75():
    chunks, count = layout(range(1000, 1200))
    assert [len(c.tokens) for c in chunks] == [75, 75, 50] and count == 200


def test_comma_backtrack_moves_the_tail_to_the_next_chunk():
    ids = [1000 + i for i in range(60)] + [COMMA] + [2000 + i for i in range(30)]
    chunks, count = layout(ids)
    # The comma is token 61; the chunk fills at 75, 14 tokens after it: those 14 move on.
    assert [len(c.tokens) for c in chunks] == [61, 30]
    assert chunks[0].tokens[-1] == COMMA and chunks[1].tokens[0] == 2000
    assert count == 75 + 30
    # A comma further back than the limit does not move anything.
    ids = [1000 + i for i in range(40)] + [COMMA] + [2000 + i for i in range(50)]
    assert [len(c.tokens) for c in layout(ids)[0]] == [75, 16]
    assert [len(c.tokens) for c in layout(ids, backtrack=0)[0]] == [75, 16]


def test_break_layout():
    chunks, count = layout([1, 2], BREAK, [3])
    assert [c.tokens for c in chunks] == [[1, 2], [3]] and count == 76
    chunks, _ = layout([1], BREAK)  # a trailing BREAK adds nothing
    assert len(chunks) == 1
    chunks, _ = layout()
    assert len(chunks) == 1 and chunks[0].tokens == []


# --------------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------------

def test_short_prompt_is_one_chunk(sd1):
    cond = sd1.encode("a cat", clip_skip=1)
    assert cond.embeds.shape == (1, CHUNK_TOKENS, HIDDEN) and cond.pooled is None
    assert cond.chunks == 1


def test_empty_prompt_is_one_padded_chunk(sd1):
    assert sd1.encode("", 1).embeds.shape == (1, CHUNK_TOKENS, HIDDEN)
    [chunk], count = sd1.chunks("")
    assert chunk.tokens == [] and count == 0


def test_long_prompt_has_no_token_limit(sd1):
    text = " ".join(["cat"] * 200)
    chunks, count = sd1.chunks(text)
    assert [len(c.tokens) for c in chunks] == [75, 75, 50] and count == 200
    cond = sd1.encode(text, 1)
    assert cond.embeds.shape == (1, 3 * CHUNK_TOKENS, HIDDEN)
    # Each chunk is its own CLIP pass: chunk 0 equals encoding the first 75 tokens on their own.
    first = sd1.encode(" ".join(["cat"] * 75), 1)
    torch.testing.assert_close(cond.embeds[:, :CHUNK_TOKENS], first.embeds, rtol=0, atol=0)
    assert sd1.count_tokens(text) == TokenCount(200, 225)
    assert sd1.count_tokens("a cat") == TokenCount(2, 75)
    assert sd1.count_tokens("") == TokenCount(0, 75)


def test_count_tokens_resolves_prompt_editing(sd1):
    # The longest of the scheduled texts counts, not the syntax.
    assert sd1.count_tokens("[cat:a very big dog:0.5]").used == 4


def test_break_starts_a_new_chunk(sd1):
    cond = sd1.encode("a cat BREAK a dog", 1)
    assert cond.chunks == 2
    torch.testing.assert_close(cond.embeds[:, CHUNK_TOKENS:], sd1.encode("a dog", 1).embeds)
    assert sd1.count_tokens("a cat BREAK a dog") == TokenCount(77, 150)


def test_padding_token_layout(sdxl):
    captured = []
    enc = sdxl.text_encoders[1]
    handle = enc.register_forward_pre_hook(lambda m, a, kw: captured.append(kw["input_ids"]),
                                           with_kwargs=True)
    try:
        sdxl.clear_cache()
        sdxl.encode("a cat", 1)
    finally:
        handle.remove()
    ids = captured[0][0].tolist()
    assert ids[:4] == [49406, 320, 2368, 49407] and set(ids[4:]) == {0} and len(ids) == 77


def test_weights_change_embedding_and_restore_mean(sd1):
    plain = sd1.encode("a cat", 1).embeds
    weighted = sd1.encode("a (cat:1.5)", 1).embeds
    assert not torch.allclose(plain, weighted)
    torch.testing.assert_close(weighted.mean(), plain.mean(), rtol=1e-5, atol=1e-6)
    # Same tokens, weight 1: bit for bit the same.
    assert torch.equal(sd1.encode("a (cat:1)", 1).embeds, plain)
    # A1111's rule: z * w, then rescaled to the original mean.
    w = torch.ones(1, CHUNK_TOKENS, 1)
    w[0, 2] = 1.5  # BOS, "a", "cat"
    expected = plain * w * (plain.mean() / (plain * w).mean())
    torch.testing.assert_close(weighted, expected)


def test_emphasis_modes():
    model = tiny_sd1_model()
    none = PromptEncoder.from_model(model, emphasis="None")
    [chunk], _ = none.chunks("(cat:1.5)")
    assert set(chunk.weights) == {1.0} and len(chunk.tokens) > 1  # brackets are just text
    nonorm = PromptEncoder.from_model(model, emphasis="No norm")
    plain = nonorm.encode("a cat", 1).embeds
    torch.testing.assert_close(nonorm.encode("a (cat:2)", 1).embeds[0, 2], 2 * plain[0, 2])
    torch.testing.assert_close(nonorm.encode("a (cat:2)", 1).embeds[0, 3:], plain[0, 3:])
    with pytest.raises(ValueError, match="emphasis"):
        PromptEncoder.from_model(model, emphasis="Bogus")


def test_clip_skip(sd1):
    one = sd1.encode("a cat", 1).embeds
    two = sd1.encode("a cat", 2).embeds
    assert not torch.allclose(one, two)
    # Clip skip 2: the penultimate layer through the final layer norm.
    ids = torch.tensor([[49406, 320, 2368, 49407] + [49407] * 73])
    enc = sd1.text_encoders[0]
    with torch.no_grad():
        out = enc(input_ids=ids, output_hidden_states=True)
        expected = enc.final_layer_norm(out.hidden_states[-2])
    torch.testing.assert_close(two, expected)
    torch.testing.assert_close(one, out.last_hidden_state)
    # Beyond the model's depth: clamped, not an error.
    assert sd1.encode("a cat", 12).embeds.shape == one.shape


def test_cache_returns_same_object(sd1):
    a = sd1.encode("a cached prompt", 1)
    assert sd1.encode("a cached prompt", 1) is a
    assert sd1.encode("a cached prompt", 2) is not a


def test_sdxl_concatenates_features_and_pools(sdxl):
    cond = sdxl.encode("a cat " * 60, 1)  # 120 tokens: 2 chunks
    assert cond.embeds.shape == (1, 2 * CHUNK_TOKENS, 2 * HIDDEN)
    assert cond.pooled.shape == (1, PROJECTION)
    # Pooled comes from the first chunk.
    first = sdxl.encode(" ".join(["a cat"] * 37) + " a", 1)
    assert first.chunks == 1
    torch.testing.assert_close(cond.pooled, first.pooled)
    # Penultimate hidden state of each encoder, no final norm, side by side.
    ids = torch.tensor([[49406, 320, 2368, 49407] + [49407] * 73])
    ids2 = torch.tensor([[49406, 320, 2368, 49407] + [0] * 73])
    with torch.no_grad():
        h1 = sdxl.text_encoders[0](input_ids=ids, output_hidden_states=True).hidden_states[-2]
        out2 = sdxl.text_encoders[1](input_ids=ids2, output_hidden_states=True)
    small = sdxl.encode("a cat", 1)
    torch.testing.assert_close(small.embeds, torch.cat([h1, out2.hidden_states[-2]], dim=-1))
    torch.testing.assert_close(small.pooled, out2.text_embeds)
    assert not torch.allclose(sdxl.encode("a cat", 2).embeds, small.embeds)


def test_from_model_reads_device_and_family():
    enc = PromptEncoder.from_model(tiny_sdxl_model())
    assert enc.is_xl and len(enc.text_encoders) == 2 and enc.pad_ids == [49407, 0]
    assert enc.device == torch.device("cpu") and enc.dtype == torch.float32


# --------------------------------------------------------------------------------------------------
# Batches, padding, schedules
# --------------------------------------------------------------------------------------------------

def test_make_same_length_pads_with_empty_chunk(sd1):
    long = sd1.encode("a cat BREAK a dog BREAK a cow", 1)
    short = sd1.encode("", 1)
    cond, uncond = make_same_length(long, short)
    assert cond is long
    assert uncond.embeds.shape == long.embeds.shape
    empty = sd1.encode("", 1).embeds
    for k in range(3):
        torch.testing.assert_close(uncond.embeds[:, k * CHUNK_TOKENS:(k + 1) * CHUNK_TOKENS], empty)
    a, b = make_same_length(short, long)
    assert a.chunks == b.chunks == 3 and b is long


def test_cat_pads_and_stacks(sdxl):
    c = Conditioning.cat([sdxl.encode("a cat", 1), sdxl.encode("a BREAK b", 1)])
    assert c.embeds.shape == (2, 2 * CHUNK_TOKENS, 2 * HIDDEN) and c.pooled.shape == (2, PROJECTION)
    with pytest.raises(ValueError, match="empty_chunk"):
        Conditioning(torch.zeros(1, 77, 4)).pad_to_length(2)


def test_scheduled_switches_at_the_right_step(sd1):
    sched = ScheduledConditioning(sd1, ["a [cat:dog:0.5]"], steps=10, clip_skip=1)
    cat, dog = sd1.encode("a cat", 1).embeds, sd1.encode("a dog", 1).embeds
    for step in range(10):
        expected = cat if step < 5 else dog
        torch.testing.assert_close(sched.at(step).embeds, expected, rtol=0, atol=0)
    assert not sched.is_static


def test_scheduled_reuses_objects(sd1):
    sched = ScheduledConditioning(sd1, ["a [cat:dog:0.5]", "a bird"], steps=10, clip_skip=1)
    first = sched.at(0)
    assert first.embeds.shape == (2, CHUNK_TOKENS, HIDDEN)
    assert all(sched.at(s) is first for s in range(5))
    later = sched.at(5)
    assert later is not first and sched.at(9) is later
    static = ScheduledConditioning(sd1, ["a bird"], steps=10)
    assert static.is_static and static.at(0) is static.at(9)


def test_scheduled_alternates(sd1):
    sched = ScheduledConditioning(sd1, ["a [cat|dog]"], steps=6, clip_skip=1)
    cat, dog = sd1.encode("a cat", 1).embeds, sd1.encode("a dog", 1).embeds
    conds = [sched.at(s) for s in range(6)]
    for step, c in enumerate(conds):
        torch.testing.assert_close(c.embeds, cat if step % 2 == 0 else dog, rtol=0, atol=0)
    assert conds[0] is conds[2] is conds[4] and conds[1] is conds[3]


def test_scheduled_batch_pads_to_longest(sdxl):
    sched = ScheduledConditioning(sdxl, ["[a:a BREAK b:3]", "c"], steps=6, clip_skip=1)
    assert sched.at(0).embeds.shape == (2, CHUNK_TOKENS, 2 * HIDDEN)
    late = sched.at(5)
    assert late.embeds.shape == (2, 2 * CHUNK_TOKENS, 2 * HIDDEN) and late.pooled.shape == (2, PROJECTION)
    torch.testing.assert_close(late.embeds[1:, CHUNK_TOKENS:], sdxl.encode("", 1).embeds)


def test_scheduled_pair_pads_and_reuses(sd1):
    pair = ScheduledPair(ScheduledConditioning(sd1, ["a [cat:dog BREAK x:0.5]"], steps=4),
                         ScheduledConditioning(sd1, ["ugly"], steps=4))
    c0, u0 = pair.at(0)
    assert c0.chunks == u0.chunks == 1 and pair.at(1) is pair.at(0)
    c2, u2 = pair.at(2)
    assert c2.chunks == u2.chunks == 2 and pair.at(3)[1] is u2
    ctx = pair.cfg_context(2)
    assert ctx is pair.cfg_context(3) and ctx.embeds.shape == (2, 2 * CHUNK_TOKENS, HIDDEN)
    torch.testing.assert_close(ctx.embeds[1:], c2.embeds)
    assert not pair.is_static


# --------------------------------------------------------------------------------------------------
# One chunk rule for the engine and the UI's counter
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("prompt", [
    "",
    "a cat <lora:x:1>",
    "<lora:x:1> " + "word " * 80,
    "a (cat:1.3) [dog] BREAK a dog",
    ", ".join(["a very long phrase"] * 20),
    "[short:a much much longer second prompt here:3]",
])
def test_engine_and_ui_counter_agree(sd1, prompt):
    from webui.token_counter import count_tokens

    count = sd1.count_tokens(prompt)
    assert count_tokens(prompt) == (count.used, count.limit)


def test_engine_count_leaves_extra_network_tags_out(sd1):
    assert sd1.count_tokens("a cat <lora:x:1>") == sd1.count_tokens("a cat") == TokenCount(2, 75)
