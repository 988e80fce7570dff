//! fcntl record locks as the simulated server serves them (FUSE `setlk`
//! and `getlk`; the kernel sends POSIX and OFD locks alike, each with a
//! lock owner: the process's files table, or the open file description).
//!
//! Every lock owner gets an open file description of its own on a file
//! standing for the locked inode, and its locks are taken there as OFD
//! locks, so that owners exclude each other exactly as far as they share
//! that file. Which file that is makes the [`LockMode`]:
//!
//! - [`LockMode::Server`]: the backing file. Locks exclude across mounts,
//!   as with a server that has a lock manager.
//! - [`LockMode::Local`]: a private in-memory file per mount and inode
//!   (`memfd`). Locks exclude the owners of this mount only, as an NFS
//!   client mounted `-o nolock` keeps them.
//! - [`LockMode::Unsupported`]: none; every call fails with `ENOLCK`.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use fuser::{Errno, ReplyEmpty};
use nix::errno::Errno as NixErrno;
use nix::fcntl::{open, OFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::stat::Mode;

/// How the simulated server treats fcntl (`F_SETLK`, `F_OFD_SETLK`,
/// `lockf`) record locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LockMode {
    /// The server has a lock manager (NFSv4, or NFSv3 with `lockd`): locks
    /// exclude across mounts and processes.
    #[default]
    Server,
    /// The server has no lock manager and the client was not mounted with
    /// `nolock`: every lock call (set, test and unlock, POSIX and OFD)
    /// fails with `ENOLCK`, and does not revalidate the attribute cache.
    Unsupported,
    /// The client was mounted `-o nolock`: locks are kept by this client
    /// alone and exclude only processes that use the same mount, nothing
    /// on other mounts. Taking one still revalidates (Linux's NFS client
    /// zaps its caches after a local lock too).
    Local,
}

/// The open file description holding one owner's locks on one inode.
#[derive(Debug)]
struct HeldLock {
    ofd: Arc<OwnedFd>,
    /// The FUSE file handle the owner locked through (an OFD lock dies
    /// with its file).
    fh: u64,
}

/// One mount's lock owners and, in [`LockMode::Local`], its private
/// stand-ins for the locked inodes.
#[derive(Debug, Default)]
pub(crate) struct LockTable {
    /// (lock owner, inode) -> its open file description.
    held: HashMap<(u64, u64), HeldLock>,
    /// inode -> the memfd standing for it ([`LockMode::Local`]).
    shadows: HashMap<u64, OwnedFd>,
}

impl LockTable {
    /// The open file description that serves `owner`'s lock calls on
    /// `ino` (through file handle `fh`) in `mode`. `backing` is an
    /// `O_PATH` descriptor of the inode on the server. `Ok(None)` for an
    /// unlock by an owner that holds nothing.
    pub fn description(
        &mut self,
        mode: LockMode,
        owner: u64,
        ino: u64,
        fh: u64,
        unlock: bool,
        backing: &OwnedFd,
    ) -> Result<Option<Arc<OwnedFd>>, Errno> {
        if mode == LockMode::Unsupported {
            return Err(Errno::ENOLCK);
        }
        if let Some(held) = self.held.get(&(owner, ino)) {
            return Ok(Some(held.ofd.clone()));
        }
        if unlock {
            return Ok(None);
        }
        let fd = match mode {
            LockMode::Local => {
                let shadow = match self.shadows.get(&ino) {
                    Some(fd) => fd,
                    None => {
                        let fd = memfd_create("nfs-sim-local-lock", MFdFlags::MFD_CLOEXEC)
                            .map_err(errno)?;
                        self.shadows.entry(ino).or_insert(fd)
                    }
                };
                reopen(shadow, OFlag::O_RDWR)?
            }
            _ => reopen(backing, OFlag::O_RDWR).or_else(|_| reopen(backing, OFlag::O_RDONLY))?,
        };
        let ofd = Arc::new(fd);
        self.held.insert(
            (owner, ino),
            HeldLock {
                ofd: ofd.clone(),
                fh,
            },
        );
        Ok(Some(ofd))
    }

    /// A descriptor of `ino` was closed by `owner` (`flush`): its POSIX
    /// locks on the file are gone.
    pub fn closed(&mut self, owner: u64, ino: u64) {
        self.held.remove(&(owner, ino));
        self.forget_unused_shadows();
    }

    /// File handle `fh` was released: the OFD locks taken through it die.
    pub fn released(&mut self, fh: u64) {
        self.held.retain(|_, held| held.fh != fh);
        self.forget_unused_shadows();
    }

    fn forget_unused_shadows(&mut self) {
        let held = &self.held;
        self.shadows
            .retain(|ino, _| held.keys().any(|&(_, locked)| locked == *ino));
    }
}

/// A new open file description of the file `fd` refers to.
fn reopen(fd: &OwnedFd, flags: OFlag) -> Result<OwnedFd, Errno> {
    open(
        crate::fs::proc_path(fd).as_str(),
        flags | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
        Mode::empty(),
    )
    .map_err(errno)
}

fn errno(e: NixErrno) -> Errno {
    Errno::from_i32(e as i32)
}

