//! The lock file's content: what spoollock writes, and a parser for what
//! any tool may have written.
//!
//! Written form (first line readable by tools that `atoi` it, as liblockfile,
//! procmail and mutt do):
//!
//! ```text
//! <pid>\n
//! host=<hostname>\n
//! boot=<boot id>\n
//! start=<process start time in clock ticks since boot>\n
//! [append=<dev>:<ino>:<offset>:<length>\n]
//! ```
//!
//! The optional `append` line is written by a holder while it appends to
//! the file the lock protects (spoollock's `MailboxLock::append`) and
//! removed when the append is complete, so that whoever breaks the lock
//! of a holder killed mid-append knows which bytes may be a partial write.
//!
//! The parser is a pure function over bytes that never panics and never
//! fails: content it does not understand simply carries less information
//! (no pid, no host), which makes the lock judged by its age alone.

use std::fmt;
use std::time::SystemTime;

/// Longest lock content spoollock reads; anything beyond is ignored.
pub const MAX_CONTENT: usize = 512;
const MAX_FIELD: usize = 128;

/// What a lock file says about its holder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockContent {
    /// The holder's process id, when the lock names one (`0` means none).
    pub pid: Option<u32>,
    /// The host the lock was made on (spoollock's `host=` or Dovecot's `pid:host`).
    pub host: Option<String>,
    /// The kernel boot id of that host when the lock was made.
    pub boot: Option<String>,
    /// The holder's start time (field 22 of `/proc/PID/stat`), to detect pid reuse.
    pub start: Option<u64>,
    /// An append in progress on the protected file, if the holder said so.
    pub append: Option<AppendMark>,
}

/// "I am appending `length` bytes at `offset` to the file with this device
/// and inode": the holder's note that a partial write may follow its death.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendMark {
    /// Device of the file being appended to.
    pub dev: u64,
    /// Inode of the file being appended to.
    pub ino: u64,
    /// Where the append starts: the file's size before it.
    pub offset: u64,
    /// How many bytes the append writes.
    pub length: u64,
}

impl AppendMark {
    fn parse(value: &[u8]) -> Option<AppendMark> {
        let mut fields = value.split(|&b| b == b':').map(parse_u64);
        let mark = AppendMark {
            dev: fields.next()??,
            ino: fields.next()??,
            offset: fields.next()??,
            length: fields.next()??,
        };
        fields.next().is_none().then_some(mark)
    }
}

impl LockContent {
    /// Parse lock content written by spoollock or any other dotlock tool:
    /// empty, `0\n`, a bare pid (with or without newline), Dovecot's
    /// `pid:host`, or spoollock's full form. Never panics, never fails.
    pub fn parse(bytes: &[u8]) -> LockContent {
        let bytes = &bytes[..bytes.len().min(MAX_CONTENT)];
        let mut lines = bytes.split(|&b| b == b'\n');
        let mut content = LockContent::default();

        if let Some(first) = lines.next() {
            let first = trim(first);
            let (pid_part, host_part) = match first.iter().position(|&b| b == b':') {
                Some(i) => (&first[..i], Some(&first[i + 1..])),
                None => (first, None),
            };
            content.pid = parse_pid(trim(pid_part));
            content.host = host_part.and_then(|h| clean_token(trim(h)));
        }
        for line in lines {
            let line = trim(line);
            let Some(eq) = line.iter().position(|&b| b == b'=') else {
                continue;
            };
            let (key, value) = (&line[..eq], trim(&line[eq + 1..]));
            match key {
                b"host" => content.host = clean_token(value),
                b"boot" => content.boot = clean_token(value),
                b"start" => content.start = parse_u64(value),
                b"append" => content.append = AppendMark::parse(value),
                _ => {}
            }
        }
        content
    }

    /// The bytes spoollock writes into a new lock.
    pub fn render(&self) -> Vec<u8> {
        let mut out = format!("{}\n", self.pid.unwrap_or(0));
        if let Some(host) = &self.host {
            out.push_str(&format!("host={host}\n"));
        }
        if let Some(boot) = &self.boot {
            out.push_str(&format!("boot={boot}\n"));
        }
        if let Some(start) = self.start {
            out.push_str(&format!("start={start}\n"));
        }
        if let Some(m) = self.append {
            out.push_str(&format!(
                "append={}:{}:{}:{}\n",
                m.dev, m.ino, m.offset, m.length
            ));
        }
        out.into_bytes()
    }
}

