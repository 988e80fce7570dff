//! The directory a lock lives in, the privilege bracket around the calls
//! that change it, and the file identities the algorithm compares.

use std::ffi::OsStr;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{open, openat, OFlag};
use nix::sys::inotify::Inotify;
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};

use crate::error::{LockError, Op, Result};

/// Longest file name a directory entry may have (`NAME_MAX` on Linux).
pub const NAME_MAX: usize = 255;

/// An open directory in which locks are made. Cheap to clone (shared fd).
///
/// Every operation is relative to this descriptor, so no path component can
/// be swapped between a check and the call that relies on it.
#[derive(Debug, Clone)]
pub struct LockDir {
    inner: Arc<DirInner>,
}

#[derive(Debug)]
struct DirInner {
    fd: OwnedFd,
    /// The directory is on a local file system, where `fstatat` tells the
    /// truth; on NFS, FUSE or anything unknown it may be answered from a
    /// client cache, and identity checks go through a fresh `open`.
    local: bool,
    /// An inotify instance watching this directory, kept between waits:
    /// closing one waits for a kernel grace period (milliseconds), which
    /// must not sit between a hand-off and the new holder's return.
    inotify: Mutex<Option<Inotify>>,
    /// The file system's clock as last read here: (its time, our
    /// monotonic instant then). Saves `check` a probe file per call.
    fs_clock: Mutex<Option<(SystemTime, Instant)>>,
    /// Temporary files may be anonymous (`O_TMPFILE`, linked through
    /// `/proc/self/fd`): a local file system and the kernel's procfs, until
    /// the first attempt says otherwise.
    anonymous: AtomicBool,
}

/// How long a file-system clock reading is reused before a new one.
const FS_CLOCK_REUSE: Duration = Duration::from_secs(60);

impl LockDir {
    /// Open `path` as a directory (symlinks in the path are followed, as
    /// for any file the caller names; the lock itself never is).
    pub fn open(path: &Path) -> Result<LockDir> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        match open(path, flags, Mode::empty()) {
            Ok(fd) => Ok(LockDir::from_fd(fd)),
            Err(errno) => Err(LockError::from_errno(Op::OpenDir, errno)),
        }
    }

    /// Use a directory the caller opened and checked itself (the helper
    /// opens its spool with `O_NOFOLLOW` and verifies it before use).
    pub fn from_fd(fd: OwnedFd) -> LockDir {
        let local = is_local_fs(&fd);
        LockDir {
            inner: Arc::new(DirInner {
                fd,
                local,
                inotify: Mutex::new(None),
                fs_clock: Mutex::new(None),
                anonymous: AtomicBool::new(local && proc_is_procfs()),
            }),
        }
    }

    /// True when temporary files here are anonymous (`O_TMPFILE`): they
    /// have no name until `link` gives them the lock's, so no process
    /// killed at any point can leave one behind. Only on the local file
    /// systems of `is_local_fs`; NFS and FUSE keep the named temporary
    /// file of the classic algorithm.
    pub fn anonymous_temps(&self) -> bool {
        self.inner.anonymous.load(Ordering::Relaxed)
    }

    /// Use the classic named temporary file here even where anonymous
    /// ones work: for comparisons and tests of that path (it is what NFS
    /// and FUSE directories always use).
    pub fn use_named_temps(&self) {
        self.no_anonymous_temps();
    }

    /// The kernel or file system refused an anonymous temporary file (or
    /// the link through `/proc`): named ones from now on.
    pub(crate) fn no_anonymous_temps(&self) {
        self.inner.anonymous.store(false, Ordering::Relaxed);
    }

    /// True when `fstatat` of a name here is authoritative (a local file
    /// system without client-side caches).
    pub fn stat_is_fresh(&self) -> bool {
        self.inner.local
    }

    /// The `/proc/self/fd` path of this directory, for APIs that take a path.
    pub(crate) fn proc_path(&self) -> String {
        proc_fd_path(self.inner.fd.as_fd())
    }

    /// Take the kept inotify instance, if any.
    pub(crate) fn take_inotify(&self) -> Option<Inotify> {
        self.inner.inotify.lock().ok()?.take()
    }

    /// Keep `inotify` for the next wait (or close it if one is kept).
    pub(crate) fn keep_inotify(&self, inotify: Inotify) {
        if let Ok(mut slot) = self.inner.inotify.lock() {
            slot.get_or_insert(inotify);
        }
    }

    /// Remember that the file system's clock read `fs_time` at `at`.
    pub(crate) fn record_fs_clock(&self, fs_time: SystemTime, at: Instant) {
        if let Ok(mut clock) = self.inner.fs_clock.lock() {
            *clock = Some((fs_time, at));
        }
    }

    /// The file system's current time from a recent reading, if any.
    pub(crate) fn recent_fs_now(&self) -> Option<SystemTime> {
        let (fs_time, at) = (*self.inner.fs_clock.lock().ok()?)?;
        (at.elapsed() < FS_CLOCK_REUSE).then(|| fs_time + at.elapsed())
    }

    /// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
    pub(crate) fn stat(&self, name: &OsStr) -> nix::Result<FileStat> {
        fstatat(self, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
    }
}

