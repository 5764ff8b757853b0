// SPDX-License-Identifier: GPL-2.0
/*
 * khudmabuf - exercise a udmabuf mapping from inside the guest: a dma-buf
 * made by /dev/udmabuf from a sealed memfd, mapped through the dma-buf.
 *
 * usage: khudmabuf OP NPAGES [ARGS...]
 *
 * The memfd's pages are written with their index (one byte a page) and
 * mapped too, so each udmabuf page can be told from the memfd page it
 * should be. Results are key=value lines, as khmap's.
 *
 *   fault   read every page of the dma-buf mapping: faults taken, whether
 *           each page shows the memfd's byte, how pagemap sees it (a
 *           VM_PFNMAP mapping is skipped: no PFN), smaps' VmFlags and Rss;
 *           then a write through it, read back through the memfd
 *   fork    the child counts the dma-buf pages present before it touches
 *           any (the PTEs fork copied), then reads them all
 *   gup     GUP of page 1 every way (khutil.h gup_probe: process_vm_readv,
 *           O_DIRECT from it and back into page 0, vmsplice, an io_uring
 *           fixed buffer)
 *   split   munmap of the last page and a grow by mremap
 *   content FROM MAP_OFF MAP_PAGES [private|populate]
 *           the memfd's pages stamped with their index (uapi/kh_stamp.h),
 *           the dma-buf made of its pages FROM.. NPAGES-1 (udmabuf_create's
 *           offset), MAP_PAGES of it mapped from page MAP_OFF: what each
 *           page shows against read(2) of the memfd at that offset
 *
 * With KH_HOLD=PATH, fault (pages mapped, before munmap) and fork's child
 * (before it touches anything) stop while PATH exists (khutil.h's hold).
 */
#define _GNU_SOURCE
#include <linux/udmabuf.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>

#include "khutil.h"

struct buf {
	char *dma;	/* the dma-buf's mapping */
	char *mem;	/* the memfd's own */
	long n;
};

/* A dma-buf of the memfd's pages from..n-1, made by /dev/udmabuf. */
static int udmabuf_of(int memfd, long from, long n)
{
	struct udmabuf_create create = { .memfd = memfd, .flags = UDMABUF_FLAGS_CLOEXEC,
					 .offset = from * page_size,
					 .size = (n - from) * page_size };
	int dev, dmabuf;

	if (fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK))
		setup_failed("memfd");
	dev = open("/dev/udmabuf", O_RDWR);
	if (dev < 0)
		setup_failed("open");
	dmabuf = ioctl(dev, UDMABUF_CREATE, &create);
	if (dmabuf < 0)
		setup_failed("create");
	close(dev);
	return dmabuf;
}

