//! The harness of the peer tests (`peers.rs`, `rewriters.rs`): scratch
//! directories, numbered messages, the strict mbox parser, processes
//! under a watchdog, the C peer, and writers running a scenario. Each test
//! file uses a part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::File;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use spoollock::{LockOptions, MailboxLock, MailboxOptions, Order, Wait};

/// Every scenario must end within this; past it, everything is killed
/// and the test fails (a deadlock, or a livelock).
pub const DEADLINE: Duration = Duration::from_secs(120);
/// A writer that has written its share goes on while others have not,
/// up to this many times its share.
pub const EXTRA: u32 = 5;

pub const SPOOLLOCK: &str = env!("CARGO_BIN_EXE_spoollock");

// --- environment ------------------------------------------------------------

pub use spoollock_test_support::Scratch;

/// True if every program is on `$PATH`; otherwise a skip of `test` naming
/// the missing one (a failure in CI).
pub fn have(test: &str, programs: &[&str]) -> bool {
    match programs
        .iter()
        .find(|p| !spoollock_test_support::on_path(p))
    {
        Some(program) => {
            spoollock_test_support::skip_named(
                test,
                format_args!(
                    "`{program}` is not installed (apt-get install liblockfile-bin procmail \
                     lockfile-progs gcc; scripts/test does it as root)"
                ),
            );
            false
        }
        None => true,
    }
}

/// True if root; otherwise a skip of `test` (a failure in CI).
pub fn is_root(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        spoollock_test_support::skip_named(
            test,
            "needs root (a private mount namespace over /var/mail)",
        );
    }
    root
}

// --- messages ---------------------------------------------------------------

pub fn sender(writer: &str) -> String {
    format!("{writer}@peers.test")
}

