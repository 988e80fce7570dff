//! Packaging end to end, through the scripts in `packaging/`:
//!
//! - `test-package.sh` builds the .deb, runs lintian (errors fail) and
//!   `rpmspec -P` on the RPM spec, installs the package, runs `spoollock run
//!   --mailbox` as a fresh unprivileged user through the installed setgid
//!   helper with rsyslogd recording the audit trail, then removes and purges
//!   it and checks nothing is left;
//! - `test-install.sh` runs `install.sh` with PREFIX and DESTDIR as root
//!   (helper root:mail 2755) and as a user (the two commands printed);
//! - `rpm/build-rpm.sh` builds the RPM from the spec, whose file list must
//!   carry the helper setgid mail, the command and every manual page.
//!
//! They need root on Debian; without root they say why and skip (in CI
//! a missing prerequisite is a failure: `spoollock_test_support::skip`).

use std::path::{Path, PathBuf};
use std::process::Command;

use spoollock_test_support::{in_ci, require, require_root, skip};

/// The scripts' status for "cannot run here" (the reason is printed).
const SKIPPED: i32 = 77;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Run `packaging/<script>` with a cargo target directory of its own (its
/// release build must not wait on the lock of the build running this
/// test); `None` when it skipped, else its standard output.
fn run_script(script: &str, target: &str) -> Option<String> {
    if !require_root("dpkg -i, useradd, chown root:mail, namespaces") {
        return None;
    }
    let repo = repo();
    let out = Command::new("bash")
        .arg(repo.join("packaging").join(script))
        .env("CARGO_TARGET_DIR", repo.join("target").join(target))
        .env("CARGO", env!("CARGO"))
        .output()
        .unwrap_or_else(|e| panic!("run packaging/{script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    if out.status.code() == Some(SKIPPED) {
        skip(format_args!("packaging/{script} cannot run here: {stdout}"));
        return None;
    }
    assert_eq!(out.status.code(), Some(0), "packaging/{script} failed");
    Some(stdout)
}

#[test]
fn debian_package_installs_runs_audits_and_purges() {
    let Some(stdout) = run_script("test-package.sh", "packaging-deb") else {
        return;
    };
    for step in [
        "lintian: 0 error(s)",
        "installed: helper root:mail 2755 (statoverride)",
        "printed x and released the lock",
        "the lock was made by spoollock-helper",
        "rsyslogd logged grant and release (mail.info) and the refusal (authpriv.warning)",
        "the rsyslog snippet of docs/audit.md routed all",
        "remove and purge left no file, directory or statoverride",
        "an administrator's statoverride (2750) is kept by install and remove, dropped by purge",
        "test-package.sh: PASS",
    ] {
        assert!(stdout.contains(step), "missing step: {step}");
    }
    if in_ci() {
        assert!(stdout.contains("rpmspec -P: the spec parses"));
    }
}

#[test]
fn install_script_honours_prefix_destdir_and_privileges() {
    let Some(stdout) = run_script("test-install.sh", "packaging-install") else {
        return;
    };
    for step in [
        "helper root:mail 2755; binaries and pages name /usr/local/libexec/spoollock/spoollock-helper",
        "not root: helper left",
        "--no-build refuses binaries built for another helper path",
        "--uninstall removed every file",
        "test-install.sh: PASS",
    ] {
        assert!(stdout.contains(step), "missing step: {step}");
    }
}

#[test]
fn rpm_package_carries_the_helper_setgid_mail() {
    if !require_root("build-rpm.sh; its test runs with the others in CI") {
        return;
    }
    let found = |tool: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool} >/dev/null")])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !require(
        found("rpmbuild"),
        "rpmbuild not installed (apt-get install rpm)",
    ) {
        return;
    }
    let repo = repo();
    let top = repo.join("target").join("packaging-rpm");
    let _ = std::fs::remove_dir_all(&top);
    // --nodeps: on Debian the RPM database does not know rustup's cargo.
    let out = Command::new("bash")
        .arg(repo.join("packaging/rpm/build-rpm.sh"))
        .arg("--nodeps")
        .env("RPM_TOPDIR", &top)
        .env("CARGO", env!("CARGO"))
        .output()
        .expect("run build-rpm.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "build-rpm.sh failed:\n{stdout}\n{stderr}"
    );
    let rpm = stdout
        .lines()
        .rev()
        .find(|l| l.ends_with(".rpm"))
        .unwrap_or_else(|| panic!("no .rpm named in:\n{stdout}"));

    let query = Command::new("rpm")
        .args([
            "-qp",
            "--qf",
            "[%{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILENAMES}\\n]",
            rpm,
        ])
        .output()
        .expect("rpm -qp");
    assert!(
        query.status.success(),
        "{}",
        String::from_utf8_lossy(&query.stderr)
    );
    let files = String::from_utf8_lossy(&query.stdout);
    println!("{files}");
    for expected in [
        "-rwxr-sr-x root mail /usr/libexec/spoollock/spoollock-helper",
        "-rwxr-xr-x root root /usr/bin/spoollock",
        "/usr/share/man/man1/spoollock.1",
        "/usr/share/man/man1/spoollock-run.1",
        "/usr/share/man/man8/spoollock-helper.8",
        // spoollock's liblockfile, in a directory of its own (opt-in).
        "/spoollock/liblockfile.so.1",
        "/usr/share/man/man3/spoollock-liblockfile.3",
        "/usr/share/spoollock/00-spoollock-liblockfile.conf",
    ] {
        assert!(
            files.contains(expected),
            "{expected} not in the RPM:\n{files}"
        );
    }
    // Nothing else is setuid or setgid.
    let special = files
        .lines()
        .filter(|l| {
            l.split(' ')
                .next()
                .is_some_and(|mode| mode.contains(['s', 'S']))
        })
        .count();
    assert_eq!(special, 1, "only the helper is setgid:\n{files}");
    // The private liblockfile.so.1 must not make the package a provider of
    // liblockfile for rpm's dependency resolution.
    let provides = Command::new("rpm")
        .args(["-qp", "--provides", rpm])
        .output()
        .expect("rpm -qp --provides");
    let provides = String::from_utf8_lossy(&provides.stdout);
    assert!(
        !provides.contains("liblockfile"),
        "the RPM provides liblockfile:\n{provides}"
    );
}
