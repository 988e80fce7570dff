//! spoollock against programs that rewrite or remove the mailbox while
//! spoollock waits for it: mail readers, not only mail writers.
//!
//! mailutils' `movemail` empties a mailbox by writing a new file and
//! `rename()`ing it over the old one, holding only the dotlock; mutt with
//! `save_empty=no` removes an emptied mailbox; MUAs expunge through a
//! temporary file. A deliverer that opened the mailbox before it waited
//! would append to a file without a name and lose the message while
//! reporting success. Here every message whose delivery succeeded must be
//! in the final mailbox or in what the reader moved out, once and whole.
//!
//! The readers: `movemail` itself, and `peer_rewriter` (C, below), which
//! moves everything out and then renames an empty file over the mailbox or
//! removes it, under the dotlock, the fcntl lock or both, in either order.
//!
//! Every scenario runs under the harness's watchdog (see `support`): a
//! hang kills everything and fails.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use spoollock::{Event, LockOptions, MailboxLock, MailboxOptions, Order, Wait};
use support::*;

/// The reader peer, after the shared [`PEER_LOCKS_C`].
const PEER_REWRITER_C: &str = r#"
/* A mail reader that empties the mailbox under its locks, as movemail and
 * MUAs do: it appends everything in MBOX to OUT, then renames an empty new
 * file over MBOX (rename) or removes MBOX (rm).
 *
 *   peer_rewriter rename|rm LOCKS MBOX OUT STOP [GO]
 *
 * LOCKS: dotlock, fcntl, dotlock,fcntl or fcntl,dotlock (an O_EXCL dotlock
 * holding "<pid>\n"; a classic POSIX fcntl lock, F_SETLKW). Without GO it
 * goes round until the file STOP exists, then does one last round; each
 * round holds the locks a few milliseconds after the change, so writers
 * queue up across it. With GO it does one round: it takes the locks,
 * creates STOP to say so, waits (at most 60 s) until GO exists, then acts
 * and releases. */
static void copy_out(int fd, const char *mbox, const char *out) {
	struct stat st;
	if (fstat(fd, &st) < 0)
		die("fstat", mbox);
	char *buf = malloc(st.st_size + 1);
	if (!buf)
		die("malloc", mbox);
	off_t got = 0;
	while (got < st.st_size) {
		ssize_t r = pread(fd, buf + got, st.st_size - got, got);
		if (r <= 0)
			die("read", mbox);
		got += r;
	}
	int ofd = open(out, O_WRONLY | O_APPEND | O_CREAT, 0600);
	if (ofd < 0)
		die("open", out);
	for (off_t done = 0; done < got;) {
		ssize_t w = write(ofd, buf + done, got - done);
		if (w < 0)
			die("write", out);
		done += w;
	}
	if (fsync(ofd) < 0)
		die("fsync", out);
	close(ofd);
	free(buf);
}

