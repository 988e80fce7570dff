//! Thin wrappers over the process-wide system calls the helper makes at
//! start-up and around privileged operations. This is the only module with
//! `unsafe` code; every such block says why it is sound.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::{
    sigaction, sigprocmask, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal,
};
use nix::sys::stat::{fstat, umask, FileStat, Mode, SFlag};
use nix::unistd::{getresgid, setresgid, Gid, ResGid};

/// Make sure descriptors 0, 1 and 2 are open, so that no file the helper
/// opens later can land on one of them (and receive protocol replies or
/// error text). Closed ones are pointed at `/dev/null`.
///
/// Returns which of them were closed.
pub fn fill_standard_fds() -> Result<[bool; 3], Errno> {
    let is_open = |fd: BorrowedFd<'_>| fcntl(fd, FcntlArg::F_GETFD).is_ok();
    if is_open(std::io::stdin().as_fd())
        && is_open(std::io::stdout().as_fd())
        && is_open(std::io::stderr().as_fd())
    {
        // The usual case, told without a path lookup.
        return Ok([false; 3]);
    }
    let mut closed = [false; 3];
    loop {
        let fd = open(
            "/dev/null",
            OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )?;
        let raw = fd.as_raw_fd();
        if !(0..=2).contains(&raw) {
            // The lowest free descriptor is above 2: all three are open.
            return Ok(closed);
        }
        closed[raw as usize] = true;
        // Keep it open for the life of the process: it now is that
        // standard descriptor.
        let _ = fd.into_raw_fd();
    }
}

/// How a standard descriptor is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdKind {
    pub is_pipe: bool,
    pub readable: bool,
    pub writable: bool,
    /// What glibc puts on a standard descriptor that was closed when a
    /// setgid program starts (`/dev/full` write-only on 0, `/dev/null`
    /// read-only on 1 and 2, opened before `main`, all with `O_NOFOLLOW`,
    /// which a shell's redirection such as `2</dev/null` does not use).
    pub filled_by_libc: bool,
    /// The kind of file: "a pipe", "a regular file", ...
    pub file: &'static str,
}

impl std::fmt::Display for FdKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let access = match (self.readable, self.writable) {
            (true, true) => "open for reading and writing",
            (true, false) => "open read-only",
            (false, true) => "open write-only",
            (false, false) => "open without read or write access",
        };
        write!(f, "{}, {access}", self.file)
    }
}

/// Inspect an open descriptor (one of the standard three).
pub fn fd_kind(fd: impl AsFd) -> Result<FdKind, Errno> {
    let st: FileStat = fstat(&fd)?;
    let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL)?);
    let mode = flags & OFlag::O_ACCMODE;
    let is_mem_dev = |minor| {
        kind == SFlag::S_IFCHR
            && nix::sys::stat::major(st.st_rdev) == 1
            && nix::sys::stat::minor(st.st_rdev) == minor
    };
    let filled_by_libc = flags.contains(OFlag::O_NOFOLLOW)
        && ((is_mem_dev(7) && mode == OFlag::O_WRONLY) // /dev/full
            || (is_mem_dev(3) && mode == OFlag::O_RDONLY)); // /dev/null
    let file = match kind {
        SFlag::S_IFIFO => "a pipe",
        SFlag::S_IFREG => "a regular file",
        SFlag::S_IFCHR if is_mem_dev(3) => "/dev/null",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFBLK => "a block device",
        _ => "a file of another kind",
    };
    Ok(FdKind {
        is_pipe: kind == SFlag::S_IFIFO,
        readable: mode == OFlag::O_RDONLY || mode == OFlag::O_RDWR,
        writable: mode == OFlag::O_WRONLY || mode == OFlag::O_RDWR,
        filled_by_libc,
        file,
    })
}

