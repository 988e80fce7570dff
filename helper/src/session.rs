//! One client session: handshake, then requests answered in order until
//! `Bye` or end of file. A session lock lives exactly as long as the
//! session; the helper refreshes it while it is held.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::{fstatat, FileStat, SFlag};
use spoollock_lockfile::{
    acquire, check, private_aside_name, process_state, remove_by_name, touch_by_name, BreakOutcome,
    Dotlock, Holder, Journal, LockContent, LockDir, LockError, Options, Owners, PidMode, ProcState,
    Release, StaleReason, Wait, MAX_CONTENT,
};
use spoollock_protocol::codec::{encode, frame_complete, Frame, PREFIX_LEN};
use spoollock_protocol::limits::{
    DEFAULT_STALE_AGE_SECS, MAX_GRANTED_PER_SESSION, MAX_REFUSED_PER_SESSION, MAX_STALE_AGE_SECS,
    MIN_STALE_AGE_SECS,
};
use spoollock_protocol::{
    exit, read_frame, CodecError, ConfigProblem, FrameProblem, Hello, HolderInfo, LockInfo,
    LockMode, LockRequest, LockStatus, Op, Refusal, Reply, Request, SessionInfo, Target, WaitSpec,
    Welcome, MAX_FRAME, PROTOCOL_VERSION,
};

use crate::audit::{Audit, Class};
use crate::config::ConfigError;
use crate::holder::{live_session, SessionHolder};
use crate::policy::{self, Caller};
use crate::privilege::GroupPrivilege;
use crate::sweep;

/// The longest pause between two refreshes of a held session lock.
const MAX_REFRESH: Duration = Duration::from_secs(60);

