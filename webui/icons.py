"""Tool-button icons as SVG, so they draw the same on a machine without an emoji font.

Each icon is a 24×24 outline path drawn with the text colour (a CSS mask filled with currentColor),
so it follows the light and dark themes. Buttons are named by the emoji A1111 shows on them.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping
from urllib.parse import quote

# emoji → (class suffix, SVG body inside <svg viewBox="0 0 24 24">)
_ICONS: dict[str, tuple[str, str]] = {
    "🎲": ("dice", '<rect x="3.5" y="3.5" width="17" height="17" rx="3.5"/>'
                   '<circle cx="8.5" cy="8.5" r="1.3" fill="#000"/><circle cx="15.5" cy="8.5" r="1.3" fill="#000"/>'
                   '<circle cx="12" cy="12" r="1.3" fill="#000"/><circle cx="8.5" cy="15.5" r="1.3" fill="#000"/>'
                   '<circle cx="15.5" cy="15.5" r="1.3" fill="#000"/>'),
    "♻️": ("reuse", '<path d="M20 12a8 8 0 0 1-13.7 5.6"/><path d="M4 12a8 8 0 0 1 13.7-5.6"/>'
                    '<path d="M18 2.5v4.5h-4.5"/><path d="M6 21.5V17h4.5"/>'),
    "⇅": ("swap", '<path d="M8 20V4"/><path d="M4 8l4-4 4 4"/><path d="M16 4v16"/><path d="M12 16l4 4 4-4"/>'),
    "↙️": ("paste", '<path d="M18 6L6 18"/><path d="M6 9v9h9"/>'),
    "🗑️": ("trash", '<path d="M4 7h16"/><path d="M9 7V4h6v3"/><path d="M6 7l1 13h10l1-13"/>'
                    '<path d="M10 11v6"/><path d="M14 11v6"/>'),
    "📋": ("styles", '<rect x="5" y="4.5" width="14" height="16.5" rx="2"/><path d="M9 3h6v3H9z"/>'
                     '<path d="M8.5 11h7"/><path d="M8.5 15h5"/>'),
    "🖌️": ("brush", '<path d="M20 4l-9 9"/><path d="M11 13c-3-1-5.5 1-5.5 3.5 0 1.5-1 2.5-2.5 3 3 1.5 8 .5 8-3.5z"/>'),
    "🔄": ("refresh", '<path d="M20 11a8 8 0 0 0-14.5-4.5"/><path d="M4 3v4h4"/>'
                      '<path d="M4 13a8 8 0 0 0 14.5 4.5"/><path d="M20 21v-4h-4"/>'),
    "📂": ("folder", '<path d="M3 6.5a1.5 1.5 0 0 1 1.5-1.5H9l2 2.5h8.5A1.5 1.5 0 0 1 21 9v9.5a1.5 1.5 0 0 1-1.5 1.5'
                     'h-15A1.5 1.5 0 0 1 3 18.5z"/>'),
    "💾": ("save", '<path d="M4 4h13l3 3v13H4z"/><path d="M8 4v5h8V4"/><rect x="7.5" y="13" width="9" height="7"/>'),
    "🗃️": ("zip", '<rect x="3" y="4" width="18" height="5" rx="1"/><path d="M5 9v11h14V9"/><path d="M10 13h4"/>'),
    "🖼️": ("image", '<rect x="3" y="4" width="18" height="16" rx="2"/><circle cx="9" cy="9.5" r="1.8"/>'
                    '<path d="M3 17l5-5 4 4 3-3 6 6"/>'),
    "🎴": ("extra-networks", '<rect x="3" y="6" width="11" height="15" rx="1.5"/>'
                              '<path d="M7 6V4.5A1.5 1.5 0 0 1 8.5 3h11A1.5 1.5 0 0 1 21 4.5v12a1.5 1.5 0 0 1-1.5 1.5H14"/>'
                              '<path d="M6 17l2.5-3.5 2 2.5"/><circle cx="10.5" cy="10" r="1"/>'),
    "🎨": ("inpaint", '<path d="M12 3a9 9 0 1 0 0 18c1.4 0 2-1 1.6-2.2-.5-1.5.5-2.8 2-2.8H18a3 3 0 0 0 3-3'
                      'c0-5.5-4-10-9-10z"/><circle cx="7.5" cy="11" r="1.4"/><circle cx="10.5" cy="7" r="1.4"/>'
                      '<circle cx="15.5" cy="7.5" r="1.4"/>'),
    "📐": ("extras", '<path d="M4 20V4l16 16z"/><path d="M8 16v-4.5l4.5 4.5z"/><path d="M4 8h2"/>'
                     '<path d="M4 12h2"/><path d="M4 16h2"/>'),
}
ICONS: Mapping[str, tuple[str, str]] = MappingProxyType(_ICONS)


def icon_class(symbol: str) -> str:
    """The CSS class that draws `symbol`'s icon; a KeyError names a symbol with no icon."""
    try:
        return "sd-icon-" + ICONS[symbol][0]
    except KeyError:
        raise KeyError(f"no SVG icon for tool button {symbol!r}; add one to webui/icons.py") from None


def svg(symbol: str) -> str:
    _, body = ICONS[symbol]
    return ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="#000" '
            f'stroke-width="1.8" stroke-linecap="round" stroke-linejoin="round">{body}</svg>')


def css() -> str:
    """One rule per icon: the SVG as a mask over a box filled with the button's text colour."""
    rules = []
    for symbol, (name, _) in ICONS.items():
        url = "data:image/svg+xml," + quote(svg(symbol), safe="")
        rules.append(f'button.sd-icon-{name}::before {{ -webkit-mask-image: url("{url}"); mask-image: url("{url}"); }}')
    return "\n".join(rules)
