//! The model bites: two mounts of one backing directory see each other's
//! changes late (attributes, removed files, negative lookups), open()
//! revalidates, the server's clock shows through, faults are injected
//! exactly as configured, and fcntl locks exclude across mounts.
//!
//! Needs root and /dev/fuse; without them each test says why and returns.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nfs_sim::{Fault, Faults, Mount, SimConfig};
use spoollock_test_support::{require_none, Scratch};

struct Setup {
    // Removed (dropped) after `drop` has unmounted `a` and `b`.
    root: Scratch,
    a: Option<Mount>,
    b: Option<Mount>,
}

impl Setup {
    /// Two mounts of one fresh backing directory, or `None` (with the
    /// reason printed) where FUSE cannot be used.
    fn new(a: SimConfig, b: SimConfig) -> Option<Setup> {
        if !require_none(nfs_sim::unavailable_reason()) {
            return None;
        }
        let root = Scratch::with_dirs("nfs-sim-model", &["backing", "a", "b"]);
        let ma = Mount::new(&root.join("backing"), &root.join("a"), a).unwrap();
        let mb = Mount::new(&root.join("backing"), &root.join("b"), b).unwrap();
        Some(Setup {
            root,
            a: Some(ma),
            b: Some(mb),
        })
    }

    fn a(&self) -> &Path {
        self.a.as_ref().unwrap().path()
    }
    fn b(&self) -> &Path {
        self.b.as_ref().unwrap().path()
    }
    fn backing(&self) -> PathBuf {
        self.root.join("backing")
    }
    fn ma(&self) -> &Mount {
        self.a.as_ref().unwrap()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        drop(self.a.take());
        drop(self.b.take());
    }
}

/// Long enough that no test outlives the cache by accident.
fn caching() -> SimConfig {
    SimConfig {
        attr_ttl: Duration::from_secs(600),
        dir_attr_ttl: Duration::from_secs(600),
        entry_ttl: Duration::from_secs(600),
        ..SimConfig::default()
    }
}

