//! The privileged path: locking on a spool that only the mail group may
//! write (Debian's `/var/mail`, `root:mail 2775`), through the setgid
//! `spoollock-helper`.
//!
//! The library decides by looking at the directory, never by trying and
//! failing: the helper is used when the caller may not write the lock
//! directory, the directory is group-writable by the group the installed
//! helper is setgid to, and it is not world-writable. Otherwise the lock is
//! taken in-process and nothing is spawned.
//!
//! The helper is spawned with two pipes and spoken to in the framed
//! protocol of `spoollock-protocol`; its session lock lives as long as our
//! end of the pipe is open, so it dies with this process whatever happens.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};

use nix::unistd::{access, getuid, AccessFlags, User};
use spoollock_lockfile::{AppendMark, LockContent, LockError, Wait, DEFAULT_STALE_AGE};
use spoollock_protocol::{
    codec::encode, paths, read_frame, CodecError, Hello, LockMode, LockRequest, LockStatus,
    Refusal, Reply, Request, SessionInfo, SpoolSel, Target, Welcome,
};

use crate::error::{Error, HelperError, Result};
use crate::target::LockTarget;
use spoollock_lockfile::{Holder, LockState};

/// Environment variable naming another helper binary (tests, development).
/// Honoured only when this process runs without elevated privileges.
pub const HELPER_ENV: &str = "SPOOLLOCK_HELPER";

/// The installed helper: where it is and the group it is setgid to.
#[derive(Debug, Clone)]
struct Helper {
    path: PathBuf,
    gid: u32,
}

/// Running with privilege the caller did not have: any of the real,
/// effective and saved user or group ids differ (a setuid program that
/// temporarily switched back still has its saved id), or the kernel
/// started this program in secure mode (`AT_SECURE`: setuid, setgid, file
/// capabilities or a security module's transition). When that cannot be
/// told, the answer is yes.
pub(crate) fn elevated() -> bool {
    let ids_differ = match (nix::unistd::getresuid(), nix::unistd::getresgid()) {
        (Ok(u), Ok(g)) => {
            u.real != u.effective || u.real != u.saved || g.real != g.effective || g.real != g.saved
        }
        _ => true,
    };
    ids_differ || secure_exec().unwrap_or(true)
}

/// True when this process runs with privileges its caller may not have
/// (setuid, setgid, file capabilities, or ids that differ): then no
/// environment variable may choose a file, a program or a behaviour (the
/// helper's path, a mailbox, ...). When it cannot be told, true.
pub fn secure_mode() -> bool {
    elevated()
}

/// `AT_SECURE` from the auxiliary vector, read from `/proc/self/auxv`
/// (pairs of native-endian words), so no `unsafe` `getauxval` is needed.
fn secure_exec() -> Option<bool> {
    const AT_NULL: u64 = 0;
    const AT_SECURE: u64 = 23;
    const WORD: usize = std::mem::size_of::<usize>();
    let auxv = std::fs::read("/proc/self/auxv").ok()?;
    let word = |chunk: &[u8]| -> Option<u64> {
        let bytes: [u8; WORD] = chunk.try_into().ok()?;
        u64::try_from(usize::from_ne_bytes(bytes)).ok()
    };
    for pair in auxv.chunks_exact(2 * WORD) {
        let (key, value) = (word(&pair[..WORD])?, word(&pair[WORD..])?);
        match key {
            AT_SECURE => return Some(value != 0),
            AT_NULL => break,
            _ => {}
        }
    }
    None
}

/// Where the helper is: the build-time path, or `$SPOOLLOCK_HELPER` when
/// we are not setuid/setgid ourselves (an elevated process must never run
/// a binary its caller chose).
fn helper_path() -> PathBuf {
    match std::env::var_os(HELPER_ENV) {
        Some(p) if !elevated() && !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(paths::HELPER_PATH),
    }
}

