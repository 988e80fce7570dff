//! Locking an mbox the way mail programs do: a dotlock *and* an fcntl lock
//! on the mailbox, so that it excludes programs that honour either.
//!
//! The two are taken in a configurable order (default fcntl, then dotlock,
//! as Debian policy and Postfix), and never is one held while blocking on
//! the other: if the second cannot be had at once, the first is released,
//! the caller backs off (as the lock crate does between attempts at a
//! dotlock: jittered, 1 ms doubling to 100 ms) and tries again within its
//! wait policy. Two programs using opposite orders therefore cannot
//! deadlock. See [`crate::record_lock`] for which fcntl locks are used and
//! the "closing a descriptor drops the lock" pitfall they avoid.
//!
//! # The mailbox may change while we wait
//!
//! Mail programs rewrite an mbox through a new file renamed over it
//! (mailutils' `movemail`, MUAs expunging) or remove it when it is empty
//! (mutt's `save_empty=no`), holding only the dotlock or only the fcntl
//! lock. A locker that waited across that holds its fcntl lock on, and would
//! append to, a file that no longer has the name. So once every lock is
//! held, [`MailboxLock`] looks the name up afresh (relative to the
//! directory descriptor, no symlink followed; on NFS and FUSE through a new
//! `open`, which revalidates the client's caches) and compares device and
//! inode with the file it opened; if they differ, it releases everything,
//! opens the mailbox again and starts over within the same wait policy.
//!
//! # File systems that cannot fcntl-lock
//!
//! An NFS server without lock support answers fcntl locks with `ENOLCK`.
//! The dotlock exists for exactly that case: the mailbox is then locked by
//! the dotlock alone, and [`Event::NoRecordLocks`] says so once.

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fchmod, Mode};
use nix::unistd::{fchown, Gid, Uid};
use spoollock_lockfile::{
    current_id, AppendMark, Backoff, Event, FileId, LockContent, LockDir, LockError, LockState,
    Observer, Retry, Wait,
};

use crate::error::{Error, Result};
use crate::guard::{lock_state, LockGuard, LockOptions, Route};
use crate::mbox;
use crate::record_lock::{self, LockKind, RecordLockFlavor};
use crate::target::LockTarget;

/// Which lock to take first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// fcntl, then the dotlock (Debian policy, Postfix, Dovecot's default
    /// on Debian).
    #[default]
    FcntlThenDotlock,
    /// The dotlock, then fcntl.
    DotlockThenFcntl,
}

/// How to lock a mailbox.
#[derive(Debug, Clone)]
pub struct MailboxOptions {
    /// Waiting, stale age, keep-alive and pid of the dotlock; the wait
    /// policy also bounds the whole two-lock acquisition.
    pub lock: LockOptions,
    /// Which lock first.
    pub order: Order,
    /// Take the dotlock.
    pub dotlock: bool,
    /// Take the fcntl lock.
    pub fcntl: bool,
    /// Read (shared fcntl lock, read-only descriptor) or write. The dotlock
    /// is exclusive either way: dotlocks have no shared mode.
    pub kind: LockKind,
    /// Create the mailbox with this mode if it does not exist (the
    /// process's umask applies unless `create_owner` is set).
    pub create: Option<u32>,
    /// Give a mailbox this call creates to this owner and group, with
    /// exactly the `create` mode (the umask does not apply). Changing the
    /// owner needs root; see [`crate::spool_owner`] for what a root MDA
    /// should use in a mail spool.
    pub create_owner: Option<(u32, u32)>,
}

