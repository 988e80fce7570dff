//! One helper session driven from arbitrary bytes, and the checks every
//! session must pass. Shared by the cargo-fuzz target
//! `fuzz/fuzz_targets/helper_session.rs` (coverage-guided) and the proptest
//! properties in `helper/tests/session_properties.rs` (stable toolchain),
//! which include this file by path.
//!
//! The session is the helper's own [`Session`], run in this process over a
//! real pipe (the request stream, then end of file) and an unlinked file
//! (the replies), with an in-memory audit trail and a privilege that changes
//! nothing (the caller's own gid parked), against a private spool that
//! passes the helper's real spool checks. That needs root: the spool and
//! every directory above it must be root-owned. [`Spool::create`] says why
//! it cannot run otherwise.
//!
//! The first input byte sets the stage (what already sits at the mailbox
//! and lock names, whether the stream is raw, the login); the rest is either
//! the raw stream after the helper's hello (the fuzzer finds frames itself)
//! or a compact description of requests that the harness encodes (so that
//! most cases reach the policy and the lock state machine).
//!
//! What is checked, whatever the input:
//! - the session ends with status 0 or 1, never panics, never hangs;
//! - the replies are well-formed frames, exactly one per request read, of
//!   the kind that request allows, as an independent reading of the same
//!   stream predicts (a session that goes over its limits answers its last
//!   request with `SessionLimit` and ends, the counts matching the replies);
//! - every grant, release and refusal has its audit record, each one line
//!   of printable ASCII, and every grant and release its record of intent
//!   before it;
//! - afterwards the spool holds nothing new but a detached lock that was
//!   granted: no temporary file, no other name; the other user's files and
//!   temporary file, the mailbox, and a directory or symlink planted at the
//!   lock name are untouched; the unsafe and missing spools stay so.

// Each file that includes this one uses a different part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Cursor, Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{chown, symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use spoollock_helper::audit::{Audit, Class};
use spoollock_helper::privilege::GroupPrivilege;
use spoollock_helper::session::Session;
use spoollock_protocol::codec::encode;
use spoollock_protocol::limits::{MAX_GRANTED_PER_SESSION, MAX_REFUSED_PER_SESSION};
use spoollock_protocol::{
    exit, read_frame, CodecError, Hello, LockMode, LockRequest, Refusal, Reply, Request, SpoolSel,
    Target, WaitSpec, Welcome,
};

/// The caller's login in every case (its uid is the harness's: root).
pub const LOGIN: &str = "fuzzuser";
/// Another user's mailbox, lock and temporary file sit in the spool.
const VICTIM: &str = "victim";
const VICTIM_UID: u32 = 4242;
/// A pid above any `pid_max`: never alive.
const DEAD_PID: u32 = 0x7fff_fff0;
/// The most stream bytes written to the pipe (its capacity is 64 KiB).
const MAX_STREAM: usize = 48 * 1024;

/// A private spool tree under `/run`, removed on drop.
pub struct Spool {
    root: PathBuf,
    /// Passes the helper's checks: `root:root 0770` under root-owned
    /// directories.
    good: PathBuf,
    /// World-writable: the helper must refuse it and never write in it.
    unsafe_spool: PathBuf,
    /// Configured but never created.
    missing: PathBuf,
}

impl Spool {
    /// A fresh spool tree, or `None` for tests, which then skip (one
    /// SKIP line; a failure in CI).
    pub fn create_or_skip() -> Option<Spool> {
        Spool::create().map_err(spoollock_test_support::skip).ok()
    }

