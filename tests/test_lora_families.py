"""The built-in LoRA extension on SD 2.x- and SDXL-shaped models (tests/test_lora.py covers SD 1.x).

Tiny real diffusers pipelines with each family's structure (SD 2.x: one OpenCLIP-like CLIP text
encoder and linear attention projections; SDXL: two text encoders, the second with projection, and
the text-time size conditioning) get a kohya LoRA with seeded random weights, run through the real
engine with the extension loaded by the app's start-up path. The reference merges
W + w * alpha / rank * up @ down into the modules named in the test, independently of the extension.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from modules.extensions.runner import ExtensionSet
from modules.generation.request import GenerationRequest
from modules.models.loaded import LoadedModel, ModelFamily
from modules.models.single_file import CLIP_PAD, OPENCLIP_PAD, assemble_pipeline, build_tokenizer
from modules.paths import CONFIGS_DIR, Paths
from modules.processing.engine import Engine
from modules.settings import SettingsStore
from tests.checkpoint_factory import component_configs
from tests.test_lora import lora_dir, lora_ext, write  # noqa: F401 - shared fixtures
from tests.tiny_model import FixedProvider
from tests.torch_threads import one_torch_thread as single_torch_thread

RANK, ALPHA = 4, 2.0
FAMILIES = {"sd2": ModelFamily.SD2, "sdxl": ModelFamily.SDXL}
# kohya's prefix for each component, per family
KOHYA_PREFIXES = {
    "sd2": {"unet": "lora_unet_", "text_encoder": "lora_te_"},
    "sdxl": {"unet": "lora_unet_", "text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"},
}
# the linear layers kohya trains: attention, MLP / feed-forward, and (SD 2.x, SDXL) the linear proj_in/out
TRAINED = ("attn", "self_attn", "mlp", "ff", "proj_in", "proj_out")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    with single_torch_thread():
        yield


# ---------------------------------------------------------------------------------------------
# tiny SD 2.x / SDXL pipelines (the checkpoint factory's tiny configs, a VAE with the real factor 8)


def _text_encoder(cfg: dict, seed: int):
    torch.manual_seed(seed)
    cls = CLIPTextModelWithProjection if "WithProjection" in cfg["architectures"][0] else CLIPTextModel
    return cls(CLIPTextConfig(**{k: v for k, v in cfg.items() if k != "architectures"})).eval()


def tiny_family_model(family: str, seed: int = 0) -> LoadedModel:
    cfgs = component_configs(family)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(cfgs["unet"]).eval()
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        block_out_channels=(8, 8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, sample_size=64,
    ).eval()
    scheduler = EulerDiscreteScheduler.from_pretrained(str(CONFIGS_DIR / "sdxl" / "scheduler"))
    parts = dict(vae=vae, unet=unet, scheduler=scheduler)
    if family == "sdxl":
        parts.update(text_encoder=_text_encoder(cfgs["text_encoder"], seed + 2), tokenizer=build_tokenizer(CLIP_PAD),
                     text_encoder_2=_text_encoder(cfgs["text_encoder_2"], seed + 3),
                     tokenizer_2=build_tokenizer(OPENCLIP_PAD))
    else:
        parts.update(text_encoder=_text_encoder(cfgs["text_encoder"], seed + 2), tokenizer=build_tokenizer(OPENCLIP_PAD))
    pipe = assemble_pipeline(family, **parts)
    pipe.set_progress_bar_config(disable=True)
    return LoadedModel(title=f"tiny-{family} [0123456789]", name=f"tiny-{family}", family=FAMILIES[family],
                       pipe=pipe, native_size=64, short_hash="0123456789")


# ---------------------------------------------------------------------------------------------
# a kohya LoRA and the deltas it means


def _te_path(component: str, name: str) -> str:
    """kohya names text-encoder layers with transformers 4's `text_model.` level."""
    return name if component == "unet" or name.startswith("text_model.") else "text_model." + name


def kohya_lora(model: LoadedModel, family: str, seed: int = 0, scale: float = 0.2):
    """(file tensors, {(component, module path): delta at weight 1})."""
    g = torch.Generator().manual_seed(seed)
    sd, deltas = {}, {}
    for component, prefix in KOHYA_PREFIXES[family].items():
        for name, mod in getattr(model.pipe, component).named_modules():
            if not isinstance(mod, torch.nn.Linear) or not any(w in name for w in TRAINED):
                continue
            key = prefix + _te_path(component, name).replace(".", "_")
            down = torch.randn(RANK, mod.in_features, generator=g) * scale
            up = torch.randn(mod.out_features, RANK, generator=g) * scale
            sd[f"{key}.lora_down.weight"], sd[f"{key}.lora_up.weight"] = down, up
            sd[f"{key}.alpha"] = torch.tensor(ALPHA)
            deltas[(component, name)] = up @ down * (ALPHA / RANK)
    return sd, deltas


def merge_by_hand(model: LoadedModel, deltas, weight: float) -> None:
    with torch.no_grad():
        for (component, name), delta in deltas.items():
            dict(getattr(model.pipe, component).named_modules())[name].weight += weight * delta


def _weights(model: LoadedModel) -> dict[str, torch.Tensor]:
    return {f"{c}.{k}": v for c in ("unet", "text_encoder", "text_encoder_2") if getattr(model.pipe, c, None) is not None
            for k, v in getattr(model.pipe, c).state_dict().items()}


# ---------------------------------------------------------------------------------------------
# the app's extension, loaded as launch.py loads it (lora_dir, lora_ext: tests/test_lora.py)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lora-families")


