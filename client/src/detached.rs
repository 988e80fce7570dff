//! A lock that outlives the process that took it, and still knows which
//! file it made.
//!
//! [`lock_detached`](crate::lock_detached) creates a lock and forgets it:
//! it is removed later by name (`spoollock unlock`, `dotlockfile -u`), and
//! a removal by name can only check who owns the file, not whether it is
//! still the lock this process made. A [`DetachedLock`] keeps a descriptor
//! on the lock's inode while the process lives, so touching and releasing
//! act on that file only: if the lock was broken as stale and someone else
//! (even the same user) took the name, [`DetachedLock::touch`] and
//! [`DetachedLock::release`] say [`LockError::NotOurs`] and change nothing.
//! Dropping it leaves the lock in place, as liblockfile's `lockfile_create`
//! does; this is what spoollock's liblockfile-compatible C library keeps
//! for every lock a program takes.
//!
//! The descriptor pins the inode, so its number cannot be reused by a
//! successor while we compare. On a spool only the mail group may write the
//! lock is made by `spoollock-helper` under the caller's uid; we open it
//! right after the helper's grant (a fresh lock naming a live process, or
//! none, is not stale, so nobody may have replaced it in between), refresh
//! it through that descriptor (our own file: no privilege needed), and ask
//! the helper to remove it only after checking that the name still refers
//! to it. The helper session that made the lock stays open (idle) until
//! then, so that the removal costs no second helper start; dropping the
//! value, or the process ending, closes it and the lock stays. While it
//! is open the helper is a child of this process: a program that waits
//! for all its children to end would wait for it too.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

use nix::sys::stat::futimens;
use nix::sys::time::TimeSpec;
use spoollock_lockfile::{acquire, current_id, Dotlock, FileId, LockDir, LockError, PidMode};

use crate::error::{Error, Result};
use crate::guard::{not_a_lock, LockOptions, Route};
use crate::privileged::{self, HelperSession};
use crate::target::LockTarget;
use spoollock_protocol::LockMode;

/// A lock that stays after this process exits unless released. See the
/// module documentation.
#[derive(Debug)]
pub struct DetachedLock {
    target: LockTarget,
    made: Option<MadeLock>,
}

/// What this process keeps of the lock it made, by route.
#[derive(Debug)]
enum MadeLock {
    /// Made in-process: the lock crate's own handle (its descriptor is the
    /// lock's inode).
    Direct(Dotlock),
    /// Made by the setgid helper: a read-only descriptor on the lock file
    /// it created for us, and that file's identity; and the helper session
    /// that made it, kept so that the removal needs no second helper. It
    /// is the taker's only: a forked child has a copy of it, which it
    /// neither uses nor ends.
    Helper {
        file: File,
        dir: LockDir,
        id: FileId,
        session: Option<HelperSession>,
        taker: u32,
    },
}

impl DetachedLock {
    /// Take the lock `target` the way [`LockGuard::acquire_target`]
    /// decides (in-process, or through `spoollock-helper` on a mail-group
    /// spool), naming the process `opts.pid_mode` says; the lock is not
    /// kept fresh and is not removed when this value is dropped.
    ///
    /// [`LockGuard::acquire_target`]: crate::LockGuard::acquire_target
    pub fn acquire(target: &LockTarget, opts: &LockOptions) -> Result<DetachedLock> {
        let made = if Route::of(target)? == Route::Helper {
            let session = HelperSession::lock(
                target,
                opts.wait,
                opts.stale_age,
                LockMode::Detached {
                    holder_pid: holder_pid(opts.pid_mode),
                },
            )?;
            let dir = LockDir::open(&target.dir)?;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
                .open(target.path())
                .map_err(|_| Error::Lock(LockError::NotOurs))?;
            let meta = file.metadata()?;
            // The helper made it under our uid; anything else at the name
            // is not the lock we were granted.
            if !meta.is_file() || meta.uid() != nix::unistd::getuid().as_raw() {
                return Err(Error::Lock(LockError::NotOurs));
            }
            let id = FileId {
                dev: meta.dev(),
                ino: meta.ino(),
            };
            MadeLock::Helper {
                file,
                dir,
                id,
                session: Some(session),
                taker: std::process::id(),
            }
        } else {
            let dir = LockDir::open(&target.dir)?;
            // A large file at the name is told apart as `NotALock`, with its
            // size and owner, as `spoollock lock` tells it.
            MadeLock::Direct(
                acquire(&dir, &target.name, &opts.lockfile_options())
                    .map_err(|e| not_a_lock(target, e))?,
            )
        };
        Ok(DetachedLock {
            target: target.clone(),
            made: Some(made),
        })
    }

