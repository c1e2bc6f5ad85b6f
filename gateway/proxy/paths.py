"""Request paths made safe to match and forward: RFC 3986 normalisation, one policy for slashes.

Without it `/public/nginx/../../internal/secret` (or `%2e%2e`, `..%2f`) matched the route of
`/public/nginx` and reached the upstream's `/internal/`. Now, as Envoy's `normalize_path`:
- percent-encoded unreserved characters (letters, digits, `-._~`) are decoded, so `%2e` is `.`;
- dot segments are removed (RFC 3986 5.2.4): `/a/b/../c` is `/a/c`, `/../x` is `/x`;
- an encoded slash or backslash (`%2f`, `%5c`) or a raw backslash stays as sent, part of its
  segment (a model name may hold one: `/v2/models/org%2Fmodel/infer`), except next to a dot
  segment: a path that has one once they are read as separators (`/p/..%2f..%2finternal`) is
  refused with 400, since servers that decode them (nginx does) would climb out of the prefix.
The normalised path is matched against the routes and is what the upstream receives; every other
percent-encoding is forwarded as the client sent it. Paths with none of `%`, `\\` or `/.` (almost
all) cost one scan each for three byte strings.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

_UNRESERVED_ESCAPE = re.compile(rb"%(?:[46][1-9a-fA-F]|[57][0-9aA]|3[0-9]|2[dDeE]|5[fF]|7[eE])")
_SLASH_ESCAPE = re.compile(rb"%(?:2[fF]|5[cC])")


class UnsafePath(ValueError):
    """A path the gateway refuses to route (a dot segment hidden by an encoded slash)."""


def normalize(raw: bytes) -> bytes:
    """The raw request path (no query) in normal form; raises UnsafePath."""
    if b"%" not in raw and b"\\" not in raw and b"/." not in raw:
        return raw  # the common case: nothing to do
    if b"%" in raw:
        raw = _UNRESERVED_ESCAPE.sub(lambda m: bytes([int(m.group(0)[1:], 16)]), raw)
    if b"\\" in raw or _SLASH_ESCAPE.search(raw):
        as_separators = _SLASH_ESCAPE.sub(b"/", raw).replace(b"\\", b"/")
        if any(s in (b".", b"..") for s in as_separators.split(b"/")):
            raise UnsafePath("a dot segment next to an encoded slash or a backslash is not allowed")
    return remove_dot_segments(raw) if b"/." in raw else raw


def remove_dot_segments(path: bytes) -> bytes:
    """RFC 3986 5.2.4 for an absolute path: `.` segments dropped, `..` takes one back."""
    out: list[bytes] = []
    segments = path.split(b"/")
    for i, segment in enumerate(segments[1:], 1):
        last = i == len(segments) - 1
        if segment == b".":
            if last:
                out.append(b"")  # `/a/.` is `/a/`
        elif segment == b"..":
            if out:
                out.pop()
            if last:
                out.append(b"")
        else:
            out.append(segment)
    return b"/" + b"/".join(out)


def decoded(raw: bytes) -> str:
    """The path as routes are matched (percent-decoded, UTF-8), as ASGI servers give it."""
    return unquote(raw.decode("latin-1")) if b"%" in raw else raw.decode("latin-1")
