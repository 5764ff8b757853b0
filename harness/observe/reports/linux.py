"""Linux's reports as data: the headers, title formats, stack reading and
skip lists the engine (engine.py) works from.

The titles are syzkaller's (pkg/report/linux.go), so a title can be pasted
into syzbot's dashboard, lore or a bug tracker and find the same bug; the
alternative titles are theirs too (the same crash seen through another
frame). Formats are str.format strings over the groups of the title (or
report) regex, then one frame a parsed stack trace. kharness adds a few
kinds of its own, marked where they stand: x86 PAT complaints, int3 and
kmemleak's own listing.
"""

from __future__ import annotations

import re

from harness.observe.reports.engine import PARSE, Format, Kind, Oops, Stack, Table, rx

K = Kind

RIP = rx(r"(?:IP|NIP|pc |PC is at):? (?:(?:[0-9]+:)?(?:{{PC}} +){0,2}{{FUNC}}|(?:[0-9]+:)?0x"
         r"[0-9a-f]+|(?:[0-9]+:)?{{PC}} +\[< *\(null\)>\] +\(null\)|[0-9]+: +\(null\))")
CALL_TRACE = rx(r"(?:Call (?:T|t)race:)|(?:Backtrace:)")
# riscv's show_regs() dumps the stack with no "Call Trace" before it
RISCV_STACK = rx(r"status: [0-9a-f]{16} badaddr: [0-9a-f]{16} cause: [0-9a-f]{16}")
STACK_STARTS = (rx(r"Call (?:T|t)race"), rx(r"Allocated:"), rx(r"Allocated by task [0-9]+:"),
                rx(r"Freed:"), rx(r"Freed by task [0-9]+:"),
                rx(r"[^k] backtrace(?: \(crc [0-9a-fA-F]*\))?:"), rx(r"Backtrace:"),
                rx(r"Uninit was stored to memory at"), RISCV_STACK)
FRAMES = (rx(r"^ *(?:{{PC}} ){0,2}{{FUNC}}"),
          # arm: "[<pc>] (func) from [<pc>] (caller+0x..." gives both frames
          rx(r"^ *{{PC}} \(([a-zA-Z0-9_.]+)\) from {{PC}} \({{FUNC}}"),
          # arm since 6.x: "func [module] from caller+0x.../0x..." the same
          rx(r"^ *([a-zA-Z0-9_.]+)(?: \[[a-zA-Z0-9_]+\])? from {{FUNC}}"))

# Frames that say how a report was raised, not where (matched anywhere in a frame).
SKIP = (
    "__sanitizer", "__asan", "kasan", "hwasan", "__msan", "kmsan", "kcsan_setup_watchpoint",
    "check_memory_region", "check_heap_object", "check_object", "read_word_at_a_time",
    "(read|write)_once_.*nocheck", "print_address_description", "panic", "invalid_op",
    "report_bug", "fixup_bug", "print_report", "print_usage_bug", "do_error", "invalid_op",
    r"_trap$|do_trap", "show_stack", "dump_stack", "walk_stack", "dump_backtrace",
    "unwind_backtrace",
    "warn_slowpath", "warn_alloc", "warn_bogus", "__warn", "alloc_page", "k?v?(?:m|z|c)alloc",
    "krealloc", "kmem_cache", "allocate_slab", "__alloc_frozen_pages_noprof",
    "folio_(?:alloc|unlock)", "filemap_alloc_folio", "__filemap_get_folio",
    "find_or_create_page", "do_read_cache_folio", "read_cache_page", "pagecache_get_page",
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
    "dev_alert", "dev_crit", "dev_emerg", "program_check_exception", "program_check_common",
    "del_timer", "flush_work", "__cancel_work_timer", "cancel_work_sync",
    "try_to_grab_pending", "flush_workqueue", "drain_workqueue", "destroy_workqueue",
    "queue_work", "finish_wait", "kthread_stop", "kobject_", "add_uevent_var",
    "get_device_parent", "device_add", "device_del", "device_unregister", "device_destroy",
    "device_release", "devres_release_all", "hwrng_unregister", "i2c_del_adapter",
    "__unregister_client", "device_for_each_child", "rollback_registered",
    "unregister_netdev", "sysfs_remove", "device_remove_file", "tty_unregister_device",
    "dummy_urb_enqueue", "usb_kill_urb", "usb_kill_anchored_urbs", "usb_control_msg",
    "usb_hcd_submit_urb", "usb_submit_urb", "^complete$", "wait_for_completion",
    "^kv?free$", "kfree_skb", "readb$", "readw$", "readl$", "readq$", "writeb$", "writew$",
    "writel$", "writeq$", "logic_in", "logic_out", r"^crc\d+", "crc_itu_t",
    "__might_resched", "assertfail", "^iput$", "^iput_final$", "^ihold$",
    "hex_dump_to_buffer", "print_hex_dump", "^klist_", "(trace|lockdep)_(hard|soft)irq",
    "^(un)?lock_page", "stack_trace_consume_entry", "arch_stack_walk", "stack_trace_save",
    "insert_work", "__queue_delayed_work", "queue_delayed_work_on", "ida_free",
    "do_(kernel|translation)_fault", "do_mem_abort", "el1_abort", "el1h_64_sync(?:_handler)?",
    "print_tainted", "xas_(?:start|load|find)", "find_lock_entries",
    "truncate_inode_pages_range", "__phys_addr", "__fortify_report",
    "cleanup_srcu_struct", "rhashtable_lookup", "extract_(user|iter)_to_sg", "drop_nlink",
    "^get_taint$", "^put_device$", "lock_timer_base", "__timer_delete_sync",
    "sk_stop_timer_sync", "__mod_timer", "fast_dput", "dput", "mark_buffer_dirty",
)
STRIP_PREFIXES = ("SYSC_", "SyS_", "sys_", "__x64_", "__ia32_", "__arm64_", "____sys_",
                  "___sys_", "__sys_", "__se_", "__se_sys_", "__do_sys_", "compat_SYSC_",
                  "compat_SyS_", "ksys_")
