//! `spoollock-helper`: the setgid program that creates and removes
//! `<spool>/<login>.lock` for unprivileged users on spools that only the
//! mail group may write. See `SECURITY.md` for its threat model and
//! `spoollock_protocol` for the protocol it speaks on its standard input
//! and output.
//!
//! Start-up (`run`, `start`; `docs/design.md`, "The helper"): a pipeline of
//! small steps, each returning `Result<_, StartupError>`. The steps keep
//! the numbers the comments in `start` give them; step 3 runs before step
//! 2, so that every later refusal is audited:
//! - step 1: descriptors 0, 1, 2 are made to exist (so no later open lands on
//!   them; which were closed at exec is remembered for step 4), the group
//!   the setgid bit gave is parked in the saved set-gid (so the syslog
//!   connection and the NSS lookups run with the caller's gid), signals
//!   are reset, the environment is cleared, the umask is fixed, core dumps
//!   and ptrace are disabled, `no_new_privs` is set (whether it was
//!   already set at exec is noted first, for step 5's message); a failure
//!   of these settings is refused once the audit channel is up (a failure
//!   to fill the descriptors or park the group, at once);
//! - step 3: the audit channel (local syslog socket) must connect, and the login
//!   is looked up from the real uid; without syslog only `--help` goes
//!   on;
//! - step 2: `argc == 0` (or an empty `argv[0]`) is refused; the only argument
//!   accepted is `--help`, answered with every privilege dropped;
//! - step 4: descriptors 0 and 1 must be pipes (read and write ends), 2 open for
//!   writing, and none of 0, 1, 2 may have been closed at exec;
//! - step 5: the effective and saved gid at exec must be the helper's group (the
//!   setgid bit took effect): otherwise it says so and exits, never
//!   pretending;
//! - step 6: the group stays parked in the saved set-gid, capabilities are
//!   emptied.
//!
//! A refusal is said on standard error and, once the audit channel is up,
//! recorded in the audit trail, in one place (`refuse`), which also turns
//! it into the exit status. Then the session runs with the spool
//! configuration loaded; the group is raised only around the spool's
//! directory-changing calls (see [`spoollock_helper::privilege`]), and
//! dropped for good when the session ends.

// `main` is the C entry point below, without std's runtime start-up (unit
// tests keep the test harness's `main`).
#![cfg_attr(not(test), no_main)]

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::unistd::{getppid, getuid, Gid, Group, ResGid, Uid};
use spoollock_helper::audit::{Audit, Class};
use spoollock_helper::privilege::GroupPrivilege;
use spoollock_helper::session::{Session, SharedAudit};
use spoollock_helper::{config, policy, system};
use spoollock_protocol::{exit, paths, Refusal};

/// A process set-up step of step 1 (see `harden`).
#[derive(Debug, Clone, Copy)]
enum HardeningStep {
    /// Resetting signal dispositions and the mask.
    Signals,
    /// Clearing the environment.
    Environment,
    /// Core dumps, dumpable flag, `no_new_privs` (prctl, rlimit).
    Process,
}

impl std::fmt::Display for HardeningStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HardeningStep::Signals => "signals",
            HardeningStep::Environment => "environment",
            HardeningStep::Process => "prctl/rlimit",
        })
    }
}

/// Which change or check of the group ids or capabilities failed.
#[derive(Debug)]
enum PrivilegeError {
    /// Reading the real, effective and saved gids at start.
    ReadIds(Errno),
    /// Parking the group in the saved set-gid.
    Park(Errno),
    /// Looking up the helper's group by name.
    GroupDatabase(Errno),
    /// Emptying the capability sets.
    Capabilities(system::CapabilityError),
}

impl std::fmt::Display for PrivilegeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrivilegeError::ReadIds(e) => write!(f, "cannot read the group ids: {}", e.desc()),
            PrivilegeError::Park(e) => write!(f, "cannot park the group id: {}", e.desc()),
            PrivilegeError::GroupDatabase(e) => write!(
                f,
                "cannot change group ids: cannot read the group database: {}",
                e.desc()
            ),
            PrivilegeError::Capabilities(e) => write!(f, "cannot change group ids: {e}"),
        }
    }
}