/// The helper, if it is installed setgid; an error saying how to install
/// it otherwise.
fn installed_helper() -> Result<Helper> {
    let path = helper_path();
    let meta = match std::fs::metadata(&path) {
        Ok(meta) => meta,
        Err(error) => return Err(HelperError::NotInstalled { path, error }.into()),
    };
    if meta.mode() & 0o2000 == 0 || !meta.is_file() {
        return Err(HelperError::NotSetgid { path }.into());
    }
    Ok(Helper {
        path,
        gid: meta.gid(),
    })
}

/// Should the lock in `dir` be taken through the helper? Only for a
/// directory we cannot write that the helper's group can, and that is not
/// world-writable. A missing or non-setgid helper makes this `Ok(false)`
/// unless the directory looks like a mail-group spool, in which case the
/// error tells the user what to install.
pub(crate) fn needs_helper(dir: &Path) -> Result<bool> {
    let Ok(meta) = std::fs::metadata(dir) else {
        return Ok(false); // the direct path reports the real error
    };
    let mode = meta.permissions().mode();
    let group_writable = mode & 0o020 != 0;
    let world_writable = mode & 0o002 != 0;
    if !meta.is_dir() || world_writable || !group_writable {
        return Ok(false);
    }
    // access(2) checks with the *real* ids, which is what the direct path
    // would get from the kernel (we are not elevated, or the check is moot).
    if access(dir, AccessFlags::W_OK).is_ok() {
        return Ok(false);
    }
    let helper = installed_helper()?;
    if helper.gid != meta.gid() {
        // Neither we nor the helper may write here: say why, rather than
        // let the direct path fail on its temporary file.
        return Err(Error::SpoolGroup {
            dir: dir.to_owned(),
            dir_gid: meta.gid(),
            helper: helper.path,
            helper_gid: helper.gid,
        });
    }
    Ok(true)
}

/// A running helper session holding the caller's mailbox lock.
#[derive(Debug)]
pub struct HelperSession {
    child: Child,
    to_helper: Option<ChildStdin>,
    from_helper: ChildStdout,
    /// The helper's standard error: what it says when it refuses to start.
    helper_stderr: Option<ChildStderr>,
    target: Target,
    /// The lock file the session is about (for error messages).
    lock_path: PathBuf,
    /// Who the helper says we are, and which spools it serves.
    pub info: SessionInfo,
}

impl HelperSession {
    /// Spawn the helper and do the version handshake.
    fn start() -> Result<HelperSession> {
        let mut session = HelperSession::spawn()?;
        session.send(&Hello::current())?;
        session.handshake()?;
        Ok(session)
    }