impl Default for MailboxOptions {
    fn default() -> Self {
        MailboxOptions {
            lock: LockOptions::default(),
            order: Order::default(),
            dotlock: true,
            fcntl: true,
            kind: LockKind::Write,
            create: None,
            create_owner: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Dotlock,
    Fcntl,
}

/// A locked mailbox. Dropping it releases both locks, the one taken last
/// first, also when unwinding from a panic.
///
/// ```
/// use spoollock::{MailboxLock, MailboxOptions};
/// # let dir = std::env::temp_dir().join(format!("sl-mbox-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("alice");
/// let opts = MailboxOptions { create: Some(0o600), ..MailboxOptions::default() };
/// let mut mailbox = MailboxLock::open(&path, &opts)?;
/// mailbox.append(b"Subject: hi\n\nFrom now on, hello.\n", "bob@example.org")?;
/// assert!(mailbox.size() > 0);
/// drop(mailbox);
/// let text = std::fs::read_to_string(&path).unwrap();
/// assert!(text.starts_with("From bob@example.org "));
/// assert!(text.contains("\n>From now on"));
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), spoollock::Error>(())
/// ```
#[derive(Debug)]
pub struct MailboxLock {
    path: PathBuf,
    // Field order is drop order: the dotlock guard goes before the file
    // (whose close drops the fcntl lock) unless `Drop` already released
    // both in reverse acquisition order.
    dotlock: Option<LockGuard>,
    record: Option<RecordLockFlavor>,
    file: Option<File>,
    taken: Vec<Which>,
    size: u64,
    lock_path: PathBuf,
    /// Append marks of stale locks broken while acquiring: a holder that
    /// died mid-append may have left a partial message.
    broken_marks: Arc<Mutex<Vec<(AppendMark, u32)>>>,
    /// The process that took the locks. In a child forked while they are
    /// held, unlocking the fcntl lock would release the parent's (an OFD
    /// lock belongs to the open file both share), so the child's copy
    /// unlocks nothing.
    taker: u32,
    /// The mailbox's directory and its name there: it is opened and looked
    /// up again relative to this descriptor.
    dir: LockDir,
    /// How its dotlock is taken (in-process or through the helper),
    /// decided once.
    route: Route,
    name: OsString,
    /// Which file `file` is.
    id: Option<FileId>,
    /// The file system refused fcntl locks: the dotlock alone.
    no_record_locks: bool,
}

/// How often the mailbox may turn out replaced once locked before we give
/// up: each time, another program held a lock and rewrote it, so this is
/// only a guard against a loop that makes no progress.
const MAX_REPLACED: u32 = 1000;

impl MailboxLock {
    /// Open (or create) `path` and lock it with the configured locks.
    ///
    /// When this returns, every lock is held and `path` names the file
    /// they are on (see the module docs): a mailbox replaced or removed
    /// while we waited is opened again (created again if `create` says
    /// so) and locked anew, within the same wait policy.
    pub fn open(path: &Path, opts: &MailboxOptions) -> Result<MailboxLock> {
        let target = LockTarget::for_file(path)?;
        let name = path.file_name().expect("LockTarget checked it").to_owned();
        let mut lock = MailboxLock {
            path: path.to_owned(),
            dotlock: None,
            record: None,
            file: None,
            taken: Vec::new(),
            size: 0,
            lock_path: target.path(),
            broken_marks: Arc::default(),
            taker: std::process::id(),
            dir: LockDir::open(&target.dir)?,
            // (No dotlock, nothing to decide.)
            route: if opts.dotlock {
                Route::of(&target)?
            } else {
                Route::Direct
            },
            name,
            id: None,
            no_record_locks: false,
        };
        // On the helper path the helper breaks stale locks and we never see
        // their content: look at it first.
        let peeked = opts
            .dotlock
            .then(|| peek_stale_mark(&target, &opts.lock))
            .flatten();
        let opts = &lock.observing(opts);
        lock.lock_current_file(&target, opts)?;
        let marks: Vec<(AppendMark, u32)> = peeked
            .into_iter()
            .chain(
                lock.broken_marks
                    .lock()
                    .map(|m| m.clone())
                    .unwrap_or_default(),
            )
            .collect();
        for (mark, lock_owner) in marks {
            lock.recover_partial_append(mark, lock_owner)?;
        }
        lock.size = match &lock.file {
            // Through the locked descriptor: on NFS the fcntl lock has
            // just revalidated the attribute cache, so this size is real.
            Some(f) => f.metadata()?.len(),
            None => 0,
        };
        Ok(lock)
    }