# Fault injection stacks come intermixed with reports: such a report's frames are unsure.
CORRUPTED_LINES = (rx(r"^( \[\<?(?:0x)?[0-9a-f]+\>?\])? should_fail(slab)?(\.[a-z0-9.]+)?\+0x"),)
CORRUPTED_TITLES = (rx(r"\[ *[0-9]+\.[0-9]+\]"),)   # a timestamp merged into the header

# Frames a stall is anchored to: the frame before the first of these names it
# (the loop that stalled may be anywhere inside).
STALL_ANCHORS = tuple(re.compile(p) for p in (
    "process_one_work", "do_syscall_", "do_fast_syscall_", "sysenter_dispatch",
    "tracesys_phase2", "el0_svc_handler", "invoke_syscall", "ret_fast_syscall",
    "netif_receive_skb", "do_softirq", "call_timer_fn", "_run_timers", "run_timer_softirq",
    "hrtimer_run", "run_ksoftirqd", "smpboot_thread_fn", "^kthread$", "start_secondary",
    "cpu_startup_entry", "ret_from_fork", "vfs_write", "vfs_read", "vfs_iter_read",
    "vfs_iter_write", "do_iter_read", "do_iter_write", "call_read_iter", "call_write_iter",
    "new_sync_read", "new_sync_write", "vfs_ioctl", "ksys_ioctl", "compat_ioctl",
    "compat_sys_ioctl", "blkdev_driver_ioctl", "blkdev_ioctl", "^call_read_iter",
    "^call_write_iter", "do_iter_readv_writev", "^call_mmap", "mmap_region", "do_mmap",
    "do_dentry_open", "vfs_open", "^sock_sendmsg", "^sock_recvmsg", "^sock_release",
    "^__sock_release", "^setsockopt$", "kernel_setsockopt", "sock_common_setsockopt",
    "^listen$", "kernel_listen", "sk_common_release", "^sock_mmap", "^accept$",
    "kernel_accept", "^sock_do_ioctl", "^sock_ioctl", "^compat_sock_ioctl",
    "^nfnetlink_rcv_msg", "^rtnetlink_rcv_msg", "^netlink_dump",
    "^(sys_)?(socketpair|connect|ioctl)", "__do_fault", "do_page_fault", "^page_fault$",
    "__fput", "task_work_run", "exit_to_usermode", "smp_call_function", "tasklet_action",
    "tasklet_hi_action"))


def stall_frame(frames: list[str]) -> tuple[str, int]:
    """A stall or lockup: the frame before the first anchor (a syscall, a
    work item, a timer), which names the loop better than where it was hit."""
    prev, prev_at = frames[0], 0
    for i, frame in enumerate(frames):
        if any(a.search(frame) for a in STALL_ANCHORS):
            if "smp_call_function" in frame:
                return "smp_call_function", i
            return prev, prev_at
        prev, prev_at = frame, i
    return "", -1


def hang_frame(frames: list[str]) -> tuple[str, int]:
    """A hung task is a victim: group by what it waits on (rtnl_lock, an
    RCU grace period), else the first frame that is not a wait."""
    anchors = {"rtnl_lock": "", "synchronize_rcu": "synchronize_rcu",
               "synchronize_srcu": "synchronize_rcu", "synchronize_net": "synchronize_rcu",
               "synchronize_sched": "synchronize_rcu"}
    for i, frame in enumerate(frames):
        for anchor, replacement in anchors.items():
            if anchor in frame:
                return replacement or frame, i
    skip = ("sched", "_lock", "_slowlock", "down", "rwsem", "completion", "kthread", "wait",
            "synchronize", "context_switch", "__switch_to", "cancel_delayed_work",
            "rcu_barrier")
    return next(((f, i) for i, f in enumerate(frames) if not any(s in f for s in skip)),
                ("", -1))


def warning_stack(*skip: str) -> Stack:
    """x86_64 WARNINGs start the stack at RIP (powerpc64 at '--- interrupt:');
    arm64 and older kernels at the call trace."""
    start = re.compile(f"(?:{RIP.pattern}|--- interrupt: [0-9]+ at "
                       + rx("{{FUNC}}").pattern + ")")
    return Stack((start, PARSE), (CALL_TRACE, PARSE), skip)


def trace_stack(*skip: str, extractor=None) -> Stack:
    return Stack((CALL_TRACE, PARSE), (), skip, extractor)


def fault_stack(*skip: str, extractor=None) -> Stack:
    return Stack((RIP, CALL_TRACE, PARSE), (), skip, extractor)


def f(title: str, fmt: str, kind: Kind, *, report: str | None = None,
      alt: tuple[str, ...] = (), **kw) -> Format:
    return Format(rx(title), fmt, kind, rx(report) if report else None, alt, **kw)


