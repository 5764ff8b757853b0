"""Kernel report recognition over a console log or a dmesg window.

The titles are syzkaller's (pkg/report/linux.go), so a title can be pasted
into syzbot's dashboard, lore or bugzilla and find the same bug. The shape
is theirs too, as data: an Oops row per header string (found at the start
of a kernel console line), each with an ordered list of Formats; the first
format whose title regex matches earliest in the report names it. A format
with a Stack reads the guilty frame: its parts are matched in order
(a regex that may capture a frame, or PARSE, which reads a stack trace up
to the next stack start), frames matching the common skip list or the
format's own are passed over, and the first frame left (or what the
format's extractor picks) goes into the title. A report whose frame cannot
be read keeps its kind in the title and is flagged corrupted with a reason.

A report runs from its header to the next report's header (a panic, an
"invalid opcode" or "Internal error" line of its own making does not end
it), an "---[ end trace" line, or MAX_REPORT_LINES. Parsing is a pure
function, linear in the input.
"""

from __future__ import annotations

import codecs
import enum
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO


class Kind(enum.Enum):
    WARNING = "warning"
    BUG = "bug"                  # BUG:, kernel BUG at, Bad page, rss-counter, ...
    KASAN = "kasan"
    KFENCE = "kfence"
    UBSAN = "ubsan"
    MEMORY_LEAK = "memory-leak"
    LOCKDEP = "lockdep"          # possible deadlock, inconsistent lock state, ...
    ATOMIC = "atomic"            # sleeping/scheduling in atomic context, preemptible
    HANG = "hang"                # hung task, RCU stall, soft lockup, workqueue lockup
    FAULT = "fault"              # NULL deref, paging request, GPF, Internal error
    PANIC = "panic"
    PAT = "pat"
    MACHINE = "machine"          # the machine died: no output, lost connection, timed out


# syzkaller's macros for regexes
_MACROS = {
    "{{ADDR}}": r"0x[0-9a-f]+",
    "{{PC}}": r"\[\<?(?:0x)?[0-9a-f]+\>?\]",
    "{{FUNC}}": r"([a-zA-Z0-9_]+)(?:\.|\+)",
    "{{SRC}}": r"([a-zA-Z0-9-_/.]+\.[a-z]+:[0-9]+)",
}


def rx(pattern: str) -> re.Pattern:
    for macro, expansion in _MACROS.items():
        pattern = pattern.replace(macro, expansion)
    return re.compile(pattern)


PARSE = rx(r"\A(?!)")   # a part meaning: read a stack trace from here
RIP = rx(r"(?:IP|NIP|pc |PC is at):? (?:(?:[0-9]+:)?(?:{{PC}} +){0,2}{{FUNC}}|(?:[0-9]+:)?0x"
         r"[0-9a-f]+|(?:[0-9]+:)?{{PC}} +\[< *\(null\)>\] +\(null\)|[0-9]+: +\(null\))")
CALL_TRACE = rx(r"(?:Call (?:T|t)race:)|(?:Backtrace:)")
STACK_STARTS = [rx(p) for p in (
    r"Call (?:T|t)race", r"Allocated:", r"Allocated by task [0-9]+:", r"Freed:",
    r"Freed by task [0-9]+:", r"[^k] backtrace(?: \(crc [0-9a-f]*\))?:", r"Backtrace:",
    r"Uninit was stored to memory at")]
FRAME = rx(r"^ *(?:{{PC}} ){0,2}{{FUNC}}")

