// SPDX-License-Identifier: GPL-2.0
/*
 * khdax - exercise a DAX mapping from inside the guest: a file on a
 * filesystem mounted -o dax (fs-dax) or a device-dax character device.
 *
 * usage: khdax OP PATH MIB [ARGS...]
 *
 * A PATH that is not a character device is a file, made MIB long with its
 * blocks allocated (fallocate). Mappings are MAP_SHARED and start at a
 * 2 MiB-aligned address, so a PMD fault is possible wherever the blocks
 * are 2 MiB-aligned too. Results are key=value lines, as khmap's: a signal
 * on an access is a result (access=sigbus), a failed call its errno name.
 *
 *   fault         read every page, then write every page: faults of each
 *                 pass (one a 2 MiB block where the kernel maps PMDs), the
 *                 PFNs (pagemap), /proc/kpagecount and kpageflags of the
 *                 first; after munmap, kpagecount again
 *   fork shared|private  the parent writes a token and faults every page;
 *                 the child counts the pages present before it touches
 *                 any, reads the token, writes pages 1..16: page 1's PFN
 *                 against the parent's, the faults the writes took, and
 *                 what the parent reads in page 1 after
 *   gup           process_vm_readv of page 1; O_DIRECT from page 1 to
 *                 /dev/ram0 and back into page 2; vmsplice of page 1; page 1
 *                 as an io_uring fixed buffer (FOLL_LONGTERM)
 *   partial       read every page, munmap one page in the middle of the first
 *                 2 MiB, touch every page again: the faults that takes (the
 *                 PMD split) and how the unmapped page answers
 *   trunc         (files) punch a hole in page 0 of the live mapping and
 *                 read it; punch page 1 while a pipe holds it (vmsplice):
 *                 does the punch wait for the pipe to let go (the layout
 *                 break's busy-page wait)?; truncate to half and touch
 *                 both halves
 *   content OFF PAGES [private] [unaligned] [populate]
 *                 the object stamped with its pages' indexes (uapi/
 *                 kh_stamp.h; a file through write(2), a device through a
 *                 first mapping of it all), then PAGES mapped from page OFF
 *                 (at a 2 MiB-aligned address, or 4 KiB past one): what
 *                 each page shows against the object read another way
 *                 (read(2) of the file, the first mapping of the device)
 *
 * With KH_HOLD=PATH, fault (pages mapped, before munmap) and fork's child
 * (before it touches anything) stop while PATH exists (khutil.h's hold).
 */
#define _GNU_SOURCE
#include <linux/io_uring.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>

#include "khutil.h"

#define PMD_SIZE	(2UL << 20)
#define PAGE_OFF	8		/* where the tests' bytes go in a page */
#define WRITES		16		/* pages fork's child writes, from page 1 */

static int fill(int fd, size_t len)
{
	static char buf[1 << 16];

	memset(buf, 0x11, sizeof(buf));
	for (size_t off = 0; off < len; off += sizeof(buf))
		if (pwrite(fd, buf, sizeof(buf), off) != (ssize_t)sizeof(buf))
			return -1;
	return fsync(fd);
}

static int open_target(const char *path, size_t len)
{
	struct stat st;
	int fd;

	if (stat(path, &st) == 0 && S_ISCHR(st.st_mode))
		return open(path, O_RDWR);
	fd = open(path, O_RDWR | O_CREAT, 0644);
	if (fd < 0)
		return -1;
	/* Written, not only allocated: a read of an unwritten extent maps the zero page. */
	if (fallocate(fd, 0, 0, len) || fill(fd, len)) {
		close(fd);
		return -1;
	}
	return fd;
}

