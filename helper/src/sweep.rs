//! Removing the caller's leftovers. A helper killed (SIGKILL, or SIGSTOP
//! then SIGKILL) at the wrong moment leaves, where temporary files are
//! named (NFS), its temporary file `.lk<pid>.<random>.<host>`; and
//! everywhere, a lock it was moving aside (a break's or its release's) at
//! its session's own aside name `.lk<pid>.<random>.<host>.stale` (see
//! `lockfile::private_aside_name`; older versions used such names too, or
//! one reserved name per caller, which sessions shared). The caller cannot
//! remove either: the spool is not theirs to write. Each session sweeps a
//! spool once, before its first lock attempt there, and again after an
//! attempt that broke a stale lock (see `Session::lock`), removing such
//! files when they are provably dead:
//!
//! - the name has the lockfile crate's temporary form and names this host
//!   (`lockfile::temp_name_owner`, beside the code that writes it);
//! - the file is a regular file with at most two links, owned by the caller
//!   (a cheap `fstatat`, first: another user's files cost no more than
//!   that);
//! - the process it names no longer exists.
//!
//! Files of other users, of live processes or of other hosts are never
//! touched. Each removal is announced first (`intend`): when that fails
//! the sweep stops.

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};
use spoollock_lockfile::{
    local_host, process_state, temp_name_owner, with_raised, LockDir, Privilege, ProcState,
};

use crate::trusted::is_kind;

/// How many directory entries one sweep looks at, at most.
const MAX_SCAN: usize = 100_000;

/// What a sweep did: the names removed, and those it should have removed
/// but could not (with why; `.` when the spool could not be listed;
/// `ECANCELED` when the removal could not be announced).
#[derive(Debug, Default)]
pub struct Swept {
    pub removed: Vec<String>,
    pub failed: Vec<(String, Errno)>,
}

/// One step of a sweep, as its journal hears of it, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The file is about to be removed. The journal answers whether the
    /// removal was announced; if not, the sweep stops there.
    Intent,
    /// It was removed.
    Removed,
    /// It was gone when the removal came (another session of the caller
    /// swept it).
    Vanished,
    /// Its removal failed.
    Failed(Errno),
    /// The spool (name `.`) or the file could not be looked at; nothing
    /// was attempted.
    Unlisted(Errno),
}

/// Told of each step of a sweep, in order; says whether an intent was
/// announced.
type SweepJournal<'a> = &'a mut dyn FnMut(&str, Step) -> bool;

/// Remove the caller's dead temporary files from `dir`, telling `journal`
/// of each step as it happens (`journal(name, Step::Intent)` must say true
/// before each removal).
pub fn sweep(
    dir: &LockDir,
    caller_uid: u32,
    privilege: &dyn Privilege,
    journal: SweepJournal<'_>,
) -> Swept {
    let mut swept = Swept::default();
    for (name, pid) in candidates(dir, journal, &mut swept) {
        match is_dead_and_callers(dir, &name, pid, caller_uid) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(errno) => {
                unlisted(journal, &mut swept, &name, errno);
                continue;
            }
        }
        if !journal(&name, Step::Intent) {
            swept.failed.push((name, Errno::ECANCELED));
            break;
        }
        let step = remove(dir, &name, privilege);
        journal(&name, step);
        match step {
            Step::Removed => swept.removed.push(name),
            Step::Failed(errno) => swept.failed.push((name, errno)),
            _ => {}
        }
    }
    swept
}

/// A name or the spool (`.`) that could not be looked at.
fn unlisted(journal: SweepJournal<'_>, swept: &mut Swept, name: &str, errno: Errno) {
    journal(name, Step::Unlisted(errno));
    swept.failed.push((name.to_owned(), errno));
}

/// The names in `dir` of this host's temporary form, with the pid each
/// names, other than this process's (at most [`MAX_SCAN`] entries read).
fn candidates(dir: &LockDir, journal: SweepJournal<'_>, swept: &mut Swept) -> Vec<(String, u32)> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut listing = match Dir::openat(dir, ".", flags, Mode::empty()) {
        Ok(listing) => listing,
        Err(errno) => {
            unlisted(journal, swept, ".", errno);
            return Vec::new();
        }
    };
    let host = &local_host().host;
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in listing.iter().take(MAX_SCAN) {
        let entry = match entry {
            Ok(entry) => entry,
            Err(errno) => {
                unlisted(journal, swept, ".", errno);
                break;
            }
        };
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        match temp_name_owner(name, host) {
            Some(pid) if pid != me => found.push((name.to_owned(), pid)),
            _ => {}
        }
    }
    found
}

