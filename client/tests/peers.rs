//! spoollock against the real programs it shares mailboxes with.
//!
//! Every scenario runs concurrent writers on one mbox, each appending its
//! own numbered messages: spoollock (`spoollock deliver` processes and
//! [`MailboxLock::append`] in this process) and the peer. At the end every
//! message must be present exactly once, whole, not interleaved with
//! another, and the mailbox must parse as strict mbox (see
//! [`parse_mbox`]). Messages vary in size; every seventh one is about
//! 150 KB, so that `cat`, procmail and the C peer need several `write`s for
//! it and an unlocked writer would interleave or be overwritten
//! (spoollock writes at the size it read under the lock, not `O_APPEND`).
//!
//! # Which locks each peer takes
//!
//! Observed with `strace` on Debian 12 (liblockfile 1.17, procmail 3.22,
//! lockfile-progs 0.1.19):
//!
//! | writer | dotlock `MBOX.lock` | fcntl lock on `MBOX` | order, waiting |
//! |---|---|---|---|
//! | spoollock | `link` of a temp file; content pid, host, boot, start | OFD write lock, whole file (conflicts with classic POSIX locks) | fcntl then dotlock by default; never waits while holding one |
//! | `dotlockfile -l` | `link` of `.lk*`; content `0\n` | none | sleeps 5, 10.. s, or `-i N` s |
//! | procmail's `lockfile` | `link` of a temp file, mode 0444; content `0` | none | sleeps `-N` s (default 8) |
//! | `procmail`, `:0:` or `DEFAULT` delivery | as `lockfile` | `F_SETLKW` classic POSIX write lock, whole file, on its `O_APPEND` descriptor | dotlock first, then *blocks* on fcntl holding the dotlock; dotlock retries sleep `LOCKSLEEP` (8 s) |
//! | `mail-lock` | `/var/spool/mail/LOGIN.lock` (= `/var/mail`) by liblockfile's `maillock`; content `0\n` | none | `--retry N` |
//! | `peer_writer` (C, below) | `O_CREAT\|O_EXCL`; content `<pid>\n` | `F_SETLKW` classic POSIX write lock, whole file | the order given; blocks on the second while holding the first |
//!
//! Exclusion holds because spoollock holds *both* locks while it writes
//! and every peer holds at least one of them while it writes. No deadlock
//! is possible because spoollock never blocks on one lock while holding
//! the other (it releases and backs off), so a peer that does hold-and-wait
//! in the opposite order always gets what it waits for.
//!
//! # What the tests need
//!
//! The peers (`scripts/test` installs them as root on CI: liblockfile-bin,
//! procmail, lockfile-progs, gcc) and, for `mail-lock`, root (a private
//! mount namespace with a tmpfs over `/var/mail`). A test whose peer or
//! privilege is missing says why on stderr and returns.
//!
//! No timing assertions: each scenario runs under a watchdog that kills
//! every process it started and fails the test after [`DEADLINE`]; that is
//! the "no deadlock" check.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use spoollock::{LockOptions, MailboxLock, MailboxOptions, Order, Wait};

/// Every scenario must end within this; past it, everything is killed
/// and the test fails (a deadlock, or a livelock).
const DEADLINE: Duration = Duration::from_secs(120);
/// A writer that has written its share goes on while others have not,
/// up to this many times its share.
const EXTRA: u32 = 5;

const SPOOLLOCK: &str = env!("CARGO_BIN_EXE_spoollock");

// --- environment ------------------------------------------------------------

/// True if every program is on `$PATH`; otherwise says which is missing.
fn have(test: &str, programs: &[&str]) -> bool {
    for program in programs {
        let found = std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|dir| {
                std::fs::metadata(dir.join(program))
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
        });
        if !found {
            eprintln!(
                "SKIPPED {test}: `{program}` is not installed \
                 (apt-get install liblockfile-bin procmail lockfile-progs gcc; \
                 scripts/test does it as root)"
            );
            return false;
        }
    }
    true
}

fn is_root(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("SKIPPED {test}: needs root (a private mount namespace over /var/mail)");
    }
    root
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "spoollock-peers-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // procmail refuses rcfiles in world-writable directories.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Scratch(dir)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// --- messages ---------------------------------------------------------------

fn sender(writer: &str) -> String {
    format!("{writer}@peers.test")
}

/// Body lines of message `seq` from `writer`: a few, or about 150 KB for
/// every seventh message.
fn body_lines(writer: &str, seq: u32) -> usize {
    if writer.starts_with("killed") {
        1_500_000 // about 90 MB: an append that takes a while
    } else if seq % 7 == 3 {
        2_500
    } else {
        1 + (seq as usize * 37 + writer.len() * 11) % 60
    }
}

/// The message as a mail program hands it over: headers naming its
/// writer and number, and a body whose every line names them too, with
/// one line that mbox must quote.
fn message(writer: &str, seq: u32) -> Vec<u8> {
    let lines = body_lines(writer, seq);
    let mut m = String::with_capacity(lines * 64 + 200);
    m.push_str(&format!(
        "X-Writer: {writer}\nX-Seq: {seq}\nSubject: message {seq} from {writer}\n\n"
    ));
    for k in 0..lines {
        if k == lines / 2 {
            m.push_str(&format!("From {writer} {seq}: must be quoted\n"));
        }
        m.push_str(&format!(
            "{writer} {seq} line {k:07} abcdefghijklmnopqrstuvwxyz0123456789\n"
        ));
    }
    m.into_bytes()
}

