"""Which accelerator may run guests here: KVM where it boots them, TCG
everywhere. /dev/kvm that opens is not enough (on these machines KVM
guests hang or abort), so the first auto boot is the probe: its verdict is
cached per host kernel for a day (accel-probe.json in the cache)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from harness.arches import Arch
from harness.cache import write_atomic
from harness.util import cache_root

KVM_DEADLINE = 8.0          # first kernel console bytes under KVM, or it hangs
ACCEL_PROBE_MAX_AGE = 24 * 3600
KVM_PROBE_SAYS_NO = "KVM does not boot guests on this host"


def _probe_file() -> Path:
    return cache_root() / "accel-probe.json"


def kvm_known() -> bool | None:
    """The cached verdict on KVM for this host kernel, if fresh and sound."""
    try:
        d = json.loads(_probe_file().read_text())
        if not isinstance(d, dict) or not isinstance(d.get("kvm"), bool):
            return None
        if time.time() - float(d.get("time", 0)) > ACCEL_PROBE_MAX_AGE:
            return None
    except (OSError, ValueError, TypeError):
        return None
    return d["kvm"] if d.get("host") == os.uname().release else None


def kvm_unusable(arch: Arch) -> str | None:
    """Why guests of this arch cannot use KVM here, or None if they may
    (untried: the next auto boot is the probe)."""
    if not arch.native:
        return f"an {arch} guest on this host runs under TCG only"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is absent or not accessible"
    if kvm_known() is False:
        try:
            why = json.loads(_probe_file().read_text()).get("why", "")
        except (OSError, ValueError):
            why = ""
        return f"{KVM_PROBE_SAYS_NO} (cached probe: {why})"
    return None


def remember_kvm(ok: bool, why: str) -> None:
    write_atomic(_probe_file(), json.dumps({"kvm": ok, "why": why, "time": time.time(),
                                            "host": os.uname().release}))
