"""The nightly matrix (ci/nightly.toml): read once, expanded into jobs for
this machine (`kharness nightly FILE`) and for CI engines (`--list --json`
gives the job ids a pipeline fans out over; each CI job then runs
`kharness nightly FILE --job ID`).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from harness import arches, kernels, resources, session, suites
from harness.apt import SERIES
from harness.arches import Arch
from harness.commands import mutants, repro
from harness.errors import KhError, UsageError
from harness.kbuild import kconfig
from harness.kbuild import linux as kbuild
from harness.requests import (
    BOOT_PATHS,
    GuestRequest,
    MutantsRequest,
    NightlyRequest,
    SourceRequest,
    SuiteRequest,
)
from harness.tomlfile import Reader
from harness.util import progress

JOB_KEYS = {"name", "kernels", "source", "config", "arches", "cpus", "k", "boot", "repro",
            "mutants", "optional", "suite", "selftests_source"}
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
    suite: tuple[str, ...] = ()    # --suite, when the job has its own
    selftests_source: str = ""     # --selftests-source, when the job has its own

    def to_dict(self) -> dict:
        return {"id": self.id, "arch": self.arch.name, "kernel": self.kernel,
                "source": self.source, "config": list(self.config), "cpus": self.cpus,
                "k": self.k, "boot": self.boot, "repro": self.repro, "mutants": self.mutants,
                "optional": self.optional, "suite": list(self.suite),
                "selftests_source": self.selftests_source}


TOP_KEYS = {"arches", "job"}


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def _arches(value: object, r: Reader, where: str, job: int | None) -> list[Arch]:
    key = "arches"
    if not _strings(value) or not value:
        raise r.bad(f"{where}arches must be a list of arch names, e.g. [\"x86_64\", "
                    f"\"arm64\"], not {value!r}", key, job)
    out = []
    assert isinstance(value, list)
    for a in value:
        try:
            out.append(arches.get(a))
        except UsageError as e:
            raise r.bad(f"{where}{e}", f'"{a}"', job) from None
    return out


def _source_ok(spec: str) -> str | None:
    """Why a source spec cannot be used, or None (nothing is downloaded)."""
    if spec.startswith("debian-source:"):
        series = spec.partition(":")[2]
        if series not in SERIES:
            return f"unknown Debian series '{series}' (known: {', '.join(SERIES)})"
        return None
    p = Path(spec).expanduser()
    if p.is_dir() or (p.is_file() and ".tar" in p.name):
        return None
    return f"source {spec!r} is not a kernel tree, a .tar.* of one, or debian-source:<series>"


def _check_job(spec: dict, n: int, r: Reader, default_arches: list[Arch]) -> list[Job]:
    """One [[job]] table, checked key by key, as the jobs it expands to."""
    name = spec.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[\w.-]+", name):
        raise r.bad(f"a job needs a name of letters, digits, '.', '_' or '-', not {name!r}",
                    "name", n)

    def bad(what: str, needle: str) -> UsageError:
        return r.bad(f"job {name}: {what}", needle, n)

    unknown = set(spec) - JOB_KEYS
    if unknown:
        raise bad(f"unknown key(s) {', '.join(sorted(unknown))}: use "
                  f"{', '.join(sorted(JOB_KEYS))}", sorted(unknown)[0])
    kernel_specs, source = spec.get("kernels"), spec.get("source")
    if (kernel_specs is None) == (source is None):
        raise bad("give either kernels = [...] or source = ...", "name")
    job_arches = _arches(spec.get("arches", [a.name for a in default_arches]), r,
                         f"job {name}: ", n)
    if kernel_specs is not None:
        _check_kernels(kernel_specs, bad)
        if "config" in spec:
            raise bad("config goes with source = ... (a kernel built here)", "config")
        config = ["base"]
    else:
        config = _check_source(source, spec.get("config", ["base"]), job_arches, bad)
    _check_settings(spec, bad)
    folder = _mutants_of(spec, r.path, bad)
    rep = _repro_of(spec.get("repro", {}), bad)
    jobs = []
    for arch in job_arches:
        for kernel in kernel_specs or [""]:
            what = kernel.replace(":", "-") if kernel else \
                str(source).replace(":", "-").rsplit("/", 1)[-1]
            jobs.append(Job(f"{name}-{what}-{arch}", arch, kernel, source or "",
                            tuple(config), spec.get("cpus"), spec.get("k"), rep,
                            spec.get("boot"), folder, spec.get("optional", False),
                            tuple(spec.get("suite", ())), spec.get("selftests_source", "")))
    return jobs


def _check_kernels(specs: object, bad) -> None:
    if not _strings(specs) or not specs:
        raise bad(f"kernels must be a list of kernel specs, e.g. [\"debian:6.12\"], "
                  f"not {specs!r}", "kernels")
    assert isinstance(specs, list)
    for k in specs:
        try:
            kernels.validate(k)
        except UsageError as e:
            raise bad(str(e), f'"{k}"') from None


def _check_source(source: object, config: object, job_arches: list[Arch], bad) -> list[str]:
    """A source that is there and fragments that exist for each arch."""
    if not isinstance(source, str) or not source:
        raise bad(f"source must be a kernel tree, a .tar.* or debian-source:<series>, "
                  f"not {source!r}", "source")
    if (why := _source_ok(source)) is not None:
        raise bad(why, "source")
    if not _strings(config) or not config:
        raise bad(f"config must be a list of kconfig fragments, e.g. [\"base\"], "
                  f"not {config!r}", "config")
    assert isinstance(config, list)
    for arch in job_arches:
        try:
            kconfig.resolve_fragments(list(config), arch)
        except UsageError as e:
            raise bad(str(e), "config") from None
    return config


def _check_settings(spec: dict, bad) -> None:
    """cpus, k, optional and boot: each of its type."""
    cpus = spec.get("cpus")
    if cpus is not None and (isinstance(cpus, bool) or not isinstance(cpus, int) or cpus < 1):
        raise bad(f"cpus must be a whole number of at least 1, not {cpus!r}", "cpus")
    k = spec.get("k")
    if k is not None and (not isinstance(k, str) or not k.strip()):
        raise bad(f"k must be a pytest -k expression, not {k!r}", "k")
    if not isinstance(spec.get("optional", False), bool):
        raise bad("optional must be true or false", "optional")
    boot = spec.get("boot")
    if boot is not None and boot not in BOOT_PATHS:
        raise bad(f"boot must be one of {', '.join(BOOT_PATHS)}, not {boot!r}", "boot")
    suite = spec.get("suite")
    if suite is not None and (not _strings(suite) or not suite):
        raise bad(f"suite must be a list of suites ({', '.join(resources.SUITES)}, "
                  f"selftests:COLLECTION), not {suite!r}", "suite")
    if suite is not None:
        try:
            resources.suite_names(suite, "suite")
        except UsageError as e:
            raise bad(str(e), "suite") from None
    selftests = spec.get("selftests_source")
    if selftests is not None and (not isinstance(selftests, str)
                                  or (why := _source_ok(selftests)) is not None):
        raise bad(f"selftests_source: {why if isinstance(selftests, str) else repr(selftests)}",
                  "selftests_source")


def _mutants_of(spec: dict, path: Path, bad) -> str:
    folder = spec.get("mutants", "")
    if not folder:
        return ""
    if not isinstance(folder, str):
        raise bad(f"mutants must be a folder of mutant patches, not {folder!r}", "mutants")
    if not spec.get("source"):
        raise bad("mutants need the source they patch (source = ...)", "mutants")
    resolved = (path.parent / folder).resolve()
    if not any(resolved.glob("*.patch")):
        raise bad(f"mutants: no *.patch files in {resolved}", "mutants")
    return str(resolved)


def _repro_of(rep: object, bad) -> dict:
    if rep == {}:
        return {}
    if not isinstance(rep, dict) or set(rep) != REPRO_KEYS:
        raise bad(f"repro needs exactly {', '.join(sorted(REPRO_KEYS))}", "repro")
    if not isinstance(rep["signature"], str) or not rep["signature"].strip():
        raise bad("repro's signature must be the text of the kernel report to wait for, "
                  "not empty", "repro")
    rounds = rep["rounds"]
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise bad(f"repro's rounds must be a whole number of at least 1, not {rounds!r}",
                  "repro")
    if not isinstance(rep["command"], str) or not rep["command"].strip():
        raise bad("repro's command must be the guest command to run, not empty", "repro")
    return rep


def load(path: Path) -> list[Job]:
    """The jobs of a matrix file, checked whole before any job runs: any
    mistake is one UsageError naming the file's line."""
    r = Reader(path, "job", "the nightly matrix", "ci/nightly.toml")
    doc = r.parse()
    unknown = set(doc) - TOP_KEYS
    if unknown:
        first = sorted(unknown)[0]
        raise r.bad(f"unknown key(s) {', '.join(sorted(unknown))}: the matrix has "
                    f"arches = [...] and [[job]] tables", first)
    default_arches = _arches(doc.get("arches", [arches.host().name]), r, "", None)
    specs = doc.get("job", [])
    if not isinstance(specs, list) or not all(isinstance(j, dict) for j in specs):
        raise r.bad("job must be [[job]] tables", "job")
    if not specs:
        raise UsageError(f"{path}: no [[job]] in the matrix")
    jobs: list[Job] = []
    seen: dict[str, int] = {}
    for n, spec in enumerate(specs):
        for j in _check_job(spec, n, r, default_arches):
            if j.id in seen:    # the duplicate's own [[job]], not the first
                raise r.bad(f"job id {j.id} twice (job {seen[j.id] + 1} has it too): give "
                            f"this job another name", "name", n)
            seen[j.id] = n
            jobs.append(j)
    return jobs


