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


# The kdump file's own header (makedumpfile's diskdump_mod.h, 64-bit guests).
KDUMP_SIGNATURE = b"KDUMP   "
UTS = 12                    # struct new_utsname after signature and version
UTS_LEN = 65
UTS_FIELDS = ("sysname", "nodename", "release", "version", "machine", "domainname")
GEOMETRY = struct.Struct("<iiI")    # block_size, sub_hdr_size, bitmap_blocks
GEOMETRY_AT = 428
SUB_HEADER = struct.Struct("<QiiQQQQ")  # phys_base .. offset_vmcoreinfo, size_vmcoreinfo
PAGE_DESC = struct.Struct("<QIIQ")  # offset, size, flags, page_flags


class Unreadable(ValueError):
    """Not a vmcore kharness can open, or one cut short."""


def info(path: Path) -> dict[str, str]:
    """The VMCOREINFO a kdump file carries (OSRELEASE, BUILD-ID, SYMBOL(...),
    ...); checks that every page the file lists is in it."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(GEOMETRY_AT + GEOMETRY.size)
        if not head.startswith(KDUMP_SIGNATURE) or len(head) < GEOMETRY_AT + GEOMETRY.size:
            raise Unreadable(f"{path} is not a kdump-compressed vmcore")
        block, sub_blocks, bitmap_blocks = GEOMETRY.unpack_from(head, GEOMETRY_AT)
        if not (4096 <= block <= 1 << 20) or bitmap_blocks < 2:
            raise Unreadable(f"{path} has a damaged kdump header")
        fh.seek(block)
        sub = fh.read(SUB_HEADER.size)
        if len(sub) < SUB_HEADER.size:
            raise Unreadable(f"{path} is truncated ({size} bytes, inside its header)")
        offset, length = SUB_HEADER.unpack(sub)[5:7]
        fh.seek(offset)
        text = fh.read(length)
        if len(text) < length:
            raise Unreadable(f"{path} is truncated ({size} bytes, inside its header)")
        # The second half of the bitmap marks the pages written: one
        # descriptor each, after the bitmaps; the last one's data ends the file.
        half = bitmap_blocks // 2 * block
        fh.seek((1 + sub_blocks) * block + half)
        pages = int.from_bytes(fh.read(half), "little").bit_count()
        descs = (1 + sub_blocks + bitmap_blocks) * block
        fh.seek(descs + (pages - 1) * PAGE_DESC.size)
        last = fh.read(PAGE_DESC.size)
        if len(last) < PAGE_DESC.size:
            raise Unreadable(f"{path} is truncated ({size} bytes, inside its page table)")
        data_at, data_size = PAGE_DESC.unpack(last)[:2]
        if data_at + data_size > size:
            raise Unreadable(f"{path} is truncated: {size} bytes of "
                             f"{data_at + data_size} its {pages} pages need")
    return dict(line.split("=", 1) for line in text.decode(errors="replace").splitlines()
                if "=" in line)


def label(path: Path, machine: str) -> None:
    """Fill the header's utsname as the kernel would: QEMU leaves it blank
    (and 'Unknown' as the machine on arm64), and libkdumpfile, drgn's
    reader, takes the architecture from there, refusing the file without."""
    release = info(path).get("OSRELEASE", "unknown")
    values = {"sysname": "Linux", "release": release, "version": "#1 (from VMCOREINFO)",
              "machine": machine}
    with open(path, "r+b") as fh:
        for i, name in enumerate(UTS_FIELDS):
            if name in values:
                fh.seek(UTS + i * UTS_LEN)
                fh.write(values[name].encode()[:UTS_LEN - 1].ljust(UTS_LEN, b"\0"))


def machine_of(path: Path) -> str:
    with open(path, "rb") as fh:
        fh.seek(UTS + UTS_FIELDS.index("machine") * UTS_LEN)
        return fh.read(UTS_LEN).split(b"\0")[0].decode(errors="replace")
