//! Rust → Python: decoded frames become plain dicts, with the caches that
//! make that cheap (interned keys, template dicts, OBIS names, unit symbols,
//! the last server id).
//!
//! CONTRACT: the keys written here are the Python API. They must match the
//! TypedDicts in `smlogger/sml.py` (`Frame`, `Message`, the bodies in
//! `BODY_TYPES`, `Entry`, `Time`; `DecoderStats` for `Decoder.stats` in
//! `mod.rs`; `ValueRow` for `decode_values`); `tests/test_sml_contract.py`
//! decodes every recording and the golden vectors and fails on any key the
//! TypedDicts do not declare or any required key missing. Add a key in both
//! places or not at all.
//!
//! The Python-only names of errors (`"crc"`, `"truncated"`, ...) live here too:
//! the core crate knows error variants, not their spelling in the Python API.

pub(super) mod bulk;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple, PyType};
use pyo3::{intern, IntoPyObjectExt};

use crate::crc::CrcKind;
use crate::message::{Body, GetListResponse, GetProfileRequest, MessageResult, SetProcParameterRequest};
use crate::transport::FrameError;
use crate::value::{
    quirk, ListEntry, PeriodEntry, ProcParValue, Scaled, Time, TimeKind, Tree, TupelEntry, Value,
};
use crate::{obis, units, Frame, Outcome};

/// The short error name of the Python API (`frame["error"]`).
pub(super) fn frame_error_name(e: &FrameError) -> &'static str {
    match e {
        FrameError::Crc { .. } => "crc",
        FrameError::Truncated => "truncated",
        FrameError::Escape { .. } | FrameError::Misaligned { .. } | FrameError::Padding { .. } => "escape",
        FrameError::TooLong { .. } => "too_long",
    }
}

