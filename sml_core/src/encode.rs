//! SML encoder: messages → SML file → transport frame. Used by the simulator
//! and by round-trip tests, so it writes exactly what the decoder reads back.

use crate::crc::CrcKind;
use crate::message::{Body, GetProfileRequest, Message, SetProcParameterRequest};
use crate::transport::START;
use crate::value::{ListEntry, PeriodEntry, ProcParValue, Time, TimeKind, Tree, Value};

const TY_OCTETS: u8 = 0x00;
const TY_BOOL: u8 = 0x40;
const TY_INT: u8 = 0x50;
const TY_UINT: u8 = 0x60;
const TY_LIST: u8 = 0x70;

/// Writes SML elements into a byte vector.
#[derive(Default, Debug)]
pub struct Writer {
    pub out: Vec<u8>,
}

/// Smallest data width (1..=8 bytes) that holds an unsigned value.
#[must_use]
pub fn uint_width(v: u64) -> u8 {
    (64 - v.leading_zeros()).max(1).div_ceil(8) as u8
}

/// Smallest data width (1..=8 bytes) that holds a signed value.
#[must_use]
pub fn int_width(v: i64) -> u8 {
    let bits = if v < 0 { 64 - (!v).leading_zeros() } else { 64 - v.leading_zeros() } + 1;
    bits.div_ceil(8) as u8
}

impl Writer {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// TL field. For everything but lists the length counts the TL bytes too,
    /// so the number of TL bytes has to be found first.
    pub fn tl(&mut self, ty: u8, len: usize) {
        let tl_bytes_for = |extra: usize| {
            let mut n = 1;
            while len + extra * n >= 1usize << (4 * n) {
                n += 1;
            }
            n
        };
        let (total, nibbles) = if ty == TY_LIST {
            (len, tl_bytes_for(0))
        } else {
            let n = tl_bytes_for(1);
            (len + n, n)
        };
        for i in (0..nibbles).rev() {
            let nibble = ((total >> (4 * i)) & 0xf) as u8;
            let more = if i > 0 { 0x80 } else { 0 };
            let ty_bits = if i == nibbles - 1 { ty } else { 0 };
            self.out.push(more | ty_bits | nibble);
        }
    }

    pub fn list(&mut self, n: usize) {
        self.tl(TY_LIST, n);
    }

    pub fn not_set(&mut self) {
        self.out.push(0x01);
    }

    pub fn octets(&mut self, b: &[u8]) {
        self.tl(TY_OCTETS, b.len());
        self.out.extend_from_slice(b);
    }

    pub fn octets_opt(&mut self, b: Option<&[u8]>) {
        match b {
            Some(b) => self.octets(b),
            None => self.not_set(),
        }
    }

    pub fn uint(&mut self, v: u64, width: u8) {
        let w = width.clamp(uint_width(v), 8);
        self.tl(TY_UINT, w as usize);
        self.out.extend_from_slice(&v.to_be_bytes()[8 - w as usize..]);
    }

    pub fn int(&mut self, v: i64, width: u8) {
        let w = width.clamp(int_width(v), 8);
        self.tl(TY_INT, w as usize);
        self.out.extend_from_slice(&v.to_be_bytes()[8 - w as usize..]);
    }

    pub fn uint_opt(&mut self, v: Option<u64>, width: u8) {
        match v {
            Some(v) => self.uint(v, width),
            None => self.not_set(),
        }
    }

    pub fn boolean(&mut self, b: bool) {
        self.tl(TY_BOOL, 1);
        self.out.push(u8::from(b));
    }

    pub fn time(&mut self, t: &Time) {
        if t.bare {
            self.uint(u64::from(t.value), 4);
            return;
        }
        self.list(2);
        self.uint(u64::from(t.kind.tag()), 1);
        if t.kind == TimeKind::LocalTimestamp {
            self.list(3);
            self.uint(u64::from(t.value), 4);
            self.int(i64::from(t.local_offset), 2);
            self.int(i64::from(t.season_offset), 2);
        } else {
            self.uint(u64::from(t.value), 4);
        }
    }

