"""The kernel's own selftests for the seeds' drivers, by collection (the
folder under tools/testing/selftests): perf_events (the ring buffer and AUX
area: map, remap, unmap, holes), drivers/dma-buf (udmabuf), vfio (vfio-pci
on the guest's ivshmem BAR behind a virtual IOMMU). Built from the kernel's
own source, or --selftests-source; a tree without a collection skips its
tests naming the tree. One result a binary and one a subtest, named
test_selftest[<collection>:<binary>/<subtest>], as mm's are
(harness/upstream.py has the catalogue; mm's own suite is mm-selftests).

    kharness run --suite selftests:perf_events,drivers/dma-buf --kernel debian:7.3
    pytest tests/kernel/selftests -k perf_events --kernel debian:7.2 --arch arm64
"""

from __future__ import annotations

import pytest
from conftest import run_selftest
from conftest import selftest_param as _param

from harness import upstream

CATALOGUE = [t for t in upstream.CATALOGUE if t.collection != "mm"]


@pytest.mark.parametrize("test", [_param(t) for t in CATALOGUE])
def test_selftest(test, request):
    run_selftest(request, test)