KMSAN_STACK = (PARSE, rx(r"(Local variable .* created at:|Uninit was created at:)"), PARSE)
KFENCE_STACK = Stack((rx(r"BUG: KFENCE: (?:[a-z\- ]+) in {{FUNC}}"), PARSE))
LEAK_SKIP = ("kmemleak", "mmap", "kmem", "slab", "alloc", "create_object", "idr_get",
             "list_lru_init", "kasprintf", "kvasprintf", "pcpu_create", "strdup", "strndup",
             "memdup")
USB_SKIP = ("usb_submit_urb", "usb_start_wait_urb", "usb_bulk_msg", "usb_interrupt_msg",
            "usb_control_msg")

BUG = Oops("BUG:", (
    f(r"BUG: KASAN:", "KASAN: {0} {2} in {3}", K.KASAN,
      report=r"BUG: KASAN: ([a-z\-]+) in {{FUNC}}(?:.*\n)+?.*(Read|Write) (?:of size|at addr) "
             r"(?:[0-9a-f]+)", alt=("bad-access in {3}",),
      stack=Stack((rx(r"BUG: KASAN: (?:[a-z\-]+) in {{FUNC}}"), CALL_TRACE, PARSE), (),
                  ("kernel_fault", "tag_check", "mem_abort", "^el1_", "^el1h_"))),
    f(r"BUG: KASAN:", "KASAN: invalid-free in {1}", K.KASAN,
      report=r"BUG: KASAN: (?:double-free or invalid-free|double-free|invalid-free) in {{FUNC}}",
      alt=("invalid-free in {1}",),
      stack=Stack((rx(r"BUG: KASAN: (?:double-free or invalid-free|double-free|invalid-free) "
                      r"in {{FUNC}}"), CALL_TRACE, PARSE), (),
                  ("slab_", "kfree", "vunmap", "vfree"))),
    f(r"BUG: KASAN: ([a-z\-]+) on address(?:.*\n)+?.*(Read|Write) of size ([0-9]+)",
      "KASAN: {0} {1}", K.KASAN),
    f(r"BUG: KASAN: (.*)", "KASAN: {0}", K.KASAN, corrupted=True),
    f(r"BUG: KMSAN: kernel-usb-infoleak", "KMSAN: kernel-usb-infoleak in {1}", K.KMSAN,
      report=r"BUG: KMSAN: kernel-usb-infoleak in {{FUNC}}", alt=("KMSAN origin in {2}",),
      stack=Stack(KMSAN_STACK, (), ("alloc_skb", *USB_SKIP)), no_stack_trace=True),
    f(r"BUG: KMSAN:", "KMSAN: {0} in {2}", K.KMSAN,
      report=r"BUG: KMSAN: ([a-z\-]+) in {{FUNC}}", alt=("bad-access in {2}",),
      stack=Stack(KMSAN_STACK, (), ("alloc_skb", "netlink_ack", "netlink_rcv_skb",
                                    "_encrypt$", "^(?:crypto|cipher|drbg|rng)_")),
      no_stack_trace=True),
    f(r"BUG: KCSAN: data-race", "KCSAN: {0}", K.KCSAN, report=r"BUG: KCSAN: (.*)",
      no_stack_trace=True),
    f(r"BUG: KCSAN:", "KCSAN: {0}", K.KCSAN, report=r"BUG: KCSAN: (.*)", no_stack_trace=True),
    f(r"BUG: KFENCE: (use-after-free|out-of-bounds) (read|write) in {{FUNC}}",
      "KFENCE: {0} {1} in {3}", K.KFENCE, alt=("bad-access in {3}",), stack=KFENCE_STACK),
    f(r"BUG: KFENCE: invalid free in {{FUNC}}", "KFENCE: invalid free in {1}", K.KFENCE,
      alt=("invalid-free in {1}",), no_stack_trace=True, stack=KFENCE_STACK),
    f(r"BUG: KFENCE: invalid (read|write) in {{FUNC}}", "KFENCE: invalid {0} in {2}",
      K.KFENCE, alt=("bad-access in {2}",), stack=KFENCE_STACK),
    f(r"BUG: KFENCE: memory corruption in {{FUNC}}", "KFENCE: memory corruption in {1}",
      K.KFENCE, no_stack_trace=True, stack=KFENCE_STACK),
    f(r"BUG: (?:unable to handle kernel paging request|unable to handle page fault for address"
      r"|Unable to handle kernel data access)",
      "BUG: unable to handle kernel paging request in {0}", K.FAULT,
      alt=("bad-access in {0}",), stack=fault_stack()),
    f(r"BUG: (?:unable to handle kernel NULL pointer dereference|kernel NULL pointer "
      r"dereference|Kernel NULL pointer dereference)",
      "BUG: unable to handle kernel NULL pointer dereference in {0}", K.FAULT,
      alt=("bad-access in {0}",), stack=fault_stack()),
    f(r"BUG: (?:unable to handle kernel|Unable to handle kernel)",
      "BUG: unable to handle kernel", K.FAULT, corrupted=True),
    f(r"BUG: (spinlock|rwlock) (lockup suspected|already unlocked|recursion|cpu recursion|"
      r"bad magic|wrong owner|wrong CPU|trylock failure on UP)", "BUG: {0} {1} in {2}",
      K.LOCKDEP, stack=trace_stack("spin_", "_lock", "_unlock")),
    f(r"BUG: soft lockup", "BUG: soft lockup in {0}", K.HANG, alt=("stall in {0}",),
      stack=fault_stack(extractor=stall_frame)),
    f(r"BUG: .*still has locks held!", "BUG: still has locks held in {0}", K.LOCKDEP,
      report=r"BUG: .*still has locks held!(?:.*\n)+?.*{{PC}} +{{FUNC}}"),
    f(r"BUG: scheduling while atomic", "BUG: scheduling while atomic in {0}", K.ATOMIC,
      stack=trace_stack("schedule")),
    f(r"BUG: lock held when returning to user space",
      "BUG: lock held when returning to user space in {0}", K.LOCKDEP,
      report=r"BUG: lock held when returning to user space(?:.*\n)+?.*leaving the kernel with "
             r"locks still held(?:.*\n)+?.*at: (?:{{PC}} +)?{{FUNC}}", no_stack_trace=True),
    f(r"BUG: bad unlock balance detected!", "BUG: bad unlock balance in {0}", K.LOCKDEP,
      stack=Stack((rx(r"{{PC}} +{{FUNC}}"), CALL_TRACE, PARSE))),
    f(r"BUG: held lock freed!", "BUG: held lock freed in {0}", K.LOCKDEP,
      report=r"BUG: held lock freed!(?:.*\n)+?.*{{PC}} +{{FUNC}}"),
    f(r"BUG: Bad rss-counter state", "BUG: Bad rss-counter state", K.BUG, no_stack_trace=True),
    f(r"BUG: non-zero nr_ptes on freeing mm", "BUG: non-zero nr_ptes on freeing mm", K.BUG,
      no_stack_trace=True),
    f(r"BUG: non-zero nr_pmds on freeing mm", "BUG: non-zero nr_pmds on freeing mm", K.BUG,
      no_stack_trace=True),
    # kharness: what today's kernels print for the same leak
    f(r"BUG: non-zero pgtables_bytes on freeing mm",
      "BUG: non-zero pgtables_bytes on freeing mm", K.BUG, no_stack_trace=True),
    # The filesystem type and block device name change from run to run: left out.
    f(r"BUG: Dentry .* still in use", "BUG: Dentry still in use in {0}", K.BUG,
      report=r"BUG: Dentry .* still in use \([0-9]+\) \[(unmount) of ([^\]]+)\]",
      alt=("BUG: Dentry still in use [{0} of {1}]",)),
    f(r"BUG: Bad page (state|cache)", "BUG: Bad page {0} in {1}", K.BUG,
      # Where page_owner is off (Debian's kernels), the freeing call trace.
      stack=Stack((rx("page last allocated"), PARSE), (CALL_TRACE, PARSE),
                  ("(free|put|get|update|release)_page", "free_unref", "^_*folio",
                   "truncate_inode_pages", "page_frag_free", "alloc", "vmap", "page_owner",
                   "bad_page", "free_frozen"))),
    f(r"BUG: Bad page map", "BUG: Bad page map", K.BUG),
    f(r"BUG: workqueue lockup", "BUG: workqueue lockup", K.HANG, no_stack_trace=True),
    f(r"BUG: sleeping function called from invalid context at (.*)",
      "BUG: sleeping function called from invalid context in {1}", K.ATOMIC,
      stack=trace_stack()),
    f(r"BUG: using ([a-z_]+)\(\) in preemptible", "BUG: using {0}() in preemptible code in {1}",
      K.ATOMIC, stack=trace_stack("dump_stack", "preemption", "preempt", "debug_",
                                  "processor_id", "this_cpu")),
    f(r"BUG: workqueue leaked lock or atomic", "BUG: workqueue leaked lock or atomic in {0}",
      K.LOCKDEP, report=r"BUG: workqueue leaked lock or atomic(?:.*\n)+?.*last function: "
                        r"([a-zA-Z0-9_]+)\n", no_stack_trace=True),
    f(r"BUG: memory leak", "memory leak in {0}", K.MEMORY_LEAK,
      stack=Stack((rx(r"backtrace(?: \(crc [0-9a-fA-F]*\))?:"), PARSE), (), LEAK_SKIP)),
    f(r"BUG: .*stack guard page was hit at", "BUG: stack guard page was hit in {0}", K.FAULT,
      alt=("stack-overflow in {0}",), stack=fault_stack(extractor=stall_frame)),
    # arm's way of saying what x86 calls a locking bug: one title for both
    f(r"BUG: Invalid wait context", "WARNING: locking bug in {0}", K.LOCKDEP,
      stack=trace_stack("lock_sock", "release_sock")),
    f(r"BUG:[ \t]*(?:\n|$)", "BUG: corrupted", K.BUG, corrupted=True),
), (rx("ODEBUG:"), rx("Boot_DEBUG:"), rx("xlog_status:"), rx("DEBUG:"),
    rx("BUG: no syscalls can create resource")))

