//! With `/proc` mounted `hidepid=invisible`, other users' processes (and
//! setgid helpers) are hidden from `/proc`, not gone: a lock naming such a
//! process must not be judged stale on the spot. Needs root (to mount a
//! private /proc in a mount namespace and drop to `nobody`).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::{child, require, Scratch};
use spoollock_lockfile::{process_state, ProcState};

/// The child's part: as `nobody`, under hidepid, look at a live root
/// process.
fn hidepid_child(pid: &str) {
    let pid: u32 = pid.parse().unwrap();
    let visible = std::path::Path::new(&format!("/proc/{pid}")).exists();
    let alive = matches!(process_state(pid), ProcState::Alive { .. });
    println!("OUTCOME visible={visible} alive={alive}");
}

#[test]
fn a_process_hidden_by_hidepid_is_alive_not_gone() {
    if let Some(pid) = child::role() {
        return hidepid_child(&pid);
    }
    if !require(
        nix::unistd::geteuid().is_root(),
        "needs root to mount a private /proc with hidepid",
    ) {
        return;
    }
    let place = Scratch::new("hidepid");
    let exe = place.path().join("hidepid-test");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(place.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let test = spoollock_test_support::current_test();
    let script = format!(
        "mount -t proc -o hidepid=invisible proc /proc && exec setpriv --reuid=65534 --regid=65534 --clear-groups '{}' {}",
        exe.display(),
        child::args(&test).join(" ")
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .env(
            child::ENV,
            child::spec(&test, &std::process::id().to_string()),
        )
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
