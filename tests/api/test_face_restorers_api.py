"""GET /sdapi/v1/face-restorers over the real HTTP server: the installed restorers in A1111's
shape (name, cmd_dir), found through A1111's --gfpgan-models-path / --codeformer-models-path."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from modules.app_factory import build_paths
from modules.postprocess.services import Postprocessors
from tests.api.conftest import Server, make_args
from tests.face_model_files import write_restorer


@pytest.fixture(scope="module")
def restorer_server(ctx, data_dir, tmp_path_factory):
    """A server whose GFPGAN folder (--gfpgan-models-path) holds a GFPGANv1.4.pth with random
    weights, and whose Codeformer folder holds a corrupt codeformer.pth."""
    from modules.api import create_api_app

    root = tmp_path_factory.mktemp("face-restorer-folders")
    gfpgan_dir = write_restorer(root, "GFPGAN").parent
    codeformer_dir = root / "cf"
    codeformer_dir.mkdir()
    (codeformer_dir / "codeformer.pth").write_bytes(b"not a checkpoint")
    args = make_args(data_dir, "--gfpgan-models-path", str(gfpgan_dir), "--codeformer-models-path", str(codeformer_dir))
    post = Postprocessors(build_paths(args), ctx.settings, device="cpu")
    with Server(create_api_app(dataclasses.replace(ctx, args=args, postprocess=post))) as srv:
        yield srv, gfpgan_dir


def test_face_restorers_lists_the_installed_model_with_its_folder(restorer_server):
    srv, gfpgan_dir = restorer_server
    with httpx.Client(base_url=srv.url, timeout=30) as client:
        r = client.get("/sdapi/v1/face-restorers")
    assert r.status_code == 200
    # CodeFormer's file is corrupt and RestoreFormer's absent: neither is listed, and neither breaks the list
    assert r.json() == [{"name": "GFPGAN", "cmd_dir": str(gfpgan_dir.resolve())}]
