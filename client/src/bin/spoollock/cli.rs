//! The command line, as clap types (also the source of the man page).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use spoollock::{own_mailbox, Error, LockTarget, MailboxOptions, Order, Wait};

const EXIT_CODES: &str = "\
Exit status:
  0  success; for `check`: a valid lock is held
  1  `check`: no valid lock (free or stale)
  2  usage error (bad option, no PATH, mailbox not found)
  3  busy: the lock is held by someone else (--no-wait, --retries or --timeout ran out;
     `unlock`/`touch`: a live helper session holds it, see --force)
  4  permission denied (directory not writable, helper missing)
  5  other error (I/O, the lock name is a symlink, ...)
  6  `unlock`/`touch`: the lock is absent or not yours
`run` exits with the command's status once the command has started
(128+N if it was killed by signal N). `deliver` exits 75 (EX_TEMPFAIL)
when the message could not be delivered for a reason that may pass
(busy, I/O error, disk full): the mailbox is then unchanged.";

/// `spoollock dotlockfile --help` (the options themselves are parsed by
/// `dotlockfile.rs`, the way dotlockfile does).
pub const DOTLOCKFILE_HELP: &str = "\
dotlockfile(1) on spoollock: the same command line and exit statuses.

  spoollock dotlockfile [-l] [-r RETRIES] [-i INTERVAL] [-p] [-q] <-m | LOCKFILE>
  spoollock dotlockfile [-l] [-r RETRIES] [-i INTERVAL] [-p] [-q] <-m | LOCKFILE> [-P] COMMAND ARGS...
  spoollock dotlockfile -u | -t | -c [-p] <-m | LOCKFILE>

The same when this program is run under the name `dotlockfile`.

  -l   create LOCKFILE (the default); with COMMAND: hold it while COMMAND runs
  -u   remove it          -t   refresh it          -c   exit 0 if a valid lock exists
  -r N retries (default 5; -1: forever); spoollock waits as it always does,
       for at most the time dotlockfile's 5, 10, ... 60 s sleeps would take
  -i S seconds between retries instead (0: N retries with a millisecond backoff)
  -p   the lock names the calling process (with COMMAND: this one), and pids
       in existing locks are checked
  -m   your own mailbox's lock (/var/mail/LOGIN.lock; $MAIL only when its file
       name is your login, never in a setuid or setgid program)
  -P   with COMMAND: exit with its status (128+N if killed by signal N)
  -q   no messages

Exit status: 0 success; locking: liblockfile's lockfile_create codes
(1 name too long, 2 cannot create in the directory, 3 cannot write, 4 still
locked after every retry, 5 other error, 7 -p and the parent is gone);
-u/-t/-c: 1 on failure (-c: no valid lock); 1 for a bad command line.

Differences from dotlockfile: the lock is made by spoollock (the helper on
a mail-group spool, not a setgid dotlockfile); -u and -t act only on your
own lock (root: any), never follow a symlink at the name, and -u of a lock
that does not exist succeeds; with COMMAND the lock is refreshed every 30 s
and, on a mail-group spool, held by a helper session that ends with this
process.";

