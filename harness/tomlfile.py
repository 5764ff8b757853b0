"""A TOML file of [[table]] entries read so that every mistake is one
UsageError with the file's real line number (tomllib gives no positions):
the nightly matrix's [[job]]s, the known issues' [[issue]]s."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from harness.errors import UsageError


class Reader:
    """A file's text and the line where each thing stands."""

    def __init__(self, path: Path, table: str, what: str, example: str):
        self.path, self.table = path, table
        try:
            data = path.read_bytes()
        except OSError as e:
            raise UsageError(f"cannot read {what} {path}: {e.strerror}") from None
        try:
            self.text = data.decode()
        except UnicodeDecodeError:
            raise UsageError(f"{path} is not a text file: {what} is TOML (see {example})") \
                from None
        self.lines = self.text.splitlines()
        self.tables_at = [n for n, line in enumerate(self.lines, 1)
                          if re.match(rf"\s*\[\[\s*{re.escape(table)}\s*\]\]", line)]

    def parse(self) -> dict[str, Any]:
        try:
            return tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as e:
            raise UsageError(f"{self.path}: {e}") from None

    def line_of(self, needle: str, entry: int | None = None) -> int:
        """The first line at or after entry number `entry`'s header holding
        needle as a key (`needle =`) or else anywhere; the header's line if none."""
        at = self.tables_at
        first = at[entry] if entry is not None and entry < len(at) else 1
        last = (at[entry + 1] - 1 if entry is not None and entry + 1 < len(at)
                else len(self.lines))
        window = list(enumerate(self.lines[first - 1:last], first))
        for n, line in window:
            if re.match(rf"\s*{re.escape(needle)}\s*=", line):
                return n
        return next((n for n, line in window if needle in line), first)

    def bad(self, what: str, needle: str, entry: int | None = None) -> UsageError:
        return UsageError(f"{self.path}:{self.line_of(needle, entry)}: {what}")
