"""ControlNet model files: listing and names with the legacy hash, loading every layout for a real
(tiny, real-layout) checkpoint, family checks, bad and malicious files, the shipped configs."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch

from modules.models.loaded import LoadedModel
from modules.models.options import ModelOptions
from modules.models.single_file import load_checkpoint_file
from tests.checkpoint_factory import (
    make_checkpoint,
    make_corrupt_header,
    make_empty,
    make_lora_like,
    make_malicious_ckpt,
    make_truncated,
)
from tests.controlnet_files import (
    controlnet_config_for_unet,
    make_controlnet_for_unet,
    make_sd15_controlnet,
    make_sd21_controlnet,
    make_sdxl_controlnet_file,
    make_sdxl_controlnet_folder,
    make_t2i_adapter_file,
    make_t2i_adapter_folder,
    original_controlnet_shapes,
    real_controlnet_config,
    tiny_unet_config,
)
from tests.torch_threads import one_torch_thread as single_torch_thread

from controlnet_ext.model_files import EMBEDDED_CONTROLNET_DIR, ControlModelFile, ControlModelLibrary  # noqa: E402
from controlnet_ext.model_loading import (  # noqa: E402
    ControlKind,
    ControlModelCache,
    ControlModelError,
    ControlModelMismatchError,
    controlnet_config,
    controlnet_structure,
    load_control_model,
)
from controlnet_ext.original_controlnet import controlnet_from_original  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    with single_torch_thread():
        yield


def a1111_legacy_hash(path: Path) -> str:
    """sd_models.model_hash as A1111 wrote it: sha256 of the 64 KiB at offset 1 MiB, 8 hex digits."""
    data = Path(path).read_bytes()[0x100000:0x110000]
    return hashlib.sha256(data).hexdigest()[:8]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, LoadedModel]:
    """Tiny checkpoints in the real single-file layouts, loaded as the app loads them."""
    d = tmp_path_factory.mktemp("ckpt")
    out = {}
    for i, variant in enumerate(("sd1", "sd2", "sdxl")):
        path = make_checkpoint(d / f"tiny-{variant}.safetensors", variant, seed=10 * i,
                               probe="epsilon" if variant == "sd2" else None).path
        built = load_checkpoint_file(path, ModelOptions(device="cpu"))
        out[variant] = LoadedModel(title=f"tiny-{variant}.safetensors [0123456789]", name=f"tiny-{variant}",
                                   family=built.architecture.family, pipe=built.pipe, native_size=64)
    return out


def library_file(path: Path) -> ControlModelFile:
    lib = ControlModelLibrary([path.parent])
    found = lib.find(path.stem if path.is_file() else path.name)
    assert found is not None and found.path == path
    return found


@torch.no_grad()
def residuals(controlnet, model: LoadedModel, seed: int = 0):
    """One ControlNet call on fixed inputs the way a UNet step makes it."""
    gen = torch.Generator().manual_seed(seed)
    cfg = model.unet.config
    sample = torch.randn(2, 4, 8, 8, generator=gen)
    hint = torch.rand(2, controlnet.config.conditioning_channels, 64, 64, generator=gen)
    text = torch.randn(2, 7, cfg.cross_attention_dim, generator=gen)
    kwargs = {}
    if cfg.addition_embed_type == "text_time":
        pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        kwargs["added_cond_kwargs"] = {"text_embeds": torch.randn(2, pooled, generator=gen),
                                       "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 2)}
    down, mid = controlnet(sample, torch.tensor([500, 500]), encoder_hidden_states=text, controlnet_cond=hint,
                           conditioning_scale=1.0, return_dict=False, **kwargs)
    return list(down), mid


def assert_same_residuals(loaded, direct, model):
    down_a, mid_a = residuals(loaded, model)
    down_b, mid_b = residuals(direct, model)
    assert len(down_a) == len(down_b) == 3 * len(model.unet.config.block_out_channels)
    for a, b in zip(down_a, down_b):
        assert torch.equal(a, b)
    assert torch.equal(mid_a, mid_b)
    assert mid_a.abs().max() > 0  # the zero convolutions are not zero: a real signal passes


# ---------------------------------------------------------------------------------------------
# listing and names


def test_library_lists_files_and_folders_with_the_legacy_hash(tmp_path):
    main, extra = tmp_path / "ControlNet", tmp_path / "extra"
    make_sd15_controlnet(main / "control_v11p_sd15_canny.pth")
    make_sd15_controlnet(main / "sub" / "control_v11p_sd15_canny_fp16.safetensors", seed=1, dtype=torch.float16)
    make_sdxl_controlnet_folder(extra / "controlnet-canny-sdxl")
    make_sd15_controlnet(extra / "Another.ckpt", seed=2)
    make_sd15_controlnet(main / "None.pth", seed=3)  # the "no model" choice is never a file
    (main / "control_v11p_sd15_canny.yaml").write_text("model: {}\n")
    (main / "notes.txt").write_text("not a model")

    lib = ControlModelLibrary([main, extra])
    files = [f for f in lib.files if f.path.is_relative_to(tmp_path)]
    assert [f.name for f in files] == ["Another", "control_v11p_sd15_canny", "control_v11p_sd15_canny_fp16",
                                       "controlnet-canny-sdxl"]
    for f in files:
        weights = f.path / "diffusion_pytorch_model.safetensors" if f.path.is_dir() else f.path
        assert weights.stat().st_size > 0x110000  # the hash reads real bytes, not the empty string
        assert f.short_hash == a1111_legacy_hash(weights)
        assert f.title == f"{f.name} [{a1111_legacy_hash(weights)}]"
    assert len({f.short_hash for f in files}) == 4
    assert EMBEDDED_CONTROLNET_DIR in lib.folders


def test_find_matches_titles_names_and_substrings_as_sd_webui_controlnet(tmp_path):
    make_sd15_controlnet(tmp_path / "control_v11p_sd15_canny.safetensors")
    make_sd15_controlnet(tmp_path / "control_v11p_sd15_canny_fp16.safetensors", seed=1)
    lib = ControlModelLibrary([tmp_path])
    canny = next(f for f in lib.files if f.name == "control_v11p_sd15_canny")
    assert lib.find(canny.title) == canny
    assert lib.find("CONTROL_V11P_SD15_CANNY") == canny
    assert lib.find("sd15_can") == canny  # the shortest name containing the text
    assert lib.find("control_v11p_sd15_canny [00000000]") == canny  # a stale hash falls back to the name
    assert lib.find("None") is None and lib.find("") is None and lib.find("depth") is None


def test_the_first_folder_wins_a_title_clash(tmp_path):
    make_sd15_controlnet(tmp_path / "a" / "same.safetensors", seed=1)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    lib = ControlModelLibrary([tmp_path / "b", tmp_path / "a"])
    assert [f.path for f in lib.files if f.name == "same"] == [tmp_path / "b" / "same.safetensors"]


def test_refresh_sees_added_and_removed_files(tmp_path):
    lib = ControlModelLibrary([tmp_path])
    assert not [f for f in lib.files if f.path.is_relative_to(tmp_path)]
    make_sd15_controlnet(tmp_path / "later.safetensors")
    assert lib.find("later") is not None  # find re-scans for a name it does not know
    (tmp_path / "later.safetensors").unlink()
    lib.refresh()
    assert lib.find("later") is None


# ---------------------------------------------------------------------------------------------
# loading each layout, compared with the model built directly from the same weights


@pytest.mark.parametrize("name,kwargs", [
    ("control_v11p_sd15_canny.pth", {}),
    ("control_v11p_sd15_canny.safetensors", {"prefix": ""}),
    ("control_v11p_sd15_canny_fp16.safetensors", {"dtype": torch.float16}),
])
def test_original_layout_sd15_files_load_and_give_the_same_residuals(tmp_path, checkpoints, name, kwargs):
    model = checkpoints["sd1"]
    fake = make_sd15_controlnet(tmp_path / name, seed=5, **kwargs)
    control = ControlModelCache().get(library_file(fake.path), model)
    assert control.kind is ControlKind.CONTROLNET
    assert control.module.dtype == model.dtype and control.module.device == model.device
    assert control.family == "custom" and control.family_label == "custom (cross-attention 32)"
    assert_same_residuals(control.module, fake.build(torch.float32), model)


def test_v10_file_with_the_whole_sd_model_keeps_only_the_controlnet(tmp_path, checkpoints):
    """control_sd15_canny.pth (v1.0) holds the SD model too, beside `control_model.*`."""
    from safetensors.torch import load_file, save_file

    fake = make_sd15_controlnet(tmp_path / "cn.safetensors", seed=4)
    sd = make_checkpoint(tmp_path / "sd.safetensors", "sd1", seed=5).original
    save_file({**sd, **load_file(str(fake.path))}, str(tmp_path / "control_sd15_canny.safetensors"))
    fake.path.unlink()
    control = ControlModelCache().get(library_file(tmp_path / "control_sd15_canny.safetensors"), checkpoints["sd1"])
    assert_same_residuals(control.module, fake.build(), checkpoints["sd1"])


def test_sd21_original_file_loads_for_the_sd2_checkpoint(tmp_path, checkpoints):
    model = checkpoints["sd2"]
    fake = make_sd21_controlnet(tmp_path / "control_v11p_sd21_canny.safetensors", seed=6)
    control = ControlModelCache().get(library_file(fake.path), model)
    assert control.module.config.use_linear_projection
    # heads are not in the weights: a custom ControlNet takes the checkpoint UNet's (as from_unet does)
    assert list(control.module.config.attention_head_dim) == list(model.unet.config.attention_head_dim)
    assert_same_residuals(control.module, fake.build(attention_head_dim=model.unet.config.attention_head_dim), model)


@pytest.mark.parametrize("layout", ["folder", "file", "original"])
def test_sdxl_diffusers_folder_and_single_files_load(tmp_path, checkpoints, layout):
    model = checkpoints["sdxl"]
    if layout == "folder":
        fake = make_sdxl_controlnet_folder(tmp_path / "controlnet-canny-sdxl-1.0", seed=7)
    elif layout == "file":
        fake = make_sdxl_controlnet_file(tmp_path / "diffusers_xl_canny_full.safetensors", seed=7)
    else:  # original layout with the size conditioning as label_emb.*
        fake = make_controlnet_for_unet(tmp_path / "xl_original.safetensors", tiny_unet_config("sdxl"), seed=7)
    control = ControlModelCache().get(library_file(fake.path), model)
    assert control.module.config.addition_embed_type == "text_time"
    # a folder brings its config; a single file's heads are the checkpoint UNet's
    heads = {} if layout == "folder" else {"attention_head_dim": model.unet.config.attention_head_dim}
    assert_same_residuals(control.module, fake.build(**heads), model)


@torch.no_grad()
def test_t2i_adapter_folder_loads_and_steers_the_unet(tmp_path, checkpoints):
    model = checkpoints["sd1"]
    fake = make_t2i_adapter_folder(tmp_path / "t2i-adapter-canny", seed=8)
    control = ControlModelCache().get(library_file(fake.path), model)
    assert control.kind is ControlKind.T2I_ADAPTER
    hint = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    features = control.module(hint)
    expected = fake.build()(hint)
    assert all(torch.equal(a, b) for a, b in zip(features, expected))
    sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    text = torch.randn(1, 7, 32, generator=torch.Generator().manual_seed(2))
    plain = model.unet(sample, 500, encoder_hidden_states=text).sample
    steered = model.unet(sample, 500, encoder_hidden_states=text,
                         down_intrablock_additional_residuals=[f.clone() for f in features]).sample
    assert (steered - plain).abs().max() > 1e-3


@pytest.mark.parametrize("suffix", [".bin", ".safetensors"])
def test_ip_adapter_files_are_told_by_their_keys(tmp_path, checkpoints, suffix):
    from tests.ip_adapter_files import ip_adapter_state, save_ip_adapter

    path = save_ip_adapter(tmp_path / f"ip-adapter_sd15{suffix}", ip_adapter_state(checkpoints["sd1"].unet, seed=3))
    control = ControlModelCache().get(library_file(path), checkpoints["sd1"])
    assert control.kind is ControlKind.IP_ADAPTER
    assert type(control.module).__name__ == "IPAdapterWeights"
    assert control.family_label == control.module.family_label == "custom (cross-attention 32)"
    with pytest.raises(ControlModelMismatchError, match="ip-adapter_sd15.*tiny-sdxl"):
        ControlModelCache().get(library_file(path), checkpoints["sdxl"])


@torch.no_grad()
def test_original_t2i_adapter_file_loads_as_the_diffusers_adapter(tmp_path, checkpoints):
    fake = make_t2i_adapter_file(tmp_path / "t2iadapter_canny_sd14v1.pth", seed=9)
    control = ControlModelCache().get(library_file(fake.path), checkpoints["sd1"])
    assert control.kind is ControlKind.T2I_ADAPTER and control.module.config.in_channels == 1
    hint = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(control.module(hint), fake.build()(hint)))


def test_custom_controlnet_takes_heads_from_the_checkpoint_unet(tmp_path, checkpoints):
    """A tiny UNet's ControlNet: everything the weights say comes from the file, the heads from the UNet."""
    model = checkpoints["sd1"]
    fake = make_sd15_controlnet(tmp_path / "custom.safetensors")
    control = load_control_model(library_file(fake.path), dict(model.unet.config))
    for key, value in fake.config.items():
        got = control.module.config[key]
        assert (list(got) if isinstance(got, (list, tuple)) else got) == value, key


