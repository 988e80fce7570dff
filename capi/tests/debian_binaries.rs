//! Proof with unmodified Debian binaries: lockfile-progs (`lockfile-create`,
//! `-check`, `-touch`, `-remove`, and the setgid `mail-lock`,
//! `mail-touchlock`, `mail-unlock`) and bsd-mailx, on spoollock's
//! `liblockfile.so.1`, in a `/var/mail` that only the mail group may
//! write, with `spoollock-helper` and its audit trail.
//!
//! Everything runs as root inside a private mount namespace
//! (`tests/sh/spool-namespace.sh` sets it up: a tmpfs spool, a private
//! `/dev/log` with rsyslogd, the helper at its built-in path, and our
//! library bind-mounted over the system's liblockfile, which setgid
//! programs cannot be steered away from); the programs run as an
//! unprivileged user. `/proc/PID/maps` of each long-running one shows it
//! mapped our library. Then writers on both libraries, `spoollock
//! deliver` and `dotlockfile` append to one mailbox at once: every message
//! must be there exactly once and whole, within the deadline.
//!
//! Needs root and the Debian packages scripts/test installs; says why it
//! skips otherwise.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

const USER: &str = "sl-capi-u";
const WRITERS: &[&str] = &[
    "c-spoollock",
    "c-liblockfile",
    "mail-lock-spoollock",
    "mail-lock-liblockfile",
    "spoollock-deliver",
    "dotlockfile",
];
const PER_WRITER: u32 = 8;