    /// `opts` with an observer that also collects the append marks of the
    /// stale locks the dotlock acquisition breaks, and passes `Waiting` on
    /// only when the holder changes (every round of the two-lock loop is a
    /// new dotlock attempt that would report the same holder again).
    fn observing(&self, opts: &MailboxOptions) -> MailboxOptions {
        let marks = Arc::clone(&self.broken_marks);
        let user = opts.lock.observer.clone();
        let last_holder: Mutex<Option<(LockContent, Option<u32>)>> = Mutex::new(None);
        let observer: Observer = Arc::new(move |event: &Event| {
            match event {
                Event::BrokeStale(holder, _) => {
                    if let (Some(mark), Some(owner), Ok(mut marks)) =
                        (holder.content.append, holder.owner, marks.lock())
                    {
                        marks.push((mark, owner));
                    }
                }
                Event::Waiting(holder) => {
                    let seen = (holder.content.clone(), holder.owner);
                    if let Ok(mut last) = last_holder.lock() {
                        if last.as_ref() == Some(&seen) {
                            return;
                        }
                        *last = Some(seen);
                    }
                }
                _ => {}
            }
            if let Some(user) = &user {
                user(event);
            }
        });
        let mut opts = opts.clone();
        opts.lock.observer = Some(observer);
        opts
    }

    /// Remove what a holder killed in the middle of an append left: the
    /// bytes from its starting offset, if and only if the mailbox is still
    /// the file it was appending to, it is longer than that offset but
    /// shorter than the complete entry, and nothing after the entry's own
    /// separator line starts a new message (a writer that came after the
    /// kill, such as an fcntl-only MDA, would have started one).
    ///
    /// A mark is trusted only from a lock owned by the mailbox's owner or
    /// by root: in a shared directory anyone may plant a lock file, and its
    /// mark must not get somebody else's mailbox truncated.
    fn recover_partial_append(&mut self, mark: AppendMark, lock_owner: u32) -> Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let meta = file.metadata()?;
        if lock_owner != meta.uid() && lock_owner != 0 {
            return Ok(());
        }
        let size = meta.len();
        let partial = (meta.dev(), meta.ino()) == (mark.dev, mark.ino)
            && mark.offset < size
            && size < mark.offset.saturating_add(mark.length);
        if !partial || starts_another_message(file, mark.offset, size)? {
            return Ok(());
        }
        file.set_len(mark.offset)?;
        file.sync_data()?;
        Ok(())
    }

    /// Open the mailbox and take every lock, until the path names the
    /// file the locks are on once all of them are held.
    fn lock_current_file(&mut self, target: &LockTarget, opts: &MailboxOptions) -> Result<()> {
        let mut retry = Retry::new(opts.lock.wait, Backoff::default());
        for _ in 0..MAX_REPLACED {
            (self.file, self.id) = open_mailbox(&self.dir, &self.name, &self.path, opts)?.unzip();
            self.acquire_all(target, opts, &mut retry)?;
            if self.names_locked_file()? {
                return Ok(());
            }
            self.release_all()?;
            // Closed before the name is opened again: an NFS client keeps
            // a file it has open reachable (silly rename), and a cached
            // name could lead back to it.
            (self.file, self.id) = (None, None);
            notify(opts, &Event::MailboxReplaced);
            if retry.deadline_passed() {
                return Err(Error::Lock(LockError::Timeout { holder: None }));
            }
        }
        Err(Error::MailboxReplaced(self.path.clone()))
    }

