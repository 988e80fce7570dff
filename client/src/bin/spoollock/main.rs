//! `spoollock`: lock a mailbox (or any file) from the command line.

/// Write a line to stderr, ignoring failure: a full disk or an
/// RLIMIT_FSIZE on a redirected stderr must not turn an error into a panic.
macro_rules! report {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod cli;
mod dotlockfile;
mod run;
mod status;
mod system;

use std::process::ExitCode;
use std::time::SystemTime;

use clap::Parser;
use spoollock::{
    lock_state, Error, Event, HelperError, LockError, LockGuard, LockOptions, LockState,
    LockTarget, MailboxLock, PidMode, Refusal,
};

use cli::{Cli, Command, Common};

/// Exit statuses, documented in `--help` and the README.
pub mod exit {
    pub const OK: u8 = 0;
    /// `check`: no valid lock is held (free or stale).
    pub const NOT_HELD: u8 = 1;
    /// Bad command line (clap uses the same code).
    pub const USAGE: u8 = 2;
    /// The lock is held by someone else (`--no-wait`, retries or timeout ran out).
    pub const BUSY: u8 = 3;
    /// Permission denied (directory not writable, helper missing).
    pub const PERMISSION: u8 = 4;
    /// Any other error (I/O, bad path, lock file is a symlink...).
    pub const ERROR: u8 = 5;
    /// `unlock`/`touch`: the lock is not ours (absent, replaced, another user's).
    pub const NOT_OURS: u8 = 6;
    /// `deliver`: not delivered, try again later (sysexits EX_TEMPFAIL).
    pub const TEMPFAIL: u8 = 75;
}

struct DeliverFailed(u8);

/// The locks `run` holds while its command runs.
enum RunLocks {
    /// `--lock-file`: just that dotlock.
    Dotlock(LockGuard),
    /// PATH or `--mailbox`: the dotlock and/or fcntl lock on the mailbox.
    Mailbox(MailboxLock),
}

impl RunLocks {
    fn release(self) -> Result<(), Error> {
        match self {
            RunLocks::Dotlock(guard) => guard.release(),
            RunLocks::Mailbox(mailbox) => mailbox.release(),
        }
    }
}

fn hold_for_run(common: &Common, locks: &cli::Locks) -> Result<RunLocks, Error> {
    let target = common.target()?;
    let lock_opts = options(common, &target)?;
    if common.lock_file.is_some() {
        return Ok(RunLocks::Dotlock(LockGuard::acquire_target(
            &target, &lock_opts,
        )?));
    }
    let path = common.mailbox_path()?;
    let mut opts = locks.mailbox_options();
    opts.lock = lock_opts;
    // fcntl needs the file; `run` does not create it.
    opts.fcntl &= path.exists();
    if !opts.fcntl && !opts.dotlock {
        return Err(Error::BadPath(format!(
            "{}: no such file to fcntl-lock",
            path.display()
        )));
    }
    Ok(RunLocks::Mailbox(MailboxLock::open(&path, &opts)?))
}

/// `spoollock deliver`: the message from standard input, appended whole
/// or not at all. "delivered" (exit 0) means the message is whole in the
/// file the path names when the locks are released (see
/// `MailboxLock::append`).
fn deliver(
    common: &Common,
    locks: &cli::Locks,
    from: Option<String>,
    create: &cli::Create,
) -> Result<u8, Error> {
    use std::io::Read;
    let path = common.mailbox_path()?;
    let target = LockTarget::for_file(&path)?;
    let mut message = Vec::new();
    std::io::stdin().lock().read_to_end(&mut message)?;
    let sender = match from {
        Some(sender) => sender,
        None => spoollock::login()?,
    };
    let mut opts = locks.mailbox_options();
    opts.lock = options(common, &target)?;
    let owner = match &create.owner {
        Some(owner) => Some(owner_ids(owner, &path)?),
        // Decided now even if the mailbox exists: it may be removed while
        // we wait (mutt removes an empty one) and created again by us. A
        // name that is no login is refused only when there is no mailbox.
        None => match spoollock::spool_owner(&path) {
            Ok(owner) => owner,
            Err(_) if std::fs::symlink_metadata(&path).is_ok() => None,
            Err(e) => return Err(e),
        },
    };
    let spool_default = if owner.is_some() { 0o660 } else { 0o600 };
    opts.create = Some(create.mode.unwrap_or(spool_default));
    opts.create_owner = owner;
    let mut mailbox = MailboxLock::open(&path, &opts)?;
    mailbox.append(&message, &sender)?;
    mailbox.release()?;
    say(
        common,
        format_args!("delivered {} bytes to {}", message.len(), path.display()),
    );
    Ok(exit::OK)
}

/// `--owner LOGIN[:GROUP]` as ids. The group defaults to the directory's
/// group in a spool, else the login's own.
fn owner_ids(spec: &str, path: &std::path::Path) -> Result<(u32, u32), Error> {
    use nix::unistd::{Group, User};
    let bad = |why: String| Error::BadPath(format!("--owner {spec:?}: {why}"));
    let (login, group) = match spec.split_once(':') {
        Some((login, group)) => (login, Some(group)),
        None => (spec, None),
    };
    let user = match login.parse::<u32>() {
        Ok(uid) => User::from_uid(uid.into()),
        Err(_) => User::from_name(login),
    }
    .map_err(|e| bad(e.desc().into()))?
    .ok_or_else(|| bad(format!("no login {login:?}")))?;
    let gid = match group {
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => Group::from_name(group)
                .map_err(|e| bad(e.desc().into()))?
                .ok_or_else(|| bad(format!("no group {group:?}")))?
                .gid
                .as_raw(),
        },
        None => match spoollock::spool_owner(path) {
            Ok(Some((_, spool_gid))) => spool_gid,
            _ => user.gid.as_raw(),
        },
    };
    Ok((user.uid.as_raw(), gid))
}

