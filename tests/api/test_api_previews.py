"""Live previews of API jobs cost nothing unless someone watches them through /progress
(that they still come when a client polls is test_jobs.py's progress test)."""

from __future__ import annotations

BODY = {"prompt": "a red circle", "seed": 3, "steps": 4, "sampler_name": "Euler", "width": 64, "height": 64}


def _count_decodes(ctx, calls: list[int]):
    """A forward hook on the current model's real VAE decoder (previews of a small VAE decode too)."""
    return ctx.registry.get().vae.decoder.register_forward_hook(lambda _m, args, _out: calls.append(args[0].shape[0]))


def test_txt2img_renders_no_preview_nobody_asked_for(ctx, client):
    # this session shows previews every step (conftest): before, each step cost a preview decode
    calls: list[int] = []
    hook = _count_decodes(ctx, calls)
    try:
        response = client.post("/sdapi/v1/txt2img", json=BODY)
    finally:
        hook.remove()
    assert response.status_code == 200, response.text
    assert calls == [1]  # the image itself, nothing else
