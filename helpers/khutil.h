/* SPDX-License-Identifier: GPL-2.0 */
/*
 * khutil.h - what the guest helpers share: results as errno and signal
 * names, faults caught as results, /proc words (pagemap, kpagecount,
 * kpageflags), smaps, the KH_HOLD hold point, and what a mapping shows
 * against the object's own content (stamps, uapi/kh_stamp.h). Header-only:
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
#include <sys/resource.h>
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
	fault_sig = 0;
	if (sigsetjmp(fault_jmp, 1))
		return fault_sig;
	*p = v;
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

#endif /* KHUTIL_H */
