//! What one session of the installed helper can cost others (issue 12,
//! items 4 and 5): a flood of refused requests, or of lock and unlock
//! rounds, leaves a bounded number of syslog records, and a client that
//! sends half a frame does not stop its lock from being refreshed.
//!
//! End to end against the setgid binary, as the ordinary test user, in the
//! privileged harness (`support/privileged_env.rs`); root only.

#[path = "support/privileged_env.rs"]
mod privileged_env;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use privileged_env::*;
use spoollock_protocol::codec::{encode, PREFIX_LEN};
use spoollock_protocol::limits::{
    MAX_GRANTED_PER_SESSION, MAX_REFUSED_PER_SESSION, MIN_STALE_AGE_SECS,
};
use spoollock_protocol::{
    exit, read_frame, CodecError, LockMode, LockRequest, LockStatus, Refusal, Reply, Request,
    Target, WaitSpec,
};

/// The records of one helper (by its pid in the tag) since `mark`, once
/// the line with `last` has arrived.
fn records_of(env: &Env, mark: usize, pid: u32, last: &str) -> Vec<String> {
    let tag = format!("spoollock-helper[{pid}]:");
    env.wait_log(mark, &[&tag, last]);
    env.log_since(mark)
        .lines()
        .filter(|l| l.contains(&tag))
        .map(str::to_owned)
        .collect()
}

/// 100,000 refused requests in one session: the first 16 are answered
/// and recorded, the next ends the session with one record counting them.
fn refusal_flood_is_bounded(env: &Env) {
    env.reset();
    let mark = env.log_mark();
    let (mut c, _) = Client::open(env, &env.caller);
    let pid = c.pid();
    let _watchdog = Watchdog::new(pid, PATIENCE);
    // No lock: every by-name touch is refused (not-locked).
    let touch = encode(&Request::Touch(Target::default_spool())).unwrap();
    let mut to_helper = c.stdin.take().unwrap();
    let flood = std::thread::spawn(move || {
        let mut sent = 0u32;
        for _ in 0..100_000 {
            // The helper ends the session after the limit: the pipe
            // breaks and the flood stops there.
            if to_helper.write_all(&touch).is_err() {
                break;
            }
            sent += 1;
        }
        sent
    });
    let mut replies = Vec::new();
    let from_helper = c.stdout.as_mut().unwrap();
    loop {
        match read_frame::<_, Reply>(from_helper) {
            Ok(reply) => replies.push(reply),
            Err(CodecError::Closed) => break,
            Err(e) => panic!("reply stream: {e}"),
        }
        assert!(
            replies.len() <= 100,
            "the session does not end: {replies:?}"
        );
    }
    let sent = flood.join().unwrap();
    let (status, _) = c.finish();
    assert_eq!(status.code(), Some(exit::REFUSED));
    let max = MAX_REFUSED_PER_SESSION as usize;
    assert_eq!(replies.len(), max + 1, "{replies:?}");
    assert!(replies[..max]
        .iter()
        .all(|r| *r == Reply::Error(Refusal::NotLocked)));
    assert_eq!(
        replies[max],
        Reply::Error(Refusal::SessionLimit {
            refused: MAX_REFUSED_PER_SESSION,
            granted: 0
        })
    );

    let records = records_of(env, mark, pid, "result=session-limit");
    let bytes: usize = records.iter().map(|l| l.len() + 1).sum();
    assert_eq!(
        records.len(),
        max + 1,
        "one record per refusal and one final record:\n{}",
        records.join("\n")
    );
    let last = records.last().unwrap();
    assert!(
        last.starts_with("authpriv.warning")
            && last.contains("op=session result=session-limit")
            && last.contains(&format!("refused={MAX_REFUSED_PER_SESSION}"))
            && last.contains(&format!(
                "refused_by_result=not-locked:{MAX_REFUSED_PER_SESSION}"
            )),
        "{last}"
    );
    println!(
        "figure: {sent} of 100000 refused touch requests written before the helper ended the \
         session; {} records, {bytes} bytes of syslog for the session",
        records.len()
    );
}

