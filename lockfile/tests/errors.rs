//! Error paths: each gives a clear, typed error and leaves no temporary
//! file and no lock behind.

mod common;

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;

use common::{assert_no_temp_files, child, listing, Scratch};
use nix::errno::Errno;
use spoollock_lockfile::{acquire, check, LockDir, LockError, Op, Options, Wait};

fn no_wait() -> Options {
    Options {
        wait: Wait::NoWait,
        ..Options::default()
    }
}

/// The child's part: try once to lock `box.lock` in the directory given,
/// optionally under RLIMIT_FSIZE 0, and print the outcome.
fn try_lock_child(spec: &str) {
    let (mode, dir) = spec.split_once('|').unwrap();
    if mode == "fsize0" {
        use nix::sys::resource::{setrlimit, Resource};
        use nix::sys::signal::{signal, SigHandler, Signal};
        // SAFETY: SIG_IGN runs no handler code; this child is single-purpose.
        unsafe { signal(Signal::SIGXFSZ, SigHandler::SigIgn) }.unwrap();
        setrlimit(Resource::RLIMIT_FSIZE, 0, 0).unwrap();
    }
    let dir = LockDir::open(dir.as_ref()).unwrap();
    match acquire(&dir, OsStr::new("box.lock"), &no_wait()) {
        Ok(_) => println!("OUTCOME ok"),
        Err(e) => println!("OUTCOME {e:?} code={}", e.liblockfile_code()),
    }
}

fn try_in_child(mode: &str, dir: &std::path::Path, as_nobody: bool) -> String {
    let _deadline = spoollock_test_support::deadline(
        "a locking child process",
        std::time::Duration::from_secs(60),
    );
    let mut exe = std::env::current_exe().unwrap();
    let _copy;
    if as_nobody {
        // The build tree may sit under a directory `nobody` cannot enter
        // (/root): run a copy from a world-readable place.
        let place = Scratch::new("nobody-exe");
        let copy = place.path().join("errors-test");
        std::fs::copy(&exe, &copy).unwrap();
        std::fs::set_permissions(place.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        exe = copy;
        _copy = place;
    }
    let mut cmd = child::command_with_exe(
        &exe,
        &spoollock_test_support::current_test(),
        &format!("{mode}|{}", dir.display()),
    );
    if as_nobody {
        cmd.uid(65534).gid(65534);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "child failed: {out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout
        .lines()
        .find_map(|l| l.split_once("OUTCOME ").map(|(_, outcome)| outcome))
        .unwrap_or_else(|| panic!("no outcome in {stdout:?}"))
        .to_string()
}

#[test]
fn read_only_directory_is_a_permission_error() {
    if let Some(spec) = child::role() {
        return try_lock_child(&spec);
    }
    let scratch = Scratch::new("readonly");
    let dir = scratch.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let outcome = if nix::unistd::geteuid().is_root() {
        // Root ignores permission bits: ask as `nobody` instead.
        try_in_child("plain", dir, true)
    } else {
        try_in_child("plain", dir, false)
    };
    assert!(
        outcome.contains("Permission")
            && outcome.contains("CreateTemp")
            && outcome.ends_with("code=2"),
        "{outcome}"
    );
    assert_eq!(listing(dir), Vec::<String>::new());
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn file_size_limit_zero_is_a_write_error() {
    if let Some(spec) = child::role() {
        return try_lock_child(&spec);
    }
    let scratch = Scratch::new("fsize");
    let outcome = try_in_child("fsize0", scratch.path(), false);
    assert_eq!(outcome, "TempWrite { errno: EFBIG } code=3");
    assert_eq!(listing(scratch.path()), Vec::<String>::new());
}

#[test]
fn missing_directory() {
    let scratch = Scratch::new("missing");
    let err = LockDir::open(&scratch.path().join("nope")).unwrap_err();
    assert_eq!(
        err,
        LockError::Io {
            op: Op::OpenDir,
            errno: Errno::ENOENT
        }
    );
    assert!(err.to_string().contains("No such file"), "{err}");
}

#[test]
fn names_too_long_or_not_plain() {
    let scratch = Scratch::new("names");
    let dir = LockDir::open(scratch.path()).unwrap();
    let long = "x".repeat(256);
    assert_eq!(
        acquire(&dir, long.as_ref(), &no_wait()).unwrap_err(),
        LockError::NameTooLong
    );
    assert_eq!(LockError::NameTooLong.liblockfile_code(), 1);
    for bad in ["", ".", "..", "a/b", "../x.lock", "/etc/x.lock"] {
        assert_eq!(
            acquire(&dir, bad.as_ref(), &no_wait()).unwrap_err(),
            LockError::InvalidName,
            "{bad:?}"
        );
    }
    // The longest legal name works: the temporary name does not grow with it.
    let longest = "y".repeat(255);
    acquire(&dir, longest.as_ref(), &no_wait())
        .unwrap()
        .release()
        .unwrap();
    assert_eq!(listing(scratch.path()), Vec::<String>::new());
}

#[test]
fn a_symlink_at_the_lock_name_is_refused_and_not_followed() {
    let scratch = Scratch::new("symlink");
    let dir_path = scratch.path();
    std::fs::write(dir_path.join("target"), b"precious").unwrap();
    std::os::unix::fs::symlink("target", dir_path.join("box.lock")).unwrap();
    std::os::unix::fs::symlink("nowhere", dir_path.join("dangling.lock")).unwrap();
    std::fs::create_dir(dir_path.join("dir.lock")).unwrap();
    let dir = LockDir::open(dir_path).unwrap();
    for name in ["box.lock", "dangling.lock", "dir.lock"] {
        assert_eq!(
            acquire(&dir, name.as_ref(), &no_wait()).unwrap_err(),
            LockError::NotRegularFile,
            "{name}"
        );
        assert_eq!(
            check(&dir, name.as_ref(), &no_wait()).unwrap_err(),
            LockError::NotRegularFile,
            "{name}"
        );
    }
    assert_eq!(std::fs::read(dir_path.join("target")).unwrap(), b"precious");
    assert_no_temp_files(dir_path);
    assert_eq!(
        listing(dir_path),
        vec!["box.lock", "dangling.lock", "dir.lock", "target"]
    );
}
