//! liblockfile's conventions in spoollock's terms, shared by the
//! liblockfile-compatible C library (`spoollock-capi`) and
//! `spoollock dotlockfile`: its return codes and flags, how long its
//! retries may wait, and which code and `errno` each spoollock error is.
//!
//! See lockfile_create(3) and dotlockfile(1) of liblockfile 1.17; the
//! differences are listed in spoollock-capi's manual page.

use std::time::Duration;

use nix::errno::Errno;
use spoollock_lockfile::{LockError, Op, Wait};

use crate::error::{Error, Refusal};

/// Lock created.
pub const L_SUCCESS: i32 = 0;
/// Name too long.
pub const L_NAMELEN: i32 = 1;
/// Cannot create the temporary file (directory missing or not writable).
pub const L_TMPLOCK: i32 = 2;
/// Cannot write the lock's content.
pub const L_TMPWRITE: i32 = 3;
/// The lock stayed busy for every retry.
pub const L_MAXTRYS: i32 = 4;
/// Any other error: see `errno`.
pub const L_ERROR: i32 = 5;
/// Mandatory locks (never returned).
pub const L_MANLOCK: i32 = 6;
/// `L_PPID` was asked and the parent is gone (we were reparented to init).
pub const L_ORPHANED: i32 = 7;
/// A stale lock could not be removed.
pub const L_RMSTALE: i32 = 8;

/// Flag: the lock names this process, and pids in locks are checked.
pub const L_PID: i32 = 16;
/// Flag: the lock names the parent process, and pids in locks are checked.
pub const L_PPID: i32 = 32;
/// Flag (`lockfile_create2`): a fixed interval between retries.
pub const L_INTERVAL: i32 = 64;

/// liblockfile's longest sleep between two tries.
const MAX_SLEEP: u64 = 60;
/// liblockfile's first sleep, and the step it grows by.
const STEP: u64 = 5;

/// The total time liblockfile sleeps over `retries` retries: 5, 10, 15,
/// ... up to 60 s each, or `interval` seconds each when it is given
/// (`L_INTERVAL`, `dotlockfile -i`).
pub fn retry_budget(retries: u32, interval: Option<u32>) -> Duration {
    let n = u64::from(retries);
    let secs = match interval {
        Some(each) => n.saturating_mul(u64::from(each)),
        None => {
            // 5 + 10 + ... while below 60 s, then 60 s each.
            let growing = n.min(MAX_SLEEP / STEP);
            let flat = n - growing;
            STEP * growing * (growing + 1) / 2 + MAX_SLEEP.saturating_mul(flat)
        }
    };
    Duration::from_secs(secs)
}

/// How spoollock waits for what liblockfile would do in `retries` retries:
/// `None` when liblockfile would not try at all (a negative count; it
/// then fails with `L_MAXTRYS`), no wait for 0, and otherwise spoollock's
/// own waiting (inotify, millisecond backoff) until the time liblockfile's
/// sleeps would have taken at most. With an interval of 0 (liblockfile
/// spins), `retries` retries with spoollock's backoff (a few milliseconds
/// each, at most 100 ms).
pub fn wait_for(retries: i32, interval: Option<u32>) -> Option<Wait> {
    let retries = u32::try_from(retries).ok()?;
    if retries == 0 {
        return Some(Wait::NoWait);
    }
    if interval == Some(0) {
        return Some(Wait::Retries(retries));
    }
    Some(Wait::timeout(retry_budget(retries, interval)))
}

