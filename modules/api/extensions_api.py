"""The API's side of the extensions, in A1111's shapes.

    request_extensions(...)   alwayson_scripts (+ infotext) -> GenerationRequest.extensions
    extension_items(...)      /sdapi/v1/extensions: every extension found, with its error if any
    script_titles(...)        /sdapi/v1/scripts: lowercase titles per tab
    script_infos(...)         /sdapi/v1/script-info: A1111's ScriptInfo list

`alwayson_scripts` is keyed by an extension's title or name in any letter case (A1111 keys it by
the script's title); each value goes through that extension's own `Args` (`ExtensionSet.parse_args`),
so a bad value is a 422 naming `alwayson_scripts.<key>...`, before the job waits in line.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import annotated_types
from pydantic import BaseModel, ValidationError

from modules.api import schemas
from modules.api.errors import FieldError, UnknownScriptError
from modules.extensions.a1111_adapter import script_info
from modules.extensions.hooks import JobExtension, overrides
from modules.extensions.runner import ExtensionArgsError, ExtensionSet
from modules.extensions.startup import LoadedExtensions
from modules.extensions.types import ExtensionCatalog

_FIELD = "alwayson_scripts"


def _tab(is_img2img: bool) -> str:
    return "img2img" if is_img2img else "txt2img"


def _args_loc(ext: JobExtension, sent: Any, loc: Sequence[Any]) -> tuple[Any, ...]:
    """Where in what the client sent a pydantic error points: A1111 clients send {"args": [...]},
    which the default `args_from_api` spreads over the Args fields in order."""
    if not (isinstance(sent, Mapping) and "args" in sent):
        return tuple(loc)
    if isinstance(sent["args"], (list, tuple)) and loc and loc[0] in ext.Args.model_fields:
        position = list(ext.Args.model_fields).index(loc[0])
        if position < len(sent["args"]):
            return ("args", position, *loc[1:])
    return ("args", *loc) if not loc or loc[0] != "args" else tuple(loc)


def _args_error(ext: JobExtension, key: str, sent: Any, err: ExtensionArgsError) -> FieldError:
    return FieldError([{"loc": ("body", _FIELD, key, *_args_loc(ext, sent, e["loc"])),
                        "msg": str(e["msg"]).removeprefix("Value error, "), "type": e["type"]}
                       for e in err.errors])


def request_extensions(extensions: ExtensionSet, alwayson: Optional[Mapping[str, Any]], is_img2img: bool,
                       infotext_params: Optional[Mapping[str, str]], warnings: list[str]) -> dict[str, BaseModel]:
    """Canonical name -> validated Args, for `GenerationRequest.extensions`.

    Extensions the request does not send may still be filled from `infotext` (those that
    implement `args_from_infotext`); always-on ones left out run with their defaults (the engine
    adds them, as A1111 runs every AlwaysVisible script)."""
    chosen: dict[str, BaseModel] = {}
    for key, value in (alwayson or {}).items():
        key = str(key)
        ext = extensions.find(key)
        if ext is None:
            valid = [e.label for e in extensions if e.visible(is_img2img)]
            raise UnknownScriptError(f"{_FIELD}.{key}", key, valid)
        if not ext.visible(is_img2img):
            raise FieldError.single((_FIELD, key), f"script {ext.label!r} is not available on the "
                                                   f"{_tab(is_img2img)} tab", "script_not_on_tab")
        if ext.name in chosen:
            raise FieldError.single((_FIELD, key), f"script {ext.label!r} is sent twice (keys are compared "
                                                   "without regard to letter case)")
        try:
            name, args = extensions.parse_args(key, value)
        except ExtensionArgsError as err:
            raise _args_error(ext, key, value, err) from None
        except (ValueError, TypeError) as err:  # an args_from_api that refuses the value itself
            raise FieldError.single((_FIELD, key), f"{type(err).__name__}: {err}") from None
        chosen[name] = args
    if infotext_params:
        for ext in extensions:
            if ext.name not in chosen and ext.visible(is_img2img) and overrides(ext, "args_from_infotext"):
                args = _args_from_infotext(ext, infotext_params, warnings)
                if args is not None:
                    chosen[ext.name] = args
    return chosen


def _args_from_infotext(ext: JobExtension, params: Mapping[str, str], warnings: list[str]) -> Optional[BaseModel]:
    try:
        args = ext.args_from_infotext(dict(params))
        if args is None or isinstance(args, ext.Args):
            return args
        return ext.Args.model_validate(args)
    except ValidationError as err:  # the infotext holds a value the extension's Args refuse
        raise FieldError([{"loc": ("body", "infotext", ext.name, *e["loc"]),
                           "msg": e["msg"].removeprefix("Value error, "), "type": e["type"]}
                          for e in err.errors(include_url=False)]) from None
    except Exception as exc:  # noqa: BLE001 - the extension's own bug: the job runs without it
        warnings.append(f"extension {ext.name!r} could not read the infotext ({type(exc).__name__}: {exc}); "
                        "its settings were not taken from it")
        return None


# ---------------------------------------------------------------------------------------------
# lists


def extension_items(catalog: ExtensionCatalog) -> list[schemas.ExtensionItem]:
    """Every extension found, loaded or not; `error` (beyond A1111) says why one failed."""
    return [schemas.ExtensionItem(
        name=e.name, remote=e.version.remote, branch=e.version.branch, commit_hash=e.version.commit_hash,
        version=e.version.version, commit_date=str(e.version.commit_date or ""), enabled=e.enabled,
        error=e.error or None) for e in catalog.extensions]


def script_titles(loaded: LoadedExtensions, is_img2img: bool) -> list[str]:
    """A1111's lowercase titles of the tab's scripts, then this app's typed extensions shown there."""
    titles = [s.title.lower() for s in loaded.selectable.for_tab(is_img2img)]
    titles += [t for t in loaded.scripts.titles(is_img2img) if t not in titles]
    titles += [e.label.lower() for e in loaded.typed if e.visible(is_img2img) and e.label.lower() not in titles]
    return titles


