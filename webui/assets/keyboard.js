// Keyboard shortcuts and small page helpers for the web UI (loaded once in <head>).
//   Ctrl+Enter  generate in the visible tab        Alt+Enter  skip      Esc  interrupt
//   Ctrl+Up / Ctrl+Down in a prompt: change the emphasis of the selected words (or the word at the
//   cursor): "word" -> "(word:1.1)" -> "(word:1.2)"; back at 1.0 the brackets go away.
(function () {
    "use strict";

    const EMPHASIS_STEP = 0.1;
    const WORD_DELIMITERS = ".,\\/!?%^*;:{}=`~() \r\n\t";

    function visible(el) {
        return !!el && el.offsetParent !== null;
    }

    function activeTab() {
        for (const tab of ["txt2img", "img2img"]) {
            if (visible(document.getElementById(tab + "_generate")) || visible(document.getElementById(tab + "_interrupt"))) {
                return tab;
            }
        }
        return null;
    }

    function clickButton(id) {
        const el = document.getElementById(id);
        if (!visible(el)) return false;
        const button = el.tagName === "BUTTON" ? el : el.querySelector("button") || el;
        button.click();
        return true;
    }

    function isPrompt(target) {
        return target && target.tagName === "TEXTAREA" && !!target.closest(".prompt");
    }

    // Select the (...) group around the cursor, without its weight: "(a b:1.2)" -> "a b".
    function selectBracketGroup(text, pos) {
        let depth = 0;
        let open = -1;
        for (let i = pos - 1; i >= 0; i--) {
            if (text[i] === ")") depth++;
            else if (text[i] === "(") {
                if (depth === 0) { open = i; break; }
                depth--;
            }
        }
        if (open < 0) return null;
        depth = 0;
        let close = -1;
        for (let i = pos; i < text.length; i++) {
            if (text[i] === "(") depth++;
            else if (text[i] === ")") {
                if (depth === 0) { close = i; break; }
                depth--;
            }
        }
        if (close < 0) return null;
        const inner = text.slice(open + 1, close);
        const colon = inner.lastIndexOf(":");
        const end = colon >= 0 && /^\s*[-+]?[\d.]+\s*$/.test(inner.slice(colon + 1)) ? open + 1 + colon : close;
        return [open + 1, end];
    }

    function selectWord(text, pos) {
        let start = pos;
        let end = pos;
        while (start > 0 && !WORD_DELIMITERS.includes(text[start - 1])) start--;
        while (end < text.length && !WORD_DELIMITERS.includes(text[end])) end++;
        return start === end ? null : [start, end];
    }

    function formatWeight(w) {
        const rounded = Math.round(w * 100) / 100;
        return Number.isInteger(rounded) ? rounded.toFixed(1) : String(rounded);
    }

    // Pure function (exported for tests): new [text, selStart, selEnd] or null when nothing to do.
    function editEmphasis(text, selStart, selEnd, up) {
        if (selStart === selEnd) {
            const range = selectBracketGroup(text, selStart) || selectWord(text, selStart);
            if (!range) return null;
            [selStart, selEnd] = range;
        }
        while (selEnd > selStart && text[selEnd - 1] === " ") selEnd--;
        while (selStart < selEnd && text[selStart] === " ") selStart++;
        if (selStart === selEnd) return null;

        const delta = up ? EMPHASIS_STEP : -EMPHASIS_STEP;
        // Already "(selection:weight)"?
        if (selStart > 0 && text[selStart - 1] === "(") {
            const rest = text.slice(selEnd);
            const m = rest.match(/^:\s*([-+]?[\d.]+)\s*\)/);
            if (m) {
                const weight = parseFloat(m[1]) + delta;
                const inner = text.slice(selStart, selEnd);
                const after = text.slice(selEnd + m[0].length);
                if (Math.abs(weight - 1.0) < 1e-6) {
                    const t = text.slice(0, selStart - 1) + inner + after;
                    return [t, selStart - 1, selEnd - 1];
                }
                const t = text.slice(0, selEnd) + ":" + formatWeight(weight) + ")" + after;
                return [t, selStart, selEnd];
            }
            if (rest[0] === ")") {  // "(word)" is 1.1 in A1111 syntax
                const weight = 1.1 + delta;
                const t = text.slice(0, selEnd) + ":" + formatWeight(weight) + text.slice(selEnd);
                return [t, selStart, selEnd];
            }
        }
        const weight = 1.0 + delta;
        const t = text.slice(0, selStart) + "(" + text.slice(selStart, selEnd) + ":" + formatWeight(weight) + ")" + text.slice(selEnd);
        return [t, selStart + 1, selEnd + 1];
    }

    function setTextareaValue(target, text, selStart, selEnd) {
        target.focus();
        target.value = text;
        target.setSelectionRange(selStart, selEnd);
        // Let gradio (svelte bind:value) see the change.
        target.dispatchEvent(new Event("input", { bubbles: true }));
    }

    function onKeyDown(event) {
        const target = event.composedPath ? event.composedPath()[0] : event.target;
        const mod = event.ctrlKey || event.metaKey;
        if (mod && event.key === "Enter") {
            const tab = activeTab();
            if (tab && clickButton(tab + "_generate")) event.preventDefault();
            return;
        }
        if (event.altKey && event.key === "Enter") {
            const tab = activeTab();
            if (tab && clickButton(tab + "_skip")) event.preventDefault();
            return;
        }
        if (event.key === "Escape") {
            const tab = activeTab();
            if (tab) clickButton(tab + "_interrupt");
            return;
        }
        if (mod && (event.key === "ArrowUp" || event.key === "ArrowDown") && isPrompt(target)) {
            const edited = editEmphasis(target.value, target.selectionStart, target.selectionEnd, event.key === "ArrowUp");
            event.preventDefault();
            if (edited) setTextareaValue(target, edited[0], edited[1], edited[2]);
        }
    }

    document.addEventListener("keydown", onKeyDown);

    // Each tool button's own tooltip, by its elem_id (gradio buttons have no title argument); it
    // is also the accessible name of a button that shows only an icon.
    function addTooltips() {
        const tips = window.SD_WEBUI_TOOLTIPS || {};
        for (const id in tips) {
            const el = document.getElementById(id);
            const button = el && (el.tagName === "BUTTON" ? el : el.querySelector("button"));
            if (button && button.title !== tips[id]) {
                button.title = tips[id];
                button.setAttribute("aria-label", tips[id]);
            }
        }
    }
    new MutationObserver(addTooltips).observe(document.documentElement, { childList: true, subtree: true });

    window.sdWebui = { editEmphasis: editEmphasis };
})();
