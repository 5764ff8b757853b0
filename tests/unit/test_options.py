"""The option table: one set of options for argparse and pytest, checked once."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness import addresses, arches, cli, options, requests, suites
from harness.arches import ARCHES, Arch, host
from harness.requests import SuiteRequest

REPO = Path(__file__).resolve().parents[2]


def kh(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True,
                          text=True, timeout=60)


FOREIGN = next(a for a in ARCHES.values() if not a.native)


@pytest.mark.parametrize("args,words", [
    (["run", "--cpus", "0"], "--cpus must be at least 1, not 0"),
    (["run", "--cpus", "two"], "--cpus takes a whole number, not 'two'"),
    (["boot", "--timeout", "-5"], "--timeout must be a number of seconds above 0, not -5"),
    (["boot", "--timeout", "0"], "--timeout must be a number of seconds above 0"),
    (["boot", "--timeout", "nan"], "--timeout must be a number of seconds above 0, not nan"),
    (["run", "--kernel", ""], "--kernel has an empty entry"),
    (["run", "--kernel", "build:*"], "bad build reference 'build:*'"),
    (["run", "--kernel", "debian:7.2,debian:7.2"], "--kernel names debian:7.2 twice"),
    (["run", "--kernel", "debian:5.10"], "unknown Debian kernel series '5.10'"),
    (["boot", "--kernel", "debian:6.12,debian:7.2"], "boot boots one kernel"),
    (["boot", "--exec", ""], "--exec is empty"),
    (["boot", "--arch", "riscv64"], "unknown arch 'riscv64'"),
    (["boot", "--boot", "uefi"], "--boot 'uefi' is unknown: use one of initramfs, vng"),
    (["boot", "--accel", "hvf"], "--accel 'hvf' is unknown"),
    (["boot", "--accel", "kvm", "--arch", FOREIGN.name], "--accel kvm cannot run an"),
    (["boot", "--boot", "vng", "--vng-root", "host", "--arch", FOREIGN.name],
     "--vng-root host serves the host's root filesystem, which cannot run an"),
    (["run", "--vng-root", "kh"], "--vng-root kh is the root of a virtme-ng guest: give "
     "--boot vng too"),
    (["run", "--boot", "vng", "--vng-root", "guest"], "--vng-root 'guest' is unknown"),
    (["bench", "--paths", "initramfs", "--vng-root", "host"], "(bench: --paths with vng)"),
    (["run", "--cpus", str(FOREIGN.max_cpus + 1), "--arch", FOREIGN.name],
     f"more than {FOREIGN}'s machine takes"),
    (["repro", "--rounds", "0", "--signature", "x", "--", "true"],
     "--rounds must be at least 1"),
    (["bench", "--rounds", "0"], "--rounds must be at least 1"),
    (["bench", "--commands", "0"], "--commands must be at least 1"),
    (["bench", "--paths", "initramfs,pxe"], "--paths 'pxe' is unknown"),
    (["build", "--jobs", "0", "--source", "x"], "--jobs must be at least 1"),
    (["repro", "--", "true"], "the following arguments are required: --signature"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["validate", "--source", "/nonexistent-tree", "--patches", "x.mbox"],
     "patch series 'x.mbox' not found"),
    (["bisect", "--source", "/nonexistent-tree", "--patches", "x.mbox", "-k", "DX2"],
     "patch series 'x.mbox' not found"),
    (["compare", "/nonexistent-a", "/nonexistent-b"], "is neither a kharness run directory"),
    (["report", "merge", "/nonexistent-dir"], "is not a directory of kharness results"),
    (["nightly", "/nonexistent.toml"], "cannot read the nightly matrix /nonexistent.toml"),
    (["boot", "--target", "root@board"], "is not an ssh://[user@]host[:port] address"),
    (["boot", "--target", "ssh://root@board:70000"], "port 70000 is out of range"),
    (["run", "--identity", "/etc/hostname"], "--identity is for SSH targets"),
    (["run", "--reboot-wait", "30"], "--reboot-wait is for SSH targets"),
    (["boot", "--target", "ssh://b", "--identity", "/nonexistent"],
     "--identity /nonexistent: not a readable file"),
    (["run", "--target", "ssh://b", "--kernel", "debian:6.12,debian:7.2"],
     "give at most one --kernel"),
    (["boot", "--put", "/nonexistent:/x"], "/nonexistent is not a readable file"),
    (["boot", "--put", "README.md"], "--put takes LOCAL:GUEST"),
    (["repro", "--signature", "W"], "repro needs a command after -- or a reproducer"),
    (["repro", "--signature", "W", "--for", "10x", "--", "true"], "--for takes a time"),
    (["repro", "--signature", "W", "--for", "0", "--", "true"], "--for takes a time above 0"),
    (["repro", "--signature", "W", "--stress", "io", "--", "true"], "--stress 'io' is unknown"),
    (["repro", "--signature", "W", "--kmod", "/tmp", "--", "true"], "no Kbuild or Makefile"),
    (["repro", "--signature", "W", "--c", "/nonexistent.c"], "--c /nonexistent.c: not a"),
    (["repro", "--signature", "W", "--target", "ssh://b", "-j", "2", "--", "true"],
     "a --target is one machine"),
    (["repro", "--signature", "W", "--target", "ssh://b", "--fresh", "--", "true"],
     "a --target is a real machine: drop --fresh or --target"),
    (["run", "--fresh", "always"], "--fresh 'always' is unknown: use one of test, module, "
     "session"),
    (["bench", "--paths", "snapshots"], "--paths 'snapshots' is unknown"),
    (["report", "merge", "/tmp", "--date", "yesterday"], "--date yesterday: give a date as "
     "YYYY-MM-DD"),
    (["run", "--overcommit", "3"], "--overcommit '3' is unknown: use one of 0, 1, 2"),
    (["run", "--numa", "0"], "--numa must be at least 1"),
    (["run", "--suite", "scenarios,ltp"], "--suite 'ltp' is unknown"),
    (["boot", "--swap", "lots"], "--swap takes a whole number"),
    (["boot", "--pmem", "0"], "--pmem must be at least 768 (MiB)"),
    (["boot", "--pmem", "lots"], "--pmem takes a whole number of MiB"),
    (["run", "--pmem", "700"], "--pmem must be at least 768 (MiB): its four namespaces"),
    (["boot", "--rw"], "--rw makes your working directory writable in a virtme-ng guest"),
    (["run", "--selftests-source", "/nonexistent"], "--selftests-source /nonexistent: not a "
     "kernel tree"),
    (["run", "--selftests-source", "debian-source:5.4"], "unknown Debian series"),
    (["boot", "--drgn", "--target", "ssh://b"], "an SSH target has none to give"),
    (["boot", "--attach", "/tmp"], "--attach is for drgn on the guest: give --drgn too"),
    (["boot", "-c", "prog"], "-c is for drgn on the guest: give --drgn too"),
    (["boot", "--drgn", "-c", "prog", "x.py"], "--drgn runs -c CODE or a script, not both"),
    (["boot", "--drgn", "--attach", "/nonexistent/run"], "--attach /nonexistent/run: no such"),
    (["boot", "--drgn", "--attach", "/tmp", "--exec", "true"], "drop --exec"),
    (["debug", "/tmp", "--summary", "-c", "1"], "--summary prints the failure's summary"),
    (["boot", "--drgn", "-c", ""], "-c needs Python to run"),
    (["debug", "/tmp", "-c", ""], "-c needs Python to run"),
    (["boot", "--drgn", "/nonexistent/script.py"], "cannot read script /nonexistent/script.py"),
    (["boot", "--target", "ssh://b", "--known-hosts", "/tmp"],
     "--known-hosts /tmp: is a directory; give a known_hosts file (e.g. /tmp/known_hosts)"),
    (["boot", "--target", "ssh://b", "--known-hosts", "/nonexistent/dir/kh"],
     "--known-hosts /nonexistent/dir/kh: /nonexistent/dir is not a directory"),
])
def test_bad_input_is_one_line_and_exit_2(args, words):
    res = kh(*args)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr
    assert len(lines) == 1 and lines[0].startswith("kharness: error:"), res.stderr
    assert words in lines[0]


def test_defaults_resolve_to_objects():
    ns = options.resolve("run", vars(cli.parser().parse_args(["run"])))
    assert ns.arch == [host()] and ns.kernel == ["debian:6.12"] and ns.cpus == 1
    ns = options.resolve("repro", vars(cli.parser().parse_args(
        ["repro", "--signature", "W", "--", "sh", "-c", "echo a b > /x"])))
    assert ns.timeout == 120.0 and ns.rounds is None   # 100 rounds unless --for
    assert ns.command == ["sh", "-c", "echo a b > /x"]   # argv kept, not joined


def _handed(ns, tmp_path: Path, spec: str | None = "debian:7.2", arch: Arch | None = None):
    """What a suite's pytest session reads of the job's request."""
    req = options.suite_request(ns)
    job = suites.SuiteJob(spec, arch or ARCHES["arm64"], tmp_path / "o")
    argv = options.to_pytest_argv(suites.session_request(req, job), tmp_path / "request.json")
    assert argv == [f"--kh-request={tmp_path / 'request.json'}"]
    return requests.from_json(SuiteRequest, (tmp_path / "request.json").read_text())


def test_a_jobs_own_suite_reaches_its_pytest(tmp_path):
    """A nightly job's suite (selftests:perf_events) is what its pytest
    selects collections from, not the run's."""
    ns = options.resolve("run", vars(cli.parser().parse_args(["run"])))
    job = suites.SuiteJob("debian:7.2", ARCHES["arm64"], tmp_path / "o",
                          suite=["selftests:perf_events"], k="mmap")
    got = suites.session_request(options.suite_request(ns), job)
    assert got.suite == ["selftests:perf_events"] and got.k == "mmap"


