//! The audit trail cannot be forged (issue 12, item 6): the rsyslog
//! configuration of `docs/audit.md`, loaded exactly as written there (the
//! `imuxsock` line and the drop-in, cut from the document between their
//! markers, so the two cannot drift), files the helper's records in
//! `/var/log/spoollock-helper.log` and not the ones an ordinary user sends
//! to `/dev/log` with the helper's tag, facility and text.
//!
//! The helper claims the mail group as its sender gid (`SCM_CREDENTIALS`),
//! which the kernel allows only to a process that has it; the test also
//! shows the kernel refusing that claim from the ordinary user.
//!
//! Runs as root in the privileged harness (`support/privileged_env.rs`),
//! with an empty tmpfs over `/var/log` inside its mount namespace, so the
//! snippet's file is private to the test.

#[path = "support/privileged_env.rs"]
mod privileged_env;

use std::io::IoSlice;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;

use nix::errno::Errno;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr, UnixCredentials};
use privileged_env::*;
use spoollock_protocol::{exit, Reply};

/// Where the snippet files the helper's records.
const HELPER_LOG: &str = "/var/log/spoollock-helper.log";

/// The text between `<!-- NAME-begin -->` and `<!-- NAME-end -->` in
/// `docs/audit.md`, without the code fence.
fn doc_block(name: &str) -> String {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/audit.md");
    let text = std::fs::read_to_string(&doc).expect("docs/audit.md");
    let begin = format!("<!-- {name}-begin -->");
    let end = format!("<!-- {name}-end -->");
    let from = text
        .find(&begin)
        .unwrap_or_else(|| panic!("no {begin} in docs/audit.md"));
    let to = text
        .find(&end)
        .unwrap_or_else(|| panic!("no {end} in docs/audit.md"));
    text[from + begin.len()..to]
        .lines()
        .filter(|l| !l.starts_with("```"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn setup() -> Env {
    let mail = nix::unistd::Group::from_name("mail")
        .unwrap()
        .expect("group mail");
    // The snippet names Debian's mail gid; a machine with another one
    // must adapt the document, not the test.
    assert!(
        doc_block("rsyslog-snippet").contains(&format!("$!gid == {}", mail.gid)),
        "docs/audit.md filters on another gid than this machine's mail group ({})",
        mail.gid
    );
    Env::setup_with(&Syslog {
        imuxsock: doc_block("rsyslog-imuxsock"),
        rules: doc_block("rsyslog-snippet"),
        private_dirs: vec!["/var/log".into()],
    })
}

/// The lines the snippet filed so far.
fn filed() -> String {
    std::fs::read_to_string(HELPER_LOG).unwrap_or_default()
}

/// Wait (bounded) until the snippet's file has a line with every needle.
fn wait_filed(needles: &[&str]) -> String {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let text = filed();
        if let Some(line) = text.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return line.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no line with {needles:?} in {HELPER_LOG}:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `logger` as the ordinary caller: a record with the helper's tag.
fn forge(env: &Env, priority: &str, text: &str) {
    let out = bounded_output(
        Command::new(&env.tools.setpriv)
            .arg(format!("--reuid={}", env.caller.uid))
            .arg(format!("--regid={}", env.caller.gid))
            .arg("--init-groups")
            .arg("--")
            .arg(which("logger", "bsdutils"))
            .args(["-p", priority, "-t", "spoollock-helper[4242]", text])
            .env_clear(),
    );
    assert!(out.status.success(), "logger as the caller: {out:?}");
}

fn forged_records_are_not_filed_as_the_helpers(env: &Env) {
    env.reset();
    let mark = env.log_mark();
    let uid = env.caller.uid;
    let login = &env.caller.name;

    // Forgeries first: the daemon handles /dev/log in order, so once the
    // real records sent after them are filed, the forgeries were judged.
    let grant = format!(
        "op=lock result=granted uid={uid} login={login} client_pid=4241 requested={login} \
         spool=/var/mail lock={login}.lock mode=session wait=none forged=logger"
    );
    let release = format!(
        "op=release result=released uid={uid} login={login} client_pid=4241 spool=/var/mail \
         lock={login}.lock trigger=eof forged=logger"
    );
    forge(env, "mail.info", &grant);
    forge(env, "mail.info", &release);
    forge(
        env,
        "authpriv.warning",
        "op=start result=no-syslog forged=logger",
    );
    // The kernel refuses the ordinary user's claim of the mail group, and
    // a record with the caller's own gid is not filed.
    let out = bounded_output(
        Command::new(&env.tools.setpriv)
            .arg(format!("--reuid={}", env.caller.uid))
            .arg(format!("--regid={}", env.caller.gid))
            .arg("--init-groups")
            .arg("--")
            .arg(std::env::current_exe().unwrap())
            .arg("--forge")
            .arg(env.mail_gid.to_string())
            .env_clear(),
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "forger: {out:?}");
    assert!(
        said.contains("claim of the mail group: EPERM"),
        "the kernel let an ordinary user claim gid {}: {said}",
        env.mail_gid
    );
    assert!(said.contains("own gid: sent"), "{said}");
    // Every forgery reached the daemon (the test's own mail/authpriv
    // file shows them, as mail.log and auth.log would).
    for needle in ["forged=logger", "forged=own-gid"] {
        env.wait_log(mark, &["spoollock-helper[4242]:", needle]);
    }

    // The real helper: a grant and a release at end of file (its last
    // record before it exits), and a refusal to start (sent right before
    // exiting too).
    let (mut c, info) = Client::open(env, &env.caller);
    let pid = c.pid();
    let _watchdog = Watchdog::new(pid, PATIENCE);
    assert!(matches!(c.call(&session_lock()), Reply::Locked(_)));
    let (status, _) = c.finish();
    assert!(status.success());
    let mut run = env.run(&env.caller);
    run.args = vec!["--bogus".into()];
    let mut refused = Client::start(env, &run);
    let refused_pid = refused.pid();
    let _watchdog_refused = Watchdog::new(refused_pid, PATIENCE);
    refused.close_input();
    let (status, _) = refused.finish();
    assert_eq!(status.code(), Some(exit::USAGE));

    let tag = format!("spoollock-helper[{pid}]:");
    let sender = format!("sender={pid}/{uid}/{}", env.mail_gid);
    let granted = wait_filed(&[&tag, "mail.info", "op=lock result=granted", &sender]);
    wait_filed(&[&tag, "op=release result=released", "trigger=eof", &sender]);
    let start_tag = format!("spoollock-helper[{refused_pid}]:");
    wait_filed(&[
        &start_tag,
        "authpriv.warning",
        "op=start result=bad-arguments",
    ]);
    assert!(
        granted.contains(&format!("login={}", info.login)),
        "{granted}"
    );

    let text = filed();
    assert!(
        !text.contains("forged="),
        "a forged record was filed as the helper's:\n{text}"
    );
    for line in text.lines() {
        assert!(
            line.contains(&format!("/{}", env.mail_gid)) && line.contains("spoollock-helper["),
            "a line without the mail group as sender: {line}"
        );
    }
    println!("filed as the helper's (forgeries left out):\n{text}");
}

/// `--forge MAILGID`, run as the ordinary caller: claim the mail group as
/// sender gid on `/dev/log` (the kernel must refuse), then send with the
/// caller's own gid. Prints what happened.
fn forge_mode(mail_gid: u32) {
    let socket = std::os::unix::net::UnixDatagram::unbound().unwrap();
    socket.connect("/dev/log").unwrap();
    let send = |gid: u32, text: &str| {
        let creds = UnixCredentials::from(nix::libc::ucred {
            pid: std::process::id() as i32,
            uid: nix::unistd::getuid().as_raw(),
            gid,
        });
        let cmsg = [ControlMessage::ScmCredentials(&creds)];
        let iov = [IoSlice::new(text.as_bytes())];
        sendmsg::<UnixAddr>(socket.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
    };
    let text = "<22>spoollock-helper[4242]: op=release result=released forged=mail-gid";
    match send(mail_gid, text) {
        Err(Errno::EPERM) => println!("claim of the mail group: EPERM"),
        other => println!("claim of the mail group: {other:?}"),
    }
    let own = nix::unistd::getgid().as_raw();
    let text = "<22>spoollock-helper[4242]: op=release result=released forged=own-gid";
    match send(own, text) {
        Ok(_) => println!("own gid: sent"),
        Err(e) => println!("own gid: {e}"),
    }
}

const SCENARIOS: &[Scenario] = &[(
    "forged_records_are_not_filed_as_the_helpers",
    forged_records_are_not_filed_as_the_helpers,
)];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--forge") {
        forge_mode(args[2].parse().expect("mail gid"));
        return;
    }
    run_scenarios("audit trail tests", SCENARIOS, setup);
}
