/* SPDX-License-Identifier: GPL-2.0 */
/*
 * khutil.h - what the guest helpers share: results as errno and signal
 * names, faults caught as results, /proc words (pagemap, kpagecount,
 * kpageflags), smaps, the KH_HOLD hold point, what a mapping shows
 * against the object's own content (stamps, uapi/kh_stamp.h), the ways
 * user space makes GUP take a page (gup_probe) and a forked child's run
 * (in_child). Header-only:
 * each helper is one static binary built from one .c file.
 */
#ifndef KHUTIL_H
#define KHUTIL_H

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/io_uring.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kh_stamp.h"

static long page_size;
/* Per thread: the racer's writer takes its SIGBUS on a thread of its own. */
static __thread sigjmp_buf fault_jmp;
static __thread volatile sig_atomic_t fault_sig;

static inline void on_fault(int sig)
{
	fault_sig = sig;
	siglongjmp(fault_jmp, 1);
}

static inline const char *errname(int err)
{
	switch (err) {
	case 0: return "0";
	case EINVAL: return "EINVAL";
	case EFAULT: return "EFAULT";
	case ENOMEM: return "ENOMEM";
	case EPERM: return "EPERM";
	case EACCES: return "EACCES";
	case ENODEV: return "ENODEV";
	case ENXIO: return "ENXIO";
	case EBUSY: return "EBUSY";
	case EAGAIN: return "EAGAIN";
	case ENOENT: return "ENOENT";
	case EIO: return "EIO";
	case ENOSYS: return "ENOSYS";
	case EOPNOTSUPP: return "EOPNOTSUPP";
	case EREMOTEIO: return "EREMOTEIO";
	case EEXIST: return "EEXIST";
	case ENOTTY: return "ENOTTY";
	default: {
		static char buf[16];

		snprintf(buf, sizeof(buf), "E%d", err);
		return buf;
	}
	}
}

static inline const char *signame(int sig)
{
	return sig == SIGBUS ? "sigbus" : sig == SIGSEGV ? "sigsegv" : "signal";
}

static inline void catch_faults(void)
{
	struct sigaction sa = { .sa_handler = on_fault, .sa_flags = SA_NODEFER };

	sigaction(SIGBUS, &sa, NULL);
	sigaction(SIGSEGV, &sa, NULL);
}

/* Read or write one byte; "ok" or the signal's name. */
static inline const char *touch(volatile char *p, int write, char val, char *got)
{
	fault_sig = 0;
	if (sigsetjmp(fault_jmp, 1))
		return signame(fault_sig);
	if (write)
		*p = val;
	else if (got)
		*got = *p;
	else
		(void)*p;
	return "ok";
}

/* The 64-bit word at p, or the signal that reading it raised (0: none). */
static inline int read_word(const volatile uint64_t *p, uint64_t *v)
{
	fault_sig = 0;
	if (sigsetjmp(fault_jmp, 1))
		return fault_sig;
	*v = *p;
	return 0;
}

static inline int write_word(volatile uint64_t *p, uint64_t v)
{
	volatile uint64_t word = v;	/* two registers on 32-bit: kept over sigsetjmp */

	fault_sig = 0;
	if (sigsetjmp(fault_jmp, 1))
		return fault_sig;
	*p = word;
	return 0;
}

/* 1 if the page at a holds the bytes at b, 0 if not or the read faulted. */
static inline int same_page(const char *a, const char *b)
{
	fault_sig = 0;
	if (sigsetjmp(fault_jmp, 1))
		return 0;
	return !memcmp(a, b, page_size);
}

static inline long minflt(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_minflt;
}

