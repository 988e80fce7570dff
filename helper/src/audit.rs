//! The audit trail: one syslog record per grant, release, refresh failure
//! and refusal, sent over the local syslog socket only (the `syslog`
//! crate's `unix` backend: `/dev/log`, never a network fallback).
//!
//! Records are `key=value` pairs. Every value is sanitized: bytes outside
//! printable ASCII, spaces, `"`, `\` and `=` become `\xNN`, and values are
//! bounded in length, so nothing a caller controls can forge a second
//! record, a field, or terminal escapes in a log viewer.

use std::io::Write;

use syslog::{Facility, LogFormat, Logger, LoggerBackend, Severity};

/// The syslog tag.
pub const TAG: &str = "spoollock-helper";

/// Longest value written into a record (longer ones are cut, marked `...`).
const MAX_VALUE: usize = 160;

/// What kind of event a record is; decides facility and severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A lock was granted (`LOG_MAIL`, info).
    Grant,
    /// A lock was released or broken as stale (`LOG_MAIL`, info).
    Release,
    /// An allowed operation did not succeed: busy, timeout, I/O, a refresh
    /// that failed (`LOG_MAIL`, warning).
    Failure,
    /// A refusal of policy: who may lock what, malformed input, unsafe
    /// environment (`LOG_AUTHPRIV`, warning).
    Refusal,
}

impl Class {
    fn facility(self) -> Facility {
        match self {
            Class::Refusal => Facility::LOG_AUTHPRIV,
            _ => Facility::LOG_MAIL,
        }
    }

    fn severity(self) -> Severity {
        match self {
            Class::Grant | Class::Release => Severity::LOG_INFO,
            Class::Failure | Class::Refusal => Severity::LOG_WARNING,
        }
    }
}

/// One record: its class and its already-sanitized text.
#[derive(Debug)]
pub struct Record {
    class: Class,
    text: String,
}

/// RFC 3164 framing without timestamp or host name (the local daemon adds
/// both), so formatting reads no clock, time zone or host configuration.
#[derive(Debug, Clone, Copy)]
pub struct Format {
    pid: u32,
}

impl LogFormat<Record> for Format {
    fn format<W: Write>(
        &self,
        w: &mut W,
        _severity: Severity,
        record: Record,
    ) -> syslog::Result<()> {
        let pri = record.class.facility() as u8 | record.class.severity() as u8;
        write!(w, "<{pri}>{TAG}[{}]: {}", self.pid, record.text).map_err(syslog::Error::Write)
    }
}

/// Who the records are about; filled in as the helper learns it.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    pub uid: Option<u32>,
    pub login: Option<String>,
    /// The client: the helper's parent process.
    pub client_pid: Option<u32>,
}

/// Where records go.
enum Sink {
    /// The local syslog socket: the installed helper.
    Syslog(Logger<LoggerBackend, Format>),
    /// Kept in order, for the fuzzer and the tests that drive a session
    /// in-process.
    Memory(Vec<(Class, String)>),
}

