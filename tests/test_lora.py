"""The built-in LoRA extension (extensions-builtin/Lora), loaded through the app's real start-up path
and run by the real engine on tiny real diffusers models.

LoRA files are written in the test in their real on-disk layouts (kohya, LyCORIS LoCon/LoHa/LoKr,
PEFT/diffusers) with seeded random weights. The reference for "the LoRA merged into the weights" is
computed independently of the extension: diffusers' own `load_lora_weights` + `fuse_lora`, or the
formula by hand with module names written out in the test.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from modules.cmd_args import parse_args
from modules.extensions.hooks import JobExtension
from modules.extensions.runner import ExtensionSet
from modules.extensions.startup import load_extensions
from modules.generation.request import GenerationRequest
from modules.paths import EXTENSIONS_BUILTIN_DIR, Paths
from modules.processing.engine import Engine
from modules.settings import SettingsStore
from tests.tiny_model import FixedProvider, tiny_loaded_model
from tests.torch_threads import one_torch_thread as single_torch_thread

RANK, ALPHA = 4, 2.0


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    with single_torch_thread():
        yield


# ---------------------------------------------------------------------------------------------
# LoRA files in their real layouts


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _linears(module: torch.nn.Module, words=("attn", "self_attn", "mlp", "ff")) -> list[tuple[str, torch.nn.Linear]]:
    return [(n, m) for n, m in module.named_modules() if isinstance(m, torch.nn.Linear) and any(w in n for w in words)]


def te_path(component: str, name: str) -> str:
    """Files name text-encoder layers as transformers 4 did (`text_model.encoder.layers.0...`);
    transformers 5 has no `text_model` level."""
    return name if component == "unet" or name.startswith("text_model.") else "text_model." + name


def kohya_lora(pipe, seed: int = 0, scale: float = 0.2) -> dict[str, torch.Tensor]:
    """kohya layout (SD 1.x: diffusers module paths with dots as underscores), UNet and text encoder."""
    g, sd = _gen(seed), {}
    for component, prefix in (("unet", "lora_unet_"), ("text_encoder", "lora_te_")):
        for name, mod in _linears(getattr(pipe, component)):
            key = prefix + te_path(component, name).replace(".", "_")
            sd[f"{key}.lora_down.weight"] = torch.randn(RANK, mod.in_features, generator=g) * scale
            sd[f"{key}.lora_up.weight"] = torch.randn(mod.out_features, RANK, generator=g) * scale
            sd[f"{key}.alpha"] = torch.tensor(ALPHA)
    return sd


def peft_lora(pipe, seed: int = 1, scale: float = 0.35) -> dict[str, torch.Tensor]:
    """diffusers' own (PEFT) layout: `unet.<path>.lora_A.weight` / `lora_B.weight`, no alpha."""
    g, sd = _gen(seed), {}
    for component in ("unet", "text_encoder"):
        for name, mod in _linears(getattr(pipe, component), ("to_q", "to_v", "q_proj", "v_proj")):
            key = f"{component}.{te_path(component, name)}"
            sd[f"{key}.lora_A.weight"] = torch.randn(RANK, mod.in_features, generator=g) * scale
            sd[f"{key}.lora_B.weight"] = torch.randn(mod.out_features, RANK, generator=g) * scale
    return sd


# LDM (original) names of some tiny-UNet layers, written out by hand (layers_per_block=1, 2 levels)
LOCON_LAYERS = {
    "input_blocks_1_0_in_layers_2": "down_blocks.0.resnets.0.conv1",
    "input_blocks_1_0_out_layers_3": "down_blocks.0.resnets.0.conv2",
    "input_blocks_1_1_proj_in": "down_blocks.0.attentions.0.proj_in",
    "input_blocks_3_0_in_layers_2": "down_blocks.1.resnets.0.conv1",
    "middle_block_0_out_layers_3": "mid_block.resnets.0.conv2",
    "output_blocks_3_1_proj_out": "up_blocks.1.attentions.1.proj_out",
    "output_blocks_0_0_skip_connection": "up_blocks.0.resnets.0.conv_shortcut",
}


