//! A deadline ends a test that hangs, as a failure that says what it
//! waited for; one dropped in time does nothing.

use std::time::Duration;

use spoollock_test_support::{child, deadline};

#[test]
fn a_wait_past_its_deadline_fails_the_test_process() {
    if let Some(arg) = child::role() {
        let _deadline = deadline("the child's sleep", Duration::from_millis(200));
        if arg == "hang" {
            std::thread::sleep(Duration::from_secs(30));
        }
        return;
    }
    let _bound = deadline("the deadline's own test", Duration::from_secs(60));
    let hung = child::command("hang").output().unwrap();
    assert_eq!(hung.status.code(), Some(101), "{hung:?}");
    let said = String::from_utf8_lossy(&hung.stderr);
    assert!(
        said.contains("DEADLINE: the child's sleep: still waiting after 200ms"),
        "{said}"
    );
    let quick = child::command("quick").output().unwrap();
    assert!(quick.status.success(), "{quick:?}");
}
