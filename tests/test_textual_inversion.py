"""Textual inversion (extensions-builtin/textual-inversion) through the real engine on the embedded
model and through the real API server.

The embeddings are made of real words: their vectors are the embedded model's own token embeddings
of "red circle" (or "blue square"), so a trigger word must draw exactly what those words draw, and
anything else (a wrong splice position, a lost emphasis weight, a stale cached encoding) changes
pixels.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPTokenizer

from modules.cmd_args import parse_args
from modules.extensions.startup import load_extensions
from modules.generation.request import GenerationRequest
from modules.infotext import parse_infotext
from modules.models.options import ModelOptions
from modules.models.registry import ModelRegistry
from modules.paths import EMBEDDED_MODEL_DIR, Paths
from modules.processing.conditioning import EmbeddingTable, PromptEmbedding, PromptEncoder
from modules.processing.engine import Engine
from modules.processing.prompt_chunks import CHUNK_LENGTH, TriggerWords, split_into_chunks
from modules.processing.prompt_parser import WeightedText
from modules.settings import SettingsStore
from tests.api.conftest import MODEL_A, Server
from tests.api.helpers import decode
from tests.tiny_text import tiny_sdxl_model

BASE = dict(seed=31, steps=3, sampler_name="Euler", cfg_scale=7.0, width=64, height=64, save_images=False)
TOKENIZER = CLIPTokenizer.from_pretrained(EMBEDDED_MODEL_DIR / "tokenizer")
TOKEN_TABLE = load_file(str(EMBEDDED_MODEL_DIR / "text_encoder" / "model.safetensors"))[
    "embeddings.token_embedding.weight"]


def word_vectors(words: str, table: torch.Tensor = TOKEN_TABLE) -> torch.Tensor:
    ids = TOKENIZER([words], add_special_tokens=False)["input_ids"][0]
    return table[ids].clone()


def save_pt(path: Path, vectors: torch.Tensor, step: int = 120) -> Path:
    """A1111's own layout (what its train tab writes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": path.stem, "step": step,
                "sd_checkpoint": "0123456789", "sd_checkpoint_name": "shapes64"}, path)
    return path


def save_safetensors(path: Path, vectors: torch.Tensor) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"emb_params": vectors.contiguous()}, str(path))
    return path


def save_diffusers_bin(path: Path, vectors: torch.Tensor) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({f"<{path.stem}>": vectors}, path)
    return path


