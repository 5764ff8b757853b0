// SPDX-License-Identifier: GPL-2.0
/*
 * khagent - the kharness guest agent: serves commands on the virtio port
 * named kh.agent.
 *
 * Host -> guest, one line:  RUN <id> <base64 of a shell script>
 *                           ROUND <id> <base64 of a shell script>: re-arm
 *                               WARN_ONCE, run it, and send the kernel log it made
 *                           KLOG <id>: the kernel log since the last KLOG or ROUND
 *                           PUT <id> <size> <octal mode> <base64 of the path>,
 *                               then exactly <size> raw bytes
 *                           FRESH <id> <seconds.nanoseconds> <hex bytes>: after a
 *                               restore from a snapshot, set the clock to the host's
 *                               and reseed the kernel's random generator with the
 *                               host's bytes (END <id> <errno or 0>)
 *                           POWEROFF
 * Guest -> host:            READY <uname -r>
 *                           OUT <id> / base64 lines / ERR <id> / base64 lines /
 *                           LOG <id> / base64 lines / END <id> <status>
 *                           (sections only when not empty)
 *
 * The kernel log is read from /dev/kmsg with one cursor for the agent's
 * life, formatted as dmesg prints it, and the ring is cleared after each
 * read, so `dmesg` in the guest shows what the current window holds.
 *
 * The console stays the kernel's alone; nothing here is scraped from it.
 * Commands run as `sh -c SCRIPT` in /tmp with stdin from /dev/null and the
 * port closed (O_CLOEXEC), so a command cannot write to the channel; its
 * output travels as base64, whose lines can never read as a frame. Each
 * command costs one fork and exec: under TCG a busybox exec is ~10 ms, and
 * the shell agent this replaces spent two to four of them a command.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <linux/random.h>
#include <sys/ioctl.h>
#include <sys/klog.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_LEN (8 << 20)
#define SYSLOG_ACTION_CLEAR 5

static int port = -1;
static int kmsg = -1;
static char rbuf[65536];
static size_t rlen, rpos;

static void die(const char *what)
{
	fprintf(stderr, "khagent: %s: %s\n", what, strerror(errno));
	exit(1);
}

static int find_port(char *path, size_t len)
{
	DIR *d = opendir("/sys/class/virtio-ports");
	struct dirent *e;
	int found = 0;

	if (!d)
		return 0;
	while (!found && (e = readdir(d))) {
		char name[64] = "", p[300];
		FILE *f;

		snprintf(p, sizeof(p), "/sys/class/virtio-ports/%s/name", e->d_name);
		f = fopen(p, "r");
		if (!f)
			continue;
		if (fgets(name, sizeof(name), f) && !strcmp(strtok(name, "\n") ?: "", "kh.agent")) {
			snprintf(path, len, "/dev/%s", e->d_name);
			found = access(path, R_OK | W_OK) == 0;
		}
		fclose(f);
	}
	closedir(d);
	return found;
}

static void write_all(const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(port, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			die("write to the port");
		p += n;
		len -= n;
	}
}

/* Buffered reads of the port: a line, or exactly n raw bytes. */
static int fill(void)
{
	ssize_t n;

	do
		n = read(port, rbuf, sizeof(rbuf));
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return 0;
	rlen = n;
	rpos = 0;
	return 1;
}

static char *read_line(void)
{
	static char *line;
	size_t n = 0;

	if (!line && !(line = malloc(LINE_MAX_LEN)))
		die("malloc");
	for (;;) {
		if (rpos == rlen && !fill())
			return NULL;
		char c = rbuf[rpos++];

		if (c == '\n')
			break;
		if (n < LINE_MAX_LEN - 1)
			line[n++] = c;
	}
	line[n] = '\0';
	return line;
}

static int read_exact(int fd, size_t n)
{
	int ok = 1;

	while (n) {
		size_t chunk;

		if (rpos == rlen && !fill())
			return 0;
		chunk = rlen - rpos < n ? rlen - rpos : n;
		if (ok && write(fd, rbuf + rpos, chunk) != (ssize_t)chunk)
			ok = 0;		/* keep reading: the bytes must leave the port */
		rpos += chunk;
		n -= chunk;
	}
	return ok ? 1 : -1;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t unbase64(const char *in, char *out)
{
	unsigned int acc = 0, bits = 0;
	size_t n = 0;

	for (; *in && *in != '='; in++) {
		const char *p = strchr(b64, *in);

		if (!p)
			continue;
		acc = acc << 6 | (unsigned int)(p - b64);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[n++] = (char)(acc >> bits);
		}
	}
	out[n] = '\0';
	return n;
}

