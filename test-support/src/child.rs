//! A test that needs other processes re-runs its own test binary with
//! `<its own name> --exact`, and the environment variable [`ENV`] naming
//! the test and an argument. At its top the test asks [`role`]: in the
//! child it gets the argument and plays the child's part; in the parent,
//! `None`. So the child's part is no `#[test]` of its own, which would
//! report "ok" without testing anything when run normally.
//!
//! ```text
//! #[test]
//! fn workers_never_overlap() {
//!     if let Some(arg) = child::role() {
//!         return worker(&arg);
//!     }
//!     let out = child::command(&format!("{id}|{dir}")).output().unwrap();
//!     ...
//! }
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

/// `<test name>` newline `<argument>`, set for a child by [`command`].
pub const ENV: &str = "SPOOLLOCK_TEST_CHILD";

/// In a child started by [`command`] for the running test, its argument;
/// otherwise `None`. Call at the top of the test.
pub fn role() -> Option<String> {
    role_of(&crate::current_test())
}

/// [`role`] for the test named `test` (from a thread that is not the
/// test's own).
pub fn role_of(test: &str) -> Option<String> {
    let spec = std::env::var(ENV).ok()?;
    let (name, arg) = spec.split_once('\n')?;
    (name == test).then(|| arg.to_string())
}

/// A command that runs the running test again in a child, where [`role`]
/// returns `arg`. Output is not captured by libtest (`--nocapture`), so
/// what the child prints reaches the parent.
pub fn command(arg: &str) -> Command {
    command_for(&crate::current_test(), arg)
}

/// [`command`] for the test named `test` (from a thread that is not the
/// test's own).
pub fn command_for(test: &str, arg: &str) -> Command {
    command_with_exe(&std::env::current_exe().unwrap(), test, arg)
}

/// [`command_for`] running the test binary `exe` (a copy of this one, in a
/// place another user can reach).
pub fn command_with_exe(exe: &Path, test: &str, arg: &str) -> Command {
    let mut cmd = Command::new(exe);
    cmd.args(args(test)).env(ENV, spec(test, arg));
    cmd
}

/// The arguments that run only the test `test` (and its output uncaptured)
/// for a command line built by hand (`unshare ... <exe> <args>`).
pub fn args(test: &str) -> [String; 4] {
    [
        test.to_string(),
        "--exact".into(),
        "--nocapture".into(),
        "--test-threads=1".into(),
    ]
}

/// The value of [`ENV`] for the test `test` and `arg`.
pub fn spec(test: &str, arg: &str) -> String {
    format!("{test}\n{arg}")
}

/// The program and arguments that re-run the running test, for a harness
/// that starts its workers itself and hands them their part in an
/// environment variable of its own (`spoollock_tests::torture`): the test
/// checks that variable at its top, as it would call [`role`].
pub fn self_command() -> (PathBuf, Vec<String>) {
    (
        std::env::current_exe().unwrap(),
        args(&crate::current_test()).to_vec(),
    )
}
