//! Acquire, check, refresh and release `NAME.lock`.
//!
//! Acquisition (`docs/design.md`, "The dotlock algorithm"):
//! 1. create a temporary file with an explicit mode and write the lock
//!    content into it, checking the write. On the local file systems where
//!    the kernel offers it the file is anonymous (`O_TMPFILE`, no name);
//!    elsewhere (NFS, FUSE, no procfs) or on request it is a named file,
//!    `.lk<pid>.<random>.<host>`, created with
//!    `O_CREAT|O_EXCL|O_NOFOLLOW` (see `tempfile.rs`; decided per
//!    directory by [`LockDir::anonymous_temps`]);
//! 2. `linkat` it to the lock name (an anonymous file through
//!    `/proc/self/fd/N`), and do not trust what it returns: the lock is
//!    ours iff the lock name leads to the temporary file's inode
//!    ([`current_id`]: `fstatat` locally, a fresh open on NFS, whose
//!    lookup cache the link's own reply filled) and that
//!    file has at least the links we made (two for a named file, its
//!    temporary name and the lock's; one for an anonymous file; a breaker
//!    that moved it aside and could not put it back may hold one more). A
//!    lost NFS reply can report `EEXIST` for a link that was made, and a
//!    misbehaving server success for one that was not; both are decided
//!    by the identity check. Before each `link` after a wait, the file's
//!    mtime is refreshed, so a lock taken after a long wait is not born
//!    stale;
//! 3. if the lock is someone else's: judge it (stale locks are broken, see
//!    [`crate::stale`]), else wait and try again;
//! 4. remove the temporary name, if it has one, on every path out.
//!
//! The temp file's descriptor is kept while the lock is held: it *is* the
//! lock's inode, so refreshing it (`futimens`) can only ever touch our own
//! lock, never a successor that took the name after ours was broken.
//! Releasing is either check-then-unlink or move-aside-and-compare, as
//! [`Release`] says.

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::renameat;
use nix::sys::stat::{fstat, futimens};
use nix::sys::time::TimeSpec;
use nix::unistd::{geteuid, unlinkat, UnlinkatFlags};

use crate::content::{AppendMark, Holder, LockContent, MAX_CONTENT};
use crate::dir::{current_id, mtime, validate_name, with_raised, FileId, LockDir, Privilege};
use crate::error::{LockError, Op, Result};
use crate::host::{content_as, PidMode};
use crate::stale::{
    break_with, inspect, judge_trusting, open_lock, put_back, Broke, Existing, Journal, Mover,
    StaleReason,
};
use crate::tempfile::{aside_temp_name, TempFile};
use crate::wait::{Backoff, Wait, Waiter};

/// liblockfile's and Dovecot's default: a lock not refreshed for five
/// minutes is stale.
pub const DEFAULT_STALE_AGE: Duration = Duration::from_secs(300);

/// Something the acquirer reports while it works, for `-v` output and audit.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// The lock is held by someone else; we are about to wait. Reported
    /// when the holder is first seen and whenever it changes.
    Waiting(Holder),
    /// A stale lock was removed.
    BrokeStale(Holder, StaleReason),
    /// Reported by mailbox lockers (the `spoollock` library's
    /// `MailboxLock`), once: the file system refused fcntl locks with this
    /// errno (`ENOLCK`: an NFS server without lock support), so the
    /// mailbox is protected by its dotlock alone.
    NoRecordLocks(Errno),
    /// Reported by mailbox lockers: once every lock was held, the mailbox
    /// path named another file than the one opened (or none), because a
    /// program rewrote the mailbox through a new file or removed it while
    /// we waited. Everything was released and is taken again.
    MailboxReplaced,
}

/// A callback for [`Event`]s.
pub type Observer = Arc<dyn Fn(&Event) + Send + Sync>;

/// Whose files at the lock name are taken for locks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Owners {
    /// Anyone's: in a directory shared with other users of dotlock tools
    /// their locks are judged, waited for and broken like ours. Except a
    /// file of another user that the caller cannot read: its content is
    /// unknown, and by its age alone another user's old file named like the
    /// lock (their mailbox, say) would be destroyed. It is waited for while
    /// it is younger than the stale age; older, the acquisition fails with
    /// [`LockError::ForeignLock`] instead of breaking it.
    #[default]
    Any,
    /// Only files owned by one of these uids (the setgid helper: the caller
    /// and root, whose delivery agents lock as root). A file of any other
    /// owner at the lock name is refused at once with
    /// [`LockError::ForeignLock`], whatever its age, mode or content: never
    /// judged, broken, removed or waited for.
    Only(Vec<u32>),
}

