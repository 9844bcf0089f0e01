"""The embedded default model: procedural dataset, analyzer, training script and the shipped folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from modules.paths import EMBEDDED_MODEL_DIR, REPO_ROOT
from tools.default_model import dataset
from tools.default_model.analyze import analyze, color_share
from tools.default_model.evaluate import Table, check_cfg, eval_plan, reanalyze, run_table, validate_analyzer

MAX_MODEL_BYTES = 40 * 1000 * 1000


# --------------------------------------------------------------------------- dataset
def test_all_combos_never_pair_a_colour_with_itself():
    combos = dataset.all_combos()
    assert len(combos) == len(dataset.COLORS) * len(dataset.SHAPES) * (len(dataset.COLORS) - 1) == 224
    assert all(fg != bg for fg, _, bg in combos)


def test_sample_spec_rejects_same_colour():
    with pytest.raises(ValueError, match="must differ"):
        dataset.sample_spec(np.random.default_rng(0), fg="red", bg="red")


@given(st.integers(0, 2**32 - 1))
@settings(max_examples=40, deadline=None)
def test_captions_name_the_scene(seed):
    rng = np.random.default_rng(seed)
    spec = dataset.sample_spec(rng)
    assert spec.fg != spec.bg
    text = dataset.caption(spec, rng, partial_prob=0.0)
    words = set(re.findall(r"[a-z]+", text))
    assert {spec.fg, spec.bg, spec.shape} <= words
    assert not re.search(r"\ba [aeiou]", text), text  # "an orange", never "a orange"
    partial = dataset.caption(spec, rng, partial_prob=1.0)
    assert spec.shape in partial or spec.fg in partial


@given(st.integers(0, 2**32 - 1), st.sampled_from([0.0, 1.0]))
@settings(max_examples=40, deadline=None)
def test_labelled_captions_say_which_attributes_they_name(seed, partial_prob):
    rng = np.random.default_rng(seed)
    spec = dataset.sample_spec(rng)
    cap = dataset.labelled_caption(spec, rng, partial_prob=partial_prob)
    words = re.findall(r"[a-z]+", cap.text)
    assert (spec.shape in words) == cap.names_shape
    assert (spec.fg in words) == cap.names_fg and (spec.bg in words) == cap.names_bg
    if partial_prob == 0.0:
        assert cap.names_fg and cap.names_bg and cap.names_shape


def test_caption_dropout_rate():
    _, captions, specs = dataset.sample_batch(np.random.default_rng(0), 400, caption_dropout=0.1)
    empty = sum(c == "" for c in captions) / len(captions)
    assert 0.05 < empty < 0.16
    assert len(specs) == 400


def test_rendered_colours_and_range():
    spec = dataset.SceneSpec(shape="square", fg="red", bg="blue", size=0.6, cx=0.5, cy=0.5)
    img = dataset.render(spec)
    arr = np.asarray(img)
    assert img.size == (64, 64)
    assert tuple(arr[32, 32]) == dataset.PALETTE["red"]
    assert tuple(arr[0, 0]) == dataset.PALETTE["blue"]
    x = dataset.to_tensor_array([img])
    assert x.shape == (1, 3, 64, 64) and x.min() >= -1.0 and x.max() <= 1.0


def test_canonical_prompt_articles():
    assert dataset.canonical_prompt("red", "circle", "blue") == "a red circle on a blue background"
    assert dataset.canonical_prompt("orange", "star", "orange") == "an orange star on an orange background"


# --------------------------------------------------------------------------- analyzer
def test_analyzer_is_exact_on_ground_truth():
    table = validate_analyzer(n=120, seed=3)
    for key in ("fg", "bg", "shape"):
        assert table.accuracy(key) == 1.0, table.format()


@given(st.integers(0, 2**32 - 1))
@settings(max_examples=20, deadline=None)
def test_analyzer_on_random_scenes(seed):
    spec = dataset.sample_spec(np.random.default_rng(seed))
    a = analyze(dataset.render(spec))
    assert (a.fg, a.shape, a.bg) == (spec.fg, spec.shape, spec.bg)


def test_analyzer_blank_image_has_no_shape():
    a = analyze(Image.new("RGB", (64, 64), dataset.PALETTE["green"]))
    assert a.bg == "green" and a.shape is None and a.fg is None
    assert color_share(Image.new("RGB", (64, 64), dataset.PALETTE["green"]), "green") == 1.0


# --------------------------------------------------------------------------- evaluator plumbing
class GroundTruthGenerator:
    """An ImageGenerator that draws exactly what the prompt says (for testing the evaluator)."""

    pattern = re.compile(r"an? (\w+) (\w+) on an? (\w+) background")

    def __call__(self, prompt, negative_prompt, seed, cfg, steps):
        fg, shape, bg = self.pattern.fullmatch(prompt).groups()
        rng = np.random.default_rng(seed)
        return dataset.render(dataset.sample_spec(rng, shape=shape, fg=fg, bg=bg))


def test_eval_plan_covers_every_combo_across_seeds():
    jobs = eval_plan([0, 1, 2, 3], 0.25)
    assert len(jobs) == 4 * 56
    assert {(fg, sh, bg) for fg, sh, bg, _ in jobs} == set(dataset.all_combos())


def test_run_table_with_a_plugged_in_generator(tmp_path):
    jobs = eval_plan([5], 40 / 224)
    table = run_table(GroundTruthGenerator(), jobs, progress=False, save_dir=tmp_path)
    assert isinstance(table, Table) and len(table.samples) == 40
    assert table.passes() and table.score() == 1.0
    assert "overall" in table.format()
    again = reanalyze(tmp_path)
    assert len(again.samples) == 40 and again.score() == 1.0


class GuidanceSensitiveGenerator(GroundTruthGenerator):
    """Ground truth whose shape is overdrawn in grey at a low CFG (or a high one, when inverted)."""

    def __init__(self, weak_cfg_below: float = 4.0, inverted: bool = False):
        self.weak_cfg_below, self.inverted = weak_cfg_below, inverted

    def __call__(self, prompt, negative_prompt, seed, cfg, steps):
        image = np.asarray(super().__call__(prompt, negative_prompt, seed, cfg, steps)).copy()
        if (cfg < self.weak_cfg_below) != self.inverted:
            image[28:36, 28:36] = 128  # a grey patch: pixels in neither prompt colour
        return Image.fromarray(image)


def test_cfg_check_wants_better_prompt_adherence_at_cfg_7():
    jobs = eval_plan([3], 8 / 224)
    good = check_cfg(GuidanceSensitiveGenerator(), jobs, steps=1)
    assert good.passed, good.detail
    assert "cfg7=1.000" in good.detail  # accuracy unchanged, colour share higher
    bad = check_cfg(GuidanceSensitiveGenerator(inverted=True), jobs, steps=1)
    assert not bad.passed, bad.detail
    tie = check_cfg(GroundTruthGenerator(), jobs, steps=1)
    assert not tie.passed, "equal adherence is not 'higher'"


# --------------------------------------------------------------------------- training pieces
def test_caption_labels_mark_unnamed_attributes():
    from tools.default_model.train import caption_labels

    spec = dataset.SceneSpec(shape="star", fg="green", bg="black", size=0.6, cx=0.5, cy=0.5)
    full = dataset.Caption("a green star on a black background", True, True, True)
    assert caption_labels(spec, full) == (dataset.COLORS.index("green"), dataset.COLORS.index("black"),
                                          dataset.SHAPES.index("star"))
    only_shape = dataset.Caption("a star", False, True, False)
    assert caption_labels(spec, only_shape) == (-100, -100, dataset.SHAPES.index("star"))


def test_caption_heads_learn_attributes_and_ignore_unnamed_ones():
    import torch

    from tools.default_model.train import CaptionHeads

    torch.manual_seed(0)
    heads = CaptionHeads(8)
    states = torch.randn(6, 8)
    nothing_named = torch.full((6, 3), -100)
    assert heads.loss(states, nothing_named).item() == 0.0
    labels = torch.tensor([[0, 1, 2], [3, 4, 1], [5, 6, 0], [7, 0, 3], [1, 2, 2], [2, 3, 1]])
    opt = torch.optim.Adam(heads.parameters(), lr=0.1)
    first = heads.loss(states, labels).item()
    for _ in range(100):
        opt.zero_grad()
        heads.loss(states, labels).backward()
        opt.step()
    assert heads.loss(states, labels).item() < 0.1 * first
    # an attribute no caption names adds nothing: the loss is the mean over the named ones
    partial = labels.clone()
    partial[:, 1] = -100
    expected = (torch.nn.functional.cross_entropy(heads.fg(states), labels[:, 0])
                + torch.nn.functional.cross_entropy(heads.shape(states), labels[:, 2])) / 2
    assert torch.allclose(heads.loss(states, partial), expected)


def test_min_snr_weights_keep_noisy_steps_and_damp_easy_ones():
    import torch

    from tools.default_model.train import min_snr_weights

    alphas = torch.tensor([0.999, 0.9, 0.5, 0.01])  # SNR 999, 9, 1, 0.0101
    w = min_snr_weights(alphas, gamma=5.0)
    assert torch.allclose(w[2:], torch.ones(2))
    assert torch.allclose(w[:2], torch.tensor([5 / 999, 5 / 9]), rtol=1e-3)


def test_ema_tracks_weights_and_applies_them_temporarily():
    import torch

    from tools.default_model.train import Ema

    p = torch.nn.Parameter(torch.zeros(3))
    ema = Ema([p], decay=0.9)
    with torch.no_grad():
        p.fill_(1.0)
    for step in range(200):
        ema.update(step)
    assert torch.allclose(ema.shadow[0], torch.ones(3), atol=1e-3)
    with torch.no_grad():
        p.fill_(5.0)
    ema.update(1000)  # decay 0.9: one step moves the average a tenth of the way
    assert torch.allclose(ema.shadow[0], torch.full((3,), 1.4), atol=1e-3)
    with ema.applied():
        assert torch.allclose(p, torch.full((3,), 1.4), atol=1e-3)
    assert torch.equal(p.detach(), torch.full((3,), 5.0))


# --------------------------------------------------------------------------- training end to end
def test_tiny_training_end_to_end_and_resume(tmp_path):
    import torch
    from diffusers import StableDiffusionPipeline

    from tools.default_model import train

    out, work = tmp_path / "out", tmp_path / "work"
    common = ["--preset", "tiny", "--vae-batch", "4", "--batch", "4", "--pool-size", "16",
              "--out", str(out), "--work-dir", str(work), "--checkpoint-every", "2", "--warmup", "2",
              "--threads", "1"]
    train.main([*common, "--vae-steps", "2", "--steps", "2"])
    state = torch.load(work / "checkpoint.pt", weights_only=False)
    assert state["phase"] == "done" and state["step"] == 2
    # continue the finished run for two more UNet steps
    train.main([*common, "--vae-steps", "2", "--steps", "4", "--resume"])
    info = json.loads((out / "training_info.json").read_text())
    assert info["unet_steps_done"] == 4 and info["vae_steps_done"] == 2
    assert info["ema_decay"] > 0 and info["aux_weight"] > 0 and info["min_snr"] > 0
    # the shipped folder holds the EMA weights; the raw ones are kept beside the checkpoint
    state = torch.load(work / "checkpoint.pt", weights_only=False)
    shipped = StableDiffusionPipeline.from_pretrained(str(out), safety_checker=None).unet.state_dict()
    raw = StableDiffusionPipeline.from_pretrained(str(work / "final_raw"), safety_checker=None).unet.state_dict()
    assert all(torch.equal(raw[k], v) for k, v in state["unet"].items())
    assert any(not torch.equal(shipped[k], raw[k]) for k in raw)

    index = json.loads((out / "model_index.json").read_text())
    assert index["requires_safety_checker"] is False
    assert index["safety_checker"] == [None, None]
    assert (out / "README.md").exists()
    assert (out / "tokenizer" / "vocab.json").exists()
    pipe = StableDiffusionPipeline.from_pretrained(str(out), safety_checker=None)
    assert pipe.unet.dtype == torch.float32
    assert pipe.vae.config.scaling_factor != 1.0
    assert pipe.tokenizer.vocab_size == 49408 and pipe.tokenizer.model_max_length == 77
    image = pipe("a red circle on a blue background", num_inference_steps=2, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 64, 64, 3) and np.isfinite(image).all()


# --------------------------------------------------------------------------- the shipped model
@pytest.mark.skipif(not (EMBEDDED_MODEL_DIR / "model_index.json").exists(), reason="embedded model not trained yet")
def test_shipped_model_loads_offline_and_is_small():
    size = sum(f.stat().st_size for f in EMBEDDED_MODEL_DIR.rglob("*") if f.is_file())
    assert size <= MAX_MODEL_BYTES, f"{size / 1e6:.1f} MB"
    assert (EMBEDDED_MODEL_DIR / "README.md").exists()
    code = (
        "import torch\n"
        "from diffusers import StableDiffusionPipeline\n"
        f"p = StableDiffusionPipeline.from_pretrained({str(EMBEDDED_MODEL_DIR)!r}, safety_checker=None)\n"
        "assert p.unet.dtype == torch.float32 and p.text_encoder.dtype == torch.float32\n"
        "im = p('a red circle on a blue background', num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]\n"
        "assert im.size == (64, 64)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
