//! The server's fcntl lock modes bite as documented:
//!
//! - `LockMode::Unsupported`: every lock call (set, test, unlock; POSIX
//!   and OFD; blocking or not) fails with `ENOLCK`, and revalidates nothing;
//! - `LockMode::Local` (`nolock`): locks exclude processes and open file
//!   descriptions of the same mount, never those of another mount, and
//!   still revalidate the attribute cache;
//! - `LockMode::Server` (the control): locks exclude across mounts.
//!
//! Other processes are the running test run again as a probe
//! (`spoollock_test_support::child`): it tries one non-blocking POSIX
//! write lock and prints what happened.
//! Every wait is bounded.
//!
//! Needs root and /dev/fuse; without them each test says why and returns.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nfs_sim::{LockMode, Mount, SimConfig};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};
use spoollock_test_support::{child, require_none, Scratch};

const BOUND: Duration = Duration::from_secs(20);

/// A probe process's part: try a POSIX write lock on the file `path` and
/// print `locked`, `busy` or the errno's name.
fn lock_probe(path: &str) {
    let file = File::options().read(true).write(true).open(path).unwrap();
    let answer = match fcntl(&file, FcntlArg::F_SETLK(&whole(nix::libc::F_WRLCK))) {
        Ok(_) => "locked".to_string(),
        Err(Errno::EAGAIN | Errno::EACCES) => "busy".to_string(),
        Err(e) => format!("{e:?}"),
    };
    println!("PROBE {answer}");
}

/// What another process gets when it tries to write-lock `path`.
fn probe(path: &Path) -> String {
    let mut child = child::command(&path.display().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + BOUND;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the lock probe on {} did not finish", path.display());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let output = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    out.lines()
        .find_map(|l| l.split_once("PROBE ").map(|(_, answer)| answer.trim()))
        .unwrap_or_else(|| panic!("no probe answer in {out:?}"))
        .to_string()
}

fn whole(typ: i32) -> nix::libc::flock {
    nix::libc::flock {
        l_type: typ as i16,
        l_whence: nix::libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    }
}

fn ofd_setlk(f: &File, typ: i32) -> nix::Result<()> {
    fcntl(f, FcntlArg::F_OFD_SETLK(&whole(typ))).map(drop)
}

fn posix_setlk(f: &File, typ: i32) -> nix::Result<()> {
    fcntl(f, FcntlArg::F_SETLK(&whole(typ))).map(drop)
}

/// The type of the lock that would conflict with a write lock (`F_UNLCK`
/// if none), by `F_OFD_GETLK`.
fn ofd_conflict(f: &File) -> nix::Result<i32> {
    let mut fl = whole(nix::libc::F_WRLCK);
    fcntl(f, FcntlArg::F_OFD_GETLK(&mut fl))?;
    Ok(fl.l_type as i32)
}

fn rw(path: &Path) -> File {
    File::options().read(true).write(true).open(path).unwrap()
}

/// Two mounts of one backing directory, unmounted (bounded) on drop.
struct Setup {
    // Removed (dropped) after `drop` has unmounted `a` and `b`.
    root: Scratch,
    a: Option<Mount>,
    b: Option<Mount>,
}

impl Setup {
    fn new(a: SimConfig, b: SimConfig) -> Option<Setup> {
        if !require_none(nfs_sim::unavailable_reason()) {
            return None;
        }
        let root = Scratch::with_dirs("nfs-sim-lock-modes", &["backing", "a", "b"]);
        let ma = Mount::new(&root.join("backing"), &root.join("a"), a).unwrap();
        let mb = Mount::new(&root.join("backing"), &root.join("b"), b).unwrap();
        fs::write(root.join("backing/mbox"), b"1").unwrap();
        Some(Setup {
            root,
            a: Some(ma),
            b: Some(mb),
        })
    }

    fn on_a(&self) -> PathBuf {
        self.root.join("a/mbox")
    }

    fn on_b(&self) -> PathBuf {
        self.root.join("b/mbox")
    }

    fn a(&self) -> &Mount {
        self.a.as_ref().unwrap()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        drop(self.a.take());
        drop(self.b.take());
    }
}

fn with_locks(locks: LockMode) -> SimConfig {
    SimConfig {
        locks,
        ..SimConfig::default()
    }
}

/// Attributes cached for ten minutes: only revalidation refreshes them.
fn caching(locks: LockMode) -> SimConfig {
    SimConfig {
        attr_ttl: Duration::from_secs(600),
        dir_attr_ttl: Duration::from_secs(600),
        entry_ttl: Duration::from_secs(600),
        locks,
        ..SimConfig::default()
    }
}

#[test]
fn unsupported_mode_fails_every_lock_call_with_enolck() {
    if let Some(path) = child::role() {
        return lock_probe(&path);
    }
    let Some(s) = Setup::new(caching(LockMode::Unsupported), with_locks(LockMode::Server)) else {
        return;
    };
    let f = rw(&s.on_a());
    assert_eq!(f.metadata().unwrap().len(), 1);
    let (wr, rd, un) = (nix::libc::F_WRLCK, nix::libc::F_RDLCK, nix::libc::F_UNLCK);
    for typ in [wr, rd, un] {
        assert_eq!(ofd_setlk(&f, typ), Err(Errno::ENOLCK), "OFD type {typ}");
        assert_eq!(posix_setlk(&f, typ), Err(Errno::ENOLCK), "POSIX type {typ}");
    }
    assert_eq!(ofd_conflict(&f), Err(Errno::ENOLCK), "F_OFD_GETLK");
    let mut fl = whole(wr);
    assert_eq!(
        fcntl(&f, FcntlArg::F_GETLK(&mut fl)).map(drop),
        Err(Errno::ENOLCK),
        "F_GETLK"
    );
    // The blocking calls fail at once too (bounded: in a thread).
    let path = s.on_a();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let f = rw(&path);
        let ofd = fcntl(&f, FcntlArg::F_OFD_SETLKW(&whole(wr))).map(drop);
        let posix = fcntl(&f, FcntlArg::F_SETLKW(&whole(wr))).map(drop);
        let _ = tx.send((ofd, posix));
    });
    let (ofd, posix) = rx.recv_timeout(BOUND).expect("a blocking lock call hung");
    assert_eq!(ofd, Err(Errno::ENOLCK), "F_OFD_SETLKW");
    assert_eq!(posix, Err(Errno::ENOLCK), "F_SETLKW");
    assert_eq!(probe(&s.on_a()), "ENOLCK", "another process");

    // A failed lock call revalidates nothing: A keeps its cached size
    // while the file grows on the server.
    fs::write(s.root.join("backing/mbox"), b"123").unwrap();
    assert_eq!(ofd_setlk(&f, wr), Err(Errno::ENOLCK));
    assert_eq!(
        f.metadata().unwrap().len(),
        1,
        "revalidated by a failed lock"
    );

    // A mount of the same server whose client has working locks is not
    // affected, and neither is A once the server's locking is back.
    let on_b = rw(&s.on_b());
    ofd_setlk(&on_b, wr).unwrap();
    ofd_setlk(&on_b, un).unwrap();
    s.a().configure(|c| c.locks = LockMode::Server);
    ofd_setlk(&f, wr).unwrap();
    assert_eq!(
        f.metadata().unwrap().len(),
        3,
        "a lock that works revalidates"
    );
    assert_eq!(ofd_conflict(&on_b), Ok(wr), "and excludes the other mount");
}