impl Owners {
    /// A file of an owner not allowed at all.
    fn admit(&self, existing: &Existing) -> Result<()> {
        match self {
            Owners::Only(uids) if !uids.contains(&existing.version.uid) => {
                Err(LockError::ForeignLock {
                    owner: existing.version.uid,
                })
            }
            _ => Ok(()),
        }
    }

    /// A file judged stale that must not be broken all the same.
    fn may_break(&self, existing: &Existing) -> Result<()> {
        match self {
            Owners::Any if !existing.readable && existing.version.uid != geteuid().as_raw() => {
                Err(LockError::ForeignLock {
                    owner: existing.version.uid,
                })
            }
            _ => Ok(()),
        }
    }
}

/// How to acquire a lock.
#[derive(Clone)]
pub struct Options {
    /// How long to wait when the lock is busy.
    pub wait: Wait,
    /// A lock older than this (by the file system's clock) is stale.
    pub stale_age: Duration,
    /// Backoff between attempts.
    pub backoff: Backoff,
    /// Which process the lock names.
    pub pid_mode: PidMode,
    /// Permission bits of the lock file (default `0644`, so every tool can
    /// read the holder's pid).
    pub mode: u32,
    /// Rights to raise around directory changes (the setgid helper).
    pub privilege: Option<Arc<dyn Privilege>>,
    /// A descriptor that, when readable, ends a wait with
    /// [`LockError::Interrupted`] (the helper passes its client pipe).
    pub interrupt: Option<Arc<OwnedFd>>,
    /// Told about waits and stale locks broken.
    pub observer: Option<Observer>,
    /// Whose files at the lock name are locks (default: anyone's).
    pub owners: Owners,
    /// The name a lock is moved to before it is removed, when a stale lock
    /// is broken and when a held lock is released; `None` (the default) for
    /// a fresh private name each time. The setgid helper keeps one per
    /// session ([`crate::private_aside_name`]), so a helper killed between
    /// the move and the removal leaves at most that one file, which a sweep
    /// of dead temporary files recognizes. Never share one name between
    /// lockers that may move locks at the same time (see
    /// [`crate::private_aside_name`]).
    pub aside: Option<OsString>,
    /// How a held lock is removed when it is released (see [`Release`]).
    pub release: Release,
    /// Told before and after each break (see [`Journal`]).
    pub journal: Option<Arc<dyn Journal>>,
    /// Judge a lock that names a pid and no host by that pid on this host
    /// (see [`crate::stale::judge_trusting`]): liblockfile's `L_PID`.
    /// Default `false`: such a lock may come from another NFS client, and
    /// only its age can make it stale.
    pub bare_pids_are_local: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            wait: Wait::Forever,
            stale_age: DEFAULT_STALE_AGE,
            backoff: Backoff::default(),
            pid_mode: PidMode::Own,
            mode: 0o644,
            privilege: None,
            interrupt: None,
            observer: None,
            owners: Owners::Any,
            aside: None,
            release: Release::default(),
            journal: None,
            bare_pids_are_local: false,
        }
    }
}

/// How [`Dotlock::release`] removes the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Release {
    /// Check that the name still leads to our file, then unlink it (two
    /// system calls on a local file system; on NFS the check is a fresh
    /// open, so four), nothing left behind whenever the process dies. The
    /// one window: a breaker and a new holder acting between the check and
    /// the unlink make the unlink remove the new holder's lock. That needs
    /// our lock judged stale, so our process stopped (or starved) for
    /// longer than the stale age while it held; the model
    /// (`model/README.md`, `limit-ctu`) shows the stop need not fall
    /// between the two calls: waiters that judged the lock stale during
    /// the stop act right when it resumes, as its release does. Only the
    /// holder's own user (or an overloaded machine) can stop it so; for a
    /// program locking its own mailbox that is the right trade
    /// (liblockfile unlinks without any check).
    #[default]
    CheckThenUnlink,
    /// Move the lock aside first (`rename` is atomic), compare what was
    /// moved with our file, remove it under the private name, or put it
    /// back if it is not ours: no check-then-remove window, one `rename`
    /// more, and a process killed between the move and the removal leaves
    /// the aside file (see [`Options::aside`]). For the setgid helper,
    /// whose caller controls its scheduling (SIGSTOP, `SCHED_IDLE`).
    MoveAside,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("wait", &self.wait)
            .field("stale_age", &self.stale_age)
            .field("backoff", &self.backoff)
            .field("pid_mode", &self.pid_mode)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("privilege", &self.privilege)
            .field("interrupt", &self.interrupt.is_some())
            .field("observer", &self.observer.is_some())
            .field("owners", &self.owners)
            .field("aside", &self.aside)
            .field("journal", &self.journal.is_some())
            .field("bare_pids_are_local", &self.bare_pids_are_local)
            .finish()
    }
}