def test_run_hands_its_pytest_the_typed_request(tmp_path):
    """The suite's pytest reads the request run made, not a command line."""
    ns = options.resolve("run", vars(cli.parser().parse_args(
        ["run", "--kernel", "debian:6.1,debian:7.2", "--cpus", "2", "--offline",
         "--fresh", "module", "--known-issues", "none", "--rerun-failures", "2"])))
    got = _handed(ns, tmp_path)
    assert got == SuiteRequest(
        guest=options.guest_request(ns, kernel="debian:7.2", arch=ARCHES["arm64"]),
        suite=["scenarios"], fresh="module", known_issues=["none"], rerun_failures=2,
        out=tmp_path / "o")
    assert got.guest.cpus == 2 and got.guest.offline


def test_every_pytest_option_is_in_the_table(pytestconfig):
    """The plugin registered the table's options and nothing else of ours."""
    for o in options.options_for(options.PYTEST):
        assert pytestconfig.getoption(f"kh_{o.dest}") is not None or not o.flag


def test_pytest_refuses_bad_values_with_exit_2(tmp_path):
    res = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                          str(tmp_path), "--cpus=0"], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert res.returncode == 2
    assert "kharness: error: --cpus must be at least 1, not 0" in res.stdout + res.stderr


@pytest.mark.parametrize("content", [None, "{\"guest\": 3}", "not json"])
def test_pytest_refuses_a_request_it_cannot_read_with_exit_2(tmp_path, content):
    request = tmp_path / "request.json"
    if content is not None:
        request.write_text(content)
    res = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                          str(tmp_path), f"--kh-request={request}"], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 2
    assert f"kharness: error: --kh-request {request}: not a request kharness run wrote" \
        in res.stderr