static void made(struct buf *b, long n)
{
	int memfd = memfd_create("khudmabuf", MFD_ALLOW_SEALING), dmabuf;

	if (memfd < 0 || ftruncate(memfd, n * page_size))
		setup_failed("memfd");
	b->n = n;
	b->mem = mmap(NULL, n * page_size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	for (long i = 0; i < n; i++)
		b->mem[i * page_size] = (char)(i + 1);
	dmabuf = udmabuf_of(memfd, 0, n);
	b->dma = mmap(NULL, n * page_size, PROT_READ | PROT_WRITE, MAP_SHARED, dmabuf, 0);
	if (b->dma == MAP_FAILED)
		setup_failed("mmap");
	close(dmabuf);
	close(memfd);
}

static long present(char *p, long n)
{
	long count = 0;

	for (long i = 0; i < n; i++)
		count += pagemap_pfn(p + i * page_size) >= 0;
	return count;
}

static int op_fault(long n)
{
	struct buf b;
	long before, faults, wrong = 0, bad = 0, rss;
	char flags[256], got;

	made(&b, n);
	catch_faults();
	before = minflt();
	for (long i = 0; i < n; i++) {
		got = 0;
		if (strcmp(touch(b.dma + i * page_size, 0, 0, &got), "ok"))
			bad++;
		else if (got != (char)(i + 1))
			wrong++;
	}
	faults = minflt() - before;
	smaps_of(b.dma, &rss, flags, sizeof(flags));
	printf("op=read pages=%ld minflt=%ld failed=%ld wrong=%ld pagemap_present=%ld "
	       "memfd_pfn0=%ld kpagecount0=%ld\n", n, faults, bad, wrong, present(b.dma, n),
	       pagemap_pfn(b.mem), kpagecount(pagemap_pfn(b.mem)));
	printf("op=mapping rss_kb=%ld vmflags=%s\n", rss, flags);
	printf("op=write access=%s", touch(b.dma + 8, 1, 0x5a, NULL));
	printf(" memfd_sees=%d\n", b.mem[8]);
	hold("fault", b.dma);
	munmap(b.dma, n * page_size);
	printf("op=unmapped kpagecount0=%ld\n", kpagecount(pagemap_pfn(b.mem)));
	return 0;
}

static int fork_child(void *arg)
{
	struct buf *b = arg;
	long before, wrong = 0;

	hold("child_before", b->dma);
	before = present(b->dma, b->n);
	for (long i = 0; i < b->n; i++) {
		char got = 0;

		if (strcmp(touch(b->dma + i * page_size, 0, 0, &got), "ok") ||
		    got != (char)(i + 1))
			wrong++;
	}
	printf("op=child present_before=%ld wrong=%ld\n", before, wrong);
	return 0;
}

static int op_fork(long n)
{
	struct buf b;

	made(&b, n);
	catch_faults();
	for (long i = 0; i < n; i++)
		touch(b.dma + i * page_size, 0, 0, NULL);
	in_child(fork_child, &b);
	return 0;
}

static int op_gup(long n)
{
	struct gup_probe g;
	struct buf b;

	made(&b, n);
	g = (struct gup_probe){ .page = b.dma + page_size, .into = b.dma };
	gup_probe(&g);
	return 0;
}

static int op_split(long n)
{
	struct buf b;
	void *q;

	made(&b, n);
	catch_faults();
	printf("op=munmap_tail result=%s\n",
	       munmap(b.dma + (n - 1) * page_size, page_size) ? errname(errno) : "0");
	q = mremap(b.dma, (n - 1) * page_size, n * page_size, MREMAP_MAYMOVE);
	printf("op=mremap_grow result=%s\n", errname(q == MAP_FAILED ? errno : 0));
	if (q != MAP_FAILED) {
		b.dma = q;
		printf("op=beyond access=%s\n", touch(b.dma + (n - 1) * page_size, 0, 0, NULL));
	}
	return 0;
}

static int op_content(long n, long from, long off, long pages, const char *how)
{
	int memfd = memfd_create("khudmabuf", MFD_ALLOW_SEALING), dmabuf;
	char *stamp = malloc(n * page_size), *ref = malloc(pages * page_size), *p;
	ssize_t got;

	stamp_pages(stamp, 0, n);
	if (memfd < 0 || pwrite(memfd, stamp, n * page_size, 0) != n * page_size)
		setup_failed("memfd");
	dmabuf = udmabuf_of(memfd, from, n);
	catch_faults();
	p = mmap(NULL, pages * page_size, PROT_READ | PROT_WRITE,
		 !strcmp(how, "private") ? MAP_PRIVATE :
		 MAP_SHARED | (!strcmp(how, "populate") ? MAP_POPULATE : 0), dmabuf, off * page_size);
	if (p == MAP_FAILED) {
		printf("op=content result=%s\n", errname(errno));
		return 0;
	}
	got = pread(memfd, ref, pages * page_size, (from + off) * page_size);
	report_content("content", p, ref, pages, got > 0 ? got / page_size : 0);
	return 0;
}

int main(int argc, char **argv)
{
	long n;

	setvbuf(stdout, NULL, _IOLBF, 0);
	page_size = sysconf(_SC_PAGESIZE);
	if (argc < 3) {
		fprintf(stderr, "usage: khudmabuf OP NPAGES [ARGS...]\n");
		return 2;
	}
	n = atol(argv[2]);
	if (!strcmp(argv[1], "content") && argc >= 6)
		return op_content(n, atol(argv[3]), atol(argv[4]), atol(argv[5]),
				  argc > 6 ? argv[6] : "");
	if (!strcmp(argv[1], "fault"))
		return op_fault(n);
	if (!strcmp(argv[1], "fork"))
		return op_fork(n);
	if (!strcmp(argv[1], "gup"))
		return op_gup(n);
	if (!strcmp(argv[1], "split"))
		return op_split(n);
	fprintf(stderr, "khudmabuf: unknown op %s\n", argv[1]);
	return 2;
}