    /// Which lock this is.
    pub fn target(&self) -> &LockTarget {
        &self.target
    }

    /// True if the lock was made by the setgid helper.
    pub fn via_helper(&self) -> bool {
        matches!(self.made, Some(MadeLock::Helper { .. }))
    }

    /// True if the lock name still refers to the file we made.
    pub fn is_held(&self) -> Result<bool> {
        match self.made.as_ref() {
            Some(MadeLock::Direct(lock)) => Ok(lock.is_held()?),
            Some(MadeLock::Helper { dir, id, .. }) => {
                Ok(current_id(dir, &self.target.name)? == Some(*id))
            }
            None => Ok(false),
        }
    }

    /// Refresh the lock's modification time, through the descriptor of
    /// our own file: a successor's lock is never touched. [`LockError::NotOurs`]
    /// when the name no longer refers to it.
    pub fn touch(&self) -> Result<()> {
        match self.made.as_ref() {
            Some(MadeLock::Direct(lock)) => Ok(lock.touch()?),
            Some(MadeLock::Helper { file, .. }) => {
                futimens(file.as_fd(), &TimeSpec::UTIME_NOW, &TimeSpec::UTIME_NOW).map_err(
                    |errno| {
                        Error::Lock(LockError::Io {
                            op: spoollock_lockfile::Op::Touch,
                            errno,
                        })
                    },
                )?;
                if self.is_held()? {
                    Ok(())
                } else {
                    Err(Error::Lock(LockError::NotOurs))
                }
            }
            None => Err(Error::Lock(LockError::NotOurs)),
        }
    }

    /// Remove the lock if the name still refers to the file we made;
    /// otherwise (removed, or broken and taken by someone else) remove
    /// nothing and say [`LockError::NotOurs`].
    ///
    /// Through the helper, what remains is the moment between our check
    /// and the helper's removal by name (which re-checks the owner and the
    /// file it inspected): a successor would have to break our lock as
    /// stale and take it, as the same user, inside that moment.
    pub fn release(mut self) -> Result<()> {
        match self.made.take() {
            Some(MadeLock::Direct(lock)) => Ok(lock.release()?),
            Some(MadeLock::Helper {
                file,
                dir,
                id,
                session,
                taker,
            }) => {
                let session = own_session(session, taker);
                if current_id(&dir, &self.target.name)? != Some(id) {
                    return Err(Error::Lock(LockError::NotOurs));
                }
                // Closed before the removal: on NFS a file still open here
                // would be renamed to `.nfsXXXX` in the spool instead.
                drop(file);
                match session {
                    // The helper removes it by name (owner re-checked,
                    // identity re-verified just before), then ends.
                    Some(session) => session.release(),
                    None => privileged::by_name(&self.target, true, false),
                }
            }
            None => Err(Error::Lock(LockError::NotOurs)),
        }
    }

    /// Leave the lock in place and forget it (what dropping does).
    pub fn forget(mut self) {
        self.leave();
    }

    fn leave(&mut self) {
        match self.made.take() {
            Some(MadeLock::Direct(lock)) => lock.detach(),
            // Ending the session (end of file) leaves a detached lock.
            Some(MadeLock::Helper { session, taker, .. }) => drop(own_session(session, taker)),
            None => {}
        }
    }
}

/// The helper session, if this process is the one that started it; in a
/// forked child, its copy is let go (its pipe ends closed, nothing said,
/// no wait for a helper that is not the child's).
fn own_session(session: Option<HelperSession>, taker: u32) -> Option<HelperSession> {
    let session = session?;
    if std::process::id() == taker {
        Some(session)
    } else {
        session.abandon();
        None
    }
}

impl Drop for DetachedLock {
    /// A detached lock stays: it is removed by [`DetachedLock::release`],
    /// by name, or judged stale (by its process, or by its age).
    fn drop(&mut self) {
        self.leave();
    }
}

/// The process a detached lock names, for the helper (which accepts only
/// a live process, or none).
pub(crate) fn holder_pid(mode: PidMode) -> Option<u32> {
    match mode {
        PidMode::None => None,
        PidMode::Own => Some(std::process::id()),
        PidMode::Parent => u32::try_from(nix::unistd::getppid().as_raw()).ok(),
        PidMode::Pid(pid) => Some(pid),
    }
}
