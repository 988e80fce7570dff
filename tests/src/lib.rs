//! Shared harness of spoollock's end-to-end tests.
//!
//! - [`torture`]: N worker processes spread over one or more directories
//!   (a local directory, or several nfs-sim mounts of one backing
//!   directory) x M lock cycles, holders killed with SIGKILL at random,
//!   hold intervals (CLOCK_MONOTONIC) checked for overlap and appended
//!   records checked for loss and duplication.
//! - [`append`]: writer processes on several nfs-sim mounts appending
//!   numbered messages to one mbox with `MailboxLock::append`, the mbox
//!   checked for lost, duplicated and torn messages.
//! - [`naive`]: the lock every NFS veteran warns about (O_EXCL create,
//!   trust the return code, judge staleness by the local clock), to show
//!   that the simulated file system bites.

pub mod append;
pub mod naive;
pub mod torture;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A fresh directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        Scratch::under(&std::env::temp_dir(), tag)
    }

    pub fn under(base: &Path, tag: &str) -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = base.join(format!(
            "spoollock-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process here.
pub fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// Why nfs-sim scenarios cannot run here, if they cannot.
pub fn fuse_unavailable() -> Option<String> {
    nfs_sim::unavailable_reason()
}

/// A scratch tree for two simulated NFS clients of one server: `backing/`
/// (the server's directory) and the mount points `a/` and `b/`. `None`,
/// with the reason printed, where FUSE cannot be used.
pub fn two_client_scratch(tag: &str) -> Option<Scratch> {
    if let Some(reason) = fuse_unavailable() {
        eprintln!("skipping: {reason}");
        return None;
    }
    let scratch = Scratch::new(tag);
    for d in ["backing", "a", "b"] {
        std::fs::create_dir_all(scratch.path().join(d)).unwrap();
    }
    Some(scratch)
}
