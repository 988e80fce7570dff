//! The C ABI: liblockfile 1.17's symbols, turning C strings, return codes
//! and `errno` into the calls of [`crate::calls`] and back. The only
//! module of this crate with `unsafe` code: reading the caller's strings
//! and struct, and the signal set calls nix has no safe wrapper for.
//!
//! Every entry point:
//! - reads its arguments defensively (a NULL pointer is `EINVAL`, not a
//!   crash);
//! - blocks `SIGCHLD` and `SIGPIPE` in the calling thread while it works,
//!   as liblockfile does around its `dotlockfile` child, when the lock's
//!   directory is one the setgid helper may serve (group-writable, not
//!   world-writable; `/var/mail`): the program's own `SIGCHLD` handler must
//!   not reap the helper we may spawn, and a helper that exits before
//!   reading our request must give us `EPIPE`, not kill the program. A
//!   `SIGPIPE` raised by our own write is consumed before the mask is
//!   restored. (Elsewhere no helper is ever started, and the system calls
//!   are saved.)
//! - catches a panic (it must not unwind into C) and reports it as
//!   `L_ERROR`/-1 with `errno` `EIO`;
//! - sets `errno` last, after everything that could change it.

use std::ffi::{c_char, c_int, CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use nix::errno::Errno;
use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
use spoollock::liblockfile::{L_ERROR, L_SUCCESS};

use crate::calls;

/// `struct __lockargs` of `lockfile.h` (`lockfile_create2`'s extra
/// arguments, named `struct lockargs` under `LOCKFILE_EXPERIMENTAL`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct LockArgs {
    /// Seconds between retries, with `L_INTERVAL`.
    pub interval: c_int,
}

/// The caller's string as a path; `None` for a NULL pointer.
///
/// # Safety
///
/// `p` is NULL or points to a NUL-terminated string that stays valid and
/// unchanged during the call (what every liblockfile function requires).
unsafe fn path<'a>(p: *const c_char) -> Option<&'a Path> {
    if p.is_null() {
        return None;
    }
    // SAFETY: not NULL, and NUL-terminated and live for the call by this
    // function's contract (passed on from the exported function's).
    let bytes = unsafe { CStr::from_ptr(p) }.to_bytes();
    Some(Path::new(OsStr::from_bytes(bytes)))
}

/// Signals blocked while a call works; restored on drop. See the module
/// documentation.
struct Quiet {
    old: SigSet,
    blocked: bool,
    /// The directory's metadata, read to decide (and passed on to the
    /// call, which needs it too).
    dir: Option<std::fs::Metadata>,
}

impl Quiet {
    /// Quiet the signals if a call on a lock in `dir` may start the
    /// helper: `dir` is group-writable and not world-writable, or cannot
    /// be looked at, or is not known yet (`None`: `maillock`).
    fn for_dir(dir: Option<&Path>) -> Quiet {
        use std::os::unix::fs::PermissionsExt;
        let meta = dir.and_then(|dir| {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            std::fs::metadata(dir).ok()
        });
        let may_use_helper = meta.as_ref().is_none_or(|m| {
            let mode = m.permissions().mode();
            mode & 0o020 != 0 && mode & 0o002 == 0
        });
        if !may_use_helper {
            return Quiet {
                old: SigSet::empty(),
                blocked: false,
                dir: meta,
            };
        }
        let mut set = SigSet::empty();
        set.add(Signal::SIGCHLD);
        set.add(Signal::SIGPIPE);
        let mut old = SigSet::empty();
        let blocked = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)).is_ok();
        Quiet {
            old,
            blocked,
            dir: meta,
        }
    }
}

impl Drop for Quiet {
    fn drop(&mut self) {
        if !self.blocked {
            return;
        }
        // Not blocked before us, a SIGPIPE pending now was raised during
        // the call (one pending earlier would have been delivered then).
        if !self.old.contains(Signal::SIGPIPE) && sigpipe_pending() {
            consume_sigpipe();
        }
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.old), None);
    }
}

