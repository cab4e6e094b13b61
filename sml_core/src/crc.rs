//! CRC-16 with the reflected polynomial 0x8408 (normal form 0x1021), the only
//! polynomial SML uses. X-25 and KERMIT differ only in init/xorout and in the
//! byte order on the wire, so both share one slicing-by-16 table set.
//!
//! Slicing-by-16 handles sixteen input bytes per table round; a byte-at-a-time
//! table loop tops out near 0.5 GB/s, this runs at several GB/s.

const POLY: u16 = 0x8408;

const fn make_tables() -> [[u16; 256]; 16] {
    let mut t = [[0u16; 256]; 16];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u16;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut n = 1;
    while n < 16 {
        let mut i = 0;
        while i < 256 {
            let prev = t[n - 1][i];
            t[n][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            i += 1;
        }
        n += 1;
    }
    t
}

static TABLES: [[u16; 256]; 16] = make_tables();

/// Advances a raw (reflected) CRC register over `data`: carry-less multiply
/// folding where the CPU has it (x86-64 PCLMULQDQ), the sliced table elsewhere.
#[must_use]
pub fn update(crc: u16, data: &[u8]) -> u16 {
    #[cfg(target_arch = "x86_64")]
    if data.len() >= clmul::MIN_LEN && clmul::available() {
        return clmul::update(crc, data);
    }
    update_table(crc, data)
}

/// One slicing step over `N` bytes (N = 16, 8 or 4): the register's two bytes
/// and the data bytes each look up the table that advances them to the end
/// of the block, so the lookups are independent of each other.
#[inline]
fn slice<const N: usize>(crc: u16, c: &[u8; N]) -> u16 {
    let t = &TABLES;
    let lo = crc ^ u16::from_le_bytes([c[0], c[1]]);
    let mut r = t[N - 1][(lo & 0xff) as usize] ^ t[N - 2][(lo >> 8) as usize];
    for i in 2..N {
        r ^= t[N - 1 - i][c[i] as usize];
    }
    r
}

/// Table-driven CRC (slicing-by-16), the portable path.
#[must_use]
pub fn update_table(mut crc: u16, data: &[u8]) -> u16 {
    let mut rest = data;
    while let Some((block, tail)) = rest.split_first_chunk::<16>() {
        crc = slice(crc, block);
        rest = tail;
    }
    // Short inputs and the tails left by the folding path: slice by 8 and 4
    // too, so at most three bytes go through the dependent byte loop.
    if let Some((block, tail)) = rest.split_first_chunk::<8>() {
        crc = slice(crc, block);
        rest = tail;
    }
    if let Some((block, tail)) = rest.split_first_chunk::<4>() {
        crc = slice(crc, block);
        rest = tail;
    }
    for &b in rest {
        crc = (crc >> 8) ^ TABLES[0][((crc ^ b as u16) & 0xff) as usize];
    }
    crc
}

/// Folding constants for a reflected CRC-32 computation with the polynomial
/// Q(x) = P(x)·x^16, where P is the SML polynomial 0x1021. Because Q has the
/// factor x^16, the 32-bit reflected register of that computation always
/// equals the 16-bit SML register in its low half, so the well-known CRC-32
/// folding scheme (Intel, "Fast CRC computation using PCLMULQDQ") applies
/// unchanged. The constants are derived here rather than pasted so that the
/// derivation is checked by a test against the published CRC-32 values.
#[allow(dead_code)]
mod consts {
    /// x^n mod q for a degree-32 polynomial `q` given by its low 32 bits.
    pub const fn xpow_mod(n: u32, q: u32) -> u32 {
        let mut r: u32 = 1;
        let mut i = 0;
        while i < n {
            let top = r & 0x8000_0000 != 0;
            r <<= 1;
            if top {
                r ^= q;
            }
            i += 1;
        }
        r
    }

    /// floor(x^64 / q) as a 33-bit polynomial.
    pub const fn x64_div(q: u32) -> u64 {
        let full: u128 = (1u128 << 32) | q as u128;
        let mut rem: u128 = 1u128 << 64;
        let mut quot: u64 = 0;
        let mut bit = 64i32;
        while bit >= 32 {
            if rem & (1u128 << bit) != 0 {
                rem ^= full << (bit - 32);
                quot |= 1u64 << (bit - 32);
            }
            bit -= 1;
        }
        quot
    }

    pub const fn reflect32(v: u32) -> u32 {
        v.reverse_bits()
    }

    /// The folding multiplier for x^n: reflected and shifted left by one.
    pub const fn k(n: u32, q: u32) -> u64 {
        (reflect32(xpow_mod(n, q)) as u64) << 1
    }

    pub const fn p_x(q: u32) -> u64 {
        ((reflect32(q) as u64) << 1) | 1
    }

    pub const fn mu(q: u32) -> u64 {
        x64_div(q).reverse_bits() >> 31
    }

    /// Q = 0x1021 · x^16.
    pub const Q: u32 = 0x1021_0000;
    pub const K1: u64 = k(4 * 128 + 32, Q);
    pub const K2: u64 = k(4 * 128 - 32, Q);
    pub const K3: u64 = k(128 + 32, Q);
    pub const K4: u64 = k(128 - 32, Q);
    pub const K5: u64 = k(64, Q);
    pub const PX: u64 = p_x(Q);
    pub const MU: u64 = mu(Q);
}

#[cfg(target_arch = "x86_64")]
mod clmul {
    use std::arch::x86_64::{
        __m128i, _mm_and_si128, _mm_clmulepi64_si128, _mm_cvtsi32_si128, _mm_extract_epi32, _mm_set_epi32,
        _mm_set_epi64x, _mm_srli_si128, _mm_xor_si128,
    };

    use super::consts::{K1, K2, K3, K4, K5, MU, PX};

    /// Below this the setup costs more than the table loop.
    pub const MIN_LEN: usize = 32;

    pub fn available() -> bool {
        std::arch::is_x86_feature_detected!("pclmulqdq") && std::arch::is_x86_feature_detected!("sse4.1")
    }

    pub fn update(crc: u16, data: &[u8]) -> u16 {
        debug_assert!(data.len() >= MIN_LEN && available());
        // SAFETY: `available()` checked at run time that the CPU has the
        // features `fold` is compiled for. `fold` itself reads memory only
        // through safe slice indexing.
        #[allow(unsafe_code)]
        let r = unsafe { fold(u32::from(crc), data) };
        r
    }

    #[target_feature(enable = "pclmulqdq,sse2,sse4.1")]
    fn load(chunk: &[u8]) -> __m128i {
        let lo = u64::from_le_bytes([
            chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7],
        ]);
        let hi = u64::from_le_bytes([
            chunk[8], chunk[9], chunk[10], chunk[11], chunk[12], chunk[13], chunk[14], chunk[15],
        ]);
        _mm_set_epi64x(hi as i64, lo as i64)
    }

    #[target_feature(enable = "pclmulqdq,sse2,sse4.1")]
    fn reduce128(a: __m128i, b: __m128i, keys: __m128i) -> __m128i {
        let t1 = _mm_clmulepi64_si128(a, keys, 0x00);
        let t2 = _mm_clmulepi64_si128(a, keys, 0x11);
        _mm_xor_si128(_mm_xor_si128(b, t1), t2)
    }

    #[target_feature(enable = "pclmulqdq,sse2,sse4.1")]
    fn fold(crc: u32, data: &[u8]) -> u16 {
        let mut chunks = data.chunks_exact(16);
        let mut next = || load(chunks.next().unwrap_or(&[0; 16]));
        let blocks = data.len() / 16;
        let k3k4 = _mm_set_epi64x(K4 as i64, K3 as i64);
        let crc = _mm_cvtsi32_si128(crc as i32);
        let mut x;
        let mut done;
        if blocks >= 4 {
            // Four independent accumulators keep the multiplier busy on long input.
            let mut x3 = _mm_xor_si128(next(), crc);
            let mut x2 = next();
            let mut x1 = next();
            let mut x0 = next();
            let k1k2 = _mm_set_epi64x(K2 as i64, K1 as i64);
            done = 4;
            while blocks - done >= 4 {
                x3 = reduce128(x3, next(), k1k2);
                x2 = reduce128(x2, next(), k1k2);
                x1 = reduce128(x1, next(), k1k2);
                x0 = reduce128(x0, next(), k1k2);
                done += 4;
            }
            x = reduce128(x3, x2, k3k4);
            x = reduce128(x, x1, k3k4);
            x = reduce128(x, x0, k3k4);
        } else {
            x = _mm_xor_si128(next(), crc);
            done = 1;
        }
        while done < blocks {
            x = reduce128(x, next(), k3k4);
            done += 1;
        }
        // 128 -> 64 bits.
        let x = _mm_xor_si128(_mm_clmulepi64_si128(x, k3k4, 0x10), _mm_srli_si128(x, 8));
        let low32 = _mm_set_epi32(0, 0, 0, !0);
        let x = _mm_xor_si128(
            _mm_clmulepi64_si128(_mm_and_si128(x, low32), _mm_set_epi64x(0, K5 as i64), 0x00),
            _mm_srli_si128(x, 4),
        );
        // Barrett reduction to 32 bits.
        let pu = _mm_set_epi64x(MU as i64, PX as i64);
        let t1 = _mm_clmulepi64_si128(_mm_and_si128(x, low32), pu, 0x10);
        let t2 = _mm_clmulepi64_si128(_mm_and_si128(t1, low32), pu, 0x00);
        let reg = _mm_extract_epi32(_mm_xor_si128(x, t2), 1) as u32;
        // The register of the x^16-scaled computation is the SML register.
        super::update_table(reg as u16, &data[blocks * 16..])
    }
}