/// Audit fields collected while a request is handled.
type Fields = Vec<(&'static str, String)>;

/// The shared audit handle (the lockfile observer reports through it too).
pub type SharedAudit = Arc<Mutex<Audit>>;

fn record(audit: &SharedAudit, class: Class, op: &str, result: &str, fields: &[(&str, String)]) {
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    audit
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .record(class, op, result, &fields);
}

/// Send the record of intent for a change to a spool (`op`,
/// `result=intent`); false when it could not be sent: the change must then
/// not be made.
fn intend(audit: &SharedAudit, op: &str, fields: &[(&str, String)]) -> bool {
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    audit
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .record_checked(Class::Intent, op, "intent", &fields)
}

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

/// The session lock the helper holds for its client.
#[derive(Debug)]
struct Held {
    lock: Dotlock,
    spool: usize,
    stale_age: Duration,
}

/// What to do after a request.
enum Step {
    Continue,
    End(i32),
}

/// The session state.
#[derive(Debug)]
pub struct Session {
    audit: SharedAudit,
    privilege: Arc<GroupPrivilege>,
    /// The client's requests. Buffered: requests the client sent together
    /// are read with one `read` (the buffer's size is fixed; the codec
    /// still checks each frame's length before allocating or decoding),
    /// and a frame is decoded only once all of it is here, so that a
    /// client that sends half a frame never blocks the session (its lock
    /// is still refreshed).
    input: Inbox,
    output: Outbox,
    /// Readable when the client sends something or goes away: ends waits.
    interrupt: Arc<OwnedFd>,
    caller: Option<Caller>,
    spools: Vec<String>,
    held: Option<Held>,
    /// The spool whose session lock was lost (removed by someone else).
    lost: Option<usize>,
    /// Spools already swept of the caller's dead temporary files.
    swept: Vec<usize>,
    /// This session's own name to move the caller's locks aside to, for
    /// breaks and releases alike: never shared with another session (see
    /// `lockfile::private_aside_name`).
    aside: std::ffi::OsString,
    /// Set when a lock operation broke a stale lock: a dead helper was
    /// here, and may have left files (see `lock`).
    broke_stale: Arc<AtomicBool>,
    /// No user is named `<login>.lock` (looked up at the first request of
    /// the session that names the lock).
    no_namesake: bool,
    /// Spools opened and checked in this session, by index: the checks
    /// hold for the descriptor (the directory cannot be swapped under it),
    /// so a session checks each spool once.
    opened: Vec<(usize, LockDir)>,
    /// Requests refused so far, by result keyword (see `limits`).
    refused: Vec<(&'static str, u32)>,
    /// Locks granted so far.
    granted: u32,
}

impl Session {
    /// A session reading requests from `input` and writing replies to
    /// `output`: the client's pipes in the helper. Waits end when `input`
    /// becomes readable (the client sent more, or went away).
    pub fn new(
        audit: SharedAudit,
        privilege: Arc<GroupPrivilege>,
        input: OwnedFd,
        output: OwnedFd,
    ) -> Result<Session, Errno> {
        let interrupt = Arc::new(input.try_clone().map_err(io_errno)?);
        Ok(Session {
            audit,
            privilege,
            input: Inbox::new(File::from(input)),
            output: Outbox {
                pipe: File::from(output),
                pending: Vec::new(),
                broken: false,
            },
            interrupt,
            caller: None,
            spools: Vec::new(),
            held: None,
            lost: None,
            swept: Vec::new(),
            aside: private_aside_name(),
            broke_stale: Arc::default(),
            no_namesake: false,
            opened: Vec::new(),
            refused: Vec::new(),
            granted: 0,
        })
    }

    /// Run the session to its end for the caller `login` (the password
    /// database's answer for the real uid) with the configured `spools`;
    /// the helper's exit status.
    pub fn run(
        mut self,
        login: Result<String, Refusal>,
        spools: Result<Vec<String>, ConfigError>,
    ) -> i32 {
        let code = self.serve(login, spools);
        // Whatever way the session ended, the replies owed go out.
        let _ = self.output.flush();
        code
    }

    fn serve(
        &mut self,
        login: Result<String, Refusal>,
        spools: Result<Vec<String>, ConfigError>,
    ) -> i32 {
        if let Err(code) = self.handshake() {
            return code;
        }
        if let Err(refusal) = self.start(login, spools) {
            self.audit_refusal("start", &refusal, &Vec::new());
            let _ = self.output.queue(&Reply::Error(refusal));
            return exit::REFUSED;
        }
        loop {
            // Until a whole frame (or one the codec refuses from its prefix
            // alone) is here, wait for the client, refreshing a held lock
            // meanwhile: half a frame is no reason to stop refreshing.
            while !self.frame_buffered() {
                // About to wait for the client: send the replies owed first.
                if self.output.flush().is_err() {
                    return self.end("client-gone", exit::OK);
                }
                if !self.wait_for_request() {
                    continue;
                }
                match self.input.fill() {
                    Ok(0) | Err(_) => break, // end of file or a failed read: reported below
                    Ok(_) => {}
                }
            }
            // Never blocks: either a whole frame is buffered, or the pipe
            // is at its end (or failed) and the codec says how.
            let request = match read_frame::<_, Request>(&mut self.input) {
                Ok(request) => request,
                Err(CodecError::Closed) => return self.end("eof", exit::OK),
                Err(e) => return self.bad_frame(&e),
            };
            match self.dispatch(request) {
                Step::Continue => {}
                Step::End(code) => return code,
            }
        }
    }

    fn handshake(&mut self) -> Result<(), i32> {
        let hello = match read_frame::<_, Hello>(&mut self.input) {
            Ok(hello) => hello,
            Err(e) => {
                let problem = e.problem().unwrap_or(FrameProblem::Truncated);
                self.audit_refusal(
                    "hello",
                    &Refusal::BadFrame(problem),
                    &vec![("detail", e.to_string())],
                );
                let _ = self.output.queue(&Welcome::answer(&bogus_hello()));
                return Err(exit::REFUSED);
            }
        };
        let welcome = Welcome::answer(&hello);
        if !welcome.accepted {
            let refusal = if hello.magic == spoollock_protocol::MAGIC {
                Refusal::VersionMismatch {
                    client: hello.version,
                    helper: PROTOCOL_VERSION,
                }
            } else {
                Refusal::BadFrame(FrameProblem::BadHello)
            };
            self.audit_refusal("hello", &refusal, &Vec::new());
            let _ = self.output.queue(&welcome);
            return Err(exit::REFUSED);
        }
        self.output.queue(&welcome).map_err(|_| exit::REFUSED)
    }

    fn start(
        &mut self,
        login: Result<String, Refusal>,
        spools: Result<Vec<String>, ConfigError>,
    ) -> Result<(), Refusal> {
        let uid = nix::unistd::getuid();
        let login = login?;
        if !policy::login_usable(&login) {
            return Err(Refusal::UnusableLogin);
        }
        self.spools = spools.map_err(|e| Refusal::BadConfig(ConfigProblem::from(&e)))?;
        self.caller = Some(Caller {
            uid,
            login: login.clone(),
        });
        let info = SessionInfo {
            uid: uid.as_raw(),
            login,
            helper_pid: std::process::id(),
            spools: self.spools.clone(),
        };
        self.output
            .queue(&Reply::Ready(info))
            .map_err(|_| Refusal::Io {
                op: Op::Wait,
                errno: Errno::EPIPE as i32,
            })
    }

    fn caller(&self) -> &Caller {
        self.caller.as_ref().expect("caller is set before requests")
    }

    /// Whether a whole frame (or one the codec refuses from its prefix
    /// alone) is already buffered, so reading it cannot block.
    fn frame_buffered(&self) -> bool {
        !matches!(frame_complete(self.input.buffered()), Ok(None))
    }

    /// Wait until the client sends something; while a session lock is
    /// held, wake up to refresh it. True when input is ready.
    fn wait_for_request(&mut self) -> bool {
        let timeout = match &self.held {
            // Nothing to refresh: the read itself waits.
            None => return true,
            Some(held) => {
                let every = (held.stale_age / 5).clamp(Duration::from_secs(1), MAX_REFRESH);
                PollTimeout::try_from(every.as_millis()).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = [PollFd::new(self.input.pipe.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) => {
                self.refresh();
                false
            }
            Ok(_) => true,
            Err(Errno::EINTR) => false,
            // A poll failure on our own pipe: let the read report it.
            Err(_) => true,
        }
    }

    fn refresh(&mut self) {
        let Some(held) = &self.held else {
            return;
        };
        if let Err(e) = held.lock.touch() {
            let mut fields = vec![
                ("spool", self.spools[held.spool].clone()),
                ("lock", policy::lock_name(&self.caller().login)),
                ("error", e.to_string()),
            ];
            if e == LockError::NotOurs {
                let held = self.held.take().expect("checked above");
                self.lost = Some(held.spool);
                held.lock.leak();
                fields.push(("state", "lost".into()));
            }
            record(&self.audit, Class::Failure, "refresh", "failed", &fields);
        }
    }

    fn bad_frame(&mut self, e: &CodecError) -> i32 {
        let problem = e.problem().unwrap_or(FrameProblem::Truncated);
        let refusal = Refusal::BadFrame(problem);
        self.audit_refusal("request", &refusal, &vec![("detail", e.to_string())]);
        let _ = self.output.queue(&Reply::Error(refusal));
        self.end("bad-frame", exit::REFUSED)
    }

    /// End the session: release the session lock, if any.
    fn end(&mut self, trigger: &str, code: i32) -> i32 {
        if let Some(held) = self.held.take() {
            let mut fields = vec![
                ("spool", self.spools[held.spool].clone()),
                ("lock", policy::lock_name(&self.caller().login)),
                ("trigger", trigger.to_owned()),
            ];
            if !intend(&self.audit, "release", &fields) {
                // Left as it is: it names this helper, whose end makes it
                // stale at once for the next locker.
                held.lock.leak();
                fields.push(("error", Refusal::AuditUnavailable.to_string()));
                record(&self.audit, Class::Failure, "release", "failed", &fields);
                return code;
            }
            match held.lock.release() {
                Ok(()) => record(&self.audit, Class::Release, "release", "released", &fields),
                Err(e) => {
                    fields.push(("error", e.to_string()));
                    record(&self.audit, Class::Failure, "release", "failed", &fields);
                }
            }
        }
        code
    }

    fn audit_refusal(&self, op: &str, refusal: &Refusal, fields: &Fields) {
        let class = if refusal.is_policy() {
            Class::Refusal
        } else {
            Class::Failure
        };
        let mut fields = fields.clone();
        fields.push(("error", refusal.to_string()));
        record(&self.audit, class, op, refusal.keyword(), &fields);
    }

    fn dispatch(&mut self, request: Request) -> Step {
        let op = match &request {
            Request::Lock(_) => "lock",
            Request::Touch(_) | Request::ForceTouch(_) => "touch",
            Request::Unlock(_) | Request::ForceUnlock(_) => "unlock",
            Request::Check(_) => "check",
            Request::Bye => "bye",
        };
        let refused = self.refused.iter().map(|(_, n)| n).sum::<u32>();
        let over = refused >= MAX_REFUSED_PER_SESSION
            || (op == "lock" && self.granted >= MAX_GRANTED_PER_SESSION);
        if over && op != "bye" {
            return Step::End(self.over_limit(op, refused));
        }
        let mut fields = Fields::new();
        let result = match request {
            Request::Lock(r) => self.lock(r, &mut fields),
            Request::Touch(t) => self.touch(&t, false, &mut fields),
            Request::ForceTouch(t) => self.touch(&t, true, &mut fields),
            Request::Unlock(t) => self.unlock(&t, false, &mut fields),
            Request::ForceUnlock(t) => self.unlock(&t, true, &mut fields),
            Request::Check(t) => self.check(&t, &mut fields),
            Request::Bye => {
                let code = self.end("bye", exit::OK);
                let _ = self.output.queue(&Reply::Bye);
                return Step::End(code);
            }
        };
        let reply = match result {
            Ok(reply) => {
                match &reply {
                    Reply::Locked(_) => {
                        self.granted += 1;
                        record(&self.audit, Class::Grant, op, "granted", &fields)
                    }
                    Reply::Unlocked => {
                        fields.push(("trigger", "request".into()));
                        record(&self.audit, Class::Release, "release", "released", &fields)
                    }
                    _ => {}
                }
                reply
            }
            Err(refusal) => {
                self.audit_refusal(op, &refusal, &fields);
                let keyword = refusal.keyword();
                match self.refused.iter_mut().find(|(k, _)| *k == keyword) {
                    Some((_, n)) => *n += 1,
                    None => self.refused.push((keyword, 1)),
                }
                Reply::Error(refusal)
            }
        };
        match self.output.queue(&reply) {
            Ok(()) => Step::Continue,
            Err(_) => Step::End(self.end("client-gone", exit::OK)),
        }
    }

    /// The session asked for more than one session may (see `limits`):
    /// one final record with the counts, the request refused with
    /// [`Refusal::SessionLimit`], and the session ends (a held lock is
    /// released). A client that floods the helper with refused requests
    /// thus leaves at most `MAX_REFUSED_PER_SESSION` + 1 refusal records.
    fn over_limit(&mut self, op: &str, refused: u32) -> i32 {
        let refusal = Refusal::SessionLimit {
            refused,
            granted: self.granted,
        };
        let results = self
            .refused
            .iter()
            .map(|(k, n)| format!("{k}:{n}"))
            .collect::<Vec<_>>()
            .join(",");
        let fields = vec![
            ("request", op.to_owned()),
            ("refused", refused.to_string()),
            ("granted", self.granted.to_string()),
            ("refused_by_result", results),
        ];
        self.audit_refusal("session", &refusal, &fields);
        let _ = self.output.queue(&Reply::Error(refusal));
        self.end("session-limit", exit::REFUSED)
    }

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

    fn lock(&mut self, req: LockRequest, fields: &mut Fields) -> Result<Reply, Refusal> {
        if self.held.is_some() {
            return Err(Refusal::AlreadyLocked);
        }
        let (index, dir) = self.prepare(&req.target, fields)?;
        let secs = req.stale_age_secs.unwrap_or(DEFAULT_STALE_AGE_SECS);
        if !(MIN_STALE_AGE_SECS..=MAX_STALE_AGE_SECS).contains(&secs) {
            return Err(Refusal::StaleAgeOutOfRange {
                min_secs: MIN_STALE_AGE_SECS,
                max_secs: MAX_STALE_AGE_SECS,
            });
        }
        let stale_age = Duration::from_secs(secs.into());
        policy::check_mailbox(&dir, self.caller()).map_err(Refusal::Mailbox)?;
        let (pid_mode, pid, detached) = match req.mode {
            LockMode::Session => (PidMode::Own, Some(std::process::id()), false),
            LockMode::Detached { holder_pid: None } => (PidMode::None, None, true),
            LockMode::Detached {
                holder_pid: Some(p),
            } => {
                let alive = p > 1
                    && p <= i32::MAX as u32
                    && matches!(process_state(p), ProcState::Alive { .. });
                if !alive {
                    return Err(Refusal::BadHolderPid { pid: p });
                }
                (PidMode::Pid(p), Some(p), true)
            }
        };
        fields.push(("mode", if detached { "detached" } else { "session" }.into()));
        fields.push(("wait", describe_wait(req.wait)));
        let mut opts = self.options(index, stale_age);
        opts.pid_mode = pid_mode;
        opts.wait = Wait::from(req.wait);
        if !matches!(req.wait, WaitSpec::NoWait) {
            // The wait may be long: the replies owed go out first (a
            // failure shows again at the next flush).
            let _ = self.output.flush();
            if !self.input.buffered().is_empty() {
                // The client has already sent more, read ahead into our
                // buffer where the pipe no longer shows it: that ends the
                // wait at once, as it would have on the pipe.
                opts.interrupt = Some(Arc::new(already_readable().map_err(|errno| {
                    Refusal::Io {
                        op: Op::Wait,
                        errno: errno as i32,
                    }
                })?));
            }
        }
        let name = policy::lock_name(&self.caller().login);
        // The caller's dead temporary files, which the caller cannot remove
        // (see `sweep`): swept once per spool in every session, before the
        // first attempt there (so that killing helpers early never skips
        // it). A helper killed at the wrong moment leaves one: where
        // temporary files are named (NFS), its temporary file; everywhere,
        // a lock it was moving aside, at its session's own aside name
        // (`.lk<pid>.<random>.<host>.stale`, which no other session moves
        // anything to: see `lockfile::private_aside_name`). Again after an
        // attempt that broke a stale lock (a helper killed between `link`
        // and unlinking its named temporary file leaves it linked to its
        // stale lock until that lock is broken). Another user's files cost
        // the sweep one `fstatat` each, and only where their name has the
        // temporary form.
        if !self.swept.contains(&index) {
            self.swept.push(index);
            self.sweep(index, &dir);
        }
        self.broke_stale.store(false, Ordering::Relaxed);
        if !intend(&self.audit, "lock", fields) {
            return Err(Refusal::AuditUnavailable);
        }
        let acquired = acquire(&dir, name.as_ref(), &opts);
        if self.broke_stale.load(Ordering::Relaxed) {
            self.sweep(index, &dir);
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
            lock.leak();
        } else {
            self.held = Some(Held {
                lock,
                spool: index,
                stale_age,
            });
            self.lost = None;
        }
        Ok(Reply::Locked(info))
    }

    /// Remove the caller's dead temporary files from spool `index`, each
    /// announced by a record of intent (none sent: the sweep stops) and
    /// followed by its outcome; what could not even be looked at is
    /// recorded as failed.
    fn sweep(&self, index: usize, dir: &LockDir) {
        let uid = self.caller().uid.as_raw();
        let spool = self.spools[index].clone();
        sweep::sweep(dir, uid, &*self.privilege, &mut |name: &str, step| {
            let mut fields = vec![("spool", spool.clone()), ("name", name.to_owned())];
            let (class, result) = match step {
                sweep::Step::Intent => return intend(&self.audit, "cleanup", &fields),
                sweep::Step::Removed => (Class::Release, "removed"),
                sweep::Step::Vanished => (Class::Release, "vanished"),
                sweep::Step::Failed(errno) | sweep::Step::Unlisted(errno) => {
                    fields.push(("error", errno.desc().into()));
                    (Class::Failure, "failed")
                }
            };
            record(&self.audit, class, "cleanup", result, &fields);
            true
        });
    }

    fn touch(
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
                    held.lock.leak();
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

    fn unlock(
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
    fn check(&mut self, target: &Target, fields: &mut Fields) -> Result<Reply, Refusal> {
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

/// The replies owed to the client. They are written when the helper is
/// about to wait (for the client's next request, or for a busy lock) and
/// when the session ends, so the replies to requests the client sent
/// together leave in one `write`. Each reply is queued only after its
/// audit record was sent. What is pending is bounded: the replies to the
/// requests of one input buffer.
#[derive(Debug)]
struct Outbox {
    pipe: File,
    pending: Vec<u8>,
    /// A write failed: the client is gone, every later flush fails too.
    broken: bool,
}

impl Outbox {
    fn queue<T: Frame>(&mut self, msg: &T) -> Result<(), CodecError> {
        let frame = encode(msg)?;
        self.pending.extend_from_slice(&frame);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.broken {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        let written = self.pipe.write_all(&self.pending);
        self.pending.clear();
        self.broken = written.is_err();
        written
    }
}

/// The client's requests as read from its pipe: one fixed buffer, large
/// enough for the largest frame, refilled after what it still holds.
#[derive(Debug)]
struct Inbox {
    pipe: File,
    buf: Box<[u8]>,
    /// The unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
}

impl Inbox {
    fn new(pipe: File) -> Inbox {
        Inbox {
            pipe,
            buf: vec![0; PREFIX_LEN + MAX_FRAME].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// The bytes read from the pipe and not yet consumed.
    fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// One `read` from the pipe, after the bytes already buffered (moved
    /// to the front first): the number of bytes read, 0 at end of file.
    /// Once a frame's prefix is here the rest of the frame fits.
    fn fill(&mut self) -> std::io::Result<usize> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // Only a whole frame fills the buffer; it is read first.
            return Err(std::io::ErrorKind::OutOfMemory.into());
        }
        loop {
            match self.pipe.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Reads what is buffered first, and reads the pipe only when nothing is.
impl Read for Inbox {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.fill()? == 0 {
                return Ok(0);
            }
        }
        let n = out.len().min(self.end - self.start);
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        Ok(n)
    }
}

/// A hello that is never accepted, to answer a client whose hello did not
/// decode.
fn bogus_hello() -> Hello {
    Hello {
        magic: [0; 8],
        version: 0,
    }
}

/// A descriptor that always polls readable: a pipe holding one byte.
fn already_readable() -> Result<OwnedFd, Errno> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    nix::unistd::write(&write, b"x")?;
    Ok(read)
}

fn io_errno(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(Errno::EIO as i32))
}

/// The audit's `mode` field of a by-name touch or unlock.
fn by_name(force: bool) -> String {
    if force { "by-name-forced" } else { "by-name" }.into()
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

/// [`refusal_of`], telling apart what sits at the lock name when the lock
/// crate says it is no lock: a symlink or another kind of file, or a
/// regular file too large to be a lock (and whose).
fn not_a_lock(dir: &LockDir, name: &str, e: LockError) -> Refusal {
    if e != LockError::NotRegularFile {
        return refusal_of(e);
    }
    match fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st)
            if st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFREG
                && st.st_size > MAX_CONTENT as i64 =>
        {
            Refusal::LockTooLarge {
                size: u64::try_from(st.st_size).unwrap_or(0),
                owner: st.st_uid,
                max: MAX_CONTENT as u32,
            }
        }
        _ => Refusal::LockNotRegular,
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

/// The refusal for a file of `owner` at the lock name.
fn foreign(owner: u32) -> Refusal {
    Refusal::ForeignLockFile {
        owner_uid: owner,
        owner_login: policy::printable_login(owner),
    }
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

/// The refusal a lockfile error becomes.
pub fn refusal_of(e: LockError) -> Refusal {
    match e {
        LockError::Busy { holder } => Refusal::Busy {
            holder: holder.as_deref().map(HolderInfo::from),
        },
        LockError::Timeout { holder } => Refusal::Timeout {
            holder: holder.as_deref().map(HolderInfo::from),
        },
        LockError::NameTooLong | LockError::InvalidName => Refusal::UnusableLogin,
        LockError::Permission { op, errno } => Refusal::Permission {
            op,
            errno: errno as i32,
        },
        LockError::TempWrite { errno } => Refusal::TempWrite {
            errno: errno as i32,
        },
        LockError::NotRegularFile => Refusal::LockNotRegular,
        LockError::NotOurs => Refusal::NotOurs,
        LockError::StaleNotRemoved { errno } => Refusal::StaleNotRemoved {
            errno: errno as i32,
        },
        LockError::Interrupted => Refusal::Cancelled,
        LockError::Io { op, errno } => Refusal::Io {
            op,
            errno: errno as i32,
        },
        LockError::ForeignLock { owner } => foreign(owner),
        LockError::Vetoed => Refusal::AuditUnavailable,
    }
}