#[test]
fn local_mode_excludes_within_one_mount_and_not_across_mounts() {
    if let Some(path) = child::role() {
        return lock_probe(&path);
    }
    let Some(s) = Setup::new(with_locks(LockMode::Local), with_locks(LockMode::Local)) else {
        return;
    };
    let wr = nix::libc::F_WRLCK;
    // A POSIX lock of this process on A.
    let held = rw(&s.on_a());
    posix_setlk(&held, wr).unwrap();
    assert_eq!(probe(&s.on_a()), "busy", "a process on the same mount");
    assert_eq!(probe(&s.on_b()), "locked", "a process on the other mount");

    // OFD locks: another open file description on A conflicts, and sees
    // the lock; one on B does neither.
    let second_a = rw(&s.on_a());
    assert_eq!(ofd_conflict(&second_a), Ok(wr));
    assert_eq!(ofd_setlk(&second_a, wr), Err(Errno::EAGAIN));
    let on_b = rw(&s.on_b());
    assert_eq!(ofd_conflict(&on_b), Ok(nix::libc::F_UNLCK));
    ofd_setlk(&on_b, wr).unwrap();
    // ... which in turn excludes processes on B only.
    assert_eq!(probe(&s.on_b()), "busy");
    // Unlocking on A frees A for others; B's lock is still there.
    posix_setlk(&held, nix::libc::F_UNLCK).unwrap();
    assert_eq!(probe(&s.on_a()), "locked");
    assert_eq!(probe(&s.on_b()), "busy");
    // Nothing of this reached the server's file.
    let server = rw(&s.root.join("backing/mbox"));
    ofd_setlk(&server, wr).unwrap();
}

#[test]
fn server_mode_excludes_across_mounts() {
    if let Some(path) = child::role() {
        return lock_probe(&path);
    }
    let Some(s) = Setup::new(with_locks(LockMode::Server), with_locks(LockMode::Server)) else {
        return;
    };
    let held = rw(&s.on_a());
    posix_setlk(&held, nix::libc::F_WRLCK).unwrap();
    assert_eq!(probe(&s.on_a()), "busy");
    assert_eq!(probe(&s.on_b()), "busy", "the control: the server's lock");
    posix_setlk(&held, nix::libc::F_UNLCK).unwrap();
    assert_eq!(probe(&s.on_b()), "locked");
}

#[test]
fn local_mode_locks_still_revalidate() {
    let Some(s) = Setup::new(caching(LockMode::Local), caching(LockMode::Local)) else {
        return;
    };
    let on_a = rw(&s.on_a());
    assert_eq!(on_a.metadata().unwrap().len(), 1);
    let on_b = rw(&s.on_b());
    on_b.write_all_at(b"23", 1).unwrap();
    assert_eq!(on_a.metadata().unwrap().len(), 1, "A's size is cached");
    ofd_setlk(&on_a, nix::libc::F_WRLCK).unwrap();
    assert_eq!(on_a.metadata().unwrap().len(), 3, "fresh after locking");
}
