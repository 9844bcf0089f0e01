"""The Extra Networks panel's data and HTML, without gradio: cards read from the loaded extensions,
grouped by kind, filtered by the search box, and drawn as A1111-style cards.

Every text that reaches the page (names, descriptions, metadata keys and values, the prompt text a
click adds) comes from file names and file headers, so all of it is HTML-escaped here, in one place.
A preview is shown only when it is an image file; its URL is gradio's file route, and the page lets
exactly those files through (`preview_files`), never their folders.
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from modules.extensions.hooks import JobExtension, NetworkCard
from webui.extension_assets import asset_url

log = logging.getLogger("webui")

PREVIEW_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"})
MAX_METADATA_VALUE = 2000  # ss_tag_frequency and friends can be megabytes; the popup shows the start


@dataclass(frozen=True)
class CardSet:
    """Every card the loaded extensions list, in their order, and the extensions that failed to list."""

    cards: tuple[NetworkCard, ...] = ()
    problems: tuple[str, ...] = ()

    def kinds(self) -> list[str]:
        """The tabs, in the order their first card came."""
        return list(dict.fromkeys(card.kind for card in self.cards))

    def of_kind(self, kind: str) -> list[NetworkCard]:
        return [card for card in self.cards if card.kind == kind]


def read_cards(extensions: Iterable[JobExtension], refresh: bool = False) -> CardSet:
    """Each extension's `network_cards()` (after `refresh()` when asked); one that raises is named in
    `problems` and the others still show."""
    cards: list[NetworkCard] = []
    problems: list[str] = []
    for ext in extensions:
        try:
            if refresh:
                ext.refresh()
            found = list(ext.network_cards() or ())
        except Exception as exc:  # noqa: BLE001 - one broken extension must not empty the panel
            log.exception("extension %r: listing its extra networks failed", ext.name)
            problems.append(f"{ext.label}: {type(exc).__name__}: {exc}")
            continue
        cards.extend(c for c in found if isinstance(c, NetworkCard))
    return CardSet(tuple(cards), tuple(problems))


def search_text(card: NetworkCard) -> str:
    return "\n".join((card.name, *card.search_terms)).lower()


def matches(card: NetworkCard, query: str) -> bool:
    """Every word of the query is part of the card's name or one of its search terms (any case)."""
    text = search_text(card)
    return all(word in text for word in (query or "").lower().split())


def preview_path(card: NetworkCard) -> Path | None:
    """The card's preview as a resolved image file, or None (no preview, missing, not an image)."""
    if not card.preview:
        return None
    path = Path(card.preview)
    if path.suffix.lower() not in PREVIEW_SUFFIXES:
        return None
    try:
        path = path.resolve()
        return path if path.is_file() else None
    except OSError:
        return None


def preview_files(cards: Iterable[NetworkCard]) -> list[str]:
    """The exact files the server may hand out for these cards' previews."""
    return list(dict.fromkeys(str(p) for p in map(preview_path, cards) if p is not None))


def metadata_rows(metadata: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, value as text) sorted by key; long values are cut (a header can hold megabytes)."""
    rows = []
    for key in sorted(metadata, key=str):
        value = metadata[key]
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        if len(text) > MAX_METADATA_VALUE:
            text = text[:MAX_METADATA_VALUE] + f"… ({len(text)} characters)"
        rows.append((str(key), text))
    return rows


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _metadata_html(card: NetworkCard) -> str:
    if not card.metadata:
        return ""
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in metadata_rows(card.metadata))
    return ("<details class='extra-network-metadata'><summary title='Show metadata'>i</summary>"
            f"<div class='extra-network-metadata-body'><div class='extra-network-metadata-title'>{_e(card.name)}"
            f"</div><table>{rows}</table></div></details>")


def card_html(card: NetworkCard) -> str:
    """One card: preview (or a plain face), name, description, metadata popup. The page script adds
    `data-prompt` to the prompt on a click (webui/assets/extra_networks.js)."""
    preview = preview_path(card)
    image = (f"<img class='extra-network-preview' src='{_e(asset_url(preview))}' alt='' loading='lazy'>"
             if preview else "<div class='extra-network-preview extra-network-no-preview'></div>")
    description = f"<div class='extra-network-description'>{_e(card.description)}</div>" if card.description else ""
    return (f"<div class='extra-network-card' data-name='{_e(card.name)}' data-prompt='{_e(card.prompt_text)}' "
            f"title='{_e(card.path or card.name)}'>{image}{_metadata_html(card)}"
            f"<div class='extra-network-actions'><span class='extra-network-name'>{_e(card.name)}</span>"
            f"{description}</div></div>")


def panel_html(card_set: CardSet, kind: str, query: str = "") -> str:
    """The cards of one kind that match the search, or a line saying why there are none."""
    notes = "".join(f"<div class='extra-network-problem'>{_e(p)}</div>" for p in card_set.problems)
    if not card_set.cards:
        body = ("<div class='extra-network-empty'>No extra networks: put LoRA files in models/Lora and embeddings "
                "in embeddings/, then press Refresh.</div>")
    elif shown := [c for c in card_set.of_kind(kind) if matches(c, query)]:
        body = "".join(card_html(c) for c in shown)
    else:
        wanted = f" match “{_e(query.strip())}”" if query.strip() else ""
        body = f"<div class='extra-network-empty'>No {_e(kind)} cards{wanted}.</div>"
    return f"<div class='extra-network-cards' data-kind='{_e(kind)}'>{notes}{body}</div>"


__all__ = ["CardSet", "read_cards", "matches", "search_text", "preview_path", "preview_files", "metadata_rows",
           "card_html", "panel_html", "PREVIEW_SUFFIXES"]
