"""What a hostile user types (issue: reliability, third round): paths with
commas and dollars, names kharness makes from settings and test ids, a
shared snapshot another run holds, scripts that are not scripts, nights
that are not nights. Each case either works or is one line and exit 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from test_debug import run_folder

from harness import cache, options, suites
from harness.commands import debug, nightly
from harness.errors import KhError, UsageError
from harness.results import compare, dashboard, matrix
from harness.util import SAFE, artifact_name, safe_name
from harness.vm import snapshot

NIGHTS = Path(__file__).resolve().parents[1] / "data" / "nights"
HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_SH)
print("held", flush=True)
time.sleep(60)
"""


# -- QEMU and pytest take paths verbatim --------------------------------------

def test_a_comma_in_a_path_is_doubled_in_option_lists_and_comes_back(tmp_path):
    work, sock = tmp_path / "o,comma $x" / "boot-1", tmp_path / "kh-s,ock"
    argv = ["qemu", "-kernel", f"{work}/bzImage",
            "-chardev", f"file,id=khcon,path={str(work).replace(',', ',,')}/console.log",
            "-qmp", f"unix:{str(sock).replace(',', ',,')}/qmp.sock,server=on"]
    template = snapshot.normalise(argv, sock, work, {})
    assert template == ["qemu", "-kernel", "@WORK@/bzImage",
                        "-chardev", "file,id=khcon,path=@WORK@/console.log",
                        "-qmp", "unix:@SOCK@/qmp.sock,server=on"]
    other = tmp_path / "a,,b"
    back = snapshot.fill(template, {snapshot.WORK: other, snapshot.SOCK: sock})
    assert back[2] == f"{other}/bzImage"                          # a plain path: as it is
    assert back[4] == "file,id=khcon,path=" + str(other).replace(",", ",,") + "/console.log"


def test_a_dollar_reaches_pytests_junitxml_verbatim(tmp_path):
    out = tmp_path / "o$HOME;x" / "${HOME}" / "junit.xml"
    spelt = suites._verbatim(out)
    env = {**os.environ, suites.DOLLAR: "$"}
    expanded = subprocess.run([sys.executable, "-c", "import os, sys; "
                               "print(os.path.expandvars(os.path.expanduser(sys.argv[1])))",
                               spelt], env=env, capture_output=True, text=True).stdout
    assert expanded.strip() == str(out)


@pytest.mark.parametrize("text", ["appendmemmap=4M$0x30000000", "append=a/b", "x,y", "[a]",
                                  "-rf", ".hidden", "", "spaces and 'quotes'"])
def test_names_kharness_makes_are_safe_and_distinct(text):
    name = safe_name(text)
    assert SAFE.fullmatch(name) and not name.startswith(("-", "."))
    assert name != safe_name(text + "!")


def test_plain_names_stay_as_they_are():
    assert safe_name("debian-6.12-x86_64") == "debian-6.12-x86_64"
    assert safe_name("pmem_mb768") == "pmem_mb768"
    name = artifact_name("scenarios/test_dax.py::test_DX4_race[special-2]")
    assert name == "scenarios_test_dax.py_test_DX4_race_special-2_"
    assert name.endswith(artifact_name("test_DX4_race[special-2]"))   # what the site matches


# -- shared snapshots ----------------------------------------------------------

def _entry(tmp_path: Path) -> Path:
    entry = tmp_path / "snapshots" / "x86_64" / "6.12-abc"
    entry.mkdir(parents=True)
    (entry / snapshot.STATE).write_bytes(b"QEVM" * 1024)
    (entry / snapshot.RECORD).write_text(json.dumps(
        {"sha256": snapshot._digest(entry / snapshot.STATE)}))
    cache.publish(entry, [snapshot.STATE, snapshot.RECORD])
    return entry


def test_a_restore_failure_proves_nothing_against_a_whole_snapshot(tmp_path):
    entry = _entry(tmp_path)
    slow = snapshot.RestoreError("the snapshot did not load in time")
    assert snapshot.proof_of_damage(entry, slow) is None
    said = snapshot.RestoreError("QEMU could not load the snapshot", stream=True)
    assert snapshot.proof_of_damage(entry, said) == "QEMU could not load its state"


def test_a_changed_state_is_proven_damaged_by_its_checksum(tmp_path):
    entry = _entry(tmp_path)
    with open(entry / snapshot.STATE, "r+b") as fh:   # same size, other bytes
        fh.write(b"XXXX")
    why = snapshot.proof_of_damage(entry, snapshot.RestoreError("timeout"))
    assert why == "its state is not what was saved (sha256 differs)"


