//! Unmounting is bounded: a mount with a copy in another mount namespace,
//! or one that is busy, is torn down within [`BOUND`] (the connection is
//! aborted), and an idle one is unmounted cleanly without an abort.
//!
//! Every wait here is bounded: the unmount runs in a thread and is waited
//! for with `recv_timeout`, probes of the mount likewise, and the process
//! holding the namespace copy is killed and reaped with a deadline.
//!
//! Needs root, /dev/fuse and `unshare(1)`; without them each test says why
//! and returns.

use std::fs;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nfs_sim::{Mount, SimConfig, Teardown};

/// What the tests allow a teardown, aborts included.
const BOUND: Duration = Duration::from_secs(15);

/// A scratch tree of a backing directory and a mount point.
struct Scratch(spoollock_test_support::Scratch);

impl Scratch {
    /// `None` where FUSE cannot be used: a skip, a failure in CI.
    fn new(tag: &str) -> Option<Scratch> {
        if !spoollock_test_support::require_none(nfs_sim::unavailable_reason()) {
            return None;
        }
        Some(Scratch(spoollock_test_support::Scratch::with_dirs(
            &format!("nfs-sim-unmount-{tag}"),
            &["backing", "mnt"],
        )))
    }

    fn mount(&self) -> Mount {
        Mount::new(
            &self.0.join("backing"),
            &self.0.join("mnt"),
            SimConfig::coherent(),
        )
        .unwrap()
    }

    fn mountpoint(&self) -> PathBuf {
        self.0.join("mnt").canonicalize().unwrap()
    }
}

/// Run `f` in a thread and wait at most `bound` for its answer.
fn bounded<T: Send + 'static>(
    bound: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(bound)
        .unwrap_or_else(|_| panic!("{what} did not return within {bound:?}"))
}

/// Unmount in a thread, failing the test if it takes longer than [`BOUND`].
fn unmount_bounded(mount: Mount) -> (std::io::Result<Teardown>, Duration) {
    let started = Instant::now();
    let result = bounded(BOUND, "unmounting", move || mount.unmount());
    (result, started.elapsed())
}

/// Whether this namespace's mount table has a mount at `path`.
fn mounted_here(path: &Path) -> bool {
    let table = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let path = path.to_str().unwrap();
    table.lines().any(|l| l.split(' ').nth(4) == Some(path))
}

/// A process in a mount namespace of its own, created after the mount, so
/// that it holds a copy of it; killed and reaped (bounded) on drop.
struct NamespaceCopy {
    child: Child,
}

impl NamespaceCopy {
    /// `None` (with the reason printed) where `unshare(1)` cannot run.
    fn start(mountpoint: &Path) -> Option<NamespaceCopy> {
        let child = match Command::new("unshare")
            .args(["-m", "--propagation", "private", "sleep", "60"])
            .stdin(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                spoollock_test_support::skip(format_args!("cannot run unshare: {e}"));
                return None;
            }
        };
        let copy = NamespaceCopy { child };
        // unshare execs sleep once the namespace is set up.
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = copy.child.id();
        loop {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "sleep" {
                break;
            }
            assert!(Instant::now() < deadline, "unshare never ran sleep");
            std::thread::sleep(Duration::from_millis(10));
        }
        let ours = fs::read_link("/proc/self/ns/mnt").unwrap();
        let theirs = fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
        assert_ne!(ours, theirs, "unshare -m made no mount namespace");
        let table = fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
        assert!(
            table.contains(mountpoint.to_str().unwrap()),
            "the new namespace has no copy of the mount"
        );
        Some(copy)
    }

    /// `path` (absolute) as the process in the other namespace sees it.
    fn there(&self, path: &Path) -> PathBuf {
        Path::new(&format!("/proc/{}/root", self.child.id())).join(path.strip_prefix("/").unwrap())
    }
}

impl Drop for NamespaceCopy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("the namespace holder {} was not reaped", self.child.id());
    }
}

