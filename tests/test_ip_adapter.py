"""IP-Adapter (controlnet_ext.ip_adapter): h94's files, the CLIP vision encoder, the UNet patch.

Runs on the tiny SD1 model of tests/tiny_model.py with the real denoising loop
(modules.processing.sampling.denoise) and random-weight files in the real layouts
(tests/ip_adapter_files.py), and checks the result against diffusers' own IP-Adapter path.
"""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from modules.paths import CONFIGS_DIR, EXTENSIONS_BUILTIN_DIR
from tests import ip_adapter_files as files
from tests.tiny_model import TEXT_DIM, tiny_loaded_model, tiny_pipeline
from tests.torch_threads import one_torch_thread

sys.path.insert(0, str(EXTENSIONS_BUILTIN_DIR / "controlnet"))  # as the extension loader does

from controlnet_ext import clip_vision  # noqa: E402
from controlnet_ext.ip_adapter import (  # noqa: E402
    ClipVisionMissingError,
    IPAdapterFileError,
    IPAdapterMismatchError,
    IPAdapterRun,
    IPAdapterWeights,
    check_fits,
    find_clip_vision,
)

from modules.extensions.hooks import UNetStep  # noqa: E402
from modules.processing.conditioning import PromptEncoder, ScheduledConditioning  # noqa: E402
from modules.processing.sampling import SamplingJob, denoise  # noqa: E402

STEPS = 3
PROMPT = "a red circle"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def model():
    return tiny_loaded_model(seed=0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, model) -> Path:
    """models/ControlNet-like folder with the adapters, and models/clip_vision with the encoder."""
    root = tmp_path_factory.mktemp("ipa")
    files.save_ip_adapter(root / "ControlNet" / "ip-adapter_sd15.safetensors",
                          files.ip_adapter_state(model.unet, kind="plain", image_embed_dim=32, seed=1))
    files.save_ip_adapter(root / "ControlNet" / "ip-adapter-plus_sd15.safetensors",
                          files.ip_adapter_state(model.unet, kind="plus", image_embed_dim=32, seed=2, tokens=4))
    files.make_clip_vision_file(root / "clip_vision" / "clip_h.pth", seed=3)
    return root


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (72, 96, 3), dtype=np.uint8))


def weights(folder: Path, kind: str = "plain") -> IPAdapterWeights:
    from safetensors.torch import load_file

    name = "ip-adapter_sd15" if kind == "plain" else "ip-adapter-plus_sd15"
    return IPAdapterWeights.from_state_dict(load_file(str(folder / "ControlNet" / f"{name}.safetensors")), name)


def run_for(folder: Path, picture, kind="plain", weight=1.0, start=0.0, end=1.0) -> IPAdapterRun:
    return IPAdapterRun(weights(folder, kind), folder / "clip_vision" / "clip_h.pth", picture, weight, start, end,
                        torch.device("cpu"), torch.float32)


def conditioning(model):
    encoder = PromptEncoder.from_model(model)
    return ScheduledConditioning(encoder, [PROMPT], STEPS), ScheduledConditioning(encoder, [""], STEPS)


def sample(model, run=None, seed=5) -> torch.Tensor:
    """Latents of a 3-step DDIM run with CFG through the real loop, with `run` patched in."""
    from diffusers import DDIMScheduler

    cond, uncond = conditioning(model)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(seed))
    job = SamplingJob(unet=model.unet, device=torch.device("cpu"),
                      scheduler=DDIMScheduler.from_config(model.pipe.scheduler.config), cond=cond, uncond=uncond,
                      cfg_scale=5.0, steps=STEPS, noise=noise, generators=[torch.Generator().manual_seed(seed)],
                      unet_step=run.step_kwargs if run is not None else None)
    with torch.no_grad(), (run.patched(model.unet) if run is not None else nullcontext()):
        return denoise(job, lambda *a: None, lambda: False).latents


