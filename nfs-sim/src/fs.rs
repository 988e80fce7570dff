//! The FUSE file system: the "server" is the backing directory, the
//! "client" is this mount's caches.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, KernelConfig,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyLock, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};
use nix::errno::Errno as NixErrno;
use nix::fcntl::{open, openat, readlinkat, renameat2, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, futimens, mkdirat, FileStat, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, ftruncate, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use crate::locks::{self, LockMode, LockTable};
use crate::{Fault, SimConfig};

/// The kernel is told to cache nothing: this file system is the cache.
const NO_TTL: Duration = Duration::ZERO;
/// Where a backing inode numbered 1 is shown (1 is FUSE's root).
const INO_ONE_ALIAS: u64 = u64::MAX - 1;
/// Keep at most this many cached lookups before dropping expired ones.
const MAX_ENTRIES: usize = 4096;

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

#[derive(Debug, Clone, Copy)]
enum FaultKind {
    LinkEexist,
    LinkEio,
    CreateExclEexist,
    UnlinkEnoent,
    RenameEnoent,
    LookupEstale,
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

impl State {
    pub fn drop_caches(&mut self) {
        self.entries.clear();
        self.attrs.clear();
    }

    fn random(&mut self) -> f64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Decide whether this eligible call of `kind` gets a fault, and count it.
    fn inject(&mut self, kind: FaultKind) -> bool {
        let fault: &Fault = match kind {
            FaultKind::LinkEexist => &self.config.faults.link_eexist,
            FaultKind::LinkEio => &self.config.faults.link_eio,
            FaultKind::CreateExclEexist => &self.config.faults.create_excl_eexist,
            FaultKind::UnlinkEnoent => &self.config.faults.unlink_enoent,
            FaultKind::RenameEnoent => &self.config.faults.rename_enoent,
            FaultKind::LookupEstale => &self.config.faults.lookup_estale,
        };
        if !fault.is_active() {
            return false;
        }
        let (p, scheduled) = {
            let n = self.fault_calls[kind as usize] + 1;
            (fault.probability, fault.schedule.contains(&n))
        };
        self.fault_calls[kind as usize] += 1;
        let hit = scheduled || (p > 0.0 && self.random() < p);
        if hit {
            let s = &mut self.stats;
            *match kind {
                FaultKind::LinkEexist => &mut s.link_eexist,
                FaultKind::LinkEio => &mut s.link_eio,
                FaultKind::CreateExclEexist => &mut s.create_excl_eexist,
                FaultKind::UnlinkEnoent => &mut s.unlink_enoent,
                FaultKind::RenameEnoent => &mut s.rename_enoent,
                FaultKind::LookupEstale => &mut s.lookup_estale,
            } += 1;
        }
        hit
    }

    fn node(&self, ino: u64) -> Result<&Node, Errno> {
        self.nodes.get(&ino).ok_or(Errno::ESTALE)
    }

    fn fuse_ino(&self, real: u64) -> u64 {
        if real == self.root_real_ino {
            1
        } else if real == 1 {
            INO_ONE_ALIAS
        } else {
            real
        }
    }

    /// Server time as this client is shown it.
    fn shown_time(&self, secs: i64, nsecs: i64) -> SystemTime {
        let real_ns = secs as i128 * 1_000_000_000 + nsecs as i128;
        let mut ns = real_ns + self.config.clock_offset_ms as i128 * 1_000_000;
        let g = self.config.granularity.as_nanos() as i128;
        if g > 0 {
            ns = ns.div_euclid(g) * g;
        }
        if ns >= 0 {
            UNIX_EPOCH + Duration::from_nanos(ns as u64)
        } else {
            UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs() as u64)
        }
    }

    /// A time the client set, in the server's frame.
    fn server_time(&self, t: SystemTime) -> TimeSpec {
        let ns: i128 = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(e) => -(e.duration().as_nanos() as i128),
        };
        let ns = ns - self.config.clock_offset_ms as i128 * 1_000_000;
        TimeSpec::new(
            ns.div_euclid(1_000_000_000) as i64,
            ns.rem_euclid(1_000_000_000) as i64,
        )
    }

    fn attr_of(&self, st: &FileStat) -> FileAttr {
        let fmt = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        let kind = match fmt {
            SFlag::S_IFDIR => FileType::Directory,
            SFlag::S_IFLNK => FileType::Symlink,
            SFlag::S_IFIFO => FileType::NamedPipe,
            SFlag::S_IFSOCK => FileType::Socket,
            SFlag::S_IFCHR => FileType::CharDevice,
            SFlag::S_IFBLK => FileType::BlockDevice,
            _ => FileType::RegularFile,
        };
        FileAttr {
            ino: INodeNo(self.fuse_ino(st.st_ino)),
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            atime: self.shown_time(st.st_atime, st.st_atime_nsec),
            mtime: self.shown_time(st.st_mtime, st.st_mtime_nsec),
            ctime: self.shown_time(st.st_ctime, st.st_ctime_nsec),
            crtime: self.shown_time(st.st_ctime, st.st_ctime_nsec),
            kind,
            perm: (st.st_mode & 0o7777) as u16,
            nlink: st.st_nlink as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev as u32,
            blksize: 4096,
            flags: 0,
        }
    }

    fn ttl_for(&self, attr: &FileAttr) -> Duration {
        if attr.kind == FileType::Directory {
            self.config.dir_attr_ttl
        } else {
            self.config.attr_ttl
        }
    }

    /// Ask the server for `ino`'s attributes and remember them.
    fn fetch_attr(&mut self, ino: u64) -> Result<FileAttr, Errno> {
        let node = self.node(ino)?;
        let st = fstatat(&node.fd, "", AtFlags::AT_EMPTY_PATH).map_err(errno)?;
        let attr = self.attr_of(&st);
        // An inode with no name left is gone for every client but one that
        // has it open (NFS "silly rename" keeps those).
        let open_here = self.files.values().any(|f| f.ino == ino);
        if st.st_nlink == 0 && attr.kind != FileType::Directory && !open_here {
            self.purge(ino);
            return Err(Errno::ESTALE);
        }
        self.attrs.insert(ino, (attr, Instant::now()));
        Ok(attr)
    }

    /// Attributes from the cache when fresh, else from the server.
    fn get_attr(&mut self, ino: u64) -> Result<FileAttr, Errno> {
        if let Some((attr, at)) = self.attrs.get(&ino) {
            if at.elapsed() < self.ttl_for(attr) {
                self.stats.cached_attrs += 1;
                return Ok(*attr);
            }
        }
        self.fetch_attr(ino)
    }

    /// Forget everything cached about `ino` (the server said it is gone).
    fn purge(&mut self, ino: u64) {
        self.attrs.remove(&ino);
        self.entries
            .retain(|_, (target, _)| target.map(|t| t.ino) != Some(ino));
    }

    fn remember_entry(&mut self, parent: u64, name: &OsStr, target: Option<NodeRef>) {
        if self.entries.len() >= MAX_ENTRIES {
            let ttl = self.config.entry_ttl;
            self.entries.retain(|_, (_, at)| at.elapsed() < ttl);
        }
        self.entries
            .insert((parent, name.to_owned()), (target, Instant::now()));
    }

    fn forget_entry(&mut self, parent: u64, name: &OsStr) {
        self.entries.remove(&(parent, name.to_owned()));
    }

    /// Make `fd` (an `O_PATH` descriptor of `st`) known to the kernel:
    /// one more lookup reference.
    fn register(&mut self, fd: OwnedFd, st: &FileStat) -> NodeRef {
        let ino = self.fuse_ino(st.st_ino);
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.nlookup += 1;
            return NodeRef {
                ino,
                serial: node.serial,
            };
        }
        self.next_serial += 1;
        let serial = self.next_serial;
        self.nodes.insert(
            ino,
            Node {
                fd,
                nlookup: 1,
                serial,
            },
        );
        NodeRef { ino, serial }
    }

    /// Look `name` up on the server and register what is there.
    fn server_lookup(&mut self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        let pfd = &self.node(parent)?.fd;
        let found = openat(
            pfd,
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        );
        let fd = match found {
            Ok(fd) => fd,
            Err(NixErrno::ENOENT) => {
                self.remember_entry(parent, name, None);
                return Err(Errno::ENOENT);
            }
            Err(e) => return Err(errno(e)),
        };
        let st = fstatat(&fd, "", AtFlags::AT_EMPTY_PATH).map_err(errno)?;
        let node = self.register(fd, &st);
        let attr = self.attr_of(&st);
        self.attrs.insert(node.ino, (attr, Instant::now()));
        self.remember_entry(parent, name, Some(node));
        Ok(attr)
    }

    fn lookup(&mut self, pid: u32, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        let key = (pid, parent, name.to_owned());
        if !self.estale_exempt.remove(&key) && self.inject(FaultKind::LookupEstale) {
            if self.estale_exempt.len() > 1024 {
                self.estale_exempt.clear();
            }
            self.estale_exempt.insert(key);
            return Err(Errno::ESTALE);
        }
        if let Some((target, at)) = self.entries.get(&(parent, name.to_owned())).copied() {
            if at.elapsed() < self.config.entry_ttl {
                match target {
                    None => {
                        self.stats.cached_lookups += 1;
                        return Err(Errno::ENOENT);
                    }
                    Some(t) if self.nodes.get(&t.ino).map(|n| n.serial) == Some(t.serial) => {
                        if let Ok(attr) = self.get_attr(t.ino) {
                            self.stats.cached_lookups += 1;
                            if let Some(node) = self.nodes.get_mut(&t.ino) {
                                node.nlookup += 1;
                            }
                            return Ok(attr);
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        self.server_lookup(parent, name)
    }

    fn new_fh(&mut self, file: File, ino: u64) -> u64 {
        self.next_fh += 1;
        self.files.insert(
            self.next_fh,
            OpenFile {
                file: Arc::new(file),
                ino,
            },
        );
        self.next_fh
    }

    fn file(&self, fh: u64) -> Result<Arc<File>, Errno> {
        self.files
            .get(&fh)
            .map(|f| f.file.clone())
            .ok_or(Errno::EBADF)
    }

    /// Reopen a node through `/proc/self/fd` with real access flags.
    fn reopen(&self, ino: u64, flags: OFlag) -> Result<OwnedFd, Errno> {
        let node = self.node(ino)?;
        open(
            proc_path(&node.fd).as_str(),
            flags | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
            Mode::empty(),
        )
        .map_err(errno)
    }

    /// The open file description serving `owner`'s fcntl lock call on
    /// `ino` in the configured [`LockMode`] (`None`: an unlock with nothing
    /// held), after dropping the cached attributes where the mode's lock
    /// calls revalidate.
    fn lock_description(
        &mut self,
        owner: u64,
        ino: u64,
        fh: u64,
        unlock: bool,
    ) -> Result<Option<Arc<OwnedFd>>, Errno> {
        let mode = self.config.locks;
        if self.config.fcntl_revalidates && mode != LockMode::Unsupported {
            self.attrs.remove(&ino);
        }
        let backing = &self.nodes.get(&ino).ok_or(Errno::ESTALE)?.fd;
        self.locks
            .description(mode, owner, ino, fh, unlock, backing)
    }
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

fn open_flags_for_server(flags: i32) -> OFlag {
    let flags = OFlag::from_bits_truncate(flags);
    // Writes come with explicit offsets (direct I/O): O_APPEND on the
    // backing descriptor would make pwrite ignore them.
    flags & (OFlag::O_ACCMODE | OFlag::O_TRUNC)
}

fn time_spec(state: &State, t: Option<TimeOrNow>) -> TimeSpec {
    match t {
        None => TimeSpec::UTIME_OMIT,
        Some(TimeOrNow::Now) => TimeSpec::UTIME_NOW,
        Some(TimeOrNow::SpecificTime(t)) => state.server_time(t),
    }
}

impl fuser::Filesystem for SimFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_POSIX_LOCKS);
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut s = self.state();
        match s.lookup(req.pid(), parent.0, name) {
            Ok(attr) => reply.entry(&NO_TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let mut s = self.state();
        if ino.0 == 1 {
            return;
        }
        let gone = match s.nodes.get_mut(&ino.0) {
            Some(node) => {
                node.nlookup = node.nlookup.saturating_sub(nlookup);
                node.nlookup == 0
            }
            None => false,
        };
        if gone {
            s.nodes.remove(&ino.0);
            s.attrs.remove(&ino.0);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let mut s = self.state();
        match s.get_attr(ino.0) {
            Ok(attr) => reply.attr(&NO_TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut s = self.state();
        let result = (|| -> Result<FileAttr, Errno> {
            let kind = s
                .get_attr(ino.0)
                .map(|a| a.kind)
                .unwrap_or(FileType::RegularFile);
            if kind == FileType::Symlink {
                return s.fetch_attr(ino.0);
            }
            let access = if size.is_some() {
                OFlag::O_WRONLY
            } else {
                OFlag::O_RDONLY
            };
            let fd = match fh.and_then(|fh| s.file(fh.0).ok()) {
                Some(file) if size.is_none() => OwnedFd::from(file.try_clone().map_err(io_errno)?),
                _ => s.reopen(ino.0, access)?,
            };
            if let Some(mode) = mode {
                fchmod(&fd, Mode::from_bits_truncate(mode & 0o7777)).map_err(errno)?;
            }
            if uid.is_some() || gid.is_some() {
                fchown(&fd, uid.map(Uid::from_raw), gid.map(Gid::from_raw)).map_err(errno)?;
            }
            if let Some(size) = size {
                ftruncate(&fd, size as i64).map_err(errno)?;
            }
            if atime.is_some() || mtime.is_some() {
                let (a, m) = (time_spec(&s, atime), time_spec(&s, mtime));
                futimens(&fd, &a, &m).map_err(errno)?;
            }
            s.fetch_attr(ino.0)
        })();
        match result {
            Ok(attr) => reply.attr(&NO_TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let s = self.state();
        match s
            .node(ino.0)
            .and_then(|n| readlinkat(&n.fd, "").map_err(errno))
        {
            Ok(target) => reply.data(target.as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let mut s = self.state();
        let result = (|| {
            let pfd = &s.node(parent.0)?.fd;
            mkdirat(pfd, name, Mode::from_bits_truncate(mode)).map_err(errno)?;
            s.forget_entry(parent.0, name);
            s.attrs.remove(&parent.0);
            s.server_lookup(parent.0, name)
        })();
        match result {
            Ok(attr) => reply.entry(&NO_TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, UnlinkatFlags::NoRemoveDir, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, UnlinkatFlags::RemoveDir, reply);
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let mut s = self.state();
        let result = (|| {
            let pfd = &s.node(parent.0)?.fd;
            symlinkat(target, pfd, link_name).map_err(errno)?;
            s.forget_entry(parent.0, link_name);
            s.attrs.remove(&parent.0);
            s.server_lookup(parent.0, link_name)
        })();
        match result {
            Ok(attr) => reply.entry(&NO_TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut s = self.state();
        let result = (|| {
            let from = s.node(parent.0)?;
            let to = s.node(newparent.0)?;
            let moved = fstatat(&from.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW).ok();
            renameat2(
                &from.fd,
                name,
                &to.fd,
                newname,
                nix::fcntl::RenameFlags::from_bits_truncate(flags.bits()),
            )
            .map_err(errno)?;
            s.attrs.remove(&parent.0);
            s.attrs.remove(&newparent.0);
            let target = moved.map(|st| s.fuse_ino(st.st_ino));
            if let Some(ino) = target {
                s.attrs.remove(&ino);
            }
            if s.inject(FaultKind::RenameEnoent) {
                s.forget_entry(parent.0, name);
                s.forget_entry(newparent.0, newname);
                return Err(Errno::ENOENT);
            }
            s.remember_entry(parent.0, name, None);
            let node = target.and_then(|ino| {
                s.nodes.get(&ino).map(|n| NodeRef {
                    ino,
                    serial: n.serial,
                })
            });
            match node {
                Some(node) => s.remember_entry(newparent.0, newname, Some(node)),
                None => s.forget_entry(newparent.0, newname),
            }
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut s = self.state();
        let result = (|| {
            let node = s.node(ino.0)?;
            let pfd = &s.node(newparent.0)?.fd;
            linkat(&node.fd, "", pfd, newname, AtFlags::AT_EMPTY_PATH).map_err(errno)?;
            s.attrs.remove(&newparent.0);
            // The reply is lost: the client learns nothing about the new
            // name, but the retransmission's reply carries the file's
            // attributes (link count 2) as NFSv3 does.
            let lost = if s.inject(FaultKind::LinkEexist) {
                Some(Errno::EEXIST)
            } else if s.inject(FaultKind::LinkEio) {
                Some(Errno::EIO)
            } else {
                None
            };
            if let Some(e) = lost {
                s.forget_entry(newparent.0, newname);
                s.attrs.remove(&ino.0);
                return Err(e);
            }
            let attr = s.fetch_attr(ino.0)?;
            let serial = s.node(ino.0)?.serial;
            if let Some(node) = s.nodes.get_mut(&ino.0) {
                node.nlookup += 1;
            }
            s.remember_entry(newparent.0, newname, Some(NodeRef { ino: ino.0, serial }));
            Ok(attr)
        })();
        match result {
            Ok(attr) => reply.entry(&NO_TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut s = self.state();
        let result = (|| {
            if s.config.close_to_open {
                if let Err(e) = s.fetch_attr(ino.0) {
                    if e == Errno::ESTALE {
                        s.stats.stale_opens += 1;
                    }
                    return Err(e);
                }
            }
            let fd = s.reopen(ino.0, open_flags_for_server(flags.0))?;
            Ok(s.new_fh(File::from(fd), ino.0))
        })();
        match result {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let file = match self.state().file(fh.0) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        let mut buf = vec![0u8; size as usize];
        let mut len = 0;
        while len < buf.len() {
            match file.read_at(&mut buf[len..], offset + len as u64) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return reply.error(io_errno(e)),
            }
        }
        reply.data(&buf[..len]);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut s = self.state();
        let result = (|| {
            let file = s.file(fh.0)?;
            file.write_all_at(data, offset).map_err(io_errno)?;
            // Post-op attributes come back with the reply.
            let _ = s.fetch_attr(ino.0);
            Ok(data.len() as u32)
        })();
        match result {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() drops the closing process's POSIX locks on the file.
        let mut s = self.state();
        s.locks.closed(lock_owner.0, ino.0);
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = self.state();
        s.files.remove(&fh.0);
        // OFD locks die with their open file description.
        s.locks.released(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let file = self.state().file(fh.0);
        match file.and_then(|f| f.sync_all().map_err(io_errno)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let s = self.state();
        let listing = (|| {
            let fd = s.reopen(ino.0, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
            let mut dir = nix::dir::Dir::from_fd(fd).map_err(errno)?;
            let mut names = Vec::new();
            for entry in dir.iter() {
                let entry = entry.map_err(errno)?;
                let name = OsStr::from_bytes(entry.file_name().to_bytes()).to_owned();
                if name == "." || name == ".." {
                    continue;
                }
                let kind = match entry.file_type() {
                    Some(nix::dir::Type::Directory) => FileType::Directory,
                    Some(nix::dir::Type::Symlink) => FileType::Symlink,
                    _ => FileType::RegularFile,
                };
                names.push((s.fuse_ino(entry.ino()), kind, name));
            }
            names.sort_by(|a, b| a.2.cmp(&b.2));
            Ok(names)
        })();
        let names = match listing {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let mut all = vec![
            (ino.0, FileType::Directory, OsString::from(".")),
            (1, FileType::Directory, OsString::from("..")),
        ];
        all.extend(names);
        for (i, (ino, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), i as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let s = self.state();
        let result = s
            .node(ino.0)
            .and_then(|n| nix::sys::statvfs::statvfs(proc_path(&n.fd).as_str()).map_err(errno));
        match result {
            Ok(v) => reply.statfs(
                v.blocks(),
                v.blocks_free(),
                v.blocks_available(),
                v.files(),
                v.files_free(),
                v.block_size() as u32,
                v.name_max() as u32,
                v.fragment_size() as u32,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut s = self.state();
        let excl = flags & nix::libc::O_EXCL != 0;
        let result = (|| {
            let pfd = &s.node(parent.0)?.fd;
            let mut server_flags = open_flags_for_server(flags) | OFlag::O_CREAT;
            if excl {
                server_flags |= OFlag::O_EXCL;
            }
            let fd = openat(
                pfd,
                name,
                server_flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(mode & 0o7777),
            )
            .map_err(errno)?;
            s.attrs.remove(&parent.0);
            if excl && s.inject(FaultKind::CreateExclEexist) {
                s.forget_entry(parent.0, name);
                return Err(Errno::EEXIST);
            }
            let path_fd = open(
                proc_path(&fd).as_str(),
                OFlag::O_PATH | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(errno)?;
            let st = fstat(&fd).map_err(errno)?;
            let node = s.register(path_fd, &st);
            let attr = s.attr_of(&st);
            s.attrs.insert(node.ino, (attr, Instant::now()));
            s.remember_entry(parent.0, name, Some(node));
            let fh = s.new_fh(File::from(fd), node.ino);
            Ok((attr, fh))
        })();
        match result {
            Ok((attr, fh)) => reply.created(
                &NO_TTL,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn getlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        _pid: u32,
        reply: ReplyLock,
    ) {
        let ofd = self
            .state()
            .lock_description(lock_owner.0, ino.0, fh.0, false);
        let conflict = ofd.and_then(|ofd| {
            let ofd = ofd.ok_or(Errno::EBADF)?;
            locks::test_lock(&ofd, start, end, typ)
        });
        match conflict {
            Ok((start, end, typ)) => reply.locked(start, end, typ, 0),
            Err(e) => reply.error(e),
        }
    }

    fn setlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        _pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let unlock = typ == nix::libc::F_UNLCK;
        let ofd = self
            .state()
            .lock_description(lock_owner.0, ino.0, fh.0, unlock);
        match ofd {
            Ok(Some(ofd)) => locks::set_lock(ofd, start, end, typ, sleep, reply),
            Ok(None) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

impl SimFs {
    fn remove(&self, parent: INodeNo, name: &OsStr, how: UnlinkatFlags, reply: ReplyEmpty) {
        let mut s = self.state();
        let result = (|| {
            let pfd = &s.node(parent.0)?.fd;
            let victim = fstatat(pfd, name, AtFlags::AT_SYMLINK_NOFOLLOW).ok();
            unlinkat(pfd, name, how).map_err(errno)?;
            s.attrs.remove(&parent.0);
            if let Some(st) = victim {
                let ino = s.fuse_ino(st.st_ino);
                s.attrs.remove(&ino);
            }
            if s.inject(FaultKind::UnlinkEnoent) {
                s.forget_entry(parent.0, name);
                return Err(Errno::ENOENT);
            }
            s.remember_entry(parent.0, name, None);
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}