    /// Spawn the helper, with nothing said yet.
    fn spawn() -> Result<HelperSession> {
        let helper = installed_helper()?;
        let mut child = Command::new(&helper.path)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // Piped, not inherited: when the helper refuses to start, its
            // reason becomes the error (see `receive`).
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| HelperError::Spawn {
                path: helper.path.clone(),
                error,
            })?;
        let to_helper = child.stdin.take().expect("piped stdin");
        let from_helper = child.stdout.take().expect("piped stdout");
        let helper_stderr = child.stderr.take();
        Ok(HelperSession {
            child,
            to_helper: Some(to_helper),
            from_helper,
            helper_stderr,
            target: Target::default_spool(),
            lock_path: PathBuf::new(),
            info: SessionInfo {
                uid: 0,
                login: String::new(),
                helper_pid: 0,
                spools: Vec::new(),
            },
        })
    }

    /// The helper's answers to our hello: its version, then who we are.
    fn handshake(&mut self) -> Result<()> {
        let welcome: Welcome = self.receive()?;
        if !welcome.accepted {
            return Err(HelperError::Version {
                helper: welcome.version,
                library: spoollock_protocol::PROTOCOL_VERSION,
            }
            .into());
        }
        match self.receive::<Reply>()? {
            Reply::Ready(info) => self.info = info,
            Reply::Error(refusal) => return Err(self.refused(refusal)),
            other => return Err(protocol_error(&other)),
        }
        Ok(())
    }

    /// Lock `target` (which must be `<spool>/<login>.lock`) through a new
    /// helper session; `mode` says whether the lock ends with the session.
    pub(crate) fn lock(
        target: &LockTarget,
        wait: Wait,
        stale_age: std::time::Duration,
        mode: LockMode,
    ) -> Result<HelperSession> {
        let request = |target: Target| {
            Request::Lock(LockRequest {
                target,
                wait: wait.into(),
                mode,
                stale_age_secs: (stale_age != DEFAULT_STALE_AGE)
                    .then(|| stale_age.as_secs().min(u32::MAX as u64) as u32),
            })
        };
        // When the caller's own login (by our password lookup) names the
        // target, the hello and the lock request go in one write and the
        // helper answers both without waiting for us: a refused hello ends
        // the session before the request is read, and the helper, whose
        // lookup decides, refuses a login that is not the caller's.
        // Otherwise the long way: the helper's login names the target.
        let own_target = match User::from_uid(getuid()) {
            Ok(Some(user)) => target_for_login(target, &user.name).ok(),
            _ => None,
        };
        let (session, reply) = match own_target {
            Some(own_target) => {
                let mut session = HelperSession::spawn()?;
                session.lock_path = target.path();
                let mut both = encode(&Hello::current()).map_err(codec_error)?;
                both.extend(encode(&request(own_target.clone())).map_err(codec_error)?);
                session.target = own_target;
                session.send_raw(&both)?;
                session.handshake()?;
                let reply = session.receive()?;
                (session, reply)
            }
            None => {
                let mut session = HelperSession::start()?;
                session.lock_path = target.path();
                session.target = session.target_for(target)?;
                let reply = session.call(&request(session.target.clone()))?;
                (session, reply)
            }
        };
        match reply {
            Reply::Locked(_) => Ok(session),
            Reply::Error(refusal) => Err(session.refused(refusal)),
            other => Err(protocol_error(&other)),
        }
    }

    /// [`target_for_login`] with the login the helper reported.
    fn target_for(&self, target: &LockTarget) -> Result<Target> {
        target_for_login(target, &self.info.login)
    }

    /// Record (or clear) an append in progress in our lock file. The file
    /// was created by the helper under our uid, so we may write it; it is
    /// opened without following symlinks and checked to be ours (owner,
    /// single link, naming this session's helper) before it is written.
    pub(crate) fn set_append_mark(&self, lock_path: &Path, mark: Option<AppendMark>) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
            .open(lock_path)?;
        let meta = file.metadata()?;
        let mut raw = vec![0u8; spoollock_lockfile::MAX_CONTENT];
        let n = std::os::unix::fs::FileExt::read_at(&file, &mut raw, 0)?;
        let mut content = LockContent::parse(&raw[..n]);
        let ours = meta.is_file()
            && meta.uid() == getuid().as_raw()
            && meta.nlink() == 1
            && content.pid == Some(self.info.helper_pid);
        if !ours {
            return Err(Error::Lock(LockError::NotOurs));
        }
        content.append = mark;
        Ok(spoollock_lockfile::rewrite(&file, &content.render())?)
    }

    /// Refresh the lock now (the helper also keeps it fresh by itself).
    pub fn touch(&mut self) -> Result<()> {
        match self.call(&Request::Touch(self.target.clone()))? {
            Reply::Touched => Ok(()),
            Reply::Error(refusal) => Err(self.refused(refusal)),
            other => Err(protocol_error(&other)),
        }
    }

    /// True if the helper still holds our lock.
    pub fn check(&mut self) -> Result<bool> {
        match self.call(&Request::Check(self.target.clone()))? {
            Reply::Status(LockStatus::Held(_)) => Ok(true),
            Reply::Status(_) => Ok(false),
            Reply::Error(refusal) => Err(self.refused(refusal)),
            other => Err(protocol_error(&other)),
        }
    }

    /// Remove the lock and end the session: the unlock request and the
    /// goodbye in one write, then both answers.
    pub fn release(mut self) -> Result<()> {
        let mut both = encode(&Request::Unlock(self.target.clone())).map_err(codec_error)?;
        both.extend(encode(&Request::Bye).map_err(codec_error)?);
        self.send_raw(&both)?;
        let unlocked = match self.receive()? {
            Reply::Unlocked => Ok(()),
            Reply::Error(refusal) => Err(self.refused(refusal)),
            other => Err(protocol_error(&other)),
        };
        let _ = self.receive::<Reply>();
        self.finish();
        unlocked
    }

    /// In a child forked while the session was open: close this process's
    /// copies of the pipes, so that a long-lived child does not keep the
    /// session (and its lock) alive after the parent is gone, and say
    /// nothing to the helper, which serves the parent.
    pub(crate) fn abandon(mut self) {
        drop(self.to_helper.take());
        drop(self.helper_stderr.take());
        let from_helper = self.from_helper.as_raw_fd();
        // Not `finish` (our `Drop`): no `Bye`, no wait for a helper that is
        // not this process's child.
        std::mem::forget(self);
        let _ = nix::unistd::close(from_helper);
    }

    /// Close our end (the helper releases a held lock on end of file) and
    /// reap the helper.
    fn finish(&mut self) {
        self.to_helper = None;
        let _ = self.child.wait();
    }

    fn call(&mut self, request: &Request) -> Result<Reply> {
        self.send(request)?;
        self.receive()
    }

    fn send<T: spoollock_protocol::Frame>(&mut self, msg: &T) -> Result<()> {
        self.send_raw(&encode(msg).map_err(codec_error)?)
    }

    /// Frames already encoded, in one write.
    fn send_raw(&mut self, frames: &[u8]) -> Result<()> {
        let pipe = self.to_helper.as_mut().ok_or(HelperError::Closed)?;
        match pipe.write_all(frames) {
            Ok(()) => Ok(()),
            // The helper has gone (it refused to start, say): its own
            // words say why.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(self.helper_exited()),
            Err(error) => Err(HelperError::Pipe {
                doing: "writing to",
                error,
            }
            .into()),
        }
    }

    fn receive<T: spoollock_protocol::Frame>(&mut self) -> Result<T> {
        read_frame(&mut self.from_helper).map_err(|e| match e {
            // The helper closed its end: it has exited (it holds the pipe
            // until then). Its own words say why, not ours.
            CodecError::Closed | CodecError::Truncated { .. } => self.helper_exited(),
            e => HelperError::Codec(e).into(),
        })
    }

    /// Why the helper ended: its exit status, and what it said on its
    /// standard error (at most a few KiB, control characters dropped).
    fn helper_exited(&mut self) -> Error {
        use std::io::Read;
        const MAX_REASON: u64 = 4096;
        let status = match self.child.wait() {
            Ok(status) => status,
            Err(error) => {
                return HelperError::Pipe {
                    doing: "waiting for",
                    error,
                }
                .into()
            }
        };
        let mut said = Vec::new();
        if let Some(stderr) = self.helper_stderr.take() {
            let _ = stderr.take(MAX_REASON).read_to_end(&mut said);
        }
        let reason: String = String::from_utf8_lossy(&said)
            .trim_end()
            .chars()
            .filter(|c| !c.is_control() || *c == '\n')
            .collect();
        Error::HelperExited { reason, status }
    }

    /// A refusal of the helper's, about this session's lock file.
    fn refused(&self, refusal: Refusal) -> Error {
        refused_at(&self.lock_path, refusal)
    }
}

