/*
 * The liblockfile side of bench/compare.sh: the same loops as
 * lockfile/benches/compare_driver.rs runs with spoollock-lockfile, through
 * lockfile_create()/lockfile_remove() in-process.
 *
 *   lockfile_driver uncontended DIR N   N x (lockfile_create(DIR/bench.lock,
 *                                       0 retries, L_PID), lockfile_remove)
 *   lockfile_driver handoff DIR N       N hand-offs between this process
 *                                       (holder) and a forked waiter that
 *                                       blocks in lockfile_create(retries)
 *
 * Output is key=value lines; times are from CLOCK_MONOTONIC.
 * Built by bench/compare.sh: cc -O2 -o ... lockfile_driver.c -llockfile
 */
#define _GNU_SOURCE
#include <errno.h>
#include <lockfile.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t mono_ns(void)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
		perror("clock_gettime");
		exit(2);
	}
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what, int code)
{
	fprintf(stderr, "lockfile_driver: %s failed (liblockfile code %d, errno %s)\n",
		what, code, strerror(errno));
	exit(2);
}

static void lock_path(char *buf, size_t len, const char *dir, const char *name)
{
	if ((size_t)snprintf(buf, len, "%s/%s", dir, name) >= len) {
		fprintf(stderr, "lockfile_driver: path too long\n");
		exit(2);
	}
}

static void uncontended(const char *dir, long n)
{
	char path[4096];
	lock_path(path, sizeof path, dir, "bench.lock");
	long warm = n / 10 > 0 ? n / 10 : 1;
	for (long i = 0; i < warm + n; i++) {
		static uint64_t start;
		if (i == warm)
			start = mono_ns();
		int rc = lockfile_create(path, 0, L_PID);
		if (rc != L_SUCCESS)
			die("lockfile_create", rc);
		if (lockfile_remove(path) != 0)
			die("lockfile_remove", -1);
		if (i == warm + n - 1) {
			uint64_t total = mono_ns() - start;
			printf("cycles=%ld\n", n);
			printf("total_ns=%llu\n", (unsigned long long)total);
			printf("ns_per_cycle=%.1f\n", (double)total / (double)n);
		}
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static uint64_t percentile(const uint64_t *sorted, long n, double p)
{
	long rank = (long)(p / 100.0 * (double)(n - 1) + 0.5);
	return sorted[rank < n ? rank : n - 1];
}

static void write_all(int fd, const void *buf, size_t len)
{
	if (write(fd, buf, len) != (ssize_t)len) {
		perror("lockfile_driver: pipe write");
		exit(2);
	}
}

static int read_all(int fd, void *buf, size_t len)
{
	size_t got = 0;
	while (got < len) {
		ssize_t r = read(fd, (char *)buf + got, len - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

/*
 * Same protocol as compare_driver.rs: the holder holds the lock, tells the
 * waiter to go, sleeps 2..20 ms, reads the clock and removes the lock; the
 * waiter (blocked in lockfile_create with retries) reads the clock when it
 * returns and reports it.
 */
static void handoff(const char *dir, long n)
{
	char path[4096];
	lock_path(path, sizeof path, dir, "handoff.lock");
	int go[2], report[2];
	if (pipe(go) != 0 || pipe(report) != 0) {
		perror("pipe");
		exit(2);
	}
	pid_t pid = fork();
	if (pid < 0) {
		perror("fork");
		exit(2);
	}
	if (pid == 0) {
		close(go[1]);
		close(report[0]);
		char c;
		while (read_all(go[0], &c, 1) == 0) {
			/* 20 retries: liblockfile sleeps 5, 10, ... s between them. */
			int rc = lockfile_create(path, 20, L_PID);
			uint64_t acquired = mono_ns();
			if (rc != L_SUCCESS)
				die("waiter lockfile_create", rc);
			lockfile_remove(path);
			write_all(report[1], &acquired, sizeof acquired);
		}
		_exit(0);
	}
	close(go[0]);
	close(report[1]);

	uint64_t *samples = calloc((size_t)n, sizeof *samples);
	if (!samples)
		exit(2);
	for (long i = 0; i < n; i++) {
		int rc = lockfile_create(path, 0, L_PID);
		if (rc != L_SUCCESS)
			die("holder lockfile_create", rc);
		write_all(go[1], "g", 1);
		struct timespec hold = { 0, (long)(2 + (i * 7) % 19) * 1000000L };
		nanosleep(&hold, NULL);
		uint64_t released = mono_ns();
		lockfile_remove(path);
		uint64_t acquired;
		if (read_all(report[0], &acquired, sizeof acquired) != 0) {
			fprintf(stderr, "lockfile_driver: waiter died\n");
			exit(2);
		}
		samples[i] = acquired > released ? acquired - released : 0;
	}
	close(go[1]);
	waitpid(pid, NULL, 0);

	qsort(samples, (size_t)n, sizeof *samples, cmp_u64);
	printf("handoffs=%ld\n", n);
	printf("median_us=%.1f\n", percentile(samples, n, 50) / 1000.0);
	printf("p90_us=%.1f\n", percentile(samples, n, 90) / 1000.0);
	printf("min_us=%.1f\n", samples[0] / 1000.0);
	printf("max_us=%.1f\n", samples[n - 1] / 1000.0);
	free(samples);
}

int main(int argc, char **argv)
{
	long n = argc == 4 ? strtol(argv[3], NULL, 10) : 0;
	if (argc == 4 && n > 0 && strcmp(argv[1], "uncontended") == 0)
		uncontended(argv[2], n);
	else if (argc == 4 && n > 0 && strcmp(argv[1], "handoff") == 0)
		handoff(argv[2], n);
	else {
		fprintf(stderr, "usage: lockfile_driver uncontended DIR N | handoff DIR N\n");
		return 2;
	}
	return 0;
}