# Frames that say how a report was raised, not where: syzkaller's common list
# (linuxStackParams.skipPatterns), matched anywhere in the frame's name.
SKIP = (
    "__sanitizer", "__asan", "kasan", "hwasan", "__msan", "kmsan", "kcsan_setup_watchpoint",
    "check_memory_region", "check_heap_object", "check_object", "read_word_at_a_time",
    "(read|write)_once_.*nocheck", "print_address_description", "panic", "invalid_op",
    "report_bug", "fixup_bug", "print_report", "print_usage_bug", "do_error", r"_trap$|do_trap",
    "show_stack", "dump_stack", "walk_stack", "dump_backtrace", "warn_slowpath", "warn_alloc",
    "warn_bogus", "__warn", "alloc_page", "k?v?(?:m|z|c)alloc", "krealloc", "kmem_cache",
    "allocate_slab", "__alloc_frozen_pages_noprof", "folio_(?:alloc|unlock)",
    "filemap_alloc_folio", "__filemap_get_folio", "find_or_create_page",
    "do_read_cache_folio", "read_cache_page", "pagecache_get_page",
    "grab_cache_page_write_begin", "slab_", "debug_object", "timer_is_static_object",
    "work_is_static_object", "__might_fault", "print_unlock", "imbalance_bug", "lockdep",
    "bh_enable", "bh_disable", "perf_trace", "lock_acquire", "lock_release", "lock_class",
    "mark_lock", "(reacquire|mark)_held_locks", "raw_spin_rq", "spin_lock", "spin_trylock",
    "spin_unlock", "read_lock", "read_trylock", "write_lock", "write_trylock", "read_unlock",
    "write_unlock", "^down$", "down_read", "down_write", "down_read_trylock",
    "down_write_trylock", "down_trylock", "up_read", "up_write", "^mutex_", "^__mutex_",
    "^rt_mutex_", "owner_on_cpu", "osq_lock", "osq_unlock",
    "atomic(64)?_(dec|inc|read|set|or|xor|and|add|sub|fetch|xchg|cmpxchg|try)",
    "(set|clear|change|test)_bit", "__wake_up", "^refcount_", "^kref_", "ref_tracker",
    "seqprop_assert", "memcpy", "memcmp", "memset", "memchr", "memmove", "memdup", "strcmp",
    "strncmp", "strcpy", "strlcpy", "strncpy", "strscpy", "strlen", "strstr", "strnstr",
    "strnlen", "strchr", "strdup", "strndup", "copy_to_user", "copy_from_user",
    "copy_to_iter", "copy_from_iter", "copy_page_to_iter", "copy_page_from_iter",
    "copy_folio_to_iter", "^copyin$", "^copyout$", "put_user", "get_user", "might_fault",
    "might_sleep", "list_add", "list_del", "list_replace", "list_move", "list_splice", "^rb_",
    "^__rb_", "_indirect_thunk_", "string", "pointer", "snprintf", "scnprintf", "kasprintf",
    "kvasprintf", "printk", "va_format", "dev_info", "dev_notice", "dev_warn", "dev_err",
    "dev_alert", "dev_crit", "dev_emerg", "del_timer", "flush_work", "__cancel_work_timer",
    "cancel_work_sync", "try_to_grab_pending", "flush_workqueue", "drain_workqueue",
    "destroy_workqueue", "queue_work", "finish_wait", "kthread_stop", "kobject_",
    "^complete$", "wait_for_completion", "^kv?free$", "kfree_skb", "readb$", "readw$",
    "readl$", "readq$", "writeb$", "writew$", "writel$", "writeq$", "__might_resched",
    "^iput$", "^iput_final$", "^ihold$", "hex_dump_to_buffer", "print_hex_dump", "^klist_",
    "(trace|lockdep)_(hard|soft)irq", "^(un)?lock_page", "stack_trace_consume_entry",
    "arch_stack_walk", "stack_trace_save", "insert_work", "__queue_delayed_work",
    "queue_delayed_work_on", "ida_free", "do_(kernel|translation)_fault", "do_mem_abort",
    "el1_abort", "el1h_64_sync(?:_handler)?", "print_tainted", "xas_(?:start|load|find)",
    "__phys_addr", "__fortify_report", "fortify_panic", "^get_taint$", "^put_device$",
    "dput",
)
STRIP_PREFIXES = ("SYSC_", "SyS_", "sys_", "__x64_", "__ia32_", "__arm64_", "____sys_",
                  "___sys_", "__sys_", "__se_", "__se_sys_", "__do_sys_", "compat_SYSC_",
                  "compat_SyS_", "ksys_")

# Frames a stall or soft lockup is anchored to: the frame before the first
# of these names the bug (the loop that stalled is anywhere inside it).
STALL_ANCHORS = [re.compile(p) for p in (
    "process_one_work", "do_syscall_", "do_fast_syscall_", "el0_svc_handler",
    "invoke_syscall", "netif_receive_skb", "do_softirq", "call_timer_fn", "_run_timers",
    "run_timer_softirq", "hrtimer_run", "run_ksoftirqd", "smpboot_thread_fn", "^kthread$",
    "start_secondary", "cpu_startup_entry", "ret_from_fork", "vfs_write", "vfs_read",
    "vfs_iter_read", "vfs_iter_write", "new_sync_read", "new_sync_write", "vfs_ioctl",
    "ksys_ioctl", "compat_ioctl", "^call_mmap", "mmap_region", "do_mmap", "do_dentry_open",
    "vfs_open", "__do_fault", "do_page_fault", "^page_fault$", "__fput", "task_work_run",
    "exit_to_usermode", "smp_call_function", "tasklet_action")]


def stall_frame(frames: list[str]) -> str:
    prev = frames[0]
    for frame in frames:
        if any(a.search(frame) for a in STALL_ANCHORS):
            return "smp_call_function" if "smp_call_function" in frame else prev
        prev = frame
    return ""


def hang_frame(frames: list[str]) -> str:
    """A hung task is a victim: group by what it waits on, as syzkaller does."""
    anchors = {"rtnl_lock": "", "synchronize_rcu": "synchronize_rcu",
               "synchronize_srcu": "synchronize_rcu", "synchronize_net": "synchronize_rcu",
               "synchronize_sched": "synchronize_rcu"}
    for frame in frames:
        for anchor, replacement in anchors.items():
            if anchor in frame:
                return replacement or frame
    skip = ("sched", "_lock", "_slowlock", "down", "rwsem", "completion", "kthread", "wait",
            "synchronize", "context_switch", "__switch_to", "cancel_delayed_work",
            "rcu_barrier")
    return next((f for f in frames if not any(s in f for s in skip)), "")


@dataclass(frozen=True)
class Stack:
    parts: tuple[re.Pattern, ...]
    parts2: tuple[re.Pattern, ...] = ()
    skip: tuple[str, ...] = ()
    extractor: Callable[[list[str]], str] | None = None


def warning_stack(*skip: str) -> Stack:
    # x86_64 WARNINGs start the stack at RIP; arm64 and older kernels at Call trace.
    return Stack((RIP, PARSE), (CALL_TRACE, PARSE), skip)