/// Bit-by-bit reference used by tests and fuzzing to check the sliced table.
#[must_use]
pub fn update_bitwise(mut crc: u16, data: &[u8]) -> u16 {
    for &b in data {
        crc ^= b as u16;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ POLY } else { crc >> 1 };
        }
    }
    crc
}

/// CRC-16/X-25 (IBM-SDLC): init 0xFFFF, xorout 0xFFFF. Sent least significant byte first.
#[must_use]
pub fn x25(data: &[u8]) -> u16 {
    update(0xffff, data) ^ 0xffff
}

/// CRC-16/KERMIT: init 0, no xorout. Holley DTZ541 sends it most significant byte first.
#[must_use]
pub fn kermit(data: &[u8]) -> u16 {
    update(0, data)
}

/// Which CRC a frame was checked with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CrcKind {
    X25,
    Kermit,
}

impl CrcKind {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            CrcKind::X25 => "x25",
            CrcKind::Kermit => "kermit",
        }
    }

    #[must_use]
    pub fn compute(self, data: &[u8]) -> u16 {
        match self {
            CrcKind::X25 => x25(data),
            CrcKind::Kermit => kermit(data),
        }
    }

    /// The two CRC bytes as they appear on the wire (transport trailer).
    #[must_use]
    pub fn wire_bytes(self, crc: u16) -> [u8; 2] {
        match self {
            CrcKind::X25 => crc.to_le_bytes(),
            CrcKind::Kermit => crc.to_be_bytes(),
        }
    }

    /// Reads the transport trailer's two bytes back into a CRC value.
    #[must_use]
    pub fn from_wire(self, b: [u8; 2]) -> u16 {
        match self {
            CrcKind::X25 => u16::from_le_bytes(b),
            CrcKind::Kermit => u16::from_be_bytes(b),
        }
    }

    /// The integer the SML_Message crc16 field carries: the field is an
    /// Unsigned16 written big-endian, so X-25 (LSB first on the wire) appears
    /// byte-swapped while KERMIT appears as-is.
    #[must_use]
    pub fn message_field(self, crc: u16) -> u16 {
        match self {
            CrcKind::X25 => crc.swap_bytes(),
            CrcKind::Kermit => crc,
        }
    }
}