def select(jobs: list[Job], names: str | None, shard: tuple[int, int] | None,
           matrix: str) -> list[Job]:
    """The jobs this invocation runs or lists: --job names them (optional
    ones only so), --shard I/N takes every N-th from the I-th."""
    named = names.split(",") if names else []
    unknown = [n for n in named if n not in {j.id for j in jobs}]
    if unknown:
        raise UsageError(f"no job {unknown[0]!r} in {matrix}: see --list")
    if named:
        jobs = [j for j in jobs if j.id in named]
    else:
        jobs = [j for j in jobs if not j.optional]
    if shard:
        i, n = shard
        jobs = jobs[i - 1::n]
    return jobs


def kernel_of(job: Job, offline: bool) -> str:
    """The --kernel spec a job runs on: as given, or built now."""
    if job.kernel:
        return job.kernel
    build = SourceRequest(job.source, config=list(job.config), offline=offline)
    return kbuild.build(kbuild.request(build, job.arch)).spec


def run_repro(job: Job, req: GuestRequest, out: Path) -> int:
    """A race job: rounds of its command in one boot; JUnit with the hit rate."""
    t0 = time.monotonic()
    with session.booted(req, out) as (_, guest):
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


def run_mutants(job: Job, suite: SuiteRequest, out: Path) -> int:
    """A mutants job: the clean tree and each mutant, built and run."""
    build = SourceRequest(job.source, config=list(job.config), offline=suite.guest.offline)
    return mutants.run(MutantsRequest(build, dataclasses.replace(suite, suite=["scenarios"],
                                                                 k=job.k),
                                      job.arch, mutants=Path(job.mutants)), out)


