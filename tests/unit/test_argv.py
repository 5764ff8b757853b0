"""One way to spell a command back: options.to_argv over every option of
every command, parsed again, gives the same values."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import cli, options
from harness.arches import ARCHES, host

REPO = Path(__file__).resolve().parents[2]
FOREIGN = next(a for a in ARCHES.values() if not a.native)


def samples(tmp: Path) -> dict[str, tuple[str, list[str]]]:
    """For each option's dest: a value other than its default, and the
    options it needs beside it."""
    (tmp / "key").write_text("k")
    (tmp / "repro.c").write_text("int main(void) { return 0; }\n")
    (tmp / "kmod").mkdir(exist_ok=True)
    (tmp / "kmod" / "Kbuild").write_text("obj-m += x.o\n")
    tree = tmp / "linux"
    (tree / "mm").mkdir(parents=True, exist_ok=True)
    (tree / "Makefile").write_text("VERSION = 7\n")
    (tree / "mm" / "memory.c").write_text("\n")
    target = ["--target=ssh://root@board:2222"]
    return {
        "kernel": ("debian:7.2", []), "arch": (FOREIGN.name, []),
        "target": ("ssh://kh@board:2200", []),
        "identity": (str(tmp / "key"), target), "known_hosts": (str(tmp / "kh"), target),
        "accept_new_host_key": ("", target), "reboot_wait": ("30", target),
        "boot": ("vng", []), "vng_root": ("kh", ["--boot=vng"]), "accel": ("tcg", []),
        "cpus": ("2", []), "selftests_source": ("debian-source:6.12", []),
        "suite": ("scenarios,mm-selftests", []), "memory": ("2048", []),
        "append": ("proc_mem.force_override=always", []), "numa": ("2", []),
        "swap": ("256", []), "pmem": ("768", []), "overcommit": ("1", []), "hugepages": ("32", []),
        "out": (str(tmp / "out"), []), "offline": ("", []), "k": ("RB2 or DX", []),
        "parallel": ("2", []), "against": ("debian:6.12", []), "good": ("v7.1", []),
        "bad": ("v7.2", []), "exec": ("uname -r", []), "rw": ("", ["--boot=vng"]),
        "put": (f"{tmp / 'key'}:/tmp/key", []), "timeout": ("90.5", []),
        "signature": ("WARNING in insert_pfn", []), "rounds": ("7", []),
        "budget": ("90", []), "c": (str(tmp / "repro.c"), []),
        "kmod": (str(tmp / "kmod"), []), "stress": ("cpu,memory", []),
        "until_hit": ("", []), "paths": ("vng", []), "commands": ("5", []),
        "source": (str(tree), []), "patches": ("series.mbox", []),
        "mutants": (str(tmp), []), "only": ("a,b", []), "whole_suite": ("", []),
        "config": ("base,kasan", []),
        "strict_config": ("", []), "jobs": ("3", []), "no_ccache": ("", []),
        "json": ("", []), "list": ("", []), "job": ("stock-debian-7.2-x86_64", []),
        "fresh": ("module", []), "shard": ("2/5", []), "origin": ("kernelci-kh", []),
        "into": (str(tmp / "m"), []), "date": ("2026-12-01", []), "nights": ("14", []),
        "previous": (str(tmp / "p"), []), "keep": ("30", []),
        "vmcore": ("always", []), "known_issues": (str(REPO / "ci" / "known-issues.toml"), []),
        "strict_known": ("", []), "rerun_failures": ("3", []), "verbose": ("", []),
        "older_than": ("7d", []), "drgn": ("", []), "attach": (str(tmp), ["--drgn"]),
        "max_size": ("20G", []), "kind": ("builds,snapshots", []), "dry_run": ("", []),
    }


POSITIONAL = {"repro": ["--", "sh", "-c", "echo a"], "triage": ["a"],
              "nightly": ["ci/nightly.toml"], "report": ["merge", "results"],
              "compare": ["a", "b"], "parse": ["x.log"]}
NEEDS = {"repro": ["--signature=W"], "build": ["--source=debian-source:7.2"],
         "validate": ["--source=debian-source:7.2", "--patches=s.mbox"],
         "bisect": ["--source=debian-source:7.2"], "bisect-step": ["--source=debian-source:7.2"]}


PER_COMMAND = {("repro", "fresh"): "round"}   # an option whose values differ by command


def resolved(command: str, argv: list[str]):
    ns = cli.parser().parse_args([command, *argv])
    return options.resolve(command, vars(ns))


CASES = [(c, o.dest) for c in cli.COMMANDS for o in options.options_for(c)
         if o.dest != "help"]


@pytest.mark.parametrize("command,dest", CASES, ids=[f"{c}:{d}" for c, d in CASES])
def test_every_option_round_trips(command, dest, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    value, companions = samples(tmp_path)[dest]
    value = PER_COMMAND.get((command, dest), value)
    o = next(o for o in options.options_for(command) if o.dest == dest)
    given = [o.flags[-1]] if o.flag else [f"{o.flags[-1]}={value}"]
    if dest == "arch" and command in ("build", "validate", "bisect", "bisect-step", "mutants"):
        given = [f"--arch={host()}"]     # one that builds here; still not the default text
    first = resolved(command, [*NEEDS.get(command, []), *companions, *given,
                               *POSITIONAL.get(command, [])])
    argv = options.to_argv(command, first)
    assert any(a == o.spelling or a.startswith(o.spelling + "=") for a in argv), argv
    again = resolved(command, [*argv, *POSITIONAL.get(command, [])])
    for other in options.options_for(command):
        assert getattr(again, other.dest) == getattr(first, other.dest), other.dest
    assert options.to_argv(command, again) == argv


def test_every_option_has_a_sample(tmp_path):
    dests = {o.dest for o in options.TABLE}
    assert dests - {"slow"} <= set(samples(tmp_path)), dests - set(samples(tmp_path))


def test_the_repro_rerun_line_keeps_what_the_user_gave():
    """It dropped --cpus and --until-hit: the race it found never came back."""
    args = resolved("repro", ["--cpus=2", "--until-hit", "--signature=WARNING in x",
                              "--for=10m", "-j", "2", "--stress=cpu", "--timeout=30",
                              "--", "khmap", "race", "/dev/kh_daxlike_refcounted"])
    line = options.rerun("repro", args, args.command, kernel=["debian:7.2"],
                         arch=[ARCHES["arm64"]])
    assert line == ("kharness repro --kernel=debian:7.2 --arch=arm64 --cpus=2 --parallel=2 "
                    "--timeout=30 '--signature=WARNING in x' --for=600 --stress=cpu "
                    "--until-hit -- khmap race /dev/kh_daxlike_refcounted")


def test_a_failed_suite_job_says_how_to_rerun_it_alone(tmp_path):
    """A nightly job's (or a run's) line: its own kernel, arch, -k and cpus,
    the guest settings the whole run had."""
    from harness import suites
    args = resolved("nightly", ["--swap=256", "--boot=vng", "ci/nightly.toml"])
    req = options.suite_request(args)
    job = suites.SuiteJob("debian:7.2", ARCHES["arm64"], tmp_path / "dx4-race", k="DX4",
                          cpus=2)
    line = suites.rerun_line(req, job)
    assert line == (f"kharness run --kernel=debian:7.2 --arch=arm64 --boot=vng --cpus=2 "
                    f"--suite=all --swap=256 --out={tmp_path} -k DX4")
    again = resolved("run", line.split()[2:])
    assert (again.kernel, again.arch, again.k, again.cpus, again.swap, again.boot) == (
        ["debian:7.2"], [ARCHES["arm64"]], "DX4", 2, 256, "vng")


def test_a_job_with_its_own_suite_and_selftests_source_reruns_with_them(tmp_path):
    """The nightly newest-selftests job: another source's mm selftests on
    a kernel; its rerun line (and its pytest) carries both."""
    from harness import suites
    req = options.suite_request(resolved("nightly", ["ci/nightly.toml"]))
    job = suites.SuiteJob("debian:6.1", ARCHES["x86_64"], tmp_path / "newest",
                          suite=["mm-selftests"], selftests_source="debian-source:7.3")
    line = suites.rerun_line(req, job)
    assert "--suite=mm-selftests" in line.split()
    assert "--selftests-source=debian-source:7.3" in line.split()
    again = resolved("run", line.split()[2:])
    assert (again.suite, again.selftests_source) == (["mm-selftests"], "debian-source:7.3")
