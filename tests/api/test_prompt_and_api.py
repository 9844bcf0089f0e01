"""AND in the prompt (composable diffusion) through POST /sdapi/v1/txt2img, on the embedded model."""

from __future__ import annotations

import json

import numpy as np

from tests.api.helpers import decode

CIRCLE = "a red circle on a white background"
SQUARE = "a blue square on a white background"


def txt2img(client, prompt: str, **fields):
    response = client.post("/sdapi/v1/txt2img", json={"prompt": prompt, "steps": 3, "sampler_name": "Euler a",
                                                      "seed": 5, **fields})
    assert response.status_code == 200, response.text
    body = response.json()
    return body, json.loads(body["info"])


def px(b64: str) -> np.ndarray:
    return np.asarray(decode(b64).convert("RGB"), dtype=np.int16)


def test_txt2img_with_and_weights_and_png_info(client):
    alone, _ = txt2img(client, CIRCLE, batch_size=2)
    zero, _ = txt2img(client, f"{CIRCLE} AND {SQUARE}:0", batch_size=2)
    prompt = f"{CIRCLE} AND {SQUARE}:0.8"
    both, info = txt2img(client, prompt, batch_size=2)
    for a, z, b in zip(alone["images"], zero["images"], both["images"]):
        assert np.array_equal(px(a), px(z))  # a sub-prompt at weight 0 adds nothing
        assert np.abs(px(a) - px(b)).mean() > 1  # a second sub-prompt changes the picture
    assert info["prompt"] == prompt and info["all_prompts"] == [prompt] * 2
    assert info["infotexts"][0].splitlines()[0] == prompt

    parsed = client.post("/sdapi/v1/png-info", json={"image": both["images"][0]})
    assert parsed.status_code == 200, parsed.text
    assert parsed.json()["parameters"]["Prompt"] == prompt
