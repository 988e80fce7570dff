//! Judging an existing lock, and breaking it when it is stale without ever
//! removing a lock that was not the one judged.
//!
//! # Breaking, and the window that remains
//!
//! A breaker first re-reads the lock's identity (device, inode, mtime, size)
//! through a fresh `open` (on NFS a `stat` of the name may be answered from
//! the client's caches for seconds; an open revalidates them) and compares
//! it with the version it judged. It then *renames* the lock to
//! a private name: `rename` is atomic, so of several breakers exactly one
//! moves a given file, and the others find either nothing or a different
//! file. The winner reads the moved file back and compares it (identity and
//! content) with what it judged: only then does it unlink it. If it moved a
//! different file (the lock was released and re-taken between its check and
//! its rename) it puts that file back under the lock name (a rename that
//! never replaces, or a link), with the same inode, so its owner still
//! recognises it.
//!
//! What remains: between such a wrong rename and putting the file back
//! (two system calls) the lock name is free, and a third process may take
//! it; putting back then fails with `EEXIST`, the moved file stays under the
//! private name, and two processes believe they hold the lock. This needs a
//! release, a new acquisition and a third locker, all inside the few
//! microseconds between the breaker's re-check and its putting back (on
//! NFS: a few round trips), and only for a lock that was old enough to be
//! judged stale; or a breaker stopped in between (`SIGSTOP` by its owner),
//! which keeps the window open as long as it is stopped. The model of the
//! protocol (`model/README.md`, `limit-window`) finds one more way in: a
//! holder stopped past the stale age resumes and refreshes its lock
//! ([`crate::Dotlock::touch`]) right after a breaker's re-check, which
//! judged it stale during the stop; the breaker then moves a live lock, and
//! a third locker that links before the put back holds it too. A holder's
//! keep-alive narrows this but cannot close it: a process that may be
//! stopped longer than the stale age cannot know it lost the lock. A release with
//! [`crate::Release::MoveAside`] (the setgid helper's) moves the lock aside
//! and compares the same way, with the same window when the lock it moves
//! is not its own; the default release, [`crate::Release::CheckThenUnlink`],
//! checks the name (through a fresh open on NFS) and then unlinks it, with
//! the window that [`crate::Release`] describes.
//! Tools that break locks by plain `unlink` (liblockfile, procmail) are not
//! serialized by this and keep their own, wider window.
//!
//! # The private name, and who is told
//!
//! By default each move uses a fresh private name (`.lk<pid>.<random>.<host>.stale`).
//! A caller may keep one instead ([`crate::Options::aside`],
//! [`crate::private_aside_name`]): the setgid helper keeps one per session,
//! so a helper killed between the move and the removal leaves that one file,
//! named after its dead pid. The name must never be shared by two lockers
//! that may move at the same time (the model's `bug-shared-aside`). A
//! [`Journal`] is told before each move (and may cancel it) and after it,
//! with what became of it.
//!
//! # Whose files are locks
//!
//! [`crate::Owners`] says whose files at the lock name are taken for locks:
//! another owner's file is never judged, broken or waited for
//! ([`LockError::ForeignLock`]).

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::{fstat, Mode};
use nix::unistd::{linkat, unlinkat, UnlinkatFlags};

use crate::content::{Holder, LockContent, MAX_CONTENT};
use crate::dir::{absent_ok, current_id, is_regular, with_raised, FileVersion, LockDir, Privilege};
use crate::error::{LockError, Op, Result};
use crate::host::{local_host, process_state, ProcState};
use crate::tempfile::aside_temp_name;

/// Why a lock was judged stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleReason {
    /// Made on this host in this boot, and its process no longer exists.
    DeadProcess,
    /// Made on this host in this boot, and its pid now names another
    /// process (different start time).
    PidReused,
    /// Not refreshed for longer than the stale age, judged by the file
    /// system's clock.
    Age,
}

impl std::fmt::Display for StaleReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StaleReason::DeadProcess => "holder process is gone",
            StaleReason::PidReused => "holder pid was reused by another process",
            StaleReason::Age => "not refreshed within the stale age",
        })
    }
}

/// A lock file as found: which version of which file, and what it said.
#[derive(Debug, Clone)]
pub struct Existing {
    /// Identity, mtime, size and owner of the file that was read.
    pub version: FileVersion,
    /// Its first [`MAX_CONTENT`] bytes.
    pub raw: Vec<u8>,
    /// What they say.
    pub content: LockContent,
    /// False when the caller may not read it: its content is unknown (and
    /// `raw` empty), only its age says anything.
    pub readable: bool,
}

