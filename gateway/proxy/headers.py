"""Header rules of a transparent proxy: hop-by-hop removal, forwarding, request id, trace context."""

from __future__ import annotations

import os
import re

# RFC 9110 7.6.1 hop-by-hop headers, plus the de-facto Proxy-* family (checked by prefix).
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade",
})
# Request headers the gateway itself rewrites or frames, so the client's copy never goes upstream.
_REWRITTEN = frozenset({
    b"host", b"content-length", b"expect", b"x-request-id", b"traceparent",
    b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host",
})
_SANE_REQUEST_ID = re.compile(rb"[\x20-\x7e]{1,128}")
_TRACEPARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")


def new_request_id() -> bytes:
    return os.urandom(16).hex().encode()


def sane_request_id(value: bytes) -> bool:
    return _SANE_REQUEST_ID.fullmatch(value) is not None and value.strip() == value


def child_traceparent(incoming: bytes | None) -> bytes:
    """A traceparent for the upstream hop: same trace and flags, new span id (W3C Trace Context).

    An absent or invalid header starts a new sampled trace.
    """
    if incoming is not None:
        m = _TRACEPARENT.fullmatch(incoming.strip().lower())
        if m and m.group(1) != b"ff" and m.group(2) != b"0" * 32 and m.group(3) != b"0" * 16:
            if m.group(1) == b"00" and m.group(5):
                pass  # version 00 allows no extra fields: invalid, start fresh
            else:
                return b"00-%b-%b-%b" % (m.group(2), os.urandom(8).hex().encode(), m.group(4))
    return b"00-%b-%b-01" % (os.urandom(16).hex().encode(), os.urandom(8).hex().encode())


def connection_tokens(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Header names listed in Connection: they are hop-by-hop for this message only."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return frozenset(tokens)


class ForwardedRequest:
    """The upstream view of one client request's headers, built in one pass."""

    __slots__ = ("headers", "request_id", "content_length", "chunked", "forwarded_for")

    def __init__(self, scope: dict) -> None:
        client_headers: list[tuple[bytes, bytes]] = scope["headers"]
        out: list[tuple[bytes, bytes]] = []
        request_id = traceparent = host = forwarded_for = None
        content_length: int | None = None
        chunked = False
        listed = None
        for name, value in client_headers:  # ASGI servers give lower-case names
            if name in _REWRITTEN:
                if name == b"content-length":
                    content_length = int(value) if value.isdigit() else -1
                elif name == b"x-request-id":
                    request_id = value
                elif name == b"traceparent":
                    traceparent = value
                elif name == b"host":
                    host = value
                elif name == b"x-forwarded-for":
                    forwarded_for = value if forwarded_for is None else forwarded_for + b", " + value
                continue
            if name in HOP_BY_HOP or name.startswith(b"proxy-"):
                if name == b"transfer-encoding":
                    chunked = True
                elif name == b"connection":
                    listed = connection_tokens([(name, value)]) | (listed or frozenset())
                continue
            out.append((name, value))
        if listed:
            out = [(n, v) for n, v in out if n not in listed]
        if request_id is None or not sane_request_id(request_id):
            request_id = new_request_id()
        client = scope.get("client")
        peer = client[0].encode() if client else b"unknown"
        forwarded_for = peer if forwarded_for is None else forwarded_for + b", " + peer
        out.append((b"x-forwarded-for", forwarded_for))
        out.append((b"x-forwarded-proto", scope.get("scheme", "http").encode()))
        if host is not None:
            out.append((b"x-forwarded-host", host))
        out.append((b"x-request-id", request_id))
        out.append((b"traceparent", child_traceparent(traceparent)))
        self.headers = out
        self.request_id = request_id
        self.content_length = content_length
        self.chunked = chunked
        self.forwarded_for = forwarded_for


def response_headers(upstream_headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Upstream response headers minus hop-by-hop ones (names kept as the upstream spelled them)."""
    out = []
    listed: frozenset[bytes] | None = None
    for name, value in upstream_headers:
        lname = name.lower()
        if lname in HOP_BY_HOP or lname.startswith(b"proxy-") or lname == b"x-request-id":
            if lname == b"connection":
                listed = connection_tokens([(name, value)])
            continue
        out.append((name, value))
    if listed:
        out = [(n, v) for n, v in out if n.lower() not in listed]
    return out