WARNING = Oops("WARNING:", (
    f(r"WARNING: .*lib/debugobjects\.c.* (?:debug_print|debug_check|at)",
      "WARNING: ODEBUG bug in {0}", K.WARNING,
      stack=warning_stack("debug_", "rcu", "hrtimer_", "timer_", "work_", "percpu_", "vunmap",
                          "vfree", "__free_", "debug_check", "kobject_")),
    f(r"WARNING: .*mm/usercopy\.c.* (?:usercopy_warn|at)", "WARNING: bad usercopy in {0}",
      K.WARNING, stack=warning_stack("usercopy", "__check")),
    f(r"WARNING: .*lib/kobject\.c.* (?:kobject_|at)", "WARNING: kobject bug in {0}", K.WARNING,
      stack=warning_stack("kobject_")),
    f(r"WARNING: .*fs/proc/generic\.c.* (?:proc_register|at)",
      "WARNING: proc registration bug in {0}", K.WARNING, stack=warning_stack("proc_")),
    f(r"WARNING: .*lib/refcount\.c.* (?:refcount_|at)", "WARNING: refcount bug in {0}",
      K.WARNING, stack=warning_stack("refcount", "kobject_")),
    f(r"WARNING: .*kernel/locking/lockdep\.c.*lock_", "WARNING: locking bug in {0}", K.LOCKDEP,
      stack=warning_stack("lock_sock", "release_sock")),
    f(r"WARNING: .*still has locks held!", "WARNING: still has locks held in {0}", K.LOCKDEP,
      report=r"WARNING: .*still has locks held!(?:.*\n)+?.*at: {{FUNC}}"),
    f(r"WARNING: Nested lock was not taken", "WARNING: nested lock was not taken in {0}",
      K.LOCKDEP, stack=warning_stack()),
    f(r"WARNING: lock held when returning to user space",
      "WARNING: lock held when returning to user space in {0}", K.LOCKDEP,
      report=r"WARNING: lock held when returning to user space(?:.*\n)+?.*leaving the kernel "
             r"with locks still held(?:.*\n)+?.*at: (?:{{PC}} +)?{{FUNC}}",
      no_stack_trace=True),
    f(r"WARNING: .*mm/.*\.c.* k?.?malloc", "WARNING: kmalloc bug in {0}", K.WARNING,
      stack=warning_stack("kmalloc", "krealloc", "slab", "kmem")),
    f(r"WARNING: .*mm/vmalloc.c.*__vmalloc_node", "WARNING: zero-size vmalloc in {0}",
      K.WARNING, stack=warning_stack()),
    f(r"WARNING: .* usb_submit_urb", "WARNING in {0}/usb_submit_urb", K.WARNING,
      stack=warning_stack(*USB_SKIP)),
    # 6.19+: "WARNING: mm/memory.c:2345 at insert_pfn+0x1a/0x200, CPU#0: a/1"
    f(r"WARNING: {{SRC}} at 0x\d+, CPU#\d+", "WARNING in {1}", K.WARNING,
      stack=warning_stack()),
    f(r"WARNING: .* at {{SRC}} {{FUNC}}", "WARNING in {2}", K.WARNING, stack=warning_stack()),
    f(r"WARNING: {{SRC}} at {{FUNC}}", "WARNING in {2}", K.WARNING, stack=warning_stack()),
    f(r"WARNING: \[.*\] {{SRC}} at {{FUNC}}.*", "WARNING in {2}", K.WARNING,
      stack=warning_stack()),
    f(r"WARNING: possible circular locking dependency detected", "possible deadlock in {0}",
      K.LOCKDEP, report=r"WARNING: possible circular locking dependency detected(?:.*\n)+?.*is "
                        r"trying to acquire lock",
      stack=Stack((rx(r"at: (?:{{PC}} +)?{{FUNC}}"), rx(r"at: (?:{{PC}} +)?{{FUNC}}"), PARSE),
                  (), ("process_one_work", "flush_workqueue", "drain_workqueue",
                       "destroy_workqueue"))),
    f(r"WARNING: possible irq lock inversion dependency detected", "possible deadlock in {0}",
      K.LOCKDEP, report=r"WARNING: possible irq lock inversion dependency detected(?:.*\n)+?"
                        r".*just changed the state of lock(?:.*\n)+?.*at: (?:{{PC}} +)?"
                        r"{{FUNC}}"),
    f(r"WARNING: .*-safe -> .*-unsafe lock order detected", "possible deadlock in {0}",
      K.LOCKDEP, stack=Stack((rx(r"which became (?:.*) at:"), PARSE))),
    f(r"WARNING: possible recursive locking detected", "possible deadlock in {0}", K.LOCKDEP,
      report=r"WARNING: possible recursive locking detected(?:.*\n)+?.*is trying to acquire "
             r"lock(?:.*\n)+?.*at: (?:{{PC}} +)?{{FUNC}}"),
    f(r"WARNING: inconsistent lock state", "inconsistent lock state in {1}", K.LOCKDEP,
      report=r"WARNING: inconsistent lock state(?:.*\n)+?.*takes(?:.*\n)+?.*at: "
             r"(?:{{PC}} +)?{{FUNC}}", stack=trace_stack()),
    f(r"WARNING: suspicious RCU usage", "WARNING: suspicious RCU usage in {1}", K.LOCKDEP,
      report=r"WARNING: suspicious RCU usage(?:.*\n)+?.*?{{SRC}}",
      stack=trace_stack("rcu", "kmem", "slab")),
    f(r"WARNING: kernel stack regs at [0-9a-f]+ in [^ ]* has bad '([^']+)' value",
      "WARNING: kernel stack regs has bad '{0}' value", K.WARNING, no_stack_trace=True),
    f(r"WARNING: kernel stack frame pointer at [0-9a-f]+ in [^ ]* has bad value",
      "WARNING: kernel stack frame pointer has bad value", K.WARNING, no_stack_trace=True),
    f(r"WARNING: bad unlock balance detected!", "WARNING: bad unlock balance in {0}",
      K.LOCKDEP, stack=Stack((rx(r"{{PC}} +{{FUNC}}"), CALL_TRACE, PARSE))),
    f(r"WARNING: held lock freed!", "WARNING: held lock freed in {0}", K.LOCKDEP,
      report=r"WARNING: held lock freed!(?:.*\n)+?.*at:(?: {{PC}})? +{{FUNC}}"),
    f(r"WARNING: kernel stack regs .* has bad 'bp' value",
      "WARNING: kernel stack regs has bad value", K.WARNING, no_stack_trace=True),
    f(r"WARNING: kernel stack frame pointer .* has bad value",
      "WARNING: kernel stack regs has bad value", K.WARNING, no_stack_trace=True),
    f(r"WARNING:[ \t]*(?:\n|$)", "WARNING: corrupted", K.WARNING, corrupted=True),
    # kharness: an out-of-tree module's source path as 6.12 prints it, with
    # characters {{SRC}} does not take (/root/.cache/.../6.12.117+deb13-amd64/...)
    f(r"WARNING: .* at \S+:[0-9]+ {{FUNC}}", "WARNING in {1}", K.WARNING,
      stack=warning_stack()),
), (
    # Lines that say WARNING: and are no report.
    rx(r"WARNING: /etc/ssh/moduli does not exist, using fixed modulus"),
    rx(r"WARNING: workqueue cpumask: online intersect > possible intersect"),
    rx(r"WARNING: [Tt]he mand mount option"),
    rx(r"WARNING: Unsupported flag value\(s\) of 0x%x in DT_FLAGS_1"),
    rx(r"WARNING: Unprivileged eBPF is enabled with eIBRS"),
    rx(r"WARNING: fbcon: Driver '(.*)' missed to adjust virtual screen size "
       r"(\((?:\d+)x(?:\d+) vs\. (?:\d+)x(?:\d+)\))"),
    rx(r"WARNING: See https.* for mitigation options."),
    rx(r"WARNING: kernel not compiled with CPU_SRSO"),
    rx(r"EXT4-[Ff][Ss](?: \(.*\))?:"),
    rx(r"(?i)warning: .* uses (deprecated v2 capabilities|wireless extensions)"),
    rx(r"XFS \(\w+\): WARNING"),
), K.WARNING)