/* The smaps entry of the mapping at addr: Rss in kB and VmFlags. */
static inline void smaps_of(void *addr, long *rss_kb, char *flags, size_t flen)
{
	char line[512], want[32];
	FILE *f = fopen("/proc/self/smaps", "r");
	int in = 0;

	*rss_kb = -1;
	flags[0] = 0;
	if (!f)
		return;
	snprintf(want, sizeof(want), "%lx-", (unsigned long)addr);
	while (fgets(line, sizeof(line), f)) {
		if (strchr(line, '-') && strncmp(line, want, strlen(want)) == 0) {
			in = 1;
			continue;
		}
		if (!in)
			continue;
		if (sscanf(line, "Rss: %ld kB", rss_kb) == 1)
			continue;
		if (strncmp(line, "VmFlags:", 8) == 0) {
			char *s = line + 8, *e;

			while (*s == ' ')
				s++;
			e = s + strlen(s);
			while (e > s && (e[-1] == '\n' || e[-1] == ' '))
				*--e = 0;
			for (char *c = s; *c; c++)
				if (*c == ' ')
					*c = ',';
			snprintf(flags, flen, "%s", s);
			break;
		}
	}
	fclose(f);
}

/* The mapping's smaps: "op=mapping rss_kb=.. vmflags=a,b,..". */
static inline void report_vmflags(void *addr)
{
	char flags[256];
	long rss;

	smaps_of(addr, &rss, flags, sizeof(flags));
	printf("op=mapping rss_kb=%ld vmflags=%s\n", rss, flags);
}

/* KH_HOLD: wait here, the mapping live, until the host says go on. */
static inline void hold(const char *where, const void *addr)
{
	const char *path = getenv("KH_HOLD");
	char held[512];
	int fd;

	if (!path)
		return;
	printf("op=hold at=%s pid=%d addr=%p\n", where, getpid(), addr);
	fflush(stdout);
	snprintf(held, sizeof(held), "%s.held", path);
	fd = open(held, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd >= 0)
		close(fd);
	while (access(path, F_OK) == 0)
		usleep(2000);
}

/* Entry idx of a /proc file of 64-bit words (kpagecount, kpageflags, pagemap). */
static inline int proc_word(const char *path, uint64_t idx, uint64_t *val)
{
	int fd = open(path, O_RDONLY), ok;

	if (fd < 0)
		return -1;
	ok = pread(fd, val, 8, idx * 8) == 8;
	close(fd);
	return ok ? 0 : -1;
}

static inline long kpagecount(uint64_t pfn)
{
	uint64_t count;

	return proc_word("/proc/kpagecount", pfn, &count) ? -1 : (long)count;
}

/* The PFN behind addr in this process, from /proc/self/pagemap; -1 if none. */
static inline long pagemap_pfn(void *addr)
{
	uint64_t e = 0;

	if (proc_word("/proc/self/pagemap", (uintptr_t)addr / page_size, &e))
		return -1;
	return (e >> 63) ? (long)(e & ((1ULL << 55) - 1)) : -1;
}

/* pat_memtype_list entries that begin at physical address phys. */
static inline int memtypes_at(unsigned long long phys)
{
	char line[256], want[32];
	FILE *f = fopen("/sys/kernel/debug/x86/pat_memtype_list", "r");
	int n = 0;

	if (!f)
		return -1;
	snprintf(want, sizeof(want), "0x%016llx-", phys);
	while (fgets(line, sizeof(line), f))
		if (strstr(line, want))
			n++;
	fclose(f);
	return n;
}

/* Fill n pages at buf with the stamps of object pages first.. first+n-1. */
static inline void stamp_pages(void *buf, long first, long n)
{
	uint64_t *w = buf;
	long words = page_size / 8;

	for (long i = 0; i < n; i++)
		for (long j = 0; j < words; j++)
			w[i * words + j] = KH_STAMP(first + i, j);
}

/*
 * Which object page each of n mapped pages shows, by the stamp in its last
 * word, as ranges ("3-10", "0,0,2-5"; "x" where there is no stamp, or the
 * signal's name where the read faulted).
 */
