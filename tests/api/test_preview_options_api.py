"""`show_progress_type` over the API (issue 18): listed by GET /sdapi/v1/options with A1111's
default, checked by POST (a bad value is a 422 naming it), and followed by the next job, whose
live preview reaches /sdapi/v1/progress's current_image while it runs.

(That a preview arrives at all with the default setting is test_jobs.py's progress test.)
"""

from __future__ import annotations

import json

import pytest

from tests.api.helpers import decode, wait_for
from tests.api.test_jobs import Background, running

BODY = {"prompt": "a red circle", "steps": 40, "n_iter": 2, "sampler_name": "Euler", "width": 64,
        "height": 64, "send_images": False}


def locs(response) -> list[str]:
    return [".".join(str(p) for p in e["loc"]) for e in response.json()["detail"]]


def test_options_list_the_preview_method_and_refuse_a_bad_one(ctx, client):
    options = client.get("/sdapi/v1/options").json()
    assert options["show_progress_type"] == ctx.settings.get().show_progress_type == "Approx NN"
    r = client.post("/sdapi/v1/options", json={"show_progress_type": "Approx fancy"})
    assert r.status_code == 422 and locs(r) == ["body.show_progress_type"], r.text
    assert "Approx cheap" in r.text  # the message names the allowed values
    r = client.post("/sdapi/v1/options", json={"show_progress_type": 3})
    assert r.status_code == 422 and locs(r) == ["body.show_progress_type"], r.text
    assert client.get("/sdapi/v1/options").json()["show_progress_type"] == "Approx NN"


@pytest.mark.parametrize("kind", ["Full", "Approx cheap"])
def test_a_job_shows_its_preview_in_current_image(ctx, server, client, kind):
    before = ctx.settings.get().show_progress_type
    assert client.post("/sdapi/v1/options", json={"show_progress_type": kind}).status_code == 200
    try:
        assert client.get("/sdapi/v1/options").json()["show_progress_type"] == kind
        task = f"task-preview-{kind.split()[-1].lower()}"
        job = Background(server.url, "/sdapi/v1/txt2img", {**BODY, "force_task_id": task})
        wait_for(lambda: running(client, task))

        def preview():
            now = client.get("/sdapi/v1/progress", params={"id_task": task}).json()
            return now if now["status"] == "running" and now["current_image"] else None

        shown = wait_for(preview)
        image = decode(shown["current_image"])
        assert image.format == "PNG" and image.size == (64, 64)
        assert len(set(image.convert("RGB").getdata())) > 1  # a picture, not a blank
        assert client.post("/sdapi/v1/interrupt").status_code == 200
        response = job.result()
        assert response.status_code == 200, response.text
        assert json.loads(response.json()["info"])["interrupted"] is True
    finally:
        client.post("/sdapi/v1/options", json={"show_progress_type": before})
