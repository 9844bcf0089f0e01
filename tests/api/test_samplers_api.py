"""Samplers, schedule types and A1111's eta / s_* fields through the real HTTP API."""

from __future__ import annotations

import json

import pytest

from modules.infotext import parse_infotext

FAST = {"prompt": "a red circle", "steps": 3, "seed": 9}

# A1111 1.10's GET /sdapi/v1/schedulers, name -> (label, aliases, default_rho, need_inner_model)
A1111_SCHEDULERS = {
    "automatic": ("Automatic", None, -1, False), "uniform": ("Uniform", None, -1, True),
    "karras": ("Karras", None, 7.0, False), "exponential": ("Exponential", None, -1, False),
    "polyexponential": ("Polyexponential", None, 1.0, False),
    "sgm_uniform": ("SGM Uniform", ["SGMUniform"], -1, True), "kl_optimal": ("KL Optimal", None, -1, False),
    "align_your_steps": ("Align Your Steps", None, -1, False), "simple": ("Simple", None, -1, True),
    "normal": ("Normal", None, -1, True), "ddim": ("DDIM", None, -1, True), "beta": ("Beta", None, -1, True),
}


def post(client, **fields):
    return client.post("/sdapi/v1/txt2img", json={**FAST, **fields})


def test_schedulers_list_is_a1111s(client):
    items = client.get("/sdapi/v1/schedulers").json()
    assert [i["name"] for i in items] == list(A1111_SCHEDULERS)
    for item in items:
        assert (item["label"], item["aliases"], item["default_rho"], item["need_inner_model"]) == \
            A1111_SCHEDULERS[item["name"]]


def test_new_samplers_are_listed(client):
    names = [i["name"] for i in client.get("/sdapi/v1/samplers").json()]
    for name in ("DPM++ 2M SDE Heun", "DPM fast", "DPM adaptive", "Restart", "DDIM CFG++"):
        assert name in names


def test_euler_a_with_karras_is_200(client):
    response = post(client, sampler_name="Euler a", scheduler="Karras")
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert "Sampler: Euler a, Schedule type: Karras" in info["infotexts"][0]


@pytest.mark.parametrize("scheduler", ["align_your_steps", "kl_optimal", "normal", "simple", "ddim",
                                       "polyexponential"])
def test_api_schedule_names_clients_send(client, scheduler):
    response = post(client, sampler_name="DPM++ 2M", scheduler=scheduler)
    assert response.status_code == 200, response.text


def test_eta_and_s_fields_are_applied_not_reported_as_ignored(client):
    response = post(client, sampler_name="Euler a", eta=0.5)
    info = json.loads(response.json()["info"])
    assert not any("not applied" in w for w in info.get("warnings", []))
    assert parse_infotext(info["infotexts"][0]).params["Eta"] == "0.5"
    churned = json.loads(post(client, sampler_name="Euler", s_churn=2.5).json()["info"])
    assert parse_infotext(churned["infotexts"][0]).params["Sigma churn"] == "2.5"
    assert response.json()["images"][0] != post(client, sampler_name="Euler a").json()["images"][0]


@pytest.mark.parametrize("field, value", [("eta", 3), ("s_churn", 500), ("s_noise", -1)])
def test_out_of_range_sampler_fields_are_422_naming_the_field(client, field, value):
    response = post(client, sampler_name="Euler", **{field: value})
    assert response.status_code == 422
    assert field in response.text
    assert client.get("/sdapi/v1/schedulers").status_code == 200  # still serving
