//! Append one message COUNT times to an mbox, each time locking it with
//! [`MailboxLock`] (fcntl + dotlock), appending, and unlocking: the
//! in-process spoollock writer of `bench/mailbox.sh`.
//!
//! ```text
//! cargo run --release --example mailbox_append -- MBOX MESSAGE-FILE COUNT [SENDER]
//! ```
//!
//! Exits 0 when every append succeeded; otherwise says which failed and
//! exits 1.

use std::path::PathBuf;
use std::process::ExitCode;

use spoollock::{MailboxLock, MailboxOptions};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mbox, message, count, sender) = match args.as_slice() {
        [mbox, message, count] => (mbox, message, count, "bench@example.org"),
        [mbox, message, count, sender] => (mbox, message, count, sender.as_str()),
        _ => {
            eprintln!("usage: mailbox_append MBOX MESSAGE-FILE COUNT [SENDER]");
            return ExitCode::from(2);
        }
    };
    let Ok(count) = count.parse::<u32>() else {
        eprintln!("mailbox_append: COUNT must be a number, not {count:?}");
        return ExitCode::from(2);
    };
    let message = match std::fs::read(message) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("mailbox_append: {message}: {e}");
            return ExitCode::from(2);
        }
    };
    let mbox = PathBuf::from(mbox);
    let opts = MailboxOptions {
        create: Some(0o600),
        ..MailboxOptions::default()
    };
    for n in 0..count {
        let appended = MailboxLock::open(&mbox, &opts).and_then(|mut mailbox| {
            mailbox.append(&message, sender)?;
            mailbox.release()
        });
        if let Err(e) = appended {
            eprintln!("mailbox_append: message {n}: {e}");
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}
