//! `spoollock run`: the command runs while we hold the lock. Termination
//! signals sent to spoollock are passed on to the command instead of
//! killing spoollock, so the lock is always released after the command
//! has ended (a SIGKILL to spoollock leaves a lock that the next locker on
//! this host breaks at once: its pid is gone).

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::unistd::Pid;
use spoollock::Error;

const FORWARDED: [Signal; 4] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
];

/// Run `argv`, forwarding termination signals to it; its exit status as
/// a shell would report it (128+N for signal N).
pub fn run_with_lock(argv: &[OsString]) -> Result<u8, Error> {
    let (program, args) = argv.split_first().ok_or(Error::Internal(
        "run without a command (the command line requires one)",
    ))?;
    let mut forwarded = SigSet::empty();
    for sig in FORWARDED {
        forwarded.add(sig);
    }
    // Blocked here, these signals wait for the forwarding thread; the child
    // starts with an empty mask.
    let mut previous = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&forwarded), Some(&mut previous))
        .map_err(|e| Error::Io(e.into()))?;

    crate::system::default_file_size_signal();
    let mut command = Command::new(program);
    command.args(args);
    crate::system::unblock_signals_in_child(&mut command);
    let spawned = command.spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let _ =
                nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&previous), None);
            return Err(Error::Io(std::io::Error::new(
                e.kind(),
                format!("cannot run {}: {e}", program.to_string_lossy()),
            )));
        }
    };
    let pid = Pid::from_raw(child.id() as i32);
    let done = Arc::new(AtomicBool::new(false));
    let done_flag = Arc::clone(&done);
    std::thread::spawn(move || loop {
        let Ok(sig) = forwarded.wait() else { return };
        if done_flag.load(Ordering::SeqCst) {
            return;
        }
        let _ = kill(pid, sig);
    });

    let status = child.wait();
    done.store(true, Ordering::SeqCst);
    let status = status?;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(sig)) => 128u8.wrapping_add(sig as u8),
        (None, None) => 1,
    })
}
