// SPDX-License-Identifier: GPL-2.0
/*
 * khhog - memory pressure for race reproduction (kharness repro --stress memory).
 *
 * usage: khhog MB
 *
 * Maps MB of anonymous memory, touches every page, and unmaps it, over and
 * over until killed: the page allocator, reclaim of the page cache and
 * compaction stay busy, which widens many mm races' windows. Each round
 * also asks for compaction, so pages migrate under the racing mappings.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t len;

	if (argc != 2 || atol(argv[1]) <= 0) {
		fprintf(stderr, "usage: khhog MB\n");
		return 2;
	}
	len = (size_t)atol(argv[1]) << 20;
	for (;;) {
		char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			       -1, 0);
		int fd;

		if (p == MAP_FAILED) {
			usleep(10000);
			continue;
		}
		for (size_t off = 0; off < len; off += page)
			p[off] = (char)off;
		munmap(p, len);
		fd = open("/proc/sys/vm/compact_memory", O_WRONLY);
		if (fd >= 0) {
			if (write(fd, "1", 1) < 0)
				perror("khhog: compact_memory");
			close(fd);
		}
	}
}
