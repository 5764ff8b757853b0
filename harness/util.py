"""Small shared pieces: the cache location, progress lines, running commands."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from harness import spawn
from harness.errors import KhError


def cache_root() -> Path:
    base = os.environ.get("KHARNESS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kharness")
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


SAFE = re.compile(r"[A-Za-z0-9._-]+")


def safe_name(text: str) -> str:
    """A folder name for text that any shell, URL or QEMU option takes as
    it is: letters, digits, '.', '_' and '-'. Text with anything else is
    spelt in that alphabet with a short hash of the original, so two
    texts never share a name; the readable text is recorded inside by
    whoever makes the folder."""
    if SAFE.fullmatch(text) and not text.startswith(("-", ".")):
        return text
    spelt = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.-")[:80]
    return f"{spelt or 'x'}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def artifact_name(test: str) -> str:
    """A test id (or name) as its artifact folder is named, in the safe
    alphabet: the plugin writes tests/<this>/ (the id itself in test-id
    inside), report merge and the dashboard find it by the name's suffix."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", test)


def legacy_artifact_name(test: str) -> str:
    """How kharness named artifact folders before 2026-12 (brackets kept):
    older nights on a dashboard."""
    return re.sub(r"[^\w.\-\[\]]+", "_", test)


def progress(msg: str) -> None:
    """One line on stderr for long work; stdout stays for results."""
    print(f"kharness: {msg}", file=sys.stderr, flush=True)


@contextmanager
def step(what: str):
    t0 = time.monotonic()
    progress(f"{what} ...")
    yield
    progress(f"{what}: done in {time.monotonic() - t0:.1f}s")


def run(cmd: list[str], *, what: str, cwd: Path | None = None, env: dict | None = None,
        log: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command, keep its output, and on failure raise with its last
    lines. Interrupted, we stop it (and what it started) before going on:
    no dpkg-deb or tar left writing into a cache entry."""
    try:
        proc = spawn.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, errors="replace")
    except FileNotFoundError:
        raise KhError(f"{cmd[0]} not found, needed for {what}: run ci/setup.sh") from None
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"$ {' '.join(cmd)}\n{proc.stdout}")
    if check and proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-25:])
        where = f" (full log: {log})" if log else ""
        raise KhError(f"{what} failed with exit status {proc.returncode}{where}", detail=tail)
    return proc


def write_out(path: Path, data: bytes | str) -> None:
    """Write a result file; a failure (a full disk) names the file."""
    try:
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data)
    except OSError as e:
        path.unlink(missing_ok=True)   # half a file is worse than none
        raise OSError(e.errno, e.strerror, str(path)) from None


def digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:16]


def disk_size(path: Path) -> int:
    """Bytes path takes on disk (sparse files as they are), on its own file
    system only, links not followed. A file with several hard links counts
    its share (a build's src/ shares its files with the source tree's
    entry): the sizes of the cache's entries add up to the cache's."""
    try:
        st = path.lstat()
    except OSError:
        return 0
    total, dev, stack = st.st_blocks * 512, st.st_dev, [path]
    while stack:
        try:
            it = os.scandir(stack.pop())
        except OSError:
            continue
        with it:
            for e in it:
                try:
                    s = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                if s.st_dev != dev:
                    continue
                total += s.st_blocks * 512 // max(s.st_nlink, 1) \
                    if not e.is_dir(follow_symlinks=False) else s.st_blocks * 512
                if e.is_dir(follow_symlinks=False):
                    stack.append(Path(e.path))
    return total