    pub fn time_opt(&mut self, t: Option<&Time>) {
        match t {
            Some(t) => self.time(t),
            None => self.not_set(),
        }
    }

    pub fn value(&mut self, v: &Value<'_>) {
        match v {
            Value::Bool(b) => self.boolean(*b),
            Value::Bytes(b) => self.octets(b),
            Value::Int { value, width } => self.int(*value, *width),
            Value::UInt { value, width } => self.uint(*value, *width),
            Value::Time(t) => {
                self.list(2);
                self.uint(1, 1);
                self.time(t);
            }
        }
    }

    pub fn value_opt(&mut self, v: Option<&Value<'_>>) {
        match v {
            Some(v) => self.value(v),
            None => self.not_set(),
        }
    }

    fn unit_scaler(&mut self, unit: Option<u8>, scaler: Option<i8>) {
        self.uint_opt(unit.map(u64::from), 1);
        match scaler {
            Some(s) => self.int(i64::from(s), 1),
            None => self.not_set(),
        }
    }

    pub fn list_entry(&mut self, e: &ListEntry<'_>) {
        self.list(7);
        self.octets(e.obj_name);
        self.uint_opt(e.status, 1);
        self.time_opt(e.val_time.as_ref());
        self.unit_scaler(e.unit, e.scaler);
        self.value_opt(e.value.as_ref());
        self.octets_opt(e.value_signature);
    }

    pub fn period_entry(&mut self, e: &PeriodEntry<'_>) {
        self.list(5);
        self.octets(e.obj_name);
        self.unit_scaler(e.unit, e.scaler);
        self.value_opt(e.value.as_ref());
        self.octets_opt(e.value_signature);
    }

    fn octet_list(&mut self, v: &[&[u8]]) {
        self.list(v.len());
        for b in v {
            self.octets(b);
        }
    }

    pub fn tree(&mut self, t: &Tree<'_>) {
        self.list(3);
        self.octets(t.parameter_name);
        match &t.parameter_value {
            None => self.not_set(),
            Some(v) => {
                self.list(2);
                match v {
                    ProcParValue::Value(v) => {
                        self.uint(1, 1);
                        self.value(v);
                    }
                    ProcParValue::PeriodEntry(p) => {
                        self.uint(2, 1);
                        self.period_entry(p);
                    }
                    ProcParValue::TupelEntry(t) => {
                        self.uint(3, 1);
                        self.list(23);
                        self.octets(t.server_id);
                        self.time(&t.sec_index);
                        self.uint(t.status, 8);
                        for (i, (unit, scaler, value)) in t.registers.iter().enumerate() {
                            self.uint(u64::from(*unit), 1);
                            self.int(i64::from(*scaler), 1);
                            self.int(*value, 8);
                            if i == 2 {
                                self.octets(t.signature_pa_r1_r4);
                            }
                        }
                        self.octets(t.signature_ma_r2_r3);
                    }
                    ProcParValue::Time(t) => {
                        self.uint(4, 1);
                        self.time(t);
                    }
                    ProcParValue::ListEntry(e) => {
                        self.uint(5, 1);
                        self.list_entry(e);
                    }
                }
            }
        }
        match &t.children {
            None => self.not_set(),
            Some(children) => {
                self.list(children.len());
                for c in children {
                    self.tree(c);
                }
            }
        }
    }

    fn tree_opt(&mut self, t: Option<&Tree<'_>>) {
        match t {
            Some(t) => self.tree(t),
            None => self.not_set(),
        }
    }

    fn profile_request(&mut self, r: &GetProfileRequest<'_>) {
        self.list(9);
        self.octets_opt(r.server_id);
        self.octets_opt(r.username);
        self.octets_opt(r.password);
        match r.with_rawdata {
            Some(b) => self.boolean(b),
            None => self.not_set(),
        }
        self.time_opt(r.begin_time.as_ref());
        self.time_opt(r.end_time.as_ref());
        self.octet_list(&r.parameter_tree_path);
        match &r.object_list {
            Some(v) => self.octet_list(v),
            None => self.not_set(),
        }
        self.tree_opt(r.das_details.as_ref());
    }

