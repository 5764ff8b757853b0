/*
 * A selftest that dies the way pfnmap does on kh_mixedmap_pfnmap_half: one
 * result printed, then a read of the unmapped second half raises SIGBUS.
 * Built by tests/kernel/mm-selftests/test_upstream_mm.py to prove the runner can fail.
 * Usage: ktap-dies -- DEVICE
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	const char *dev = argc > 2 ? argv[2] : "/dev/kh_mixedmap_pfnmap_half";
	long page = sysconf(_SC_PAGESIZE);
	volatile char *p;
	int fd;

	printf("TAP version 13\n1..2\n");
	fd = open(dev, O_RDONLY);
	if (fd < 0) {
		printf("1..0 # SKIP cannot open %s\n", dev);
		return 4;
	}
	p = mmap(NULL, 4 * page, PROT_READ, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		printf("not ok 1 mmap of %s\n", dev);
		return 1;
	}
	printf("ok 1 first half readable: %d\n", p[0]);
	fflush(stdout);
	printf("ok 2 second half readable: %d\n", p[3 * page]);   /* SIGBUS */
	return 0;
}