    /// A fresh spool tree, or why there cannot be one here.
    pub fn create() -> Result<Spool, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("needs root: the helper only trusts root-owned spools and parents".into());
        }
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = Path::new("/run/spoollock-harness");
        let root = base.join(format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mkdir = |p: &Path, mode: u32| -> std::io::Result<()> {
            match fs::create_dir(p) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
            fs::set_permissions(p, fs::Permissions::from_mode(mode))
        };
        let spool = Spool {
            good: root.join("spool"),
            unsafe_spool: root.join("open"),
            missing: root.join("missing"),
            root,
        };
        let made = mkdir(base, 0o755)
            .and_then(|()| mkdir(&spool.root, 0o755))
            .and_then(|()| mkdir(&spool.good, 0o770))
            .and_then(|()| mkdir(&spool.unsafe_spool, 0o777));
        made.map_err(|e| format!("cannot create {}: {e}", spool.root.display()))?;
        remove_dead_trees(base);
        // The other user's files, planted once: every case checks that
        // they are still there and unchanged.
        let old = Duration::from_secs(3600);
        for (name, content) in victims() {
            write_file(&spool.good.join(name), content, VICTIM_UID, old);
        }
        Ok(spool)
    }

    /// The spool that passes the helper's checks (spool index 0).
    pub fn good(&self) -> &Path {
        &self.good
    }

    /// The spool list a session is given: the good spool, a missing one
    /// and a world-writable one.
    pub fn spools(&self) -> Vec<String> {
        [&self.good, &self.missing, &self.unsafe_spool]
            .iter()
            .map(|p| p.to_str().expect("ASCII path").to_owned())
            .collect()
    }

    /// Remove everything but the victims' files.
    fn clear(&self) {
        let victims: Vec<String> = victims().into_iter().map(|(name, _)| name).collect();
        for dir in [&self.good, &self.unsafe_spool] {
            for entry in fs::read_dir(dir).expect("list spool") {
                let entry = entry.expect("entry");
                if victims.iter().any(|v| entry.file_name() == v.as_str()) {
                    continue;
                }
                let path = entry.path();
                if path.is_dir() && !path.is_symlink() {
                    fs::remove_dir_all(&path).expect("remove dir");
                } else {
                    fs::remove_file(&path).expect("remove file");
                }
            }
        }
    }
}

