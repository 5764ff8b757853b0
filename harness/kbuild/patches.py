"""Patch series: an mbox, a directory of `git format-patch` files, or a quilt
series file, applied in order onto a copy of a tree.

Parsing is pure (unit-tested on recorded series); applying uses GNU patch
with a dry run first, so a patch that does not apply is named with its
subject, file and the hunk that failed, and nothing is half-applied.
"""

from __future__ import annotations

import email
import email.policy
import mailbox
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UsageError
from harness.util import run

_SUBJECT_TAG = re.compile(r"^\s*(?:\[[^\]]*\]\s*)+")
_COVER = re.compile(r"\[[^\]]*\b0+/\d+\s*\]")


@dataclass(frozen=True)
class Patch:
    subject: str
    source: str      # file, with the message number for an mbox: series.mbox#2
    diff: str        # the whole message or file; patch(1) skips the prose


def subject_of(raw_subject: str) -> str:
    """'[PATCH v3 2/5] mm: foo' -> 'mm: foo'."""
    return _SUBJECT_TAG.sub("", " ".join(raw_subject.split()))


def _has_diff(text: str) -> bool:
    return re.search(r"^(?:diff --git |--- \S)", text, re.M) is not None


def _message_text(msg) -> str:
    if msg.is_multipart():
        parts = [p.get_payload(decode=True) or b"" for p in msg.walk()
                 if p.get_content_type() in ("text/plain", "text/x-diff", "text/x-patch")]
        body = b"\n".join(parts)
    else:
        body = msg.get_payload(decode=True) or b""
    return body.decode(errors="replace")


def from_mbox(path: Path) -> list[Patch]:
    """Every message with a diff, in mbox order; the cover letter (0/N) and
    replies without a diff are skipped."""
    out = []
    box = mailbox.mbox(str(path), factory=lambda f: email.message_from_binary_file(
        f, policy=email.policy.compat32))  # type: ignore[call-overload]
    for n, msg in enumerate(box, 1):
        subject = str(msg.get("Subject", ""))
        text = _message_text(msg)
        if _COVER.search(subject) or not _has_diff(text):
            continue
        out.append(Patch(subject_of(subject), f"{path}#{n}", text))
    return out


def read_text(path: Path) -> str:
    """A patch file's text; one that is not text, or empty, is bad input."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read the patch {path}: {e.strerror}") from None
    if not data.strip():
        raise UsageError(f"{path} is empty: a patch series needs patches (git format-patch "
                         f"files, an mbox or a quilt series)")
    if b"\0" in data[:65536]:
        raise UsageError(f"{path} is a binary file, not a patch: give git format-patch "
                         f"files, an mbox or a quilt series")
    return data.decode(errors="replace")


def from_file(path: Path) -> Patch:
    """One patch file; it must hold a diff."""
    text = read_text(path)
    m = re.search(r"^Subject: (.*(?:\n[ \t].*)*)", text, re.M)
    subject = subject_of(m.group(1)) if m else path.name
    if not _has_diff(text):
        raise UsageError(f"{path} holds no diff ('diff --git' or '--- a/FILE' lines): "
                         f"it is not a patch")
    return Patch(subject, str(path), text)


def _is_cover(path: Path) -> bool:
    """git format-patch --cover-letter's 0000 file: prose, no diff."""
    if path.name.startswith("0000-cover-letter"):
        return True
    m = re.search(r"^Subject: (.*)", read_text(path), re.M)
    return bool(m and _COVER.search(m.group(1)))


def from_quilt(series: Path) -> list[Patch]:
    out = []
    for line in series.read_text().splitlines():
        name = line.split("#", 1)[0].split()
        if name:
            p = series.parent / name[0]
            if not p.exists():
                raise UsageError(f"quilt series {series} names {name[0]}, which does not exist")
            out.append(from_file(p))
    return out