/* A mapping of len bytes of fd at a 2 MiB-aligned address. */
static char *map_aligned(int fd, size_t len, int flags)
{
	char *r = mmap(NULL, len + PMD_SIZE, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	char *a;

	if (r == MAP_FAILED)
		return r;
	a = (char *)(((uintptr_t)r + PMD_SIZE - 1) & ~(PMD_SIZE - 1));
	if (a > r)
		munmap(r, a - r);
	munmap(a + len, r + len + PMD_SIZE - (a + len));
	return mmap(a, len, PROT_READ | PROT_WRITE, flags | MAP_FIXED, fd, 0);
}

static char *map_target(const char *path, size_t len, int flags, int *fdp)
{
	int fd = open_target(path, len);
	char *p;

	if (fd < 0)
		setup_failed("open");
	p = map_aligned(fd, len, flags);
	if (p == MAP_FAILED)
		setup_failed("mmap");
	if (fdp)
		*fdp = fd;
	else
		close(fd);
	return p;
}

static long kpageflags(long pfn)
{
	uint64_t flags;

	return pfn < 0 || proc_word("/proc/kpageflags", pfn, &flags) ? -1 : (long)flags;
}

/* Touch every page; faults taken and pages whose access failed. */
static long pass(char *p, long n, int write, long *failed)
{
	long before = minflt();

	*failed = 0;
	for (long i = 0; i < n; i++)
		if (strcmp(touch(p + i * page_size + PAGE_OFF, write, (char)(i | 1), NULL), "ok"))
			(*failed)++;
	return minflt() - before;
}

static int op_fault(const char *path, long n)
{
	char *p = map_target(path, n * page_size, MAP_SHARED, NULL), flags[256];
	long failed, faults, first, contiguous = 1, rss;

	catch_faults();
	faults = pass(p, n, 0, &failed);
	first = pagemap_pfn(p);
	for (long i = 0; i < n; i++) {
		long pfn = pagemap_pfn(p + i * page_size);

		if (pfn != first + i)
			contiguous = 0;
	}
	printf("op=read pages=%ld minflt=%ld failed=%ld first_pfn=%ld contiguous=%s "
	       "kpagecount=%ld kpageflags=0x%lx\n", n, faults, failed, first,
	       contiguous ? "yes" : "no", kpagecount(first), kpageflags(first));
	faults = pass(p, n, 1, &failed);
	printf("op=write minflt=%ld failed=%ld same_pfn=%s\n", faults, failed,
	       pagemap_pfn(p) == first ? "yes" : "no");
	smaps_of(p, &rss, flags, sizeof(flags));
	printf("op=mapping rss_kb=%ld vmflags=%s\n", rss, flags);
	hold("fault", p);
	munmap(p, n * page_size);
	printf("op=unmapped kpagecount=%ld\n", kpagecount(first));
	return 0;
}

struct forked {
	char *p;
	long n;
};

/* The child of op_fork: the pages fork copied, the token, its own writes. */
static int fork_child(void *arg)
{
	struct forked *f = arg;
	char *p = f->p, got = 0;
	long present = 0, before;
	const char *r;

	for (long i = 0; i < f->n; i++)
		present += pagemap_pfn(p + i * page_size) >= 0;
	printf("op=child_before present=%ld\n", present);
	hold("child_before", p);
	r = touch(p + PAGE_OFF, 0, 0, &got);
	printf("op=child_read access=%s token=%d\n", r, got);
	before = minflt();
	r = touch(p + page_size + PAGE_OFF, 1, 0x6b, NULL);
	for (long i = 2; i <= WRITES; i++)
		touch(p + i * page_size + PAGE_OFF, 1, 0x6b, NULL);
	printf("op=child_write access=%s pfn1=%ld pages=%d minflt=%ld\n", r,
	       pagemap_pfn(p + page_size), WRITES, minflt() - before);
	return got == 0x42 ? 0 : 1;
}

static int op_fork(const char *path, long n, const char *how)
{
	int private = !strcmp(how, "private");
	struct forked f = { map_target(path, n * page_size, private ? MAP_PRIVATE : MAP_SHARED,
				       NULL), n };
	char *p = f.p, got = 0;
	const char *r;
	long failed;

	catch_faults();
	pass(p, n, 0, &failed);
	printf("op=parent_write access=%s failed=%ld\n",
	       touch(p + PAGE_OFF, 1, 0x42, NULL), failed);
	printf("op=parent_mapped pfn0=%ld pfn1=%ld\n", pagemap_pfn(p),
	       pagemap_pfn(p + page_size));
	in_child(fork_child, &f);
	r = touch(p + page_size + PAGE_OFF, 0, 0, &got);
	printf("op=parent_after access=%s byte=%d pfn1=%ld\n", r, got, pagemap_pfn(p + page_size));
	munmap(p, n * page_size);
	return 0;
}

static int op_gup(const char *path, long n)
{
	char *p = map_target(path, n * page_size, MAP_SHARED, NULL);
	struct gup_probe g = { .page = p + page_size, .into = p + 2 * page_size };

	catch_faults();
	memset(p + page_size, 0x37, page_size);
	memset(p + 2 * page_size, 0, page_size);
	gup_probe(&g);
	munmap(p, n * page_size);
	return 0;
}

static int op_partial(const char *path, long n)
{
	char *p = map_target(path, n * page_size, MAP_SHARED, NULL);
	long failed, faults, hole = PMD_SIZE / page_size / 2, bad = 0, before;
	const char *at_hole;

	catch_faults();
	faults = pass(p, n, 0, &failed);
	printf("op=read minflt=%ld failed=%ld\n", faults, failed);
	printf("op=munmap_page result=%s\n",
	       munmap(p + hole * page_size, page_size) ? errname(errno) : "0");
	/* The hole last: its signal's frame may fault a stack page in. */
	before = minflt();
	for (long i = 0; i < n; i++)
		if (i != hole && strcmp(touch(p + i * page_size, 0, 0, NULL), "ok"))
			bad++;
	faults = minflt() - before;
	at_hole = touch(p + hole * page_size, 0, 0, NULL);
	printf("op=retouch minflt=%ld failed=%ld at_hole=%s\n", faults, bad, at_hole);
	munmap(p, n * page_size);
	return 0;
}

struct punch {
	int fd;
	off_t off;
	volatile int done;
	int err;
};

static void *punch_thread(void *arg)
{
	struct punch *pu = arg;

	pu->err = fallocate(pu->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, pu->off,
			    page_size) ? errno : 0;
	pu->done = 1;
	return NULL;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int op_trunc(const char *path, long n)
{
	int fd, pipefd[2];
	char *p = map_target(path, n * page_size, MAP_SHARED, &fd), got = 1, buf[4096];
	struct punch pu = { .fd = fd, .off = page_size };
	pthread_t t;
	const char *r;
	double start;

	catch_faults();
	memset(p, 0x37, n * page_size);
	r = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, page_size) ? errname(errno)
										    : "0";
	printf("op=punch_mapped result=%s", r);
	r = touch(p + PAGE_OFF, 0, 0, &got);
	printf(" access=%s byte=%d\n", r, got);

	if (pipe(pipefd) == 0) {
		struct iovec iov = { p + page_size, page_size };
		ssize_t s = vmsplice(pipefd[1], &iov, 1, 0);

		close(pipefd[1]);
		start = now();
		pthread_create(&t, NULL, punch_thread, &pu);
		usleep(500000);
		printf("op=punch_pinned vmsplice=%zd waited=%s\n", s, pu.done ? "no" : "yes");
		while (read(pipefd[0], buf, sizeof(buf)) > 0)
			;
		close(pipefd[0]);
		pthread_join(t, NULL);
		printf("op=punch_released result=%s after_ms=%.0f", errname(pu.err),
		       (now() - start) * 1000);
		got = 1;
		r = touch(p + page_size + PAGE_OFF, 0, 0, &got);
		printf(" access=%s byte=%d\n", r, got);
	}

	printf("op=truncate result=%s\n",
	       ftruncate(fd, n / 2 * page_size) ? errname(errno) : "0");
	printf("op=access_kept access=%s\n", touch(p + 2 * page_size, 0, 0, NULL));
	printf("op=access_beyond access=%s\n", touch(p + (n - 1) * page_size, 0, 0, NULL));
	munmap(p, n * page_size);
	close(fd);
	return 0;
}

static int op_content(const char *path, long n, long off, long pages, int argc, char **argv)
{
	int priv = 0, shift = 0, populate = 0, fd, chr;
	size_t len = n * page_size, plen = pages * page_size;
	char *whole = NULL, *ref = malloc(plen), *r, *p;
	struct stat st;
	ssize_t got;

	for (int i = 0; i < argc; i++) {
		priv |= !strcmp(argv[i], "private");
		shift |= !strcmp(argv[i], "unaligned");
		populate |= !strcmp(argv[i], "populate");
	}
	chr = stat(path, &st) == 0 && S_ISCHR(st.st_mode);
	fd = open_target(path, len);
	if (fd < 0)
		setup_failed("open");
	catch_faults();
	if (chr) {
		whole = map_aligned(fd, len, MAP_SHARED);
		if (whole == MAP_FAILED)
			setup_failed("mmap_whole");
		stamp_pages(whole, 0, n);
		memcpy(ref, whole + off * page_size, plen);
		got = plen;
	} else {
		stamp_pages(ref = realloc(ref, len), 0, n);
		if (pwrite(fd, ref, len, 0) != (ssize_t)len || fsync(fd))
			setup_failed("stamp");
		got = pread(fd, ref, plen, off * page_size);
	}
	/* A 2 MiB-aligned address (or 4 KiB past one), then the mapping over it. */
	r = map_aligned(-1, plen + PMD_SIZE, MAP_PRIVATE | MAP_ANONYMOUS);
	if (r == MAP_FAILED)
		setup_failed("mmap_anon");
	p = mmap(r + (shift ? page_size : 0), plen, PROT_READ | PROT_WRITE,
		 (priv ? MAP_PRIVATE : MAP_SHARED) | MAP_FIXED | (populate ? MAP_POPULATE : 0), fd,
		 off * page_size);
	if (p == MAP_FAILED) {
		printf("op=content result=%s\n", errname(errno));
		return 0;
	}
	report_content("content", p, ref, pages, got > 0 ? got / page_size : 0);
	return 0;
}

int main(int argc, char **argv)
{
	long n;

	setvbuf(stdout, NULL, _IOLBF, 0);
	page_size = sysconf(_SC_PAGESIZE);
	if (argc < 4) {
		fprintf(stderr, "usage: khdax OP PATH MIB [ARGS...]\n");
		return 2;
	}
	n = atol(argv[3]) * (1L << 20) / page_size;
	if (!strcmp(argv[1], "fault"))
		return op_fault(argv[2], n);
	if (!strcmp(argv[1], "fork") && argc == 5)
		return op_fork(argv[2], n, argv[4]);
	if (!strcmp(argv[1], "gup"))
		return op_gup(argv[2], n);
	if (!strcmp(argv[1], "partial"))
		return op_partial(argv[2], n);
	if (!strcmp(argv[1], "trunc"))
		return op_trunc(argv[2], n);
	if (!strcmp(argv[1], "content") && argc >= 6)
		return op_content(argv[2], n, atol(argv[4]), atol(argv[5]), argc - 6, argv + 6);
	fprintf(stderr, "khdax: unknown op %s\n", argv[1]);
	return 2;
}
