//! A mailbox renamed over by another NFS client while a `MailboxLock` on
//! this client waits for it, with this client's caches holding the old
//! name for a minute: the message must land in the new mailbox, and the
//! locker must notice. On NFS a lookup of the name may be served from the
//! client's cache; what `MailboxLock` relies on is that the file it locked
//! has no link left (its attributes are fresh after the lock) and that it
//! closes the old file before opening the name again (so a cached name
//! leads to `ESTALE` and a real lookup, not back to the file it holds).
//! Needs root and /dev/fuse.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::two_client_scratch;
use nfs_sim::{Mount, SimConfig};
use spoollock::{Event, LockOptions, MailboxLock, MailboxOptions, Order, Wait};
use spoollock_lockfile::{acquire, LockDir, Options};

#[test]
fn a_waiter_with_stale_caches_follows_a_mailbox_renamed_over_by_another_client() {
    for order in [Order::FcntlThenDotlock, Order::DotlockThenFcntl] {
        waits_across_rename_on_the_other_client(order);
    }
}

fn waits_across_rename_on_the_other_client(order: Order) {
    let Some(scratch) = two_client_scratch("nfs-rewrite") else {
        return;
    };
    let backing = scratch.path().join("backing");
    let long_cache = SimConfig {
        attr_ttl: Duration::from_secs(60),
        dir_attr_ttl: Duration::from_secs(60),
        entry_ttl: Duration::from_secs(60),
        ..SimConfig::default()
    };
    std::fs::write(
        backing.join("mbox"),
        b"From old@x Mon Nov 23 10:00:00 2026\n\nold\n\n",
    )
    .unwrap();
    let a = Mount::new(&backing, &scratch.path().join("a"), long_cache).unwrap();
    let b = Mount::new(&backing, &scratch.path().join("b"), SimConfig::default()).unwrap();

    // B, a mail reader, holds the dotlock.
    let dir_b = LockDir::open(b.path()).unwrap();
    let holder = acquire(&dir_b, "mbox.lock".as_ref(), &Options::default()).unwrap();

    // A caches the name and waits for the lock in a thread.
    std::fs::metadata(a.path().join("mbox")).unwrap();
    let replaced = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&replaced);
    let opts = MailboxOptions {
        lock: LockOptions {
            wait: Wait::timeout(Duration::from_secs(30)),
            observer: Some(Arc::new(move |e: &Event| {
                if matches!(e, Event::MailboxReplaced) {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
            })),
            ..LockOptions::default()
        },
        order,
        create: Some(0o600),
        ..MailboxOptions::default()
    };
    let mbox_a = a.path().join("mbox");
    let (done, result) = mpsc::channel();
    let writer = std::thread::spawn(move || {
        let delivered = MailboxLock::open(&mbox_a, &opts).and_then(|mut m| {
            m.append(b"Subject: new\n\nnew message\n", "writer@x")?;
            m.release()
        });
        let _ = done.send(delivered.map_err(|e| e.to_string()));
    });
    std::thread::sleep(Duration::from_millis(500));

    // B empties the mailbox through a new file renamed over it, releases.
    std::fs::write(b.path().join("mbox.new"), b"").unwrap();
    std::fs::rename(b.path().join("mbox.new"), b.path().join("mbox")).unwrap();
    holder.release().unwrap();

    let delivered = result
        .recv_timeout(Duration::from_secs(60))
        .expect("the writer did not finish within 60 s");
    writer.join().unwrap();
    assert_eq!(delivered, Ok(()), "{order:?}");
    let text = std::fs::read_to_string(backing.join("mbox")).unwrap();
    assert!(
        text.starts_with("From writer@x ") && text.contains("\nnew message\n"),
        "{order:?}: the message is not in the mailbox the name leads to: {text:?}"
    );
    assert!(
        replaced.load(Ordering::SeqCst) >= 1,
        "{order:?}: not noticed"
    );
    drop((a, b));
}