def trace_stack(*skip: str, extractor: Callable[[list[str]], str] | None = None) -> Stack:
    return Stack((CALL_TRACE, PARSE), (), skip, extractor)


def fault_stack(*skip: str) -> Stack:
    return Stack((RIP, CALL_TRACE, PARSE), (), skip)


@dataclass(frozen=True)
class Format:
    title: re.Pattern
    fmt: str                         # str.format over the groups, then the frame(s)
    kind: Kind
    report: re.Pattern | None = None  # its groups replace the title's; no match: corrupted
    stack: Stack | None = None
    no_stack_trace: bool = False
    corrupted: bool = False


def _f(title: str, fmt: str, kind: Kind, **kw) -> Format:
    report = kw.pop("report", None)
    return Format(rx(title), fmt, kind, rx(report) if report else None, **kw)


@dataclass(frozen=True)
class Oops:
    header: str
    formats: tuple[Format, ...]
    suppressions: tuple[re.Pattern, ...] = ()


K = Kind
OOPSES: tuple[Oops, ...] = (
    Oops("BUG:", (
        _f(r"BUG: KASAN:", "KASAN: {0} {2} in {3}", K.KASAN,
           report=r"BUG: KASAN: ([a-z\-]+) in {{FUNC}}(?:.*\n)+?.*(Read|Write) "
                  r"(?:of size|at addr) (?:[0-9a-f]+)",
           stack=Stack((rx(r"BUG: KASAN: (?:[a-z\-]+) in {{FUNC}}"), CALL_TRACE, PARSE), (),
                       ("kernel_fault", "tag_check", "mem_abort", "^el1_", "^el1h_"))),
        _f(r"BUG: KASAN:", "KASAN: invalid-free in {1}", K.KASAN,
           report=r"BUG: KASAN: (?:double-free or invalid-free|double-free|invalid-free) "
                  r"in {{FUNC}}",
           stack=Stack((rx(r"BUG: KASAN: (?:double-free or invalid-free|double-free|"
                           r"invalid-free) in {{FUNC}}"), CALL_TRACE, PARSE), (),
                       ("slab_", "kfree", "vunmap", "vfree"))),
        _f(r"BUG: KASAN: (.*)", "KASAN: {0}", K.KASAN, corrupted=True),
        _f(r"BUG: KFENCE: (use-after-free|out-of-bounds) (read|write) in {{FUNC}}",
           "KFENCE: {0} {1} in {3}", K.KFENCE,
           stack=Stack((rx(r"BUG: KFENCE: (?:[a-z\- ]+) in {{FUNC}}"), PARSE))),
        _f(r"BUG: KFENCE: invalid free in {{FUNC}}", "KFENCE: invalid free in {1}", K.KFENCE,
           no_stack_trace=True,
           stack=Stack((rx(r"BUG: KFENCE: (?:[a-z\- ]+) in {{FUNC}}"), PARSE))),
        _f(r"BUG: KFENCE: invalid (read|write) in {{FUNC}}", "KFENCE: invalid {0} in {2}",
           K.KFENCE, stack=Stack((rx(r"BUG: KFENCE: (?:[a-z\- ]+) in {{FUNC}}"), PARSE))),
        _f(r"BUG: KFENCE: memory corruption in {{FUNC}}", "KFENCE: memory corruption in {1}",
           K.KFENCE, no_stack_trace=True,
           stack=Stack((rx(r"BUG: KFENCE: (?:[a-z\- ]+) in {{FUNC}}"), PARSE))),
        _f(r"BUG: (?:unable to handle kernel paging request|unable to handle page fault for "
           r"address|Unable to handle kernel data access)",
           "BUG: unable to handle kernel paging request in {0}", K.FAULT, stack=fault_stack()),
        _f(r"BUG: (?:unable to handle kernel NULL pointer dereference|kernel NULL pointer "
           r"dereference|Kernel NULL pointer dereference)",
           "BUG: unable to handle kernel NULL pointer dereference in {0}", K.FAULT,
           stack=fault_stack()),
        _f(r"BUG: (?:unable to handle kernel|Unable to handle kernel)",
           "BUG: unable to handle kernel", K.FAULT, corrupted=True),
        _f(r"BUG: (spinlock|rwlock) (lockup suspected|already unlocked|recursion|cpu recursion|"
           r"bad magic|wrong owner|wrong CPU|trylock failure on UP)", "BUG: {0} {1} in {2}",
           K.LOCKDEP, stack=trace_stack("spin_", "_lock", "_unlock")),
        _f(r"BUG: soft lockup", "BUG: soft lockup in {0}", K.HANG,
           stack=Stack((RIP, CALL_TRACE, PARSE), (), (), stall_frame)),
        _f(r"BUG: .*still has locks held!", "BUG: still has locks held in {0}", K.LOCKDEP,
           report=r"BUG: .*still has locks held!(?:.*\n)+?.*{{PC}} +{{FUNC}}"),
        _f(r"BUG: scheduling while atomic", "BUG: scheduling while atomic in {0}", K.ATOMIC,
           stack=trace_stack("schedule")),
        _f(r"BUG: bad unlock balance detected!", "BUG: bad unlock balance in {0}", K.LOCKDEP,
           stack=Stack((rx(r"{{PC}} +{{FUNC}}"), CALL_TRACE, PARSE))),
        _f(r"BUG: held lock freed!", "BUG: held lock freed in {0}", K.LOCKDEP,
           report=r"BUG: held lock freed!(?:.*\n)+?.*{{PC}} +{{FUNC}}"),
        _f(r"BUG: Bad rss-counter state", "BUG: Bad rss-counter state", K.BUG,
           no_stack_trace=True),
        _f(r"BUG: non-zero pgtables_bytes on freeing mm",
           "BUG: non-zero pgtables_bytes on freeing mm", K.BUG, no_stack_trace=True),
        _f(r"BUG: Bad page (state|cache)", "BUG: Bad page {0} in {1}", K.BUG,
           stack=Stack((rx("page last allocated"), PARSE), (),
                       ("(free|put|get|update|release)_page", "free_unref", "^_*folio",
                        "truncate_inode_pages", "page_frag_free", "alloc", "vmap",
                        "page_owner"))),
        _f(r"BUG: Bad page map", "BUG: Bad page map", K.BUG),
        _f(r"BUG: workqueue lockup", "BUG: workqueue lockup", K.HANG, no_stack_trace=True),
        _f(r"BUG: sleeping function called from invalid context at (.*)",
           "BUG: sleeping function called from invalid context in {1}", K.ATOMIC,
           stack=trace_stack()),
        _f(r"BUG: using ([a-z_]+)\(\) in preemptible", "BUG: using {0}() in preemptible code "
           "in {1}", K.ATOMIC, stack=trace_stack("dump_stack", "preemption", "preempt",
                                                 "debug_", "processor_id", "this_cpu")),
        _f(r"BUG: memory leak", "memory leak in {0}", K.MEMORY_LEAK,
           stack=Stack((rx(r"backtrace(?: \(crc [0-9a-f]*\))?:"), PARSE), (),
                       ("kmemleak", "mmap", "kmem", "slab", "alloc", "create_object",
                        "idr_get", "list_lru_init", "kasprintf", "kvasprintf", "pcpu_create",
                        "strdup", "strndup", "memdup"))),
        _f(r"BUG: .*stack guard page was hit at", "BUG: stack guard page was hit in {0}",
           K.FAULT, stack=Stack((RIP, CALL_TRACE, PARSE), (), (), stall_frame)),
        _f(r"BUG: Invalid wait context", "WARNING: locking bug in {0}", K.LOCKDEP,
           stack=trace_stack("lock_sock", "release_sock")),
        _f(r"BUG:[ \t]*(?:\n|$)", "BUG: corrupted", K.BUG, corrupted=True),
    ), (rx("ODEBUG:"), rx("DEBUG:"))),
    # kmemleak's own listing (cat /sys/kernel/debug/kmemleak): syzkaller
    # prints "BUG: memory leak" above it; the object line stands for it here.
    Oops("unreferenced object 0x", (
        _f(r"unreferenced object", "memory leak in {0}", K.MEMORY_LEAK,
           stack=Stack((rx(r"backtrace(?: \(crc [0-9a-f]*\))?:"), PARSE), (),
                       ("kmemleak", "mmap", "kmem", "slab", "alloc", "create_object",
                        "idr_get", "list_lru_init", "kasprintf", "kvasprintf", "pcpu_create",
                        "strdup", "strndup", "memdup"))),
    )),
    Oops("WARNING:", (
        _f(r"WARNING: .*lib/debugobjects\.c.* (?:debug_print|debug_check|at)",
           "WARNING: ODEBUG bug in {0}", K.WARNING,
           stack=warning_stack("debug_", "rcu", "hrtimer_", "timer_", "work_", "percpu_",
                               "vunmap", "vfree", "__free_", "debug_check", "kobject_")),
        _f(r"WARNING: .*mm/usercopy\.c.* (?:usercopy_warn|at)", "WARNING: bad usercopy in {0}",
           K.WARNING, stack=warning_stack("usercopy", "__check")),
        _f(r"WARNING: .*lib/refcount\.c.* (?:refcount_|at)", "WARNING: refcount bug in {0}",
           K.WARNING, stack=warning_stack("refcount", "kobject_")),
        _f(r"WARNING: .*kernel/locking/lockdep\.c.*lock_", "WARNING: locking bug in {0}",
           K.LOCKDEP, stack=warning_stack("lock_sock", "release_sock")),
        _f(r"WARNING: .*still has locks held!", "WARNING: still has locks held in {0}",
           K.LOCKDEP, report=r"WARNING: .*still has locks held!(?:.*\n)+?.*at: {{FUNC}}"),
        _f(r"WARNING: lock held when returning to user space",
           "WARNING: lock held when returning to user space in {0}", K.LOCKDEP,
           report=r"WARNING: lock held when returning to user space(?:.*\n)+?.*leaving the "
                  r"kernel with locks still held(?:.*\n)+?.*at: (?:{{PC}} +)?{{FUNC}}",
           no_stack_trace=True),
        _f(r"WARNING: .*mm/.*\.c.* k?.?malloc", "WARNING: kmalloc bug in {0}", K.WARNING,
           stack=warning_stack("kmalloc", "krealloc", "slab", "kmem")),
        _f(r"WARNING: .*mm/vmalloc.c.*__vmalloc_node", "WARNING: zero-size vmalloc in {0}",
           K.WARNING, stack=warning_stack()),
        # 6.19+: "WARNING: mm/memory.c:2345 at insert_pfn+0x1a/0x200, CPU#0: a/1"
        _f(r"WARNING: {{SRC}} at 0x\d+, CPU#\d+", "WARNING in {1}", K.WARNING,
           stack=warning_stack()),
        _f(r"WARNING: .* at {{SRC}} {{FUNC}}", "WARNING in {2}", K.WARNING,
           stack=warning_stack()),
        _f(r"WARNING: {{SRC}} at {{FUNC}}", "WARNING in {2}", K.WARNING, stack=warning_stack()),
        _f(r"WARNING: possible circular locking dependency detected", "possible deadlock in {0}",
           K.LOCKDEP, report=r"WARNING: possible circular locking dependency detected"
                             r"(?:.*\n)+?.*is trying to acquire lock",
           stack=Stack((rx(r"at: (?:{{PC}} +)?{{FUNC}}"), rx(r"at: (?:{{PC}} +)?{{FUNC}}"),
                        PARSE), (), ("process_one_work", "flush_workqueue",
                                     "drain_workqueue", "destroy_workqueue"))),
        _f(r"WARNING: possible irq lock inversion dependency detected",
           "possible deadlock in {0}", K.LOCKDEP,
           report=r"WARNING: possible irq lock inversion dependency detected(?:.*\n)+?.*just "
                  r"changed the state of lock(?:.*\n)+?.*at: (?:{{PC}} +)?{{FUNC}}"),
        _f(r"WARNING: .*-safe -> .*-unsafe lock order detected", "possible deadlock in {0}",
           K.LOCKDEP, stack=Stack((rx(r"which became (?:.*) at:"), PARSE))),
        _f(r"WARNING: possible recursive locking detected", "possible deadlock in {0}",
           K.LOCKDEP, report=r"WARNING: possible recursive locking detected(?:.*\n)+?.*is "
                             r"trying to acquire lock(?:.*\n)+?.*at: (?:{{PC}} +)?{{FUNC}}"),
        _f(r"WARNING: inconsistent lock state", "inconsistent lock state in {1}", K.LOCKDEP,
           report=r"WARNING: inconsistent lock state(?:.*\n)+?.*takes(?:.*\n)+?.*at: "
                  r"(?:{{PC}} +)?{{FUNC}}", stack=trace_stack()),
        _f(r"WARNING: suspicious RCU usage", "WARNING: suspicious RCU usage in {1}", K.LOCKDEP,
           report=r"WARNING: suspicious RCU usage(?:.*\n)+?.*?{{SRC}}",
           stack=trace_stack("rcu", "kmem", "slab")),
        _f(r"WARNING: bad unlock balance detected!", "WARNING: bad unlock balance in {0}",
           K.LOCKDEP, stack=Stack((rx(r"{{PC}} +{{FUNC}}"), CALL_TRACE, PARSE))),
        _f(r"WARNING: held lock freed!", "WARNING: held lock freed in {0}", K.LOCKDEP,
           report=r"WARNING: held lock freed!(?:.*\n)+?.*at:(?: {{PC}})? +{{FUNC}}"),
        _f(r"WARNING:[ \t]*(?:\n|$)", "WARNING: corrupted", K.WARNING, corrupted=True),
    ), (rx(r"WARNING: /etc/ssh/moduli"), rx(r"WARNING: workqueue cpumask"))),
    Oops("INFO:", (
        _f(r"INFO: rcu_(?:preempt|sched|bh) (?:self-)?detected(?: expedited)? stall",
           "INFO: rcu detected stall in {0}", K.HANG,
           stack=Stack((rx("apic_timer_interrupt"), RIP, PARSE),
                       (rx(r"(?:apic_timer_interrupt|Exception stack|el1h_64_irq)"), PARSE),
                       ("apic_timer_interrupt", "rcu"), stall_frame)),
        _f(r"INFO: trying to register non-static key",
           "INFO: trying to register non-static key in {0}", K.LOCKDEP,
           stack=trace_stack("stack", "lock", "IRQ")),
        _f(r"INFO: task .* blocked for more than [0-9]+ seconds", "INFO: task hung in {0}",
           K.HANG, stack=trace_stack(extractor=hang_frame)),
        _f(r"INFO: task .* can't die for more than .* seconds", "INFO: task can't die in {0}",
           K.HANG, stack=trace_stack("schedule")),
        _f(r"INFO:[ \t]*(?:\n|$)", "INFO: corrupted", K.BUG, corrupted=True),
    ), (rx("INFO: lockdep is turned off"), rx("INFO: Stall ended before state dump start"),
        rx("INFO: NMI handler"), rx(r"(handler|interrupt).*took too long"), rx("_INFO:"))),
    Oops("Unable to handle kernel", (
        _f(r"Unable to handle kernel (paging request|NULL pointer dereference|access to user "
           r"memory)", "BUG: unable to handle kernel {0} in {1}", K.FAULT,
           stack=fault_stack()),
    )),
    Oops("general protection fault", (
        _f(r"general protection fault.*:", "general protection fault in {0}", K.FAULT,
           stack=fault_stack()),
    ), (rx(r"general protection fault .* error:\d+ in "),)),
    Oops("stack segment: ", (
        _f(r"stack segment: ", "stack segment fault in {0}", K.FAULT, stack=fault_stack()),
    )),
    Oops("int3: ", (
        _f(r"int3: ", "int3 in {0}", K.FAULT, stack=Stack((RIP,))),
    )),
    Oops("Kernel panic", (
        _f(r"Kernel panic - not syncing: stack-protector:", "kernel panic: stack is corrupted "
           "in {0}", K.PANIC, report=r"Kernel panic - not syncing: stack-protector: Kernel "
                                     r"stack is corrupted in: {{FUNC}}", no_stack_trace=True),
        _f(r"Kernel panic - not syncing: kernel stack overflow", "kernel stack overflow in {0}",
           K.PANIC, stack=trace_stack("bad_stack", extractor=stall_frame)),
        _f(r"Kernel panic - not syncing: Attempted to kill init!",
           "kernel panic: Attempted to kill init!", K.PANIC),
        _f(r"Kernel panic - not syncing: Fatal exception", "kernel panic: Fatal exception",
           K.PANIC, corrupted=True),
        _f(r"Kernel panic - not syncing: panic_on_warn set", "kernel panic: panic_on_warn set",
           K.PANIC, corrupted=True),
        _f(r"Kernel panic - not syncing: hung_task: blocked tasks",
           "kernel panic: hung_task: blocked tasks", K.PANIC, corrupted=True),
        _f(r"Kernel panic - not syncing: (.*)", "kernel panic: {0}", K.PANIC),
    )),
    Oops("PANIC: double fault", (
        _f(r"PANIC: double fault", "PANIC: double fault in {0}", K.FAULT, stack=Stack((RIP,))),
    )),
    Oops("kernel BUG", (
        _f(r"kernel BUG at mm/usercopy.c", "BUG: bad usercopy in {0}", K.BUG,
           stack=trace_stack("usercopy", "__check")),
        _f(r"kernel BUG at lib/list_debug.c", "BUG: corrupted list in {0}", K.BUG,
           stack=trace_stack()),
        _f(r"kernel BUG at (.*)", "kernel BUG in {1}", K.BUG,
           stack=Stack((RIP, CALL_TRACE, PARSE), (), ("^skb_",))),
    )),
    Oops("Kernel BUG", (_f(r"Kernel BUG (.*)", "kernel BUG {0}", K.BUG),)),
    Oops("divide error:", (
        _f(r"divide error: ", "divide error in {0}", K.FAULT, stack=Stack((RIP,))),)),
    Oops("invalid opcode:", (
        _f(r"invalid opcode: ", "invalid opcode in {0}", K.FAULT, stack=Stack((RIP,))),)),
    Oops("UBSAN:", (
        _f(r"UBSAN:", "UBSAN: undefined-behaviour in {0}", K.UBSAN,
           report=r"UBSAN: Undefined behaviour in", stack=trace_stack("ubsan", "overflow")),
        _f(r"UBSAN: array-index-out-of-bounds in", "UBSAN: array-index-out-of-bounds in {0}",
           K.UBSAN, stack=trace_stack("ubsan", "overflow")),
        _f(r"UBSAN:", "UBSAN: {0} in {1}", K.UBSAN, report=r"UBSAN: (.*?) in",
           stack=trace_stack("ubsan", "overflow")),
    )),
    Oops("Internal error:", (
        _f(r"Internal error:", "Internal error in {0}", K.FAULT, stack=fault_stack()),
    )),
    # arch/x86/mm/pat/memtype.c: a PFNMAP's reservation released twice or never made.
    # Not syzkaller's (it prints no stack); ours for PAT1/PAT2.
    Oops("x86/PAT: ", (
        _f(r"x86/PAT: .*freeing invalid memtype", "x86/PAT: freeing invalid memtype", K.PAT,
           no_stack_trace=True),
    ), (rx(r"x86/PAT: (?!.*freeing invalid memtype)"),)),
)

