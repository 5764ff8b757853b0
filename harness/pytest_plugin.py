"""pytest plugin: --kernel/--arch options, a session guest, per-test dmesg windows.

A test that asks for the `guest` fixture gets the session's guest (booted on
first use, booted again if a test killed it). Around each such test the
kernel log is read as a window; a kernel report in it fails the test unless
the test declares it with @pytest.mark.expect_report("title part").
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import NoReturn

import pytest
from _pytest import junitxml
from _pytest.runner import runtestprotocol

from harness import arches, options, session, spawn
from harness.errors import KhError, UsageError
from harness.guest import Explanation, Guest, GuestDied, Target
from harness.observe import explain, memory, pagestate, reports
from harness.requests import MACHINE_FIELDS, SuiteRequest
from harness.results import compare, known
from harness.results.compare import SUBTEST
from harness.stats import percent, wilson
from harness.util import artifact_name, progress, safe_name

SETTINGS = pytest.StashKey[SuiteRequest]()   # the session's request


@dataclasses.dataclass
class Known:
    """The known issues of a session and what became of them."""
    entries: list[known.Entry]
    failed: dict[str, list[str]] = dataclasses.field(default_factory=dict)   # id -> tests
    not_seen: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    matched: set[str] = dataclasses.field(default_factory=set)   # ids some result matched
    verdicts: dict[str, str] = dataclasses.field(default_factory=dict)  # test -> its reruns'
    collected: list[str] = dataclasses.field(default_factory=list)   # the session's test names


KNOWN = pytest.StashKey[Known]()
POOL = pytest.StashKey["GuestPool"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_to_pytest(parser.getgroup("kharness", "kernel test harness"))


def pytest_configure(config: pytest.Config) -> None:
    spawn.listen_to_sigint()
    try:
        config.stash[SETTINGS] = options.from_pytest(config)
        config.stash[KNOWN] = Known(known.load(config.stash[SETTINGS].known_issues or None))
    except UsageError as e:
        stop_session(config, str(e), e)
    for line in (
        "kernel(spec): run only where the kernel matches, e.g. '>=7.2' or '<6.12'",
        "arch(name): run only on this guest arch",
        "expect_report(title): the test expects a kernel report whose title contains this",
        f"guest({', '.join(f'{name}=...' for name in ('cpus', *MACHINE_FIELDS))}): the test "
        "needs a guest of its own with these settings (harness/requests.py)",
        "qemu: the test needs a QEMU guest (its console, devices or death); skipped on "
        "an SSH --target",
        "slow: builds kernels from source; runs only with --slow",
        "host_arch: checks kharness itself, the same on every guest arch: runs where --arch "
        "is this host's (a matrix runs it once)",
    ):
        config.addinivalue_line("markers", line)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int):
    """Ctrl-C is 130, as everywhere in kharness. A full disk ends the
    session with exit 3 and one line, also when it is the JUnit file that
    cannot be written (pytest's own writer runs inside this wrapper)."""
    try:
        yield
    except OSError as e:
        if (why := _cannot_write(e)) is None:
            raise
        _stop_for_disk(session, why)
        xml = session.config.stash.get(junitxml.xml_key, None)
        if xml is not None:   # half a JUnit file is worse than none
            Path(xml.logfile).unlink(missing_ok=True)
    if DISK_FULL in session.config.stash:
        session.exitstatus = 3
    elif exitstatus == pytest.ExitCode.INTERRUPTED:
        session.exitstatus = 130
    elif exitstatus == 0 and session.config.stash[SETTINGS].strict_known and \
            session.config.stash[KNOWN].not_seen:
        session.exitstatus = 1      # --strict-known: a known issue that did not show


RERUN = pytest.StashKey[int]()     # which rerun of a failed test this is (--rerun-failures)
FLAKE = compare.RERUN               # the JUnit property with a failed test's verdict


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """--rerun-failures N: a test that failed (and no known issue explains)
    runs N more times, each in a guest restored from the snapshot, and gets
    a verdict: deterministic (failed every rerun), flaky (some), or passed
    on rerun; with the 95% interval of its fail rate over all its runs. The
    first run's reports stand: a flaky failure is still a failure."""
    n = item.config.stash[SETTINGS].rerun_failures
    if not n:
        return None
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    reports = runtestprotocol(item, nextitem=nextitem, log=False)
    call = next((r for r in reports if r.when == "call"), None)
    if call is not None and call.failed:
        failed = 0
        for i in range(1, n + 1):
            item.stash[RERUN] = i
            again = runtestprotocol(item, nextitem=nextitem, log=False)
            failed += any(r.when == "call" and (r.failed or _known_prop(r)) for r in again)
        item.stash[RERUN] = 0
        verdict = ("deterministic" if failed == n else "passed on rerun" if failed == 0
                   else "flaky")
        lo, hi = wilson(failed + 1, n + 1)
        text = (f"{verdict}: failed {failed} of {n} reruns, each in a fresh guest (fail rate "
                f"{failed + 1}/{n + 1}, 95% interval {percent(lo)}-{percent(hi)})")
        call.sections.append(("kharness reruns", text))
        add = getattr(call.longrepr, "addsection", None)    # the failure's text in JUnit
        if add is not None:
            add("kharness reruns", text)
        elif isinstance(call.longrepr, ReportFailure):
            call.longrepr.body += f"\n\nkharness reruns: {text}"
        prop = (FLAKE, json.dumps({"reruns": n, "failed": failed, "verdict": verdict,
                                   "fail_rate_95": [round(lo, 3), round(hi, 3)]}))
        for r in reports:       # JUnit reads a case's properties from its teardown
            r.user_properties.append(prop)
        item.config.stash[KNOWN].verdicts[item.nodeid] = text
    for r in reports:
        item.ihook.pytest_runtest_logreport(report=r)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


def _known_prop(rep: pytest.TestReport) -> bool:
    return any(name == known.KNOWN for name, _ in rep.user_properties)


def _where(config: pytest.Config) -> known.Where | None:
    pool = config.stash.get(POOL, None)
    prep = pool.prep if pool is not None else None
    if prep is None:
        return None
    return known.Where(prep.kernel.release, prep.kernel.spec, prep.kernel.arch.name, prep.boot,
                       config.stash.get(SELFTESTS, ""))


SELFTESTS = pytest.StashKey[str]()


def selftests_ran(config: pytest.Config, version: str) -> None:
    """The upstream selftests this session runs are of a tree of this
    version (`make kernelversion`): known issues read it (their
    `selftests` ranges), and so does whoever reads the JUnit later."""
    config.stash[SELFTESTS] = version
    xml = config.stash.get(junitxml.xml_key, None)
    if xml is not None:
        xml.add_global_property("kh-selftests-version", version)


def judge_known(config: pytest.Config, rep: pytest.TestReport, names: tuple[str, ...],
                texts: list[str], *, record: bool = True) -> list[tuple[str, str]]:
    """A failure a known issue explains becomes known: skipped, with the
    entry's id and title (JUnit: skipped); a pass that an entry expected to
    fail is 'not seen'. Returns the properties that say which (kh-known,
    kh-known-not-seen) for the caller to give the test's JUnit case. A
    rerun's result (record=False) is judged the same, but not counted."""
    state = config.stash.get(KNOWN, None)
    where = _where(config)
    if state is None or not state.entries or where is None:
        return []
    if rep.skipped and record:
        # A test that skipped (a kernel without the driver) could not fail:
        # an entry for it is not stale here.
        state.matched.update(e.id for e in state.entries
                             if e.applies(where) and e.covers(*names))
        return []
    if rep.when != "call":
        return []
    if rep.failed:
        e = known.explain(state.entries, where, names, texts)
        if e is None:
            return []
        first = next((t.strip().splitlines()[0] for t in texts if t and t.strip()), "")
        rep.outcome = "skipped"
        rep.longrepr = (str(rep.fspath), rep.location[1] or 0,
                        f"known issue {e.label} (it failed: {first[:300]})")
        if record:
            state.failed.setdefault(e.id, []).append(names[0])
            state.matched.add(e.id)
        whole = "\n\n".join(t for t in texts if t)
        return [(known.KNOWN, e.id), (known.KNOWN_TEXT, whole[:known.TEXT_LIMIT])]
    if rep.passed and record:
        # A flaky entry's test passing is what a flake mostly does: it was
        # there to be matched (not stale), and is not news (not "not seen").
        state.matched.update(e.id for e in state.entries
                             if e.kind == "flaky" and e.applies(where) and e.covers(*names))
    if rep.passed and (e := known.expecting(state.entries, where, names)) is not None:
        if record:
            state.not_seen.setdefault(e.id, []).append(names[0])
            state.matched.add(e.id)
        return [(known.NOT_SEEN, e.id)]
    return []


def _failure_texts(item, rep) -> list[str]:
    """What a known issue's match is tried on: the failure's message and the
    titles of the kernel reports in the test's window."""
    crash = getattr(rep.longrepr, "reprcrash", None)
    message = crash.message if crash is not None else str(rep.longrepr or "")
    return [message, *(r.title for r in item.stash.get(UNEXPECTED, []))]


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Rerun verdicts, known failures, known issues not seen (fixed?), and
    stale entries."""
    state = config.stash.get(KNOWN, None)
    where = _where(config)
    if state is None or where is None:
        return
    tr = terminalreporter
    if state.verdicts:
        tr.write_sep("-", f"reruns of {len(state.verdicts)} failed test(s)")
        for test, verdict in state.verdicts.items():
            tr.write_line(f"{test}: {verdict}")
    by_id = {e.id: e for e in state.entries}
    if state.failed:
        tr.write_sep("-", f"known issues: {sum(map(len, state.failed.values()))} failures")
        for i, tests in sorted(state.failed.items()):
            tr.write_line(f"KNOWN {by_id[i].label} [{by_id[i].kind}]: {len(tests)} "
                          f"({', '.join(tests[:3])}{', ...' if len(tests) > 3 else ''})")
    if state.not_seen:
        tr.write_sep("-", "known issues not seen (the bug may be fixed here)")
        for i, tests in sorted(state.not_seen.items()):
            tr.write_line(f"NOT SEEN {by_id[i].label}: {len(tests)} passed "
                          f"({', '.join(tests[:3])}{', ...' if len(tests) > 3 else ''})"
                          + (" -- fails the run (--strict-known)"
                             if config.stash[SETTINGS].strict_known else ""))
    if not config.option.keyword and not config.option.markexpr:   # a whole suite ran
        for e in state.entries:
            if e.applies(where) and e.id not in state.matched and \
                    e.concerns(state.collected):
                tr.write_line(f"warning: known issue {e.id} ({e.file}:{e.line}) matched no "
                              f"test on {where.release} {where.arch}: stale?")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    s = config.stash[SETTINGS]
    if KNOWN in config.stash:
        config.stash[KNOWN].collected = [i.name for i in items]
    slow = pytest.mark.skip(reason="slow (kernel builds from source): run with --slow")
    qemu = pytest.mark.skip(reason="needs a QEMU guest (its console, devices or death), "
                                   "not an SSH target")
    arch = s.guest.arch
    once = pytest.mark.skip(reason=f"checks kharness itself, not the {arch} guest: runs where "
                                   f"--arch is this host's ({arches.host()})")
    for item in items:
        if item.get_closest_marker("slow") and not s.slow:
            item.add_marker(slow)
        if item.get_closest_marker("host_arch") and arch not in (None, arches.host()):
            item.add_marker(once)
        if item.get_closest_marker("qemu") and s.guest.target is not None:
            item.add_marker(qemu)


def uncaptured(config: pytest.Config):
    """Lines for the terminal itself, not a test's capture."""
    capman = config.pluginmanager.getplugin("capturemanager")
    return capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()


def _unwritable(e: PermissionError) -> tuple[str, KhError]:
    """A file this user may not write (an immutable cache entry, another
    user's cache): the machine's trouble, exit 3, the path named."""
    why = f"cannot write {e.filename or 'a file'}: {e.strerror}; make it writable for this user"
    return why, KhError(why)


def stop_session(config: pytest.Config, message: str, error: KhError) -> NoReturn:
    """The session ends with the error's exit status and its one line on
    stderr, as kharness says it everywhere (pytest's own banner for an exit
    goes to stdout); the detail lines (a console tail) follow it."""
    with uncaptured(config):
        print(f"kharness: error: {message}", file=sys.stderr, flush=True)
        if error.detail:
            print(error.detail, file=sys.stderr, flush=True)
    pytest.exit(f"kharness: {message}", returncode=error.exit_code)


class GuestPool:
    """The session's guests, one a set of settings; a dead one is replaced on demand."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.settings = s = config.stash[SETTINGS]
        self.prep: session.Prepared | None = None
        self.guests: dict[tuple, Target] = {}
        self.users: dict[tuple, str] = {}          # who had each guest last (--fresh)
        self.variants: dict[tuple, session.Prepared] = {}
        stamp = time.strftime("%Y%m%d-%H%M%S")
        g = s.guest
        if g.target is not None:
            name = f"ssh-{g.target.host}-{stamp}"
        else:
            name = f"{safe_name((g.kernel or '').replace(':', '-'))}-{g.arch}-{stamp}"
        self.outdir = s.out.resolve() / name
        config.stash[POOL] = self

    def uncaptured(self):
        """Progress of downloads, builds and boots reaches the terminal, not a capture."""
        return uncaptured(self.config)

    def prepared(self) -> session.Prepared:
        if self.prep is None:
            s = self.settings
            try:
                with self.uncaptured():
                    self.prep = session.prepare(s.guest, self.outdir)
            except KhError as e:
                stop_session(self.config, str(e), e)
            except PermissionError as e:
                stop_session(self.config, *_unwritable(e))
            # What ran, for whoever reads the JUnit later (report merge, site)
            xml = self.config.stash.get(junitxml.xml_key, None)
            if xml is not None:
                xml.add_global_property("kh-kernel", self.prep.kernel.release)
                xml.add_global_property("kh-arch", str(self.prep.kernel.arch))
                xml.add_global_property("kh-where", self.prep.where)
                xml.add_global_property("kh-spec", self.prep.kernel.spec)
                xml.add_global_property("kh-boot", self.prep.boot)
        return self.prep

    def get(self, user: str = "", **settings) -> Target:
        """The live guest with these MachineSpec settings (cpus=...) for user
        (a test or a module; "" for the session), booted or restored if need
        be: a guest another user had is replaced by a fresh one (--fresh).
        An SSH target is one machine, whatever the settings: it is shared."""
        if self.settings.guest.target is not None:
            settings, user = {}, ""
        key = tuple(sorted(settings.items()))
        guest = self.guests.get(key)
        if guest is not None and guest.alive() and self.users.get(key, user) != user:
            guest.discard()
            guest = None
        self.users[key] = user
        if guest is None or not guest.alive():
            if guest is not None:
                guest.close()
            # One guest with special settings at a time besides the default
            # one: memory for each of a suite's variants adds up.
            for other in [k for k in self.guests if k and k != key]:
                self.guests.pop(other).close()
                session.drop_spare(self.variants[other])
            prep = self.variant(key)
            try:
                with self.uncaptured():
                    guest = self.guests[key] = session.start(
                        prep, ahead=session.restore_ahead(self.settings.fresh, prep.spec))
            except KhError as e:
                # A kernel that does not boot once will not boot for the next test.
                stop_session(self.config, f"the guest did not boot: {e}", e)
            except PermissionError as e:
                stop_session(self.config, *_unwritable(e))
        return guest

    def variant(self, key: tuple) -> session.Prepared:
        """The session's Prepared with some MachineSpec settings changed, kept so
        its boot-N folders keep counting up."""
        base = self.prepared()
        if not key:
            return base
        if key not in self.variants:
            # Settings can hold any text (append='memmap=4M$0x...'): the folder
            # is named in a safe alphabet, the settings written inside it.
            outdir = base.outdir / safe_name("-".join(f"{k}{v}" for k, v in key))
            outdir.mkdir(parents=True, exist_ok=True)
            (outdir / "guest.json").write_text(json.dumps(dict(key), indent=1) + "\n")
            self.variants[key] = base.variant(outdir, **dict(key))
        return self.variants[key]

    def close(self) -> None:
        for guest in self.guests.values():
            guest.close()
        self.guests.clear()
        for prep in [self.prep, *self.variants.values()]:
            if prep is not None:
                session.drop_spare(prep)
        retried = sum(p.boots.retries for p in [self.prep, *self.variants.values()] if p)
        if retried:
            progress(f"{retried} boots with several vCPUs failed in the rig (TCG) "
                             f"and were booted again; no test saw them")


def resolved(config: pytest.Config):
    """The suite's options as resolved (defaults filled in), as command-line
    text: resolved(config)("--arch") is "x86_64" also when none was given."""
    req = config.stash[SETTINGS]

    def get(flag: str) -> str:
        return options.text_of(options.value_of(req, flag.lstrip("-").replace("-", "_")))
    return get


@pytest.fixture(scope="session")
def kh_pool(request):
    pool = GuestPool(request.config)
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def kernel(kh_pool):
    return kh_pool.prepared().kernel


def _version_matches(version: tuple[int, int], spec: str) -> bool:
    m = re.fullmatch(r"\s*(>=|<=|==|<|>)?\s*(\d+)\.(\d+)\s*", spec)
    if not m:
        raise pytest.UsageError(f"bad kernel marker '{spec}': use e.g. '>=7.2'")
    op = m.group(1) or "=="
    want = (int(m.group(2)), int(m.group(3)))
    return {"==": version == want, ">=": version >= want, "<=": version <= want,
            "<": version < want, ">": version > want}[op]


@pytest.fixture
def guest(kh_pool, request) -> Target:
    prep = kh_pool.prepared()
    for mark in request.node.iter_markers("arch"):
        if prep.kernel.arch.name not in mark.args:
            pytest.skip(f"arch-specific: {', '.join(mark.args)}")
    for mark in request.node.iter_markers("kernel"):
        if not all(_version_matches(prep.kernel.version, s) for s in mark.args):
            pytest.skip(f"kernel {prep.kernel.release} outside {' '.join(mark.args)}")
    settings = {}
    for mark in request.node.iter_markers("guest"):
        settings.update(mark.kwargs)
    user = session.owner(kh_pool.settings.fresh, request.node.nodeid,
                         request.node.stash.get(RERUN, 0))
    g = kh_pool.get(user, **settings)
    if prep.target is not None and settings.get("cpus", 1) > 1:
        # A real machine has the CPUs it has: a race test needs them.
        have = int(g.run("nproc", check=True).stdout.strip() or 1)
        if have < settings["cpus"]:
            pytest.skip(f"needs {settings['cpus']} CPUs; {prep.target.url} has {have}")
    g.dmesg_window()  # whatever came before is not this test's
    request.node.stash[GUEST] = g
    if "live" in request.fixturenames:
        _live_ahead(g, kh_pool)
    return g


def _live_ahead(g: Target, kh_pool) -> None:
    """For a test that reads page state (the live fixture): a QEMU guest and
    the kernel's DWARF (fetched once; else a skip naming what is missing),
    and drgn opening on the guest while the test's other fixtures set up
    (pagestate.open_ahead)."""
    if not isinstance(g, Guest):
        pytest.skip("a real machine's memory cannot be dumped: page state is for QEMU guests")
    prep = kh_pool.prepared()
    if prep.kernel.arch.page_table is None:
        pytest.skip(f"page state: kharness does not walk {prep.kernel.arch}'s page tables "
                    f"(harness/observe/pagestate.py knows x86_64's and arm64's)")
    if "CONFIG_DEBUG_INFO=y" not in prep.kernel.config.read_text():
        # Neither the kernel's DWARF nor our modules' (built as the kernel
        # is): drgn would have symbols and no types to read a page with.
        pytest.skip(f"kernel {prep.kernel.release} was built without CONFIG_DEBUG_INFO: "
                    f"page state needs types (build it with the debuginfo fragment)")
    with kh_pool.uncaptured():      # the kernel's DWARF: a download the first time
        try:
            memory.dwarf(prep.kernel, fetch=True)
        except KhError as e:
            stop_session(kh_pool.config, f"the kernel's debug information: {e}", e)
    pagestate.open_ahead(g, prep.kernel, prep.modules)


@pytest.fixture
def live(guest, kh_pool):
    """The guest's memory mid-test through drgn (harness/observe/pagestate.py):
    live.state() holds the guest still and returns a drgn Program reading
    it over QMP, live.holding(argv)
    keeps a khmap mapping alive meanwhile, live.page(prog, pfn) reads a
    struct page."""
    prep = kh_pool.prepared()     # the guest fixture made it ready (_live_ahead)
    view = pagestate.Live(guest, prep.kernel, prep.modules, guest.workdir)
    yield view
    view.close()


class Behaviour:
    """Expected-vs-seen checks of kernel behaviour, kept for the matrix report.

    Each check is stored in the test's user_properties (and so in JUnit as a
    property named kh:<what>) before it is asserted.
    """

    def __init__(self, node):
        self.node = node

    def check(self, what: str, expected, seen) -> None:
        assert self.record(what, expected, seen), \
            f"{what}: expected {expected!r}, the kernel did {seen!r}"

    def record(self, what: str, expected, seen) -> bool:
        """A check kept for the matrix, not asserted: whether it held. For a
        test that tries many inputs and reports every one that failed."""
        self.node.user_properties.append(
            (f"kh:{what}", json.dumps({"expected": expected, "seen": seen})))
        return seen == expected

    def note(self, what: str, value) -> None:
        """A figure for the report that is not a check (a hit rate, a time)."""
        self.node.user_properties.append((f"kh:{what}", json.dumps({"note": value})))


@pytest.fixture
def behaviour(request) -> Behaviour:
    return Behaviour(request.node)


class KernelReport(AssertionError):
    pass


@dataclasses.dataclass
class _Crash:
    message: str


class ReportFailure:
    """A failure led by kernel reports: JUnit's message is the title line,
    its body the reports' own text (and the test's failure, if any)."""

    def __init__(self, message: str, found: list[reports.Report], also: str, art: Path,
                 explained: Explanation | None = None):
        self.reprcrash = _Crash(message)
        texts = "\n\n".join(f"{r.title}{' (corrupted: ' + r.reason + ')' if r.corrupted else ''}"
                            f"\n{r.text}" for r in found)
        self.body = message
        if explained is not None:     # the page it names, as the guest holds it
            self.body += f"\n{explained.line}"
        self.body += f"\n\n{texts}\n\nkernel log window and console: {art}"
        if explained is not None and explained.text:
            self.body += f"\n\nwhat the guest says:\n{explained.text}"
        if also:
            self.body += f"\n\nthe test's own failure:\n{also}"

    def __str__(self) -> str:
        return self.body

    def toterminal(self, tw) -> None:
        for line in self.body.splitlines():
            tw.line(line)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    failure = None
    try:
        result = yield
    except BaseException as e:
        failure = e
    problem = _check_window(item, failure)
    if problem and failure is not None and not isinstance(failure, GuestDied):
        # The kernel's report names the bug better than the check it broke:
        # lead with it, keep the assertion beside it.
        first = str(failure).splitlines()[0] if str(failure) else type(failure).__name__
        raise KernelReport(f"{problem}; the test also failed: {first}") from failure
    if failure is not None:
        raise failure
    if problem:
        raise KernelReport(problem)
    return result


# What a test leaves for the hooks after it: its guest, its kernel log
# window, the reports in it that it did not ask for.
GUEST = pytest.StashKey[Target]()
WINDOW = pytest.StashKey[str]()
UNEXPECTED = pytest.StashKey[list]()
EXPLAINED = pytest.StashKey[Explanation]()


def _check_window(item, failure) -> str | None:
    g = item.stash.get(GUEST, None)
    if g is None:
        return None
    if isinstance(failure, GuestDied) or not g.alive():
        found = g.died.reports if g.died else []
        item.stash[WINDOW] = g.console_since_mark()
    else:
        item.stash[WINDOW] = g.dmesg_window()
        found = reports.parse(item.stash[WINDOW])
    expected = [a for m in item.iter_markers("expect_report") for a in m.args]
    unexpected = [r for r in found if not any(e in r.title for e in expected)]
    item.stash[UNEXPECTED] = unexpected
    if unexpected:   # for `kharness compare`: reports no test asked for
        item.user_properties.append(("kh-reports", json.dumps([r.title for r in unexpected])))
        # the same crash under other titles: compare and merge count it once
        item.user_properties.append(("kh-report-alts",
                                     json.dumps([r.alt_titles for r in unexpected])))
    if isinstance(failure, GuestDied) and failure.hang is not None:
        item.stash[EXPLAINED] = failure.hang
    elif unexpected and isinstance(g, Guest) and g.dumpable():
        _explain_pages(item, g, unexpected)
    if unexpected:
        return "kernel report in this test's window: " + "; ".join(r.title for r in unexpected)
    missing = [e for e in expected if not any(e in r.title for r in found)]
    if missing:
        return "expected kernel report not seen: " + "; ".join(missing)
    return None


def _explain_pages(item, g: Guest, found: list[reports.Report]) -> None:
    """The pages the reports name, decoded from the guest's memory as the
    failure left it (live over QMP: the guest still runs, or its kernel
    stopped it), with the test's VMAs that map them."""
    pfns = explain.pfns_named("\n".join(r.text for r in found))
    if not pfns:
        return
    prep = item.config.stash[POOL].prepared()
    try:
        prog, levels = explain.live(g, prep.kernel, prep.modules, ask=g.died is None)
        walk = pagestate.walker(prep.kernel.arch)
        item.stash[EXPLAINED] = explain.pages(prog, pfns, walk, levels)
    except Exception as e:      # drgn's and QMP's: the report is still the news
        item.stash[EXPLAINED] = Explanation(
            f"the pages it names could not be read ({type(e).__name__}: {e})", "", "")


