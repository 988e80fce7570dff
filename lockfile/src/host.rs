//! Who we are (host, boot, process start time) and whether a process that a
//! lock names still exists. Read once from fixed `/proc` paths and cached.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

use crate::content::{clean_token, sanitize_host, LockContent};

const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// This machine's identity as written into locks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalHost {
    /// Sanitized host name.
    pub host: String,
    /// Kernel boot id (`/proc/sys/kernel/random/boot_id`), if readable.
    pub boot: Option<String>,
}

/// The cached identity of this host.
pub fn local_host() -> &'static LocalHost {
    static HOST: OnceLock<LocalHost> = OnceLock::new();
    HOST.get_or_init(|| {
        let host = nix::unistd::gethostname()
            .map(|h| sanitize_host(h.as_encoded_bytes()))
            .unwrap_or_else(|_| sanitize_host(b""));
        let boot = std::fs::read(BOOT_ID)
            .ok()
            .and_then(|raw| clean_token(raw.trim_ascii()));
        LocalHost { host, boot }
    })
}

/// Which process a new lock names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PidMode {
    /// The calling process (the default; the lock dies with it).
    #[default]
    Own,
    /// The calling process's parent, for a short-lived tool that locks on
    /// behalf of a shell script (`dotlockfile -p`).
    Parent,
    /// A specific process.
    Pid(u32),
    /// No process: `0`, so only the lock's age can make it stale
    /// (locks meant to outlive their creator).
    None,
}

/// The content spoollock writes for a lock naming `mode`'s process.
pub fn content_for(mode: PidMode) -> LockContent {
    content_as(mode, std::process::id())
}

/// [`content_for`] in the process `me` (the caller's own pid, read once
/// on the lock path).
pub(crate) fn content_as(mode: PidMode, me: u32) -> LockContent {
    let local = local_host();
    let pid = match mode {
        PidMode::Own => Some(me),
        PidMode::Parent => u32::try_from(nix::unistd::getppid().as_raw()).ok(),
        PidMode::Pid(pid) => Some(pid),
        PidMode::None => None,
    };
    let start = match (mode, pid) {
        (PidMode::Own, _) => own_start_time(me),
        (_, Some(pid)) => match process_state(pid) {
            ProcState::Alive { start } => start,
            _ => None,
        },
        _ => None,
    };
    LockContent {
        pid,
        host: Some(local.host.clone()),
        boot: local.boot.clone(),
        start,
        append: None,
    }
}

/// This process's start time, cached per pid: a child after `fork()`
/// inherits the cache but has a start time of its own, and a lock naming
/// the child's pid with the parent's start time would look like a reused
/// pid, stale at once, and be broken while the child holds it.
fn own_start_time(pid: u32) -> Option<u64> {
    // Two atomics rather than a lock, which a fork could inherit held. The
    // start is stored before the pid that vouches for it; threads racing
    // to fill the cache store the same values.
    static PID: AtomicU32 = AtomicU32::new(0);
    static START: AtomicU64 = AtomicU64::new(NO_START);
    const NO_START: u64 = u64::MAX;
    if PID.load(Ordering::Acquire) == pid {
        let start = START.load(Ordering::Relaxed);
        return (start != NO_START).then_some(start);
    }
    let start = match process_state(pid) {
        ProcState::Alive { start } => start,
        ProcState::Gone => None,
    };
    START.store(start.unwrap_or(NO_START), Ordering::Relaxed);
    PID.store(pid, Ordering::Release);
    start
}

/// What this host knows about a process id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcState {
    /// No such process.
    Gone,
    /// The process exists; `start` is its start time when `/proc` told us.
    Alive {
        /// Start time in clock ticks since boot (`/proc/PID/stat` field
        /// 22), when it could be read.
        start: Option<u64>,
    },
}

/// Look a process up by pid: `/proc/PID/stat` for its start time. A pid
/// missing from `/proc` is confirmed with `kill(pid, 0)`: with `/proc`
/// mounted `hidepid=invisible`, other users' processes (and a setgid
/// helper's) are hidden, not gone, and only `ESRCH` proves a death.
pub fn process_state(pid: u32) -> ProcState {
    let Ok(raw) = i32::try_from(pid) else {
        return ProcState::Gone;
    };
    match std::fs::read(format!("/proc/{raw}/stat")) {
        Ok(stat) => ProcState::Alive {
            start: parse_start_time(&stat),
        },
        Err(_) => match kill(Pid::from_raw(raw), None) {
            Err(Errno::ESRCH) => ProcState::Gone,
            _ => ProcState::Alive { start: None },
        },
    }
}

/// Field 22 (`starttime`) of `/proc/PID/stat`. The command name (field 2)
/// may hold spaces and parentheses, so count fields after the last `)`.
pub(crate) fn parse_start_time(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    // After ")" come field 3 (state) onwards; starttime is field 22.
    rest.split_ascii_whitespace().nth(22 - 3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_survives_hostile_comm() {
        let stat = b"123 (a) b ) c) S 1 1 1 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 55555 1000 10";
        assert_eq!(parse_start_time(stat), Some(55555));
        assert_eq!(parse_start_time(b"garbage"), None);
    }

    #[test]
    fn own_process_is_alive_and_dead_pid_is_gone() {
        assert!(matches!(
            process_state(std::process::id()),
            ProcState::Alive { start: Some(_) }
        ));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert_eq!(process_state(pid), ProcState::Gone);
    }
}
