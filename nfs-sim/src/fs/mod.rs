//! The FUSE file system: the "server" is the backing directory, the
//! "client" is this mount's caches.
//!
//! Everything one mount knows is a [`State`] behind one mutex; [`SimFs`]
//! serves the kernel's requests on it. By what each part does:
//!
//! - [`cache`]: the inodes the kernel knows, and the client's attribute
//!   and lookup caches, answered from or refreshed by the server;
//! - [`attr`]: what the client is shown of the server's files, on the
//!   server's clock;
//! - [`faults`]: lost replies, injected by probability or schedule;
//! - [`handles`]: open files, and the open file descriptions behind fcntl
//!   locks;
//! - [`ops`]: the FUSE operations, each decided on the server and
//!   reflected in the caches as NFS does.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use fuser::{Errno, FileAttr};
use nix::errno::Errno as NixErrno;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::{fstat, Mode};

use crate::locks::LockTable;
use crate::SimConfig;

mod attr;
mod cache;
mod faults;
mod handles;
mod ops;

/// What a mount did: operations served, answers from its caches, and the
/// faults it injected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests that reached the file system.
    pub requests: u64,
    /// Lookups answered from the lookup cache (positive or negative).
    pub cached_lookups: u64,
    /// Attribute requests answered from the attribute cache.
    pub cached_attrs: u64,
    /// `open`s whose close-to-open revalidation found the file gone (`ESTALE`).
    pub stale_opens: u64,
    /// Faults injected, by kind.
    pub link_eexist: u64,
    pub link_eio: u64,
    pub create_excl_eexist: u64,
    pub unlink_enoent: u64,
    pub rename_enoent: u64,
    pub lookup_estale: u64,
}

impl Stats {
    /// All faults injected.
    pub fn faults(&self) -> u64 {
        self.link_eexist
            + self.link_eio
            + self.create_excl_eexist
            + self.unlink_enoent
            + self.rename_enoent
            + self.lookup_estale
    }
}

/// A backing inode the kernel knows by number: an `O_PATH` descriptor
/// (which also keeps the number from being reused while we know it).
#[derive(Debug)]
struct Node {
    fd: OwnedFd,
    nlookup: u64,
    /// Distinguishes successive nodes with one number.
    serial: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NodeRef {
    ino: u64,
    serial: u64,
}

#[derive(Debug)]
struct OpenFile {
    file: Arc<File>,
    ino: u64,
}

/// Everything one mount knows, behind one mutex.
#[derive(Debug)]
pub(crate) struct State {
    pub config: SimConfig,
    pub stats: Stats,
    root_real_ino: u64,
    nodes: HashMap<u64, Node>,
    next_serial: u64,
    /// (parent, name) -> what the name was (None: no such file) and when.
    entries: HashMap<(u64, OsString), (Option<NodeRef>, Instant)>,
    attrs: HashMap<u64, (FileAttr, Instant)>,
    files: HashMap<u64, OpenFile>,
    next_fh: u64,
    /// fcntl locks: one open file description per (lock owner, inode).
    locks: LockTable,
    rng: u64,
    fault_calls: [u64; 6],
    /// (pid, parent, name) an ESTALE was injected on: that process's
    /// retry (the kernel's lookup with revalidation) passes.
    estale_exempt: HashSet<(u32, u64, OsString)>,
}

pub(crate) fn proc_path(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn errno(e: NixErrno) -> Errno {
    Errno::from_i32(e as i32)
}

fn io_errno(e: io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(nix::libc::EIO))
}

/// The FUSE side: a shared handle on the mount's state.
pub(crate) struct SimFs {
    state: Arc<Mutex<State>>,
}

impl SimFs {
    pub fn new(backing: &Path, config: SimConfig) -> io::Result<(SimFs, Arc<Mutex<State>>)> {
        let root = open(
            backing,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from)?;
        let st = fstat(&root).map_err(io::Error::from)?;
        let mut nodes = HashMap::new();
        nodes.insert(
            1,
            Node {
                fd: root,
                nlookup: 1,
                serial: 0,
            },
        );
        let state = State {
            rng: config.seed,
            config,
            stats: Stats::default(),
            root_real_ino: st.st_ino,
            nodes,
            next_serial: 0,
            entries: HashMap::new(),
            attrs: HashMap::new(),
            files: HashMap::new(),
            next_fh: 0,
            locks: LockTable::default(),
            fault_calls: [0; 6],
            estale_exempt: HashSet::new(),
        };
        let state = Arc::new(Mutex::new(state));
        Ok((
            SimFs {
                state: state.clone(),
            },
            state,
        ))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.stats.requests += 1;
        s
    }
}
