"""A1111's `modules.shared`, the part simple extensions use: a READ-ONLY `opts` and `cmd_opts`.

`opts` shows the current settings (`modules.settings.Options`: this app's fields and every A1111
option key) by attribute and as an `opts.data` copy; writing raises, because settings change only
through the Settings tab or `POST /sdapi/v1/options` here, never behind a job's back. The app calls
`bind(settings_store, args)` once at start-up, before extensions load; until then both show the
defaults (Options() and the flags' defaults), as a fresh A1111 would.
"""

from __future__ import annotations

import argparse
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from modules.extensions.a1111_registry import COMPAT

if TYPE_CHECKING:
    from modules.settings import Options, SettingsStore


class ReadOnlyOptionsError(AttributeError):
    def __init__(self, name: str) -> None:
        super().__init__(f"shared.opts is read-only in this app (tried to set {name!r}); change settings "
                         "in the Settings tab or with POST /sdapi/v1/options")


def _current_options() -> "Options":
    store = COMPAT.settings_store
    return store.get() if store is not None else _default_options()


@lru_cache(maxsize=1)
def _default_options() -> "Options":
    from modules.settings import Options

    return Options()


class ReadOnlyOptions:
    """`shared.opts`: `opts.samples_format`, `getattr(opts, "x", default)`, `opts.data.get("x")`."""

    __slots__ = ()

    @property
    def data(self) -> dict[str, Any]:
        """A copy of every option value (changing it changes nothing)."""
        return _current_options().model_dump()

    def __getattr__(self, name: str) -> Any:
        values = _current_options().model_dump()
        if name in values:
            return values[name]
        raise AttributeError(f"shared.opts has no option {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise ReadOnlyOptionsError(name)

    def __delattr__(self, name: str) -> None:
        raise ReadOnlyOptionsError(name)

    def set(self, key: str, value: Any, *args: Any, **kwargs: Any) -> bool:
        raise ReadOnlyOptionsError(key)

    def __contains__(self, name: str) -> bool:
        return name in self.data

    def __repr__(self) -> str:
        return "<read-only shared.opts>"


opts = ReadOnlyOptions()


def bind(settings_store: "SettingsStore", args: argparse.Namespace) -> None:
    """Called once by the app at start-up: `opts` then reads `settings_store`, `cmd_opts` is `args`."""
    COMPAT.settings_store = settings_store
    COMPAT.cmd_opts = args


def _cmd_opts() -> argparse.Namespace:
    if COMPAT.cmd_opts is not None:
        return COMPAT.cmd_opts
    from modules.cmd_args import parse_args

    return parse_args([])


def __getattr__(name: str) -> Any:
    if name == "cmd_opts":  # computed on access: `shared.cmd_opts` is the bound flags once bind() ran
        return _cmd_opts()
    raise AttributeError(f"shared.{name} is not provided by this app; supported: opts, cmd_opts")


__all__ = ["opts", "bind", "ReadOnlyOptions", "ReadOnlyOptionsError"]
