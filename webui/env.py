"""What every tab builder gets: the app's services plus the UI-only ones (ui-config, styles)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, TYPE_CHECKING, Any, Callable, TypeVar

from modules.styles import StyleDatabase
from modules.ui_config import UiConfig

if TYPE_CHECKING:
    from modules.app_context import AppContext

T = TypeVar("T")


@dataclass
class UiEnv:
    ctx: "AppContext"
    ui_config: UiConfig
    styles: StyleDatabase
    # Style dropdowns of every tab, refreshed together when a style is saved or deleted.
    style_dropdowns: list = field(default_factory=list)
    # Folders the server may hand to the browser besides cwd and the temp dir (launch's allowed_paths).
    served_roots: list = field(default_factory=list)
    # The built page (set by build_ui): preview files of Extra Networks cards join its allowed paths.
    blocks: Any = None
    # (when read, trigger words) of the textual-inversion embeddings, for the token counters.
    embedding_triggers: Optional[tuple[float, Any]] = None

    def component(self, cls: Callable[..., T], tab: str, label: str, **kwargs: Any) -> T:
        """A control whose defaults the user can change in ui-config.json ("tab/label/value")."""
        return self.ui_config.component(cls, tab, label, **kwargs)
