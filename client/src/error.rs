//! The library's error type.

use std::fmt;
use std::path::PathBuf;
use std::process::ExitStatus;

pub use spoollock_lockfile::LockError;
pub use spoollock_protocol::Refusal;

/// Everything that can go wrong when locking through this library.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The dotlock operation failed (busy, timeout, permission, I/O...).
    Lock(LockError),
    /// The path has no file name, or no parent directory to lock in.
    BadPath(String),
    /// The caller's own mailbox could not be determined.
    NoMailbox(String),
    /// The spool needs the setgid helper, and it is missing or unusable.
    Helper(String),
    /// The mailbox was replaced or removed again and again while it was
    /// being locked, or after it was locked (by a program that ignores
    /// both locks): nothing was written.
    MailboxReplaced(std::path::PathBuf),
    /// Any other I/O failure (running a command, opening a mailbox).
    Io(std::io::Error),
    /// The helper refused the request (a reason the direct path has no
    /// error for).
    Refused(Refusal),
    /// The helper stopped before answering: it refused to start (no syslog
    /// socket, not installed setgid, ...), and `reason` is what it said on
    /// its standard error, or it died.
    HelperExited {
        /// The helper's own explanation (its standard error), if any.
        reason: String,
        /// How it ended.
        status: ExitStatus,
    },
    /// The directory is writable by a group, but the installed helper is
    /// setgid to another one: neither the caller nor the helper may lock
    /// there.
    SpoolGroup {
        dir: PathBuf,
        dir_gid: u32,
        helper: PathBuf,
        helper_gid: u32,
    },
    /// The caller's login cannot name a mailbox (see
    /// [`spoollock_protocol::login_usable`]).
    UnusableLogin { login: String },
    /// A regular file larger than any lock file sits at the lock name: it
    /// is not a lock, and is never broken, refreshed or removed.
    NotALock {
        path: PathBuf,
        size: u64,
        owner: u32,
    },
}

impl Error {
    /// True when the lock is held by someone else (busy or timed out).
    pub fn is_busy(&self) -> bool {
        matches!(self, Error::Lock(e) if e.is_busy())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Lock(e) => e.fmt(f),
            Error::BadPath(why) => write!(f, "bad path: {why}"),
            Error::NoMailbox(why) => write!(f, "cannot find your mailbox: {why}"),
            Error::Helper(why) => f.write_str(why),
            Error::MailboxReplaced(path) => write!(
                f,
                "{}: the mailbox was replaced or removed under the locks; not written",
                path.display()
            ),
            Error::Io(e) => e.fmt(f),
            Error::Refused(refusal) => write!(f, "spoollock-helper refused: {refusal}"),
            Error::HelperExited { reason, status } if reason.is_empty() => {
                write!(f, "spoollock-helper ended without answering ({status})")
            }
            Error::HelperExited { reason, .. } => f.write_str(reason),
            Error::SpoolGroup {
                dir,
                dir_gid,
                helper,
                helper_gid,
            } => write!(
                f,
                "cannot lock in {dir}: you may not write it; it is writable by group {dg}, \
                 but {helper} is setgid to group {hg}, so it does not serve this directory \
                 either. The helper's group and the spool's must be the same (see \
                 spoollock-helper(8))",
                dir = dir.display(),
                dg = group_name(*dir_gid),
                helper = helper.display(),
                hg = group_name(*helper_gid),
            ),
            Error::UnusableLogin { login } => write!(
                f,
                "your login {login:?} cannot name a mailbox (it must be printable ASCII, \
                 without '/', not start with '.' or '-', not end in \".lock\")"
            ),
            Error::NotALock { path, size, owner } => write!(
                f,
                "{path}: a regular file of {size} bytes owned by uid {owner}, larger than any \
                 lock file ({max} bytes at most), sits at the lock name: it is not a lock \
                 (perhaps the mailbox of a user whose login ends in .lock), and spoollock never \
                 breaks or removes it. Nothing changed; have it looked at and moved away (in a \
                 mail spool, by the administrator)",
                path = path.display(),
                max = spoollock_lockfile::MAX_CONTENT,
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Lock(e) => Some(e),
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<LockError> for Error {
    fn from(e: LockError) -> Self {
        Error::Lock(e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

/// A group's name and gid, or its gid alone.
fn group_name(gid: u32) -> String {
    match nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)) {
        Ok(Some(g)) => format!("{} (gid {gid})", g.name),
        _ => format!("gid {gid}"),
    }
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
