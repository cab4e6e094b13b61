//! Meter quirks the decoder corrects. Each correction is flagged on the entry
//! (`ListEntry::quirks`) so users can see what was changed and why.

use crate::obis;
use crate::tl::be_uint;
use crate::value::{quirk, ListEntry, Value};

/// DZG DVS74 meters with serial numbers 42 000 000..=48 999 999 and
/// 55 000 000..=58 999 999 (firmware before 1.2, per DZG via libsml) encode a
/// positive power of 327.68..655.35 W as an unsigned 16-bit number but tag it
/// Integer16. Later DZG meters (DVS-7420 generators, DWSB20) send genuine
/// negatives in the same form, so the serial-number range is what decides.
#[must_use]
pub fn is_buggy_dzg_dvs74(server_id: &[u8]) -> bool {
    if server_id.len() != 10 || server_id[0] != 0x0a || server_id[1] != 0x01 || &server_id[2..5] != b"DZG" {
        return false;
    }
    let serial = be_uint(&server_id[5..10]);
    (42_000_000..=48_999_999).contains(&serial) || (55_000_000..=58_999_999).contains(&serial)
}

/// Applies list-level quirks to a GetListResponse's entries.
pub fn apply_get_list(server_id: &[u8], values: &mut [ListEntry<'_>]) {
    let buggy = is_buggy_dzg_dvs74(server_id)
        || values.iter().any(|e| {
            *e.obj_name == obis::DEVICE_ID_FNN
                && matches!(&e.value, Some(Value::Bytes(b)) if is_buggy_dzg_dvs74(b))
        });
    if !buggy {
        return;
    }
    for e in values.iter_mut() {
        if *e.obj_name == obis::POWER_SUM
            && matches!(e.value, Some(Value::Int { value, width }) if value < 0 && width <= 2)
        {
            e.quirks |= quirk::DZG_UNSIGNED_POWER;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_ranges() {
        let id = |serial: u64| {
            let mut v = vec![0x0a, 0x01, b'D', b'Z', b'G'];
            v.extend_from_slice(&serial.to_be_bytes()[3..]);
            v
        };
        assert!(is_buggy_dzg_dvs74(&id(42_082_910)));
        assert!(is_buggy_dzg_dvs74(&id(58_999_999)));
        assert!(!is_buggy_dzg_dvs74(&id(60_694_611)));
        assert!(!is_buggy_dzg_dvs74(&id(40_051_478)));
        assert!(!is_buggy_dzg_dvs74(b"0a01445a"));
    }
}