def pixels(model, latents: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        image = model.vae.decode(latents / model.vae.config.scaling_factor).sample
    return ((image / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def unet_out(model) -> torch.Tensor:
    gen = torch.Generator().manual_seed(11)
    x, e = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 77, TEXT_DIM, generator=gen)
    with torch.no_grad():
        return model.unet(x, torch.tensor(500), encoder_hidden_states=e).sample


# ---------------------------------------------------------------------------------------------
# files and configs


def test_preprocessing_equals_clip_image_processor():
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    processor = CLIPImageProcessorPil()
    rng = np.random.default_rng(1)
    for w, h in [(64, 64), (300, 200), (123, 457), (225, 224)]:
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        expected = processor(image, return_tensors="pt").pixel_values
        torch.testing.assert_close(clip_vision.preprocess(image), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("encoder,dims,millions", [("clip_h", (1280, 32, 1024), 632.08),
                                                   ("clip_g", (1664, 48, 1280), 1844.91)])
def test_shipped_encoder_configs_are_the_real_towers(encoder, dims, millions):
    """Sizes as OpenCLIP reports the image towers (ViT-H-14: 632.08M, ViT-bigG-14: 1844.91M)."""
    from accelerate import init_empty_weights
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = clip_vision.shipped_config(encoder)
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["projection_dim"]) == dims
    with init_empty_weights():
        tower = CLIPVisionModelWithProjection(CLIPVisionConfig(**{k: v for k, v in cfg.items()
                                                                  if k not in ("architectures", "model_type")}))
    shapes = {k: tuple(v.shape) for k, v in tower.state_dict().items()}
    assert round(sum(int(np.prod(s)) for s in shapes.values()) / 1e6, 2) == millions
    # a real file's shapes pick the shipped config (heads and activation cannot be read from weights)
    assert clip_vision.vision_config(shapes) == (cfg, encoder)
    assert json.loads((CONFIGS_DIR / "clip_vision" / clip_vision.ENCODER_CONFIG_DIRS[encoder] / "config.json")
                      .read_text())["architectures"] == ["CLIPVisionModelWithProjection"]


def test_tiny_encoder_loads_from_pth_and_safetensors_with_the_inferred_config(tmp_path, picture):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = files.make_clip_vision_file(tmp_path / "clip_h.pth", seed=4)
    files.make_clip_vision_file(tmp_path / "model.safetensors", seed=4)
    torch.manual_seed(4)
    reference = CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg)).eval()
    px = clip_vision.preprocess(picture)
    with torch.no_grad():
        expected = reference(px).image_embeds
        for name in ("clip_h.pth", "model.safetensors"):
            loaded = clip_vision.load_clip_vision(tmp_path / name)
            assert loaded.config.num_attention_heads == 16 and loaded.config.hidden_act == "gelu"
            assert torch.equal(loaded(px).image_embeds, expected)


def test_find_clip_vision_and_the_missing_encoder_message(tmp_path):
    assert find_clip_vision(tmp_path / "absent", "clip_h") is None
    assert find_clip_vision(tmp_path, "clip_h") is None
    with pytest.raises(ClipVisionMissingError) as err:
        clip_vision.require_clip_vision(tmp_path, "clip_g")
    assert "clip_g.pth" in str(err.value) and str(tmp_path) in str(err.value) and "bigG" in str(err.value)
    (tmp_path / "clip-vit-h-14-laion2b-s32b-b79k.safetensors").write_bytes(b"x")
    assert find_clip_vision(tmp_path, "clip_h").name == "clip-vit-h-14-laion2b-s32b-b79k.safetensors"
    (tmp_path / "clip_h.pth").write_bytes(b"x")  # the first accepted name wins
    assert find_clip_vision(tmp_path, "clip_h").name == "clip_h.pth"
    assert find_clip_vision(tmp_path, "clip_g") is None


def test_encoder_file_in_another_layout_is_refused_by_name(tmp_path):
    from safetensors.torch import save_file

    save_file({"visual.conv1.weight": torch.zeros(4, 3, 14, 14)}, str(tmp_path / "clip_h.safetensors"))
    with pytest.raises(clip_vision.ClipVisionFileError, match=r"clip_h\.safetensors.*OpenCLIP"):
        clip_vision.load_clip_vision(tmp_path / "clip_h.safetensors")