/// `frame["error"]` for an outcome: None when the frame is good.
pub(super) fn error_name(o: &Outcome<'_>) -> Option<&'static str> {
    match o {
        Outcome::Ok(_) => None,
        Outcome::Transport(e) => Some(frame_error_name(e)),
        Outcome::Parse(_) => Some("parse"),
    }
}

/// `frame["detail"]`: the human-readable reason, None when the frame is good.
fn error_detail(o: &Outcome<'_>) -> Option<String> {
    match o {
        Outcome::Ok(_) => None,
        Outcome::Transport(e) => Some(e.to_string()),
        Outcome::Parse(e) => Some(e.to_string()),
    }
}

/// `unit_symbol` of the Python API: the DLMS symbol, `"?:<code>"` for codes
/// without one, None for 0 ("no unit").
pub(super) fn unit_text(code: u8) -> Option<String> {
    if code == 0 {
        return None;
    }
    Some(units::symbol(code).map_or_else(|| format!("?:{code}"), str::to_owned))
}

type Obj<'py> = Bound<'py, PyAny>;

/// Caches Python strings that repeat in every frame (OBIS names, unit symbols).
#[derive(Default)]
pub(super) struct Strings {
    obis: FastMap<[u8; 6], Py<PyString>>,
    units: FastMap<u8, Py<PyString>>,
    /// Entry templates by (OBIS, unit, scaler), see `Conv::entry_dict`.
    entries: FastMap<EntryKey, EntryTemplate>,
    /// Message templates by body tag, see `Conv::message_dict`.
    messages: FastMap<u32, Py<PyDict>>,
    /// Meters repeat their server id in every message; bytes are immutable,
    /// so the last one is shared.
    server_id: Option<(Vec<u8>, Py<PyBytes>)>,
    /// The last value object of each register, see `bulk::feed_values`.
    values: FastMap<EntryKey, bulk::MadeValue>,
}

/// A meter register as far as its entry template goes: OBIS name, unit, scaler.
type EntryKey = ([u8; 6], Option<u8>, Option<i8>);

/// The cache key of an entry's register (None for an OBIS name that is not
/// six bytes long: such entries are not cached).
fn entry_key(e: &ListEntry<'_>) -> Option<EntryKey> {
    <[u8; 6]>::try_from(e.obj_name).ok().map(|name| (name, e.unit, e.scaler))
}

/// An entry template and the register's last value objects.
struct EntryTemplate {
    dict: Py<PyDict>,
    /// The last wire value of this register and its `raw` and `value`
    /// objects. Most registers repeat their value from one frame to the next
    /// (62 % of the benchmark stream's entries), and ints, floats and bytes
    /// are immutable, so the same objects serve again: fewer allocations and
    /// fewer fresh pages for a big `decode()` result.
    last: Option<(LastValue, Py<PyAny>, Py<PyAny>)>,
}

/// A wire value as far as its Python objects go (width and signedness do not
/// change them).
enum LastValue {
    Int(i128),
    Bytes(Vec<u8>),
}

impl LastValue {
    /// Only what is cheap to compare is remembered.
    fn of(v: &Value<'_>) -> Option<Self> {
        match v {
            Value::Int { value, .. } => Some(LastValue::Int(i128::from(*value))),
            Value::UInt { value, .. } => Some(LastValue::Int(i128::from(*value))),
            Value::Bytes(b) if b.len() <= 64 => Some(LastValue::Bytes(b.to_vec())),
            _ => None,
        }
    }

    fn is(&self, v: &Value<'_>) -> bool {
        match (self, v) {
            (LastValue::Int(n), Value::Int { value, .. }) => *n == i128::from(*value),
            (LastValue::Int(n), Value::UInt { value, .. }) => *n == i128::from(*value),
            (LastValue::Bytes(b), Value::Bytes(v)) => b.as_slice() == *v,
            _ => false,
        }
    }
}

/// The caches are keyed by a handful of bytes from trusted-size input; a
/// multiply-rotate hash over 8-byte words is plenty and much cheaper than
/// SipHash (or a byte-at-a-time loop: an entry key is six fields).
#[derive(Default)]
struct SmallKeyHasher(u64);

impl SmallKeyHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(23) ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl Hasher for SmallKeyHasher {
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.mix(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(last) ^ ((rest.len() as u64) << 56));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.mix(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }

    fn write_isize(&mut self, i: isize) {
        self.mix(i as u64);
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<SmallKeyHasher>>;

/// Dicts with every key of a record kind mapped to None (or its most common
/// value), one per kind, shared by every decoder. Copying one and filling in
/// values avoids the hashing, inserting and resizing that building each dict
/// key by key costs. They are never handed out, only copied.
static TEMPLATE_DICTS: [GILOnceCell<Py<PyDict>>; TEMPLATES] = [const { GILOnceCell::new() }; TEMPLATES];

/// Later instances of a template class made after the first one (see [`template`]).
const SHRINK_INSTANCES: usize = 64;

/// Builds a template as the `__dict__` of an instance of a class of its own.
/// CPython keeps such a dict *split*: the keys sit in a table the class shares
/// with every copy, so `copy()` allocates only the values (a 10-key entry takes
/// 152 bytes instead of 272). Less memory to fault in, and one key table that
/// stays in the cache for every lookup. The dict is an ordinary `dict` with the
/// keys in this order either way; where an interpreter does not share keys the
/// copies are merely bigger.
fn template<'py>(
    py: Python<'py>,
    keys: &[&Bound<'py, PyString>],
    defaults: &[(&Bound<'py, PyString>, Obj<'py>)],
) -> PyResult<Py<PyDict>> {
    let class = py.get_type::<PyType>().call1(("_SmlRecord", PyTuple::empty(py), PyDict::new(py)))?;
    let first = class.call0()?;
    for k in keys {
        first.setattr(*k, py.None())?;
    }
    for (k, v) in defaults {
        first.setattr(*k, v)?;
    }
    // Every instance created later trims the spare room of the shared key
    // table (CPython 3.11+ reserves ~30 slots for attributes yet to come), and
    // each copy carries one value slot per key-table slot.
    for _ in 0..SHRINK_INSTANCES {
        class.call0()?;
    }
    Ok(first.getattr(intern!(py, "__dict__"))?.downcast_into::<PyDict>()?.unbind())
}

const TEMPLATES: usize = 7;
const T_FRAME: usize = 0;
const T_MESSAGE: usize = 1;
const T_ENTRY: usize = 2;
const T_TIME: usize = 3;
const T_GET_LIST: usize = 4;
const T_OPEN: usize = 5;
const T_CLOSE: usize = 6;

const OBIS_CACHE_LIMIT: usize = 4096;
/// Bounds the entry templates (a few dozen per meter in practice).
const ENTRY_TEMPLATE_LIMIT: usize = 1024;
/// Bounds the message templates (unknown body tags from damaged input included).
const MESSAGE_TEMPLATE_LIMIT: usize = 64;

pub(super) struct Conv<'a, 'py> {
    pub(super) py: Python<'py>,
    pub(super) strings: &'a mut Strings,
}

/// A fresh dict copied from template `$which`: `[keys]` all None, then the
/// `[(key, value)]` defaults. Keys and defaults are only evaluated when the
/// template is built, the first time; after that this is one `dict.copy()`.
macro_rules! record {
    ($conv:expr, $which:expr, [$($key:literal),* $(,)?] $(, [$(($dk:literal, $dv:expr)),* $(,)?])?) => {{
        let py = $conv.py;
        TEMPLATE_DICTS[$which]
            .get_or_try_init(py, || {
                template(py, &[$(intern!(py, $key)),*], &[$($((intern!(py, $dk), $dv)),*)?])
            })?
            .bind(py)
            .copy()
    }};
}

impl<'py> Conv<'_, 'py> {
    fn type_name(&self, b: &Body<'_>) -> Obj<'py> {
        let py = self.py;
        match b {
            Body::OpenResponse(_) => intern!(py, "OpenResponse").clone().into_any(),
            Body::GetListResponse(_) => intern!(py, "GetListResponse").clone().into_any(),
            Body::CloseResponse { .. } => intern!(py, "CloseResponse").clone().into_any(),
            other => PyString::new(py, other.name()).into_any(),
        }
    }

    fn server_id(&mut self, id: &[u8]) -> Obj<'py> {
        if let Some((raw, obj)) = &self.strings.server_id {
            if raw.as_slice() == id {
                return obj.bind(self.py).clone().into_any();
            }
        }
        let obj = PyBytes::new(self.py, id);
        self.strings.server_id = Some((id.to_vec(), obj.clone().unbind()));
        obj.into_any()
    }

    fn none(&self) -> Obj<'py> {
        self.py.None().into_bound(self.py)
    }

    fn bytes(&self, b: &[u8]) -> Obj<'py> {
        PyBytes::new(self.py, b).into_any()
    }

    fn opt_bytes(&self, b: Option<&[u8]>) -> Obj<'py> {
        b.map_or_else(|| self.none(), |b| self.bytes(b))
    }

    fn int<T: IntoPyObjectExt<'py>>(&self, v: T) -> PyResult<Obj<'py>> {
        v.into_bound_py_any(self.py)
    }

    fn opt_int<T: IntoPyObjectExt<'py>>(&self, v: Option<T>) -> PyResult<Obj<'py>> {
        v.map_or_else(|| Ok(self.none()), |v| self.int(v))
    }

    fn obis(&mut self, name: &[u8]) -> Obj<'py> {
        if let Ok(key) = <[u8; 6]>::try_from(name) {
            if let Some(s) = self.strings.obis.get(&key) {
                return s.bind(self.py).clone().into_any();
            }
            let s = PyString::new(self.py, &obis::to_string(name));
            if self.strings.obis.len() < OBIS_CACHE_LIMIT {
                self.strings.obis.insert(key, s.clone().unbind());
            }
            return s.into_any();
        }
        PyString::new(self.py, &obis::to_string(name)).into_any()
    }

    fn unit_symbol(&mut self, unit: Option<u8>) -> Obj<'py> {
        let Some(code) = unit.filter(|&u| u != 0) else {
            return self.none();
        };
        let py = self.py;
        self.strings
            .units
            .entry(code)
            .or_insert_with(|| {
                let text = unit_text(code).unwrap_or_default();
                PyString::new(py, &text).unbind()
            })
            .bind(py)
            .clone()
            .into_any()
    }

    fn time(&mut self, t: &Time) -> PyResult<Obj<'py>> {
        let py = self.py;
        let d = if t.kind == TimeKind::LocalTimestamp {
            PyDict::new(py)
        } else {
            // Preset to the kind nearly every meter sends.
            record!(self, T_TIME, ["kind", "value"], [("kind", intern!(py, "sec_index").clone().into_any())])?
        };
        match t.kind {
            TimeKind::SecIndex => {}
            TimeKind::Timestamp => d.set_item(intern!(py, "kind"), intern!(py, "timestamp"))?,
            TimeKind::LocalTimestamp => d.set_item(intern!(py, "kind"), intern!(py, "local_timestamp"))?,
        }
        d.set_item(intern!(py, "value"), t.value)?;
        if t.kind == TimeKind::LocalTimestamp {
            d.set_item(intern!(py, "local_offset"), t.local_offset)?;
            d.set_item(intern!(py, "season_time_offset"), t.season_offset)?;
        }
        Ok(d.into_any())
    }

    fn opt_time(&mut self, t: Option<&Time>) -> PyResult<Obj<'py>> {
        match t {
            Some(t) => self.time(t),
            None => Ok(self.none()),
        }
    }

    /// The wire value as Python sees it.
    fn raw(&mut self, v: Option<&Value<'_>>) -> PyResult<Obj<'py>> {
        Ok(match v {
            None => self.none(),
            Some(Value::Bool(b)) => self.int(*b)?,
            Some(Value::Bytes(b)) => self.bytes(b),
            Some(Value::Int { value, .. }) => self.int(*value)?,
            Some(Value::UInt { value, .. }) => self.int(*value)?,
            Some(Value::Time(t)) => self.time(t)?,
        })
    }

    /// `raw × 10^scaler` (see [`Scaled`]); `raw` is the wire value's object,
    /// shared where the scaled value is the same immutable object.
    fn scaled(&mut self, v: Option<&Value<'_>>, raw: &Obj<'py>, scaler: Option<i8>) -> PyResult<Obj<'py>> {
        let Some(v) = v else {
            return Ok(self.none());
        };
        match Scaled::of(v, scaler) {
            Scaled::Int(_)
                if scaler.unwrap_or(0) == 0 && matches!(v, Value::Int { .. } | Value::UInt { .. }) =>
            {
                Ok(raw.clone())
            }
            Scaled::Bool(_) | Scaled::Bytes(_) => Ok(raw.clone()),
            other => self.scaled_obj(other),
        }
    }

    /// A scaled value as a new Python object.
    fn scaled_obj(&self, v: Scaled<'_>) -> PyResult<Obj<'py>> {
        match v {
            Scaled::Int(n) => self.int(n),
            Scaled::BigInt { raw: n, exp } => {
                let ten = 10i32.into_bound_py_any(self.py)?;
                self.int(n)?.mul(ten.pow(exp, self.py.None())?)
            }
            Scaled::Float(f) => self.int(f),
            Scaled::Bool(b) => self.int(b),
            Scaled::Bytes(b) => Ok(self.bytes(b)),
        }
    }

    /// Appends one `(offset, server_id, obis, value, unit_symbol)` tuple (the
    /// order of `sml.ValueRow` / `sml.VALUE_FIELDS`) per
    /// entry of every GetListResponse in the frame whose CRC held: the
    /// entries `sml.entries(frame)` yields, as rows.
    pub(super) fn value_rows(&mut self, f: &Frame<'_>, out: &Bound<'py, PyList>) -> PyResult<()> {
        let Outcome::Ok(messages) = &f.outcome else {
            return Ok(());
        };
        let py = self.py;
        let mut offset = None;
        for m in messages {
            let MessageResult::Ok(m) = m else { continue };
            let Body::GetListResponse(r) = &m.body else { continue };
            if !m.crc_ok {
                continue;
            }
            let server_id = self.server_id(r.server_id);
            // One int object for all rows of the frame.
            let offset = match &offset {
                Some(o) => o,
                None => offset.insert(self.int(f.offset)?),
            };
            for e in &r.values {
                let value = match e.scaled() {
                    Some(v) => self.scaled_obj(v)?,
                    None => self.none(),
                };
                let row = [
                    offset.clone(),
                    server_id.clone(),
                    self.obis(e.obj_name),
                    value,
                    self.unit_symbol(e.unit),
                ];
                out.append(PyTuple::new(py, row)?)?;
            }
        }
        Ok(())
    }

    fn quirk(&self, bits: u8) -> PyResult<Obj<'py>> {
        if bits == 0 {
            return Ok(self.none());
        }
        let names: Vec<&str> = quirk::NAMES.iter().filter(|(b, _)| bits & b != 0).map(|(_, n)| *n).collect();
        self.int(names.join(","))
    }

    /// A fresh entry dict with `obis`, `unit`, `unit_symbol` and `scaler`
    /// already in. A meter sends the same registers with the same unit and
    /// scaler in every frame, so a template per (OBIS, unit, scaler) leaves
    /// only the fields that change (value, status, time) to write.
    ///
    /// Also returns the register's last `raw` and `value` objects when the
    /// entry carries the same value again (one table lookup for both).
    #[allow(clippy::type_complexity)]
    fn entry_dict(
        &mut self,
        e: &ListEntry<'_>,
    ) -> PyResult<(Bound<'py, PyDict>, Option<(Obj<'py>, Obj<'py>)>)> {
        let py = self.py;
        let key = entry_key(e);
        if let Some(t) = key.as_ref().and_then(|k| self.strings.entries.get(k)) {
            let again = match (&t.last, &e.value) {
                (Some((last, raw, value)), Some(v)) if e.quirks == 0 && last.is(v) => {
                    Some((raw.bind(py).clone(), value.bind(py).clone()))
                }
                _ => None,
            };
            return Ok((t.dict.bind(py).copy()?, again));
        }
        let d = record!(
            self,
            T_ENTRY,
            [
                "obis",
                "status",
                "val_time",
                "unit",
                "unit_symbol",
                "scaler",
                "raw",
                "value",
                "value_signature",
                "quirk"
            ]
        )?;
        d.set_item(intern!(py, "obis"), self.obis(e.obj_name))?;
        if let Some(unit) = e.unit {
            d.set_item(intern!(py, "unit"), unit)?;
            if unit != 0 {
                d.set_item(intern!(py, "unit_symbol"), self.unit_symbol(e.unit))?;
            }
        }
        if let Some(scaler) = e.scaler {
            d.set_item(intern!(py, "scaler"), scaler)?;
        }
        match key {
            // The template stays private: callers get a copy.
            Some(k) if self.strings.entries.len() < ENTRY_TEMPLATE_LIMIT => {
                let copy = d.copy()?;
                self.strings.entries.insert(k, EntryTemplate { dict: d.unbind(), last: None });
                Ok((copy, None))
            }
            _ => Ok((d, None)),
        }
    }

    fn entry(&mut self, e: &ListEntry<'_>) -> PyResult<Obj<'py>> {
        let py = self.py;
        let (d, again) = self.entry_dict(e)?;
        // The template holds None for every other key: only fields that are
        // present are written, which skips most of the dict work.
        if let Some(status) = e.status {
            d.set_item(intern!(py, "status"), status)?;
        }
        if let Some(t) = &e.val_time {
            d.set_item(intern!(py, "val_time"), self.time(t)?)?;
        }
        if let Some(v) = &e.value {
            let (raw, value) = match again {
                Some(objects) => objects,
                None => self.raw_and_value(e, v)?,
            };
            d.set_item(intern!(py, "raw"), raw)?;
            d.set_item(intern!(py, "value"), value)?;
        }
        if let Some(sig) = &e.value_signature {
            d.set_item(intern!(py, "value_signature"), self.bytes(sig))?;
        }
        if e.quirks != 0 {
            d.set_item(intern!(py, "quirk"), self.quirk(e.quirks)?)?;
        }
        Ok(d.into_any())
    }

    /// `raw` and `value` of an entry whose value changed (or that has
    /// quirks); remembered as the register's last (see [`EntryTemplate::last`]).
    fn raw_and_value(&mut self, e: &ListEntry<'_>, v: &Value<'_>) -> PyResult<(Obj<'py>, Obj<'py>)> {
        let (raw, value) = self.converted(e, v)?;
        let key = entry_key(e);
        if e.quirks == 0 {
            if let Some(t) = key.and_then(|k| self.strings.entries.get_mut(&k)) {
                t.last = LastValue::of(v).map(|l| (l, raw.clone().unbind(), value.clone().unbind()));
            }
        }
        Ok((raw, value))
    }

    /// `raw` (as sent) and `value` (scaled; a DZG power read as unsigned
    /// corrected first) of an entry's value: the one conversion of both the
    /// entry dicts and `feed_values`.
    pub(super) fn converted(&mut self, e: &ListEntry<'_>, v: &Value<'_>) -> PyResult<(Obj<'py>, Obj<'py>)> {
        let raw = self.raw(Some(v))?;
        let value = if e.quirks & quirk::DZG_UNSIGNED_POWER == 0 {
            self.scaled(Some(v), &raw, e.scaler)?
        } else {
            let fixed = e.corrected();
            let fixed_raw = self.raw(fixed.as_ref())?;
            self.scaled(fixed.as_ref(), &fixed_raw, e.scaler)?
        };
        Ok((raw, value))
    }

    fn octet_list(&self, v: &[&[u8]]) -> PyResult<Obj<'py>> {
        let l = PyList::empty(self.py);
        for b in v {
            l.append(self.bytes(b))?;
        }
        Ok(l.into_any())
    }

    fn period_entry(&mut self, p: &PeriodEntry<'_>) -> PyResult<Obj<'py>> {
        let py = self.py;
        let d = PyDict::new(py);
        d.set_item(intern!(py, "obis"), self.obis(p.obj_name))?;
        d.set_item(intern!(py, "unit"), self.opt_int(p.unit)?)?;
        d.set_item(intern!(py, "unit_symbol"), self.unit_symbol(p.unit))?;
        d.set_item(intern!(py, "scaler"), self.opt_int(p.scaler)?)?;
        let raw = self.raw(p.value.as_ref())?;
        d.set_item(intern!(py, "value"), self.scaled(p.value.as_ref(), &raw, p.scaler)?)?;
        d.set_item(intern!(py, "raw"), raw)?;
        d.set_item(intern!(py, "value_signature"), self.opt_bytes(p.value_signature))?;
        Ok(d.into_any())
    }

    fn tupel(&mut self, t: &TupelEntry<'_>) -> PyResult<Obj<'py>> {
        let py = self.py;
        let d = PyDict::new(py);
        d.set_item("server_id", self.bytes(t.server_id))?;
        d.set_item("sec_index", self.time(&t.sec_index)?)?;
        d.set_item("status", t.status)?;
        for (name, (unit, scaler, value)) in
            ["pA", "R1", "R4", "mA", "R2", "R3"].iter().zip(t.registers.iter())
        {
            d.set_item(format!("unit_{name}"), *unit)?;
            d.set_item(format!("scaler_{name}"), *scaler)?;
            d.set_item(format!("value_{name}"), *value)?;
        }
        d.set_item("signature_pA_R1_R4", self.bytes(t.signature_pa_r1_r4))?;
        d.set_item("signature_mA_R2_R3", self.bytes(t.signature_ma_r2_r3))?;
        Ok(d.into_any())
    }

    fn tree(&mut self, t: &Tree<'_>) -> PyResult<Obj<'py>> {
        let py = self.py;
        let d = PyDict::new(py);
        d.set_item("parameter_name", self.bytes(t.parameter_name))?;
        let value = match &t.parameter_value {
            None => self.none(),
            Some(v) => {
                let pv = PyDict::new(py);
                let (kind, obj) = match v {
                    ProcParValue::Value(v) => ("value", self.raw(Some(v))?),
                    ProcParValue::PeriodEntry(p) => ("period_entry", self.period_entry(p)?),
                    ProcParValue::TupelEntry(t) => ("tupel_entry", self.tupel(t)?),
                    ProcParValue::Time(t) => ("time", self.time(t)?),
                    ProcParValue::ListEntry(e) => ("list_entry", self.entry(e)?),
                };
                pv.set_item("kind", kind)?;
                pv.set_item("value", obj)?;
                pv.into_any()
            }
        };
        d.set_item("parameter_value", value)?;
        let children = match &t.children {
            None => self.none(),
            Some(c) => {
                let l = PyList::empty(py);
                for child in c {
                    l.append(self.tree(child)?)?;
                }
                l.into_any()
            }
        };
        d.set_item("children", children)?;
        Ok(d.into_any())
    }

    fn opt_tree(&mut self, t: Option<&Tree<'_>>) -> PyResult<Obj<'py>> {
        match t {
            None => Ok(self.none()),
            Some(t) => self.tree(t),
        }
    }

    fn profile_request(&mut self, d: &Bound<'py, PyDict>, r: &GetProfileRequest<'_>) -> PyResult<()> {
        d.set_item("server_id", self.opt_bytes(r.server_id))?;
        d.set_item("username", self.opt_bytes(r.username))?;
        d.set_item("password", self.opt_bytes(r.password))?;
        d.set_item("with_rawdata", r.with_rawdata)?;
        d.set_item("begin_time", self.opt_time(r.begin_time.as_ref())?)?;
        d.set_item("end_time", self.opt_time(r.end_time.as_ref())?)?;
        d.set_item("parameter_tree_path", self.octet_list(&r.parameter_tree_path)?)?;
        let objs = match &r.object_list {
            None => self.none(),
            Some(v) => self.octet_list(v)?,
        };
        d.set_item("object_list", objs)?;
        d.set_item("das_details", self.opt_tree(r.das_details.as_ref())?)?;
        Ok(())
    }

    fn proc_set(&mut self, d: &Bound<'py, PyDict>, r: &SetProcParameterRequest<'_>) -> PyResult<()> {
        d.set_item("server_id", self.opt_bytes(r.server_id))?;
        d.set_item("username", self.opt_bytes(r.username))?;
        d.set_item("password", self.opt_bytes(r.password))?;
        d.set_item("parameter_tree_path", self.octet_list(&r.parameter_tree_path)?)?;
        d.set_item("parameter_tree", self.tree(&r.parameter_tree)?)?;
        Ok(())
    }

    fn get_list_response(&mut self, d: &Bound<'py, PyDict>, r: &GetListResponse<'_>) -> PyResult<()> {
        let py = self.py;
        if let Some(c) = &r.client_id {
            d.set_item(intern!(py, "client_id"), self.bytes(c))?;
        }
        d.set_item(intern!(py, "server_id"), self.server_id(r.server_id))?;
        if let Some(n) = &r.list_name {
            d.set_item(intern!(py, "list_name"), self.obis(n))?;
        }
        if let Some(t) = &r.act_sensor_time {
            d.set_item(intern!(py, "act_sensor_time"), self.time(t)?)?;
        }
        let values = r.values.iter().map(|e| self.entry(e)).collect::<PyResult<Vec<_>>>()?;
        d.set_item(intern!(py, "values"), PyList::new(py, values)?)?;
        if let Some(sig) = &r.list_signature {
            d.set_item(intern!(py, "list_signature"), self.bytes(sig))?;
        }
        if let Some(t) = &r.act_gateway_time {
            d.set_item(intern!(py, "act_gateway_time"), self.time(t)?)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_lines)]
    fn body(&mut self, b: &Body<'_>) -> PyResult<Obj<'py>> {
        let py = self.py;
        let d = if matches!(b, Body::GetListResponse(_)) {
            record!(
                self,
                T_GET_LIST,
                [
                    "client_id",
                    "server_id",
                    "list_name",
                    "act_sensor_time",
                    "values",
                    "list_signature",
                    "act_gateway_time"
                ]
            )?
        } else if matches!(b, Body::OpenResponse(_)) {
            record!(
                self,
                T_OPEN,
                ["codepage", "client_id", "req_file_id", "server_id", "ref_time", "sml_version"]
            )?
        } else if matches!(b, Body::CloseResponse { .. } | Body::CloseRequest { .. }) {
            record!(self, T_CLOSE, ["global_signature"])?
        } else {
            PyDict::new(py)
        };
        match b {
            Body::OpenRequest(r) => {
                d.set_item("codepage", self.opt_bytes(r.codepage))?;
                d.set_item("client_id", self.bytes(r.client_id))?;
                d.set_item("req_file_id", self.bytes(r.req_file_id))?;
                d.set_item("server_id", self.opt_bytes(r.server_id))?;
                d.set_item("username", self.opt_bytes(r.username))?;
                d.set_item("password", self.opt_bytes(r.password))?;
                d.set_item("sml_version", r.sml_version)?;
            }
            Body::OpenResponse(r) => {
                if let Some(c) = &r.codepage {
                    d.set_item(intern!(py, "codepage"), self.bytes(c))?;
                }
                if let Some(c) = &r.client_id {
                    d.set_item(intern!(py, "client_id"), self.bytes(c))?;
                }
                d.set_item(intern!(py, "req_file_id"), self.bytes(r.req_file_id))?;
                d.set_item(intern!(py, "server_id"), self.server_id(r.server_id))?;
                if let Some(t) = &r.ref_time {
                    d.set_item(intern!(py, "ref_time"), self.time(t)?)?;
                }
                if let Some(v) = r.sml_version {
                    d.set_item(intern!(py, "sml_version"), v)?;
                }
            }
            Body::CloseRequest { global_signature } | Body::CloseResponse { global_signature } => {
                if let Some(sig) = global_signature {
                    d.set_item(intern!(py, "global_signature"), self.bytes(sig))?;
                }
            }
            Body::GetProfilePackRequest(r) | Body::GetProfileListRequest(r) => self.profile_request(&d, r)?,
            Body::GetProfilePackResponse(r) => {
                d.set_item("server_id", self.bytes(r.server_id))?;
                d.set_item("act_time", self.time(&r.act_time)?)?;
                d.set_item("reg_period", r.reg_period)?;
                d.set_item("parameter_tree_path", self.octet_list(&r.parameter_tree_path)?)?;
                let headers = PyList::empty(py);
                for h in &r.header_list {
                    let hd = PyDict::new(py);
                    hd.set_item("obis", self.obis(h.obj_name))?;
                    hd.set_item("unit", h.unit)?;
                    hd.set_item("unit_symbol", self.unit_symbol(Some(h.unit)))?;
                    hd.set_item("scaler", h.scaler)?;
                    headers.append(hd)?;
                }
                d.set_item("header_list", headers)?;
                let periods = PyList::empty(py);
                for p in &r.period_list {
                    let pd = PyDict::new(py);
                    pd.set_item("val_time", self.time(&p.val_time)?)?;
                    pd.set_item("status", p.status)?;
                    let vals = PyList::empty(py);
                    for v in &p.values {
                        let vd = PyDict::new(py);
                        vd.set_item("value", self.raw(v.value.as_ref())?)?;
                        vd.set_item("value_signature", self.opt_bytes(v.value_signature))?;
                        vals.append(vd)?;
                    }
                    pd.set_item("values", vals)?;
                    pd.set_item("period_signature", self.opt_bytes(p.period_signature))?;
                    periods.append(pd)?;
                }
                d.set_item("period_list", periods)?;
                d.set_item("rawdata", self.opt_bytes(r.rawdata))?;
                d.set_item("profile_signature", self.opt_bytes(r.profile_signature))?;
            }
            Body::GetProfileListResponse(r) => {
                d.set_item("server_id", self.bytes(r.server_id))?;
                d.set_item("act_time", self.time(&r.act_time)?)?;
                d.set_item("reg_period", r.reg_period)?;
                d.set_item("parameter_tree_path", self.octet_list(&r.parameter_tree_path)?)?;
                d.set_item("val_time", self.time(&r.val_time)?)?;
                d.set_item("status", r.status)?;
                let periods = PyList::empty(py);
                for p in &r.period_list {
                    periods.append(self.period_entry(p)?)?;
                }
                d.set_item("period_list", periods)?;
                d.set_item("rawdata", self.opt_bytes(r.rawdata))?;
                d.set_item("period_signature", self.opt_bytes(r.period_signature))?;
            }
            Body::GetProcParameterRequest(r) => {
                d.set_item("server_id", self.opt_bytes(r.server_id))?;
                d.set_item("username", self.opt_bytes(r.username))?;
                d.set_item("password", self.opt_bytes(r.password))?;
                d.set_item("parameter_tree_path", self.octet_list(&r.parameter_tree_path)?)?;
                d.set_item("attribute", self.opt_bytes(r.attribute))?;
            }
            Body::GetProcParameterResponse(r) => {
                d.set_item("server_id", self.bytes(r.server_id))?;
                d.set_item("parameter_tree_path", self.octet_list(&r.parameter_tree_path)?)?;
                d.set_item("parameter_tree", self.tree(&r.parameter_tree)?)?;
            }
            Body::SetProcParameterRequest(r) | Body::SetProcParameterResponse(r) => self.proc_set(&d, r)?,
            Body::GetListRequest(r) => {
                d.set_item("client_id", self.bytes(r.client_id))?;
                d.set_item("server_id", self.opt_bytes(r.server_id))?;
                d.set_item("username", self.opt_bytes(r.username))?;
                d.set_item("password", self.opt_bytes(r.password))?;
                let list_name = match &r.list_name {
                    None => self.none(),
                    Some(n) => self.obis(n),
                };
                d.set_item("list_name", list_name)?;
            }
            Body::GetListResponse(r) => self.get_list_response(&d, r)?,
            Body::AttentionResponse(r) => {
                d.set_item("server_id", self.bytes(r.server_id))?;
                d.set_item("attention_no", self.bytes(r.attention_no))?;
                d.set_item("attention_msg", self.opt_bytes(r.attention_msg))?;
                d.set_item("attention_details", self.opt_tree(r.attention_details.as_ref())?)?;
            }
            Body::Unknown { tag, raw } => {
                d.set_item("tag", *tag)?;
                d.set_item("raw", self.bytes(raw))?;
            }
        }
        Ok(d.into_any())
    }

    /// A fresh message dict: the template with group_no/abort_on_error 0 and
    /// crc_ok true.
    fn message_base(&self) -> PyResult<Bound<'py, PyDict>> {
        record!(
            self,
            T_MESSAGE,
            ["type", "transaction_id", "group_no", "abort_on_error", "crc_ok", "error", "body"],
            [("group_no", self.int(0u8)?), ("abort_on_error", self.int(0u8)?), ("crc_ok", self.int(true)?)]
        )
    }

    /// A fresh message dict with `type` already in: one template per body kind.
    fn message_dict(&mut self, body: &Body<'_>) -> PyResult<Bound<'py, PyDict>> {
        let py = self.py;
        let tag = body.tag();
        if let Some(t) = self.strings.messages.get(&tag) {
            return t.bind(py).copy();
        }
        let d = self.message_base()?;
        d.set_item(intern!(py, "type"), self.type_name(body))?;
        if self.strings.messages.len() < MESSAGE_TEMPLATE_LIMIT {
            let copy = d.copy()?;
            self.strings.messages.insert(tag, d.unbind());
            return Ok(copy);
        }
        Ok(d)
    }

    fn message(&mut self, m: &MessageResult<'_>) -> PyResult<Obj<'py>> {
        let py = self.py;
        let d = match m {
            MessageResult::Ok(m) => self.message_dict(&m.body)?,
            MessageResult::Err { .. } => self.message_base()?,
        };
        match m {
            MessageResult::Ok(m) => {
                d.set_item(intern!(py, "transaction_id"), self.bytes(m.transaction_id))?;
                if m.group_no != 0 {
                    d.set_item(intern!(py, "group_no"), m.group_no)?;
                }
                if m.abort_on_error != 0 {
                    d.set_item(intern!(py, "abort_on_error"), m.abort_on_error)?;
                }
                if !m.crc_ok {
                    d.set_item(intern!(py, "crc_ok"), false)?;
                }
                if let Body::Unknown { tag, .. } = &m.body {
                    d.set_item(intern!(py, "error"), format!("unknown message body tag {tag:#06x}"))?;
                }
                d.set_item(intern!(py, "body"), self.body(&m.body)?)?;
            }
            MessageResult::Err { offset, error, .. } => {
                d.set_item(intern!(py, "type"), "Invalid")?;
                d.set_item(intern!(py, "transaction_id"), self.none())?;
                d.set_item(intern!(py, "group_no"), self.none())?;
                d.set_item(intern!(py, "abort_on_error"), self.none())?;
                d.set_item(intern!(py, "crc_ok"), false)?;
                d.set_item(intern!(py, "error"), format!("message at payload byte {offset}: {error}"))?;
                d.set_item(intern!(py, "body"), PyDict::new(py))?;
            }
        }
        Ok(d.into_any())
    }

    pub(super) fn frame(&mut self, f: &Frame<'_>) -> PyResult<Obj<'py>> {
        let py = self.py;
        // Preset for the common case, a good X-25 frame; the rest is written.
        let d = record!(
            self,
            T_FRAME,
            ["offset", "length", "ok", "error", "detail", "crc", "messages"],
            [("ok", self.int(true)?), ("crc", intern!(py, "x25").clone().into_any())]
        )?;
        d.set_item(intern!(py, "offset"), f.offset)?;
        d.set_item(intern!(py, "length"), f.length)?;
        if !matches!(f.outcome, Outcome::Ok(_)) {
            d.set_item(intern!(py, "ok"), false)?;
            d.set_item(intern!(py, "error"), error_name(&f.outcome))?;
            d.set_item(intern!(py, "detail"), error_detail(&f.outcome))?;
        }
        match f.crc {
            Some(CrcKind::X25) => {}
            Some(CrcKind::Kermit) => d.set_item(intern!(py, "crc"), intern!(py, "kermit"))?,
            None => d.set_item(intern!(py, "crc"), py.None())?,
        }
        // Built at their final size: one allocation instead of append's regrowth.
        let messages = match &f.outcome {
            Outcome::Ok(ms) => ms.iter().map(|m| self.message(m)).collect::<PyResult<Vec<_>>>()?,
            _ => Vec::new(),
        };
        d.set_item(intern!(py, "messages"), PyList::new(py, messages)?)?;
        Ok(d.into_any())
    }
}

/// The error item that stands in for a frame the decoder could not handle.
pub(super) fn internal_error<'py>(
    py: Python<'py>,
    offset: u64,
    length: usize,
    why: &str,
) -> PyResult<Obj<'py>> {
    let d = PyDict::new(py);
    d.set_item("offset", offset)?;
    d.set_item("length", length)?;
    d.set_item("ok", false)?;
    d.set_item("error", "parse")?;
    d.set_item("detail", format!("internal decoder error: {why}"))?;
    d.set_item("crc", py.None())?;
    d.set_item("messages", PyList::empty(py))?;
    Ok(d.into_any())
}