#[test]
fn another_mounts_changes_are_seen_late_and_open_revalidates() {
    let Some(s) = Setup::new(caching(), caching()) else {
        return;
    };
    fs::write(s.a().join("f"), b"hello\n").unwrap();
    assert_eq!(fs::metadata(s.b().join("f")).unwrap().len(), 6);

    // A appends: B's cached size is stale...
    let mut f = OpenOptions::new()
        .write(true)
        .open(s.a().join("f"))
        .unwrap();
    f.write_all_at_end(b"world\n");
    drop(f);
    assert_eq!(fs::metadata(s.a().join("f")).unwrap().len(), 12);
    assert_eq!(
        fs::metadata(s.b().join("f")).unwrap().len(),
        6,
        "stale size"
    );
    // ...until B opens the file (close-to-open).
    let mut content = String::new();
    File::open(s.b().join("f"))
        .unwrap()
        .read_to_string(&mut content)
        .unwrap();
    assert_eq!(content, "hello\nworld\n");
    assert_eq!(fs::metadata(s.b().join("f")).unwrap().len(), 12);

    // A removes it: B still sees it by stat...
    fs::remove_file(s.a().join("f")).unwrap();
    assert!(
        fs::metadata(s.b().join("f")).is_ok(),
        "stale positive lookup"
    );
    // ...but opening finds out (ESTALE, the kernel looks again: ENOENT).
    assert_eq!(
        File::open(s.b().join("f")).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(s.b.as_ref().unwrap().stats().stale_opens >= 1);

    // B looks for a name that does not exist; A creates it; B's negative
    // lookup is cached.
    assert!(fs::metadata(s.b().join("g")).is_err());
    fs::write(s.a().join("g"), b"x").unwrap();
    assert!(fs::metadata(s.a().join("g")).is_ok());
    assert_eq!(
        fs::metadata(s.b().join("g")).unwrap_err().kind(),
        ErrorKind::NotFound,
        "stale negative lookup"
    );
    // Exclusive create goes to the server, which knows better.
    let excl = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(s.b().join("g"));
    assert_eq!(excl.unwrap_err().kind(), ErrorKind::AlreadyExists);

    // After the caches expire B sees the truth.
    s.b.as_ref().unwrap().drop_caches();
    assert!(fs::metadata(s.b().join("f")).is_err());
    assert!(fs::metadata(s.b().join("g")).is_ok());
}

#[test]
fn caches_expire_after_their_lifetime() {
    let short = SimConfig {
        attr_ttl: Duration::from_millis(300),
        dir_attr_ttl: Duration::from_millis(300),
        entry_ttl: Duration::from_millis(300),
        ..SimConfig::default()
    };
    let Some(s) = Setup::new(short.clone(), short) else {
        return;
    };
    assert!(fs::metadata(s.b().join("late")).is_err());
    fs::write(s.a().join("late"), b"1").unwrap();
    // Poll: no timing assertion, only that it becomes visible.
    let mut seen = false;
    for _ in 0..100 {
        if fs::metadata(s.b().join("late")).is_ok() {
            seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(seen, "the negative lookup never expired");
}

#[test]
fn without_close_to_open_open_does_not_revalidate() {
    let no_cto = SimConfig {
        close_to_open: false,
        ..caching()
    };
    let Some(s) = Setup::new(caching(), no_cto) else {
        return;
    };
    fs::write(s.a().join("f"), b"12").unwrap();
    assert_eq!(fs::metadata(s.b().join("f")).unwrap().len(), 2);
    fs::write(s.a().join("f"), b"12345").unwrap();
    let opened = File::open(s.b().join("f")).unwrap();
    assert_eq!(opened.metadata().unwrap().len(), 2, "no revalidation");
}

#[test]
fn server_clock_offset_and_granularity_show_through() {
    let behind = SimConfig {
        clock_offset_ms: -600_000,
        granularity: Duration::from_secs(2),
        ..SimConfig::coherent()
    };
    let Some(s) = Setup::new(SimConfig::coherent(), behind) else {
        return;
    };
    fs::write(s.a().join("f"), b"x").unwrap();
    let real = fs::metadata(s.backing().join("f"))
        .unwrap()
        .modified()
        .unwrap();
    let on_a = fs::metadata(s.a().join("f")).unwrap().modified().unwrap();
    let on_b = fs::metadata(s.b().join("f")).unwrap();
    assert_eq!(on_a, real);
    assert_eq!(on_b.mtime() % 2, 0, "2 s granularity");
    assert_eq!(on_b.mtime_nsec(), 0);
    let shifted = real - Duration::from_secs(600);
    let delta = shifted
        .duration_since(on_b.modified().unwrap())
        .unwrap_or_default();
    assert!(delta < Duration::from_secs(2), "shown 600 s behind");

    // A time set through B is taken in B's frame: B reads it back as set,
    // the server stores it 600 s later.
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    File::options()
        .write(true)
        .open(s.b().join("f"))
        .unwrap()
        .set_modified(when)
        .unwrap();
    assert_eq!(
        fs::metadata(s.b().join("f")).unwrap().modified().unwrap(),
        when
    );
    assert_eq!(
        fs::metadata(s.backing().join("f"))
            .unwrap()
            .modified()
            .unwrap(),
        when + Duration::from_secs(600)
    );
}

#[test]
fn lost_replies_are_injected_after_the_operation_happened() {
    let Some(s) = Setup::new(SimConfig::coherent(), SimConfig::coherent()) else {
        return;
    };
    let m = s.ma();
    let a = s.a();
    fs::write(a.join("t"), b"x").unwrap();

    m.configure(|c| c.faults.link_eexist = Fault::on_calls(&[1]));
    let err = fs::hard_link(a.join("t"), a.join("l1")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert!(s.backing().join("l1").exists(), "link was made");
    assert_eq!(fs::metadata(a.join("t")).unwrap().nlink(), 2);

    m.configure(|c| c.faults.link_eio = Fault::on_calls(&[1]));
    let err = fs::hard_link(a.join("t"), a.join("l2")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(nix::libc::EIO));
    assert!(s.backing().join("l2").exists(), "link was made");

    m.configure(|c| c.faults.create_excl_eexist = Fault::on_calls(&[1]));
    let err = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(a.join("c"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert!(s.backing().join("c").exists(), "file was created");

    m.configure(|c| c.faults.unlink_enoent = Fault::on_calls(&[1]));
    let err = fs::remove_file(a.join("l1")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(!s.backing().join("l1").exists(), "unlink happened");

    m.configure(|c| c.faults.rename_enoent = Fault::on_calls(&[1]));
    let err = fs::rename(a.join("l2"), a.join("r")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(s.backing().join("r").exists(), "rename happened");

    // A spurious ESTALE on lookup is absorbed by the kernel's retry.
    m.configure(|c| c.faults.lookup_estale = Fault::probability(1.0));
    assert!(fs::metadata(a.join("r")).is_ok());
    m.configure(|c| c.faults = Faults::default());

    let stats = m.stats();
    assert_eq!(
        (
            stats.link_eexist,
            stats.link_eio,
            stats.create_excl_eexist,
            stats.unlink_enoent,
            stats.rename_enoent
        ),
        (1, 1, 1, 1, 1)
    );
    assert!(stats.lookup_estale >= 1);
}

#[test]
fn fcntl_locks_exclude_across_mounts_and_revalidate() {
    use nix::fcntl::{fcntl, FcntlArg};
    let Some(s) = Setup::new(caching(), caching()) else {
        return;
    };
    fs::write(s.a().join("mbox"), b"1").unwrap();
    let on_b = File::options()
        .read(true)
        .write(true)
        .open(s.b().join("mbox"))
        .unwrap();
    assert_eq!(on_b.metadata().unwrap().len(), 1);

    let lock = |f: &File, typ: i16| {
        let fl = nix::libc::flock {
            l_type: typ,
            l_whence: nix::libc::SEEK_SET as i16,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        fcntl(f, FcntlArg::F_OFD_SETLK(&fl))
    };
    let on_a = File::options()
        .read(true)
        .write(true)
        .open(s.a().join("mbox"))
        .unwrap();
    lock(&on_a, nix::libc::F_WRLCK as i16).unwrap();
    assert!(
        lock(&on_b, nix::libc::F_WRLCK as i16).is_err(),
        "the other mount's lock excludes"
    );
    // B caches the size (the failed lock call itself revalidated).
    assert_eq!(on_b.metadata().unwrap().len(), 1);
    // A appends while holding the lock, then unlocks.
    std::os::unix::fs::FileExt::write_at(&on_a, b"23", 1).unwrap();
    lock(&on_a, nix::libc::F_UNLCK as i16).unwrap();
    // B's cached size is stale; taking the lock revalidates it.
    assert_eq!(on_b.metadata().unwrap().len(), 1, "stale before locking");
    lock(&on_b, nix::libc::F_WRLCK as i16).unwrap();
    assert_eq!(on_b.metadata().unwrap().len(), 3, "fresh after locking");
    // Closing the descriptor releases the lock for A (the kernel sends the
    // release that drops an OFD lock in the background: poll for it).
    drop(on_b);
    let mut taken = false;
    for _ in 0..1000 {
        if lock(&on_a, nix::libc::F_WRLCK as i16).is_ok() {
            taken = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(taken, "closing B's descriptor never released its lock");
}

trait AppendAtEnd {
    fn write_all_at_end(&mut self, data: &[u8]);
}

impl AppendAtEnd for File {
    fn write_all_at_end(&mut self, data: &[u8]) {
        let len = self.metadata().unwrap().len();
        std::os::unix::fs::FileExt::write_all_at(self, data, len).unwrap();
    }
}

#[test]
fn blocking_fcntl_lock_waits_for_the_other_mount() {
    use nix::fcntl::{fcntl, FcntlArg};
    let Some(s) = Setup::new(SimConfig::default(), SimConfig::default()) else {
        return;
    };
    fs::write(s.a().join("mbox"), b"").unwrap();
    let flock = |typ: i16| nix::libc::flock {
        l_type: typ,
        l_whence: nix::libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    let on_a = File::options()
        .write(true)
        .open(s.a().join("mbox"))
        .unwrap();
    fcntl(
        &on_a,
        FcntlArg::F_OFD_SETLK(&flock(nix::libc::F_WRLCK as i16)),
    )
    .unwrap();
    let b_path = s.b().join("mbox");
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let on_b = File::options().write(true).open(b_path).unwrap();
        tx.send(()).unwrap();
        fcntl(
            &on_b,
            FcntlArg::F_OFD_SETLKW(&flock(nix::libc::F_WRLCK as i16)),
        )
        .unwrap();
        std::time::Instant::now()
    });
    rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let unlocked = std::time::Instant::now();
    fcntl(
        &on_a,
        FcntlArg::F_OFD_SETLK(&flock(nix::libc::F_UNLCK as i16)),
    )
    .unwrap();
    let granted = waiter.join().unwrap();
    assert!(
        granted > unlocked,
        "B's blocking lock was granted while A held it"
    );
}