INFO = Oops("INFO:", (
    f(r"INFO: possible circular locking dependency detected", "possible deadlock in {0}",
      K.LOCKDEP, report=r"INFO: possible circular locking dependency detected \](?:.*\n)+?.*is "
                        r"trying to acquire lock(?:.*\n)+?.*at: {{PC}} +{{FUNC}}"),
    f(r"INFO: possible irq lock inversion dependency detected", "possible deadlock in {0}",
      K.LOCKDEP, report=r"INFO: possible irq lock inversion dependency detected \](?:.*\n)+?"
                        r".*just changed the state of lock(?:.*\n)+?.*at: {{PC}} +{{FUNC}}"),
    f(r"INFO: SOFTIRQ-safe -> SOFTIRQ-unsafe lock order detected", "possible deadlock in {0}",
      K.LOCKDEP, report=r"INFO: SOFTIRQ-safe -> SOFTIRQ-unsafe lock order detected \]"
                        r"(?:.*\n)+?.*is trying to acquire(?:.*\n)+?.*at: {{PC}} +{{FUNC}}"),
    f(r"INFO: possible recursive locking detected", "possible deadlock in {0}", K.LOCKDEP,
      report=r"INFO: possible recursive locking detected \](?:.*\n)+?.*is trying to acquire "
             r"lock(?:.*\n)+?.*at: {{PC}} +{{FUNC}}"),
    f(r"INFO: inconsistent lock state", "inconsistent lock state in {0}", K.LOCKDEP,
      report=r"INFO: inconsistent lock state \](?:.*\n)+?.*takes(?:.*\n)+?.*at: {{PC}} +"
             r"{{FUNC}}"),
    f(r"INFO: rcu_(?:preempt|sched|bh|tasks\w*) (?:self-)?detected(?: expedited)? stalls?",
      "INFO: rcu detected stall in {0}", K.HANG, alt=("stall in {0}",),
      stack=Stack((rx("apic_timer_interrupt"), RIP, PARSE),
                  (rx(r"(?:apic_timer_interrupt|Exception stack|el1h_64_irq)"), PARSE),
                  ("apic_timer_interrupt", "rcu"), stall_frame)),
    f(r"INFO: trying to register non-static key",
      "INFO: trying to register non-static key in {0}", K.LOCKDEP,
      stack=trace_stack("stack", "lock", "IRQ")),
    f(r"INFO: suspicious RCU usage", "INFO: suspicious RCU usage in {1}", K.LOCKDEP,
      report=r"INFO: suspicious RCU usage(?:.*\n)+?.*?{{SRC}}",
      stack=trace_stack("rcu", "kmem", "slab")),
    f(r"INFO: task .* blocked (?:in I/O wait )?for more than [0-9]+ seconds",
      "INFO: task hung in {0}", K.HANG,
      alt=("hang in {0}",), stack=trace_stack(extractor=hang_frame)),
    f(r"INFO: task .* can't die for more than .* seconds", "INFO: task can't die in {0}",
      K.HANG, alt=("hang in {0}",), stack=trace_stack("schedule")),
    # what is left of an old-style KASAN report
    f(r"INFO: (Freed|Allocated) in (.*)", "INFO: {0} in {1}", K.KASAN, corrupted=True),
    f(r"INFO:[ \t]*(?:\n|$)", "INFO: corrupted", K.BUG, corrupted=True),
), (rx("INFO: lockdep is turned off"), rx("INFO: Stall ended before state dump start"),
    rx("INFO: NMI handler"), rx("INFO: recovery required on readonly filesystem"),
    rx(r"(handler|interrupt).*took too long"), rx(r"INFO: sys_.* is not present in /proc/kallsyms"),
    rx("INFO: no syscalls can create resource"), rx("rmt_storage:INFO:"), rx("_INFO:")), K.BUG)