def locon_lora(pipe, seed: int = 2, scale: float = 0.25) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """LyCORIS LoCon with LDM layer names (convolutions, 3x3 and 1x1) and the deltas it means."""
    g, sd, deltas = _gen(seed), {}, {}
    modules = dict(pipe.unet.named_modules())
    for ldm, name in LOCON_LAYERS.items():
        out_c, in_c, kh, kw = modules[name].weight.shape
        down = torch.randn(RANK, in_c, kh, kw, generator=g) * scale
        up = torch.randn(out_c, RANK, 1, 1, generator=g) * scale
        sd[f"lora_unet_{ldm}.lora_down.weight"], sd[f"lora_unet_{ldm}.lora_up.weight"] = down, up
        sd[f"lora_unet_{ldm}.alpha"] = torch.tensor(ALPHA)
        deltas[name] = (up.reshape(out_c, RANK) @ down.reshape(RANK, -1)).reshape(out_c, in_c, kh, kw) * ALPHA / RANK
    return sd, deltas


def merge_by_hand(model, deltas: dict[str, torch.Tensor], weight: float = 1.0) -> None:
    modules = dict(model.pipe.unet.named_modules())
    with torch.no_grad():
        for name, delta in deltas.items():
            modules[name].weight += weight * delta


def fuse_with_diffusers(model, path: Path, scale: float = 1.0) -> None:
    model.pipe.load_lora_weights(str(path))
    model.pipe.fuse_lora(lora_scale=scale)


def write(folder: Path, name: str, sd: dict[str, torch.Tensor], metadata=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata=metadata)
    return path


# ---------------------------------------------------------------------------------------------
# the app's extension, loaded as launch.py loads it


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lora-data")


@pytest.fixture(scope="module")
def lora_dir(data_dir) -> Path:
    folder = data_dir / "models" / "Lora"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture(scope="module")
def lora_ext(data_dir, lora_dir):
    args = parse_args(["--data-dir", str(data_dir)])
    loaded = load_extensions(Paths(data_dir=data_dir), SettingsStore(None), args, builtin_dir=EXTENSIONS_BUILTIN_DIR)
    ext = loaded.extension_set.find("lora")
    assert ext is not None, [e.errors for e in loaded.catalog.extensions]
    assert ext.extra_network == "lora" and "lyco" in ext.extra_network_aliases and ext.always_on
    return ext


@pytest.fixture(scope="module")
def model():
    return tiny_loaded_model(seed=0)


class WeightProbe(JobExtension):
    """Runs after the LoRA extension in each batch and copies the weights it sees."""

    name = "weight-probe"
    always_on = True
    sort_order = 100
    seen: ClassVar[list] = []

    def __init__(self, model) -> None:
        self.model = model
        self.seen = []

    def process_batch(self, job, batch, args):
        self.seen.append({k: v.clone() for k, v in _weights(self.model).items()})
        return None


def _weights(model) -> dict[str, torch.Tensor]:
    return {f"{c}.{k}": v for c in ("unet", "text_encoder") for k, v in getattr(model.pipe, c).state_dict().items()}


def engine_for(model, data_dir, *extensions) -> Engine:
    return Engine(FixedProvider(model), SettingsStore(None), Paths(data_dir=data_dir),
                  extensions=ExtensionSet(extensions))


def request(prompt: str, **fields) -> GenerationRequest:
    base = dict(prompt=prompt, negative_prompt="blurry", seed=123, steps=3, sampler_name="Euler", cfg_scale=5.0,
                save_images=False)
    return GenerationRequest(**{**base, **fields})


def px(result) -> np.ndarray:
    return np.stack([np.asarray(im.convert("RGB"), dtype=np.int16) for im in result.images])


def plain_pixels(data_dir, prompt="a red circle") -> np.ndarray:
    return px(engine_for(tiny_loaded_model(seed=0), data_dir).generate(request(prompt)))


# ---------------------------------------------------------------------------------------------
# exactness


def test_kohya_at_weight_1_equals_the_merged_model(lora_ext, model, lora_dir, data_dir):
    path = write(lora_dir, "kohya_a", kohya_lora(model.pipe))
    got = engine_for(model, data_dir, lora_ext).generate(request("a red circle <lora:kohya_a:1>"))
    assert not got.warnings, got.warnings
    merged = tiny_loaded_model(seed=0)
    fuse_with_diffusers(merged, path)
    q = dict(merged.pipe.text_encoder.named_modules())["encoder.layers.0.self_attn.q_proj"]
    te_key = "text_encoder.encoder.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(getattr(q, "base_layer", q).weight, _weights(model)[te_key])  # diffusers merged the TE part
    want = px(engine_for(merged, data_dir).generate(request("a red circle")))
    assert np.abs(px(got) - want).max() <= 1
    assert np.abs(px(got) - plain_pixels(data_dir)).max() > 8  # the LoRA does change the picture


