//! One client session: handshake, then requests answered in order until
//! `Bye` or end of file. A session lock lives exactly as long as the
//! session; the helper refreshes it while it is held.
//!
//! By job:
//! - this module: the session loop (handshake, start, waiting for the
//!   next request while refreshing a held lock, dispatch, limits, end);
//! - `handlers`: each request (lock, touch, unlock, check) and the
//!   checks and audit records around it;
//! - `inbox` and `reply`: the client's pipes, buffered both ways;
//! - `convert`: lockfile errors as refusals.

mod convert;
mod handlers;
mod inbox;
mod reply;

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use spoollock_lockfile::{private_aside_name, Dotlock, LockDir, LockError};
use spoollock_protocol::codec::frame_complete;
use spoollock_protocol::limits::{MAX_GRANTED_PER_SESSION, MAX_REFUSED_PER_SESSION};
use spoollock_protocol::{
    exit, read_frame, CodecError, ConfigProblem, FrameProblem, Hello, Op, Refusal, Reply, Request,
    SessionInfo, Welcome, PROTOCOL_VERSION,
};

use crate::audit::{Audit, Class};
use crate::config::ConfigError;
use crate::policy::{self, Caller};
use crate::privilege::GroupPrivilege;

use convert::io_errno;
use inbox::Inbox;
use reply::Outbox;

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

/// The session lock the helper holds for its client.
#[derive(Debug)]
struct Held {
    lock: Dotlock,
    spool: usize,
    stale_age: Duration,
    /// When it was last refreshed (or taken), by the monotonic clock.
    refreshed: Instant,
}

/// A session dropped while it still holds its lock (a panic unwinding
/// through `run`; every other way out releases in `end`, after its record
/// of intent) leaves the lock where it is: removing it here would be a
/// change without its record. It names this helper, which is about to
/// exit, so the next locker finds it stale at once, as when the release's
/// intent could not be sent.
impl Drop for Session {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            held.lock.detach();
        }
    }
}

impl Held {
    /// How often a session lock is refreshed: a fifth of its stale age,
    /// at most [`MAX_REFRESH`] (60 s at the shortest stale age, 300 s).
    fn period(&self) -> Duration {
        (self.stale_age / 5).clamp(Duration::from_secs(1), MAX_REFRESH)
    }
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
            output: Outbox::new(File::from(output)),
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
            // A held lock is refreshed by the clock, whatever the client
            // does: a client that is never quiet for a whole period (a
            // byte of a frame or a `Check` now and then) must not starve
            // the refresh (the session model's `bug-busy-client`).
            self.refresh_if_due();
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
    /// held, wake up when its refresh is due and refresh it. True when
    /// input is ready.
    fn wait_for_request(&mut self) -> bool {
        let Some(due_in) = self.refresh_if_due() else {
            // Nothing to refresh: the read itself waits.
            return true;
        };
        // Rounded up, so that the wake-up does not come a little early
        // and find nothing due.
        let millis = due_in.as_nanos().div_ceil(1_000_000);
        let timeout = PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(self.input.pipe().as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) => {
                self.refresh_if_due();
                false
            }
            Ok(_) => true,
            Err(Errno::EINTR) => false,
            // A poll failure on our own pipe: let the read report it.
            Err(_) => true,
        }
    }

    /// Refresh the session lock if a period has passed since it was last
    /// refreshed; how long until the next refresh is due (`None`: no lock).
    fn refresh_if_due(&mut self) -> Option<Duration> {
        let held = self.held.as_ref()?;
        let since = held.refreshed.elapsed();
        if since < held.period() {
            return Some(held.period() - since);
        }
        self.refresh();
        self.held.as_ref().map(Held::period)
    }

    fn refresh(&mut self) {
        let Some(held) = &mut self.held else {
            return;
        };
        // Once a period whatever the outcome: a failing refresh is
        // recorded once a period, not at every request.
        held.refreshed = Instant::now();
        if let Err(e) = held.lock.touch() {
            let mut fields = vec![
                ("spool", self.spools[held.spool].clone()),
                ("lock", policy::lock_name(&self.caller().login)),
                ("error", e.to_string()),
            ];
            if e == LockError::NotOurs {
                let held = self.held.take().expect("checked above");
                self.lost = Some(held.spool);
                held.lock.detach();
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
                held.lock.detach();
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
        let reply = self.outcome(op, result, fields);
        match self.output.queue(&reply) {
            Ok(()) => Step::Continue,
            Err(_) => Step::End(self.end("client-gone", exit::OK)),
        }
    }

    /// The reply to a request `op` that had `result`, once its outcome is
    /// recorded (a grant or a release) or its refusal audited and counted.
    fn outcome(&mut self, op: &str, result: Result<Reply, Refusal>, mut fields: Fields) -> Reply {
        match result {
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
}

/// A hello that is never accepted, to answer a client whose hello did not
/// decode.
fn bogus_hello() -> Hello {
    Hello {
        magic: [0; 8],
        version: 0,
    }
}