impl Drop for HelperSession {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Take a lock that outlives the helper session (`spoollock lock`),
/// naming `holder_pid` or no process.
pub(crate) fn lock_detached(
    target: &LockTarget,
    wait: Wait,
    stale_age: std::time::Duration,
    holder_pid: Option<u32>,
) -> Result<()> {
    let mut session =
        HelperSession::lock(target, wait, stale_age, LockMode::Detached { holder_pid })?;
    let _ = session.call(&Request::Bye);
    Ok(())
}

/// Remove (`unlock`) or refresh (`touch`) a detached lock of ours by name;
/// a lock that another live helper session holds only when `force`.
pub(crate) fn by_name(target: &LockTarget, unlock: bool, force: bool) -> Result<()> {
    let mut session = HelperSession::start()?;
    session.lock_path = target.path();
    let t = session.target_for(target)?;
    let (request, expected) = match (unlock, force) {
        (true, false) => (Request::Unlock(t), Reply::Unlocked),
        (true, true) => (Request::ForceUnlock(t), Reply::Unlocked),
        (false, false) => (Request::Touch(t), Reply::Touched),
        (false, true) => (Request::ForceTouch(t), Reply::Touched),
    };
    let result = match session.call(&request)? {
        reply if reply == expected => Ok(()),
        Reply::Error(refusal) => Err(session.refused(refusal)),
        other => Err(protocol_error(&other)),
    };
    let _ = session.call(&Request::Bye);
    result
}

/// Check a lock on a helper-only spool through a short session.
pub(crate) fn check(target: &LockTarget) -> Result<LockState> {
    let mut session = HelperSession::start()?;
    session.lock_path = target.path();
    let t = session.target_for(target)?;
    let state = match session.call(&Request::Check(t))? {
        Reply::Status(status) => LockState::from(status),
        Reply::Error(refusal) => return Err(session.refused(refusal)),
        other => return Err(protocol_error(&other)),
    };
    let _ = session.call(&Request::Bye);
    Ok(state)
}

/// Map a lock path to the helper's terms: the spool directory, and
/// `login` as the mailbox, refusing anything else up front.
fn target_for_login(target: &LockTarget, login: &str) -> Result<Target> {
    let mailbox = target
        .name
        .as_bytes()
        .strip_suffix(b".lock")
        .filter(|m| *m == login.as_bytes())
        .ok_or_else(|| HelperError::NotOwnMailbox {
            lock: target.path(),
            login: login.to_owned(),
        })?;
    debug_assert_eq!(mailbox, login.as_bytes());
    // The helper compares spool paths byte for byte with its list: one
    // that is not UTF-8 cannot be on it, and must not be made to look
    // like another by a lossy conversion.
    let spool = std::fs::canonicalize(&target.dir)?
        .into_os_string()
        .into_string()
        .map_err(|raw| {
            Error::BadPath(format!(
                "{}: a spool path that is not UTF-8 cannot be a helper spool",
                std::path::Path::new(&raw).display()
            ))
        })?;
    Ok(Target {
        spool: SpoolSel::Path(spool),
        mailbox: Some(login.to_owned()),
    })
}

fn codec_error(e: spoollock_protocol::CodecError) -> Error {
    HelperError::Codec(e).into()
}

fn errno(e: i32) -> nix::errno::Errno {
    nix::errno::Errno::from_raw(e)
}

/// A helper refusal about the lock file `lock` as the error the direct
/// path would have given, where there is one, so callers and exit codes do
/// not depend on the path.
fn refused_at(lock: &Path, refusal: Refusal) -> Error {
    match refusal {
        Refusal::LockTooLarge { size, owner, .. } => Error::NotALock {
            path: lock.to_owned(),
            size,
            owner,
        },
        Refusal::Busy { holder: h } => Error::Lock(LockError::Busy {
            holder: h.map(Holder::from).map(Box::new),
        }),
        Refusal::Timeout { holder: h } => Error::Lock(LockError::Timeout {
            holder: h.map(Holder::from).map(Box::new),
        }),
        Refusal::LockNotRegular => Error::Lock(LockError::NotRegularFile),
        Refusal::NotOurs | Refusal::NotLocked | Refusal::LockLost => {
            Error::Lock(LockError::NotOurs)
        }
        Refusal::Permission { op, errno: e } => Error::Lock(LockError::Permission {
            op,
            errno: errno(e),
        }),
        Refusal::TempWrite { errno: e } => Error::Lock(LockError::TempWrite { errno: errno(e) }),
        Refusal::StaleNotRemoved { errno: e } => {
            Error::Lock(LockError::StaleNotRemoved { errno: errno(e) })
        }
        Refusal::Io { op, errno: e } => Error::Lock(LockError::Io {
            op,
            errno: errno(e),
        }),
        other => Error::Refused(other),
    }
}

fn protocol_error(reply: &Reply) -> Error {
    HelperError::UnexpectedReply(format!("{reply:?}")).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_test_process_is_not_elevated() {
        // Started by cargo without setuid, setgid or file capabilities.
        assert_eq!(secure_exec(), Some(false));
        assert!(!elevated());
    }
}
