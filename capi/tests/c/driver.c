/*
 * The compliance suite's driver: liblockfile's calls, one per argument
 * group, each reported on its own line as
 *
 *     <op> <return value> <errno name, or - after success>
 *
 * Built twice by capi/tests/compliance.rs, from this one source: against
 * Debian's liblockfile (with its headers) and against spoollock's (with
 * capi/include), so both run the same code.
 *
 *   driver OP ARGS... [OP ARGS...]...
 *
 *   create PATH RETRIES FLAGS       lockfile_create
 *   create2 PATH RETRIES FLAGS IVAL lockfile_create2 (L_INTERVAL, interval
 *                                   IVAL), "create2 absent" when the
 *                                   library does not export it
 *   remove PATH | touch PATH | check PATH FLAGS
 *   maillock NAME RETRIES | mailunlock | touchlock
 *   successor PATH                  another process's lock now has the name
 *                                   (ours was broken and taken again):
 *                                   unlink PATH, write "99999\n" there,
 *                                   dated 200 s ago
 *   orphan                          fork; the parent exits; the child goes
 *                                   on once it is init's ("orphan ok"), or
 *                                   says "orphan not-init" and stops
 *   fsize0                          RLIMIT_FSIZE 0, SIGXFSZ ignored
 *   forkremove PATH                 a forked child calls lockfile_remove(PATH);
 *                                   "forkremove <its exit status>"
 *   null                            every call with a NULL name
 *   sleepms N
 *   which                           the liblockfile this process loaded
 *
 * Its first line is "pid <pid> ppid <ppid>", so that the test knows which
 * pids a lock may name.
 */
#define _GNU_SOURCE
#define LOCKFILE_EXPERIMENTAL
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <maillock.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void report(const char *op, int rc, int err)
{
	const char *name = rc == 0 ? "-" : strerrorname_np(err);
	printf("%s %d %s\n", op, rc, name ? name : "?");
	fflush(stdout);
}

