"""The Extra Networks panel without a browser: cards read from real extensions, grouped, searched,
and drawn as HTML that nothing from a file name or a file header can break out of. The browser
side is tests/ui/test_extra_networks_ui.py."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from modules.extensions.hooks import JobExtension, NetworkCard
from webui.extra_network_cards import (MAX_METADATA_VALUE, CardSet, card_html, matches, metadata_rows, panel_html,
                                       preview_files, preview_path, read_cards)

HOSTILE = '<img src=x onerror="alert(1)">&amp;\'"'
OUR_TAGS = {"div", "img", "span", "details", "summary", "table", "tr", "th", "td"}


class PageParts(HTMLParser):
    """Tags, attributes (as the browser decodes them) and text of an HTML fragment."""

    def __init__(self, fragment: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(fragment)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data):
        self.text.append(data)

    def attrs(self, cls: str) -> list[dict[str, str]]:
        return [a for _, a in self.tags if cls in a.get("class", "").split()]


def png(path: Path) -> Path:
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path)
    return path


class Listed(JobExtension):
    """An extension whose cards are what the test gives it; `refresh()` switches to the next list."""

    name = "listed"

    def __init__(self, *lists: list[NetworkCard]) -> None:
        self.lists = list(lists)
        self.refreshed = 0

    def refresh(self) -> None:
        self.refreshed += 1

    def network_cards(self) -> list[NetworkCard]:
        return self.lists[min(self.refreshed, len(self.lists) - 1)]


class Broken(JobExtension):
    name = "broken"
    title = "Broken Cards"

    def network_cards(self) -> list[NetworkCard]:
        raise OSError("models/Broken is not readable")


def test_names_descriptions_and_metadata_from_files_cannot_inject_html(tmp_path):
    card = NetworkCard(kind="Lora", name=HOSTILE, prompt_text=f"<lora:{HOSTILE}:1>", path=str(tmp_path / HOSTILE),
                       preview=str(png(tmp_path / "p.png")), description=HOSTILE,
                       metadata={HOSTILE: HOSTILE, "ss_network_dim": 4, "ss_tag_frequency": {"a<b>": {"c": 1}}})
    parts = PageParts(panel_html(CardSet((card,)), "Lora"))

    assert {tag for tag, _ in parts.tags} <= OUR_TAGS
    assert [a.get("src") for tag, a in parts.tags if tag == "img"] == [a["src"] for a in parts.attrs(
        "extra-network-preview")]  # the one <img> is our preview, not one from a name
    assert not any(k.startswith("on") for _, a in parts.tags for k in a)
    (shown,) = parts.attrs("extra-network-card")
    assert shown["data-prompt"] == f"<lora:{HOSTILE}:1>" and shown["data-name"] == HOSTILE  # decoded: exactly as given
    assert shown["title"] == str(tmp_path / HOSTILE)
    text = "".join(parts.text)
    assert text.count(HOSTILE) == 5  # name, description, popup title, metadata key and value, all as plain text
    assert "ss_network_dim" in text and '{"a<b>": {"c": 1}}' in text


def test_preview_only_for_existing_image_files(tmp_path):
    image = png(tmp_path / "thing.preview.png")
    model = tmp_path / "thing.safetensors"
    model.write_bytes(b"\0" * 16)

    def card(preview: str) -> NetworkCard:
        return NetworkCard(kind="Lora", name="thing", prompt_text="<lora:thing:1>", preview=preview)

    assert preview_path(card(str(image))) == image.resolve()
    assert preview_path(card(str(model))) is None  # never serve a model file as a "preview"
    assert preview_path(card(str(tmp_path / "gone.png"))) is None
    assert preview_path(card(str(tmp_path))) is None
    assert preview_path(card("")) is None
    cards = [card(str(image)), card(str(model)), card(str(image)), card("")]
    assert preview_files(cards) == [str(image.resolve())]  # exact files, once each; no folder

    (img,) = [a for tag, a in PageParts(card_html(cards[0])).tags if tag == "img"]
    assert img["src"].startswith("gradio_api/file=" + image.resolve().as_posix() + "?v=")
    assert not [t for t, _ in PageParts(card_html(cards[1])).tags if t == "img"]


def test_search_matches_name_and_search_terms_in_any_case():
    card = NetworkCard(kind="Lora", name="Pink_Hexagon", prompt_text="<lora:Pink_Hexagon:1>",
                       search_terms=("shapes/pink", "ss_output_name: hexa v2"))
    assert matches(card, "") and matches(card, "   ")
    assert matches(card, "hexagon") and matches(card, "PINK") and matches(card, "hexa v2")
    assert matches(card, "pink shapes")  # every word, wherever it is
    assert not matches(card, "circle") and not matches(card, "pink circle")


def test_cards_grouped_by_kind_and_filtered(tmp_path):
    cards = (NetworkCard("Lora", "red", "<lora:red:1>"), NetworkCard("Textual Inversion", "style", "style"),
             NetworkCard("Lora", "blue", "<lora:blue:1>", search_terms=("ocean",)))
    card_set = CardSet(cards)
    assert card_set.kinds() == ["Lora", "Textual Inversion"]
    assert [c.name for c in card_set.of_kind("Lora")] == ["red", "blue"]

    def names(kind: str, query: str = "") -> list[str]:
        return [a["data-name"] for a in PageParts(panel_html(card_set, kind, query)).attrs("extra-network-card")]

    assert names("Lora") == ["red", "blue"] and names("Textual Inversion") == ["style"]
    assert names("Lora", "OCEAN") == ["blue"]
    assert names("Lora", "green") == [] and "No Lora cards match “green”" in panel_html(card_set, "Lora", "green")
    assert "No extra networks" in panel_html(CardSet(), "")


def test_read_cards_refreshes_each_extension_and_names_one_that_fails():
    first = [NetworkCard("Lora", "a", "<lora:a:1>")]
    second = first + [NetworkCard("Lora", "b", "<lora:b:1>")]
    listed = Listed(first, second)
    card_set = read_cards([Broken(), listed, JobExtension()])
    assert [c.name for c in card_set.cards] == ["a"] and listed.refreshed == 0
    assert card_set.problems == ("Broken Cards: OSError: models/Broken is not readable",)
    assert "models/Broken is not readable" in panel_html(card_set, "Lora")

    refreshed = read_cards([listed], refresh=True)
    assert listed.refreshed == 1 and [c.name for c in refreshed.cards] == ["a", "b"]


def test_metadata_rows_sorted_as_text_and_cut_when_huge():
    rows = metadata_rows({"ss_network_dim": 4, "ss_base_model_version": "sd_v1", "ss_tags": ["x", "y"],
                          "ss_tag_frequency": "t" * (MAX_METADATA_VALUE + 10)})
    assert [k for k, _ in rows] == ["ss_base_model_version", "ss_network_dim", "ss_tag_frequency", "ss_tags"]
    assert rows[1][1] == "4" and rows[3][1] == '["x", "y"]'
    assert rows[2][1].startswith("t" * MAX_METADATA_VALUE + "…") and f"({MAX_METADATA_VALUE + 10} characters)" in rows[2][1]


def test_the_prompt_row_has_the_extra_networks_icon():
    from webui.icons import ICONS, icon_class

    assert icon_class("🎴") == "sd-icon-extra-networks" and "🎴" in ICONS


@pytest.mark.parametrize("kind, expected", [("Textual Inversion", "Textual Inversion"), ("Gone", "Lora"),
                                            (None, "Lora")])
def test_the_chosen_kind_falls_back_to_the_first(kind, expected):
    from webui.extra_networks import chosen_kind, kind_choices

    card_set = CardSet((NetworkCard("Lora", "red", "<lora:red:1>"), NetworkCard("Textual Inversion", "s", "s")))
    assert chosen_kind(card_set, kind) == expected
    assert chosen_kind(CardSet(), "Lora") == ""
    assert kind_choices(card_set) == [("Lora (1)", "Lora"), ("Textual Inversion (1)", "Textual Inversion")]
