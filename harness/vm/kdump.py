"""makedumpfile's flattened format, reassembled: QEMU 7.2 writes a
kdump-compressed dump as a stream of (offset, size, bytes) records (for
pipes; its `reassembled` option came in 8.2). crash and libkdumpfile read
the plain kdump file, which is those records written at their offsets
(what `makedumpfile -R` does)."""

from __future__ import annotations

import re
import struct
from pathlib import Path

from harness import arches

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


ZLIB = 0x1                  # DUMP_DH_COMPRESSED_ZLIB
HEADER_FIELDS = struct.Struct("<iiII")  # block_size, sub_hdr_size, bitmap_blocks, max_mapnr
SUB_OFFSETS = (32, 48, 64)  # offset_vmcoreinfo, offset_note, offset_eraseinfo
SUB_MAX_MAPNR = 96          # max_mapnr_64


def regranulate(path: Path, page: int) -> None:
    """Rewrite a kdump file in blocks of the kernel's page size. QEMU writes
    arm64 dumps in 64 KiB blocks whatever granule the guest runs with;
    libkdumpfile numbers the file's pages by VMCOREINFO's PAGESIZE, so with
    4 KiB pages every read lands on the wrong block ("Excluded page")."""
    with open(path, "rb") as src:
        block0 = src.read(GEOMETRY_AT + HEADER_FIELDS.size)
        block, sub_blocks, bitmap_blocks, _ = HEADER_FIELDS.unpack_from(block0, GEOMETRY_AT)
        if block == page:
            return
        if block % page:
            raise Unreadable(f"{path}: blocks of {block} bytes do not split into pages of {page}")
        ratio = block // page
        src.seek(0)
        header = bytearray(src.read(block)[:page])
        sub = bytearray(src.read(sub_blocks * block))
        half = bitmap_blocks // 2 * block
        valid, dumped = src.read(half), src.read(half)
        old = [pfn for pfn in _bits(dumped)]
        descs = [PAGE_DESC.unpack(src.read(PAGE_DESC.size)) for _ in old]
        max_mapnr = struct.unpack_from("<Q", sub, SUB_MAX_MAPNR)[0] * ratio

        # The new layout: header, sub-header area, two bitmaps, descriptors, data.
        new_sub_blocks = -(-len(sub.rstrip(b"\0")) // page)
        shift = page - block
        for at in SUB_OFFSETS:
            value = struct.unpack_from("<Q", sub, at)[0]
            if value:
                struct.pack_into("<Q", sub, at, value + shift)
        struct.pack_into("<Q", sub, SUB_MAX_MAPNR, max_mapnr)
        new_half = -(-max_mapnr // (8 * page)) * page
        new_bitmap_blocks = 2 * new_half // page
        struct.pack_into("<iiII", header, GEOMETRY_AT, page, new_sub_blocks, new_bitmap_blocks,
                         min(max_mapnr, 0xFFFFFFFF))
        new_valid, new_dumped = bytearray(new_half), bytearray(new_half)
        for pfn in _bits(valid):
            _set_range(new_valid, pfn * ratio, ratio)
        for pfn in old:
            _set_range(new_dumped, pfn * ratio, ratio)
        desc_at = (1 + new_sub_blocks + new_bitmap_blocks) * page
        data_at = desc_at + len(old) * ratio * PAGE_DESC.size

        tmp = path.with_name(path.name + ".4k")
        with open(tmp, "wb") as out:
            out.write(header.ljust(page, b"\0"))
            out.write(bytes(sub[:new_sub_blocks * page]).ljust(new_sub_blocks * page, b"\0"))
            _write_sparse(out, new_valid, page)     # mostly holes: the
            _write_sparse(out, new_dumped, page)    # PCI window above RAM
            out.seek(data_at)
            table = _split_pages(src, out, descs, ratio, page, path)
            out.seek(desc_at)
            out.write(table)
    tmp.replace(path)


def _split_pages(src, out, descs, ratio: int, page: int, path: Path) -> bytes:
    """Each block the descriptors name, read from src, written to out as
    `ratio` pages (zlib where it pays, one copy of the zero page): the new
    descriptor table."""
    import zlib

    table = bytearray()
    zero_at, zero, zero_page = None, b"", bytes(page)
    for offset, size, flags, _ in descs:
        src.seek(offset)
        data = src.read(size)
        if flags & ZLIB:
            data = zlib.decompress(data)
        elif flags:
            raise Unreadable(f"{path}: a page compressed other than with zlib "
                             f"(flags {flags:#x})")
        for i in range(ratio):
            piece = data[i * page:(i + 1) * page]
            if piece == zero_page:
                if zero_at is None:
                    zero_at, zero = out.tell(), zlib.compress(piece, 1)
                    out.write(zero)
                table += PAGE_DESC.pack(zero_at, len(zero), ZLIB, 0)
                continue
            packed = zlib.compress(piece, 1)
            if len(packed) < page:
                table += PAGE_DESC.pack(out.tell(), len(packed), ZLIB, 0)
                out.write(packed)
            else:
                table += PAGE_DESC.pack(out.tell(), page, 0, 0)
                out.write(piece)
    return bytes(table)


def _bits(bitmap: bytes):
    """The set bits' numbers, makedumpfile's order (bit 0 of byte 0 first)."""
    for m in re.finditer(rb"[^\x00]", bitmap):
        i, byte = m.start(), bitmap[m.start()]
        for b in range(8):
            if byte >> b & 1:
                yield i * 8 + b


def _write_sparse(out, data: bytes | bytearray, chunk: int) -> None:
    """data at the file's position, its chunks of zeros left as holes."""
    view = memoryview(data)
    zeros = bytes(chunk)
    for at in range(0, len(data), chunk):
        piece = view[at:at + chunk]
        if piece != zeros[:len(piece)]:
            out.write(piece)
        else:
            out.seek(len(piece), 1)


def _set_range(bitmap: bytearray, first: int, count: int) -> None:
    for n in range(first, first + count):
        bitmap[n // 8] |= 1 << (n % 8)


def finish(path: Path, machine: str) -> None:
    """A dump QEMU wrote, made one libkdumpfile (drgn) and crash read."""
    regranulate(path, int(info(path).get("PAGESIZE", "4096")))
    label(path, machine)


EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
PHDR = struct.Struct("<IIQQQQQQ")
PT_LOAD, PT_NOTE = 1, 4


def readable_release(release: str) -> bool:
    """Whether libkdumpfile takes this release: it wants x.y.z, and reads
    the release from the guest's memory (an -rc kernel's 7.3-amd64 is not)."""
    return re.match(r"\d+\.\d+\.\d+", release) is not None


def to_elf(path: Path, dest: Path) -> None:
    """The kdump file as an ELF core, which drgn reads itself (no
    libkdumpfile): a PT_LOAD a run of pages, the dump's notes (VMCOREINFO
    among them) as PT_NOTE, pages of zeros left as holes."""
    import zlib

    with open(path, "rb") as src:
        head = src.read(UTS + len(UTS_FIELDS) * UTS_LEN + 64)
        block, sub_blocks, bitmap_blocks, _ = HEADER_FIELDS.unpack_from(head, GEOMETRY_AT)
        machine = head[UTS + UTS_FIELDS.index("machine") * UTS_LEN:].split(b"\0")[0].decode()
        src.seek(block)
        sub = src.read(SUB_HEADER.size + 16)
        note_at, note_size = struct.unpack_from("<QQ", sub, 48)
        src.seek(note_at)
        notes = src.read(note_size)
        half = bitmap_blocks // 2 * block
        src.seek((1 + sub_blocks) * block + half)
        pfns = list(_bits(src.read(half)))
        descs = [PAGE_DESC.unpack(src.read(PAGE_DESC.size)) for _ in pfns]
        runs: list[list[int]] = []           # [first pfn, count]
        for pfn in pfns:
            if runs and runs[-1][0] + runs[-1][1] == pfn:
                runs[-1][1] += 1
            else:
                runs.append([pfn, 1])
        phnum = 1 + len(runs)
        notes_at = EHDR.size + phnum * PHDR.size
        data_at = -(-(notes_at + len(notes)) // block) * block
        tmp = dest.with_name(dest.name + ".part")
        with open(tmp, "wb") as out:
            out.write(EHDR.pack(b"\x7fELF\x02\x01\x01".ljust(16, b"\0"), 4,
                                arches.get(machine).elf_machine, 1, 0, EHDR.size, 0, 0, EHDR.size,
                                PHDR.size, phnum, 0, 0, 0))
            out.write(PHDR.pack(PT_NOTE, 0, notes_at, 0, 0, len(notes), len(notes), 0))
            offset = data_at
            for first, count in runs:
                size = count * block
                out.write(PHDR.pack(PT_LOAD, 7, offset, 0, first * block, size, size, 0))
                offset += size
            out.write(notes)
            zero = bytes(block)
            out.seek(data_at)
            for offset_in, size, flags, _ in descs:
                src.seek(offset_in)
                data = src.read(size)
                if flags & ZLIB:
                    data = zlib.decompress(data)
                if data == zero:
                    out.seek(block, 1)
                else:
                    out.write(data)
            out.truncate()
    tmp.replace(dest)