impl Options {
    fn notify(&self, event: Event) {
        if let Some(observer) = &self.observer {
            observer(&event);
        }
    }

    /// The name to move a lock to: the reserved one, or a fresh one of
    /// process `me`.
    fn aside_for(&self, me: u32) -> OsString {
        self.aside.clone().unwrap_or_else(|| aside_temp_name(me))
    }
}

/// A held dotlock. Released by [`Dotlock::release`] or on drop.
#[derive(Debug)]
pub struct Dotlock {
    dir: LockDir,
    name: OsString,
    fd: Option<OwnedFd>,
    id: FileId,
    content: LockContent,
    privilege: Option<Arc<dyn Privilege>>,
    /// The name the lock is moved to when it is released (see
    /// [`Options::aside`]).
    aside: Option<OsString>,
    /// How it is released.
    release: Release,
    /// The process that took the lock: a copy dropped in a child forked
    /// while it was held leaves the lock to its taker.
    taker: u32,
}

/// The state of a lock name, as [`check`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockState {
    /// No lock.
    Free,
    /// A valid lock.
    Held(Holder),
    /// A lock that the next acquirer would break.
    Stale(Holder, StaleReason),
}

/// Acquire the lock `name` in `dir`.
pub fn acquire(dir: &LockDir, name: &OsStr, opts: &Options) -> Result<Dotlock> {
    acquire_interleaved(dir, name, opts, &mut || {})
}

/// [`acquire`] with `after_check` run each time the identity check found
/// the name not ours, before the lock is looked at: tests use it to force
/// the interleavings the algorithm must survive. Not for other uses.
#[doc(hidden)]
pub fn acquire_interleaved(
    dir: &LockDir,
    name: &OsStr,
    opts: &Options,
    after_check: &mut dyn FnMut(),
) -> Result<Dotlock> {
    validate_name(name)?;
    let privilege = opts.privilege.as_deref();
    // Our pid, read once: the content, the temporary name and the taker.
    let me = std::process::id();
    let content = content_as(opts.pid_mode, me);
    let mut temp = TempFile::create(dir, me, &content.render(), opts.mode, privilege)?;
    let mut waiter = Waiter::new(dir, name, opts.wait, opts.backoff, opts.interrupt.clone());
    let mut fs_clock = None;
    let mut last_seen = None;
    let mut vanished = 0u32;

    loop {
        temp.refresh_if_old()?;
        let linked = temp.link_to(name);
        if linked == Err(Errno::ENOENT) && temp.is_anonymous() {
            // It cannot be linked (see `link_to`): a fresh one.
            temp = TempFile::create(dir, me, &content.render(), opts.mode, privilege)?;
            continue;
        }
        let temp_st = temp.stat()?;
        let ours = FileId::of(&temp_st);
        // Which file the name leads to now, through a fresh open on NFS:
        // a link's success reply fills the client's lookup cache, so a
        // `stat` of the name could say "ours" for a link a server reported
        // but never made (the model's `bug-lying`).
        let at_name = current_id(dir, name)?;
        // At least the links we made: a breaker that moved our file aside
        // (and could not put it back because we had linked it again) holds
        // one more, and the lock is still ours.
        if at_name == Some(ours) && temp_st.st_nlink >= temp.links_when_locked() {
            temp.ensure_mode(&temp_st, opts.mode);
            return Ok(Dotlock {
                dir: dir.clone(),
                name: name.to_owned(),
                fd: Some(temp.into_fd()),
                id: ours,
                content,
                privilege: opts.privilege.clone(),
                aside: opts.aside.clone(),
                release: opts.release,
                taker: me,
            });
        }
        // Not ours. A failure other than "exists" (or a lost reply's EIO)
        // is real when the name is not ours: report it.
        match linked {
            Err(Errno::EEXIST | Errno::EIO | Errno::ESTALE | Errno::EINTR) | Ok(()) => {}
            Err(errno) => return Err(LockError::from_errno(Op::Link, errno)),
        }
        after_check();
        // The file system's "now": our temp file's mtime, advanced by the
        // monotonic clock since it was written.
        let (base, at) = *fs_clock.get_or_insert_with(|| {
            dir.record_fs_clock(mtime(&temp_st), temp.written_at);
            (mtime(&temp_st), temp.written_at)
        });
        let fs_now = base + at.elapsed();

        let Some(existing) = inspect(dir, name)? else {
            // Released between our link and our look: try again now. Twice
            // in a row means our view disagrees with the server's (an NFS
            // client caching a negative lookup): back off instead of spinning.
            vanished += 1;
            if vanished > 1 {
                waiter.pause(None)?;
            }
            continue;
        };
        vanished = 0;
        // Our own file: a breaker moved it aside after our link (so our
        // check found the name free) and has linked it back. It is ours to
        // check again, not a lock to judge or to wait for.
        if existing.version.id == ours {
            continue;
        }
        opts.owners.admit(&existing)?;
        if let Some(reason) = judge_trusting(
            &existing.content,
            existing.version.mtime,
            fs_now,
            opts.stale_age,
            opts.bare_pids_are_local,
        ) {
            opts.owners.may_break(&existing)?;
            let aside = opts.aside_for(me);
            let mover = Mover {
                privilege,
                aside: &aside,
                journal: opts.journal.as_deref().map(|j| (j, reason)),
            };
            if break_with(dir, name, &existing, &mover, &mut || {})? == Broke::Removed {
                opts.notify(Event::BrokeStale(existing.holder(), reason));
            }
            continue;
        }
        let holder = existing.holder();
        if last_seen != Some(existing.version) {
            last_seen = Some(existing.version);
            opts.notify(Event::Waiting(holder.clone()));
        }
        waiter.pause(Some(holder))?;
    }
}

