//! spoollock-capi: `liblockfile.so.1` built on spoollock.
//!
//! The C mail programs of a Debian system (bsd-mailx, nmh, lockfile-progs'
//! `mail-lock`, sendmail's `mail.local`, libetpan, ...) lock mailboxes
//! through liblockfile's API: `lockfile_create`, `lockfile_remove`,
//! `lockfile_touch`, `lockfile_check`, `maillock`, `mailunlock`,
//! `touchlock` (and `lockfile_create2`, declared under
//! `LOCKFILE_EXPERIMENTAL`). This crate is that API, with the same
//! `SONAME`, symbols, return codes, flags and `errno` conventions, so that
//! those programs get spoollock's algorithm without being rebuilt: the
//! NFS-safe lock with an identity check, stale locks broken without ever
//! removing a fresh one, waits woken by inotify instead of 5 to 60 s
//! sleeps, and, on a spool only the mail group may write, the audited
//! `spoollock-helper` instead of an exec of `dotlockfile` per operation.
//!
//! It builds `liblockfile.so` (install it as `liblockfile.so.1`) and
//! `liblockfile.a`; the headers are `capi/include/lockfile.h` and
//! `maillock.h`, and the manual page, with every difference from
//! liblockfile, is `capi/man/spoollock-liblockfile.3`.
//!
//! Every locking decision is made by the `spoollock` library
//! ([`spoollock::DetachedLock`], [`spoollock::lock_state`],
//! [`spoollock::unlock_by_name`], [`spoollock::liblockfile`]); this crate
//! keeps what a C caller expects a library to remember between calls (the
//! locks this process made, `maillock`'s mailbox) in [`calls`], and turns
//! C arguments, return codes and `errno` into Rust in one module, `ffi`,
//! the only place with `unsafe` code.
#![deny(unsafe_code)]

pub mod calls;
#[allow(unsafe_code)]
mod ffi;
