"""The Extra Networks panel in a real browser, on the real app started by launch.py: a typed
extension in the data folder's extensions/ lists cards from its own folder; the 🎴 button shows
them, the preview is served (that file only), the metadata popup shows the header fields as text,
search filters, a click adds the card's tag to the prompt (a second click takes it out), and
Refresh picks up a file added while the app runs. The built-in Lora extension's cards show too."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect
from safetensors.numpy import save_file

from tests.extension_factory import make_extension
from tests.ui.conftest import PageLog, open_page, shot
from tests.ui.helpers import fill, tab, textbox
from tests.ui.test_extensions_ui import LaunchedApp

EXTENSION = "sample-networks"
INJECTION = '<img src=x onerror="window.SD_INJECTED = 1">'

# Cards are the files in the extension's cards/ folder: NAME.bin, with NAME.png as its preview and
# NAME.json as its metadata (A1111 reads ss_* fields from a safetensors header; a json file here).
SCRIPT = '''
import json
from pathlib import Path

from modules.extensions.hooks import JobExtension, NetworkCard

CARDS = Path(__file__).resolve().parent.parent / "cards"


class SampleNetworks(JobExtension):
    name = "sample_networks"
    cards = []

    def setup(self, env):
        self.refresh()

    def refresh(self):
        found = []
        for file in sorted(CARDS.glob("*.bin")):
            meta_file = file.with_suffix(".json")
            meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
            preview = file.with_suffix(".png")
            found.append(NetworkCard(kind="Sample", name=file.stem, prompt_text=f"<sample:{file.stem}:1>",
                                     path=str(file), preview=str(preview) if preview.exists() else "",
                                     description=meta.pop("description", ""), metadata=meta,
                                     search_terms=tuple(meta.get("tags", ()))))
        self.cards = found

    def network_cards(self):
        return list(self.cards)
'''


def add_card(cards: Path, name: str, metadata: dict | None = None, preview: bool = False) -> None:
    (cards / f"{name}.bin").write_bytes(b"not a real network")
    if metadata is not None:
        (cards / f"{name}.json").write_text(json.dumps(metadata), encoding="utf-8")
    if preview:
        Image.new("RGB", (32, 32), (220, 20, 20)).save(cards / f"{name}.png")


@pytest.fixture
def launched(tmp_path):
    folder = make_extension(tmp_path / "extensions", EXTENSION, {"scripts/sample_networks.py": SCRIPT})
    cards = folder / "cards"
    cards.mkdir()
    add_card(cards, "red_circle", {"description": "draws red circles", "ss_network_dim": 4,
                                   "ss_output_name": "red_circle", "ss_note": INJECTION}, preview=True)
    add_card(cards, "blue_square", {"tags": ["ocean"]})
    add_lora(tmp_path / "models" / "Lora" / "shapes")
    app = LaunchedApp(tmp_path)
    yield app, cards
    app.stop()


def add_lora(folder: Path) -> None:
    """A kohya LoRA file (one layer, rank 1) with ss_* metadata and a preview, for the built-in Lora extension."""
    folder.mkdir(parents=True)
    zeros = np.zeros((1, 4), dtype=np.float32)
    save_file({"lora_unet_mid_block_attentions_0_proj_in.lora_down.weight": zeros,
               "lora_unet_mid_block_attentions_0_proj_in.lora_up.weight": zeros.T.copy(),
               "lora_unet_mid_block_attentions_0_proj_in.alpha": np.ones((), dtype=np.float32)},
              str(folder / "pink_lora.safetensors"),
              metadata={"ss_network_dim": "1", "ss_output_name": "pink_lora", "ss_base_model_version": "sd_v1"})
    Image.new("RGB", (32, 32), (240, 120, 200)).save(folder / "pink_lora.preview.png")


def card(page, tab_name: str, name: str):
    return page.locator(f"#{tab_name}_extra_networks_panel .extra-network-card[data-name='{name}']")


def shown_cards(page, tab_name: str = "txt2img") -> list[str]:
    return page.locator(f"#{tab_name}_extra_networks_panel .extra-network-card").evaluate_all(
        "cards => cards.map(c => c.dataset.name)")


def open_panel(page, tab_name: str) -> None:
    page.locator(f"#{tab_name}_extra_networks").click()
    page.locator(f"#{tab_name}_extra_networks_panel").wait_for(state="visible")
    page.locator(f"#{tab_name}_extra_kind label").filter(has_text="Sample (").click()
    card(page, tab_name, "red_circle").wait_for(state="visible")


def test_extra_networks_panel(browser, launched):
    app, cards = launched
    app.wait_up()
    log = PageLog()
    page = open_page(browser, app.url, log)
    try:
        panel = page.locator("#txt2img_extra_networks_panel")
        assert not panel.is_visible()  # hidden until the 🎴 button
        open_panel(page, "txt2img")
        expect(page.locator("#txt2img_extra_kind")).to_contain_text("Sample (2)")
        assert shown_cards(page) == ["blue_square", "red_circle"]

        # the preview is the file itself, through gradio's file route; its model file and folder are not served
        red = card(page, "txt2img", "red_circle")
        image = red.locator("img.extra-network-preview")
        page.wait_for_function("img => img.complete && img.naturalWidth === 32", arg=image.element_handle())
        src = image.get_attribute("src")
        assert httpx.get(app.url + src, timeout=10).content == (cards / "red_circle.png").read_bytes()
        route = app.url + "gradio_api/file=" + cards.resolve().as_posix()
        assert httpx.get(route + "/red_circle.bin", timeout=10).status_code == 403
        assert httpx.get(route, timeout=10).status_code == 403
        assert card(page, "txt2img", "blue_square").locator("img").count() == 0  # no preview, no image

        # metadata popup: the header fields as plain text; opening it does not touch the prompt
        red.locator(".extra-network-metadata summary").click()
        popup = red.locator(".extra-network-metadata-body")
        expect(popup).to_be_visible()
        expect(popup).to_contain_text("ss_network_dim")
        expect(popup).to_contain_text(INJECTION)
        assert page.evaluate("window.SD_INJECTED") is None
        red.locator(".extra-network-metadata summary").click()
        expect(popup).to_be_hidden()
        assert textbox(page, "txt2img_prompt") == ""

        # search by name and by search terms, in any case
        fill(page, "txt2img_extra_search", "OCEAN")
        page.wait_for_function("() => document.querySelectorAll('#txt2img_extra_networks_panel "
                               ".extra-network-card').length === 1")
        assert shown_cards(page) == ["blue_square"]
        fill(page, "txt2img_extra_search", "red")
        page.wait_for_function("() => document.querySelector('#txt2img_extra_networks_panel "
                               ".extra-network-card')?.dataset.name === 'red_circle'")
        assert shown_cards(page) == ["red_circle"]
        fill(page, "txt2img_extra_search", "")
        card(page, "txt2img", "blue_square").wait_for(state="visible")

        # a click adds the tag at the end of the prompt; a second click takes it out
        fill(page, "txt2img_prompt", "a picture")
        card(page, "txt2img", "red_circle").click()
        assert textbox(page, "txt2img_prompt") == "a picture <sample:red_circle:1>"
        card(page, "txt2img", "blue_square").click()
        assert textbox(page, "txt2img_prompt") == "a picture <sample:red_circle:1> <sample:blue_square:1>"
        card(page, "txt2img", "red_circle").click()
        assert textbox(page, "txt2img_prompt") == "a picture <sample:blue_square:1>"
        page.locator("#txt2img_prompt textarea").blur()
        expect(page.locator("#txt2img_token_counter")).to_contain_text("2/75")  # gradio got the new value

        # Refresh picks up a file added while the app runs (the extension's refresh() scans again)
        add_card(cards, "green_triangle", {"ss_network_dim": 8}, preview=True)
        page.locator("#txt2img_extra_refresh").click()
        card(page, "txt2img", "green_triangle").wait_for(state="visible")
        expect(page.locator("#txt2img_extra_kind")).to_contain_text("Sample (3)")
        new_image = card(page, "txt2img", "green_triangle").locator("img.extra-network-preview")
        page.wait_for_function("img => img.complete && img.naturalWidth === 32", arg=new_image.element_handle())

        # the built-in Lora extension's cards: a file in models/Lora (a sub-folder) with its preview and ss_* fields
        page.locator("#txt2img_extra_kind label").filter(has_text="Lora (").click()
        lora = card(page, "txt2img", "pink_lora")
        lora.wait_for(state="visible")
        lora_image = lora.locator("img.extra-network-preview")
        page.wait_for_function("img => img.complete && img.naturalWidth === 32", arg=lora_image.element_handle())
        lora.locator(".extra-network-metadata summary").click()
        expect(lora.locator(".extra-network-metadata-body")).to_contain_text("ss_base_model_version")
        lora.locator(".extra-network-metadata summary").click()
        card(page, "txt2img", "pink_lora").click()
        assert textbox(page, "txt2img_prompt") == "a picture <sample:blue_square:1> <lora:pink_lora:1>"
        card(page, "txt2img", "pink_lora").click()
        assert textbox(page, "txt2img_prompt") == "a picture <sample:blue_square:1>"

        page.locator("#txt2img_extra_networks").click()
        expect(panel).to_be_hidden()

        # img2img has its own panel, writing into its own prompt
        tab(page, "img2img")
        open_panel(page, "img2img")
        card(page, "img2img", "green_triangle").click()
        assert textbox(page, "img2img_prompt") == "<sample:green_triangle:1>"
        assert textbox(page, "txt2img_prompt") == "a picture <sample:blue_square:1>"
        shot(page, "extra_networks_panel")
        log.check()
    finally:
        page.context.close()