/// `lockfile_create`'s return code and `errno` for an error, as liblockfile
/// gives them where it has the case:
///
/// | spoollock error | code | errno |
/// |---|---|---|
/// | busy, timed out | `L_MAXTRYS` | `EAGAIN` |
/// | lock name longer than a file name may be | `L_NAMELEN` | `ENAMETOOLONG` |
/// | directory missing, not searchable or not writable; no helper for a mail-group spool, or one refusing a lock that is not the caller's own | `L_TMPLOCK` | from the system (`EACCES` from the helper) |
/// | lock content not written | `L_TMPWRITE` | from the system |
/// | stale lock not removable | `L_RMSTALE` | from the system |
/// | a symlink, directory, large file, ... at the lock name | `L_ERROR` | `EEXIST` |
/// | anything else | `L_ERROR` | from the system, `EINVAL` for a bad name |
pub fn create_code(e: &Error) -> (i32, Errno) {
    match e {
        Error::Lock(e) => match e {
            LockError::Busy { .. } | LockError::Timeout { .. } => (L_MAXTRYS, Errno::EAGAIN),
            LockError::NameTooLong => (L_NAMELEN, Errno::ENAMETOOLONG),
            LockError::InvalidName => (L_ERROR, Errno::EINVAL),
            LockError::Permission {
                op: Op::OpenDir | Op::CreateTemp | Op::Link,
                errno,
            }
            | LockError::Io {
                op: Op::OpenDir | Op::CreateTemp,
                errno,
            } => (L_TMPLOCK, *errno),
            LockError::TempWrite { errno } => (L_TMPWRITE, *errno),
            LockError::StaleNotRemoved { errno } => (L_RMSTALE, *errno),
            LockError::NotRegularFile | LockError::ForeignLock { .. } => (L_ERROR, Errno::EEXIST),
            LockError::Vetoed => (L_ERROR, Errno::EIO),
            LockError::NotOurs => (L_ERROR, Errno::EPERM),
            LockError::Interrupted => (L_ERROR, Errno::EINTR),
            LockError::Permission { errno, .. } | LockError::Io { errno, .. } => (L_ERROR, *errno),
            // `#[non_exhaustive]`: a kind added later is liblockfile's
            // catch-all until it is given its own code here.
            _ => (L_ERROR, Errno::EIO),
        },
        // The helper is missing, unusable, of another group than the
        // spool, refused to start or refused the request (not the caller's
        // own mailbox lock, a login that cannot name a mailbox, ...):
        // liblockfile's answer when it may not create the file there.
        Error::Helper(_)
        | Error::HelperExited { .. }
        | Error::SpoolGroup { .. }
        | Error::UnusableLogin { .. } => (L_TMPLOCK, Errno::EACCES),
        Error::Refused(refusal) => match refusal {
            Refusal::HeldBySession { .. } => (L_ERROR, Errno::EBUSY),
            Refusal::LockTooLarge { .. } => (L_ERROR, Errno::EEXIST),
            _ => (L_TMPLOCK, Errno::EACCES),
        },
        Error::NotALock { .. } => (L_ERROR, Errno::EEXIST),
        Error::BadPath(_) => (L_ERROR, Errno::EINVAL),
        Error::NoMailbox(_) => (L_ERROR, Errno::ENOENT),
        Error::MailboxReplaced(_) => (L_ERROR, Errno::ESTALE),
        Error::MailboxNotOpen(_) => (L_ERROR, Errno::EBADF),
        Error::Internal(_) => (L_ERROR, Errno::EIO),
        Error::Io(e) => (L_ERROR, io_errno(e)),
    }
}

/// The `errno` of `lockfile_remove`, `lockfile_touch` and `lockfile_check`
/// when they fail (they return -1): the system's, `EPERM` for a lock that
/// is not the caller's (another user's, or a successor's after ours was
/// broken) or not a lock at all (a symlink, a directory, a large file),
/// `EBUSY` for a lock a live helper session holds (a running
/// `spoollock run --mailbox`), `EACCES` when the helper refuses.
pub fn call_errno(e: &Error) -> Errno {
    match e {
        Error::Lock(
            LockError::NotOurs | LockError::NotRegularFile | LockError::ForeignLock { .. },
        )
        | Error::NotALock { .. }
        | Error::Refused(Refusal::NotOurs | Refusal::LockTooLarge { .. }) => Errno::EPERM,
        other => create_code(other).1,
    }
}

fn io_errno(e: &std::io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use spoollock_lockfile::Op;

    #[test]
    fn budgets_follow_liblockfile_sleeps() {
        let secs = |n, i| retry_budget(n, i).as_secs();
        assert_eq!(secs(0, None), 0);
        assert_eq!(secs(1, None), 5);
        assert_eq!(secs(5, None), 5 + 10 + 15 + 20 + 25);
        assert_eq!(secs(12, None), 390);
        assert_eq!(secs(13, None), 450);
        assert_eq!(secs(9, None), 225); // lockfile-progs: "225 seconds"
        assert_eq!(secs(3, Some(2)), 6);
        assert_eq!(secs(u32::MAX, None), 390 + 60 * (u64::from(u32::MAX) - 12));
    }

    #[test]
    fn waits_keep_the_count_semantics() {
        assert_eq!(wait_for(-1, None), None);
        assert_eq!(wait_for(0, None), Some(Wait::NoWait));
        assert_eq!(wait_for(0, Some(7)), Some(Wait::NoWait));
        assert_eq!(wait_for(4, Some(0)), Some(Wait::Retries(4)));
        assert!(matches!(wait_for(1, None), Some(Wait::Until(_))));
    }

    #[test]
    fn codes() {
        let lock = |e| create_code(&Error::Lock(e));
        assert_eq!(lock(LockError::Busy { holder: None }).0, L_MAXTRYS);
        assert_eq!(
            lock(LockError::Io {
                op: Op::OpenDir,
                errno: Errno::ENOENT
            }),
            (L_TMPLOCK, Errno::ENOENT)
        );
        assert_eq!(
            lock(LockError::Permission {
                op: Op::CreateTemp,
                errno: Errno::EACCES
            }),
            (L_TMPLOCK, Errno::EACCES)
        );
        assert_eq!(
            lock(LockError::NameTooLong),
            (L_NAMELEN, Errno::ENAMETOOLONG)
        );
        assert_eq!(lock(LockError::NotRegularFile), (L_ERROR, Errno::EEXIST));
        assert_eq!(call_errno(&Error::Lock(LockError::NotOurs)), Errno::EPERM);
        assert_eq!(
            create_code(&Error::Helper(crate::HelperError::Closed)),
            (L_TMPLOCK, Errno::EACCES)
        );
    }
}