def test_shuffle_model_pools_its_residuals(tmp_path, checkpoints):
    fake = make_sd15_controlnet(tmp_path / "control_v11e_sd15_shuffle.safetensors")
    control = load_control_model(library_file(fake.path), dict(checkpoints["sd1"].unet.config))
    assert control.module.config.global_pool_conditions is True


# ---------------------------------------------------------------------------------------------
# the real releases' shapes and configs (meta device: no memory)


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_real_release_shapes_convert_to_the_shipped_config(family):
    from accelerate import init_empty_weights
    from diffusers import ControlNetModel

    shipped = real_controlnet_config(family)
    shapes = original_controlnet_shapes(shipped)
    if family == "sd1":  # shapes of control_v11p_sd15_canny.pth as released
        assert shapes["control_model.input_hint_block.0.weight"] == (16, 3, 3, 3)
        assert shapes["control_model.input_hint_block.14.weight"] == (320, 256, 3, 3)
        assert shapes["control_model.zero_convs.11.0.weight"] == (1280, 1280, 1, 1)
        assert shapes["control_model.middle_block_out.0.weight"] == (1280, 1280, 1, 1)
        assert shapes["control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"] == (320, 768)
        assert shapes["control_model.input_blocks.1.1.proj_in.weight"] == (320, 320, 1, 1)
        assert shapes["control_model.time_embed.0.weight"] == (1280, 320)
        assert not any("output_blocks" in k for k in shapes)
    with init_empty_weights():
        expected = {k: tuple(v.shape) for k, v in ControlNetModel.from_config(shipped).state_dict().items()}
    meta = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    converted = {k: tuple(v.shape) for k, v in controlnet_from_original(meta).items()}
    assert converted == expected  # diffusers' own converter reads our original names back exactly
    structure = controlnet_structure(expected, "real")
    assert controlnet_config(structure, {}) == shipped  # a real release file uses the shipped config


