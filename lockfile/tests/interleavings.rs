//! Interleavings forced step by step, as the model of `model/lock.pml`
//! explores them: a breaker overtaken while the holder links its file
//! again, a file holding an extra name at its holder's identity check, an
//! acquirer finding its own file linked back, a release racing a break
//! and a new holder.
//!
//! The lock code has few seams, and the tests use two: the `between` hook
//! of `break_stale_interleaved`, and a [`Privilege`] that raises nothing
//! but runs the test's code around the n-th directory change of one lock
//! operation (each create, link, rename and unlink the code makes is
//! bracketed by it). Threads hand over through channels, and every wait
//! is bounded: a broken interleaving fails, it never hangs.

mod common;

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{age_file, listing, Scratch};
use spoollock_lockfile::stale::{break_stale, break_stale_interleaved, inspect, Broke};
use spoollock_lockfile::{
    acquire, acquire_interleaved, private_aside_name, Event, LockDir, LockError, Options,
    Privilege, Release, Wait,
};

const LOCK: &str = "box.lock";
/// A lock of a process on another host, judged by its age alone.
const FOREIGN: &[u8] = b"4242\nhost=elsewhere.example\n";
/// How long any hand-over may take before the test fails.
const BOUND: Duration = Duration::from_secs(20);

fn name() -> &'static OsStr {
    OsStr::new(LOCK)
}

fn no_wait() -> Options {
    Options {
        wait: Wait::NoWait,
        ..Options::default()
    }
}

fn wait_for(rx: &Receiver<()>, what: &str) {
    rx.recv_timeout(BOUND)
        .unwrap_or_else(|_| panic!("no {what} within {BOUND:?}"));
}

/// The other tool's stale lock: an hour old.
fn plant_stale(scratch: &Scratch) {
    let path = scratch.path().join(LOCK);
    std::fs::write(&path, FOREIGN).unwrap();
    age_file(&path, 3600);
}

fn links_of_lock(scratch: &Scratch) -> u64 {
    std::fs::symlink_metadata(scratch.path().join(LOCK))
        .unwrap()
        .nlink()
}

type Hook = Box<dyn FnMut(u32) + Send>;

/// A privilege bracket that raises nothing. It numbers the privileged
/// calls of the operations it is given to (1, 2, ...) and runs `before`
/// and `after` around each with its number.
struct Seam {
    calls: AtomicU32,
    before: Mutex<Hook>,
    after: Mutex<Hook>,
}

impl Seam {
    fn new(
        before: impl FnMut(u32) + Send + 'static,
        after: impl FnMut(u32) + Send + 'static,
    ) -> Arc<Seam> {
        Arc::new(Seam {
            calls: AtomicU32::new(0),
            before: Mutex::new(Box::new(before)),
            after: Mutex::new(Box::new(after)),
        })
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

impl std::fmt::Debug for Seam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seam").field("calls", &self.calls).finish()
    }
}

