//! What the capi tests share: the two builds of the C driver (against
//! Debian's liblockfile and against ours), scratch directories, running
//! a program under a deadline, and what is on disk at a lock name.
#![allow(dead_code, unused_imports)]

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

pub use spoollock_test_support::{dead_pid, on_path, skip_named, Scratch};

/// No program a test runs may take longer than this; past it, it is
/// killed and the test fails (a hang is a failure).
pub const DEADLINE: Duration = Duration::from_secs(120);

pub const DRIVER_C: &str = include_str!("../c/driver.c");

/// Our `liblockfile.so`, as cargo built it for this test run: beside the
/// test binary in `target/<profile>/deps` (`cargo test` does not copy it
/// up to `target/<profile>`, where a `cargo build` puts it).
pub fn our_library() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let so = exe.parent().unwrap().join("liblockfile.so");
    assert!(
        so.exists(),
        "{} is missing: cargo builds it with the tests",
        so.display()
    );
    so
}

/// A directory with `liblockfile.so` and `liblockfile.so.1` naming our
/// library, for `-L` and the run path of programs linked to it.
pub fn our_library_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("capi-lib");
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["liblockfile.so", "liblockfile.so.1"] {
            let link = dir.join(name);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(our_library(), &link).unwrap();
        }
        dir
    })
    .clone()
}

/// The C compiler and Debian's liblockfile (library and headers), or a
/// printed reason to skip.
pub fn have_c_and_liblockfile(test: &str) -> bool {
    let why = if !on_path("cc") {
        Some("no C compiler (`cc`)")
    } else if !Path::new("/usr/include/lockfile.h").exists() {
        Some("no /usr/include/lockfile.h")
    } else if !Command::new("cc")
        .arg("-print-file-name=liblockfile.so")
        .output()
        .is_ok_and(|o| Path::new(String::from_utf8_lossy(&o.stdout).trim()).is_absolute())
    {
        Some("no liblockfile.so to link with")
    } else {
        None
    };
    match why {
        Some(why) => {
            skip_named(
                test,
                format_args!(
                    "{why} (apt-get install gcc libc6-dev liblockfile-dev \
                     liblockfile-bin; scripts/test does it as root)"
                ),
            );
            false
        }
        None => true,
    }
}

/// Which liblockfile a program is linked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lib {
    /// Debian's, from its package.
    Liblockfile,
    /// spoollock-capi's.
    Spoollock,
}

impl Lib {
    pub const BOTH: [Lib; 2] = [Lib::Liblockfile, Lib::Spoollock];

    pub fn name(self) -> &'static str {
        match self {
            Lib::Liblockfile => "liblockfile",
            Lib::Spoollock => "spoollock",
        }
    }
}

/// Build `source` into the program `name`, linked to `lib`: with
/// Debian's headers and library, or with capi's headers and our library
/// (found through the program's run path, before any system copy).
pub fn build_c(name: &str, source: &str, lib: Lib) -> PathBuf {
    static BUILT: Mutex<BTreeMap<(String, Lib), PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    built
        .entry((name.to_owned(), lib))
        .or_insert_with(|| {
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
            let src = dir.join(format!("{name}-{}.c", std::process::id()));
            let exe = dir.join(format!("{name}-{}", lib.name()));
            let tmp = dir.join(format!("{name}-{}-{}", lib.name(), std::process::id()));
            std::fs::write(&src, source).unwrap();
            let mut cc = Command::new("cc");
            cc.args(["-O2", "-Wall", "-Wextra", "-Werror", "-o"])
                .arg(&tmp)
                .arg(&src);
            if lib == Lib::Spoollock {
                let libdir = our_library_dir();
                cc.arg(format!("-I{}/include", env!("CARGO_MANIFEST_DIR")))
                    .arg(format!("-L{}", libdir.display()))
                    // DT_RPATH (not RUNPATH): LD_LIBRARY_PATH cannot override it.
                    .arg(format!(
                        "-Wl,--disable-new-dtags,-rpath,{}",
                        libdir.display()
                    ));
            }
            cc.args(["-llockfile", "-ldl"]);
            let out = cc.output().unwrap();
            let _ = std::fs::remove_file(&src);
            assert!(
                out.status.success(),
                "cc {name} for {}: {}",
                lib.name(),
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::rename(&tmp, &exe).unwrap();
            exe
        })
        .clone()
}

/// The compliance driver linked to `lib`.
pub fn driver(lib: Lib) -> PathBuf {
    build_c("driver", DRIVER_C, lib)
}

pub fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `path` made `secs_ago` seconds old.
pub fn age(path: &Path, secs_ago: u64) {
    spoollock_test_support::age_file(path, secs_ago as i64);
}

/// Write a lock file by hand (as another tool would), `secs_ago` old.
pub fn plant(path: &Path, content: &str, secs_ago: u64) -> u64 {
    std::fs::write(path, content).unwrap();
    set_mode(path, 0o644);
    age(path, secs_ago);
    std::fs::metadata(path).unwrap().ino()
}

/// What is at `path`: `absent`, `dir`, `symlink`, `other`, or for a
/// regular file `file:<first line>` (`planted:` when it is the inode
/// `planted`), then `:fresh` or `:old` (modified in the last minute or
/// not).
pub fn state(path: &Path, planted: Option<u64>) -> String {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return "absent".into();
    };
    let kind = meta.file_type();
    if kind.is_dir() {
        return "dir".into();
    }
    if kind.is_symlink() {
        return "symlink".into();
    }
    if !kind.is_file() || kind.is_fifo() {
        return "other".into();
    }
    let content = std::fs::read_to_string(path).unwrap_or_default();
    let first = content.lines().next().unwrap_or("").to_owned();
    let origin = if Some(meta.ino()) == planted {
        "planted"
    } else {
        "file"
    };
    let fresh = meta
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_none_or(|d| d < Duration::from_secs(60));
    format!("{origin}:{first}:{}", if fresh { "fresh" } else { "old" })
}