# Lines that do not start a report of their own inside another one.
START_IGNORES = [rx(p) for p in (r"invalid opcode: 0000", r"Kernel panic - not syncing",
                                 r"PANIC: double fault", r"Internal error:",
                                 r"unregister_netdevice: waiting for")]

# "[   12.345678][ T123] ", "<4>[...]": the console prefix and its caller id.
_PREFIX = re.compile(r"^(?:\*\* [0-9]+ printk messages dropped \*\* )?(?:<[0-9]+>)?"
                     r"(?:\[ *[0-9]+\.[0-9]+\](\[ *(?:C|T)[0-9]+\])? ?)?")
# What may stand before a header on its line: subsystem tags ("rcu: ", "Oops: ").
_LEAD = re.compile(r"(?:\[ )?(?:[\w/.-]+: )*")   # lockdep: "[ BUG: Invalid wait context ]"
_HEADERS = re.compile("|".join(re.escape(o.header) for o in OOPSES))
_END = re.compile(r"---\[ end (?:trace|Kernel panic)")
_TIMESTAMP_IN_TITLE = re.compile(r"\[ *[0-9]+\.[0-9]+\]")
# Panics that only say an earlier report killed the machine: part of that report.
_AFTERMATH = re.compile(r"Kernel panic - not syncing: (?:Fatal exception|panic_on_warn set|"
                        r"panic_on_oops|hung_task: blocked tasks|softlockup: hung tasks|"
                        r"RCU Stall)")
