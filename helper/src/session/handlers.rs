//! The requests: lock, touch, unlock and check, each with its checks (the
//! target, the spool, the caller's mailbox, whose file is at the lock
//! name) and its audit records (intent before a change, outcome after).

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::stat::{fstatat, FileStat, SFlag};
use spoollock_lockfile::{
    acquire, check, process_state, remove_by_name, touch_by_name, BreakOutcome, Holder, Journal,
    LockContent, LockDir, LockError, Options, Owners, PidMode, ProcState, Release, StaleReason,
    Wait,
};
use spoollock_protocol::limits::{DEFAULT_STALE_AGE_SECS, MAX_STALE_AGE_SECS, MIN_STALE_AGE_SECS};
use spoollock_protocol::{
    LockInfo, LockMode, LockRequest, LockStatus, Op, Refusal, Reply, Target, WaitSpec,
};

use super::convert::{foreign, not_a_lock, refusal_of};
use super::{intend, record, Fields, Held, Session, SharedAudit};
use crate::audit::Class;
use crate::holder::{live_session, SessionHolder};
use crate::policy;
use crate::sweep;

/// The audit side of stale-lock breaking: the intent before the lock is
/// moved aside (no record sent, no break), the outcome after.
struct BreakRecords {
    audit: SharedAudit,
    /// The spool and lock the break is in.
    place: Fields,
    /// Set when a stale lock was removed: a dead helper was here, and may
    /// have left files (see `Session::lock`).
    broke_stale: Arc<AtomicBool>,
}

impl Journal for BreakRecords {
    fn before_break(&self, holder: &Holder, reason: StaleReason, aside: &std::ffi::OsStr) -> bool {
        let mut fields = self.place.clone();
        fields.extend(holder_fields(holder));
        fields.push(("reason", reason.to_string()));
        fields.push(("aside", aside.to_string_lossy().into_owned()));
        intend(&self.audit, "break-stale", &fields)
    }

    fn after_break(&self, holder: &Holder, reason: StaleReason, outcome: &BreakOutcome) {
        let mut fields = self.place.clone();
        fields.extend(holder_fields(holder));
        fields.push(("reason", reason.to_string()));
        let (class, result) = match outcome {
            BreakOutcome::Removed => {
                self.broke_stale.store(true, Ordering::Relaxed);
                (Class::Release, "removed")
            }
            BreakOutcome::Vanished => (Class::Release, "vanished"),
            BreakOutcome::PutBack => (Class::Failure, "put-back"),
            BreakOutcome::LeftAside => (Class::Failure, "left-aside"),
            BreakOutcome::Failed(e) => {
                fields.push(("error", e.to_string()));
                (Class::Failure, "failed")
            }
        };
        record(&self.audit, class, "break-stale", result, &fields);
    }
}

impl Session {
    /// Check the target and open its spool.
    fn prepare(
        &mut self,
        target: &Target,
        fields: &mut Fields,
    ) -> Result<(usize, LockDir), Refusal> {
        if let Some(name) = &target.mailbox {
            fields.push(("requested", name.clone()));
        }
        if let spoollock_protocol::SpoolSel::Path(p) = &target.spool {
            fields.push(("requested_spool", p.clone()));
        }
        policy::check_requested(target, self.caller())?;
        let index = policy::select(&target.spool, &self.spools)?;
        fields.push(("spool", self.spools[index].clone()));
        fields.push(("lock", policy::lock_name(&self.caller().login)));
        // The lock name must not be another user's mailbox name.
        if !self.no_namesake {
            policy::check_no_namesake(&self.caller().login)?;
            self.no_namesake = true;
        }
        if let Some((_, dir)) = self.opened.iter().find(|(i, _)| *i == index) {
            return Ok((index, dir.clone()));
        }
        let dir = policy::open_spool(&self.spools[index], self.privilege.group())
            .map_err(Refusal::Spool)?;
        self.opened.push((index, dir.clone()));
        Ok((index, dir))
    }

    /// The lockfile options for the caller's lock in spool `index`: the
    /// helper's privilege; only the caller's and root's files are locks
    /// (root-run delivery agents lock as root); this session's aside name;
    /// every break announced in the audit trail first.
    fn options(&self, index: usize, stale_age: Duration) -> Options {
        let uid = self.caller().uid.as_raw();
        let journal = BreakRecords {
            audit: self.audit.clone(),
            place: vec![
                ("spool", self.spools[index].clone()),
                ("lock", policy::lock_name(&self.caller().login)),
            ],
            broke_stale: self.broke_stale.clone(),
        };
        Options {
            stale_age,
            privilege: Some(self.privilege.clone()),
            interrupt: Some(self.interrupt.clone()),
            owners: Owners::Only(vec![uid, 0]),
            aside: Some(self.aside.clone()),
            // The caller controls this process's scheduling: no window
            // between a check and a removal (see `Release`).
            release: Release::MoveAside,
            journal: Some(Arc::new(journal)),
            ..Options::default()
        }
    }

