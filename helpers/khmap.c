// SPDX-License-Identifier: GPL-2.0
/*
 * khmap - exercise a device mapping from inside the guest.
 *
 * usage: khmap OP DEVICE NPAGES [ARGS...]
 *
 * DEVICE "perf" maps the kernel's own perf ring buffer (a software event of
 * this process) instead of a device node.
 *
 * Every result is a line of key=value words on stdout, for the tests to
 * parse. A SIGBUS or SIGSEGV on an access is a result (access=sigbus), not
 * a crash, and every system call's failure is reported as its errno name.
 *
 * PGDIR is the module's debugfs folder; its "pages" file lists each buffer
 * page's pfn, refcount and mapcount, reported with /proc/kpagecount as
 * "stage=... page=..." lines while the mapping lives.
 *
 *   read [PGDIR]  map read-only, read every page: minor faults, VmFlags, Rss
 *   write P...    map read/write, write a byte to each page P in turn
 *   split         munmap/mremap part of the mapping, then check it is intact
 *   gup PGDIR     GUP of page 1 every way (khutil.h gup_probe: process_vm_readv,
 *                 O_DIRECT from it and back into page 0, vmsplice, an io_uring
 *                 fixed buffer), the module's refcount of it around each pin
 *   fork [PGDIR]  parent writes a token; the child counts the pages present
 *                 (pagemap) before it touches any, then reads it and every page
 *   share [PGDIR] two processes map the device independently; the second
 *                 sees what the first wrote
 *   rw [PGDIR]    read page 0, then write it: the PFN before and after
 *   forkpriv [PGDIR] MAP_PRIVATE, fork, the child writes: its PFN and the
 *                 parent's byte after
 *   hole [PGDIR]  (kh_daxlike) punch a hole in block 0, read it: the zero
 *                 page; then write it: the block's page (DX3)
 *   content OFF [private] [populate] [fixed|noreplace] [fork] [exec] [write]
 *                 [parts] [move]
 *                 map NPAGES from page OFF of the device (MAP_SHARED unless
 *                 private; MAP_POPULATE; MAP_FIXED, or MAP_FIXED_NOREPLACE,
 *                 over an anonymous mapping); with fork, a child reads them before anything
 *                 touched them; read them and compare with read(2) of the
 *                 device at that offset and with the pages' stamps; with
 *                 exec, a return instruction written in the last page
 *                 through the mapping is called through a second,
 *                 PROT_EXEC one; with write, a
 *                 token in each page, then read(2) says where it landed;
 *                 with parts (NPAGES >= 5), mprotect of page 1 and
 *                 MADV_DONTNEED of the rest but page 0, then the stamps of
 *                 all, and of pages 3.. NPAGES-2 moved away by mremap, as
 *                 moved and refaulted after MADV_DONTNEED; with
 *                 move, the stamps after mremap moved the whole mapping
 *   race ROUNDS WINDOW_US  (kh_daxlike) a thread writes block 0 while the
 *                 main thread moves it to a new page (DX4), ROUNDS times
 *   mixed         (kh_mixedmap) read every page, then for each: its PFN,
 *                 /proc/kpagecount and whether process_vm_readv reaches it
 *   mxrace ROUNDS (kh_mixedmap) mmap (prepopulating) and munmap in a loop
 *                 while another thread MADV_DONTNEEDs the mapping (MX4)
 *   pat fork|split PFN  (kh_mixedmap_pfnmap*, x86) the entries of
 *                 /sys/kernel/debug/x86/pat_memtype_list that start at PFN
 *                 (the mapping's first), at each stage of a fork or a
 *                 partial munmap
 *
 * gup also registers the page as an io_uring fixed buffer (a FOLL_LONGTERM
 * pin), through the raw system calls.
 *
 * With KH_HOLD=PATH in the environment, read and mixed (once every page is
 * mapped), fork's child (before it touches anything), pat fork's child
 * (after its access) and pat split (after the partial munmap) stop and wait while
 * PATH exists, after creating PATH.held: the host dumps the guest's memory
 * meanwhile and reads the struct pages and PTEs of the live mapping.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/io_uring.h>
#include <linux/perf_event.h>
#include <pthread.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kh_daxlike.h"
#include "khutil.h"

#define KPF_ZERO_PAGE	24	/* include/uapi/linux/kernel-page-flags.h */