/// Why the helper refuses to start.
#[derive(Debug)]
enum StartupError {
    /// Descriptors 0, 1, 2 cannot be made to exist (not even `/dev/null`
    /// opens): nothing is said, there is nowhere to say it.
    NoStandardFds(Errno),
    /// Started with an empty argument vector (`argc == 0`).
    ArgcZero,
    /// Started with arguments other than a lone `--help`.
    BadArguments,
    /// A process set-up step failed.
    Hardening(HardeningStep, Errno),
    /// Descriptor `0`, `1` or `2` was closed at exec.
    StdFdClosed(u8),
    /// Descriptor 0 or 1 is not a pipe opened the right way, or 2 is not
    /// open for writing; what it is, when `fstat` said.
    StdFdNotPipe(u8, Option<system::FdKind>),
    /// The local syslog socket cannot be reached.
    NoSyslog(std::io::Error),
    /// The helper's group does not exist.
    NoGroup,
    /// The effective or saved gid is not the helper's group.
    NotPrivileged {
        egid: u32,
        sgid: u32,
        group: u32,
        no_new_privs: bool,
        /// The helper's own file, as `/proc/self/exe` shows it.
        binary: Option<system::OwnBinary>,
        /// The name of the group the binary is setgid to, if it is one.
        binary_group: Option<String>,
    },
    /// Changing or verifying the group ids or capabilities failed.
    Privileges(PrivilegeError),
    /// The client's pipes cannot be duplicated for the session.
    NoPipes(Errno),
}

impl From<PrivilegeError> for StartupError {
    fn from(e: PrivilegeError) -> StartupError {
        StartupError::Privileges(e)
    }
}

impl StartupError {
    fn exit_code(&self) -> i32 {
        match self {
            StartupError::ArgcZero | StartupError::BadArguments => exit::USAGE,
            StartupError::NoStandardFds(_)
            | StartupError::StdFdClosed(_)
            | StartupError::StdFdNotPipe(..)
            | StartupError::NoSyslog(_)
            | StartupError::NoPipes(_) => exit::ENVIRONMENT,
            StartupError::NoGroup | StartupError::NotPrivileged { .. } => exit::NOT_PRIVILEGED,
            StartupError::Hardening(..) | StartupError::Privileges(_) => exit::INTERNAL,
        }
    }

    fn keyword(&self) -> &'static str {
        match self {
            StartupError::NoStandardFds(_) => "no-standard-fds",
            StartupError::ArgcZero => "argc-zero",
            StartupError::BadArguments => "bad-arguments",
            StartupError::Hardening(..) => "hardening-failed",
            StartupError::StdFdClosed(_) => "fd-closed",
            StartupError::StdFdNotPipe(..) => "fd-not-pipe",
            StartupError::NoSyslog(_) => "no-syslog",
            StartupError::NoGroup => "no-group",
            StartupError::NotPrivileged { .. } => "not-privileged",
            StartupError::Privileges(_) => "privilege-change-failed",
            StartupError::NoPipes(_) => "no-pipes",
        }
    }
}

