//! The unique temporary file that becomes the lock by `link`.
//!
//! On the local file systems where the kernel offers it (see
//! [`LockDir::anonymous_temps`]) the file is anonymous: `O_TMPFILE` creates
//! an inode with no name, and `linkat` through `/proc/self/fd/N` gives it
//! the lock's name and nothing else. No process killed at any point leaves
//! a temporary file behind, there is no name to remove afterwards (one
//! directory change fewer per lock), and the identity check is the same
//! with one link fewer (`st_nlink == 1` once linked).
//!
//! Elsewhere (NFS, FUSE, no procfs) it is the classic named file,
//! `.lk<pid>.<random>.<host>`, bounded to [`MAX_TEMP_NAME`] bytes whatever
//! the host name, so it fits wherever the lock name fits. The guard unlinks
//! the name on every path out.

use std::collections::hash_map::RandomState;
use std::ffi::{OsStr, OsString};
use std::hash::{BuildHasher, Hasher};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, futimens, FileStat, Mode};
use nix::sys::time::TimeSpec;
use nix::unistd::{linkat, unlinkat, UnlinkatFlags};

use crate::dir::{proc_fd_path, with_raised, LockDir, Privilege};
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

/// The suffix of a name a lock is moved aside to.
const ASIDE_SUFFIX: &str = ".stale";

/// A fresh temporary name of process `me` (its pid, read once by the
/// caller).
pub(crate) fn temp_name(me: u32, suffix: &str) -> OsString {
    OsString::from_vec(format_temp_name(me, random_u64(), &local_host().host, suffix).into_bytes())
}

/// `.lk<pid>.<random>.<host><suffix>`, the host cut to [`HOST_PART`] bytes
/// and the whole to [`MAX_TEMP_NAME`] (which may cut the suffix, never the
/// host). [`temp_name_owner`] reads it back.
fn format_temp_name(me: u32, random: u64, host: &str, suffix: &str) -> String {
    let host = &host[..host.len().min(HOST_PART)];
    let mut name = format!(".lk{me:x}.{random:016x}.{host}{suffix}");
    name.truncate(MAX_TEMP_NAME);
    name
}

/// The pid of the process that made `name`, if `name` is a temporary or
/// aside name this crate writes (`.lk<pid>.<random>.<host>[.stale]`) on the host named
/// `host`: exactly that host as written (another host whose name merely
/// starts like ours, "mx" and "mx2", is not us), then nothing or the aside
/// suffix, perhaps cut short by the length cap. For sweeps of a dead
/// process's files (the setgid helper's `sweep`).
pub fn temp_name_owner(name: &str, host: &str) -> Option<u32> {
    let rest = name.strip_prefix(".lk")?;
    let (pid, rest) = rest.split_once('.')?;
    let (random, host_part) = rest.split_once('.')?;
    if pid.is_empty() || pid.len() > 8 || random.len() != 16 {
        return None;
    }
    if !pid
        .bytes()
        .chain(random.bytes())
        .all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    let written = &host[..host.len().min(HOST_PART)];
    let suffix = host_part.strip_prefix(written)?;
    if written.is_empty() || !ASIDE_SUFFIX.starts_with(suffix) {
        return None;
    }
    u32::from_str_radix(pid, 16).ok()
}

/// A name of this process's own to move locks aside to (see
/// [`crate::Options::aside`]): a fresh aside name (`.lk<pid>.<random>.<host>.stale`)
/// drawn once and kept, so that a locker killed between a move and the
/// removal leaves at most that one file, which its next move would replace,
/// and which a sweep of dead temporary files recognizes by its dead pid.
///
/// Give it to one locker only, one that never moves two locks at once (the
/// helper: one per session). A name two lockers share lets one's removal
/// meet the other's move: a breaker overtaken after its re-check moves a
/// third process's new lock onto the shared name just before a releaser
/// removes the file it left there (`model/README.md`, `bug-shared-aside`).
pub fn private_aside_name() -> OsString {
    aside_temp_name(std::process::id())
}

/// A fresh name of process `me` to move a lock aside to.
pub(crate) fn aside_temp_name(me: u32) -> OsString {
    temp_name(me, ASIDE_SUFFIX)
}

