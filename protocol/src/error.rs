//! Every reason the helper refuses or fails a request, as types.

use std::fmt;

use serde::{Deserialize, Serialize};

use spoollock_lockfile::Op;

use crate::message::HolderInfo;

/// What was wrong with a frame the helper received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FrameProblem {
    /// The length prefix exceeds [`crate::MAX_FRAME`].
    Oversize,
    /// The pipe closed in the middle of a frame.
    Truncated,
    /// A zero-length frame.
    Empty,
    /// The payload is not a valid message.
    Garbage,
    /// The payload names a message kind that does not exist.
    UnknownVariant,
    /// The payload has bytes after a complete message.
    TrailingBytes,
    /// The first frame was not a [`crate::Hello`] with the right magic.
    BadHello,
}

impl fmt::Display for FrameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrameProblem::Oversize => "frame longer than the maximum",
            FrameProblem::Truncated => "frame cut short",
            FrameProblem::Empty => "empty frame",
            FrameProblem::Garbage => "frame does not decode",
            FrameProblem::UnknownVariant => "unknown message kind",
            FrameProblem::TrailingBytes => "trailing bytes after the message",
            FrameProblem::BadHello => "not a spoollock hello",
        })
    }
}

/// Why a spool directory is not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpoolProblem {
    /// It does not exist.
    Missing,
    /// It (or a component of its path) is a symbolic link.
    Symlink,
    /// It (or a component of its path) is not a directory.
    NotDirectory,
    /// It is not owned by root.
    NotRootOwned {
        /// Its owner.
        uid: u32,
    },
    /// Its group is not the helper's group.
    WrongGroup {
        /// Its group.
        gid: u32,
    },
    /// Others may write it.
    WorldWritable,
    /// The helper's group may not write it (the helper would be useless).
    NotGroupWritable,
    /// A directory above it is not owned by root or is writable by others
    /// than root, so it could be swapped.
    UnsafeAncestor,
    /// Opening or inspecting it failed with this errno.
    Io {
        /// The `errno` of the failed call.
        errno: i32,
    },
}

impl fmt::Display for SpoolProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpoolProblem::Missing => f.write_str("spool directory does not exist"),
            SpoolProblem::Symlink => f.write_str("spool path contains a symbolic link"),
            SpoolProblem::NotDirectory => f.write_str("spool path is not a directory"),
            SpoolProblem::NotRootOwned { uid } => {
                write!(f, "spool directory is owned by uid {uid}, not root")
            }
            SpoolProblem::WrongGroup { gid } => {
                write!(
                    f,
                    "spool directory group is gid {gid}, not the helper's group"
                )
            }
            SpoolProblem::WorldWritable => f.write_str("spool directory is world-writable"),
            SpoolProblem::NotGroupWritable => {
                f.write_str("spool directory is not writable by the helper's group")
            }
            SpoolProblem::UnsafeAncestor => f.write_str(
                "a directory above the spool is not root-owned or is writable by non-root",
            ),
            SpoolProblem::Io { errno } => write!(f, "cannot open spool directory (errno {errno})"),
        }
    }
}

/// Why the caller's mailbox disqualifies the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MailboxProblem {
    /// The mailbox name is a symbolic link.
    Symlink,
    /// The mailbox is not a regular file.
    NotRegular,
    /// The mailbox belongs to another user.
    NotOwned {
        /// Its owner.
        uid: u32,
    },
    /// The mailbox has more than one hard link.
    HardLinked {
        /// Its link count.
        nlink: u64,
    },
    /// Inspecting it failed with this errno.
    Io {
        /// The `errno` of the failed call.
        errno: i32,
    },
}

impl fmt::Display for MailboxProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MailboxProblem::Symlink => f.write_str("mailbox is a symbolic link"),
            MailboxProblem::NotRegular => f.write_str("mailbox is not a regular file"),
            MailboxProblem::NotOwned { uid } => {
                write!(f, "mailbox is owned by uid {uid}, not the caller")
            }
            MailboxProblem::HardLinked { nlink } => {
                write!(f, "mailbox has {nlink} hard links")
            }
            MailboxProblem::Io { errno } => write!(f, "cannot inspect mailbox (errno {errno})"),
        }
    }
}