# Errors that mean the output cannot be written: the machine's trouble
# (exit 3), not the kernel's, and no test after it could keep its logs.
CANNOT_WRITE = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)
DISK_FULL = pytest.StashKey[str]()


def _cannot_write(exc: BaseException | None) -> str | None:
    if isinstance(exc, OSError) and exc.errno in CANNOT_WRITE:
        return f"cannot write {exc.filename or 'the output'}: {exc.strerror}"
    return None


def _stop_for_disk(session: pytest.Session, why: str) -> None:
    if DISK_FULL not in session.config.stash:
        session.config.stash[DISK_FULL] = why
        with uncaptured(session.config):
            print(f"kharness: error: {why}; what was written so far stays", file=sys.stderr,
                  flush=True)
    session.shouldstop = why


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    why = _cannot_write(call.excinfo.value if call.excinfo else None)
    if why:     # one line, not a traceback, and no test after it
        rep.longrepr = why
        _stop_for_disk(item.session, why)
        return rep
    try:
        _keep_artifacts(item, call, rep)
    except OSError as e:
        if (why := _cannot_write(e)) is None:
            raise
        _stop_for_disk(item.session, why)
    # JUnit takes a case's properties from its teardown report: the item's.
    item.user_properties += judge_known(item.config, rep, (item.name, item.nodeid),
                                        _failure_texts(item, rep),
                                        record=not item.stash.get(RERUN, 0))
    return rep