def test_peft_file_equals_the_merged_model(lora_ext, model, lora_dir, data_dir):
    path = write(lora_dir, "peft_a", peft_lora(model.pipe))
    got = engine_for(model, data_dir, lora_ext).generate(request("a red circle <lora:peft_a:0.7>"))
    assert not got.warnings, got.warnings
    merged = tiny_loaded_model(seed=0)
    fuse_with_diffusers(merged, path, scale=0.7)
    want = px(engine_for(merged, data_dir).generate(request("a red circle")))
    assert np.abs(px(got) - want).max() <= 1
    assert np.abs(px(got) - plain_pixels(data_dir)).max() > 5


def test_locon_with_ldm_names_equals_the_merged_model(lora_ext, model, lora_dir, data_dir):
    sd, deltas = locon_lora(model.pipe)
    write(lora_dir, "locon_a", sd)
    got = engine_for(model, data_dir, lora_ext).generate(request("a red circle <lyco:locon_a:0.8>"))
    assert not got.warnings, got.warnings
    merged = tiny_loaded_model(seed=0)
    merge_by_hand(merged, deltas, 0.8)
    want = px(engine_for(merged, data_dir).generate(request("a red circle")))
    assert np.abs(px(got) - want).max() <= 1
    assert np.abs(px(got) - plain_pixels(data_dir)).max() > 5


