//! Byte work for the read-ahead's line reads, the guest's hottest loop: finding a line's end
//! and copying the line out.
//!
//! On wasm32 both use wasm SIMD, 16 bytes a step, whatever the crate was built with: the entry
//! points carry `#[target_feature(enable = "simd128")]` (safe to call on wasm, which has no
//! optional features at run time: an engine without SIMD rejects the whole module) and the
//! helpers are inlined into them, since in wasmtime a call costs about as much as scanning a
//! 64-byte line. (Measured in wasmtime on 64-byte lines: 16-byte steps 19 ns a line found and
//! appended, `u64` steps 27 ns, 64-byte steps slower still.) A copy of a line goes through
//! v128 moves, not the `memory.copy` that a slice copy of unknown length becomes: wasmtime
//! runs that instruction as a call out of the sandbox. [`append_line`] finds a line's end,
//! checks that it is ASCII and appends it in one pass, so `read_line` needs no second pass to
//! check UTF-8 in the common case.
//!
//! Elsewhere (the crate's native unit tests) the scan goes eight bytes at a time in a `u64`,
//! and copies are slice copies.

/// The position of the first `byte` in `s`.
#[inline]
pub(crate) fn find_byte(byte: u8, s: &[u8]) -> Option<usize> {
    #[cfg(target_arch = "wasm32")]
    return simd::find_byte(byte, s);
    #[cfg(not(target_arch = "wasm32"))]
    word::scan(byte, s).map(|(at, _)| at)
}

/// The position of the first `\n` in `s`, and whether every byte before it is ASCII.
#[cfg(test)]
pub(crate) fn find_line(s: &[u8]) -> Option<(usize, bool)> {
    word::scan(b'\n', s)
}

/// If `s` holds a whole line (through its `\n`): its length, and whether it was appended to
/// `buf`, which it is if it is ASCII. A line that is not ASCII is left to the caller (it may
/// still be UTF-8).
#[inline]
pub(crate) fn append_line(s: &[u8], buf: &mut String) -> Option<(usize, bool)> {
    #[cfg(target_arch = "wasm32")]
    return simd::append_line(s, buf);
    #[cfg(not(target_arch = "wasm32"))]
    {
        let (newline, ascii) = word::scan(b'\n', s)?;
        let n = newline + 1;
        if ascii {
            buf.extend(s[..n].iter().map(|&b| char::from(b)));
        }
        Some((n, ascii))
    }
}

/// `s` through its first `BYTE`, in a new `Vec` of exactly that length (`None`: no `BYTE`):
/// found and copied in one call. (A constant byte is a constant vector in the compiled loop.)
#[inline]
pub(crate) fn copy_through<const BYTE: u8>(s: &[u8]) -> Option<Vec<u8>> {
    #[cfg(target_arch = "wasm32")]
    // SAFETY: the packed line comes straight from `simd::copy_through`.
    #[allow(unsafe_code)]
    return unsafe { simd::unpack(simd::copy_through::<BYTE>(s)) };
    #[cfg(not(target_arch = "wasm32"))]
    word::scan(BYTE, s).map(|(at, _)| s[..=at].to_vec())
}

/// `s` in a new `Vec` of exactly its length.
pub(crate) fn to_vec(s: &[u8]) -> Vec<u8> {
    #[cfg(target_arch = "wasm32")]
    return simd::to_vec(s);
    #[cfg(not(target_arch = "wasm32"))]
    s.to_vec()
}

#[cfg(target_arch = "wasm32")]
mod simd {
    use core::arch::wasm32::{
        u8x16_bitmask, u8x16_eq, u8x16_splat, v128, v128_load, v128_or, v128_store,
    };

    /// Copies of 16 up to this many bytes go through v128 moves; a longer copy pays
    /// `memory.copy`'s call once for many bytes.
    const SHORT_COPY: usize = 512;

    #[target_feature(enable = "simd128")]
    pub(super) fn find_byte(byte: u8, s: &[u8]) -> Option<usize> {
        find(byte, s)
    }

