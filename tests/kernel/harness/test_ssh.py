"""SSH targets (--target ssh://...) against a real sshd: dropbear in one of
our QEMU guests, reached through a port forward (sshd.py)."""

from __future__ import annotations

import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import skip_unless_kernel_has
from sshd import Keys, SshdGuest, free_port, have_dropbear

from harness import addresses, remote, session
from harness.errors import KhError
from harness.guest import GuestCommandError, GuestDied
from harness.requests import GuestRequest
from harness.resources import data

KH = [sys.executable, "-m", "harness.cli"]
# the sshd is a QEMU guest running the host's dropbear: the host's arch
pytestmark = [pytest.mark.qemu, pytest.mark.host_arch]


@pytest.fixture(scope="module")
def sshd(kh_pool, tmp_path_factory):
    prep = kh_pool.prepared()
    skip_unless_kernel_has(prep.kernel, ("CONFIG_VIRTIO_NET",))  # the sshd guest's network
    why = have_dropbear()
    if why:     # ci/setup.sh installs them: a machine without them is set up wrong
        pytest.fail(why)
    work = tmp_path_factory.mktemp("sshd")
    guest = SshdGuest(prep, Keys.make(work / "keys"), free_port(), work)
    guest.start()
    yield guest
    guest.stop()


def access(sshd: SshdGuest, known: Path | None = None, **kw) -> addresses.Access:
    known = known or sshd.keys.known_hosts(sshd.port)
    return addresses.Access(addresses.parse_url(sshd.url), sshd.keys.user_key, known, **kw)


def target_of(sshd: SshdGuest, out: Path, **kw) -> tuple[session.Prepared, remote.SshTarget]:
    a = access(sshd, **kw)
    prep = session.prepare(GuestRequest(None, None, target=a.url, identity=a.identity,
                                        known_hosts=a.known_hosts, accept_new_host_key=a.accept_new,
                                        reboot_wait=a.reboot_wait), out)
    t = session.start(prep)
    assert isinstance(t, remote.SshTarget)
    return prep, t


def ssh_argv(sshd: SshdGuest, known: Path) -> list[str]:
    return ["--target", sshd.url, "--identity", str(sshd.keys.user_key),
            "--known-hosts", str(known)]


def junit_outcomes(path: Path) -> dict[str, str]:
    out = {}
    for case in ET.parse(path).iter("testcase"):
        kids = [c.tag for c in case if c.tag in ("failure", "error", "skipped")]
        out[case.get("name", "")] = kids[0] if kids else "passed"
    return out


def test_suite_runs_through_ssh(sshd, tmp_path):
    """The tests cannot tell: the same files pass on the SSH target, with
    kernel reports found in /dev/kmsg windows."""
    junit = tmp_path / "junit.xml"
    suite = data("suite")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(suite / "scenarios" / "test_ringbuf.py"),
         str(suite / "harness" / "test_guest.py"), "-k", "RB1 or report_in_window or put", "-q",
         "-p", "no:cacheprovider", f"--junitxml={junit}", "--out", str(tmp_path),
         *ssh_argv(sshd, sshd.keys.known_hosts(sshd.port))],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    outcomes = junit_outcomes(junit)
    assert [n for n, o in outcomes.items() if o != "passed"] == []
    assert sum(n.startswith("test_report_in_window_is_parsed") for n in outcomes) >= 3
    for rb1 in ("test_RB1a_read_every_page", "test_RB1b_content_read_back"):
        assert sum(n.startswith(rb1) for n in outcomes) == 3, rb1     # the three modes