/// Remove the trees of harness processes that are gone (a fuzzer's spool
/// lives in a static and is never dropped).
fn remove_dead_trees(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.split_once('-'))
            .map(|(pid, _)| pid);
        let gone = pid.is_some_and(|pid| {
            pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists()
        });
        if gone {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Reads the case description; past its end every byte is zero.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn or_zero(&mut self) -> u8 {
        self.byte().unwrap_or(0)
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
}

/// What sits at the mailbox name before the session.
#[derive(Debug, Clone, Copy, PartialEq)]
enum MailboxSetup {
    Absent,
    Owned,
    Symlink,
    Directory,
    HardLinked,
    Foreign,
}

/// What sits at the lock name before the session.
#[derive(Debug, Clone, Copy, PartialEq)]
enum LockSetup {
    Absent,
    /// A bare pid, an hour old: stale by age.
    OldBarePid,
    /// This host's format, the holder dead: stale at once.
    DeadHolder,
    /// Held by pid 1, fresh: never breakable.
    LiveHolder,
    Directory,
    Symlink,
    /// Too large to be a lock, old: never broken.
    Oversized,
    /// A dead temporary file of the caller's beside no lock.
    DeadTemp,
}

struct Stage {
    mailbox: MailboxSetup,
    lock: LockSetup,
    raw: bool,
    login: &'static str,
}

impl Stage {
    fn from_byte(b: u8) -> Stage {
        let mailbox = [
            MailboxSetup::Absent,
            MailboxSetup::Owned,
            MailboxSetup::Symlink,
            MailboxSetup::Directory,
            MailboxSetup::HardLinked,
            MailboxSetup::Foreign,
            MailboxSetup::Owned,
            MailboxSetup::Absent,
        ][usize::from(b & 7)];
        let lock = [
            LockSetup::Absent,
            LockSetup::OldBarePid,
            LockSetup::DeadHolder,
            LockSetup::LiveHolder,
            LockSetup::Directory,
            LockSetup::Symlink,
            LockSetup::Oversized,
            LockSetup::DeadTemp,
        ][usize::from((b >> 3) & 7)];
        Stage {
            mailbox,
            lock,
            raw: b & 0x40 != 0,
            // An unusable login: every request must be refused.
            login: if b & 0x80 != 0 { "x.lock" } else { LOGIN },
        }
    }
}

/// A temporary file name as the lockfile crate makes them on this host.
fn temp_name(pid: u32, random: u64) -> String {
    let host = &spoollock_lockfile::local_host().host;
    let host = &host[..host.len().min(32)];
    format!(".lk{pid:x}.{random:016x}.{host}")
}

/// The other user's mailbox, lock and dead temporary file, with content.
fn victims() -> [(String, &'static [u8]); 3] {
    [
        (VICTIM.into(), b"From x\n\nvictim\n"),
        (format!("{VICTIM}.lock"), b"1\n"),
        (temp_name(DEAD_PID, 0x5eed), b""),
    ]
}

/// The caller's planted dead temporary file (the victim's is another).
fn callers_temp() -> String {
    temp_name(DEAD_PID, 0xca11)
}

fn write_file(path: &Path, content: &[u8], uid: u32, age: Duration) {
    let mut f = File::create(path).expect("create planted file");
    f.write_all(content).expect("write planted file");
    f.set_modified(SystemTime::now() - age).expect("set mtime");
    chown(path, Some(uid), Some(0)).expect("chown planted file");
}

/// Plant the stage; returns the names the session must leave as they are.
fn plant(spool: &Spool, stage: &Stage) -> Vec<String> {
    let dir = &spool.good;
    let old = Duration::from_secs(3600);
    let mut keep: Vec<String> = victims().into_iter().map(|(name, _)| name).collect();

    let mailbox = dir.join(LOGIN);
    match stage.mailbox {
        MailboxSetup::Absent => {}
        MailboxSetup::Owned => write_file(&mailbox, b"", 0, old),
        MailboxSetup::Foreign => write_file(&mailbox, b"", VICTIM_UID, old),
        MailboxSetup::Symlink => symlink(VICTIM, &mailbox).expect("symlink"),
        MailboxSetup::Directory => fs::create_dir(&mailbox).expect("mkdir"),
        MailboxSetup::HardLinked => {
            write_file(&mailbox, b"", 0, old);
            fs::hard_link(&mailbox, dir.join("second-link")).expect("link");
            keep.push("second-link".into());
        }
    }
    if stage.mailbox != MailboxSetup::Absent {
        keep.push(LOGIN.into());
    }

    let lock = dir.join(format!("{LOGIN}.lock"));
    let this_host = spoollock_lockfile::local_host();
    match stage.lock {
        LockSetup::Absent => {}
        LockSetup::OldBarePid => write_file(&lock, b"999999\n", 0, old),
        LockSetup::DeadHolder => {
            let boot = this_host.boot.as_deref().unwrap_or("");
            let content = format!("{DEAD_PID}\nhost={}\nboot={boot}\n", this_host.host);
            write_file(&lock, content.as_bytes(), 0, Duration::ZERO);
        }
        LockSetup::LiveHolder => write_file(&lock, b"1\n", 0, Duration::ZERO),
        LockSetup::Directory => fs::create_dir(&lock).expect("mkdir at lock name"),
        LockSetup::Symlink => symlink(VICTIM, &lock).expect("symlink at lock name"),
        LockSetup::Oversized => write_file(&lock, &[b'9'; 600], 0, old),
        LockSetup::DeadTemp => write_file(&dir.join(callers_temp()), b"", 0, old),
    }
    if matches!(
        stage.lock,
        LockSetup::Directory | LockSetup::Symlink | LockSetup::Oversized
    ) {
        keep.push(format!("{LOGIN}.lock"));
    }
    keep
}

/// A snapshot of a spool: name to (inode, mode, uid, size, mtime, ctime).
/// Any write, truncation, `utimes`, `chown` or `chmod` moves the ctime (it
/// cannot be set from user space), so the content needs no reading.
type Listing = BTreeMap<String, (u64, u32, u32, u64, i64, (i64, i64))>;

fn listing(dir: &Path) -> Listing {
    let mut out = Listing::new();
    for entry in fs::read_dir(dir).expect("list spool") {
        let entry = entry.expect("entry");
        let name = entry.file_name().into_string().expect("UTF-8 name");
        let md = fs::symlink_metadata(entry.path()).expect("lstat");
        let ctime = (md.ctime(), md.ctime_nsec());
        out.insert(
            name,
            (md.ino(), md.mode(), md.uid(), md.size(), md.mtime(), ctime),
        );
    }
    out
}

fn target(b: &mut Bytes<'_>, spool: &Spool) -> Target {
    let x = b.or_zero();
    let spool_sel = match x & 7 {
        0 | 1 => SpoolSel::Default,
        2 => SpoolSel::Index(u32::from(x >> 3) % 4),
        3 => SpoolSel::Path(spool.good.to_str().expect("ASCII").into()),
        4 => SpoolSel::Path(spool.unsafe_spool.to_str().expect("ASCII").into()),
        5 => SpoolSel::Path(spool.missing.to_str().expect("ASCII").into()),
        6 => SpoolSel::Path(format!("{}/../spool", spool.root.display())),
        _ => SpoolSel::Index(u32::MAX),
    };
    let mailbox = match (x >> 5) & 3 {
        0 | 1 => None,
        2 => Some(LOGIN.into()),
        _ => Some([VICTIM, "../etc/passwd", "", "fuzzuser\n"][usize::from(x & 3)].into()),
    };
    Target {
        spool: spool_sel,
        mailbox,
    }
}

fn lock_request(b: &mut Bytes<'_>, spool: &Spool) -> LockRequest {
    let target = target(b, spool);
    let w = b.or_zero();
    let wait = match w & 3 {
        0 => WaitSpec::NoWait,
        1 => WaitSpec::Retries(u32::from(w >> 2) % 3),
        2 => WaitSpec::TimeoutMs(u64::from(w >> 2) % 30),
        _ => WaitSpec::Forever,
    };
    let m = b.or_zero();
    let mode = match m & 3 {
        0 | 1 => LockMode::Session,
        2 => LockMode::Detached { holder_pid: None },
        _ => LockMode::Detached {
            holder_pid: Some(
                [0, 1, std::process::id(), DEAD_PID, u32::MAX][usize::from(m >> 2) % 5],
            ),
        },
    };
    let stale_age_secs = match (m >> 5) & 3 {
        0 | 1 => None,
        2 => Some(300),
        _ => Some([0, 299, 86_400, 86_401, u32::MAX][usize::from(m & 3)]),
    };
    LockRequest {
        target,
        wait,
        mode,
        stale_age_secs,
    }
}

/// The stream the client writes: the hello, then requests described by
/// the bytes, with malformed frames mixed in.
fn encode_stream(b: &mut Bytes<'_>, spool: &Spool) -> Vec<u8> {
    let mut out = encode(&Hello::current()).expect("hello encodes");
    while let Some(op) = b.byte() {
        // Op codes (low four bits): 0-5 and 15 lock, 6-7 touch, 8-9
        // unlock, 10-11 check, 12 bye, 13 a raw frame, 14 raw bytes; a
        // touch or unlock with the high bit set is forced.
        let forced = op & 0x80 != 0;
        let request = match op % 16 {
            6 | 7 if forced => Request::ForceTouch(target(b, spool)),
            6 | 7 => Request::Touch(target(b, spool)),
            8 | 9 if forced => Request::ForceUnlock(target(b, spool)),
            8 | 9 => Request::Unlock(target(b, spool)),
            10 | 11 => Request::Check(target(b, spool)),
            12 => Request::Bye,
            13 => {
                // A frame with a correct prefix and any payload.
                let n = usize::from(b.or_zero());
                let payload = b.take(n);
                out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
                out.extend_from_slice(payload);
                continue;
            }
            14 => {
                // Bytes as they come: a wrong prefix, a cut frame.
                let n = usize::from(b.or_zero() % 16);
                out.extend_from_slice(b.take(n));
                continue;
            }
            _ => Request::Lock(lock_request(b, spool)),
        };
        out.extend_from_slice(&encode(&request).expect("request encodes"));
    }
    out
}

/// What one reply may be, given the request it answers.
fn reply_fits(request: &Request, reply: &Reply) -> bool {
    matches!(
        (request, reply),
        (_, Reply::Error(_))
            | (Request::Lock(_), Reply::Locked(_))
            | (Request::Touch(_) | Request::ForceTouch(_), Reply::Touched)
            | (
                Request::Unlock(_) | Request::ForceUnlock(_),
                Reply::Unlocked
            )
            | (Request::Check(_), Reply::Status(_))
            | (Request::Bye, Reply::Bye)
    )
}

/// How the session must end, from an independent reading of the stream.
struct Expected {
    welcome: Option<Welcome>,
    /// The requests the helper reads and answers, in order.
    requests: Vec<Request>,
    /// A frame that does not decode ends the session with one more error.
    bad_frame: bool,
    ready: bool,
    code: i32,
}

fn expect(stream: &[u8], login_usable: bool) -> Expected {
    let mut input = Cursor::new(stream);
    let mut expected = Expected {
        welcome: None,
        requests: Vec::new(),
        bad_frame: false,
        ready: false,
        code: exit::REFUSED,
    };
    let Ok(hello) = read_frame::<_, Hello>(&mut input) else {
        return expected;
    };
    let welcome = Welcome::answer(&hello);
    expected.welcome = Some(welcome.clone());
    if !welcome.accepted || !login_usable {
        return expected;
    }
    expected.ready = true;
    loop {
        match read_frame::<_, Request>(&mut input) {
            Ok(Request::Bye) => {
                expected.requests.push(Request::Bye);
                expected.code = exit::OK;
                return expected;
            }
            Ok(request) => expected.requests.push(request),
            Err(CodecError::Closed) => {
                expected.code = exit::OK;
                return expected;
            }
            Err(_) => {
                expected.bad_frame = true;
                return expected;
            }
        }
    }
}

/// The replies of one session after the welcome, for callers that check
/// what a case reached.
pub type Replies = Vec<Reply>;

/// Run one case; panics (with what went wrong) when a check fails.
pub fn run_case(spool: &Spool, data: &[u8]) -> Replies {
    let mut bytes = Bytes(data);
    let stage = Stage::from_byte(bytes.or_zero());
    spool.clear();
    let keep = plant(spool, &stage);
    let before = listing(&spool.good);
    for name in &keep {
        assert!(
            before.contains_key(name),
            "{name} missing before the session"
        );
    }

    let mut stream = if stage.raw {
        bytes.0.to_vec()
    } else {
        encode_stream(&mut bytes, spool)
    };
    stream.truncate(MAX_STREAM);
    let expected = expect(&stream, stage.login == LOGIN);

    // The client's pipe holds the whole stream, then end of file: waits
    // end at once, as when a client goes away.
    let (reader, mut writer) = std::io::pipe().expect("pipe");
    writer.write_all(&stream).expect("fill pipe");
    drop(writer);
    let replies_path = spool
        .root
        .join(format!("replies.{:?}", std::thread::current().id()));
    let mut replies = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&replies_path)
        .expect("replies file");
    fs::remove_file(&replies_path).expect("unlink replies file");
    let output = OwnedFd::from(replies.try_clone().expect("dup replies"));

    let audit = Arc::new(Mutex::new(Audit::in_memory()));
    let gid = nix::unistd::getgid();
    let privilege = Arc::new(GroupPrivilege::park(gid, gid).expect("park own gid"));
    let session =
        Session::new(audit.clone(), privilege, OwnedFd::from(reader), output).expect("session");
    let code = session.run(Ok(stage.login.to_owned()), Ok(spool.spools()));

    // Replies: one per request read, each of a kind its request allows.
    let mut out = Vec::new();
    replies.seek(SeekFrom::Start(0)).expect("rewind");
    replies.read_to_end(&mut out).expect("read replies");
    let mut out = Cursor::new(out);
    let welcome = read_frame::<_, Welcome>(&mut out).expect("a welcome, always");
    match &expected.welcome {
        Some(w) => assert_eq!(&welcome, w, "welcome"),
        None => assert!(!welcome.accepted, "a hello that does not decode is refused"),
    }
    let mut got = Vec::new();
    loop {
        match read_frame::<_, Reply>(&mut out) {
            Ok(reply) => got.push(reply),
            Err(CodecError::Closed) => break,
            Err(e) => panic!("reply stream: {e}"),
        }
    }
    let mut got = got.into_iter();
    if expected.welcome.as_ref().is_some_and(|w| w.accepted) {
        let first = got.next().expect("Ready or a refusal after the welcome");
        if expected.ready {
            assert!(
                matches!(first, Reply::Ready(_)),
                "expected Ready, got {first:?}"
            );
        } else {
            assert!(
                matches!(first, Reply::Error(Refusal::UnusableLogin)),
                "{first:?}"
            );
        }
    }
    let got: Vec<Reply> = got.collect();
    // A session over its limits (too many refusals, or a lock request
    // after too many grants) ends early: its last request is answered by
    // SessionLimit, with the counts that led there.
    let limited = match got.last() {
        Some(Reply::Error(Refusal::SessionLimit { refused, granted })) => {
            let before = &got[..got.len() - 1];
            let errors = before
                .iter()
                .filter(|r| matches!(r, Reply::Error(_)))
                .count();
            let locks = before
                .iter()
                .filter(|r| matches!(r, Reply::Locked(_)))
                .count();
            assert_eq!(
                (errors, locks),
                (*refused as usize, *granted as usize),
                "{got:?}"
            );
            let last = &expected.requests[got.len() - 1];
            assert!(
                *refused >= MAX_REFUSED_PER_SESSION
                    || (*granted >= MAX_GRANTED_PER_SESSION && matches!(last, Request::Lock(_))),
                "session ended under its limits: {got:?}"
            );
            true
        }
        _ => false,
    };
    if limited {
        assert_eq!(code, exit::REFUSED, "exit status");
        assert!(got.len() <= expected.requests.len(), "{got:?}");
    } else {
        assert_eq!(code, expected.code, "exit status");
        let answered = got.len() - usize::from(expected.bad_frame);
        assert_eq!(
            answered,
            expected.requests.len(),
            "one reply per request: {got:?}"
        );
    }
    for (request, reply) in expected.requests.iter().zip(&got) {
        assert!(
            reply_fits(request, reply),
            "{request:?} answered by {reply:?}"
        );
        if let Reply::Locked(info) = reply {
            assert_eq!(info.name, format!("{LOGIN}.lock"));
            assert_eq!(Path::new(&info.spool), spool.good);
        }
    }
    if expected.bad_frame && !limited {
        assert!(
            matches!(got.last(), Some(Reply::Error(Refusal::BadFrame(_)))),
            "a bad frame ends the session with BadFrame: {got:?}"
        );
    }

    // The audit trail: a record for each decision, one clean line each.
    let audit = audit.lock().expect("audit");
    let records = audit.records();
    let count = |classes: &[Class]| records.iter().filter(|(c, _)| classes.contains(c)).count();
    let of = |pred: fn(&Reply) -> bool| got.iter().filter(|r| pred(r)).count();
    assert_eq!(
        count(&[Class::Grant]),
        of(|r| matches!(r, Reply::Locked(_))),
        "grants audited"
    );
    assert!(
        count(&[Class::Release]) >= of(|r| matches!(r, Reply::Unlocked)),
        "releases audited"
    );
    assert!(
        count(&[Class::Intent]) >= of(|r| matches!(r, Reply::Locked(_) | Reply::Unlocked)),
        "every grant and release announced first"
    );
    let position = |needle: &str| records.iter().position(|(_, t)| t.contains(needle));
    if let Some(grant) = position("op=lock result=granted") {
        assert!(
            position("op=lock result=intent").is_some_and(|intent| intent < grant),
            "the first grant follows its intent"
        );
    }
    assert!(
        count(&[Class::Refusal, Class::Failure]) >= of(|r| matches!(r, Reply::Error(_))),
        "refusals audited"
    );
    if code == exit::REFUSED {
        assert!(
            count(&[Class::Refusal, Class::Failure]) > 0,
            "a refused session is audited"
        );
    }
    for (_, text) in records {
        assert!(
            text.bytes().all(|b| b.is_ascii_graphic() || b == b' '),
            "audit record not one clean line: {text:?}"
        );
    }

    // The spools afterwards.
    let detached = got
        .iter()
        .any(|r| matches!(r, Reply::Locked(info) if info.detached));
    let after = listing(&spool.good);
    for name in &keep {
        assert_eq!(after.get(name), before.get(name), "{name} changed");
    }
    let lock = format!("{LOGIN}.lock");
    for name in after.keys() {
        let planted_temp = stage.lock == LockSetup::DeadTemp && *name == callers_temp();
        let allowed = keep.contains(name)
            || planted_temp
            || (*name == lock && (detached || before.contains_key(name)));
        assert!(allowed, "{name} left in the spool: {:?}", after.keys());
    }
    assert!(fs::read_dir(&spool.unsafe_spool)
        .expect("list")
        .next()
        .is_none());
    assert!(!spool.missing.exists(), "the missing spool was created");
    got
}