/// Look at the lock `name` without taking it.
///
/// Staleness is judged against the file system's clock, read from a probe
/// file created in `dir`; when `dir` is not writable the local clock is used
/// instead (so a `check` by a user who could not take the lock anyway may
/// call a lock stale up to the clock skew early).
///
/// A regular file larger than any lock content is no lock, as for
/// [`acquire`] (which never breaks one): [`LockError::NotRegularFile`].
pub fn check(dir: &LockDir, name: &OsStr, opts: &Options) -> Result<LockState> {
    validate_name(name)?;
    let Some(existing) = inspect(dir, name)? else {
        return Ok(LockState::Free);
    };
    opts.owners.admit(&existing)?;
    if existing.version.size > MAX_CONTENT as i64 {
        return Err(LockError::NotRegularFile);
    }
    let fs_now = fs_now(dir, opts).unwrap_or_else(|_| SystemTime::now());
    let holder = existing.holder();
    Ok(
        match judge_trusting(
            &existing.content,
            existing.version.mtime,
            fs_now,
            opts.stale_age,
            opts.bare_pids_are_local,
        ) {
            Some(reason) => {
                // Not stale for us if we would not break it.
                opts.owners.may_break(&existing)?;
                LockState::Stale(holder, reason)
            }
            None => LockState::Held(holder),
        },
    )
}

/// The file system's current time: from a reading taken in the last
/// minute, or from the mtime of a new probe file.
fn fs_now(dir: &LockDir, opts: &Options) -> Result<SystemTime> {
    if let Some(now) = dir.recent_fs_now() {
        return Ok(now);
    }
    let me = std::process::id();
    let probe = TempFile::create(dir, me, b"", opts.mode, opts.privilege.as_deref())?;
    let st = probe.stat()?;
    dir.record_fs_clock(mtime(&st), probe.written_at);
    Ok(mtime(&st) + probe.written_at.elapsed())
}

impl Dotlock {
    /// The lock's name in its directory.
    pub fn name(&self) -> &OsStr {
        &self.name
    }

    /// The directory the lock is in.
    pub fn dir(&self) -> &LockDir {
        &self.dir
    }

    /// Device and inode of the lock file we made.
    pub fn id(&self) -> FileId {
        self.id
    }

    /// True if the lock name still refers to the file we made. Looked up
    /// through a fresh `open` (which revalidates NFS caches), not a `stat`
    /// that a client cache may answer with our old lock.
    pub fn is_held(&self) -> Result<bool> {
        Ok(current_id(&self.dir, &self.name)? == Some(self.id))
    }

    /// What our lock file says (pid, host, ...), read back from disk.
    pub fn content(&self) -> Result<LockContent> {
        match inspect(&self.dir, &self.name)? {
            Some(e) if e.version.id == self.id => Ok(e.content),
            _ => Err(LockError::NotOurs),
        }
    }

    /// Record (or clear) an append in progress in the lock's content,
    /// through our own descriptor (so only our lock file is written; this
    /// also refreshes it). See [`crate::AppendMark`].
    pub fn set_append_mark(&self, mark: Option<AppendMark>) -> Result<()> {
        let fd = self.fd.as_ref().ok_or(LockError::NotOurs)?;
        let content = LockContent {
            append: mark,
            ..self.content.clone()
        };
        rewrite(fd, &content.render())
    }

    /// Refresh the lock's mtime so it is not judged stale. The timestamp
    /// is set on our own inode through our descriptor, so a lock that was
    /// broken and re-taken by someone else is never refreshed by us; that
    /// case is reported as [`LockError::NotOurs`].
    pub fn touch(&self) -> Result<()> {
        let fd = self.fd.as_ref().ok_or(LockError::NotOurs)?;
        futimens(fd, &TimeSpec::UTIME_NOW, &TimeSpec::UTIME_NOW)
            .map_err(|errno| LockError::from_errno(Op::Touch, errno))?;
        if self.is_held()? {
            Ok(())
        } else {
            Err(LockError::NotOurs)
        }
    }

