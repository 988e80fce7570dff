//! Waiting for a busy lock: how long (deadline, retry count, not at all),
//! bounded exponential backoff with jitter, and an early wake-up from
//! inotify when the lock name disappears from the directory.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::content::Holder;
use crate::dir::LockDir;
use crate::error::{LockError, Op, Result};
use crate::tempfile::random_u64;

/// How long to keep trying for a busy lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Fail at once with [`LockError::Busy`].
    NoWait,
    /// Give up with [`LockError::Busy`] after this many waits.
    Retries(u32),
    /// Give up with [`LockError::Timeout`] at this instant.
    Until(Instant),
    /// Wait as long as it takes.
    Forever,
}

impl Wait {
    /// A deadline `timeout` from now.
    pub fn timeout(timeout: Duration) -> Wait {
        match Instant::now().checked_add(timeout) {
            Some(at) => Wait::Until(at),
            None => Wait::Forever,
        }
    }
}

/// Backoff bounds: the first pause and the longest one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first pause after a failed attempt.
    pub first: Duration,
    /// The longest pause: each pause doubles up to this.
    pub max: Duration,
}

impl Default for Backoff {
    /// 1 ms doubling up to 100 ms: a hand-off is seen within a few ms even
    /// without inotify (NFS), and a waiter costs at most ten polls a second.
    fn default() -> Self {
        Backoff {
            first: Duration::from_millis(1),
            max: Duration::from_millis(100),
        }
    }
}

/// A wait policy spent over repeated attempts, with [`Backoff`] between
/// them: what [`acquire`](crate::acquire) waits with, for callers that
/// retry something else within one policy (an fcntl lock polled for, a
/// set of locks taken together). It only computes the pauses; the caller
/// sleeps.
#[derive(Debug, Clone)]
pub struct Retry {
    wait: Wait,
    backoff: Backoff,
    next: Duration,
    waits: u32,
}

impl Retry {
    /// A fresh policy: no pause taken yet, the backoff at its first step.
    pub fn new(wait: Wait, backoff: Backoff) -> Retry {
        Retry {
            wait,
            backoff,
            next: backoff.first,
            waits: 0,
        }
    }

    /// What is left of the policy, for one attempt that waits by itself
    /// (the retries taken so far deducted).
    pub fn remaining(&self) -> Wait {
        match self.wait {
            Wait::Retries(n) => Wait::Retries(n.saturating_sub(self.waits)),
            other => other,
        }
    }

    /// After a failed attempt: the pause before the next one (between half
    /// and all of the current backoff step, so waiters that started
    /// together spread out, and never past the deadline), or the error the
    /// policy calls for, naming `holder`: [`LockError::Busy`] without
    /// waits or once the retries are used up, [`LockError::Timeout`] once
    /// the deadline has passed.
    pub fn next_pause(&mut self, holder: Option<Holder>) -> Result<Duration> {
        let holder = holder.map(Box::new);
        let pause = self.jittered();
        let pause = match self.wait {
            Wait::NoWait => return Err(LockError::Busy { holder }),
            Wait::Retries(n) if self.waits >= n => return Err(LockError::Busy { holder }),
            Wait::Retries(_) | Wait::Forever => pause,
            Wait::Until(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(LockError::Timeout { holder });
                }
                pause.min(left)
            }
        };
        self.waits += 1;
        self.next = (self.next * 2).min(self.backoff.max);
        Ok(pause)
    }

    /// Start the backoff again from its first step; what was spent of the
    /// policy stays spent.
    pub fn restart_backoff(&mut self) {
        self.next = self.backoff.first;
    }

    /// True once the policy's deadline, if it has one, has passed.
    pub fn deadline_passed(&self) -> bool {
        matches!(self.wait, Wait::Until(deadline) if Instant::now() >= deadline)
    }

    fn jittered(&self) -> Duration {
        let step = self.next.as_nanos() as u64;
        let half = step / 2;
        Duration::from_nanos(half + random_u64() % (step - half).max(1))
    }
}

/// The waiting state of one acquisition.
#[derive(Debug)]
pub(crate) struct Waiter<'a> {
    retry: Retry,
    dir: &'a LockDir,
    name: &'a OsStr,
    inotify: Option<Inotify>,
    inotify_tried: bool,
    interrupt: Option<Arc<OwnedFd>>,
}

