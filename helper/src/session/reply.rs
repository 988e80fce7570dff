//! The replies owed to the client, queued and written together.

use std::fs::File;
use std::io::Write;

use spoollock_protocol::codec::{encode, Frame};
use spoollock_protocol::CodecError;

/// The replies owed to the client. They are written when the helper is
/// about to wait (for the client's next request, or for a busy lock) and
/// when the session ends, so the replies to requests the client sent
/// together leave in one `write`. Each reply is queued only after its
/// audit record was sent. What is pending is bounded: the replies to the
/// requests of one input buffer.
#[derive(Debug)]
pub(super) struct Outbox {
    pipe: File,
    pending: Vec<u8>,
    /// A write failed: the client is gone, every later flush fails too.
    broken: bool,
}

impl Outbox {
    pub(super) fn new(pipe: File) -> Outbox {
        Outbox {
            pipe,
            pending: Vec::new(),
            broken: false,
        }
    }

    pub(super) fn queue<T: Frame>(&mut self, msg: &T) -> Result<(), CodecError> {
        let frame = encode(msg)?;
        self.pending.extend_from_slice(&frame);
        Ok(())
    }

    pub(super) fn flush(&mut self) -> std::io::Result<()> {
        if self.broken {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        let written = self.pipe.write_all(&self.pending);
        self.pending.clear();
        self.broken = written.is_err();
        written
    }
}
