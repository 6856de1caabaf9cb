//! A stream's receive queue: bytes received from the kernel and not yet given to the guest,
//! plus what ended the stream. A pure buffer: no I/O, no policy.
//!
//! It is what makes `read(n)`/`readline()` one host call each and keeps the promise that
//! nothing received is lost when a call times out.

use crate::errno::Errno;

#[derive(Debug, Default)]
pub(crate) struct RxQueue {
    buf: Vec<u8>,
    head: usize,
    /// The peer closed its side: every later read returns what is queued, then `b""`.
    eof: bool,
    /// An error (ECONNRESET) that arrived while a read still had bytes to return: reported by
    /// the next read once the queue is empty, then the stream is at EOF.
    error: Option<Errno>,
}

impl RxQueue {
    /// How many bytes are queued.
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.head
    }

    /// The queued bytes.
    pub(crate) fn queued(&self) -> &[u8] {
        &self.buf[self.head..]
    }

    /// Whether the stream has ended or failed: no more bytes will be queued.
    pub(crate) fn is_finished(&self) -> bool {
        self.eof || self.error.is_some()
    }

    /// Whether a read would return something now (bytes, end of stream or an error): what
    /// makes `poll` report POLLIN on its own.
    pub(crate) fn has_news(&self) -> bool {
        self.len() > 0 || self.error.is_some()
    }

    pub(crate) fn is_eof(&self) -> bool {
        self.eof
    }

    /// The peer closed its side.
    pub(crate) fn set_eof(&mut self) {
        self.eof = true;
    }

    /// An error to report after the queued bytes.
    pub(crate) fn set_error(&mut self, err: Errno) {
        self.error = Some(err);
    }

    /// Removes and returns the first `n` queued bytes; without a copy when that is all of them.
    pub(crate) fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.len());
        if self.head == 0 && n == self.buf.len() {
            return std::mem::take(&mut self.buf);
        }
        let out = self.buf[self.head..self.head + n].to_vec();
        self.head += n;
        if self.head == self.buf.len() {
            self.buf.clear();
            self.head = 0;
        }
        out
    }

    /// Removes and returns everything queued.
    pub(crate) fn take_all(&mut self) -> Vec<u8> {
        self.take(self.len())
    }

    /// The buffer, with room for at least `want` more bytes after the queued ones (consumed
    /// space is reused first). Callers only append to it, e.g. by receiving into its spare
    /// capacity; what they append joins the queue.
    pub(crate) fn room(&mut self, want: usize) -> &mut Vec<u8> {
        if self.head > 0 && self.head >= self.buf.len() / 2 {
            self.buf.drain(..self.head);
            self.head = 0;
        }
        self.buf.reserve(want);
        &mut self.buf
    }

    /// Appends bytes to the queue.
    pub(crate) fn append(&mut self, data: &[u8]) {
        self.room(data.len()).extend_from_slice(data);
    }

    /// Puts `data` back in front of the queue.
    pub(crate) fn unread(&mut self, data: &[u8]) {
        if data.len() <= self.head {
            // The usual case: these are the bytes just taken, and their room is still there.
            self.head -= data.len();
            self.buf[self.head..self.head + data.len()].copy_from_slice(data);
        } else {
            let mut buf = Vec::with_capacity(data.len() + self.len());
            buf.extend_from_slice(data);
            buf.extend_from_slice(self.queued());
            self.buf = buf;
            self.head = 0;
        }
    }

    /// Takes the pending error if nothing is queued before it; afterwards the stream is at EOF.
    pub(crate) fn take_error(&mut self) -> Option<Errno> {
        if self.len() > 0 {
            return None;
        }
        let err = self.error.take()?;
        self.eof = true;
        Some(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(bytes: &[u8]) -> RxQueue {
        let mut q = RxQueue::default();
        q.append(bytes);
        q
    }

    #[test]
    fn take_returns_in_order_and_all_at_once_without_a_copy() {
        let mut q = queue(b"hello world");
        assert_eq!(q.take(5), b"hello");
        assert_eq!(q.len(), 6);
        assert_eq!(q.take(100), b" world", "take is clamped to what is queued");
        assert_eq!(q.len(), 0);
        let mut q = queue(b"abc");
        let ptr = q.queued().as_ptr();
        let all = q.take_all();
        assert_eq!((all.as_slice(), all.as_ptr()), (&b"abc"[..], ptr));
    }

    #[test]
    fn unread_puts_bytes_back_in_front_in_place_or_by_copy() {
        let mut q = queue(b"line1\nline2\n");
        let line = q.take(6);
        q.unread(&line[3..]);
        assert_eq!(q.queued(), b"e1\nline2\n");
        // More than was taken: a new buffer with the data in front.
        q.unread(b"0123456789");
        assert_eq!(q.queued(), b"0123456789e1\nline2\n");
        let mut empty = RxQueue::default();
        empty.unread(b"x");
        assert_eq!(empty.queued(), b"x");
    }

    #[test]
    fn consumed_room_is_reused_before_growing() {
        let mut q = queue(&[7; 100]);
        q.take(80);
        let before = q.room(10).capacity();
        q.append(&[8; 10]);
        assert_eq!(q.room(0).capacity(), before, "no growth");
        assert_eq!(q.len(), 30);
        assert_eq!(&q.queued()[..20], &[7; 20]);
        assert_eq!(&q.queued()[20..], &[8; 10]);
    }

    #[test]
    fn an_error_waits_behind_queued_bytes_then_ends_the_stream() {
        let mut q = queue(b"ab");
        q.set_error(Errno::ECONNRESET);
        assert!(q.has_news() && q.is_finished());
        assert_eq!(q.take_error(), None, "bytes first");
        assert_eq!(q.take(2), b"ab");
        assert_eq!(q.take_error(), Some(Errno::ECONNRESET));
        assert_eq!(q.take_error(), None, "reported once");
        assert!(q.is_eof() && !q.has_news());
    }
}
