//! Privileged end-to-end tests of `spoollock-helper` (the harness is in
//! `support/privileged_env.rs`, shared with the other privileged test
//! files).
//!
//! They need root (CI runs as root on Debian 12) and skip, saying why,
//! otherwise. Everything is set up here, inside a private mount namespace
//! so the machine's real spool, `/dev` and configuration stay untouched:
//!
//! - two users, `sltest-caller` and `sltest-victim` (`useradd`, idempotent);
//! - a tmpfs over `/var/mail`, `root:mail 2775`;
//! - a tmpfs over `/etc/spoollock` holding a `helper.conf` that names the
//!   extra (good and deliberately unsafe) spools under the scratch dir;
//! - a tmpfs scratch dir (`/run/spoollock-tests.PID`, mounted without
//!   `nosuid`) with the helper installed `root:mail 2755`, a copy without
//!   the setgid bit, and the extra spools;
//! - a tmpfs over `/dev` with the few device nodes needed and a private
//!   `/dev/log`, served by an `rsyslogd` started here with its own
//!   configuration that writes `mail` and `authpriv` to a file the tests
//!   read.
//!
//! The helper then runs as `sltest-caller` (through `setpriv`, with
//! `prlimit`, `sh` and `perl` for hostile rlimits, descriptors and argv)
//! and is driven over the real protocol. Every hostile case checks a clear
//! error, an audit line, and a spool listing (inode, mode, owner, size,
//! mtime) unchanged.
//!
//! Debian packages needed: rsyslog, util-linux (setpriv, prlimit), passwd
//! (useradd), perl-base, bsdutils (logger).
//!
//! The scenarios are grouped by what they exercise, one module each (the
//! environment is set up once for all of them, so they stay one binary):
//! [`lock`], [`kills`], [`refusals`], [`hostile_start`], [`client`]; the
//! benchmark is [`measure`].

#[path = "../support/privileged_env.rs"]
mod privileged_env;

mod client;
mod hostile_start;
mod kills;
mod lock;
mod measure;
mod refusals;

use client::*;
use hostile_start::*;
use kills::*;
use lock::*;
use measure::*;
use privileged_env::*;
use refusals::*;

const SCENARIOS: &[Scenario] = &[
    ("own_mailbox_lock_and_release", own_mailbox_lock_and_release),
    ("extra_configured_spool", extra_configured_spool),
    ("lock_lost_while_held", lock_lost_while_held),
    ("end_of_file_releases", end_of_file_releases),
    ("client_sigkill_releases", client_sigkill_releases),
    (
        "helper_sigkill_leaves_a_lock_broken_at_once",
        helper_sigkill_leaves_a_lock_broken_at_once,
    ),
    ("pipelined_requests", pipelined_requests),
    (
        "busy_timeout_cancel_and_handoff",
        busy_timeout_cancel_and_handoff,
    ),
    ("detached_lock_for_scripts", detached_lock_for_scripts),
    ("bad_parameters", bad_parameters),
    ("other_users_mailbox_names", other_users_mailbox_names),
    ("unknown_spools", unknown_spools),
    ("unsafe_spools", unsafe_spools),
    (
        "planted_files_at_lock_and_mailbox",
        planted_files_at_lock_and_mailbox,
    ),
    ("victims_lock_is_untouchable", victims_lock_is_untouchable),
    ("malformed_frames", malformed_frames),
    ("standard_descriptors", standard_descriptors),
    ("argc_zero_and_arguments", argc_zero_and_arguments),
    ("hostile_environment", hostile_environment),
    ("resource_limits", resource_limits),
    ("stopped_then_killed_mid_lock", stopped_then_killed_mid_lock),
    (
        "sweeps_only_dead_temporaries_of_the_caller",
        sweeps_only_dead_temporaries_of_the_caller,
    ),
    ("log_injection", log_injection),
    ("refuses_to_run_unprivileged", refuses_to_run_unprivileged),
    (
        "spoollock_client_through_the_helper",
        spoollock_client_through_the_helper,
    ),
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--client") {
        client_mode(&args[2..]);
        return;
    }
    if args.get(1).map(String::as_str) == Some("--measure-client") {
        measure_client(&args[2..]);
        return;
    }
    if args.iter().any(|a| a == "--measure") {
        if !nix::unistd::geteuid().is_root() {
            spoollock_test_support::skip_named("measurement", "it must run as root");
            return;
        }
        let mut env = Env::setup();
        measure(&env);
        env.teardown();
        return;
    }
    run_scenarios("privileged helper tests", SCENARIOS, Env::setup);
}
