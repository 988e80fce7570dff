/*
 * A mail writer that locks with liblockfile, as C MDAs and MUAs do:
 *
 *     appender LOCK MBOX RETRIES ENTRY...
 *
 * For each ENTRY file: lockfile_create(LOCK, RETRIES, 0) (tried again
 * while it says L_MAXTRYS, at most 1000 times), append the entry to MBOX
 * in 512-byte writes with a yield in between (so that a writer without
 * the lock would interleave), lockfile_remove(LOCK). Exits 1 on any
 * failure, saying which.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <lockfile.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	size_t cap = 1 << 16, n = 0, r;
	char *buf = malloc(cap);
	while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
		n += r;
		if (n == cap)
			buf = realloc(buf, cap *= 2);
	}
	fclose(f);
	*len = n;
	return buf;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: appender LOCK MBOX RETRIES ENTRY...\n");
		return 2;
	}
	const char *lock = argv[1], *mbox = argv[2];
	int retries = atoi(argv[3]);
	for (int i = 4; i < argc; i++) {
		size_t len;
		char *entry = slurp(argv[i], &len);
		if (!entry) {
			perror(argv[i]);
			return 1;
		}
		int rc = L_MAXTRYS, tries = 0;
		while (rc == L_MAXTRYS && tries++ < 1000)
			rc = lockfile_create(lock, retries, 0);
		if (rc != L_SUCCESS) {
			fprintf(stderr, "appender: lockfile_create %s: %d (%s)\n", lock, rc,
				strerror(errno));
			return 1;
		}
		int fd = open(mbox, O_WRONLY | O_APPEND);
		if (fd < 0) {
			perror(mbox);
			return 1;
		}
		for (size_t off = 0; off < len;) {
			size_t chunk = len - off < 512 ? len - off : 512;
			ssize_t w = write(fd, entry + off, chunk);
			if (w < 0) {
				if (errno == EINTR)
					continue;
				perror(mbox);
				return 1;
			}
			off += (size_t)w;
			sched_yield();
		}
		close(fd);
		free(entry);
		if (lockfile_remove(lock) != 0) {
			fprintf(stderr, "appender: lockfile_remove %s: %s\n", lock, strerror(errno));
			return 1;
		}
	}
	return 0;
}
