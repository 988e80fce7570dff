//! The privilege bracket: the mail group lives only in the saved set-gid
//! and becomes the effective gid only around the calls that change the
//! spool directory (create the temporary file, link, rename, unlink).

use nix::errno::Errno;
use nix::unistd::Gid;
use spoollock_lockfile::Privilege;

use crate::system;

/// Switches the effective gid between the caller's real gid and the
/// privileged group kept in the saved set-gid.
#[derive(Debug)]
pub struct GroupPrivilege {
    real: Gid,
    privileged: Gid,
}

impl GroupPrivilege {
    /// Start with the privilege lowered: real = effective = the caller's
    /// gid, saved = the privileged group.
    pub fn park(real: Gid, privileged: Gid) -> Result<GroupPrivilege, Errno> {
        system::set_group_ids(real, real, privileged)?;
        Ok(GroupPrivilege { real, privileged })
    }

    /// The privileged group.
    pub fn group(&self) -> Gid {
        self.privileged
    }

    /// Give the privilege up for good (real = effective = saved).
    pub fn drop_for_good(&self) -> Result<(), Errno> {
        system::set_group_ids(self.real, self.real, self.real)
    }
}

impl Privilege for GroupPrivilege {
    fn raise(&self) -> nix::Result<()> {
        system::set_group_ids(self.real, self.privileged, self.privileged)
    }

    fn lower(&self) {
        if system::set_group_ids(self.real, self.real, self.privileged).is_err() {
            // Continuing with the privilege up would be worse than any
            // lock left behind (which is stale at once: our pid is gone).
            std::process::abort();
        }
    }
}
