//! Mounting a FUSE connection, and taking it down again within a bound.
//!
//! nfs-sim mounts `/dev/fuse` itself (mount(2); it runs as root) and lets
//! fuser only serve the connection, so that nothing but this module's teardown
//! ever unmounts: fuser's own `umount_and_join` joins the session threads
//! without a bound, and those threads end only when the kernel tears the
//! connection down, which it does when the *last* copy of the mount is
//! gone. A mount namespace created while the mount existed (a container,
//! `unshare -m`, a test elsewhere on the machine) holds such a copy, and
//! then the join waits forever. Teardown instead:
//!
//! 1. unmounts the mount point if this mount is still the one on top of it
//!    there (`/proc/self/mountinfo`), and if it is busy detaches it lazily
//!    (`MNT_DETACH`);
//! 2. waits up to [`GRACE`] for the session threads to end;
//! 3. if they have not, aborts the connection through the FUSE control
//!    file system (`/sys/fs/fuse/connections/N/abort`, where `N` is the
//!    mount's device number; `fusectl` is mounted there first if it is not,
//!    and left mounted, as systemd does at boot): every request of every
//!    copy fails from then on (`ENOTCONN`) and the threads end;
//! 4. waits up to [`AFTER_ABORT`] more, and if the threads still run,
//!    leaves them running and says so.
//!
//! No step waits without a bound, and no step touches the mount through
//! the file system it serves (which may be the thing that is stuck).

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{stat, Mode, SFlag};

/// How long the session threads get to end after the unmount before the
/// connection is aborted.
pub const GRACE: Duration = Duration::from_secs(3);
/// How long they get after the abort before they are given up on.
pub const AFTER_ABORT: Duration = Duration::from_secs(5);
/// Where the FUSE control file system lives.
const FUSECTL: &str = "/sys/fs/fuse/connections";
/// The file system type shown in mount tables.
const FSTYPE: &str = "fuse.nfs-sim";

/// How an unmount went: what [`crate::Mount::unmount`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Teardown {
    /// The FUSE connection number (`/sys/fs/fuse/connections/N`).
    pub connection: u64,
    /// The mount was busy (open files, working directories) and was
    /// detached lazily instead of unmounted.
    pub detached: bool,
    /// The session had not ended [`GRACE`] after the unmount (a copy of the
    /// mount lived on elsewhere, or a detached mount was still in use), so
    /// the connection was aborted.
    pub aborted: bool,
    /// From the start of the teardown to the end of the session threads.
    pub elapsed: Duration,
}

/// A mounted FUSE connection served by a thread of this process.
#[derive(Debug)]
pub(crate) struct Attached {
    /// The mount point, canonical (as the mount table shows it).
    mountpoint: PathBuf,
    /// The mount's device number, `(major, minor)`.
    dev: (u64, u64),
    /// The session; `None` once torn down.
    session: Option<JoinHandle<io::Result<()>>>,
}

/// Mount `fs` at `mountpoint` and start serving it.
pub(crate) fn attach<FS: fuser::Filesystem + Send + 'static>(
    fs: FS,
    source: &str,
    mountpoint: &Path,
    allow_other: bool,
    threads: usize,
) -> io::Result<Attached> {
    let mountpoint = mountpoint.canonicalize()?;
    let dev_fuse = open("/dev/fuse", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())?;
    let root_mode = stat(&mountpoint)?.st_mode & SFlag::S_IFMT.bits();
    let mut options = format!(
        "fd={},rootmode={root_mode:o},user_id={},group_id={},default_permissions",
        dev_fuse.as_raw_fd(),
        nix::unistd::getuid(),
        nix::unistd::getgid(),
    );
    if allow_other {
        options.push_str(",allow_other");
    }
    mount(
        Some(source),
        &mountpoint,
        Some(FSTYPE),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOATIME,
        Some(options.as_str()),
    )
    .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("mount: {e}")))?;
    let Some(dev) = top_mount(&mountpoint)?.filter(|m| m.fstype == FSTYPE) else {
        let _ = umount2(&mountpoint, MntFlags::MNT_DETACH);
        return Err(io::Error::other("the new mount is not in the mount table"));
    };
    let mut attached = Attached {
        mountpoint,
        dev: dev.dev,
        session: None,
    };
    let acl = if allow_other {
        fuser::SessionACL::All
    } else {
        fuser::SessionACL::Owner
    };
    let mut config = fuser::Config::default();
    config.n_threads = Some(threads.max(1));
    // The kernel queued INIT when it mounted: the handshake reads it now.
    let session = match fuser::Session::from_fd(fs, dev_fuse, acl, config) {
        Ok(session) => session,
        Err(e) => {
            let _ = umount2(&attached.mountpoint, MntFlags::MNT_DETACH);
            return Err(e);
        }
    };
    let thread = std::thread::Builder::new()
        .name("nfs-sim".into())
        .spawn(move || session.run());
    match thread {
        Ok(thread) => attached.session = Some(thread),
        Err(e) => {
            // The session went down with the closure: its connection is
            // closed, the mount dead. Remove it.
            let _ = umount2(&attached.mountpoint, MntFlags::MNT_DETACH);
            return Err(e);
        }
    }
    Ok(attached)
}

impl Attached {
    /// The FUSE connection number: the kernel's `dev_t` of the mount.
    pub fn connection(&self) -> u64 {
        (self.dev.0 << 20) | self.dev.1
    }

