"""A1111's `modules.scripts`, the part simple extensions use: `Script`, `AlwaysVisible`,
`PostprocessImageArgs` and `basedir()`.

A `Script` subclass in an extension's `scripts/*.py` is found and run by
`modules.extensions.a1111_adapter`, which maps its positional `*args` onto this app's typed hooks.
The hooks run in A1111's order: before_process, process, then per batch before_process_batch and
process_batch, per image postprocess_image, and postprocess once at the end.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from modules.extensions.a1111_registry import COMPAT

AlwaysVisible = object()  # what `show()` returns for a script whose controls are always shown


class PostprocessImageArgs:
    """Handed to `postprocess_image`; a script may replace `image`."""

    def __init__(self, image: Any) -> None:
        self.image = image


class Script:
    # Set by the loader, as A1111 sets them.
    name: Optional[str] = None  # title().lower()
    filename: Optional[str] = None  # the script file's path
    alwayson: bool = False
    is_txt2img: bool = False
    is_img2img: bool = False
    tabname: Optional[str] = None  # "txt2img" / "img2img"
    controls: Optional[list[Any]] = None  # what ui() returned
    section: Optional[str] = None
    create_group: bool = True
    infotext_fields: Optional[list[Any]] = None
    paste_field_names: Optional[list[str]] = None
    args_from: Optional[int] = None
    args_to: Optional[int] = None

    def title(self) -> str:
        raise NotImplementedError()

    def ui(self, is_img2img: bool) -> Optional[list[Any]]:
        """Gradio components; their values arrive as `*args`, in this order."""
        return None

    def show(self, is_img2img: bool) -> Any:
        """False: hidden; True: selectable in the Script dropdown; AlwaysVisible: always runs."""
        return True

    def run(self, p: Any, *args: Any) -> Any:
        """A selectable script's processing (not run by this app yet)."""
        return None

    def before_process(self, p: Any, *args: Any) -> None:
        pass

    def process(self, p: Any, *args: Any) -> None:
        pass

    def before_process_batch(self, p: Any, *args: Any, **kwargs: Any) -> None:
        """kwargs: batch_number, prompts, seeds, subseeds (edit the lists in place)."""

    def process_batch(self, p: Any, *args: Any, **kwargs: Any) -> None:
        """kwargs: batch_number, prompts, seeds, subseeds."""

    def postprocess_image(self, p: Any, pp: PostprocessImageArgs, *args: Any) -> None:
        pass

    def postprocess(self, p: Any, processed: Any, *args: Any) -> None:
        pass

    def describe(self) -> str:
        return ""

    def elem_id(self, item_id: str) -> str:
        """A1111's HTML id: script_[<tab>_]<title as snake case>_<item_id>; the tab is named when
        the script shows the same way on both tabs (so the two copies do not clash)."""
        need_tab = self.show(True) == self.show(False)
        tab = ("img2img_" if self.is_img2img else "txt2img_") if need_tab else ""
        title = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", self.title().lower()))
        return f"script_{tab}{title}_{item_id}"


def basedir() -> str:
    """The folder of the extension whose script is loading (A1111: else the app's folder)."""
    return COMPAT.basedir()


def __getattr__(name: str) -> Any:
    raise AttributeError(f"scripts.{name} is not provided by this app; supported: Script, AlwaysVisible, "
                         "PostprocessImageArgs, basedir")


__all__ = ["Script", "AlwaysVisible", "PostprocessImageArgs", "basedir"]