int main(int argc, char **argv) {
	if (argc < 6) {
		fprintf(stderr, "usage: peer_rewriter rename|rm LOCKS MBOX OUT STOP [GO]\n");
		return 2;
	}
	const char *action = argv[1], *locks = argv[2], *mbox = argv[3];
	const char *out = argv[4], *stop = argv[5], *go = argc > 6 ? argv[6] : NULL;
	int use_fcntl = strstr(locks, "fcntl") != NULL;
	int use_dot = strstr(locks, "dotlock") != NULL;
	int dot_first = strncmp(locks, "dotlock", 7) == 0;
	int rename_over = strcmp(action, "rename") == 0;
	char lock[4096], fresh[4096];
	snprintf(lock, sizeof lock, "%s.lock", mbox);
	snprintf(fresh, sizeof fresh, "%s.new", mbox);
	for (int last = 0; !last;) {
		last = go != NULL || access(stop, F_OK) == 0;
		int fd = open(mbox, O_RDWR);
		if (fd < 0) {
			if (errno != ENOENT)
				die("open", mbox);
			if (go)
				die("open", mbox);
			pause_ms(1);
			continue;
		}
		if (use_dot && dot_first)
			dotlock(lock);
		if (use_fcntl)
			fcntl_lock(fd, F_WRLCK, mbox);
		if (use_dot && !dot_first)
			dotlock(lock);
		if (go) {
			int s = open(stop, O_WRONLY | O_CREAT, 0600);
			if (s < 0)
				die("open", stop);
			close(s);
			for (int i = 0; access(go, F_OK) != 0; i++) {
				if (i > 60000)
					die("waiting for", go);
				pause_ms(1);
			}
		}
		copy_out(fd, mbox, out);
		if (rename_over) {
			int nfd = open(fresh, O_WRONLY | O_CREAT | O_TRUNC, 0600);
			if (nfd < 0)
				die("open", fresh);
			close(nfd);
			if (rename(fresh, mbox) < 0)
				die("rename", mbox);
		} else if (unlink(mbox) < 0) {
			die("unlink", mbox);
		}
		pause_ms(3);
		if (use_dot && !dot_first && unlink(lock) < 0)
			die("unlink", lock);
		if (use_fcntl)
			fcntl_lock(fd, F_UNLCK, mbox);
		if (use_dot && dot_first && unlink(lock) < 0)
			die("unlink", lock);
		close(fd);
		pause_ms(2);
	}
	return 0;
}
"#;

fn peer_rewriter(test: &str) -> Option<PathBuf> {
    c_program(test, "peer_rewriter", &[PEER_LOCKS_C, PEER_REWRITER_C])
}

/// Wait (bounded) until `path` exists.
fn wait_for_file(path: &Path, within: Duration) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < within,
            "{} did not appear within {within:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn success(what: &str, out: &Output) {
    assert!(out.status.success(), "{what}: {}", describe(out));
}

// --- loops: readers emptying the mailbox while writers deliver ---------------

/// Writers that share at least one lock with a reader taking `locks`, and
/// with each other (so not a dotlock-only one beside an fcntl-only one).
fn writers_for(locks: &str, n: u32) -> Vec<Writer> {
    let mut writers = vec![
        w("deliver", n, Kind::Deliver(&[])),
        w(
            "deliver-df",
            n,
            Kind::Deliver(&["--order", "dotlock,fcntl"]),
        ),
        w("lib-fd", n, Kind::Library(Order::FcntlThenDotlock)),
        w("lib-df", n, Kind::Library(Order::DotlockThenFcntl)),
    ];
    if locks.contains("dotlock") {
        writers.push(w("deliver-dot", n, Kind::Deliver(&["--dotlock-only"])));
    } else {
        writers.push(w("deliver-fcntl", n, Kind::Deliver(&["--fcntl-only"])));
    }
    writers
}

/// `peer_rewriter ACTION LOCKS` in rounds against every kind of writer.
fn rewriter_loop(test: &'static str, action: &str, locks: &str) {
    let Some(exe) = peer_rewriter(test) else {
        return;
    };
    let s = Scenario::new(test);
    let out = s.dir.join("moved-out");
    let stop = s.dir.join("stop");
    s.run_beside(
        writers_for(locks, 16),
        |done: &AtomicBool| {
            // The reader goes round until `stop` exists: made once the
            // writers are done (or the watchdog fired).
            std::thread::scope(|t| {
                t.spawn(|| {
                    while !done.load(Ordering::SeqCst) && !s.procs.expired.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    std::fs::write(&stop, b"").unwrap();
                });
                let mut cmd = Command::new(&exe);
                cmd.args([action, locks]).arg(&s.mbox).arg(&out).arg(&stop);
                let result = s.procs.output(&mut cmd, None);
                success(test, &result.expect("running peer_rewriter"));
            });
        },
        &[&out],
    );
}