#[test]
fn a_mount_with_a_copy_in_another_namespace_is_torn_down_within_the_bound() {
    let Some(scratch) = Scratch::new("ns-copy") else {
        return;
    };
    let mountpoint = scratch.mountpoint();
    let mount = scratch.mount();
    let connection = mount.connection();
    fs::write(mountpoint.join("file"), b"served").unwrap();
    let Some(copy) = NamespaceCopy::start(&mountpoint) else {
        return;
    };
    // The copy is served by this process, like the original.
    let in_copy = copy.there(&mountpoint.join("file"));
    let probe = in_copy.clone();
    let content = bounded(BOUND, "reading through the copy", move || fs::read(probe));
    assert_eq!(content.unwrap(), b"served");

    let (result, took) = unmount_bounded(mount);
    let teardown = result.expect("the unmount reports success once the session ended");
    eprintln!("UNMOUNT with a namespace copy: {teardown:?}, returned after {took:?}");
    assert!(took < BOUND);
    assert_eq!(teardown.connection, connection);
    assert!(
        teardown.aborted,
        "the copy kept the connection up, so it had to be aborted: {teardown:?}"
    );
    assert!(
        !mounted_here(&mountpoint),
        "still mounted in this namespace"
    );
    // The copy is dead now: the aborted connection answers ENOTCONN.
    let probe = in_copy.clone();
    let after = bounded(BOUND, "reading through the dead copy", move || {
        fs::read(probe)
    });
    let err = after.expect_err("the aborted copy still served a read");
    assert_eq!(
        err.raw_os_error(),
        Some(nix::libc::ENOTCONN),
        "reading through the aborted copy: {err}"
    );
    drop(copy);
}

#[test]
fn a_busy_mount_is_detached_and_aborted_within_the_bound() {
    let Some(scratch) = Scratch::new("busy") else {
        return;
    };
    let mountpoint = scratch.mountpoint();
    let mount = scratch.mount();
    fs::write(mountpoint.join("file"), b"busy").unwrap();
    // An open file keeps the mount busy, and a detached mount alive.
    let open = fs::File::open(mountpoint.join("file")).unwrap();
    let (result, took) = unmount_bounded(mount);
    let teardown = result.expect("the unmount reports success once the session ended");
    eprintln!("UNMOUNT of a busy mount: {teardown:?}, returned after {took:?}");
    assert!(took < BOUND);
    assert!(teardown.detached, "a busy mount is detached: {teardown:?}");
    assert!(teardown.aborted, "and then aborted: {teardown:?}");
    assert!(!mounted_here(&mountpoint));
    let read = bounded(BOUND, "reading an aborted file", move || {
        let mut buf = [0u8; 4];
        open.read_at(&mut buf, 0)
    });
    let err = read.expect_err("an aborted connection still served a read");
    assert_eq!(err.raw_os_error(), Some(nix::libc::ENOTCONN), "{err}");
}

#[test]
fn an_idle_mount_is_unmounted_without_an_abort() {
    let Some(scratch) = Scratch::new("idle") else {
        return;
    };
    let mountpoint = scratch.mountpoint();
    let mount = scratch.mount();
    fs::write(mountpoint.join("file"), b"idle").unwrap();
    let mut content = String::new();
    fs::File::open(mountpoint.join("file"))
        .unwrap()
        .read_to_string(&mut content)
        .unwrap();
    assert_eq!(content, "idle");
    let (result, took) = unmount_bounded(mount);
    let teardown = result.unwrap();
    eprintln!("UNMOUNT of an idle mount: {teardown:?}, returned after {took:?}");
    assert!(!teardown.detached && !teardown.aborted, "{teardown:?}");
    assert!(!mounted_here(&mountpoint));
    // What was written went to the backing directory.
    assert_eq!(
        fs::read_to_string(scratch.0.join("backing/file")).unwrap(),
        "idle"
    );
    assert_eq!(
        fs::metadata(mountpoint.join("file"))
            .map_err(|e| e.kind())
            .err(),
        Some(ErrorKind::NotFound)
    );
}

#[test]
fn dropping_a_mount_with_a_namespace_copy_returns_within_the_bound() {
    let Some(scratch) = Scratch::new("drop") else {
        return;
    };
    let mountpoint = scratch.mountpoint();
    let mount = scratch.mount();
    let Some(copy) = NamespaceCopy::start(&mountpoint) else {
        return;
    };
    let started = Instant::now();
    bounded(BOUND, "dropping the mount", move || drop(mount));
    eprintln!(
        "DROP with a namespace copy returned after {:?}",
        started.elapsed()
    );
    assert!(!mounted_here(&mountpoint));
    drop(copy);
}