/* The kernel's own perf ring buffer, for comparison with our modules (RB7). */
static int perf_open(void)
{
	struct perf_event_attr attr = {
		.type = PERF_TYPE_SOFTWARE,
		.size = sizeof(attr),
		.config = PERF_COUNT_SW_DUMMY,
		.disabled = 1,
	};

	return syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0);
}

static char *map_dev(const char *dev, long npages, int prot, int *fdp)
{
	int fd = strcmp(dev, "perf") ? open(dev, O_RDWR) : perf_open();
	char *p;

	if (fd < 0)
		setup_failed("open");
	p = mmap(NULL, npages * page_size, prot, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		setup_failed("mmap");
	if (fdp)
		*fdp = fd;
	else
		close(fd);
	return p;
}

static void report_mapping(const char *op, char *p)
{
	char flags[256];
	long rss;

	smaps_of(p, &rss, flags, sizeof(flags));
	printf("op=%s rss_kb=%ld vmflags=%s\n", op, rss, flags);
}

static void report_pages(const char *pgdir, const char *stage);

static int op_read(const char *dev, long n, const char *pgdir)
{
	char *p = map_dev(dev, n, PROT_READ, NULL);
	long before, after, bad = 0;

	catch_faults();
	before = minflt();
	for (long i = 0; i < n; i++)
		if (strcmp(touch(p + i * page_size, 0, 0, NULL), "ok"))
			bad++;
	after = minflt();
	printf("op=read pages=%ld minflt=%ld failed=%ld\n", n, after - before, bad);
	report_mapping("read", p);
	report_pages(pgdir, "mapped");
	hold("read", p);
	munmap(p, n * page_size);
	return 0;
}

static int op_write(const char *dev, long n, int argc, char **argv)
{
	char *p = map_dev(dev, n, PROT_READ | PROT_WRITE, NULL);

	catch_faults();
	for (int i = 0; i < argc; i++) {
		long pg = atol(argv[i]);
		long before = minflt();
		const char *r = touch(p + pg * page_size + 8, 1, 0x5a, NULL);
		char got = 0;

		if (!strcmp(r, "ok"))
			touch(p + pg * page_size + 8, 0, 0, &got);
		printf("op=write page=%ld access=%s minflt=%ld readback=%d\n", pg, r,
		       minflt() - before, got);
	}
	report_mapping("write", p);
	munmap(p, n * page_size);
	return 0;
}

static int intact(char *p, long n)
{
	for (long i = 0; i < n; i++)
		if (strcmp(touch(p + i * page_size, 0, 0, NULL), "ok"))
			return 0;
	return 1;
}

static int op_split(const char *dev, long n)
{
	char *p = map_dev(dev, n, PROT_READ, NULL);
	int r;
	void *q;

	catch_faults();
	r = munmap(p + (n - 1) * page_size, page_size);
	printf("op=munmap_tail result=%s\n", errname(r ? errno : 0));
	r = munmap(p + page_size, page_size);
	printf("op=munmap_middle result=%s\n", errname(r ? errno : 0));
	q = mremap(p, n * page_size, (n - 1) * page_size, 0);
	printf("op=mremap_shrink result=%s\n", errname(q == MAP_FAILED ? errno : 0));
	q = mremap(p, n * page_size, (n + 1) * page_size, MREMAP_MAYMOVE);
	printf("op=mremap_grow result=%s\n", errname(q == MAP_FAILED ? errno : 0));
	if (q != MAP_FAILED)
		p = q;
	printf("op=intact result=%s\n", intact(p, n) ? "yes" : "no");
	report_mapping("split", p);
	munmap(p, n * page_size);
	return 0;
}

/* The refcount of page idx as the module's debugfs "pages" file shows it. */
static long module_refcount(const char *pgdir, long idx)
{
	char path[256], line[128];
	long i, pfn, ref = -1, map;
	FILE *f;

	snprintf(path, sizeof(path), "%s/pages", pgdir);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%ld %ld %ld %ld", &i, &pfn, &ref, &map) == 4 && i == idx)
			break;
	fclose(f);
	return i == idx ? ref : -1;
}

/* Each live buffer page as the module and /proc/kpagecount see it. */
static void report_pages(const char *pgdir, const char *stage)
{
	char path[256], line[128];
	long i, pfn, ref, map;
	FILE *f;

	if (!pgdir)
		return;
	snprintf(path, sizeof(path), "%s/pages", pgdir);
	f = fopen(path, "r");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%ld %ld %ld %ld", &i, &pfn, &ref, &map) == 4)
			printf("stage=%s page=%ld pfn=%ld refcount=%ld mapcount=%ld kpagecount=%ld\n",
			       stage, i, pfn, ref, map, kpagecount(pfn));
	fclose(f);
}

static long page1_refs(const void *pgdir)
{
	return module_refcount(pgdir, 1);
}

/*
 * GUP of data page 1, O_DIRECT reading into page 0 (the ring buffer's
 * control page): the module's refcount of page 1 around each pin.
 */
static int op_gup(const char *dev, long n, const char *pgdir)
{
	char *p = map_dev(dev, n, PROT_READ | PROT_WRITE, NULL);
	struct gup_probe g = { .page = p + page_size, .into = p, .refs = page1_refs,
			       .ctx = pgdir };

	gup_probe(&g);
	munmap(p, n * page_size);
	return 0;
}

/* Read a page, then write it: does the write keep the PFN (DX2, DX3)? */
static int op_rw(const char *dev, long n, const char *pgdir)
{
	char *p = map_dev(dev, n, PROT_READ | PROT_WRITE, NULL), got = 0;
	const char *r;
	long pfn_read, pfn_write;

	catch_faults();
	r = touch(p + 8, 0, 0, &got);
	pfn_read = pagemap_pfn(p);
	printf("op=read access=%s pfn=%ld\n", r, pfn_read);
	r = touch(p + 8, 1, 0x5a, NULL);
	pfn_write = pagemap_pfn(p);
	printf("op=write access=%s pfn=%ld same_pfn=%s\n", r, pfn_write,
	       pfn_read == pfn_write ? "yes" : "no");
	report_pages(pgdir, "mapped");
	munmap(p, n * page_size);
	return 0;
}

struct forked {
	char *p;
	long n;
	const char *pgdir;
};

static int forkpriv_child(void *arg)
{
	struct forked *f = arg;
	const char *r = touch(f->p + 8, 1, 0x6b, NULL);

	printf("op=child_write access=%s pfn=%ld\n", r, pagemap_pfn(f->p));
	report_pages(f->pgdir, "child");
	return 0;
}

/* MAP_PRIVATE and fork: the child's write must land in a copy of its own. */
static int op_forkpriv(const char *dev, long n, const char *pgdir)
{
	int fd = open(dev, O_RDWR);
	struct forked f = { NULL, n, pgdir };
	const char *r;
	char got = 0;

	if (fd < 0) {
		printf("op=open result=%s\n", errname(errno));
		return 2;
	}
	f.p = mmap(NULL, n * page_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	if (f.p == MAP_FAILED) {
		printf("op=mmap result=%s\n", errname(errno));
		return 2;
	}
	catch_faults();
	r = touch(f.p + 8, 0, 0, NULL);
	printf("op=parent_read access=%s pfn=%ld\n", r, pagemap_pfn(f.p));
	in_child(forkpriv_child, &f);
	r = touch(f.p + 8, 0, 0, &got);
	printf("op=parent_after access=%s byte8=%d pfn=%ld\n", r, got, pagemap_pfn(f.p));
	munmap(f.p, n * page_size);
	close(fd);
	return 0;
}

/*
 * Before the child touches anything: the PTEs fork copied. Only this
 * tells "fork copied the PTE" from "the child faulted it in".
 */
static int fork_child(void *arg)
{
	struct forked *f = arg;
	long present = 0;
	const char *r;
	char got = 0;

	for (long i = 0; i < f->n; i++)
		present += pagemap_pfn(f->p + i * page_size) >= 0;
	printf("op=child_before present=%ld page0=%s\n", present,
	       pagemap_pfn(f->p) >= 0 ? "yes" : "no");
	hold("child_before", f->p);
	r = touch(f->p + 16, 0, 0, &got);
	printf("op=child_read access=%s token=%d intact=%s\n", r, got,
	       intact(f->p, f->n) ? "yes" : "no");
	report_pages(f->pgdir, "child");
	return got == 0x42 ? 0 : 1;
}

static int op_fork(const char *dev, long n, const char *pgdir)
{
	struct forked f = { map_dev(dev, n, PROT_READ | PROT_WRITE, NULL), n, pgdir };

	catch_faults();
	printf("op=parent_write access=%s\n", touch(f.p + 16, 1, 0x42, NULL));
	in_child(fork_child, &f);
	report_pages(pgdir, "parent_only");
	munmap(f.p, n * page_size);
	return 0;
}

static int op_share(const char *dev, long n, const char *pgdir)
{
	int go[2], done[2], status;
	char c = 0;
	pid_t pid;

	if (pipe(go) || pipe(done))
		return 1;
	pid = fork();
	if (pid == 0) {
		char *q, got = 0;

		read(go[0], &c, 1);	/* the parent has mapped and written */
		q = map_dev(dev, n, PROT_READ | PROT_WRITE, NULL);
		catch_faults();
		const char *r = touch(q + 24, 0, 0, &got);

		printf("op=second_read access=%s token=%d\n", r, got);
		report_pages(pgdir, "both");
		fflush(stdout);
		touch(q + 25, 1, 0x17, NULL);
		munmap(q, n * page_size);
		write(done[1], &c, 1);
		_exit(0);
	}
	char *p = map_dev(dev, n, PROT_READ | PROT_WRITE, NULL), back = 0;

	catch_faults();
	touch(p + 24, 1, 0x33, NULL);
	write(go[1], &c, 1);
	read(done[0], &c, 1);
	touch(p + 25, 0, 0, &back);
	printf("op=first_sees_second token=%d\n", back);
	report_pages(pgdir, "first_only");
	waitpid(pid, &status, 0);
	munmap(p, n * page_size);
	return 0;
}

static int is_zero_page(long pfn)
{
	uint64_t flags;

	if (pfn < 0 || proc_word("/proc/kpageflags", pfn, &flags))
		return 0;
	return (flags >> KPF_ZERO_PAGE) & 1;
}

/* DX3: a read of a hole maps the zero page; the write must replace it. */
static int op_hole(const char *dev, long n, const char *pgdir)
{
	int fd;
	char *p = map_dev(dev, n, PROT_READ | PROT_WRITE, &fd), got = 1;
	const char *r;
	long pfn;

	if (ioctl(fd, KH_DX_IOC_PUNCH, 0)) {
		printf("op=punch result=%s\n", errname(errno));
		return 2;
	}
	catch_faults();
	r = touch(p + 8, 0, 0, &got);
	pfn = pagemap_pfn(p);
	printf("op=read access=%s byte8=%d pfn=%ld zero_page=%s\n", r, got, pfn,
	       is_zero_page(pfn) ? "yes" : "no");
	r = touch(p + 8, 1, 0x5a, NULL);
	pfn = pagemap_pfn(p);
	printf("op=write access=%s pfn=%ld zero_page=%s\n", r, pfn,
	       is_zero_page(pfn) ? "yes" : "no");
	report_pages(pgdir, "mapped");
	munmap(p, n * page_size);
	close(fd);
	/* Every process's zero page: a read of a new anonymous mapping maps it. */
	p = mmap(NULL, page_size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	got = 1;
	r = touch(p + 8, 0, 0, &got);
	printf("op=zero_page_after access=%s byte8=%d\n", r, got);
	munmap(p, page_size);
	return 0;
}

struct racer {
	char *page;
	volatile int armed;	/* main -> writer: write once now */
	volatile int stop;
	long writes, sigbus;
};

static void *race_writer(void *arg)
{
	struct racer *rc = arg;

	catch_faults();
	while (!rc->stop) {
		if (!__atomic_load_n(&rc->armed, __ATOMIC_ACQUIRE)) {
			sched_yield();
			continue;
		}
		if (strcmp(touch(rc->page + 8, 1, (char)rc->writes, NULL), "ok"))
			rc->sigbus++;
		rc->writes++;
		__atomic_store_n(&rc->armed, 0, __ATOMIC_RELEASE);
	}
	return NULL;
}

/*
 * DX4: each round maps block 0 read-only (a read fault), arms the writer and
 * moves the block. The writer's write faults into the mkwrite path while the
 * module has published the new page and not yet zapped the old PTE, if the
 * round's timing puts it in the window.
 */
static int op_race(const char *dev, long n, long rounds, unsigned int window_us)
{
	struct kh_dx_move move = { .index = 0, .window_us = window_us };
	struct racer rc = { 0 };
	long moved = 0, failed = 0;
	pthread_t writer;
	int fd;

	rc.page = map_dev(dev, n, PROT_READ | PROT_WRITE, &fd);
	catch_faults();
	if (pthread_create(&writer, NULL, race_writer, &rc)) {
		printf("op=race result=pthread_create\n");
		return 2;
	}
	for (long i = 0; i < rounds; i++) {
		touch(rc.page + 8, 0, 0, NULL);
		__atomic_store_n(&rc.armed, 1, __ATOMIC_RELEASE);
		if (ioctl(fd, KH_DX_IOC_MOVE, &move))
			failed++;
		else
			moved++;
		while (__atomic_load_n(&rc.armed, __ATOMIC_ACQUIRE))
			sched_yield();
	}
	rc.stop = 1;
	pthread_join(writer, NULL);
	printf("op=race rounds=%ld window_us=%u moved=%ld move_failed=%ld writes=%ld sigbus=%ld\n",
	       rounds, window_us, moved, failed, rc.writes, rc.sigbus);
	munmap(rc.page, n * page_size);
	close(fd);
	return 0;
}

/* MX2: struct pages and pageless PFNs side by side in one mapping. */
static int op_mixed(const char *dev, long n)
{
	char *p = map_dev(dev, n, PROT_READ | PROT_WRITE, NULL);

	catch_faults();
	for (long i = 0; i < n; i++) {
		const char *r = touch(p + i * page_size, 0, 0, NULL);
		char buf[16];
		struct iovec local = { buf, sizeof(buf) }, remote = { p + i * page_size, sizeof(buf) };
		ssize_t got = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
		long pfn = pagemap_pfn(p + i * page_size);

		printf("op=page idx=%ld access=%s pfn=%ld kpagecount=%ld gup=%s\n", i, r, pfn,
		       kpagecount(pfn), errname(got < 0 ? errno : 0));
	}
	hold("mixed", p);
	munmap(p, n * page_size);
	return 0;
}

struct mxracer {
	char *volatile current;	/* the mapping the other thread may zap, or NULL */
	long len;
	volatile int stop;
	long zapped;
};

static void *mx_zapper(void *arg)
{
	struct mxracer *rc = arg;

	while (!rc->stop) {
		char *p = rc->current;

		if (p && madvise(p, rc->len, MADV_DONTNEED) == 0)
			rc->zapped++;
		sched_yield();
	}
	return NULL;
}

/* MX4: prepopulation in mmap against MADV_DONTNEED from another thread. */
static int op_mxrace(const char *dev, long n, long rounds)
{
	struct mxracer rc = { .len = n * page_size };
	long bad = 0;
	pthread_t zapper;
	int fd = open(dev, O_RDWR);

	if (fd < 0) {
		printf("op=open result=%s\n", errname(errno));
		return 2;
	}
	catch_faults();
	if (pthread_create(&zapper, NULL, mx_zapper, &rc)) {
		printf("op=mxrace result=pthread_create\n");
		return 2;
	}
	for (long i = 0; i < rounds; i++) {
		char *p = mmap(NULL, rc.len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

		if (p == MAP_FAILED) {
			printf("op=mmap result=%s\n", errname(errno));
			break;
		}
		rc.current = p;
		sched_yield();	/* on one vCPU, the other thread zaps it here */
		for (long pg = 0; pg < n; pg++)
			if (strcmp(touch(p + pg * page_size, 1, (char)i, NULL), "ok"))
				bad++;
		rc.current = NULL;
		sched_yield();	/* a madvise that read p before NULL ends first */
		munmap(p, rc.len);
	}
	rc.stop = 1;
	pthread_join(zapper, NULL);
	printf("op=mxrace rounds=%ld zapped=%ld failed_writes=%ld\n", rounds, rc.zapped, bad);
	close(fd);
	return 0;
}

struct pat_child {
	char *p;
	unsigned long long phys;
};

static int pat_child(void *arg)
{
	struct pat_child *c = arg;

	printf("op=child access=%s memtypes=%d\n", touch(c->p, 0, 0, NULL),
	       memtypes_at(c->phys));
	hold("pat_child", c->p);
	return 0;
}

/* PAT1 (fork) and PAT2 (split): the memtype reservations of a PFNMAP. */
static int op_pat(const char *dev, long n, const char *how, unsigned long long pfn)
{
	char *p = map_dev(dev, n, PROT_READ | PROT_WRITE, NULL);
	struct pat_child c = { p, pfn * page_size };	/* pagemap skips VM_PFNMAP */

	catch_faults();
	printf("op=touch access=%s\n", touch(p, 0, 0, NULL));
	printf("op=mapped phys=0x%llx memtypes=%d\n", c.phys, memtypes_at(c.phys));
	report_vmflags(p);
	if (!strcmp(how, "fork")) {
		in_child(pat_child, &c);
		printf("op=child_exited memtypes=%d\n", memtypes_at(c.phys));
	} else {
		int r = munmap(p + n / 2 * page_size, (n - n / 2) * page_size);

		printf("op=munmap_half result=%s memtypes=%d\n", errname(r ? errno : 0),
		       memtypes_at(c.phys));
		hold("pat_split", p);
		n /= 2;
	}
	munmap(p, n * page_size);
	printf("op=unmapped memtypes=%d\n", memtypes_at(c.phys));
	return 0;
}

static int has_word(int argc, char **argv, const char *word)
{
	for (int i = 0; i < argc; i++)
		if (!strcmp(argv[i], word))
			return 1;
	return 0;
}

/*
 * Write a token in the last-but-one word of each page (through the
 * mapping), then read the object back: the pages whose token the object
 * holds at the same offset (a shared mapping: all; a private one: none).
 * The object's words are put back after.
 */
static void write_tokens(char *p, int fd, long off, long n)
{
	size_t len = n * page_size, at = page_size / 8 - 2;
	uint64_t *obj = malloc(len);
	long landed = 0, sig = 0;

	for (long i = 0; i < n; i++)
		if (write_word((uint64_t *)(p + i * page_size) + at, ~KH_STAMP(off + i, at)))
			sig++;
	if (pread(fd, obj, len, off * page_size) != (ssize_t)len)
		setup_failed("pread");
	for (long i = 0; i < n; i++) {
		uint64_t *w = obj + i * (page_size / 8) + at;

		if (*w == ~KH_STAMP(off + i, at)) {
			landed++;
			*w = KH_STAMP(off + i, at);
			if (pwrite(fd, w, 8, (off + i) * page_size + at * 8) != 8)
				/* no write(2): put it back through the mapping */
				((uint64_t *)(p + i * page_size))[at] = *w;
		}
	}
	printf("op=write_tokens pages=%ld landed=%ld signals=%ld\n", n, landed, sig);
	free(obj);
}

/*
 * Operations on part of the mapping: what each page shows after the VMA
 * is split by mprotect, after MADV_DONTNEED made the rest refault, and
 * where pages 3.. n-2 moved to with mremap: from inside the VMA that
 * begins at page 2, so the new VMA's file offset is its own.
 */
static void content_parts(char *p, long n)
{
	size_t mid = (n - 4) * page_size;
	char *to;
	int r;

	r = mprotect(p + page_size, page_size, PROT_READ);
	printf("op=mprotect_part result=%s\n", errname(r ? errno : 0));
	r = madvise(p + page_size, (n - 1) * page_size, MADV_DONTNEED);
	printf("op=dontneed_part result=%s ", errname(r ? errno : 0));
	print_shows(p, n);
	putchar('\n');
	to = mmap(NULL, mid, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (to == MAP_FAILED)
		setup_failed("mmap_anon");
	to = mremap(p + 3 * page_size, mid, mid, MREMAP_MAYMOVE | MREMAP_FIXED, to);
	printf("op=mremap_part result=%s ", errname(to == MAP_FAILED ? errno : 0));
	if (to != MAP_FAILED) {
		print_shows(to, n - 4);
		/* The moved PTEs came along; faults after a zap ask the new VMA's offset. */
		printf("\nop=mremap_part_refault result=%s ",
		       errname(madvise(to, mid, MADV_DONTNEED) ? errno : 0));
		print_shows(to, n - 4);
		munmap(to, mid);
	}
	putchar('\n');
}

struct shows {
	char *p;
	long n;
};

static int shows_child(void *arg)
{
	struct shows *c = arg;

	printf("op=child ");
	print_shows(c->p, c->n);
	putchar('\n');
	return 0;
}

/* A child reads the pages before anything has touched them: which it sees. */
static void content_child(char *p, long n)
{
	struct shows c = { p, n };

	in_child(shows_child, &c);
}

/*
 * A return instruction written at the start of the last page through the
 * mapping p, called through a second mapping of that page with PROT_EXEC:
 * what mmap says, and what the call did (ok or the signal). The page's
 * bytes are put back.
 */
static void content_exec(int fd, char *p, long off, long n)
{
#if defined(__x86_64__)
	static const unsigned char ret[] = { 0xc3 };
#elif defined(__aarch64__)
	static const unsigned char ret[] = { 0xc0, 0x03, 0x5f, 0xd6 };
#elif defined(__arm__)
	/* bx lr, in ARM state: a call to an even address enters ARM state */
	static const unsigned char ret[] = { 0x1e, 0xff, 0x2f, 0xe1 };
#else
#error "a return instruction for this arch"
#endif
	char *page = p + (n - 1) * page_size, keep[sizeof(ret)], *x;
	const char *r;

	memcpy(keep, page, sizeof(ret));
	memcpy(page, ret, sizeof(ret));
	x = mmap(NULL, page_size, PROT_READ | PROT_EXEC, MAP_SHARED, fd,
		 (off + n - 1) * page_size);
	if (x == MAP_FAILED) {
		printf("op=exec mmap=%s\n", errname(errno));
	} else {
		__builtin___clear_cache(x, x + sizeof(ret));
		fault_sig = 0;
		if (sigsetjmp(fault_jmp, 1))
			r = signame(fault_sig);
		else {
			((void (*)(void))x)();
			r = "ok";
		}
		printf("op=exec mmap=0 call=%s\n", r);
		munmap(x, page_size);
	}
	memcpy(page, keep, sizeof(ret));
}

static int op_content(const char *dev, long n, int argc, char **argv)
{
	int priv = has_word(argc, argv, "private"), write = has_word(argc, argv, "write");
	int flags = (priv ? MAP_PRIVATE : MAP_SHARED) |
		    (has_word(argc, argv, "populate") ? MAP_POPULATE : 0);
	long off = argc ? atol(argv[0]) : 0, before;
	size_t len = n * page_size;
	int fd = strcmp(dev, "perf") ? open(dev, O_RDWR) : perf_open();
	char *at = NULL, *p, *ref = malloc(len);
	ssize_t got;

	if (fd < 0)
		setup_failed("open");
	catch_faults();
	if (has_word(argc, argv, "fixed") || has_word(argc, argv, "noreplace")) {
		at = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (at == MAP_FAILED)
			setup_failed("mmap_anon");
		memset(at, 0x77, len);
		flags |= has_word(argc, argv, "fixed") ? MAP_FIXED : MAP_FIXED_NOREPLACE;
	}
	before = minflt();
	p = mmap(at, len, PROT_READ | (write ? PROT_WRITE : 0), flags, fd, off * page_size);
	if (p == MAP_FAILED) {
		printf("op=content result=%s\n", errname(errno));
		return 0;
	}
	printf("op=mmap result=0 minflt=%ld fixed=%s\n", minflt() - before,
	       at ? (p == at ? "in_place" : "moved") : "no");
	if (has_word(argc, argv, "fork"))
		content_child(p, n);
	before = minflt();
	printf("op=reads ");
	print_shows(p, n);
	printf(" minflt=%ld\n", minflt() - before);
	got = pread(fd, ref, len, off * page_size);
	report_content("content", p, ref, n, got > 0 ? got / page_size : 0);
	if (write)
		write_tokens(p, fd, off, n);
	if (write && !priv && has_word(argc, argv, "exec"))
		content_exec(fd, p, off, n);
	report_mapping("content_vma", p);
	if (has_word(argc, argv, "move")) {
		char *to = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (to == MAP_FAILED)
			setup_failed("mmap_anon");
		to = mremap(p, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, to);
		printf("op=moved result=%s ", errname(to == MAP_FAILED ? errno : 0));
		if (to != MAP_FAILED) {
			print_shows(to, n);
			p = to;
		}
		putchar('\n');
	}
	if (has_word(argc, argv, "parts") && n >= 5)
		content_parts(p, n);
	munmap(p, len);
	close(fd);
	free(ref);
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	page_size = sysconf(_SC_PAGESIZE);
	if (argc < 4) {
		fprintf(stderr, "usage: khmap OP DEVICE NPAGES [ARGS...]\n");
		return 2;
	}
	const char *op = argv[1], *dev = argv[2];
	long n = atol(argv[3]);

	const char *pgdir = argc > 4 ? argv[4] : NULL;

	if (!strcmp(op, "read"))
		return op_read(dev, n, pgdir);
	if (!strcmp(op, "write"))
		return op_write(dev, n, argc - 4, argv + 4);
	if (!strcmp(op, "split"))
		return op_split(dev, n);
	if (!strcmp(op, "gup") && argc == 5)
		return op_gup(dev, n, argv[4]);
	if (!strcmp(op, "fork"))
		return op_fork(dev, n, pgdir);
	if (!strcmp(op, "share"))
		return op_share(dev, n, pgdir);
	if (!strcmp(op, "rw"))
		return op_rw(dev, n, pgdir);
	if (!strcmp(op, "forkpriv"))
		return op_forkpriv(dev, n, pgdir);
	if (!strcmp(op, "pat") && argc == 6)
		return op_pat(dev, n, argv[4], strtoull(argv[5], NULL, 0));
	if (!strcmp(op, "mixed"))
		return op_mixed(dev, n);
	if (!strcmp(op, "mxrace") && argc == 5)
		return op_mxrace(dev, n, atol(argv[4]));
	if (!strcmp(op, "hole"))
		return op_hole(dev, n, pgdir);
	if (!strcmp(op, "content"))
		return op_content(dev, n, argc - 4, argv + 4);
	if (!strcmp(op, "race") && argc == 6)
		return op_race(dev, n, atol(argv[4]), atoi(argv[5]));
	fprintf(stderr, "khmap: unknown op '%s'\n", op);
	return 2;
}
