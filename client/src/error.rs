//! The library's error type.

use std::fmt;

pub use spoollock_lockfile::LockError;

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

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