/// The wire form of [`Op`], the lockfile crate's failing file system
/// step, used in [`Refusal::Permission`] and [`Refusal::Io`]: one enum on
/// both sides, with its variant order (their indexes on the wire) pinned
/// here. A variant added to [`Op`] fails to compile until it is added
/// here, at the end, with a new [`crate::PROTOCOL_VERSION`].
#[derive(Serialize, Deserialize)]
#[serde(remote = "Op")]
enum OpWire {
    OpenDir,
    CreateTemp,
    Link,
    Stat,
    ReadLock,
    Unlink,
    Rename,
    Touch,
    Wait,
}

/// What the helper says it could not do, in a refusal's message.
fn op_text(op: Op) -> &'static str {
    match op {
        Op::OpenDir => "open the spool",
        Op::CreateTemp => "create the temporary file",
        Op::Link => "link the lock file",
        Op::Stat => "stat the lock file",
        Op::ReadLock => "read the lock file",
        Op::Unlink => "remove the lock file",
        Op::Rename => "move a stale lock aside",
        Op::Touch => "refresh the lock file",
        Op::Wait => "wait for the lock",
    }
}

/// Why the helper's configuration file
/// ([`crate::paths::CONFIG_PATH`]) is not trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigUnsafe {
    /// A directory above it is not owned by root or is writable by others
    /// than root.
    UnsafeAncestor,
    /// Its path contains a symbolic link.
    Symlink,
    /// A component of its path is not a directory.
    NotDirectory,
    /// The built-in path is not absolute and normalized.
    BadPath,
    /// It is not a regular file.
    NotRegular,
    /// It is not owned by root, or others than root may write it.
    NotRootOwned,
}

impl fmt::Display for ConfigUnsafe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConfigUnsafe::UnsafeAncestor => {
                "a directory above it is not root-owned or is writable by non-root"
            }
            ConfigUnsafe::Symlink => "path contains a symlink",
            ConfigUnsafe::NotDirectory => "path is not a directory",
            ConfigUnsafe::BadPath => "built-in path is invalid",
            ConfigUnsafe::NotRegular => "is not a regular file",
            ConfigUnsafe::NotRootOwned => "is not owned by root or is writable by non-root",
        })
    }
}

/// What is wrong with a line of the helper's configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigSyntax {
    /// The file is not UTF-8 (reported for line 0).
    NotUtf8,
    /// A `spool` line's path is not absolute and normalized.
    BadSpoolPath,
    /// A `spool` line without exactly one path.
    ExpectedSpoolPath,
    /// A directive other than `spool`.
    UnknownDirective,
}

impl fmt::Display for ConfigSyntax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConfigSyntax::NotUtf8 => "not UTF-8",
            ConfigSyntax::BadSpoolPath => "spool must be an absolute, normalized path",
            ConfigSyntax::ExpectedSpoolPath => "expected: spool /absolute/path",
            ConfigSyntax::UnknownDirective => "unknown directive",
        })
    }
}

/// Why the helper refused its configuration file
/// ([`Refusal::BadConfig`]). The file's path is the build-time
/// [`crate::paths::CONFIG_PATH`], the same for client and helper, so it is
/// not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigProblem {
    /// The file, or a directory above it, is not trusted.
    Unsafe(ConfigUnsafe),
    /// Opening or reading it failed with this errno.
    Io {
        /// The `errno` of the failed call.
        errno: i32,
    },
    /// A line is not a valid directive.
    Syntax {
        /// The line, counted from 1 (0 for the whole file).
        line: u32,
        /// What is wrong with it.
        problem: ConfigSyntax,
    },
    /// More spools than the helper knows, or a file over its size limit.
    TooLarge,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = crate::paths::CONFIG_PATH;
        match self {
            ConfigProblem::Unsafe(why) => write!(f, "{path}: {why}"),
            ConfigProblem::Io { errno } => {
                write!(f, "{path}: {}", std::io::Error::from_raw_os_error(*errno))
            }
            ConfigProblem::Syntax { line, problem } => write!(f, "{path}:{line}: {problem}"),
            ConfigProblem::TooLarge => write!(f, "{path}: too large or too many spools"),
        }
    }
}