/* A section's bytes as base64 lines of 76 characters, after its header. */
static void send_section(const char *word, const char *id, int fd)
{
	struct stat st;
	unsigned char *data;
	char *text, *t;
	size_t len, i;

	if (fstat(fd, &st) || st.st_size == 0)
		return;
	len = st.st_size;
	data = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
	if (data == MAP_FAILED)
		die("mmap output");
	text = malloc(len / 3 * 4 + len / 57 + 64 + strlen(id));
	if (!text)
		die("malloc");
	t = text + sprintf(text, "%s %s\n", word, id);
	for (i = 0; i < len; i += 3) {
		unsigned int v = data[i] << 16;
		size_t left = len - i;

		if (left > 1)
			v |= data[i + 1] << 8;
		if (left > 2)
			v |= data[i + 2];
		*t++ = b64[v >> 18 & 63];
		*t++ = b64[v >> 12 & 63];
		*t++ = left > 1 ? b64[v >> 6 & 63] : '=';
		*t++ = left > 2 ? b64[v & 63] : '=';
		if ((i / 3 + 1) % 19 == 0 || left <= 3)
			*t++ = '\n';
	}
	write_all(text, t - text);
	free(text);
	munmap(data, len);
}

/* New /dev/kmsg records, as dmesg prints them, into fd; the ring cleared. */
static void read_kmsg(int fd)
{
	static char rec[8192 + 1];
	char line[8300];

	if (kmsg < 0)
		return;
	for (;;) {
		unsigned long long usec;
		char *text, *dict, *o;
		ssize_t n = read(kmsg, rec, sizeof(rec) - 1);

		if (n < 0 && errno == EPIPE)	/* overwritten before we read it */
			continue;
		if (n <= 0)
			break;
		rec[n] = '\0';
		text = strchr(rec, ';');
		if (!text || sscanf(rec, "%*u,%*u,%llu", &usec) != 1)
			continue;
		dict = strchr(++text, '\n');	/* " KEY=value" lines follow */
		if (dict)
			*dict = '\0';
		o = line + snprintf(line, sizeof(line), "[%5llu.%06llu] ", usec / 1000000,
				    usec % 1000000);
		for (char *t = text; *t && o < line + sizeof(line) - 2; ) {
			unsigned int c;

			if (t[0] == '\\' && t[1] == 'x' && sscanf(t + 2, "%2x", &c) == 1) {
				*o++ = (char)c;
				t += 4;
			} else {
				*o++ = *t++;
			}
		}
		*o++ = '\n';
		if (write(fd, line, o - line) < 0)
			die("memfd");
	}
	klogctl(SYSLOG_ACTION_CLEAR, NULL, 0);
}

static void klog(const char *id)
{
	int log = memfd_create("kh-log", MFD_CLOEXEC);
	char end[64];

	if (log < 0)
		die("memfd");
	read_kmsg(log);
	send_section("OUT", id, log);
	close(log);
	snprintf(end, sizeof(end), "END %s 0\n", id);
	write_all(end, strlen(end));
}

static void rearm_warn_once(void)
{
	int fd = open("/sys/kernel/debug/clear_warn_once", O_WRONLY | O_CLOEXEC);

	if (fd >= 0) {
		if (write(fd, "1", 1) < 0)
			perror("khagent: clear_warn_once");
		close(fd);
	}
}

/*
 * /bin/sh, or $KH_SHELL: under virtme-ng /bin/sh is the host's dynamic
 * shell, read over 9p at every exec (113 ms a command on debian:6.12 under
 * TCG, against 14 ms with a static busybox copied to tmpfs).
 */
static const char *shell = "/bin/sh";

static void run(const char *id, const char *payload, int round)
{
	char *script = malloc(strlen(payload) + 4);
	int out = memfd_create("kh-out", MFD_CLOEXEC), err = memfd_create("kh-err", MFD_CLOEXEC);
	int status = 0;
	char end[64];
	pid_t pid;

	if (!script || out < 0 || err < 0)
		die("run set-up");
	unbase64(payload, script);
	if (round)
		rearm_warn_once();
	pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_RDONLY);

		dup2(null, 0);
		dup2(out, 1);
		dup2(err, 2);
		if (chdir("/tmp"))
			_exit(126);
		execl(shell, "sh", "-c", script, (char *)NULL);
		_exit(127);
	}
	if (pid < 0)
		die("fork");
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	send_section("OUT", id, out);
	send_section("ERR", id, err);
	if (round) {
		int log = memfd_create("kh-log", MFD_CLOEXEC);

		if (log < 0)
			die("memfd");
		read_kmsg(log);
		send_section("LOG", id, log);
		close(log);
	}
	snprintf(end, sizeof(end), "END %s %d\n", id,
		 WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
	write_all(end, strlen(end));
	close(out);
	close(err);
	free(script);
}

static int mkdirs(char *path)
{
	for (char *p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0755) && errno != EEXIST) {
			*p = '/';
			return -1;
		}
		*p = '/';
	}
	return 0;
}