impl AsFd for LockDir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }
}

/// Rights needed to change the lock directory, raised only around the
/// calls that change it (create the temp file, link, rename, unlink).
///
/// The setgid helper implements this by switching its effective gid to the
/// saved set-gid and back. `lower` must not fail silently: an implementation
/// that cannot drop its privilege again must abort the process.
pub trait Privilege: Send + Sync + fmt::Debug {
    /// Gain the rights; an error aborts the operation with that errno.
    fn raise(&self) -> nix::Result<()>;
    /// Give them up again.
    fn lower(&self);
}

/// Run `f` with `privilege` raised (if any) and lowered afterwards, on
/// every way out. The one bracket for every privileged call: the helper's
/// own sweep uses it too.
pub fn with_raised<T>(
    privilege: Option<&dyn Privilege>,
    f: impl FnOnce() -> nix::Result<T>,
) -> nix::Result<T> {
    let Some(p) = privilege else {
        return f();
    };
    // Lowered on every way out: a raise that failed half-way, an error,
    // or an unwinding panic.
    struct Lower<'a>(&'a dyn Privilege);
    impl Drop for Lower<'_> {
        fn drop(&mut self) {
            self.0.lower();
        }
    }
    let _lower = Lower(p);
    p.raise()?;
    f()
}

/// `/proc/self/fd/N` for our descriptor `fd`: a path that names the open
/// file itself, whatever happens to any other path meanwhile.
pub(crate) fn proc_fd_path(fd: BorrowedFd<'_>) -> String {
    use std::os::fd::AsRawFd;
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Whether `/proc/self/fd` is the kernel's procfs, through which an
/// anonymous temporary file is linked (checked once per process: it is a
/// mount, and only root changes mounts).
fn proc_is_procfs() -> bool {
    use nix::sys::statfs::{statfs, PROC_SUPER_MAGIC};
    static PROCFS: OnceLock<bool> = OnceLock::new();
    *PROCFS.get_or_init(|| {
        statfs("/proc/self/fd").is_ok_and(|fs| fs.filesystem_type() == PROC_SUPER_MAGIC)
    })
}

/// File systems whose metadata lives on this machine: no client cache can
/// show a name pointing at an inode it no longer points at.
fn is_local_fs(fd: &OwnedFd) -> bool {
    use nix::sys::statfs::{
        fstatfs, BTRFS_SUPER_MAGIC, EXT2_SUPER_MAGIC, EXT3_SUPER_MAGIC, EXT4_SUPER_MAGIC,
        F2FS_SUPER_MAGIC, TMPFS_MAGIC, XFS_SUPER_MAGIC,
    };
    let Ok(fs) = fstatfs(fd) else {
        return false;
    };
    [
        EXT2_SUPER_MAGIC,
        EXT3_SUPER_MAGIC,
        EXT4_SUPER_MAGIC,
        XFS_SUPER_MAGIC,
        BTRFS_SUPER_MAGIC,
        TMPFS_MAGIC,
        F2FS_SUPER_MAGIC,
    ]
    .contains(&fs.filesystem_type())
}

/// Which file a name pointed at: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    /// Device number (`st_dev`).
    pub dev: u64,
    /// Inode number (`st_ino`).
    pub ino: u64,
}