    pub(super) fn lock(&mut self, req: LockRequest, fields: &mut Fields) -> Result<Reply, Refusal> {
        if self.held.is_some() {
            return Err(Refusal::AlreadyLocked);
        }
        let (index, dir) = self.prepare(&req.target, fields)?;
        let secs = stale_age_secs(req.stale_age_secs)?;
        let stale_age = Duration::from_secs(secs.into());
        policy::check_mailbox(&dir, self.caller()).map_err(Refusal::Mailbox)?;
        let (pid_mode, pid, detached) = lock_mode(req.mode)?;
        fields.push(("mode", if detached { "detached" } else { "session" }.into()));
        fields.push(("wait", describe_wait(req.wait)));
        let mut opts = self.options(index, stale_age);
        opts.pid_mode = pid_mode;
        opts.wait = Wait::from(req.wait);
        if !matches!(req.wait, WaitSpec::NoWait) {
            self.before_waiting(&mut opts)?;
        }
        let name = policy::lock_name(&self.caller().login);
        let swept_now = self.sweep_before_lock(index, &dir);
        self.broke_stale.store(false, Ordering::Relaxed);
        if !intend(&self.audit, "lock", fields) {
            return Err(Refusal::AuditUnavailable);
        }
        let acquired = acquire(&dir, name.as_ref(), &opts);
        if !swept_now {
            self.sweep_after_lock(index, &dir);
        }
        let lock = acquired.map_err(|e| not_a_lock(&dir, &name, e))?;
        let info = LockInfo {
            spool: self.spools[index].clone(),
            name,
            pid,
            detached,
            stale_age_secs: secs,
        };
        if detached {
            lock.detach();
        } else {
            self.held = Some(Held {
                lock,
                spool: index,
                stale_age,
                refreshed: Instant::now(),
            });
            self.lost = None;
        }
        Ok(Reply::Locked(info))
    }

    /// Before a wait that may be long: the replies owed go out first (a
    /// failure shows again at the next flush), and input already read
    /// ahead ends the wait at once.
    fn before_waiting(&mut self, opts: &mut Options) -> Result<(), Refusal> {
        let _ = self.output.flush();
        if !self.input.buffered().is_empty() {
            // The client has already sent more, read ahead into our
            // buffer where the pipe no longer shows it: that ends the
            // wait at once, as it would have on the pipe.
            let readable = already_readable().map_err(|errno| Refusal::Io {
                op: Op::Wait,
                errno: errno as i32,
            })?;
            opts.interrupt = Some(Arc::new(readable));
        }
        Ok(())
    }

    /// The caller's dead temporary files, which the caller cannot remove
    /// (see `sweep`): swept once per spool in every session, before the
    /// first attempt there (so that killing helpers early never skips
    /// it). A helper killed at the wrong moment leaves one: where
    /// temporary files are named (NFS), its temporary file; everywhere, a
    /// lock it was moving aside, at its session's own aside name
    /// (`.lk<pid>.<random>.<host>.stale`, which no other session moves
    /// anything to: see `lockfile::private_aside_name`). Again after an
    /// attempt that broke a stale lock (see `sweep_after_lock`). Another
    /// user's files cost the sweep one `fstatat` each, and only where
    /// their name has the temporary form.
    /// True when it swept now. A sweep cut short because a record of
    /// intent could not be sent is tried again at the next lock.
    fn sweep_before_lock(&mut self, index: usize, dir: &LockDir) -> bool {
        if self.swept.contains(&index) {
            return false;
        }
        if self.sweep(index, dir) {
            self.swept.push(index);
        }
        true
    }

    /// After an attempt that broke a stale lock, in a request that did not
    /// sweep before it (a later lock of the session): the helper that held
    /// that lock may have died leaving files, as any killed helper may.
    fn sweep_after_lock(&self, index: usize, dir: &LockDir) {
        if self.broke_stale.load(Ordering::Relaxed) {
            self.sweep(index, dir);
        }
    }

