//! The audit trail: one syslog record per grant, release, refresh failure
//! and refusal, sent over the local syslog socket only (`/dev/log`, never a
//! network fallback).
//!
//! Every change the helper makes in a spool (taking a lock, breaking a
//! stale one, removing a dead temporary file, releasing) is announced by a
//! record of intent first ([`Class::Intent`], `result=intent`), sent with
//! [`Audit::record_checked`]: when it could not be sent the change is not
//! made. The outcome follows as its own record, so a trail with an intent
//! and no outcome shows a helper that was interrupted (killed) in between.
//!
//! Records are `key=value` pairs. Every value is sanitized: bytes outside
//! printable ASCII, spaces, `"`, `\` and `=` become `\xNN`, and values are
//! bounded in length, so nothing a caller controls can forge a second
//! record, a field, or terminal escapes in a log viewer.
//!
//! Each record carries the helper's group in its kernel-checked sender
//! credentials (`SCM_CREDENTIALS`): the kernel lets a process claim only
//! one of its own real, effective or saved gids, and the helper's saved
//! gid is the mail group, which callers do not have. The syslog daemon
//! sees it as the sender's gid (rsyslog's `$!gid`, journald's `_GID`), so a
//! record that any user can write to `/dev/log` with the helper's tag is
//! told apart from the helper's own (see `docs/audit.md`).

use std::io::IoSlice;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixDatagram, UnixStream};

use nix::errno::Errno;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr, UnixCredentials};
use spoollock_protocol::paths;

/// The syslog tag.
pub const TAG: &str = "spoollock-helper";

/// Longest value written into a record (longer ones are cut, marked `...`).
const MAX_VALUE: usize = 160;

/// syslog facilities and severities (RFC 3164) the helper uses.
const LOG_MAIL: u8 = 2 << 3;
const LOG_AUTHPRIV: u8 = 10 << 3;
const LOG_WARNING: u8 = 4;
const LOG_INFO: u8 = 6;

/// What kind of event a record is; decides facility and severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A change to a spool is about to be made (`LOG_MAIL`, info).
    Intent,
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
    fn facility(self) -> u8 {
        match self {
            Class::Refusal => LOG_AUTHPRIV,
            _ => LOG_MAIL,
        }
    }

    fn severity(self) -> u8 {
        match self {
            Class::Intent | Class::Grant | Class::Release => LOG_INFO,
            Class::Failure | Class::Refusal => LOG_WARNING,
        }
    }

    /// The `<PRI>` value: facility and severity.
    fn priority(self) -> u8 {
        self.facility() | self.severity()
    }
}

/// The connection to the local syslog socket.
#[derive(Debug)]
enum Socket {
    /// `/dev/log` as every Linux syslog daemon serves it.
    Datagram(UnixDatagram),
    /// A stream socket (some daemons): records end with a NUL byte.
    Stream(UnixStream),
}

impl Socket {
    fn connect() -> std::io::Result<Socket> {
        let datagram = UnixDatagram::unbound()?;
        match datagram.connect(paths::SYSLOG_SOCKET) {
            Ok(()) => Ok(Socket::Datagram(datagram)),
            Err(e) if e.raw_os_error() == Some(Errno::EPROTOTYPE as i32) => {
                UnixStream::connect(paths::SYSLOG_SOCKET).map(Socket::Stream)
            }
            Err(e) => Err(e),
        }
    }

    /// Send one record with the sender credentials `creds` (or the
    /// kernel's default ones when `None`).
    fn send(&self, bytes: &[u8], creds: Option<&UnixCredentials>) -> Result<(), Errno> {
        let nul = [0u8];
        let (fd, iov) = match self {
            Socket::Datagram(s) => (s.as_raw_fd(), [IoSlice::new(bytes), IoSlice::new(&[])]),
            Socket::Stream(s) => (s.as_raw_fd(), [IoSlice::new(bytes), IoSlice::new(&nul)]),
        };
        let total = bytes.len() + usize::from(matches!(self, Socket::Stream(_)));
        let cmsg = creds.map(ControlMessage::ScmCredentials);
        let sent = sendmsg::<UnixAddr>(fd, &iov, cmsg.as_slice(), MsgFlags::MSG_NOSIGNAL, None)?;
        if sent == total {
            Ok(())
        } else {
            Err(Errno::EMSGSIZE)
        }
    }
}