impl Existing {
    /// The holder as a public summary.
    pub fn holder(&self) -> Holder {
        Holder {
            content: self.content.clone(),
            mtime: self.version.mtime,
            owner: Some(self.version.uid),
        }
    }
}

/// Read the lock at `name`: `None` if there is none. A symlink or any
/// non-regular file is an error; spoollock never follows or replaces one.
pub fn inspect(dir: &LockDir, name: &OsStr) -> Result<Option<Existing>> {
    open_lock(dir, name).map(|found| found.map(|(_, existing)| existing))
}

/// A lock found on disk, with its open descriptor when it was readable.
pub(crate) type Found = (Option<OwnedFd>, Existing);

/// Like [`inspect`], also returning the open (read-only) descriptor when
/// the lock was readable, so a caller can act on exactly that file.
pub(crate) fn open_lock(dir: &LockDir, name: &OsStr) -> Result<Option<Found>> {
    let flags = OFlag::O_RDONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_CLOEXEC
        | OFlag::O_NOCTTY;
    let fd = match openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        // ESTALE: another NFS client removed it between lookup and open.
        Err(Errno::ENOENT | Errno::ESTALE) => return Ok(None),
        Err(Errno::ELOOP) => return Err(LockError::NotRegularFile),
        // Unreadable lock (mode 0600 by another user's tool): judge by age.
        Err(Errno::EACCES) => return unreadable(dir, name),
        Err(errno) => return Err(LockError::from_errno(Op::ReadLock, errno)),
    };
    let st = fstat(&fd).map_err(|errno| LockError::Io {
        op: Op::Stat,
        errno,
    })?;
    if !is_regular(&st) {
        return Err(LockError::NotRegularFile);
    }
    let raw = read_bounded(&fd)?;
    let existing = Existing {
        version: FileVersion::of(&st),
        content: LockContent::parse(&raw),
        raw,
        readable: true,
    };
    Ok(Some((Some(fd), existing)))
}

/// A lock we may not read (mode 0600 by another user's tool): its content
/// is unknown, so it can only be judged by its age.
fn unreadable(dir: &LockDir, name: &OsStr) -> Result<Option<Found>> {
    let Some(st) = absent_ok(dir.stat(name), Op::Stat)? else {
        return Ok(None);
    };
    if !is_regular(&st) {
        return Err(LockError::NotRegularFile);
    }
    let existing = Existing {
        version: FileVersion::of(&st),
        raw: Vec::new(),
        content: LockContent::default(),
        readable: false,
    };
    Ok(Some((None, existing)))
}

fn read_bounded(fd: &OwnedFd) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; MAX_CONTENT];
    let mut len = 0;
    while len < buf.len() {
        match nix::unistd::read(fd, &mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(Errno::EINTR) => {}
            Err(errno) => {
                return Err(LockError::Io {
                    op: Op::ReadLock,
                    errno,
                })
            }
        }
    }
    buf.truncate(len);
    Ok(buf)
}

/// Decide whether `lock` is stale. `fs_now` is the file system's current
/// time (the mtime of a file we just wrote, advanced by the monotonic
/// clock), never the local wall clock.
pub fn judge(
    content: &LockContent,
    mtime: SystemTime,
    fs_now: SystemTime,
    stale_age: Duration,
) -> Option<StaleReason> {
    judge_trusting(content, mtime, fs_now, stale_age, false)
}

/// [`judge`], and when `bare_pids_are_local` also by the pid of a lock that
/// names no host (a bare `<pid>`, as liblockfile and procmail write): the
/// caller promises that every lock in this directory is made on this host,
/// which is what liblockfile's `L_PID`/`L_PPID` flags mean
/// (lockfile_create(3): "useful only for lockfiles on local filesystems").
/// Such a lock is stale when its process is gone; a live pid is trusted
/// as the holder (no start time to tell a reused pid).
pub fn judge_trusting(
    content: &LockContent,
    mtime: SystemTime,
    fs_now: SystemTime,
    stale_age: Duration,
    bare_pids_are_local: bool,
) -> Option<StaleReason> {
    let local = local_host();
    let same_boot = content.host.as_deref() == Some(local.host.as_str())
        && content.boot.is_some()
        && content.boot == local.boot;
    let bare_local = bare_pids_are_local && content.host.is_none() && content.boot.is_none();
    if let (true, Some(pid)) = (same_boot || bare_local, content.pid) {
        match process_state(pid) {
            ProcState::Gone => return Some(StaleReason::DeadProcess),
            ProcState::Alive { start: Some(now) } if content.start.is_some_and(|s| s != now) => {
                return Some(StaleReason::PidReused);
            }
            ProcState::Alive { .. } => {}
        }
    }
    // A lock from the future (server clock jumped, or mtime set by hand)
    // has age zero: it is not stale until it is really old.
    let age = fs_now.duration_since(mtime).unwrap_or(Duration::ZERO);
    (age > stale_age).then_some(StaleReason::Age)
}

