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

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use spoollock::Order;

use support::*;

// --- the parser ---------------------------------------------------------------

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

/// `spoollock deliver` run as root creates a missing spool mailbox owned
/// by the login it is named after, in the spool's group, mode 0660 (Debian
/// policy); `procmail -d` then delivers to that same file instead of
/// renaming it away as a bogus mailbox (which it does to one its user
/// does not own). A name that is no login is refused and nothing is
/// created; `--owner` and `--mode` choose otherwise.
#[test]
fn root_creates_spool_mailboxes_their_users_own_and_procmail_delivers_after() {
    const T: &str = "root_creates_spool_mailboxes_their_users_own";
    if !have(T, &["procmail", "unshare", "mount", "useradd"]) || !is_root(T) {
        return;
    }
    const USER: &str = "sl-deliver-t";
    ensure_user(USER);
    const SCRIPT: &str = r#"set -u
dir=$1 spoollock=$2 user=$3
mount -t tmpfs -o mode=2775 spoollock-create /var/mail || exit 91
chown root:mail /var/mail || exit 92
"$spoollock" deliver --from root@peers.test "/var/mail/$user" < "$dir/msg/root-0000" || exit 93
stat -c '%U:%G %a' "/var/mail/$user" > "$dir/created"
procmail -d "$user" < "$dir/mboxmsg/procmail-0000" || exit 94
"$spoollock" -q deliver /var/mail/no-such-login-sl < "$dir/msg/root-0000"
echo $? > "$dir/refused"
"$spoollock" deliver --owner "$user:root" --mode 0640 /var/mail/chosen < "$dir/msg/root-0000" || exit 95
stat -c '%U:%G %a' /var/mail/chosen > "$dir/explicit"
ls -A /var/mail > "$dir/spool"
cp "/var/mail/$user" "$dir/result" || exit 96
"#;
    let s = Scenario::new("create");
    s.prepare("root", 0..1);
    s.prepare("procmail", 0..1);
    let out = with_watchdog(s.name, &s.procs, || {
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "--propagation", "private", "sh", "-c", SCRIPT, "sh"])
            .arg(&s.dir.0)
            .arg(SPOOLLOCK)
            .arg(USER);
        s.procs.output(&mut cmd, None)
    })
    .unwrap();
    assert!(out.status.success(), "{T}: {}", describe(&out));
    let read = |name: &str| std::fs::read_to_string(s.dir.join(name)).unwrap();
    assert_eq!(read("created").trim(), format!("{USER}:mail 660"), "{T}");
    assert_eq!(read("refused").trim(), "2", "{T}: a name that is no login");
    assert_eq!(read("explicit").trim(), format!("{USER}:root 640"), "{T}");
    assert_eq!(
        read("spool").split_whitespace().collect::<BTreeSet<_>>(),
        ["chosen", USER].into_iter().collect(),
        "{T}: no bogus-mailbox rename, nothing for the unknown name, no lock left"
    );
    let expected = [("root".to_owned(), 0), ("procmail".to_owned(), 0)]
        .into_iter()
        .collect();
    check_mailbox(T, &s.dir.join("result"), &expected);
}

/// Create the user `name` unless it exists (another test may be creating
/// it at the same moment: retried, bounded).
fn ensure_user(name: &str) {
    for _ in 0..10 {
        let exists = Command::new("id").args(["-u", name]).output();
        if exists.is_ok_and(|o| o.status.success()) {
            return;
        }
        let made = Command::new("useradd")
            .args(["--no-create-home", "--shell", "/bin/sh", name])
            .output();
        if made.is_ok_and(|o| o.status.success()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("cannot create user {name}");
}