/// Body lines of message `seq` from `writer`: a few, or about 150 KB for
/// every seventh message.
pub fn body_lines(writer: &str, seq: u32) -> usize {
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
pub fn message(writer: &str, seq: u32) -> Vec<u8> {
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
pub fn expected_lines(writer: &str, seq: u32) -> Vec<String> {
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
pub fn entry(writer: &str, seq: u32) -> Vec<u8> {
    spoollock::mbox::entry(
        &message(writer, seq),
        &sender(writer),
        SystemTime::now(),
        b"",
    )
}

/// The message with its `From ` line, as an MTA hands it to `procmail -m`.
pub fn with_from_line(writer: &str, seq: u32) -> Vec<u8> {
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
pub fn parse_mbox(data: &[u8]) -> Result<Vec<(String, u32)>, String> {
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
        // Headers that mail readers add when they move messages on
        // (movemail writes the IMAP ones) are not part of what was sent.
        let mut in_headers = true;
        let body: Vec<&str> = lines[start + 1..end - 1]
            .iter()
            .copied()
            .filter(|l| {
                in_headers &= !l.is_empty();
                !(in_headers && ADDED_HEADERS.iter().any(|h| l.starts_with(h)))
            })
            .collect();
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

/// Header fields a mail reader may add to a message it moves.
const ADDED_HEADERS: &[&str] = &["X-IMAPbase: ", "X-UID: ", "Status: ", "X-Status: "];

/// The mailbox holds exactly the `expected` messages, each once, whole.
/// On failure a copy of the mailbox is kept for inspection.
pub fn check_mailbox(scenario: &str, mbox: &Path, expected: &BTreeSet<(String, u32)>) {
    check_mailboxes(scenario, &[mbox], expected)
}

/// The mailboxes, together, hold exactly the `expected` messages, each
/// once and whole (each must be a strict mbox of its own; a missing one
/// is empty). On failure a copy of each is kept for inspection.
pub fn check_mailboxes(scenario: &str, mboxes: &[&Path], expected: &BTreeSet<(String, u32)>) {
    let datas: Vec<Vec<u8>> = mboxes
        .iter()
        .map(|m| std::fs::read(m).unwrap_or_default())
        .collect();
    let parsed: Result<Vec<_>, String> = datas
        .iter()
        .zip(mboxes)
        .map(|(data, m)| parse_mbox(data).map_err(|e| format!("{}: {e}", m.display())))
        .collect();
    let verdict = parsed.map(|all| all.concat()).and_then(|found| {
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
            let mut kept = Vec::new();
            for (n, data) in datas.iter().enumerate() {
                let keep = std::env::temp_dir().join(format!(
                    "spoollock-peers-FAILED-{scenario}-{}-{n}.mbox",
                    std::process::id()
                ));
                let _ = std::fs::write(&keep, data);
                kept.push(keep.display().to_string());
            }
            panic!("{scenario}: the mailbox is wrong: {why}\n(mailboxes kept in {kept:?})");
        }
    }
}

// --- processes and the watchdog ---------------------------------------------

/// The processes a scenario started, so that the watchdog can kill them.
#[derive(Default)]
pub struct Procs {
    pub live: Mutex<HashSet<i32>>,
    pub expired: AtomicBool,
}

impl Procs {
    /// Run `cmd` in its own process group, stdin from `stdin`, and
    /// collect its output.
    pub fn output(&self, cmd: &mut Command, stdin: Option<&Path>) -> Result<Output, String> {
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
    pub fn expire(&self) {
        self.expired.store(true, Ordering::SeqCst);
        for &pid in self.live.lock().unwrap().iter() {
            let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
        }
    }
}

/// Runs `f`; if it has not returned after [`DEADLINE`], kills every process
/// in `procs` (so that `f` returns) and fails.
pub fn with_watchdog<T>(scenario: &str, procs: &Arc<Procs>, f: impl FnOnce() -> T) -> T {
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

pub use spoollock_test_support::describe;

// --- the C peer -------------------------------------------------------------

pub const PEER_LOCKS_C: &str = r#"
/* What the C peers share: error exits, a millisecond pause, and the two
 * locks the way many C mail programs take them: a classic POSIX fcntl lock
 * (F_SETLKW: blocking, whole file) and an O_EXCL dotlock holding
 * "<pid>\n", retried every millisecond. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what, const char *arg) {
	fprintf(stderr, "%s: %s %s: %s\n", program_invocation_short_name, what, arg,
		strerror(errno));
	exit(1);
}

static void pause_ms(long ms) {
	struct timespec t = {0, ms * 1000000L};
	nanosleep(&t, NULL);
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
		pause_ms(1);
	}
}
"#;

/// The writer peer, after [`PEER_LOCKS_C`].
pub const PEER_WRITER_C: &str = r#"
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
pub fn peer_writer(test: &str) -> Option<PathBuf> {
    c_program(test, "peer_writer", &[PEER_LOCKS_C, PEER_WRITER_C])
}

/// The C program `name` built with `cc` from the concatenation of
/// `sources`, once per test run (under a private name, then renamed over
/// the last run's).
pub fn c_program(test: &str, name: &'static str, sources: &[&str]) -> Option<PathBuf> {
    static BUILT: Mutex<BTreeMap<&str, Result<PathBuf, String>>> = Mutex::new(BTreeMap::new());
    if !have(test, &["cc"]) {
        return None;
    }
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let exe = built.entry(name).or_insert_with(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let src = dir.join(format!("{name}-{}.c", std::process::id()));
        let tmp = dir.join(format!("{name}-{}", std::process::id()));
        let exe = dir.join(name);
        std::fs::write(&src, sources.concat()).map_err(|e| e.to_string())?;
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
    Some(
        exe.clone()
            .unwrap_or_else(|e| panic!("compiling {name}: {e}")),
    )
}

// --- writers and scenarios --------------------------------------------------

#[derive(Debug)]
pub enum Kind {
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
pub struct Writer {
    pub name: &'static str,
    pub count: u32,
    pub kind: Kind,
}

pub fn w(name: &'static str, count: u32, kind: Kind) -> Writer {
    Writer { name, count, kind }
}

pub struct Scenario {
    pub name: &'static str,
    pub dir: Scratch,
    pub mbox: PathBuf,
    pub procs: Arc<Procs>,
}

impl Scenario {
    pub fn new(name: &'static str) -> Scenario {
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
    pub fn prepare(&self, writer: &str, seqs: std::ops::Range<u32>) {
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

    pub fn file(&self, sub: &str, writer: &str, seq: u32) -> PathBuf {
        self.dir.join(sub).join(format!("{writer}-{seq:04}"))
    }

    pub fn write_rc(&self, name: &str, rc: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, rc).unwrap();
        path
    }

    /// Run all writers at once, then check the mailbox. Each writer writes
    /// at least its `count` messages and, so that the mailbox stays
    /// contended until the end, goes on (a little slower, at most
    /// [`EXTRA`] times as many) while any other is still below its count.
    pub fn run(&self, writers: Vec<Writer>) {
        self.run_beside(writers, |_| {}, &[]);
    }

    /// Like [`run`](Self::run), with `peer` running in a thread of its own
    /// until every writer is done (then `stop` is set; the peer must return
    /// soon after, and within the watchdog's deadline); the messages may
    /// be in the mailbox or in the `moved_out` mailboxes the peer fills.
    pub fn run_beside(
        &self,
        writers: Vec<Writer>,
        peer: impl FnOnce(&AtomicBool) + Send,
        moved_out: &[&Path],
    ) {
        let below = AtomicUsize::new(writers.len());
        let stop = AtomicBool::new(false);
        let results = with_watchdog(self.name, &self.procs, || {
            std::thread::scope(|s| {
                let peer = s.spawn(|| peer(&stop));
                let handles: Vec<_> = writers
                    .iter()
                    .map(|wr| {
                        let below = &below;
                        s.spawn(move || self.write_all(wr, below))
                    })
                    .collect();
                let results = handles
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .collect::<Vec<_>>();
                stop.store(true, Ordering::SeqCst);
                peer.join().unwrap();
                results
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
        let mut mboxes = vec![self.mbox.as_path()];
        mboxes.extend_from_slice(moved_out);
        check_mailboxes(self.name, &mboxes, &expected);
    }

    /// Write `wr`'s messages; how many were written.
    pub fn write_all(&self, wr: &Writer, below: &AtomicUsize) -> Result<u32, String> {
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
            // As `spoollock deliver` does: a reader may remove the mailbox.
            create: Some(0o600),
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

    pub fn write_one(&self, wr: &Writer, seq: u32, opts: &MailboxOptions) -> Result<(), String> {
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