def _keep_artifacts(item, call, rep) -> None:
    """A failed test's kernel log window, console and memory dump beside its
    logs (the dump also for a passed one with --vmcore always)."""
    window = item.stash.get(WINDOW, None)
    if rep.when != "call" or window is None:
        return
    g = item.stash[GUEST]
    when = item.config.stash[SETTINGS].vmcore
    rerun = item.stash.get(RERUN, 0)
    art = g.workdir.parent / "tests" / (artifact_name(item.nodeid)
                                        + (f"-rerun-{rerun}" if rerun else ""))
    if (when == "always" or (rep.failed and when == "on-failure")) and not rerun:
        _dump(g, art, rep)      # a rerun's failure is the first's again: its dump will do
    if rep.failed:
        art.mkdir(parents=True, exist_ok=True)
        (art / "test-id").write_text(item.nodeid + "\n")
        (art / "dmesg.txt").write_text(window)
        if g.console_log.exists():
            shutil.copy(g.console_log, art / "console.log")
        found = item.stash.get(UNEXPECTED, [])
        explained = item.stash.get(EXPLAINED, None)
        if explained is not None and explained.full:
            (art / explained.file).write_text(explained.full + "\n")
        if call.excinfo is not None and call.excinfo.errisinstance(KernelReport) and found:
            cause = call.excinfo.value.__cause__
            rep.longrepr = ReportFailure(str(call.excinfo.value).splitlines()[0], found,
                                         str(cause) if cause else "", art, explained)
        else:
            if explained is not None:
                rep.sections.append(("what the guest says", explained.text or explained.line))
            rep.sections.append(("kernel log window", window[-6000:] or "(empty)"))
        rep.sections.append(("kharness artifacts", str(art)))