impl std::fmt::Display for StartupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartupError::NoStandardFds(e) => {
                write!(f, "cannot open the standard descriptors: {}", e.desc())
            }
            StartupError::ArgcZero => {
                f.write_str("started with an empty argument list (argc 0 or empty argv[0]); refusing")
            }
            StartupError::BadArguments => f.write_str(
                "takes no arguments (see --help); it is spawned by the spoollock library",
            ),
            StartupError::Hardening(step, e) => {
                write!(f, "cannot set up the process: {step}: {}", e.desc())
            }
            StartupError::StdFdClosed(fd) => write!(
                f,
                "file descriptor {fd} was closed at start; refusing (0 and 1 must be pipes, 2 open)"
            ),
            StartupError::StdFdNotPipe(fd, kind) => {
                match fd {
                    0 => f.write_str("standard input must be the read end of a pipe from the client")?,
                    1 => f.write_str(
                        "file descriptor 1 must be the write end of a pipe to the client",
                    )?,
                    _ => write!(f, "file descriptor {fd} must be open for writing")?,
                }
                match kind {
                    Some(kind) => write!(f, "; it is {kind}"),
                    None => Ok(()),
                }
            }
            StartupError::NoSyslog(why) => write!(
                f,
                "cannot reach the local syslog socket ({}): {why}; refusing to run without an audit trail",
                paths::SYSLOG_SOCKET
            ),
            StartupError::NoGroup => write!(
                f,
                "group {:?} does not exist; the helper must be installed setgid to it",
                paths::HELPER_GROUP
            ),
            StartupError::NotPrivileged {
                egid,
                sgid,
                group,
                no_new_privs,
                binary,
                binary_group,
            } => {
                let g = paths::HELPER_GROUP;
                write!(
                    f,
                    "not running with group {g:?} (gid {group}): effective gid {egid}, saved gid {sgid}. ",
                )?;
                why_not_privileged(f, *group, *no_new_privs, binary, binary_group.as_deref())
            }
            StartupError::Privileges(e) => e.fmt(f),
            StartupError::NoPipes(e) => write!(f, "cannot use the client pipes: {}", e.desc()),
        }
    }
}

/// What the kernel's ignoring the setgid bit is due to, as far as the
/// helper can tell, and what to do about it.
fn why_not_privileged(
    f: &mut std::fmt::Formatter<'_>,
    group: u32,
    no_new_privs: bool,
    binary: &Option<system::OwnBinary>,
    binary_group: Option<&str>,
) -> std::fmt::Result {
    let g = paths::HELPER_GROUP;
    let p = paths::HELPER_PATH;
    let install = format!("chown root:{g} {p} && chmod 2755 {p}");
    match binary {
        _ if no_new_privs => f.write_str(
            "no_new_privs is set in this process (container runtime, systemd \
             NoNewPrivileges=, setpriv --no-new-privs), so the kernel ignored the \
             setgid bit. Run the client without no_new_privs.",
        ),
        Some(b) if b.setgid && b.gid != group => {
            let name = binary_group.map_or_else(|| format!("gid {}", b.gid), |n| format!("{n:?}"));
            write!(
                f,
                "This helper is installed setgid to group {name} (gid {gid}), but it was \
                 built for group {g:?}, the group its spools must belong to (the group \
                 is fixed at build time). Either install it setgid {g:?}: {install}; or, \
                 if your spools belong to {name}, rebuild it with \
                 SPOOLLOCK_HELPER_GROUP={raw} in the environment of cargo build.",
                gid = b.gid,
                raw = binary_group.unwrap_or("GROUP"),
            )
        }
        Some(b) if b.setgid && b.nosuid => write!(
            f,
            "The helper is setgid {g:?}, but its file system is mounted nosuid, so the \
             kernel ignored the bit. Install it on a file system mounted without \
             nosuid.",
        ),
        Some(b) if b.setgid => write!(
            f,
            "The helper is setgid {g:?}, but the kernel did not apply the bit (a \
             user namespace, or a security module). Run it outside of those.",
        ),
        Some(_) => write!(
            f,
            "The helper's file has no setgid bit. Install it with: {install}",
        ),
        None => write!(
            f,
            "The setgid bit is missing or ignored (nosuid mount). Install it with: \
             {install}",
        ),
    }
}

const HELP: &str = "\
spoollock-helper - lock your own mailbox on a spool only group {GROUP} may write

This program is not meant to be run by hand. The spoollock library and the
`spoollock` command spawn it, installed setgid {GROUP} at
  {HELPER}
when a mail spool directory (such as /var/mail) is writable only by group
{GROUP}. It speaks a binary protocol on its standard input and output, which
must be pipes, and creates, refreshes and removes nothing but
  <spool>/<login>.lock
