"""makedumpfile's flattened format, reassembled: QEMU 7.2 writes a
kdump-compressed dump as a stream of (offset, size, bytes) records (for
pipes; its `reassembled` option came in 8.2). crash and libkdumpfile read
the plain kdump file, which is those records written at their offsets
(what `makedumpfile -R` does)."""

from __future__ import annotations

import struct
from pathlib import Path

SIGNATURE = b"makedumpfile\0"
HEADER = 4096                 # the flattened header's size
RECORD = struct.Struct(">qq")  # offset, size; big-endian; -1, -1 ends


class Truncated(ValueError):
    pass


def is_flat(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(len(SIGNATURE)) == SIGNATURE


def reassemble(flat: Path, dest: Path) -> None:
    with open(flat, "rb") as src, open(dest, "wb") as out:
        if not src.read(HEADER).startswith(SIGNATURE):
            raise ValueError(f"{flat} is not in makedumpfile's flattened format")
        while True:
            head = src.read(RECORD.size)
            if len(head) < RECORD.size:
                raise Truncated(f"{flat} ends before its end record")
            offset, size = RECORD.unpack(head)
            if offset == -1 and size == -1:
                return
            data = src.read(size)
            if len(data) < size:
                raise Truncated(f"{flat} ends inside a record")
            out.seek(offset)
            out.write(data)
