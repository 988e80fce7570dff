//! Opening files the helper trusts (its configuration, the spool
//! directories) without following symbolic links and without trusting a
//! directory that someone other than root could change.
//!
//! The path is walked from `/` one component at a time with `openat(...,
//! O_NOFOLLOW)`; every directory above the target must be owned by root
//! and writable by no one else, so none of them can be swapped while or
//! after they are checked. Decisions are made on the opened descriptors
//! (`fstat`), never by re-walking the path.

use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::fcntl::{open, openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};

/// Why a trusted path could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkError {
    /// The path is not absolute and normalized (no `.`, `..`, `//`,
    /// trailing `/`, or bytes other than printable ASCII).
    BadPath,
    /// A component does not exist.
    Missing,
    /// A component is a symbolic link.
    Symlink,
    /// A component that must be a directory is not one.
    NotDirectory,
    /// A directory above the target is not root-owned or is writable by
    /// group or others.
    UnsafeAncestor,
    /// Any other failure.
    Io(Errno),
}

/// Split an absolute, normalized path into its components.
pub fn components(path: &str) -> Result<Vec<&str>, WalkError> {
    let rest = path.strip_prefix('/').ok_or(WalkError::BadPath)?;
    if rest.is_empty() || path.len() > 4096 {
        return Err(WalkError::BadPath);
    }
    let parts: Vec<&str> = rest.split('/').collect();
    for part in &parts {
        let bad = part.is_empty()
            || *part == "."
            || *part == ".."
            || part.len() > 255
            || !part.bytes().all(|b| b.is_ascii_graphic());
        if bad {
            return Err(WalkError::BadPath);
        }
    }
    Ok(parts)
}

pub fn is_kind(st: &FileStat, kind: SFlag) -> bool {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == kind
}

/// Root-owned and writable by no one but its owner.
fn trusted_dir(st: &FileStat) -> bool {
    st.st_uid == 0 && st.st_mode & 0o022 == 0 && is_kind(st, SFlag::S_IFDIR)
}

/// Classify a failed `openat(dir, name, O_NOFOLLOW...)`.
pub fn classify(dir: &OwnedFd, name: &str, errno: Errno) -> WalkError {
    match errno {
        Errno::ENOENT => WalkError::Missing,
        Errno::ELOOP | Errno::ENOTDIR => match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if is_kind(&st, SFlag::S_IFLNK) => WalkError::Symlink,
            Ok(_) => WalkError::NotDirectory,
            Err(Errno::ENOENT) => WalkError::Missing,
            Err(e) => WalkError::Io(e),
        },
        e => WalkError::Io(e),
    }
}

/// Open the directory holding the last component of `path`, checking every
/// directory from `/` down to it. Returns that directory and the last
/// component's name.
pub fn open_parent(path: &str) -> Result<(OwnedFd, String), WalkError> {
    let parts = components(path)?;
    let (last, dirs) = parts.split_last().ok_or(WalkError::BadPath)?;
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut dir = open("/", flags, Mode::empty()).map_err(WalkError::Io)?;
    check_ancestor(&dir)?;
    for name in dirs {
        let next =
            openat(&dir, *name, flags, Mode::empty()).map_err(|e| classify(&dir, name, e))?;
        check_ancestor(&next)?;
        dir = next;
    }
    Ok((dir, (*last).to_owned()))
}

fn check_ancestor(dir: &OwnedFd) -> Result<(), WalkError> {
    let st = fstat(dir).map_err(WalkError::Io)?;
    if trusted_dir(&st) {
        Ok(())
    } else {
        Err(WalkError::UnsafeAncestor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_normalized_absolute_paths() {
        assert_eq!(components("/var/mail").unwrap(), ["var", "mail"]);
        for bad in [
            "",
            "/",
            "var/mail",
            "/var//mail",
            "/var/mail/",
            "/var/./mail",
            "/var/../etc",
            "/var/ma il",
            "/var/mail\n",
            "/var/m\u{e9}",
        ] {
            assert_eq!(components(bad), Err(WalkError::BadPath), "{bad:?}");
        }
    }

    #[test]
    fn walks_trusted_system_directories() {
        // /usr/bin is root-owned 0755 on every system the tests run on.
        let (_, last) = open_parent("/usr/bin/env").unwrap();
        assert_eq!(last, "env");
        assert!(matches!(
            open_parent("/nonexistent-spoollock/x"),
            Err(WalkError::Missing)
        ));
    }
}
