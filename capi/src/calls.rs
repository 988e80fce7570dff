//! liblockfile's calls in Rust terms: what each does, with which code and
//! `errno`, and what the library remembers between calls.
//!
//! # What a lock made by `lockfile_create` is
//!
//! A detached lock, as liblockfile's: it stays after the call, and after
//! the process exits, until `lockfile_remove` (by this process, a forked
//! child, or any process of the same user) or until the next locker judges
//! it stale (older than five minutes without `lockfile_touch`, or at once
//! when it names a process (`L_PID`, `L_PPID`) that is gone). lockfile-progs
//! relies on this: `mail-lock` locks and exits, `mail-unlock` removes.
//!
//! The library remembers every lock this process made
//! ([`spoollock::DetachedLock`], which keeps a descriptor on the lock's
//! inode): `lockfile_touch` and `lockfile_remove` of such a lock act on
//! that file only, so a lock that was broken as stale and taken by someone
//! else is never refreshed or removed by its former holder (liblockfile
//! removes whatever has the name). A lock this process did not make (made
//! by another process, or before an `exec`) is touched or removed by name,
//! and only if the caller owns it (root: any).
//!
//! A child made by `fork()` inherits what its parent remembered and may
//! touch or remove those locks, as with liblockfile; once one of them has
//! removed a lock, the other finds it gone (success, as for any missing
//! lock).

use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use nix::errno::Errno;
use spoollock::liblockfile::{
    call_errno, create_code, wait_for, L_ERROR, L_INTERVAL, L_MAXTRYS, L_NAMELEN, L_ORPHANED,
    L_PID, L_PPID,
};
use spoollock::{DetachedLock, LockOptions, LockState, LockTarget, PidMode};

/// liblockfile refuses a lock path this close to `PATH_MAX` (its temporary
/// name, `.lk` + pid + time + host, must fit beside it).
const PATH_MAX: usize = 4096;
const TEMP_NAME_ROOM: usize = 32;

/// `maillock`'s spool (`_PATH_MAILDIR`).
pub const MAILDIR: &str = "/var/mail";

/// A lock this process made: its directory (by identity, so a `chdir`
/// between the calls or another spelling of the path finds it) and name.
#[derive(Debug, PartialEq, Eq)]
struct Key {
    dev: u64,
    ino: u64,
    name: Vec<u8>,
}

impl Key {
    /// The key of `target`, from its directory's metadata when the caller
    /// already read it (`known`), else read now.
    fn of(target: &LockTarget, known: Option<&Metadata>) -> Option<Key> {
        let read;
        let dir = match known {
            Some(meta) => meta,
            None => {
                read = std::fs::metadata(&target.dir).ok()?;
                &read
            }
        };
        Some(Key {
            dev: dir.dev(),
            ino: dir.ino(),
            name: target.name.as_bytes().to_vec(),
        })
    }
}

/// The locks this process made and has not removed. Held only to add or
/// take an entry, never while waiting for a lock or talking to the helper.
static HELD: Mutex<Vec<(Key, DetachedLock)>> = Mutex::new(Vec::new());

/// `maillock`'s lock file, while it holds one.
static MAILLOCK: Mutex<Option<PathBuf>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere cannot leave these inconsistent: entries are added
    // or taken whole.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn take_held(key: &Key) -> Option<DetachedLock> {
    let mut held = lock(&HELD);
    let at = held.iter().position(|(k, _)| k == key)?;
    Some(held.swap_remove(at).1)
}

fn remember(key: Key, lock_: DetachedLock) {
    let mut held = lock(&HELD);
    // A lock at the same name made earlier is gone (or we could not have
    // taken it again): forget it, leaving whatever is on disk.
    held.retain(|(k, _)| *k != key);
    held.push((key, lock_));
}

/// `lockfile_create(path, retries, flags)`: flags other than `L_PID` and
/// `L_PPID` are refused with `EINVAL`. `dir` is the metadata of the lock's
/// directory when the caller has already read it (each call here takes
/// one, so that a system call is not made twice).
pub fn lockfile_create(
    path: &Path,
    retries: i32,
    flags: i32,
    dir: Option<&Metadata>,
) -> Result<(), (i32, Errno)> {
    if flags & !(L_PID | L_PPID) != 0 {
        return Err((L_ERROR, Errno::EINVAL));
    }
    create(path, retries, flags, None, dir)
}

