//! The privileged end-to-end harness of `spoollock-helper`, shared by the
//! test binaries that include this file by path (`privileged/main.rs` and the
//! scenario files beside it).
//!
//! Everything is set up inside a private mount namespace so the machine's
//! real spool, `/dev` and configuration stay untouched:
//!
//! - two users, `sltest-caller` and `sltest-victim` (`useradd`, idempotent);
//! - a tmpfs over `/var/mail`, `root:mail 2775`;
//! - a tmpfs over `/etc/spoollock` holding a `helper.conf` that names the
//!   extra (good and deliberately unsafe) spools under the scratch dir;
//! - a tmpfs scratch dir (`/run/spoollock-tests.PID`, mounted without
//!   `nosuid`) with the helper installed `root:mail 2755`, a copy without
//!   the setgid bit, and the extra spools (one of them a ramfs, where the
//!   helper works as on NFS: named temporary files);
//! - a tmpfs over `/dev` with the few device nodes needed and a private
//!   `/dev/log`, served by an `rsyslogd` started here with its own
//!   configuration ([`Syslog`]) that writes `mail` and `authpriv` to a file
//!   the tests read.
//!
//! The helper then runs as `sltest-caller` (through `setpriv`, with
//! `prlimit`, `sh` and `perl` for hostile rlimits, descriptors and argv)
//! and is driven over the real protocol.
//!
//! Debian packages needed: rsyslog, util-linux (setpriv, prlimit), passwd
//! (useradd), perl-base, bsdutils (logger).

// Each file that includes this one uses a different part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{chown, symlink, MetadataExt, PermissionsExt};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

// Not every binary that includes this file uses it.
#[allow(unused_imports)]
pub use spoollock_test_support::dead_pid;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{Group, Pid, User};
use spoollock_protocol::{
    read_frame, write_frame, CodecError, Hello, LockInfo, LockMode, LockRequest, Refusal, Reply,
    Request, SessionInfo, SpoolSel, Target, WaitSpec, Welcome,
};

pub const HELPER_BIN: &str = env!("CARGO_BIN_EXE_spoollock-helper");
pub const CALLER: &str = "sltest-caller";
pub const VICTIM: &str = "sltest-victim";
pub const SPOOL: &str = "/var/mail";
pub const CONFIG_DIR: &str = "/etc/spoollock";
/// How long to wait for something that should happen (a log line, a
/// process exit). Never asserted on: only a bound so a failure ends.
pub const PATIENCE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Environment

#[derive(Debug, Clone)]
pub struct Ids {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

pub struct Env {
    pub base: PathBuf,
    pub helper: PathBuf,
    pub plain: PathBuf,
    pub caller: Ids,
    pub victim: Ids,
    pub mail_gid: u32,
    pub log: PathBuf,
    pub rsyslogd: std::sync::Mutex<Option<Child>>,
    /// How to start it again (see [`Env::start_syslog`]).
    pub rsyslog_command: (PathBuf, PathBuf, PathBuf),
    pub tools: Tools,
}

/// One spool entry as listed: inode, mode, uid, gid, size, mtime (s, ns).
pub type Listing = (u64, u32, u32, u32, u64, i64, i64);

pub struct Tools {
    pub setpriv: PathBuf,
    pub prlimit: PathBuf,
    pub perl: PathBuf,
    pub sh: PathBuf,
}

pub fn which(name: &str, package: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("`{name}` not found: install the Debian package `{package}`");
}

pub fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn ensure_user(name: &str) -> Ids {
    if User::from_name(name).unwrap().is_none() {
        run_ok(Command::new(which("useradd", "passwd")).args([
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "--user-group",
            "--comment",
            "spoollock test user",
            name,
        ]));
    }
    let user = User::from_name(name).unwrap().expect("user just created");
    Ids {
        name: name.to_owned(),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    }
}

pub fn mount_tmpfs(at: &Path, options: &str) {
    mount(
        Some("tmpfs"),
        at,
        Some("tmpfs"),
        MsFlags::empty(),
        Some(options),
    )
    .unwrap_or_else(|e| panic!("mount tmpfs on {}: {e}", at.display()));
}

pub fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

pub fn make_dir(path: &Path, uid: u32, gid: u32, mode: u32) {
    fs::create_dir_all(path).unwrap();
    chown(path, Some(uid), Some(gid)).unwrap();
    set_mode(path, mode);
}

impl Drop for Env {
    /// Never leave the daemon behind, even when the run panics.
    fn drop(&mut self) {
        self.stop_daemon();
    }
}

/// How the test's `rsyslogd` is configured: the `imuxsock` module line,
/// and rules added after the test's own (which file every `mail` and
/// `authpriv` record in [`Env::log`]).
#[derive(Debug, Clone)]
pub struct Syslog {
    pub imuxsock: String,
    pub rules: String,
    /// Directories hidden under an empty tmpfs in the namespace before the
    /// daemon starts (rules that write where the real system logs).
    pub private_dirs: Vec<PathBuf>,
}

impl Default for Syslog {
    fn default() -> Self {
        Syslog {
            imuxsock: "module(load=\"imuxsock\" SysSock.Name=\"/dev/log\" \
                       SysSock.RateLimit.Interval=\"0\")"
                .into(),
            rules: String::new(),
            private_dirs: Vec::new(),
        }
    }
}

impl Env {
    pub fn setup() -> Env {
        Env::setup_with(&Syslog::default())
    }