def test_unknown_host_key_is_refused_with_how_to_add_it(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    proc = subprocess.run([*KH, "boot", *ssh_argv(sshd, empty), "--exec", "true",
                           "--out", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "host key of [127.0.0.1]:" in last and "is not known" in last
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1" in last
    assert empty.read_text() == ""


def test_changed_host_key_is_refused(sshd, tmp_path):
    other = Keys.make(tmp_path / "other")       # another machine's host key
    known = other.known_hosts(sshd.port, tmp_path / "known_hosts")
    with pytest.raises(KhError, match=r"has changed.*ssh-keygen -R"):
        remote.Connection.open(access(sshd, known))


def test_accept_new_records_the_key_and_then_checks_it(sshd, tmp_path):
    known = tmp_path / "known_hosts"
    remote.Connection.open(access(sshd, known, accept_new=True)).close()
    assert known.read_text().split() == [f"[127.0.0.1]:{sshd.port}",
                                         *sshd.keys.host_public.split()]
    remote.Connection.open(access(sshd, known)).close()   # known now, no flag needed


def test_command_timeout_kills_it_on_the_target(sshd, tmp_path):
    _, t = target_of(sshd, tmp_path)
    t0 = time.monotonic()
    with pytest.raises(GuestCommandError, match="did not finish in 3s; it was killed"):
        t.run("sleep 300", timeout=3)
    assert time.monotonic() - t0 < 30
    assert "sleep 300" not in t.run("ps -o args").stdout
    assert t.alive()
    private = t.dir
    t.close()
    # Cleaned up: our modules unloaded, the private directory gone.
    assert sshd.guest is not None
    left = sshd.guest.run(f"grep ^kh_ /proc/modules; ls -d {private}").stdout
    assert left == ""


def test_wrong_kernel_is_refused_before_anything_is_loaded(sshd, tmp_path):
    proc = subprocess.run([*KH, "boot", *ssh_argv(sshd, sshd.keys.known_hosts(
        sshd.port)), "--kernel", "debian:6.1", "--exec", "true", "--out", str(tmp_path)],
        capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "but --kernel debian:6.1 is 6.1." in proc.stderr.strip().splitlines()[-1]
    assert sshd.guest is not None
    assert sshd.guest.run("grep ^kh_ /proc/modules").stdout == ""


def test_target_reboot_fails_that_test_and_the_run_goes_on(sshd, tmp_path):
    """A machine that reboots mid-test: that test fails with 'lost connection
    to test machine'; with --reboot-wait the next test runs on it again,
    modules reloaded."""
    (tmp_path / "test_reboot.py").write_text(
        "def test_a_reboots(guest):\n"
        "    guest.run('echo b > /proc/sysrq-trigger', timeout=30)\n\n"
        "def test_b_runs_after(guest):\n"
        "    assert 'kh_ringbuf ' in guest.read('/proc/modules')\n")

    junit = tmp_path / "junit.xml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", str(tmp_path / "test_reboot.py"), "-q",
         "-p", "no:cacheprovider", f"--junitxml={junit}", "--out", str(tmp_path),
         "--reboot-wait", "240", *ssh_argv(sshd, sshd.keys.known_hosts(sshd.port))],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    # The machine comes back (QEMU stopped it at the reboot). From this thread:
    # QEMU dies with the thread that started it (PR_SET_PDEATHSIG).
    rebooted = False
    while proc.poll() is None:
        if not rebooted and not sshd.alive():
            time.sleep(2)
            sshd.start()
            rebooted = True
        time.sleep(0.5)
    stdout = proc.stdout.read() if proc.stdout else ""
    assert rebooted
    assert proc.returncode == 1, stdout[-3000:]
    assert junit_outcomes(junit) == {"test_a_reboots": "failure", "test_b_runs_after": "passed"}
    assert "lost connection to test machine" in junit.read_text()


def test_dead_target_is_lost_connection(sshd, tmp_path):
    _, t = target_of(sshd, tmp_path)
    assert sshd.guest is not None
    sshd.guest.machine.kill()      # the machine is gone, no word from it
    with pytest.raises(GuestDied) as died:
        t.run("true", timeout=20)
    assert [r.title for r in died.value.reports] == ["lost connection to test machine"]
    assert not t.alive()
    sshd.start()


def test_full_disk_on_the_target_is_named(sshd, tmp_path):
    assert sshd.guest is not None
    sshd.guest.run("mkdir -p /mnt/small && mount -t tmpfs -o size=64k tmpfs /mnt/small",
                   check=True)
    _, t = target_of(sshd, tmp_path)
    try:
        with pytest.raises(GuestCommandError, match="could not put /mnt/small/blob") as e:
            t.put(b"x" * 300_000, "/mnt/small/blob")
        assert "No space left on device" in e.value.detail
        assert t.run("ls /mnt/small").stdout == ""      # no half file left
    finally:
        t.close()
        sshd.guest.run("umount /mnt/small")
