"""kharness validate: a patch series against the tree it applies to. The
source is built without and with the series (same fragments; the base is a
cache hit after the first time, ccache shares the rest), the suite runs on
both per arch, and what the series changed is printed."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from harness import requests, suites
from harness.arches import Arch
from harness.errors import KhError, UsageError
from harness.kbuild import linux as kbuild
from harness.kbuild import patches
from harness.requests import SourceRequest, SuiteRequest
from harness.resources import data
from harness.results import compare
from harness.suites import run_suite
from harness.util import cache_root, digest, progress, write_out


@dataclass
class Validation:
    arch: Arch
    base: str                       # kernel spec
    patched: str | None             # None: the series did not build
    build_error: str = ""
    diff: compare.Diff | None = None

    @property
    def regressions(self) -> list[str]:
        if self.patched is None:
            return [f"the series does not build: {self.build_error}"]
        return self.diff.regressions if self.diff else []


def validate(build: SourceRequest, req: SuiteRequest, arches: list[Arch], out: Path,
             against: str | None = None) -> int:
    """Exit 1 if the series brought a regression (or does not build)."""
    assert build.patches is not None
    series = patches.load(build.patches)
    for arch in arches:
        kbuild.request(build, arch, series)   # it applies, before the base is built
    results = []
    for arch in arches:
        if against:
            base = against
        else:
            try:
                base = kbuild.build(kbuild.request(build, arch)).spec
            except UsageError:
                raise      # a source or fragment that does not exist: bad input, not a build
            except KhError as e:
                raise KhError(f"the base tree does not build for {arch}, so nothing can be "
                              f"compared: {e}", detail=e.detail) from None
        try:
            patched: str | None = kbuild.build(kbuild.request(build, arch, series)).spec
            error = ""
        except UsageError:
            raise       # a series that does not apply included
        except KhError as e:
            patched, error = None, str(e)
        v = Validation(arch, base, patched, error)
        status, junit_a = base_results(req, base, arch, out / f"base-{arch}")
        if status not in (0, 1):
            raise KhError(f"the suite could not run on the base kernel {base} ({arch}): "
                          f"see {out / f'base-{arch}'}")
        if patched is not None:
            _, junit_b = run_suite(req, patched, arch, out / f"patched-{arch}")
            v.diff = compare.compare(compare.load_junit(junit_a, f"base {base}"),
                                     compare.load_junit(junit_b, f"patched {patched}"))
        results.append(v)
    text = validation_text(build, series, results, out)
    write_out(out / "validate.md", text + "\n")
    write_out(out / "validate.html",
              "".join(v.diff.html() for v in results if v.diff) or f"<pre>{text}</pre>")
    print(text)
    progress(f"report: {out / 'validate.md'}, {out / 'validate.html'}")
    return 1 if any(v.regressions for v in results) else 0


def _suite_digest() -> str:
    """What decides a suite's results besides the kernel: tests, modules,
    helpers, image recipes."""
    files = sorted(p for name in ("suite", "kmods", "helpers", "images")
                   for p in data(name).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return digest(*(f"{p.name}:{p.read_bytes().hex()}" for p in files))


def base_results(req: SuiteRequest, spec: str, arch: Arch, out: Path) -> tuple[int, Path]:
    """The base kernel's run, reused when the same kernel, suite, selection
    and guest settings ran it before and every test passed (a base run that
    failed is run again: it may have been the machine)."""
    session = suites.session_request(req, suites.SuiteJob(spec, arch, Path()))
    key = digest(spec, arch.name, req.k or "", ",".join(req.suite), requests.to_json(session),
                 _suite_digest())
    kept = cache_root() / "runs" / f"{arch.name}-{key}" / "junit.xml"
    junit = out / "junit.xml"
    if kept.exists():
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(kept, junit)
        progress(f"{spec} {arch}: base results reused from {kept.parent} (same kernel, suite "
                 f"and selection; all passed)")
        return 0, junit
    status, junit = run_suite(req, spec, arch, out)
    if status == 0 and spec.startswith("build:"):
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(junit, kept)
    return status, junit


def validation_text(build: SourceRequest, series: list[patches.Patch],
                    results: list[Validation], out: Path) -> str:
    lines = [f"kharness validate: {build.source}, {len(series)} patch(es), "
             f"config {','.join(build.config)}"]
    lines += [f"  [{i}/{len(series)}] {p.subject}"[:78] for i, p in enumerate(series, 1)]
    for v in results:
        lines += ["", f"== {v.arch}: base {v.base} -> patched {v.patched or '(no build)'}"]
        if v.diff is not None:
            lines.append(v.diff.text())
        for r in v.regressions:
            where = out / f"patched-{v.arch}"
            lines += compare.wrap(f"REGRESSION {v.arch}: {r} (logs: {where})", 78)
    n = sum(len(v.regressions) for v in results)
    lines += ["", "no regressions" if n == 0 else f"{n} regression{'s' if n > 1 else ''}"]
    return "\n".join(lines)