    pub fn setup_with(syslog_conf: &Syslog) -> Env {
        let tools = Tools {
            setpriv: which("setpriv", "util-linux"),
            prlimit: which("prlimit", "util-linux"),
            perl: which("perl", "perl-base"),
            sh: which("sh", "dash"),
        };
        let rsyslogd = which("rsyslogd", "rsyslog");
        which("logger", "bsdutils"); // start_syslog needs it
        let caller = ensure_user(CALLER);
        let victim = ensure_user(VICTIM);
        let mail_gid = Group::from_name("mail")
            .unwrap()
            .expect("group mail exists on Debian")
            .gid
            .as_raw();

        // A private mount namespace: nothing below is seen outside.
        unshare(CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS)");
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .expect("make / rprivate");

        let base = PathBuf::from(format!("/run/spoollock-tests.{}", std::process::id()));
        fs::create_dir_all(&base).unwrap();
        // A tmpfs of our own: not nosuid, so the setgid bit is honoured.
        mount_tmpfs(&base, "mode=0755");

        // /dev with a private syslog socket.
        mount_tmpfs(Path::new("/dev"), "mode=0755");
        for (name, minor) in [
            ("null", 3),
            ("zero", 5),
            ("full", 7),
            ("random", 8),
            ("urandom", 9),
        ] {
            let p = Path::new("/dev").join(name);
            mknod(
                &p,
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o666),
                makedev(1, minor),
            )
            .unwrap();
            set_mode(&p, 0o666);
        }
        symlink("/proc/self/fd", "/dev/fd").unwrap();
        for (i, name) in ["stdin", "stdout", "stderr"].iter().enumerate() {
            symlink(format!("/proc/self/fd/{i}"), Path::new("/dev").join(name)).unwrap();
        }

        // The spool.
        mount_tmpfs(Path::new(SPOOL), "mode=2775");
        chown(SPOOL, Some(0), Some(mail_gid)).unwrap();
        set_mode(Path::new(SPOOL), 0o2775);

        // The helper, setgid mail, and a copy without the bit.
        let bin = base.join("bin");
        make_dir(&bin, 0, 0, 0o755);
        let helper = bin.join("spoollock-helper");
        fs::copy(HELPER_BIN, &helper).unwrap();
        chown(&helper, Some(0), Some(mail_gid)).unwrap();
        set_mode(&helper, 0o2755);
        let plain = bin.join("spoollock-helper-plain");
        fs::copy(HELPER_BIN, &plain).unwrap();
        chown(&plain, Some(0), Some(mail_gid)).unwrap();
        set_mode(&plain, 0o755);

