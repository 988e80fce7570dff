//! Who may lock what: the caller's login from the password database, the
//! configured spool a request selects, the checks on that spool and on the
//! caller's mailbox. No byte of a request ever becomes part of a path: the
//! request only selects among configured spools and may name the mailbox
//! it means, which must equal the login.

use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, Mode, SFlag};
use nix::unistd::{Gid, Uid, User};
use spoollock_lockfile::LockDir;
use spoollock_protocol::{MailboxProblem, Refusal, SpoolProblem, SpoolSel, Target};

use crate::trusted::{self, is_kind, WalkError};

/// The caller, as the kernel and the password database say.
#[derive(Debug, Clone)]
pub struct Caller {
    pub uid: Uid,
    pub login: String,
}

/// Look the real uid up in the password database.
pub fn lookup_login(uid: Uid) -> Result<String, Refusal> {
    match User::from_uid(uid) {
        Ok(Some(user)) => Ok(user.name),
        Ok(None) => Err(Refusal::UnknownUser { uid: uid.as_raw() }),
        Err(errno) => Err(Refusal::UserDatabase {
            errno: errno as i32,
        }),
    }
}

/// Whether a login can name a mailbox and its lock: a plain, printable
/// ASCII file name that is not hidden, not an option, not itself a lock
/// name (no `alice.lock.lock` chains) and short enough for `.lock`. The
/// rule is the protocol crate's, which the client library applies too.
pub fn login_usable(login: &str) -> bool {
    spoollock_protocol::login_usable(login)
}

/// Refuse to lock for `login` when a user named `<login>.lock` exists: the
/// lock name would be that user's mailbox (Debian's `useradd` accepts such
/// a login). A password database that cannot be read refuses too.
pub fn check_no_namesake(login: &str) -> Result<(), Refusal> {
    let namesake = lock_name(login);
    match User::from_name(&namesake) {
        Ok(None) => Ok(()),
        Ok(Some(_)) => Err(Refusal::LockNameIsLogin { login: namesake }),
        Err(errno) => Err(Refusal::UserDatabase {
            errno: errno as i32,
        }),
    }
}

/// The login of `uid`, when it has one of printable ASCII (anything else
/// is left out of refusals, which the client prints).
pub fn printable_login(uid: u32) -> Option<String> {
    let user = User::from_uid(Uid::from_raw(uid)).ok()??;
    let printable = !user.name.is_empty()
        && user.name.len() <= 64
        && user.name.bytes().all(|b| b.is_ascii_graphic());
    printable.then_some(user.name)
}

/// The lock name for a login: always built here, from the login only.
pub fn lock_name(login: &str) -> String {
    format!("{login}.lock")
}

/// Which configured spool a request selects.
pub fn select(sel: &SpoolSel, spools: &[String]) -> Result<usize, Refusal> {
    match sel {
        SpoolSel::Default => Ok(0),
        SpoolSel::Index(i) => {
            let i = usize::try_from(*i).map_err(|_| Refusal::UnknownSpool)?;
            (i < spools.len()).then_some(i).ok_or(Refusal::UnknownSpool)
        }
        SpoolSel::Path(p) => spools
            .iter()
            .position(|s| s == p)
            .ok_or(Refusal::UnknownSpool),
    }
}

/// Check the mailbox name a request gives, if any, against the login.
pub fn check_requested(target: &Target, caller: &Caller) -> Result<(), Refusal> {
    match &target.mailbox {
        Some(name) if *name != caller.login => Err(Refusal::NotYourMailbox),
        _ => Ok(()),
    }
}

