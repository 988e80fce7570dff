//! `spoollock dotlockfile ARGS...`, and `spoollock` run under the name
//! `dotlockfile`: liblockfile's dotlockfile(1) command line and exit
//! statuses, on spoollock (its lock algorithm and waiting, the setgid
//! helper for a mail-group spool). Scripts written for dotlockfile run
//! unchanged.
//!
//! The options are read the way dotlockfile's `getopt("+qpNr:mluci:tP")`
//! reads them (flags grouped, `-r5` or `-r 5`, options end at the first
//! other word or at `--`), so the same command lines mean the same thing.
//! What differs is documented in the `--help` text (`cli::DOTLOCKFILE_HELP`).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use spoollock::liblockfile::{self, L_ERROR, L_NAMELEN, L_ORPHANED};
use spoollock::{DetachedLock, LockGuard, LockOptions, LockState, LockTarget, PidMode};

/// True when this program was started under the name `dotlockfile`.
pub fn invoked_as_dotlockfile() -> bool {
    std::env::args_os()
        .next()
        .map(PathBuf::from)
        .is_some_and(|argv0| argv0.file_name() == Some(OsStr::new("dotlockfile")))
}

/// dotlockfile's usage message and status.
const USAGE: &str = "\
Usage:  dotlockfile -l [-r retries] [-i interval] [-p] [-q] <-m|lockfile>
        dotlockfile -l [-r retries] [-i interval] [-p] [-q] <-m|lockfile> [-P] command args...
        dotlockfile -u|-t";
const USAGE_STATUS: u8 = 1;

/// What the command line asks for.
#[derive(Debug, Default)]
struct Opts {
    quiet: bool,
    writepid: bool,
    retries: Option<i32>,
    interval: Option<u32>,
    mailbox: bool,
    lock: bool,
    unlock: bool,
    check: bool,
    touch: bool,
    passthrough: bool,
    lockfile: Option<PathBuf>,
    command: Vec<OsString>,
}

/// Parse like `getopt(argc, argv, "+qpNr:mluci:tP")`; `Err` is the exit
/// status (after any message).
fn parse(args: &[OsString]) -> Result<Opts, u8> {
    let mut o = Opts::default();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_bytes();
        if arg == b"--" {
            i += 1;
            break;
        }
        if arg.len() < 2 || arg[0] != b'-' {
            break;
        }
        let mut k = 1;
        while k < arg.len() {
            let flag = arg[k];
            k += 1;
            match flag {
                b'q' => o.quiet = true,
                b'p' => o.writepid = true,
                b'N' => {}
                b'm' => o.mailbox = true,
                b'l' => o.lock = true,
                b'u' => o.unlock = true,
                b'c' => o.check = true,
                b't' => o.touch = true,
                b'P' => o.passthrough = true,
                b'r' | b'i' => {
                    // The rest of this word, or the next one.
                    let value = if k < arg.len() {
                        let v = OsStr::from_bytes(&arg[k..]).to_owned();
                        k = arg.len();
                        v
                    } else {
                        i += 1;
                        match args.get(i) {
                            Some(v) => v.clone(),
                            None => {
                                report!(
                                    "dotlockfile: option requires an argument -- '{}'",
                                    flag as char
                                );
                                return Err(usage());
                            }
                        }
                    };
                    let text = value.to_string_lossy();
                    let n = atoi(&text);
                    if flag == b'r' {
                        if n <= 0 && n != -1 && text != "0" {
                            if !o.quiet {
                                report!("dotlockfile: -r {text}: invalid argument");
                            }
                            return Err(L_ERROR as u8);
                        }
                        o.retries = Some(if n == -1 { 0x7fff_fff0 } else { n });
                    } else {
                        if n <= 0 && text != "0" {
                            report!("dotlockfile: -i needs argument >= 0");
                            return Err(L_ERROR as u8);
                        }
                        o.interval = Some(n.max(0).unsigned_abs());
                    }
                }
                other => {
                    report!("dotlockfile: invalid option -- '{}'", other as char);
                    return Err(usage());
                }
            }
        }
        i += 1;
    }
    if !o.mailbox {
        match args.get(i) {
            Some(name) => o.lockfile = Some(PathBuf::from(name)),
            None => return Err(usage()),
        }
        i += 1;
    }
    o.command = args[i.min(args.len())..].to_vec();
    if (!o.command.is_empty() || o.lock) && (o.touch || o.check || o.unlock) {
        return Err(usage());
    }
    Ok(o)
}