/// Why a request was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    // -- the session ---------------------------------------------------
    /// A malformed frame; the session ends.
    BadFrame(FrameProblem),
    /// The client speaks another protocol version (reported through
    /// [`crate::Welcome`]; this value appears in audits and client errors).
    VersionMismatch {
        /// The version the client's hello named.
        client: u32,
        /// The helper's, [`crate::PROTOCOL_VERSION`].
        helper: u32,
    },
    /// A lock request while the session already holds a lock.
    AlreadyLocked,
    /// Touch or unlock with no lock to act on.
    NotLocked,
    /// The lock wait was cancelled by the client (it sent another frame
    /// or closed the pipe).
    Cancelled,
    /// The stale age asked for is outside the allowed range.
    StaleAgeOutOfRange {
        /// [`crate::limits::MIN_STALE_AGE_SECS`].
        min_secs: u32,
        /// [`crate::limits::MAX_STALE_AGE_SECS`].
        max_secs: u32,
    },
    /// A detached lock's holder pid does not name a live process.
    BadHolderPid {
        /// The pid the request named.
        pid: u32,
    },

    // -- who the caller is ----------------------------------------------
    /// The caller's real uid has no password database entry.
    UnknownUser {
        /// The caller's real uid.
        uid: u32,
    },
    /// The password database could not be read (errno).
    UserDatabase {
        /// The `errno` of the failed lookup.
        errno: i32,
    },
    /// The caller's login cannot be a mailbox name.
    UnusableLogin,
    /// The request names a mailbox that is not the caller's own.
    NotYourMailbox,

    // -- where ----------------------------------------------------------
    /// The spool is not one of the configured spools.
    UnknownSpool,
    /// The configured spool is unsafe or unusable.
    Spool(SpoolProblem),
    /// The helper's configuration file is unsafe or invalid (changed in
    /// protocol version 4 from a text to a [`ConfigProblem`]).
    BadConfig(ConfigProblem),
    /// The caller's mailbox disqualifies the lock.
    Mailbox(MailboxProblem),

    // -- the lock -------------------------------------------------------
    /// The lock is held by someone else (no wait, or retries exhausted).
    Busy {
        /// Who holds it, when its content said.
        holder: Option<HolderInfo>,
    },
    /// The lock was still held at the client's deadline.
    Timeout {
        /// Who held it, when its content said.
        holder: Option<HolderInfo>,
    },
    /// Something other than a regular file sits at the lock name.
    LockNotRegular,
    /// The lock is not the caller's (owned by another uid), or was removed
    /// or replaced; nothing was changed.
    NotOurs,
    /// The session's lock was removed or replaced by someone else.
    LockLost,
    /// The file system refused the change.
    Permission {
        /// The step that failed.
        #[serde(with = "OpWire")]
        op: Op,
        /// Its `errno`.
        errno: i32,
    },
    /// The lock content could not be written (RLIMIT_FSIZE, ENOSPC, EDQUOT).
    TempWrite {
        /// The `errno` of the failed write.
        errno: i32,
    },
    /// A stale lock could not be removed.
    StaleNotRemoved {
        /// The `errno` of the failed move or removal.
        errno: i32,
    },
    /// Any other system call failure.
    Io {
        /// The step that failed.
        #[serde(with = "OpWire")]
        op: Op,
        /// Its `errno`.
        errno: i32,
    },

    // -- added in protocol version 2 ------------------------------------
    /// A by-name touch or unlock of a lock that belongs to another live
    /// helper session of the caller (`spoollock run --mailbox` holding
    /// it): the lock goes when that session ends. Forced requests
    /// ([`crate::Request::ForceUnlock`]) act on it anyway.
    HeldBySession {
        /// The helper serving that session (the pid in the lock).
        helper_pid: u32,
        /// That helper's parent: the program that holds the lock through
        /// it, when `/proc` said.
        client_pid: Option<u32>,
    },
    /// A regular file larger than any lock content sits at the lock name:
    /// it is not a lock (a user whose login is the mailbox's name plus
    /// `.lock` has a mailbox there, or a program wrote something else), so
    /// it is never judged stale, broken, refreshed or removed.
    LockTooLarge {
        /// Its size in bytes.
        size: u64,
        /// Its owner.
        owner: u32,
        /// The largest lock content spoollock reads.
        max: u32,
    },
    /// The session made too many requests that were refused, or asked for
    /// too many locks; it is ended (see [`crate::limits`]).
    SessionLimit {
        /// Requests refused in the session.
        refused: u32,
        /// Locks granted in the session.
        granted: u32,
    },

    // -- added in protocol version 3 ------------------------------------
    /// The file at the lock name belongs to another user (neither the
    /// caller nor root): it is not the caller's lock, and the helper never
    /// renames, removes, refreshes or waits for it. `owner_login` is the
    /// owner's login in the password database, when it has a printable one.
    ForeignLockFile {
        /// The file's owner.
        owner_uid: u32,
        /// Its login, when it has a printable one.
        owner_login: Option<String>,
    },
    /// A user named `<login>.lock` exists: the caller's lock name is that
    /// user's mailbox, so the caller's mailbox is never locked.
    LockNameIsLogin {
        /// That user's login (`<caller's login>.lock`).
        login: String,
    },
    /// The record of intent for a change to the spool could not be sent to
    /// syslog; the change was not made.
    AuditUnavailable,
}

