//! The messages: the version handshake, requests and replies.

use serde::{Deserialize, Serialize};

use crate::error::Refusal;
use crate::{MAGIC, PROTOCOL_VERSION};

/// The client's first frame. Its layout is fixed for all versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`MAGIC`].
    pub magic: [u8; 8],
    /// The protocol version the client speaks.
    pub version: u32,
}

impl Hello {
    /// The hello of this crate's version.
    pub fn current() -> Hello {
        Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
        }
    }
}

/// The helper's answer to [`Hello`]. Its layout is fixed for all versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// Always [`MAGIC`].
    pub magic: [u8; 8],
    /// The protocol version the helper speaks.
    pub version: u32,
    /// False when the helper does not speak the client's version; it then
    /// exits without reading anything else.
    pub accepted: bool,
}

impl Welcome {
    /// The helper's answer to `hello`.
    pub fn answer(hello: &Hello) -> Welcome {
        Welcome {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            accepted: hello.magic == MAGIC && hello.version == PROTOCOL_VERSION,
        }
    }
}

/// Which configured spool directory a request means. The helper compares
/// this with its own list; it never turns request bytes into a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpoolSel {
    /// The first configured spool (`/var/mail`).
    Default,
    /// The spool at this index of [`SessionInfo::spools`].
    Index(u32),
    /// The configured spool whose path is exactly this string (clients
    /// send the canonical directory of the mailbox they were given).
    Path(String),
}

/// What a request is about: the caller's own lock in one spool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Which spool.
    pub spool: SpoolSel,
    /// The mailbox name the client means, if it wants it checked: the
    /// helper refuses any name but the caller's login. The lock name is
    /// always built from the login, never from this field.
    pub mailbox: Option<String>,
}

impl Target {
    /// The caller's mailbox in the default spool.
    pub fn default_spool() -> Target {
        Target {
            spool: SpoolSel::Default,
            mailbox: None,
        }
    }
}

/// How long a lock request may wait for a busy lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WaitSpec {
    /// Fail at once with [`Refusal::Busy`].
    NoWait,
    /// Give up with [`Refusal::Busy`] after this many waits.
    Retries(u32),
    /// Give up with [`Refusal::Timeout`] after this many milliseconds.
    TimeoutMs(u64),
    /// Wait until the lock is free or the client cancels.
    Forever,
}

/// Whether the lock belongs to the session or outlives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockMode {
    /// The lock names the helper's pid and is removed when the session
    /// ends; the helper refreshes it while it is held.
    Session,
    /// The lock stays after the helper exits (`spoollock lock` in a
    /// script) and is removed by a later [`Request::Unlock`]. It names
    /// `holder_pid` (which must be a live process) or no process at all,
    /// in which case only its age makes it stale.
    Detached {
        /// The process the lock names, if any.
        holder_pid: Option<u32>,
    },
}

/// Take the caller's lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRequest {
    /// Which lock: the caller's, in one spool.
    pub target: Target,
    /// How long to wait while it is busy.
    pub wait: WaitSpec,
    /// Whether it belongs to the session or outlives it.
    pub mode: LockMode,
    /// Locks older than this are stale; `None` for the default (300 s).
    /// Must lie within [`crate::limits`].
    pub stale_age_secs: Option<u32>,
}

/// A client's request after the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Take the lock.
    Lock(LockRequest),
    /// Refresh the lock: the session's lock if it is for this target,
    /// else a detached lock the caller owns.
    Touch(Target),
    /// Remove the lock: the session's lock if it is for this target,
    /// else a detached lock the caller owns.
    Unlock(Target),
    /// Report the lock's state without changing it.
    Check(Target),
    /// End the session (releasing a session lock) and exit.
    Bye,
    /// [`Request::Unlock`] by name, also when the lock belongs to another
    /// live helper session of the caller (`spoollock unlock --force`).
    ForceUnlock(Target),
    /// [`Request::Touch`] by name, also when the lock belongs to another
    /// live helper session of the caller (`spoollock touch --force`).
    ForceTouch(Target),
}

/// Who the helper decided the caller is, and what it can lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The caller's real uid.
    pub uid: u32,
    /// The login the password database gives for it.
    pub login: String,
    /// The helper's process id (named in session locks).
    pub helper_pid: u32,
    /// The configured spools, in [`SpoolSel::Index`] order.
    pub spools: Vec<String>,
}

/// A lock the helper took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// The spool directory.
    pub spool: String,
    /// The lock's file name in it (`<login>.lock`).
    pub name: String,
    /// The pid the lock names (none for a detached lock without holder).
    pub pid: Option<u32>,
    /// True for a detached lock.
    pub detached: bool,
    /// The stale age in force.
    pub stale_age_secs: u32,
}

/// What an existing lock says about its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderInfo {
    /// The pid the lock names, if any.
    pub pid: Option<u32>,
    /// The host the lock names, if any (NFS locks name theirs).
    pub host: Option<String>,
    /// Modification time, seconds since the epoch.
    pub mtime_secs: i64,
}

/// Why a lock is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StaleKind {
    /// Made on the helper's host in this boot, and its process no longer
    /// exists.
    DeadProcess,
    /// Made on the helper's host in this boot, and its pid now names
    /// another process (different start time).
    PidReused,
    /// Not refreshed for longer than the stale age, judged by the file
    /// system's clock.
    Age,
}

/// The state of a lock name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockStatus {
    /// No lock.
    Free,
    /// A valid lock.
    Held(HolderInfo),
    /// A lock the next lock request would break, and why.
    Stale(HolderInfo, StaleKind),
}

/// The helper's answer to a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Sent once, right after an accepted [`Welcome`].
    Ready(SessionInfo),
    /// Answer to [`Request::Lock`].
    Locked(LockInfo),
    /// Answer to [`Request::Touch`].
    Touched,
    /// Answer to [`Request::Unlock`].
    Unlocked,
    /// Answer to [`Request::Check`].
    Status(LockStatus),
    /// Answer to [`Request::Bye`].
    Bye,
    /// The request was refused or failed; nothing was changed.
    Error(Refusal),
}
