//! Byte scans for the read-ahead's line reads, the guest's hottest loop.
//!
//! On wasm32 `memchr`'s portable code works on `usize` (four bytes) while wasm's 64-bit
//! integers are native, so these scans go eight bytes at a time. [`find_line`] also tells
//! whether the line is ASCII in the same pass, so `read_line` needs no second pass to check
//! UTF-8 in the common case. (A wasm SIMD version, 16 bytes a step, measured within noise of
//! this one on 64-byte lines.)

/// The position of the first `byte` in `s`.
pub(crate) fn find_byte(byte: u8, s: &[u8]) -> Option<usize> {
    scan(byte, s).map(|(at, _)| at)
}

/// The position of the first `\n` in `s`, and whether every byte before it is ASCII.
pub(crate) fn find_line(s: &[u8]) -> Option<(usize, bool)> {
    scan(b'\n', s)
}

fn scan(byte: u8, s: &[u8]) -> Option<(usize, bool)> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let splat = LO * u64::from(byte);
    let mut high = 0u64; // the high bits of every byte passed so far
    let mut chunks = s.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        let w = word ^ splat;
        // Has a zero byte: the lowest flagged byte is exact (false flags only follow it).
        let zero = w.wrapping_sub(LO) & !w & HI;
        if zero != 0 {
            let i = zero.trailing_zeros() / 8;
            // The bytes before the match (a shift by 64 would overflow: i is at most 7).
            let before = word & ((1u64 << (i * 8)) - 1);
            return Some((at + i as usize, (high | before) & HI == 0));
        }
        high |= word;
        at += 8;
    }
    let tail = chunks.remainder();
    let i = tail.iter().position(|&b| b == byte)?;
    let ascii = high & HI == 0 && tail[..i].is_ascii();
    Some((at + i, ascii))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_byte_finds_the_first() {
        // Every length and position around the 8-byte steps, with bytes that differ from
        // the needle only in the high bit or by one (the word trick's near misses).
        for len in 0..40 {
            for at in 0..=len {
                let mut s: Vec<u8> = (0..len).map(|i| [0x8a, 0x0b, 0x09, 0x00][i % 4]).collect();
                if at < len {
                    s[at] = b'\n';
                    if at + 3 < len {
                        s[at + 3] = b'\n';
                    }
                }
                let want = s.iter().position(|&b| b == b'\n');
                assert_eq!(find_byte(b'\n', &s), want, "len {len}, at {at}");
            }
        }
        assert_eq!(find_byte(0xff, b"abcdefgh\xffij"), Some(8));
        assert_eq!(find_byte(0, b"abcdefghij\0"), Some(10));
    }

    #[test]
    fn find_line_tells_ascii_before_the_newline_only() {
        for len in 1..48 {
            for nl in 0..len {
                for hi in 0..len {
                    let mut s = vec![b'x'; len];
                    s[hi] = 0xc3;
                    s[nl] = b'\n';
                    let got = find_line(&s);
                    let want_ascii = hi >= nl; // at the newline itself it was overwritten
                    assert_eq!(got, Some((nl, want_ascii)), "len {len} nl {nl} hi {hi}");
                }
            }
        }
        assert_eq!(find_line(b"abc"), None);
        assert_eq!(find_line(b""), None);
    }
}
