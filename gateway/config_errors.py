"""Config problems told the way a good compiler tells errors (rustc, Elm, cargo).

Every problem in the file at once, in line order. Each names file:line:column, the key path,
what is wrong in words with the value that was given, a "did you mean" where a near name
exists, then the line itself with a caret under the spot:

    gw.yaml:2:3 server.prot: unknown key `prot` (did you mean `port`?)
       |
     2 |   prot: 8080
       |   ^^^^

Validation itself stays in gateway.config (typed models); this module turns what pydantic and
PyYAML report into such messages, and finds what they accept silently (duplicate keys).
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from dataclasses import dataclass

import yaml
from pydantic import BaseModel


@dataclass(frozen=True)
class Problem:
    path: tuple                # key path in the document
    message: str               # what is wrong, in words, with the given value
    at_key: bool = False       # point at the key itself (unknown, duplicate) not its value
    spot: tuple[int, int, int] | None = None  # (line, column, width) when the path is ambiguous
    missing: str | None = None     # the required key this problem is about, when it is absent
    suggests: str | None = None    # the key an unknown key probably meant


def nearest(word: object, choices) -> str | None:
    """The choice closest to `word`, when one is close."""
    if not isinstance(word, str):
        return None
    near = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    if not near:
        near = [c for c in map(str, choices) if c.lower() == word.lower()]
    return near[0] if near else None


def did_you_mean(word: object, choices) -> str:
    """` (did you mean `x`?)` when a choice is close to `word`, else ``."""
    near = nearest(word, choices)
    return f" (did you mean `{near}`?)" if near else ""


def show(value: object) -> str:
    """A value as the user wrote it in YAML terms."""
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping" if value else "an empty mapping"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- where things stand in the text -------------------------------------------------------------

class SourceMap:
    """1-based (line, column, width) of each key path's key and value in the YAML document."""

    def __init__(self, node: yaml.Node | None) -> None:
        self.keys: dict[tuple, tuple[int, int, int]] = {}
        self.values: dict[tuple, tuple[int, int, int]] = {}
        if node is not None:
            self._walk(node, ())

    def _walk(self, node: yaml.Node, path: tuple) -> None:
        self.values.setdefault(path, _span(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = (*path, key.value)
                self.keys.setdefault(child, _span(key))
                self._walk(value, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.keys.setdefault((*path, i), _span(item))
                self._walk(item, (*path, i))

    def locate(self, path: tuple, at_key: bool = False) -> tuple[int, int, int]:
        """The spot for `path`, or for its nearest ancestor the document has."""
        first, second = (self.keys, self.values) if at_key else (self.values, self.keys)
        while path:
            for table in (first, second):
                if path in table:
                    return table[path]
            path = path[:-1]
        return self.values.get((), (1, 1, 1))


def _span(node: yaml.Node) -> tuple[int, int, int]:
    start, end = node.start_mark, node.end_mark
    width = end.column - start.column if end.line == start.line else 1
    if isinstance(node, yaml.ScalarNode):
        width = max(1, min(width, len(str(node.value)) + 2 if node.style else len(str(node.value))))
    return start.line + 1, start.column + 1, max(1, width)


def duplicate_keys(node: yaml.Node | None, path: tuple = ()) -> list[Problem]:
    """Keys given twice in one mapping: YAML keeps the last silently; here it is an error."""
    out: list[Problem] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            if key.value in seen:
                out.append(Problem((*path, key.value), f"`{key.value}` is given twice (first "
                                   f"on line {seen[key.value]}); keep one", at_key=True,
                                   spot=_span(key)))
            else:
                seen[key.value] = key.start_mark.line + 1
            out += duplicate_keys(value, (*path, key.value))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out += duplicate_keys(item, (*path, i))
    return out


# -- YAML syntax --------------------------------------------------------------------------------

_YAML_HINTS = (
    ("found character '\\t'", "YAML indents with spaces only: replace the tab"),
    ("expected <block end>", "the indentation does not match the lines above: align this key "
                             "with its siblings"),
    ("could not find expected ':'", "a key needs a colon after it (`key: value`)"),
    ("mapping values are not allowed here", "a colon in a value, a key indented under a value, "
                                            "or a colon missing on a line above"),
    ("found unexpected end of stream", "a quote or bracket is not closed"),
    ("found '<stream end>'", "a quote or bracket is not closed"),
    ("did not find expected key", "the indentation does not match the lines above"),
    ("did not find expected node content", "a value is missing, or a bracket is left open"),
)


def yaml_syntax_error(exc: yaml.YAMLError, text: str, source: str) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    lines = text.splitlines()
    if lines and line > len(lines):  # the end of the text
        line, col = len(lines), len(lines[-1]) + 1
    problem = getattr(exc, "problem", None) or str(exc)
    hint = next((h for needle, h in _YAML_HINTS if needle in str(exc)), None)
    if "\t" in (text.splitlines()[line - 1:line] or [""])[0]:
        hint = "YAML indents with spaces only: replace the tab"
    head = f"{source}:{line}:{col} invalid YAML: {problem}"
    return "\n".join([head, *snippet(text, line, col, 1, hint)])


# -- pydantic's errors in words -----------------------------------------------------------------

_PATTERNS = {
    r"^[A-Za-z0-9_.-]+$": "use letters, digits, `_`, `.` and `-` only",
    r"^/": "must start with `/`",
    r"^(auto|json|console)$": "expected one of `auto`, `json`, `console`",
}
_COMPARE = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<",
            "less_than_equal": "<="}
_KINDS = {"int": "a whole number", "float": "a number", "bool": "true or false",
          "string": "text", "list": "a list (`[a, b]`)", "dict": "a mapping (`key: value`)",
          "model": "a mapping (`key: value`)", "model_attributes": "a mapping (`key: value`)"}


def explain(err: dict, root: type[BaseModel]) -> Problem:
    """One pydantic error as a Problem: a path in the document and a sentence."""
    loc = tuple(err["loc"])
    kind, given, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind == "missing":
        field = loc[-1]
        return Problem(loc[:-1], f"`{field}` is required here", missing=field)
    if kind == "extra_forbidden":
        allowed = keys_of(root, loc[:-1])
        near = nearest(loc[-1], allowed)
        hint = f" (did you mean `{near}`?)" if near else (
            f" (keys here: {', '.join(f'`{k}`' for k in allowed)})" if allowed else "")
        return Problem(loc, f"unknown key `{loc[-1]}`{hint}", at_key=True, suggests=near)
    if kind == "literal_error":
        expected = ctx.get("expected", "")
        options = re.findall(r"'([^']*)'", expected)
        return Problem(loc, f"expected one of {', '.join(f'`{o}`' for o in options)}, got "
                            f"{show(given)}" + did_you_mean(given, options))
    if kind == "string_pattern_mismatch":
        rule = _PATTERNS.get(ctx.get("pattern", ""), f"must match `{ctx.get('pattern')}`")
        return Problem(loc, f"{rule}, got {show(given)}")
    if kind in _COMPARE:
        limit = next(iter(ctx.values()), "?")
        return Problem(loc, f"must be {_COMPARE[kind]} {limit}, got {show(given)}")
    if kind == "too_short":
        n = ctx.get("min_length", 1)
        return Problem(loc, f"needs at least {n} entr{'y' if n == 1 else 'ies'}, got "
                            f"{show(given)}")
    base = kind.removesuffix("_parsing").removesuffix("_type").removesuffix("_from_float")
    if base in _KINDS:
        example = f", e.g. `[{given}]`" if base == "list" and isinstance(given, str) else ""
        return Problem(loc, f"expected {_KINDS[base]}{example}, got {show(given)}")
    message = err["msg"].removeprefix("Value error, ")
    return Problem(loc, re.sub(r" or instance of \w+", "", message))


def keys_of(root: type[BaseModel], path: tuple) -> list[str]:
    """The keys a mapping at `path` may hold, when the config's models say so."""
    model = _model_at(root, path)
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _model_at(root: type[BaseModel], path: tuple) -> type[BaseModel] | None:
    current: object = root
    for part in path:
        current = _unwrap(current, part)
        if current is None:
            return None
    model = _unwrap(current, None)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unwrap(tp: object, part: object) -> object:
    """One step down a type along `part` (a field name, a list index or a mapping key)."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        if part is None:
            return tp
        field = tp.model_fields.get(part) if isinstance(part, str) else None
        return field.annotation if field is not None else None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            found = _unwrap(arg, part)
            if found is not None:
                return found
        return None
    if origin is typing.Annotated:
        return _unwrap(args[0], part)
    if part is None:
        return tp
    if origin is list and isinstance(part, int):
        return args[0]
    if origin is dict and isinstance(part, str):
        return args[1]
    return None


def clean_location(loc: tuple, data: object) -> tuple:
    """pydantic puts union members into locations (`list[str]`); keep only real keys (a
    location that had any is one of a union's alternatives: see `from_union`)."""
    out: list = []
    current = data
    for part in loc:
        if isinstance(current, dict) and part in current:
            out.append(part)
            current = current[part]
        elif isinstance(current, list) and isinstance(part, int) and part < len(current):
            out.append(part)
            current = current[part]
        elif from_union(part):
            continue  # a union member's name, not a key of the document
        else:
            out.append(part)
            current = None
    return tuple(out)


# -- rendering -----------------------------------------------------------------------------------

def from_union(part: object) -> bool:
    """Whether a location part names a union's member (`list[str]`, `FeatureOverride`)."""
    return isinstance(part, str) and ("[" in part or part[:1].isupper())


def format_path(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top)"


def snippet(text: str, line: int, col: int, width: int, note: str | None = None) -> list[str]:
    """The line with a caret under the spot, as compilers print it."""
    lines = text.splitlines()
    if not lines:
        return []
    if line > len(lines):  # the end of the text: show its last line
        line, col = len(lines), len(lines[-1]) + 1
    source_line = lines[line - 1].replace("\t", " ")
    gutter = len(str(line))
    width = max(1, min(width, len(source_line) - col + 1))
    caret = " " * (col - 1) + "^" * width + (f" {note}" if note else "")
    return [f"{' ' * gutter} |", f"{line} | {source_line}", f"{' ' * gutter} | {caret}"]


def render(problems: list[Problem], text: str, source: str, smap: SourceMap) -> str:
    """Every problem, in line order, each with its spot shown."""
    placed = []
    for p in problems:
        line, col, width = p.spot or smap.locate(p.path, p.at_key)
        placed.append(((line, col), f"{source}:{line}:{col} {format_path(p.path)}: {p.message}",
                       snippet(text, line, col, width)))
    placed.sort(key=lambda item: item[0])
    blocks = ["\n".join([head, *lines]) for _, head, lines in placed]
    count = len(placed)
    blocks.append(f"{source}: {count} problem{'s' if count > 1 else ''}; nothing was applied")
    return "\n".join(blocks)