def _dump(g: Target, art: Path, rep) -> None:
    """The guest's memory into the test's folder, while it still runs or
    stopped where its kernel panicked; a guest that hung was killed."""
    if not isinstance(g, Guest) or not g.dumpable():
        return
    art.mkdir(parents=True, exist_ok=True)
    try:
        size, seconds = g.dump(art / "vmcore")
    except KhError as e:    # the rig's trouble: the test's own verdict stands
        rep.sections.append(("kharness vmcore", f"no memory dump: {e}"))
        return
    rep.sections.append(("kharness vmcore", f"{art / 'vmcore'}: {size / 2**20:.0f} MiB in "
                                            f"{seconds:.1f}s"))


def report_subtest(item: pytest.Item, name: str, outcome: str, *, reason: str = "",
                   text: str = "", seconds: float = 0.0, xfail: bool = False,
                   properties: list[tuple[str, object]] | None = None) -> None:
    """A result of its own for one part of a test (an upstream selftest's
    subtest), as pytest-subtests does: a report with the node id
    <item's id without its closing bracket>/<name>], seen by the terminal,
    JUnit and -rA like any test's."""
    base = item.nodeid[:-1] if item.nodeid.endswith("]") else item.nodeid + "["
    nodeid = f"{base}/{name}]"
    path, line, _ = item.location
    longrepr: object = None
    if outcome == "skipped":
        longrepr = (str(item.path), (line or 0) + 1, f"Skipped: {reason or 'no reason given'}")
    elif outcome == "failed":    # a failure always says so first, also with no reason given
        longrepr = f"{reason or 'FAIL  ' + name}\n{text}".strip()
    rep = pytest.TestReport(nodeid, (path, line, f"{item.name}/{name}"), {item.name: 1},
                            outcome, longrepr, "call",  # type: ignore[arg-type]
                            sections=[("output", text)] if text and outcome != "failed" else [],
                            duration=seconds,
                            user_properties=[*(properties or []), (SUBTEST, item.name)])
    if xfail:
        rep.wasxfail = reason or "expected to fail"
    else:
        rep.user_properties += judge_known(
            item.config, rep, (f"{base.rpartition('::')[2]}/{name}]", nodeid),
            [str(longrepr or ""), text])
    item.ihook.pytest_runtest_logreport(report=rep)
    # A subtest has no teardown report, from which JUnit takes a case's
    # properties: they go to its case directly.
    xml = item.config.stash.get(junitxml.xml_key, None)
    if xml is not None:
        case = xml.node_reporter(rep)
        for prop, value in rep.user_properties:
            case.add_property(prop, str(value))
    # The progress figure counts collected tests: a subtest is not one of them.
    terminal = item.config.pluginmanager.get_plugin("terminalreporter")
    getattr(terminal, "_progress_nodeids_reported", set()).discard(getattr(rep, "id", nodeid))

