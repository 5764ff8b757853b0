"""struct page as a dump shows it: what /proc/kpagecount and kpageflags
cannot (the _mapcount and _refcount as stored, the compound head, mapping).

Works on a drgn Program from harness.debug.program(), with the kernel's
DWARF or with only kallsyms and our modules' types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

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
