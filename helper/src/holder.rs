//! Whether a lock belongs to a live helper session of the caller, so that
//! a by-name unlock or touch (`spoollock unlock --mailbox`) does not pull
//! the lock from under a running `spoollock run --mailbox`.
//!
//! A session lock names the helper that holds it (its pid, host, boot and
//! start time). It belongs to a live helper session when, on this host and
//! in this boot, that pid is a process with the start time the lock
//! records, whose command name is this helper's, and whose kernel-kept ids
//! say it is one: real uid the caller's, saved gid the helper's group (a
//! process gets a saved gid it is not a member of only from a setgid
//! program). The name alone could be chosen by any process
//! (`prctl(PR_SET_NAME)`), the ids cannot; the start time rules out a pid
//! that was reused. Read from `/proc/PID/stat` and `/proc/PID/status`,
//! which a process of the same uid may read even though the helper is not
//! dumpable.

use nix::unistd::Gid;
use spoollock_lockfile::{local_host, process_state, LockContent, ProcState};

/// A live helper session holding a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionHolder {
    /// The helper's pid (the one in the lock).
    pub helper_pid: u32,
    /// Its parent: the program the session serves.
    pub client_pid: Option<u32>,
}

/// The live helper session of the caller `uid` that the lock `content`
/// names, if any. `group` is the helper's group; `own_pid` this helper,
/// which never counts (its own session lock is handled as such).
pub fn live_session(
    content: &LockContent,
    uid: u32,
    group: Gid,
    own_pid: u32,
) -> Option<SessionHolder> {
    let local = local_host();
    let here = content.host.as_deref() == Some(local.host.as_str())
        && content.boot.is_some()
        && content.boot == local.boot;
    let pid = content.pid.filter(|&p| here && p > 1 && p != own_pid)?;
    let ProcState::Alive { start: Some(start) } = process_state(pid) else {
        return None;
    };
    if content.start != Some(start) {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let ids = Status::parse(&status)?;
    let is_helper = ids.name == own_name()?
        && ids.real_uid == uid
        && ids.saved_gid == group.as_raw()
        && ids.real_gid != group.as_raw();
    is_helper.then_some(SessionHolder {
        helper_pid: pid,
        client_pid: ids.ppid.filter(|&p| p > 0),
    })
}

/// This helper's command name (what `/proc/PID/status` shows for every
/// process running the same binary under the same name).
fn own_name() -> Option<String> {
    let comm = std::fs::read_to_string("/proc/self/comm").ok()?;
    Some(comm.trim_end_matches('\n').to_owned())
}

/// The lines of `/proc/PID/status` that matter here.
#[derive(Debug, PartialEq, Eq)]
struct Status {
    name: String,
    ppid: Option<u32>,
    real_uid: u32,
    real_gid: u32,
    saved_gid: u32,
}

impl Status {
    fn parse(text: &str) -> Option<Status> {
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .map(str::trim)
        };
        let ids = |key: &str| -> Option<Vec<u32>> {
            field(key)?
                .split_ascii_whitespace()
                .map(|v| v.parse().ok())
                .collect()
        };
        let uids = ids("Uid")?;
        let gids = ids("Gid")?;
        Some(Status {
            // The kernel escapes the name (`\n`, `\\`), so one line.
            name: field("Name")?.to_owned(),
            ppid: field("PPid").and_then(|p| p.parse().ok()),
            real_uid: *uids.first()?,
            real_gid: *gids.first()?,
            saved_gid: *gids.get(2)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        let text = "Name:\tspoollock-helpe\nUmask:\t0022\nState:\tS (sleeping)\n\
                    Tgid:\t77\nNgid:\t0\nPid:\t77\nPPid:\t76\nTracerPid:\t0\n\
                    Uid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t8\t1000\n";
        assert_eq!(
            Status::parse(text),
            Some(Status {
                name: "spoollock-helpe".into(),
                ppid: Some(76),
                real_uid: 1000,
                real_gid: 1000,
                saved_gid: 8,
            })
        );
        assert_eq!(Status::parse("Name:\tx\nUid:\t1\n"), None);
    }

    #[test]
    fn this_process_is_no_helper_session() {
        let me = std::process::id();
        let content = spoollock_lockfile::content_for(spoollock_lockfile::PidMode::Own);
        let uid = nix::unistd::getuid().as_raw();
        // Its own pid never counts; and seen from another pid, a process
        // whose saved gid is its real gid is no setgid helper.
        assert_eq!(live_session(&content, uid, Gid::from_raw(8), me), None);
        let gid = nix::unistd::getgid();
        assert_eq!(live_session(&content, uid, gid, 1), None);
    }
}