    fn proc_set(&mut self, r: &SetProcParameterRequest<'_>) {
        self.list(5);
        self.octets_opt(r.server_id);
        self.octets_opt(r.username);
        self.octets_opt(r.password);
        self.octet_list(&r.parameter_tree_path);
        self.tree(&r.parameter_tree);
    }

    #[allow(clippy::too_many_lines)]
    pub fn body(&mut self, b: &Body<'_>) {
        if let Body::Unknown { raw, .. } = b {
            self.out.extend_from_slice(raw);
            return;
        }
        match b {
            Body::OpenRequest(r) => {
                self.list(7);
                self.octets_opt(r.codepage);
                self.octets(r.client_id);
                self.octets(r.req_file_id);
                self.octets_opt(r.server_id);
                self.octets_opt(r.username);
                self.octets_opt(r.password);
                self.uint_opt(r.sml_version.map(u64::from), 1);
            }
            Body::OpenResponse(r) => {
                self.list(6);
                self.octets_opt(r.codepage);
                self.octets_opt(r.client_id);
                self.octets(r.req_file_id);
                self.octets(r.server_id);
                self.time_opt(r.ref_time.as_ref());
                self.uint_opt(r.sml_version.map(u64::from), 1);
            }
            Body::CloseRequest { global_signature } | Body::CloseResponse { global_signature } => {
                self.list(1);
                self.octets_opt(global_signature.as_deref());
            }
            Body::GetProfilePackRequest(r) | Body::GetProfileListRequest(r) => {
                self.profile_request(r);
            }
            Body::GetProfilePackResponse(r) => {
                self.list(8);
                self.octets(r.server_id);
                self.time(&r.act_time);
                self.uint(u64::from(r.reg_period), 4);
                self.octet_list(&r.parameter_tree_path);
                self.list(r.header_list.len());
                for h in &r.header_list {
                    self.list(3);
                    self.octets(h.obj_name);
                    self.uint(u64::from(h.unit), 1);
                    self.int(i64::from(h.scaler), 1);
                }
                self.list(r.period_list.len());
                for p in &r.period_list {
                    self.list(4);
                    self.time(&p.val_time);
                    self.uint(p.status, 1);
                    self.list(p.values.len());
                    for v in &p.values {
                        self.list(2);
                        self.value_opt(v.value.as_ref());
                        self.octets_opt(v.value_signature);
                    }
                    self.octets_opt(p.period_signature);
                }
                self.octets_opt(r.rawdata);
                self.octets_opt(r.profile_signature);
            }
            Body::GetProfileListResponse(r) => {
                self.list(9);
                self.octets(r.server_id);
                self.time(&r.act_time);
                self.uint(u64::from(r.reg_period), 4);
                self.octet_list(&r.parameter_tree_path);
                self.time(&r.val_time);
                self.uint(r.status, 1);
                self.list(r.period_list.len());
                for p in &r.period_list {
                    self.period_entry(p);
                }
                self.octets_opt(r.rawdata);
                self.octets_opt(r.period_signature);
            }
            Body::GetProcParameterRequest(r) => {
                self.list(5);
                self.octets_opt(r.server_id);
                self.octets_opt(r.username);
                self.octets_opt(r.password);
                self.octet_list(&r.parameter_tree_path);
                self.octets_opt(r.attribute);
            }
            Body::GetProcParameterResponse(r) => {
                self.list(3);
                self.octets(r.server_id);
                self.octet_list(&r.parameter_tree_path);
                self.tree(&r.parameter_tree);
            }
            Body::SetProcParameterRequest(r) | Body::SetProcParameterResponse(r) => {
                self.proc_set(r);
            }
            Body::GetListRequest(r) => {
                self.list(5);
                self.octets(r.client_id);
                self.octets_opt(r.server_id);
                self.octets_opt(r.username);
                self.octets_opt(r.password);
                self.octets_opt(r.list_name);
            }
            Body::GetListResponse(r) => {
                self.list(7);
                self.octets_opt(r.client_id);
                self.octets(r.server_id);
                self.octets_opt(r.list_name);
                self.time_opt(r.act_sensor_time.as_ref());
                self.list(r.values.len());
                for e in &r.values {
                    self.list_entry(e);
                }
                self.octets_opt(r.list_signature);
                self.time_opt(r.act_gateway_time.as_ref());
            }
            Body::AttentionResponse(r) => {
                self.list(4);
                self.octets(r.server_id);
                self.octets(r.attention_no);
                self.octets_opt(r.attention_msg);
                self.tree_opt(r.attention_details.as_ref());
            }
            Body::Unknown { .. } => unreachable!("handled above"),
        }
    }

