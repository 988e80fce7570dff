//! What the workspace's tests share, so that each has one copy:
//!
//! - [`Scratch`], a fresh directory removed on drop;
//! - [`child`], a test that re-runs its own test binary as a child process
//!   (`--exact <its own name>` plus an environment variable), so a child's
//!   role is no `#[test]` of its own that reports "ok" without testing;
//! - [`require`] and [`skip`]: one uniform `SKIP <test>: <reason>` line for a
//!   missing prerequisite (root, FUSE, a peer program), and a failure
//!   instead when `CI` is set, so that CI cannot pass on skipped tests;
//! - [`deadline`]: a wait that would hang becomes a failure;
//! - [`dead_pid`], [`monotonic_ns`], [`as_nobody`], [`age_file`] and
//!   [`describe`].
//!
//! A dev-dependency only: no library or program of the workspace may
//! depend on it (`scripts/deps-policy` checks the helper's tree).

use std::fmt::Display;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

pub mod child;

/// A fresh directory, mode 0755, removed on drop.
#[derive(Debug)]
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A fresh directory under the system temp dir, named after `tag`,
    /// this process and a counter.
    pub fn new(tag: &str) -> Scratch {
        Scratch::under(&std::env::temp_dir(), tag)
    }

    /// A fresh directory under `base`.
    pub fn under(base: &Path, tag: &str) -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = base.join(format!(
            "spoollock-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Whatever the umask: procmail refuses rcfiles in world-writable
        // directories, and tests run programs as other users in here.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Scratch(dir)
    }

    /// A fresh directory with the subdirectories `dirs` made in it.
    pub fn with_dirs(tag: &str, dirs: &[&str]) -> Scratch {
        let scratch = Scratch::new(tag);
        for d in dirs {
            std::fs::create_dir_all(scratch.join(d)).unwrap();
        }
        scratch
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The names in the directory, sorted.
    pub fn names(&self) -> Vec<String> {
        listing(&self.0)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The names in `dir`, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The pid of a process that has exited and been reaped, for locks
/// naming a dead holder.
pub fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process of a
/// test, to compare hold intervals across processes.
pub fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// True when running in CI (`CI` set, and not empty, `0` or `false`):
/// there every prerequisite is installed, so a missing one is an error.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// The name of the running test: libtest names each test's thread after
/// it. In a `harness = false` binary (thread `main`), the binary's name.
pub fn current_test() -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => name.to_string(),
        _ => std::env::current_exe()
            .ok()
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .map(|s| match s.rsplit_once('-') {
                // cargo's test binaries are `<name>-<hash>`
                Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => {
                    name.to_string()
                }
                _ => s,
            })
            .unwrap_or_else(|| "?".into()),
    }
}

/// A prerequisite of the running test is missing: print one
/// `SKIP <test>: <reason>` line (which `scripts/test-count` counts), or,
/// in CI ([`in_ci`]), panic with the reason so the run fails.
pub fn skip(reason: impl Display) {
    skip_named(&current_test(), reason)
}

/// [`skip`] for a part of a test named `what` (a scenario of a
/// `harness = false` binary, a case of a table).
pub fn skip_named(what: &str, reason: impl Display) {
    if in_ci() {
        panic!("{what}: prerequisite missing in CI: {reason}");
    }
    // Straight to file descriptor 2, past libtest's capture (a passing
    // test's output is never shown): `scripts/test-count` counts these.
    let line = format!("SKIP {what}: {reason}\n");
    let _ = nix::unistd::write(std::io::stderr(), line.as_bytes());
}

/// True if `ok`; otherwise [`skip`] with `reason` (a panic in CI) and
/// false. `if !require(cond, "why") { return; }`
pub fn require(ok: bool, reason: impl Display) -> bool {
    if !ok {
        skip(reason);
    }
    ok
}

/// True if nothing is missing (`None`); otherwise [`skip`] with the reason
/// and false. For checks that say why they cannot run
/// (`nfs_sim::unavailable_reason()`).
pub fn require_none(missing: Option<impl Display>) -> bool {
    match missing {
        None => true,
        Some(reason) => {
            skip(reason);
            false
        }
    }
}

/// True if running as root; otherwise [`skip`]: "needs root (`why`)".
pub fn require_root(why: &str) -> bool {
    require(
        nix::unistd::geteuid().is_root(),
        format_args!("needs root ({why})"),
    )
}

/// True if `program` is an executable file on `$PATH`.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// True if every program is on `$PATH`; otherwise [`skip`] naming the
/// first missing one and `hint` (how to install it), and false.
pub fn require_programs(programs: &[&str], hint: &str) -> bool {
    match programs.iter().find(|p| !on_path(p)) {
        Some(missing) => {
            skip(format_args!("`{missing}` is not installed ({hint})"));
            false
        }
        None => true,
    }
}

/// `program` as the unprivileged user `nobody` (uid and gid 65534, no
/// supplementary groups, a reset environment) when the tests run as root;
/// as ourselves otherwise, already unprivileged.
pub fn as_nobody(program: &Path) -> Command {
    if nix::unistd::geteuid().is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--reset-env",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Ends the whole test process, as a failure that says what was awaited,
/// if it is still running `bound` after the deadline was set and the
/// returned guard has not been dropped: a wait that would otherwise hang
/// (a read from a child's pipe, a child's exit, a thread's join) fails
/// instead. Set it around the waits, with a bound well above the time
/// they take.
pub fn deadline(what: impl Into<String>, bound: std::time::Duration) -> Deadline {
    let what = what.into();
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(bound) {
            eprintln!("DEADLINE: {what}: still waiting after {bound:?}; ending the test process");
            std::process::exit(101);
        }
    });
    Deadline {
        stop: Some(stop),
        thread: Some(thread),
    }
}

/// The guard of a [`deadline`]: dropping it disarms the deadline.
#[derive(Debug)]
pub struct Deadline {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Deadline {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Set `path`'s modification time `secs_ago` seconds in the past (in the
/// future when negative), as a lock left that long ago would have.
pub fn age_file(path: &Path, secs_ago: i64) {
    let now = std::time::SystemTime::now();
    let when = if secs_ago >= 0 {
        now - std::time::Duration::from_secs(secs_ago.unsigned_abs())
    } else {
        now + std::time::Duration::from_secs(secs_ago.unsigned_abs())
    };
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(when)
        .unwrap();
}

/// A finished command's status and output, for an assertion's message.
pub fn describe(out: &std::process::Output) -> String {
    format!(
        "{}; stdout {:?}; stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