/// One record's bytes: RFC 3164 framing without timestamp or host name
/// (the local daemon adds both), so formatting reads no clock, time zone
/// or host configuration.
fn frame(class: Class, pid: u32, text: &str) -> String {
    format!("<{}>{TAG}[{pid}]: {text}", class.priority())
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
    Syslog {
        socket: Socket,
        /// The sender credentials every record carries.
        creds: UnixCredentials,
    },
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
    /// without an audit trail, so a failure here ends it. Records carry
    /// the process's real ids until [`Audit::claim_group`].
    pub fn connect() -> Result<Audit, std::io::Error> {
        Ok(Audit {
            sink: Sink::Syslog {
                socket: Socket::connect()?,
                creds: UnixCredentials::new(),
            },
            subject: Subject::default(),
        })
    }

    /// Send every later record with `gid` as the sender's group: one the
    /// process has as its real, effective or saved gid (the kernel refuses
    /// any other, and the record then goes with the real ids).
    pub fn claim_group(&mut self, gid: nix::unistd::Gid) {
        if let Sink::Syslog { creds, .. } = &mut self.sink {
            *creds = UnixCredentials::from(nix::libc::ucred {
                pid: creds.pid(),
                uid: creds.uid(),
                gid: gid.as_raw(),
            });
        }
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
            Sink::Syslog { .. } => &[],
        }
    }

    /// Send one record: `op`, `result`, the subject, then `fields`.
    /// Delivery is best effort once connected (a datagram to a daemon that
    /// went away is lost); the connection is retried once.
    pub fn record(&mut self, class: Class, op: &str, result: &str, fields: &[(&str, &str)]) {
        let _ = self.record_checked(class, op, result, fields);
    }

    /// [`Audit::record`], saying whether the record was sent: handed to
    /// the local syslog daemon's socket (a datagram queued there; the
    /// connection retried once). The records of intent are sent this way,
    /// and the change they announce is not made when this is false.
    #[must_use]
    pub fn record_checked(
        &mut self,
        class: Class,
        op: &str,
        result: &str,
        fields: &[(&str, &str)],
    ) -> bool {
        let text = render(&self.subject, op, result, fields);
        self.send(class, text).is_ok()
    }

    fn send(&mut self, class: Class, text: String) -> Result<(), Errno> {
        let (socket, creds) = match &mut self.sink {
            Sink::Syslog { socket, creds } => (socket, creds),
            Sink::Memory(records) => {
                records.push((class, text));
                return Ok(());
            }
        };
        let bytes = frame(class, std::process::id(), &text);
        let claimed = socket.send(bytes.as_bytes(), Some(creds));
        match claimed {
            // Credentials the kernel would not let us claim: still send
            // the record, with the default ones.
            Err(Errno::EPERM) => socket.send(bytes.as_bytes(), None),
            Err(_) => {
                *socket = Socket::connect()
                    .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(Errno::EIO as i32)))?;
                socket.send(bytes.as_bytes(), Some(creds))
            }
            Ok(()) => Ok(()),
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
        assert_eq!(Class::Refusal.priority(), (10 << 3) | 4);
        assert_eq!(Class::Failure.priority(), (2 << 3) | 4);
        assert_eq!(Class::Grant.priority(), (2 << 3) | 6);
        assert_eq!(
            frame(Class::Release, 42, "op=release"),
            "<22>spoollock-helper[42]: op=release"
        );
    }

    #[test]
    fn a_record_carries_the_claimed_group() {
        // A private datagram socket standing in for /dev/log, with
        // credentials passing on: what a syslog daemon sees.
        use nix::sys::socket::{
            bind, recvmsg, setsockopt, socket, sockopt, AddressFamily, ControlMessageOwned,
            SockFlag, SockType,
        };
        let dir = std::env::temp_dir().join(format!("sl-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let daemon = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        bind(daemon.as_raw_fd(), &UnixAddr::new(&path).unwrap()).unwrap();
        setsockopt(&daemon, sockopt::PassCred, &true).unwrap();
        let sender = UnixDatagram::unbound().unwrap();
        sender.connect(&path).unwrap();
        let socket = Socket::Datagram(sender);
        let gid = nix::unistd::getegid().as_raw();
        let creds = UnixCredentials::from(nix::libc::ucred {
            pid: std::process::id() as i32,
            uid: nix::unistd::getuid().as_raw(),
            gid,
        });
        socket
            .send(b"<22>spoollock-helper[1]: x", Some(&creds))
            .unwrap();
        let mut buf = [0u8; 64];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!(UnixCredentials);
        let msg = recvmsg::<UnixAddr>(
            daemon.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .unwrap();
        let seen = msg
            .cmsgs()
            .unwrap()
            .find_map(|c| match c {
                ControlMessageOwned::ScmCredentials(c) => Some(c),
                _ => None,
            })
            .expect("credentials passed");
        assert_eq!(seen.gid(), gid);
        assert_eq!(seen.pid(), std::process::id() as i32);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
