"""Framing between the parent and its workers: 4-byte big-endian length + one JSON object."""

from __future__ import annotations

import json
import os
import struct
from typing import Any

_HEADER = struct.Struct(">I")
MAX_MESSAGE = 64 * 1024 * 1024


class ChannelClosed(EOFError):
    """The other side went away (worker died or parent exited)."""


def _read_exact(fd: int, n: int) -> bytes:
    chunks: list[bytes] = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise ChannelClosed("channel closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def send(fd: int, msg: dict[str, Any]) -> None:
    data = json.dumps(msg).encode()
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def recv(fd: int) -> dict[str, Any]:
    (n,) = _HEADER.unpack(_read_exact(fd, _HEADER.size))
    if n > MAX_MESSAGE:
        raise ChannelClosed(f"oversized message ({n} bytes)")
    return json.loads(_read_exact(fd, n))
