//! The client's caches: the inodes the kernel knows (by number, through
//! `O_PATH` descriptors), attributes kept for [`SimConfig::attr_ttl`]
//! (files) or [`SimConfig::dir_attr_ttl`] (directories), and lookups,
//! negative ones included, kept for [`SimConfig::entry_ttl`]. Within those
//! lifetimes this mount does not see other mounts' changes.
//!
//! [`SimConfig::attr_ttl`]: crate::SimConfig::attr_ttl
//! [`SimConfig::dir_attr_ttl`]: crate::SimConfig::dir_attr_ttl
//! [`SimConfig::entry_ttl`]: crate::SimConfig::entry_ttl

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use fuser::{Errno, FileAttr, FileType};
use nix::errno::Errno as NixErrno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, FileStat, Mode};

use super::faults::FaultKind;
use super::{errno, Node, NodeRef, State};

/// Where a backing inode numbered 1 is shown (1 is FUSE's root).
const INO_ONE_ALIAS: u64 = u64::MAX - 1;
/// Keep at most this many cached lookups before dropping expired ones.
const MAX_ENTRIES: usize = 4096;

impl State {
    pub fn drop_caches(&mut self) {
        self.entries.clear();
        self.attrs.clear();
    }

    pub(super) fn node(&self, ino: u64) -> Result<&Node, Errno> {
        self.nodes.get(&ino).ok_or(Errno::ESTALE)
    }

    pub(super) fn fuse_ino(&self, real: u64) -> u64 {
        if real == self.root_real_ino {
            1
        } else if real == 1 {
            INO_ONE_ALIAS
        } else {
            real
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
    pub(super) fn fetch_attr(&mut self, ino: u64) -> Result<FileAttr, Errno> {
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
    pub(super) fn get_attr(&mut self, ino: u64) -> Result<FileAttr, Errno> {
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

    pub(super) fn remember_entry(&mut self, parent: u64, name: &OsStr, target: Option<NodeRef>) {
        if self.entries.len() >= MAX_ENTRIES {
            let ttl = self.config.entry_ttl;
            self.entries.retain(|_, (_, at)| at.elapsed() < ttl);
        }
        self.entries
            .insert((parent, name.to_owned()), (target, Instant::now()));
    }

    pub(super) fn forget_entry(&mut self, parent: u64, name: &OsStr) {
        self.entries.remove(&(parent, name.to_owned()));
    }

    /// Make `fd` (an `O_PATH` descriptor of `st`) known to the kernel:
    /// one more lookup reference.
    pub(super) fn register(&mut self, fd: OwnedFd, st: &FileStat) -> NodeRef {
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
    pub(super) fn server_lookup(&mut self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
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

    pub(super) fn lookup(
        &mut self,
        pid: u32,
        parent: u64,
        name: &OsStr,
    ) -> Result<FileAttr, Errno> {
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
}
