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
    // SAFETY: as above; SIG_DFL runs no handler code.
    let _ = unsafe { signal(Signal::SIGXFSZ, SigHandler::SigDfl) };
}
