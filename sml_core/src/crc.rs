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
/// folding where the CPU has it (x86-64 PCLMULQDQ, aarch64 PMULL), the sliced
/// table elsewhere.
#[must_use]
pub fn update(crc: u16, data: &[u8]) -> u16 {
    #[cfg(target_arch = "x86_64")]
    if data.len() >= MIN_FOLD_LEN && clmul::available() {
        return clmul::update(crc, data);
    }
    #[cfg(target_arch = "aarch64")]
    if data.len() >= MIN_FOLD_LEN && pmull::available() {
        return pmull::update(crc, data);
    }
    update_table(crc, data)
}

/// Below this the folding setup costs more than the table loop.
pub const MIN_FOLD_LEN: usize = 32;

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
/// unchanged to the folding; the last 128 bits are finished by the table
/// (see `fold_algorithm`) rather than by its Barrett reduction. The constants are derived here rather than pasted so that the
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

    pub const fn reflect32(v: u32) -> u32 {
        v.reverse_bits()
    }

    /// The folding multiplier for x^n: reflected and shifted left by one.
    pub const fn k(n: u32, q: u32) -> u64 {
        (reflect32(xpow_mod(n, q)) as u64) << 1
    }

    /// Q = 0x1021 · x^16.
    pub const Q: u32 = 0x1021_0000;
    pub const K1: u64 = k(4 * 128 + 32, Q);
    pub const K2: u64 = k(4 * 128 - 32, Q);
    pub const K3: u64 = k(128 + 32, Q);
    pub const K4: u64 = k(128 - 32, Q);
}