/// Outcome of a break attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broke {
    /// We removed the stale lock.
    Removed,
    /// Someone else got there first, or the lock changed: look again.
    Changed,
}

/// What became of a break that was announced to a [`Journal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BreakOutcome {
    /// The stale lock was moved aside and removed.
    Removed,
    /// Nothing was at the lock name any more (released, or broken by
    /// someone else): nothing was moved.
    Vanished,
    /// What was moved was not the lock judged stale (it was released and
    /// taken again meanwhile): it was put back under the lock name.
    PutBack,
    /// What was moved was not the lock judged stale, and the name was
    /// taken again before it could be put back: it stays at the aside name.
    LeftAside,
    /// The break failed; what was moved, if anything, was put back or
    /// stays at the aside name.
    Failed(LockError),
}

/// Told before and after every break that [`crate::acquire`] makes.
///
/// The setgid helper records its intent in the audit trail in
/// [`Journal::before_break`] and does not act when the record could not be
/// sent; a trail with an intent and no outcome then shows a helper that
/// was killed in the middle.
pub trait Journal: Send + Sync {
    /// `holder`'s lock, judged stale for `reason`, is about to be moved to
    /// `aside` and removed there. False cancels the break: the acquisition
    /// fails with [`LockError::Vetoed`] and nothing is changed.
    fn before_break(&self, holder: &Holder, reason: StaleReason, aside: &OsStr) -> bool;
    /// What became of a break [`Journal::before_break`] allowed.
    fn after_break(&self, holder: &Holder, reason: StaleReason, outcome: &BreakOutcome);
}

/// How a break moves the lock aside, and who is told.
pub(crate) struct Mover<'a> {
    pub privilege: Option<&'a dyn Privilege>,
    /// The name the lock is moved to.
    pub aside: &'a OsStr,
    /// Told before and after, with the reason the lock was judged stale.
    pub journal: Option<(&'a dyn Journal, StaleReason)>,
}

/// Remove `judged` from `name`, if and only if it is still that version.
/// See the module documentation for the protocol and its residual window.
/// The lock is moved to a fresh private name.
pub fn break_stale(
    dir: &LockDir,
    name: &OsStr,
    judged: &Existing,
    privilege: Option<&dyn Privilege>,
) -> Result<Broke> {
    break_stale_interleaved(dir, name, judged, privilege, &mut || {})
}

/// [`break_stale`] with `between` run after the re-check and before the
/// rename: tests use it to force the interleavings the protocol must
/// survive. Not for other uses.
#[doc(hidden)]
pub fn break_stale_interleaved(
    dir: &LockDir,
    name: &OsStr,
    judged: &Existing,
    privilege: Option<&dyn Privilege>,
    between: &mut dyn FnMut(),
) -> Result<Broke> {
    let aside = aside_temp_name(std::process::id());
    let mover = Mover {
        privilege,
        aside: &aside,
        journal: None,
    };
    break_with(dir, name, judged, &mover, between)
}

/// The break itself, as [`break_stale`] describes it, moving the lock to
/// `mover.aside` and telling `mover.journal`.
pub(crate) fn break_with(
    dir: &LockDir,
    name: &OsStr,
    judged: &Existing,
    mover: &Mover<'_>,
    between: &mut dyn FnMut(),
) -> Result<Broke> {
    // Re-check through a fresh open: on NFS a `stat` of the name may be
    // answered from the client's caches, an open revalidates it.
    match inspect(dir, name)? {
        Some(now) if now.version == judged.version => {}
        _ => return Ok(Broke::Changed),
    }
    // Something larger than any lock content (say a mailbox of a user
    // whose login is `<name>`) is not a lock, however old: never remove it.
    if judged.version.size > MAX_CONTENT as i64 {
        return Err(LockError::NotRegularFile);
    }
    let holder = judged.holder();
    if let Some((journal, reason)) = mover.journal {
        if !journal.before_break(&holder, reason, mover.aside) {
            return Err(LockError::Vetoed);
        }
    }
    between();
    let (broke, outcome) = move_and_remove(dir, name, judged, mover);
    if let Some((journal, reason)) = mover.journal {
        journal.after_break(&holder, reason, &outcome);
    }
    match outcome {
        BreakOutcome::Failed(e) => Err(e),
        _ => Ok(broke),
    }
}