@pytest.mark.parametrize("where,words", [
    ("/proc/kharness-out", "cannot write there"),
    ("/dev/null", "/dev/null is a file, not a directory"),
    ("/dev/null/sub", "is a file, not a directory"),
])
def test_out_that_cannot_be_made_is_refused(where, words):
    res = kh("run", "--out", where)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert f"--out {where}" in lines[0] and words in lines[0]


def test_out_check_leaves_nothing_behind(tmp_path):
    options.resolve("run", vars(cli.parser().parse_args(["run", "--out",
                                                           str(tmp_path / "a" / "b")])))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["validate", "bisect"])
def test_unknown_source_is_bad_input_not_a_build_failure(command, tmp_path):
    series = REPO / "tests" / "data" / "patches" / "series.mbox"
    res = kh(command, "--source", str(tmp_path / "no-tree"), "--patches", str(series),
             "-k", "DX2", "--out", str(tmp_path / "out"))
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert "unknown kernel source" in lines[0]


@pytest.mark.parametrize("text,user,host,port", [
    ("ssh://root@board.lab:2222", "root", "board.lab", 2222),
    ("ssh://board.lab", "root", "board.lab", 22),
    ("ssh://kh@10.0.0.7/", "kh", "10.0.0.7", 22),
    ("ssh://root@[fe80::1]:22", "root", "fe80::1", 22),
])
def test_ssh_target_addresses(text, user, host, port):
    url = addresses.parse_url(text)
    assert (url.user, url.host, url.port) == (user, host, port)
    assert url.known_hosts_name == (host if port == 22 else f"[{host}]:{port}")


