//! Removing the caller's leftovers: on NFS, a helper killed (SIGKILL, or
//! SIGSTOP then SIGKILL) between creating its named temporary file and
//! unlinking it leaves `.lk<pid>.<random>.<host>` in the spool, and on any
//! spool a helper killed while breaking a stale lock leaves the lock it
//! moved aside (`.lk<pid>.<random>.<host>.stale`); the caller cannot remove
//! either (the spool is not theirs to write). When the session decides a
//! dead helper may have left some (see `Session::lock`), and after the lock
//! was taken (so that a dead helper's stale lock, which shares the
//! temporary file's inode, has been broken), the helper removes such files
//! when they are provably dead:
//!
//! - the name has the lockfile crate's temporary form and names this host;
//! - the process it names no longer exists;
//! - the file is a regular file with one link, owned by the caller.
//!
//! Files of other users, of live processes or of other hosts are never
//! touched.

use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};
use spoollock_lockfile::{local_host, process_state, with_raised, LockDir, Privilege, ProcState};

use crate::trusted::is_kind;

/// How many directory entries one sweep looks at, at most.
const MAX_SCAN: usize = 100_000;

/// The pid a temporary name belongs to, if `name` is a temporary file
/// name made on this host.
pub fn temp_owner(name: &str, host: &str) -> Option<u32> {
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
    // Exactly our host name as the lockfile crate writes it (at most 32
    // bytes), then nothing or the aside suffix `.stale`, which the 64-byte
    // cap on temporary names may have cut short. Another host whose name
    // merely starts like ours ("mx" and "mx2") is not us.
    let host32 = &host[..host.len().min(32)];
    let suffix = host_part.strip_prefix(host32)?;
    if host32.is_empty() || !".stale".starts_with(suffix) {
        return None;
    }
    u32::from_str_radix(pid, 16).ok()
}

/// Remove the caller's dead temporary files from `dir`; the names removed.
pub fn sweep(dir: &LockDir, caller_uid: u32, privilege: &dyn Privilege) -> Vec<String> {
    let mut removed = Vec::new();
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let Ok(mut listing) = Dir::openat(dir, ".", flags, Mode::empty()) else {
        return removed;
    };
    let host = &local_host().host;
    let me = std::process::id();
    let mut candidates = Vec::new();
    for entry in listing.iter().take(MAX_SCAN).flatten() {
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        if let Some(pid) = temp_owner(name, host) {
            if pid != me {
                candidates.push((name.to_owned(), pid));
            }
        }
    }
    for (name, pid) in candidates {
        if process_state(pid) != ProcState::Gone {
            continue;
        }
        let Ok(st) = fstatat(dir, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
            continue;
        };
        if !is_kind(&st, SFlag::S_IFREG) || st.st_uid != caller_uid || st.st_nlink != 1 {
            continue;
        }
        // The lockfile crate's bracket: lowered again on every way out,
        // including a raise that failed half-way.
        let unlinked = with_raised(Some(privilege), || {
            unlinkat(dir, name.as_str(), UnlinkatFlags::NoRemoveDir)
        });
        if unlinked.is_ok() {
            removed.push(name);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_only_temporary_names_of_this_host() {
        let host = "mail-1.example.org";
        assert_eq!(
            temp_owner(".lk1f2a.0123456789abcdef.mail-1.example.org", host),
            Some(0x1f2a)
        );
        assert_eq!(
            temp_owner(".lk1f2a.0123456789abcdef.mail-1.example.org.stale", host),
            Some(0x1f2a)
        );
        // The 64-byte cap can cut the `.stale` suffix, never the host.
        assert_eq!(
            temp_owner(".lk1f2a.0123456789abcdef.mail-1.example.org.st", host),
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
            assert_eq!(temp_owner(other, host), None, "{other}");
        }
    }
}