/// The lines an mbox reader must find after the `From ` line of that
/// message (quoting applied; both mboxo and mboxrd writers agree here: the
/// messages have no `>From ` lines).
fn expected_lines(writer: &str, seq: u32) -> Vec<String> {
    String::from_utf8(message(writer, seq))
        .unwrap()
        .lines()
        .map(|l| {
            if l.starts_with("From ") {
                format!(">{l}")
            } else {
                l.to_owned()
            }
        })
        .collect()
}

/// The whole mbox entry (separator line, quoted message, blank line), as
/// a shell script appends it with `cat`.
fn entry(writer: &str, seq: u32) -> Vec<u8> {
    spoollock::mbox::entry(
        &message(writer, seq),
        &sender(writer),
        SystemTime::now(),
        b"",
    )
}

/// The message with its `From ` line, as an MTA hands it to `procmail -m`.
fn with_from_line(writer: &str, seq: u32) -> Vec<u8> {
    let mut m = format!(
        "From {} {}\n",
        sender(writer),
        spoollock::mbox::asctime(SystemTime::now())
    )
    .into_bytes();
    m.extend_from_slice(&message(writer, seq));
    m
}

// --- the strict mbox parser -------------------------------------------------

/// Parse `data` as mbox, strictly: it starts with a `From ` line, a
/// message starts at every `From ` line at the start or after a blank
/// line, every message ends with a blank line, and each message is
/// exactly one of ours (its `X-Writer`/`X-Seq` headers name it, and every
/// line after the separator is the line that message must have). Returns
/// the (writer, seq) of each message in file order.
fn parse_mbox(data: &[u8]) -> Result<Vec<(String, u32)>, String> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    let text = std::str::from_utf8(data).map_err(|e| format!("not UTF-8: {e}"))?;
    if !text.ends_with("\n\n") {
        return Err(format!(
            "does not end with a blank line: ...{:?}",
            &text[text.len().saturating_sub(80)..]
        ));
    }
    let lines: Vec<&str> = text[..text.len() - 1].split('\n').collect();
    let starts: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("From ") && (i == 0 || lines[i - 1].is_empty()))
        .collect();
    if starts.first() != Some(&0) {
        return Err(format!("does not start with a From line: {:?}", lines[0]));
    }
    let mut found = Vec::new();
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(lines.len());
        let at = |what: String| format!("message {n} (line {}): {what}", start + 1);
        let separator = lines[start];
        let fields: Vec<&str> = separator.split_whitespace().collect();
        let year_last = fields
            .last()
            .is_some_and(|y| y.len() == 4 && y.bytes().all(|b| b.is_ascii_digit()));
        if fields.len() < 4 || !year_last {
            return Err(at(format!("malformed From line {separator:?}")));
        }
        if !lines[end - 1].is_empty() {
            return Err(at("no blank line after it".into()));
        }
        let body = &lines[start + 1..end - 1];
        let writer = body
            .first()
            .and_then(|l| l.strip_prefix("X-Writer: "))
            .ok_or_else(|| at(format!("no X-Writer header: {:?}", body.first())))?;
        let seq: u32 = body
            .get(1)
            .and_then(|l| l.strip_prefix("X-Seq: "))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| at(format!("no X-Seq header: {:?}", body.get(1))))?;
        let expected = expected_lines(writer, seq);
        if let Some(i) = (0..body.len().max(expected.len()))
            .find(|&i| body.get(i).copied() != expected.get(i).map(String::as_str))
        {
            return Err(at(format!(
                "{writer} #{seq} is damaged at its line {}: found {:?}, expected {:?} \
                 ({} lines found, {} expected)",
                i + 1,
                body.get(i),
                expected.get(i),
                body.len(),
                expected.len()
            )));
        }
        found.push((writer.to_owned(), seq));
    }
    Ok(found)
}

/// The mailbox holds exactly the `expected` messages, each once, whole.
/// On failure a copy of the mailbox is kept for inspection.
fn check_mailbox(scenario: &str, mbox: &Path, expected: &BTreeSet<(String, u32)>) {
    let data = std::fs::read(mbox).unwrap();
    let verdict = parse_mbox(&data).and_then(|found| {
        let mut seen = BTreeMap::new();
        for key in &found {
            *seen.entry(key.clone()).or_insert(0u32) += 1;
        }
        let dups: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
        let missing: Vec<_> = expected.iter().filter(|k| !seen.contains_key(k)).collect();
        let extra: Vec<_> = seen.keys().filter(|k| !expected.contains(k)).collect();
        if dups.is_empty() && missing.is_empty() && extra.is_empty() {
            Ok(found.len())
        } else {
            Err(format!(
                "duplicated: {dups:?}; missing: {missing:?}; unexpected: {extra:?}"
            ))
        }
    });
    match verdict {
        Ok(n) => eprintln!("{scenario}: {n} messages, all present once and whole"),
        Err(why) => {
            let keep = std::env::temp_dir().join(format!(
                "spoollock-peers-FAILED-{scenario}-{}.mbox",
                std::process::id()
            ));
            let _ = std::fs::write(&keep, &data);
            panic!(
                "{scenario}: the mailbox is wrong: {why}\n(mailbox kept in {})",
                keep.display()
            );
        }
    }
}