def test_loha_and_lokr_deltas_follow_their_formulas(lora_ext, model, lora_dir, data_dir):
    g = _gen(5)
    q = dict(model.pipe.text_encoder.named_modules())["encoder.layers.0.self_attn.q_proj"]  # Linear 32 -> 32
    conv = model.pipe.unet.down_blocks[0].resnets[0].conv1  # Conv2d 16 -> 16, 3x3
    w1a, w1b, w2a, w2b = (torch.randn(32, 2, generator=g), torch.randn(2, 32, generator=g),
                          torch.randn(32, 2, generator=g), torch.randn(2, 32, generator=g))
    c1a, c1b = torch.randn(16, 2, generator=g), torch.randn(2, 16 * 9, generator=g)
    c2a, c2b = torch.randn(16, 2, generator=g), torch.randn(2, 16 * 9, generator=g)
    write(lora_dir, "loha_a", {
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.hada_w1_a": w1a,
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.hada_w1_b": w1b,
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.hada_w2_a": w2a,
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.hada_w2_b": w2b,
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha": torch.tensor(1.0),
        "lora_unet_down_blocks_0_resnets_0_conv1.hada_w1_a": c1a, "lora_unet_down_blocks_0_resnets_0_conv1.hada_w1_b": c1b,
        "lora_unet_down_blocks_0_resnets_0_conv1.hada_w2_a": c2a, "lora_unet_down_blocks_0_resnets_0_conv1.hada_w2_b": c2b,
    })
    k1, k2a, k2b = torch.randn(4, 4, generator=g), torch.randn(8, 2, generator=g), torch.randn(2, 8, generator=g)
    kc1, kc2 = torch.randn(2, 2, generator=g), torch.randn(8, 8, 3, 3, generator=g)
    write(lora_dir, "lokr_a", {
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lokr_w1": k1,
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lokr_w2_a": k2a,
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lokr_w2_b": k2b,
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha": torch.tensor(1.0),
        "lora_unet_down_blocks_0_resnets_0_conv1.lokr_w1": kc1, "lora_unet_down_blocks_0_resnets_0_conv1.lokr_w2": kc2,
    })
    probe = WeightProbe(model)
    engine = engine_for(model, data_dir, lora_ext, probe)
    before = {k: v.clone() for k, v in _weights(model).items()}
    q_key, conv_key = "text_encoder.encoder.layers.0.self_attn.q_proj.weight", "unet.down_blocks.0.resnets.0.conv1.weight"

    result = engine.generate(request("x <lora:loha_a:1>"))
    assert not result.warnings, result.warnings
    seen = probe.seen[-1]
    loha_q = (w1a @ w1b) * (w2a @ w2b) * (1.0 / 2)  # alpha / rank
    loha_conv = ((c1a @ c1b) * (c2a @ c2b)).reshape(16, 16, 3, 3)  # no alpha: scale 1
    torch.testing.assert_close(seen[q_key] - before[q_key], loha_q, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(seen[conv_key] - before[conv_key], loha_conv, rtol=1e-4, atol=1e-4)

    engine.generate(request("x <lora:lokr_a:0.5>"))
    seen = probe.seen[-1]
    lokr_q = torch.kron(k1, k2a @ k2b) * (1.0 / 2) * 0.5  # split w2: alpha / its rank
    lokr_conv = torch.kron(kc1[:, :, None, None], kc2) * 0.5
    torch.testing.assert_close(seen[q_key] - before[q_key], lokr_q, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(seen[conv_key] - before[conv_key], lokr_conv, rtol=1e-4, atol=1e-4)
    assert all(torch.equal(v, before[k]) for k, v in _weights(model).items())


# ---------------------------------------------------------------------------------------------
# nothing leaks; weights split between text encoder and UNet; the set stays loaded


def test_weight_zero_and_the_next_job_are_the_plain_model(lora_ext, model, lora_dir, data_dir):
    write(lora_dir, "kohya_b", kohya_lora(model.pipe, seed=3))
    before = {k: v.clone() for k, v in _weights(model).items()}
    engine = engine_for(model, data_dir, lora_ext)
    plain = px(engine.generate(request("a red circle")))
    assert np.array_equal(px(engine.generate(request("a red circle <lora:kohya_b:0>"))), plain)
    with_lora = px(engine.generate(request("a red circle <lora:kohya_b:1>", batch_size=2, batch_count=2)))
    assert np.abs(with_lora[:1] - plain).max() > 8
    assert np.array_equal(px(engine.generate(request("a red circle"))), plain)
    assert all(torch.equal(v, before[k]) for k, v in _weights(model).items())  # bitwise restored


def test_te_and_unet_weights_apply_to_their_side_only(lora_ext, model, lora_dir, data_dir):
    write(lora_dir, "kohya_c", kohya_lora(model.pipe, seed=4))
    probe = WeightProbe(model)
    engine = engine_for(model, data_dir, lora_ext, probe)
    before = {k: v.clone() for k, v in _weights(model).items()}

    def changed(prompt: str) -> tuple[bool, bool]:
        engine.generate(request(prompt))
        seen = probe.seen[-1]
        te = any(not torch.equal(seen[k], before[k]) for k in seen if k.startswith("text_encoder."))
        unet = any(not torch.equal(seen[k], before[k]) for k in seen if k.startswith("unet."))
        return te, unet

    assert changed("a <lora:kohya_c:0:1>") == (False, True)
    assert changed("a <lora:kohya_c:1:0>") == (True, False)
    assert changed("a <lora:kohya_c:0.5>") == (True, True)
    assert changed("a <lora:kohya_c:1:unet=0>") == (True, False)
    # two tags in prompt and negative prompt: the union applies, each at its own weight
    engine.generate(request("a <lora:kohya_c:0.5:0>", negative_prompt="<lora:kohya_b:0:0.25>"))
    seen, key = probe.seen[-1], "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    b = kohya_lora(model.pipe, seed=3)["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight"]
    d = kohya_lora(model.pipe, seed=3)["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight"]
    torch.testing.assert_close(seen[key] - before[key], 0.25 * (b @ d) * ALPHA / RANK, rtol=1e-4, atol=1e-5)
    assert all(torch.equal(v, before[k]) for k, v in _weights(model).items())


def test_a_lora_set_that_stays_the_same_is_read_once(lora_ext, model, lora_dir, data_dir):
    write(lora_dir, "kohya_d", kohya_lora(model.pipe, seed=6))
    engine = engine_for(model, data_dir, lora_ext)
    engine.generate(request("a <lora:kohya_d:1>"))
    reads = lora_ext.files.reads
    first = px(engine.generate(request("a <lora:kohya_d:1>")))
    assert lora_ext.files.reads == reads
    # a changed file is read again and its new weights apply
    write(lora_dir, "kohya_d", kohya_lora(model.pipe, seed=7))
    changed = px(engine.generate(request("a <lora:kohya_d:1>")))
    assert lora_ext.files.reads == reads + 1
    assert np.abs(changed - first).max() > 5


# ---------------------------------------------------------------------------------------------
# problems are warnings that name the LoRA; the job goes on


def test_missing_corrupt_and_foreign_loras_warn_and_the_job_goes_on(lora_ext, model, lora_dir, data_dir):
    (lora_dir / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    foreign = {"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.zeros(4, 768),
               "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.zeros(768, 4)}
    write(lora_dir, "sd15_style", foreign)
    write(lora_dir, "nothing_matches", {"lora_unet_no_such_layer.lora_down.weight": torch.zeros(4, 8),
                                        "lora_unet_no_such_layer.lora_up.weight": torch.zeros(8, 4)})
    lora_ext.refresh()
    engine = engine_for(model, data_dir, lora_ext)
    result = engine.generate(request("a red circle <lora:ghost:1> <lora:broken:1> <lora:sd15_style:1> "
                                     "<lora:nothing_matches:1>"))
    text = "\n".join(result.warnings)
    assert "LoRA not found: ghost" in text
    assert "broken.safetensors" in text and "corrupt" in text
    assert "sd15_style.safetensors" in text and "another model family" in text
    assert "nothing_matches.safetensors" in text
    assert len(result.images) == 1
    assert np.array_equal(px(result), plain_pixels(data_dir))
    assert "Lora hashes" not in result.infotexts[0]


# ---------------------------------------------------------------------------------------------
# infotext, cards


def test_infotext_lora_hashes_are_a1111s_addnet_hash(lora_ext, model, lora_dir, data_dir):
    path = write(lora_dir, "kohya_e", kohya_lora(model.pipe, seed=8), metadata={"ss_output_name": "E"})
    raw = path.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    want = hashlib.sha256(raw[8 + header_len:]).hexdigest()[:12]
    result = engine_for(model, data_dir, lora_ext).generate(request("a <lora:kohya_e:0.6> <lyco:kohya_a:0.3>"))
    assert f'Lora hashes: "kohya_e: {want}, kohya_a: ' in result.infotexts[0]
    assert result.params[0].extra["Lora hashes"].startswith(f"kohya_e: {want}, kohya_a: ")


def test_network_cards_list_files_with_preview_and_metadata(lora_ext, lora_dir, model):
    sub = lora_dir / "styles"
    write(sub, "card_x", {"lora_unet_x.lora_down.weight": torch.zeros(1, 1)},
          metadata={"ss_output_name": "CardX", "ss_network_dim": "4", "ss_tag_frequency": '{"a": {"b": 1}}'})
    (sub / "card_x.preview.png").write_bytes(b"\x89PNG")
    lora_ext.refresh()
    cards = {c.name: c for c in lora_ext.network_cards()}
    card = cards["card_x"]
    assert card.kind == "Lora" and card.prompt_text == "<lora:card_x:1>"
    assert card.preview == str(sub / "card_x.preview.png")
    assert card.metadata["ss_network_dim"] == "4" and card.metadata["ss_tag_frequency"] == {"a": {"b": 1}}
    assert "styles/card_x" in card.search_terms and "CardX" in card.search_terms
    assert lora_ext.library.find("CardX").name == "card_x"  # the alias finds the file too


def test_lora_dir_flag_comes_from_the_extensions_preload(tmp_path, model):
    from modules.extensions.preload import parse_args_with_extensions

    extra = tmp_path / "elsewhere"
    write(extra / "deep", "far_away", kohya_lora(model.pipe, seed=9))
    args, _ = parse_args_with_extensions(["--data-dir", str(tmp_path / "data"), "--lora-dir", str(extra)])
    assert args.lora_dir == str(extra)
    loaded = load_extensions(Paths(data_dir=tmp_path / "data"), SettingsStore(None), args)
    ext = loaded.extension_set.get("lora")
    assert "far_away" in [c.name for c in ext.network_cards()]
    assert (tmp_path / "data" / "models" / "Lora").resolve() in ext.library.folders