def test_weights_read_flat_and_nested_files_alike(folder, model, tmp_path):
    state = files.ip_adapter_state(model.unet, kind="plain", image_embed_dim=32, seed=1)
    flat = IPAdapterWeights.from_state_dict(state, "flat")
    nested_path = files.save_ip_adapter(tmp_path / "ip-adapter_sd15.bin", state)
    nested = IPAdapterWeights.from_state_dict(torch.load(nested_path, weights_only=True), "nested")
    assert flat.kind == nested.kind == "plain" and sorted(flat.layers) == [1, 3, 5, 7]
    assert all(torch.equal(flat.layers[n][0], nested.layers[n][0]) for n in flat.layers)
    assert (flat.family, flat.family_label) == ("custom", "custom (cross-attention 32)")
    plus = weights(folder, "plus")
    assert plus.kind == "plus" and plus.uses_hidden_states and plus.num_tokens == 4


def _meta_weights(unet_config: dict, label: str) -> IPAdapterWeights:
    """Weights with the real file's layer numbers and shapes (meta tensors: nothing allocated)."""
    unet = files.meta_unet(unet_config)
    layers = {n: (torch.empty(w, c, device="meta"), torch.empty(w, c, device="meta"))
              for n, w, c in files.cross_attention_layers(unet)}
    cross = unet_config["cross_attention_dim"]
    return IPAdapterWeights(label, "plain", None, layers, 1024, cross, 4)


def _real_unet_config(family: str) -> dict:
    return {k: v for k, v in json.loads((CONFIGS_DIR / family / "unet" / "config.json").read_text()).items()
            if not k.startswith("_")}


def test_real_sd15_and_sdxl_layouts_and_the_family_error():
    sd15, sdxl = _real_unet_config("sd1"), _real_unet_config("sdxl")
    w15, wxl = _meta_weights(sd15, "ip-adapter_sd15"), _meta_weights(sdxl, "ip-adapter_sdxl")
    # the released files: ip_adapter.1 .. .31 (16 layers, first to_k_ip 320x768); SDXL .1 .. .139 (70 layers)
    assert sorted(w15.layers) == list(range(1, 32, 2)) and tuple(w15.layers[1][0].shape) == (320, 768)
    assert sorted(wxl.layers) == list(range(1, 140, 2)) and tuple(wxl.layers[1][0].shape) == (640, 2048)
    assert (w15.family_label, wxl.family_label) == ("SD 1.x", "SDXL")
    unet15, unetxl = files.meta_unet(sd15), files.meta_unet(sdxl)
    assert len(check_fits(w15, unet15)) == 16 and len(check_fits(wxl, unetxl)) == 70
    with pytest.raises(IPAdapterMismatchError) as err:
        check_fits(w15, unetxl)
    assert "ip-adapter_sd15 (SD 1.x" in str(err.value) and "(SDXL: 70 cross-attention layers" in str(err.value)


def test_wrong_family_refused_on_patch_and_unet_untouched(model, folder, picture):
    xl_like = files.meta_unet({**_real_unet_config("sd1"), "cross_attention_dim": 64, "block_out_channels": [16, 32, 32, 32],
                               "norm_num_groups": 8, "attention_head_dim": 4})
    other = IPAdapterWeights.from_state_dict(files.ip_adapter_state(xl_like, image_embed_dim=32), "ip-adapter_other")
    run = IPAdapterRun(other, folder / "clip_vision" / "clip_h.pth", picture, 1.0, 0.0, 1.0, "cpu", torch.float32)
    before = unet_out(model)
    with pytest.raises(IPAdapterMismatchError, match=r"ip-adapter_other .*width 64\).*does not fit the UNet .*width 32"):
        with run.patched(model.unet):
            pass
    assert torch.equal(unet_out(model), before) and model.unet.encoder_hid_proj is None


def test_encoder_that_does_not_fit_the_adapter_is_named(folder, picture, tmp_path):
    files.make_clip_vision_file(tmp_path / "clip_g.pth", projection=48)
    with pytest.raises(IPAdapterMismatchError, match=r"ip-adapter_sd15 takes 32-wide CLIP image embeds.*clip_g\.pth gives 48"):
        IPAdapterRun(weights(folder), tmp_path / "clip_g.pth", picture, 1.0, 0.0, 1.0, "cpu", torch.float32)