def _one(header: str, fmt_: str, kind: Kind, stack: Stack | None = None,
         title: str | None = None, **kw) -> Oops:
    return Oops(header, (f(title or re.escape(header), fmt_, kind, stack=stack, **kw),),
                kind=kind)


PANIC = Oops("Kernel panic", (
    f(r"Kernel panic - not syncing: stack-protector:", "kernel panic: stack is corrupted in {0}",
      K.PANIC, report=r"Kernel panic - not syncing: stack-protector: Kernel stack is corrupted "
                      r"in: {{FUNC}}", no_stack_trace=True),
    f(r"Kernel panic - not syncing: stack-protector:", "kernel panic: stack is corrupted in {0}",
      K.PANIC, report=r"Kernel panic - not syncing: stack-protector: Kernel stack is corrupted "
                      r"in: [a-f0-9]+", stack=trace_stack("stack_chk")),
    f(r"Kernel panic - not syncing: corrupted stack end", "kernel panic: corrupted stack end in "
      "{0}", K.PANIC, report=r"Kernel panic - not syncing: corrupted stack end detected inside "
                             r"scheduler", alt=("stack-overflow in {0}",),
      stack=trace_stack("schedule", "retint_kernel", extractor=stall_frame)),
    f(r"Kernel panic - not syncing: kernel stack overflow", "kernel stack overflow in {0}",
      K.PANIC, alt=("stack-overflow in {0}",),
      stack=trace_stack("bad_stack", extractor=stall_frame)),
    f(r"Kernel panic - not syncing: Attempted to kill init!",
      "kernel panic: Attempted to kill init!", K.PANIC),
    f(r"Kernel panic - not syncing: Couldn't open N_TTY ldisc for [^ ]+ --- error -[0-9]+",
      "kernel panic: Couldn't open N_TTY ldisc", K.PANIC),
    # After a BUG, a WARNING or a hung task: the report before it was lost.
    f(r"Kernel panic - not syncing: Fatal exception", "kernel panic: Fatal exception", K.PANIC,
      corrupted=True),
    f(r"Kernel panic - not syncing: panic_on_warn set", "kernel panic: panic_on_warn set",
      K.PANIC, corrupted=True),
    f(r"Kernel panic - not syncing: hung_task: blocked tasks",
      "kernel panic: hung_task: blocked tasks", K.PANIC, corrupted=True),
    f(r"Kernel panic - not syncing: (.*)", "kernel panic: {0}", K.PANIC),
), kind=K.PANIC)

