"""Length-prefixed pickle frames between the proxy process and its monitor process (a pipe).

A frame is (kind, data): kinds are gateway.link.messages.ToMonitor / FromMonitor.

Both ends are this program, started together: pickle is safe here and the fastest way to
move lists of (bytes, header lists) across.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from enum import IntEnum

_HEADER = struct.Struct(">I")


def frame(kind: IntEnum, data: object = None) -> bytes:
    body = pickle.dumps((kind, data), protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader) -> tuple[IntEnum, object] | None:
    """The next (kind, data), or None at the end of the stream."""
    try:
        size = _HEADER.unpack(await reader.readexactly(_HEADER.size))[0]
        return pickle.loads(await reader.readexactly(size))
    except asyncio.IncompleteReadError:
        return None