# ---------------------------------------------------------------------------------------------
# families


def test_wrong_family_names_the_control_model_the_checkpoint_and_both_families(tmp_path, checkpoints):
    sd1_cfg = controlnet_config_for_unet({**tiny_unet_config("sd1"), "cross_attention_dim": 768})
    fake = make_controlnet_for_unet(tmp_path / "control_v11p_sd15_canny.safetensors", {}, config=sd1_cfg)
    file = library_file(fake.path)
    cache = ControlModelCache()
    with pytest.raises(ControlModelMismatchError) as err:
        cache.get(file, checkpoints["sdxl"])
    msg = str(err.value)
    assert file.title in msg and checkpoints["sdxl"].title in msg
    assert "SD 1.x" in msg and "SDXL" in msg
    assert not cache._models  # a file that does not fit takes no cache slot


def test_sdxl_controlnet_on_an_sd1_checkpoint_is_refused(tmp_path, checkpoints):
    fake = make_sdxl_controlnet_folder(tmp_path / "xl")
    with pytest.raises(ControlModelMismatchError, match=r"xl \[[0-9a-f]{8}\].*cross-attention 64.*tiny-sd1"):
        ControlModelCache().get(library_file(fake.path), checkpoints["sd1"])


def test_cache_reuses_a_loaded_model_and_reloads_a_changed_file(tmp_path, checkpoints):
    model = checkpoints["sd1"]
    path = tmp_path / "cn.safetensors"
    make_sd15_controlnet(path, seed=1)
    cache = ControlModelCache(capacity=1)
    first = cache.get(library_file(path), model)
    assert cache.get(library_file(path), model) is first
    make_sd15_controlnet(path, seed=2)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = cache.get(library_file(path), model)
    assert second is not first
    assert not torch.equal(second.module.controlnet_mid_block.weight, first.module.controlnet_mid_block.weight)
    assert len(cache._models) == 1


