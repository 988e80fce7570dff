//! A hostile start: standard descriptors, argc 0 and arguments, the
//! environment, resource limits, log injection, and running without the
//! mail group.

use crate::privileged_env::*;

use std::fs;
use std::io::Read;
use std::path::Path;

use spoollock_protocol::{
    exit, read_frame, write_frame, Hello, LockMode, Refusal, Reply, Request, SpoolSel, Target,
    WaitSpec, Welcome,
};

/// A start-up refusal: exit status, message on stderr, audit line, spool
/// unchanged.
pub(crate) fn assert_start_refused(env: &Env, run: &Run, code: i32, message: &str, keyword: &str) {
    let before = env.snapshot();
    let mark = env.log_mark();
    let mut c = Client::start(env, run);
    let pid = c.pid();
    if let Some(out) = c.stdout.as_mut() {
        let mut junk = Vec::new();
        let _ = out.read_to_end(&mut junk);
        assert!(junk.is_empty(), "nothing written to the client: {junk:?}");
    }
    let (status, stderr) = c.finish();
    assert_eq!(status.code(), Some(code), "stderr: {stderr}");
    if !message.is_empty() {
        assert!(
            stderr.contains(message),
            "stderr lacks {message:?}: {stderr}"
        );
    }
    env.wait_log(
        mark,
        &[
            "authpriv.warning",
            &format!("[{pid}]:"),
            "op=start",
            &format!("result={keyword}"),
        ],
    );
    assert_eq!(env.snapshot(), before);
}

pub(crate) fn standard_descriptors(env: &Env) {
    env.reset();
    for fd in [0u8, 1] {
        let mut run = env.run(&env.caller);
        run.close = Some(fd);
        assert_start_refused(
            env,
            &run,
            exit::ENVIRONMENT,
            &format!("file descriptor {fd} was closed"),
            "fd-closed",
        );
    }
    // stderr closed: nothing to say it on, but refused and audited.
    let mut run = env.run(&env.caller);
    run.close = Some(2);
    assert_start_refused(env, &run, exit::ENVIRONMENT, "", "fd-closed");

    let mut run = env.run(&env.caller);
    run.stdin = Io::Null;
    assert_start_refused(
        env,
        &run,
        exit::ENVIRONMENT,
        "standard input must be",
        "fd-not-pipe",
    );

    let out = env.base.join("stdout-file");
    let mut run = env.run(&env.caller);
    run.stdout = Io::File(out.clone());
    assert_start_refused(
        env,
        &run,
        exit::ENVIRONMENT,
        "descriptor 1 must be",
        "fd-not-pipe",
    );
    assert_eq!(
        fs::read(&out).unwrap(),
        b"",
        "nothing written to a non-pipe stdout"
    );
}

pub(crate) fn argc_zero_and_arguments(env: &Env) {
    env.reset();
    let mut run = env.run(&env.caller);
    run.argc0 = true;
    assert_start_refused(env, &run, exit::USAGE, "empty argument list", "argc-zero");
    let mut run = env.run(&env.caller);
    run.args = vec!["/var/mail/sltest-victim".into()];
    assert_start_refused(
        env,
        &run,
        exit::USAGE,
        "takes no arguments",
        "bad-arguments",
    );
    let mut run = env.run(&env.caller);
    run.args = vec!["--help".into(), "x".into()];
    assert_start_refused(
        env,
        &run,
        exit::USAGE,
        "takes no arguments",
        "bad-arguments",
    );

    // --help: static text, nothing else.
    let before = env.snapshot();
    let mut run = env.run(&env.caller);
    run.args = vec!["--help".into()];
    let mut c = Client::start(env, &run);
    let mut text = String::new();
    c.stdout
        .as_mut()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let (status, _) = c.finish();
    assert!(status.success());
    assert!(
        text.contains("syslog") && text.contains("/dev/log"),
        "{text}"
    );
    assert!(
        text.contains("authpriv") && text.contains("<login>.lock"),
        "{text}"
    );
    assert_eq!(env.snapshot(), before);
}

pub(crate) fn hostile_environment(env: &Env) {
    env.reset();
    let before = env.snapshot();
    let mut run = env.run(&env.caller);
    let victim_mail = format!("/var/mail/{VICTIM}");
    for (k, v) in [
        ("LD_PRELOAD", "/nonexistent/evil.so"),
        ("LD_LIBRARY_PATH", "/nonexistent"),
        ("GLIBC_TUNABLES", "glibc.malloc.check=3"),
        ("MAIL", victim_mail.as_str()),
        ("LOGNAME", VICTIM),
        ("USER", VICTIM),
        ("HOME", "/var/mail"),
        ("TZ", ":/etc/shadow"),
        ("LANG", "xx_XX.UTF-8"),
        ("LC_ALL", "xx_XX.UTF-8"),
        ("TMPDIR", "/var/mail"),
        ("RUST_BACKTRACE", "full"),
        ("RUST_MIN_STACK", "1"),
        ("PATH", "/nonexistent"),
    ] {
        run.env.push((k.into(), v.into()));
    }
    let mut c = Client::start(env, &run);
    assert!(c.hello(&Hello::current()).accepted);
    match c.read() {
        Reply::Ready(info) => assert_eq!(info.login, CALLER),
        other => panic!("{other:?}"),
    }
    let l = expect_locked(c.call(&session_lock()));
    assert_eq!(l.name, format!("{CALLER}.lock"));
    assert!(env.lock_path().exists());
    assert!(!Path::new(SPOOL).join(format!("{VICTIM}.lock")).exists());
    assert_eq!(c.call(&Request::Unlock(target())), Reply::Unlocked);
    assert!(bye(c).0.success());
    assert_eq!(env.snapshot(), before);
}

