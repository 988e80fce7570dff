//! The CLI's only unsafe calls: signal dispositions.

use nix::sys::signal::{signal, SigHandler, Signal};

/// Make a write beyond `RLIMIT_FSIZE` fail with `EFBIG` (reported as a
/// clear error) instead of killing spoollock with SIGXFSZ while it holds
/// a half-made lock.
pub fn ignore_file_size_signal() {
    // SAFETY: installing SIG_IGN runs no handler code, so nothing here can
    // be async-signal-unsafe; it is done before any thread is started.
    let _ = unsafe { signal(Signal::SIGXFSZ, SigHandler::SigIgn) };
}

/// Give the command `run` starts the default disposition back (an ignored
/// signal stays ignored across exec).
pub fn default_file_size_signal() {
    // SAFETY: installing SIG_DFL runs no handler code, so nothing here
    // can be async-signal-unsafe. Threads may exist by now (the lock's
    // keep-alive): `signal` changes the process-wide disposition
    // atomically in the kernel, and no thread of ours handles SIGXFSZ.
    let _ = unsafe { signal(Signal::SIGXFSZ, SigHandler::SigDfl) };
}

/// Start `cmd`'s process with an empty signal mask: spoollock blocks the
/// termination signals it forwards, and a blocked mask survives exec.
pub fn unblock_signals_in_child(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let empty = nix::sys::signal::SigSet::empty();
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe calls are allowed; it makes exactly one,
    // pthread_sigmask (sigprocmask), on a set built before the fork, and
    // allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::signal::pthread_sigmask(
                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                Some(&empty),
                None,
            )
            .map_err(std::io::Error::from)
        });
    }
}
