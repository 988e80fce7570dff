/*
 * maillock.h - liblockfile's mailbox locking calls, as implemented by
 * spoollock (spoollock-capi). Source compatible with liblockfile 1.17's
 * header; link with -llockfile. See spoollock-liblockfile(3).
 */
#ifndef _MAILLOCK_H
#define _MAILLOCK_H

#ifdef __cplusplus
extern "C" {
#endif

#ifndef _PATH_MAILDIR
#include <paths.h>
#endif

/* The spool maillock() locks in: "/var/mail/". */
#define MAILDIR		(_PATH_MAILDIR "/")

/* Lock the mailbox of NAME (MAILDIR NAME ".lock"); returns an L_* code. */
int maillock(const char *name, int retries);
/* Refresh the lock maillock() took. */
void touchlock();
/* Remove the lock maillock() took. */
void mailunlock();

#ifdef __cplusplus
}
#endif

#include <lockfile.h>

#endif /* _MAILLOCK_H */