def test_unusable_files_are_refused_with_the_reason(model):
    with pytest.raises(IPAdapterFileError, match="x.safetensors: no image_proj"):
        IPAdapterWeights.from_state_dict({"input_blocks.0.weight": torch.zeros(1)}, "x.safetensors")
    faceid = {"image_proj.proj.0.weight": torch.zeros(8, 4), "image_proj.norm.weight": torch.zeros(2),
              "ip_adapter.1.to_k_ip.weight": torch.zeros(4, 2), "ip_adapter.1.to_v_ip.weight": torch.zeros(4, 2)}
    with pytest.raises(IPAdapterFileError, match="FaceID"):
        IPAdapterWeights.from_state_dict(faceid, "ip-adapter-faceid_sd15")
    state = files.ip_adapter_state(model.unet, image_embed_dim=32)
    del state["ip_adapter.3.to_v_ip.weight"]
    with pytest.raises(IPAdapterFileError, match="layer 3 needs to_k_ip and to_v_ip"):
        IPAdapterWeights.from_state_dict(state, "broken")


# ---------------------------------------------------------------------------------------------
# generation


def test_weight_zero_is_no_adapter_and_weight_one_differs(model, folder, picture):
    plain = sample(model)
    zero = sample(model, run_for(folder, picture, weight=0.0))
    one = sample(model, run_for(folder, picture, weight=1.0))
    assert torch.equal(zero, plain)
    assert np.array_equal(pixels(model, zero), pixels(model, plain))
    assert not np.array_equal(pixels(model, one), pixels(model, plain))


def test_unet_is_bit_identical_after_exit(model, folder, picture):
    before = unet_out(model)
    procs = dict(model.unet.attn_processors)
    keys = set(model.unet.state_dict())
    run = run_for(folder, picture, kind="plus")
    with run.patched(model.unet):
        assert model.unet.config.encoder_hid_dim_type == "ip_image_proj"
    assert torch.equal(unet_out(model), before)
    assert model.unet.attn_processors == procs and set(model.unet.state_dict()) == keys
    assert model.unet.encoder_hid_proj is None and model.unet.config.encoder_hid_dim_type is None
    assert "encoder_hid_proj" not in model.unet._modules


@pytest.mark.parametrize("start,end", [(1.0, 1.0), (0.0, 0.0)])
def test_start_end_outside_the_run_is_no_effect(model, folder, picture, start, end):
    assert torch.equal(sample(model, run_for(folder, picture, start=start, end=end)), sample(model))


def test_start_end_inside_the_run_takes_effect_on_those_steps_only(model, folder, picture):
    late = sample(model, run_for(folder, picture, start=0.5, end=1.0))
    assert not torch.equal(late, sample(model)) and not torch.equal(late, sample(model, run_for(folder, picture)))
    run = run_for(folder, picture, start=0.5, end=1.0)
    seen = []
    with run.patched(model.unet):
        for index in range(STEPS):
            step = UNetStep(index=index, total=STEPS, timestep=torch.tensor(1), sample=torch.zeros(4, 4, 8, 8),
                            encoder_hidden_states=None, cfg=True)
            embeds = run.step_kwargs(step)["added_cond_kwargs"]["image_embeds"]
            seen.append(run._processors[0].scale)
        assert run.step_kwargs(step, on=False) and run._processors[0].scale == 0.0  # a pass the unit skips
    assert seen == [0.0, 0.0, 1.0]  # progress 0, 1/3, 2/3: only the last is inside [0.5, 1]
    # CFG rows: uncond (zeros, as diffusers' encode_image) first, then the picture's embedding, per image
    assert len(embeds) == 1 and embeds[0].shape == (4, 1, 32)
    assert torch.equal(embeds[0][:2], torch.zeros(2, 1, 32)) and torch.equal(embeds[0][2], run.cond)


