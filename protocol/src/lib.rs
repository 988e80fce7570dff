//! The wire protocol between a spoollock client and `spoollock-helper`, the
//! small setgid program that creates `<spool>/<login>.lock` on spools only
//! the mail group may write.
//!
//! # Transport
//!
//! The client spawns the helper with two pipes: it writes requests into the
//! helper's standard input and reads replies from its standard output.
//! Standard error carries human-readable diagnostics only. Every message is
//! one frame (see [`codec`]): a 4-byte big-endian payload length, checked
//! against [`codec::MAX_FRAME`] before anything is read or decoded, then a
//! bincode payload (fixed-width integers, bounded, no trailing bytes).
//!
//! # Session
//!
//! ```text
//! client                                  helper
//!   Hello { magic, version }      ->
//!                                 <-      Welcome { magic, version, accepted }
//!        (not accepted: the helper exits with exit::REFUSED)
//!                                 <-      Reply::Ready(SessionInfo)
//!                                         or Reply::Error(_) and exit
//!   Request::Lock(LockRequest)    ->
//!                                 <-      Reply::Locked(LockInfo) | Reply::Error(_)
//!   Request::Touch(Target)        ->
//!                                 <-      Reply::Touched | Reply::Error(_)
//!   Request::Check(Target)        ->
//!                                 <-      Reply::Status(LockStatus) | Reply::Error(_)
//!   Request::Unlock(Target)       ->
//!                                 <-      Reply::Unlocked | Reply::Error(_)
//!   Request::ForceTouch(Target)   ->      (as Touch and Unlock, also on a
//!   Request::ForceUnlock(Target)  ->       live helper session's lock)
//!   Request::Bye                  ->
//!                                 <-      Reply::Bye, and the helper exits 0
//! ```
//!
//! Exactly one reply answers each request, in order. A session holds at
//! most one session lock; it lives as long as the client's end of the pipe
//! is open: on `Bye`, end of file or a client crash the helper removes it
//! and exits. While a lock request waits, any byte from the client (or the
//! pipe closing) cancels the wait: the helper answers the lock request with
//! [`Refusal::Cancelled`] and then reads what the client sent. A detached
//! lock ([`LockMode::Detached`]) outlives the session, as `dotlockfile -l`
//! does; later sessions touch or remove it by name ([`Request::Touch`],
//! [`Request::Unlock`]), which the helper allows only when the lock file is
//! owned by the caller's uid.
//!
//! A malformed frame ends the session: the helper answers
//! [`Refusal::BadFrame`] (when the pipe still works) and exits with
//! [`exit::REFUSED`]. So does a session that has had
//! [`limits::MAX_REFUSED_PER_SESSION`] requests refused, or asks for more
//! than [`limits::MAX_GRANTED_PER_SESSION`] locks: the helper answers
//! [`Refusal::SessionLimit`] (to the request that went over, or
//! unprompted after the last refusal) and exits.
//!
//! By-name [`Request::Touch`] and [`Request::Unlock`] refuse a lock that
//! belongs to another live helper session of the caller
//! ([`Refusal::HeldBySession`]); [`Request::ForceTouch`] and
//! [`Request::ForceUnlock`] act on it anyway.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;
pub mod convert;
mod error;
pub mod login;
mod message;

pub use codec::{read_frame, write_frame, CodecError, Frame, MAX_FRAME};
pub use error::{
    ConfigProblem, ConfigSyntax, ConfigUnsafe, FrameProblem, MailboxProblem, Refusal, SpoolProblem,
};
pub use login::login_usable;
pub use message::{
    Hello, HolderInfo, LockInfo, LockMode, LockRequest, LockStatus, Reply, Request, SessionInfo,
    SpoolSel, StaleKind, Target, WaitSpec, Welcome,
};
/// The file system step a [`Refusal::Permission`] or [`Refusal::Io`]
/// names: the lockfile crate's own enum, sent as it is.
pub use spoollock_lockfile::Op;

