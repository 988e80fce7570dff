//! What can go wrong, as types, and how each maps to liblockfile's codes.

use std::fmt;

use nix::errno::Errno;

use crate::content::Holder;

/// The file system operation that failed, for error messages and audits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Opening the directory the lock lives in.
    OpenDir,
    /// Creating the unique temporary file.
    CreateTemp,
    /// Hard-linking the temporary file to the lock name.
    Link,
    /// Looking at the lock or temporary file (`fstatat`/`fstat`).
    Stat,
    /// Reading an existing lock's content.
    ReadLock,
    /// Removing the lock or a temporary file.
    Unlink,
    /// Moving a stale lock aside to break it.
    Rename,
    /// Refreshing the lock's modification time.
    Touch,
    /// Waiting for the lock (inotify, poll).
    Wait,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::OpenDir => "open lock directory",
            Op::CreateTemp => "create temporary file",
            Op::Link => "link lock file",
            Op::Stat => "stat lock file",
            Op::ReadLock => "read lock file",
            Op::Unlink => "remove lock file",
            Op::Rename => "move stale lock aside",
            Op::Touch => "refresh lock file",
            Op::Wait => "wait for lock",
        })
    }
}

/// Every way acquiring, checking, refreshing or releasing a dotlock can fail.
///
/// Mapping to liblockfile's return codes (see [`LockError::liblockfile_code`]):
///
/// | variant                      | liblockfile   |
/// |------------------------------|---------------|
/// | `Busy`, `Timeout`            | `L_MAXTRYS` 4 |
/// | `NameTooLong`                | `L_NAMELEN` 1 |
/// | `Permission` on create/link  | `L_TMPLOCK` 2 |
/// | `TempWrite`                  | `L_TMPWRITE` 3|
/// | `StaleNotRemoved`            | `L_RMSTALE` 8 |
/// | everything else              | `L_ERROR` 5   |
///
/// liblockfile's `L_MANLOCK` (6) and `L_ORPHANED` (7) have no equivalent:
/// spoollock never sets mandatory locks and does not watch its parent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockError {
    /// The lock is held and the caller asked not to wait, or the retry count
    /// ran out. `holder` is what the lock file said, when it could be read.
    Busy {
        /// Who holds it, as the lock file says.
        holder: Option<Box<Holder>>,
    },
    /// The lock was still held when the caller's deadline passed.
    Timeout {
        /// Who holds it, as the lock file says.
        holder: Option<Box<Holder>>,
    },
    /// The lock or temporary name does not fit in a file name (`NAME_MAX`).
    NameTooLong,
    /// The name is not a plain file name (empty, `.`/`..`, contains `/` or NUL).
    InvalidName,
    /// The directory does not let us create or remove files.
    Permission {
        /// The call that was refused.
        op: Op,
        /// `EACCES`, `EPERM` or `EROFS`.
        errno: Errno,
    },
    /// The lock content could not be written completely
    /// (`RLIMIT_FSIZE`, `ENOSPC`, `EDQUOT`, short write).
    TempWrite {
        /// Why the write stopped (`EFBIG` for `RLIMIT_FSIZE`, `EIO` for a
        /// short write).
        errno: Errno,
    },
    /// Something other than a lock sits at the lock name: a symlink, a
    /// directory, a fifo, or a regular file larger than any lock content
    /// (such as the mailbox of a user whose login ends in `.lock`);
    /// spoollock never follows, replaces or removes it.
    NotRegularFile,
    /// The lock we hold was removed or replaced by someone else
    /// (broken as stale, or removed by hand); nothing was changed.
    NotOurs,
    /// A stale lock was found but could not be removed.
    StaleNotRemoved {
        /// Why the rename or unlink failed.
        errno: Errno,
    },
    /// The wait was cut short because the interrupt descriptor became
    /// readable (the helper's client went away).
    Interrupted,
    /// Any other system call failure.
    Io {
        /// The call that failed.
        op: Op,
        /// Its error.
        errno: Errno,
    },
    /// The file at the lock name belongs to uid `owner` and is not taken
    /// for a lock here: an owner [`crate::Owners::Only`] does not list, or
    /// (with [`crate::Owners::Any`]) another user's file the caller cannot
    /// read, which would otherwise be judged stale by its age alone. It is
    /// never renamed, removed or waited for; nothing was changed.
    ForeignLock {
        /// The file's owner.
        owner: u32,
    },
    /// A change was cancelled before it was made because its announcement
    /// failed ([`crate::Journal`] said no); nothing was changed.
    Vetoed,
}

impl LockError {
    /// The liblockfile return code (`L_*` in `lockfile.h`) that means the same.
    pub fn liblockfile_code(&self) -> i32 {
        match self {
            LockError::Busy { .. } | LockError::Timeout { .. } => 4,
            LockError::NameTooLong => 1,
            LockError::Permission {
                op: Op::CreateTemp | Op::Link,
                ..
            } => 2,
            LockError::TempWrite { .. } => 3,
            LockError::StaleNotRemoved { .. } => 8,
            _ => 5,
        }
    }

    /// The holder named in a busy or timeout error.
    pub fn holder(&self) -> Option<&Holder> {
        match self {
            LockError::Busy { holder } | LockError::Timeout { holder } => holder.as_deref(),
            _ => None,
        }
    }

    /// True for the "someone else has it" outcomes.
    pub fn is_busy(&self) -> bool {
        matches!(self, LockError::Busy { .. } | LockError::Timeout { .. })
    }

    /// Classify an errno from a system call on the lock directory.
    pub(crate) fn from_errno(op: Op, errno: Errno) -> Self {
        match errno {
            Errno::EACCES | Errno::EPERM | Errno::EROFS => LockError::Permission { op, errno },
            Errno::ENAMETOOLONG => LockError::NameTooLong,
            Errno::ELOOP => LockError::NotRegularFile,
            _ => LockError::Io { op, errno },
        }
    }
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::Busy { holder: Some(h) } => write!(f, "lock is held ({h})"),
            LockError::Busy { holder: None } => f.write_str("lock is held"),
            LockError::Timeout { holder: Some(h) } => {
                write!(f, "timed out waiting for lock ({h})")
            }
            LockError::Timeout { holder: None } => f.write_str("timed out waiting for lock"),
            LockError::NameTooLong => f.write_str("lock file name too long"),
            LockError::InvalidName => f.write_str("invalid lock file name"),
            LockError::Permission { op, errno } => {
                write!(f, "permission denied: cannot {op} ({})", errno.desc())
            }
            LockError::TempWrite { errno } => {
                write!(f, "cannot write lock content: {}", errno.desc())
            }
            LockError::NotRegularFile => {
                f.write_str("lock name is not a regular file or not a lock (symlink, directory, or too large); refusing")
            }
            LockError::NotOurs => f.write_str("lock is no longer ours (removed or replaced)"),
            LockError::StaleNotRemoved { errno } => {
                write!(f, "cannot remove stale lock: {}", errno.desc())
            }
            LockError::Interrupted => f.write_str("wait for lock interrupted"),
            LockError::Io { op, errno } => write!(f, "cannot {op}: {}", errno.desc()),
            LockError::ForeignLock { owner } => write!(
                f,
                "the file at the lock name belongs to uid {owner} and is not taken for a lock \
                 here (another user's file that cannot be read, or an owner not allowed); \
                 refusing to remove it or wait for it"
            ),
            LockError::Vetoed => {
                f.write_str("the change was cancelled: it could not be announced first")
            }
        }
    }
}

impl std::error::Error for LockError {}

/// Shorthand used throughout the crate.
pub type Result<T, E = LockError> = std::result::Result<T, E>;