@pytest.mark.parametrize("kind,weight", [("plain", 1.0), ("plain", 0.6), ("plus", 1.0)])
def test_equals_diffusers_load_ip_adapter(model, folder, picture, kind, weight):
    """diffusers' StableDiffusionPipeline with pipe.load_ip_adapter on the same file, the same encoder,
    image, prompt embeddings, scheduler and start latents."""
    from diffusers import DDIMScheduler
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    ours = sample(model, run_for(folder, picture, kind=kind, weight=weight))

    pipe = tiny_pipeline(seed=0)  # the same weights as `model`, a UNet of its own for diffusers to patch
    pipe.scheduler = DDIMScheduler.from_config(model.pipe.scheduler.config)
    name = "ip-adapter_sd15.safetensors" if kind == "plain" else "ip-adapter-plus_sd15.safetensors"
    pipe.load_ip_adapter(str(folder / "ControlNet"), subfolder="", weight_name=name, image_encoder_folder=None)
    pipe.register_modules(image_encoder=clip_vision.load_clip_vision(folder / "clip_vision" / "clip_h.pth"),
                          feature_extractor=CLIPImageProcessorPil())
    pipe.set_ip_adapter_scale(weight)
    cond, uncond = conditioning(model)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        theirs = pipe(prompt_embeds=cond.at(0).embeds, negative_prompt_embeds=uncond.at(0).embeds,
                      ip_adapter_image=picture, num_inference_steps=STEPS, guidance_scale=5.0, latents=noise,
                      height=64, width=64, output_type="latent").images
    assert not torch.allclose(ours, sample(model), atol=1e-3)
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-4)


def test_sdxl_unet_patch_equals_diffusers_ip_adapter_weights(folder, picture):
    """SDXL's structure (transformer depths 1/2, its own text_embeds/time_ids beside image_embeds): our
    patch against diffusers' _load_ip_adapter_weights on a copy of the same tiny UNet."""
    import copy

    from diffusers import UNet2DConditionModel

    from tests.checkpoint_factory import component_configs

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(component_configs("sdxl")["unet"]).eval()
    theirs = copy.deepcopy(unet)
    state = files.ip_adapter_state(unet, kind="plain", image_embed_dim=32, seed=4)
    xl = IPAdapterWeights.from_state_dict(state, "ip-adapter_sdxl_tiny")
    # depths 1, 2: down 2x1 + 2x2, up 3x2 + 3x1, middle 2 -> 17 cross-attention layers, numbered 1, 3, ..., 33
    assert sorted(xl.layers) == list(range(1, 34, 2))
    run = IPAdapterRun(xl, folder / "clip_vision" / "clip_h.pth", picture, 1.0, 0.0, 1.0, "cpu", torch.float32)
    gen = torch.Generator().manual_seed(2)
    x, text = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 77, 64, generator=gen)
    added = {"text_embeds": torch.randn(2, 32, generator=gen), "time_ids": torch.randn(2, 6, generator=gen)}
    t = torch.tensor(400)
    step = UNetStep(index=0, total=1, timestep=t, sample=x, encoder_hidden_states=text, cfg=True,
                    added_cond_kwargs=added)
    with torch.no_grad():
        plain = unet(x, t, encoder_hidden_states=text, added_cond_kwargs=added).sample
        with run.patched(unet):
            image_embeds = run.step_kwargs(step)["added_cond_kwargs"]["image_embeds"]
            ours = unet(x, t, encoder_hidden_states=text, added_cond_kwargs={**added, "image_embeds": image_embeds}).sample
        theirs._load_ip_adapter_weights([{"image_proj": {k[11:]: v for k, v in state.items() if k.startswith("image_proj.")},
                                          "ip_adapter": {k[11:]: v for k, v in state.items() if k.startswith("ip_adapter.")}}],
                                        low_cpu_mem_usage=False)
        expected = theirs(x, t, encoder_hidden_states=text,
                          added_cond_kwargs={**added, "image_embeds": image_embeds}).sample
        after = unet(x, t, encoder_hidden_states=text, added_cond_kwargs=added).sample
    assert not torch.allclose(ours, plain, atol=1e-3)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-4)
    assert torch.equal(after, plain)