    /// One SML_Message with its crc16 computed with `crc`.
    pub fn message(&mut self, m: &Message<'_>, crc: CrcKind) {
        let start = self.out.len();
        self.list(6);
        self.octets(m.transaction_id);
        self.uint(u64::from(m.group_no), 1);
        self.uint(u64::from(m.abort_on_error), 1);
        self.list(2);
        let tag = m.body.tag();
        self.uint(u64::from(tag), if tag > 0xffff { 4 } else { 2 });
        self.body(&m.body);
        let field = crc.message_field(crc.compute(&self.out[start..]));
        self.uint(u64::from(field), 2);
        self.out.push(0x00);
    }
}

/// Encodes messages into an SML file (transport payload, unescaped).
#[must_use]
pub fn encode_file(messages: &[Message<'_>], crc: CrcKind) -> Vec<u8> {
    let mut w = Writer::new();
    for m in messages {
        w.message(m, crc);
    }
    w.out
}

/// Wraps an SML file in transport v1: start sequence, escaping, padding, end
/// escape and CRC. Every run of four `1b` is doubled wherever it starts.
#[must_use]
pub fn frame(payload: &[u8], crc: CrcKind) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 20);
    out.extend_from_slice(&START);
    let mut run = 0;
    for &b in payload {
        out.push(b);
        if b == 0x1b {
            run += 1;
            if run == 4 {
                out.extend_from_slice(&[0x1b; 4]);
                run = 0;
            }
        } else {
            run = 0;
        }
    }
    let padding = (4 - out.len() % 4) % 4;
    out.resize(out.len() + padding, 0);
    out.extend_from_slice(&[0x1b, 0x1b, 0x1b, 0x1b, 0x1a, padding as u8]);
    let c = crc.compute(&out);
    out.extend_from_slice(&crc.wire_bytes(c));
    out
}

/// Messages → complete transport frame.
#[must_use]
pub fn encode(messages: &[Message<'_>], crc: CrcKind) -> Vec<u8> {
    frame(&encode_file(messages, crc), crc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tl::Cursor;

    #[test]
    fn tl_lengths_round_trip() {
        for n in [0usize, 1, 13, 14, 15, 16, 200, 253, 254, 255, 256, 4000, 70_000] {
            let data = vec![0xaa; n];
            let mut w = Writer::new();
            w.octets(&data);
            let got = Cursor::new(&w.out).octets().unwrap();
            assert_eq!(got.len(), n, "n={n}");
            let mut w = Writer::new();
            w.list(n);
            assert_eq!(Cursor::new(&w.out).list().unwrap(), n);
        }
    }

    #[test]
    fn widths() {
        assert_eq!(uint_width(0), 1);
        assert_eq!(uint_width(255), 1);
        assert_eq!(uint_width(256), 2);
        assert_eq!(uint_width(u64::MAX), 8);
        assert_eq!(int_width(-1), 1);
        assert_eq!(int_width(127), 1);
        assert_eq!(int_width(128), 2);
        assert_eq!(int_width(-129), 2);
        assert_eq!(int_width(i64::MIN), 8);
    }

    #[test]
    fn escape_wherever_it_starts() {
        let f = frame(&[0x00, 0x1b, 0x1b, 0x1b, 0x1b, 0x01, 0x02, 0x03], CrcKind::X25);
        assert_eq!(&f[8..20], &[0x00, 0x1b, 0x1b, 0x1b, 0x1b, 0x1b, 0x1b, 0x1b, 0x1b, 0x01, 0x02, 0x03]);
    }
}
