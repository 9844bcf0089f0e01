"""The prompt row at the top of txt2img and img2img: prompts with token counters, Generate /
Interrupt / Skip, and the styles tools (dropdown, apply, edit and save from the current prompt)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import gradio as gr

from modules.styles import PromptStyle
from webui import token_counter
from webui.common import error, tool_button
from webui.env import UiEnv
from webui.loaded_extensions import loaded_extensions

log = logging.getLogger(__name__)
TRIGGERS_TTL_S = 5.0

PROMPT_PLACEHOLDER = "Prompt\n(Press Ctrl+Enter to generate, Alt+Enter to skip, Esc to interrupt)"
NEGATIVE_PLACEHOLDER = "Negative prompt\n(Press Ctrl+Enter to generate, Alt+Enter to skip, Esc to interrupt)"


@dataclass
class Toprow:
    tab: str
    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    prompt_tokens: gr.HTML
    negative_tokens: gr.HTML
    generate: gr.Button
    interrupt: gr.Button
    skip: gr.Button
    paste: gr.Button
    clear: gr.Button
    apply_styles: gr.Button
    edit_styles: gr.Button
    styles: gr.Dropdown
    style_editor: gr.Group
    style_name: gr.Textbox
    style_save: gr.Button
    style_delete: gr.Button
    style_message: gr.Markdown
    extra_networks: gr.Button  # 🎴 shows/hides the Extra Networks panel (webui/extra_networks.py)


def build(env: UiEnv, tab: str) -> Toprow:
    with gr.Row(elem_id=f"{tab}_toprow", elem_classes=["toprow"], equal_height=False):
        with gr.Column(scale=6, elem_id=f"{tab}_prompt_container", elem_classes=["prompt-container"]):
            with gr.Row(elem_classes=["prompt-row"]):
                prompt = env.component(
                    gr.Textbox, tab, "Prompt", value="", show_label=False, lines=3, max_lines=20,
                    placeholder=PROMPT_PLACEHOLDER, elem_id=f"{tab}_prompt", elem_classes=["prompt"],
                    container=False)
                prompt_tokens = gr.HTML("<span class='token-count'>0/75</span>", elem_id=f"{tab}_token_counter",
                                        elem_classes=["token-counter"], padding=False, js_on_load=None)
            with gr.Row(elem_classes=["prompt-row"]):
                negative_prompt = env.component(
                    gr.Textbox, tab, "Negative prompt", value="", show_label=False, lines=3, max_lines=20,
                    placeholder=NEGATIVE_PLACEHOLDER, elem_id=f"{tab}_neg_prompt", elem_classes=["prompt"],
                    container=False)
                negative_tokens = gr.HTML("<span class='token-count'>0/75</span>",
                                          elem_id=f"{tab}_negative_token_counter",
                                          elem_classes=["token-counter"], padding=False, js_on_load=None)
        with gr.Column(scale=1, min_width=260, elem_id=f"{tab}_actions_column"):
            with gr.Row(elem_id=f"{tab}_generate_box", elem_classes=["generate-box"]):
                interrupt = gr.Button("Interrupt", elem_id=f"{tab}_interrupt", variant="stop", visible=False)
                skip = gr.Button("Skip", elem_id=f"{tab}_skip", visible=False)
                generate = gr.Button("Generate", elem_id=f"{tab}_generate", variant="primary", size="lg")
            with gr.Row(elem_id=f"{tab}_tools", elem_classes=["tools-row"]):
                paste = tool_button("↙️", "Read generation parameters from the prompt (an infotext) into the UI",
                                    f"{tab}_paste")
                clear = tool_button("🗑️", "Clear prompt", f"{tab}_clear_prompt")
                apply_styles = tool_button("📋", "Apply the selected styles to the current prompt",
                                           f"{tab}_style_apply")
                edit_styles = tool_button("🖌️", "Edit styles: save the current prompt as a style",
                                          f"{tab}_style_edit")
                extra_networks = tool_button("🎴", "Show/hide extra networks", f"{tab}_extra_networks")
            styles = gr.Dropdown(label="Styles", choices=env.styles.names(), value=[], multiselect=True,
                                 elem_id=f"{tab}_styles", show_label=True)
            with gr.Group(visible=False, elem_id=f"{tab}_style_editor") as style_editor:
                style_name = gr.Textbox(label="Style name", elem_id=f"{tab}_style_name",
                                        placeholder="name for the current prompt + negative prompt")
                with gr.Row():
                    style_save = gr.Button("💾 Save style", elem_id=f"{tab}_style_save", size="sm")
                    style_delete = gr.Button("Delete style", elem_id=f"{tab}_style_delete", size="sm",
                                             variant="stop")
                style_message = gr.Markdown("", elem_id=f"{tab}_style_message")
    row = Toprow(tab, prompt, negative_prompt, prompt_tokens, negative_tokens, generate, interrupt, skip,
                 paste, clear, apply_styles, edit_styles, styles, style_editor, style_name, style_save,
                 style_delete, style_message, extra_networks)
    env.style_dropdowns.append(styles)
    return row


def wire(env: UiEnv, row: Toprow, steps: gr.Slider) -> None:
    """Events that stay inside the prompt row (counters, clear, styles)."""
    def counter(positive: bool):
        def count(prompt: str, steps_value: int) -> str:
            return token_counter.counter_html(prompt, steps_value, triggers=embedding_triggers(env), positive=positive)
        return count

    for box, tokens, positive in ((row.prompt, row.prompt_tokens, True),
                                  (row.negative_prompt, row.negative_tokens, False)):
        box.change(counter(positive), [box, steps], tokens, show_progress="hidden",
                   trigger_mode="always_last", concurrency_limit=None, queue=False)

    row.clear.click(lambda: ("", ""), None, [row.prompt, row.negative_prompt], show_progress="hidden",
                    queue=False)

    def apply_styles(prompt: str, negative: str, names: list[str]):
        try:
            new_prompt, new_negative = env.styles.apply(prompt or "", negative or "", names or [])
        except Exception as exc:
            raise error(exc)
        return new_prompt, new_negative, gr.Dropdown(value=[])

    row.apply_styles.click(apply_styles, [row.prompt, row.negative_prompt, row.styles],
                           [row.prompt, row.negative_prompt, row.styles], show_progress="hidden")

    editor_open = gr.State(False)

    def toggle_editor(is_open: bool, names: list[str]):
        name = names[-1] if names else ""
        return not is_open, gr.Group(visible=not is_open), gr.Textbox(value=name), ""

    row.edit_styles.click(toggle_editor, [editor_open, row.styles],
                          [editor_open, row.style_editor, row.style_name, row.style_message],
                          show_progress="hidden")


def wire_style_saving(env: UiEnv, row: Toprow) -> None:
    """Save/delete update the style dropdowns of every tab; call after all tabs are built."""
    dropdowns = list(env.style_dropdowns)

    def refreshed(selected_here: list[str]):
        names = env.styles.names()
        out = []
        for dd in dropdowns:
            if dd is row.styles:
                out.append(gr.Dropdown(choices=names, value=[s for s in selected_here or [] if s in names]))
            else:
                out.append(gr.Dropdown(choices=names))
        return out

    def save(name: str, prompt: str, negative: str, selected: list[str]):
        name = (name or "").strip()
        try:
            env.styles.save_style(PromptStyle(name, prompt or "", negative or ""))
        except Exception as exc:
            raise error(exc)
        gr.Info(f"Saved style {name!r}")
        return [f"Saved style **{name}** to `{env.styles.path}`", *refreshed(selected)]

    def delete(name: str, selected: list[str]):
        name = (name or "").strip()
        try:
            env.styles.delete_style(name)
        except Exception as exc:
            raise error(exc)
        return [f"Deleted style **{name}**", *refreshed([s for s in selected or [] if s != name])]

    row.style_save.click(save, [row.style_name, row.prompt, row.negative_prompt, row.styles],
                         [row.style_message, *dropdowns], show_progress="hidden")
    row.style_delete.click(delete, [row.style_name, row.styles], [row.style_message, *dropdowns],
                           show_progress="hidden")


def embedding_triggers(env: UiEnv):
    """Textual-inversion trigger words for the token counter, from the loaded extensions' cards
    (read again at most every few seconds: a keystroke must not rescan folders)."""
    now = time.monotonic()
    cached = env.embedding_triggers
    if cached is not None and now - cached[0] < TRIGGERS_TTL_S:
        return cached[1]
    cards = []
    for ext in loaded_extensions(env.ctx).extension_set:
        try:
            cards += ext.network_cards()
        except Exception:  # a broken extension must not break typing
            log.debug("network_cards of %s failed", ext.name, exc_info=True)
    triggers = token_counter.triggers_from_cards(cards)
    env.embedding_triggers = (now, triggers)
    return triggers
