//! The request handling of `spoollock-helper`, the setgid program that
//! creates and removes `<spool>/<login>.lock` for unprivileged users (its
//! start-up and hardening are in the binary, `main.rs`).
//!
//! It is a library so that the same code the installed helper runs can be
//! driven from outside the setgid binary: the fuzzer and the property tests
//! run [`session::Session`] over any pair of descriptors, with an in-memory
//! audit trail ([`audit::Audit::in_memory`]) and a privilege that changes
//! nothing ([`privilege::GroupPrivilege::park`] with the caller's own gid),
//! against a spool of their own.
//!
//! Modules:
//! - [`session`]: the handshake and the request loop of one client;
//! - [`policy`]: who may lock what (login, spool selection, spool and
//!   mailbox checks);
//! - [`config`]: the spool list and its root-owned configuration file;
//! - [`holder`]: whether a lock belongs to another live helper session;
//! - [`privilege`]: the mail group parked in the saved set-gid, raised only
//!   around directory-changing calls;
//! - [`sweep`]: removal of the caller's dead temporary files;
//! - [`audit`]: the syslog records, sanitized;
//! - [`system`]: the process-wide system calls, the only `unsafe` code.

pub mod audit;
pub mod config;
pub mod holder;
pub mod policy;
pub mod privilege;
pub mod session;
pub mod sweep;
pub mod system;
mod trusted;