impl Refusal {
    /// True for refusals of policy (who may lock what, malformed input),
    /// audited at `LOG_AUTHPRIV`; false for outcomes of an allowed
    /// operation (busy, timeout, I/O), audited at `LOG_MAIL`.
    pub fn is_policy(&self) -> bool {
        matches!(
            self,
            Refusal::BadFrame(_)
                | Refusal::VersionMismatch { .. }
                | Refusal::StaleAgeOutOfRange { .. }
                | Refusal::BadHolderPid { .. }
                | Refusal::UnknownUser { .. }
                | Refusal::UnusableLogin
                | Refusal::NotYourMailbox
                | Refusal::UnknownSpool
                | Refusal::Spool(_)
                | Refusal::BadConfig(_)
                | Refusal::Mailbox(_)
                | Refusal::LockNotRegular
                | Refusal::LockTooLarge { .. }
                | Refusal::NotOurs
                | Refusal::SessionLimit { .. }
                | Refusal::ForeignLockFile { .. }
                | Refusal::LockNameIsLogin { .. }
        )
    }

    /// A short stable keyword for audits and scripts.
    pub fn keyword(&self) -> &'static str {
        match self {
            Refusal::BadFrame(_) => "bad-frame",
            Refusal::VersionMismatch { .. } => "version-mismatch",
            Refusal::AlreadyLocked => "already-locked",
            Refusal::NotLocked => "not-locked",
            Refusal::Cancelled => "cancelled",
            Refusal::StaleAgeOutOfRange { .. } => "stale-age-out-of-range",
            Refusal::BadHolderPid { .. } => "bad-holder-pid",
            Refusal::UnknownUser { .. } => "unknown-user",
            Refusal::UserDatabase { .. } => "user-database",
            Refusal::UnusableLogin => "unusable-login",
            Refusal::NotYourMailbox => "not-your-mailbox",
            Refusal::UnknownSpool => "unknown-spool",
            Refusal::Spool(_) => "unsafe-spool",
            Refusal::BadConfig(_) => "bad-config",
            Refusal::Mailbox(_) => "bad-mailbox",
            Refusal::Busy { .. } => "busy",
            Refusal::Timeout { .. } => "timeout",
            Refusal::LockNotRegular => "lock-not-regular",
            Refusal::NotOurs => "not-ours",
            Refusal::LockLost => "lock-lost",
            Refusal::Permission { .. } => "permission",
            Refusal::TempWrite { .. } => "temp-write",
            Refusal::StaleNotRemoved { .. } => "stale-not-removed",
            Refusal::Io { .. } => "io",
            Refusal::HeldBySession { .. } => "held-by-session",
            Refusal::LockTooLarge { .. } => "lock-too-large",
            Refusal::SessionLimit { .. } => "session-limit",
            Refusal::ForeignLockFile { .. } => "foreign-lock-file",
            Refusal::LockNameIsLogin { .. } => "lock-name-is-a-login",
            Refusal::AuditUnavailable => "audit-unavailable",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::BadFrame(p) => write!(f, "malformed request: {p}"),
            Refusal::VersionMismatch { client, helper } => write!(
                f,
                "protocol version mismatch: client speaks {client}, helper speaks {helper}"
            ),
            Refusal::AlreadyLocked => f.write_str("this session already holds a lock"),
            Refusal::NotLocked => f.write_str("no lock held"),
            Refusal::Cancelled => f.write_str("lock wait cancelled by the client"),
            Refusal::StaleAgeOutOfRange { min_secs, max_secs } => write!(
                f,
                "stale age must be between {min_secs} and {max_secs} seconds"
            ),
            Refusal::BadHolderPid { pid } => write!(f, "holder pid {pid} is not a live process"),
            Refusal::UnknownUser { uid } => {
                write!(f, "uid {uid} has no entry in the password database")
            }
            Refusal::UserDatabase { errno } => {
                write!(f, "cannot read the password database (errno {errno})")
            }
            Refusal::UnusableLogin => f.write_str("login name cannot be used as a mailbox name"),
            Refusal::NotYourMailbox => {
                f.write_str("only the caller's own mailbox (named after the login) may be locked")
            }
            Refusal::UnknownSpool => f.write_str("spool directory is not a configured spool"),
            Refusal::Spool(p) => write!(f, "unsafe spool: {p}"),
            Refusal::BadConfig(why) => write!(f, "helper configuration refused: {why}"),
            Refusal::Mailbox(p) => write!(f, "refusing to lock: {p}"),
            Refusal::Busy { holder } => {
                f.write_str("lock is held")?;
                write_holder(f, holder)
            }
            Refusal::Timeout { holder } => {
                f.write_str("timed out waiting for lock")?;
                write_holder(f, holder)
            }
            Refusal::LockNotRegular => {
                f.write_str("lock name is not a regular file (symlink or other); refusing")
            }
            Refusal::NotOurs => f.write_str("lock does not belong to the caller; nothing changed"),
            Refusal::LockLost => f.write_str("the session's lock was removed or replaced"),
            Refusal::Permission { op, errno } => {
                write!(
                    f,
                    "permission denied: cannot {} (errno {errno})",
                    op_text(*op)
                )
            }
            Refusal::TempWrite { errno } => {
                write!(f, "cannot write lock content (errno {errno})")
            }
            Refusal::StaleNotRemoved { errno } => {
                write!(f, "cannot remove stale lock (errno {errno})")
            }
            Refusal::Io { op, errno } => write!(f, "cannot {} (errno {errno})", op_text(*op)),
            Refusal::HeldBySession {
                helper_pid,
                client_pid,
            } => {
                write!(
                    f,
                    "the lock belongs to a live spoollock-helper session (helper pid {helper_pid}"
                )?;
                if let Some(client) = client_pid {
                    write!(f, ", serving pid {client}")?;
                }
                f.write_str(
                    "), such as a running `spoollock run --mailbox`; it is removed when that \
                     session ends. Nothing changed; force it only if that program must lose its lock",
                )
            }
            Refusal::LockTooLarge { size, owner, max } => write!(
                f,
                "the lock name holds a regular file of {size} bytes owned by uid {owner}, larger \
                 than any lock file ({max} bytes at most): it is not a lock (perhaps the mailbox \
                 of a user whose login ends in .lock), and spoollock never breaks or removes it. \
                 Nothing changed; the administrator must look at it and move it away"
            ),
            Refusal::SessionLimit { refused, granted } => write!(
                f,
                "session ended by the helper: {refused} requests refused and {granted} locks \
                 granted in one session (at most {} and {})",
                crate::limits::MAX_REFUSED_PER_SESSION,
                crate::limits::MAX_GRANTED_PER_SESSION
            ),
            Refusal::ForeignLockFile {
                owner_uid,
                owner_login,
            } => {
                f.write_str("the file at your lock name belongs to ")?;
                match owner_login {
                    Some(login) => write!(f, "user {login} (uid {owner_uid})")?,
                    None => write!(f, "uid {owner_uid}")?,
                }
                f.write_str(
                    ", not to you or root: it is not your lock, and the helper never removes, \
                     refreshes or waits for it; ask the administrator to remove it",
                )
            }
            Refusal::LockNameIsLogin { login } => write!(
                f,
                "refusing to lock: a user named {login} exists, and its mailbox is your lock's \
                 name; ask the administrator to rename that account"
            ),
            Refusal::AuditUnavailable => {
                f.write_str("the audit record could not be sent to syslog; nothing was changed")
            }
        }
    }
}

fn write_holder(f: &mut fmt::Formatter<'_>, holder: &Option<HolderInfo>) -> fmt::Result {
    match holder {
        Some(HolderInfo {
            pid: Some(pid),
            host,
            ..
        }) => {
            write!(f, " by pid {pid}")?;
            if let Some(host) = host {
                write!(f, " on {host}")?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

impl std::error::Error for Refusal {}
