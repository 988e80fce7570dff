//! The client's requests, buffered as read from its pipe.

use std::fs::File;
use std::io::Read;

use spoollock_protocol::codec::PREFIX_LEN;
use spoollock_protocol::MAX_FRAME;

/// The client's requests as read from its pipe: one fixed buffer, large
/// enough for the largest frame, refilled after what it still holds.
#[derive(Debug)]
pub(super) struct Inbox {
    pipe: File,
    buf: Box<[u8]>,
    /// The unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
}

impl Inbox {
    pub(super) fn new(pipe: File) -> Inbox {
        Inbox {
            pipe,
            buf: vec![0; PREFIX_LEN + MAX_FRAME].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// The pipe itself (to wait on).
    pub(super) fn pipe(&self) -> &File {
        &self.pipe
    }

    /// The bytes read from the pipe and not yet consumed.
    pub(super) fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// One `read` from the pipe, after the bytes already buffered (moved
    /// to the front first): the number of bytes read, 0 at end of file.
    /// Once a frame's prefix is here the rest of the frame fits.
    pub(super) fn fill(&mut self) -> std::io::Result<usize> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // Only a whole frame fills the buffer; it is read first.
            return Err(std::io::ErrorKind::OutOfMemory.into());
        }
        loop {
            match self.pipe.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Reads what is buffered first, and reads the pipe only when nothing is.
impl Read for Inbox {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.fill()? == 0 {
                return Ok(0);
            }
        }
        let n = out.len().min(self.end - self.start);
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        Ok(n)
    }
}