#[test]
fn movemail_loop_loses_no_message() {
    const T: &str = "movemail_loop_loses_no_message";
    if !have(T, &["movemail"]) {
        return;
    }
    let s = Scenario::new(T);
    let out = s.dir.join("moved-out");
    let runs = AtomicUsize::new(0);
    s.run_beside(
        writers_for("dotlock", 40),
        |stop: &AtomicBool| loop {
            let last = stop.load(Ordering::SeqCst);
            let mut cmd = Command::new("movemail");
            cmd.arg(&s.mbox).arg(&out);
            let result = s.procs.output(&mut cmd, None).expect("running movemail");
            success("movemail", &result);
            runs.fetch_add(1, Ordering::SeqCst);
            if last {
                return;
            }
        },
        &[&out],
    );
    eprintln!("{T}: movemail ran {} times", runs.load(Ordering::SeqCst));
    assert!(runs.load(Ordering::SeqCst) > 1);
}

#[test]
fn rename_over_reader_dotlock_loses_no_message() {
    rewriter_loop("rename_over_reader_dotlock", "rename", "dotlock");
}

#[test]
fn rename_over_reader_fcntl_loses_no_message() {
    rewriter_loop("rename_over_reader_fcntl", "rename", "fcntl");
}

#[test]
fn rename_over_reader_both_orders_lose_no_message() {
    rewriter_loop(
        "rename_over_reader_dotlock_fcntl",
        "rename",
        "dotlock,fcntl",
    );
    rewriter_loop(
        "rename_over_reader_fcntl_dotlock",
        "rename",
        "fcntl,dotlock",
    );
}

#[test]
fn removing_reader_dotlock_loses_no_message() {
    rewriter_loop("removing_reader_dotlock", "rm", "dotlock");
}

#[test]
fn removing_reader_fcntl_loses_no_message() {
    rewriter_loop("removing_reader_fcntl", "rm", "fcntl");
}

#[test]
fn removing_reader_both_orders_lose_no_message() {
    rewriter_loop("removing_reader_dotlock_fcntl", "rm", "dotlock,fcntl");
    rewriter_loop("removing_reader_fcntl_dotlock", "rm", "fcntl,dotlock");
}

// --- one writer waiting across one change, every combination ------------------

/// How the single waiting writer delivers.
#[derive(Debug, Clone, Copy)]
enum Waiter {
    /// `spoollock deliver -v` with these flags.
    Deliver(&'static [&'static str]),
    /// [`MailboxLock::append`] in this process.
    Library(Order),
}

/// The writers that share a lock with a reader taking `locks`.
fn waiters_for(locks: &str) -> Vec<Waiter> {
    let mut waiters = vec![
        Waiter::Deliver(&[]),
        Waiter::Deliver(&["--order", "dotlock,fcntl"]),
        Waiter::Library(Order::FcntlThenDotlock),
        Waiter::Library(Order::DotlockThenFcntl),
    ];
    if locks.contains("dotlock") {
        waiters.push(Waiter::Deliver(&["--dotlock-only"]));
    }
    if !locks.contains("dotlock") {
        waiters.push(Waiter::Deliver(&["--fcntl-only"]));
    }
    waiters
}

