"""Architecture detection on real-size layouts (meta tensors, no memory) and on tiny files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from modules.models.detect import EPSILON, V_PREDICTION, detect_architecture
from modules.models.errors import UnsupportedModelError
from modules.models.file_check import check_model_file
from modules.models.single_file import infer_clip_config, infer_openclip_config, infer_unet_config, infer_vae_config
from modules.paths import CONFIGS_DIR
from tests.checkpoint_factory import VARIANTS, make_checkpoint, original_shapes, save_state

# A few tensors every real file of the family has, with their real shapes.
REAL_KEYS = {
    "sd1": {
        "model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
        "model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320, 1, 1),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
        "model.diffusion_model.input_blocks.3.0.op.weight": (320, 320, 3, 3),
        "model.diffusion_model.middle_block.1.proj_out.weight": (1280, 1280, 1, 1),
        "model.diffusion_model.output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.8.2.conv.weight": (640, 640, 3, 3),
        "model.diffusion_model.output_blocks.11.0.skip_connection.weight": (320, 640, 1, 1),
        "model.diffusion_model.time_embed.0.weight": (1280, 320),
        "model.diffusion_model.out.2.weight": (4, 320, 3, 3),
        "first_stage_model.encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        "first_stage_model.decoder.up.3.upsample.conv.weight": (512, 512, 3, 3),
        "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight": (128, 256, 1, 1),
        "first_stage_model.quant_conv.weight": (8, 8, 1, 1),
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (49408, 768),
        "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc1.weight": (3072, 768),
    },
    "sd2": {
        "model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320),
        "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024),
        "cond_stage_model.model.transformer.resblocks.23.attn.in_proj_weight": (3072, 1024),
        "cond_stage_model.model.positional_embedding": (77, 1024),
        "cond_stage_model.model.text_projection": (1024, 1024),
        "cond_stage_model.model.ln_final.weight": (1024,),
    },
    "sdxl": {
        "model.diffusion_model.label_emb.0.0.weight": (1280, 2816),
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.1.attn1.to_q.weight": (640, 640),
        "model.diffusion_model.input_blocks.7.1.transformer_blocks.9.ff.net.2.weight": (1280, 5120),
        "model.diffusion_model.middle_block.1.transformer_blocks.9.attn2.to_k.weight": (1280, 2048),
        "model.diffusion_model.output_blocks.2.2.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.5.2.conv.weight": (640, 640, 3, 3),
        "conditioner.embedders.0.transformer.text_model.encoder.layers.11.mlp.fc2.weight": (768, 3072),
        "conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight": (3840, 1280),
        "conditioner.embedders.1.model.text_projection": (1280, 1280),
    },
    "sdxl-refiner": {
        "model.diffusion_model.input_blocks.0.0.weight": (384, 4, 3, 3),
        "model.diffusion_model.label_emb.0.0.weight": (1536, 2560),
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.3.attn2.to_k.weight": (768, 1280),
        "conditioner.embedders.0.model.transformer.resblocks.31.mlp.c_fc.weight": (5120, 1280),
    },
}
REAL_COUNTS = {"sd1": 1131, "sdxl": 2515}  # tensors in v1-5-pruned-emaonly / sd_xl_base_1.0


@pytest.fixture(scope="module")
def real_shapes():
    return {v: original_shapes(v) for v in ("sd1", "sd1-inpaint", "sd2", "sdxl", "sdxl-inpaint", "sdxl-refiner")}


@pytest.mark.parametrize("family", list(REAL_KEYS))
def test_real_layout_has_the_real_keys_and_shapes(real_shapes, family):
    shapes = real_shapes[family]
    for key, shape in REAL_KEYS[family].items():
        assert shapes.get(key) == shape, key
    if family in REAL_COUNTS:
        assert len(shapes) == REAL_COUNTS[family]


@pytest.mark.parametrize(
    "variant,diffusers_type",
    [("sd1", "v1"), ("sd1-inpaint", "inpainting"), ("sd2", "v2"), ("sdxl", "xl_base"),
     ("sdxl-inpaint", "xl_inpaint"), ("sdxl-refiner", "xl_refiner")],
)
def test_real_layout_detected_by_us_and_by_diffusers(real_shapes, variant, diffusers_type):
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    shapes = real_shapes[variant]
    arch = detect_architecture(shapes, Path("real.safetensors"))
    assert arch.variant == variant
    assert arch.native_size == (1024 if variant.startswith("sdxl") else 512)
    if variant == "sd2":
        assert arch.prediction_type is None  # 512 and 768-v look alike: the loader probes
    meta = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    assert infer_diffusers_model_type(meta) == diffusers_type


@pytest.mark.parametrize("variant", ["sd1", "sd1-inpaint", "sd2", "sdxl", "sdxl-inpaint", "sdxl-refiner"])
def test_config_inferred_from_real_shapes_is_the_shipped_config(real_shapes, variant):
    shapes = real_shapes[variant]
    folder = CONFIGS_DIR / {"sd2": "sd2"}.get(variant, variant)

    def shipped(comp):
        return {k: v for k, v in json.loads((folder / comp / "config.json").read_text()).items() if not k.startswith("_")}

    pooled = 1280 if variant.startswith("sdxl") else None
    unet = infer_unet_config(shapes, shipped("unet"), pooled_dim=pooled, n_time_ids=5 if variant == "sdxl-refiner" else 6)
    want = shipped("unet")
    for k, v in want.items():
        got = unet[k]
        assert (list(got) if isinstance(got, (list, tuple)) else got) == v, k
    assert unet["time_embedding_dim"] is None
    vae = infer_vae_config(shapes, shipped("vae"), "first_stage_model.")
    assert {k: vae[k] for k in shipped("vae")} == shipped("vae")
    if variant.startswith("sd1"):
        te = infer_clip_config(shapes, shipped("text_encoder"), "cond_stage_model.transformer.")
        assert (te.hidden_size, te.num_hidden_layers, te.num_attention_heads, te.intermediate_size) == (768, 12, 12, 3072)
    elif variant == "sd2":
        te = infer_openclip_config(shapes, shipped("text_encoder"), "cond_stage_model.model.", drop_last_layer=True)
        assert (te.hidden_size, te.num_hidden_layers, te.num_attention_heads, te.hidden_act) == (1024, 23, 16, "gelu")
    else:
        prefix = "conditioner.embedders.0.model." if variant == "sdxl-refiner" else "conditioner.embedders.1.model."
        te = infer_openclip_config(shapes, shipped("text_encoder_2"), prefix, drop_last_layer=False)
        assert (te.hidden_size, te.num_hidden_layers, te.num_attention_heads, te.projection_dim) == (1280, 32, 20, 1280)


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    return {v: make_checkpoint(d / f"{v}.safetensors", v, seed=i) for i, v in enumerate(VARIANTS)}


@pytest.mark.parametrize("variant", VARIANTS)
def test_tiny_files_detected_from_the_header(tiny_files, variant):
    report = check_model_file(tiny_files[variant].path)
    assert report.usable, report.reason
    arch = detect_architecture(report.shapes, tiny_files[variant].path)
    assert arch.variant == variant
    assert arch.inpainting == variant.endswith("inpaint")
    assert arch.family_id == {"sd1-inpaint": "sd1", "sd2-inpaint": "sd2", "sdxl-inpaint": "sdxl"}.get(variant, variant)


def _yaml(path: Path, parameterization=None):
    lines = ["model:", "  target: ldm.models.diffusion.ddpm.LatentDiffusion", "  params:", "    linear_start: 0.00085"]
    if parameterization:
        lines.append(f'    parameterization: "{parameterization}"')
    path.with_suffix(".yaml").write_text("\n".join(lines) + "\n")


def test_yaml_beside_the_file_sets_the_prediction_type(tiny_files, tmp_path):
    shapes = check_model_file(tiny_files["sd2"].path).shapes
    target = tmp_path / "sd2-768.safetensors"
    _yaml(target, "v")
    arch = detect_architecture(shapes, target)
    assert (arch.variant, arch.prediction_type, arch.native_size) == ("sd2-v", V_PREDICTION, 768)
    assert arch.prediction_source == "yaml:sd2-768.yaml"
    _yaml(target)  # a yaml without parameterization means epsilon, like A1111's v2-inference.yaml
    arch = detect_architecture(shapes, target)
    assert (arch.variant, arch.prediction_type, arch.native_size) == ("sd2", EPSILON, 512)
    sd1 = tmp_path / "sd1-v.safetensors"
    _yaml(sd1, "v")
    arch = detect_architecture(check_model_file(tiny_files["sd1"].path).shapes, sd1)
    assert (arch.variant, arch.prediction_type) == ("sd1", V_PREDICTION)


def test_v_pred_marker_and_global_step(tiny_files):
    shapes = dict(check_model_file(tiny_files["sdxl"].path).shapes)
    assert detect_architecture(shapes).prediction_type == EPSILON
    shapes["v_pred"] = (0,)
    assert detect_architecture(shapes).prediction_type == V_PREDICTION
    sd2 = check_model_file(tiny_files["sd2"].path).shapes
    arch = detect_architecture(sd2, global_step=875000)
    assert (arch.variant, arch.prediction_type, arch.prediction_source) == ("sd2", EPSILON, "global_step")


@pytest.mark.parametrize(
    "tensors,expected",
    [
        ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 32)}, "LoRA"),
        ({"encoder.down.0.block.0.conv1.weight": (32, 3, 3, 3), "decoder.conv_in.weight": (64, 4, 3, 3)}, "VAE"),
        ({"control_model.input_hint_block.0.weight": (16, 3, 3, 3)}, "ControlNet"),
        ({"emb_params": (2, 768)}, "embedding"),
        ({"down_blocks.0.resnets.0.conv1.weight": (32, 32, 3, 3)}, "diffusers-format"),
        ({"something.else": (3,)}, "not a supported checkpoint"),
        ({"model.diffusion_model.input_blocks.0.0.weight": (320, 8, 3, 3)}, "instruct-pix2pix"),
    ],
)
def test_unknown_files_get_a_clear_error_naming_the_file(tmp_path, tensors, expected):
    path = tmp_path / "mystery.safetensors"
    save_state(path, {k: torch.zeros(s) for k, s in tensors.items()})
    with pytest.raises(UnsupportedModelError) as err:
        detect_architecture(check_model_file(path).shapes, path)
    assert expected in str(err.value) and "mystery.safetensors" in str(err.value)
