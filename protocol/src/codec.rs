//! The framed codec: the one place that knows how messages become bytes.
//!
//! A frame is a 4-byte big-endian payload length followed by the payload.
//! The length is checked against [`MAX_FRAME`] before a single payload byte
//! is read, so a hostile peer cannot make the reader allocate or wait for
//! more. The payload is bincode 1.3.3 with fixed-width little-endian
//! integers, a size limit of [`MAX_FRAME`] and no trailing bytes allowed.
//! A top-level enum's variant index is checked before decoding, so an
//! unknown message kind is reported as such rather than as garbage.

use std::fmt;
use std::io::{self, Read, Write};

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::FrameProblem;
use crate::message::{Hello, Reply, Request, Welcome};

/// The largest payload a frame may carry, in bytes.
pub const MAX_FRAME: usize = 4096;

/// Bytes in the length prefix.
pub const PREFIX_LEN: usize = 4;

/// A message type that travels in frames.
pub trait Frame: Serialize + DeserializeOwned {
    /// For a top-level enum, its number of variants: a payload whose
    /// leading variant index is not below it is an unknown message kind.
    const VARIANTS: Option<u32>;
}

impl Frame for Hello {
    const VARIANTS: Option<u32> = None;
}

impl Frame for Welcome {
    const VARIANTS: Option<u32> = None;
}

impl Frame for Request {
    const VARIANTS: Option<u32> = Some(7);
}

impl Frame for Reply {
    const VARIANTS: Option<u32> = Some(7);
}

/// Why a frame could not be read, decoded, encoded or written.
#[derive(Debug)]
pub enum CodecError {
    /// The stream ended cleanly, before the first byte of a frame.
    Closed,
    /// The stream ended inside a frame (`got` of `expected` bytes).
    Truncated {
        /// The bytes the prefix or frame needed.
        expected: usize,
        /// The bytes that came.
        got: usize,
    },
    /// The length prefix announces more than [`MAX_FRAME`] bytes.
    Oversize {
        /// The length announced.
        len: u64,
    },
    /// A frame with an empty payload.
    Empty,
    /// The payload does not decode as the expected message.
    Garbage(String),
    /// The payload's variant index names no known message kind.
    UnknownVariant {
        /// The variant index the payload starts with.
        index: u32,
    },
    /// The payload holds `extra` bytes after a complete message.
    TrailingBytes {
        /// How many bytes were left over.
        extra: usize,
    },
    /// The message to send does not fit in a frame.
    TooLarge,
    /// Reading or writing the stream failed.
    Io(io::Error),
}

impl CodecError {
    /// The frame problem to report to the peer, for errors caused by what
    /// the peer sent (`None` for a clean close, local I/O and encoding).
    pub fn problem(&self) -> Option<FrameProblem> {
        match self {
            CodecError::Truncated { .. } => Some(FrameProblem::Truncated),
            CodecError::Oversize { .. } => Some(FrameProblem::Oversize),
            CodecError::Empty => Some(FrameProblem::Empty),
            CodecError::Garbage(_) => Some(FrameProblem::Garbage),
            CodecError::UnknownVariant { .. } => Some(FrameProblem::UnknownVariant),
            CodecError::TrailingBytes { .. } => Some(FrameProblem::TrailingBytes),
            CodecError::Closed | CodecError::TooLarge | CodecError::Io(_) => None,
        }
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Closed => f.write_str("connection closed"),
            CodecError::Truncated { expected, got } => {
                write!(f, "frame cut short: {got} of {expected} bytes")
            }
            CodecError::Oversize { len } => {
                write!(f, "frame of {len} bytes exceeds the maximum of {MAX_FRAME}")
            }
            CodecError::Empty => f.write_str("empty frame"),
            CodecError::Garbage(why) => write!(f, "frame does not decode: {why}"),
            CodecError::UnknownVariant { index } => write!(f, "unknown message kind {index}"),
            CodecError::TrailingBytes { extra } => {
                write!(f, "{extra} trailing bytes after the message")
            }
            CodecError::TooLarge => {
                write!(f, "message does not fit in a frame of {MAX_FRAME} bytes")
            }
            CodecError::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}

impl std::error::Error for CodecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CodecError::Io(e) => Some(e),
            _ => None,
        }
    }
}

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .with_limit(MAX_FRAME as u64)
        .allow_trailing_bytes()
}