/// A reader holding `locks` empties the mailbox (`action`) while `waiter`
/// waits for it: the message must be in the new mailbox (created again
/// after `rm`), the old one in what was moved out, and the waiter must
/// have seen the change.
fn waits_across(test: &'static str, exe: &Path, action: &str, locks: &str, waiter: Waiter) {
    let s = Scenario::new(test);
    let out = s.dir.join("moved-out");
    let (held, go) = (s.dir.join("held"), s.dir.join("go"));
    std::fs::write(&s.mbox, entry("old", 0)).unwrap();
    s.prepare("waiter", 0..1);
    let case = format!("{test}: {action} under {locks}, writer {waiter:?}");
    let noticed = with_watchdog(s.name, &s.procs, || {
        std::thread::scope(|t| {
            let reader = t.spawn(|| {
                let mut cmd = Command::new(exe);
                cmd.args([action, locks])
                    .arg(&s.mbox)
                    .arg(&out)
                    .arg(&held)
                    .arg(&go);
                s.procs.output(&mut cmd, None)
            });
            wait_for_file(&held, Duration::from_secs(30));
            let writer = t.spawn(|| deliver_one(&s, waiter));
            // Long enough for the writer to open the mailbox and start
            // waiting; if it were late, it would not see the change and
            // the check below fails (it cannot pass by accident).
            std::thread::sleep(Duration::from_millis(500));
            std::fs::write(&go, b"").unwrap();
            success(
                &case,
                &reader.join().unwrap().expect("running peer_rewriter"),
            );
            writer.join().unwrap()
        })
    });
    let noticed = noticed.unwrap_or_else(|e| panic!("{case}: not delivered: {e}"));
    assert!(noticed, "{case}: the writer did not see the mailbox change");
    let only = |writer: &str| [(writer.to_owned(), 0)].into_iter().collect();
    check_mailbox(&case, &s.mbox, &only("waiter"));
    check_mailbox(&case, &out, &only("old"));
}

/// Deliver message 0 of "waiter"; whether the writer reported that the
/// mailbox was replaced or removed under it.
fn deliver_one(s: &Scenario, waiter: Waiter) -> Result<bool, String> {
    match waiter {
        Waiter::Deliver(flags) => {
            let mut cmd = Command::new(SPOOLLOCK);
            cmd.args(["deliver", "-v", "--timeout", "60s", "--from"])
                .arg(sender("waiter"))
                .args(flags)
                .arg(&s.mbox);
            let out = s
                .procs
                .output(&mut cmd, Some(&s.file("msg", "waiter", 0)))?;
            if !out.status.success() {
                return Err(describe(&out));
            }
            Ok(String::from_utf8_lossy(&out.stderr).contains("replaced or removed"))
        }
        Waiter::Library(order) => {
            let replaced = Arc::new(AtomicUsize::new(0));
            let seen = Arc::clone(&replaced);
            let opts = MailboxOptions {
                lock: LockOptions {
                    wait: Wait::timeout(Duration::from_secs(60)),
                    observer: Some(Arc::new(move |event: &Event| {
                        if matches!(event, Event::MailboxReplaced) {
                            seen.fetch_add(1, Ordering::SeqCst);
                        }
                    })),
                    ..LockOptions::default()
                },
                order,
                create: Some(0o600),
                ..MailboxOptions::default()
            };
            let mut mailbox = MailboxLock::open(&s.mbox, &opts).map_err(|e| e.to_string())?;
            mailbox
                .append(&message("waiter", 0), &sender("waiter"))
                .map_err(|e| e.to_string())?;
            mailbox.release().map_err(|e| e.to_string())?;
            Ok(replaced.load(Ordering::SeqCst) > 0)
        }
    }
}

fn waits_across_every_writer(test: &'static str, locks: &str) {
    let Some(exe) = peer_rewriter(test) else {
        return;
    };
    for action in ["rename", "rm"] {
        for waiter in waiters_for(locks) {
            waits_across(test, &exe, action, locks, waiter);
        }
    }
}

#[test]
fn a_writer_waiting_on_a_dotlock_holder_follows_the_new_mailbox() {
    waits_across_every_writer("waits_across_dotlock", "dotlock");
}

#[test]
fn a_writer_waiting_on_an_fcntl_holder_follows_the_new_mailbox() {
    waits_across_every_writer("waits_across_fcntl", "fcntl");
}

#[test]
fn a_writer_waiting_on_a_holder_of_both_follows_the_new_mailbox() {
    waits_across_every_writer("waits_across_dotlock_fcntl", "dotlock,fcntl");
    waits_across_every_writer("waits_across_fcntl_dotlock", "fcntl,dotlock");
}

