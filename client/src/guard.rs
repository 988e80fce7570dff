//! The lock guard users hold: acquire on a path's `.lock` sibling, refresh
//! while held, release on drop.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use spoollock_lockfile::{
    acquire, check, Dotlock, LockDir, LockState, Observer, Options, PidMode, Wait,
    DEFAULT_STALE_AGE,
};

use crate::error::{Error, Result};
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
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            wait: Wait::Forever,
            stale_age: DEFAULT_STALE_AGE,
            keep_alive: Some(DEFAULT_STALE_AGE / 4),
            pid_mode: PidMode::Own,
            observer: None,
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
    lock: Option<Arc<Dotlock>>,
    keep_alive: Option<KeepAlive>,
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

    /// Lock a [`LockTarget`].
    pub fn acquire_target(target: &LockTarget, opts: &LockOptions) -> Result<LockGuard> {
        let dir = LockDir::open(&target.dir)?;
        let lock = Arc::new(acquire(&dir, &target.name, &opts.lockfile_options())?);
        let keep_alive = opts
            .keep_alive
            .map(|every| KeepAlive::start(Arc::clone(&lock), every));
        Ok(LockGuard {
            lock: Some(lock),
            keep_alive,
        })
    }

    fn lock(&self) -> &Dotlock {
        self.lock.as_deref().expect("lock present until released")
    }

    /// Refresh the lock now.
    pub fn touch(&self) -> Result<()> {
        Ok(self.lock().touch()?)
    }

    /// True if the lock file is still the one we made.
    pub fn check(&self) -> Result<bool> {
        Ok(self.lock().is_held()?)
    }

    /// Release the lock, reporting whether it was still ours.
    pub fn release(mut self) -> Result<()> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> Result<()> {
        if let Some(keep_alive) = self.keep_alive.take() {
            keep_alive.stop();
        }
        let Some(lock) = self.lock.take() else {
            return Ok(());
        };
        let lock = Arc::try_unwrap(lock)
            .map_err(|_| Error::Helper("internal: keep-alive still holds the lock".to_string()))?;
        Ok(lock.release()?)
    }

    /// Keep the lock file after this guard is gone (for `spoollock lock`).
    pub fn leak(mut self) {
        if let Some(keep_alive) = self.keep_alive.take() {
            keep_alive.stop();
        }
        if let Some(lock) = self.lock.take().and_then(|l| Arc::try_unwrap(l).ok()) {
            lock.leak();
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let _ = self.release_inner();
    }
}

/// The state of the lock protecting `target`, without taking it.
pub fn lock_state(target: &LockTarget, opts: &LockOptions) -> Result<LockState> {
    let dir = LockDir::open(&target.dir)?;
    Ok(check(&dir, &target.name, &opts.lockfile_options())?)
}

/// A thread that refreshes a held lock until stopped.
#[derive(Debug)]
struct KeepAlive {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl KeepAlive {
    fn start(lock: Arc<Dotlock>, every: Duration) -> KeepAlive {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // Process signals are for the application's threads, not ours.
            let _ = nix::sys::signal::SigSet::all().thread_block();
            loop {
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
            }
        });
        KeepAlive { stop, thread }
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}