/// Whether `name` is a file the caller may have us remove: a regular file
/// of theirs with at most two links, named after a process that is gone.
/// `Ok(false)` also when it is gone already (another session of the
/// caller swept it).
fn is_dead_and_callers(
    dir: &LockDir,
    name: &str,
    pid: u32,
    caller_uid: u32,
) -> Result<bool, Errno> {
    // The owner first: a stat is cheap, a process check reads /proc.
    let st = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(false),
        Err(errno) => return Err(errno),
    };
    // Two links at most: a dead session's aside file can still be named by
    // a dead helper's temporary file (NFS) or by the lock name (put back by
    // `link`, then killed before the aside name was dropped). Removing a
    // name never touches the file's other names, and no live process
    // counts the links of a file a dead one made.
    if !is_kind(&st, SFlag::S_IFREG) || st.st_uid != caller_uid || st.st_nlink > 2 {
        return Ok(false);
    }
    Ok(process_state(pid) == ProcState::Gone)
}

/// Unlink `name` with the group raised (the lockfile crate's bracket:
/// lowered again on every way out, including a raise that failed
/// half-way).
fn remove(dir: &LockDir, name: &str, privilege: &dyn Privilege) -> Step {
    match with_raised(Some(privilege), || {
        unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)
    }) {
        Ok(()) => Step::Removed,
        Err(Errno::ENOENT) => Step::Vanished,
        Err(errno) => Step::Failed(errno),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A privilege that can never be raised.
    #[derive(Debug)]
    struct Unraisable;

    impl Privilege for Unraisable {
        fn raise(&self) -> nix::Result<()> {
            Err(Errno::EPERM)
        }
        fn lower(&self) {}
    }

    /// A privilege that changes nothing.
    #[derive(Debug)]
    struct Unprivileged;

    impl Privilege for Unprivileged {
        fn raise(&self) -> nix::Result<()> {
            Ok(())
        }
        fn lower(&self) {}
    }

    #[test]
    fn a_dead_file_that_cannot_be_removed_is_reported() {
        let dir = std::env::temp_dir().join(format!("spoollock-sweep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let host = &local_host().host;
        let name = format!(
            ".lk{dead:x}.0123456789abcdef.{}",
            &host[..host.len().min(32)]
        );
        std::fs::write(dir.join(&name), b"1\n").unwrap();
        let uid = nix::unistd::getuid().as_raw();
        let lock_dir = LockDir::open(&dir).unwrap();

        let mut heard = Vec::new();
        let swept = sweep(&lock_dir, uid, &Unraisable, &mut |n: &str, step| {
            heard.push((n.to_owned(), step));
            true
        });
        assert!(swept.removed.is_empty());
        assert_eq!(swept.failed, vec![(name.clone(), Errno::EPERM)]);
        assert!(dir.join(&name).exists());
        assert_eq!(
            heard,
            vec![
                (name.clone(), Step::Intent),
                (name.clone(), Step::Failed(Errno::EPERM))
            ],
            "announced before the attempt, its outcome after"
        );

        // Not announced: not removed.
        let swept = sweep(&lock_dir, uid, &Unprivileged, &mut |_: &str, _| false);
        assert!(swept.removed.is_empty());
        assert_eq!(swept.failed, vec![(name.clone(), Errno::ECANCELED)]);
        assert!(dir.join(&name).exists());

        let mut heard = Vec::new();
        let swept = sweep(&lock_dir, uid, &Unprivileged, &mut |n: &str, step| {
            heard.push((n.to_owned(), step));
            true
        });
        assert_eq!(
            heard,
            vec![(name.clone(), Step::Intent), (name.clone(), Step::Removed)]
        );
        assert_eq!(swept.removed, vec![name.clone()]);
        assert!(swept.failed.is_empty());
        assert!(!dir.join(&name).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
