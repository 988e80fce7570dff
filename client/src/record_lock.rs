//! The fcntl half of a mailbox lock: a whole-file record lock on the
//! mailbox descriptor.
//!
//! spoollock uses open file description locks (`F_OFD_SETLK`, Linux 3.15+)
//! where the kernel has them, and classic POSIX locks (`F_SETLK`) where it
//! does not. Both kinds conflict with each other, so OFD locks exclude every
//! program that uses `fcntl` or `lockf` (procmail, Postfix, mutt, Dovecot),
//! on local file systems and on NFS (both go to the lock manager).
//!
//! Why OFD locks: a classic POSIX lock belongs to the *process*, and closing
//! *any* descriptor of the file drops it, even one opened by a library
//! behind the program's back (`getpwnam` reading a file, a second
//! `MailboxLock` on the same mailbox). OFD locks belong to the open file
//! description and are released only when it is closed. The classic
//! fallback keeps that pitfall: with it, never open the mailbox a second
//! time while holding the lock.
//!
//! Neither kind excludes programs that use only `flock(2)`: on local file
//! systems Linux keeps flock and fcntl locks apart (on NFS it emulates
//! flock with fcntl, and they do conflict). Mail programs that flock only
//! are rare; the dotlock covers those that also dotlock.

use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};

/// Shared (read) or exclusive (write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// Others may read-lock too; nobody may write-lock.
    Read,
    /// Nobody else may lock.
    Write,
}

/// Which kernel lock a mailbox lock is using.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordLockFlavor {
    /// Open file description lock.
    Ofd,
    /// Classic per-process POSIX lock (kernels without OFD locks).
    Posix,
}

fn whole_file(l_type: i32) -> nix::libc::flock {
    nix::libc::flock {
        l_type: l_type as i16,
        l_whence: nix::libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0, // to the end of the file, however it grows
        l_pid: 0, // must be 0 for OFD locks
    }
}

/// Try once to lock the whole file; `Ok(false)` if someone else holds a
/// conflicting lock.
pub(crate) fn try_lock(fd: impl AsFd, kind: LockKind) -> nix::Result<(bool, RecordLockFlavor)> {
    let l_type = match kind {
        LockKind::Read => nix::libc::F_RDLCK,
        LockKind::Write => nix::libc::F_WRLCK,
    };
    let fl = whole_file(l_type);
    let fd = fd.as_fd();
    let (result, flavor) = match fcntl(fd, FcntlArg::F_OFD_SETLK(&fl)) {
        Err(Errno::EINVAL) => (fcntl(fd, FcntlArg::F_SETLK(&fl)), RecordLockFlavor::Posix),
        other => (other, RecordLockFlavor::Ofd),
    };
    match result {
        Ok(_) => Ok((true, flavor)),
        Err(Errno::EAGAIN | Errno::EACCES) => Ok((false, flavor)),
        Err(errno) => Err(errno),
    }
}

/// Release a lock taken by [`try_lock`].
pub(crate) fn unlock(fd: impl AsFd, flavor: RecordLockFlavor) -> nix::Result<()> {
    let fl = whole_file(nix::libc::F_UNLCK);
    let arg = match flavor {
        RecordLockFlavor::Ofd => FcntlArg::F_OFD_SETLK(&fl),
        RecordLockFlavor::Posix => FcntlArg::F_SETLK(&fl),
    };
    fcntl(fd.as_fd(), arg).map(drop)
}