/// Open a configured spool: every directory above it root-owned and not
/// writable by others, the spool itself opened with `O_NOFOLLOW`, owned by
/// root, group-owned by the helper's group, writable by that group and not
/// by the world.
pub fn open_spool(path: &str, group: Gid) -> Result<LockDir, SpoolProblem> {
    let walk = |e: WalkError| match e {
        WalkError::Missing => SpoolProblem::Missing,
        WalkError::Symlink => SpoolProblem::Symlink,
        WalkError::NotDirectory => SpoolProblem::NotDirectory,
        WalkError::UnsafeAncestor => SpoolProblem::UnsafeAncestor,
        WalkError::BadPath => SpoolProblem::NotDirectory,
        WalkError::Io(e) => SpoolProblem::Io { errno: e as i32 },
    };
    let (parent, name) = trusted::open_parent(path).map_err(walk)?;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd: OwnedFd = openat(&parent, name.as_str(), flags, Mode::empty())
        .map_err(|e| walk(trusted::classify(&parent, &name, e)))?;
    let st = fstat(&fd).map_err(|e| SpoolProblem::Io { errno: e as i32 })?;
    if !is_kind(&st, SFlag::S_IFDIR) {
        return Err(SpoolProblem::NotDirectory);
    }
    if st.st_uid != 0 {
        return Err(SpoolProblem::NotRootOwned { uid: st.st_uid });
    }
    if st.st_gid != group.as_raw() {
        return Err(SpoolProblem::WrongGroup { gid: st.st_gid });
    }
    if st.st_mode & 0o002 != 0 {
        return Err(SpoolProblem::WorldWritable);
    }
    if st.st_mode & 0o020 == 0 {
        return Err(SpoolProblem::NotGroupWritable);
    }
    Ok(LockDir::from_fd(fd))
}

/// If the caller's mailbox exists in the spool it must be a regular file
/// (not a symlink), owned by the caller, with a single link.
pub fn check_mailbox(dir: &LockDir, caller: &Caller) -> Result<(), MailboxProblem> {
    match fstatat(dir, caller.login.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(MailboxProblem::Io { errno: e as i32 }),
        Ok(st) if is_kind(&st, SFlag::S_IFLNK) => Err(MailboxProblem::Symlink),
        Ok(st) if !is_kind(&st, SFlag::S_IFREG) => Err(MailboxProblem::NotRegular),
        Ok(st) if st.st_uid != caller.uid.as_raw() => {
            Err(MailboxProblem::NotOwned { uid: st.st_uid })
        }
        Ok(st) if st.st_nlink != 1 => Err(MailboxProblem::HardLinked { nlink: st.st_nlink }),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spool_selection_is_by_configured_entry_only() {
        let spools = vec!["/var/mail".to_owned(), "/var/spool/mail".to_owned()];
        assert_eq!(select(&SpoolSel::Default, &spools), Ok(0));
        assert_eq!(select(&SpoolSel::Index(1), &spools), Ok(1));
        assert_eq!(
            select(&SpoolSel::Path("/var/spool/mail".into()), &spools),
            Ok(1)
        );
        for bad in [
            SpoolSel::Index(2),
            SpoolSel::Index(u32::MAX),
            SpoolSel::Path("/var/mail/".into()),
            SpoolSel::Path("/var/mail/../mail".into()),
            SpoolSel::Path("/tmp".into()),
            SpoolSel::Path("".into()),
        ] {
            assert_eq!(select(&bad, &spools), Err(Refusal::UnknownSpool), "{bad:?}");
        }
    }

    #[test]
    fn requested_mailbox_must_be_the_login() {
        let caller = Caller {
            uid: Uid::from_raw(1000),
            login: "alice".into(),
        };
        let t = |m: Option<&str>| Target {
            spool: SpoolSel::Default,
            mailbox: m.map(str::to_owned),
        };
        assert!(check_requested(&t(None), &caller).is_ok());
        assert!(check_requested(&t(Some("alice")), &caller).is_ok());
        for bad in [
            "bob",
            "alice.lock",
            "../alice",
            "/var/mail/alice",
            "alice\n",
            "",
        ] {
            assert_eq!(
                check_requested(&t(Some(bad)), &caller),
                Err(Refusal::NotYourMailbox)
            );
        }
        assert_eq!(lock_name("alice"), "alice.lock");
    }
}
