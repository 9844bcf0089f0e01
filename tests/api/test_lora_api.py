"""The LoRA extension's routes and job warnings through the real server (the app loads
extensions-builtin/Lora at start-up), on the embedded model."""

from __future__ import annotations

import hashlib
import json

import torch
from safetensors.torch import save_file

FAST = {"prompt": "a red circle", "steps": 3, "sampler_name": "Euler", "seed": 4242}


def _embedded_te_lora() -> dict[str, torch.Tensor]:
    """A kohya LoRA for the embedded model's text encoder (width 64), first layer's q/v."""
    g = torch.Generator().manual_seed(0)
    sd = {}
    for proj in ("q_proj", "v_proj"):
        key = f"lora_te_text_model_encoder_layers_0_self_attn_{proj}"
        sd[f"{key}.lora_down.weight"] = torch.randn(4, 64, generator=g) * 0.3
        sd[f"{key}.lora_up.weight"] = torch.randn(64, 4, generator=g) * 0.3
        sd[f"{key}.alpha"] = torch.tensor(4.0)
    return sd


def test_loras_listed_after_refresh_and_used_by_a_job(client, data_dir):
    folder = data_dir / "models" / "Lora" / "api"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "api_te.safetensors"
    save_file(_embedded_te_lora(), str(path), metadata={"ss_output_name": "ApiTE", "ss_network_dim": "4"})

    assert "api_te" not in [x["name"] for x in client.get("/sdapi/v1/loras").json()]
    r = client.post("/sdapi/v1/refresh-loras")
    assert r.status_code == 200, r.text
    listed = {x["name"]: x for x in client.get("/sdapi/v1/loras").json()}
    assert listed["api_te"] == {"name": "api_te", "alias": "ApiTE", "path": str(path.resolve()),
                                "metadata": {"ss_output_name": "ApiTE", "ss_network_dim": "4"}}

    r = client.post("/sdapi/v1/txt2img", json={**FAST, "prompt": "a red circle <lora:api_te:1>",
                                               "negative_prompt": "<lora:no_such_lora:1>"})
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    raw = path.read_bytes()
    short = hashlib.sha256(raw[8 + int.from_bytes(raw[:8], "little"):]).hexdigest()[:12]
    assert f'Lora hashes: "api_te: {short}"' in info["infotexts"][0]
    assert any("LoRA not found: no_such_lora" in w for w in info["warnings"]), info["warnings"]