/// The protocol version this crate speaks. Bumped on any change to the
/// messages after [`Hello`]/[`Welcome`], whose layout never changes.
///
/// 2: [`Request::ForceUnlock`] and [`Request::ForceTouch`];
/// [`Refusal::HeldBySession`], [`Refusal::LockTooLarge`] and
/// [`Refusal::SessionLimit`].
///
/// 3: [`Refusal::ForeignLockFile`], [`Refusal::LockNameIsLogin`] and
/// [`Refusal::AuditUnavailable`].
///
/// 4: [`Refusal::BadConfig`] carries a typed [`ConfigProblem`] instead of
/// a text; `Refusal::BadRequest`, which the helper never sent, is gone
/// (the refusals after it moved down one index).
///
/// There is no negotiation: the client and the helper are built and
/// shipped together, and the helper accepts exactly its own version.
pub const PROTOCOL_VERSION: u32 = 4;

/// The first bytes of every [`Hello`] and [`Welcome`]: a stray program on
/// the other end of the pipe is told apart from a version mismatch.
pub const MAGIC: [u8; 8] = *b"SPLKHLP\0";

/// Built-in locations and names, shared by the helper and its clients so
/// they cannot disagree. Fixed at build time; a packager may override the
/// helper path, config path and group through environment variables read
/// by the compiler (`option_env!`), never at run time.
pub mod paths {
    /// Where the setgid helper is installed.
    pub const HELPER_PATH: &str = match option_env!("SPOOLLOCK_HELPER_PATH") {
        Some(p) => p,
        None => "/usr/libexec/spoollock/spoollock-helper",
    };

    /// The optional, root-owned helper configuration naming more spools.
    pub const CONFIG_PATH: &str = match option_env!("SPOOLLOCK_HELPER_CONFIG") {
        Some(p) => p,
        None => "/etc/spoollock/helper.conf",
    };

    /// The group the helper is installed setgid to; spools must belong to it.
    pub const HELPER_GROUP: &str = match option_env!("SPOOLLOCK_HELPER_GROUP") {
        Some(g) => g,
        None => "mail",
    };

    /// Spool directories the helper always knows, in order; index 0 is the
    /// default spool ([`crate::SpoolSel::Default`]).
    pub const BUILTIN_SPOOLS: &[&str] = &["/var/mail", "/var/spool/mail"];

    /// Where the helper's audit records go (the local syslog socket).
    pub const SYSLOG_SOCKET: &str = "/dev/log";
}

/// The helper's exit statuses.
pub mod exit {
    /// The session ended normally (`Bye`, or end of file from the client).
    pub const OK: i32 = 0;
    /// A request or frame was refused and the session ended.
    pub const REFUSED: i32 = 1;
    /// Bad invocation: `argc == 0`, unexpected arguments.
    pub const USAGE: i32 = 2;
    /// The process environment is unusable: standard descriptors closed or
    /// not pipes, no syslog socket, resource limits too small.
    pub const ENVIRONMENT: i32 = 3;
    /// The helper does not run with its privileged group (setgid bit
    /// lost, `nosuid` mount, `no_new_privs`) and refuses to pretend.
    pub const NOT_PRIVILEGED: i32 = 4;
    /// An internal error (a privilege change that failed to take effect).
    pub const INTERNAL: i32 = 5;
}

/// Limits the helper enforces on requests.
pub mod limits {
    /// Refused requests one session may make: the one that reaches this
    /// count ends the session, with one final audit record that counts
    /// them ([`crate::Refusal::SessionLimit`]), so that no session can
    /// flood the audit trail.
    pub const MAX_REFUSED_PER_SESSION: u32 = 16;
    /// Locks one session may be granted: a lock request beyond this count
    /// ends the session the same way (every grant and release is a record
    /// too).
    pub const MAX_GRANTED_PER_SESSION: u32 = 16;
    /// The smallest stale age a client may ask for: shorter ages would let
    /// a caller break valid locks (say, a delivery agent's) early.
    pub const MIN_STALE_AGE_SECS: u32 = 300;
    /// The largest stale age a client may ask for.
    pub const MAX_STALE_AGE_SECS: u32 = 86_400;
    /// The stale age used when a request names none (liblockfile's).
    pub const DEFAULT_STALE_AGE_SECS: u32 = 300;
    /// The longest mailbox name or spool path a request may carry.
    pub const MAX_NAME: usize = 1024;
}