/// What the caller accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum CrcMode {
    #[default]
    Auto,
    X25,
    Kermit,
}

impl CrcMode {
    /// Parses the Python-facing names `"auto" | "x25" | "kermit"`.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(CrcMode::Auto),
            "x25" => Some(CrcMode::X25),
            "kermit" => Some(CrcMode::Kermit),
            _ => None,
        }
    }

    /// The kinds to try, in order. `preferred` is the kind the previous good
    /// frame used, so a KERMIT meter does not pay for an X-25 attempt each time.
    #[must_use]
    pub fn candidates(self, preferred: CrcKind) -> &'static [CrcKind] {
        match (self, preferred) {
            (CrcMode::X25, _) => &[CrcKind::X25],
            (CrcMode::Kermit, _) => &[CrcKind::Kermit],
            (CrcMode::Auto, CrcKind::X25) => &[CrcKind::X25, CrcKind::Kermit],
            (CrcMode::Auto, CrcKind::Kermit) => &[CrcKind::Kermit, CrcKind::X25],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_check_values() {
        assert_eq!(x25(b"123456789"), 0x906e);
        assert_eq!(kermit(b"123456789"), 0x2189);
    }

    #[test]
    fn sliced_matches_bitwise_for_every_length() {
        let data: Vec<u8> = (0..300u32).map(|i| (i.wrapping_mul(37) ^ (i >> 3)) as u8).collect();
        for n in 0..data.len() {
            for init in [0u16, 0xffff, 0x1234] {
                assert_eq!(update(init, &data[..n]), update_bitwise(init, &data[..n]), "n={n}");
            }
        }
    }

    #[test]
    fn folding_constants_reproduce_the_published_crc32_ones() {
        // The same derivation for CRC-32 (0x04C11DB7) must give the constants
        // of the Intel paper / every PCLMUL CRC-32 implementation.
        let p = 0x04c1_1db7;
        assert_eq!(consts::k(4 * 128 + 32, p), 0x1_5444_2bd4);
        assert_eq!(consts::k(4 * 128 - 32, p), 0x1_c6e4_1596);
        assert_eq!(consts::k(128 + 32, p), 0x1_7519_97d0);
        assert_eq!(consts::k(128 - 32, p), 0x0_ccaa_009e);
        assert_eq!(consts::k(64, p), 0x1_63cd_6124);
        assert_eq!(consts::p_x(p), 0x1_db71_0641);
        assert_eq!(consts::mu(p), 0x1_f701_1641);
    }

    #[test]
    fn every_path_matches_bitwise_on_long_inputs() {
        let mut state = 0x1234_5678_u32;
        let data: Vec<u8> = (0..5000)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            })
            .collect();
        for n in (0..data.len()).step_by(7).chain([128, 129, 191, 192, 255, 256, 4999]) {
            for init in [0u16, 0xffff, 0xbeef] {
                let want = update_bitwise(init, &data[..n]);
                assert_eq!(update(init, &data[..n]), want, "n={n}");
                assert_eq!(update_table(init, &data[..n]), want, "n={n}");
                #[cfg(target_arch = "x86_64")]
                if n >= clmul::MIN_LEN && clmul::available() {
                    assert_eq!(clmul::update(init, &data[..n]), want, "clmul n={n}");
                }
            }
        }
    }

    #[test]
    fn sml_empty_file_vector() {
        let f = [0x1b, 0x1b, 0x1b, 0x1b, 1, 1, 1, 1, 0x1b, 0x1b, 0x1b, 0x1b, 0x1a, 0];
        assert_eq!(x25(&f), 0xe5c6);
        assert_eq!(CrcKind::X25.wire_bytes(0xe5c6), [0xc6, 0xe5]);
    }
}