# ---------------------------------------------------------------------------------------------
# unusable files


@pytest.mark.parametrize("kind", ["empty", "corrupt", "truncated", "lora", "checkpoint", "folder_without_weights"])
def test_unusable_files_name_the_file_and_why(tmp_path, checkpoints, kind):
    folder = tmp_path / "models"
    folder.mkdir()
    if kind == "empty":
        path = folder / "broken.safetensors"
        make_empty(path)
        why = "empty"
    elif kind == "corrupt":
        path = folder / "broken.safetensors"
        make_corrupt_header(path)
        why = "header"
    elif kind == "truncated":
        src = make_sd15_controlnet(tmp_path / "whole.pth").path
        path = folder / "broken.pth"
        make_truncated(path, src)
        why = "truncated or corrupt"
    elif kind == "lora":
        path = folder / "broken.safetensors"
        make_lora_like(path)
        why = "LoRA"
    elif kind == "checkpoint":
        path = folder / "broken.safetensors"
        shutil.copy(make_checkpoint(tmp_path / "sd.safetensors", "sd1").path, path)
        why = "Stable Diffusion checkpoint"
    else:
        path = folder / "broken"
        make_sdxl_controlnet_folder(path)
        (path / "diffusion_pytorch_model.safetensors").rename(path / "weights.safetensors")
        path.joinpath("diffusion_pytorch_model.bin").write_bytes(b"")
        why = "empty"
    file = ControlModelFile(name="broken", path=path, short_hash=a1111_legacy_hash(path) if path.is_file() else "00000000")
    with pytest.raises(ControlModelError) as err:
        ControlModelCache().get(file, checkpoints["sd1"])
    assert file.title in str(err.value) and why in str(err.value)


def test_a_malicious_pickle_is_refused_and_never_run(tmp_path, checkpoints):
    target = tmp_path / "pwned.txt"
    path = tmp_path / "control_evil.pth"
    make_malicious_ckpt(path, target)
    file = library_file(path)
    with pytest.raises(ControlModelError, match="control_evil"):
        ControlModelCache().get(file, checkpoints["sd1"])
    assert not target.exists()
