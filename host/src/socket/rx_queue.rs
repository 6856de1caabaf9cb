//! A stream's receive queue: bytes received from the kernel and not yet given to the guest,
//! plus what ended the stream. A pure buffer: no I/O, no policy.
//!
//! It is what makes `read(n)`/`readline()` one host call each and keeps the promise that
//! nothing received is lost when a call times out. A ring buffer: taking from the front,
//! adding at the back and putting bytes back in front (`unread`) each cost in proportion to
//! the bytes they move, never to what else is queued.

use std::collections::VecDeque;

use crate::errno::Errno;

#[derive(Debug, Default)]
pub(crate) struct RxQueue {
    buf: VecDeque<u8>,
    /// The peer closed its side: every later read returns what is queued, then `b""`.
    eof: bool,
    /// An error (ECONNRESET) that arrived while a read still had bytes to return: reported by
    /// the next read once the queue is empty, then the stream is at EOF.
    error: Option<Errno>,
}

impl RxQueue {
    /// How many bytes are queued.
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    /// A copy of the first `n` queued bytes (fewer if fewer are queued), left queued.
    pub(crate) fn peek(&self, n: usize) -> Vec<u8> {
        let n = n.min(self.len());
        let (a, b) = self.buf.as_slices();
        let mut out = Vec::with_capacity(n);
        out.extend_from_slice(&a[..n.min(a.len())]);
        out.extend_from_slice(&b[..n - n.min(a.len())]);
        out
    }

    /// The position of the first `byte` in queued bytes `from..to` (clamped to the queue).
    pub(crate) fn find(&self, byte: u8, from: usize, to: usize) -> Option<usize> {
        let to = to.min(self.len());
        if from >= to {
            return None;
        }
        let (a, b) = self.buf.as_slices();
        let in_a = a.get(from.min(a.len())..to.min(a.len())).unwrap_or(&[]);
        if let Some(i) = in_a.iter().position(|&c| c == byte) {
            return Some(from.min(a.len()) + i);
        }
        let start = from.saturating_sub(a.len());
        let end = to.saturating_sub(a.len());
        b[start..end]
            .iter()
            .position(|&c| c == byte)
            .map(|i| a.len() + start + i)
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

    /// Whether an error waits to be reported (after the queued bytes).
    pub(crate) fn has_error(&self) -> bool {
        self.error.is_some()
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

    /// Removes and returns the first `n` queued bytes, copying the smaller part: the `n`
    /// bytes, or what stays queued after them. Taking all but a few bytes of a chunk just
    /// received then moves its buffer, not its bytes (a queue whose ring has wrapped or
    /// moved is straightened first, by `Vec::from`).
    pub(crate) fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.len());
        if n == self.len() {
            return self.take_all();
        }
        if self.len() - n < n {
            let mut out = self.take_all();
            self.buf = VecDeque::from(out.split_off(n));
            return out;
        }
        let out = self.peek(n);
        self.buf.drain(..n);
        out
    }

    /// Removes and returns everything queued (without a copy when the ring has not wrapped).
    pub(crate) fn take_all(&mut self) -> Vec<u8> {
        Vec::from(std::mem::take(&mut self.buf))
    }

    /// Appends received bytes to the queue. An empty queue adopts the buffer as it is (no
    /// copy), so a read that takes everything hands the same allocation to the guest.
    pub(crate) fn append(&mut self, data: Vec<u8>) {
        if self.buf.is_empty() {
            self.buf = VecDeque::from(data);
        } else {
            self.buf.extend(data);
        }
    }

    /// The queued bytes, in order, in the ring's two parts.
    pub(crate) fn as_slices(&self) -> [&[u8]; 2] {
        let (a, b) = self.buf.as_slices();
        [a, b]
    }

    /// Takes `buf` as the queue: a buffer that starts with a copy of the queued bytes (see
    /// [`RxQueue::as_slices`]) and goes on with newly received ones, which so join the queue
    /// without a copy of their own.
    pub(crate) fn adopt(&mut self, buf: Vec<u8>) {
        debug_assert!(buf.len() >= self.len(), "a copy of the queue and more");
        self.buf = VecDeque::from(buf);
    }