MAX_REPORT_LINES = 200
PANIC_CUT_LINES = 22    # a panic this far into a report is its own aftermath: cut it

# syzkaller's dynamicTitleReplacement: what changes from run to run.
_TITLE_REPLACEMENTS = [
    (re.compile(r"([^a-zA-Z0])(?:0x)?[0-9a-f]{6,}"), r"\1ADDR"),
    (re.compile(r"([0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3})"), "IP"),
    (re.compile(r"(\.\w+)(:[0-9]+)+"), r"\1:LINE"),
    (re.compile(r"([a-zA-Z][a-zA-Z0-9_.]+)\+0x[0-9a-z]+/0x[0-9a-z]+"), r"\1"),
    (re.compile(r"CPU#[0-9]+"), "CPU"),
    (re.compile(r"(\W)(\d+)(\W|$)"), r"\1NUM\3"),
]


@dataclass
class Report:
    kind: Kind
    title: str
    start: int                      # line index in the input where the header is
    end: int = 0                    # line index one past the report's last line
    corrupted: bool = False
    reason: str = ""                # why it is corrupted
    lines: list[str] = field(default_factory=list)   # the report, console prefixes off

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def to_dict(self) -> dict:
        return {"title": self.title, "kind": self.kind.value, "corrupted": self.corrupted,
                "reason": self.reason, "start_line": self.start + 1, "end_line": self.end,
                "text": self.text}