        // Extra spools: one good, the others unsafe in one way each.
        let spools = base.join("spools");
        make_dir(&spools, 0, 0, 0o755);
        make_dir(&spools.join("good"), 0, mail_gid, 0o2775);
        make_dir(&spools.join("world"), 0, mail_gid, 0o2777);
        make_dir(&spools.join("userowned"), caller.uid, mail_gid, 0o2775);
        make_dir(&spools.join("rootgroup"), 0, 0, 0o2775);
        make_dir(&spools.join("readonly"), 0, mail_gid, 0o2755);
        make_dir(&spools.join("unlisted"), 0, mail_gid, 0o2775);
        make_dir(&spools.join("userdir"), caller.uid, caller.gid, 0o755);
        make_dir(&spools.join("userdir/spool"), 0, mail_gid, 0o2775);
        symlink(SPOOL, spools.join("link")).unwrap();
        // A good spool on a file system the lockfile crate does not know
        // for local (ramfs): named temporary files and identity checks
        // through a fresh open, as on NFS.
        let ramfs = spools.join("ramfs");
        fs::create_dir_all(&ramfs).unwrap();
        mount(
            Some("ramfs"),
            &ramfs,
            Some("ramfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .expect("mount ramfs");
        chown(&ramfs, Some(0), Some(mail_gid)).unwrap();
        set_mode(&ramfs, 0o2775);

        // The configuration file, at the helper's built-in path.
        if !Path::new(CONFIG_DIR).exists() {
            // Only a mount point; the real configuration is never written.
            fs::create_dir_all(CONFIG_DIR).unwrap();
            set_mode(Path::new(CONFIG_DIR), 0o755);
        }
        mount_tmpfs(Path::new(CONFIG_DIR), "mode=0755");
        let mut conf = String::from("# spoollock privileged tests\n");
        for s in [
            "good",
            "ramfs",
            "world",
            "userowned",
            "rootgroup",
            "readonly",
            "link",
            "userdir/spool",
        ] {
            conf.push_str(&format!("spool {}\n", spools.join(s).display()));
        }
        let conf_path = Path::new(CONFIG_DIR).join("helper.conf");
        fs::write(&conf_path, conf).unwrap();
        set_mode(&conf_path, 0o644);

        for dir in &syslog_conf.private_dirs {
            mount_tmpfs(dir, "mode=0755");
        }

        // rsyslogd on a private /dev/log, writing mail and authpriv to a file.
        let syslog = base.join("syslog");
        make_dir(&syslog, 0, 0, 0o755);
        let log = syslog.join("audit.log");
        let rsyslog_conf = syslog.join("rsyslog.conf");
        fs::write(
            &rsyslog_conf,
            format!(
                "global(workDirectory=\"{dir}\")\n\
                 {imuxsock}\n\
                 template(name=\"audit\" type=\"string\" \
                 string=\"%syslogfacility-text%.%syslogseverity-text% %syslogtag%%msg%\\n\")\n\
                 mail.*;authpriv.* action(type=\"omfile\" file=\"{log}\" template=\"audit\")\n\
                 {rules}\n",
                dir = syslog.display(),
                log = log.display(),
                imuxsock = syslog_conf.imuxsock,
                rules = syslog_conf.rules,
            ),
        )
        .unwrap();
        let mut env = Env {
            base,
            helper,
            plain,
            caller,
            victim,
            mail_gid,
            log,
            rsyslogd: std::sync::Mutex::new(None),
            rsyslog_command: (rsyslogd, rsyslog_conf, syslog.join("rsyslogd.pid")),
            tools,
        };
        env.start_syslog();
        env.tools.sh = env.tools.sh.clone();
        env
    }

    pub fn teardown(&mut self) {
        self.stop_daemon();
        let _ = umount2(&self.base, MntFlags::MNT_DETACH);
        let _ = fs::remove_dir(&self.base);
    }

    pub fn stop_daemon(&mut self) {
        self.stop_syslog();
    }

    /// Stop the syslog daemon: `/dev/log` stays, refusing connections.
    pub fn stop_syslog(&self) {
        let mut daemon = self.rsyslogd.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut d) = daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }

    /// Start the syslog daemon (again) and wait until it files records.
    pub fn start_syslog(&self) {
        let (program, conf, pid) = &self.rsyslog_command;
        let _ = fs::remove_file(pid);
        let daemon = Command::new(program)
            .arg("-n")
            .arg("-f")
            .arg(conf)
            .arg("-i")
            .arg(pid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rsyslogd");
        *self.rsyslogd.lock().unwrap_or_else(|p| p.into_inner()) = Some(daemon);
        let deadline = Instant::now() + PATIENCE;
        let mark = self.log_mark();
        loop {
            // Until it listens and files what it hears.
            let _ = Command::new(which("logger", "bsdutils"))
                .args(["-p", "mail.info", "-t", "sltest", "syslog-ready"])
                .status();
            std::thread::sleep(Duration::from_millis(20));
            if self
                .log_since(mark)
                .lines()
                .any(|l| l.contains("mail.info") && l.contains("syslog-ready"))
            {
                return;
            }
            assert!(Instant::now() < deadline, "rsyslogd does not file records");
        }
    }

    pub fn spools(&self) -> PathBuf {
        self.base.join("spools")
    }

    // -- the audit log ------------------------------------------------------

    pub fn log_mark(&self) -> usize {
        fs::read(&self.log).map(|b| b.len()).unwrap_or(0)
    }

    pub fn log_since(&self, mark: usize) -> String {
        let bytes = fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(&bytes[mark.min(bytes.len())..]).into_owned()
    }

    /// Wait for a log line (written after `mark`) containing every needle.
    pub fn wait_log(&self, mark: usize, needles: &[&str]) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let text = self.log_since(mark);
            if let Some(line) = text.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return line.to_owned();
            }
            if Instant::now() > deadline {
                panic!("no audit line with {needles:?}; log since mark:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    // -- the spool ----------------------------------------------------------

    /// Empty the spools and give both users a mailbox in `/var/mail`.
    pub fn reset(&self) {
        for dir in [
            PathBuf::from(SPOOL),
            self.spools().join("good"),
            self.spools().join("ramfs"),
        ] {
            for entry in fs::read_dir(&dir).unwrap() {
                let p = entry.unwrap().path();
                if p.is_dir() && !p.is_symlink() {
                    fs::remove_dir_all(&p).unwrap();
                } else {
                    fs::remove_file(&p).unwrap();
                }
            }
        }
        for who in [&self.caller, &self.victim] {
            let p = Path::new(SPOOL).join(&who.name);
            fs::write(
                &p,
                format!("From {} Thu Jan  1 00:00:00 1970\n\nhello\n", who.name),
            )
            .unwrap();
            chown(&p, Some(who.uid), Some(self.mail_gid)).unwrap();
            set_mode(&p, 0o660);
        }
    }

    /// Every entry of every spool: name -> (inode, mode, uid, gid, size, mtime).
    pub fn snapshot(&self) -> BTreeMap<PathBuf, Listing> {
        let mut out = BTreeMap::new();
        let mut dirs = vec![PathBuf::from(SPOOL), self.spools()];
        while let Some(dir) = dirs.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let p = entry.unwrap().path();
                let m = fs::symlink_metadata(&p).unwrap();
                if m.is_dir() {
                    dirs.push(p.clone());
                }
                out.insert(
                    p,
                    (
                        m.ino(),
                        m.mode(),
                        m.uid(),
                        m.gid(),
                        m.size(),
                        m.mtime(),
                        m.mtime_nsec(),
                    ),
                );
            }
        }
        out
    }

    pub fn lock_path(&self) -> PathBuf {
        Path::new(SPOOL).join(format!("{CALLER}.lock"))
    }