fn sigpipe_only() -> nix::libc::sigset_t {
    let mut set = SigSet::empty();
    set.add(Signal::SIGPIPE);
    *set.as_ref()
}

/// Is a `SIGPIPE` pending for this thread or the process?
fn sigpipe_pending() -> bool {
    let mut pending = sigpipe_only();
    // SAFETY: `sigpending` fills the `sigset_t` we own and passed by a
    // valid pointer; `sigismember` only reads it. No other effect.
    unsafe {
        nix::libc::sigpending(&mut pending) == 0
            && nix::libc::sigismember(&pending, nix::libc::SIGPIPE) == 1
    }
}

/// Take the pending `SIGPIPE` our own write to a vanished helper raised,
/// without waiting.
fn consume_sigpipe() {
    let set = sigpipe_only();
    let zero = nix::libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: both pointers are to live values of the right types; a NULL
    // `siginfo_t` is allowed. SIGPIPE is blocked (by `Quiet`), as
    // `sigtimedwait` requires; with a zero timeout it never blocks.
    unsafe {
        nix::libc::sigtimedwait(&set, std::ptr::null_mut(), &zero);
    }
}

/// Run `f` with the signals quiet (for a lock in `dir`) and no panic
/// escaping; `on_panic` is its result if it panics. `f` is given the
/// directory's metadata, when it was read.
fn guarded<T>(
    dir: Option<&Path>,
    on_panic: T,
    f: impl FnOnce(Option<&std::fs::Metadata>) -> T,
) -> T {
    let quiet = Quiet::for_dir(dir);
    let result = catch_unwind(AssertUnwindSafe(|| f(quiet.dir.as_ref())));
    drop(quiet);
    result.unwrap_or_else(|_| {
        Errno::EIO.set();
        on_panic
    })
}

/// A `lockfile_create` result as its return code, setting `errno`.
fn code(result: Result<(), (c_int, Errno)>) -> c_int {
    match result {
        Ok(()) => L_SUCCESS,
        Err((code, errno)) => {
            errno.set();
            code
        }
    }
}

/// A `lockfile_remove`/`touch`/`check` result as 0 or -1, setting `errno`.
fn status(result: Result<(), Errno>) -> c_int {
    match result {
        Ok(()) => 0,
        Err(errno) => {
            errno.set();
            -1
        }
    }
}

/// Create the lock file `lockfile`; see lockfile_create(3).
///
/// # Safety
///
/// `lockfile` is NULL or a NUL-terminated string valid for the call.
#[no_mangle]
pub unsafe extern "C" fn lockfile_create(
    lockfile: *const c_char,
    retries: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: the caller's contract, stated above.
    let Some(lockfile) = (unsafe { path(lockfile) }) else {
        return code(Err((L_ERROR, Errno::EINVAL)));
    };
    let result = guarded(lockfile.parent(), Err((L_ERROR, Errno::EIO)), |dir| {
        calls::lockfile_create(lockfile, retries, flags, dir)
    });
    code(result)
}

/// `lockfile_create` with extra arguments (`L_INTERVAL`); see
/// lockfile_create(3) and `lockfile.h` (`LOCKFILE_EXPERIMENTAL`).
///
/// # Safety
///
/// `lockfile` is NULL or a NUL-terminated string valid for the call;
/// `args` is NULL or points to `args_sz` readable bytes holding a
/// `struct __lockargs` when `args_sz` is its size.
#[no_mangle]
pub unsafe extern "C" fn lockfile_create2(
    lockfile: *const c_char,
    retries: c_int,
    flags: c_int,
    args: *const LockArgs,
    args_sz: c_int,
) -> c_int {
    // SAFETY: the caller's contract, stated above.
    let Some(lockfile) = (unsafe { path(lockfile) }) else {
        return code(Err((L_ERROR, Errno::EINVAL)));
    };
    // A size other than ours is another version of the struct: refused,
    // as liblockfile does, before it is read.
    let interval = if args.is_null() {
        None
    } else if usize::try_from(args_sz) != Ok(std::mem::size_of::<LockArgs>()) {
        return code(Err((L_ERROR, Errno::EINVAL)));
    } else {
        // SAFETY: not NULL, and the caller says it holds a `struct
        // __lockargs` of exactly this size; read unaligned to ask nothing
        // of the caller's alignment.
        Some(unsafe { std::ptr::read_unaligned(args) }.interval)
    };
    let result = guarded(lockfile.parent(), Err((L_ERROR, Errno::EIO)), |dir| {
        calls::lockfile_create2(lockfile, retries, flags, interval, dir)
    });
    code(result)
}