def run(req: NightlyRequest, out: Path) -> int:
    jobs = select(load(Path(req.matrix)), req.job, req.shard, req.matrix)
    if req.list:
        if req.json:
            print(json.dumps({"include": [{"job": j.id} for j in jobs]}))
        else:
            print("\n".join(j.id for j in jobs))
        return 0
    if not jobs:
        assert req.shard is not None
        i, n = req.shard
        progress(f"shard {i}/{n}: the matrix has no job for it")
        return 0
    t0 = time.monotonic()
    offline = req.suite.guest.offline
    # Kernels first (downloads, source builds: one at a time, they share CPUs
    # and caches), then the suites side by side, then the races.
    specs = {}
    for job in (j for j in jobs if not j.mutants):
        try:
            specs[job.id] = kernel_of(job, offline)
        except KhError as e:
            raise KhError(f"{job.id}: {e}", detail=e.detail) from None
        if job.kernel:
            kernels.resolve(job.kernel, job.arch, offline=offline)
    jobs_of_suites = [suites.SuiteJob(specs[j.id], j.arch, out / j.id, k=j.k, cpus=j.cpus,
                                      boot=j.boot, suite=list(j.suite) or None,
                                      selftests_source=j.selftests_source or None)
                      for j in jobs if not j.repro and not j.mutants]
    worst = 0
    guest = req.suite.guest
    try:
        worst = suites.run_suites(req.suite, jobs_of_suites,
                                  req.suite.parallel or suites.default_parallel())
        for job in (j for j in jobs if j.repro):
            race = guest.replace(kernel=specs[job.id], arch=job.arch,
                                 cpus=job.cpus or guest.cpus, boot=job.boot or guest.boot)
            worst = max(worst, run_repro(job, race, out / job.id))
        for job in (j for j in jobs if j.mutants):
            worst = max(worst, run_mutants(job, req.suite, out / job.id))
    finally:
        progress(f"{len(jobs)} nightly jobs in {time.monotonic() - t0:.0f}s; results: "
                 f"{out} (kharness report merge {out})")
    return worst