/// Lock a mailbox (or any file) with an NFS-safe dotlock.
#[derive(Debug, Parser)]
#[command(name = "spoollock", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Lock, run COMMAND with the lock held and refreshed, release; exit
    /// with COMMAND's status.
    #[command(after_help = EXIT_CODES)]
    Run {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        locks: Locks,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<std::ffi::OsString>,
    },
    /// Append the message on standard input to the mailbox in mbox format,
    /// with both locks held; on failure the mailbox is left unchanged.
    ///
    /// Exit 0 means delivered: the message is whole in the file PATH names
    /// when the locks are released (a mailbox replaced or removed while
    /// waiting is opened, or created, again and locked anew).
    #[command(after_help = EXIT_CODES)]
    Deliver {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        locks: Locks,
        /// Envelope sender for the `From ` line (default: your login), used
        /// when the message does not start with its own `From ` line.
        #[arg(short = 'f', long, value_name = "SENDER")]
        from: Option<String>,
        #[command(flatten)]
        create: Create,
    },
    /// Create the lock and leave it (remove it with `unlock`).
    #[command(after_help = EXIT_CODES)]
    Lock {
        #[command(flatten)]
        common: Common,
        /// Write the parent's pid (the calling script) into the lock, so it
        /// is stale as soon as the script is gone; default: no pid, the lock
        /// goes stale only by age.
        #[arg(short = 'p', long)]
        parent_pid: bool,
    },
    /// Remove a lock made with `lock` (only your own; not one a running
    /// `spoollock run --mailbox` or another program holds through the
    /// helper, unless --force).
    #[command(after_help = EXIT_CODES)]
    Unlock {
        #[command(flatten)]
        common: Common,
        /// Also remove a lock that a live helper session of yours holds
        /// (it then goes on without its lock).
        #[arg(long)]
        force: bool,
    },
    /// Refresh a lock made with `lock` (only your own; not one a live
    /// helper session holds, unless --force).
    #[command(after_help = EXIT_CODES)]
    Touch {
        #[command(flatten)]
        common: Common,
        /// Also refresh a lock that a live helper session of yours holds.
        #[arg(long)]
        force: bool,
    },
    /// Exit 0 if a valid (not stale) lock is held, 1 if not.
    #[command(after_help = EXIT_CODES)]
    Check {
        #[command(flatten)]
        common: Common,
    },
    /// List the locks in spools or of mailboxes: holder pid, host, program
    /// (when it runs here), age, owner, and whether the next locker would
    /// break the lock, and why. Reading is enough: any user may run it.
    Status {
        /// Spool directories (every `*.lock` in them) or mailboxes (their
        /// `.lock`); default: /var/mail and /var/spool/mail.
        #[arg(value_name = "DIR|MAILBOX")]
        paths: Vec<PathBuf>,
        /// One JSON array of objects, for scripts.
        #[arg(long)]
        json: bool,
        /// A lock not refreshed for this long is stale.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "300s")]
        stale_age: Duration,
    },
    /// dotlockfile(1)'s command line and exit statuses, on spoollock (also
    /// when this program is run as `dotlockfile`).
    #[command(
        long_about = DOTLOCKFILE_HELP,
        disable_help_flag = true,
        disable_version_flag = true
    )]
    Dotlockfile {
        /// dotlockfile's options, lock file and command (see above).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            num_args = 0..,
            value_name = "ARGS"
        )]
        args: Vec<std::ffi::OsString>,
    },
}