def _field_arg(name: str, info: Any) -> schemas.ScriptArg:
    bounds: dict[str, Any] = {}
    for item in info.metadata:
        if isinstance(item, (annotated_types.Ge, annotated_types.Gt)):
            bounds["minimum"] = getattr(item, "ge", getattr(item, "gt", None))
        elif isinstance(item, (annotated_types.Le, annotated_types.Lt)):
            bounds["maximum"] = getattr(item, "le", getattr(item, "lt", None))
    default = None if info.is_required() else info.get_default(call_default_factory=True)
    return schemas.ScriptArg(label=info.title or name, value=default, **bounds)


def script_infos(loaded: LoadedExtensions) -> list[schemas.ScriptInfo]:
    """A1111's ScriptInfo for every A1111 script (args read from its ui()), then, for this app's
    typed extensions, one per tab they show on with their Args fields (sent by name or in order)."""
    infos = []
    for script in loaded.selectable:  # this app's selectable scripts (X/Y/Z plot...), A1111's arg order
        for tab in (False, True):
            if script.visible(tab):
                infos.append(schemas.ScriptInfo(name=script.title.lower(), is_alwayson=False, is_img2img=tab,
                                                args=[schemas.ScriptArg(**vars(a)) for a in script.arg_infos(tab)]))
    for info in script_info(loaded.scripts):
        args = [schemas.ScriptArg(label=a.label, value=a.value, minimum=a.minimum, maximum=a.maximum, step=a.step,
                                  choices=None if a.choices is None else [str(c) for c in a.choices])
                for a in info.args]
        infos.append(schemas.ScriptInfo(name=info.name, is_alwayson=info.is_alwayson, is_img2img=info.is_img2img,
                                        args=args))
    for ext in loaded.typed:
        args = [_field_arg(name, info) for name, info in ext.Args.model_fields.items()]
        infos += [schemas.ScriptInfo(name=ext.label.lower(), is_alwayson=True, is_img2img=tab, args=args)
                  for tab in (False, True) if ext.visible(tab)]
    return infos


__all__ = ["request_extensions", "extension_items", "script_titles", "script_infos"]