static inline void print_shows(const char *map, long n)
{
	long prev = -1, from = -1;
	const char *sep = "";

	printf("shows=");
	for (long i = 0; i <= n; i++) {
		long shows = -1;
		const char *sig = NULL;
		uint64_t v;

		if (i < n) {
			int r = read_word((const uint64_t *)(map + (i + 1) * page_size) - 1, &v);

			if (r)
				sig = signame(r);
			else
				shows = KH_STAMP_PAGE(v);
		}
		if (from >= 0 && shows >= 0 && shows == prev + 1) {
			prev = shows;
			continue;
		}
		if (from >= 0) {		/* the run from..prev ends */
			printf(prev > from ? "%s%ld-%ld" : "%s%ld", sep, from, prev);
			sep = ",";
		}
		from = prev = shows;
		if (i < n && shows < 0) {
			printf("%s%s", sep, sig ? sig : "x");
			sep = ",";
		}
	}
}

/*
 * What n pages of a mapping show against the object's bytes at the same
 * offset read another way (ref, `have` pages of it): the pages that
 * differ, the first, which ref page it shows instead (-1: none), and each
 * page's stamp. A signal on a read is a page that differs.
 */
static inline void report_content(const char *op, const char *map, const char *ref, long n,
				  long have)
{
	long differ = 0, first = -1, instead = -1;

	for (long i = 0; i < have && i < n; i++) {
		if (same_page(map + i * page_size, ref + i * page_size))
			continue;
		if (!differ++) {
			first = i;
			for (long j = 0; j < have && instead < 0; j++)
				if (same_page(map + i * page_size, ref + j * page_size))
					instead = j;
		}
	}
	printf("op=%s pages=%ld compared=%ld differ=%ld first_differ=%ld instead=%ld ", op, n,
	       have < n ? have : n, differ, first, instead);
	print_shows(map, n);
	putchar('\n');
}

/* A set-up step that failed: its errno as the op's result, and exit 2. */
static inline void __attribute__((noreturn)) setup_failed(const char *op)
{
	printf("op=%s result=%s\n", op, errname(errno));
	exit(2);
}

/*
 * Fork, run child(arg) in the child and exit with what it returns; the
 * parent waits and prints op=child_exit status=N (-1: a signal ended it).
 * Returns N.
 */
static inline int in_child(int (*child)(void *), void *arg)
{
	int status;
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		status = child(arg);
		fflush(stdout);
		_exit(status);
	}
	if (pid < 0) {
		printf("op=child_exit status=-1 fork=%s\n", errname(errno));
		return -1;
	}
	waitpid(pid, &status, 0);
	status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
	printf("op=child_exit status=%d\n", status);
	return status;
}

/*
 * A page of a mapping as GUP sees it. page is the page probed; into is
 * another page of the same mapping that an O_DIRECT read writes; refs,
 * when set, reads the page's reference count the caller's way (the
 * module's debugfs), printed before, while held and after.
 */
struct gup_probe {
	char *page;
	char *into;
	long (*refs)(const void *ctx);
	const void *ctx;
};

#define GUP_WORDS 8	/* what match= compares: the page's first 64 bytes */

/* The first GUP_WORDS words at p; 0 if the read faulted. */
static inline int head_of(const char *p, uint64_t *w)
{
	for (int i = 0; i < GUP_WORDS; i++)
		if (read_word((const uint64_t *)p + i, &w[i]))
			return 0;
	return 1;
}

static inline const char *matches(const void *got, ssize_t len, const uint64_t *want)
{
	return len >= GUP_WORDS * 8 && !memcmp(got, want, GUP_WORDS * 8) ? "yes" : "no";
}

static inline void print_refs(const struct gup_probe *g, const char *name, long before)
{
	if (g->refs)
		printf(" ref_before=%ld %s=%ld", before, name, g->refs(g->ctx));
}