    /// `s` through its first `BYTE` in a new `Vec`, packed (see [`unpack`]); 0 if there is
    /// no `BYTE`.
    ///
    /// The line comes back in one register: returned as an `Option<Vec<u8>>` it went through
    /// memory as three 4-byte stores that the caller read back as an 8-byte load, which the
    /// CPU cannot forward from the stores (a stall a line, about a tenth of `readline`'s time).
    #[target_feature(enable = "simd128")]
    pub(super) fn copy_through<const BYTE: u8>(s: &[u8]) -> u64 {
        let Some(at) = find(BYTE, s) else {
            return 0;
        };
        let n = at + 1;
        // `with_capacity` gives exactly `n` (a documented guarantee), which `unpack` relies on.
        let mut v = Vec::with_capacity(n);
        extend(&mut v, &s[..n]);
        let v = core::mem::ManuallyDrop::new(v);
        (v.as_ptr().expose_provenance() as u64) << 32 | n as u64
    }

    /// The `Vec` that [`copy_through`] packed: its pointer in the high half, its length (which
    /// is also its capacity, and never 0) in the low half; 0 is `None`.
    ///
    /// # Safety
    ///
    /// `packed` is 0 or a value [`copy_through`] returned, unpacked at most once.
    #[inline(always)]
    #[allow(unsafe_code)]
    pub(super) unsafe fn unpack(packed: u64) -> Option<Vec<u8>> {
        if packed == 0 {
            return None;
        }
        // Both halves are 32-bit on wasm32: the casts are exact.
        let ptr = core::ptr::with_exposed_provenance_mut::<u8>((packed >> 32) as usize);
        let n = (packed & u64::from(u32::MAX)) as usize;
        // SAFETY: `copy_through` allocated `ptr` for exactly `n` bytes (length and capacity)
        // with the global allocator, filled them and gave up ownership; the caller unpacks it
        // once.
        #[allow(unsafe_code)]
        Some(unsafe { Vec::from_raw_parts(ptr, n, n) })
    }

    #[target_feature(enable = "simd128")]
    pub(super) fn append_line(s: &[u8], buf: &mut String) -> Option<(usize, bool)> {
        let (newline, ascii) = scan(b'\n', s)?;
        let n = newline + 1;
        if ascii {
            // SAFETY: the bytes appended are ASCII (checked by the scan), so `buf` stays
            // UTF-8.
            #[allow(unsafe_code)]
            extend(unsafe { buf.as_mut_vec() }, &s[..n]);
        }
        Some((n, ascii))
    }

    #[target_feature(enable = "simd128")]
    pub(super) fn to_vec(s: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(s.len());
        extend(&mut v, s);
        v
    }

    /// The position of the first `byte` in `s`.
    #[inline(always)]
    fn find(byte: u8, s: &[u8]) -> Option<usize> {
        scan_checking::<false>(byte, s).map(|(at, _)| at)
    }

    /// The position of the first `byte` in `s`, and whether every byte before it is ASCII.
    #[inline(always)]
    fn scan(byte: u8, s: &[u8]) -> Option<(usize, bool)> {
        scan_checking::<true>(byte, s)
    }

    /// The position of the first `byte` in `s`, and, when `ASCII` asks for the check (else
    /// `true`, and the check costs nothing), whether every byte before it is ASCII.
    #[inline(always)]
    fn scan_checking<const ASCII: bool>(byte: u8, s: &[u8]) -> Option<(usize, bool)> {
        let needle = u8x16_splat(byte);
        let mut high = u8x16_splat(0); // every byte passed so far, or-ed
        let mut at = 0;
        let mut chunks = s.chunks_exact(16);
        for chunk in &mut chunks {
            // SAFETY: `chunk` is 16 readable bytes; `v128_load` needs no alignment.
            #[allow(unsafe_code)]
            let v = unsafe { v128_load(chunk.as_ptr().cast::<v128>()) };
            let found = u8x16_bitmask(u8x16_eq(v, needle));
            if found != 0 {
                let i = found.trailing_zeros();
                if !ASCII {
                    return Some((at + i as usize, true));
                }
                // The high bits of the bytes before the match (i is at most 15).
                let before = u32::from(u8x16_bitmask(v)) & ((1u32 << i) - 1);
                return Some((at + i as usize, u8x16_bitmask(high) == 0 && before == 0));
            }
            if ASCII {
                high = v128_or(high, v);
            }
            at += 16;
        }
        let tail = chunks.remainder();
        let i = tail.iter().position(|&b| b == byte)?;
        let ascii = !ASCII || u8x16_bitmask(high) == 0 && tail[..i].is_ascii();
        Some((at + i, ascii))
    }

