"""ndctl's own tests of device-dax and /dev/mem: the part of ndctl's
destructive `dax` suite that runs on a kernel without nfit_test, built
from ndctl's release (harness/kbuild/ndctl.py). They act on the "e820"
bus, the legacy persistent memory the kernel makes of RAM memmap= reserves,
which is x86's: the guest here has 2 GiB of RAM below QEMU's PCI hole and
3 GiB from 4 GiB, all of it pmem (device-dax's 1 GiB alignment writes and
reads back twice its alignment after the namespace's info block). Exit 0
passes, 77 is ndctl's skip, anything else fails, with what the test said.

    kharness run --suite ndctl --kernel debian:6.12
    pytest tests/kernel/ndctl --kernel debian:7.3

docs/selftests.md says which of ndctl's other tests could run where, and
why they do not here.
"""

from __future__ import annotations

import json

import pytest
from conftest import PMEM_NEEDS, guest_if_kernel_has

from harness.errors import KhError
from harness.kbuild import ndctl
from harness.results.matrix import BESIDE
from harness.vm.machine import PMEM_MIN, PMEM_ROOT

# --pmem brings the pmem modules (the arch's legacy one, nd_e820, among
# them) and Debian's ndctl, whose libraries the tests load.
LEGACY_PMEM = {"memory": 5120, "append": "memmap=3G!4G", "pmem": PMEM_MIN}
pytestmark = [pytest.mark.qemu, pytest.mark.guest(**LEGACY_PMEM)]
TIMEOUT = 900       # device-dax writes and reads 2 GiB under TCG at 1 GiB alignment
SKIP = 77           # ndctl's tests' exit status for a skip
E820 = "/sys/devices/platform/e820_pmem"
NEEDS = (*PMEM_NEEDS, "CONFIG_X86_PMEM_LEGACY")     # legacy pmem: the e820 bus
# The matrix row each sits beside: the scenario of the same driver.
BESIDE_SCENARIO = {"dax-dev": "DD1", "device-dax": "DD1", "revoke_devmem": "DM1"}


@pytest.fixture(scope="session")
def ndctl_tests(kh_pool) -> ndctl.NdctlTests:
    """ndctl's tests for the suite's guest arch, built once."""
    arch = kh_pool.prepared().kernel.arch
    if arch.pmem_legacy is None:
        pytest.skip(f"ndctl's dax tests use the e820 bus, legacy pmem, which {arch} has not")
    try:
        with kh_pool.uncaptured():
            return ndctl.build(arch)
    except ndctl.Unbuildable as e:     # a guest of another arch than the host's
        pytest.skip(str(e))
    except KhError as e:
        pytest.fail(f"ndctl's tests could not be built: {e}", pytrace=False)


@pytest.mark.parametrize("name", ndctl.TESTS)
def test_ndctl_dax(name, ndctl_tests, request):
    request.node.user_properties.append((BESIDE, BESIDE_SCENARIO[name]))
    guest = guest_if_kernel_has(request, NEEDS)
    assert guest.run(["test", "-d", E820]).status == 0, \
        f"no e820 pmem in the guest, though its kernel has {NEEDS[-1]} and {LEGACY_PMEM['append']}"
    # Each starts from the namespace as it boots, raw, whatever a test before
    # it in this guest (--fresh module or session) left it as.
    listed = json.loads(guest.run(["ndctl", "list", "-b", "e820", "-N"], check=True).stdout)
    for ns in listed if isinstance(listed, list) else [listed]:
        guest.run(["ndctl", "create-namespace", "-f", "-e", ns["dev"], "-m", "raw"], check=True)
    dest = f"/root/ndctl/{name}"
    guest.put(ndctl_tests.path(name), dest, 0o755)
    # device-dax's O_DIRECT file goes where it runs: not on the guest's
    # tmpfs (no O_DIRECT before 6.6), on the --pmem guest's ext4, as a disk.
    res = guest.run(["sh", "-c", f"cd {PMEM_ROOT}/ext4 && exec {dest}"], timeout=TIMEOUT)
    said = _said(res.stdout + res.stderr)
    if res.status == SKIP:
        pytest.skip(f"ndctl {ndctl_tests.version} {name} skipped: {said}")
    assert res.status == 0, f"ndctl {ndctl_tests.version} {name} exited {res.status}:\n{said}"


def _said(output: str, lines: int = 30) -> str:
    """What the test itself printed, without libndctl's and libdaxctl's
    debug log (the tests turn it on), its last lines."""
    own = [ln for ln in output.splitlines()
           if ln.strip() and not ln.startswith(("libndctl:", "libdaxctl:", " ", "{", "}"))]
    return "\n".join(own[-lines:]) or "(nothing)"