    /// Remove the caller's dead temporary files from spool `index`, each
    /// announced by a record of intent (none sent: the sweep stops, and
    /// says so in a failure record if it can) and followed by its outcome;
    /// what could not even be looked at is recorded as failed. False when
    /// the sweep stopped for want of a record.
    fn sweep(&self, index: usize, dir: &LockDir) -> bool {
        let uid = self.caller().uid.as_raw();
        let spool = self.spools[index].clone();
        let mut complete = true;
        sweep::sweep(dir, uid, &*self.privilege, &mut |name: &str, step| {
            let mut fields = vec![("spool", spool.clone()), ("name", name.to_owned())];
            let (class, result) = match step {
                sweep::Step::Intent if intend(&self.audit, "cleanup", &fields) => return true,
                sweep::Step::Intent => {
                    complete = false;
                    fields.push(("error", Refusal::AuditUnavailable.to_string()));
                    (Class::Failure, "audit-unavailable")
                }
                sweep::Step::Removed => (Class::Release, "removed"),
                sweep::Step::Vanished => (Class::Release, "vanished"),
                sweep::Step::Failed(errno) | sweep::Step::Unlisted(errno) => {
                    fields.push(("error", errno.desc().into()));
                    (Class::Failure, "failed")
                }
            };
            record(&self.audit, class, "cleanup", result, &fields);
            complete
        });
        complete
    }

    pub(super) fn touch(
        &mut self,
        target: &Target,
        force: bool,
        fields: &mut Fields,
    ) -> Result<Reply, Refusal> {
        let (index, dir) = self.prepare(target, fields)?;
        if let Some(held) = self.held.as_ref().filter(|h| h.spool == index) {
            fields.push(("mode", "session".into()));
            return match held.lock.touch() {
                Ok(()) => Ok(Reply::Touched),
                Err(LockError::NotOurs) => {
                    let held = self.held.take().expect("checked above");
                    held.lock.detach();
                    self.lost = Some(index);
                    Err(Refusal::LockLost)
                }
                Err(e) => Err(refusal_of(e)),
            };
        }
        if self.lost == Some(index) {
            return Err(Refusal::LockLost);
        }
        fields.push(("mode", by_name(force)));
        let name = policy::lock_name(&self.caller().login);
        let uid = self.caller().uid.as_raw();
        ensure_not_foreign(&ensure_present(&dir, &name)?, uid)?;
        let guard = self.session_guard(force);
        touch_by_name(&dir, name.as_ref(), |content, owner| {
            owner == uid && guard.allows(content)
        })
        .map_err(|e| guard.refusal(&dir, &name, e))?;
        Ok(Reply::Touched)
    }

    /// What keeps a by-name touch or unlock off another live helper
    /// session's lock (unless `force`), and says whose it was.
    fn session_guard(&self, force: bool) -> SessionGuard {
        SessionGuard {
            check: (!force).then(|| (self.caller().uid.as_raw(), self.privilege.group())),
            found: std::cell::Cell::new(None),
        }
    }

    pub(super) fn unlock(
        &mut self,
        target: &Target,
        force: bool,
        fields: &mut Fields,
    ) -> Result<Reply, Refusal> {
        let (index, dir) = self.prepare(target, fields)?;
        if self.held.as_ref().is_some_and(|h| h.spool == index) {
            fields.push(("mode", "session".into()));
            let mut intent = fields.clone();
            intent.push(("trigger", "request".into()));
            if !intend(&self.audit, "release", &intent) {
                return Err(Refusal::AuditUnavailable);
            }
            let held = self.held.take().expect("checked above");
            return match held.lock.release() {
                Ok(()) => Ok(Reply::Unlocked),
                Err(LockError::NotOurs) => Err(Refusal::LockLost),
                Err(e) => Err(refusal_of(e)),
            };
        }
        if self.lost.take() == Some(index) {
            return Err(Refusal::LockLost);
        }
        fields.push(("mode", by_name(force)));
        let name = policy::lock_name(&self.caller().login);
        let uid = self.caller().uid.as_raw();
        ensure_not_foreign(&ensure_present(&dir, &name)?, uid)?;
        let mut intent = fields.clone();
        intent.push(("trigger", "request".into()));
        if !intend(&self.audit, "release", &intent) {
            return Err(Refusal::AuditUnavailable);
        }
        let opts = self.options(index, Duration::from_secs(DEFAULT_STALE_AGE_SECS.into()));
        let guard = self.session_guard(force);
        remove_by_name(&dir, name.as_ref(), &opts, |content, owner| {
            owner == uid && guard.allows(content)
        })
        .map_err(|e| guard.refusal(&dir, &name, e))?;
        Ok(Reply::Unlocked)
    }

    /// The lock's state, read with the caller's rights only: nothing is
    /// created in the spool (the lockfile crate would make a probe file to
    /// read the file system's clock; without the group it cannot, and the
    /// clock of a reading this session already took, or the local one, is
    /// used instead, as for any `check` on a directory the caller may not
    /// write).
    pub(super) fn check(&mut self, target: &Target, fields: &mut Fields) -> Result<Reply, Refusal> {
        let (index, dir) = self.prepare(target, fields)?;
        let name = policy::lock_name(&self.caller().login);
        let opts = Options {
            privilege: None,
            ..self.options(index, Duration::from_secs(DEFAULT_STALE_AGE_SECS.into()))
        };
        let state = check(&dir, name.as_ref(), &opts).map_err(|e| not_a_lock(&dir, &name, e))?;
        Ok(Reply::Status(LockStatus::from(&state)))
    }
}