static int need(int argc, int i, int n)
{
	if (i + n >= argc) {
		fprintf(stderr, "driver: missing arguments\n");
		exit(2);
	}
	return i + n;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

typedef int (*create2_fn)(const char *, int, int, struct lockargs *, int);

int main(int argc, char **argv)
{
	printf("pid %d ppid %d\n", (int)getpid(), (int)getppid());
	fflush(stdout);
	for (int i = 1; i < argc; i++) {
		const char *op = argv[i];
		int rc;
		if (strcmp(op, "create") == 0) {
			i = need(argc, i, 3);
			errno = 0;
			rc = lockfile_create(argv[i - 2], atoi(argv[i - 1]), atoi(argv[i]));
			report(op, rc, errno);
		} else if (strcmp(op, "create2") == 0) {
			i = need(argc, i, 4);
			/* Not in Debian's shared library: look it up. */
			create2_fn create2 = (create2_fn)dlsym(RTLD_DEFAULT, "lockfile_create2");
			if (!create2) {
				printf("create2 absent\n");
				continue;
			}
			struct lockargs args = {atoi(argv[i])};
			errno = 0;
			rc = create2(argv[i - 3], atoi(argv[i - 2]), atoi(argv[i - 1]) | L_INTERVAL,
				     &args, sizeof args);
			report(op, rc, errno);
		} else if (strcmp(op, "remove") == 0) {
			i = need(argc, i, 1);
			errno = 0;
			rc = lockfile_remove(argv[i]);
			report(op, rc, errno);
		} else if (strcmp(op, "touch") == 0) {
			i = need(argc, i, 1);
			errno = 0;
			rc = lockfile_touch(argv[i]);
			report(op, rc, errno);
		} else if (strcmp(op, "check") == 0) {
			i = need(argc, i, 2);
			errno = 0;
			rc = lockfile_check(argv[i - 1], atoi(argv[i]));
			/* liblockfile leaves errno as its last call did. */
			printf("check %d\n", rc);
		} else if (strcmp(op, "maillock") == 0) {
			i = need(argc, i, 2);
			errno = 0;
			rc = maillock(argv[i - 1], atoi(argv[i]));
			report(op, rc, errno);
		} else if (strcmp(op, "mailunlock") == 0) {
			mailunlock();
			printf("mailunlock\n");
		} else if (strcmp(op, "touchlock") == 0) {
			touchlock();
			printf("touchlock\n");
		} else if (strcmp(op, "successor") == 0) {
			i = need(argc, i, 1);
			unlink(argv[i]);
			int fd = open(argv[i], O_WRONLY | O_CREAT | O_EXCL, 0644);
			if (fd < 0 || write(fd, "99999\n", 6) != 6 || close(fd) != 0) {
				perror("driver: successor");
				return 2;
			}
			/* Made 200 s ago: a touch of it shows. */
			struct timespec times[2] = {{time(NULL) - 200, 0}, {time(NULL) - 200, 0}};
			if (utimensat(AT_FDCWD, argv[i], times, 0) < 0) {
				perror("driver: successor");
				return 2;
			}
			printf("successor\n");
		} else if (strcmp(op, "orphan") == 0) {
			fflush(stdout);
			pid_t pid = fork();
			if (pid < 0) {
				perror("driver: fork");
				return 2;
			}
			if (pid > 0)
				_exit(0);
			/* Bounded: 2 s for the parent's exit to be seen. */
			for (int t = 0; t < 200 && getppid() != 1; t++)
				sleep_ms(10);
			if (getppid() != 1) {
				printf("orphan not-init\n");
				return 0;
			}
			printf("orphan ok\n");
		} else if (strcmp(op, "fsize0") == 0) {
			struct rlimit rl = {0, 0};
			signal(SIGXFSZ, SIG_IGN);
			if (setrlimit(RLIMIT_FSIZE, &rl) < 0) {
				perror("driver: setrlimit");
				return 2;
			}
			printf("fsize0\n");
		} else if (strcmp(op, "forkremove") == 0) {
			/* A child made by fork() removes the lock its parent made. */
			i = need(argc, i, 1);
			fflush(stdout);
			pid_t pid = fork();
			if (pid < 0) {
				perror("driver: fork");
				return 2;
			}
			if (pid == 0)
				_exit(lockfile_remove(argv[i]) == 0 ? 0 : 1);
			int st;
			while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
				;
			printf("forkremove %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
		} else if (strcmp(op, "null") == 0) {
			/* Every call with NULL names (liblockfile crashes). The
			 * result is taken before errno is read. */
			errno = 0;
			rc = lockfile_create(NULL, 0, 0);
			report("create-null", rc, errno);
			errno = 0;
			rc = lockfile_remove(NULL);
			report("remove-null", rc, errno);
			errno = 0;
			rc = lockfile_touch(NULL);
			report("touch-null", rc, errno);
			errno = 0;
			rc = lockfile_check(NULL, 0);
			report("check-null", rc, errno);
			errno = 0;
			rc = maillock(NULL, 0);
			report("maillock-null", rc, errno);
		} else if (strcmp(op, "sleepms") == 0) {
			i = need(argc, i, 1);
			sleep_ms(atol(argv[i]));
			printf("sleepms\n");
		} else if (strcmp(op, "which") == 0) {
			FILE *maps = fopen("/proc/self/maps", "r");
			char line[4096];
			const char *found = "none";
			static char path[4096];
			while (maps && fgets(line, sizeof line, maps)) {
				char *p = strchr(line, '/');
				if (p && strstr(p, "/liblockfile.so")) {
					p[strcspn(p, "\n")] = 0;
					snprintf(path, sizeof path, "%s", p);
					found = path;
					break;
				}
			}
			if (maps)
				fclose(maps);
			printf("which %s\n", found);
		} else {
			fprintf(stderr, "driver: unknown op %s\n", op);
			return 2;
		}
		fflush(stdout);
	}
	return 0;
}