def test_two_units_nest_and_unwind(model, folder, picture):
    before = unet_out(model)
    a, b = run_for(folder, picture, kind="plain"), run_for(folder, picture, kind="plus", weight=0.0)
    alone = sample(model, a)

    from diffusers import DDIMScheduler

    cond, uncond = conditioning(model)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))

    def both(step):  # the extension asks every unit; each answer is the whole list, one entry per slot
        first = a.step_kwargs(step)["added_cond_kwargs"]["image_embeds"]
        second = b.step_kwargs(step)
        assert len(first) == 2 and all(torch.equal(x, y) for x, y in
                                       zip(first, second["added_cond_kwargs"]["image_embeds"]))
        return second

    job = SamplingJob(unet=model.unet, device=torch.device("cpu"),
                      scheduler=DDIMScheduler.from_config(model.pipe.scheduler.config), cond=cond, uncond=uncond,
                      cfg_scale=5.0, steps=STEPS, noise=noise, generators=[torch.Generator().manual_seed(5)],
                      unet_step=both)
    with torch.no_grad(), a.patched(model.unet), b.patched(model.unet):
        assert (a.slot, b.slot) == (0, 1)
        together = denoise(job, lambda *x: None, lambda: False).latents
    assert torch.equal(together, alone)  # b at weight 0 adds nothing
    assert torch.equal(unet_out(model), before) and model.unet.encoder_hid_proj is None


def test_step_inputs_outside_the_patch_are_an_error(folder, picture):
    run = run_for(folder, picture)
    step = SimpleNamespace(index=0, total=1, sample=torch.zeros(2, 4, 8, 8), cfg=True)
    with pytest.raises(RuntimeError, match="outside patched"):
        run.step_kwargs(step)


# ---------------------------------------------------------------------------------------------
# through the ControlNet extension, as sd-webui-controlnet clients send it


@pytest.fixture(scope="module")
def ext_setup(tmp_path_factory):
    """A real-layout tiny SD1 checkpoint, an IP-Adapter sized to it in models/ControlNet and the tiny
    encoder as models/clip_vision/clip_h.pth; the extension loaded as the app loads it."""
    from modules.cmd_args import parse_args
    from modules.extensions.startup import load_extensions
    from modules.models.options import ModelOptions
    from modules.models.registry import ModelRegistry
    from modules.paths import Paths
    from modules.settings import SettingsStore
    from tests.checkpoint_factory import component_configs, make_checkpoint

    root = tmp_path_factory.mktemp("ipa-ext")
    make_checkpoint(root / "models" / "Stable-diffusion" / "tiny_sd1.safetensors", "sd1", seed=3)
    unet = files.meta_unet(component_configs("sd1")["unet"])
    files.save_ip_adapter(root / "models" / "ControlNet" / "ip-adapter_sd15.safetensors",
                          files.ip_adapter_state(unet, kind="plain", image_embed_dim=32, seed=1))
    files.make_clip_vision_file(root / "models" / "clip_vision" / "clip_h.pth", seed=3)
    loaded = load_extensions(Paths(data_dir=root), SettingsStore(None), parse_args(["--data-dir", str(root)]),
                             builtin_dir=EXTENSIONS_BUILTIN_DIR)
    ext = loaded.extension_set.find("controlnet")
    assert ext is not None, [e.errors for e in loaded.catalog.extensions]
    registry = ModelRegistry(Paths(data_dir=root), ModelOptions(device="cpu"), embedded_dir=None)
    return root, ext, registry


def test_ip_adapter_unit_through_the_controlnet_extension(ext_setup, picture):
    import base64
    import io

    from modules.extensions.runner import ExtensionSet
    from modules.generation.request import GenerationRequest
    from modules.paths import Paths
    from modules.processing.engine import Engine
    from modules.settings import SettingsStore

    root, ext, registry = ext_setup
    engine = Engine(registry, SettingsStore(None), Paths(data_dir=root), extensions=ExtensionSet([ext]))
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    image = base64.b64encode(buf.getvalue()).decode("ascii")

    def generate(*units):
        fields = dict(prompt="a white square", negative_prompt="blurry", seed=7, steps=2, sampler_name="Euler",
                      cfg_scale=5.0, width=64, height=64, save_images=False)
        if units:
            fields["extensions"] = {"controlnet": ext.args_from_api({"args": list(units)})}
        result = engine.generate(GenerationRequest(**fields))
        return np.asarray(result.images[0].convert("RGB"), dtype=np.int16)

    unit = {"module": "ip-adapter_clip_sd15", "model": "ip-adapter_sd15", "image": image}
    plain = generate()
    assert np.abs(generate(unit) - plain).max() > 0
    for off in ({**unit, "weight": 0}, {**unit, "guidance_end": 0}, {**unit, "guidance_start": 1.0}):
        assert np.array_equal(generate(off), plain), off
    assert np.array_equal(generate(), plain)  # the checkpoint's UNet is left as it was
