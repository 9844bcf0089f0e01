"""Model catalog: listing, titles, hashes and their cache, refresh, bad files, lookups, VAEs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from modules.models import hashing
from modules.models.catalog import ModelCatalog
from modules.models.errors import UnknownModelError
from modules.models.hashing import HashCache, Hasher
from modules.paths import REPO_ROOT, Paths
from tests.checkpoint_factory import (make_checkpoint, make_corrupt_header, make_empty, make_lora_like,
                                      make_malicious_ckpt, make_truncated, make_vae_file)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A few real-layout tiny files, built once and copied into each test's folders."""
    d = tmp_path_factory.mktemp("sources")
    make_checkpoint(d / "sd1.safetensors", "sd1", seed=1)
    make_checkpoint(d / "xl.safetensors", "sdxl", seed=2)
    make_checkpoint(d / "sd1.ckpt", "sd1", seed=3)
    make_vae_file(d / "vae.safetensors", seed=4)
    make_vae_file(d / "vae.pt", seed=5)
    return d


def _catalog(data_dir: Path, **kw) -> ModelCatalog:
    kw.setdefault("embedded_dir", None)
    return ModelCatalog(Paths(data_dir=data_dir), **kw)


def _put(sources: Path, name: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(sources / name, dest)
    return dest


def test_catalog_and_registry_import_without_torch():
    code = (
        "import sys; import modules.models.catalog, modules.models.registry, modules.models.options, "
        "modules.models.hashing, modules.models.detect, modules.models.errors; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, timeout=60)


def test_lists_files_recursively_with_a1111_names(sources, tmp_path):
    sd = tmp_path / "models" / "Stable-diffusion"
    _put(sources, "sd1.safetensors", sd / "a-model.safetensors")
    _put(sources, "xl.safetensors", sd / "sub" / "xl-model.safetensors")
    _put(sources, "sd1.ckpt", sd / "old.ckpt")
    extra = tmp_path / "elsewhere"
    _put(sources, "sd1.safetensors", extra / "extra.safetensors")
    (sd / "notes.txt").write_text("not a model")
    cat = ModelCatalog(Paths(data_dir=tmp_path, ckpt_dirs=(extra,)), embedded_dir=None)

    by_name = {c.name: c for c in cat.checkpoints()}
    assert set(by_name) == {"a-model.safetensors", "sub/xl-model.safetensors", "old.ckpt", "extra.safetensors"}
    assert all(c.usable for c in by_name.values())
    assert by_name["sub/xl-model.safetensors"].architecture == "sdxl"
    assert by_name["a-model.safetensors"].architecture == "sd1"
    assert by_name["old.ckpt"].kind == "ckpt" and by_name["old.ckpt"].architecture is None  # pickles: known at load
    assert by_name["sub/xl-model.safetensors"].model_name == "sub_xl-model"
    # no hash computed yet: the title is the bare name (A1111 before hashing)
    assert by_name["a-model.safetensors"].title == "a-model.safetensors"
    assert cat.default_checkpoint().name == "a-model.safetensors"


def test_hash_equals_sha256sum_and_shows_in_title(sources, tmp_path):
    path = _put(sources, "sd1.safetensors", tmp_path / "models" / "Stable-diffusion" / "m.safetensors")
    cat = _catalog(tmp_path)
    info = cat.ensure_hash(cat.find_checkpoint("m.safetensors"))
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    if shutil.which("sha256sum"):
        expected = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True).stdout.split()[0]
    assert info.sha256 == expected
    assert info.short_hash == expected[:10]
    assert info.title == f"m.safetensors [{expected[:10]}]"
    # the catalog remembers it, and a new catalog reads it from the cache file
    assert cat.find_checkpoint("m.safetensors").title == info.title
    assert _catalog(tmp_path).find_checkpoint("m").title == info.title
    cache = json.loads((tmp_path / "cache.json").read_text())
    assert cache["hashes"][str(path.resolve())]["sha256"] == expected


def test_hash_cache_hit_does_not_reread_and_change_invalidates(sources, tmp_path, monkeypatch):
    path = _put(sources, "sd1.safetensors", tmp_path / "m.safetensors")
    cache_file = tmp_path / "cache.json"
    cache_file.write_text(json.dumps({"other-section": {"keep": 1}}))
    first = Hasher(HashCache(cache_file)).sha256(path)

    def boom(*a, **k):
        raise AssertionError("file was re-read despite a cache hit")

    monkeypatch.setattr(hashing, "sha256_file", boom)
    assert Hasher(HashCache(cache_file)).sha256(path) == first  # fresh cache object: read from disk
    assert json.loads(cache_file.read_text())["other-section"] == {"keep": 1}  # other sections kept
    monkeypatch.undo()

    # same size and mtime -> still a hit (proves the bytes were not read again)
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert Hasher(HashCache(cache_file)).sha256(path) == first
    # a new mtime -> hashed again
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert Hasher(HashCache(cache_file)).sha256(path) == hashlib.sha256(bytes(data)).hexdigest()


def test_no_hashing_keeps_bare_titles(sources, tmp_path):
    _put(sources, "sd1.safetensors", tmp_path / "models" / "Stable-diffusion" / "m.safetensors")
    cat = _catalog(tmp_path, no_hashing=True)
    info = cat.ensure_hash(cat.find_checkpoint("m.safetensors"))
    assert info.sha256 is None and info.title == "m.safetensors"
    assert not (tmp_path / "cache.json").exists()


def test_refresh_picks_up_added_and_removed_files(sources, tmp_path):
    sd = tmp_path / "models" / "Stable-diffusion"
    _put(sources, "sd1.safetensors", sd / "one.safetensors")
    cat = _catalog(tmp_path)
    assert [c.name for c in cat.checkpoints()] == ["one.safetensors"]
    _put(sources, "xl.safetensors", sd / "two.safetensors")
    _put(sources, "vae.safetensors", tmp_path / "models" / "VAE" / "new.vae.safetensors")
    assert [c.name for c in cat.checkpoints()] == ["one.safetensors"]  # until refreshed
    cat.refresh()
    assert [c.name for c in cat.checkpoints()] == ["one.safetensors", "two.safetensors"]
    assert [v.name for v in cat.vaes()] == ["new.vae.safetensors"]
    (sd / "one.safetensors").unlink()
    cat.refresh()
    assert [c.name for c in cat.checkpoints()] == ["two.safetensors"]
    with pytest.raises(UnknownModelError):
        cat.find_checkpoint("one.safetensors")


def test_bad_files_are_listed_unusable_with_reasons(sources, tmp_path):
    sd = tmp_path / "models" / "Stable-diffusion"
    sd.mkdir(parents=True)
    _put(sources, "sd1.safetensors", sd / "good.safetensors")
    make_empty(sd / "empty.safetensors")
    make_empty(sd / "empty.ckpt")
    make_corrupt_header(sd / "corrupt.safetensors")
    make_truncated(sd / "truncated.safetensors", sources / "sd1.safetensors")
    make_truncated(sd / "truncated.ckpt", sources / "sd1.ckpt")
    (sd / "garbage.ckpt").write_bytes(os.urandom(256))
    make_lora_like(sd / "lora.safetensors")
    target = tmp_path / "PWNED"
    make_malicious_ckpt(sd / "evil.ckpt", target)

    cat = _catalog(tmp_path)
    infos = {c.name: c for c in cat.checkpoints()}
    assert len(infos) == 9
    reasons = {n: (c.reason or "") for n, c in infos.items() if not c.usable}
    assert set(reasons) == set(infos) - {"good.safetensors"}
    assert "empty" in reasons["empty.safetensors"] and "empty" in reasons["empty.ckpt"]
    assert "corrupt" in reasons["corrupt.safetensors"]
    assert "truncated" in reasons["truncated.safetensors"]
    assert "truncated" in reasons["truncated.ckpt"] or "corrupt" in reasons["truncated.ckpt"]
    assert "corrupt" in reasons["garbage.ckpt"]
    assert "LoRA" in reasons["lora.safetensors"]
    assert "builtins.exec" in reasons["evil.ckpt"] and "refusing" in reasons["evil.ckpt"]
    assert not target.exists()
    # unusable files are not offered in dropdowns and never become the default
    assert cat.checkpoint_titles() == ["good.safetensors"]
    assert cat.default_checkpoint().name == "good.safetensors"


def test_unknown_names_list_close_matches(sources, tmp_path):
    sd = tmp_path / "models" / "Stable-diffusion"
    _put(sources, "sd1.safetensors", sd / "dreamshaper_8.safetensors")
    _put(sources, "xl.safetensors", sd / "juggernautXL.safetensors")
    _put(sources, "vae.safetensors", tmp_path / "models" / "VAE" / "vae-ft-mse-840000.safetensors")
    cat = _catalog(tmp_path)
    with pytest.raises(UnknownModelError) as err:
        cat.find_checkpoint("dreamshaper_7.safetensors")
    assert err.value.kind == "checkpoint" and err.value.name == "dreamshaper_7.safetensors"
    assert err.value.close_matches[0] == "dreamshaper_8.safetensors"
    assert "dreamshaper_8.safetensors" in str(err.value)
    with pytest.raises(UnknownModelError) as err:
        cat.find_vae("vae-ft-mse")
    assert "vae-ft-mse-840000.safetensors" in err.value.close_matches
    with pytest.raises(UnknownModelError) as err:
        cat.find_checkpoint("zzzzqqqq")
    assert err.value.close_matches == [] and "zzzzqqqq" in str(err.value)


def test_lookup_by_title_name_stem_filename_and_hash(sources, tmp_path):
    sd = tmp_path / "models" / "Stable-diffusion"
    _put(sources, "sd1.safetensors", sd / "sub" / "model.safetensors")
    cat = _catalog(tmp_path)
    info = cat.ensure_hash(cat.find_checkpoint("sub/model.safetensors"))
    for query in (info.title, "sub/model.safetensors", "sub\\model.safetensors", "sub_model", "model.safetensors",
                  info.short_hash, info.sha256, f"sub/model.safetensors [{info.short_hash}]", "SUB/MODEL.SAFETENSORS",
                  f"renamed.safetensors [{info.short_hash}]"):
        assert cat.find_checkpoint(query).path == info.path, query


def test_vae_choices_and_automatic(sources, tmp_path):
    sd = tmp_path / "models" / "Stable-diffusion"
    ckpt_a = _put(sources, "sd1.safetensors", sd / "alpha.safetensors")
    _put(sources, "sd1.safetensors", sd / "beta.safetensors")
    _put(sources, "sd1.safetensors", sd / "gamma.safetensors")
    _put(sources, "vae.safetensors", sd / "alpha.vae.safetensors")  # beside the checkpoint
    _put(sources, "vae.pt", tmp_path / "models" / "VAE" / "beta.vae.pt")
    _put(sources, "vae.safetensors", tmp_path / "models" / "VAE" / "shared.safetensors")
    cat = _catalog(tmp_path)
    assert [c.name for c in cat.checkpoints()] == ["alpha.safetensors", "beta.safetensors", "gamma.safetensors"]
    assert cat.vae_choices() == ["Automatic", "None", "alpha.vae.safetensors", "beta.vae.pt", "shared.safetensors"]
    a, b, g = (cat.find_checkpoint(n) for n in ("alpha", "beta", "gamma"))
    assert cat.resolve_vae("Automatic", a).path == ckpt_a.with_name("alpha.vae.safetensors")
    assert cat.resolve_vae(None, b).name == "beta.vae.pt"
    assert cat.resolve_vae("Automatic", g) is None  # nothing named like it: the checkpoint's own
    assert cat.resolve_vae("None", a) is None
    assert cat.resolve_vae("shared.safetensors", a).name == "shared.safetensors"
    assert cat.resolve_vae("shared", a).name == "shared.safetensors"
    with pytest.raises(UnknownModelError):
        cat.resolve_vae("nope.safetensors", a)


def test_embedded_model_is_listed_and_default_only_without_files(sources, tmp_path):
    emb = tmp_path / "embedded" / "shapes64"
    for part in ("unet", "vae", "scheduler"):
        (emb / part).mkdir(parents=True)
    (emb / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    cat = ModelCatalog(Paths(data_dir=tmp_path), embedded_dir=emb)
    assert [(c.name, c.embedded, c.kind) for c in cat.checkpoints()] == [("shapes64", True, "diffusers")]
    assert cat.default_checkpoint().embedded
    (tmp_path / "models" / "Stable-diffusion").mkdir(parents=True)
    make_empty(tmp_path / "models" / "Stable-diffusion" / "broken.safetensors")
    cat.refresh()
    assert cat.default_checkpoint().embedded  # an unusable file does not take over
    _put(sources, "sd1.safetensors", tmp_path / "models" / "Stable-diffusion" / "real.safetensors")
    cat.refresh()
    assert cat.default_checkpoint().name == "real.safetensors"
    assert cat.checkpoints()[-1].embedded  # still listed, last


def test_missing_folders_give_an_empty_list(tmp_path):
    cat = _catalog(tmp_path / "nothing-here")
    assert cat.checkpoints() == [] and cat.vaes() == [] and cat.default_checkpoint() is None