def test_an_entry_another_run_holds_is_never_removed(tmp_path):
    entry = _entry(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(cache.hold_path(entry))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        cache.hold(entry)         # this run's own hold does not keep it
        with cache.locked(cache.lock_path(entry)):
            assert not cache.remove_unheld(entry)
        assert entry.is_dir() and cache.damage(entry) is None
        (entry / snapshot.STATE).write_bytes(b"short")        # damaged, and still held
        with pytest.raises(cache.Held, match="another run is using it: left as it is"):
            cache.cached(entry, lambda e: [])
        assert (entry / snapshot.STATE).read_bytes() == b"short"
    finally:
        holder.kill()
        holder.wait()
    with cache.locked(cache.lock_path(entry)):
        assert cache.remove_unheld(entry)           # nobody else: it goes
    assert not entry.exists() and entry not in cache._holds


def test_an_unwritable_cache_entry_is_exit_3_naming_it(tmp_path):
    parent = tmp_path / "kernels"
    parent.mkdir()
    if subprocess.run(["chattr", "+i", str(parent)], capture_output=True).returncode:
        pytest.skip("chattr +i does not work on this file system")
    try:
        with pytest.raises(KhError) as e:
            cache.cached(parent / "6.12", lambda entry: [])
    finally:
        subprocess.run(["chattr", "-i", str(parent)], check=True)
    assert e.value.exit_code == 3 and "cannot write the cache entry" in str(e.value)
    assert str(parent) in str(e.value) and "\n" not in str(e.value)


# -- options checked before anything starts ---------------------------------------

def _resolve(command: str, *argv: str):
    from harness import cli
    ns = cli.parser().parse_args([command, *argv])
    return options.resolve(command, vars(ns))


def test_pmem_beyond_the_disk_is_refused_up_front(tmp_path):
    out = tmp_path / "not-yet"
    for command in ("run", "boot", "bench"):
        with pytest.raises(UsageError, match=r"--pmem: 99999999 MiB is more than"):
            _resolve(command, "--pmem", "99999999", "--out", str(out))
    assert not out.exists()          # checked, not made


@pytest.mark.parametrize("out", ["o,comma", "o$HOME", "o x"])
def test_virtme_ng_refuses_paths_its_shell_would_split(tmp_path, out):
    with pytest.raises(UsageError, match="--boot vng: --out .* characters virtme-ng"):
        _resolve("boot", "--boot", "vng", "--out", str(tmp_path / out))
    _resolve("boot", "--out", str(tmp_path / out))      # the initramfs path takes it


def test_repro_fresh_has_one_spelling():
    assert _resolve("repro", "--signature", "W", "--fresh", "--", "true").fresh == "round"
    assert _resolve("repro", "--signature", "W", "--fresh", "session", "--",
                    "true").fresh == "session"
    assert _resolve("run", "--fresh").fresh == "test"
    assert _resolve("run", "--fresh", "session").fresh == "session"


def test_pmem_help_names_both_arches():
    o = next(o for o in options.TABLE if o.dest == "pmem")
    assert "x86_64)" not in o.help and "arm64" in o.help


def test_a_duplicate_job_points_at_its_own_line(tmp_path):
    path = tmp_path / "n.toml"
    path.write_text('[[job]]\nname = "a"\nkernels = ["debian:6.12"]\n\n'
                    '[[job]]\nname = "b"\nkernels = ["debian:6.12"]\n\n'
                    '[[job]]\nname = "a"\nkernels = ["debian:6.12"]\n')
    with pytest.raises(UsageError, match=r"n.toml:10: job id a-debian-6.12-\S+ twice "
                                         r"\(job 1 has it too\)"):
        nightly.load(path)


# -- debug -----------------------------------------------------------------------

@pytest.mark.parametrize("case, says", [
    ("binary", "it is not text"),
    ("folder", "it is a directory"),
    ("both", "debug takes -c CODE or a SCRIPT, not both"),
    ("missing", "no such file"),
])
def test_debug_refuses_what_is_not_a_script(tmp_path, case, says):
    test = run_folder(tmp_path)
    script = {"binary": Path(shutil.which("true") or "/bin/true"), "folder": tmp_path,
              "both": tmp_path / "ok.py", "missing": tmp_path / "nope.py"}[case]
    (tmp_path / "ok.py").write_text("print(1)\n")
    with pytest.raises(UsageError, match=says):
        debug.run(test, code="1" if case == "both" else None, script=script, argv=[],
                  symbols="kallsyms")


# -- the dashboard and the matrix with real names -----------------------------------

def _night(tmp_path: Path, meta: object) -> Path:
    night = tmp_path / "night"
    shutil.copytree(NIGHTS / "2026-11-29", night)
    (night / "night.json").write_text(json.dumps(meta))
    return night


@pytest.mark.parametrize("meta", [[1, 2, 3], {"date": 20261129}, {"jobs": [1]}, "x"])
def test_a_night_json_of_the_wrong_shape_leaves_that_night_out(tmp_path, capsys, meta):
    bad = _night(tmp_path, meta)
    nights = dashboard.load([str(bad), str(NIGHTS / "2026-11-30")])
    assert [n.date for n in nights] == ["2026-11-30"]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"kharness: {bad}: unreadable (night.json")


def test_the_site_is_never_written_into_a_night(tmp_path):
    night = _night(tmp_path, {"date": "2026-11-29"})
    for into in (night, night / "site"):
        with pytest.raises(UsageError, match="give the site a folder of its own"):
            dashboard.write([str(night)], into)
    assert not (night / "site").exists() and not (night / "index.html").exists()


def _junit(tmp_path: Path, cases: str) -> Path:
    path = tmp_path / "junit.xml"
    path.write_text(f'<testsuites><testsuite name="pytest">{cases}</testsuite></testsuites>')
    return path


def test_a_parameter_with_a_slash_is_a_test_not_a_subtest(tmp_path):
    junit = _junit(tmp_path, '<testcase classname="s" name="test_FD1_read[ext4/dax]"/>'
                   '<testcase classname="s" name="test_upstream_mm[pfnmap]"/>'
                   '<testcase classname="s" name="test_upstream_mm[pfnmap/a]">'
                   '<properties><property name="kh-subtest" value="test_upstream_mm[pfnmap]"/>'
                   '</properties></testcase>'
                   '<testcase classname="s" name="test_upstream_mm[old/b]"/>')
    cases = compare.cases_of(ET.parse(junit).getroot())
    assert [n for n, c in cases.items() if not c.subtest] == ["test_FD1_read[ext4/dax]",
                                                              "test_upstream_mm[pfnmap]"]
    m = matrix.Matrix()
    m.add_run("k", junit)
    assert {name for name, _ in m.rows} == {"test_FD1_read[ext4/dax]",
                                            "test_upstream_mm[pfnmap]"}