static void put(const char *id, char *args)
{
	char *size = strtok(args, " "), *mode = strtok(NULL, " "), *path64 = strtok(NULL, " ");
	char path[4096], part[4200], msg[4400];
	const char *fail = NULL;
	int fd, got;

	if (!size || !mode || !path64 || strlen(path64) > sizeof(path) * 4 / 3 - 4)
		die("bad PUT line");
	unbase64(path64, path);
	snprintf(part, sizeof(part), "%s.kh-part", path);
	fd = mkdirs(path) ? -1 : open(part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		fail = strerror(errno);
	got = read_exact(fd, strtoull(size, NULL, 10));
	if (!got)
		die("the port closed during PUT");
	if (!fail && got < 0)
		fail = strerror(errno);
	if (fd >= 0 && close(fd) && !fail)
		fail = strerror(errno);
	if (!fail && (chmod(part, strtoul(mode, NULL, 8)) || rename(part, path)))
		fail = strerror(errno);
	if (fail) {
		int e = memfd_create("kh-err", MFD_CLOEXEC);

		unlink(part);
		snprintf(msg, sizeof(msg), "%s: %s\n", path, fail);
		if (write(e, msg, strlen(msg)) < 0)
			die("memfd");
		send_section("ERR", id, e);
		close(e);
	}
	snprintf(msg, sizeof(msg), "END %s %d\n", id, fail ? 1 : 0);
	write_all(msg, strlen(msg));
}

/*
 * Two guests restored from one snapshot share the kernel's random state
 * and a clock stopped at the save: the host's bytes, credited, and a
 * reseed (RNDRESEEDCRNG, 4.17+) make every later read differ.
 */
static void fresh(const char *id, char *args)
{
	char *when = strtok(args, " "), *hex = strtok(NULL, " "), *frac;
	struct {
		int entropy_count;
		int buf_size;
		unsigned char buf[64];
	} pool = { 0 };
	struct timespec ts = { 0 };
	int status = 0, fd;
	char end[64];

	if (!when || !hex) {
		status = EINVAL;
		goto out;
	}
	ts.tv_sec = strtoll(when, &frac, 10);
	if (*frac == '.')
		ts.tv_nsec = strtol(frac + 1, NULL, 10);
	if (clock_settime(CLOCK_REALTIME, &ts))
		status = errno;
	while (pool.buf_size < (int)sizeof(pool.buf) &&
	       sscanf(hex + 2 * pool.buf_size, "%2hhx", &pool.buf[pool.buf_size]) == 1)
		pool.buf_size++;
	pool.entropy_count = pool.buf_size * 8;
	fd = open("/dev/random", O_WRONLY | O_CLOEXEC);
	if (fd < 0 || ioctl(fd, RNDADDENTROPY, &pool) || ioctl(fd, RNDRESEEDCRNG))
		status = status ?: errno;
	if (fd >= 0)
		close(fd);
out:
	snprintf(end, sizeof(end), "END %s %d\n", id, status);
	write_all(end, strlen(end));
}

int main(void)
{
	char path[300], ready[300];
	struct utsname u;
	char *line;
	int tries, fd;

	/*
	 * Whatever started us may have left descriptors open (virtme-ng's
	 * script runner does): commands must not inherit them.
	 */
	for (fd = 3; fd < 1024; fd++)
		close(fd);
	if (getenv("KH_SHELL"))
		shell = getenv("KH_SHELL");
	/* The port shows up asynchronously where virtio_console is a module. */
	for (tries = 0; !find_port(path, sizeof(path)); tries++) {
		if (tries == 100) {
			fprintf(stderr, "khagent: no virtio port named kh.agent\n");
			return 1;
		}
		usleep(100000);
	}
	port = open(path, O_RDWR | O_CLOEXEC);
	if (port < 0)
		die(path);
	/* virtme-ng's init may leave debugfs to us; the initramfs init mounted it. */
	if (mount("debugfs", "/sys/kernel/debug", "debugfs", 0, NULL) && errno != EBUSY)
		fprintf(stderr, "khagent: mount debugfs: %s\n", strerror(errno));
	kmsg = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (kmsg < 0)		/* windows would be silently empty: no */
		die("/dev/kmsg");
	uname(&u);
	snprintf(ready, sizeof(ready), "READY %s\n", u.release);
	write_all(ready, strlen(ready));
	while ((line = read_line())) {
		char *verb = strtok(line, " "), *id = strtok(NULL, " "), *rest = strtok(NULL, "");

		if (!verb)
			continue;
		if (!strcmp(verb, "POWEROFF")) {
			sync();
			reboot(RB_POWER_OFF);
			die("reboot");
		}
		if (!id)
			continue;
		if (!strcmp(verb, "RUN"))
			run(id, rest ?: "", 0);
		else if (!strcmp(verb, "ROUND"))
			run(id, rest ?: "", 1);
		else if (!strcmp(verb, "KLOG"))
			klog(id);
		else if (!strcmp(verb, "PUT"))
			put(id, rest ?: "");
		else if (!strcmp(verb, "FRESH"))
			fresh(id, rest ?: "");
	}
	return 0;
}