/// Remove the lock file `lockfile`; see lockfile_remove(3).
///
/// # Safety
///
/// `lockfile` is NULL or a NUL-terminated string valid for the call.
#[no_mangle]
pub unsafe extern "C" fn lockfile_remove(lockfile: *const c_char) -> c_int {
    // SAFETY: the caller's contract, stated above.
    let Some(lockfile) = (unsafe { path(lockfile) }) else {
        return status(Err(Errno::EINVAL));
    };
    status(guarded(lockfile.parent(), Err(Errno::EIO), |dir| {
        calls::lockfile_remove(lockfile, dir)
    }))
}

/// Refresh the lock file `lockfile`; see lockfile_touch(3).
///
/// # Safety
///
/// `lockfile` is NULL or a NUL-terminated string valid for the call.
#[no_mangle]
pub unsafe extern "C" fn lockfile_touch(lockfile: *const c_char) -> c_int {
    // SAFETY: the caller's contract, stated above.
    let Some(lockfile) = (unsafe { path(lockfile) }) else {
        return status(Err(Errno::EINVAL));
    };
    status(guarded(lockfile.parent(), Err(Errno::EIO), |dir| {
        calls::lockfile_touch(lockfile, dir)
    }))
}

/// 0 if a valid lock `lockfile` exists, -1 if not; see lockfile_check(3).
///
/// # Safety
///
/// `lockfile` is NULL or a NUL-terminated string valid for the call.
#[no_mangle]
pub unsafe extern "C" fn lockfile_check(lockfile: *const c_char, flags: c_int) -> c_int {
    // SAFETY: the caller's contract, stated above.
    let Some(lockfile) = (unsafe { path(lockfile) }) else {
        return status(Err(Errno::EINVAL));
    };
    status(guarded(lockfile.parent(), Err(Errno::EIO), |_| {
        calls::lockfile_check(lockfile, flags)
    }))
}

/// Lock the mailbox of `name`; see maillock(3).
///
/// # Safety
///
/// `name` is NULL or a NUL-terminated string valid for the call.
#[no_mangle]
pub unsafe extern "C" fn maillock(name: *const c_char, retries: c_int) -> c_int {
    if name.is_null() {
        return code(Err((L_ERROR, Errno::EINVAL)));
    }
    // SAFETY: not NULL; NUL-terminated and live by the caller's contract.
    let name = unsafe { CStr::from_ptr(name) }.to_bytes();
    // The spool, or $MAIL's directory: not known yet; quiet anyway.
    code(guarded(None, Err((L_ERROR, Errno::EIO)), |_| {
        calls::maillock(name, retries)
    }))
}

/// Remove `maillock`'s lock; see mailunlock(3).
#[no_mangle]
pub extern "C" fn mailunlock() {
    let errno = Errno::last();
    guarded(None, (), |_| calls::mailunlock());
    // A void function: the caller's errno is left as it was.
    errno.set();
}

/// Refresh `maillock`'s lock; see touchlock(3).
#[no_mangle]
pub extern "C" fn touchlock() {
    let errno = Errno::last();
    guarded(None, (), |_| calls::touchlock());
    errno.set();
}