impl FileId {
    pub(crate) fn of(st: &FileStat) -> FileId {
        FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }
}

/// One version of one file: identity plus what changes when it is
/// rewritten or refreshed. Inode numbers are reused quickly on ext4 and
/// tmpfs, so identity alone cannot tell an old lock from its successor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileVersion {
    /// Which file.
    pub id: FileId,
    /// Its modification time: a refresh changes it.
    pub mtime: SystemTime,
    /// Its size in bytes: a rewrite may change it.
    pub size: i64,
    /// The file's owner (who made the lock, for locks made by name).
    pub uid: u32,
}

impl FileVersion {
    pub(crate) fn of(st: &FileStat) -> FileVersion {
        FileVersion {
            id: FileId::of(st),
            mtime: mtime(st),
            size: st.st_size,
            uid: st.st_uid,
        }
    }
}

/// The modification time of a stat result as a `SystemTime`.
pub(crate) fn mtime(st: &FileStat) -> SystemTime {
    let nanos = Duration::new(0, st.st_mtime_nsec.clamp(0, 999_999_999) as u32);
    if st.st_mtime >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(st.st_mtime as u64) + nanos
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(st.st_mtime.unsigned_abs()) + nanos
    }
}

pub(crate) fn is_regular(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFREG
}

/// Check that `name` is a single, plain directory entry name.
pub fn validate_name(name: &OsStr) -> Result<()> {
    let bytes = name.as_bytes();
    if bytes.len() > NAME_MAX {
        return Err(LockError::NameTooLong);
    }
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
        return Err(LockError::InvalidName);
    }
    if bytes.contains(&0) {
        return Err(LockError::InvalidName);
    }
    Ok(())
}

/// Map "no such file" to `None`, other errors to a typed error. On NFS,
/// `ESTALE` means the file a cached name pointed at was removed by another
/// client: gone, too.
pub(crate) fn absent_ok<T>(r: nix::Result<T>, op: Op) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(Errno::ENOENT | Errno::ESTALE) => Ok(None),
        Err(errno) => Err(LockError::from_errno(op, errno)),
    }
}

/// Which file `name` in `dir` refers to now, never following a symlink.
/// On a local file system `fstatat` says; elsewhere (NFS, FUSE) through a
/// fresh open, which revalidates the client's caches where `fstatat` may
/// not; a file we may not read, or something that is not a regular file,
/// is then looked at with `fstatat`. `None` if nothing has that name.
pub fn current_id(dir: &LockDir, name: &OsStr) -> Result<Option<FileId>> {
    if dir.stat_is_fresh() {
        return stat_id(dir, name);
    }
    let flags = OFlag::O_RDONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_CLOEXEC
        | OFlag::O_NOCTTY;
    match openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => {
            let st = fstat(&fd).map_err(|errno| LockError::Io {
                op: Op::Stat,
                errno,
            })?;
            Ok(Some(FileId::of(&st)))
        }
        Err(Errno::ENOENT | Errno::ESTALE) => Ok(None),
        Err(Errno::ELOOP | Errno::EACCES) => stat_id(dir, name),
        Err(errno) => Err(LockError::from_errno(Op::Stat, errno)),
    }
}

fn stat_id(dir: &LockDir, name: &OsStr) -> Result<Option<FileId>> {
    Ok(absent_ok(dir.stat(name), Op::Stat)?
        .as_ref()
        .map(FileId::of))
}