fn usage() -> u8 {
    report!("{USAGE}");
    USAGE_STATUS
}

/// C's `atoi`: optional blanks and sign, then digits; 0 if none.
fn atoi(s: &str) -> i32 {
    let s = s.trim_start();
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    let n = digits[..end]
        .parse::<i64>()
        .unwrap_or(if end > 0 { i64::from(i32::MAX) } else { 0 });
    let n = if neg { -n } else { n };
    n.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// Run dotlockfile's command line `args` (without the program name); the
/// exit status.
pub fn main(args: &[OsString]) -> u8 {
    match parse(args) {
        Ok(opts) => run(opts),
        Err(status) => status,
    }
}

fn run(o: Opts) -> u8 {
    let say = |what: std::fmt::Arguments<'_>| {
        if !o.quiet {
            report!("dotlockfile: {what}");
        }
    };
    let lockfile = match (&o.lockfile, o.mailbox) {
        (Some(path), _) => path.clone(),
        (None, _) => match spoollock::own_mailbox() {
            Ok(mailbox) => {
                let mut lock = mailbox.into_os_string();
                lock.push(".lock");
                PathBuf::from(lock)
            }
            Err(e) => {
                say(format_args!("{e}"));
                return L_ERROR as u8;
            }
        },
    };
    if lockfile.as_os_str().len() >= 4096 {
        say(format_args!("{}: name too long", lockfile.display()));
        return L_NAMELEN as u8;
    }
    let target = match LockTarget::lock_file(&lockfile) {
        Ok(target) => target,
        Err(e) => {
            say(format_args!("{e}"));
            return if o.check || o.touch || o.unlock {
                1
            } else {
                liblockfile::create_code(&e).0 as u8
            };
        }
    };
    // dotlockfile changes into the lock's directory first: one it cannot
    // enter is its "other error", before any locking.
    if let Err(e) = std::fs::metadata(&target.dir).and_then(|m| {
        if m.is_dir() {
            Ok(())
        } else {
            Err(std::io::Error::from_raw_os_error(nix::libc::ENOTDIR))
        }
    }) {
        say(format_args!("{}: {e}", target.dir.display()));
        return L_ERROR as u8;
    }
    let base = LockOptions {
        keep_alive: None,
        bare_pids_are_local: o.writepid,
        ..LockOptions::no_wait()
    };
    if o.check {
        return match spoollock::lock_state(&target, &base) {
            Ok(LockState::Held(_)) => 0,
            _ => 1,
        };
    }
    if o.touch {
        return match spoollock::touch_by_name(&target, false) {
            Ok(()) => 0,
            Err(e) => {
                say(format_args!("{}: {e}", lockfile.display()));
                1
            }
        };
    }
    if o.unlock {
        if std::fs::symlink_metadata(&lockfile)
            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
        {
            return 0;
        }
        return match spoollock::unlock_by_name(&target, false) {
            Ok(()) => 0,
            Err(e) => {
                say(format_args!("{}: {e}", lockfile.display()));
                1
            }
        };
    }
    let Some(wait) = liblockfile::wait_for(o.retries.unwrap_or(5), o.interval) else {
        return liblockfile::L_MAXTRYS as u8;
    };
    if o.command.is_empty() {
        lock_and_leave(&o, &target, LockOptions { wait, ..base }, say)
    } else {
        lock_and_run(&o, &target, LockOptions { wait, ..base }, say)
    }
}

