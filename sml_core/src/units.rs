//! DLMS unit codes (IEC 62056-62 / DLMS Blue Book) as sent in SML_Unit.

/// The symbol for a unit code. Code 0 is "no unit" (DZG sends it on text
/// entries); codes without a symbol in the table are rendered `?:<code>`.
#[must_use]
pub fn symbol(code: u8) -> Option<&'static str> {
    // Codes 14, 16 and 18 are the "corrected" volume variants: same symbols.
    Some(match code {
        1 => "a",
        2 => "mo",
        3 => "wk",
        4 => "d",
        5 => "h",
        6 => "min",
        7 => "s",
        8 => "°",
        9 => "°C",
        10 => "currency",
        11 => "m",
        12 => "m/s",
        13 | 14 => "m³",
        15 | 16 => "m³/h",
        17 | 18 => "m³/d",
        19 => "l",
        20 => "kg",
        21 => "N",
        22 => "Nm",
        23 => "Pa",
        24 => "bar",
        25 => "J",
        26 => "J/h",
        27 => "W",
        28 => "VA",
        29 => "var",
        30 => "Wh",
        31 => "VAh",
        32 => "varh",
        33 => "A",
        34 => "C",
        35 => "V",
        36 => "V/m",
        37 => "F",
        38 => "Ω",
        39 => "Ωm²/m",
        40 => "Wb",
        41 => "T",
        42 => "A/m",
        43 => "H",
        44 => "Hz",
        45 => "1/(Wh)",
        46 => "1/(varh)",
        47 => "1/(VAh)",
        48 => "V²h",
        49 => "A²h",
        50 => "kg/s",
        51 => "S",
        52 => "K",
        53 => "1/(V²h)",
        54 => "1/(A²h)",
        55 => "1/m³",
        56 => "%",
        57 => "Ah",
        60 => "Wh/m³",
        61 => "J/m³",
        62 => "Mol %",
        63 => "g/m³",
        64 => "Pa s",
        65 => "J/kg",
        66 => "g/cm²",
        67 => "atm",
        70 => "dBm",
        71 => "dBµV",
        72 => "dB",
        253 => "(reserved)",
        254 => "(other)",
        255 => "(count)",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::symbol;

    #[test]
    fn common_units() {
        assert_eq!(symbol(27), Some("W"));
        assert_eq!(symbol(30), Some("Wh"));
        assert_eq!(symbol(35), Some("V"));
        assert_eq!(symbol(44), Some("Hz"));
        assert_eq!(symbol(0), None);
        assert_eq!(symbol(99), None);
    }
}