    /// The lock's current modification time (after a touch: the file
    /// system's "now").
    pub fn mtime(&self) -> Result<SystemTime> {
        let fd = self.fd.as_ref().ok_or(LockError::NotOurs)?;
        let st = fstat(fd).map_err(|errno| LockError::Io {
            op: Op::Stat,
            errno,
        })?;
        Ok(mtime(&st))
    }

    /// Remove the lock, if it is still ours. If it is not (it was broken as
    /// stale, or removed by hand), nothing is removed and
    /// [`LockError::NotOurs`] says so.
    pub fn release(mut self) -> Result<()> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> Result<()> {
        self.release_steps(|| {}, || {})
    }

    /// Release, with `before_move` run before the lock is moved aside and
    /// `after_move` right after (no-ops but in this module's tests, which
    /// swap the lock there).
    ///
    /// With [`Release::MoveAside`] there is no check-then-remove window
    /// (with [`Release::CheckThenUnlink`], see there): the lock name is moved aside
    /// first (`rename` is atomic), and what was moved is compared with our
    /// file while our descriptor still holds it open (so its inode number
    /// cannot have been given to a successor). Ours: removed under the
    /// private name. Not ours (it was broken and taken again since we last
    /// looked): linked back under the lock name, same inode, so its holder
    /// still recognises it; see the module documentation of `stale` for the
    /// narrow window that remains while it is aside.
    fn release_steps(
        &mut self,
        mut before_move: impl FnMut(),
        mut after_move: impl FnMut(),
    ) -> Result<()> {
        let Some(fd) = self.fd.take() else {
            return Ok(());
        };
        if self.release == Release::CheckThenUnlink {
            before_move();
            // Close first: on NFS, unlinking a file we still hold open
            // would leave a `.nfsXXXX` file behind.
            drop(fd);
            // Is the name still ours? (Through a fresh open on NFS.)
            if !self.is_held()? {
                return Err(LockError::NotOurs);
            }
            let removed = with_raised(self.privilege.as_deref(), || {
                unlinkat(&self.dir, self.name.as_os_str(), UnlinkatFlags::NoRemoveDir)
            });
            after_move();
            return match removed {
                Ok(()) | Err(Errno::ENOENT) => Ok(()),
                Err(errno) => Err(LockError::from_errno(Op::Unlink, errno)),
            };
        }
        let privilege = self.privilege.as_deref();
        let aside = self
            .aside
            .clone()
            .unwrap_or_else(|| aside_temp_name(std::process::id()));
        before_move();
        let moved = with_raised(privilege, || {
            renameat(
                &self.dir,
                self.name.as_os_str(),
                &self.dir,
                aside.as_os_str(),
            )
        });
        after_move();
        // Decide by what is at the private name, not by rename's return
        // value (a retransmitted rename after a lost NFS reply reports
        // ENOENT); through a fresh open on NFS, see `is_held`.
        let found = current_id(&self.dir, &aside);
        // Close before removing: on NFS, unlinking a file we still hold
        // open would leave a `.nfsXXXX` file behind in the spool.
        drop(fd);
        match found {
            Ok(Some(id)) if id == self.id => {
                let removed = with_raised(privilege, || {
                    unlinkat(&self.dir, aside.as_os_str(), UnlinkatFlags::NoRemoveDir)
                });
                match removed {
                    Ok(()) | Err(Errno::ENOENT) => Ok(()),
                    Err(errno) => Err(LockError::from_errno(Op::Unlink, errno)),
                }
            }
            Ok(Some(_)) => {
                put_back(&self.dir, &aside, &self.name, privilege);
                Err(LockError::NotOurs)
            }
            Ok(None) => match moved {
                // The name was gone: removed or broken by someone else.
                Ok(()) | Err(Errno::ENOENT) => Err(LockError::NotOurs),
                Err(errno) => Err(LockError::from_errno(Op::Rename, errno)),
            },
            Err(e) => {
                // We cannot tell what we moved: put it back, as it was.
                put_back(&self.dir, &aside, &self.name, privilege);
                Err(e)
            }
        }
    }

    /// Let go of the lock without removing it: the file stays at the lock
    /// name and this value no longer answers for it. For detached locks
    /// that another process removes by name (as after `dotlockfile -l`),
    /// and for a lock found lost, which must not be released as ours.
    pub fn detach(mut self) {
        self.fd = None;
    }
}

