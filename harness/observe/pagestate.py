"""struct page as a dump shows it: what /proc/kpagecount and kpageflags
cannot (the _mapcount and _refcount as stored, the compound head, mapping).

Works on a drgn Program from harness.debug.program(), with the kernel's
DWARF or with only kallsyms and our modules' types."""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness.guest import Result

if TYPE_CHECKING:
    import drgn


@dataclass(frozen=True)
class PageState:
    pfn: int
    refcount: int       # page->_refcount
    mapcount: int       # page->_mapcount + 1: the PTEs that map this page
    flags: str          # decoded page->flags: PG_reserved|PG_head|...
    mapping: int        # page->mapping (low bits: anon, movable)
    head: int           # the pfn of its compound head; its own if none

    def flag(self, name: str) -> bool:
        return f"PG_{name}" in self.flags.split("|")


def page_state(prog: drgn.Program, pfn: int) -> PageState | None:
    """The struct page of pfn, or None where the pfn has none (a BAR, a
    hole: no memory behind its place in vmemmap)."""
    import drgn
    from drgn.helpers.linux.mm import compound_head, decode_page_flags, page_to_pfn, pfn_to_page

    page = pfn_to_page(prog, pfn)
    try:
        refcount = page._refcount.counter.value_()
    except drgn.FaultError:
        return None
    return PageState(
        pfn=pfn,
        refcount=refcount,
        mapcount=page._mapcount.counter.value_() + 1,
        flags=decode_page_flags(page),
        mapping=page.mapping.value_(),
        head=page_to_pfn(compound_head(page)).value_(),
    )


class Live:
    """A running guest's memory as drgn sees it, mid-test: state() pauses
    the guest, dumps it beside its boot's logs, resumes it and opens the
    dump (kallsyms and our modules' types: no download). holding() keeps a
    khmap mapping alive meanwhile (KH_HOLD)."""

    def __init__(self, guest, kernel, modules: dict[str, Path], workdir: Path):
        self.guest = guest
        self.kernel = kernel
        self.modules = modules
        self.workdir = workdir
        self.dumps: list[Path] = []

    def state(self) -> drgn.Program:
        from harness import debug
        from harness.vm import kdump

        path = self.workdir / f"state-{len(self.dumps) + 1}.vmcore"
        self.dumps.append(path)
        self.guest.dump(path)
        dump = debug.Dump(path, self.kernel, self.modules, kdump.info(path))
        prog, _ = debug.program(dump, "kallsyms")
        return prog

    def page(self, prog: drgn.Program, pfn: int) -> PageState | None:
        return page_state(prog, pfn)

    @contextmanager
    def holding(self, argv: list[str], timeout: float = 60.0) -> Iterator[Held]:
        """Run argv (a khmap command) in the background with KH_HOLD; the
        block runs while it holds its mapping; then it goes on and ends,
        and Held.result has its output."""
        tag = f"/tmp/kh-hold-{len(self.dumps)}-{time.monotonic_ns()}"
        self.guest.run(["sh", "-c", f"touch {tag}; (KH_HOLD={tag} {shlex.join(argv)} "
                                    f">{tag}.out 2>&1; echo $? >{tag}.rc) </dev/null "
                                    f">/dev/null 2>&1 &"], check=True)
        held = Held(self.guest, tag)
        held.wait(f"{tag}.held", timeout, what=f"{argv[0]} to reach its hold point")
        try:
            yield held
        finally:
            self.guest.run(["rm", "-f", tag], check=True)
            held.wait(f"{tag}.rc", timeout, what=f"{argv[0]} to end")
            held.collect(" ".join(argv))

    def close(self) -> None:
        for path in self.dumps:
            path.unlink(missing_ok=True)


class Held:
    def __init__(self, guest, tag: str):
        self.guest = guest
        self.tag = tag
        self.result: Result | None = None

    def wait(self, path: str, timeout: float, *, what: str) -> None:
        deadline = time.monotonic() + timeout
        while self.guest.run(["test", "-e", path]).status != 0:
            if self.guest.run(["test", "-e", f"{self.tag}.rc"]).status == 0:
                out = self.guest.run(["cat", f"{self.tag}.out"]).stdout
                raise AssertionError(f"gave up waiting for {what}: it ended first:\n{out}")
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up waiting for {what} after {timeout:.0f}s")
            time.sleep(0.05)

    def collect(self, cmd: str) -> None:
        out = self.guest.run(["cat", f"{self.tag}.out"], check=True).stdout
        rc = int(self.guest.run(["cat", f"{self.tag}.rc"], check=True).stdout.strip() or -1)
        self.guest.run(["rm", "-f", f"{self.tag}.out", f"{self.tag}.rc", f"{self.tag}.held"])
        self.result = Result(cmd, rc, out, "", 0.0).check()
