// SPDX-License-Identifier: GPL-2.0
/*
 * khvfio - exercise a PCI BAR mapped through vfio-pci from inside the
 * guest: the device fd's region mmap (VM_PFNMAP, faulted in by
 * vfio_pci_core, 2 MiB at a time where the kernel maps huge PFNs).
 *
 * usage: khvfio OP BDF BAR MIB
 *
 * BDF is a device bound to vfio-pci (its IOMMU group's /dev/vfio/N is
 * opened with a type1 container). The mapping starts at a 2 MiB-aligned
 * address. Results are key=value lines, as khmap's.
 *
 *   fault   read every page (faults: one a 2 MiB block where PFNs are
 *           mapped huge), write each page's index at its start; the
 *           caller reads the BAR another way and compares
 *   fork    the child reads what the parent wrote, through its own copy
 *   gup     GUP of BAR page 1 every way (khutil.h gup_probe:
 *           process_vm_readv, O_DIRECT from it and back into page 0,
 *           vmsplice, an io_uring fixed buffer)
 *   split   munmap of the last page and of a middle one, mremap that
 *           shrinks, grows and moves it
 *   content OFF PAGES  stamp every page with its index (uapi/kh_stamp.h)
 *           through the mapping (the caller reads QEMU's file behind the
 *           BAR), map PAGES again from BAR page OFF: what each shows
 *           against the first mapping at that offset
 */
#define _GNU_SOURCE
#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>

#include "khutil.h"

#define PMD_SIZE	(2UL << 20)

static int device_fd(const char *bdf)
{
	char path[256], link[256];
	struct vfio_group_status status = { .argsz = sizeof(status) };
	int container, group, dev;
	ssize_t len;

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/iommu_group", bdf);
	len = readlink(path, link, sizeof(link) - 1);
	if (len < 0)
		setup_failed("iommu_group");
	link[len] = 0;
	snprintf(path, sizeof(path), "/dev/vfio/%s", strrchr(link, '/') + 1);
	container = open("/dev/vfio/vfio", O_RDWR);
	group = open(path, O_RDWR);
	if (container < 0 || group < 0)
		setup_failed("open");
	if (ioctl(group, VFIO_GROUP_GET_STATUS, &status) ||
	    !(status.flags & VFIO_GROUP_FLAGS_VIABLE) ||
	    ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) ||
	    ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU))
		setup_failed("container");
	dev = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, bdf);
	if (dev < 0)
		setup_failed("device");
	return dev;
}

/* The device and its BAR's region, kept for a second mapping. */
static int bar_dev;
static unsigned long long bar_offset;

static char *map_bar(const char *bdf, int bar, size_t len)
{
	struct vfio_region_info info = { .argsz = sizeof(info), .index = bar };
	int dev = device_fd(bdf);
	char *r, *a, *p;

	if (ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &info) ||
	    !(info.flags & VFIO_REGION_INFO_FLAG_MMAP) || info.size < len) {
		printf("op=region result=%s size=%llu\n", errname(errno),
		       (unsigned long long)info.size);
		exit(2);
	}
	r = mmap(NULL, len + PMD_SIZE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	a = (char *)(((uintptr_t)r + PMD_SIZE - 1) & ~(PMD_SIZE - 1));
	p = mmap(a, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, dev, info.offset);
	if (p == MAP_FAILED)
		setup_failed("mmap");
	bar_dev = dev;
	bar_offset = info.offset;
	return p;
}

static int op_content(char *p, long n, long off, long pages)
{
	char *q;

	stamp_pages(p, 0, n);
	if (off + pages > n) {
		printf("op=content result=past_the_mapping\n");
		return 2;
	}
	q = mmap(NULL, pages * page_size, PROT_READ, MAP_SHARED, bar_dev,
		 bar_offset + off * page_size);
	if (q == MAP_FAILED) {
		printf("op=content result=%s\n", errname(errno));
		return 0;
	}
	report_content("content", q, p + off * page_size, pages, pages);
	return 0;
}

static int op_fault(char *p, long n)
{
	long before = minflt(), bad = 0, rss;
	char flags[256];

	for (long i = 0; i < n; i++)
		if (strcmp(touch(p + i * page_size, 0, 0, NULL), "ok"))
			bad++;
	printf("op=read pages=%ld minflt=%ld failed=%ld\n", n, minflt() - before, bad);
	before = minflt();
	for (long i = 0; i < n; i++)
		*(volatile uint32_t *)(p + i * page_size) = 0x6b000000u | i;
	printf("op=write minflt=%ld\n", minflt() - before);
	smaps_of(p, &rss, flags, sizeof(flags));
	printf("op=mapping rss_kb=%ld vmflags=%s\n", rss, flags);
	return 0;
}

static int fork_child(void *p)
{
	char got = 0;
	const char *r = touch(p, 0, 0, &got);

	printf("op=child access=%s token=%d\n", r, got);
	return got == 0x42 ? 0 : 1;
}

static int op_fork(char *p, long n)
{
	*(volatile uint32_t *)p = 0x42;
	in_child(fork_child, p);
	return 0;
}

static int op_gup(char *p, long n)
{
	struct gup_probe g = { .page = p + page_size, .into = p };

	gup_probe(&g);
	return 0;
}

static int op_split(char *p, long n)
{
	void *q;

	touch(p, 0, 0, NULL);
	printf("op=munmap_tail result=%s\n",
	       munmap(p + (n - 1) * page_size, page_size) ? errname(errno) : "0");
	printf("op=munmap_middle result=%s\n",
	       munmap(p + n / 2 * page_size, page_size) ? errname(errno) : "0");
	q = mremap(p, page_size * 2, page_size, 0);
	printf("op=mremap_shrink result=%s\n", errname(q == MAP_FAILED ? errno : 0));
	q = mremap(p, page_size, page_size * 2, MREMAP_MAYMOVE);
	printf("op=mremap_grow result=%s\n", errname(q == MAP_FAILED ? errno : 0));
	if (q != MAP_FAILED)
		p = q;
	q = mmap(NULL, page_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	q = mremap(p, page_size, page_size, MREMAP_MAYMOVE | MREMAP_FIXED, q);
	printf("op=mremap_move result=%s\n", errname(q == MAP_FAILED ? errno : 0));
	if (q != MAP_FAILED)
		p = q;
	printf("op=moved access=%s\n", touch(p, 0, 0, NULL));
	return 0;
}

int main(int argc, char **argv)
{
	long n;
	char *p;

	setvbuf(stdout, NULL, _IOLBF, 0);
	page_size = sysconf(_SC_PAGESIZE);
	if (argc != 5 && !(argc == 7 && !strcmp(argv[1], "content"))) {
		fprintf(stderr, "usage: khvfio OP BDF BAR MIB [OFF PAGES]\n");
		return 2;
	}
	n = atol(argv[4]) * (1L << 20) / page_size;
	p = map_bar(argv[2], atoi(argv[3]), n * page_size);
	catch_faults();
	if (!strcmp(argv[1], "fault"))
		return op_fault(p, n);
	if (!strcmp(argv[1], "fork"))
		return op_fork(p, n);
	if (!strcmp(argv[1], "gup"))
		return op_gup(p, n);
	if (!strcmp(argv[1], "split"))
		return op_split(p, n);
	if (!strcmp(argv[1], "content"))
		return op_content(p, n, atol(argv[5]), atol(argv[6]));
	fprintf(stderr, "khvfio: unknown op %s\n", argv[1]);
	return 2;
}