/// `lockfile_create2(path, retries, flags, args)`: `interval` is
/// `args->interval` when `args` was given. `L_INTERVAL` needs it; a
/// negative interval is refused (liblockfile would sleep for years).
pub fn lockfile_create2(
    path: &Path,
    retries: i32,
    flags: i32,
    interval: Option<i32>,
    dir: Option<&Metadata>,
) -> Result<(), (i32, Errno)> {
    if flags & !(L_PID | L_PPID | L_INTERVAL) != 0 {
        return Err((L_ERROR, Errno::EINVAL));
    }
    let interval = if flags & L_INTERVAL != 0 {
        match interval.map(u32::try_from) {
            Some(Ok(each)) => Some(each),
            _ => return Err((L_ERROR, Errno::EINVAL)),
        }
    } else {
        None
    };
    create(path, retries, flags, interval, dir)
}

fn create(
    path: &Path,
    retries: i32,
    flags: i32,
    interval: Option<u32>,
    dir: Option<&Metadata>,
) -> Result<(), (i32, Errno)> {
    let pid_mode = if flags & L_PPID != 0 {
        // liblockfile: a parent that is gone (we were reparented to init)
        // cannot vouch for the lock.
        let parent = nix::unistd::getppid().as_raw();
        if parent == 1 {
            return Err((L_ORPHANED, Errno::last()));
        }
        PidMode::Pid(parent.unsigned_abs())
    } else if flags & L_PID != 0 {
        PidMode::Own
    } else {
        // No process: the lock lives until removed or five minutes old
        // (`mail-lock` locks, exits, and `mail-unlock` removes).
        PidMode::None
    };
    if path.as_os_str().len() + TEMP_NAME_ROOM > PATH_MAX {
        return Err((L_ERROR, Errno::ENAMETOOLONG));
    }
    let Some(wait) = wait_for(retries, interval) else {
        // A negative count: liblockfile makes no attempt at all.
        return Err((L_MAXTRYS, Errno::EAGAIN));
    };
    let target = LockTarget::lock_file(path).map_err(|e| create_code(&e))?;
    let opts = LockOptions {
        wait,
        pid_mode,
        keep_alive: None,
        bare_pids_are_local: flags & (L_PID | L_PPID) != 0,
        ..LockOptions::default()
    };
    let made = DetachedLock::acquire(&target, &opts).map_err(|e| create_code(&e))?;
    match Key::of(&target, dir) {
        Some(key) => remember(key, made),
        // The directory vanished right after the lock was made in it:
        // nothing to remember it by; the lock stays, as any detached lock.
        None => made.forget(),
    }
    Ok(())
}

/// `lockfile_remove(path)`: a missing lock is success; a lock that is not
/// the caller's (another user's, or a successor's after ours was broken)
/// is left in place: `EPERM`.
pub fn lockfile_remove(path: &Path, dir: Option<&Metadata>) -> Result<(), Errno> {
    let target = LockTarget::lock_file(path).map_err(|e| call_errno(&e))?;
    let removed = match Key::of(&target, dir).and_then(|key| take_held(&key)) {
        Some(ours) => ours.release(),
        // Nothing to remove: no need to ask anyone (or start the helper).
        None if absent(path) => return Ok(()),
        None => spoollock::unlock_by_name(&target, false),
    };
    match removed {
        Ok(()) => Ok(()),
        Err(_) if absent(path) => Ok(()),
        Err(e) => Err(call_errno(&e)),
    }
}

/// `lockfile_touch(path)`: refresh the lock's time; `ENOENT` when there is
/// none, `EPERM` when it is not the caller's or not a lock.
pub fn lockfile_touch(path: &Path, dir: Option<&Metadata>) -> Result<(), Errno> {
    let target = LockTarget::lock_file(path).map_err(|e| call_errno(&e))?;
    let touched = {
        let held = lock(&HELD);
        let key = Key::of(&target, dir);
        // Through our own descriptor: no helper, no wait; the registry
        // stays locked only for this system call or two.
        held.iter()
            .find(|(k, _)| Some(k) == key.as_ref())
            .map(|(_, ours)| ours.touch())
    };
    let touched = touched.unwrap_or_else(|| spoollock::touch_by_name(&target, false));
    match touched {
        Ok(()) => Ok(()),
        Err(_) if absent(path) => Err(Errno::ENOENT),
        Err(e) => Err(call_errno(&e)),
    }
}

