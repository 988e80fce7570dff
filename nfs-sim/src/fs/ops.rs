//! The FUSE operations. Requests that change the server (create, link,
//! unlink, rename, write, setattr) always go to the backing directory and
//! are decided there, as on NFS, then update this mount's caches with the
//! reply (or not, when a fault loses it); the rest are answered from the
//! caches while they are fresh. `open` revalidates (close-to-open).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, KernelConfig,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyLock, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};
use nix::fcntl::{open, openat, readlinkat, renameat2, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, futimens, mkdirat, Mode};
use nix::unistd::{fchown, ftruncate, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use super::attr::time_spec;
use super::faults::FaultKind;
use super::{errno, io_errno, proc_path, NodeRef, SimFs};
use crate::locks;

/// The kernel is told to cache nothing: this file system is the cache.
const NO_TTL: Duration = Duration::ZERO;

fn open_flags_for_server(flags: i32) -> OFlag {
    let flags = OFlag::from_bits_truncate(flags);
    // Writes come with explicit offsets (direct I/O): O_APPEND on the
    // backing descriptor would make pwrite ignore them.
    flags & (OFlag::O_ACCMODE | OFlag::O_TRUNC)
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
