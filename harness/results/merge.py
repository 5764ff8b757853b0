"""Many jobs' outputs as one: a JUnit file with a testsuite per job, the
behaviour matrix over all of them (scenario x kernel x arch), a summary;
and the same results as KCIDB JSON for KernelCI.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UsageError
from harness.results import compare, known, matrix
from harness.util import write_out


@dataclass
class JobResult:
    label: str        # the job's directory name: debian-debian-7.2-x86_64
    junit: Path
    run: compare.Run


def collect(dirs: list[str]) -> list[JobResult]:
    """Every junit.xml at or below the given directories (a job's output, a
    nightly's, or a CI artifacts tree), each a job named by its folder."""
    found: list[JobResult] = []
    for d in dirs:
        path = Path(d)
        if not path.is_dir():
            raise UsageError(f"{d} is not a directory of kharness results")
        for junit in sorted(path.rglob("junit.xml")):
            if junit.parent.name.startswith("merged"):
                continue
            label = junit.parent.name
            found.append(JobResult(label, junit, compare.load_junit(junit, label)))
    if not found:
        raise UsageError(f"no junit.xml below {', '.join(dirs)}")
    labels = [j.label for j in found]
    twice = sorted({lbl for lbl in labels if labels.count(lbl) > 1})
    if twice:
        raise UsageError(f"two results for {', '.join(twice)}: merge one night at a time")
    return found


def merge(dirs: list[str], out: Path, date: str | None = None) -> str:
    jobs = collect(dirs)
    out.mkdir(parents=True, exist_ok=True)
    root = ET.Element("testsuites", name="kharness")
    for job in jobs:
        for suite in ET.parse(job.junit).getroot().iter("testsuite"):
            suite.set("name", job.label)
            for case in suite.iter("testcase"):
                case.set("classname", f"{job.label}.{case.get('classname', '')}".rstrip("."))
            root.append(suite)
    write_out(out / "junit.xml", ET.tostring(root, encoding="utf-8", xml_declaration=True))
    m = matrix.build([(j.label, j.junit) for j in jobs])
    write_out(out / "matrix.html", m.html())
    write_out(out / "matrix.txt", m.text() + "\n")
    lines = [f"{len(jobs)} jobs"]
    totals = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    for job in jobs:
        counts = {o: sum(c.outcome == o for c in job.run.cases.values()) for o in totals}
        for o, n in counts.items():
            totals[o] += n
        bad = counts["failed"] + counts["error"]
        lines.append(f"  {'FAIL' if bad else 'ok  '} {job.label}: " +
                     ", ".join(f"{n} {o}" for o, n in counts.items() if n))
    lines.append("in all: " + ", ".join(f"{n} {o}" for o, n in totals.items() if n))
    summary = "\n".join(lines)
    write_out(out / "summary.txt", summary + "\n")
    write_out(out / NIGHT, json.dumps(night(jobs, date), indent=1) + "\n")
    keep_logs(jobs, out / "logs")
    return summary


NIGHT = "night.json"    # the night's date, kharness's commit, each job's kernel


def night(jobs: list[JobResult], date: str | None) -> dict:
    """What `report site` needs beside the JUnit: when, with which
    kharness, on which kernels (the suite's kh-kernel property)."""
    started, kernels = [], {}
    for job in jobs:
        root = ET.parse(job.junit).getroot()
        for suite in root.iter("testsuite"):
            if suite.get("timestamp"):
                started.append(suite.get("timestamp", ""))
            props = {p.get("name"): p.get("value") for p in suite.findall("properties/property")}
            if props.get("kh-kernel"):
                kernels[job.label] = {"kernel": props["kh-kernel"],
                                      "arch": props.get("kh-arch", "")}
    day = date or (min(started)[:10] if started else time.strftime("%Y-%m-%d", time.gmtime()))
    return {"date": day, "kharness": commit(), "jobs": kernels}


def commit() -> str:
    """kharness's own commit: the checkout's, or the CI engine's word for it."""
    here = Path(__file__).resolve().parents[2]
    res = subprocess.run(["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"],
                         capture_output=True, text=True, check=False)
    if res.returncode == 0 and res.stdout.strip():
        return res.stdout.strip()
    for var in ("CI_COMMIT_SHA", "GITHUB_SHA"):
        if os.environ.get(var):
            return os.environ[var][:12]
    return "unknown"


def keep_logs(jobs: list[JobResult], into: Path) -> None:
    """Each failed test's kernel log window and console (what the plugin
    kept under tests/<id>/) beside the merged results: the site links them.
    Not its vmcore (tens of MiB, and the nights are carried for 90 days):
    that stays in the job's own output, which says where."""
    into.mkdir(parents=True, exist_ok=True)
    for job in jobs:
        for dmesg in sorted(job.junit.parent.rglob("tests/*/dmesg.txt")):
            dest = into / job.label / dmesg.parent.name
            if not dest.exists():
                shutil.copytree(dmesg.parent, dest, ignore=shutil.ignore_patterns("vmcore*"))
                if any(dmesg.parent.glob("vmcore")):
                    (dest / "vmcore.txt").write_text(
                        f"vmcore: {dmesg.parent / 'vmcore'} in job {job.label}'s output "
                        f"(kharness debug {dmesg.parent})\n")


# -- KCIDB -------------------------------------------------------------------------

# A known failure is a failure that an issue explains: FAIL, with an incident.
STATUS = {"passed": "PASS", "failed": "FAIL", "error": "ERROR", "skipped": "SKIP",
          "known": "FAIL"}
CULPRIT = {"kernel-bug": "code", "missing-feature": "tool", "flaky": "tool",
           "harness": "harness", "environment": "harness"}


def _id(origin: str, *parts: str) -> str:
    return f"{origin}:" + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def _path(name: str) -> str:
    """test_RB2_write_control_page_then_data_page[pfnmap] -> kharness.RB2.write_..._pfnmap"""
    name = name.removeprefix("test_")
    scenario, _, rest = name.partition("_")
    clean = "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in rest).strip("_")
    return ".".join(p for p in ("kharness", scenario, clean) if p)


class _Kcidb:
    """The KCIDB objects of one submission, added a job and a test at a time."""

    def __init__(self, origin: str, entries: list[known.Entry] | None):
        self.origin = origin
        self.by_id = {e.id: e for e in entries or []}
        self.now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        self.checkouts: dict[str, dict] = {}
        self.builds: list[dict] = []
        self.tests: list[dict] = []
        self.issues: dict[str, dict] = {}
        self.crash_ids: dict[str, str] = {}     # a title or alternative title -> its issue
        self.incidents: list[dict] = []

    def id(self, *parts: str) -> str:
        return _id(self.origin, *parts)

    def job(self, job: JobResult) -> None:
        kernel, _, arch = job.label.rpartition("-")
        checkout_id = self.id("checkout", kernel)
        self.checkouts.setdefault(checkout_id, {
            "id": checkout_id, "origin": self.origin, "tree_name": kernel or job.label,
            "start_time": self.now, "valid": True, "misc": {"kharness_job": job.label}})
        build_id = self.id("build", job.label)
        self.builds.append({"id": build_id, "origin": self.origin, "checkout_id": checkout_id,
                            "architecture": arch, "start_time": self.now, "status": "PASS",
                            "misc": {"kharness_job": job.label}})
        for name, case in sorted(job.run.cases.items()):
            test_id = self.test(job, build_id, arch, name, case)
            if case.known:
                self.known_incident(test_id, case.known)
            else:       # a known issue's reports are what it explains
                self.crash_incidents(test_id, case)

    def test(self, job: JobResult, build_id: str, arch: str, name: str,
             case: compare.Case) -> str:
        test_id = self.id("test", job.label, name)
        test: dict = {"id": test_id, "origin": self.origin, "build_id": build_id,
                      "path": _path(name), "status": STATUS[case.outcome],
                      "start_time": self.now, "environment": {"comment": f"QEMU guest, {arch}"},
                      "output_files": [{"name": "junit.xml",
                                        "url": job.junit.resolve().as_uri()}],
                      "misc": {"kharness_test": name}}
        if case.message:
            test["comment"] = case.message[:400]
        if case.reports:
            test["misc"]["kernel_reports"] = case.reports
        self.tests.append(test)
        return test_id

    def incident(self, test_id: str, issue_id: str, what: str) -> None:
        self.incidents.append({"id": self.id("incident", test_id, what), "origin": self.origin,
                               "issue_id": issue_id, "issue_version": 0, "test_id": test_id,
                               "present": True})

    def known_incident(self, test_id: str, known_id: str) -> None:
        issue_id = self.id("known", known_id)
        e = self.by_id.get(known_id)
        issue: dict = {"id": issue_id, "version": 0, "origin": self.origin,
                       "report_subject": e.title if e else known_id,
                       "culprit": {CULPRIT[e.kind] if e else "code": True},
                       "comment": f"kharness known issue {known_id}"
                                  + (f" ({e.kind})" if e else "")}
        if e is not None and e.url:
            issue["report_url"] = e.url
        self.issues.setdefault(issue_id, issue)
        self.incident(test_id, issue_id, known_id)

    def crash_incidents(self, test_id: str, case: compare.Case) -> None:
        for title in case.reports:
            # one issue a crash, whichever of its titles a job saw first
            names = case.names(title)
            issue_id = next((self.crash_ids[n] for n in sorted(names) if n in self.crash_ids),
                            self.id("issue", title))
            self.crash_ids.update(dict.fromkeys(names, issue_id))
            self.issues.setdefault(issue_id, {
                "id": issue_id, "version": 0, "origin": self.origin,
                "report_subject": title, "culprit": {"code": True},
                "comment": "a kernel report seen by kharness"})
            self.incident(test_id, issue_id, title)

    def data(self) -> dict:
        return {"version": {"major": 5, "minor": 3}, "checkouts": list(self.checkouts.values()),
                "builds": self.builds, "tests": self.tests,
                "issues": list(self.issues.values()), "incidents": self.incidents}


def kcidb(dirs: list[str], origin: str, entries: list[known.Entry] | None = None) -> dict:
    """KCIDB (the schema kcidb-io has as latest) for the jobs' results: a
    checkout per kernel, a build per kernel x arch, a test per test case,
    each kernel report title as an issue with an incident per test, and
    each known issue that explained a failure as an issue (its url, its
    culprit by kind) with an incident per failure it explained."""
    out = _Kcidb(origin, entries)
    for job in collect(dirs):
        out.job(job)
    return out.data()


def write_kcidb(dirs: list[str], origin: str, out: Path,
                entries: list[known.Entry] | None = None) -> Path:
    data = kcidb(dirs, origin, entries)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_out(out, json.dumps(data, indent=1) + "\n")
    return out