impl Privilege for Seam {
    fn raise(&self) -> nix::Result<()> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        // A hook that panicked poisons the lock; the test fails on that
        // panic, not on the poison.
        (self.before.lock().unwrap_or_else(|e| e.into_inner()))(n);
        Ok(())
    }

    fn lower(&self) {
        let n = self.calls();
        (self.after.lock().unwrap_or_else(|e| e.into_inner()))(n);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Temps {
    /// `.lk*` files made with `O_EXCL` (NFS, FUSE, `use_named_temps`).
    Named,
    /// `O_TMPFILE` files linked through `/proc/self/fd`.
    Anonymous,
}

/// `scratch` opened with `kind` temporary files, or `None` (a skip,
/// a failure in CI) where its file system has no anonymous ones.
fn open_with(scratch: &Scratch, kind: Temps) -> Option<LockDir> {
    let dir = LockDir::open(scratch.path()).unwrap();
    match kind {
        Temps::Named => dir.use_named_temps(),
        Temps::Anonymous if !dir.anonymous_temps() => {
            spoollock_test_support::skip(format_args!(
                "with anonymous temporary files: {} has none",
                scratch.path().display()
            ));
            return None;
        }
        Temps::Anonymous => {}
    }
    Some(dir)
}

/// The links a holder's file has once it is the lock: its temporary
/// name and the lock's, or the lock's alone.
fn links_when_locked(kind: Temps) -> u64 {
    match kind {
        Temps::Named => 2,
        Temps::Anonymous => 1,
    }
}

/// Issue 14, 5a. A breaker B judged the old lock stale; between its
/// re-check and its rename the old lock is removed and H links its file.
/// B's rename moves H's file aside; H, finding the name free, links the
/// same file again and takes the lock (its file then also has B's aside
/// name, which its identity check accepts); B's link back fails with
/// `EEXIST`, and since the name is the file it moved, B drops its aside
/// name instead of leaving it behind.
#[test]
fn a_breaker_that_moved_the_lock_aside_while_its_holder_linked_it_again_drops_its_name() {
    for kind in [Temps::Named, Temps::Anonymous] {
        let scratch = Scratch::new("relinked");
        let Some(dir) = open_with(&scratch, kind) else {
            continue;
        };
        plant_stale(&scratch);
        let judged = inspect(&dir, name()).unwrap().unwrap();

        let (go, go_rx) = channel(); // B to H: the old lock is gone
        let (linked, linked_rx) = channel(); // H to B: H linked its file
        let (moved, moved_rx) = channel(); // B to H: B moved it aside
        let (done, done_rx) = channel(); // H to B: H's acquire returned
        let links_at_second_check = Arc::new(AtomicU64::new(0));
        let seen = links_at_second_check.clone();
        let lock_path = scratch.path().join(LOCK);
        // H's privileged calls: 1 create its temporary file, 2 its first
        // link, 3 its second link (then its identity check), 4 removing
        // its temporary name (named files only).
        let holder_seam = Seam::new(
            move |n| {
                if n == 1 {
                    wait_for(&go_rx, "go for the holder");
                }
            },
            move |n| match n {
                2 => {
                    linked.send(()).unwrap();
                    wait_for(&moved_rx, "move by the breaker");
                }
                3 => {
                    let links = std::fs::symlink_metadata(&lock_path).unwrap().nlink();
                    seen.store(links, Ordering::SeqCst);
                }
                _ => {}
            },
        );
        let holder_opts = Options {
            privilege: Some(holder_seam.clone()),
            ..no_wait()
        };
        let holder_dir = dir.clone();
        let holder = thread::spawn(move || {
            let taken = acquire(&holder_dir, name(), &holder_opts);
            done.send(()).unwrap();
            taken
        });

        // B's privileged calls: 1 the rename, 2 the link back, 3 removing
        // its aside name.
        let breaker_seam = Seam::new(
            move |n| {
                if n == 2 {
                    // H linked the file again while it was aside.
                    wait_for(&done_rx, "the holder's acquire");
                }
            },
            move |n| {
                if n == 1 {
                    moved.send(()).unwrap();
                }
            },
        );
        let broke =
            break_stale_interleaved(&dir, name(), &judged, Some(&*breaker_seam), &mut || {
                // Another breaker removed the old lock after B's re-check;
                // H takes the free name.
                std::fs::remove_file(scratch.path().join(LOCK)).unwrap();
                go.send(()).unwrap();
                wait_for(&linked_rx, "the holder's link");
            })
            .unwrap();

        let lock = holder.join().unwrap().unwrap();
        assert_eq!(broke, Broke::Changed, "{kind:?}");
        assert_eq!(
            links_at_second_check.load(Ordering::SeqCst),
            links_when_locked(kind) + 1,
            "{kind:?}: at its identity check the holder's file had B's aside name too"
        );
        assert_eq!(breaker_seam.calls(), 3, "{kind:?}: rename, link, unlink");
        assert!(lock.is_held().unwrap(), "{kind:?}");
        assert_eq!(
            listing(scratch.path()),
            vec![LOCK],
            "{kind:?}: no aside name left"
        );
        assert_eq!(links_of_lock(&scratch), 1, "{kind:?}");
        assert!(acquire(&dir, name(), &no_wait()).unwrap_err().is_busy());
        lock.release().unwrap();
        assert!(listing(scratch.path()).is_empty(), "{kind:?}");
    }
}

/// Issue 14, 5b. H links its file; a breaker overtaken after its
/// re-check moves it aside and puts it back the way `put_back` does where
/// `rename(RENAME_NOREPLACE)` is missing (NFS): it links the file back and
/// only then drops its aside name. H makes its identity check in between:
/// its file has one link more than H made, and it is still H's lock.
#[test]
fn a_file_with_an_extra_name_at_its_holders_identity_check_is_still_its_lock() {
    for kind in [Temps::Named, Temps::Anonymous] {
        let scratch = Scratch::new("extraname");
        let Some(dir) = open_with(&scratch, kind) else {
            continue;
        };
        let lock_path = scratch.path().join(LOCK);
        let aside = scratch.path().join(".lk1.0123456789abcdef.elsewhere.stale");
        let links_at_check = Arc::new(AtomicU64::new(0));
        let (seen, moved_to) = (links_at_check.clone(), aside.clone());
        // H: 1 create, 2 link (then its identity check), 3 remove its
        // temporary name (named files only). Right after H's link, the
        // breaker's rename and link back.
        let seam = Seam::new(
            |_| {},
            move |n| {
                if n == 2 {
                    std::fs::rename(&lock_path, &moved_to).unwrap();
                    std::fs::hard_link(&moved_to, &lock_path).unwrap();
                    let links = std::fs::symlink_metadata(&lock_path).unwrap().nlink();
                    seen.store(links, Ordering::SeqCst);
                }
            },
        );
        let opts = Options {
            privilege: Some(seam.clone()),
            ..no_wait()
        };
        let lock = acquire(&dir, name(), &opts).unwrap();
        assert_eq!(
            links_at_check.load(Ordering::SeqCst),
            links_when_locked(kind) + 1,
            "{kind:?}: the aside name was there at the holder's check"
        );
        // One link: the lock was H's at its first identity check.
        let holder_calls = match kind {
            Temps::Named => 3,
            Temps::Anonymous => 2,
        };
        assert_eq!(seam.calls(), holder_calls, "{kind:?}");
        assert!(lock.is_held().unwrap(), "{kind:?}");
        // The breaker drops its aside name.
        std::fs::remove_file(&aside).unwrap();
        assert_eq!(listing(scratch.path()), vec![LOCK], "{kind:?}");
        assert_eq!(links_of_lock(&scratch), 1, "{kind:?}");
        assert!(acquire(&dir, name(), &no_wait()).unwrap_err().is_busy());
        lock.release().unwrap();
        assert!(listing(scratch.path()).is_empty(), "{kind:?}");
    }
}

/// The setgid helper's release ([`Release::MoveAside`]). H was stopped for
/// longer than the stale age while it held the lock; it resumes and
/// releases. At the release's first change of the directory, a breaker
/// B removes H's stale lock and C takes the lock. H must not remove C's
/// lock: its release reports `NotOurs` and C still holds the lock. (The
/// library's default, [`Release::CheckThenUnlink`], would remove it: its
/// first change is the unlink, after the check. That is the window its
/// documentation gives it, and the model's run `limit-ctu` shows it.)
#[test]
fn a_release_overtaken_by_a_break_and_a_new_holder_leaves_the_new_lock() {
    for kind in [Temps::Named, Temps::Anonymous] {
        let scratch = Scratch::new("release-race");
        let Some(dir) = open_with(&scratch, kind) else {
            continue;
        };
        let taken_by_c = Arc::new(Mutex::new(None));
        let armed = Arc::new(AtomicU32::new(0));
        let (c_slot, c_armed, c_dir) = (taken_by_c.clone(), armed.clone(), dir.clone());
        // The release's privileged calls begin once `armed` is set; at the
        // first of them, B breaks and C takes the lock.
        let seam = Seam::new(
            move |_| {
                if c_armed.swap(0, Ordering::SeqCst) == 1 {
                    let seen = inspect(&c_dir, name()).unwrap().unwrap();
                    assert_eq!(
                        break_stale(&c_dir, name(), &seen, None).unwrap(),
                        Broke::Removed
                    );
                    *c_slot.lock().unwrap() = Some(acquire(&c_dir, name(), &no_wait()).unwrap());
                }
            },
            |_| {},
        );
        let h = acquire(
            &dir,
            name(),
            &Options {
                privilege: Some(seam.clone()),
                release: Release::MoveAside,
                ..no_wait()
            },
        )
        .unwrap();
        // H is stopped past the stale age: its lock is old.
        age_file(&scratch.path().join(LOCK), 3600);
        armed.store(1, Ordering::SeqCst);

        let released = h.release();
        let c = taken_by_c.lock().unwrap().take().expect("C took the lock");
        assert_eq!(released, Err(LockError::NotOurs), "{kind:?}");
        assert!(
            c.is_held().unwrap(),
            "{kind:?}: C's lock survived H's release"
        );
        assert_eq!(listing(scratch.path()), vec![LOCK], "{kind:?}");
        assert!(acquire(&dir, name(), &no_wait()).unwrap_err().is_busy());
        c.release().unwrap();
        assert!(listing(scratch.path()).is_empty(), "{kind:?}");
    }
}

/// Found by the model (`BUG_OWN_WAIT` in `model/check.sh`). H linked its
/// file; B, overtaken after its re-check, moved it aside, so H's identity
/// check found the name free; then B linked it back, and H, looking at
/// the name, found its own file. H must take it, not wait for it: a
/// `--no-wait` or timed-out acquire reported `Busy` with its own pid as
/// the holder and left its file behind as a lock nobody held, fresh for
/// the stale age (the owner lives).
#[test]
fn an_acquirer_that_finds_its_own_file_linked_back_takes_the_lock() {
    for kind in [Temps::Named, Temps::Anonymous] {
        let scratch = Scratch::new("ownfile");
        let Some(dir) = open_with(&scratch, kind) else {
            continue;
        };
        plant_stale(&scratch);
        let judged = inspect(&dir, name()).unwrap().unwrap();

        let (go, go_rx) = channel();
        let (linked, linked_rx) = channel();
        let (moved, moved_rx) = channel(); // B to H: B moved H's file aside
        let (checked, checked_rx) = channel(); // H to B: H found the name not its own
        let (back, back_rx) = channel(); // B to H: B linked the file back
        let (done, done_rx) = channel();
        // H: 1 create, 2 link (then its identity check fails: the name is
        // free), 3 link again, 4 remove its temporary name (named only).
        let holder_seam = Seam::new(
            move |n| {
                if n == 1 {
                    wait_for(&go_rx, "go for the holder");
                }
            },
            move |n| {
                if n == 2 {
                    linked.send(()).unwrap();
                    wait_for(&moved_rx, "move by the breaker");
                }
            },
        );
        let waited_on = Arc::new(Mutex::new(Vec::new()));
        let seen = waited_on.clone();
        let holder_opts = Options {
            privilege: Some(holder_seam.clone()),
            observer: Some(Arc::new(move |event: &Event| {
                if let Event::Waiting(holder) = event {
                    seen.lock().unwrap().push(holder.content.pid);
                }
            })),
            ..no_wait()
        };
        let holder_dir = dir.clone();
        let holder = thread::spawn(move || {
            let mut first = true;
            let taken = acquire_interleaved(&holder_dir, name(), &holder_opts, &mut || {
                if std::mem::take(&mut first) {
                    checked.send(()).unwrap();
                    wait_for(&back_rx, "link back by the breaker");
                }
            });
            done.send(()).unwrap();
            taken
        });

        // B: 1 the rename, 2 the link back, 3 removing its aside name.
        let breaker_seam = Seam::new(
            move |n| {
                if n == 2 {
                    wait_for(&checked_rx, "the holder's failed check");
                }
            },
            move |n| match n {
                1 => moved.send(()).unwrap(),
                2 => {
                    back.send(()).unwrap();
                    wait_for(&done_rx, "the holder's acquire");
                }
                _ => {}
            },
        );
        let broke =
            break_stale_interleaved(&dir, name(), &judged, Some(&*breaker_seam), &mut || {
                std::fs::remove_file(scratch.path().join(LOCK)).unwrap();
                go.send(()).unwrap();
                wait_for(&linked_rx, "the holder's link");
            })
            .unwrap();

        let taken = holder.join().unwrap();
        assert_eq!(broke, Broke::Changed, "{kind:?}");
        let me = Some(std::process::id());
        assert!(
            !waited_on.lock().unwrap().contains(&me),
            "{kind:?}: the holder waited on its own lock"
        );
        let lock = taken.unwrap_or_else(|e| panic!("{kind:?}: {e:?}"));
        assert!(lock.is_held().unwrap(), "{kind:?}");
        assert_eq!(listing(scratch.path()), vec![LOCK], "{kind:?}");
        assert_eq!(links_of_lock(&scratch), 1, "{kind:?}");
        lock.release().unwrap();
        assert!(listing(scratch.path()).is_empty(), "{kind:?}");
    }
}

/// Found by the model (model/README.md, `bug-shared-aside`): lockers that
/// shared one reserved aside name (the helper once gave every session of
/// a user the same) could destroy a third process's lock. A releases with
/// [`Release::MoveAside`]: its lock is at its aside name, found its own,
/// about to be unlinked there. C takes the free lock name. B, a breaker
/// overtaken after its re-check (it judged A's lock stale: A had been
/// stopped), moves C's lock aside. With one shared name, B's move replaced
/// A's file and A's unlink removed C's lock, which C still held, and B
/// took the lock too. With a name of its own each ([`private_aside_name`],
/// what the helper gives each session now), A removes only its own file
/// and B puts C's lock back.
#[test]
fn lockers_with_their_own_aside_names_never_remove_a_third_lock() {
    let scratch = Scratch::new("ownaside");
    let dir = LockDir::open(scratch.path()).unwrap();
    let own = |seam: &Arc<Seam>| Options {
        privilege: Some(seam.clone()),
        aside: Some(private_aside_name()),
        release: Release::MoveAside,
        ..no_wait()
    };

    let (rechecked, rechecked_rx) = channel(); // B: about to move
    let (go, go_rx) = channel(); // to B: move now
    let (moved, moved_rx) = channel(); // B: moved
    let (unlinked, unlinked_rx) = channel(); // A: its unlink is done

    // B: 1 create, 2 link (the name is A's), 3 the move of its break; B
    // goes on (reads what it moved, removes or puts back) only after A's
    // unlink, the order that lost C's lock with a shared name.
    let b_seam = Seam::new(
        move |n| {
            if n == 3 {
                rechecked.send(()).unwrap();
                wait_for(&go_rx, "go for the breaker");
            }
        },
        move |n| {
            if n == 3 {
                moved.send(()).unwrap();
                wait_for(&unlinked_rx, "the releaser's unlink");
            }
        },
    );

    // A's release: 1 its move onto its aside name, 2 the unlink there;
    // before the unlink, C takes the lock and B moves it.
    let armed = Arc::new(AtomicU32::new(0));
    let taken_by_c = Arc::new(Mutex::new(None));
    let (a_armed, c_slot, c_dir) = (armed.clone(), taken_by_c.clone(), dir.clone());
    let a_after = armed.clone();
    let a_seam = Seam::new(
        move |_| {
            if a_armed.load(Ordering::SeqCst) == 0 {
                return;
            }
            if a_armed.fetch_add(1, Ordering::SeqCst) == 2 {
                *c_slot.lock().unwrap() = Some(acquire(&c_dir, name(), &no_wait()).unwrap());
                go.send(()).unwrap();
                wait_for(&moved_rx, "the breaker's move");
            }
        },
        move |_| {
            if a_after.load(Ordering::SeqCst) == 3 {
                a_after.store(4, Ordering::SeqCst);
                unlinked.send(()).unwrap();
            }
        },
    );
    let a = acquire(&dir, name(), &own(&a_seam)).unwrap();
    // A was stopped past the stale age: its lock is old.
    age_file(&scratch.path().join(LOCK), 3600);

    let (b_dir, b_opts) = (dir.clone(), own(&b_seam));
    let breaker = thread::spawn(move || acquire(&b_dir, name(), &b_opts));
    wait_for(&rechecked_rx, "the breaker's re-check");
    armed.store(1, Ordering::SeqCst);
    a.release().unwrap();
    let b = breaker.join().unwrap();
    let c = taken_by_c.lock().unwrap().take().expect("C took the lock");

    assert!(c.is_held().unwrap(), "C's lock was removed while C held it");
    assert!(b.unwrap_err().is_busy(), "B took the lock C holds");
}
