// Extra Networks cards (webui/extra_networks.py), loaded once in <head>: a click on a card adds its
// prompt text to the end of that tab's prompt, after a space; a second click on a card whose tag is
// already there takes it out again (as A1111 does). "<lora:name:0.8>" counts as there whatever its
// weights, so a tag whose weight was edited by hand is still found. Clicks inside a card's metadata
// popup only open or close the popup.
(function () {
    "use strict";

    const PANEL_SUFFIX = "_extra_networks_panel";
    const SEPARATOR = " ";

    function escapeRegExp(text) {
        return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    }

    // What finds `text` in a prompt: a tag by its kind and name, other text as a whole word or phrase.
    function finder(text) {
        const tag = /^<([^:>]+):([^:>]+)(?::[^>]*)?>$/.exec(text);
        const body = tag
            ? "<" + escapeRegExp(tag[1]) + ":" + escapeRegExp(tag[2]) + "(?::[^>]*)?>"
            : "(?<![\\w])" + escapeRegExp(text) + "(?![\\w])";
        return new RegExp("\\s*" + body);
    }

    function toggled(prompt, text) {
        const found = finder(text).exec(prompt);
        if (found) {
            const rest = prompt.slice(0, found.index) + prompt.slice(found.index + found[0].length);
            return found.index === 0 ? rest.replace(/^\s+/, "") : rest;
        }
        return prompt.trim() === "" ? text : prompt.replace(/\s+$/, "") + SEPARATOR + text;
    }

    document.addEventListener("click", function (event) {
        const target = event.target;
        if (!(target instanceof Element) || target.closest(".extra-network-metadata")) return;
        const card = target.closest(".extra-network-card[data-prompt]");
        const panel = card && card.closest("[id$='" + PANEL_SUFFIX + "']");
        if (!panel) return;
        const tab = panel.id.slice(0, -PANEL_SUFFIX.length);
        const textarea = document.querySelector("#" + tab + "_prompt textarea");
        if (!textarea) return;
        textarea.value = toggled(textarea.value, card.dataset.prompt);
        textarea.dispatchEvent(new Event("input", { bubbles: true }));  // gradio reads the new value
    });
})();