static inline void gup_odirect(const struct gup_probe *g, const uint64_t *want)
{
	int fd = open("/dev/ram0", O_RDWR | O_DIRECT);
	uint64_t got[GUP_WORDS];
	ssize_t r;

	if (fd < 0) {
		printf("op=odirect_read result=%s stage=open\n", errname(errno));
		return;
	}
	/* The write reads the page (a FOLL_GET); the read fills into (FOLL_WRITE). */
	r = pwrite(fd, g->page, page_size, 0);
	printf("op=odirect_write result=%s bytes=%zd\n", errname(r < 0 ? errno : 0), r);
	r = pread(fd, g->into, page_size, 0);
	printf("op=odirect_read result=%s bytes=%zd match=%s\n", errname(r < 0 ? errno : 0), r,
	       r > 0 && head_of(g->into, got) ? matches(got, sizeof(got), want) : "no");
	close(fd);
}

/* The pipe holds a reference to the page until it is read. */
static inline void gup_vmsplice(const struct gup_probe *g, const uint64_t *want)
{
	struct iovec iov = { g->page, page_size };
	long before = g->refs ? g->refs(g->ctx) : 0;
	uint64_t got[GUP_WORDS];
	int pipefd[2], err;
	ssize_t r, len;

	if (pipe(pipefd)) {
		printf("op=vmsplice result=%s stage=pipe\n", errname(errno));
		return;
	}
	r = vmsplice(pipefd[1], &iov, 1, 0);
	err = r < 0 ? errno : 0;
	printf("op=vmsplice result=%s bytes=%zd", errname(err), r);
	print_refs(g, "ref_held", before);
	close(pipefd[1]);
	len = read(pipefd[0], got, sizeof(got));
	printf(" match=%s\n", matches(got, len, want));
	while (read(pipefd[0], got, sizeof(got)) > 0)
		;
	close(pipefd[0]);
	if (g->refs)
		printf("op=vmsplice_drained ref_after=%ld\n", g->refs(g->ctx));
}

/* An io_uring fixed buffer: a long-term pin (FOLL_LONGTERM) until unregistered. */
static inline void gup_uring(const struct gup_probe *g)
{
	struct io_uring_params params = { 0 };
	struct iovec iov = { g->page, page_size };
	long before = g->refs ? g->refs(g->ctx) : 0;
	int ring = syscall(__NR_io_uring_setup, 4, &params), r, err;

	if (ring < 0) {
		printf("op=uring_register result=%s stage=setup\n", errname(errno));
		return;
	}
	r = syscall(__NR_io_uring_register, ring, IORING_REGISTER_BUFFERS, &iov, 1);
	err = r < 0 ? errno : 0;
	printf("op=uring_register result=%s", errname(err));
	print_refs(g, "ref_held", before);
	putchar('\n');
	if (!err)
		syscall(__NR_io_uring_register, ring, IORING_UNREGISTER_BUFFERS, NULL, 0);
	close(ring);
	printf("op=uring_unregistered");
	if (g->refs)
		printf(" ref_after=%ld", g->refs(g->ctx));
	putchar('\n');
}

/*
 * Each way user space makes GUP take g->page, a line each (op=NAME
 * result=ERRNO ...): process_vm_readv (a remote read), an O_DIRECT write
 * from the page and a read back into g->into, vmsplice, an io_uring fixed
 * buffer. match= says whether what GUP moved is what the mapping shows.
 */
static inline void gup_probe(const struct gup_probe *g)
{
	uint64_t want[GUP_WORDS] = { 0 }, got[GUP_WORDS];
	struct iovec local = { got, sizeof(got) }, remote = { g->page, sizeof(got) };
	ssize_t r;

	catch_faults();
	/* GUP first: it may be what faults the page in. */
	r = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
	head_of(g->page, want);
	printf("op=process_vm_readv result=%s bytes=%zd match=%s\n", errname(r < 0 ? errno : 0),
	       r, matches(got, r, want));
	gup_odirect(g, want);
	gup_vmsplice(g, want);
	gup_uring(g);
}

#endif /* KHUTIL_H */