/// The folding algorithm, written once over a handful of 128-bit primitives
/// (`V`, `load`, `pair`, `lo`, `hi`, `xor`, `mul_ll`, `mul_hh`)
/// that each backend module defines: x86-64 PCLMULQDQ, aarch64 PMULL and a
/// portable software carry-less multiply. The software instantiation runs in
/// the tests on every machine, so the steps the aarch64 build takes are
/// checked here even where that target cannot be compiled.
///
/// `mul_ll(a, b)` multiplies the low 64-bit halves, `mul_hh` the high ones.
macro_rules! fold_algorithm {
    ($(#[$attr:meta])*) => {
        $(#[$attr])*
        pub(super) fn fold(crc: u16, data: &[u8]) -> u16 {
            use super::consts::{K1, K2, K3, K4};
            let blocks = data.len() / 16;
            debug_assert!(blocks >= 1);
            let k3k4 = pair(K3, K4);
            let mut x;
            let mut done;
            if blocks >= 4 {
                // Four independent accumulators keep the multiplier busy on long input.
                let mut x3 = xor(load(data, 0), pair(u64::from(crc), 0));
                let mut x2 = load(data, 1);
                let mut x1 = load(data, 2);
                let mut x0 = load(data, 3);
                let k1k2 = pair(K1, K2);
                done = 4;
                while blocks - done >= 4 {
                    x3 = xor(xor(load(data, done), mul_ll(x3, k1k2)), mul_hh(x3, k1k2));
                    x2 = xor(xor(load(data, done + 1), mul_ll(x2, k1k2)), mul_hh(x2, k1k2));
                    x1 = xor(xor(load(data, done + 2), mul_ll(x1, k1k2)), mul_hh(x1, k1k2));
                    x0 = xor(xor(load(data, done + 3), mul_ll(x0, k1k2)), mul_hh(x0, k1k2));
                    done += 4;
                }
                x = xor(xor(x2, mul_ll(x3, k3k4)), mul_hh(x3, k3k4));
                x = xor(xor(x1, mul_ll(x, k3k4)), mul_hh(x, k3k4));
                x = xor(xor(x0, mul_ll(x, k3k4)), mul_hh(x, k3k4));
            } else {
                x = xor(load(data, 0), pair(u64::from(crc), 0));
                done = 1;
            }
            while done < blocks {
                x = xor(xor(load(data, done), mul_ll(x, k3k4)), mul_hh(x, k3k4));
                done += 1;
            }
            // The folded 128 bits are congruent to everything before them
            // modulo Q, hence modulo P (P divides Q): the SML register is
            // the table CRC of those 16 bytes from a zero register. That is
            // sixteen independent table lookups, where the usual 128 -> 32
            // bit reduction plus Barrett step is a chain of five dependent
            // carry-less multiplies; for the short SML messages that chain
            // was most of the CRC time.
            let folded = (u128::from(hi(x)) << 64 | u128::from(lo(x))).to_le_bytes();
            let reg = super::slice::<16>(0, &folded);
            super::update_table(reg, &data[blocks * 16..])
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod clmul {
    use std::arch::x86_64::{
        __m128i, _mm_clmulepi64_si128, _mm_cvtsi128_si64, _mm_extract_epi64, _mm_set_epi64x, _mm_xor_si128,
    };

    type V = __m128i;

    pub fn available() -> bool {
        std::arch::is_x86_feature_detected!("pclmulqdq") && std::arch::is_x86_feature_detected!("sse4.1")
    }

    pub fn update(crc: u16, data: &[u8]) -> u16 {
        debug_assert!(data.len() >= super::MIN_FOLD_LEN && available());
        // SAFETY: `available()` checked at run time that the CPU has the
        // features `fold` is compiled for. `fold` itself reads memory only
        // through safe slice indexing.
        #[allow(unsafe_code)]
        let r = unsafe { fold(crc, data) };
        r
    }

    #[inline]
    #[target_feature(enable = "pclmulqdq,sse2,sse4.1")]
    fn load(data: &[u8], block: usize) -> V {
        let b: &[u8; 16] = data[block * 16..block * 16 + 16].try_into().expect("16 bytes");
        let v = u128::from_le_bytes(*b);
        _mm_set_epi64x((v >> 64) as i64, v as i64)
    }

    #[inline]
    #[target_feature(enable = "pclmulqdq,sse2,sse4.1")]
    fn pair(lo: u64, hi: u64) -> V {
        _mm_set_epi64x(hi as i64, lo as i64)
    }

    #[inline]
    #[target_feature(enable = "pclmulqdq,sse2,sse4.1")]
    fn lo(v: V) -> u64 {
        _mm_cvtsi128_si64(v) as u64
    }

    #[inline]
    #[target_feature(enable = "pclmulqdq,sse2,sse4.1")]
    fn hi(v: V) -> u64 {
        _mm_extract_epi64(v, 1) as u64
    }

    #[inline]
    #[target_feature(enable = "pclmulqdq,sse2,sse4.1")]
    fn xor(a: V, b: V) -> V {
        _mm_xor_si128(a, b)
    }

    #[inline]
    #[target_feature(enable = "pclmulqdq,sse2,sse4.1")]
    fn mul_ll(a: V, b: V) -> V {
        _mm_clmulepi64_si128(a, b, 0x00)
    }

    #[inline]
    #[target_feature(enable = "pclmulqdq,sse2,sse4.1")]
    fn mul_hh(a: V, b: V) -> V {
        _mm_clmulepi64_si128(a, b, 0x11)
    }

    fold_algorithm!(#[target_feature(enable = "pclmulqdq,sse2,sse4.1")]);
}

/// aarch64 (Raspberry Pi 4/5 and friends): PMULL, the carry-less multiply of
/// the ARMv8 crypto extension, through the same folding steps as x86-64.
///
/// Not run on the x86-64 development machine; it is type- and lint-checked
/// there with `rustup target add aarch64-unknown-linux-gnu` and `cargo clippy
/// --target aarch64-unknown-linux-gnu -p sml_core --all-targets`. The steps
/// are the shared [`fold_algorithm`], which the `soft` instantiation checks
/// in every test run. Only the primitives below
/// are aarch64-specific. The intrinsic calls sit in `unsafe` blocks because
/// older toolchains declare them `unsafe fn`; newer ones make them safe inside
/// a function with the feature enabled, hence `unused_unsafe` is allowed.
#[cfg(target_arch = "aarch64")]
#[allow(unused_unsafe, unsafe_code)]
mod pmull {
    use std::arch::aarch64::{uint64x2_t, vcombine_u64, vcreate_u64, veorq_u64, vgetq_lane_u64, vmull_p64};

    type V = uint64x2_t;

    pub fn available() -> bool {
        std::arch::is_aarch64_feature_detected!("neon") && std::arch::is_aarch64_feature_detected!("pmull")
    }

    pub fn update(crc: u16, data: &[u8]) -> u16 {
        debug_assert!(data.len() >= super::MIN_FOLD_LEN && available());
        // SAFETY: `available()` checked at run time that the CPU has NEON and
        // PMULL, the features `fold` is compiled for. `fold` reads memory only
        // through safe slice indexing.
        unsafe { fold(crc, data) }
    }

    #[inline]
    #[target_feature(enable = "neon,aes")]
    fn pair(lo: u64, hi: u64) -> V {
        // SAFETY: register-only NEON operations; the feature is enabled.
        unsafe { vcombine_u64(vcreate_u64(lo), vcreate_u64(hi)) }
    }

    #[inline]
    #[target_feature(enable = "neon,aes")]
    fn load(data: &[u8], block: usize) -> V {
        let b: &[u8; 16] = data[block * 16..block * 16 + 16].try_into().expect("16 bytes");
        let v = u128::from_le_bytes(*b);
        pair(v as u64, (v >> 64) as u64)
    }

    #[inline]
    #[target_feature(enable = "neon,aes")]
    fn lo(v: V) -> u64 {
        // SAFETY: lane read of a register; the feature is enabled.
        unsafe { vgetq_lane_u64::<0>(v) }
    }

    #[inline]
    #[target_feature(enable = "neon,aes")]
    fn hi(v: V) -> u64 {
        // SAFETY: lane read of a register; the feature is enabled.
        unsafe { vgetq_lane_u64::<1>(v) }
    }

    #[inline]
    #[target_feature(enable = "neon,aes")]
    fn xor(a: V, b: V) -> V {
        // SAFETY: register-only NEON operation; the feature is enabled.
        unsafe { veorq_u64(a, b) }
    }

    #[inline]
    #[target_feature(enable = "neon,aes")]
    fn mul(a: u64, b: u64) -> V {
        // SAFETY: PMULL on registers; the feature is enabled.
        let p: u128 = unsafe { vmull_p64(a, b) };
        pair(p as u64, (p >> 64) as u64)
    }

    #[inline]
    #[target_feature(enable = "neon,aes")]
    fn mul_ll(a: V, b: V) -> V {
        mul(lo(a), lo(b))
    }

    #[inline]
    #[target_feature(enable = "neon,aes")]
    fn mul_hh(a: V, b: V) -> V {
        mul(hi(a), hi(b))
    }

    fold_algorithm!(#[target_feature(enable = "neon,aes")]);
}

/// The folding steps over a software carry-less multiply: slow, portable, and
/// the check (in tests, on any machine) of the algorithm the PMULL path runs.
#[cfg(test)]
mod soft {
    type V = u128;

    fn load(data: &[u8], block: usize) -> V {
        u128::from_le_bytes(data[block * 16..block * 16 + 16].try_into().expect("16 bytes"))
    }

    fn pair(lo: u64, hi: u64) -> V {
        u128::from(lo) | (u128::from(hi) << 64)
    }

    fn lo(v: V) -> u64 {
        v as u64
    }

    fn hi(v: V) -> u64 {
        (v >> 64) as u64
    }

    fn xor(a: V, b: V) -> V {
        a ^ b
    }

    fn mul(a: u64, b: u64) -> V {
        (0..64).filter(|i| b >> i & 1 == 1).fold(0, |acc, i| acc ^ (u128::from(a) << i))
    }

    fn mul_ll(a: V, b: V) -> V {
        mul(lo(a), lo(b))
    }

    fn mul_hh(a: V, b: V) -> V {
        mul(hi(a), hi(b))
    }

    fold_algorithm!();
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
                if n >= MIN_FOLD_LEN && clmul::available() {
                    assert_eq!(clmul::update(init, &data[..n]), want, "clmul n={n}");
                }
                if n >= 16 {
                    assert_eq!(soft::fold(init, &data[..n]), want, "soft fold n={n}");
                }
            }
        }
    }

    proptest::proptest! {
        /// The table path, forced, against whatever `update` picks on this CPU
        /// (the folding path on x86-64 with PCLMULQDQ) and the portable
        /// software fold that mirrors the aarch64 PMULL steps.
        #[test]
        fn table_and_fast_paths_agree_on_random_input(
            data in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
            init in proptest::num::u16::ANY,
        ) {
            let table = update_table(init, &data);
            proptest::prop_assert_eq!(update(init, &data), table);
            if data.len() >= 16 {
                proptest::prop_assert_eq!(soft::fold(init, &data), table);
            }
            if data.len() < 64 {
                proptest::prop_assert_eq!(update_bitwise(init, &data), table);
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
