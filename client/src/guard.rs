//! The lock guard users hold: acquire on a path's `.lock` sibling, refresh
//! while held, release on drop.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use spoollock_lockfile::{
    acquire, check, remove_by_name, AppendMark, Dotlock, LockDir, LockError, LockState, Observer,
    Options, PidMode, Wait, DEFAULT_STALE_AGE,
};
use spoollock_protocol::LockMode;

use crate::error::{Error, Result};
use crate::privileged::{self, HelperSession};
use crate::target::LockTarget;

/// How to take a lock.
#[derive(Clone)]
pub struct LockOptions {
    /// How long to wait for a busy lock (default: [`Wait::Forever`]).
    pub wait: Wait,
    /// A lock not refreshed for this long is stale (default 300 s).
    pub stale_age: Duration,
    /// Refresh the lock this often while it is held; `None` disables the
    /// keep-alive. Default: a quarter of the stale age.
    pub keep_alive: Option<Duration>,
    /// Which process the lock names (default: this one).
    pub pid_mode: PidMode,
    /// Told about waits and broken stale locks (for `-v` output).
    pub observer: Option<Observer>,
    /// Judge a lock naming a bare pid (no host) by that pid on this host:
    /// liblockfile's `L_PID` promise that all locks here are local (see
    /// `spoollock_lockfile::judge_trusting`). Default `false`. A lock
    /// taken or checked through the setgid helper is judged by the helper,
    /// which does not take this promise from a caller.
    pub bare_pids_are_local: bool,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            wait: Wait::Forever,
            stale_age: DEFAULT_STALE_AGE,
            keep_alive: Some(DEFAULT_STALE_AGE / 4),
            pid_mode: PidMode::Own,
            observer: None,
            bare_pids_are_local: false,
        }
    }
}

impl std::fmt::Debug for LockOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockOptions")
            .field("wait", &self.wait)
            .field("stale_age", &self.stale_age)
            .field("keep_alive", &self.keep_alive)
            .field("pid_mode", &self.pid_mode)
            .field("observer", &self.observer.is_some())
            .field("bare_pids_are_local", &self.bare_pids_are_local)
            .finish()
    }
}

impl LockOptions {
    /// Options that fail at once when the lock is held.
    pub fn no_wait() -> Self {
        LockOptions {
            wait: Wait::NoWait,
            ..Self::default()
        }
    }

    /// Options that wait at most `timeout`.
    pub fn timeout(timeout: Duration) -> Self {
        LockOptions {
            wait: Wait::timeout(timeout),
            ..Self::default()
        }
    }

    pub(crate) fn lockfile_options(&self) -> Options {
        Options {
            wait: self.wait,
            stale_age: self.stale_age,
            pid_mode: self.pid_mode,
            observer: self.observer.clone(),
            bare_pids_are_local: self.bare_pids_are_local,
            ..Options::default()
        }
    }
}

/// A held dotlock. Dropping it releases the lock (errors ignored); call
/// [`LockGuard::release`] to see them.
///
/// ```
/// use spoollock::{LockGuard, LockOptions};
/// # let dir = std::env::temp_dir().join(format!("sl-guard-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// let mailbox = dir.join("inbox");
/// let guard = LockGuard::acquire(&mailbox, &LockOptions::no_wait())?;
/// assert!(dir.join("inbox.lock").exists());
/// assert!(guard.check()?);
/// guard.touch()?;
/// guard.release()?;
/// assert!(!dir.join("inbox.lock").exists());
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), spoollock::Error>(())
/// ```
#[derive(Debug)]
pub struct LockGuard {
    held: Option<Held>,
    /// The process that took the lock. A child forked while it is held has
    /// a copy of this guard, but neither the keep-alive thread nor the
    /// helper session is the child's: releasing there would remove the
    /// parent's lock (or wait forever for a thread the child does not
    /// have), so the child's copy leaves everything to the parent.
    taker: u32,
}

/// How the lock is held: in-process, or by a helper session.
#[derive(Debug)]
enum Held {
    Direct {
        lock: Arc<Dotlock>,
        keep_alive: Option<KeepAlive>,
    },
    /// The helper keeps the lock fresh itself and removes it when the
    /// session ends, even if this process dies.
    Helper(Mutex<HelperSession>),
}

impl LockGuard {
    /// Lock `path` by creating `path.lock` next to it.
    pub fn acquire(path: &Path, opts: &LockOptions) -> Result<LockGuard> {
        Self::acquire_target(&LockTarget::for_file(path)?, opts)
    }

    /// Lock with an explicitly named lock file.
    pub fn acquire_lock_file(lock: &Path, opts: &LockOptions) -> Result<LockGuard> {
        Self::acquire_target(&LockTarget::lock_file(lock)?, opts)
    }