/// A lock somebody holds: what its file says and when it was last refreshed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The parsed content.
    pub content: LockContent,
    /// The lock's modification time, as the file system recorded it.
    pub mtime: SystemTime,
    /// The lock file's owner, when known.
    pub owner: Option<u32>,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.content.pid {
            Some(pid) => write!(f, "pid {pid}")?,
            None => f.write_str("no pid")?,
        }
        if let Some(host) = &self.content.host {
            write!(f, " on {host}")?;
        }
        Ok(())
    }
}

/// Keep only the characters a host name or boot id may contain; refuse
/// anything else so hostile content cannot smuggle bytes into messages.
pub(crate) fn clean_token(raw: &[u8]) -> Option<String> {
    if raw.is_empty() || raw.len() > MAX_FIELD {
        return None;
    }
    let ok = raw
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    ok.then(|| String::from_utf8_lossy(raw).into_owned())
}

/// Map any host name to the token spoollock writes: disallowed bytes become
/// `_` and the length is bounded, so `clean_token(sanitize_host(h))` is `Some`.
pub(crate) fn sanitize_host(raw: &[u8]) -> String {
    let mut host: String = raw
        .iter()
        .take(MAX_FIELD)
        .map(|&b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_') {
                b as char
            } else {
                '_'
            }
        })
        .collect();
    if host.is_empty() {
        host.push_str("localhost");
    }
    host
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() || *first == 0 {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() || *last == 0 {
            s = rest;
        } else {
            break;
        }
    }
    s
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// A positive pid that fits `pid_t`; `0`, negative or garbage mean "no pid".
fn parse_pid(s: &[u8]) -> Option<u32> {
    let pid = parse_u64(s)?;
    (pid > 0 && pid <= i32::MAX as u64).then_some(pid as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_other_tools_write() {
        assert_eq!(LockContent::parse(b""), LockContent::default());
        assert_eq!(LockContent::parse(b"0\n").pid, None);
        assert_eq!(LockContent::parse(b"1234\n").pid, Some(1234));
        assert_eq!(LockContent::parse(b"1234").pid, Some(1234));
        assert_eq!(LockContent::parse(b"  77 \n").pid, Some(77));
        let dovecot = LockContent::parse(b"4321:mx1.example.org");
        assert_eq!(dovecot.pid, Some(4321));
        assert_eq!(dovecot.host.as_deref(), Some("mx1.example.org"));
    }

    #[test]
    fn garbage_means_less_information_not_an_error() {
        assert_eq!(LockContent::parse(b"-5\n").pid, None);
        assert_eq!(LockContent::parse(b"99999999999999999999999\n").pid, None);
        assert_eq!(LockContent::parse(b"abc\n").pid, None);
        let c = LockContent::parse(b"12\nhost=evil\nhost\n\x1b[31m\nboot=a b\nstart=x\n");
        assert_eq!(c.pid, Some(12));
        assert_eq!(c.host.as_deref(), Some("evil"));
        assert_eq!(c.boot, None);
        assert_eq!(c.start, None);
        assert_eq!(LockContent::parse(b"1\nappend=1:2:3\n").append, None);
        assert_eq!(LockContent::parse(b"1\nappend=1:2:3:4:5\n").append, None);
        assert_eq!(LockContent::parse(b"1\nappend=1:2:x:4\n").append, None);
        let newline_host = LockContent::parse(b"12:a\rb\n");
        assert_eq!(newline_host.host, None);
    }

    #[test]
    fn render_then_parse_round_trips() {
        let c = LockContent {
            pid: Some(42),
            host: Some("h-1.example".into()),
            boot: Some("0b5f7a8e-1111-2222-3333-444455556666".into()),
            start: Some(987654),
            append: Some(AppendMark {
                dev: 2049,
                ino: 77,
                offset: 1 << 40,
                length: 5,
            }),
        };
        let bytes = c.render();
        assert!(bytes.starts_with(b"42\n"));
        assert_eq!(LockContent::parse(&bytes), c);
    }

    #[test]
    fn sanitized_hosts_always_parse_back() {
        for raw in [&b""[..], b"a\nb", b"\xff\xfe", b"ok.host"] {
            let h = sanitize_host(raw);
            assert_eq!(clean_token(h.as_bytes()), Some(h.clone()));
        }
    }
}
