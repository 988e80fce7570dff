//! The NFS-safe dotlock algorithm behind spoollock.
//!
//! This crate creates, checks, refreshes and removes `NAME.lock` files in a
//! directory, with no privilege logic of its own (the setgid helper plugs
//! its privilege bracket in through [`Privilege`]). It is used by the
//! `spoollock` library and by `spoollock-helper`.
//!
//! - [`acquire`] takes a lock with the temp-file + `link` + identity-check
//!   algorithm, breaking stale locks safely and waiting with bounded,
//!   jittered backoff woken early by inotify. On local file systems the
//!   temporary file is anonymous (`O_TMPFILE`, linked through
//!   `/proc/self/fd`, decided by the same identity check with one link
//!   fewer), so a process killed at any point leaves no temporary file; on
//!   NFS and FUSE it is the classic named file (see `tempfile.rs`);
//! - [`Dotlock`] is a held lock: [`Dotlock::touch`], [`Dotlock::release`];
//! - [`check`] reports whether a lock is free, held or stale;
//! - [`LockContent`] is the lock file format and a parser for what any
//!   other tool writes.
//!
//! ```
//! use spoollock_lockfile::{acquire, check, LockDir, LockState, Options, Wait};
//! # let tmp = std::env::temp_dir().join(format!("sl-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&tmp).unwrap();
//! let dir = LockDir::open(&tmp)?;
//! let opts = Options { wait: Wait::NoWait, ..Options::default() };
//! let lock = acquire(&dir, "inbox.lock".as_ref(), &opts)?;
//! assert!(matches!(check(&dir, "inbox.lock".as_ref(), &opts)?, LockState::Held(_)));
//! // A second attempt fails at once: the lock is ours, and our process lives.
//! assert!(acquire(&dir, "inbox.lock".as_ref(), &opts).unwrap_err().is_busy());
//! lock.release()?;
//! assert_eq!(check(&dir, "inbox.lock".as_ref(), &opts)?, LockState::Free);
//! # std::fs::remove_dir_all(&tmp).unwrap();
//! # Ok::<(), spoollock_lockfile::LockError>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod content;
mod dir;
mod dotlock;
mod error;
mod host;
pub mod stale;
mod tempfile;
mod wait;

pub use content::{AppendMark, Holder, LockContent, MAX_CONTENT};
pub use dir::{
    current_id, validate_name, with_raised, FileId, FileVersion, LockDir, Privilege, NAME_MAX,
};
#[doc(hidden)]
pub use dotlock::acquire_interleaved;
pub use dotlock::{
    acquire, check, remove_by_name, rewrite, touch_by_name, Dotlock, Event, LockState, Observer,
    Options, Owners, Release, DEFAULT_STALE_AGE,
};
pub use error::{LockError, Op, Result};
pub use host::{content_for, local_host, process_state, LocalHost, PidMode, ProcState};
pub use stale::{judge, judge_trusting, BreakOutcome, Journal, StaleReason};
pub use tempfile::{private_aside_name, temp_name_owner, MAX_TEMP_NAME};
pub use wait::{Backoff, Retry, Wait};
