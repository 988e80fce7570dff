//! With `/proc` mounted `hidepid=invisible`, other users' processes (and
//! setgid helpers) are hidden from `/proc`, not gone: a lock naming such a
//! process must not be judged stale on the spot. Needs root (to mount a
//! private /proc in a mount namespace and drop to `nobody`).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::Scratch;
use spoollock_lockfile::{process_state, ProcState};

const CHILD_ENV: &str = "SPOOLLOCK_TEST_HIDEPID";

/// Runs only in the child: as `nobody`, under hidepid, look at a live
/// root process.
#[test]
fn hidepid_child() {
    let Ok(pid) = std::env::var(CHILD_ENV) else {
        return;
    };
    let pid: u32 = pid.parse().unwrap();
    let visible = std::path::Path::new(&format!("/proc/{pid}")).exists();
    let alive = matches!(process_state(pid), ProcState::Alive { .. });
    println!("OUTCOME visible={visible} alive={alive}");
}

#[test]
fn a_process_hidden_by_hidepid_is_alive_not_gone() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: needs root to mount a private /proc with hidepid");
        return;
    }
    let place = Scratch::new("hidepid");
    let exe = place.path().join("hidepid-test");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(place.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = format!(
        "mount -t proc -o hidepid=invisible proc /proc && exec setpriv --reuid=65534 --regid=65534 --clear-groups '{}' hidepid_child --exact --nocapture --test-threads=1",
        exe.display()
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .env(CHILD_ENV, std::process::id().to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let outcome = stdout
        .lines()
        .find_map(|l| l.split_once("OUTCOME ").map(|(_, o)| o))
        .unwrap_or_else(|| panic!("no outcome: {out:?}"));
    // The test process is hidden from `nobody`, and still alive.
    assert_eq!(outcome, "visible=false alive=true");
}
