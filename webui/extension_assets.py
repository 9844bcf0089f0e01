"""Extensions' `javascript/*.js`, `javascript/*.mjs` and `style.css` on the page, as A1111 adds them.

The page links each file through gradio's file route, and exactly those files (not their folders)
join gradio's allowed paths: nothing else in an extension's folder (its Python, its .git) can be
fetched, a path that climbs out of a listed file is refused by gradio, and the files sit behind
the UI's login like the rest of the page.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from modules.extensions.types import ExtensionCatalog

FILE_ROUTE = "gradio_api/file="  # relative: it follows the page's own root path


def asset_url(path: Path) -> str:
    resolved = path.resolve()
    try:
        version = f"?v={int(resolved.stat().st_mtime)}"  # a changed file is fetched again
    except OSError:
        version = ""
    return FILE_ROUTE + quote(resolved.as_posix(), safe="/:") + version


def served_files(catalog: ExtensionCatalog) -> list[str]:
    """The files the page links, resolved: what the server may hand out of extension folders."""
    files = [f.path for f in (*catalog.javascript, *catalog.javascript_modules)] + list(catalog.stylesheets)
    return [str(p.resolve()) for p in files if p.is_file()]


def head_html(catalog: ExtensionCatalog) -> str:
    """<script> and <link> tags in A1111's load order (scripts, modules, then stylesheets)."""
    parts = [f'<script type="text/javascript" src="{asset_url(f.path)}"></script>' for f in catalog.javascript]
    parts += [f'<script type="module" src="{asset_url(f.path)}"></script>' for f in catalog.javascript_modules]
    parts += [f'<link rel="stylesheet" property="stylesheet" href="{asset_url(p)}">' for p in catalog.stylesheets]
    return "\n".join(parts)
