//! `nfs-sim`: a FUSE file system over a backing directory in which every
//! mount behaves like one NFS client of one server (the backing directory).
//!
//! The Linux NFS client is not available on test machines, but FUSE is.
//! This crate rebuilds the NFS failure modes that matter for dotlocks:
//!
//! - **Client caches.** Each mount keeps its own attribute cache (lifetime
//!   [`SimConfig::attr_ttl`] for files, [`SimConfig::dir_attr_ttl`] for
//!   directories, like `acregmin`/`acdirmin`) and its own lookup cache
//!   ([`SimConfig::entry_ttl`]), negative lookups included. Within those
//!   lifetimes `stat` on one mount does not see another mount's changes: old
//!   sizes and mtimes, files that were removed, no file where one was made.
//!   Operations that change the server (create, link, unlink, rename,
//!   write, setattr) always go to the server and are decided there, as NFS
//!   does, and update the mount's own cache with the reply.
//! - **Close-to-open.** `open()` revalidates the file's attributes (and a
//!   cached name that leads to a file that no longer exists yields `ESTALE`,
//!   after which the kernel looks the name up again, as on NFS). Switch it
//!   off with [`SimConfig::close_to_open`].
//! - **The server's clock.** Timestamps are set by the "server" (the backing
//!   file system) and shown shifted by [`SimConfig::clock_offset_ms`] (the
//!   server's clock minus this client's clock) and truncated to
//!   [`SimConfig::granularity`]. Times a client sets explicitly are taken in
//!   the client's frame and stored shifted back, so all mounts agree on them.
//! - **Lost replies** ([`Faults`]), by probability or by schedule: `link`
//!   performed but reported `EEXIST` or `EIO`, `O_EXCL` create performed but
//!   reported `EEXIST`, `unlink` and `rename` performed but reported
//!   `ENOENT`, and spurious `ESTALE` on lookup (the kernel's retry with
//!   revalidation then succeeds, as it does on NFS).
//! - **fcntl locks**, in three server modes ([`SimConfig::locks`],
//!   [`LockMode`]). POSIX and OFD record locks are served by the file
//!   system (FUSE `setlk`/`getlk`) as OFD locks, one open file description
//!   per lock owner:
//!   - [`LockMode::Server`] (the default; a server with a lock manager):
//!     on the backing file, so they exclude across mounts and processes;
//!   - [`LockMode::Local`] (a client mounted `-o nolock`): on a private
//!     in-memory stand-in per mount and file, so they exclude processes
//!     of the same mount and nothing on any other mount;
//!   - [`LockMode::Unsupported`] (a server without a lock manager, mounted
//!     without `nolock`): every lock call, set, test or unlock, POSIX or
//!     OFD, blocking or not, fails with `ENOLCK`.
//!
//!   Closing any descriptor drops the process's POSIX locks on the file.
//!   With [`SimConfig::fcntl_revalidates`] (the default, as Linux NFS
//!   does) every lock call also drops the file's cached attributes, also in
//!   the `nolock` mode (Linux does after a local lock too), but not one that
//!   fails with `ENOLCK`. A blocking `F_SETLKW` waits in a thread of its
//!   own and cannot be interrupted by a signal (FUSE interrupts are not
//!   served). An OFD lock is dropped when its file description is
//!   released, which the kernel sends in the background after the last
//!   `close`: another process may find it still locked for a moment after
//!   that close returned (POSIX locks are dropped synchronously, at
//!   `flush`). `flock(2)` is not served (the kernel keeps those locks per
//!   mount, in every mode).
//! - **Unmounting never hangs** ([`Mount::unmount`], and drop): the mount
//!   is unmounted (detached if busy), and if its FUSE session has not
//!   ended after [`mount::GRACE`] (another mount namespace holds a copy of
//!   the mount) the connection is aborted through the FUSE control file
//!   system; see [`mount`].
//!
//! File *data* is not cached: reads and writes go to the server each time
//! (an NFS client may also serve stale data from its page cache until the
//! next open; that is not modelled). Writes go at the offset the caller
//! gives, so an append at a stale cached size overwrites, as on NFS.
//!
//! How the kernel's own caches are kept out of the way: every reply carries
//! an entry and attribute TTL of zero and every open is `FOPEN_DIRECT_IO`,
//! so the kernel asks this file system each time and the caching policy is
//! entirely the one modelled here, per mount.
//!
//! All server operations run as the process that mounted (root), with the
//! kernel checking permissions against the attributes shown
//! (`default_permissions`); [`SimConfig::allow_other`] lets other users in.
//!
//! ```no_run
//! use nfs_sim::{Mount, SimConfig};
//! # fn main() -> std::io::Result<()> {
//! let a = Mount::new("/srv/export".as_ref(), "/mnt/a".as_ref(), SimConfig::default())?;
//! let b = Mount::new("/srv/export".as_ref(), "/mnt/b".as_ref(), SimConfig::default())?;
//! // ... two NFS clients of one server; unmounted on drop.
//! # drop((a, b)); Ok(()) }
//! ```

