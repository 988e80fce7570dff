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

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process here. The
/// workers' own copy of `spoollock_test_support::monotonic_ns`: a library
/// may not depend on that dev-only crate.
pub fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// Why nfs-sim scenarios cannot run here, if they cannot.
pub fn fuse_unavailable() -> Option<String> {
    nfs_sim::unavailable_reason()
}