/// Put every signal back to its default disposition except `SIGPIPE` and
/// `SIGXFSZ`, which are ignored (a closed client pipe and `RLIMIT_FSIZE`
/// then surface as `EPIPE` and `EFBIG` errors the helper handles, instead
/// of killing it between two steps), and unblock all signals.
pub fn reset_signals() -> Result<(), Errno> {
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    for signal in Signal::iterator() {
        if matches!(signal, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        let action = if matches!(signal, Signal::SIGPIPE | Signal::SIGXFSZ) {
            &ignore
        } else {
            &default
        };
        // SAFETY: the new action is SIG_DFL or SIG_IGN, so no handler code
        // ever runs in signal context; the previous action is discarded,
        // so no handler installed by the caller (none can survive execve
        // anyway) is kept or called.
        unsafe { sigaction(signal, action) }?;
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
}

/// Remove every environment variable.
pub fn clear_environment() -> Result<(), Errno> {
    // SAFETY: `clearenv` is unsound only when another thread reads or
    // writes the environment at the same time. The helper never creates
    // a thread, and this runs in `run`'s start-up, after only the
    // descriptor fill, the parking of the group and the signal reset, none
    // of which reads the environment; nothing keeps a pointer into it (std
    // copies what it reads).
    unsafe { nix::env::clearenv() }.map_err(|_| Errno::EINVAL)?;
    if std::env::vars_os().next().is_some() {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// Fix the file creation mask (lock files get explicit modes anyway).
pub fn set_umask() {
    umask(Mode::from_bits_truncate(0o022));
}

/// No core dumps, not dumpable (so the caller cannot ptrace the helper or
/// read its memory through /proc), and no privilege gained by exec.
pub fn harden_process() -> Result<(), Errno> {
    setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
    nix::sys::prctl::set_dumpable(false)?;
    nix::sys::prctl::set_no_new_privs()?;
    Ok(())
}

/// The helper's own file: whether it is setgid and to which group, and
/// whether its file system honours that (`nosuid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnBinary {
    pub setgid: bool,
    pub gid: u32,
    pub nosuid: bool,
}

/// What `/proc/self/exe` says about the helper's file, to tell a missing
/// setgid bit from one set to another group or ignored by the kernel.
pub fn own_binary() -> Option<OwnBinary> {
    use std::os::unix::fs::MetadataExt;
    const EXE: &str = "/proc/self/exe";
    let meta = std::fs::metadata(EXE).ok()?;
    let nosuid = nix::sys::statvfs::statvfs(EXE)
        .map(|v| v.flags().contains(nix::sys::statvfs::FsFlags::ST_NOSUID))
        .unwrap_or(false);
    Some(OwnBinary {
        setgid: meta.mode() & 0o2000 != 0,
        gid: meta.gid(),
        nosuid,
    })
}

/// Whether `no_new_privs` was already set when the helper was executed
/// (then the kernel ignored the setgid bit).
pub fn no_new_privs() -> Result<bool, Errno> {
    nix::sys::prctl::get_no_new_privs()
}

/// Why the capability sets could not be emptied.
#[derive(Debug)]
pub enum CapabilityError {
    /// Clearing this set failed.
    Clear(caps::CapSet, caps::errors::CapsError),
    /// Reading this set back failed.
    Read(caps::CapSet, caps::errors::CapsError),
    /// This set still holds these capabilities after it was cleared.
    Remain(caps::CapSet, caps::CapsHashSet),
}

impl std::fmt::Display for CapabilityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CapabilityError::Clear(set, e) => write!(f, "cannot clear {set:?} capabilities: {e}"),
            CapabilityError::Read(_, e) => write!(f, "cannot read capabilities: {e}"),
            CapabilityError::Remain(set, held) => {
                write!(f, "{set:?} capabilities remain: {held:?}")
            }
        }
    }
}

/// Empty every capability set (effective, permitted, inheritable,
/// ambient) and check that they are empty. A setgid (not setuid) helper
/// normally has none; a root caller's are dropped.
pub fn drop_capabilities() -> Result<(), CapabilityError> {
    use caps::CapSet;
    // Clearing the permitted set clears the effective set with it (one
    // `capset`); the three are read back below.
    for set in [CapSet::Ambient, CapSet::Inheritable, CapSet::Permitted] {
        caps::clear(None, set).map_err(|e| CapabilityError::Clear(set, e))?;
    }
    for set in [CapSet::Effective, CapSet::Permitted, CapSet::Inheritable] {
        let held = caps::read(None, set).map_err(|e| CapabilityError::Read(set, e))?;
        if !held.is_empty() {
            return Err(CapabilityError::Remain(set, held));
        }
    }
    Ok(())
}

/// Real, effective and saved group ids.
pub fn group_ids() -> Result<ResGid, Errno> {
    getresgid()
}

/// Set real, effective and saved group ids, and check that the kernel
/// applied exactly that.
pub fn set_group_ids(real: Gid, effective: Gid, saved: Gid) -> Result<(), Errno> {
    setresgid(real, effective, saved)?;
    let now = getresgid()?;
    if (now.real, now.effective, now.saved) == (real, effective, saved) {
        Ok(())
    } else {
        Err(Errno::EPERM)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_fds_of_the_test_process_are_open() {
        assert_eq!(fill_standard_fds().unwrap(), [false; 3]);
    }

    #[test]
    fn a_pipe_is_recognised() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let rk = fd_kind(&r).unwrap();
        assert!(rk.is_pipe && rk.readable && !rk.writable);
        let wk = fd_kind(&w).unwrap();
        assert!(wk.is_pipe && wk.writable && !wk.readable);
        let null = open("/dev/null", OFlag::O_RDONLY, Mode::empty()).unwrap();
        assert!(!fd_kind(&null).unwrap().is_pipe);
    }
}
