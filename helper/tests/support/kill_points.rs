//! Killing the helper at exact points of its work, as a caller who watches
//! the world-readable spool can: an inotify watch on the spool, read by a
//! thread that runs `SCHED_FIFO` on the CPU the helper is pinned to. When
//! the helper's system call makes the chosen change, the kernel wakes the
//! watcher, which preempts the helper before it returns to user space and
//! sends it `SIGKILL`: the helper dies right after that change, without
//! running another instruction of its own.
//!
//! One watcher serves many helpers in turn ([`Killer::arm`] for each), so
//! a loop of thousands of kills does not pay a thread per helper.

#![allow(dead_code)]

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{gettid, pipe, Pid};

/// How long to wait for the watcher to answer: only a bound.
const ANSWER: Duration = Duration::from_secs(20);

/// One change in the spool, as inotify reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub mask: AddWatchFlags,
    pub name: String,
}

impl Change {
    pub fn is(&self, flag: AddWatchFlags) -> bool {
        self.mask.contains(flag)
    }
}

/// The events that change the spool (reads are not watched).
pub fn change_flags() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_CLOSE_WRITE
}

/// When to kill the armed helper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillAt {
    /// Never (a dry run that only records the changes).
    Never,
    /// At the n-th change (1-based).
    Nth(usize),
    /// At the first change carrying this flag.
    First(AddWatchFlags),
}

enum Control {
    Arm(u32, KillAt),
    Collect(Sender<(Vec<Change>, bool)>),
    Stop,
}

/// The watcher thread and its control channel.
pub struct Killer {
    control: Sender<Control>,
    wake: OwnedFd,
    thread: Option<JoinHandle<()>>,
    cpu: usize,
    saved: CpuSet,
}

impl Killer {
    /// Watch `dir` from a `SCHED_FIFO` thread pinned to one CPU, and pin
    /// the calling thread (so every helper it spawns from now on) to the
    /// same CPU until [`Killer::stop`].
    pub fn start(dir: &Path) -> Killer {
        let saved = sched_getaffinity(Pid::from_raw(0)).expect("sched_getaffinity");
        let cpu = (0..CpuSet::count())
            .rev()
            .find(|&c| saved.is_set(c).unwrap_or(false))
            .expect("some CPU is allowed");
        let mut one = CpuSet::new();
        one.set(cpu).unwrap();
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).unwrap();
        inotify.add_watch(dir, change_flags()).unwrap();
        let (wake_read, wake) = pipe().unwrap();
        let (control, commands) = channel();
        let (ready_tx, ready) = channel();
        let thread = std::thread::spawn(move || {
            sched_setaffinity(Pid::from_raw(0), &one).expect("pin the watcher");
            let tid = gettid().as_raw().to_string();
            let rt = Command::new("chrt")
                .args(["--fifo", "--pid", "50", &tid])
                .status()
                .is_ok_and(|s| s.success());
            ready_tx.send(rt).unwrap();
            watch(&inotify, &wake_read, &commands);
        });
        let rt = ready.recv_timeout(ANSWER).expect("the watcher starts");
        assert!(rt, "cannot make the watcher SCHED_FIFO (chrt, util-linux)");
        sched_setaffinity(Pid::from_raw(0), &one).expect("pin the test thread");
        Killer {
            control,
            wake,
            thread: Some(thread),
            cpu,
            saved,
        }
    }

    /// The CPU the watcher and the helpers run on.
    pub fn cpu(&self) -> usize {
        self.cpu
    }

    fn send(&self, c: Control) {
        self.control.send(c).unwrap();
        nix::unistd::write(&self.wake, b"x").unwrap();
    }

    /// Forget earlier changes and kill `pid` at `at`. Call it before the
    /// helper can change anything (before sending it a request).
    pub fn arm(&self, pid: u32, at: KillAt) {
        self.send(Control::Arm(pid, at));
    }

    /// The changes seen since [`Killer::arm`] (everything already queued
    /// included: call it once the helper is gone), and whether the kill
    /// was sent.
    pub fn collect(&self) -> (Vec<Change>, bool) {
        let (tx, rx) = channel();
        self.send(Control::Collect(tx));
        rx.recv_timeout(ANSWER).expect("the watcher answers")
    }

    /// Stop the watcher and unpin the calling thread.
    pub fn stop(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.send(Control::Stop);
            let _ = thread.join();
            let _ = sched_setaffinity(Pid::from_raw(0), &self.saved);
        }
    }
}

impl Drop for Killer {
    fn drop(&mut self) {
        self.finish();
    }
}

fn watch(inotify: &Inotify, wake: &OwnedFd, commands: &Receiver<Control>) {
    let mut target: Option<(u32, KillAt)> = None;
    let mut seen: Vec<Change> = Vec::new();
    let mut killed = false;
    let read = |seen: &mut Vec<Change>, target: &Option<(u32, KillAt)>, killed: &mut bool| {
        while let Ok(events) = inotify.read_events() {
            for e in events {
                let change = Change {
                    mask: e.mask,
                    name: e
                        .name
                        .unwrap_or_else(OsString::new)
                        .to_string_lossy()
                        .into_owned(),
                };
                seen.push(change.clone());
                if let Some((pid, at)) = target {
                    let now = match at {
                        KillAt::Never => false,
                        KillAt::Nth(n) => seen.len() == *n,
                        KillAt::First(flag) => {
                            change.mask.contains(*flag)
                                && seen.iter().filter(|c| c.mask.contains(*flag)).count() == 1
                        }
                    };
                    if now && !*killed {
                        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
                        *killed = true;
                    }
                }
            }
        }
    };
    loop {
        let mut fds = [
            PollFd::new(inotify.as_fd(), PollFlags::POLLIN),
            PollFd::new(wake.as_fd(), PollFlags::POLLIN),
        ];
        let _ = poll(&mut fds, PollTimeout::from(1000u16));
        let inotify_ready = fds[0].any().unwrap_or(false);
        let woken = fds[1].any().unwrap_or(false);
        if inotify_ready {
            read(&mut seen, &target, &mut killed);
        }
        if woken {
            let mut buf = [0u8; 64];
            let _ = nix::unistd::read(wake, &mut buf);
            while let Ok(command) = commands.try_recv() {
                match command {
                    Control::Arm(pid, at) => {
                        read(&mut seen, &None, &mut killed);
                        seen.clear();
                        killed = false;
                        target = Some((pid, at));
                    }
                    Control::Collect(reply) => {
                        read(&mut seen, &target, &mut killed);
                        let _ = reply.send((std::mem::take(&mut seen), killed));
                        target = None;
                    }
                    Control::Stop => return,
                }
            }
        }
    }
}
