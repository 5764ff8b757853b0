"""The nightly matrix (ci/nightly.toml): read once, expanded into jobs for
this machine (`kharness nightly FILE`) and for CI engines (`--list --json`
gives the job ids a pipeline fans out over; each CI job then runs
`kharness nightly FILE --job ID`).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import time
import tomllib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from harness import arches, kernels, mutants, repro, session, workflows
from harness.arches import Arch
from harness.errors import KhError, UsageError
from harness.kbuild import kernel as kbuild
from harness.util import progress

JOB_KEYS = {"name", "kernels", "source", "config", "arches", "cpus", "k", "boot", "repro",
            "mutants", "optional"}
REPRO_KEYS = {"signature", "rounds", "command"}


@dataclass(frozen=True)
class Job:
    id: str                        # unique, safe as a directory and CI job name
    arch: Arch
    kernel: str = ""               # a --kernel spec, or
    source: str = ""               # a source to build with config
    config: tuple[str, ...] = ()
    cpus: int | None = None
    k: str | None = None
    repro: dict = field(default_factory=dict, hash=False, compare=False)
    boot: str | None = None        # --boot, when the job has its own
    mutants: str = ""              # a folder of mutant patches: a mutants run instead
    optional: bool = False         # run only when --job names it; not in --list

    def to_dict(self) -> dict:
        return {"id": self.id, "arch": self.arch.name, "kernel": self.kernel,
                "source": self.source, "config": list(self.config), "cpus": self.cpus,
                "k": self.k, "boot": self.boot, "repro": self.repro, "mutants": self.mutants,
                "optional": self.optional}


def _line_of(text: str, needle: str) -> int:
    """The line of the file where a value stands, for the error message."""
    for n, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return n
    return 0


def load(path: Path) -> list[Job]:
    """The jobs of a matrix file; any mistake is one UsageError naming the line."""
    try:
        text = path.read_text()
    except OSError as e:
        raise UsageError(f"cannot read the matrix {path}: {e.strerror}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path}: {e}") from None

    def bad(what: str, needle: str) -> UsageError:
        return UsageError(f"{path}:{_line_of(text, needle)}: {what}")

    default_arches = doc.get("arches", [arches.host().name])
    jobs: list[Job] = []
    for spec in doc.get("job", []):
        name = spec.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[\w.-]+", name):
            raise bad(f"a job needs a name of letters, digits, '.', '_' or '-', not {name!r}",
                      "[[job]]")
        unknown = set(spec) - JOB_KEYS
        if unknown:
            raise bad(f"job {name}: unknown key(s) {', '.join(sorted(unknown))}: use "
                      f"{', '.join(sorted(JOB_KEYS))}", sorted(unknown)[0])
        if bool(spec.get("kernels")) == bool(spec.get("source")):
            raise bad(f"job {name}: give either kernels = [...] or source = ...", name)
        job_arches = []
        for a in spec.get("arches", default_arches):
            try:
                job_arches.append(arches.get(a))
            except UsageError as e:
                raise bad(f"job {name}: {e}", f'"{a}"') from None
        for k in spec.get("kernels", []):
            try:
                kernels.validate(k)
            except UsageError as e:
                raise bad(f"job {name}: {e}", f'"{k}"') from None
        cpus = spec.get("cpus")
        if cpus is not None and (not isinstance(cpus, int) or cpus < 1):
            raise bad(f"job {name}: cpus must be a whole number of at least 1", "cpus")
        optional = spec.get("optional", False)
        if not isinstance(optional, bool):
            raise bad(f"job {name}: optional must be true or false", "optional")
        folder = spec.get("mutants", "")
        if folder:
            if not spec.get("source"):
                raise bad(f"job {name}: mutants need the source they patch (source = ...)",
                          "mutants")
            folder = str((path.parent / folder).resolve())
        boot = spec.get("boot")
        if boot is not None and boot not in session.BOOT_PATHS:
            raise bad(f"job {name}: boot must be one of {', '.join(session.BOOT_PATHS)}",
                      "boot")
        rep = spec.get("repro", {})
        if rep and (set(rep) != REPRO_KEYS or not isinstance(rep.get("rounds"), int)):
            raise bad(f"job {name}: repro needs exactly {', '.join(sorted(REPRO_KEYS))} "
                      f"(rounds a number)", "repro")
        for arch in job_arches:
            for kernel in spec.get("kernels", []) or [""]:
                what = kernel.replace(":", "-") if kernel else \
                    spec["source"].replace(":", "-").rsplit("/", 1)[-1]
                jobs.append(Job(f"{name}-{what}-{arch}", arch, kernel, spec.get("source", ""),
                                tuple(spec.get("config", ["base"])), cpus, spec.get("k"), rep,
                                boot, folder, optional))
    ids = [j.id for j in jobs]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise bad(f"job ids twice: {', '.join(twice)}: give the jobs other names", twice[0])
    if not jobs:
        raise UsageError(f"{path}: no [[job]] in the matrix")
    return jobs


def kernel_of(job: Job, args: argparse.Namespace) -> str:
    """The --kernel spec a job runs on: as given, or built now."""
    if job.kernel:
        return job.kernel
    build = argparse.Namespace(source=job.source, config=job.config, offline=args.offline)
    return kbuild.build(workflows.build_request(build, job.arch)).spec


def run_repro(job: Job, spec: str, args: argparse.Namespace, out: Path) -> int:
    """A race job: rounds of its command in one boot; JUnit with the hit rate."""
    t0 = time.monotonic()
    with session.booted(args, spec, job.arch, out, cpus=job.cpus) as (_, guest):
        rep = repro.reproduce(guest, shlex.split(job.repro["command"]),
                              job.repro["signature"], rounds=job.repro["rounds"])
    suite = ET.Element("testsuite", name=job.id, tests="1")
    case = ET.SubElement(suite, "testcase", name=f"repro[{job.repro['signature']}]",
                         time=f"{time.monotonic() - t0:.1f}")
    props = ET.SubElement(case, "properties")
    ET.SubElement(props, "property", name="kh:hit rate",
                  value=json.dumps({"note": f"{rep.hits}/{rep.rounds}"}))
    if not rep.hits:
        ET.SubElement(case, "failure", message=rep.summary())
    out.mkdir(parents=True, exist_ok=True)
    root = ET.Element("testsuites")
    root.append(suite)
    ET.ElementTree(root).write(out / "junit.xml", encoding="utf-8", xml_declaration=True)
    progress(f"{job.id}: {rep.summary()}")
    return 0 if rep.hits else 1


def run_mutants(job: Job, args: argparse.Namespace, out: Path) -> int:
    """A mutants job: the clean tree and each mutant, built and run."""
    ns = argparse.Namespace(**{**vars(args), "arch": [job.arch], "source": job.source,
                               "config": list(job.config), "mutants": job.mutants,
                               "only": None, "patches": None, "k": job.k, "out": out})
    return mutants.run(ns)


def run(args: argparse.Namespace) -> int:
    jobs = load(Path(args.matrix))
    named = set(args.job.split(",")) if args.job else set()
    jobs = [j for j in jobs if not j.optional or j.id in named]
    if args.list:
        if args.json:
            print(json.dumps({"include": [{"job": j.id} for j in jobs]}))
        else:
            print("\n".join(j.id for j in jobs))
        return 0
    if args.job:
        wanted = [j for j in jobs if j.id in args.job.split(",")]
        if len(wanted) != len(set(args.job.split(","))):
            raise UsageError(f"no job {args.job!r} in {args.matrix}: see --list")
        jobs = wanted
    if args.shard:
        i, n = args.shard
        jobs = jobs[i - 1::n]
        if not jobs:
            progress(f"shard {i}/{n}: the matrix has no job for it")
            return 0
    t0 = time.monotonic()
    # Kernels first (downloads, source builds: one at a time, they share CPUs
    # and caches), then the suites side by side, then the races.
    specs = {}
    for job in (j for j in jobs if not j.mutants):
        try:
            specs[job.id] = kernel_of(job, args)
        except KhError as e:
            raise KhError(f"{job.id}: {e}", detail=e.detail) from None
        if job.kernel:
            kernels.resolve(job.kernel, job.arch, offline=args.offline)
    suites = [workflows.SuiteJob(specs[j.id], j.arch, args.out / j.id, k=j.k, cpus=j.cpus,
                                 boot=j.boot) for j in jobs if not j.repro and not j.mutants]
    worst = 0
    try:
        worst = workflows.run_suites(args, suites, args.parallel or workflows.default_parallel())
        for job in (j for j in jobs if j.repro):
            worst = max(worst, run_repro(job, specs[job.id], args, args.out / job.id))
        for job in (j for j in jobs if j.mutants):
            worst = max(worst, run_mutants(job, args, args.out / job.id))
    finally:
        progress(f"{len(jobs)} nightly jobs in {time.monotonic() - t0:.0f}s; results: "
                 f"{args.out} (kharness report merge {args.out})")
    return worst