fn main() -> ExitCode {
    system::ignore_file_size_signal();
    if dotlockfile::invoked_as_dotlockfile() {
        let args: Vec<_> = std::env::args_os().skip(1).collect();
        return ExitCode::from(dotlockfile::main(&args));
    }
    let cli = Cli::parse();
    let Some(common) = cli.command.common().cloned() else {
        return match &cli.command {
            Command::Dotlockfile { args } => ExitCode::from(dotlockfile::main(args)),
            Command::Status {
                paths,
                json,
                stale_age,
            } => match status::status(paths, *json, *stale_age) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    report!("spoollock: {e}");
                    ExitCode::from(exit_code(&e))
                }
            },
            _ => unreachable!("every other command has common options"),
        };
    };
    match dispatch(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if !common.quiet {
                report!("spoollock: {e}");
            }
            ExitCode::from(exit_code(&e))
        }
    }
}

fn exit_code(e: &Error) -> u8 {
    match e {
        Error::Lock(LockError::Busy { .. } | LockError::Timeout { .. })
        | Error::Refused(Refusal::HeldBySession { .. }) => exit::BUSY,
        Error::Helper(e) if e.is_installation() => exit::PERMISSION,
        Error::Helper(HelperError::NotOwnMailbox { .. }) => exit::PERMISSION,
        // Spawning, pipes, protocol: a failure of the moment, not a
        // permission the caller lacks.
        Error::Helper(_) => exit::ERROR,
        Error::Lock(LockError::Permission { .. })
        | Error::Refused(_)
        | Error::HelperExited { .. }
        | Error::SpoolGroup { .. } => exit::PERMISSION,
        Error::Io(e) if e.kind() == std::io::ErrorKind::PermissionDenied => exit::PERMISSION,
        Error::Lock(LockError::NotOurs) => exit::NOT_OURS,
        Error::BadPath(_) | Error::NoMailbox(_) | Error::UnusableLogin { .. } => exit::USAGE,
        _ => exit::ERROR,
    }
}

