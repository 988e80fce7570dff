//! spoollock against each nfs-sim fault on its own, forced by schedule:
//! the lock is still taken exactly once, released, and nothing is left
//! behind. Needs root and /dev/fuse (says why and returns without).

use std::path::Path;

use nfs_sim::{Fault, Faults, Mount, SimConfig};
use spoollock_lockfile::{acquire, check, LockDir, LockState, Options, Wait};
use spoollock_test_support::{require_none, Scratch};
use spoollock_tests::fuse_unavailable;

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Acquire and release once through a mount with `faults`; return what
/// is left in the backing directory.
fn once_with(faults: Faults) -> Option<(Vec<String>, u64)> {
    if !require_none(fuse_unavailable()) {
        return None;
    }
    let scratch = Scratch::new("nfs-faults");
    let backing = scratch.path().join("backing");
    let mnt = scratch.path().join("mnt");
    std::fs::create_dir_all(&backing).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    let mount = Mount::new(
        &backing,
        &mnt,
        SimConfig {
            faults,
            ..SimConfig::default()
        },
    )
    .unwrap();
    let dir = LockDir::open(&mnt).unwrap();
    let opts = Options {
        wait: Wait::timeout(std::time::Duration::from_secs(60)),
        ..Options::default()
    };
    let lock = acquire(&dir, "box.lock".as_ref(), &opts).unwrap();
    assert!(lock.is_held().unwrap());
    assert!(backing.join("box.lock").exists());
    lock.release().unwrap();
    assert_eq!(
        check(&dir, "box.lock".as_ref(), &opts).unwrap(),
        LockState::Free
    );
    let injected = mount.stats().faults();
    drop(dir);
    drop(mount);
    Some((names(&backing), injected))
}

/// [`once_with`], and nothing may be left in the backing directory: the
/// number of faults injected, or `None` when the test cannot run here.
fn clean_after(faults: Faults) -> Option<u64> {
    let (left, injected) = once_with(faults)?;
    assert!(left.is_empty(), "left behind: {left:?}");
    Some(injected)
}

#[test]
fn link_reported_eexist_for_a_link_it_made() {
    let faults = Faults {
        link_eexist: Fault::on_calls(&[1]),
        ..Faults::default()
    };
    let Some(injected) = clean_after(faults) else {
        return;
    };
    assert_eq!(injected, 1);
}

#[test]
fn link_reported_eio_for_a_link_it_made() {
    let faults = Faults {
        link_eio: Fault::on_calls(&[1]),
        ..Faults::default()
    };
    let Some(injected) = clean_after(faults) else {
        return;
    };
    assert_eq!(injected, 1);
}

#[test]
fn unlink_reported_enoent_for_a_removal_it_made() {
    let faults = Faults {
        unlink_enoent: Fault::probability(1.0),
        ..Faults::default()
    };
    let Some(injected) = clean_after(faults) else {
        return;
    };
    assert!(injected >= 1);
}

#[test]
fn exclusive_create_reported_eexist_for_a_file_it_made() {
    let faults = Faults {
        create_excl_eexist: Fault::on_calls(&[1]),
        ..Faults::default()
    };
    // The lock is taken and released, and the temporary file whose create
    // was answered EEXIST is removed too: nobody else picks a fresh random
    // name, so spoollock knows it made it (finding F3).
    let Some(injected) = clean_after(faults) else {
        return;
    };
    assert_eq!(injected, 1);
}
