/*
 * lockfile.h - liblockfile's C interface, as implemented by spoollock
 * (spoollock-capi). Source compatible with liblockfile 1.17's header:
 * the same prototypes, return codes and flags; link with -llockfile.
 *
 * See spoollock-liblockfile(3) for what each call does and how it
 * differs from liblockfile's.
 */
#ifndef _LOCKFILE_H
#define _LOCKFILE_H

#ifdef __cplusplus
extern "C" {
#endif

/* Create LOCKFILE, trying up to RETRIES more times; FLAGS: L_PID, L_PPID. */
int lockfile_create(const char *lockfile, int retries, int flags);
/* Remove LOCKFILE: 0 (also when there is none), or -1 and errno. */
int lockfile_remove(const char *lockfile);
/* Refresh LOCKFILE's time: 0, or -1 and errno. */
int lockfile_touch(const char *lockfile);
/* 0 if a valid LOCKFILE exists, -1 if not. FLAGS: L_PID, L_PPID. */
int lockfile_check(const char *lockfile, int flags);

/* Return codes of lockfile_create() and maillock(). */
#define L_SUCCESS	0	/* the lock was created */
#define L_NAMELEN	1	/* the name is too long */
#define L_TMPLOCK	2	/* the temporary file could not be created */
#define L_TMPWRITE	3	/* the lock's content could not be written */
#define L_MAXTRYS	4	/* still locked after every retry */
#define L_ERROR		5	/* another error: see errno */
#define L_MANLOCK	6	/* (mandatory locks: never returned) */
#define L_ORPHANED	7	/* L_PPID, and the parent is gone */
#define L_RMSTALE	8	/* a stale lock could not be removed */

/* Flags of lockfile_create() and lockfile_check(). */
#define L_PID		16	/* the lock names this process */
#define L_PPID		32	/* the lock names the parent process */

/* Extra arguments of lockfile_create2(). */
struct __lockargs {
	int interval;		/* seconds between retries, with L_INTERVAL */
};
#define __L_INTERVAL	64	/* retry every args->interval seconds */

#ifdef LOCKFILE_EXPERIMENTAL
#define lockargs	__lockargs
#define L_INTERVAL	__L_INTERVAL
int lockfile_create2(const char *lockfile, int retries, int flags,
		     struct lockargs *args, int args_sz);
#endif

#ifdef __cplusplus
}
#endif

#endif /* _LOCKFILE_H */
