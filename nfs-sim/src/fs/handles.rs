//! Open files (FUSE file handles on descriptors of the backing files),
//! reopened through `/proc/self/fd` with real access flags, and the open
//! file descriptions that serve fcntl locks (see [`crate::locks`]).

use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use fuser::Errno;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

use super::{errno, proc_path, OpenFile, State};
use crate::locks::LockMode;

impl State {
    pub(super) fn new_fh(&mut self, file: File, ino: u64) -> u64 {
        self.next_fh += 1;
        self.files.insert(
            self.next_fh,
            OpenFile {
                file: Arc::new(file),
                ino,
            },
        );
        self.next_fh
    }

    pub(super) fn file(&self, fh: u64) -> Result<Arc<File>, Errno> {
        self.files
            .get(&fh)
            .map(|f| f.file.clone())
            .ok_or(Errno::EBADF)
    }

    /// Reopen a node through `/proc/self/fd` with real access flags.
    pub(super) fn reopen(&self, ino: u64, flags: OFlag) -> Result<OwnedFd, Errno> {
        let node = self.node(ino)?;
        open(
            proc_path(&node.fd).as_str(),
            flags | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
            Mode::empty(),
        )
        .map_err(errno)
    }

    /// The open file description serving `owner`'s fcntl lock call on
    /// `ino` in the configured [`LockMode`] (`None`: an unlock with nothing
    /// held), after dropping the cached attributes where the mode's lock
    /// calls revalidate.
    pub(super) fn lock_description(
        &mut self,
        owner: u64,
        ino: u64,
        fh: u64,
        unlock: bool,
    ) -> Result<Option<Arc<OwnedFd>>, Errno> {
        let mode = self.config.locks;
        if self.config.fcntl_revalidates && mode != LockMode::Unsupported {
            self.attrs.remove(&ino);
        }
        let backing = &self.nodes.get(&ino).ok_or(Errno::ESTALE)?.fd;
        self.locks
            .description(mode, owner, ino, fh, unlock, backing)
    }
}
