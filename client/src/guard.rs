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
/// assert!(guard.still_held()?);
/// guard.touch()?;
/// guard.release()?;
/// assert!(!dir.join("inbox.lock").exists());
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), spoollock::Error>(())
/// ```
#[derive(Debug)]
pub struct LockGuard {
    held: Option<HeldLock>,
    /// The process that took the lock. A child forked while it is held has
    /// a copy of this guard, but neither the keep-alive thread nor the
    /// helper session is the child's: releasing there would remove the
    /// parent's lock (or wait forever for a thread the child does not
    /// have), so the child's copy leaves everything to the parent.
    taker: u32,
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
        Self::acquire_in(Route::of(target)?, target, None, opts)
    }

    /// [`acquire_target`](Self::acquire_target) by a route already decided
    /// and with the lock's directory already open (a mailbox lock decides
    /// and opens once: its inotify watch then serves every round of its
    /// two-lock loop, which asks nothing of the directory again).
    pub(crate) fn acquire_in(
        route: Route,
        target: &LockTarget,
        dir: Option<&LockDir>,
        opts: &LockOptions,
    ) -> Result<LockGuard> {
        let held = route.acquire(target, dir, opts)?;
        Ok(LockGuard {
            held: Some(held),
            taker: std::process::id(),
        })
    }

    fn held(&self) -> &HeldLock {
        self.held.as_ref().expect("lock present until released")
    }

    /// True if the lock is taken through the setgid helper.
    pub fn via_helper(&self) -> bool {
        matches!(self.held(), HeldLock::Helper(_))
    }

    /// Refresh the lock now.
    pub fn touch(&self) -> Result<()> {
        self.held().touch()
    }

    /// True if the lock file is still the one we made (false: it was
    /// removed, or broken as stale and perhaps taken by someone else).
    pub fn still_held(&self) -> Result<bool> {
        self.held().still_held()
    }

    /// Record (or clear) an append in progress to the protected file in
    /// the lock's content (see `MailboxLock::append`). `lock_path` is the
    /// lock file's path, used on the helper path.
    pub(crate) fn set_append_mark(&self, lock_path: &Path, mark: Option<AppendMark>) -> Result<()> {
        self.held().set_append_mark(lock_path, mark)
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
        let Some(held) = self.held.take() else {
            return Ok(());
        };
        if std::process::id() != self.taker {
            // A forked child's copy: see `taker`.
            held.abandon();
            return Err(Error::Lock(LockError::NotOurs));
        }
        held.release()
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let _ = self.release_inner();
    }
}

/// The state of the lock protecting `target`, without taking it.
///
/// The caller's own lock on a mail-group spool is judged by the helper
/// (against the spool's clock, read from a file it may create there).
/// Anything else is read directly: the spool is readable, and a lock the
/// helper would refuse to take for us (another user's) or a missing
/// helper is no reason not to say who holds it.
pub fn lock_state(target: &LockTarget, opts: &LockOptions) -> Result<LockState> {
    Route::for_state(target).state(target, opts)
}

/// Create a lock that stays after this process exits (`spoollock lock`,
/// `dotlockfile -l`), naming the process `opts.pid_mode` says (the helper
/// accepts only a live process or none).
pub fn lock_detached(target: &LockTarget, opts: &LockOptions) -> Result<()> {
    Route::of(target)?.lock_detached(target, opts)
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
    Route::of(target)?.by_name(target, ByName::Remove, force)
}

/// Refresh a lock made by [`lock_detached`] (only the caller's own; a live
/// helper session's only when `force`, as for [`unlock_by_name`]).
pub fn touch_by_name(target: &LockTarget, force: bool) -> Result<()> {
    Route::of(target)?.by_name(target, ByName::Touch, force)
}

/// The two ways a lock is handled: in this process through the lock crate
/// (`Direct`), or by `spoollock-helper` on a spool only the mail group may
/// write (`Helper`). The choice is made here ([`Route::of`]) and each
/// operation on a lock not held by this process is written once per route
/// below; a held lock's are on [`HeldLock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Direct,
    Helper,
}

/// What [`Route::by_name`] does to a lock made by [`lock_detached`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ByName {
    Remove,
    Touch,
}

impl Route {
    /// The route for taking, removing or refreshing a lock of `target`.
    pub(crate) fn of(target: &LockTarget) -> Result<Route> {
        Ok(if privileged::needs_helper(&target.dir)? {
            Route::Helper
        } else {
            Route::Direct
        })
    }

    /// The route for reading a lock's state: the helper only for the
    /// caller's own lock on a mail-group spool (see [`lock_state`]); an
    /// error deciding means direct.
    fn for_state(target: &LockTarget) -> Route {
        match Route::of(target) {
            Ok(Route::Helper) if is_own_spool_lock(target) => Route::Helper,
            _ => Route::Direct,
        }
    }