    /// Unmount and end the session within the bounds above (see the
    /// module documentation). `Ok` once the session threads have ended;
    /// an error if they had to be left running or the session failed.
    pub fn teardown(&mut self) -> io::Result<Teardown> {
        let started = Instant::now();
        let connection = self.connection();
        let mut report = Teardown {
            connection,
            detached: false,
            aborted: false,
            elapsed: Duration::ZERO,
        };
        let Some(session) = self.session.take() else {
            return Ok(report);
        };
        let where_ = self.mountpoint.display().to_string();
        let mut trouble: Vec<String> = Vec::new();
        match self.unmount() {
            Ok(detached) => report.detached = detached,
            Err(e) => trouble.push(format!("unmounting: {e}")),
        }
        if !wait_for(&session, GRACE) {
            eprintln!(
                "nfs-sim: {where_}: session still running {GRACE:?} after unmounting \
                 (a copy of the mount in another mount namespace?); aborting FUSE connection \
                 {connection}"
            );
            report.aborted = true;
            if let Err(e) = abort_connection(connection) {
                trouble.push(format!("aborting connection {connection}: {e}"));
            }
            if !wait_for(&session, AFTER_ABORT) {
                trouble.push(format!(
                    "session threads still running {AFTER_ABORT:?} after the abort; left running"
                ));
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("nfs-sim: {where_}: {}", trouble.join("; ")),
                ));
            }
            // The abort leaves a dead mount where unmounting failed.
            if let Err(e) = self.unmount() {
                trouble.push(format!("unmounting after the abort: {e}"));
            }
        }
        report.elapsed = started.elapsed();
        let ended = session
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the session thread panicked")));
        if let Err(e) = ended {
            trouble.push(format!("session: {e}"));
        }
        if trouble.is_empty() {
            Ok(report)
        } else {
            Err(io::Error::other(format!(
                "nfs-sim: {where_}: {}",
                trouble.join("; ")
            )))
        }
    }

    /// Unmount the mount point if this mount is on top there; detach it
    /// lazily if it is busy. `Ok(true)` if it was detached.
    fn unmount(&self) -> io::Result<bool> {
        let ours = top_mount(&self.mountpoint)?.is_some_and(|m| m.dev == self.dev);
        if !ours {
            return Ok(false);
        }
        match umount2(&self.mountpoint, MntFlags::empty()) {
            Ok(()) => Ok(false),
            Err(Errno::EBUSY) => {
                umount2(&self.mountpoint, MntFlags::MNT_DETACH)?;
                Ok(true)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Wait up to `bound` for `thread` to end; true if it did.
fn wait_for<T>(thread: &JoinHandle<T>, bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    while !thread.is_finished() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// Abort FUSE connection `n` through the control file system, mounting
/// it first if it is not mounted.
fn abort_connection(n: u64) -> io::Result<()> {
    let abort = Path::new(FUSECTL).join(n.to_string()).join("abort");
    if !abort.exists() {
        let mounted = mount_table()?
            .iter()
            .any(|m| m.mountpoint == Path::new(FUSECTL) && m.fstype == "fusectl");
        if !mounted {
            mount(
                Some("fusectl"),
                FUSECTL,
                Some("fusectl"),
                MsFlags::empty(),
                None::<&str>,
            )
            .map_err(|e| {
                io::Error::new(
                    io::Error::from(e).kind(),
                    format!("mounting fusectl at {FUSECTL}: {e}"),
                )
            })?;
        }
        if !abort.exists() {
            // The connection is gone already: nothing left to abort.
            return Ok(());
        }
    }
    fs::write(&abort, b"1")
}

/// One line of `/proc/self/mountinfo`, the parts used here.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountEntry {
    dev: (u64, u64),
    mountpoint: PathBuf,
    fstype: String,
}

/// The mount table of this process's mount namespace, in mount order.
fn mount_table() -> io::Result<Vec<MountEntry>> {
    let text = fs::read_to_string("/proc/self/mountinfo")?;
    Ok(text.lines().filter_map(parse_mountinfo_line).collect())
}

/// The mount on top at `mountpoint` (the last one mounted there), if any.
fn top_mount(mountpoint: &Path) -> io::Result<Option<MountEntry>> {
    Ok(mount_table()?
        .into_iter()
        .rev()
        .find(|m| m.mountpoint == mountpoint))
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw` (proc(5)).
fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let (left, right) = line.split_once(" - ")?;
    let mut fields = left.split(' ');
    let dev = fields.nth(2)?;
    let mountpoint = fields.nth(1)?;
    let (major, minor) = dev.split_once(':')?;
    Some(MountEntry {
        dev: (major.parse().ok()?, minor.parse().ok()?),
        mountpoint: PathBuf::from(unescape(mountpoint)),
        fstype: right.split(' ').next()?.to_string(),
    })
}

/// Undo mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(field: &str) -> OsString {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let s = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(s, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_are_parsed_and_unescaped() {
        let line = "612 29 0:61 / /tmp/a\\040b rw,nosuid,nodev,noatime shared:1 - \
                    fuse.nfs-sim nfs-sim:/tmp/x rw,user_id=0,group_id=0";
        let entry = parse_mountinfo_line(line).unwrap();
        assert_eq!(entry.dev, (0, 61));
        assert_eq!(entry.mountpoint, Path::new("/tmp/a b"));
        assert_eq!(entry.fstype, "fuse.nfs-sim");
        assert_eq!(parse_mountinfo_line("garbage"), None);
    }

    #[test]
    fn connection_numbers_are_kernel_dev_t() {
        let attached = Attached {
            mountpoint: PathBuf::from("/x"),
            dev: (0, 61),
            session: None,
        };
        assert_eq!(attached.connection(), 61);
        let attached = Attached {
            dev: (8, 1),
            ..attached
        };
        assert_eq!(attached.connection(), (8 << 20) | 1);
    }
}