#[test]
fn the_parser_rejects_damaged_mailboxes() {
    let a0 = entry("a", 0);
    let a1 = entry("a", 1);
    let big = entry("b", 3);
    let whole = [a0.clone(), a1.clone(), big.clone()].concat();
    assert_eq!(
        parse_mbox(&whole).unwrap(),
        vec![("a".into(), 0), ("a".into(), 1), ("b".into(), 3)]
    );
    // Interleaved: half of one message, another one, the rest.
    let cut = big.len() / 2;
    let interleaved = [&big[..cut], &a0[..], &big[cut..]].concat();
    assert!(parse_mbox(&interleaved).is_err());
    // Overwritten at the same offset (what unlocked pwrite writers do).
    let mut overwritten = whole.clone();
    overwritten[a0.len() + 5..a0.len() + 5 + a1.len()].copy_from_slice(&a1);
    assert!(parse_mbox(&overwritten).is_err());
    // Truncated, or with the last blank line missing.
    assert!(parse_mbox(&whole[..whole.len() - 100]).is_err());
    assert!(parse_mbox(&whole[..whole.len() - 1]).is_err());
    // Unquoted From line in a body.
    let unquoted = String::from_utf8(whole.clone())
        .unwrap()
        .replacen(">From a 1", "From a 1", 1);
    assert!(parse_mbox(unquoted.as_bytes()).is_err());
    // A separator not preceded by a blank line.
    let glued = [&a0[..a0.len() - 1], &a1[..]].concat();
    assert!(parse_mbox(&glued).is_err());
    // Duplicates parse, and check_mailbox counts them.
    let dup = [a0.clone(), a0].concat();
    assert_eq!(parse_mbox(&dup).unwrap().len(), 2);
}

// --- processes and the watchdog ---------------------------------------------

/// The processes a scenario started, so that the watchdog can kill them.
#[derive(Default)]
struct Procs {
    live: Mutex<HashSet<i32>>,
    expired: AtomicBool,
}

impl Procs {
    /// Run `cmd` in its own process group, stdin from `stdin`, and
    /// collect its output.
    fn output(&self, cmd: &mut Command, stdin: Option<&Path>) -> Result<Output, String> {
        if self.expired.load(Ordering::SeqCst) {
            return Err("deadline passed".into());
        }
        let stdin = match stdin {
            Some(path) => Stdio::from(File::open(path).map_err(|e| e.to_string())?),
            None => Stdio::null(),
        };
        let child = cmd
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
        let pid = child.id() as i32;
        self.live.lock().unwrap().insert(pid);
        if self.expired.load(Ordering::SeqCst) {
            let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
        }
        let out = child.wait_with_output().map_err(|e| e.to_string());
        self.live.lock().unwrap().remove(&pid);
        out
    }

    /// The deadline passed: kill every process group still running.
    fn expire(&self) {
        self.expired.store(true, Ordering::SeqCst);
        for &pid in self.live.lock().unwrap().iter() {
            let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
        }
    }
}

/// Runs `f`; if it has not returned after [`DEADLINE`], kills every process
/// in `procs` (so that `f` returns) and fails.
fn with_watchdog<T>(scenario: &str, procs: &Arc<Procs>, f: impl FnOnce() -> T) -> T {
    let (done, wait) = mpsc::channel::<()>();
    let dog_procs = Arc::clone(procs);
    let dog = std::thread::spawn(move || {
        if wait.recv_timeout(DEADLINE) == Err(mpsc::RecvTimeoutError::Timeout) {
            dog_procs.expire();
        }
    });
    let result = f();
    drop(done);
    dog.join().unwrap();
    assert!(
        !procs.expired.load(Ordering::SeqCst),
        "{scenario}: not finished after {DEADLINE:?}: deadlock or livelock; \
         every process was killed"
    );
    result
}

fn describe(out: &Output) -> String {
    format!(
        "{}; stdout {:?}; stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// --- the C peer -------------------------------------------------------------

const PEER_WRITER_C: &str = r#"
/* A mail writer that locks the way many C MDAs do: classic POSIX fcntl
 * locks (F_SETLKW: blocking, whole file) and/or an O_EXCL dotlock
 * (MBOX.lock holding "<pid>\n"), in the order given, holding the first
 * while it waits for the second: the hold-and-wait pattern that deadlocks
 * against a program taking the opposite order if that one also waits
 * while holding.
 *
 *   peer_writer fcntl|fcntl,dotlock|dotlock,fcntl MBOX ENTRY...
 *
 * Each ENTRY file is appended whole, in 512-byte writes with a yield in
 * between, so that an unlocked writer would interleave. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what, const char *arg) {
	fprintf(stderr, "peer_writer: %s %s: %s\n", what, arg, strerror(errno));
	exit(1);
}

static void fcntl_lock(int fd, short type, const char *mbox) {
	struct flock fl;
	memset(&fl, 0, sizeof fl);
	fl.l_type = type;
	fl.l_whence = SEEK_SET;
	while (fcntl(fd, type == F_UNLCK ? F_SETLK : F_SETLKW, &fl) < 0)
		if (errno != EINTR)
			die("fcntl", mbox);
}

static void dotlock(const char *lock) {
	char pid[32];
	int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
	for (;;) {
		int fd = open(lock, O_WRONLY | O_CREAT | O_EXCL, 0644);
		if (fd >= 0) {
			if (write(fd, pid, n) != n)
				die("write", lock);
			close(fd);
			return;
		}
		if (errno != EEXIST)
			die("open", lock);
		struct timespec ms = {0, 1000000};
		nanosleep(&ms, NULL);
	}
}

static char *slurp(const char *path, size_t *len) {
	FILE *f = fopen(path, "rb");
	if (!f)
		die("open", path);
	size_t cap = 1 << 16, n = 0, r;
	char *buf = malloc(cap);
	while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
		n += r;
		if (n == cap)
			buf = realloc(buf, cap *= 2);
	}
	if (!buf)
		die("malloc", path);
	fclose(f);
	*len = n;
	return buf;
}

int main(int argc, char **argv) {
	if (argc < 3) {
		fprintf(stderr, "usage: peer_writer fcntl|fcntl,dotlock|dotlock,fcntl MBOX ENTRY...\n");
		return 2;
	}
	const char *mode = argv[1], *mbox = argv[2];
	int use_fcntl = strstr(mode, "fcntl") != NULL;
	int use_dot = strstr(mode, "dotlock") != NULL;
	int dot_first = strncmp(mode, "dotlock", 7) == 0;
	char lock[4096];
	snprintf(lock, sizeof lock, "%s.lock", mbox);
	for (int i = 3; i < argc; i++) {
		size_t len;
		char *entry = slurp(argv[i], &len);
		int fd = open(mbox, O_WRONLY | O_APPEND | O_CREAT, 0600);
		if (fd < 0)
			die("open", mbox);
		if (use_dot && dot_first)
			dotlock(lock);
		if (use_fcntl)
			fcntl_lock(fd, F_WRLCK, mbox);
		if (use_dot && !dot_first)
			dotlock(lock);
		for (size_t off = 0; off < len;) {
			size_t chunk = len - off < 512 ? len - off : 512;
			ssize_t w = write(fd, entry + off, chunk);
			if (w < 0) {
				if (errno == EINTR)
					continue;
				die("write", mbox);
			}
			off += (size_t)w;
			sched_yield();
		}
		/* Release in reverse order. */
		if (use_dot && !dot_first && unlink(lock) < 0)
			die("unlink", lock);
		if (use_fcntl)
			fcntl_lock(fd, F_UNLCK, mbox);
		if (use_dot && dot_first && unlink(lock) < 0)
			die("unlink", lock);
		close(fd);
		free(entry);
	}
	return 0;
}
"#;