/// Lock and unlock rounds: grants and releases are records too (each with
/// its record of intent before it); the lock request after the 16th grant
/// ends the session.
fn grant_flood_is_bounded(env: &Env) {
    env.reset();
    let mark = env.log_mark();
    let (mut c, _) = Client::open(env, &env.caller);
    let pid = c.pid();
    let _watchdog = Watchdog::new(pid, PATIENCE);
    for _ in 0..MAX_GRANTED_PER_SESSION {
        assert!(matches!(c.call(&session_lock()), Reply::Locked(_)));
        assert_eq!(
            c.call(&Request::Unlock(Target::default_spool())),
            Reply::Unlocked
        );
    }
    assert_eq!(
        c.call(&session_lock()),
        Reply::Error(Refusal::SessionLimit {
            refused: 0,
            granted: MAX_GRANTED_PER_SESSION
        })
    );
    assert!(matches!(c.try_read(), Err(CodecError::Closed)));
    let (status, _) = c.finish();
    assert_eq!(status.code(), Some(exit::REFUSED));
    assert!(!env.lock_path().exists());
    let records = records_of(env, mark, pid, "result=session-limit");
    let bytes: usize = records.iter().map(|l| l.len() + 1).sum();
    assert_eq!(
        records.len(),
        4 * MAX_GRANTED_PER_SESSION as usize + 1,
        "{}",
        records.join("\n")
    );
    println!(
        "figure: lock/unlock flood: {} records, {bytes} bytes of syslog for the session",
        records.len()
    );
}

/// Half a frame, then silence: the helper keeps refreshing the session
/// lock (every fifth of the stale age, 60 s at the shortest stale age a
/// client may ask for), and the rest of the frame, when it comes, is
/// answered.
fn half_a_frame_does_not_stop_the_refresh(env: &Env) {
    env.reset();
    let mark = env.log_mark();
    let (mut c, _) = Client::open(env, &env.caller);
    // The refresh period, half as long again, and the patience for the rest.
    let _watchdog = Watchdog::new(
        c.pid(),
        Duration::from_secs(u64::from(MIN_STALE_AGE_SECS) / 5) * 3 / 2 + PATIENCE,
    );
    let lock = Request::Lock(LockRequest {
        target: Target::default_spool(),
        wait: WaitSpec::NoWait,
        mode: LockMode::Session,
        stale_age_secs: Some(MIN_STALE_AGE_SECS),
    });
    assert!(matches!(c.call(&lock), Reply::Locked(_)));
    let path = env.lock_path();
    let taken = std::fs::metadata(&path).unwrap();

    let check = encode(&Request::Check(Target::default_spool())).unwrap();
    let half = PREFIX_LEN + 2;
    c.send_raw(&check[..half]);

    // A refresh is due one period after the lock was taken: look until
    // the mtime moves, for at most half as long again (a bound, not a
    // timing assertion: a refresh that never comes fails below).
    let period = Duration::from_secs(u64::from(MIN_STALE_AGE_SECS) / 5);
    let deadline = Instant::now() + period * 3 / 2;
    let later = loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = std::fs::metadata(&path).expect("the lock is still there");
        if now.mtime() != taken.mtime() || Instant::now() > deadline {
            break now;
        }
    };
    assert_eq!(later.ino(), taken.ino(), "the same lock");
    assert!(
        later.mtime() >= taken.mtime() + 30,
        "not refreshed while half a frame was pending: mtime {} then {}",
        taken.mtime(),
        later.mtime()
    );

    // The rest of the frame: answered, the framing intact.
    c.send_raw(&check[half..]);
    assert!(
        matches!(c.read(), Reply::Status(LockStatus::Held(_))),
        "the check is answered"
    );
    let pid = c.pid();
    let (status, _) = bye(c);
    assert!(status.success());
    assert!(!Path::new(&path).exists(), "released at the end");
    let tag = format!("spoollock-helper[{pid}]:");
    env.wait_log(mark, &[&tag, "op=release result=released", "trigger=bye"]);
    assert!(
        !env.log_since(mark).contains("op=refresh"),
        "no refresh failed: {}",
        env.log_since(mark)
    );
}

const SCENARIOS: &[Scenario] = &[
    ("refusal_flood_is_bounded", refusal_flood_is_bounded),
    ("grant_flood_is_bounded", grant_flood_is_bounded),
    (
        "half_a_frame_does_not_stop_the_refresh",
        half_a_frame_does_not_stop_the_refresh,
    ),
];

fn main() {
    run_scenarios("session limit tests", SCENARIOS, Env::setup);
}
