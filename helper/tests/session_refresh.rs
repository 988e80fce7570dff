//! A session lock is refreshed by the helper, whatever its client does:
//! the helper's own session, in-process as in `session_properties.rs`,
//! holds a lock for longer than one refresh period (a fifth of the stale
//! age, at most 60 s; the shortest stale age a client may ask for is
//! 300 s), and the lock's mtime must move, both when the client is quiet
//! and when it is never quiet for a whole period (a `Check` every 10 s:
//! the session model's `bug-busy-client`, where each request restarted
//! the wait for the refresh, so it never came).

#[path = "support/session_case.rs"]
mod session_case;

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use session_case::{Spool, LOGIN};
use spoollock_helper::audit::Audit;
use spoollock_helper::privilege::GroupPrivilege;
use spoollock_helper::session::Session;
use spoollock_protocol::codec::encode;
use spoollock_protocol::limits::MIN_STALE_AGE_SECS;
use spoollock_protocol::{
    exit, read_frame, Hello, LockMode, LockRequest, Reply, Request, Target, WaitSpec, Welcome,
};

/// A session of the helper's, in a thread, holding the caller's lock at
/// the shortest stale age; `None` (said) where no spool can be made.
struct Locked {
    spool: Spool,
    client_out: std::io::PipeWriter,
    client_in: std::io::PipeReader,
    helper: std::thread::JoinHandle<i32>,
}

fn start_locked() -> Option<Locked> {
    let spool = Spool::create_or_skip()?;
    let (requests, mut client_out) = std::io::pipe().expect("pipe");
    let (mut client_in, replies) = std::io::pipe().expect("pipe");
    let audit = Arc::new(Mutex::new(Audit::in_memory()));
    let gid = nix::unistd::getgid();
    let privilege = Arc::new(GroupPrivilege::park(gid, gid).expect("park own gid"));
    let session = Session::new(
        audit,
        privilege,
        OwnedFd::from(requests),
        OwnedFd::from(replies),
    )
    .expect("session");
    let spools = spool.spools();
    let helper = std::thread::spawn(move || session.run(Ok(LOGIN.to_owned()), Ok(spools)));

    let lock = Request::Lock(LockRequest {
        target: Target::default_spool(),
        wait: WaitSpec::NoWait,
        mode: LockMode::Session,
        stale_age_secs: Some(MIN_STALE_AGE_SECS),
    });
    for frame in [encode(&Hello::current()), encode(&lock)] {
        client_out.write_all(&frame.expect("encode")).expect("send");
    }
    assert!(
        read_frame::<_, Welcome>(&mut client_in)
            .expect("welcome")
            .accepted
    );
    assert!(matches!(
        read_frame::<_, Reply>(&mut client_in),
        Ok(Reply::Ready(_))
    ));
    let reply = read_frame::<_, Reply>(&mut client_in).expect("lock reply");
    assert!(matches!(reply, Reply::Locked(_)), "{reply:?}");
    Some(Locked {
        spool,
        client_out,
        client_in,
        helper,
    })
}

/// Watch the lock for one refresh period and half as long again (a bound,
/// not a timing assertion: a refresh that never comes fails), running
/// `meanwhile` every second; the lock's mtime must have moved.
fn assert_refreshed(locked: &mut Locked, mut meanwhile: impl FnMut(&mut Locked, u32)) {
    let path = locked.spool.good().join(format!("{LOGIN}.lock"));
    let taken = std::fs::metadata(&path).expect("lock exists");
    let period = Duration::from_secs(u64::from(MIN_STALE_AGE_SECS) / 5);
    let deadline = Instant::now() + period * 3 / 2;
    let mut second = 0;
    let later = loop {
        std::thread::sleep(Duration::from_secs(1));
        second += 1;
        meanwhile(locked, second);
        let now = std::fs::metadata(&path).expect("lock still held");
        if now.mtime() != taken.mtime() || Instant::now() > deadline {
            break now;
        }
    };
    assert_eq!(later.ino(), taken.ino(), "the same lock");
    assert!(
        later.mtime() >= taken.mtime() + 30,
        "not refreshed: mtime {} then {}",
        taken.mtime(),
        later.mtime()
    );
}

/// The client goes away: the session ends and releases its lock.
fn finish(locked: Locked) {
    let path = locked.spool.good().join(format!("{LOGIN}.lock"));
    drop(locked.client_out);
    assert_eq!(locked.helper.join().expect("session thread"), exit::OK);
    assert!(!path.exists(), "released at end of session");
}

#[test]
fn a_quiet_session_lock_is_refreshed() {
    // Reads from the session's pipe and its join would hang, not fail, if
    // the session stopped answering.
    let _deadline = spoollock_test_support::deadline("a quiet session", Duration::from_secs(300));
    let Some(mut locked) = start_locked() else {
        return;
    };
    assert_refreshed(&mut locked, |_, _| {});
    finish(locked);
}

#[test]
fn a_session_lock_is_refreshed_while_its_client_is_never_quiet() {
    let _deadline =
        spoollock_test_support::deadline("a session never quiet", Duration::from_secs(300));
    let Some(mut locked) = start_locked() else {
        return;
    };
    let check = encode(&Request::Check(Target::default_spool())).expect("encode");
    assert_refreshed(&mut locked, |locked, second| {
        if second % 10 == 0 {
            locked.client_out.write_all(&check).expect("send");
            let reply = read_frame::<_, Reply>(&mut locked.client_in).expect("check reply");
            assert!(matches!(reply, Reply::Status(_)), "{reply:?}");
        }
    });
    finish(locked);
}