    /// Lock a [`LockTarget`]: in-process, or through `spoollock-helper`
    /// when the directory is a spool only the mail group may write.
    pub fn acquire_target(target: &LockTarget, opts: &LockOptions) -> Result<LockGuard> {
        Self::acquire_in(target, None, opts)
    }

    /// [`acquire_target`](Self::acquire_target) with the lock's directory
    /// already open (a mailbox lock keeps one for its own lookups, and its
    /// inotify watch then serves every round of its two-lock loop).
    pub(crate) fn acquire_in(
        target: &LockTarget,
        dir: Option<&LockDir>,
        opts: &LockOptions,
    ) -> Result<LockGuard> {
        if privileged::needs_helper(&target.dir)? {
            let session =
                HelperSession::lock(target, opts.wait, opts.stale_age, LockMode::Session)?;
            return Ok(LockGuard {
                held: Some(Held::Helper(Mutex::new(session))),
                taker: std::process::id(),
            });
        }
        let dir = match dir {
            Some(dir) => dir.clone(),
            None => LockDir::open(&target.dir)?,
        };
        let lock = Arc::new(
            acquire(&dir, &target.name, &opts.lockfile_options())
                .map_err(|e| not_a_lock(target, e))?,
        );
        let keep_alive = opts
            .keep_alive
            .map(|every| KeepAlive::start(Arc::clone(&lock), every));
        Ok(LockGuard {
            held: Some(Held::Direct { lock, keep_alive }),
            taker: std::process::id(),
        })
    }

    fn held(&self) -> &Held {
        self.held.as_ref().expect("lock present until released")
    }

    /// True if the lock is taken through the setgid helper.
    pub fn via_helper(&self) -> bool {
        matches!(self.held(), Held::Helper(_))
    }

    /// Refresh the lock now.
    pub fn touch(&self) -> Result<()> {
        match self.held() {
            Held::Direct { lock, .. } => Ok(lock.touch()?),
            Held::Helper(session) => session_of(session).touch(),
        }
    }

    /// True if the lock file is still the one we made.
    pub fn check(&self) -> Result<bool> {
        match self.held() {
            Held::Direct { lock, .. } => Ok(lock.is_held()?),
            Held::Helper(session) => session_of(session).check(),
        }
    }

    /// Record (or clear) an append in progress to the protected file in
    /// the lock's content (see `MailboxLock::append`). `lock_path` is the
    /// lock file's path, used on the helper path.
    pub(crate) fn set_append_mark(&self, lock_path: &Path, mark: Option<AppendMark>) -> Result<()> {
        match self.held() {
            Held::Direct { lock, .. } => Ok(lock.set_append_mark(mark)?),
            Held::Helper(session) => session_of(session).set_append_mark(lock_path, mark),
        }
    }