def clean(line: str) -> tuple[str, str]:
    """(the line without its console prefix, its caller id or '')."""
    line = line.rstrip("\r\n")
    m = _PREFIX.match(line)
    assert m is not None   # every part of it is optional
    return line[m.end():], (m.group(1) or "").replace(" ", "")


def normalise_title(title: str) -> str:
    for pattern, repl in _TITLE_REPLACEMENTS:
        while True:
            new = pattern.sub(repl, title)
            if new == title:
                break
            title = new
    return " ".join(title.replace("\t", " ").split())[:120].strip()


def _oops_at(line: str) -> Oops | None:
    """The report kind a console line starts, if it starts one."""
    m = _HEADERS.search(line)
    if not m or not _LEAD.fullmatch(line[:m.start()]):
        return None
    for oops in OOPSES:
        at = line.find(oops.header)
        if at != -1 and _LEAD.fullmatch(line[:at]) and \
                not any(s.search(line) for s in oops.suppressions):
            return oops
    return None


def _skip_re(stack: Stack) -> re.Pattern:
    return re.compile("|".join((*SKIP, *stack.skip)))


def _frame_of(match: re.Match, skip: re.Pattern) -> str | None:
    for group in match.groups():
        if group and not skip.search(group):
            for prefix in STRIP_PREFIXES:
                group = group.removeprefix(prefix)
            return group
    return None