    /// `dst.extend_from_slice(src)`, with v128 moves for a short `src`.
    #[inline(always)]
    fn extend(dst: &mut Vec<u8>, src: &[u8]) {
        let n = src.len();
        if !(16..=SHORT_COPY).contains(&n) {
            return dst.extend_from_slice(src);
        }
        dst.reserve(n);
        let len = dst.len();
        let from = src.as_ptr();
        // SAFETY: `reserve` made room for `n` bytes after `len`. Every load reads within
        // `src` and every store writes within `dst[len..len + n]` (the last moves overlap the
        // ones before them rather than passing the end), and all `n` bytes are written before
        // `set_len`.
        #[allow(unsafe_code)]
        unsafe {
            let to = dst.as_mut_ptr().add(len);
            let step = |at: usize| v128_store(to.add(at).cast(), v128_load(from.add(at).cast()));
            if n >= 32 {
                // Two moves a turn: a loop of single moves is what LLVM recognizes as a copy
                // and turns back into `memory.copy`.
                let mut i = 0;
                while i + 32 < n {
                    step(i);
                    step(i + 16);
                    i += 32;
                }
                step(n - 32);
            } else {
                step(0);
            }
            step(n - 16);
            dst.set_len(len + n);
        }
    }
}

/// The portable scan (the native build's; also the reference the SIMD one is checked against).
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
mod word {
    /// The position of the first `byte` in `s`, and whether every byte before it is ASCII.
    pub(super) fn scan(byte: u8, s: &[u8]) -> Option<(usize, bool)> {
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
}

/// The scans' and copies' own checks, run natively by the unit tests and in wasm by the
/// `scan_check` test program.
#[doc(hidden)]
pub fn self_check() {
    // Every length and position around the 8- and 16-byte steps, with bytes that differ from the
    // needle only in the high bit or by one (the word trick's near misses).
    for len in 0..150 {
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
            assert_eq!(
                copy_through::<b'\n'>(&s),
                want.map(|i| s[..=i].to_vec()),
                "copy, len {len}, at {at}"
            );
        }
    }
    assert_eq!(find_byte(0xff, b"abcdefgh\xffij"), Some(8));
    assert_eq!(find_byte(0, b"abcdefghij\0"), Some(10));
    assert_eq!(find_byte(b'\n', b"abc"), None);
    assert_eq!(find_byte(b'\n', b""), None);

    // A line is appended exactly when it is ASCII, wherever the newline and the one
    // non-ASCII byte are, after whatever the buffer held.
    for len in 1..150 {
        for nl in 0..len {
            for hi in (0..len).step_by(3) {
                let mut s = vec![b'x'; len];
                for (i, b) in s.iter_mut().enumerate() {
                    *b = b'a' + (i % 26) as u8;
                }
                s[hi] = 0xc3;
                s[nl] = b'\n';
                let ascii = hi >= nl; // at the newline itself it was overwritten
                let mut buf = String::from("kept:");
                let got = append_line(&s, &mut buf);
                assert_eq!(got, Some((nl + 1, ascii)), "len {len} nl {nl} hi {hi}");
                let want = if ascii {
                    format!("kept:{}", String::from_utf8_lossy(&s[..=nl]))
                } else {
                    "kept:".to_string()
                };
                assert_eq!(buf, want, "len {len} nl {nl} hi {hi}");
            }
        }
    }
    assert_eq!(append_line(b"abc", &mut String::new()), None);
    assert_eq!(append_line(b"", &mut String::new()), None);

    // Copies of every length around the move sizes, long ones too.
    for len in (0..100).chain([511, 512, 513, 4096]) {
        let s: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let v = to_vec(&s);
        assert_eq!(v, s, "len {len}");
        assert_eq!(v.capacity(), len, "len {len}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn scans_and_copies() {
        super::self_check();
    }

    #[test]
    fn find_line_tells_ascii_before_the_newline_only() {
        use super::find_line;
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