    pub fn run(&self, who: &Ids) -> Run {
        Run {
            user: who.clone(),
            binary: self.helper.clone(),
            env: vec![("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into())],
            nnp: false,
            limits: Vec::new(),
            close: None,
            stdin: Io::Pipe,
            stdout: Io::Pipe,
            argc0: false,
            args: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------
// Running the helper as a user

#[derive(Debug, Clone)]
pub enum Io {
    Pipe,
    Null,
    File(PathBuf),
}

impl Io {
    pub fn stdio(&self) -> Stdio {
        match self {
            Io::Pipe => Stdio::piped(),
            Io::Null => Stdio::null(),
            Io::File(p) => Stdio::from(fs::File::create(p).unwrap()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Run {
    pub user: Ids,
    pub binary: PathBuf,
    pub env: Vec<(String, String)>,
    pub nnp: bool,
    /// `prlimit` options applied (as the user) right before the helper.
    pub limits: Vec<String>,
    /// A standard descriptor to close at exec.
    pub close: Option<u8>,
    pub stdin: Io,
    pub stdout: Io,
    pub argc0: bool,
    pub args: Vec<String>,
}

impl Run {
    pub fn command(&self, tools: &Tools) -> Command {
        let mut cmd = Command::new(&tools.setpriv);
        cmd.arg(format!("--reuid={}", self.user.uid))
            .arg(format!("--regid={}", self.user.gid))
            .arg("--init-groups");
        if self.nnp {
            cmd.arg("--no-new-privs");
        }
        cmd.arg("--");
        if let Some(fd) = self.close {
            cmd.arg(&tools.sh)
                .arg("-c")
                .arg(format!("exec \"$0\" \"$@\" {fd}>&-"));
        }
        if !self.limits.is_empty() {
            cmd.arg(&tools.prlimit).args(&self.limits).arg("--");
        }
        if self.argc0 {
            cmd.arg(&tools.perl).arg("-e").arg("exec {$ARGV[0]} ()");
        }
        cmd.arg(&self.binary).args(&self.args);
        cmd.env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(self.stdin.stdio())
            .stdout(self.stdout.stdio())
            .stderr(Stdio::piped());
        cmd
    }
}

/// A running helper and our ends of its pipes.
pub struct Client {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<ChildStdout>,
}

impl Client {
    pub fn start(env: &Env, run: &Run) -> Client {
        let mut child = run.command(&env.tools).spawn().expect("spawn helper");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        Client {
            child,
            stdin,
            stdout,
        }
    }

    /// Start as `who`, shake hands, and return the session information.
    pub fn open(env: &Env, who: &Ids) -> (Client, SessionInfo) {
        let mut c = Client::start(env, &env.run(who));
        let welcome = c.hello(&Hello::current());
        assert!(welcome.accepted, "{welcome:?}");
        match c.read() {
            Reply::Ready(info) => (c, info),
            other => panic!("expected Ready, got {other:?} ({})", c.finish().1),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn hello(&mut self, hello: &Hello) -> Welcome {
        write_frame(self.stdin.as_mut().unwrap(), hello).unwrap();
        read_frame(self.stdout.as_mut().unwrap()).expect("welcome")
    }

    pub fn send(&mut self, request: &Request) {
        write_frame(self.stdin.as_mut().unwrap(), request).unwrap();
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        let w = self.stdin.as_mut().unwrap();
        // The helper may already have given up: a broken pipe is fine.
        let _ = w.write_all(bytes);
        let _ = w.flush();
    }

    pub fn read(&mut self) -> Reply {
        read_frame(self.stdout.as_mut().unwrap()).expect("reply")
    }

    pub fn try_read(&mut self) -> Result<Reply, CodecError> {
        read_frame(self.stdout.as_mut().unwrap())
    }

    pub fn call(&mut self, request: &Request) -> Reply {
        self.send(request);
        self.read()
    }

    pub fn close_input(&mut self) {
        self.stdin = None;
    }

    /// Close our ends and collect the exit status and standard error.
    pub fn finish(mut self) -> (ExitStatus, String) {
        self.stdin = None;
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        self.stdout = None;
        let status = self.child.wait().unwrap();
        (status, err)
    }

    pub fn kill(&mut self, signal: Signal) {
        kill(Pid::from_raw(self.pid() as i32), signal).unwrap();
    }
}

pub fn target() -> Target {
    Target::default_spool()
}

pub fn named(mailbox: &str) -> Target {
    Target {
        spool: SpoolSel::Default,
        mailbox: Some(mailbox.to_owned()),
    }
}

pub fn in_spool(path: &Path) -> Target {
    Target {
        spool: SpoolSel::Path(path.to_str().unwrap().to_owned()),
        mailbox: None,
    }
}

pub fn lock(target: Target, wait: WaitSpec, mode: LockMode) -> Request {
    Request::Lock(LockRequest {
        target,
        wait,
        mode,
        stale_age_secs: None,
    })
}

pub fn session_lock() -> Request {
    lock(target(), WaitSpec::NoWait, LockMode::Session)
}

pub fn expect_locked(reply: Reply) -> LockInfo {
    match reply {
        Reply::Locked(info) => info,
        other => panic!("expected Locked, got {other:?}"),
    }
}

pub fn expect_error(reply: Reply) -> Refusal {
    match reply {
        Reply::Error(r) => r,
        other => panic!("expected an error, got {other:?}"),
    }
}

pub fn bye(mut c: Client) -> (ExitStatus, String) {
    assert_eq!(c.call(&Request::Bye), Reply::Bye);
    c.finish()
}

pub fn first_line(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

pub fn wait_gone(path: &Path) {
    let deadline = Instant::now() + PATIENCE;
    while path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} was not removed",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A hostile request: refused with `expected`, audited at authpriv with
/// `keyword`, and nothing in any spool changed.
pub fn assert_refused(env: &Env, who: &Ids, request: &Request, expected: Refusal, keyword: &str) {
    let before = env.snapshot();
    let mark = env.log_mark();
    let (mut c, _) = Client::open(env, who);
    let refusal = expect_error(c.call(request));
    assert_eq!(refusal, expected, "for {request:?}");
    let pid = c.pid();
    let (status, _) = bye(c);
    assert!(status.success());
    let tag = format!("spoollock-helper[{pid}]:");
    let class = if expected.is_policy() {
        "authpriv.warning"
    } else {
        "mail.warning"
    };
    env.wait_log(
        mark,
        &[
            class,
            &tag,
            &format!("result={keyword}"),
            &format!("uid={}", who.uid),
        ],
    );
    assert_eq!(
        env.snapshot(),
        before,
        "spool changed by refused {request:?}"
    );
}

/// The `spoollock` binary of this build, copied where the test users can
/// run it; `None` (with the reason printed) if it was not built.
pub fn spoollock_binary(env: &Env) -> Option<PathBuf> {
    let exe = std::env::current_exe().unwrap();
    let built = exe.parent()?.parent()?.join("spoollock");
    if !built.exists() {
        spoollock_test_support::skip_named(
            "spoollock_client_through_the_helper",
            format_args!("{} not built", built.display()),
        );
        return None;
    }
    let copy = env.base.join("bin").join("spoollock");
    fs::copy(&built, &copy).unwrap();
    set_mode(&copy, 0o755);
    Some(copy)
}

/// Run `spoollock ARGS` as `who`, with the test's helper (the library
/// honours `SPOOLLOCK_HELPER` because it runs unprivileged).
pub fn spoollock_as(env: &Env, who: &Ids, bin: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(&env.tools.setpriv);
    cmd.arg(format!("--reuid={}", who.uid))
        .arg(format!("--regid={}", who.gid))
        .arg("--init-groups")
        .arg("--")
        .arg(bin)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("SPOOLLOCK_HELPER", &env.helper);
    cmd
}

/// `spoollock run --mailbox` as the caller, holding the lock through the
/// helper while its command sleeps; returned once the command has started
/// (it touches `marker`), within [`PATIENCE`]. The spool's base directory
/// is opened to the caller only for that start. `setpriv` execs spoollock:
/// the child's pid is spoollock's, the helper's parent.
pub fn start_run_holding(env: &Env, bin: &Path, marker: &Path) -> Child {
    let _ = fs::remove_file(marker);
    let script = format!("touch '{}'; exec sleep 600", marker.display());
    set_mode(&env.base, 0o777);
    let run = spoollock_as(
        env,
        &env.caller,
        bin,
        &["run", "--mailbox", "--", "sh", "-c", &script],
    )
    .spawn()
    .unwrap();
    let start = Instant::now();
    while !marker.exists() {
        assert!(start.elapsed() < PATIENCE, "the command never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    set_mode(&env.base, 0o755);
    run
}

// ---------------------------------------------------------------------------
// Running scenarios

/// A named scenario.
pub type Scenario = (&'static str, fn(&Env));

/// The `main` of a privileged test binary (no libtest harness: the
/// namespace, users and daemon are set up once for all scenarios): runs
/// the scenarios whose names contain a filter given on the command line
/// (all without one) in the environment `setup` makes, prints a libtest
/// summary, and exits non-zero on a failure. Unless run as root, skips
/// (one SKIP line; a failure in CI).
pub fn run_scenarios(what: &str, scenarios: &[Scenario], setup: impl FnOnce() -> Env) {
    let args: Vec<String> = std::env::args().collect();
    if !nix::unistd::geteuid().is_root() {
        spoollock_test_support::skip_named(what, "they must run as root (CI does)");
        return;
    }
    let filters: Vec<&String> = args
        .iter()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let selected: Vec<&Scenario> = scenarios
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    if selected.is_empty() {
        println!("\nrunning 0 {what}\n\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; {} filtered out", scenarios.len());
        return;
    }
    let mut env = setup();
    let (mut passed, mut failed) = (0, Vec::new());
    println!("\nrunning {} {what}", selected.len());
    for (name, scenario) in selected {
        // A read from the helper or a wait that hangs fails the run.
        let deadline =
            spoollock_test_support::deadline(format!("{what}: {name}"), Duration::from_secs(900));
        let result = catch_unwind(AssertUnwindSafe(|| scenario(&env)));
        drop(deadline);
        match result {
            Ok(()) => {
                println!("test {name} ... ok");
                passed += 1;
            }
            Err(_) => {
                println!("test {name} ... FAILED");
                failed.push(*name);
            }
        }
    }
    env.teardown();
    println!();
    if !failed.is_empty() {
        println!("failures: {}", failed.join(", "));
    }
    let verdict = if failed.is_empty() { "ok" } else { "FAILED" };
    println!(
        "test result: {verdict}. {passed} passed; {} failed; 0 ignored; 0 measured; {} filtered out",
        failed.len(),
        scenarios.len() - passed - failed.len()
    );
    if !failed.is_empty() {
        std::process::exit(101);
    }
}

// ---------------------------------------------------------------------------
// Bounded waits

/// Kills a process with `SIGKILL` if it is still there after a bound,
/// unless dropped first: a read from or a wait for a process that hangs
/// then ends (with end of file, or a status), and the test fails on what
/// it got instead of hanging.
pub struct Watchdog {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    pub fn new(pid: u32, bound: Duration) -> Watchdog {
        Watchdog::kill_after(pid as i32, bound)
    }

    /// For a whole process group (a tracer and what it runs).
    pub fn group(pgid: u32, bound: Duration) -> Watchdog {
        Watchdog::kill_after(-(pgid as i32), bound)
    }

    fn kill_after(target: i32, bound: Duration) -> Watchdog {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(bound) {
                eprintln!("watchdog: {target} still running after {bound:?}: killed");
                let _ = kill(Pid::from_raw(target), Signal::SIGKILL);
            }
        });
        Watchdog {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `cmd.output()`, with the child killed if it runs longer than
/// [`PATIENCE`].
pub fn bounded_output(cmd: &mut Command) -> std::process::Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let _watchdog = Watchdog::new(child.id(), PATIENCE);
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

// ---------------------------------------------------------------------------
// Files planted in the spool, processes, records

/// The host name as temporary file names carry it (at most 32 bytes,
/// unusual bytes replaced).
pub fn hostname32() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .bytes()
        .take(32)
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_') {
                b as char
            } else {
                '_'
            }
        })
        .collect()
}

/// Put a file `name` in the spool as `uid` (group mail) with `content`,
/// `mode`, and an mtime `age` in the past.
pub fn plant(env: &Env, name: &str, uid: u32, content: &[u8], mode: u32, age: Duration) -> PathBuf {
    let p = Path::new(SPOOL).join(name);
    fs::write(&p, content).unwrap();
    chown(&p, Some(uid), Some(env.mail_gid)).unwrap();
    set_mode(&p, mode);
    fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - age)
        .unwrap();
    p
}

/// What spoollock writes into a lock for `pid` on this host in this boot:
/// a lock of a dead `pid` is stale at once (its holder is gone).
pub fn lock_content(pid: u32) -> Vec<u8> {
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    format!("{pid}\nhost={}\nboot={}\n", host.trim(), boot.trim()).into_bytes()
}

/// The name of a named temporary file (`.lk<pid>.<random>.<host>`) of
/// process `pid`, with `suffix` (`""` or `.stale`).
pub fn temp_name_of(pid: u32, random: u64, suffix: &str) -> String {
    let mut name = format!(".lk{pid:x}.{random:016x}.{}{suffix}", hostname32());
    name.truncate(64);
    name
}

/// Wait (bounded) for a child to exit.
pub fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "process {} did not exit",
            child.id()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The names in the spool that are not the two test users' mailboxes.
pub fn spool_extras() -> Vec<String> {
    extras_in(Path::new(SPOOL))
}

/// The names in `dir` that are not the two test users' mailboxes.
pub fn extras_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != CALLER && n != VICTIM)
        .collect();
    names.sort();
    names
}

/// Read one reply, waiting at most `PATIENCE` for it.
pub fn read_within(c: &mut Client) -> Reply {
    use std::os::fd::AsFd;
    let out = c.stdout.as_ref().unwrap();
    let mut fds = [nix::poll::PollFd::new(
        out.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let ms = u16::try_from(PATIENCE.as_millis()).unwrap_or(u16::MAX);
    let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)).unwrap();
    assert!(ready > 0, "no reply from the helper within {PATIENCE:?}");
    c.read()
}