def _stack_frames(lines: list[str], parts: tuple[re.Pattern, ...], stack: Stack,
                  skip: re.Pattern) -> tuple[list[str], bool]:
    """syzkaller's extractStackFrameImpl over report lines."""
    pick = stack.extractor or (lambda frames: frames[0])
    results: list[str] = []
    frames: list[str] = []
    ok = True
    traces = 0
    i = 0
    p = 0
    while True:
        if p == len(parts) or (parts[p] is PARSE and traces > 0):
            key = pick(frames) if frames else ""
            if not key:
                key, ok = "corrupted", False
            results.append(key)
            frames = []
        if p == len(parts):
            return results, ok
        part = parts[p]
        if part is PARSE:
            traces += 1
            while i < len(lines):
                line = lines[i]
                i += 1
                if any(s.search(line) for s in STACK_STARTS):
                    break
                if p != len(parts) - 1 and (m := parts[p + 1].search(line)):
                    if (f := _frame_of(m, skip)) is not None:
                        frames.append(f)
                    p += 1
                    break
                if (m := FRAME.search(line)) and (f := _frame_of(m, skip)) is not None:
                    frames.append(f)
        else:
            while i < len(lines):
                line = lines[i]
                i += 1
                if m := part.search(line):
                    if (f := _frame_of(m, skip)) is not None:
                        frames.append(f)
                    break
        p += 1


def _describe(lines: list[str], oops: Oops) -> tuple[str, Kind, bool, str, Format | None]:
    """syzkaller's extractDescription: (title, kind, corrupted, reason, format)."""
    text = "\n".join(lines)
    best: tuple[str, Kind, str, Format] | None = None
    start = len(text)
    matched_title = False
    for f in oops.formats:
        m = f.title.search(text)
        if m is None or m.start() > start or (m.start() == start and best is not None):
            continue
        if m.start() < start:
            best, start = None, m.start()
        matched_title = True
        if f.report is not None:
            m = f.report.search(text)
            if m is None:
                continue
        args = [g or "" for g in m.groups()]
        reason = ""
        if f.stack is not None:
            skip = _skip_re(f.stack)
            sub = text[m.start():].split("\n")
            frames, ok = _stack_frames(sub, f.stack.parts, f.stack, skip)
            if not ok and f.stack.parts2:
                frames, ok = _stack_frames(sub, f.stack.parts2, f.stack, skip)
            if not ok:
                reason = "could not extract a frame from the stack trace"
            args += frames
        best = (f.fmt.format(*args), f.kind, reason, f)
    if best is None:
        line = next((ln for ln in lines if oops.header in ln), lines[0])
        title = line[line.find(oops.header):]
        reason = "matched a title but not its report" if matched_title else \
            "no title format matched"
        return title, Kind.BUG, True, reason, None
    title, kind, reason, f = best
    if not reason and f.corrupted:
        reason = "the report's header is all that is left of it"
    return title, kind, bool(reason), reason, f


