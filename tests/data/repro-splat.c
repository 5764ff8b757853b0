// A user's C reproducer: WARNs through kh_splat (kharness repro --c).
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	const char *what = argc > 1 ? argv[1] : "warn";
	int fd = open("/sys/kernel/debug/kh_splat/trigger", O_WRONLY);

	if (fd < 0) {
		perror("open trigger");
		return 1;
	}
	if (write(fd, what, 4) != 4)
		perror("write trigger");
	close(fd);
	return 0;
}