    /// Release the lock, reporting whether it was still ours.
    ///
    /// In a child forked while the lock was held, the guard is a copy and
    /// the lock stays its taker's: `release` there returns
    /// [`LockError::NotOurs`] and dropping the copy does nothing.
    pub fn release(mut self) -> Result<()> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> Result<()> {
        if self.held.is_none() {
            return Ok(());
        }
        if std::process::id() != self.taker {
            // A forked child's copy: see `taker`. The keep-alive thread's
            // handle and the lock are the parent's and are not touched; of
            // a helper session only this process's pipe ends are closed.
            match self.held.take() {
                Some(Held::Helper(session)) => session
                    .into_inner()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .abandon(),
                other => std::mem::forget(other),
            }
            return Err(Error::Lock(LockError::NotOurs));
        }
        match self.held.take() {
            None => Ok(()),
            Some(Held::Helper(session)) => session
                .into_inner()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .release(),
            Some(Held::Direct { lock, keep_alive }) => {
                if let Some(keep_alive) = keep_alive {
                    keep_alive.stop();
                }
                let lock = Arc::try_unwrap(lock)
                    .map_err(|_| Error::Internal("the keep-alive still holds the lock"))?;
                Ok(lock.release()?)
            }
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let _ = self.release_inner();
    }
}

fn session_of(session: &Mutex<HelperSession>) -> std::sync::MutexGuard<'_, HelperSession> {
    session
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The state of the lock protecting `target`, without taking it.
///
/// The caller's own lock on a mail-group spool is judged by the helper
/// (against the spool's clock, read from a file it may create there).
/// Anything else is read directly: the spool is readable, and a lock the
/// helper would refuse to take for us (another user's) or a missing
/// helper is no reason not to say who holds it.
pub fn lock_state(target: &LockTarget, opts: &LockOptions) -> Result<LockState> {
    if privileged::needs_helper(&target.dir).unwrap_or(false) && is_own_spool_lock(target) {
        return privileged::check(target);
    }
    let dir = LockDir::open(&target.dir)?;
    check(&dir, &target.name, &opts.lockfile_options()).map_err(|e| not_a_lock(target, e))
}

/// Create a lock that stays after this process exits (`spoollock lock`,
/// `dotlockfile -l`), naming the process `opts.pid_mode` says (the helper
/// accepts only a live process or none).
pub fn lock_detached(target: &LockTarget, opts: &LockOptions) -> Result<()> {
    if privileged::needs_helper(&target.dir)? {
        let holder_pid = crate::detached::holder_pid(opts.pid_mode);
        return privileged::lock_detached(target, opts.wait, opts.stale_age, holder_pid);
    }
    let dir = LockDir::open(&target.dir)?;
    acquire(&dir, &target.name, &opts.lockfile_options())
        .map_err(|e| not_a_lock(target, e))?
        .leak();
    Ok(())
}

/// Remove a lock made by [`lock_detached`]: only one owned by the caller
/// (root may remove any, as with `rm`).
///
/// On a spool served by the helper, a lock that another live helper
/// session of the caller holds (a running `spoollock run --mailbox`, or a
/// [`LockGuard`] of another program) is refused with
/// [`spoollock_protocol::Refusal::HeldBySession`], unless `force`: that
/// session would go on without its lock. (On a directory the caller writes
/// there are no helper sessions; `force` changes nothing there.)
pub fn unlock_by_name(target: &LockTarget, force: bool) -> Result<()> {
    if privileged::needs_helper(&target.dir)? {
        return privileged::by_name(target, true, force);
    }
    let dir = LockDir::open(&target.dir)?;
    remove_by_name(&dir, &target.name, &Options::default(), is_mine)
        .map_err(|e| not_a_lock(target, e))
}

/// Refresh a lock made by [`lock_detached`] (only the caller's own; a live
/// helper session's only when `force`, as for [`unlock_by_name`]).
pub fn touch_by_name(target: &LockTarget, force: bool) -> Result<()> {
    if privileged::needs_helper(&target.dir)? {
        return privileged::by_name(target, false, force);
    }
    let dir = LockDir::open(&target.dir)?;
    spoollock_lockfile::touch_by_name(&dir, &target.name, is_mine)
        .map_err(|e| not_a_lock(target, e))
}

/// A lock error on the direct path, telling a regular file too large to
/// be a lock (the lock crate's [`LockError::NotRegularFile`] covers it
/// with symlinks and directories) apart as [`Error::NotALock`], as the
/// helper does.
pub(crate) fn not_a_lock(target: &LockTarget, e: LockError) -> Error {
    use std::os::unix::fs::MetadataExt;
    if e != LockError::NotRegularFile {
        return Error::Lock(e);
    }
    let path = target.path();
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() && m.len() > spoollock_lockfile::MAX_CONTENT as u64 => {
            Error::NotALock {
                path,
                size: m.len(),
                owner: m.uid(),
            }
        }
        _ => Error::Lock(e),
    }
}

/// `<login>.lock`, the only lock the helper takes for the caller.
fn is_own_spool_lock(target: &LockTarget) -> bool {
    crate::target::login().is_ok_and(|login| target.name == *format!("{login}.lock"))
}

/// Locks made by name belong to the user who created the file.
fn is_mine(_: &spoollock_lockfile::LockContent, owner: u32) -> bool {
    let me = nix::unistd::getuid();
    owner == me.as_raw() || me.is_root()
}

/// A thread that refreshes a held lock until stopped.
#[derive(Debug)]
struct KeepAlive {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl KeepAlive {
    fn start(lock: Arc<Dotlock>, every: Duration) -> KeepAlive {
        use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};
        let (stop, stopped) = mpsc::channel::<()>();
        // Process signals are for the application's threads, not ours: the
        // thread inherits a full mask from the moment it exists.
        let mut previous = SigSet::empty();
        let blocked = pthread_sigmask(
            SigmaskHow::SIG_SETMASK,
            Some(&SigSet::all()),
            Some(&mut previous),
        );
        let thread = std::thread::spawn(move || loop {
            match stopped.recv_timeout(every) {
                Err(RecvTimeoutError::Timeout) => {
                    // A lock that is no longer ours cannot be saved by
                    // refreshing; the holder finds out at release.
                    if lock.touch().is_err() {
                        return;
                    }
                }
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
        });
        if blocked.is_ok() {
            let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&previous), None);
        }
        KeepAlive { stop, thread }
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}
