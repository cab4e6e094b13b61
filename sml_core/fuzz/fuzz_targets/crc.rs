//! The sliced CRC table against the bit-by-bit definition.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sml_core::crc::{update, update_bitwise};

fuzz_target!(|data: &[u8]| {
    for init in [0u16, 0xffff] {
        assert_eq!(update(init, data), update_bitwise(init, data));
    }
});
