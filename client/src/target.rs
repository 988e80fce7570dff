//! Which lock file protects which file: `PATH` -> `PATH.lock`, an explicit
//! lock file, or the caller's own spool mailbox.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use nix::unistd::{getuid, User};

use crate::error::{Error, Result};

/// Spool directories searched for the caller's mailbox, in order.
/// The protocol crate's list, which the helper uses too, so the two
/// cannot disagree.
pub const SPOOL_DIRS: &[&str] = spoollock_protocol::paths::BUILTIN_SPOOLS;

/// A lock file, split into the directory it lives in and its name there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockTarget {
    /// The directory holding the lock (and normally the protected file).
    pub dir: PathBuf,
    /// The lock's file name in `dir`.
    pub name: OsString,
}

impl LockTarget {
    /// The `.lock` sibling of `path` (`/var/mail/alice` ->
    /// `/var/mail` + `alice.lock`).
    pub fn for_file(path: &Path) -> Result<LockTarget> {
        let (dir, file) = split(path)?;
        let mut name = file.to_owned();
        name.push(".lock");
        Ok(LockTarget { dir, name })
    }

    /// An explicitly named lock file.
    pub fn lock_file(lock: &Path) -> Result<LockTarget> {
        let (dir, name) = split(lock)?;
        Ok(LockTarget {
            dir,
            name: name.to_owned(),
        })
    }

    /// The full path of the lock file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }
}

fn split(path: &Path) -> Result<(PathBuf, &OsStr)> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::BadPath(format!("{} names no file", path.display())))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name))
}

/// The caller's login, from the password database entry of the real uid
/// (never from `$USER` or `$LOGNAME`, which anyone can set). It must be
/// usable as a mailbox name by the helper's rule
/// ([`spoollock_protocol::login_usable`]): a login such as `../../tmp/x`
/// (which NSS sources other than `useradd` allow) would otherwise name a
/// file outside the spool.
pub fn login() -> Result<String> {
    match User::from_uid(getuid()) {
        Ok(Some(user)) if !spoollock_protocol::login_usable(&user.name) => {
            Err(Error::UnusableLogin { login: user.name })
        }
        Ok(Some(user)) => Ok(user.name),
        Ok(None) => Err(Error::NoMailbox(format!(
            "uid {} has no password database entry",
            getuid()
        ))),
        Err(e) => Err(Error::NoMailbox(format!("password database: {}", e.desc()))),
    }
}

/// The caller's own spool mailbox: `<spool>/<login>` in the first spool
/// directory that exists (`/var/mail`, then `/var/spool/mail`).
///
/// `$MAIL` is honoured only when its file name is the caller's login, as
/// liblockfile's `maillock` does, so a stray `$MAIL` cannot point the
/// lock at somebody else's file; and never in a process running with
/// privileges its caller does not have (setuid, setgid, file
/// capabilities: secure mode), whose environment the caller chose.
pub fn own_mailbox() -> Result<PathBuf> {
    let login = login()?;
    let mail = std::env::var_os("MAIL").filter(|_| !crate::privileged::elevated());
    if let Some(mail) = mail {
        let mail = PathBuf::from(mail);
        if mail.is_absolute() && mail.file_name() == Some(OsStr::new(&login)) {
            return Ok(mail);
        }
    }
    SPOOL_DIRS
        .iter()
        .map(Path::new)
        .find(|d| d.is_dir())
        .map(|d| d.join(&login))
        .ok_or_else(|| Error::NoMailbox(format!("none of {} exists", SPOOL_DIRS.join(", "))))
}

/// Who should own a mailbox that root creates at `path`: when the
/// process runs as root and `path`'s directory is one of [`SPOOL_DIRS`]
/// (compared by identity, so a symlinked `/var/spool/mail` counts), the
/// login the mailbox is named after and the spool's group, which Debian
/// policy pairs with mode 0660. procmail, for one, renames a spool mailbox
/// that its user does not own out of the way as bogus, and the mail with
/// it. `None` when not root or not a spool; an error when no login has
/// that name (nobody could own the mailbox).
pub fn spool_owner(path: &Path) -> Result<Option<(u32, u32)>> {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let (dir, name) = split(path)?;
    let Ok(dir_meta) = std::fs::metadata(&dir) else {
        return Ok(None);
    };
    let is_spool = SPOOL_DIRS.iter().any(|spool| {
        std::fs::metadata(spool)
            .is_ok_and(|m| (m.dev(), m.ino()) == (dir_meta.dev(), dir_meta.ino()))
    });
    if !is_spool {
        return Ok(None);
    }
    let login = name.to_str().unwrap_or_default();
    match User::from_name(login) {
        Ok(Some(user)) => Ok(Some((user.uid.as_raw(), dir_meta.gid()))),
        Ok(None) => Err(Error::NoMailbox(format!(
            "{}: no login named {:?}; not creating a spool mailbox nobody owns \
             (give --owner to choose one)",
            path.display(),
            name
        ))),
        Err(e) => Err(Error::NoMailbox(format!("password database: {}", e.desc()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_sibling_and_explicit_lock() {
        let t = LockTarget::for_file(Path::new("/var/mail/alice")).unwrap();
        assert_eq!(t.dir, Path::new("/var/mail"));
        assert_eq!(t.name, "alice.lock");
        assert_eq!(t.path(), Path::new("/var/mail/alice.lock"));
        let t = LockTarget::for_file(Path::new("inbox")).unwrap();
        assert_eq!(t.dir, Path::new("."));
        let t = LockTarget::lock_file(Path::new("/tmp/x.lck")).unwrap();
        assert_eq!(t.name, "x.lck");
        assert!(LockTarget::for_file(Path::new("/")).is_err());
        assert!(LockTarget::for_file(Path::new("a/..")).is_err());
    }
}
