"""Pull the uncompressed ELF vmlinux out of an x86 bzImage.

Debian's kernels have CONFIG_PVH, so QEMU boots that ELF directly and skips
the in-guest decompression, which under TCG costs 2 s (ZSTD) to 6 s (XZ).
This is scripts/extract-vmlinux's method: find each known magic, try to
decompress from there, keep the first result that is an ELF file.
"""

from __future__ import annotations

import lzma
import subprocess
import zlib
from pathlib import Path

from harness.util import progress

MAGICS = (
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x1f\x8b\x08", "gzip"),
)


def _decompress(data: bytes, how: str) -> bytes | None:
    try:
        if how == "xz":
            return lzma.LZMADecompressor().decompress(data)
        if how == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)
        proc = subprocess.run(["zstd", "-dcq"], input=data, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL)
        return proc.stdout  # zstd complains about trailing bytes; the frame is whole
    except (lzma.LZMAError, zlib.error, FileNotFoundError):
        return None


def extract_vmlinux(image: Path, dest: Path) -> Path | None:
    data = image.read_bytes()
    for magic, how in MAGICS:
        start = data.find(magic)
        while start != -1:
            out = _decompress(data[start:], how)
            if out and out[:4] == b"\x7fELF":
                dest.write_bytes(out)
                return dest
            start = data.find(magic, start + 1)
    progress(f"no ELF payload found in {image}; booting the compressed image")
    return None