where <login> is the login name of the calling user (real uid) in the
password database, and <spool> is one of the configured spool directories:
/var/mail, /var/spool/mail, and those named by `spool /path` lines in the
root-owned file
  {CONFIG}
A spool must be owned by root, group {GROUP}, group-writable and not
world-writable; an existing mailbox must be a regular file owned by the
caller. A lock taken for a session is removed when the caller closes the
pipe or exits.

Every grant, release, failed refresh and refusal is logged to syslog through
the local socket {SYSLOG}: grants and releases with facility mail,
refusals with facility authpriv (look in /var/log/mail.log and
/var/log/auth.log, or `journalctl -t spoollock-helper`).

Exit status: 0 session ended, 1 request refused, 2 usage, 3 unusable
environment (descriptors, syslog), 4 not running setgid {GROUP}, 5 internal error.
";

fn help_text() -> String {
    HELP.replace("{GROUP}", paths::HELPER_GROUP)
        .replace("{HELPER}", paths::HELPER_PATH)
        .replace("{CONFIG}", paths::CONFIG_PATH)
        .replace("{SYSLOG}", paths::SYSLOG_SOCKET)
}

fn say(message: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "spoollock-helper: {message}");
}

/// The C `main`: std's runtime start-up (`lang_start`) is skipped. It would
/// read `/proc/self/maps` for the main thread's stack guard and install
/// `SIGSEGV`/`SIGBUS` handlers on an alternate stack, all of which the
/// helper resets at once anyway (signals to their defaults; the kernel's
/// guard gap still stops a stack overflow), and it would reopen closed
/// standard descriptors before [`system::fill_standard_fds`] could see that
/// they were closed. `argv` still reaches [`std::env::args_os`] (glibc hands
/// it to std's initializer), and a panic still unwinds and runs destructors
/// (a held lock is released) before the process exits with
/// [`exit::INTERNAL`].
#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    let code = std::panic::catch_unwind(run).unwrap_or(exit::INTERNAL);
    std::process::exit(code);
}

/// What start-up leads to.
enum Start {
    /// `--help` was asked for: answered with every privilege dropped.
    Help,
    /// A client session, ready to run.
    Session {
        /// Boxed: it holds the input buffer.
        session: Box<Session>,
        /// The group parked in the saved set-gid, dropped for good after.
        privilege: Arc<GroupPrivilege>,
        /// The caller's login, as the password database gave it.
        login: Result<String, Refusal>,
    },
}

/// Start up, then serve the session or answer `--help`. Every refusal
/// reaches the one place that says it, audits it (once the audit channel
/// is up) and turns it into the exit status: `refuse`.
fn run() -> i32 {
    let mut audit = None;
    match start(&mut audit) {
        Ok(Start::Help) => help(),
        Ok(Start::Session {
            session,
            privilege,
            login,
        }) => {
            let code = session.run(login, config::load());
            // Nothing privileged is left to do.
            if privilege.drop_for_good().is_err() {
                return exit::INTERNAL;
            }
            code
        }
        Err(e) => refuse(audit.as_ref(), &e),
    }
}