/// The connection to syslog plus the subject of the session.
pub struct Audit {
    sink: Sink,
    pub subject: Subject,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl Audit {
    /// Connect to the local syslog socket. The helper refuses to run
    /// without an audit trail, so a failure here ends it.
    pub fn connect() -> Result<Audit, String> {
        let format = Format {
            pid: std::process::id(),
        };
        let logger = syslog::unix(format).map_err(|e| e.to_string())?;
        Ok(Audit {
            sink: Sink::Syslog(logger),
            subject: Subject::default(),
        })
    }

    /// An audit trail kept in memory: [`Audit::records`] returns it.
    pub fn in_memory() -> Audit {
        Audit {
            sink: Sink::Memory(Vec::new()),
            subject: Subject::default(),
        }
    }

    /// The records kept by an in-memory trail (none for syslog).
    pub fn records(&self) -> &[(Class, String)] {
        match &self.sink {
            Sink::Memory(records) => records,
            Sink::Syslog(_) => &[],
        }
    }

    /// Send one record: `op`, `result`, the subject, then `fields`.
    /// Delivery is best effort once connected (a datagram to a daemon that
    /// went away is lost); the connection is retried once.
    pub fn record(&mut self, class: Class, op: &str, result: &str, fields: &[(&str, &str)]) {
        let text = render(&self.subject, op, result, fields);
        let logger = match &mut self.sink {
            Sink::Syslog(logger) => logger,
            Sink::Memory(records) => return records.push((class, text)),
        };
        let severity = class.severity();
        let sent = logger.formatter.format(
            &mut logger.backend,
            severity,
            Record {
                class,
                text: text.clone(),
            },
        );
        if sent.is_err() {
            if let Ok(fresh) = syslog::unix(logger.formatter) {
                *logger = fresh;
                let _ =
                    logger
                        .formatter
                        .format(&mut logger.backend, severity, Record { class, text });
            }
        }
    }
}

/// Build the text of a record.
pub fn render(subject: &Subject, op: &str, result: &str, fields: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(160);
    push(&mut out, "op", op);
    push(&mut out, "result", result);
    push(
        &mut out,
        "uid",
        &subject.uid.map_or_else(|| "?".into(), |u| u.to_string()),
    );
    push(&mut out, "login", subject.login.as_deref().unwrap_or("?"));
    push(
        &mut out,
        "client_pid",
        &subject
            .client_pid
            .map_or_else(|| "?".into(), |p| p.to_string()),
    );
    for (key, value) in fields {
        push(&mut out, key, value);
    }
    out
}

fn push(out: &mut String, key: &str, value: &str) {
    if !out.is_empty() {
        out.push(' ');
    }
    out.push_str(&sanitize(key));
    out.push('=');
    out.push_str(&sanitize(value));
}

/// Make caller-influenced text safe for a one-line `key=value` record.
pub fn sanitize(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len().min(MAX_VALUE) + 3);
    for &b in raw.as_bytes() {
        if out.len() >= MAX_VALUE {
            out.push_str("...");
            return out;
        }
        if b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b'=') {
            out.push(b as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\x");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
    if out.is_empty() {
        out.push_str("\"\"");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_defuses_injection() {
        assert_eq!(sanitize("alice"), "alice");
        assert_eq!(
            sanitize("x\nJan 1 host sshd[1]: Accepted"),
            "x\\x0aJan\\x201\\x20host\\x20sshd[1]:\\x20Accepted"
        );
        assert_eq!(
            sanitize("a=b \"c\" \\"),
            "a\\x3db\\x20\\x22c\\x22\\x20\\x5c"
        );
        assert_eq!(sanitize("\u{1b}[31m"), "\\x1b[31m");
        assert_eq!(sanitize("é"), "\\xc3\\xa9");
        assert_eq!(sanitize(""), "\"\"");
        let long = sanitize(&"a".repeat(1000));
        assert!(long.len() <= MAX_VALUE + 3 && long.ends_with("..."));
        let long_escapes = sanitize(&"\n".repeat(1000));
        assert!(long_escapes.len() <= MAX_VALUE + 3 + 4);
    }

    #[test]
    fn records_are_one_line_of_fields() {
        let subject = Subject {
            uid: Some(1000),
            login: Some("alice".into()),
            client_pid: Some(42),
        };
        let text = render(
            &subject,
            "lock",
            "refused",
            &[("requested", "bob\nop=unlock result=granted")],
        );
        assert_eq!(
            text,
            "op=lock result=refused uid=1000 login=alice client_pid=42 \
             requested=bob\\x0aop\\x3dunlock\\x20result\\x3dgranted"
        );
        assert!(!text.contains('\n'));
    }

    #[test]
    fn facilities_and_severities() {
        assert_eq!(
            Class::Refusal.facility() as u8 | Class::Refusal.severity() as u8,
            (10 << 3) | 4
        );
        assert_eq!(
            Class::Grant.facility() as u8 | Class::Grant.severity() as u8,
            (2 << 3) | 6
        );
    }
}