impl Drop for Dotlock {
    fn drop(&mut self) {
        // Released or detached already: nothing to do, no pid to read. In a
        // child forked while the lock was held, the lock is still the
        // parent's: the child's copy only closes its descriptor. (An
        // explicit `release` in the child is a deliberate hand-over and
        // proceeds.)
        if self.fd.is_none() || std::process::id() != self.taker {
            return;
        }
        let _ = self.release_inner();
    }
}

/// Remove a lock by name that this process did not acquire (`unlock` in
/// scripts): only when `owned(content, owner_uid)` agrees, re-verified right before
/// removal as when breaking a stale lock.
pub fn remove_by_name(
    dir: &LockDir,
    name: &OsStr,
    opts: &Options,
    owned: impl Fn(&LockContent, u32) -> bool,
) -> Result<()> {
    validate_name(name)?;
    let Some(existing) = inspect(dir, name)? else {
        return Err(LockError::NotOurs);
    };
    opts.owners.admit(&existing)?;
    if !owned(&existing.content, existing.version.uid) {
        return Err(LockError::NotOurs);
    }
    let aside = opts.aside_for(std::process::id());
    let mover = Mover {
        privilege: opts.privilege.as_deref(),
        aside: &aside,
        journal: None,
    };
    match break_with(dir, name, &existing, &mover, &mut || {})? {
        Broke::Removed => Ok(()),
        Broke::Changed => Err(LockError::NotOurs),
    }
}

/// Replace the whole content of the lock file open at `fd`.
pub fn rewrite(fd: impl std::os::fd::AsFd, bytes: &[u8]) -> Result<()> {
    let fd = fd.as_fd();
    let mut done = 0;
    while done < bytes.len() {
        match nix::sys::uio::pwrite(fd, &bytes[done..], done as i64) {
            Ok(0) => return Err(LockError::TempWrite { errno: Errno::EIO }),
            Ok(n) => done += n,
            Err(Errno::EINTR) => {}
            Err(errno) => return Err(LockError::TempWrite { errno }),
        }
    }
    nix::unistd::ftruncate(fd, bytes.len() as i64).map_err(|errno| LockError::TempWrite { errno })
}