impl Command {
    /// The options every locking command shares (`dotlockfile` has its own).
    pub fn common(&self) -> Option<&Common> {
        match self {
            Command::Run { common, .. }
            | Command::Deliver { common, .. }
            | Command::Lock { common, .. }
            | Command::Unlock { common, .. }
            | Command::Touch { common, .. }
            | Command::Check { common } => Some(common),
            Command::Dotlockfile { .. } | Command::Status { .. } => None,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct Common {
    /// The file to protect: the lock is PATH.lock, and `run` and `deliver`
    /// also take an fcntl lock on PATH when it exists.
    #[arg(value_name = "PATH", required_unless_present_any = ["mailbox", "lock_file"])]
    pub path: Option<PathBuf>,
    /// Lock your own spool mailbox (/var/mail/LOGIN) instead of PATH.
    #[arg(short = 'm', long, conflicts_with_all = ["path", "lock_file"])]
    pub mailbox: bool,
    /// Use this exact lock file name instead of PATH.lock (a dotlock only).
    #[arg(short = 'l', long, value_name = "LOCKFILE", conflicts_with = "path")]
    pub lock_file: Option<PathBuf>,
    /// Give up after waiting this long (e.g. 500ms, 10s, 2m).
    #[arg(short = 't', long, value_name = "DURATION", value_parser = parse_duration,
          conflicts_with_all = ["retries", "no_wait"])]
    pub timeout: Option<Duration>,
    /// Give up after this many waits.
    #[arg(short = 'r', long, value_name = "N", conflicts_with = "no_wait")]
    pub retries: Option<u32>,
    /// Fail at once if the lock is held.
    #[arg(short = 'n', long)]
    pub no_wait: bool,
    /// A lock not refreshed for this long is stale and may be removed.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "300s")]
    pub stale_age: Duration,
    /// Print nothing, not even errors.
    #[arg(short, long)]
    pub quiet: bool,
    /// Say what happens, and while waiting who holds the lock.
    #[arg(short, long)]
    pub verbose: bool,
}

/// Which locks `run` and `deliver` take on the mailbox.
#[derive(Debug, Clone, Args)]
pub struct Locks {
    /// Take only the dotlock (PATH.lock).
    #[arg(long, conflicts_with = "fcntl_only")]
    pub dotlock_only: bool,
    /// Take only the fcntl lock on PATH.
    #[arg(long)]
    pub fcntl_only: bool,
    /// Which lock to take first.
    #[arg(long, value_enum, default_value = "fcntl,dotlock")]
    pub order: OrderArg,
}

/// How `deliver` creates a missing mailbox.
#[derive(Debug, Clone, Args)]
pub struct Create {
    /// Owner of a mailbox `deliver` creates: LOGIN or LOGIN:GROUP (numeric
    /// ids too; needs root). Default: the creator, except that root
    /// creating a mailbox in /var/mail or /var/spool/mail gives it to the
    /// login it is named after and the spool's group.
    #[arg(long, value_name = "LOGIN[:GROUP]")]
    pub owner: Option<String>,
    /// Mode of a mailbox `deliver` creates, in octal. Default: 0660 for a
    /// spool mailbox root creates, 0600 (less the umask) otherwise.
    #[arg(long, value_name = "OCTAL", value_parser = parse_mode)]
    pub mode: Option<u32>,
}

/// `0600`, `660`: permission bits only.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    match u32::from_str_radix(s, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(format!(
            "`{s}` is not a file mode (octal permission bits, e.g. 0600)"
        )),
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OrderArg {
    #[value(name = "fcntl,dotlock")]
    FcntlDotlock,
    #[value(name = "dotlock,fcntl")]
    DotlockFcntl,
}

impl Locks {
    /// Mailbox options for these flags (the lock options are filled in
    /// by the caller).
    pub fn mailbox_options(&self) -> MailboxOptions {
        MailboxOptions {
            dotlock: !self.fcntl_only,
            fcntl: !self.dotlock_only,
            order: match self.order {
                OrderArg::FcntlDotlock => Order::FcntlThenDotlock,
                OrderArg::DotlockFcntl => Order::DotlockThenFcntl,
            },
            ..MailboxOptions::default()
        }
    }
}

impl Common {
    pub fn wait(&self) -> Wait {
        if self.no_wait {
            Wait::NoWait
        } else if let Some(n) = self.retries {
            Wait::Retries(n)
        } else if let Some(t) = self.timeout {
            Wait::timeout(t)
        } else {
            Wait::Forever
        }
    }

    /// The file named by PATH or `--mailbox` (not `--lock-file`).
    pub fn mailbox_path(&self) -> Result<PathBuf, Error> {
        if self.mailbox {
            return own_mailbox();
        }
        match (&self.path, &self.lock_file) {
            (Some(path), _) => Ok(path.clone()),
            (None, Some(_)) => Err(Error::BadPath(
                "--lock-file names no mailbox; give PATH or --mailbox".into(),
            )),
            (None, None) => Err(Error::BadPath("no PATH given".into())),
        }
    }

    pub fn target(&self) -> Result<LockTarget, Error> {
        if self.mailbox {
            return LockTarget::for_file(&own_mailbox()?);
        }
        if let Some(lock) = &self.lock_file {
            return LockTarget::lock_file(lock);
        }
        match &self.path {
            Some(path) => LockTarget::for_file(path),
            None => Err(Error::BadPath("no PATH given".into())),
        }
    }
}

/// `10`, `10s`, `1.5s`, `500ms`, `2m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (try 500ms, 10s, 2m)"))?;
    let scale = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("unknown unit `{unit}` (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|_| format!("`{s}` is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0660"), Ok(0o660));
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert!(parse_mode("4755").is_err());
        assert!(parse_mode("0689").is_err());
        assert!(parse_mode("rw").is_err());
    }

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