fn results(s: &Scratch) -> BTreeMap<String, String> {
    std::fs::read_to_string(s.join("results"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn read(s: &Scratch, name: &str) -> String {
    std::fs::read_to_string(s.join(name)).unwrap_or_default()
}

/// Prepare the scratch directory the namespace script reads.
fn prepare(s: &Scratch) {
    for sub in ["bin", "lib", "entry", "msg"] {
        std::fs::create_dir_all(s.join(sub)).unwrap();
    }
    std::fs::copy(our_library(), s.join("lib/liblockfile.so")).unwrap();
    for (name, built) in [
        ("driver", driver(Lib::Liblockfile)),
        (
            "appender",
            build_c("appender", include_str!("c/appender.c"), Lib::Liblockfile),
        ),
        (
            "maillocker",
            build_c(
                "maillocker",
                include_str!("c/maillocker.c"),
                Lib::Liblockfile,
            ),
        ),
    ] {
        std::fs::copy(built, s.join("bin").join(name)).unwrap();
    }
    for w in WRITERS {
        for seq in 0..PER_WRITER {
            std::fs::write(s.join(&format!("entry/{w}-{seq:03}")), entry(w, seq)).unwrap();
            std::fs::write(s.join(&format!("msg/{w}-{seq:03}")), message(w, seq)).unwrap();
        }
    }
}

/// Run the namespace script with these phases; its results.
fn in_namespace(s: &Scratch, phases: &str, deadline: Duration) -> BTreeMap<String, String> {
    let helper = workspace_binary("spoollock-helper", "spoollock-helper");
    let spoollock = workspace_binary("spoollock", "spoollock");
    let script = s.join("spool-namespace.sh");
    std::fs::write(&script, include_str!("sh/spool-namespace.sh")).unwrap();
    let start = Instant::now();
    let mut child = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh"])
        .arg(&script)
        .env("S", &s.0)
        .env("HELPER", helper)
        .env("SPOOLLOCK", spoollock)
        .env("U", USER)
        .env("PHASES", phases)
        .env("BENCH_CYCLES", "200")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > deadline {
            // The namespace's processes are in the group we started.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
            panic!(
                "the namespace script ({phases}) still ran after {deadline:?} (deadlock?): killed; \
                 results so far: {:?}",
                results(s)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
    assert!(status.success(), "namespace script: {status}: {err}");
    let r = results(s);
    assert_eq!(r.get("done").map(String::as_str), Some("1"), "{r:?}\n{err}");
    eprintln!("{phases}: {:?}; stderr: {err}", start.elapsed());
    r
}

fn prerequisites(test: &str) -> bool {
    if !nix::unistd::geteuid().is_root() {
        skip_named(
            test,
            "needs root (a private mount namespace over /var/mail)",
        );
        return false;
    }
    have_c_and_liblockfile(test)
        && have_programs(
            test,
            &[
                "unshare",
                "setpriv",
                "mount",
                "rsyslogd",
                "useradd",
                "ldd",
                "mkfifo",
                "lockfile-create",
                "mail-lock",
                "bsd-mailx",
                "dotlockfile",
            ],
        )
}

/// The mapping of liblockfile in a saved `/proc/PID/maps` excerpt is our
/// library (device and inode), at the system library's path.
fn assert_maps_ours(s: &Scratch, r: &BTreeMap<String, String>, program: &str) {
    assert_eq!(
        r.get(&format!("maps_{program}")).map(String::as_str),
        Some("saved"),
        "{program}: no liblockfile in its maps"
    );
    let maps = read(s, &format!("maps-{program}"));
    let (our_dev, our_ino) = r["our_lib"].split_once(' ').unwrap();
    let our_dev: u64 = our_dev.parse().unwrap();
    for line in maps.lines() {
        // address perms offset dev inode path
        let f: Vec<&str> = line.split_whitespace().collect();
        let (major, minor) = f[3].split_once(':').unwrap();
        let dev = nix::sys::stat::makedev(
            u64::from_str_radix(major, 16).unwrap(),
            u64::from_str_radix(minor, 16).unwrap(),
        );
        assert_eq!(
            (dev, f[4]),
            (our_dev, our_ino),
            "{program} mapped another liblockfile: {line}"
        );
        assert_eq!(f[5], r["system_lib"], "{program}: {line}");
    }
    eprintln!(
        "{program}: maps show spoollock's library at {}",
        r["system_lib"]
    );
}

#[test]
fn debian_programs_run_on_spoollock_s_library_in_a_mail_group_spool() {
    const T: &str = "debian_programs_run_on_spoollock_s_library_in_a_mail_group_spool";
    if !prerequisites(T) {
        return;
    }
    let (uid, _) = ensure_user(USER);
    let s = Scratch::new("debian");
    prepare(&s);
    let r = in_namespace(&s, "progs mailx", DEADLINE * 2);
    let get = |k: &str| r.get(k).map(String::as_str).unwrap_or("missing");

    // lockfile-progs on the spool: through the helper, lock made under
    // the user's uid, group mail (the spool's setgid bit).
    assert_eq!(get("progs_create"), "0");
    let content = read(&s, "progs-lock-content");
    assert!(
        content.starts_with("0\nhost="),
        "not a spoollock lock: {content:?}"
    );
    assert_eq!(
        read(&s, "progs-lock-owner").trim(),
        format!("{USER}:mail 644")
    );
    for k in ["progs_check", "progs_touch", "progs_remove"] {
        assert_eq!(get(k), "0", "{k}");
    }
    assert_eq!(
        get("progs_lock_after"),
        "1",
        "lock left after lockfile-remove"
    );
    // lockfile-check exits 255 for lockfile_check's -1, on either library.
    assert_eq!(
        get("progs_check_after"),
        "255",
        "lockfile-check after removal"
    );
    assert_eq!(get("progs_check_after_real"), "255");
    assert_eq!(
        get("progs_waited_create"),
        "0",
        "lockfile-create after release"
    );
    assert_eq!(get("progs_remove2"), "0");
    let waited: u64 = get("progs_wait_after_release_ms").parse().unwrap();
    eprintln!("lockfile-create took the lock {waited} ms after its release");
    assert!(
        waited < 4000,
        "lockfile-create still waited {waited} ms after the release (liblockfile's 5 s step?)"
    );

    // mail-lock (setgid mail) with MAIL, SPOOLLOCK_HELPER and
    // LD_LIBRARY_PATH pointing elsewhere: the spool's lock, the real helper.
    assert_eq!(get("mail_lock"), "0");
    let content = read(&s, "mail-lock-content");
    assert!(content.starts_with("0\nhost="), "{content:?}");
    assert_eq!(get("mail_touchlock"), "0");
    assert_eq!(get("mail_unlock"), "0");
    assert_eq!(get("mail_lock_after"), "1");
    assert_eq!(get("evil_helper_ran"), "1", "the caller's helper ran");
    assert_eq!(read(&s, "evil-listing").trim(), "helper");

    // maillock() in a setgid program: never $MAIL (liblockfile follows it).
    assert_eq!(read(&s, "maillocker-ours").trim(), "maillock 0");
    assert_eq!(get("maillocker_ours_spool"), "0");
    assert_eq!(get("maillocker_ours_evil"), "1");
    assert_eq!(read(&s, "maillocker-real").trim(), "maillock 0");
    assert_eq!(get("maillocker_real_spool"), "1");
    assert_eq!(get("maillocker_real_evil"), "0");

    // L_PID in the spool: the helper judges a bare pid by age only.
    assert!(
        read(&s, "lpid-ours").contains("create 4 EAGAIN"),
        "{}",
        read(&s, "lpid-ours")
    );
    assert!(
        read(&s, "lpid-real").contains("create 0 -"),
        "{}",
        read(&s, "lpid-real")
    );

    // lockfile_create/touch/check/remove and maillock/touchlock/mailunlock
    // through the helper, also with standard error closed.
    let lines: Vec<String> = read(&s, "driver-spool")
        .lines()
        .skip(1)
        .map(str::to_owned)
        .collect();
    assert_eq!(
        lines,
        [
            "create 0 -",
            "touch 0 -",
            "check 0",
            "remove 0 -",
            "remove 0 -",
            "maillock 0 -",
            "touchlock",
            "mailunlock"
        ]
    );
    let lines: Vec<String> = read(&s, "driver-spool-fork")
        .lines()
        .skip(1)
        .map(str::to_owned)
        .collect();
    assert_eq!(lines, ["create 0 -", "forkremove 0", "remove 0 -"]);
    let lines: Vec<String> = read(&s, "driver-spool-no-stderr")
        .lines()
        .skip(1)
        .map(str::to_owned)
        .collect();
    assert_eq!(lines, ["create 0 -", "remove 0 -"]);
    // `spoollock dotlockfile` there: lock, check, touch, unlock, and -m
    // with a command.
    for k in [
        "sl_dotlockfile_lock",
        "sl_dotlockfile_check",
        "sl_dotlockfile_touch",
        "sl_dotlockfile_unlock",
        "sl_dotlockfile_command",
    ] {
        assert_eq!(get(k), "0", "{k}");
    }
    assert_eq!(
        read(&s, "spool-after-progs").trim(),
        USER,
        "spool not clean"
    );

    for program in [
        "lockfile-touch",
        "lockfile-create",
        "mail-lock",
        "mail-touchlock",
        "bsd-mailx",
    ] {
        assert_maps_ours(&s, &r, program);
    }

    // bsd-mailx: three messages sent (through `spoollock deliver`), one
    // deleted on reading; the mailbox rewritten under the lock.
    for n in 1..=3 {
        assert_eq!(get(&format!("mailx_send_{n}")), "0");
    }
    let sent = read(&s, "mailx-after-send");
    for n in 1..=3 {
        assert!(
            sent.contains(&format!("Subject: message {n}\n"))
                && sent.contains(&format!("body of message {n}\n")),
            "message {n} not delivered: {sent}"
        );
    }
    assert_eq!(get("mailx_read"), "0", "{}", read(&s, "mailx-read-out"));
    let after = read(&s, "mailx-after-read");
    assert!(!after.contains("Subject: message 1\n"), "{after}");
    assert!(after.contains("Subject: message 2\n") && after.contains("Subject: message 3\n"));
    assert_eq!(read(&s, "spool-after-mailx").trim(), USER);

    // The audit trail: the helper granted and released the locks of
    // lockfile-progs, mail-lock and bsd-mailx, for this user.
    let audit = read(&s, "audit.log");
    let mailx_pid = get("mailx_pid");
    let granted = |pid: &str| {
        audit.lines().any(|l| {
            l.contains("op=lock result=granted")
                && l.contains(&format!("uid={uid} "))
                && l.contains(&format!("client_pid={pid} "))
        })
    };
    assert!(
        granted(mailx_pid),
        "no grant to bsd-mailx (pid {mailx_pid}):\n{audit}"
    );
    let grants = audit
        .lines()
        .filter(|l| l.contains("op=lock result=granted"))
        .count();
    let releases = audit
        .lines()
        .filter(|l| l.contains("result=released"))
        .count();
    eprintln!("audit: {grants} grants, {releases} releases");
    assert!(grants >= 8 && releases >= 8, "{audit}");
    assert!(
        !audit.contains("authpriv"),
        "refusals in the audit trail:\n{audit}"
    );
}

#[test]
fn writers_on_both_libraries_deliver_every_message_once_and_whole() {
    const T: &str = "writers_on_both_libraries_deliver_every_message_once_and_whole";
    if !prerequisites(T) {
        return;
    }
    ensure_user(USER);
    let s = Scratch::new("contention");
    prepare(&s);
    let r = in_namespace(&s, "contention", DEADLINE * 3);
    for w in WRITERS {
        assert_eq!(
            r.get(&format!("writer_{w}")).map(String::as_str),
            Some("0"),
            "writer {w} failed: {r:?}"
        );
        eprintln!("{w}: {} ms", r[&format!("writer_{w}_ms")]);
    }
    let mbox = read(&s, "contention-mbox");
    let found = parse_mbox(&mbox).unwrap_or_else(|e| {
        let keep =
            std::env::temp_dir().join(format!("capi-contention-{}.mbox", std::process::id()));
        std::fs::write(&keep, &mbox).unwrap();
        panic!("the mailbox is damaged: {e} (kept in {})", keep.display())
    });
    let mut seen = BTreeMap::new();
    for key in &found {
        *seen.entry(key.clone()).or_insert(0) += 1;
    }
    let expected: BTreeSet<(String, u32)> = WRITERS
        .iter()
        .flat_map(|w| (0..PER_WRITER).map(move |n| (w.to_string(), n)))
        .collect();
    let dups: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    let missing: Vec<_> = expected.iter().filter(|k| !seen.contains_key(*k)).collect();
    assert!(
        dups.is_empty() && missing.is_empty(),
        "duplicated {dups:?}, missing {missing:?}"
    );
    assert_eq!(found.len(), expected.len());
    assert_eq!(
        read(&s, "spool-after-contention").trim(),
        USER,
        "a lock or temporary file was left in the spool"
    );
    eprintln!("{} messages, each once and whole", found.len());
}