/// mailutils' own `dotlock` as the holder, as in the report: the message
/// of a `spoollock deliver` that waited across `cp` + `mv` over the
/// mailbox is in the new mailbox.
#[test]
fn deliver_waiting_on_mailutils_dotlock_follows_a_rename_over() {
    const T: &str = "deliver_waiting_on_mailutils_dotlock";
    if !have(T, &["dotlock"]) {
        return;
    }
    let s = Scenario::new(T);
    s.prepare("waiter", 0..1);
    let dotlock = |args: &[&str]| {
        let mut cmd = Command::new("dotlock");
        cmd.args(args).arg(&s.mbox);
        success("dotlock", &s.procs.output(&mut cmd, None).unwrap());
    };
    let delivered = with_watchdog(s.name, &s.procs, || {
        dotlock(&[]);
        std::thread::scope(|t| {
            let writer = t.spawn(|| deliver_one(&s, Waiter::Deliver(&[])));
            std::thread::sleep(Duration::from_millis(500));
            let new = s.dir.join("mbox.new");
            std::fs::copy(&s.mbox, &new).unwrap();
            std::fs::rename(&new, &s.mbox).unwrap();
            dotlock(&["-u"]);
            writer.join().unwrap()
        })
    });
    assert_eq!(delivered, Ok(true), "{T}");
    let only = [("waiter".to_owned(), 0)].into_iter().collect();
    check_mailbox(T, &s.mbox, &only);
}

// --- `spoollock run` ------------------------------------------------------------

/// `spoollock run PATH` waiting across a rename over PATH: while the
/// command runs, spoollock's fcntl lock is on the file PATH names then,
/// as `/proc/locks` shows (an OFD lock on that inode).
fn run_locks_the_current_file(test: &'static str, locks: &str) {
    let Some(exe) = peer_rewriter(test) else {
        return;
    };
    let s = Scenario::new(test);
    let (held, go) = (s.dir.join("held"), s.dir.join("go"));
    let old_ino = std::fs::metadata(&s.mbox).unwrap().ino();
    let out = with_watchdog(s.name, &s.procs, || {
        std::thread::scope(|t| {
            let reader = t.spawn(|| {
                let mut cmd = Command::new(&exe);
                cmd.args(["rename", locks])
                    .arg(&s.mbox)
                    .arg(s.dir.join("moved-out"))
                    .arg(&held)
                    .arg(&go);
                s.procs.output(&mut cmd, None)
            });
            wait_for_file(&held, Duration::from_secs(30));
            let run = t.spawn(|| {
                let mut cmd = Command::new(SPOOLLOCK);
                cmd.args(["run", "--timeout", "60s"]).arg(&s.mbox).args([
                    "--",
                    "sh",
                    "-c",
                    "stat -c %i \"$1\" && cat /proc/locks",
                    "sh",
                ]);
                cmd.arg(&s.mbox);
                s.procs.output(&mut cmd, None)
            });
            std::thread::sleep(Duration::from_millis(500));
            std::fs::write(&go, b"").unwrap();
            success(test, &reader.join().unwrap().unwrap());
            run.join().unwrap().unwrap()
        })
    });
    success(test, &out);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let new_ino: u64 = lines.next().unwrap().trim().parse().unwrap();
    assert_ne!(
        new_ino, old_ino,
        "{test}: the reader did not replace the mailbox"
    );
    let on = |ino: u64| {
        text.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&"OFDLCK")
                && f.get(5).is_some_and(|id| id.ends_with(&format!(":{ino}")))
        })
    };
    assert!(
        on(new_ino),
        "{test}: no OFD lock on the current mailbox (inode {new_ino}) while the command ran:\n{text}"
    );
    assert!(
        !on(old_ino),
        "{test}: an OFD lock is still on the replaced mailbox (inode {old_ino}):\n{text}"
    );
}

#[test]
fn run_holds_its_fcntl_lock_on_the_current_mailbox() {
    run_locks_the_current_file("run_current_dotlock", "dotlock");
    run_locks_the_current_file("run_current_fcntl", "fcntl");
}