KERNEL_BUG = Oops("kernel BUG", (
    f(r"kernel BUG at mm/usercopy.c", "BUG: bad usercopy in {0}", K.BUG,
      stack=trace_stack("usercopy", "__check")),
    f(r"kernel BUG at lib/list_debug.c", "BUG: corrupted list in {0}", K.BUG,
      alt=("bad-access in {0}",), stack=trace_stack()),
    # skb wrappers BUG_ON; the bug is almost always their caller's
    f(r"kernel BUG at (.*)", "kernel BUG in {1}", K.BUG, stack=fault_stack("^skb_")),
))

UBSAN = Oops("UBSAN:", (
    f(r"UBSAN:", "UBSAN: undefined-behaviour in {0}", K.UBSAN,
      report=r"UBSAN: Undefined behaviour in", stack=trace_stack("ubsan", "overflow")),
    f(r"UBSAN: array-index-out-of-bounds in", "UBSAN: array-index-out-of-bounds in {0}",
      K.UBSAN, alt=("bad-access in {0}",), stack=trace_stack("ubsan", "overflow")),
    f(r"UBSAN:", "UBSAN: {0} in {1}", K.UBSAN, report=r"UBSAN: (.*?) in",
      stack=trace_stack("ubsan", "overflow")),
), kind=K.UBSAN)

TRUSTY = Oops("trusty: panic", (
    f(r"trusty: panic.* ASSERT FAILED", "trusty: ASSERT FAILED: {0}", K.PANIC,
      report=r"trusty: panic \(.*?\):(?: DEBUG)? ASSERT FAILED at \(.*?\): (.+)",
      no_stack_trace=True),
    f(r"trusty: panic.* ASSERT FAILED.*: *(.*)", "trusty: ASSERT FAILED: {0}", K.PANIC,
      corrupted=True),
    f(r"trusty: panic", "trusty: panic: {0}", K.PANIC, report=r"trusty: panic \(.*?\): (.+)",
      no_stack_trace=True),
), kind=K.PANIC)

# Printed by syzkaller's executor and fuzzer, and Go programs: their logs are
# read too (and a log that says this holds no kernel report of its own).
SYZ = (
    Oops("SYZFAIL:", (f(r"SYZFAIL:(.*)", "SYZFAIL:{0}", K.BUG, no_stack_trace=True),)),
    Oops("SYZFATAL:", (f(r"SYZFATAL:(.*)()", "SYZFATAL:{0}", K.BUG, alt=("SYZFATAL{1}",),
                         no_stack_trace=True),)),
    Oops("panic:", (
        f(r"panic: Sentry detected .* stuck task", "panic: Sentry detected stuck tasks", K.PANIC,
          no_stack_trace=True),
        f(r"panic:(.*)", "panic:{0}", K.PANIC, no_stack_trace=True),
    ), (rx("_panic:"), rx("xlog_status:"), rx(r"ddb\.onpanic:"), rx("evtlog_status:")),
        K.PANIC),
)