/// Encode `msg` as a complete frame (prefix and payload).
pub fn encode<T: Frame>(msg: &T) -> Result<Vec<u8>, CodecError> {
    let payload = options().serialize(msg).map_err(|e| match *e {
        bincode::ErrorKind::SizeLimit => CodecError::TooLarge,
        other => CodecError::Garbage(other.to_string()),
    })?;
    if payload.len() > MAX_FRAME {
        return Err(CodecError::TooLarge);
    }
    let mut frame = Vec::with_capacity(PREFIX_LEN + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// Decode one payload (without its prefix) as a `T`.
pub fn decode<T: Frame>(payload: &[u8]) -> Result<T, CodecError> {
    if payload.is_empty() {
        return Err(CodecError::Empty);
    }
    if payload.len() > MAX_FRAME {
        return Err(CodecError::Oversize {
            len: payload.len() as u64,
        });
    }
    if let (Some(variants), Some(head)) = (T::VARIANTS, payload.get(..4)) {
        let index = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        if index >= variants {
            return Err(CodecError::UnknownVariant { index });
        }
    }
    let mut rest = payload;
    let msg = options()
        .deserialize_from(&mut rest)
        .map_err(|e| CodecError::Garbage(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CodecError::TrailingBytes { extra: rest.len() });
    }
    Ok(msg)
}

/// Write `msg` as one frame and flush.
pub fn write_frame<W: Write + ?Sized, T: Frame>(w: &mut W, msg: &T) -> Result<(), CodecError> {
    let frame = encode(msg)?;
    w.write_all(&frame).map_err(CodecError::Io)?;
    w.flush().map_err(CodecError::Io)
}

/// Read exactly one frame and decode it as a `T`. Blocks until the whole
/// frame has arrived; never reads past the frame's end.
pub fn read_frame<R: Read + ?Sized, T: Frame>(r: &mut R) -> Result<T, CodecError> {
    let mut prefix = [0u8; PREFIX_LEN];
    match read_full(r, &mut prefix)? {
        0 => return Err(CodecError::Closed),
        PREFIX_LEN => {}
        got => {
            return Err(CodecError::Truncated {
                expected: PREFIX_LEN,
                got,
            })
        }
    }
    let len = payload_len(prefix)?;
    let mut payload = vec![0u8; len];
    let got = read_full(r, &mut payload)?;
    if got < len {
        return Err(CodecError::Truncated { expected: len, got });
    }
    decode(&payload)
}

/// The payload length a prefix announces, refused here when it is zero or
/// over [`MAX_FRAME`]: the one place these rules live ([`read_frame`] and
/// [`frame_complete`] both ask it).
fn payload_len(prefix: [u8; PREFIX_LEN]) -> Result<usize, CodecError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME {
        return Err(CodecError::Oversize { len: len as u64 });
    }
    if len == 0 {
        return Err(CodecError::Empty);
    }
    Ok(len)
}

/// Whether `buf`, the start of a stream of frames, holds a whole frame,
/// without decoding it: `Ok(Some(n))` when its first `n` bytes are one
/// frame (prefix and payload), `Ok(None)` when more bytes are needed, and
/// the error [`read_frame`] would return when the prefix alone refuses the
/// frame (empty or oversize). A reader that buffers its input uses it to
/// know that [`read_frame`] on the buffer cannot block.
pub fn frame_complete(buf: &[u8]) -> Result<Option<usize>, CodecError> {
    let Some(prefix) = buf.first_chunk::<PREFIX_LEN>() else {
        return Ok(None);
    };
    let len = payload_len(*prefix)?;
    Ok((buf.len() - PREFIX_LEN >= len).then_some(PREFIX_LEN + len))
}

/// Read until `buf` is full or the stream ends; the number of bytes read.
fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> Result<usize, CodecError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(CodecError::Io(e)),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::*;
    use crate::{Refusal, MAGIC, PROTOCOL_VERSION};

    fn frame_of(payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn hello_layout_is_fixed() {
        // magic (8 bytes) + version (u32 little endian), nothing else:
        // a client of any version can always send and read these.
        let bytes = encode(&Hello::current()).unwrap();
        assert_eq!(&bytes[..4], &12u32.to_be_bytes());
        assert_eq!(&bytes[4..12], &MAGIC);
        assert_eq!(&bytes[12..], &PROTOCOL_VERSION.to_le_bytes());
        let welcome = encode(&Welcome::answer(&Hello::current())).unwrap();
        assert_eq!(welcome.len(), 4 + 8 + 4 + 1);
        assert_eq!(welcome[16], 1);
    }

    #[test]
    fn variant_counts_match_the_enums() {
        // The last variant's index is VARIANTS - 1.
        let last = encode(&Request::ForceTouch(Target::default_spool())).unwrap();
        assert_eq!(&last[4..8], &6u32.to_le_bytes());
        let err = encode(&Reply::Error(Refusal::NotLocked)).unwrap();
        assert_eq!(&err[4..8], &6u32.to_le_bytes());
    }

    #[test]
    fn a_failed_step_keeps_its_wire_index() {
        // Refusal::Io is variant 23 in version 4 (24 in 3); `Op::Wait` is
        // index 8 in version 4 (9 in 3, before `WriteTemp`, never built,
        // was removed).
        let io = encode(&Reply::Error(Refusal::Io {
            op: crate::Op::Wait,
            errno: 5,
        }))
        .unwrap();
        assert_eq!(&io[4..8], &6u32.to_le_bytes());
        assert_eq!(&io[8..12], &23u32.to_le_bytes());
        assert_eq!(&io[12..16], &8u32.to_le_bytes());
        assert_eq!(&io[16..20], &5i32.to_le_bytes());
    }

    #[test]
    fn round_trip_every_request_and_reply() {
        let target = Target {
            spool: SpoolSel::Path("/var/mail".into()),
            mailbox: Some("alice".into()),
        };
        let requests = [
            Request::Lock(LockRequest {
                target: target.clone(),
                wait: WaitSpec::TimeoutMs(1500),
                mode: LockMode::Detached {
                    holder_pid: Some(42),
                },
                stale_age_secs: Some(600),
            }),
            Request::Lock(LockRequest {
                target: Target::default_spool(),
                wait: WaitSpec::Forever,
                mode: LockMode::Session,
                stale_age_secs: None,
            }),
            Request::Touch(target.clone()),
            Request::Unlock(Target {
                spool: SpoolSel::Index(1),
                mailbox: None,
            }),
            Request::Check(target.clone()),
            Request::Bye,
            Request::ForceUnlock(target.clone()),
            Request::ForceTouch(target),
        ];
        for r in requests {
            let bytes = encode(&r).unwrap();
            let back: Request = read_frame(&mut &bytes[..]).unwrap();
            assert_eq!(back, r);
        }
        let holder = HolderInfo {
            pid: Some(7),
            host: Some("mx".into()),
            mtime_secs: 1_700_000_000,
        };
        let replies = [
            Reply::Ready(SessionInfo {
                uid: 1000,
                login: "alice".into(),
                helper_pid: 99,
                spools: vec!["/var/mail".into(), "/var/spool/mail".into()],
            }),
            Reply::Locked(LockInfo {
                spool: "/var/mail".into(),
                name: "alice.lock".into(),
                pid: None,
                detached: true,
                stale_age_secs: 300,
            }),
            Reply::Touched,
            Reply::Unlocked,
            Reply::Status(LockStatus::Stale(holder.clone(), StaleKind::Age)),
            Reply::Status(LockStatus::Free),
            Reply::Bye,
            Reply::Error(Refusal::Busy {
                holder: Some(holder),
            }),
            Reply::Error(Refusal::Spool(crate::SpoolProblem::WrongGroup { gid: 0 })),
            Reply::Error(Refusal::HeldBySession {
                helper_pid: 4242,
                client_pid: Some(4241),
            }),
            Reply::Error(Refusal::LockTooLarge {
                size: 2048,
                owner: 1001,
                max: 512,
            }),
            Reply::Error(Refusal::SessionLimit {
                refused: 16,
                granted: 0,
            }),
            Reply::Error(Refusal::ForeignLockFile {
                owner_uid: 1001,
                owner_login: Some("bob".into()),
            }),
            Reply::Error(Refusal::ForeignLockFile {
                owner_uid: 64999,
                owner_login: None,
            }),
            Reply::Error(Refusal::LockNameIsLogin {
                login: "alice.lock".into(),
            }),
            Reply::Error(Refusal::AuditUnavailable),
        ];
        for r in replies {
            let bytes = encode(&r).unwrap();
            let back: Reply = read_frame(&mut &bytes[..]).unwrap();
            assert_eq!(back, r);
        }
    }

    #[test]
    fn reads_one_frame_at_a_time() {
        let mut stream = encode(&Request::Bye).unwrap();
        stream.extend(encode(&Request::Check(Target::default_spool())).unwrap());
        let mut r = &stream[..];
        assert_eq!(read_frame::<_, Request>(&mut r).unwrap(), Request::Bye);
        assert!(matches!(
            read_frame::<_, Request>(&mut r).unwrap(),
            Request::Check(_)
        ));
        assert!(matches!(
            read_frame::<_, Request>(&mut r),
            Err(CodecError::Closed)
        ));
    }

    #[test]
    fn frame_complete_follows_the_prefix() {
        let frame = encode(&Request::Bye).unwrap();
        for cut in 0..frame.len() {
            assert!(matches!(frame_complete(&frame[..cut]), Ok(None)), "{cut}");
        }
        assert_eq!(frame_complete(&frame).unwrap(), Some(frame.len()));
        let mut two = frame.clone();
        two.extend_from_slice(&frame);
        assert_eq!(frame_complete(&two).unwrap(), Some(frame.len()));
        assert!(matches!(frame_complete(&[0; 4]), Err(CodecError::Empty)));
        let over = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(matches!(
            frame_complete(&over),
            Err(CodecError::Oversize { len }) if len == MAX_FRAME as u64 + 1
        ));
    }

    #[test]
    fn short_prefix_is_truncated() {
        let r = read_frame::<_, Request>(&mut &[0u8, 0, 1][..]);
        assert!(matches!(
            r,
            Err(CodecError::Truncated {
                expected: 4,
                got: 3
            })
        ));
        assert_eq!(r.unwrap_err().problem(), Some(FrameProblem::Truncated));
    }

    #[test]
    fn oversize_is_refused_before_reading_the_payload() {
        // A reader that fails if anything past the prefix is read.
        struct PrefixOnly(Vec<u8>);
        impl Read for PrefixOnly {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() {
                    panic!("read past the length prefix");
                }
                let n = buf.len().min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0.drain(..n);
                Ok(n)
            }
        }
        let mut r = PrefixOnly(((MAX_FRAME + 1) as u32).to_be_bytes().to_vec());
        assert!(matches!(
            read_frame::<_, Request>(&mut r),
            Err(CodecError::Oversize { len }) if len == MAX_FRAME as u64 + 1
        ));
        let mut r = PrefixOnly(u32::MAX.to_be_bytes().to_vec());
        assert!(matches!(
            read_frame::<_, Request>(&mut r),
            Err(CodecError::Oversize { .. })
        ));
    }

    #[test]
    fn truncated_payload_is_truncated() {
        let bytes = encode(&Request::Check(Target::default_spool())).unwrap();
        for cut in 5..bytes.len() {
            let r = read_frame::<_, Request>(&mut &bytes[..cut]);
            assert!(
                matches!(r, Err(CodecError::Truncated { .. })),
                "cut at {cut}: {r:?}"
            );
        }
    }

    #[test]
    fn empty_frame_is_refused() {
        let r = read_frame::<_, Request>(&mut &frame_of(&[])[..]);
        assert!(matches!(r, Err(CodecError::Empty)));
    }

    #[test]
    fn garbage_is_refused() {
        // Variant 0 (Lock) followed by bytes that are no LockRequest.
        let r = read_frame::<_, Request>(&mut &frame_of(&[0, 0, 0, 0, 0xff, 0xff, 0xff])[..]);
        assert!(matches!(r, Err(CodecError::Garbage(_))), "{r:?}");
        // A string length far larger than the frame.
        let mut p = vec![3, 0, 0, 0, 2, 0, 0, 0];
        p.extend_from_slice(&u64::MAX.to_le_bytes());
        let r = read_frame::<_, Request>(&mut &frame_of(&p)[..]);
        assert!(matches!(r, Err(CodecError::Garbage(_))), "{r:?}");
        // Invalid UTF-8 in a string.
        let mut p = vec![3, 0, 0, 0, 2, 0, 0, 0];
        p.extend_from_slice(&2u64.to_le_bytes());
        p.extend_from_slice(&[0xc3, 0x28, 0]);
        let r = read_frame::<_, Request>(&mut &frame_of(&p)[..]);
        assert!(matches!(r, Err(CodecError::Garbage(_))), "{r:?}");
        // A bool that is neither 0 nor 1 in a Welcome.
        let mut p = MAGIC.to_vec();
        p.extend_from_slice(&1u32.to_le_bytes());
        p.push(7);
        let r = read_frame::<_, Welcome>(&mut &frame_of(&p)[..]);
        assert!(matches!(r, Err(CodecError::Garbage(_))), "{r:?}");
    }

    #[test]
    fn unknown_variant_is_refused() {
        let r = read_frame::<_, Request>(&mut &frame_of(&[7, 0, 0, 0])[..]);
        assert!(matches!(r, Err(CodecError::UnknownVariant { index: 7 })));
        let r = read_frame::<_, Reply>(&mut &frame_of(&[0xff, 0xff, 0xff, 0xff])[..]);
        assert!(matches!(
            r,
            Err(CodecError::UnknownVariant { index: u32::MAX })
        ));
        assert_eq!(r.unwrap_err().problem(), Some(FrameProblem::UnknownVariant));
        // Unknown nested variant (WaitSpec index 9) is garbage.
        let mut lock = encode(&Request::Lock(LockRequest {
            target: Target::default_spool(),
            wait: WaitSpec::NoWait,
            mode: LockMode::Session,
            stale_age_secs: None,
        }))
        .unwrap();
        // payload: [Request tag 4][SpoolSel tag 4][Option tag 1][WaitSpec tag 4]...
        let wait_at = 4 + 4 + 4 + 1;
        lock[wait_at..wait_at + 4].copy_from_slice(&9u32.to_le_bytes());
        let r = read_frame::<_, Request>(&mut &lock[..]);
        assert!(matches!(r, Err(CodecError::Garbage(_))), "{r:?}");
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut p = encode(&Request::Bye).unwrap()[4..].to_vec();
        p.push(0);
        let r = read_frame::<_, Request>(&mut &frame_of(&p)[..]);
        assert!(matches!(r, Err(CodecError::TrailingBytes { extra: 1 })));
        let mut h = encode(&Hello::current()).unwrap()[4..].to_vec();
        h.extend_from_slice(b"xyz");
        let r = read_frame::<_, Hello>(&mut &frame_of(&h)[..]);
        assert!(matches!(r, Err(CodecError::TrailingBytes { extra: 3 })));
    }

    #[test]
    fn wrong_version_and_magic_are_not_accepted() {
        let old = Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION + 1,
        };
        let bytes = encode(&old).unwrap();
        let hello: Hello = read_frame(&mut &bytes[..]).unwrap();
        let w = Welcome::answer(&hello);
        assert!(!w.accepted);
        assert_eq!(w.version, PROTOCOL_VERSION);
        let stranger = Hello {
            magic: *b"GET / HT",
            version: PROTOCOL_VERSION,
        };
        assert!(!Welcome::answer(&stranger).accepted);
        assert!(Welcome::answer(&Hello::current()).accepted);
    }

    #[test]
    fn oversize_message_is_not_sent() {
        let huge = Request::Check(Target {
            spool: SpoolSel::Path("x".repeat(MAX_FRAME)),
            mailbox: None,
        });
        assert!(matches!(encode(&huge), Err(CodecError::TooLarge)));
        let mut sink = Vec::new();
        assert!(matches!(
            write_frame(&mut sink, &huge),
            Err(CodecError::TooLarge)
        ));
        assert!(sink.is_empty(), "nothing written for an unsendable message");
    }
}
