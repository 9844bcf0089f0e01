"""Load order from metadata.ini's Before/After, as A1111's `scripts.list_scripts` computes it.

Start from the discovery order (built-in extensions, then the user's, each sorted by folder name;
files sorted by name), then a depth-first topological sort in which each item comes after what its
`After` names and before what its `Before` names. A name may be a file's canonical name
(`[builtin/]ext/file.py`) or an extension's name, meaning all of that extension's files. Names of
things not loaded are ignored; a cycle is broken where the walk first meets it, as in A1111.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

from modules.extensions.types import Extension, ExtensionError, ExtensionFile


def topological_order(dependencies: Mapping[str, Sequence[str]]) -> list[str]:
    """Keys ordered so each comes after the keys it depends on; otherwise in insertion order."""
    visited: set[str] = set()
    result: list[str] = []

    def visit(name: str) -> None:
        visited.add(name)
        for dep in dependencies.get(name, ()):
            if dep in dependencies and dep not in visited:
                visit(dep)
        result.append(name)

    for name in dependencies:
        if name not in visited:
            visit(name)
    return result


def pick_alternative(requirement: str, known: Iterable[str]) -> str:
    """'a|b' -> the first alternative that is present, else the first one (A1111's rule)."""
    options = requirement.split("|")
    known = set(known)
    return next((o for o in options if o in known), options[0])


@dataclass
class _Node:
    requires: list[str]
    after: list[str] = field(default_factory=list)
    before: list[str] = field(default_factory=list)


def _order(nodes: dict[str, _Node], groups: Mapping[str, list[str]]) -> list[str]:
    """`groups` maps an extension name to its node names, so Before/After may name a whole extension."""
    for name, node in nodes.items():
        for target in node.before:  # "I load before X" is "X loads after me"
            for other in ([target] if target in nodes else []) + list(groups.get(target, [])):
                if other != name:
                    nodes[other].after.append(name)
    dependencies: dict[str, list[str]] = {}
    for name, node in nodes.items():
        after: list[str] = []
        for target in node.after:
            after.extend([target] if target in nodes else groups.get(target, []))
        dependencies[name] = after
    return topological_order(dependencies)


def order_extensions(extensions: Sequence[Extension]) -> list[Extension]:
    """Extensions ordered by [Extension] Before/After (this app's addition; A1111 keeps folder order)."""
    key = {id(e): str(e.path) for e in extensions}  # by folder: a duplicate may share a name
    by_key = {key[id(e)]: e for e in extensions}
    aliases: dict[str, list[str]] = {}
    for e in extensions:
        if any(err.stage == "duplicate" for err in e.errors):
            continue  # a name belongs to the extension that won it
        for alias in e.metadata.names:
            aliases.setdefault(alias, []).append(key[id(e)])
    nodes = {
        key[id(e)]: _Node(
            requires=[],
            after=[pick_alternative(x, aliases) for x in e.metadata.extension_rules.after],
            before=[pick_alternative(x, aliases) for x in e.metadata.extension_rules.before],
        )
        for e in extensions
    }
    return [by_key[k] for k in _order(nodes, aliases)]


def file_canonical_name(extension: Extension, filename: str) -> str:
    return ("builtin/" if extension.is_builtin else "") + extension.canonical_name + "/" + filename


def order_files(
    extensions: Sequence[Extension], subdir: str, files_of: Callable[[Extension], Sequence[ExtensionFile]]
) -> list[ExtensionFile]:
    """The active extensions' files of one kind (`files_of(extension)`, e.g. its scripts) in load order.

    A file whose own `Requires` names nothing loaded is left out, with an error on its extension
    (A1111 only prints a warning and loads it anyway; it would then fail at its first use).
    """
    active = [e for e in extensions if e.active]
    files: dict[str, ExtensionFile] = {}
    nodes: dict[str, _Node] = {}
    groups: dict[str, list[str]] = {}
    owner: dict[str, Extension] = {}
    for ext in active:
        for file in files_of(ext):
            files[file.canonical_name] = file
            owner[file.canonical_name] = ext
            for alias in ext.metadata.names:
                groups.setdefault(alias, []).append(file.canonical_name)
    known = set(files) | set(groups)
    loaded = set(files) | {n for e in active for n in e.metadata.names}  # extensions without such files too
    for name, file in files.items():
        rules = owner[name].metadata.rules_for(subdir, file.filename)
        nodes[name] = _Node(
            requires=[pick_alternative(x, loaded) for x in rules.requires],
            after=[pick_alternative(x, known) for x in rules.after],
            before=[pick_alternative(x, known) for x in rules.before],
        )
    for name, node in list(nodes.items()):
        missing = [r for r in node.requires if r not in loaded]
        if missing:
            ext = owner[name]
            error = ExtensionError(ext.name, "requires",
                                   f"{subdir}/{files[name].filename} requires {', '.join(repr(m) for m in missing)}, "
                                   "which is not loaded; the file is skipped")
            if error not in ext.errors:  # .js and .mjs share the [javascript] section
                ext.errors.append(error)
            del nodes[name]
            for members in groups.values():
                if name in members:
                    members.remove(name)
    return [files[name] for name in _order(nodes, groups)]