def load(spec: str) -> list[Patch]:
    """An mbox file, a quilt series file, a single patch, or a directory of
    format-patch files (*.patch, in name order) or with a quilt 'series'."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / "series").exists():
            return from_quilt(path / "series")
        files = sorted(path.glob("*.patch")) or sorted(path.glob("*.diff"))
        files = [f for f in files if f.is_file() and not _is_cover(f)]
        if not files:
            raise UsageError(f"no *.patch files or quilt 'series' in {path}")
        return [from_file(f) for f in files]
    if not path.is_file():
        raise UsageError(f"patch series '{spec}' not found: give an mbox, a directory of "
                         f"format-patch files or a quilt series file")
    if path.name == "series":
        return from_quilt(path)
    head = read_text(path)[:5]
    patches = from_mbox(path) if head.startswith("From ") else [from_file(path)]
    if not patches:
        raise UsageError(f"no patch with a diff in {spec}")
    return patches


class PatchError(UsageError):
    """A patch that does not apply: the user's series, so bad input (exit 2)."""


def failed_hunks(output: str) -> str:
    """patch(1)'s complaints, each with the file it was patching."""
    current, out = "", []
    for line in output.splitlines():
        line = line.strip()
        if line.startswith(("patching file ", "checking file ")):
            current = line.split(" ", 2)[2]
        elif line.startswith(("|--- a/", "--- a/")):
            current = line.split("a/", 1)[1].split()[0]   # a file patch cannot find
        elif any(k in line for k in ("FAILED", "can't find file", "malformed", "Reversed",
                                     "does not exist", "ignored")):
            out.append(f"{current}: {line}" if current and current not in line else line)
    return "; ".join(out[:4]) or (output.strip().splitlines() or ["no output"])[-1]


def apply(tree: Path, patches: list[Patch], log: Path, onto: str = "") -> None:
    """Apply each patch to tree (a copy of the user's), or raise naming it
    (and onto, the tree the user named, if given)."""
    with open(log, "w") as fh:
        for i, p in enumerate(patches, 1):
            for dry in (True, False):
                args = ["patch", "-p1", "-N", "-f", "-d", str(tree)]
                proc = subprocess.run(args + (["--dry-run"] if dry else []), input=p.diff,
                                      text=True, capture_output=True)
                fh.write(f"$ {' '.join(args)} < {p.source}\n{proc.stdout}{proc.stderr}")
                if proc.returncode != 0:
                    raise PatchError(
                        f"patch {i}/{len(patches)} '{p.subject}' ({p.source}) does not apply"
                        f"{' to ' + onto if onto else ''}: "
                        f"{failed_hunks(proc.stdout + proc.stderr)}"
                        + ("" if onto else f"; the tree was not changed (log: {log})"))


_FILE = re.compile(r"^(?:--- |\+\+\+ )(?:\"?[^/\s]+/)(\S+)|^diff --git a/(\S+) b/(\S+)", re.M)


def touched(series: list[Patch]) -> set[str]:
    """The files (relative to the tree, as patch -p1 reads them) a series names."""
    out: set[str] = set()
    for p in series:
        for m in _FILE.finditer(p.diff):
            out.update(g for g in m.groups() if g and g != "null")
    return out


def check_applies(tree: Path, series: list[Patch], scratch: Path) -> None:
    """Each patch applies, in order, or PatchError names the patch and the
    hunk: tried on a copy of only the files the series touches (seconds,
    not a copy of the tree), before any build starts."""
    shadow = scratch / "tree"
    shadow.mkdir(parents=True)
    for rel in touched(series):
        src = tree / rel
        if src.is_file() and tree.resolve() in src.resolve().parents:
            (shadow / rel).parent.mkdir(parents=True, exist_ok=True)
            (shadow / rel).write_bytes(src.read_bytes())
    apply(shadow, series, scratch / "patches.log", onto=str(tree))


def copy_tree(src: Path, dest: Path) -> None:
    """A copy to patch: hard links, since GNU patch replaces a file it
    changes instead of writing into it, so the original stays as it was."""
    run(["cp", "-al", str(src), str(dest)], what=f"copying {src}")