/// The start-up steps, in order (the numbers are the module doc's). The
/// audit channel is put in `audit` as soon as it is up, for `refuse`.
fn start(audit: &mut Option<SharedAudit>) -> Result<Start, StartupError> {
    // 1. The process itself, before anything reads argv, env or files.
    // Not even /dev/null can be opened (RLIMIT_NOFILE 0?): nowhere to
    // report to, and nothing has been done.
    let closed = system::fill_standard_fds().map_err(StartupError::NoStandardFds)?;
    let (at_exec, parked) = park_group()?;
    let no_new_privs_at_exec = system::no_new_privs().unwrap_or(false);
    // Refused only once the audit channel is up.
    let hardened = harden();

    // 3 (early, so every later refusal is audited). The subject is known
    // from the kernel: real uid and parent pid; the login comes from the
    // password database.
    let uid = getuid();
    let connected = Audit::connect();
    let login = policy::lookup_login(uid);
    *audit = open_audit(connected, &parked, uid, &login)?;
    hardened?;

    // 2. Arguments.
    if arguments()? == Arguments::Help {
        return Ok(Start::Help);
    }
    let Some(audit) = audit.clone() else {
        unreachable!("audit is connected unless --help was asked for");
    };

    // 4. The pipes.
    check_standard_fds(closed)?;

    // 5. The privileged group must really be ours.
    check_group(&at_exec, no_new_privs_at_exec)?;

    // 6. The group parked at start is the helper's; no capabilities.
    let privilege = Arc::new(parked);
    system::drop_capabilities().map_err(PrivilegeError::Capabilities)?;

    let (input, output) = client_pipes().map_err(StartupError::NoPipes)?;
    let session =
        Session::new(audit, privilege.clone(), input, output).map_err(StartupError::NoPipes)?;
    Ok(Start::Session {
        session: Box::new(session),
        privilege,
        login,
    })
}

/// The refusal `e`: said on standard error (unless there is none),
/// recorded in the audit trail when it is up (`op=start`), and the exit
/// status it means.
fn refuse(audit: Option<&SharedAudit>, e: &StartupError) -> i32 {
    if matches!(e, StartupError::NoStandardFds(_)) {
        return e.exit_code();
    }
    let message = e.to_string();
    say(&message);
    if let Some(audit) = audit {
        audit
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .record(Class::Refusal, "start", e.keyword(), &[("error", &message)]);
    }
    e.exit_code()
}

/// Step 1: the group the setgid bit gave is parked at once in the saved
/// set-gid: the syslog connection, the password and group lookups (and
/// any NSS module they load) and every check below run with the caller's
/// own gid. Step 5 decides whether the parked group is ours. The group
/// ids at exec, and the parked group.
fn park_group() -> Result<(ResGid, GroupPrivilege), PrivilegeError> {
    let at_exec = system::group_ids().map_err(PrivilegeError::ReadIds)?;
    let parked =
        GroupPrivilege::park(at_exec.real, at_exec.effective).map_err(PrivilegeError::Park)?;
    Ok((at_exec, parked))
}

/// Step 1: signals reset, environment cleared, umask fixed, core dumps and
/// ptrace disabled, `no_new_privs` set; the first step that fails.
fn harden() -> Result<(), StartupError> {
    let step = |step, done: Result<(), Errno>| done.map_err(|e| StartupError::Hardening(step, e));
    step(HardeningStep::Signals, system::reset_signals())?;
    step(HardeningStep::Environment, system::clear_environment())?;
    system::set_umask();
    step(HardeningStep::Process, system::harden_process())
}

/// Step 3: the audit channel, its subject filled in (`None` only when it
/// is down and `--help` was asked for, which must work without syslog).
fn open_audit(
    connected: std::io::Result<Audit>,
    parked: &GroupPrivilege,
    uid: Uid,
    login: &Result<String, Refusal>,
) -> Result<Option<SharedAudit>, StartupError> {
    let mut audit = match connected {
        Ok(audit) => audit,
        Err(_) if help_asked() => return Ok(None),
        Err(why) => return Err(StartupError::NoSyslog(why)),
    };
    // Records carry the group parked in the saved set-gid as their
    // sender's gid: the syslog daemon tells them from records any user
    // can send with our tag (see `audit`).
    audit.claim_group(parked.group());
    audit.subject.uid = Some(uid.as_raw());
    audit.subject.client_pid = u32::try_from(getppid().as_raw()).ok();
    audit.subject.login = login.as_ref().ok().cloned();
    Ok(Some(Arc::new(Mutex::new(audit))))
}

/// What the arguments ask for.
#[derive(Debug, PartialEq, Eq)]
enum Arguments {
    /// A session (no arguments).
    Session,
    /// `--help`.
    Help,
}

/// Whether the arguments are exactly `--help`.
fn help_asked() -> bool {
    std::env::args_os().len() == 2 && std::env::args_os().nth(1).is_some_and(|a| a == "--help")
}