def sha12(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def px(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


# ---------------------------------------------------------------------------------------------
# the engine with the repo's built-in extensions, on the embedded model


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("ti-engine")
    save_pt(root / "embeddings" / "redcirc.pt", word_vectors("red circle"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared CPU: more threads only fight each other
    paths, settings = Paths(data_dir=root), SettingsStore(None)
    loaded = load_extensions(paths, settings, parse_args(["--data-dir", str(root), "--use-cpu"]))
    engine = Engine(ModelRegistry(paths, ModelOptions(no_hashing=True)), settings, paths,
                    extensions=loaded.extension_set)
    yield root, engine, loaded.extension_set.get("textual-inversion")
    torch.set_num_threads(threads)


def run(engine: Engine, prompt: str, negative_prompt: str = ""):
    return engine.generate(GenerationRequest(prompt=prompt, negative_prompt=negative_prompt, **BASE))


@pytest.mark.parametrize("with_trigger, with_words", [
    (("a redcirc on a blue background", ""), ("a red circle on a blue background", "")),
    (("a (redcirc:1.6) on a blue background", ""), ("a (red circle:1.6) on a blue background", "")),
    (("a [square] on a green background", "redcirc"), ("a [square] on a green background", "red circle")),
], ids=["prompt", "emphasis", "negative"])
def test_trigger_word_draws_what_its_words_draw(app, with_trigger, with_words):
    root, engine, _ = app
    used = run(engine, *with_trigger)
    assert np.array_equal(px(used.images[0]), px(run(engine, *with_words).images[0]))
    params = parse_infotext(used.infotexts[0]).params
    assert params["TI hashes"] == f"redcirc: {sha12(root / 'embeddings' / 'redcirc.pt')}"


def test_an_unknown_name_is_plain_text(app):
    _, engine, _ = app
    plain = run(engine, "a redcirx on a blue background")
    assert not np.array_equal(px(plain.images[0]), px(run(engine, "a red circle on a blue background").images[0]))
    assert "TI hashes" not in parse_infotext(plain.infotexts[0]).params
    assert "TI hashes" not in parse_infotext(run(engine, "a red circle on a blue background").infotexts[0]).params


def test_each_file_form_loads_from_subfolders(app):
    root, engine, ext = app
    sub = root / "embeddings" / "forms" / "deeper"
    files = [save_pt(sub / "f-pt.pt", word_vectors("blue square")),
             save_safetensors(sub / "f-st.safetensors", word_vectors("blue square")),
             save_diffusers_bin(sub / "f-bin.bin", word_vectors("blue square"))]
    ext.refresh()
    words = px(run(engine, "a blue square on a red background").images[0])
    for f in files:
        result = run(engine, f"a {f.stem} on a red background")
        assert np.array_equal(px(result.images[0]), words), f.name
        assert parse_infotext(result.infotexts[0]).params["TI hashes"] == f"{f.stem}: {sha12(f)}"
    listed = ext.embeddings_response(ext.library.scan()).model_dump()["loaded"]
    assert listed["f-pt"] == {"step": 120, "sd_checkpoint": "0123456789", "sd_checkpoint_name": "shapes64",
                              "shape": 64, "vectors": 2}
    assert listed["f-st"]["vectors"] == listed["f-bin"]["vectors"] == 2


def test_cards_name_the_trigger_word_and_its_preview(app):
    root, _, ext = app
    (root / "embeddings" / "redcirc.preview.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    card = next(c for c in ext.network_cards() if c.name == "redcirc")
    assert (card.kind, card.prompt_text) == ("Textual Inversion", "redcirc")
    assert card.preview == str(root / "embeddings" / "redcirc.preview.png")
    assert card.metadata["vectors"] == 2


# ---------------------------------------------------------------------------------------------
# the seam: chunks, token counts, SDXL's two encoders


def test_an_embedding_counts_its_vectors_and_stays_in_one_chunk():
    tokenize = lambda texts: [[ord(c) for c in t.replace(" ", "")] for t in texts]  # noqa: E731
    triggers = TriggerWords({"xy": 5}, tokenize)
    text = "a" * (CHUNK_LENGTH - 2) + "xy" + "b"
    chunks, used = split_into_chunks([(tokenize([text])[0], WeightedText(text, 1.5))], comma_token=None,
                                     triggers=triggers)
    # 73 tokens, then the 5 vectors do not fit: they open the next chunk
    assert [len(c.tokens) for c in chunks] == [CHUNK_LENGTH - 2, 6]
    assert [(s.offset, s.name, s.vectors) for s in chunks[1].embeddings] == [(0, "xy", 5)]
    assert chunks[1].weights == [1.5] * 6 and used == CHUNK_LENGTH + 6


def test_token_count_and_sdxl_clip_l_clip_g(app, tmp_path):
    model = tiny_sdxl_model()
    encoder = PromptEncoder.from_model(model)
    tables = [e.get_input_embeddings().weight.detach() for e in encoder.text_encoders]
    path = tmp_path / "xlword.safetensors"
    save_file({"clip_l": word_vectors("red circle", tables[0]), "clip_g": word_vectors("red circle", tables[1])},
              str(path))
    save_file({"clip_l": word_vectors("red circle", tables[0])[:1], "clip_g": word_vectors("red", tables[1])},
              str(tmp_path / "other.safetensors"))

    from ti_library import EmbeddingLibrary  # the extension's module (on sys.path while it loads)

    files = EmbeddingLibrary([tmp_path]).scan().files
    xl = files["xlword"]
    assert (xl.is_xl, xl.widths, xl.shape, xl.count) == (True, (32, 32), 64, 2)
    table = EmbeddingTable([PromptEmbedding(f.name, f.vectors, f.sha256) for f in files.values()])
    with_trigger = encoder.encode("a (xlword:1.2) on blue", 1, embeddings=table)
    with_words = encoder.encode("a (red circle:1.2) on blue", 1)
    assert torch.equal(with_trigger.embeds, with_words.embeds)
    assert torch.equal(with_trigger.pooled, with_words.pooled)
    assert with_trigger.embeddings_used == {"xlword"}
    swapped = EmbeddingTable([PromptEmbedding("xlword", xl.vectors[::-1], "swapped")])
    assert not torch.equal(encoder.encode("a xlword on blue", 1, embeddings=swapped).embeds, with_words.embeds)
    assert encoder.count_tokens("a xlword", embeddings=table) == encoder.count_tokens("a red circle")
    assert encoder.count_tokens("a other", embeddings=table).used == 2  # one vector


# ---------------------------------------------------------------------------------------------
# the API, through the real server (flags parsed with the extensions' preload.py)


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    from modules.api.server import build_served_app
    from modules.app_factory import create_context
    from modules.extensions.preload import parse_args_with_extensions

    root = tmp_path_factory.mktemp("ti-api")
    extra = tmp_path_factory.mktemp("ti-extra")
    save_pt(root / "embeddings" / "redcirc.pt", word_vectors("red circle"))
    save_safetensors(extra / "narrow.safetensors", torch.randn(3, 32))  # made for a 32-wide text encoder
    (root / "models" / "hypernetworks" / "style").mkdir(parents=True)
    (root / "models" / "hypernetworks" / "style" / "ink.pt").write_bytes(b"x")
    args, preloaded = parse_args_with_extensions(["--data-dir", str(root), "--use-cpu", "--api", "--nowebui",
                                                  "--ckpt", MODEL_A, "--embeddings-dir", str(extra)])
    ctx = create_context(args, preloaded=preloaded)
    with Server(build_served_app(ctx)) as srv, httpx.Client(base_url=srv.url, timeout=120) as client:
        yield root, client
    ctx.queue.shutdown()


def txt2img(client, prompt: str):
    r = client.post("/sdapi/v1/txt2img", json={"prompt": prompt, **{k: v for k, v in BASE.items()
                                                                    if k != "save_images"}})
    assert r.status_code == 200, r.text
    body = r.json()
    return px(decode(body["images"][0])), json.loads(body["info"])


def test_api_lists_loaded_and_skipped_and_refresh_drops_the_old_encoding(api):
    root, client = api
    trigger, info = txt2img(client, "a redcirc on a blue background")
    assert np.array_equal(trigger, txt2img(client, "a red circle on a blue background")[0])
    assert f'TI hashes: "redcirc: {sha12(root / "embeddings" / "redcirc.pt")}"' in info["infotexts"][0]

    listed = client.get("/sdapi/v1/embeddings").json()
    assert listed["loaded"] == {"redcirc": {"step": 120, "sd_checkpoint": "0123456789",
                                            "sd_checkpoint_name": "shapes64", "shape": 64, "vectors": 2}}
    assert listed["skipped"] == {"narrow": {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None,
                                            "shape": 32, "vectors": 3}}
    assert client.get("/sdapi/v1/hypernetworks").json() == [
        {"name": "ink", "path": str(root / "models" / "hypernetworks" / "style" / "ink.pt")}]

    # the same name, new vectors: after a refresh the trigger draws the new words, not a cached encoding
    save_pt(root / "embeddings" / "redcirc.pt", word_vectors("blue square"), step=7)
    assert client.post("/sdapi/v1/refresh-embeddings").status_code == 200
    assert client.get("/sdapi/v1/embeddings").json()["loaded"]["redcirc"]["step"] == 7
    changed, info = txt2img(client, "a redcirc on a blue background")
    assert np.array_equal(changed, txt2img(client, "a blue square on a blue background")[0])
    assert not np.array_equal(changed, trigger)
    assert f'TI hashes: "redcirc: {sha12(root / "embeddings" / "redcirc.pt")}"' in info["infotexts"][0]
