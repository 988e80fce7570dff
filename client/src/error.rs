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
    /// The spool needs the setgid helper, and it is missing, unusable, or
    /// the conversation with it failed.
    Helper(HelperError),
    /// A broken invariant of this library (a bug): says which.
    Internal(&'static str),
    /// `append` on a mailbox that is not open (only a dotlock was taken
    /// on a mailbox that did not exist).
    MailboxNotOpen(PathBuf),
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

/// What went wrong with the setgid helper, when a spool needs it.
#[derive(Debug)]
#[non_exhaustive]
pub enum HelperError {
    /// It is not installed where this library looks for it.
    NotInstalled {
        path: PathBuf,
        error: std::io::Error,
    },
    /// It is installed, but not as a setgid regular file.
    NotSetgid { path: PathBuf },
    /// It could not be started.
    Spawn {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Writing to it or reading from it failed (`doing` says which).
    Pipe {
        doing: &'static str,
        error: std::io::Error,
    },
    /// A frame could not be encoded or decoded.
    Codec(spoollock_protocol::CodecError),
    /// It speaks another protocol version.
    Version { helper: u32, library: u32 },
    /// The session with it was already closed.
    Closed,
    /// It answered something the protocol does not allow at that point.
    UnexpectedReply(String),
    /// On a helper spool only the caller's own mailbox lock can be made.
    NotOwnMailbox { lock: PathBuf, login: String },
}

impl HelperError {
    /// True when the helper is missing or not installed as it must be: an
    /// administrator's problem, not a failure of the moment.
    pub fn is_installation(&self) -> bool {
        matches!(
            self,
            HelperError::NotInstalled { .. } | HelperError::NotSetgid { .. }
        )
    }
}

impl fmt::Display for HelperError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HelperError::NotInstalled { path, error } => write!(
                f,
                "this spool needs {}: {error}; install spoollock-helper setgid mail",
                path.display()
            ),
            HelperError::NotSetgid { path } => write!(
                f,
                "{} is not setgid; install spoollock-helper setgid mail (chgrp mail, chmod 2755)",
                path.display()
            ),
            HelperError::Spawn { path, error } => {
                write!(f, "cannot run {}: {error}", path.display())
            }
            HelperError::Pipe { doing, error } => write!(f, "{doing} the helper: {error}"),
            HelperError::Codec(e) => write!(f, "helper protocol: {e}"),
            HelperError::Version { helper, library } => write!(
                f,
                "helper speaks protocol version {helper}, this library {library}"
            ),
            HelperError::Closed => f.write_str("helper session already closed"),
            HelperError::UnexpectedReply(reply) => {
                write!(f, "unexpected reply from the helper: {reply}")
            }
            HelperError::NotOwnMailbox { lock, login } => write!(
                f,
                "{}: on this spool only your own mailbox lock ({login}.lock) can be made",
                lock.display()
            ),
        }
    }
}

impl From<HelperError> for Error {
    fn from(e: HelperError) -> Self {
        Error::Helper(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Lock(e) => e.fmt(f),
            Error::BadPath(why) => write!(f, "bad path: {why}"),
            Error::NoMailbox(why) => write!(f, "cannot find your mailbox: {why}"),
            Error::Helper(e) => e.fmt(f),
            Error::Internal(what) => write!(f, "internal error (a bug in spoollock): {what}"),
            Error::MailboxNotOpen(path) => write!(f, "{}: mailbox not open", path.display()),
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

#[cfg(test)]
mod helper_error_tests {
    use super::*;

    /// Installation problems are the administrator's (the command exits
    /// 4); failures of the moment are not, and every kind says what it is.
    #[test]
    fn helper_errors_say_what_and_whose() {
        let path = PathBuf::from("/usr/libexec/spoollock/spoollock-helper");
        let missing = HelperError::NotInstalled {
            path: path.clone(),
            error: std::io::Error::from_raw_os_error(nix::libc::ENOENT),
        };
        assert!(missing.is_installation());
        assert!(missing
            .to_string()
            .contains("install spoollock-helper setgid mail"));
        let not_setgid = HelperError::NotSetgid { path };
        assert!(not_setgid.is_installation());
        assert!(not_setgid.to_string().contains("chmod 2755"));
        let version = HelperError::Version {
            helper: 2,
            library: 3,
        };
        assert!(!version.is_installation());
        assert_eq!(
            version.to_string(),
            "helper speaks protocol version 2, this library 3"
        );
        assert!(!HelperError::Closed.is_installation());
        let e: Error = HelperError::Closed.into();
        assert!(matches!(e, Error::Helper(HelperError::Closed)));
        assert!(Error::Internal("x")
            .to_string()
            .contains("a bug in spoollock"));
    }
}
