//! Which logins can name a mailbox: one rule for the helper (which builds
//! `<spool>/<login>.lock` from the password database's answer) and for the
//! client library (which builds `<spool>/<login>` for `--mailbox` on the
//! direct path), so the two cannot disagree.

/// The longest file name (Linux `NAME_MAX`).
const NAME_MAX: usize = 255;

/// Whether a login can name a mailbox and its lock: a plain, printable
/// ASCII file name that is not hidden, not an option, not itself a lock
/// name (no `alice.lock.lock` chains) and short enough for `.lock`. A
/// login from the password database is not trusted to be one: NSS
/// sources (LDAP, files edited by hand) accept names that `useradd`
/// does not, such as `../../tmp/x`.
pub fn login_usable(login: &str) -> bool {
    !login.is_empty()
        && login.len() + ".lock".len() <= NAME_MAX
        && login.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
        && !login.starts_with('.')
        && !login.starts_with('-')
        && !login.ends_with(".lock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_logins() {
        for ok in ["alice", "bob.smith", "u_1", "svc$", "a-b", "x.lockx"] {
            assert!(login_usable(ok), "{ok}");
        }
        let long = "a".repeat(NAME_MAX - 4);
        for bad in [
            "",
            ".hidden",
            "-rf",
            "a/b",
            "..",
            "../../tmp/x",
            "alice.lock",
            "with space",
            "tab\t",
            "new\nline",
            "\u{e9}",
            long.as_str(),
        ] {
            assert!(!login_usable(bad), "{bad:?}");
        }
        assert!(login_usable(&"a".repeat(NAME_MAX - 5)));
    }
}