fn move_and_remove(
    dir: &LockDir,
    name: &OsStr,
    judged: &Existing,
    mover: &Mover<'_>,
) -> (Broke, BreakOutcome) {
    let (privilege, aside) = (mover.privilege, mover.aside);
    let moved = with_raised(privilege, || renameat(dir, name, dir, aside));
    // Decide by what is at the private name, not by rename's return value
    // (a retransmitted rename after a lost reply reports ENOENT).
    let found = match inspect(dir, aside) {
        Ok(found) => found,
        Err(e) => {
            // We cannot tell what we moved: put it back, as it was.
            put_back(dir, aside, name, privilege);
            return (Broke::Changed, BreakOutcome::Failed(e));
        }
    };
    let Some(found) = found else {
        return match moved {
            Ok(()) | Err(Errno::ENOENT) => (Broke::Changed, BreakOutcome::Vanished),
            Err(errno) => (
                Broke::Changed,
                BreakOutcome::Failed(LockError::StaleNotRemoved { errno }),
            ),
        };
    };
    if found.version.id == judged.version.id
        && found.version.mtime == judged.version.mtime
        && found.raw == judged.raw
    {
        let removed = with_raised(privilege, || {
            unlinkat(dir, aside, UnlinkatFlags::NoRemoveDir)
        });
        return match removed {
            Ok(()) | Err(Errno::ENOENT) => (Broke::Removed, BreakOutcome::Removed),
            Err(errno) => (
                Broke::Changed,
                BreakOutcome::Failed(LockError::StaleNotRemoved { errno }),
            ),
        };
    }
    // We moved a lock that was not the one judged stale: put it back,
    // same inode, so its holder still recognises it.
    if put_back(dir, aside, name, privilege) {
        (Broke::Changed, BreakOutcome::PutBack)
    } else {
        (Broke::Changed, BreakOutcome::LeftAside)
    }
}

/// Put the file at `aside` back under `name`, but never over a file that
/// took the name meanwhile: then the moved file stays under its private
/// name rather than being destroyed. True when the file is under `name`
/// again.
///
/// `rename` with `RENAME_NOREPLACE` does it in one step and needs no rights
/// on the file itself. Where the kernel or the file system lacks that flag
/// (NFS), the file is linked back and the private name dropped once the
/// link worked; a link of another user's file (root's lock, say) is
/// refused under `fs.protected_hardlinks` (the default), so there such a
/// file stays aside. When the name is taken by the very file we moved (its
/// holder found the name free and linked its own file again), the private
/// name is an extra link of that lock: dropped too, so it neither lingers
/// nor confuses the holder's link count.
pub(crate) fn put_back(
    dir: &LockDir,
    aside: &OsStr,
    name: &OsStr,
    privilege: Option<&dyn Privilege>,
) -> bool {
    let restored = match with_raised(privilege, || rename_noreplace(dir, aside, name)) {
        Ok(()) => return true,
        Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => with_raised(privilege, || {
            linkat(dir, aside, dir, name, nix::fcntl::AtFlags::empty())
        }),
        Err(errno) => Err(errno),
    };
    let relinked_by_holder = restored == Err(Errno::EEXIST)
        && matches!(
            (current_id(dir, aside), current_id(dir, name)),
            (Ok(Some(a)), Ok(Some(n))) if a == n
        );
    if restored.is_ok() || relinked_by_holder {
        let _ = with_raised(privilege, || {
            unlinkat(dir, aside, UnlinkatFlags::NoRemoveDir)
        });
        true
    } else {
        false
    }
}

/// `rename(from, to)` in `dir` unless `to` exists (`EEXIST` then).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn rename_noreplace(dir: &LockDir, from: &OsStr, to: &OsStr) -> nix::Result<()> {
    nix::fcntl::renameat2(
        dir,
        from,
        dir,
        to,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    )
}

/// Without `renameat2` in the C library: the caller links instead.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn rename_noreplace(_: &LockDir, _: &OsStr, _: &OsStr) -> nix::Result<()> {
    Err(Errno::ENOSYS)
}
