//! spoollock: safe, fast and auditable mailbox locking for Unix mail spools.
//!
//! This is the library mail programs call. It takes the dotlock that mail
//! tools agree on (`mailbox.lock`, next to the mailbox) with an algorithm
//! that is correct on NFS (see `spoollock-lockfile`), keeps it fresh while
//! it is held, and releases it when the guard is dropped.
//!
//! ```
//! use std::time::Duration;
//! use spoollock::{LockGuard, LockOptions};
//! # let dir = std::env::temp_dir().join(format!("sl-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! let mailbox = dir.join("alice");
//!
//! // Wait up to 10 s for the lock; refresh it every 75 s while held.
//! let guard = LockGuard::acquire(&mailbox, &LockOptions::timeout(Duration::from_secs(10)))?;
//! // ... append to the mailbox ...
//! drop(guard); // removes alice.lock
//! # assert!(!dir.join("alice.lock").exists());
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), spoollock::Error>(())
//! ```
//!
//! Busy locks are a distinct error, so callers can tell "someone else has
//! it" from a real failure:
//!
//! ```
//! use spoollock::{LockGuard, LockOptions};
//! # let dir = std::env::temp_dir().join(format!("sl-doc2-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! let first = LockGuard::acquire(&dir.join("inbox"), &LockOptions::no_wait())?;
//! let second = LockGuard::acquire(&dir.join("inbox"), &LockOptions::no_wait());
//! assert!(second.unwrap_err().is_busy());
//! # drop(first);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), spoollock::Error>(())
//! ```
//!
//! # Features
//!
//! - `cli` (default): the `spoollock` command, with clap. A program that
//!   only uses the library depends on
//!   `spoollock = { version = "0.1", default-features = false }` and pulls
//!   in nothing but nix and the two spoollock crates.
//! - `mangen`: `spoollock-mangen`, which renders the manual pages from the
//!   command's definition (packaging only).

mod detached;
mod error;
mod guard;
pub mod liblockfile;
mod mailbox;
pub mod mbox;
pub mod privileged;
pub mod record_lock;
mod target;

pub use detached::DetachedLock;
pub use error::{Error, HelperError, LockError, Refusal, Result};
pub use guard::{lock_detached, lock_state, touch_by_name, unlock_by_name, LockGuard, LockOptions};
pub use mailbox::{MailboxLock, MailboxOptions, Order};
pub use record_lock::{LockKind, RecordLockFlavor};
pub use spoollock_lockfile::{Event, Holder, LockState, PidMode, StaleReason, Wait};
pub use target::{login, own_mailbox, spool_owner, LockTarget, SPOOL_DIRS};
