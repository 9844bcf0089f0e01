"""Start the web UI (and/or the A1111-compatible API) on 127.0.0.1:7860 by default.

    python launch.py [--listen] [--port 7860] [--api | --nowebui] [--share] ...   (see --help)
    python launch.py --ray [ADDRESS] [--ray-replicas N] ...   the engine on Ray Serve replicas
"""

from __future__ import annotations

import logging
import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # extensions' preload.py may add flags, so they are found before the flags are parsed
    from modules.extensions.preload import parse_args_with_extensions

    args, preloaded = parse_args_with_extensions(argv)
    from modules.remote_access import startup_warnings

    for warning in startup_warnings(args):  # before the slow start, where a user still watches
        print(warning, flush=True)
    from modules.app_factory import create_context
    from modules.extensions.startup import app_started

    remote = None
    if args.ray is not None:  # scale-out: the engine runs on Ray Serve replicas (modules/serve/)
        from modules.serve.launcher import start_ray

        remote = start_ray(args)
    ctx = create_context(args, preloaded=preloaded, remote=remote)
    ctx.registry.prefetch_hash()  # the default model's sha256 in the background, off the first job's path
    if args.nowebui:
        from modules.api.server import serve_api

        serve_api(ctx)
        return
    from webui.app import launch_ui

    def add_api(app) -> None:
        mount_api(app, ctx)

    if args.api:
        # gradio builds its FastAPI app inside launch(), so the routes join right after it starts;
        # importing the API first keeps that gap to a moment.
        from modules.api import mount_api
        import modules.api.routes  # noqa: F401
    demo = launch_ui(ctx, on_app=add_api if args.api else None, allow_restart=True)
    app_started(demo, demo.app)  # A1111's on_app_started: after the API joined the app
    demo.block_thread()


if __name__ == "__main__":
    main(sys.argv[1:])