def test_target_options_reach_the_suites():
    ns = options.resolve("run", {**{o.dest: o.default_for("run")
                                    for o in options.options_for("run")},
                                 "target": "ssh://root@b:2200", "reboot_wait": "60"})
    assert ns.kernel == [] and ns.arch == []      # what the target runs
    got = options.suite_request(ns).guest
    assert got.target == addresses.parse_url("ssh://root@b:2200") and got.reboot_wait == 60
    assert got.kernel is None and got.arch is None and got.identity is None


def test_unreachable_target_is_one_line_and_exit_3(tmp_path):
    with socket.socket() as s:       # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = kh("boot", "--target", f"ssh://root@127.0.0.1:{port}", "--exec", "true",
             "--out", str(tmp_path))
    assert res.returncode == 3, res.stderr
    assert res.stderr.strip().splitlines() == [
        f"kharness: error: cannot connect to ssh://root@127.0.0.1:{port}: connection "
        f"refused (no sshd on port {port}?)"]


def test_unreachable_target_under_run_is_one_line_on_stderr(tmp_path):
    """The suite's pytest says it on stderr, not only in pytest's banner."""
    res = kh("run", "--target", "ssh://root@127.0.0.1:1", "--out", str(tmp_path))
    assert res.returncode == 3, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("kharness: error:")]
    assert errors == ["kharness: error: cannot connect to ssh://root@127.0.0.1:1: connection "
                      "refused (no sshd on port 1?)"]


def test_bad_input_to_bisect_step_stops_git_bisect(tmp_path):
    """125 would make `git bisect run` skip every commit: 128 stops it."""
    res = kh("bisect-step", "--source", str(tmp_path / "nonexistent"), "-k", "DX2")
    assert res.returncode == 128, res.stderr
    assert res.stderr.strip().startswith("kharness: error: unknown kernel source")
    assert kh("bisect-step", "--cpus", "0").returncode == 128


@pytest.mark.parametrize("command", ["nightly", "validate"])
def test_suite_request_from_a_command_without_guest_options(command, tmp_path):
    """nightly and validate run the suite without --target and friends of
    their own: their suites' requests must still come out."""
    raw = {o.dest: o.default_for(command) for o in options.options_for(command)}
    ns = options.resolve(command, {**raw, "source": "x", "patches": "x"})
    got = _handed(ns, tmp_path, "debian:6.12", arches.get(host()))
    assert got.guest.kernel == "debian:6.12" and got.guest.arch == arches.get(host())
    assert got.guest.target is None and got.guest.identity is None