mod fs;
mod locks;
pub mod mount;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use fs::Stats;
pub use locks::LockMode;
pub use mount::Teardown;

/// When to inject one kind of fault: each eligible call (one that
/// succeeded on the server) fails its reply with `probability`, and the
/// calls whose 1-based number among eligible calls is in `schedule` fail
/// for sure.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fault {
    pub probability: f64,
    pub schedule: Vec<u64>,
}

impl Fault {
    /// Never inject.
    pub fn never() -> Fault {
        Fault::default()
    }

    /// Inject on each eligible call with probability `p`.
    pub fn probability(p: f64) -> Fault {
        Fault {
            probability: p,
            schedule: Vec::new(),
        }
    }

    /// Inject on exactly these eligible calls (1-based).
    pub fn on_calls(calls: &[u64]) -> Fault {
        Fault {
            probability: 0.0,
            schedule: calls.to_vec(),
        }
    }

    pub(crate) fn is_active(&self) -> bool {
        self.probability > 0.0 || !self.schedule.is_empty()
    }
}

/// Lost replies and stale handles to inject (see [`Fault`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// `link` made the link, but the client is told `EEXIST` (the reply was
    /// lost and the retransmitted request found the name taken).
    pub link_eexist: Fault,
    /// `link` made the link, but the client is told `EIO` (soft mount,
    /// reply never came).
    pub link_eio: Fault,
    /// `open(O_CREAT|O_EXCL)` created the file, but the client is told
    /// `EEXIST` (retransmitted create).
    pub create_excl_eexist: Fault,
    /// `unlink` removed the name, but the client is told `ENOENT`.
    pub unlink_enoent: Fault,
    /// `rename` moved the file, but the client is told `ENOENT`.
    pub rename_enoent: Fault,
    /// `lookup` answers `ESTALE` (the same process's next lookup of the
    /// same name, the kernel's retry with revalidation, is never faulted).
    pub lookup_estale: Fault,
}

impl Faults {
    /// Every lost-reply fault at probability `p` (handy for torture runs).
    pub fn all(p: f64) -> Faults {
        Faults {
            link_eexist: Fault::probability(p),
            link_eio: Fault::probability(p),
            create_excl_eexist: Fault::probability(p),
            unlink_enoent: Fault::probability(p),
            rename_enoent: Fault::probability(p),
            lookup_estale: Fault::probability(p),
        }
    }
}

/// How one mount (one simulated NFS client) behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// How long cached attributes of non-directories are trusted (`acregmin`).
    pub attr_ttl: Duration,
    /// How long cached attributes of directories are trusted (`acdirmin`).
    pub dir_attr_ttl: Duration,
    /// How long a cached name lookup (positive or negative) is trusted.
    pub entry_ttl: Duration,
    /// `open()` revalidates the file's attributes (close-to-open).
    pub close_to_open: bool,
    /// The server's clock minus this client's clock, in milliseconds:
    /// negative means the server is behind and fresh files look old.
    pub clock_offset_ms: i64,
    /// Timestamps are shown truncated to this (zero: nanoseconds).
    pub granularity: Duration,
    /// Faults to inject.
    pub faults: Faults,
    /// fcntl lock calls drop the file's cached attributes (Linux NFS does).
    pub fcntl_revalidates: bool,
    /// How fcntl record locks are served: by the server across mounts, not
    /// at all (`ENOLCK`), or by each mount alone (`nolock`). Switch it only
    /// while no lock is held on the mount.
    pub locks: LockMode,
    /// Seed of the fault injector's random numbers.
    pub seed: u64,
    /// Threads serving FUSE requests.
    pub threads: usize,
    /// Let users other than the one who mounted use the mount.
    pub allow_other: bool,
}