/// `peer_writer`, compiled once per test run with `cc`.
fn peer_writer(test: &str) -> Option<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    if !have(test, &["cc"]) {
        return None;
    }
    let built = BUILT.get_or_init(|| {
        // Built under a private name, then renamed over the last run's.
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let src = dir.join(format!("peer_writer-{}.c", std::process::id()));
        let tmp = dir.join(format!("peer_writer-{}", std::process::id()));
        let exe = dir.join("peer_writer");
        std::fs::write(&src, PEER_WRITER_C).map_err(|e| e.to_string())?;
        let out = Command::new("cc")
            .args(["-O2", "-Wall", "-Wextra", "-Werror", "-o"])
            .arg(&tmp)
            .arg(&src)
            .output()
            .map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(&src);
        if !out.status.success() {
            return Err(format!("cc failed: {}", describe(&out)));
        }
        std::fs::rename(&tmp, &exe).map_err(|e| e.to_string())?;
        Ok(exe)
    });
    Some(built.clone().expect("compiling the C peer"))
}

// --- writers and scenarios --------------------------------------------------

#[derive(Debug)]
enum Kind {
    /// `spoollock deliver` with these extra flags, one process a message.
    Deliver(&'static [&'static str]),
    /// [`MailboxLock::append`] in this process.
    Library(Order),
    /// `sh -c SCRIPT sh MBOX ENTRYFILE`, one process a message; the script
    /// locks, appends the prepared entry, unlocks.
    Shell(&'static str),
    /// The C peer, one process for all messages, in this mode.
    CPeer(PathBuf, &'static str),
    /// `procmail -m RCFILE < message with From line`, one a message.
    Procmail(PathBuf),
}

#[derive(Debug)]
struct Writer {
    name: &'static str,
    count: u32,
    kind: Kind,
}

fn w(name: &'static str, count: u32, kind: Kind) -> Writer {
    Writer { name, count, kind }
}

struct Scenario {
    name: &'static str,
    dir: Scratch,
    mbox: PathBuf,
    procs: Arc<Procs>,
}

impl Scenario {
    fn new(name: &'static str) -> Scenario {
        let dir = Scratch::new(name);
        let mbox = dir.join("mbox");
        // An existing, empty mailbox, as a spool has.
        File::create(&mbox).unwrap();
        std::fs::set_permissions(&mbox, std::fs::Permissions::from_mode(0o600)).unwrap();
        Scenario {
            name,
            dir,
            mbox,
            procs: Arc::new(Procs::default()),
        }
    }

    /// Write the message files the writers read: `msg/W-N` (plain),
    /// `entry/W-N` (mbox entry), `mboxmsg/W-N` (with a From line).
    fn prepare(&self, writer: &str, seqs: std::ops::Range<u32>) {
        for (sub, render) in [
            ("msg", message as fn(&str, u32) -> Vec<u8>),
            ("entry", entry),
            ("mboxmsg", with_from_line),
        ] {
            let dir = self.dir.join(sub);
            std::fs::create_dir_all(&dir).unwrap();
            for seq in seqs.clone() {
                std::fs::write(dir.join(format!("{writer}-{seq:04}")), render(writer, seq))
                    .unwrap();
            }
        }
    }

    fn file(&self, sub: &str, writer: &str, seq: u32) -> PathBuf {
        self.dir.join(sub).join(format!("{writer}-{seq:04}"))
    }

    fn write_rc(&self, name: &str, rc: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, rc).unwrap();
        path
    }

    /// Run all writers at once, then check the mailbox. Each writer writes
    /// at least its `count` messages and, so that the mailbox stays
    /// contended until the end, goes on (a little slower, at most
    /// [`EXTRA`] times as many) while any other is still below its count.
    fn run(&self, writers: Vec<Writer>) {
        let below = AtomicUsize::new(writers.len());
        let results = with_watchdog(self.name, &self.procs, || {
            std::thread::scope(|s| {
                let handles: Vec<_> = writers
                    .iter()
                    .map(|wr| {
                        let below = &below;
                        s.spawn(move || self.write_all(wr, below))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .collect::<Vec<_>>()
            })
        });
        let mut expected = BTreeSet::new();
        let mut errors = Vec::new();
        for (wr, result) in writers.iter().zip(results) {
            match result {
                Ok(n) => expected.extend((0..n).map(|seq| (wr.name.to_owned(), seq))),
                Err(e) => errors.push(e),
            }
        }
        assert!(
            errors.is_empty(),
            "{}: writers failed: {errors:#?}",
            self.name
        );
        let lock = self.mbox.with_extension("lock");
        assert!(
            !lock.exists(),
            "{}: {} was left behind",
            self.name,
            lock.display()
        );
        check_mailbox(self.name, &self.mbox, &expected);
    }

    /// Write `wr`'s messages; how many were written.
    fn write_all(&self, wr: &Writer, below: &AtomicUsize) -> Result<u32, String> {
        let fail = |seq: u32, why: String| format!("{} #{seq} ({:?}): {why}", wr.name, wr.kind);
        if let Kind::CPeer(exe, mode) = &wr.kind {
            // One process for all its messages: exactly `count`.
            self.prepare(wr.name, 0..wr.count);
            let mut cmd = Command::new(exe);
            cmd.arg(mode).arg(&self.mbox);
            cmd.args((0..wr.count).map(|seq| self.file("entry", wr.name, seq)));
            let out = self.procs.output(&mut cmd, None);
            below.fetch_sub(1, Ordering::SeqCst);
            let out = out?;
            if !out.status.success() {
                return Err(fail(0, describe(&out)));
            }
            return Ok(wr.count);
        }
        let opts = MailboxOptions {
            lock: LockOptions {
                // Give up when the watchdog does: this thread cannot be killed.
                wait: Wait::timeout(DEADLINE),
                ..LockOptions::default()
            },
            order: match wr.kind {
                Kind::Library(order) => order,
                _ => Order::default(),
            },
            ..MailboxOptions::default()
        };
        let mut seq = 0;
        loop {
            if seq == wr.count {
                below.fetch_sub(1, Ordering::SeqCst);
            }
            if seq >= wr.count {
                if below.load(Ordering::SeqCst) == 0 || seq >= wr.count * EXTRA {
                    return Ok(seq);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            if self.procs.expired.load(Ordering::SeqCst) {
                return Err(fail(seq, "deadline passed".into()));
            }
            let result = self.write_one(wr, seq, &opts);
            if let Err(why) = result {
                if seq < wr.count {
                    below.fetch_sub(1, Ordering::SeqCst);
                }
                return Err(fail(seq, why));
            }
            seq += 1;
        }
    }

    fn write_one(&self, wr: &Writer, seq: u32, opts: &MailboxOptions) -> Result<(), String> {
        let (mut cmd, stdin) = match &wr.kind {
            Kind::Library(_) => {
                let mut mailbox = MailboxLock::open(&self.mbox, opts).map_err(|e| e.to_string())?;
                mailbox
                    .append(&message(wr.name, seq), &sender(wr.name))
                    .map_err(|e| e.to_string())?;
                return mailbox.release().map_err(|e| e.to_string());
            }
            Kind::Deliver(flags) => {
                let mut cmd = Command::new(SPOOLLOCK);
                cmd.args(["deliver", "--timeout", "110s", "--from"])
                    .arg(sender(wr.name))
                    .args(*flags)
                    .arg(&self.mbox);
                (cmd, Some("msg"))
            }
            Kind::Shell(script) => {
                let mut cmd = Command::new("sh");
                cmd.args(["-c", script, "sh"])
                    .arg(&self.mbox)
                    .arg(self.file("entry", wr.name, seq));
                (cmd, None)
            }
            Kind::Procmail(rc) => {
                let mut cmd = Command::new("procmail");
                cmd.arg("-m").arg(rc);
                (cmd, Some("mboxmsg"))
            }
            Kind::CPeer(..) => unreachable!("written by write_all"),
        };
        self.prepare(wr.name, seq..seq + 1);
        let stdin = stdin.map(|sub| self.file(sub, wr.name, seq));
        let out = self.procs.output(&mut cmd, stdin.as_deref())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(describe(&out))
        }
    }
}

// --- the scenarios ----------------------------------------------------------

/// `dotlockfile` (liblockfile) takes only the dotlock `MBOX.lock`
/// (`link` of a `.lk*` temp file, content `0\n`); the shell appends with
/// `cat >>` while it is held. spoollock holds the dotlock too while it
/// writes, so the two exclude each other. One peer writer retries in the
/// shell (`-r 0`, 10 ms), the other with liblockfile's own waits (`-i 1`).
#[test]
fn dotlockfile_and_spoollock_exclude_each_other() {
    const T: &str = "dotlockfile_and_spoollock_exclude_each_other";
    if !have(T, &["dotlockfile"]) {
        return;
    }
    const SPIN: &str = r#"until dotlockfile -q -r 0 -l "$1.lock"; do sleep 0.01; done
cat "$2" >> "$1"; s=$?; dotlockfile -u "$1.lock" || exit 91; exit $s"#;
    const WAIT: &str = r#"dotlockfile -q -i 1 -r 100 -l "$1.lock" || exit 90
cat "$2" >> "$1"; s=$?; dotlockfile -u "$1.lock" || exit 91; exit $s"#;
    let s = Scenario::new("dotlockfile");
    s.run(vec![
        w("spoollock-deliver", 40, Kind::Deliver(&[])),
        w("spoollock-lib", 40, Kind::Library(Order::FcntlThenDotlock)),
        w("dotlockfile-spin", 40, Kind::Shell(SPIN)),
        w("dotlockfile-wait", 10, Kind::Shell(WAIT)),
    ]);
}

/// procmail's `lockfile` takes only the dotlock `MBOX.lock` (`link` of a
/// temp file, mode 0444, content `0`; `-1`: sleep 1 s between tries, `-r`
/// bounds them); the shell appends with `cat >>` and removes the lock.
/// spoollock holds the dotlock too while it writes.
#[test]
fn procmail_lockfile_and_spoollock_exclude_each_other() {
    const T: &str = "procmail_lockfile_and_spoollock_exclude_each_other";
    if !have(T, &["lockfile"]) {
        return;
    }
    const LOCKFILE: &str = r#"lockfile -1 -r 100 "$1.lock" || exit 90
cat "$2" >> "$1"; s=$?; rm -f "$1.lock" || exit 91; exit $s"#;
    let s = Scenario::new("lockfile");
    s.run(vec![
        w("spoollock-deliver", 30, Kind::Deliver(&[])),
        w("spoollock-lib", 30, Kind::Library(Order::DotlockThenFcntl)),
        w("lockfile-a", 15, Kind::Shell(LOCKFILE)),
        w("lockfile-b", 15, Kind::Shell(LOCKFILE)),
    ]);
}

/// `procmail -m RCFILE` delivering with its default locking, once with a
/// `:0:` recipe and once by falling through to `DEFAULT`: it takes the
/// dotlock `MBOX.lock` (as `lockfile` does, retrying every `LOCKSLEEP`
/// seconds: 1 here instead of 8, to keep the test short), then opens the
/// mailbox `O_APPEND` and *blocks* in `F_SETLKW` for a classic POSIX write
/// lock on the whole file while holding the dotlock, writes, and releases
/// the fcntl lock, then the dotlock. spoollock holds both while it writes;
/// it never blocks on one while holding the other, so procmail's
/// hold-and-wait cannot deadlock with either of spoollock's orders.
/// (`-m` keeps procmail, run as root, away from the real `/var/mail/root`,
/// which it creates otherwise; the locks are the same. The messages carry
/// their `From ` line, as an MTA passes it.)
#[test]
fn procmail_delivery_and_spoollock_exclude_each_other() {
    const T: &str = "procmail_delivery_and_spoollock_exclude_each_other";
    if !have(T, &["procmail"]) {
        return;
    }
    let s = Scenario::new("procmail");
    let mbox = s.mbox.to_str().unwrap();
    let recipe = s.write_rc("recipe.rc", &format!("LOCKSLEEP=1\n:0:\n{mbox}\n"));
    let default = s.write_rc("default.rc", &format!("LOCKSLEEP=1\nDEFAULT={mbox}\n"));
    s.run(vec![
        w("spoollock-deliver", 30, Kind::Deliver(&[])),
        w(
            "spoollock-deliver-dotlock-first",
            20,
            Kind::Deliver(&["--order", "dotlock,fcntl"]),
        ),
        w("spoollock-lib", 30, Kind::Library(Order::FcntlThenDotlock)),
        w("procmail-recipe", 20, Kind::Procmail(recipe)),
        w("procmail-default", 20, Kind::Procmail(default)),
    ]);
}

/// A C program that takes only a classic POSIX fcntl write lock
/// (`F_SETLKW`, whole file) and appends in 512-byte writes. spoollock's
/// OFD lock conflicts with it, with both locks (default) and with
/// `--fcntl-only`.
#[test]
fn fcntl_only_writer_and_spoollock_exclude_each_other() {
    const T: &str = "fcntl_only_writer_and_spoollock_exclude_each_other";
    let Some(exe) = peer_writer(T) else { return };
    let s = Scenario::new("fcntl-only");
    s.run(vec![
        w("spoollock-deliver", 40, Kind::Deliver(&[])),
        w("spoollock-fcntl-only", 40, Kind::Deliver(&["--fcntl-only"])),
        w("spoollock-lib", 60, Kind::Library(Order::FcntlThenDotlock)),
        w("c-fcntl-a", 60, Kind::CPeer(exe.clone(), "fcntl")),
        w("c-fcntl-b", 60, Kind::CPeer(exe, "fcntl")),
    ]);
}

/// The C peer takes fcntl (classic POSIX, `F_SETLKW`) and then, holding
/// it, waits for the dotlock (`O_EXCL`, retried every ms); spoollock is
/// configured for the opposite order, dotlock then fcntl. Two programs
/// that both hold-and-wait in opposite orders deadlock; spoollock does not
/// wait for fcntl while holding the dotlock (it releases and backs off),
/// so the test ends, with every message.
#[test]
fn opposite_orders_do_not_deadlock_peer_fcntl_first() {
    const T: &str = "opposite_orders_do_not_deadlock_peer_fcntl_first";
    let Some(exe) = peer_writer(T) else { return };
    let s = Scenario::new("peer-fcntl-first");
    s.run(vec![
        w(
            "spoollock-deliver",
            40,
            Kind::Deliver(&["--order", "dotlock,fcntl"]),
        ),
        w("spoollock-lib", 60, Kind::Library(Order::DotlockThenFcntl)),
        w(
            "c-fcntl-dotlock-a",
            60,
            Kind::CPeer(exe.clone(), "fcntl,dotlock"),
        ),
        w("c-fcntl-dotlock-b", 60, Kind::CPeer(exe, "fcntl,dotlock")),
    ]);
}

/// The mirror image: the C peer takes the dotlock and then, holding it,
/// blocks in `F_SETLKW` (as procmail does); spoollock uses its default
/// order, fcntl then dotlock, and never waits for the dotlock while
/// holding fcntl.
#[test]
fn opposite_orders_do_not_deadlock_peer_dotlock_first() {
    const T: &str = "opposite_orders_do_not_deadlock_peer_dotlock_first";
    let Some(exe) = peer_writer(T) else { return };
    let s = Scenario::new("peer-dotlock-first");
    s.run(vec![
        w("spoollock-deliver", 40, Kind::Deliver(&[])),
        w("spoollock-lib", 60, Kind::Library(Order::FcntlThenDotlock)),
        w(
            "c-dotlock-fcntl-a",
            60,
            Kind::CPeer(exe.clone(), "dotlock,fcntl"),
        ),
        w("c-dotlock-fcntl-b", 60, Kind::CPeer(exe, "dotlock,fcntl")),
    ]);
}

/// lockfile-progs' `mail-lock` takes only the dotlock of the *caller's*
/// spool mailbox, `/var/spool/mail/LOGIN.lock` (liblockfile's `maillock`;
/// on Debian `/var/spool/mail` is a symlink to `/var/mail`), content
/// `0\n`; `mail-unlock` removes it. The scripts append with `cat >>`
/// between the two. spoollock writers use `spoollock deliver --mailbox`,
/// which locks `/var/mail/LOGIN.lock` and fcntl-locks `/var/mail/LOGIN`.
///
/// Everything runs in a private mount namespace (`unshare -m`) with a
/// tmpfs over `/var/mail` (root:mail 2775, as on Debian), so the real
/// spool is never touched; this needs root.
#[test]
fn mail_lock_and_spoollock_exclude_each_other() {
    const T: &str = "mail_lock_and_spoollock_exclude_each_other";
    if !have(T, &["mail-lock", "mail-unlock", "unshare", "mount"]) || !is_root(T) {
        return;
    }
    const SCRIPT: &str = r#"set -u
dir=$1 spoollock=$2
mount -t tmpfs -o mode=2775,size=256m spoollock-peers /var/mail || exit 91
chown root:mail /var/mail || exit 92
box=/var/mail/$(id -un)
unset MAIL
( umask 077 && : > "$box" ) || exit 93
deliver() {
	n=0
	for f in "$dir"/msg/"$1"-*; do
		# At least $2 messages, then on while mail-lock writers are busy.
		[ $n -ge $2 ] && [ -e "$dir/done-mail-lock-a" ] && [ -e "$dir/done-mail-lock-b" ] && break
		"$spoollock" deliver --mailbox --timeout 110s --from "$1@peers.test" < "$f" ||
			{ echo "spoollock deliver $f failed" >&2; echo $n > "$dir/count-$1"; return 1; }
		n=$((n + 1))
	done
	echo $n > "$dir/count-$1"
}
maillock() {
	for f in "$dir"/entry/"$1"-*; do
		until mail-lock --retry 0 2>/dev/null; do sleep 0.01; done
		cat "$f" >> "$box"; s=$?
		mail-unlock || { echo "mail-unlock failed" >&2; s=1; }
		[ $s = 0 ] || break
	done
	touch "$dir/done-$1"
	return $s
}
deliver spoollock-a 40 & a=$!
deliver spoollock-b 40 & b=$!
maillock mail-lock-a & c=$!
maillock mail-lock-b & d=$!
fail=0
for p in $a $b $c $d; do wait $p || fail=1; done
cp "$box" "$dir/result" || exit 94
ls -A /var/mail > "$dir/spool-after"
exit $fail
"#;
    let s = Scenario::new("mail-lock");
    s.prepare("spoollock-a", 0..40 * EXTRA);
    s.prepare("spoollock-b", 0..40 * EXTRA);
    s.prepare("mail-lock-a", 0..40);
    s.prepare("mail-lock-b", 0..40);
    let out = with_watchdog(s.name, &s.procs, || {
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "--propagation", "private", "sh", "-c", SCRIPT, "sh"])
            .arg(&s.dir.0)
            .arg(SPOOLLOCK);
        s.procs.output(&mut cmd, None)
    })
    .unwrap();
    assert!(out.status.success(), "{T}: {}", describe(&out));
    let after = std::fs::read_to_string(s.dir.join("spool-after")).unwrap();
    assert_eq!(
        after.split_whitespace().collect::<Vec<_>>(),
        vec!["root"],
        "{T}: only the mailbox may remain in the spool (no lock, no temp file)"
    );
    let mut expected = BTreeSet::new();
    for writer in ["mail-lock-a", "mail-lock-b"] {
        expected.extend((0..40).map(|seq| (writer.to_owned(), seq)));
    }
    for writer in ["spoollock-a", "spoollock-b"] {
        let count = std::fs::read_to_string(s.dir.join(&format!("count-{writer}"))).unwrap();
        let count: u32 = count.trim().parse().unwrap();
        assert!(count >= 40, "{T}: {writer} wrote only {count}");
        expected.extend((0..count).map(|seq| (writer.to_owned(), seq)));
    }
    check_mailbox(s.name, &s.dir.join("result"), &expected);
}

/// A spoollock writer SIGKILLed in the middle of an append.
///
/// A SIGKILL cannot be caught, and Linux ends a large `write` early when a
/// fatal signal arrives (the copy loop checks between pages), so a killed
/// append leaves a *prefix* of its entry in the file. spoollock makes that
/// recoverable: before writing, `append` records `append=dev:ino:offset:len`
/// in its own dotlock; the next spoollock locker, which breaks the dead
/// writer's dotlock at once (same host and boot, pid gone), truncates the
/// mailbox back to `offset` when it is still that file, shorter than the
/// whole entry, and holds no other message after it. Checked here:
///
/// - the kill lands while the writer holds both locks (the mailbox has
///   started to grow), and the dotlock it leaves names the dead pid;
/// - the next `spoollock deliver --no-wait` gets both locks at once and
///   reports breaking the stale lock;
/// - no partial message survives: the killed entry is whole or gone, every
///   earlier message is intact, and the mailbox parses strictly;
/// - no lock or temporary file is left behind.
#[test]
fn sigkilled_writer_leaves_no_partial_message_and_its_dotlock_is_broken_at_once() {
    const T: &str = "sigkilled_writer";
    let s = Scenario::new("sigkill");
    let deliver = |writer: &str, seq: u32, extra: &[&str]| {
        let mut cmd = Command::new(SPOOLLOCK);
        cmd.args(["deliver", "--from", &sender(writer)])
            .args(extra)
            .arg(&s.mbox)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&message(writer, seq))
            .unwrap();
        child.wait_with_output().unwrap()
    };
    for seq in 0..3 {
        let out = deliver("before", seq, &[]);
        assert!(out.status.success(), "{T}: {}", describe(&out));
    }
    let start = Instant::now();
    let mut landed = false;
    for attempt in 0..3 {
        let old = std::fs::read(&s.mbox).unwrap();
        let killed_msg = message("killed", attempt);
        let mut child = Command::new(SPOOLLOCK)
            .args(["deliver", "--from", &sender("killed")])
            .arg(&s.mbox)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let mut stdin = child.stdin.take().unwrap();
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&killed_msg);
        });
        // Kill as soon as the mailbox grows: the writer holds both locks
        // and is inside its write.
        let mut grew = false;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::fs::metadata(&s.mbox).unwrap().len() > old.len() as u64 {
                grew = true;
                kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
                break child.wait().unwrap();
            }
            if start.elapsed() > DEADLINE {
                let _ = child.kill();
                panic!("{T}: the writer neither wrote nor ended within {DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_micros(100));
        };
        feeder.join().unwrap();
        let killed = status.signal() == Some(nix::libc::SIGKILL);
        let lock = s.mbox.with_extension("lock");
        if killed {
            assert!(grew, "{T}: killed before writing?");
            let content = std::fs::read_to_string(&lock)
                .unwrap_or_else(|e| panic!("{T}: the killed holder's dotlock is gone: {e}"));
            assert_eq!(
                content.lines().next(),
                Some(pid.to_string().as_str()),
                "{T}: the dotlock left behind names the killed writer"
            );
        } else {
            assert!(status.success(), "{T}: the writer failed: {status}");
        }

        // The next locker: at once, or not at all.
        let out = deliver("next", attempt, &["--no-wait", "--verbose"]);
        assert!(
            out.status.success(),
            "{T}: the next locker did not get the locks at once: {}",
            describe(&out)
        );
        if killed {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("removed stale lock") && err.contains(&pid.to_string()),
                "{T}: the next locker did not report breaking the dead writer's lock: {err}"
            );
        }
        let mut names: Vec<_> = std::fs::read_dir(&s.dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("mbox") || n.starts_with('.'))
            .collect();
        names.sort();
        assert_eq!(names, ["mbox"], "{T}: a lock or temp file was left behind");

        // Where the damage is.
        let data = std::fs::read(&s.mbox).unwrap();
        assert_eq!(
            &data[..old.len()],
            &old[..],
            "{T}: earlier messages changed"
        );
        let rest = &data[old.len()..];
        let next_from = format!("From {} ", sender("next"));
        let p = if rest.starts_with(next_from.as_bytes()) {
            0
        } else {
            let needle = format!("\n{next_from}");
            find(rest, needle.as_bytes()).expect("the next message is there") + 1
        };
        let left = &rest[..p];
        let full = killed_entry_template(attempt);
        let whole = left.len() == full.len() && matches_template(left, &full);
        // The killed writer had marked its append in its dotlock; the next
        // locker, breaking that lock, removed whatever part was written.
        assert!(
            left.is_empty() || whole,
            "{T}: a partial message survived the kill: {} of {} bytes: {:?}...",
            left.len(),
            full.len(),
            String::from_utf8_lossy(&left[..left.len().min(200)])
        );
        eprintln!(
            "{T}: attempt {attempt}: killed={killed}; the killed writer's entry is {} \
             after the next locker; the stale dotlock was broken at once",
            if whole { "whole" } else { "gone" }
        );
        // Everything but the killed writer's entry parses strictly.
        let mut others = BTreeSet::new();
        others.extend((0..3).map(|seq| ("before".to_owned(), seq)));
        others.extend((0..=attempt).map(|seq| ("next".to_owned(), seq)));
        let check = s.dir.join("without-killed");
        let mut without: Vec<u8> = data.clone();
        without.drain(old.len()..old.len() + p);
        std::fs::write(&check, &without).unwrap();
        // Earlier attempts' leftovers are removed from `old` in the same way.
        std::fs::write(&s.mbox, &without).unwrap();
        check_mailbox(T, &check, &others);
        std::fs::remove_file(&check).unwrap();
        if killed {
            landed = true;
            break;
        }
    }
    if !landed {
        eprintln!("{T}: the writer finished before the kill in every attempt");
    }
}

/// The killed writer's entry, with `\0` where its date goes.
fn killed_entry_template(seq: u32) -> Vec<u8> {
    let mut e = format!("From {} ", sender("killed")).into_bytes();
    e.extend_from_slice(&[0; 24]);
    e.push(b'\n');
    let mut body = expected_lines("killed", seq).join("\n");
    body.push_str("\n\n");
    e.extend_from_slice(body.as_bytes());
    e
}

/// `part` is a prefix of `full`, `\0` in `full` matching anything.
fn matches_template(part: &[u8], full: &[u8]) -> bool {
    part.len() <= full.len() && part.iter().zip(full).all(|(a, b)| *b == 0 || a == b)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
