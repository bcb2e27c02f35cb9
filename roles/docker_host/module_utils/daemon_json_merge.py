# -*- coding: utf-8 -*-
"""The daemon.json merge (role docker_host): the project's fragment into the user's file, never over it.

Shared by the module that writes it (library/docker_daemon_json.py) and the probe that predicts,
in the same round trip as the engine's state, whether it would change anything
(library/docker_host_probe.py). See docker_daemon_json's documentation for the rules.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

# exec-opts entries and the like: "native.cgroupdriver=cgroupfs". URLs (registry mirrors) never
# match: their first '=' comes after a ':'.
_OPTION = re.compile(r"^([A-Za-z0-9_.-]+)=")
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_WS = " \t\n\r"


class DaemonJsonError(Exception):
    """The file cannot be merged: not JSON, or not a JSON object. The message names the path."""


# --- a JSON reader that remembers where each value is in the text --------------------------


@dataclass
class Node:
    kind: str  # object, array, scalar
    start: int
    end: int  # one past the last character
    value: Any = None
    members: list[tuple[str, int, Node]] = field(default_factory=list)  # (key, key start, value)
    items: list[Node] = field(default_factory=list)


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def _parse(text: str, i: int) -> Node:
    """The value at text[i:] (already known to be valid JSON: json.loads checked it first)."""
    i = _skip(text, i)
    ch = text[i]
    if ch == "{":
        node = Node("object", i, i)
        j = _skip(text, i + 1)
        if text[j] == "}":
            node.end = j + 1
            node.value = {}
            return node
        while True:
            key, after_key = json.decoder.scanstring(text, j + 1)
            colon = _skip(text, after_key)
            value = _parse(text, colon + 1)
            node.members.append((key, j, value))
            j = _skip(text, value.end)
            if text[j] == "}":
                node.end = j + 1
                break
            j = _skip(text, j + 1)  # past ','
        node.value = {k: v.value for k, _, v in node.members}
        return node
    if ch == "[":
        node = Node("array", i, i)
        j = _skip(text, i + 1)
        if text[j] == "]":
            node.end = j + 1
            node.value = []
            return node
        while True:
            item = _parse(text, j)
            node.items.append(item)
            j = _skip(text, item.end)
            if text[j] == "]":
                node.end = j + 1
                break
            j = _skip(text, j + 1)
        node.value = [n.value for n in node.items]
        return node
    if ch == '"':
        value, end = json.decoder.scanstring(text, i + 1)
        return Node("scalar", i, end, value)
    for literal, value in (("true", True), ("false", False), ("null", None)):
        if text.startswith(literal, i):
            return Node("scalar", i, i + len(literal), value)
    match = _NUMBER.match(text, i)
    return Node("scalar", i, match.end(), json.loads(match.group()))


def load(text: str, path: str = "daemon.json") -> Any:
    """The parsed file, or DaemonJsonError naming the path, line and column."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise DaemonJsonError(f"{path} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}; "
                              "fix or remove it and run again (nothing was changed)") from None
    if not isinstance(doc, dict):
        raise DaemonJsonError(f"{path} is not a JSON object (it holds a {type(doc).__name__}); "
                              "fix it and run again (nothing was changed)")
    return doc


# --- the merge ------------------------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    # true is not 1, and key order does not matter.
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(path)


def _option_conflict(user_items: list[Any], item: Any) -> Any:
    """The user's entry that sets the same option as ``item`` to another value, if any."""
    if not isinstance(item, str):
        return None
    match = _OPTION.match(item)
    if not match:
        return None
    prefix = match.group(1).lower() + "="
    for entry in user_items:
        if isinstance(entry, str) and entry.lower().startswith(prefix):
            return entry
    return None


@dataclass
class Merge:
    """The outcome of merging a fragment into a file's text."""

    text: str  # the new text (the old one when nothing changes)
    changed: bool
    added: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    changed_keys: list[str] = field(default_factory=list)
    document: dict[str, Any] = field(default_factory=dict)

    @property
    def live_restore(self) -> bool:
        return self.document.get("live-restore") is True