def test_guest_settings_reach_the_suites_and_the_machine():
    ns = options.resolve("run", vars(cli.parser().parse_args(
        ["run", "--swap", "256", "--append", "proc_mem.force_override=always",
         "--overcommit", "1", "--selftests-source", "debian-source:7.2"])))
    req = options.suite_request(ns)
    assert req.guest.swap == 256 and req.guest.overcommit == 1
    assert req.guest.append == "proc_mem.force_override=always"
    assert req.selftests_source == "debian-source:7.2"
    assert options.guest_request(ns).machine() == {
        "swap": 256, "overcommit": 1, "vng_root": "auto",
        "append": "proc_mem.force_override=always"}


def test_suites_are_the_folders_of_the_kernel_suite():
    """A test file belongs to the suite whose folder holds it: none can land
    in a suite by accident, and a new folder is a new suite."""
    from harness.resources import data, suites
    from harness.suites import suite_paths
    folder = data("suite")
    assert suites() == ("harness", "mm-selftests", "ndctl", "scenarios", "selftests")
    assert options.SUITES == (*suites(), "all")
    assert suite_paths(["scenarios"]) == [str(folder / "scenarios")]
    assert suite_paths(["mm-selftests", "harness"]) == [str(folder / "mm-selftests"),
                                                        str(folder / "harness")]
    assert suite_paths(["scenarios", "all"]) == [str(folder)]
    scenarios = {p.name for p in (folder / "scenarios").glob("test_*.py")}
    assert scenarios == {"test_ringbuf.py", "test_perf_ringbuf.py", "test_daxlike.py",
                         "test_mixedmap.py", "test_pat.py", "test_fsdax.py", "test_devdax.py",
                         "test_udmabuf.py", "test_devmem.py", "test_vfio.py"}
    assert not list(folder.glob("test_*.py"))     # every test file is in a suite's folder


def test_out_checked_by_many_at_once(tmp_path):
    """A CI engine's shards in one checkout check one --out at the same
    moment (gitlab-ci-local's 14 shards once got 'File exists')."""
    from concurrent.futures import ThreadPoolExecutor
    where = str(tmp_path / "results" / "night")
    for _ in range(5):
        with ThreadPoolExecutor(16) as pool:
            got = list(pool.map(lambda _: options._outdir(where), range(16)))
        assert got == [Path(where)] * 16


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_prints_its_help(command, capsys):
    """argparse formats each help text with %: a bare % in one breaks
    `kharness COMMAND --help` of every command that has the option."""
    with pytest.raises(SystemExit) as stop:
        cli.parser().parse_args([command, "--help"])
    assert stop.value.code == 0
    assert f"usage: kharness {command}" in capsys.readouterr().out


def test_pytest_prints_the_plugins_help():
    res = subprocess.run([sys.executable, "-m", "pytest", "--help", "-p", "no:cacheprovider"],
                         capture_output=True, text=True, cwd=Path(__file__).parent)
    assert res.returncode == 0, res.stderr
    assert "--rerun-failures" in res.stdout


@pytest.mark.parametrize("given, want", [
    ("selftests:perf_events,drivers/dma-buf",
     ["selftests:perf_events", "selftests:drivers/dma-buf"]),
    ("scenarios,selftests:vfio,mm", ["scenarios", "selftests:vfio", "mm-selftests"]),
    ("selftests:mm,mm-selftests", ["mm-selftests"]),
])
def test_suite_takes_selftest_collections(given, want):
    ns = options.resolve("run", vars(cli.parser().parse_args(["run", "--suite", given])))
    assert ns.suite == want
    assert suites_of(want) == sorted({s.partition(":")[0] for s in want})


def suites_of(names: list[str]) -> list[str]:
    return sorted(Path(p).name for p in suites.suite_paths(names))


def test_an_unknown_collection_is_bad_input_naming_those_there_are():
    res = kh("run", "--suite", "selftests:perf_events,ltp")
    assert res.returncode == 2
    assert res.stderr.strip() == ("kharness: error: --suite: no selftest collection 'ltp': "
                                  "kharness runs mm, perf_events, drivers/dma-buf, vfio")
