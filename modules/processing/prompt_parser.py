"""A1111 prompt syntax, without torch: attention weights and prompt scheduling.

Two independent passes, as in A1111:

1. **Scheduling** (`PromptSchedule.parse`) runs on the raw prompt and yields, for each sampling step,
   the plain text to encode: prompt editing ``[from:to:when]``, ``[add:when]``, ``[remove::when]`` and
   alternation ``[a|b|c]``. Emphasis brackets are kept verbatim in its output.
2. **Attention** (`parse_attention`) runs on each of those texts and yields weighted pieces:
   ``(x)`` ×1.1, ``[x]`` ÷1.1, ``(x:1.5)``, escapes, and ``BREAK`` markers.

Before both, a positive prompt is split on ``AND`` (`split_and`, composable diffusion): each
sub-prompt, with its own ``:weight``, is scheduled and encoded on its own.

Both are total functions: any input string gives a result, never an exception. Syntax that does not
parse is kept as literal text, like A1111 does.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from typing import Optional, Union

__all__ = [
    "SubPrompt",
    "split_and",
    "WeightedText",
    "BREAK",
    "parse_attention",
    "PromptSchedule",
]

# --------------------------------------------------------------------------------------------------
# AND: composable diffusion
# --------------------------------------------------------------------------------------------------

# The keyword as a whole word: "ANDROID" and "sAND" are text, lower-case "and" is text.
_AND_RE = re.compile(r"\bAND\b")
# A sub-prompt and its optional trailing weight ("a dog : 1.2 "). As in A1111 '.' stops at a newline,
# so a sub-prompt with a line break inside keeps a trailing ":1.2" as text, weight 1.
_SUB_WEIGHT_RE = re.compile(r"^(\s*.*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


@dataclass(frozen=True)
class SubPrompt:
    """One ``AND``-separated part of a prompt: the text to schedule and encode, and its weight in
    the guidance (``uncond + sum_i weight_i * cfg * (cond_i - uncond)``)."""

    text: str
    weight: float = 1.0


def split_and(prompt: str) -> tuple[SubPrompt, ...]:
    """A1111's composable-diffusion split (get_multicond_prompt_list) of one positive prompt.

    >>> split_and("a cat AND a dog:1.2")
    (SubPrompt(text='a cat', weight=1.0), SubPrompt(text=' a dog', weight=1.2))

    Each sub-prompt may end with ``:weight`` (default 1; negative allowed); the trailing whitespace
    and the weight are cut off, leading whitespace stays (the tokenizer ignores it). A prompt with
    neither ``AND`` nor a trailing weight comes back verbatim, so its encoding is unchanged. Prompt
    editing, alternation and emphasis work inside each sub-prompt; a negative prompt is not split.
    """
    prompt = "" if prompt is None else str(prompt)
    parts = _AND_RE.split(prompt)
    out = []
    for part in parts:
        m = _SUB_WEIGHT_RE.search(part)
        if m is None:
            out.append(SubPrompt(part, 1.0))
        elif m.group(2) is None:
            out.append(SubPrompt(prompt if len(parts) == 1 else m.group(1), 1.0))
        else:
            out.append(SubPrompt(m.group(1), float(m.group(2))))
    return tuple(out)


# --------------------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------------------

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1


@dataclass(frozen=True)
class WeightedText:
    """A piece of prompt text and its attention multiplier.

    A chunk break (``BREAK`` in the prompt) is ``WeightedText("BREAK", -1.0, is_break=True)``, the
    same text/weight pair A1111 uses, plus a flag so that no ordinary text can be mistaken for it.
    """

    text: str
    weight: float
    is_break: bool = False

    def as_pair(self) -> tuple[str, float]:
        return (self.text, self.weight)


BREAK = WeightedText("BREAK", -1.0, is_break=True)

# A ``BREAK`` keyword, with the whitespace around it, inside a run of plain text.
_BREAK_RE = re.compile(r"\s*\bBREAK\b\s*", re.S)
# The explicit weight that closes a round bracket: ``:1.5)``, spaces allowed around the number.
_WEIGHT_CLOSE_RE = re.compile(r":\s*([+-]?[.\d]+)\s*\)")
_ESCAPABLE = "()[]\\"
_PLAIN_STOP = set("\\()[]:")


def parse_attention(text: str) -> list[WeightedText]:
    """Split `text` into pieces with attention weights, with A1111's semantics.

    >>> [w.as_pair() for w in parse_attention("an (important) word")]
    [('an ', 1.0), ('important', 1.1), (' word', 1.0)]

    Unclosed brackets apply to everything after them; stray closers are literal; ``\\(`` and friends
    are literal brackets; a lone backslash is dropped; adjacent pieces of equal weight are merged.
    Differences from A1111: a ``BREAK`` inside brackets still breaks (A1111 multiplies its -1 marker
    and then tokenizes the word "BREAK"), and a malformed weight such as ``(x:1.2.3)`` is literal
    text instead of an exception.
    """
    pieces: list[list] = []  # [text, weight, is_break]
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply_from(start: int, multiplier: float) -> None:
        for piece in pieces[start:]:
            if not piece[2]:
                piece[1] *= multiplier

    def add_plain(chunk: str) -> None:
        parts = _BREAK_RE.split(chunk)
        for i, part in enumerate(parts):
            if i > 0:
                pieces.append([BREAK.text, BREAK.weight, True])
            if part:
                pieces.append([part, 1.0, False])

    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            if i + 1 < n and text[i + 1] in _ESCAPABLE:
                pieces.append([text[i + 1], 1.0, False])
                i += 2
            else:
                i += 1  # a lone backslash is dropped, as in A1111
        elif ch == "(":
            round_open.append(len(pieces))
            i += 1
        elif ch == "[":
            square_open.append(len(pieces))
            i += 1
        elif ch == ":":
            m = _WEIGHT_CLOSE_RE.match(text, i)
            weight = _to_float(m.group(1)) if m else None
            if m and weight is not None and round_open:
                multiply_from(round_open.pop(), weight)
                i = m.end()
            elif m and weight is not None:
                add_plain(m.group(0))  # ":1.5)" with nothing open is just text
                i = m.end()
            else:
                add_plain(":")
                i += 1
        elif ch == ")":
            if round_open:
                multiply_from(round_open.pop(), ROUND_MULTIPLIER)
            else:
                add_plain(")")
            i += 1
        elif ch == "]":
            if square_open:
                multiply_from(square_open.pop(), SQUARE_MULTIPLIER)
            else:
                add_plain("]")
            i += 1
        else:
            j = i + 1
            while j < n and text[j] not in _PLAIN_STOP:
                j += 1
            add_plain(text[i:j])
            i = j

    for start in round_open:
        multiply_from(start, ROUND_MULTIPLIER)
    for start in square_open:
        multiply_from(start, SQUARE_MULTIPLIER)

    merged: list[list] = []
    for piece in pieces:
        if merged and not piece[2] and not merged[-1][2] and merged[-1][1] == piece[1]:
            merged[-1][0] += piece[0]
        else:
            merged.append(piece)
    if not merged:
        return [WeightedText("", 1.0)]
    return [WeightedText(t, w, b) for t, w, b in merged]


def _to_float(s: str) -> Optional[float]:
    try:
        return float(s)
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------------
# Scheduling: a small backtracking recursive-descent parser over A1111's grammar
#
#   start     := (item | stray)*            stray: a lone ( ) [ ] : | kept as text
#   item      := plain | '(' seq ')' | '(' seq ':' seq ')' | '[' bracket ']'
#   bracket   := seq                                  -> emphasis, kept verbatim
#              | [seq ':'] seq ':' NUMBER             -> scheduled
#              | seq ('|' seq)+                       -> alternation
#   plain     := ([^\[\]():|\\] | '\' any)+
#
# Inside brackets only well-formed items may appear; a bracket that does not close properly fails
# as a whole and, at the top level, its opening character becomes literal text.
# --------------------------------------------------------------------------------------------------

_NUMBER_RE = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*$")
# Garbled input beyond these falls back to the literal prompt (bounded time and recursion).
_MAX_PROMPT_CHARS = 50_000
_MAX_NESTING = 64


@dataclass
class _Scheduled:
    before: Optional[list]
    after: list
    when_text: str
    when: int = 0  # resolved against the step count by `_resolve`


@dataclass
class _Alternate:
    options: list[list]


@dataclass
class _Group:
    """Emphasis brackets, kept verbatim: open, parts joined by ':', close."""

    open: str
    parts: list[list]
    close: str


_Node = Union[str, _Scheduled, _Alternate, _Group]


class _Failed(Exception):
    pass


class _ScheduleParser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.memo: dict[int, Optional[tuple[_Node, int]]] = {}

    def parse(self) -> list[_Node]:
        text, out, i = self.text, [], 0
        while i < len(text):
            ch = text[i]
            if ch in "([":
                res = self.bracket(i, 0)
                if res is not None:
                    out.append(res[0])
                    i = res[1]
                    continue
                out.append(ch)
                i += 1
            elif ch in ")]:|":
                out.append(ch)
                i += 1
            else:
                i = self.plain(i, out)
        return out

    def plain(self, i: int, out: list) -> int:
        text, j = self.text, i
        while j < len(text) and text[j] not in "()[]:|":
            j += 2 if text[j] == "\\" else 1
        j = min(j, len(text))
        if j == i:  # cannot happen for a plain start, but never loop forever
            j = i + 1
        out.append(text[i:j])
        return j

    def bracket(self, i: int, depth: int) -> Optional[tuple[_Node, int]]:
        if i in self.memo:
            return self.memo[i]
        try:
            res = self._bracket(i, depth)
        except _Failed:
            res = None
        self.memo[i] = res
        return res

    def _bracket(self, i: int, depth: int) -> tuple[_Node, int]:
        if depth > _MAX_NESTING:
            raise _Failed
        text = self.text
        opener = text[i]
        closer = ")" if opener == "(" else "]"
        separators = ":" if opener == "(" else ":|"
        parts: list[list] = [[]]
        seps: list[str] = []
        j = i + 1
        while True:
            if j >= len(text):
                raise _Failed
            ch = text[j]
            if ch == closer:
                j += 1
                break
            if ch in separators:
                seps.append(ch)
                parts.append([])
                j += 1
            elif ch in "([":
                res = self.bracket(j, depth + 1)
                if res is None:
                    raise _Failed
                parts[-1].append(res[0])
                j = res[1]
            elif ch in ")]:|":
                if ch == "|" and opener == "(":
                    parts[-1].append(ch)  # lenient: A1111 rejects the whole prompt here
                    j += 1
                else:
                    raise _Failed
            else:
                j = self.plain(j, parts[-1])
        return self._shape(opener, closer, parts, seps), j

    @staticmethod
    def _shape(opener: str, closer: str, parts: list[list], seps: list[str]) -> _Node:
        if opener == "(":
            if len(parts) > 2:
                raise _Failed
            return _Group("(", parts, ")")
        if not seps:
            return _Group("[", parts, "]")
        if ":" not in seps:
            return _Alternate(parts)
        # Prompt editing. A '|' among the ':' parts is literal text (A1111 accepts "[a|b:.5]").
        colon_parts: list[list] = [list(parts[0])]
        for sep, part in zip(seps, parts[1:]):
            if sep == ":":
                colon_parts.append(list(part))
            else:
                colon_parts[-1].append("|")
                colon_parts[-1].extend(part)
        if len(colon_parts) not in (2, 3):
            raise _Failed
        last = colon_parts[-1]
        if not all(isinstance(x, str) for x in last):
            raise _Failed
        m = _NUMBER_RE.match("".join(last))
        if not m:
            raise _Failed
        before = colon_parts[0] if len(colon_parts) == 3 else None
        after = colon_parts[-2]
        return _Scheduled(before, after, m.group(1))


def _walk(nodes: list, visit) -> None:
    for node in nodes:
        if isinstance(node, str):
            continue
        visit(node)
        if isinstance(node, _Scheduled):
            if node.before is not None:
                _walk(node.before, visit)
            _walk(node.after, visit)
        elif isinstance(node, _Alternate):
            for option in node.options:
                _walk(option, visit)
        else:
            for part in node.parts:
                _walk(part, visit)


def _render(nodes: list, step: int, out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, _Scheduled):
            if step <= node.when:
                if node.before is not None:
                    _render(node.before, step, out)
            else:
                _render(node.after, step, out)
        elif isinstance(node, _Alternate):
            _render(node.options[(step - 1) % len(node.options)], step, out)
        else:
            out.append(node.open)
            for k, part in enumerate(node.parts):
                if k:
                    out.append(":")
                _render(part, step, out)
            out.append(node.close)


@dataclass(frozen=True)
class PromptSchedule:
    """Which text to encode at which step.

    `entries` are A1111's ``[[end_at_step, text], ...]``: `text` is used up to and including the
    1-based sampling step `end_at_step`. With 0-based steps, entry ``k`` covers steps
    ``boundaries[k-1] .. boundaries[k]-1``, so `boundaries` are also the 0-based steps at which the
    next text takes over.

    ``text_at(0)`` is the first step's text and ``[a|b]`` gives a, b, a, b, ... from step 0 on, as the
    A1111 wiki documents. (A1111's sampler compares its 0-based step with ``<=``, which in practice
    holds every first text one extra step; we follow the documented behaviour.)
    """

    prompt: str
    steps: int
    entries: tuple[tuple[int, str], ...]
    _ends: list[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ends", [end for end, _ in self.entries])

    @classmethod
    def parse(cls, prompt: str, steps: int, *, hires_steps: Optional[int] = None,
              old_scheduling: bool = False) -> "PromptSchedule":
        """Parse `prompt` for a run of `steps` sampling steps. Never raises on any prompt text.

        ``when`` in ``[a:b:when]``: with a decimal point it is a fraction of the steps, otherwise an
        absolute step (A1111's default). `old_scheduling=True` gives A1111's older rule: below 1 a
        fraction, otherwise an absolute step. With `hires_steps`, the schedule is for the hires pass:
        a fraction counts from 1.0 (``1.5`` = half way through hires) and an integer from the end of
        the `steps` base steps, as in A1111.
        """
        prompt = "" if prompt is None else str(prompt)
        base_steps = max(1, int(steps))
        if hires_steps is None or old_scheduling:
            int_offset, flt_offset, total = 0, 0.0, base_steps
        else:
            int_offset, flt_offset, total = base_steps, 1.0, max(1, int(hires_steps))

        nodes = _parse_nodes(prompt)
        if nodes is None:
            return cls(prompt, total, ((total, prompt),))

        ends = {total}
        has_alternation = False

        def resolve(node) -> None:
            nonlocal has_alternation
            if isinstance(node, _Scheduled):
                v = float(node.when_text)
                if old_scheduling:
                    v = v * total if v < 1 else v
                elif "." in node.when_text:
                    v = (v - flt_offset) * total
                else:
                    v = v - int_offset
                node.when = int(max(-1.0, min(float(total), v)))  # clamped: "1e999" must not raise
                if node.when >= 1:
                    ends.add(node.when)
            elif isinstance(node, _Alternate):
                has_alternation = True

        _walk(nodes, resolve)
        if has_alternation:
            ends.update(range(1, total + 1))

        entries = []
        for end in sorted(ends):
            out: list[str] = []
            _render(nodes, end, out)
            entries.append((end, "".join(out)))
        return cls(prompt, total, tuple(entries))

    @property
    def boundaries(self) -> tuple[int, ...]:
        return tuple(end for end, _ in self.entries)

    @property
    def texts(self) -> tuple[str, ...]:
        return tuple(text for _, text in self.entries)

    @property
    def is_static(self) -> bool:
        """True when every step uses the same text."""
        return len(set(self.texts)) == 1

    def index_at(self, step: int) -> int:
        """Index into `entries` for the 0-based sampling step `step` (clamped to the schedule)."""
        k = bisect.bisect_left(self._ends, step + 1)
        return min(k, len(self.entries) - 1)

    def text_at(self, step: int) -> str:
        """The text to encode at the 0-based sampling step `step`."""
        return self.entries[self.index_at(step)][1]

    def as_lists(self) -> list[list]:
        """A1111's own representation: ``[[end_at_step, text], ...]``."""
        return [[end, text] for end, text in self.entries]



def _parse_nodes(prompt: str) -> Optional[list]:
    """The parse tree, or None where the prompt is to be taken literally as a whole."""
    if len(prompt) > _MAX_PROMPT_CHARS or _nesting_depth(prompt) > _MAX_NESTING:
        return None
    try:
        return _ScheduleParser(prompt).parse()
    except RecursionError:  # pragma: no cover - guarded by the depth check above
        return None


def _nesting_depth(text: str) -> int:
    depth = deepest = 0
    for ch in text:
        if ch in "([":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]" and depth:
            depth -= 1
    return deepest