/// Temporary files a library left in `dir` (`.lk*`).
pub fn leftovers(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".lk"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Run `cmd` (stdin closed) to completion within [`DEADLINE`]; the
/// output and how long it took. Past the deadline it is killed and the
/// test fails.
pub fn run(cmd: &mut Command) -> (Output, Duration) {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    // Read both pipes on threads so a chatty program cannot block.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut v);
        v
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after {DEADLINE:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    // A forked child (the driver's `orphan`) may hold the pipes a moment
    // longer; the readers end when it exits, within the deadline.
    let stdout = join_within(out_t, start);
    let stderr = join_within(err_t, start);
    (
        Output {
            status,
            stdout,
            stderr,
        },
        elapsed,
    )
}

fn join_within(t: std::thread::JoinHandle<Vec<u8>>, start: Instant) -> Vec<u8> {
    while !t.is_finished() {
        assert!(
            start.elapsed() < DEADLINE,
            "a program's output still open after {DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    t.join().unwrap()
}

pub use spoollock_test_support::as_nobody;

pub use spoollock_test_support::describe;

/// A binary of another package of this workspace (`spoollock`,
/// `spoollock-helper`), built now by cargo if needed (cargo releases its
/// build lock while tests run), in this test's profile and target
/// directory. Within [`DEADLINE`] times five: a first build is slow.
pub fn workspace_binary(package: &str, bin: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "--quiet", "-p", package, "--bin", bin])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEADLINE * 5 {
            let _ = child.kill();
            panic!("building {bin} took longer than {:?}", DEADLINE * 5);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "cargo build -p {package} --bin {bin}: {status}"
    );
    let path = profile_dir.join(bin);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// Make sure the login `name` exists (useradd, no home), for tests that
/// run programs as an unprivileged user with a mailbox in a spool.
pub fn ensure_user(name: &str) -> (u32, u32) {
    if nix::unistd::User::from_name(name).unwrap().is_none() {
        let out = Command::new("useradd")
            .args([
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "--user-group",
                "--comment",
                "spoollock capi test user",
                name,
            ])
            .output()
            .unwrap();
        // Another test may have made it meanwhile.
        assert!(
            out.status.success() || nix::unistd::User::from_name(name).unwrap().is_some(),
            "useradd {name}: {}",
            describe(&out)
        );
    }
    let user = nix::unistd::User::from_name(name).unwrap().unwrap();
    (user.uid.as_raw(), user.gid.as_raw())
}

/// Every program on `$PATH`, or a printed reason to skip `test`.
pub fn have_programs(test: &str, programs: &[&str]) -> bool {
    match programs.iter().find(|p| !on_path(p)) {
        Some(missing) => {
            skip_named(
                test,
                format_args!(
                    "`{missing}` is not installed (scripts/test installs \
                     lockfile-progs bsd-mailx liblockfile-bin rsyslog util-linux passwd as root)"
                ),
            );
            false
        }
        None => true,
    }
}

/// The messages the mbox tests write: headers naming writer and number,
/// and body lines that name them too; every third about 100 KB, so that
/// `cat` needs many writes for it.
pub fn message(writer: &str, seq: u32) -> String {
    let lines = if seq % 3 == 1 {
        1600
    } else {
        3 + seq as usize % 7
    };
    let mut m = format!("X-Writer: {writer}\nX-Seq: {seq}\nSubject: {writer} {seq}\n\n");
    for k in 0..lines {
        m.push_str(&format!(
            "{writer} {seq} line {k:05} abcdefghijklmnopqrstuvwxyz0123456789\n"
        ));
    }
    m
}

/// [`message`] as an mbox entry: `From ` line, message, blank line.
pub fn entry(writer: &str, seq: u32) -> String {
    format!(
        "From {writer}@peers.test Mon Nov 23 10:00:00 2026\n{}\n",
        message(writer, seq)
    )
}

/// Parse `data` as an mbox of [`message`]s, strictly: each message whole
/// and exactly as written (header fields a reader or deliverer adds are
/// skipped). The (writer, seq) of each, in order.
pub fn parse_mbox(data: &str) -> Result<Vec<(String, u32)>, String> {
    if data.is_empty() {
        return Ok(vec![]);
    }
    if !data.ends_with("\n\n") {
        return Err("does not end with a blank line".into());
    }
    let lines: Vec<&str> = data[..data.len() - 1].split('\n').collect();
    let starts: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("From ") && (i == 0 || lines[i - 1].is_empty()))
        .collect();
    if starts.first() != Some(&0) {
        return Err("does not start with a From line".into());
    }
    let mut found = vec![];
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(lines.len());
        let body: Vec<&str> = lines[start + 1..end - 1]
            .iter()
            .copied()
            .filter(|l| !l.starts_with("Status: ") && !l.starts_with("X-Status: "))
            .collect();
        let writer = body
            .first()
            .and_then(|l| l.strip_prefix("X-Writer: "))
            .ok_or_else(|| format!("message {n}: no X-Writer: {:?}", body.first()))?;
        let seq: u32 = body
            .get(1)
            .and_then(|l| l.strip_prefix("X-Seq: "))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("message {n}: no X-Seq"))?;
        let want = message(writer, seq);
        let want: Vec<&str> = want.trim_end_matches('\n').split('\n').collect();
        if body != want {
            return Err(format!(
                "message {n} ({writer} #{seq}) is damaged: {} lines, expected {}",
                body.len(),
                want.len()
            ));
        }
        found.push((writer.to_owned(), seq));
    }
    Ok(found)
}