fn dispatch(command: Command) -> Result<u8, Error> {
    match command {
        Command::Dotlockfile { args } => Ok(dotlockfile::main(&args)),
        Command::Status {
            paths,
            json,
            stale_age,
        } => status::status(&paths, json, stale_age),
        Command::Run {
            common,
            locks,
            command,
        } => {
            let held = hold_for_run(&common, &locks)?;
            let status = run::run_with_lock(&command);
            let released = held.release();
            let code = status?;
            released?;
            Ok(code)
        }
        Command::Deliver {
            common,
            locks,
            from,
            create,
        } => deliver(&common, &locks, from, &create)
            .map_err(|e| {
                if !common.quiet {
                    report!("spoollock: message not delivered: {e}");
                }
                DeliverFailed(exit_code(&e))
            })
            .or_else(|DeliverFailed(code)| {
                Ok(if code == exit::USAGE {
                    code
                } else {
                    exit::TEMPFAIL
                })
            }),
        Command::Lock { common, parent_pid } => {
            let target = common.target()?;
            let mut opts = options(&common, &target)?;
            opts.pid_mode = if parent_pid {
                PidMode::Parent
            } else {
                PidMode::None
            };
            spoollock::lock_detached(&target, &opts)?;
            say(&common, format_args!("locked {}", target.path().display()));
            Ok(exit::OK)
        }
        Command::Unlock { common, force } => {
            let target = common.target()?;
            spoollock::unlock_by_name(&target, force)?;
            say(
                &common,
                format_args!("unlocked {}", target.path().display()),
            );
            Ok(exit::OK)
        }
        Command::Touch { common, force } => {
            let target = common.target()?;
            spoollock::touch_by_name(&target, force)?;
            Ok(exit::OK)
        }
        Command::Check { common } => {
            let target = common.target()?;
            let state = lock_state(&target, &options(&common, &target)?)?;
            let path = target.path();
            match state {
                LockState::Held(holder) => {
                    say(
                        &common,
                        format_args!("{}: held by {holder}", path.display()),
                    );
                    Ok(exit::OK)
                }
                LockState::Stale(holder, why) => {
                    say(
                        &common,
                        format_args!("{}: stale ({why}): {holder}", path.display()),
                    );
                    Ok(exit::NOT_HELD)
                }
                LockState::Free => {
                    say(&common, format_args!("{}: not locked", path.display()));
                    Ok(exit::NOT_HELD)
                }
            }
        }
    }
}

fn say(common: &Common, what: std::fmt::Arguments<'_>) {
    if common.verbose && !common.quiet {
        report!("spoollock: {what}");
    }
}

fn options(common: &Common, target: &LockTarget) -> Result<LockOptions, Error> {
    let mut opts = LockOptions {
        wait: common.wait(),
        stale_age: common.stale_age,
        keep_alive: Some(common.stale_age / 4),
        ..LockOptions::default()
    };
    if common.verbose && !common.quiet {
        let path = target.path();
        opts.observer = Some(std::sync::Arc::new(move |event: &Event| match event {
            Event::Waiting(holder) => {
                let age = SystemTime::now()
                    .duration_since(holder.mtime)
                    .map(|d| format!("{}s ago", d.as_secs()))
                    .unwrap_or_else(|_| "in the future".into());
                report!(
                    "spoollock: waiting for {}: held by {holder}, last refreshed {age}",
                    path.display()
                );
            }
            Event::BrokeStale(holder, why) => {
                report!(
                    "spoollock: removed stale lock {} ({why}): {holder}",
                    path.display()
                );
            }
            Event::NoRecordLocks(errno) => {
                report!(
                    "spoollock: the file system cannot take fcntl locks ({}); \
                     locking with {} alone",
                    errno.desc(),
                    path.display()
                );
            }
            Event::MailboxReplaced => {
                report!("spoollock: the mailbox was replaced or removed while waiting; locking it again");
            }
            _ => {}
        }));
    }
    Ok(opts)
}