class _Planner:
    """Walks the user's document against the fragment: what to add (as text edits) and the conflicts."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.edits: list[tuple[int, int, str]] = []  # (start, end, replacement)
        self.added: list[str] = []
        self.conflicts: list[str] = []
        self.changed_keys: set[str] = set()
        self.unit = self._unit()

    # Formatting: the user's own indentation, or two spaces for a file without any.
    def _unit(self) -> str:
        match = re.search(r"\n([ \t]+)\"", self.text)
        return match.group(1) if match else "  "

    def _line_indent(self, pos: int) -> str:
        line_start = self.text.rfind("\n", 0, pos) + 1
        match = re.match(r"[ \t]*", self.text[line_start:pos])
        return match.group(0) if match else ""

    def _dump(self, value: Any, base: str, multiline: bool) -> str:
        if not multiline:
            return json.dumps(value, ensure_ascii=False)
        return json.dumps(value, indent=self.unit, ensure_ascii=False).replace("\n", "\n" + base)

    def object(self, node: Node, want: dict[str, Any], path: tuple[str, ...]) -> None:
        members: dict[str, Node] = {}
        for key, _, value in node.members:
            members[key] = value  # the last of duplicate keys wins, as in json.loads
        new: list[tuple[str, Any]] = []
        for key, value in want.items():
            here = path + (key,)
            have = members.get(key)
            if have is None:
                new.append((key, value))
                self.added.append(_dotted(here))
                self.changed_keys.add(here[0])
            elif isinstance(value, dict) and have.kind == "object":
                self.object(have, value, here)
            elif isinstance(value, list) and have.kind == "array":
                self.array(have, value, here)
            elif not _same(have.value, value):
                self.conflicts.append(f"{_dotted(here)}: kept your value {json.dumps(have.value)}, "
                                      f"the project's {json.dumps(value)} was not applied")
        if new:
            self._insert_members(node, new)

    def array(self, node: Node, want: list[Any], path: tuple[str, ...]) -> None:
        have = [n.value for n in node.items]
        missing: list[Any] = []
        for item in want:
            if any(_same(item, h) for h in have + missing):
                continue
            other = _option_conflict(have, item)
            if other is not None:
                self.conflicts.append(f"{_dotted(path)}: kept your entry {json.dumps(other)}, "
                                      f"the project's {json.dumps(item)} was not added")
                continue
            missing.append(item)
            self.added.append(f"{_dotted(path)}[{json.dumps(item)}]")
            self.changed_keys.add(path[0])
        if missing:
            self._insert_items(node, missing)

    def _insert_members(self, node: Node, new: list[tuple[str, Any]]) -> None:
        text = self.text
        if not node.members:  # {} or { }: written afresh, one level deeper than its line
            if node.start != _skip(text, 0) and "\n" not in text.strip():  # a one-line file stays one line
                body = ", ".join(f"{json.dumps(k, ensure_ascii=False)}: {self._dump(v, '', False)}" for k, v in new)
                self.edits.append((node.start, node.end, "{" + body + "}"))
                return
            base = self._line_indent(node.start)
            inner = base + self.unit
            body = ",\n".join(f"{inner}{json.dumps(k, ensure_ascii=False)}: {self._dump(v, inner, True)}"
                              for k, v in new)
            self.edits.append((node.start, node.end, "{\n" + body + "\n" + base + "}"))
            return
        _, first_at, first_value = node.members[0]
        lead = text[node.start + 1:first_at]
        after_key = json.decoder.scanstring(text, first_at + 1)[1]
        colon = text[after_key:first_value.start]  # ': ' or ':' as the user writes it
        multiline = "\n" in lead
        if multiline:
            indent = lead[lead.rfind("\n") + 1:]
            parts = [f",\n{indent}{json.dumps(k, ensure_ascii=False)}{colon}{self._dump(v, indent, True)}"
                     for k, v in new]
        else:
            sep = ", " if len(node.members) < 2 else self._between(node.members[0][2].end, node.members[1][1])
            parts = [f"{sep}{json.dumps(k, ensure_ascii=False)}{colon}{self._dump(v, '', False)}" for k, v in new]
        at = node.members[-1][2].end
        self.edits.append((at, at, "".join(parts)))

    def _insert_items(self, node: Node, missing: list[Any]) -> None:
        text = self.text
        if not node.items:
            self.edits.append((node.start, node.end, json.dumps(missing, ensure_ascii=False)))
            return
        lead = text[node.start + 1:node.items[0].start]
        if "\n" in lead:
            indent = lead[lead.rfind("\n") + 1:]
            parts = [f",\n{indent}{self._dump(v, indent, True)}" for v in missing]
        else:
            sep = ", " if len(node.items) < 2 else self._between(node.items[0].end, node.items[1].start)
            parts = [f"{sep}{self._dump(v, '', False)}" for v in missing]
        at = node.items[-1].end
        self.edits.append((at, at, "".join(parts)))

    def _between(self, end: int, start: int) -> str:
        """The separator the user writes between two members or items ("," plus its spacing)."""
        gap = self.text[end:start]
        return gap if "\n" not in gap else ", "

    def apply(self) -> str:
        text = self.text
        for start, end, replacement in sorted(self.edits, key=lambda e: e[0], reverse=True):
            text = text[:start] + replacement + text[end:]
        return text


def merged_document(user: dict[str, Any], want: dict[str, Any]) -> dict[str, Any]:
    """The same merge on plain values (what the new text must parse to)."""
    out = dict(user)
    for key, value in want.items():
        have = out.get(key, _MISSING)
        if have is _MISSING:
            out[key] = value
        elif isinstance(value, dict) and isinstance(have, dict):
            out[key] = merged_document(have, value)
        elif isinstance(value, list) and isinstance(have, list):
            items = list(have)
            for item in value:
                if not any(_same(item, h) for h in items) and _option_conflict(have, item) is None:
                    items.append(item)
            out[key] = items
    return out


_MISSING = object()


def merge(text: str | None, fragment: dict[str, Any], path: str = "daemon.json") -> Merge:
    """Merge ``fragment`` into the file's ``text`` (None or blank: no file yet)."""
    if text is None or not text.strip():
        if not fragment:
            return Merge(text or "", False)
        new = json.dumps(fragment, indent=2, ensure_ascii=False) + "\n"
        return Merge(new, True, added=list(fragment), changed_keys=list(fragment), document=dict(fragment))
    user = load(text, path)
    planner = _Planner(text)
    planner.object(_parse(text, 0), fragment, ())
    expected = merged_document(user, fragment)
    new_text = planner.apply()
    if planner.edits:
        try:
            ok = _same(json.loads(new_text), expected)
        except json.JSONDecodeError:
            ok = False
        if not ok:  # a layout the text edit cannot handle: the whole file, user's keys first
            new_text = json.dumps(expected, indent=2, ensure_ascii=False) + "\n"
    changed = new_text != text
    keys = [k for k in expected if k in planner.changed_keys]
    return Merge(new_text, changed, planner.added, planner.conflicts, keys, expected)


def read(path: str) -> str | None:
    """The file's text, None when it does not exist."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None