OOPSES: tuple[Oops, ...] = (
    BUG,
    # kharness: kmemleak's own listing (cat /sys/kernel/debug/kmemleak) has
    # no "BUG: memory leak" line above it; its object line stands for one.
    Oops("unreferenced object 0x", (
        f(r"unreferenced object", "memory leak in {0}", K.MEMORY_LEAK,
          stack=Stack((rx(r"backtrace(?: \(crc [0-9a-fA-F]*\))?:"), PARSE), (), LEAK_SKIP)),
    ), kind=K.MEMORY_LEAK),
    WARNING,
    INFO,
    Oops("Unable to handle kernel", (
        f(r"Unable to handle kernel (paging request|NULL pointer dereference|access to user "
          r"memory)", "BUG: unable to handle kernel {0} in {1}", K.FAULT,
          alt=("bad-access in {1}",), stack=fault_stack()),
    ), kind=K.FAULT),
    Oops("general protection fault", (
        f(r"general protection fault.*:", "general protection fault in {0}", K.FAULT,
          alt=("bad-access in {0}",), stack=fault_stack()),
    ), (rx(r"general protection fault .* error:\d+ in "),), K.FAULT),
    _one("stack segment: ", "stack segment fault in {0}", K.FAULT, fault_stack()),
    # kharness: x86's text-patching and kprobe int3s, seen under TCG
    _one("int3: ", "int3 in {0}", K.FAULT, Stack((RIP,))),
    PANIC,
    _one("PANIC: double fault", "PANIC: double fault in {0}", K.FAULT, Stack((RIP,))),
    # A Rust panic: its message and the frame below the panic machinery.
    Oops("rust_kernel: panicked", (
        f(r"rust_kernel: panicked", "{0} in {1}", K.PANIC,
          report=r"rust_kernel: panicked at [^\n]*?\n(.+?)\n",
          stack=trace_stack(re.escape("__rustc::rust_begin_unwind"))),
    ), kind=K.PANIC),
    KERNEL_BUG,
    Oops("Kernel BUG", (f(r"Kernel BUG (.*)", "kernel BUG {0}", K.BUG),)),
    Oops("BUG kmalloc-", (f(r"BUG kmalloc-.*: Object already free", "BUG: Object already free",
                            K.BUG),)),
    _one("divide error:", "divide error in {0}", K.FAULT, Stack((RIP,)), r"divide error: "),
    # the same, misspelt since 9d06c4027f21 ("x86/entry: Convert Divide Error to IDTENTRY")
    _one("divide_error:", "divide error in {0}", K.FAULT, Stack((RIP,)), r"divide_error: "),
    _one("invalid opcode:", "invalid opcode in {0}", K.FAULT, Stack((RIP,)), r"invalid opcode: "),
    UBSAN,
    Oops("Booting the kernel.", (
        f(r"^Booting the kernel", "unexpected kernel reboot", K.MACHINE, no_stack_trace=True),
    ), (rx(r"Parsing ELF|Decompressing Linux|Unknown parameter '"),), K.MACHINE),
    _one("unregister_netdevice: waiting for",
         "unregister_netdevice: waiting for DEV to become free", K.HANG,
         title=r"unregister_netdevice: waiting for (?:.*) to become free", no_stack_trace=True),
    _one("VFS: Close: file count is 0", "VFS: Close: file count is zero (use-after-free)",
         K.BUG, no_stack_trace=True),
    _one("VFS: Busy inodes after unmount", "VFS: Busy inodes after unmount (use-after-free)",
         K.BUG, no_stack_trace=True),
    _one("Internal error:", "Internal error in {0}", K.FAULT, fault_stack(),
         alt=("bad-access in {0}",)),
    _one("Unhandled fault:", "Unhandled fault in {0}", K.FAULT, fault_stack(),
         alt=("bad-access in {0}",)),
    _one("Alignment trap:", "Alignment trap in {0}", K.FAULT, fault_stack()),
    TRUSTY,
    Oops("fatal error:", (f(r"fatal error:", "go runtime error", K.BUG, no_stack_trace=True),),
         (rx("ALSA"), rx("fatal error: cannot create timer"))),
    # kharness: arch/x86/mm/pat/memtype.c, a PFNMAP's reservation released
    # twice or never made (PAT1/PAT2). No stack: the line is the report.
    Oops("x86/PAT: ", (
        f(r"x86/PAT: .*freeing invalid memtype", "x86/PAT: freeing invalid memtype", K.PAT,
          no_stack_trace=True),
    ), (rx(r"x86/PAT: (?!.*freeing invalid memtype)"),), K.PAT),
    *SYZ,
)

TABLE = Table(
    oopses=OOPSES, stack_starts=STACK_STARTS, frames=FRAMES, skip=SKIP,
    corrupted_lines=CORRUPTED_LINES, strip_prefixes=STRIP_PREFIXES,
    corrupted_titles=CORRUPTED_TITLES,
    # headers that do not start a report of their own inside another one
    start_ignores=(rx(r"unreferenced object 0x"),   # kharness: inside "BUG: memory leak"
                   rx(r"invalid opcode: 0000"), rx(r"Kernel panic - not syncing"),
                   rx(r"unregister_netdevice: waiting for"), rx(r"PANIC: double fault"),
                   rx(r"Internal error:")),
    info_with_stack=("vmalloc: allocation failure:", "FAULT_INJECTION: forcing a failure",
                     "FAULT_FLAG_ALLOW_RETRY missing"),
    no_frame_stack_start=RISCV_STACK,
    stack_start_hints=("race", "Allocated", "Freed", "acktrace", "Uninit was stored",
                       "badaddr"),
    corrupted_line_hints=("should_fail",),
)
