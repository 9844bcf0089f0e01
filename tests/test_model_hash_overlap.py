"""A checkpoint's sha256 is read beside its load and at start-up, never twice at once, and the
loaded model still carries the title and short hash A1111 clients expect."""

from __future__ import annotations

import hashlib
import threading

from modules.models import hashing
from modules.models.hashing import HashCache, Hasher
from modules.models.registry import ModelRegistry
from modules.paths import Paths
from tests.checkpoint_factory import make_checkpoint


def test_concurrent_requests_for_one_hash_share_one_read(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"x" * 3_000_000)
    reads = []
    gate = threading.Event()
    real = hashing.sha256_file

    def counted(p, progress=None):
        reads.append(p)
        gate.wait(10)  # hold the first read open until every caller asked
        return real(p, progress)

    monkeypatch.setattr(hashing, "sha256_file", counted)
    hasher = Hasher(HashCache(tmp_path / "cache.json"))
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(hasher.sha256(path))) for _ in range(4)]
    for thread in threads:
        thread.start()
    while not reads:
        threading.Event().wait(0.01)
    threading.Event().wait(0.2)
    gate.set()
    for thread in threads:
        thread.join(10)
    assert len(reads) == 1
    assert answers == [hashlib.sha256(path.read_bytes()).hexdigest()] * 4


def test_load_with_the_hash_read_beside_it_has_the_hashed_title(tmp_path):
    folder = tmp_path / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    make_checkpoint(folder / "one.safetensors", "sd1")
    sha = hashlib.sha256((folder / "one.safetensors").read_bytes()).hexdigest()
    registry = ModelRegistry(Paths(data_dir=tmp_path))
    registry.prefetch_hash()  # start-up: in the background
    model = registry.get()
    assert model.short_hash == sha[:10]
    assert model.title == f"one.safetensors [{sha[:10]}]" == registry.current_title()
    assert HashCache(tmp_path / "cache.json").get(folder / "one.safetensors") == sha
