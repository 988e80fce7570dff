/*
 * liblockfile's calls, timed, for bench/capi-compare.sh: built once
 * against Debian's liblockfile and once against spoollock's (capi), and
 * run the same way.
 *
 *   capi_bench uncontended LOCK N     N x lockfile_create(LOCK, 0, L_PID) +
 *                                     lockfile_remove (after N/10 warm-up);
 *                                     prints "ns_per_cycle X"
 *   capi_bench contend LOCK DATA N ID GO
 *                                     once the file GO exists (so that all
 *                                     workers start together; at most 60 s),
 *                                     N x lockfile_create(LOCK, 5, L_PID),
 *                                     append "ID i" to DATA, keep the lock
 *                                     2 ms more (a mail append takes
 *                                     milliseconds), lockfile_remove;
 *                                     a create that gives up is counted and
 *                                     tried again; prints "gave_up K"
 *   capi_bench maillock NAME N        N x maillock(NAME, 5) + mailunlock();
 *                                     prints "ns_per_cycle X"
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <maillock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cycle(const char *lock)
{
	if (lockfile_create(lock, 0, L_PID) != L_SUCCESS)
		return -1;
	return lockfile_remove(lock);
}

int main(int argc, char **argv)
{
	if (argc >= 4 && strcmp(argv[1], "uncontended") == 0) {
		const char *lock = argv[2];
		long n = atol(argv[3]);
		for (long i = 0; i < n / 10; i++)
			if (cycle(lock) != 0)
				return 1;
		long long start = now_ns();
		for (long i = 0; i < n; i++)
			if (cycle(lock) != 0) {
				fprintf(stderr, "capi_bench: cycle %ld failed\n", i);
				return 1;
			}
		printf("ns_per_cycle %lld\n", (now_ns() - start) / n);
		return 0;
	}
	if (argc >= 7 && strcmp(argv[1], "contend") == 0) {
		const char *lock = argv[2], *data = argv[3], *id = argv[5], *go = argv[6];
		long n = atol(argv[4]), gave_up = 0;
		struct timespec ms = {0, 100000};
		for (int t = 0; access(go, F_OK) != 0; t++) {
			if (t > 600000) {
				fprintf(stderr, "capi_bench: no %s after 60 s\n", go);
				return 1;
			}
			nanosleep(&ms, NULL);
		}
		for (long i = 0; i < n; i++) {
			while (lockfile_create(lock, 5, L_PID) != L_SUCCESS)
				gave_up++;
			int fd = open(data, O_WRONLY | O_APPEND | O_CREAT, 0644);
			char line[64];
			int len = snprintf(line, sizeof line, "%s %ld\n", id, i);
			if (fd < 0 || write(fd, line, len) != len || close(fd) != 0) {
				perror(data);
				return 1;
			}
			struct timespec hold = {0, 2000000};
			nanosleep(&hold, NULL);
			if (lockfile_remove(lock) != 0) {
				perror(lock);
				return 1;
			}
		}
		printf("gave_up %ld\n", gave_up);
		return 0;
	}
	if (argc >= 4 && strcmp(argv[1], "maillock") == 0) {
		long n = atol(argv[3]);
		long long start = now_ns();
		for (long i = 0; i < n; i++) {
			int rc = maillock(argv[2], 5);
			if (rc != L_SUCCESS) {
				fprintf(stderr, "capi_bench: maillock: %d\n", rc);
				return 1;
			}
			mailunlock();
		}
		printf("ns_per_cycle %lld\n", (now_ns() - start) / n);
		return 0;
	}
	fprintf(stderr, "usage: capi_bench uncontended|contend|maillock ...\n");
	return 2;
}