/// Refresh a lock by name that this process did not acquire (`touch` in
/// scripts): only when `owned(content, owner_uid)` agrees. The timestamp is set
/// through the descriptor that was checked, so no other file is touched.
pub fn touch_by_name(
    dir: &LockDir,
    name: &OsStr,
    owned: impl Fn(&LockContent, u32) -> bool,
) -> Result<()> {
    validate_name(name)?;
    let Some((Some(fd), existing)) = open_lock(dir, name)? else {
        return Err(LockError::NotOurs);
    };
    if !owned(&existing.content, existing.version.uid) {
        return Err(LockError::NotOurs);
    }
    // A file too large to be a lock is not kept alive either (it is never
    // broken as stale, see `stale.rs`).
    if existing.version.size > MAX_CONTENT as i64 {
        return Err(LockError::NotRegularFile);
    }
    futimens(&fd, &TimeSpec::UTIME_NOW, &TimeSpec::UTIME_NOW)
        .map_err(|errno| LockError::from_errno(Op::Touch, errno))
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    use super::*;
    use crate::stale::BreakOutcome;

    /// A scratch directory, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!(
                "spoollock-unit-{tag}-{}-{}",
                std::process::id(),
                crate::tempfile::temp_name(0, "").to_string_lossy()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
        fn path(&self) -> &Path {
            &self.0
        }
        fn names(&self) -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
        fn ino(&self, name: &str) -> Option<u64> {
            use std::os::unix::fs::MetadataExt;
            std::fs::symlink_metadata(self.0.join(name))
                .ok()
                .map(|m| m.ino())
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const LOCK: &str = "box.lock";

    fn no_wait() -> Options {
        Options {
            wait: Wait::NoWait,
            ..Options::default()
        }
    }

    /// The release's first step is the move: a lock broken and taken again
    /// by someone else right before it (where the old release had checked
    /// the name and was about to unlink it) is put back, not removed.
    #[test]
    fn release_puts_back_a_lock_taken_again_before_the_move() {
        for aside in [None, Some(OsString::from(".reserved"))] {
            let s = Scratch::new("release-before");
            let dir = LockDir::open(s.path()).unwrap();
            let opts = Options {
                aside: aside.clone(),
                release: Release::MoveAside,
                ..no_wait()
            };
            let mut ours = acquire(&dir, LOCK.as_ref(), &opts).unwrap();
            let mut theirs = None;
            let released = ours.release_steps(
                || {
                    // Broken as stale (it went unrefreshed) and taken again.
                    std::fs::remove_file(s.path().join(LOCK)).unwrap();
                    theirs = Some(acquire(&dir, LOCK.as_ref(), &no_wait()).unwrap());
                },
                || {},
            );
            let theirs = theirs.unwrap();
            let their_ino = theirs.id().ino;
            assert_eq!(released, Err(LockError::NotOurs), "aside {aside:?}");
            assert_eq!(
                s.ino(LOCK),
                Some(their_ino),
                "their lock is back, same inode"
            );
            assert!(theirs.is_held().unwrap());
            assert_eq!(s.names(), vec![LOCK.to_owned()], "nothing else left");
            theirs.release().unwrap();
            assert!(s.names().is_empty());
        }
    }

    /// A lock taken by someone else while ours is aside (the name is free
    /// then) is left alone, and ours is removed.
    #[test]
    fn release_leaves_a_lock_taken_while_ours_was_aside() {
        let s = Scratch::new("release-after");
        let dir = LockDir::open(s.path()).unwrap();
        let moving = Options {
            release: Release::MoveAside,
            ..no_wait()
        };
        let mut ours = acquire(&dir, LOCK.as_ref(), &moving).unwrap();
        let mut theirs = None;
        let released = ours.release_steps(
            || {},
            || theirs = Some(acquire(&dir, LOCK.as_ref(), &no_wait()).unwrap()),
        );
        let theirs = theirs.unwrap();
        assert_eq!(released, Ok(()));
        assert_eq!(s.ino(LOCK), Some(theirs.id().ino));
        assert!(theirs.is_held().unwrap());
        assert_eq!(s.names(), vec![LOCK.to_owned()]);
        theirs.release().unwrap();
    }

    /// Removed by hand before the release: nothing to move, not ours
    /// (either way of releasing).
    #[test]
    fn release_of_a_removed_lock_is_not_ours() {
        for release in [Release::MoveAside, Release::CheckThenUnlink] {
            let s = Scratch::new("release-gone");
            let dir = LockDir::open(s.path()).unwrap();
            let opts = Options {
                release,
                ..no_wait()
            };
            let mut ours = acquire(&dir, LOCK.as_ref(), &opts).unwrap();
            let released =
                ours.release_steps(|| std::fs::remove_file(s.path().join(LOCK)).unwrap(), || {});
            assert_eq!(released, Err(LockError::NotOurs), "{release:?}");
            assert!(s.names().is_empty(), "{release:?}");
        }
    }

    /// The default release checks, then unlinks: a lock broken and taken
    /// again before the check is left alone, and nothing but the lock
    /// name is ever touched (no aside file, whatever happens).
    #[test]
    fn check_then_unlink_leaves_a_successor_and_no_aside_file() {
        let s = Scratch::new("release-check");
        let dir = LockDir::open(s.path()).unwrap();
        let mut ours = acquire(&dir, LOCK.as_ref(), &no_wait()).unwrap();
        let mut theirs = None;
        let released = ours.release_steps(
            || {
                std::fs::remove_file(s.path().join(LOCK)).unwrap();
                theirs = Some(acquire(&dir, LOCK.as_ref(), &no_wait()).unwrap());
            },
            || {},
        );
        let theirs = theirs.unwrap();
        assert_eq!(released, Err(LockError::NotOurs));
        assert_eq!(s.ino(LOCK), Some(theirs.id().ino));
        assert_eq!(s.names(), vec![LOCK.to_owned()]);
        theirs.release().unwrap();
        assert!(s.names().is_empty());
        let ours = acquire(&dir, LOCK.as_ref(), &no_wait()).unwrap();
        ours.release().unwrap();
        assert!(s.names().is_empty(), "released, nothing left");
    }

    /// A reserved aside name is reused: a file a killed process left there
    /// is replaced, and nothing accumulates.
    #[test]
    fn a_reserved_aside_name_is_reused() {
        let s = Scratch::new("reserved");
        let dir = LockDir::open(s.path()).unwrap();
        let opts = Options {
            aside: Some(".reserved".into()),
            release: Release::MoveAside,
            ..no_wait()
        };
        for _ in 0..3 {
            std::fs::write(s.path().join(".reserved"), b"left by a killed process").unwrap();
            acquire(&dir, LOCK.as_ref(), &opts)
                .unwrap()
                .release()
                .unwrap();
            assert!(s.names().is_empty(), "{:?}", s.names());
        }
        // A stale lock broken through it, too.
        std::fs::write(s.path().join(".reserved"), b"left by a killed process").unwrap();
        std::fs::write(s.path().join(LOCK), b"0\n").unwrap();
        spoollock_test_support::age_file(&s.path().join(LOCK), 3600);
        let lock = acquire(&dir, LOCK.as_ref(), &opts).unwrap();
        assert_eq!(s.names(), vec![LOCK.to_owned()]);
        lock.release().unwrap();
    }

    #[derive(Default)]
    struct Recorder {
        allow: bool,
        seen: Mutex<Vec<String>>,
    }

    impl Journal for Recorder {
        fn before_break(&self, holder: &Holder, reason: StaleReason, aside: &OsStr) -> bool {
            self.seen.lock().unwrap().push(format!(
                "before {:?} {reason:?} {}",
                holder.content.pid,
                aside.to_string_lossy()
            ));
            self.allow
        }
        fn after_break(&self, _: &Holder, _: StaleReason, outcome: &BreakOutcome) {
            self.seen.lock().unwrap().push(format!("after {outcome:?}"));
        }
    }

    fn plant_stale(s: &Scratch) -> u64 {
        std::fs::write(s.path().join(LOCK), b"4242\nhost=elsewhere.example\n").unwrap();
        spoollock_test_support::age_file(&s.path().join(LOCK), 3600);
        s.ino(LOCK).unwrap()
    }

    /// The journal is told before the break, with the aside name, and after
    /// it; one that says no cancels it and nothing changes.
    #[test]
    fn the_journal_hears_of_each_break_before_and_after() {
        let s = Scratch::new("journal");
        let dir = LockDir::open(s.path()).unwrap();
        let journal = Arc::new(Recorder {
            allow: true,
            ..Recorder::default()
        });
        let opts = Options {
            aside: Some(".reserved".into()),
            journal: Some(journal.clone()),
            ..no_wait()
        };
        plant_stale(&s);
        acquire(&dir, LOCK.as_ref(), &opts)
            .unwrap()
            .release()
            .unwrap();
        assert_eq!(
            *journal.seen.lock().unwrap(),
            vec![
                "before Some(4242) Age .reserved".to_owned(),
                "after Removed".to_owned()
            ]
        );

        let refusing = Arc::new(Recorder::default());
        let opts = Options {
            journal: Some(refusing.clone()),
            ..no_wait()
        };
        let ino = plant_stale(&s);
        assert_eq!(
            acquire(&dir, LOCK.as_ref(), &opts).unwrap_err(),
            LockError::Vetoed
        );
        assert_eq!(
            refusing.seen.lock().unwrap().len(),
            1,
            "no after without a break"
        );
        assert_eq!(s.ino(LOCK), Some(ino));
        assert_eq!(s.names(), vec![LOCK.to_owned()]);
    }

    /// Only the listed owners' files are locks: any other owner's is
    /// refused, stale or not, and left alone.
    #[test]
    fn only_the_listed_owners_files_are_locks() {
        let s = Scratch::new("owners");
        let dir = LockDir::open(s.path()).unwrap();
        let ino = plant_stale(&s);
        let me = geteuid().as_raw();
        let others = Options {
            owners: Owners::Only(vec![me.wrapping_add(1)]),
            ..no_wait()
        };
        let foreign = LockError::ForeignLock { owner: me };
        assert_eq!(acquire(&dir, LOCK.as_ref(), &others).unwrap_err(), foreign);
        assert_eq!(check(&dir, LOCK.as_ref(), &others).unwrap_err(), foreign);
        assert_eq!(
            remove_by_name(&dir, LOCK.as_ref(), &others, |_, _| true).unwrap_err(),
            foreign
        );
        assert_eq!(s.ino(LOCK), Some(ino));
        let mine = Options {
            owners: Owners::Only(vec![me]),
            ..no_wait()
        };
        acquire(&dir, LOCK.as_ref(), &mine)
            .unwrap()
            .release()
            .unwrap();
    }

    /// With anyone's files taken for locks, an unreadable file of another
    /// user is not broken by its age (its content is unknown); a readable
    /// one, or an unreadable one of our own, is.
    #[test]
    fn an_unreadable_file_of_another_user_is_never_stale() {
        let existing = |readable: bool, uid: u32| Existing {
            version: crate::dir::FileVersion {
                id: crate::dir::FileId { dev: 1, ino: 2 },
                mtime: SystemTime::UNIX_EPOCH,
                size: 0,
                uid,
            },
            raw: Vec::new(),
            content: crate::content::LockContent::default(),
            readable,
        };
        let me = geteuid().as_raw();
        let other = me.wrapping_add(1);
        assert_eq!(
            Owners::Any.may_break(&existing(false, other)),
            Err(LockError::ForeignLock { owner: other })
        );
        assert_eq!(Owners::Any.may_break(&existing(true, other)), Ok(()));
        assert_eq!(Owners::Any.may_break(&existing(false, me)), Ok(()));
        // The helper's owners are judged as before.
        assert_eq!(
            Owners::Only(vec![other]).may_break(&existing(false, other)),
            Ok(())
        );
    }
}