/// Keeps a by-name touch or unlock off a lock that another live helper
/// session of the caller holds (see [`crate::holder`]).
struct SessionGuard {
    /// The caller's uid and the helper's group; `None` when forced.
    check: Option<(u32, nix::unistd::Gid)>,
    /// The session found holding the lock the request was refused for.
    found: std::cell::Cell<Option<SessionHolder>>,
}

impl SessionGuard {
    /// Whether the request may act on a lock with this content.
    fn allows(&self, content: &LockContent) -> bool {
        let Some((uid, group)) = self.check else {
            return true;
        };
        let holder = live_session(content, uid, group, std::process::id());
        self.found.set(holder);
        holder.is_none()
    }

    /// The refusal for `e`: a live session's lock says whose it is.
    fn refusal(&self, dir: &LockDir, name: &str, e: LockError) -> Refusal {
        match (e, self.found.get()) {
            (LockError::NotOurs, Some(holder)) => Refusal::HeldBySession {
                helper_pid: holder.helper_pid,
                client_pid: holder.client_pid,
            },
            (e, _) => not_a_lock(dir, name, e),
        }
    }
}

/// A by-name request for a lock that does not exist says so; what is
/// there otherwise.
fn ensure_present(dir: &LockDir, name: &str) -> Result<FileStat, Refusal> {
    match fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(st),
        Err(Errno::ENOENT) => Err(Refusal::NotLocked),
        Err(e) => Err(Refusal::Io {
            op: Op::Stat,
            errno: e as i32,
        }),
    }
}

/// A regular file at the lock name that another user owns (neither the
/// caller nor root) is not the caller's lock: refused, saying whose it is.
/// (The lockfile crate checks the owner again, on the file it acts on.)
fn ensure_not_foreign(st: &FileStat, caller: u32) -> Result<(), Refusal> {
    let regular = st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFREG.bits();
    if regular && st.st_uid != caller && st.st_uid != 0 {
        return Err(foreign(st.st_uid));
    }
    Ok(())
}

/// The audit's `mode` field of a by-name touch or unlock.
fn by_name(force: bool) -> String {
    if force { "by-name-forced" } else { "by-name" }.into()
}

fn describe_wait(wait: WaitSpec) -> String {
    match wait {
        WaitSpec::NoWait => "none".into(),
        WaitSpec::Retries(n) => format!("retries:{n}"),
        WaitSpec::TimeoutMs(ms) => format!("ms:{ms}"),
        WaitSpec::Forever => "forever".into(),
    }
}

fn holder_fields(holder: &Holder) -> Fields {
    let mut fields = Fields::new();
    fields.push((
        "holder_pid",
        holder
            .content
            .pid
            .map_or_else(|| "none".into(), |p| p.to_string()),
    ));
    if let Some(host) = &holder.content.host {
        fields.push(("holder_host", host.clone()));
    }
    fields
}

/// A descriptor that always polls readable: a pipe holding one byte.
fn already_readable() -> Result<OwnedFd, Errno> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    nix::unistd::write(&write, b"x")?;
    Ok(read)
}

/// The stale age a lock request asks for (the default when none), within
/// the limits.
fn stale_age_secs(asked: Option<u32>) -> Result<u32, Refusal> {
    let secs = asked.unwrap_or(DEFAULT_STALE_AGE_SECS);
    if !(MIN_STALE_AGE_SECS..=MAX_STALE_AGE_SECS).contains(&secs) {
        return Err(Refusal::StaleAgeOutOfRange {
            min_secs: MIN_STALE_AGE_SECS,
            max_secs: MAX_STALE_AGE_SECS,
        });
    }
    Ok(secs)
}

/// What a lock's content names, the pid in the reply, and whether it is
/// detached: a session lock names the helper; a detached one a live
/// process (not init) or none.
fn lock_mode(mode: LockMode) -> Result<(PidMode, Option<u32>, bool), Refusal> {
    match mode {
        LockMode::Session => Ok((PidMode::Own, Some(std::process::id()), false)),
        LockMode::Detached { holder_pid: None } => Ok((PidMode::None, None, true)),
        LockMode::Detached {
            holder_pid: Some(p),
        } => {
            let alive = p > 1
                && p <= i32::MAX as u32
                && matches!(process_state(p), ProcState::Alive { .. });
            if !alive {
                return Err(Refusal::BadHolderPid { pid: p });
            }
            Ok((PidMode::Pid(p), Some(p), true))
        }
    }
}