pub(crate) fn resource_limits(env: &Env) {
    env.reset();
    // RLIMIT_FSIZE 0: the lock content cannot be written; no lock, no
    // temporary file left, a clear error.
    let before = env.snapshot();
    let mark = env.log_mark();
    let mut run = env.run(&env.caller);
    run.limits = vec!["--fsize=0:0".into()];
    let mut c = Client::start(env, &run);
    assert!(c.hello(&Hello::current()).accepted);
    assert!(matches!(c.read(), Reply::Ready(_)));
    assert_eq!(
        expect_error(c.call(&session_lock())),
        Refusal::TempWrite { errno: 27 } // EFBIG
    );
    let pid = c.pid();
    assert!(bye(c).0.success());
    env.wait_log(
        mark,
        &[
            "mail.warning",
            &format!("[{pid}]:"),
            "op=lock",
            "result=temp-write",
        ],
    );
    assert_eq!(env.snapshot(), before);

    // RLIMIT_NOFILE tiny: whatever fails, fails cleanly and changes nothing.
    for n in 3..=10u32 {
        let mark = env.log_mark();
        let mut run = env.run(&env.caller);
        run.limits = vec![format!("--nofile={n}:{n}")];
        let mut c = Client::start(env, &run);
        let pid = c.pid();
        let _ = write_frame(c.stdin.as_mut().unwrap(), &Hello::current());
        let mut outcome = Vec::new();
        if let Ok(w) = read_frame::<_, Welcome>(c.stdout.as_mut().unwrap()) {
            assert!(w.accepted);
            if let Ok(Reply::Ready(_)) = c.try_read() {
                c.send(&session_lock());
                outcome.push(c.read());
                c.send(&Request::Unlock(target()));
                outcome.push(c.read());
                c.send(&Request::Bye);
                let _ = c.try_read();
            }
        }
        let (status, stderr) = c.finish();
        let code = status.code().unwrap_or(-1);
        let failed = code != exit::OK || outcome.iter().any(|r| matches!(r, Reply::Error(_)));
        assert!(
            [
                exit::OK,
                exit::REFUSED,
                exit::ENVIRONMENT,
                exit::INTERNAL,
                127
            ]
            .contains(&code),
            "nofile={n}: exit {status:?}, {stderr}"
        );
        if code == 127 {
            // The dynamic loader itself ran out of descriptors: no code of
            // the helper ran at all.
            assert!(
                n <= 4 && stderr.contains("error while loading shared libraries"),
                "{stderr}"
            );
        } else if n == 3 {
            // Not even the syslog socket fits: refused, said on stderr.
            assert_eq!(code, exit::ENVIRONMENT, "{stderr}");
            assert!(stderr.contains("syslog"), "{stderr}");
        } else if failed {
            // Audited (the record names this helper's pid).
            env.wait_log(mark, &[&format!("spoollock-helper[{pid}]:")]);
        }
        assert_eq!(env.snapshot(), before, "nofile={n}: {outcome:?}");
    }
}

pub(crate) fn log_injection(env: &Env) {
    env.reset();
    let forged = "Jan  1 00:00:00 host sshd[1]: Accepted password for root";
    let mark = env.log_mark();
    assert_refused(
        env,
        &env.caller,
        &lock(
            named(&format!("{CALLER}\n{forged}")),
            WaitSpec::NoWait,
            LockMode::Session,
        ),
        Refusal::NotYourMailbox,
        "not-your-mailbox",
    );
    let t = Target {
        spool: SpoolSel::Path("/var/mail\r\nop=lock result=granted\u{1b}[2J".into()),
        mailbox: None,
    };
    assert_refused(
        env,
        &env.caller,
        &lock(t, WaitSpec::NoWait, LockMode::Session),
        Refusal::UnknownSpool,
        "unknown-spool",
    );
    let text = env.log_since(mark);
    for line in text.lines() {
        assert!(
            line.starts_with("mail.") || line.starts_with("authpriv."),
            "forged line: {line}"
        );
        assert!(!line.contains('\u{1b}'), "escape in log: {line}");
        assert_eq!(line.matches("result=").count(), 1, "forged field: {line}");
    }
    assert!(
        text.contains("requested=sltest-caller\\x0aJan\\x20\\x201"),
        "{text}"
    );
}

pub(crate) fn refuses_to_run_unprivileged(env: &Env) {
    env.reset();
    let mut run = env.run(&env.caller);
    run.binary = env.plain.clone();
    assert_start_refused(
        env,
        &run,
        exit::NOT_PRIVILEGED,
        "setgid bit",
        "not-privileged",
    );
    let mut run = env.run(&env.caller);
    run.nnp = true;
    assert_start_refused(
        env,
        &run,
        exit::NOT_PRIVILEGED,
        "no_new_privs",
        "not-privileged",
    );
}