def engine_for(model, data_dir, *extensions) -> Engine:
    return Engine(FixedProvider(model), SettingsStore(None), Paths(data_dir=data_dir), extensions=ExtensionSet(extensions))


def request(prompt: str) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, negative_prompt="blurry", seed=123, steps=2, sampler_name="Euler",
                             cfg_scale=5.0, save_images=False)


def px(result) -> np.ndarray:
    return np.stack([np.asarray(im.convert("RGB"), dtype=np.int16) for im in result.images])


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_kohya_lora_equals_the_hand_merged_model_and_leaves_no_trace(family, lora_ext, lora_dir, data_dir):
    model = tiny_family_model(family)
    sd, deltas = kohya_lora(model, family, seed=11)
    assert {c for c, _ in deltas} == set(KOHYA_PREFIXES[family])  # every component has layers in the file
    write(lora_dir, f"kohya_{family}", sd)
    lora_lines = f"a red circle <lora:kohya_{family}:0.8>"
    before = {k: v.clone() for k, v in _weights(model).items()}
    engine = engine_for(model, data_dir, lora_ext)

    plain = px(engine.generate(request("a red circle")))
    got = engine.generate(request(lora_lines))
    assert not got.warnings, got.warnings  # every layer of the file found its module

    merged = tiny_family_model(family)
    merge_by_hand(merged, deltas, 0.8)
    want = px(engine_for(merged, data_dir).generate(request("a red circle")))
    assert np.abs(px(got) - want).max() <= 1
    assert np.abs(px(got) - plain).max() > 8  # the LoRA does change the picture

    # weight 0 and the next job are the plain model, its weights bitwise restored
    assert np.array_equal(px(engine.generate(request(f"a red circle <lora:kohya_{family}:0>"))), plain)
    assert np.array_equal(px(engine.generate(request("a red circle"))), plain)
    assert all(torch.equal(v, before[k]) for k, v in _weights(model).items())


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_each_text_encoder_part_lands_on_its_own_encoder(family, lora_ext, lora_dir, data_dir):
    """Only one text encoder's layers: the picture is that encoder merged, so a LoRA meant for
    SDXL's second encoder cannot be applied to the first (same shapes in these tiny models)."""
    model = tiny_family_model(family)
    sd, deltas = kohya_lora(model, family, seed=12, scale=0.5)
    last = list(KOHYA_PREFIXES[family])[-1]  # SD 2.x: its one encoder; SDXL: text_encoder_2
    prefix = KOHYA_PREFIXES[family][last]
    write(lora_dir, f"te_only_{family}", {k: v for k, v in sd.items() if k.startswith(prefix)})
    got = engine_for(model, data_dir, lora_ext).generate(request(f"a red circle <lora:te_only_{family}:1>"))
    assert not got.warnings, got.warnings

    merged = tiny_family_model(family)
    merge_by_hand(merged, {k: d for k, d in deltas.items() if k[0] == last}, 1.0)
    want = px(engine_for(merged, data_dir).generate(request("a red circle")))
    plain = px(engine_for(tiny_family_model(family), data_dir).generate(request("a red circle")))
    assert np.abs(px(got) - want).max() <= 1
    assert np.abs(want - plain).max() > 3


# kohya's SDXL files name UNet layers in the original SGM layout; some tiny-XL layers, written out by
# hand (levels: no attention / 1 transformer / 2 transformers, layers_per_block=2)
SGM_LAYERS = {
    "input_blocks_4_1_transformer_blocks_0_attn1_to_q": "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
    "input_blocks_7_1_proj_in": "down_blocks.2.attentions.0.proj_in",
    "input_blocks_8_1_transformer_blocks_1_attn2_to_k": "down_blocks.2.attentions.1.transformer_blocks.1.attn2.to_k",
    "middle_block_1_transformer_blocks_1_ff_net_0_proj": "mid_block.attentions.0.transformer_blocks.1.ff.net.0.proj",
    "output_blocks_2_1_transformer_blocks_1_attn1_to_out_0":
        "up_blocks.0.attentions.2.transformer_blocks.1.attn1.to_out.0",
    "output_blocks_5_1_proj_out": "up_blocks.1.attentions.2.proj_out",
}


def test_sdxl_kohya_file_with_sgm_unet_names_equals_the_hand_merged_model(lora_ext, lora_dir, data_dir):
    model = tiny_family_model("sdxl")
    modules = dict(model.pipe.unet.named_modules())
    g, sd, deltas = torch.Generator().manual_seed(13), {}, {}
    for sgm, name in SGM_LAYERS.items():
        out_f, in_f = modules[name].weight.shape
        down, up = torch.randn(RANK, in_f, generator=g) * 0.4, torch.randn(out_f, RANK, generator=g) * 0.4
        sd[f"lora_unet_{sgm}.lora_down.weight"], sd[f"lora_unet_{sgm}.lora_up.weight"] = down, up
        sd[f"lora_unet_{sgm}.alpha"] = torch.tensor(ALPHA)
        deltas[("unet", name)] = up @ down * (ALPHA / RANK)
    write(lora_dir, "sgm_xl", sd)
    got = engine_for(model, data_dir, lora_ext).generate(request("a red circle <lora:sgm_xl:1>"))
    assert not got.warnings, got.warnings

    merged = tiny_family_model("sdxl")
    merge_by_hand(merged, deltas, 1.0)
    want = px(engine_for(merged, data_dir).generate(request("a red circle")))
    plain = px(engine_for(tiny_family_model("sdxl"), data_dir).generate(request("a red circle")))
    assert np.abs(px(got) - want).max() <= 1
    assert np.abs(want - plain).max() > 3
