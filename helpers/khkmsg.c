// SPDX-License-Identifier: GPL-2.0
/*
 * khkmsg - the kernel log from a sequence number on, read from /dev/kmsg.
 *
 * usage: khkmsg SEQ
 *
 * Prints each record whose sequence number is SEQ or later as dmesg does,
 * "[seconds.micros] text", then "next=N lost=L" on stderr: N is the SEQ
 * to give next time, L the records the ring buffer dropped before they
 * were read. SEQ -1 prints nothing and only says where the log ends: a
 * cursor for a machine that has been up a while, where `dmesg -c` would
 * destroy a log others read.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* "\x0a" and friends back to bytes, as dmesg(1) prints them. */
static void unescape(char *s)
{
	char *out = s;

	while (*s) {
		unsigned int c;

		if (s[0] == '\\' && s[1] == 'x' && sscanf(s + 2, "%2x", &c) == 1) {
			*out++ = (char)c;
			s += 4;
		} else {
			*out++ = *s++;
		}
	}
	*out = '\0';
}

int main(int argc, char **argv)
{
	static char rec[8192 + 1];
	long long from, seq, next, lost = 0;
	int fd;

	if (argc != 2) {
		fprintf(stderr, "usage: khkmsg SEQ\n");
		return 2;
	}
	from = strtoll(argv[1], NULL, 10);
	next = from < 0 ? 0 : from;
	fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK);
	if (fd < 0) {
		fprintf(stderr, "khkmsg: /dev/kmsg: %s\n", strerror(errno));
		return 1;
	}
	for (;;) {
		unsigned long long usec;
		char *text, *dict;
		ssize_t n = read(fd, rec, sizeof(rec) - 1);

		if (n < 0 && errno == EPIPE) {	/* overwritten before we read it */
			lost++;
			continue;
		}
		if (n < 0 && errno == EAGAIN)
			break;
		if (n < 0) {
			fprintf(stderr, "khkmsg: read /dev/kmsg: %s\n", strerror(errno));
			return 1;
		}
		rec[n] = '\0';
		text = strchr(rec, ';');
		if (!text || sscanf(rec, "%*u,%lld,%llu", &seq, &usec) != 2)
			continue;
		if (from >= 0 && next == from && seq > from)
			lost += seq - from;	/* gone from the ring before this read */
		next = seq + 1;
		if (from < 0 || seq < from)
			continue;
		text++;
		dict = strchr(text, '\n');	/* " KEY=value" lines follow */
		if (dict)
			*dict = '\0';
		unescape(text);
		printf("[%5llu.%06llu] %s\n", usec / 1000000, usec % 1000000, text);
	}
	fflush(stdout);
	fprintf(stderr, "next=%lld lost=%lld\n", next, lost);
	return 0;
}
