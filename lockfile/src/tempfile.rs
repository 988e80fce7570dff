//! The unique temporary file that becomes the lock by `link`.
//!
//! Its name is `.lk<pid>.<random>.<host>`, bounded to [`MAX_TEMP_NAME`]
//! bytes whatever the host name, so it fits wherever the lock name fits.
//! The guard unlinks the name on every path out.

use std::collections::hash_map::RandomState;
use std::ffi::{OsStr, OsString};
use std::hash::{BuildHasher, Hasher};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fchmod, fstat, futimens, FileStat, Mode};
use nix::sys::time::TimeSpec;
use nix::unistd::{unlinkat, UnlinkatFlags};

use crate::dir::{with_raised, LockDir, Privilege};
use crate::error::{LockError, Op, Result};
use crate::host::local_host;

/// How old the temporary file may get while we wait before its mtime is
/// refreshed ahead of the next `link`.
pub(crate) const REFRESH_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Upper bound on the temporary file's name length.
pub const MAX_TEMP_NAME: usize = 64;
const HOST_PART: usize = 32;

/// A 64-bit random number from std's OS-seeded hasher keys; enough for
/// unique names and backoff jitter without a random-number crate.
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// A fresh temporary name of process `me` (its pid, read once by the
/// caller).
pub(crate) fn temp_name(me: u32, suffix: &str) -> OsString {
    let host = &local_host().host;
    let host = &host[..host.len().min(HOST_PART)];
    let mut name = format!(".lk{me:x}.{:016x}.{host}{suffix}", random_u64());
    name.truncate(MAX_TEMP_NAME);
    OsString::from_vec(name.into_bytes())
}

/// An open, written temporary file in the lock directory.
#[derive(Debug)]
pub(crate) struct TempFile<'a> {
    dir: &'a LockDir,
    privilege: Option<&'a dyn Privilege>,
    name: OsString,
    fd: Option<OwnedFd>,
    /// When the content was written, by the monotonic clock; together
    /// with the file's mtime this gives the file system's "now" later.
    pub written_at: Instant,
}

impl<'a> TempFile<'a> {
    /// Create a new temporary file of process `me` with exactly `mode`
    /// and `content`.
    pub fn create(
        dir: &'a LockDir,
        me: u32,
        content: &[u8],
        mode: u32,
        privilege: Option<&'a dyn Privilege>,
    ) -> Result<TempFile<'a>> {
        let flags = OFlag::O_WRONLY
            | OFlag::O_CREAT
            | OFlag::O_EXCL
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | OFlag::O_NOCTTY;
        let mode = Mode::from_bits_truncate(mode);
        let mut attempts = 0;
        let (name, fd) = loop {
            let name = temp_name(me, "");
            match with_raised(privilege, || openat(dir, name.as_os_str(), flags, mode)) {
                Ok(fd) => break (name, fd),
                Err(Errno::EEXIST) if attempts < 8 => {
                    // Nobody else picks a fresh 64-bit random name: this is
                    // our own create, performed but answered EEXIST (a lost
                    // NFS reply). Remove it before trying another name.
                    let _ = with_raised(privilege, || {
                        unlinkat(dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir)
                    });
                    attempts += 1;
                }
                Err(errno) => return Err(LockError::from_errno(Op::CreateTemp, errno)),
            }
        };
        let mut temp = TempFile {
            dir,
            privilege,
            name,
            fd: Some(fd),
            written_at: Instant::now(),
        };
        temp.write_all(content)?;
        temp.written_at = Instant::now();
        Ok(temp)
    }

    fn write_all(&self, mut content: &[u8]) -> Result<()> {
        while !content.is_empty() {
            match nix::unistd::write(self.fd(), content) {
                Ok(0) => return Err(LockError::TempWrite { errno: Errno::EIO }),
                Ok(n) => content = &content[n..],
                Err(Errno::EINTR) => {}
                Err(errno) => return Err(LockError::TempWrite { errno }),
            }
        }
        Ok(())
    }

    /// Give the file exactly `mode` if the umask narrowed it (`st` is a
    /// fresh `fstat` of it): locks should be readable by the tools that
    /// judge them. Best effort: an unreadable lock is still a lock (others
    /// treat it as held and judge it by age), so a failure here must not
    /// turn a lock we hold into an error that leaves it behind.
    pub fn ensure_mode(&self, st: &FileStat, mode: u32) {
        if st.st_mode & 0o7777 != mode & 0o7777 {
            let _ = fchmod(self.fd(), Mode::from_bits_truncate(mode));
        }
    }

    /// Set the file's mtime to the file system's "now" if it was written
    /// more than [`REFRESH_AFTER`] ago: the lock `link` makes carries this
    /// mtime, and after a long wait it would be born stale.
    pub fn refresh_if_old(&mut self) -> Result<()> {
        if self.written_at.elapsed() < REFRESH_AFTER {
            return Ok(());
        }
        futimens(self.fd(), &TimeSpec::UTIME_NOW, &TimeSpec::UTIME_NOW)
            .map_err(|errno| LockError::from_errno(Op::Touch, errno))?;
        self.written_at = Instant::now();
        Ok(())
    }

    pub fn name(&self) -> &OsStr {
        &self.name
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd
            .as_ref()
            .expect("temp fd present until taken")
            .as_fd()
    }

    pub fn stat(&self) -> Result<FileStat> {
        fstat(self.fd()).map_err(|errno| LockError::Io {
            op: Op::Stat,
            errno,
        })
    }

    /// Remove the temporary name and hand over the descriptor (which now
    /// refers to the lock's inode).
    pub fn into_fd(mut self) -> OwnedFd {
        self.unlink_name();
        self.fd.take().expect("temp fd present until taken")
    }

    fn unlink_name(&mut self) {
        // Best effort: on NFS a lost reply reports ENOENT for a removal that
        // happened; any other failure leaves a `.lk*` file, never a lock.
        let _ = with_raised(self.privilege, || {
            unlinkat(self.dir, self.name.as_os_str(), UnlinkatFlags::NoRemoveDir)
        });
    }
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        if self.fd.is_some() {
            self.unlink_name();
        }
    }
}