/// Step 2: argc first, without touching argv. Since Linux 5.18 an exec
/// with an empty argv arrives as argc 1 with an empty argv[0]: refused
/// the same way.
fn arguments() -> Result<Arguments, StartupError> {
    match std::env::args_os().len() {
        0 => Err(StartupError::ArgcZero),
        1 if std::env::args_os().next().is_some_and(|a| a.is_empty()) => {
            Err(StartupError::ArgcZero)
        }
        1 => Ok(Arguments::Session),
        2 if help_asked() => Ok(Arguments::Help),
        _ => Err(StartupError::BadArguments),
    }
}

/// Step 4: descriptors 0 and 1 are pipes (read, write ends), 2 is open for
/// writing. A descriptor closed at exec (`closed`) was reopened by glibc
/// (secure mode) or by `fill_standard_fds`; either way it is refused.
fn check_standard_fds(closed: [bool; 3]) -> Result<(), StartupError> {
    let kinds = [
        system::fd_kind(std::io::stdin()),
        system::fd_kind(std::io::stdout()),
        system::fd_kind(std::io::stderr()),
    ];
    for fd in 0..3u8 {
        let libc_filled = kinds[fd as usize]
            .as_ref()
            .is_ok_and(|k| k.filled_by_libc && (fd == 0) == k.writable);
        if closed[fd as usize] || libc_filled {
            return Err(StartupError::StdFdClosed(fd));
        }
    }
    let usable = |fd: usize| match &kinds[fd] {
        Ok(k) if fd == 0 => k.is_pipe && k.readable,
        Ok(k) if fd == 1 => k.is_pipe && k.writable,
        Ok(k) => k.writable,
        Err(_) => false,
    };
    for fd in 0..3u8 {
        if !usable(fd as usize) {
            let kind = kinds[fd as usize].as_ref().ok().copied();
            return Err(StartupError::StdFdNotPipe(fd, kind));
        }
    }
    Ok(())
}

/// Step 5: the effective and saved gid at exec are the helper's group;
/// otherwise why not, as far as the helper can tell.
fn check_group(at_exec: &ResGid, no_new_privs_at_exec: bool) -> Result<(), StartupError> {
    let group = match Group::from_name(paths::HELPER_GROUP) {
        Ok(Some(g)) => g.gid,
        Ok(None) => return Err(StartupError::NoGroup),
        Err(e) => return Err(PrivilegeError::GroupDatabase(e).into()),
    };
    if at_exec.effective == group && at_exec.saved == group {
        return Ok(());
    }
    let binary = system::own_binary();
    let binary_group = binary
        .filter(|b| b.setgid)
        .and_then(|b| Group::from_gid(Gid::from_raw(b.gid)).ok().flatten())
        .map(|g| g.name);
    Err(StartupError::NotPrivileged {
        egid: at_exec.effective.as_raw(),
        sgid: at_exec.saved.as_raw(),
        group: group.as_raw(),
        no_new_privs: no_new_privs_at_exec,
        binary,
        binary_group,
    })
}

/// The client's pipes: standard input and output, checked above.
fn client_pipes() -> Result<(OwnedFd, OwnedFd), Errno> {
    let dup = |fd: BorrowedFd<'_>| {
        fd.try_clone_to_owned()
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(Errno::EIO as i32)))
    };
    Ok((
        dup(std::io::stdin().as_fd())?,
        dup(std::io::stdout().as_fd())?,
    ))
}

/// `--help`: every privilege dropped for good, then static text; nothing
/// is printed while any could remain.
fn help() -> i32 {
    let dropped = system::group_ids()
        .and_then(|ids| system::set_group_ids(ids.real, ids.real, ids.real))
        .is_ok();
    if !dropped || system::drop_capabilities().is_err() {
        say("cannot drop privileges");
        return exit::INTERNAL;
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(help_text().as_bytes());
    let _ = out.flush();
    exit::OK
}