/// `dotlockfile -l LOCKFILE`: a lock that stays, naming the caller (`-p`)
/// or no process.
fn lock_and_leave(
    o: &Opts,
    target: &LockTarget,
    mut opts: LockOptions,
    say: impl Fn(std::fmt::Arguments<'_>),
) -> u8 {
    opts.pid_mode = if o.writepid {
        let parent = nix::unistd::getppid().as_raw();
        if parent == 1 {
            return L_ORPHANED as u8;
        }
        PidMode::Pid(parent.unsigned_abs())
    } else {
        PidMode::None
    };
    match DetachedLock::acquire(target, &opts) {
        Ok(lock) => {
            lock.forget();
            0
        }
        Err(e) => {
            say(format_args!("{}: {e}", target.path().display()));
            liblockfile::create_code(&e).0 as u8
        }
    }
}

/// How often a lock held while COMMAND runs is refreshed (dotlockfile's).
const REFRESH: Duration = Duration::from_secs(30);

/// `dotlockfile -l LOCKFILE COMMAND...`: hold the lock while COMMAND runs,
/// refreshed; its status with `-P`, else 0.
fn lock_and_run(
    o: &Opts,
    target: &LockTarget,
    mut opts: LockOptions,
    say: impl Fn(std::fmt::Arguments<'_>),
) -> u8 {
    opts.pid_mode = if o.writepid {
        PidMode::Own
    } else {
        PidMode::None
    };
    opts.keep_alive = Some(REFRESH);
    let guard = match LockGuard::acquire_target(target, &opts) {
        Ok(guard) => guard,
        Err(e) => {
            say(format_args!("{}: {e}", target.path().display()));
            return liblockfile::create_code(&e).0 as u8;
        }
    };
    let status = match crate::run::run_with_lock(&o.command) {
        Ok(status) => status,
        Err(e) => {
            // dotlockfile's child says why and exits 127.
            report!("{e}");
            127
        }
    };
    let _ = guard.release();
    if o.passthrough {
        status
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<OsString> {
        s.iter().map(OsString::from).collect()
    }

    #[test]
    fn getopt_rules() {
        let o = parse(&args(&["-lpr3", "x.lock"])).unwrap();
        assert!(o.lock && o.writepid);
        assert_eq!(o.retries, Some(3));
        assert_eq!(o.lockfile, Some(PathBuf::from("x.lock")));
        let o = parse(&args(&["-r", "0", "-i", "2", "x", "cmd", "-l"])).unwrap();
        assert_eq!((o.retries, o.interval), (Some(0), Some(2)));
        assert_eq!(o.command, args(&["cmd", "-l"]));
        let o = parse(&args(&["-r", "-1", "--", "-x"])).unwrap();
        assert_eq!(o.retries, Some(0x7fff_fff0));
        assert_eq!(o.lockfile, Some(PathBuf::from("-x")));
        assert_eq!(parse(&args(&["-r", "abc", "x"])).unwrap_err(), 5);
        assert_eq!(parse(&args(&["-i", "-3", "x"])).unwrap_err(), 5);
        assert_eq!(parse(&args(&["-z", "x"])).unwrap_err(), 1);
        assert_eq!(parse(&args(&[])).unwrap_err(), 1);
        assert_eq!(parse(&args(&["-u", "x", "cmd"])).unwrap_err(), 1);
        assert_eq!(parse(&args(&["-l", "-c", "x"])).unwrap_err(), 1);
        assert_eq!(parse(&args(&["-r"])).unwrap_err(), 1);
        let o = parse(&args(&["-m", "-u"])).unwrap();
        assert!(o.mailbox && o.unlock && o.lockfile.is_none());
    }

    #[test]
    fn atoi_is_c_s() {
        assert_eq!(atoi("5"), 5);
        assert_eq!(atoi("5abc"), 5);
        assert_eq!(atoi("abc"), 0);
        assert_eq!(atoi(" -1"), -1);
        assert_eq!(atoi(""), 0);
    }
}