/// `F_GETLK` for the FUSE range `start..=end`: the conflicting lock as
/// `(start, end, type)`, type `F_UNLCK` if there is none.
pub(crate) fn test_lock(
    ofd: &OwnedFd,
    start: u64,
    end: u64,
    typ: i32,
) -> Result<(u64, u64, i32), Errno> {
    let fl = ofd_lock(ofd, nix::libc::F_OFD_GETLK, start, end, typ)?;
    if fl.l_type == nix::libc::F_UNLCK as i16 {
        return Ok((0, 0, nix::libc::F_UNLCK));
    }
    let end = if fl.l_len == 0 {
        i64::MAX as u64
    } else {
        (fl.l_start + fl.l_len - 1) as u64
    };
    Ok((fl.l_start as u64, end, fl.l_type as i32))
}

/// `F_SETLK` (or, with `sleep`, `F_SETLKW`) for the FUSE range
/// `start..=end`, replying when done. A lock that has to wait waits in a
/// thread of its own, so that the mount goes on serving.
pub(crate) fn set_lock(
    ofd: Arc<OwnedFd>,
    start: u64,
    end: u64,
    typ: i32,
    sleep: bool,
    reply: ReplyEmpty,
) {
    match ofd_lock(&ofd, nix::libc::F_OFD_SETLK, start, end, typ) {
        Ok(_) => reply.ok(),
        Err(e) if sleep && (e == Errno::EAGAIN || e == Errno::EACCES) => {
            std::thread::spawn(move || {
                match ofd_lock(&ofd, nix::libc::F_OFD_SETLKW, start, end, typ) {
                    Ok(_) => reply.ok(),
                    Err(e) => reply.error(e),
                }
            });
        }
        Err(e) => reply.error(e),
    }
}

/// One OFD record-lock call on `fd` for the FUSE range `start..=end`.
fn ofd_lock(
    fd: &OwnedFd,
    cmd: i32,
    start: u64,
    end: u64,
    typ: i32,
) -> Result<nix::libc::flock, Errno> {
    let len = if end >= i64::MAX as u64 {
        0
    } else {
        (end - start + 1) as i64
    };
    let mut fl = nix::libc::flock {
        l_type: typ as i16,
        l_whence: nix::libc::SEEK_SET as i16,
        l_start: start as i64,
        l_len: len,
        l_pid: 0,
    };
    loop {
        let arg = match cmd {
            nix::libc::F_OFD_GETLK => nix::fcntl::FcntlArg::F_OFD_GETLK(&mut fl),
            nix::libc::F_OFD_SETLKW => nix::fcntl::FcntlArg::F_OFD_SETLKW(&fl),
            _ => nix::fcntl::FcntlArg::F_OFD_SETLK(&fl),
        };
        match nix::fcntl::fcntl(fd.as_fd(), arg) {
            Ok(_) => break,
            Err(NixErrno::EINTR) => continue,
            Err(e) => return Err(errno(e)),
        }
    }
    Ok(fl)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backing() -> OwnedFd {
        // One name per call: the tests of this module run in parallel.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("nfs-sim-locks-{}-{n}", std::process::id()));
        std::fs::write(&path, b"").unwrap();
        let fd = open(&path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).unwrap();
        std::fs::remove_file(&path).unwrap();
        fd
    }

    #[test]
    fn unsupported_refuses_everything_and_keeps_nothing() {
        let mut table = LockTable::default();
        let b = backing();
        for unlock in [false, true] {
            let refused = table.description(LockMode::Unsupported, 1, 7, 1, unlock, &b);
            assert_eq!(refused.err(), Some(Errno::ENOLCK));
        }
        assert!(table.held.is_empty());
    }

    #[test]
    fn local_owners_share_one_shadow_per_inode_until_the_last_lets_go() {
        let mut table = LockTable::default();
        let b = backing();
        let wr = nix::libc::F_WRLCK;
        let one = table
            .description(LockMode::Local, 1, 7, 10, false, &b)
            .unwrap()
            .unwrap();
        let two = table
            .description(LockMode::Local, 2, 7, 11, false, &b)
            .unwrap()
            .unwrap();
        assert_eq!(table.shadows.len(), 1);
        ofd_lock(&one, nix::libc::F_OFD_SETLK, 0, u64::MAX, wr).unwrap();
        assert_eq!(
            ofd_lock(&two, nix::libc::F_OFD_SETLK, 0, u64::MAX, wr).unwrap_err(),
            Errno::EAGAIN,
            "two owners of one mount exclude each other"
        );
        assert_eq!(test_lock(&two, 0, u64::MAX, wr).unwrap().2, wr);
        // The real file is not locked at all.
        let server = reopen(&b, OFlag::O_RDWR).unwrap();
        ofd_lock(&server, nix::libc::F_OFD_SETLK, 0, u64::MAX, wr).unwrap();
        let nothing = table.description(LockMode::Local, 3, 7, 12, true, &b);
        assert!(matches!(nothing, Ok(None)), "unlock without a lock");
        table.closed(1, 7);
        assert_eq!(table.shadows.len(), 1, "owner 2 still uses it");
        table.released(11);
        assert!(table.shadows.is_empty() && table.held.is_empty());
    }
}