impl Default for SimConfig {
    /// Linux NFS defaults scaled for tests: attributes cached 3 s (files)
    /// and 3 s (directories), lookups 3 s; close-to-open; a server clock in
    /// step with the client; 1 s timestamps; no faults; fcntl locks served
    /// by the server across mounts, and revalidating.
    fn default() -> Self {
        SimConfig {
            attr_ttl: Duration::from_secs(3),
            dir_attr_ttl: Duration::from_secs(3),
            entry_ttl: Duration::from_secs(3),
            close_to_open: true,
            clock_offset_ms: 0,
            granularity: Duration::from_secs(1),
            faults: Faults::default(),
            fcntl_revalidates: true,
            locks: LockMode::Server,
            seed: 0x5eed,
            threads: 2,
            allow_other: false,
        }
    }
}

impl SimConfig {
    /// No caching at all, no skew, nanosecond times, no faults: behaves
    /// like the backing file system (a control for tests).
    pub fn coherent() -> SimConfig {
        SimConfig {
            attr_ttl: Duration::ZERO,
            dir_attr_ttl: Duration::ZERO,
            entry_ttl: Duration::ZERO,
            granularity: Duration::ZERO,
            ..SimConfig::default()
        }
    }
}

/// Why FUSE cannot be used here, if it cannot: `None` when the caller is
/// root and `/dev/fuse` exists. Tests print the reason and return.
pub fn unavailable_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("nfs-sim needs root to mount FUSE file systems".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing".into());
    }
    None
}

/// One mounted nfs-sim client, unmounted when dropped.
///
/// Unmounting never waits without a bound, also when another mount
/// namespace holds a copy of the mount (see [`Mount::unmount`]).
pub struct Mount {
    attached: mount::Attached,
    mountpoint: PathBuf,
    shared: Arc<Mutex<fs::State>>,
}

impl fmt::Debug for Mount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mount")
            .field("mountpoint", &self.mountpoint)
            .field("connection", &self.attached.connection())
            .finish_non_exhaustive()
    }
}

impl Mount {
    /// Mount `backing` at `mountpoint` (both existing directories), served
    /// by background threads of this process.
    pub fn new(backing: &Path, mountpoint: &Path, config: SimConfig) -> io::Result<Mount> {
        let threads = config.threads.max(1);
        let allow_other = config.allow_other;
        let (filesystem, shared) = fs::SimFs::new(backing, config)?;
        let source = format!("nfs-sim:{}", backing.display());
        let attached = mount::attach(filesystem, &source, mountpoint, allow_other, threads)?;
        Ok(Mount {
            attached,
            mountpoint: mountpoint.to_path_buf(),
            shared,
        })
    }

    /// Where the file system is mounted.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// The FUSE connection number (`/sys/fs/fuse/connections/N`).
    pub fn connection(&self) -> u64 {
        self.attached.connection()
    }

    /// Change this mount's behaviour while it runs (faults, clock, TTLs).
    pub fn configure(&self, change: impl FnOnce(&mut SimConfig)) {
        let mut state = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut state.config);
    }

    /// A copy of the current configuration.
    pub fn config(&self) -> SimConfig {
        let state = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        state.config.clone()
    }

    /// Forget every cached attribute and lookup (as after `acregmax`).
    pub fn drop_caches(&self) {
        let mut state = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        state.drop_caches();
    }

    /// Counters: operations served, cache answers, faults injected.
    pub fn stats(&self) -> Stats {
        let state = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        state.stats.clone()
    }

    /// Unmount now and say how it went. Bounded: unmount (lazily if busy),
    /// give the session [`mount::GRACE`] to end, then abort the FUSE
    /// connection through `/sys/fs/fuse/connections` and give it
    /// [`mount::AFTER_ABORT`] more. An error if the session failed or had to
    /// be left running. Dropping a `Mount` does the same and prints errors.
    pub fn unmount(mut self) -> io::Result<Teardown> {
        self.attached.teardown()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = self.attached.teardown() {
            eprintln!("{e}");
        }
    }
}
