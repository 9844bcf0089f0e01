"""The Extra Networks panel of txt2img and img2img (A1111's cards), shown and hidden by the prompt
row's 🎴 button.

Cards come from every loaded extension's `network_cards()` (webui/extra_network_cards.py draws
them); a radio picks the kind (the tabs: "Lora", "Textual Inversion"...), the search box filters,
Refresh calls each extension's `refresh()` first. A click on a card adds its prompt text to the
prompt in the browser (webui/assets/extra_networks.js), so a card click costs no server call.
Preview files are let through gradio's file route one by one as they are drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from webui.common import tool_button
from webui.env import UiEnv
from webui.extra_network_cards import CardSet, panel_html, preview_files, read_cards
from webui.loaded_extensions import loaded_extensions


@dataclass
class ExtraNetworksPanel:
    tab: str
    group: gr.Column
    opened: gr.State
    kind: gr.Radio
    search: gr.Textbox
    refresh: gr.Button
    cards: gr.HTML


def panel_id(tab: str) -> str:
    return f"{tab}_extra_networks_panel"  # the page script finds the tab's prompt from it


def build(env: UiEnv, tab: str) -> ExtraNetworksPanel:
    """The hidden panel (call inside the tab's layout, under the prompt row); filled when shown."""
    with gr.Column(visible=False, elem_id=panel_id(tab), elem_classes=["extra-networks"]) as group:
        with gr.Row(elem_classes=["extra-networks-controls"], equal_height=True):
            kind = gr.Radio(choices=[], value=None, show_label=False, container=False, elem_id=f"{tab}_extra_kind",
                            elem_classes=["extra-network-kinds"], scale=3)
            search = gr.Textbox(show_label=False, container=False, placeholder="Search...", max_lines=1,
                                elem_id=f"{tab}_extra_search", scale=2)
            refresh = tool_button("🔄", "Refresh: look for new and changed files", f"{tab}_extra_refresh")
        cards = gr.HTML("", elem_id=f"{tab}_extra_cards", js_on_load=None, padding=False)
    return ExtraNetworksPanel(tab, group, gr.State(False), kind, search, refresh, cards)


def current_cards(env: UiEnv, refresh: bool = False) -> CardSet:
    """The loaded extensions' cards; their preview files join the server's allowed files."""
    card_set = read_cards(loaded_extensions(env.ctx).extension_set, refresh=refresh)
    if env.blocks is not None:
        allowed = env.blocks.allowed_paths  # gradio reads this list on every file request
        allowed.extend(f for f in preview_files(card_set.cards) if f not in allowed)
    return card_set


def kind_choices(card_set: CardSet) -> list[tuple[str, str]]:
    return [(f"{kind} ({len(card_set.of_kind(kind))})", kind) for kind in card_set.kinds()]


def chosen_kind(card_set: CardSet, kind: Any) -> str:
    """The kind asked for while it still has cards, else the first kind ("" with no cards)."""
    kinds = card_set.kinds()
    return kind if kind in kinds else (kinds[0] if kinds else "")


def wire(env: UiEnv, panel: ExtraNetworksPanel, toggle: gr.Button) -> None:
    def view(card_set: CardSet, kind: Any, query: str) -> tuple[Any, str]:
        kind = chosen_kind(card_set, kind)
        return gr.Radio(choices=kind_choices(card_set), value=kind or None), panel_html(card_set, kind, query or "")

    def show_or_hide(opened: bool, kind: Any, query: str):
        if opened:
            return False, gr.Column(visible=False), gr.skip(), gr.skip()
        return True, gr.Column(visible=True), *view(current_cards(env), kind, query)

    def redraw(kind: Any, query: str) -> str:
        card_set = current_cards(env)
        return panel_html(card_set, chosen_kind(card_set, kind), query or "")

    def refresh(kind: Any, query: str):
        return view(current_cards(env, refresh=True), kind, query)

    toggle.click(show_or_hide, [panel.opened, panel.kind, panel.search],
                 [panel.opened, panel.group, panel.kind, panel.cards], show_progress="hidden",
                 api_visibility="private")
    for event in (panel.kind.input, panel.search.change):
        event(redraw, [panel.kind, panel.search], panel.cards, show_progress="hidden", queue=False,
              trigger_mode="always_last", api_visibility="private")
    panel.refresh.click(refresh, [panel.kind, panel.search], [panel.kind, panel.cards], show_progress="hidden",
                        api_visibility="private")


__all__ = ["ExtraNetworksPanel", "build", "wire", "current_cards", "kind_choices", "chosen_kind", "panel_id"]