/// An open, written temporary file in the lock directory.
#[derive(Debug)]
pub(crate) struct TempFile<'a> {
    dir: &'a LockDir,
    privilege: Option<&'a dyn Privilege>,
    /// `None` for an anonymous file, which has no name to remove.
    name: Option<OsString>,
    fd: Option<OwnedFd>,
    /// `link_to` reported success once: an anonymous file that has lost
    /// that name since cannot be linked again.
    linked: bool,
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
        let mode = Mode::from_bits_truncate(mode);
        let (name, fd) = match Self::create_anonymous(dir, mode, privilege)? {
            Some(fd) => (None, fd),
            None => {
                let (name, fd) = Self::create_named(dir, me, mode, privilege)?;
                (Some(name), fd)
            }
        };
        let mut temp = TempFile {
            dir,
            privilege,
            name,
            fd: Some(fd),
            linked: false,
            written_at: Instant::now(),
        };
        temp.write_all(content)?;
        temp.written_at = Instant::now();
        Ok(temp)
    }

    /// An anonymous temporary file, or `None` when this directory does not
    /// take them (from now on, named ones are used here).
    fn create_anonymous(
        dir: &LockDir,
        mode: Mode,
        privilege: Option<&dyn Privilege>,
    ) -> Result<Option<OwnedFd>> {
        if !dir.anonymous_temps() {
            return Ok(None);
        }
        let flags = OFlag::O_TMPFILE | OFlag::O_WRONLY | OFlag::O_CLOEXEC;
        match with_raised(privilege, || openat(dir, ".", flags, mode)) {
            Ok(fd) => Ok(Some(fd)),
            // The file system (EOPNOTSUPP) or an old kernel (EISDIR: it
            // took the flag for O_DIRECTORY) does not have O_TMPFILE.
            Err(Errno::EOPNOTSUPP | Errno::EISDIR | Errno::EINVAL) => {
                dir.no_anonymous_temps();
                Ok(None)
            }
            Err(errno) => Err(LockError::from_errno(Op::CreateTemp, errno)),
        }
    }

    /// A named temporary file with a fresh random name.
    fn create_named(
        dir: &LockDir,
        me: u32,
        mode: Mode,
        privilege: Option<&dyn Privilege>,
    ) -> Result<(OsString, OwnedFd)> {
        let flags = OFlag::O_WRONLY
            | OFlag::O_CREAT
            | OFlag::O_EXCL
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | OFlag::O_NOCTTY;
        let mut attempts = 0;
        loop {
            let name = temp_name(me, "");
            match with_raised(privilege, || openat(dir, name.as_os_str(), flags, mode)) {
                Ok(fd) => return Ok((name, fd)),
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
        }
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

    /// `link` this file to `name` in its directory; the result is only a
    /// hint (see the identity check in `acquire`). `ENOENT` for an
    /// anonymous file means it cannot be linked (again): the caller makes
    /// a fresh temporary file. If it was never linked, procfs would not
    /// resolve our own descriptor, and this directory gets named files from
    /// now on; otherwise it was linked and has lost that name since
    /// (removed by its owner or a breaker).
    pub fn link_to(&mut self, name: &OsStr) -> nix::Result<()> {
        let linked = match &self.name {
            Some(temp) => with_raised(self.privilege, || {
                linkat(self.dir, temp.as_os_str(), self.dir, name, AtFlags::empty())
            }),
            None => {
                let own = proc_fd_path(self.fd());
                let linked = with_raised(self.privilege, || {
                    linkat(
                        self.dir,
                        own.as_str(),
                        self.dir,
                        name,
                        AtFlags::AT_SYMLINK_FOLLOW,
                    )
                });
                if linked == Err(Errno::ENOENT) && !self.linked {
                    self.dir.no_anonymous_temps();
                }
                linked
            }
        };
        self.linked |= linked.is_ok();
        linked
    }

    /// The link count the file has once `link_to` made it the lock: its
    /// temporary name and the lock's, or the lock's alone.
    pub fn links_when_locked(&self) -> u64 {
        if self.name.is_some() {
            2
        } else {
            1
        }
    }

    /// True for an anonymous file.
    pub fn is_anonymous(&self) -> bool {
        self.name.is_none()
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
        let Some(name) = &self.name else {
            return; // anonymous: closing the descriptor is all it takes
        };
        // Best effort: on NFS a lost reply reports ENOENT for a removal that
        // happened; any other failure leaves a `.lk*` file, never a lock.
        let _ = with_raised(self.privilege, || {
            unlinkat(self.dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_and_aside_names_are_read_back_as_written() {
        for host in ["vm", "mail-1.example.org", &"h".repeat(200)] {
            for suffix in ["", ASIDE_SUFFIX] {
                for pid in [1, 0x1f2a, 0x7fff_ffff] {
                    let name = format_temp_name(pid, 0x0123_4567_89ab_cdef, host, suffix);
                    assert!(name.len() <= MAX_TEMP_NAME, "{name}");
                    assert_eq!(temp_name_owner(&name, host), Some(pid), "{name}");
                    assert_eq!(temp_name_owner(&name, "other"), None, "{name}");
                }
            }
        }
        let me = std::process::id();
        let host = &local_host().host;
        for name in [temp_name(me, ""), private_aside_name()] {
            assert_eq!(temp_name_owner(name.to_str().unwrap(), host), Some(me));
        }
    }

    #[test]
    fn recognises_only_temporary_names_of_this_host() {
        let host = "mail-1.example.org";
        assert_eq!(
            temp_name_owner(".lk1f2a.0123456789abcdef.mail-1.example.org", host),
            Some(0x1f2a)
        );
        assert_eq!(
            temp_name_owner(".lk1f2a.0123456789abcdef.mail-1.example.org.stale", host),
            Some(0x1f2a)
        );
        // The 64-byte cap can cut the `.stale` suffix, never the host.
        assert_eq!(
            temp_name_owner(".lk1f2a.0123456789abcdef.mail-1.example.org.st", host),
            Some(0x1f2a)
        );
        for other in [
            "alice",
            "alice.lock",
            ".lk",
            ".lk1f2a.0123456789abcdef.otherhost",
            // A host whose name is a prefix of ours, or ours a prefix of it.
            ".lk10.0123456789abcdef.mail-1",
            ".lk10.0123456789abcdef.mail-1.example.org2",
            ".lk10.0123456789abcdef.mail-1.example.org.stalex",
            ".lk1f2a.0123456789abcdef.",
            ".lk1f2a.0123.mail-1.example.org",
            ".lkzz.0123456789abcdef.mail-1.example.org",
            ".lk.0123456789abcdef.mail-1.example.org",
            ".lk123456789.0123456789abcdef.mail-1.example.org",
        ] {
            assert_eq!(temp_name_owner(other, host), None, "{other}");
        }
    }
}
