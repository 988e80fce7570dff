//! The helper's request handling: its own `Session` (handshake, policy,
//! lock state machine, audit) driven with arbitrary stages and request
//! streams against a private spool. The harness and every check it makes
//! are in `helper/tests/support/session_case.rs`, shared with the proptest
//! properties that run on stable. Needs root (the helper trusts only
//! root-owned spools).
#![no_main]

#[path = "../../helper/tests/support/session_case.rs"]
mod session_case;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use session_case::{run_case, Spool};

static SPOOL: OnceLock<Spool> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let spool = SPOOL.get_or_init(|| match Spool::create() {
        Ok(spool) => spool,
        Err(why) => panic!("helper_session cannot run here: {why}"),
    });
    run_case(spool, data);
});