/// `lockfile_check(path, flags)`: `Ok` when a valid lock is present. With
/// `L_PID` or `L_PPID`, a lock naming a bare pid is judged by that process.
pub fn lockfile_check(path: &Path, flags: i32) -> Result<(), Errno> {
    let target = LockTarget::lock_file(path).map_err(|e| call_errno(&e))?;
    let opts = LockOptions {
        keep_alive: None,
        bare_pids_are_local: flags & (L_PID | L_PPID) != 0,
        ..LockOptions::no_wait()
    };
    match spoollock::lock_state(&target, &opts) {
        Ok(LockState::Held(_)) => Ok(()),
        Ok(LockState::Free) => Err(Errno::ENOENT),
        Ok(LockState::Stale(..)) => Err(Errno::ESTALE),
        Err(e) => Err(call_errno(&e)),
    }
}

/// Nothing has this name (or its directory does not exist).
fn absent(path: &Path) -> bool {
    matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
}

/// The mailbox lock `maillock(name)` takes: `/var/mail/NAME.lock`, or
/// `$MAIL.lock` when `$MAIL`'s file name is `name` — but never from the
/// environment in a setuid or setgid program (`mail-lock` is setgid mail):
/// there the caller could point a privileged lock anywhere.
pub fn maillock_path(name: &[u8]) -> Result<PathBuf, (i32, Errno)> {
    // liblockfile's limit on the whole path.
    if name.len() + MAILDIR.len() + 7 > PATH_MAX {
        return Err((L_NAMELEN, Errno::ENAMETOOLONG));
    }
    // A name is one path component: no `/`, not `.` or `..`, not empty.
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err((L_ERROR, Errno::EINVAL));
    }
    if !spoollock::privileged::secure_mode() {
        if let Some(mail) = std::env::var_os("MAIL") {
            let mail = PathBuf::from(mail);
            if mail.file_name() == Some(OsStr::from_bytes(name)) {
                let mut lock = mail.into_os_string();
                lock.push(".lock");
                return Ok(PathBuf::from(lock));
            }
        }
    }
    let mut lock = PathBuf::from(MAILDIR).join(OsStr::from_bytes(name));
    lock.as_mut_os_string().push(".lock");
    Ok(lock)
}

/// `maillock(name, retries)`: lock the user's mailbox, with no pid in the
/// lock (it lives until `mailunlock` or five minutes without `touchlock`).
/// A second call while locked succeeds at once, as liblockfile's.
pub fn maillock(name: &[u8], retries: i32) -> Result<(), (i32, Errno)> {
    if lock(&MAILLOCK).is_some() {
        return Ok(());
    }
    let path = maillock_path(name)?;
    create(&path, retries, 0, None, None)?;
    *lock(&MAILLOCK) = Some(path);
    Ok(())
}

/// `mailunlock()`: remove `maillock`'s lock, if it holds one.
pub fn mailunlock() {
    let taken = lock(&MAILLOCK).take();
    if let Some(path) = taken {
        let _ = lockfile_remove(&path, None);
    }
}

/// `touchlock()`: refresh `maillock`'s lock, if it holds one.
pub fn touchlock() {
    let path = lock(&MAILLOCK).clone();
    if let Some(path) = path {
        let _ = lockfile_touch(&path, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maillock_names() {
        assert!(maillock_path(b"alice").unwrap().ends_with("alice.lock"));
        for bad in [&b""[..], b".", b"..", b"../etc/x", b"a/b"] {
            assert_eq!(maillock_path(bad).unwrap_err().0, L_ERROR, "{bad:?}");
        }
        let long = vec![b'a'; PATH_MAX];
        assert_eq!(maillock_path(&long).unwrap_err().0, L_NAMELEN);
    }

    #[test]
    fn unknown_flags_are_refused() {
        let p = Path::new("/nonexistent/x.lock");
        assert_eq!(
            lockfile_create(p, 0, 1, None).unwrap_err(),
            (L_ERROR, Errno::EINVAL)
        );
        assert_eq!(
            lockfile_create(p, 0, L_INTERVAL, None).unwrap_err(),
            (L_ERROR, Errno::EINVAL)
        );
        assert_eq!(
            lockfile_create2(p, 0, L_INTERVAL, None, None).unwrap_err(),
            (L_ERROR, Errno::EINVAL)
        );
        assert_eq!(
            lockfile_create2(p, 0, L_INTERVAL, Some(-1), None).unwrap_err(),
            (L_ERROR, Errno::EINVAL)
        );
        assert_eq!(
            lockfile_create(p, -1, 0, None).unwrap_err(),
            (L_MAXTRYS, Errno::EAGAIN)
        );
    }
}