def _stack_missing(lines: list[str], f: Format) -> str:
    """syzkaller's isCorrupted: a report whose stack the console lost."""
    if f.no_stack_trace:
        return ""
    has_trace = False
    for start in STACK_STARTS:
        at = next((i for i, ln in enumerate(lines) if start.search(ln)), None)
        if at is None:
            continue
        after = lines[at + 1:]
        if len(after) < 3:
            return "the call trace is cut off"
        for ln in after[:15]:
            if any(s.search(ln) for s in STACK_STARTS):
                break
            if "(stack is not available)" in ln or FRAME.search(ln):
                has_trace = True
                break
        else:
            return "no frames in a stack trace"
    return "" if has_trace else "no stack trace in the report"


def parse(text: str) -> list[Report]:
    """Every kernel report in a console log or dmesg text, in order."""
    raw = text.splitlines()
    found: list[Report] = []
    # Only lines holding a header string can start a report: find them in
    # one pass over the whole text, then look closer.
    candidates: list[int] = []
    line_no, pos = 0, 0
    for m in _HEADERS.finditer(text):
        line_no += text.count("\n", pos, m.start())
        pos = m.start()
        if not candidates or candidates[-1] != line_no:
            candidates.append(line_no)
    next_at = 0
    for i in candidates:
        if i < next_at or i >= len(raw):
            continue
        line, context = clean(raw[i])
        oops = _oops_at(line)
        if oops is None:
            continue
        if found and _AFTERMATH.search(line):
            found[-1].lines.append(line)    # the machine died of the report before
            found[-1].end = next_at = i + 1
            continue
        report, next_at = _report_at(raw, i, line, context, oops)
        found.append(report)
    return found


WINDOW_LINES = 20000     # a stream is parsed this many lines at a time
MAX_LINE = 64 * 1024     # a longer "line" (no newline in sight: /dev/zero) is cut


def lines_of(stream: BinaryIO, chunk: int = 1 << 20) -> Iterator[str]:
    """The lines of a byte stream, read a chunk at a time (memory does not
    grow with the stream, and a Ctrl-C is answered between reads); a line
    longer than MAX_LINE is cut there and its rest dropped."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    part, dropping = "", False
    while data := stream.read1(chunk) if hasattr(stream, "read1") else stream.read(chunk):
        pieces = (part + decoder.decode(data)).split("\n")
        part = pieces.pop()
        for line in pieces:
            if not dropping:
                yield line[:MAX_LINE]
            dropping = False
        if len(part) > MAX_LINE:
            if not dropping:
                yield part[:MAX_LINE]
            part, dropping = "", True
    part += decoder.decode(b"", final=True)
    if part and not dropping:
        yield part[:MAX_LINE]


def parse_stream(lines: Iterable[str], window: int = WINDOW_LINES) -> Iterator[Report]:
    """parse() over a stream of lines of any length, WINDOW_LINES at a time:
    reports as they are found, line numbers those of the whole stream.
    A report is at most MAX_REPORT_LINES long, so a window parsed with that
    much of what follows finds every report that starts in it."""
    buf: list[str] = []
    base = 0
    for line in lines:
        buf.append(line)
        if len(buf) >= window + MAX_REPORT_LINES:
            cut = window
            for r in parse("\n".join(buf)):
                if r.start >= window:
                    break
                cut = max(cut, r.end)
                yield _moved(r, base)
            del buf[:cut]
            base += cut
    for r in parse("\n".join(buf)):
        yield _moved(r, base)


def _moved(r: Report, by: int) -> Report:
    r.start += by
    r.end += by
    return r


def _report_at(raw: list[str], i: int, header: str, context: str,
               oops: Oops) -> tuple[Report, int]:
    lines = [header]
    end = i + 1
    while end < len(raw) and end - i < MAX_REPORT_LINES:
        line, ctx = clean(raw[end])
        if _END.search(line):
            lines.append(line)
            end += 1
            break
        if context and ctx != context:
            end += 1
            continue    # another CPU's or task's lines interleaved (PRINTK_CALLER)
        if _oops_at(line) is not None:
            if not any(s.search(line) for s in START_IGNORES):
                break
            if line.startswith("Kernel panic") and len(lines) > PANIC_CUT_LINES:
                break   # the panic this report caused, with a stack of its own
        lines.append(line)
        end += 1
    title, kind, corrupted, reason, f = _describe(lines, oops)
    if not corrupted and _TIMESTAMP_IN_TITLE.search(title):
        corrupted, reason = True, "a timestamp is inside the title"
    if not corrupted and f is not None:
        reason = _stack_missing(lines, f)
        corrupted = bool(reason)
    return Report(kind, normalise_title(title), i, end, corrupted, reason, lines), end


def machine_death(title: str, console: str, *, tail_lines: int = 40) -> Report:
    """A report for a machine that died without saying why (syzkaller's
    vm monitor): 'no output from test machine', 'lost connection to test
    machine', 'timed out'. It carries the console's last lines."""
    tail = [clean(ln)[0] for ln in console.splitlines()[-tail_lines:]]
    return Report(Kind.MACHINE, title, 0, 0, False, "", tail)


def titles(text: str) -> list[str]:
    return [r.title for r in parse(text)]