    /// Puts `data` back in front of the queue.
    pub(crate) fn unread(&mut self, data: &[u8]) {
        self.buf.reserve(data.len());
        for &b in data.iter().rev() {
            self.buf.push_front(b);
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
        q.append(bytes.to_vec());
        q
    }

    #[test]
    fn a_chunk_received_into_an_empty_queue_reaches_the_guest_without_a_copy() {
        let chunk = b"one whole chunk".to_vec();
        let ptr = chunk.as_ptr();
        let mut q = RxQueue::default();
        q.append(chunk);
        let out = q.take_all();
        assert_eq!(
            (out.as_slice(), out.as_ptr()),
            (&b"one whole chunk"[..], ptr)
        );
    }

    #[test]
    fn take_returns_in_order_and_all_at_once() {
        let mut q = queue(b"hello world");
        assert_eq!(q.peek(5), b"hello");
        assert_eq!(q.take(5), b"hello");
        assert_eq!(q.len(), 6);
        assert_eq!(q.take(100), b" world", "take is clamped to what is queued");
        assert_eq!(q.len(), 0);
        let mut q = queue(b"abc");
        assert_eq!(q.take_all(), b"abc");
    }

    #[test]
    fn taking_most_of_a_chunk_moves_its_buffer_and_copies_the_rest() {
        for (len, n) in [(65_537, 65_536), (10, 6), (10, 5), (10, 4), (1, 0), (7, 7)] {
            let chunk: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let received = chunk.clone();
            let ptr = received.as_ptr();
            let mut q = RxQueue::default();
            q.append(received);
            let out = q.take(n);
            assert_eq!(out, chunk[..n], "take({n}) of {len}");
            assert_eq!(q.len(), len - n);
            assert_eq!(q.take_all(), chunk[n..], "the rest, in order");
            if n > len - n {
                assert_eq!(out.as_ptr(), ptr, "take({n}) of {len} moved the buffer");
            }
        }
        // After the ring has wrapped too.
        let mut q = queue(b"0123456789");
        q.take(8);
        q.append(b"abcdef".to_vec());
        q.unread(b"xy");
        assert_eq!(q.take(7), b"xy89abc");
        assert_eq!(q.take(100), b"def");
    }

    #[test]
    fn an_adopted_buffer_becomes_the_queue_as_it_is() {
        let mut q = RxQueue::default();
        q.append(b"0123456789".to_vec());
        q.take(8);
        q.unread(b"xy");
        let mut joined = Vec::with_capacity(100);
        for part in q.as_slices() {
            joined.extend_from_slice(part);
        }
        assert_eq!(joined, b"xy89");
        joined.extend_from_slice(b"new");
        let ptr = joined.as_ptr();
        q.adopt(joined);
        assert_eq!(q.len(), 7);
        let all = q.take_all();
        assert_eq!((all.as_slice(), all.as_ptr()), (&b"xy89new"[..], ptr));
    }

    #[test]
    fn unread_puts_bytes_back_in_front() {
        let mut q = queue(b"line1\nline2\n");
        let line = q.take(6);
        q.unread(&line[3..]);
        assert_eq!(q.peek(100), b"e1\nline2\n");
        q.unread(b"0123456789");
        assert_eq!(q.peek(100), b"0123456789e1\nline2\n");
        assert_eq!(q.find(b'\n', 0, 100), Some(12));
        assert_eq!(q.find(b'\n', 13, 100), Some(18));
        assert_eq!(q.find(b'\n', 13, 18), None);
        let mut empty = RxQueue::default();
        empty.unread(b"x");
        assert_eq!(empty.take_all(), b"x");
    }

    #[test]
    fn find_looks_across_the_wrap_of_the_ring() {
        let mut q = RxQueue::default();
        q.append(vec![b'a'; 8]);
        q.take(6);
        q.append(b"bc\nd".to_vec());
        q.unread(b"z");
        let all = q.peek(100);
        assert_eq!(all, b"zaabc\nd");
        for from in 0..all.len() {
            let want = all[from..]
                .iter()
                .position(|&c| c == b'\n')
                .map(|i| from + i);
            assert_eq!(q.find(b'\n', from, 100), want, "from {from}");
        }
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

    #[test]
    fn unread_costs_what_is_put_back_not_what_is_queued() {
        // 4000 one-byte unreads in front of 8 MiB: a copy of the queue each would move
        // 32 GiB; in proportion to what is put back, they take microseconds.
        let mut q = queue(&vec![1; 8 << 20]);
        let started = std::time::Instant::now();
        for _ in 0..4000 {
            q.unread(b"u");
        }
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(1), "{took:?}");
        assert_eq!(q.len(), (8 << 20) + 4000);
        assert_eq!(q.take(4001).last(), Some(&1));
    }
}
