// SPDX-License-Identifier: GPL-2.0
/*
 * khdevmem - exercise /dev/mem mappings from inside the guest (x86_64:
 * remap_pfn_range() with PAT memtype tracking).
 *
 * usage: khdevmem OP PHYS NPAGES
 *
 * PHYS is a physical address /dev/mem lets a process map (RAM kept from
 * the kernel with memmap=, outside System RAM). After each step the
 * number of /sys/kernel/debug/x86/pat_memtype_list entries starting at
 * PHYS is printed (memtypes=): the range's reservation.
 *
 *   open     map it, and print what mmap says (the caller's other PHYS:
 *            a driver's BAR that IO_STRICT_DEVMEM keeps from /dev/mem)
 *   fork     the child reads the mapping and stops at its hold point
 *   munmap_tail, munmap_middle, shrink, grow, move, mprotect
 *            one page unmapped, the mapping shrunk, grown or moved by
 *            mremap, or one page mprotect()ed (a VMA split); then all of
 *            it unmapped: the step's result and the reservations after
 *            the step and after the munmap
 *   content  stamp the range's pages with their indexes (uapi/kh_stamp.h)
 *            through one mapping, then map it again from its page 3: what
 *            each page of the second shows against the first at that offset
 *
 * With KH_HOLD=PATH, fork's child stops (after its read) while PATH exists.
 */
#define _GNU_SOURCE
#include <sys/mman.h>
#include <sys/wait.h>

#include "khutil.h"

static char *map_mem(unsigned long long phys, long n, int quiet)
{
	int fd = open("/dev/mem", O_RDWR | O_SYNC);
	char *p;

	if (fd < 0)
		setup_failed("open");
	p = mmap(NULL, n * page_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, phys);
	close(fd);
	if (p == MAP_FAILED && !quiet)
		setup_failed("mmap");
	return p;
}

static int op_open(unsigned long long phys, long n)
{
	char *p = map_mem(phys, n, 1);

	printf("op=mmap result=%s\n", p == MAP_FAILED ? errname(errno) : "0");
	if (p != MAP_FAILED)
		munmap(p, n * page_size);
	return 0;
}

struct mem_child {
	char *p;
	unsigned long long phys;
};

static int fork_child(void *arg)
{
	struct mem_child *c = arg;
	char got = 0;
	const char *r = touch(c->p, 0, 0, &got);

	printf("op=child access=%s token=%d memtypes=%d\n", r, got, memtypes_at(c->phys));
	hold("devmem_child", c->p);
	return 0;
}

static int op_fork(unsigned long long phys, long n)
{
	struct mem_child c = { map_mem(phys, n, 0), phys };

	catch_faults();
	printf("op=mapped access=%s memtypes=%d\n", touch(c.p, 1, 0x42, NULL),
	       memtypes_at(phys));
	in_child(fork_child, &c);
	printf("op=child_exited memtypes=%d\n", memtypes_at(phys));
	munmap(c.p, n * page_size);
	printf("op=unmapped memtypes=%d\n", memtypes_at(phys));
	return 0;
}

/*
 * One way of cutting or moving the mapping, then the mapping unmapped
 * whole: its result and the reservations after it and after the munmap.
 */
static int op_step(const char *how, unsigned long long phys, long n)
{
	char *p = map_mem(phys, n, 0), *q = MAP_FAILED;
	long len = n;
	int r = 0;

	catch_faults();
	touch(p, 0, 0, NULL);
	if (!strcmp(how, "munmap_tail")) {
		r = munmap(p + (n - 1) * page_size, page_size);
		len = n - 1;
	} else if (!strcmp(how, "munmap_middle")) {
		r = munmap(p + n / 2 * page_size, page_size);
	} else if (!strcmp(how, "shrink")) {
		q = mremap(p, n * page_size, (n - 1) * page_size, 0);
		len = q == MAP_FAILED ? n : n - 1;
	} else if (!strcmp(how, "grow")) {
		q = mremap(p, n * page_size, (n + 1) * page_size, MREMAP_MAYMOVE);
		len = q == MAP_FAILED ? n : n + 1;
	} else if (!strcmp(how, "move")) {
		q = mmap(NULL, n * page_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		q = mremap(p, n * page_size, n * page_size, MREMAP_MAYMOVE | MREMAP_FIXED, q);
	} else if (!strcmp(how, "mprotect")) {
		r = mprotect(p + page_size, page_size, PROT_READ);
	} else {
		fprintf(stderr, "khdevmem: unknown step %s\n", how);
		return 2;
	}
	if (strcmp(how, "munmap_tail") && strcmp(how, "munmap_middle") && strcmp(how, "mprotect")) {
		r = q == MAP_FAILED ? -1 : 0;
		if (q != MAP_FAILED)
			p = q;
	}
	printf("op=%s result=%s memtypes=%d\n", how, errname(r ? errno : 0), memtypes_at(phys));
	printf("op=after access=%s\n", touch(p, 0, 0, NULL));
	munmap(p, len * page_size);
	printf("op=unmapped memtypes=%d\n", memtypes_at(phys));
	return 0;
}

static int op_content(unsigned long long phys, long n)
{
	char *whole = map_mem(phys, n, 0), *part;

	stamp_pages(whole, 0, n);
	part = map_mem(phys + 3 * page_size, n - 3, 0);
	catch_faults();
	report_content("content", part, whole + 3 * page_size, n - 3, n - 3);
	report_vmflags(part);
	munmap(part, (n - 3) * page_size);
	munmap(whole, n * page_size);
	return 0;
}

int main(int argc, char **argv)
{
	unsigned long long phys;
	long n;

	setvbuf(stdout, NULL, _IOLBF, 0);
	page_size = sysconf(_SC_PAGESIZE);
	if (argc != 4) {
		fprintf(stderr, "usage: khdevmem OP PHYS NPAGES\n");
		return 2;
	}
	phys = strtoull(argv[2], NULL, 0);
	n = atol(argv[3]);
	if (!strcmp(argv[1], "open"))
		return op_open(phys, n);
	if (!strcmp(argv[1], "content") && n > 3)
		return op_content(phys, n);
	/* What an earlier test left (a leaked reservation): the counts after are against it. */
	printf("op=before memtypes=%d\n", memtypes_at(phys));
	if (!strcmp(argv[1], "fork"))
		return op_fork(phys, n);
	return op_step(argv[1], phys, n);
}
