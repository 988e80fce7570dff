//! The lock content parser takes bytes any user's tool may have written:
//! it must never panic, must only report what it validated, and what it
//! reports must survive a render/parse round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spoollock_lockfile::{LockContent, MAX_CONTENT};

fn clean(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 128
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

fuzz_target!(|data: &[u8]| {
    let content = LockContent::parse(data);
    if let Some(pid) = content.pid {
        assert!(pid > 0 && pid <= i32::MAX as u32, "pid {pid}");
    }
    for token in [&content.host, &content.boot].into_iter().flatten() {
        assert!(clean(token), "unclean token {token:?}");
    }
    // Only the first MAX_CONTENT bytes count.
    if data.len() > MAX_CONTENT {
        assert_eq!(LockContent::parse(&data[..MAX_CONTENT]), content);
    }
    let rendered = content.render();
    assert!(rendered.len() <= MAX_CONTENT);
    assert_eq!(LockContent::parse(&rendered), content);
});