impl<'a> Waiter<'a> {
    pub fn new(
        dir: &'a LockDir,
        name: &'a OsStr,
        wait: Wait,
        backoff: Backoff,
        interrupt: Option<Arc<OwnedFd>>,
    ) -> Waiter<'a> {
        Waiter {
            retry: Retry::new(wait, backoff),
            dir,
            name,
            inotify: None,
            inotify_tried: false,
            interrupt,
        }
    }

    /// Pause before the next attempt, or give up with the error the
    /// caller's wait policy calls for.
    pub fn pause(&mut self, holder: Option<Holder>) -> Result<()> {
        let pause = self.retry.next_pause(holder)?;
        self.sleep(pause)
    }

    fn watch(&mut self) {
        if self.inotify_tried {
            return;
        }
        self.inotify_tried = true;
        if let Some(kept) = self.dir.take_inotify() {
            // Events queued since its last use are about other waits.
            while kept.read_events().is_ok_and(|events| !events.is_empty()) {}
            self.inotify = Some(kept);
            return;
        }
        let Ok(inotify) = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC) else {
            return;
        };
        let mask =
            AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM | AddWatchFlags::IN_ONLYDIR;
        if inotify
            .add_watch(self.dir.proc_path().as_str(), mask)
            .is_ok()
        {
            self.inotify = Some(inotify);
        }
    }

    /// Sleep for `pause`, or less when the lock name is removed or the
    /// interrupt descriptor becomes readable.
    fn sleep(&mut self, pause: Duration) -> Result<()> {
        // Already interrupted (the helper's client sent more or went away):
        // end before setting up a watch, whose teardown costs a kernel
        // grace period of milliseconds when its `LockDir` is dropped.
        if let Some(fd) = &self.interrupt {
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            if poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0) {
                return Err(LockError::Interrupted);
            }
        }
        self.watch();
        let until = Instant::now() + pause;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            let mut fds = Vec::with_capacity(2);
            if let Some(i) = &self.inotify {
                fds.push(PollFd::new(i.as_fd(), PollFlags::POLLIN));
            }
            if let Some(fd) = &self.interrupt {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
            }
            let ms = PollTimeout::try_from(left.as_millis().max(1)).unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, ms) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(errno) => {
                    return Err(LockError::Io {
                        op: Op::Wait,
                        errno,
                    })
                }
            }
            let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            let interrupt_ready = self.interrupt.is_some() && fds.last().is_some_and(ready);
            let inotify_ready = self.inotify.is_some() && fds.first().is_some_and(ready);
            drop(fds);
            if interrupt_ready {
                return Err(LockError::Interrupted);
            }
            if inotify_ready && self.lock_name_removed() {
                return Ok(());
            }
        }
    }

    /// Drain inotify; true if one of the events was about our lock name.
    fn lock_name_removed(&self) -> bool {
        let Some(inotify) = &self.inotify else {
            return false;
        };
        let mut hit = false;
        while let Ok(events) = inotify.read_events() {
            if events.is_empty() {
                break;
            }
            hit |= events.iter().any(|e| {
                e.name.as_deref() == Some(self.name)
                    || e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW)
            });
        }
        hit
    }
}

impl Drop for Waiter<'_> {
    /// Hand the inotify instance back to the directory instead of closing
    /// it here: a close waits for the kernel, and the caller is about to
    /// use the lock it just got.
    fn drop(&mut self) {
        if let Some(inotify) = self.inotify.take() {
            self.dir.keep_inotify(inotify);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_spends_the_policy_with_bounded_jittered_backoff() {
        let backoff = Backoff {
            first: Duration::from_millis(4),
            max: Duration::from_millis(10),
        };
        let mut retry = Retry::new(Wait::Retries(3), backoff);
        let steps = [4, 8, 10].map(Duration::from_millis);
        for (used, step) in steps.into_iter().enumerate() {
            assert_eq!(retry.remaining(), Wait::Retries(3 - used as u32));
            let pause = retry.next_pause(None).unwrap();
            assert!(pause >= step / 2 && pause <= step, "{pause:?} for {step:?}");
        }
        assert_eq!(retry.remaining(), Wait::Retries(0));
        assert_eq!(
            retry.next_pause(None),
            Err(LockError::Busy { holder: None })
        );
        retry.restart_backoff();
        assert_eq!(retry.remaining(), Wait::Retries(0));

        let mut now = Retry::new(Wait::NoWait, backoff);
        assert_eq!(now.next_pause(None), Err(LockError::Busy { holder: None }));

        let mut past = Retry::new(Wait::Until(Instant::now()), backoff);
        assert!(past.deadline_passed());
        assert_eq!(
            past.next_pause(None),
            Err(LockError::Timeout { holder: None })
        );
        let mut later = Retry::new(Wait::timeout(Duration::from_secs(60)), backoff);
        assert!(!later.deadline_passed());
        assert!(later.next_pause(None).unwrap() <= backoff.first);
    }
}