    /// Take the lock for a [`LockGuard`], kept fresh while held: by the
    /// keep-alive thread, or by the helper itself.
    fn acquire(
        self,
        target: &LockTarget,
        dir: Option<&LockDir>,
        opts: &LockOptions,
    ) -> Result<HeldLock> {
        match self {
            Route::Helper => {
                let session =
                    HelperSession::lock(target, opts.wait, opts.stale_age, LockMode::Session)?;
                Ok(HeldLock::Helper(Mutex::new(session)))
            }
            Route::Direct => {
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
                Ok(HeldLock::Direct { lock, keep_alive })
            }
        }
    }

    /// See [`lock_state`].
    fn state(self, target: &LockTarget, opts: &LockOptions) -> Result<LockState> {
        match self {
            Route::Helper => privileged::check(target),
            Route::Direct => {
                let dir = LockDir::open(&target.dir)?;
                check(&dir, &target.name, &opts.lockfile_options())
                    .map_err(|e| not_a_lock(target, e))
            }
        }
    }

    /// See [`lock_detached`].
    fn lock_detached(self, target: &LockTarget, opts: &LockOptions) -> Result<()> {
        match self {
            Route::Helper => {
                let holder_pid = crate::detached::holder_pid(opts.pid_mode);
                privileged::lock_detached(target, opts.wait, opts.stale_age, holder_pid)
            }
            Route::Direct => {
                let dir = LockDir::open(&target.dir)?;
                acquire(&dir, &target.name, &opts.lockfile_options())
                    .map_err(|e| not_a_lock(target, e))?
                    .detach();
                Ok(())
            }
        }
    }

    /// See [`unlock_by_name`] and [`touch_by_name`].
    fn by_name(self, target: &LockTarget, what: ByName, force: bool) -> Result<()> {
        match self {
            Route::Helper => privileged::by_name(target, what == ByName::Remove, force),
            Route::Direct => {
                let dir = LockDir::open(&target.dir)?;
                match what {
                    ByName::Remove => {
                        remove_by_name(&dir, &target.name, &Options::default(), is_mine)
                    }
                    ByName::Touch => spoollock_lockfile::touch_by_name(&dir, &target.name, is_mine),
                }
                .map_err(|e| not_a_lock(target, e))
            }
        }
    }
}

/// The lock a [`LockGuard`] holds, by [`Route`].
#[derive(Debug)]
enum HeldLock {
    /// Held in-process: the lock crate's handle, shared with the
    /// keep-alive thread that refreshes it.
    Direct {
        lock: Arc<Dotlock>,
        keep_alive: Option<KeepAlive>,
    },
    /// The helper keeps the lock fresh itself and removes it when the
    /// session ends, even if this process dies.
    Helper(Mutex<HelperSession>),
}

impl HeldLock {
    fn touch(&self) -> Result<()> {
        match self {
            HeldLock::Direct { lock, .. } => Ok(lock.touch()?),
            HeldLock::Helper(session) => session_of(session).touch(),
        }
    }

    fn still_held(&self) -> Result<bool> {
        match self {
            HeldLock::Direct { lock, .. } => Ok(lock.is_held()?),
            HeldLock::Helper(session) => session_of(session).check(),
        }
    }

    fn set_append_mark(&self, lock_path: &Path, mark: Option<AppendMark>) -> Result<()> {
        match self {
            HeldLock::Direct { lock, .. } => Ok(lock.set_append_mark(mark)?),
            HeldLock::Helper(session) => session_of(session).set_append_mark(lock_path, mark),
        }
    }

    /// Remove the lock, reporting whether it was still ours.
    fn release(self) -> Result<()> {
        match self {
            HeldLock::Helper(session) => into_session(session).release(),
            HeldLock::Direct { lock, keep_alive } => {
                if let Some(keep_alive) = keep_alive {
                    keep_alive.stop();
                }
                let lock = Arc::try_unwrap(lock)
                    .map_err(|_| Error::Internal("the keep-alive still holds the lock"))?;
                Ok(lock.release()?)
            }
        }
    }

    /// Let go of a forked child's copy: the keep-alive thread's handle and
    /// the lock are the parent's and are not touched; of a helper session
    /// only this process's pipe ends are closed.
    fn abandon(self) {
        match self {
            HeldLock::Helper(session) => into_session(session).abandon(),
            direct @ HeldLock::Direct { .. } => std::mem::forget(direct),
        }
    }
}

fn session_of(session: &Mutex<HelperSession>) -> std::sync::MutexGuard<'_, HelperSession> {
    session
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn into_session(session: Mutex<HelperSession>) -> HelperSession {
    session
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