    /// True if the mailbox path names the file we opened (and hold the
    /// fcntl lock on), looked up afresh; also true when no file is open
    /// (a dotlock alone, on a mailbox that did not exist).
    ///
    /// Our file must also still have a name: on NFS a lookup may be served
    /// from the client's cache for a while, but the attributes of the
    /// file we locked are fresh (the fcntl lock, or the fresh open of the
    /// lookup, revalidated them) and a file renamed over or removed by
    /// another client has no link left there, or is gone (`ESTALE`).
    fn names_locked_file(&self) -> Result<bool> {
        let (Some(file), Some(ours)) = (&self.file, self.id) else {
            return Ok(true);
        };
        // Looked up first: on NFS the open behind it refreshes the
        // attributes `fstat` then reads, if it lands on our file.
        if current_id(&self.dir, &self.name)? != Some(ours) {
            return Ok(false);
        }
        if self.dir.stat_is_fresh() {
            // A local lookup is the truth: the name leads to our file.
            return Ok(true);
        }
        match file.metadata() {
            Ok(meta) => Ok(meta.nlink() > 0),
            Err(e) if e.raw_os_error() == Some(nix::libc::ESTALE) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The locks to take this round, in order.
    fn order(&self, opts: &MailboxOptions) -> Vec<Which> {
        let mut order = match opts.order {
            Order::FcntlThenDotlock => vec![Which::Fcntl, Which::Dotlock],
            Order::DotlockThenFcntl => vec![Which::Dotlock, Which::Fcntl],
        };
        order.retain(|w| match w {
            Which::Dotlock => opts.dotlock,
            Which::Fcntl => opts.fcntl && self.file.is_some() && !self.no_record_locks,
        });
        order
    }

    fn acquire_all(
        &mut self,
        target: &LockTarget,
        opts: &MailboxOptions,
        retry: &mut Retry,
    ) -> Result<()> {
        retry.restart_backoff();
        loop {
            let order = self.order(opts);
            let Some((&first, rest)) = order.split_first() else {
                return Ok(());
            };
            // Holding nothing, we may wait for the first lock.
            self.take(first, target, opts, retry.remaining())?;
            let mut busy = None;
            for &next in rest {
                match self.take(next, target, opts, Wait::NoWait) {
                    Ok(()) => {}
                    Err(e) if e.is_busy() => {
                        busy = Some(e);
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            let Some(busy) = busy else {
                return Ok(());
            };
            self.release_all()?;
            std::thread::sleep(pause_or_give_up(retry, busy)?);
        }
    }

    fn take(
        &mut self,
        which: Which,
        target: &LockTarget,
        opts: &MailboxOptions,
        wait: Wait,
    ) -> Result<()> {
        match which {
            Which::Dotlock => {
                let lock_opts = LockOptions {
                    wait,
                    ..opts.lock.clone()
                };
                self.dotlock = Some(LockGuard::acquire_in(
                    self.route,
                    target,
                    Some(&self.dir),
                    &lock_opts,
                )?);
            }
            Which::Fcntl => {
                let file = self.file.as_ref().expect("fcntl only with an open mailbox");
                match wait_record_lock(file, opts.kind, wait)? {
                    Ok(flavor) => self.record = Some(flavor),
                    // The dotlock is what protects on such a file system.
                    Err(errno) if opts.dotlock => {
                        self.no_record_locks = true;
                        notify(opts, &Event::NoRecordLocks(errno));
                        return Ok(());
                    }
                    Err(errno) => {
                        return Err(Error::Io(std::io::Error::new(
                            std::io::Error::from(errno).kind(),
                            format!(
                                "{}: this file system cannot take fcntl locks ({}); \
                                 lock with the dotlock",
                                self.path.display(),
                                errno.desc()
                            ),
                        )))
                    }
                }
            }
        }
        self.taken.push(which);
        Ok(())
    }

    /// Release whatever is held, last taken first.
    fn release_all(&mut self) -> Result<()> {
        if self.taken.is_empty() {
            return Ok(());
        }
        if std::process::id() != self.taker {
            // A forked child's copy: see `taker`. The dotlock guard knows
            // it is a copy too and leaves the dotlock alone.
            self.taken.clear();
            self.record = None;
            drop(self.dotlock.take());
            return Err(Error::Lock(LockError::NotOurs));
        }
        let mut first_error = None;
        while let Some(which) = self.taken.pop() {
            let result = match which {
                Which::Dotlock => self.dotlock.take().map_or(Ok(()), LockGuard::release),
                Which::Fcntl => match (self.record.take(), &self.file) {
                    (Some(flavor), Some(file)) => {
                        record_lock::unlock(file, flavor).map_err(|e| Error::Io(e.into()))
                    }
                    _ => Ok(()),
                },
            };
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The locked mailbox file (`None` when only a dotlock was taken on a
    /// mailbox that does not exist).
    pub fn file(&self) -> Option<&File> {
        self.file.as_ref()
    }

    /// The mailbox's size when the locks were taken, or after the last
    /// [`append`](Self::append).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The mailbox path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one message in mbox format (see [`crate::mbox`]): a `From `
    /// line made from `sender` unless the message has one, `>From `
    /// quoting, a trailing blank line. The write is checked completely and
    /// synced; on any failure the mailbox is truncated back to its size
    /// before the call, so it never keeps half a message.
    ///
    /// `Ok` means delivered: the message is whole in the file the mailbox
    /// path names, checked after the write (and sync) with the locks still
    /// held, so
    /// it is there when they are released (unless a program that honours
    /// neither lock replaces the mailbox in between). If the path names
    /// another file or none by then, the append is undone and
    /// [`Error::MailboxReplaced`] returned: the message is not delivered.
    pub fn append(&mut self, message: &[u8], sender: &str) -> Result<()> {
        if let Some(dotlock) = &self.dotlock {
            if !dotlock.still_held()? {
                return Err(Error::Lock(LockError::NotOurs));
            }
        }
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| Error::MailboxNotOpen(self.path.clone()))?;
        let meta = file.metadata()?;
        let start = meta.len();
        let mut tail = [0u8; 2];
        let tail_len = start.min(2) as usize;
        file.read_exact_at(&mut tail[..tail_len], start - tail_len as u64)?;
        let entry = mbox::entry(message, sender, SystemTime::now(), &tail[..tail_len]);
        // Say in our dotlock what we are about to write, so that if we are
        // killed half-way the next spoollock locker can remove the partial
        // entry (see `recover_partial_append`).
        let mark = AppendMark {
            dev: meta.dev(),
            ino: meta.ino(),
            offset: start,
            length: entry.len() as u64,
        };
        if let Some(dotlock) = &self.dotlock {
            dotlock.set_append_mark(&self.lock_path, Some(mark))?;
        }
        let written = file
            .write_all_at(&entry, start)
            .and_then(|()| file.sync_data());
        if let Err(e) = written {
            // Leave no partial message behind; if even this fails, say so.
            return match file.set_len(start).and_then(|()| file.sync_data()) {
                Ok(()) => Err(Error::Io(e)),
                Err(undo) => Err(Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("{e}; and truncating back to {start} bytes failed: {undo}"),
                ))),
            };
        }
        if !self.names_locked_file()? {
            // Only a program that ignores our locks gets here; whatever
            // name the file may still have, our entry must not stay in it.
            let _ = file.set_len(start).and_then(|()| file.sync_data());
            return Err(Error::MailboxReplaced(self.path.clone()));
        }
        self.size = start + entry.len() as u64;
        if let Some(dotlock) = &self.dotlock {
            // Complete: a stale mark could only make a later recovery look
            // at a whole entry (which it leaves alone), so failure is fine.
            let _ = dotlock.set_append_mark(&self.lock_path, None);
        }
        Ok(())
    }

    /// Release both locks, reporting errors (drop ignores them). In a
    /// child forked while they were held, nothing is unlocked (see
    /// [`LockGuard::release`]).
    pub fn release(mut self) -> Result<()> {
        self.release_all()
    }
}

impl Drop for MailboxLock {
    fn drop(&mut self) {
        let _ = self.release_all();
    }
}

/// Open the mailbox `name` in `dir` (`path` is for messages), creating it
/// if `opts.create` says so, and say which file it is; `None` when it does
/// not exist and only a dotlock is wanted.
fn open_mailbox(
    dir: &LockDir,
    name: &OsStr,
    path: &Path,
    opts: &MailboxOptions,
) -> Result<Option<(File, FileId)>> {
    // Never follow a symlink planted at a spool mailbox; never block on a
    // fifo; never acquire a controlling terminal.
    let flags = OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC
        | match opts.kind {
            LockKind::Write => OFlag::O_RDWR,
            LockKind::Read => OFlag::O_RDONLY,
        };
    // A mailbox removed between our two opens is simply tried again; a
    // bounded number of times, as a guard only.
    let mut opened = Err(Errno::ENOENT);
    for _ in 0..16 {
        opened = openat(dir, name, flags, Mode::empty());
        let (Err(Errno::ENOENT), Some(mode)) = (opened.as_ref(), opts.create) else {
            break;
        };
        let mode = Mode::from_bits_truncate(mode);
        match openat(dir, name, flags | OFlag::O_CREAT | OFlag::O_EXCL, mode) {
            Ok(fd) => {
                give_to_owner(dir, name, &fd, mode, opts.create_owner, path)?;
                opened = Ok(fd);
                break;
            }
            Err(Errno::EEXIST) => continue,
            Err(errno) => {
                opened = Err(errno);
                break;
            }
        }
    }
    let file = match opened {
        Ok(fd) => File::from(fd),
        // A dotlock alone needs no file: opening it is only for `append`,
        // which says so if the file is not open.
        Err(_) if !opts.fcntl && opts.create.is_none() => return Ok(None),
        Err(Errno::ELOOP) => {
            return Err(Error::BadPath(format!(
                "{} is a symlink; refusing",
                path.display()
            )))
        }
        Err(Errno::ENOENT) => {
            return Err(Error::BadPath(format!(
                "{}: no such mailbox",
                path.display()
            )))
        }
        Err(errno) => {
            let e = std::io::Error::from(errno);
            return Err(Error::Io(std::io::Error::new(
                e.kind(),
                format!("cannot open mailbox {}: {e}", path.display()),
            )));
        }
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(Error::BadPath(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let id = FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    };
    Ok(Some((file, id)))
}

/// Give a mailbox we just created to `owner` with exactly `mode`. If that
/// fails, the new (empty, unused) file is unlinked again, provided the
/// name still names it, and the error returned: nothing is left changed.
fn give_to_owner(
    dir: &LockDir,
    name: &OsStr,
    fd: &OwnedFd,
    mode: Mode,
    owner: Option<(u32, u32)>,
    path: &Path,
) -> Result<()> {
    let Some((uid, gid)) = owner else {
        return Ok(());
    };
    let given = fchown(
        fd.as_fd(),
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
    )
    .and_then(|()| fchmod(fd.as_fd(), mode));
    let Err(errno) = given else {
        return Ok(());
    };
    if let Ok(st) = nix::sys::stat::fstat(fd) {
        let ours = FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        };
        if current_id(dir, name).ok().flatten() == Some(ours) {
            let _ = nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir);
        }
    }
    let e = std::io::Error::from(errno);
    Err(Error::Io(std::io::Error::new(
        e.kind(),
        format!(
            "cannot give the new mailbox {} to uid {uid} gid {gid}: {e}",
            path.display()
        ),
    )))
}

/// Errors with which a file system says it cannot take fcntl locks at
/// all: `ENOLCK` (an NFS server without lock support), `EOPNOTSUPP` and
/// `ENOSYS` (file systems without the operation).
fn cannot_lock(errno: Errno) -> bool {
    matches!(errno, Errno::ENOLCK | Errno::EOPNOTSUPP | Errno::ENOSYS)
}

/// Wait for the fcntl lock within `wait`, polling with backoff: a blocking
/// `F_SETLKW` cannot honour a deadline. `Ok(Err(errno))` when the file
/// system cannot fcntl-lock (see [`cannot_lock`]).
fn wait_record_lock(
    file: &File,
    kind: LockKind,
    wait: Wait,
) -> Result<std::result::Result<RecordLockFlavor, Errno>> {
    let mut retry = Retry::new(wait, Backoff::default());
    loop {
        match record_lock::try_lock(file, kind) {
            Ok((true, flavor)) => return Ok(Ok(flavor)),
            Ok((false, _)) => {}
            Err(errno) if cannot_lock(errno) => return Ok(Err(errno)),
            Err(errno) => return Err(Error::Io(errno.into())),
        }
        let busy = Error::Lock(LockError::Busy { holder: None });
        std::thread::sleep(pause_or_give_up(&mut retry, busy)?);
    }
}

/// After an attempt that found a lock busy (`busy`): the pause before the
/// next one, or the error to give up with once `retry` is spent (`busy`
/// itself when the policy is not to wait; otherwise busy, or a timeout
/// once a deadline passed, naming `busy`'s holder).
fn pause_or_give_up(retry: &mut Retry, busy: Error) -> Result<Duration> {
    if retry.remaining() == Wait::NoWait {
        return Err(busy);
    }
    let holder = match &busy {
        Error::Lock(e) => e.holder().cloned(),
        _ => None,
    };
    retry.next_pause(holder).map_err(Error::Lock)
}

fn notify(opts: &MailboxOptions, event: &Event) {
    if let Some(observer) = &opts.lock.observer {
        observer(event);
    }
}

/// The append mark of the lock protecting `target`, if that lock is stale
/// (its holder is gone or it was not refreshed): a live holder's mark
/// means nothing.
fn peek_stale_mark(target: &LockTarget, opts: &LockOptions) -> Option<(AppendMark, u32)> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(target.path())
        .ok()?;
    let mut raw = vec![0u8; spoollock_lockfile::MAX_CONTENT];
    let n = file.read_at(&mut raw, 0).ok()?;
    let mark = spoollock_lockfile::LockContent::parse(&raw[..n]).append?;
    let owner = file.metadata().ok()?.uid();
    matches!(lock_state(target, opts), Ok(LockState::Stale(..))).then_some((mark, owner))
}

/// True if the bytes from `offset` to `size` hold a line-start `From `
/// after the first separator line, i.e. a message that is not the one
/// being appended at `offset`.
fn starts_another_message(file: &File, offset: u64, size: u64) -> Result<bool> {
    const CHUNK: usize = 64 * 1024;
    const NEEDLE: &[u8] = b"\nFrom ";
    let mut pos = offset;
    let mut carry: Vec<u8> = Vec::new();
    // Skip the padding newlines and the entry's own separator line.
    let mut in_first_line = true;
    let mut skipped_padding = false;
    while pos < size {
        let want = CHUNK.min((size - pos) as usize);
        let mut buf = vec![0u8; want];
        file.read_exact_at(&mut buf, pos)?;
        pos += want as u64;
        let mut data = &buf[..];
        if in_first_line {
            if !skipped_padding {
                let pad = data.iter().take_while(|&&b| b == b'\n').count();
                data = &data[pad..];
                skipped_padding = !data.is_empty();
            }
            match data.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    in_first_line = false;
                    data = &data[end..];
                }
                None => continue,
            }
        }
        carry.extend_from_slice(data);
        if carry.windows(NEEDLE.len()).any(|w| w == NEEDLE) {
            return Ok(true);
        }
        let keep = carry.len().saturating_sub(NEEDLE.len() - 1);
        carry.drain(..keep);
    }
    Ok(false)
}
