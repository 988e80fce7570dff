//! Lockfile errors as the refusals the client is told.

use nix::errno::Errno;
use nix::sys::stat::fstatat;
use spoollock_lockfile::{LockDir, LockError, MAX_CONTENT};
use spoollock_protocol::{HolderInfo, Refusal};

use crate::policy;

/// The refusal a lockfile error becomes.
pub fn refusal_of(e: LockError) -> Refusal {
    match e {
        LockError::Busy { holder } => Refusal::Busy {
            holder: holder.as_deref().map(HolderInfo::from),
        },
        LockError::Timeout { holder } => Refusal::Timeout {
            holder: holder.as_deref().map(HolderInfo::from),
        },
        LockError::NameTooLong | LockError::InvalidName => Refusal::UnusableLogin,
        LockError::Permission { op, errno } => Refusal::Permission {
            op,
            errno: errno as i32,
        },
        LockError::TempWrite { errno } => Refusal::TempWrite {
            errno: errno as i32,
        },
        LockError::NotRegularFile => Refusal::LockNotRegular,
        LockError::NotOurs => Refusal::NotOurs,
        LockError::StaleNotRemoved { errno } => Refusal::StaleNotRemoved {
            errno: errno as i32,
        },
        LockError::Interrupted => Refusal::Cancelled,
        LockError::Io { op, errno } => Refusal::Io {
            op,
            errno: errno as i32,
        },
        LockError::ForeignLock { owner } => foreign(owner),
        LockError::Vetoed => Refusal::AuditUnavailable,
        // `LockError` is `#[non_exhaustive]` for the library's users; the
        // helper is built with the lockfile crate of its own workspace, so
        // a kind it does not know cannot reach it. Should one, it is a
        // failure of the lock's file system calls, not a refusal of policy.
        _ => Refusal::Io {
            op: spoollock_lockfile::Op::Stat,
            errno: Errno::EIO as i32,
        },
    }
}

/// [`refusal_of`], telling apart what sits at the lock name when the lock
/// crate says it is no lock: a symlink or another kind of file, or a
/// regular file too large to be a lock (and whose).
pub(super) fn not_a_lock(dir: &LockDir, name: &str, e: LockError) -> Refusal {
    if e != LockError::NotRegularFile {
        return refusal_of(e);
    }
    match fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st)
            if st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFREG
                && st.st_size > MAX_CONTENT as i64 =>
        {
            Refusal::LockTooLarge {
                size: u64::try_from(st.st_size).unwrap_or(0),
                owner: st.st_uid,
                max: MAX_CONTENT as u32,
            }
        }
        _ => Refusal::LockNotRegular,
    }
}

/// The refusal for a file of `owner` at the lock name.
pub(super) fn foreign(owner: u32) -> Refusal {
    Refusal::ForeignLockFile {
        owner_uid: owner,
        owner_login: policy::printable_login(owner),
    }
}

pub(super) fn io_errno(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(Errno::EIO as i32))
}
