//! The Python binding, `smlogger._sml_core`. The only file that touches PyO3:
//! it turns decoded frames into plain dicts and dicts back into messages.
//!
//! Nothing here may let a panic reach Python: every call into the core runs
//! under `catch_unwind`, and a panic becomes an error item in the output.

use bumpalo::Bump;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};
use pyo3::{intern, IntoPyObjectExt};

use crate::crc::{CrcKind, CrcMode};
use crate::message::{
    AttentionResponse, Body, GetListRequest, GetListResponse, GetProcParameterRequest,
    GetProcParameterResponse, GetProfileListResponse, GetProfilePackResponse, GetProfileRequest, Message,
    MessageResult, OpenRequest, OpenResponse, ProfObjHeaderEntry, ProfObjPeriodEntry,
    SetProcParameterRequest, ValueEntry,
};
use crate::value::{quirk, ListEntry, PeriodEntry, ProcParValue, Time, TimeKind, Tree, TupelEntry, Value};
use crate::{obis, units, Frame, Outcome};

type Obj<'py> = Bound<'py, PyAny>;

/// Exact powers of ten as f64 (all of 10^0..=10^22 are representable), so
/// `raw / 10^k` is one correctly rounded division, the same number Python's
/// `float(Decimal(...))` gives.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18,
    1e19, 1e20, 1e21, 1e22,
];

/// Caches Python strings that repeat in every frame (OBIS names, unit symbols).
#[derive(Default)]
struct Strings {
    obis: FastMap<[u8; 6], Py<PyString>>,
    units: FastMap<u8, Py<PyString>>,
    /// Dicts with every key of a record mapped to None. Copying one and
    /// filling in values avoids the hashing, inserting and resizing that
    /// building each dict key by key costs (the bulk of the binding's time).
    templates: [Option<Py<PyDict>>; TEMPLATES],
    /// Meters repeat their server id in every message; bytes are immutable,
    /// so the last one is shared.
    server_id: Option<(Vec<u8>, Py<PyBytes>)>,
}

/// The caches are keyed by a handful of bytes from trusted-size input; a
/// multiply-rotate hash is plenty and much cheaper than SipHash per entry.
#[derive(Default)]
struct SmallKeyHasher(u64);

impl Hasher for SmallKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<SmallKeyHasher>>;

const TEMPLATES: usize = 7;
const T_FRAME: usize = 0;
const T_MESSAGE: usize = 1;
const T_ENTRY: usize = 2;
const T_TIME: usize = 3;
const T_GET_LIST: usize = 4;
const T_OPEN: usize = 5;
const T_CLOSE: usize = 6;

const OBIS_CACHE_LIMIT: usize = 4096;

struct Conv<'a, 'py> {
    py: Python<'py>,
    strings: &'a mut Strings,
}

impl<'py> Conv<'_, 'py> {
    /// A fresh dict with `keys` (all None), copied from a cached template.
    fn record(&mut self, which: usize, keys: &[&Bound<'py, PyString>]) -> PyResult<Bound<'py, PyDict>> {
        self.record_with(which, keys, &[])
    }

    /// Like [`Self::record`], with the most common values preset so that
    /// callers only write what differs from them.
    fn record_with(
        &mut self,
        which: usize,
        keys: &[&Bound<'py, PyString>],
        defaults: &[(&Bound<'py, PyString>, Obj<'py>)],
    ) -> PyResult<Bound<'py, PyDict>> {
        let py = self.py;
        if let Some(t) = &self.strings.templates[which] {
            return t.bind(py).copy();
        }
        let t = PyDict::new(py);
        for k in keys {
            t.set_item(*k, py.None())?;
        }
        for (k, v) in defaults {
            t.set_item(*k, v)?;
        }
        let copy = t.copy()?;
        self.strings.templates[which] = Some(t.unbind());
        Ok(copy)
    }

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
                let text = units::symbol(code).map_or_else(|| format!("?:{code}"), str::to_owned);
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
            self.record(T_TIME, &[intern!(py, "kind"), intern!(py, "value")])?
        };
        let kind = match t.kind {
            TimeKind::SecIndex => intern!(py, "sec_index"),
            TimeKind::Timestamp => intern!(py, "timestamp"),
            TimeKind::LocalTimestamp => intern!(py, "local_timestamp"),
        };
        d.set_item(intern!(py, "kind"), kind)?;
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

    /// `raw × 10^scaler`: an exact int for scaler >= 0, a float below.
    #[allow(clippy::many_single_char_names)]
    fn scaled(&mut self, v: Option<&Value<'_>>, raw: &Obj<'py>, scaler: Option<i8>) -> PyResult<Obj<'py>> {
        let n: i128 = match v {
            None => return Ok(self.none()),
            Some(Value::Int { value, .. }) => i128::from(*value),
            Some(Value::UInt { value, .. }) => i128::from(*value),
            Some(Value::Time(t)) => return self.int(t.value),
            Some(Value::Bool(_) | Value::Bytes(_)) => return Ok(raw.clone()),
        };
        let s = i32::from(scaler.unwrap_or(0));
        if s == 0 {
            return self.int(n);
        }
        if s > 0 {
            if let Some(m) = 10i128.checked_pow(s as u32).and_then(|p| n.checked_mul(p)) {
                return self.int(m);
            }
            let ten = 10i32.into_bound_py_any(self.py)?;
            return self.int(n)?.mul(ten.pow(s, self.py.None())?);
        }
        let k = (-s) as usize;
        let f = if n.unsigned_abs() < (1u128 << 53) && k < POW10.len() {
            #[allow(clippy::cast_precision_loss)] // |n| < 2^53: exact in f64
            let exact = n as f64;
            exact / POW10[k]
        } else {
            // Rust's float parser rounds correctly, like Python's float(str).
            format!("{n}e{s}").parse::<f64>().unwrap_or(f64::NAN)
        };
        self.int(f)
    }

    fn quirk(&self, bits: u8) -> PyResult<Obj<'py>> {
        if bits == 0 {
            return Ok(self.none());
        }
        let names: Vec<&str> = quirk::NAMES.iter().filter(|(b, _)| bits & b != 0).map(|(_, n)| *n).collect();
        self.int(names.join(","))
    }

    fn entry(&mut self, e: &ListEntry<'_>) -> PyResult<Obj<'py>> {
        let py = self.py;
        let d = self.record(
            T_ENTRY,
            &[
                intern!(py, "obis"),
                intern!(py, "status"),
                intern!(py, "val_time"),
                intern!(py, "unit"),
                intern!(py, "unit_symbol"),
                intern!(py, "scaler"),
                intern!(py, "raw"),
                intern!(py, "value"),
                intern!(py, "value_signature"),
                intern!(py, "quirk"),
            ],
        )?;
        // The template holds None for every key: only fields that are present
        // are written, which skips most of the dict work for typical entries.
        d.set_item(intern!(py, "obis"), self.obis(e.obj_name))?;
        if let Some(status) = e.status {
            d.set_item(intern!(py, "status"), status)?;
        }
        if let Some(t) = &e.val_time {
            d.set_item(intern!(py, "val_time"), self.time(t)?)?;
        }
        if let Some(unit) = e.unit {
            d.set_item(intern!(py, "unit"), unit)?;
            if unit != 0 {
                d.set_item(intern!(py, "unit_symbol"), self.unit_symbol(e.unit))?;
            }
        }
        if let Some(scaler) = e.scaler {
            d.set_item(intern!(py, "scaler"), scaler)?;
        }
        if e.value.is_some() {
            let raw = self.raw(e.value.as_ref())?;
            let value = if e.quirks & quirk::DZG_UNSIGNED_POWER == 0 {
                self.scaled(e.value.as_ref(), &raw, e.scaler)?
            } else {
                let fixed = e.corrected();
                let fixed_raw = self.raw(fixed.as_ref())?;
                self.scaled(fixed.as_ref(), &fixed_raw, e.scaler)?
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
        let values = PyList::empty(py);
        for e in &r.values {
            values.append(self.entry(e)?)?;
        }
        d.set_item(intern!(py, "values"), values)?;
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
            self.record(
                T_GET_LIST,
                &[
                    intern!(py, "client_id"),
                    intern!(py, "server_id"),
                    intern!(py, "list_name"),
                    intern!(py, "act_sensor_time"),
                    intern!(py, "values"),
                    intern!(py, "list_signature"),
                    intern!(py, "act_gateway_time"),
                ],
            )?
        } else if matches!(b, Body::OpenResponse(_)) {
            self.record(
                T_OPEN,
                &[
                    intern!(py, "codepage"),
                    intern!(py, "client_id"),
                    intern!(py, "req_file_id"),
                    intern!(py, "server_id"),
                    intern!(py, "ref_time"),
                    intern!(py, "sml_version"),
                ],
            )?
        } else if matches!(b, Body::CloseResponse { .. } | Body::CloseRequest { .. }) {
            self.record(T_CLOSE, &[intern!(py, "global_signature")])?
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

    fn message(&mut self, m: &MessageResult<'_>) -> PyResult<Obj<'py>> {
        let py = self.py;
        let zero = self.int(0u8)?;
        let d = self.record_with(
            T_MESSAGE,
            &[
                intern!(py, "type"),
                intern!(py, "transaction_id"),
                intern!(py, "group_no"),
                intern!(py, "abort_on_error"),
                intern!(py, "crc_ok"),
                intern!(py, "error"),
                intern!(py, "body"),
            ],
            &[
                (intern!(py, "group_no"), zero.clone()),
                (intern!(py, "abort_on_error"), zero),
                (intern!(py, "crc_ok"), self.int(true)?),
            ],
        )?;
        match m {
            MessageResult::Ok(m) => {
                d.set_item(intern!(py, "type"), self.type_name(&m.body))?;
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

    fn frame(&mut self, f: &Frame<'_>) -> PyResult<Obj<'py>> {
        let py = self.py;
        let d = self.record(
            T_FRAME,
            &[
                intern!(py, "offset"),
                intern!(py, "length"),
                intern!(py, "ok"),
                intern!(py, "error"),
                intern!(py, "detail"),
                intern!(py, "crc"),
                intern!(py, "messages"),
            ],
        )?;
        d.set_item(intern!(py, "offset"), f.offset)?;
        d.set_item(intern!(py, "length"), f.length)?;
        let ok = matches!(f.outcome, Outcome::Ok(_));
        d.set_item(intern!(py, "ok"), ok)?;
        if !ok {
            d.set_item(intern!(py, "error"), f.outcome.error_kind())?;
            d.set_item(intern!(py, "detail"), f.outcome.error_detail())?;
        }
        if let Some(crc) = f.crc {
            let name = match crc {
                CrcKind::X25 => intern!(py, "x25"),
                CrcKind::Kermit => intern!(py, "kermit"),
            };
            d.set_item(intern!(py, "crc"), name)?;
        }
        let messages = PyList::empty(py);
        if let Outcome::Ok(ms) = &f.outcome {
            for m in ms {
                messages.append(self.message(m)?)?;
            }
        }
        d.set_item(intern!(py, "messages"), messages)?;
        Ok(d.into_any())
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// The error item that stands in for a frame the decoder could not handle.
fn internal_error<'py>(py: Python<'py>, offset: u64, length: usize, why: &str) -> PyResult<Obj<'py>> {
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

fn parse_mode(crc: &str) -> PyResult<CrcMode> {
    CrcMode::parse(crc)
        .ok_or_else(|| PyValueError::new_err(format!("crc must be 'auto', 'x25' or 'kermit', not {crc:?}")))
}

/// Streaming SML decoder. Feed bytes in any chunking; frames come out in
/// stream order as soon as they are complete.
#[pyclass(module = "smlogger._sml_core", name = "Decoder")]
pub struct PyDecoder {
    inner: crate::Decoder,
    mode: CrcMode,
    max_frame: usize,
    strings: Strings,
}

/// Pauses Python's cyclic garbage collector while a batch of frames is built.
/// The decoder creates many small dicts that never form cycles; without the
/// pause, the allocation-triggered collections rescan the growing result over
/// and over and cost more than the decoding itself (the same trick msgpack
/// documents). The previous state is restored on every exit path.
struct GcPause<'py> {
    gc: Option<Bound<'py, PyModule>>,
}

impl<'py> GcPause<'py> {
    fn new(py: Python<'py>) -> Self {
        let gc = py.import("gc").ok().filter(|gc| {
            gc.call_method0("isenabled").and_then(|v| v.is_truthy()).unwrap_or(false)
                && gc.call_method0("disable").is_ok()
        });
        GcPause { gc }
    }
}

impl Drop for GcPause<'_> {
    fn drop(&mut self) {
        if let Some(gc) = &self.gc {
            // Re-enabling cannot fail in practice; if it did, Python's state is beyond us.
            let _ = gc.call_method0("enable");
        }
    }
}

impl PyDecoder {
    fn run<'py>(&mut self, py: Python<'py>, data: &[u8], finish: bool) -> PyResult<Bound<'py, PyList>> {
        let _pause = GcPause::new(py);
        let out = PyList::empty(py);
        let mut first_err: Option<PyErr> = None;
        let strings = &mut self.strings;
        let inner = &mut self.inner;
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut on_frame = |f: Frame<'_>| {
                if first_err.is_some() {
                    return;
                }
                let mut conv = Conv { py, strings: &mut *strings };
                let item = catch_unwind(AssertUnwindSafe(|| conv.frame(&f)))
                    .unwrap_or_else(|p| internal_error(py, f.offset, f.length, &panic_text(&*p)));
                match item.and_then(|o| out.append(o)) {
                    Ok(()) => {}
                    Err(e) => first_err = Some(e),
                }
            };
            if finish {
                inner.finish(&mut on_frame);
            } else {
                inner.feed(data, &mut on_frame);
            }
        }));
        if let Err(p) = result {
            // The framer itself failed: start afresh so later input still decodes.
            let offset = inner.transport_stats().bytes;
            *inner = crate::Decoder::with_limit(self.mode, self.max_frame);
            out.append(internal_error(py, offset, 0, &panic_text(&*p))?)?;
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

#[pymethods]
impl PyDecoder {
    #[new]
    #[pyo3(signature = (crc = "auto", *, max_frame = crate::transport::DEFAULT_MAX_FRAME))]
    fn new(crc: &str, max_frame: usize) -> PyResult<Self> {
        let mode = parse_mode(crc)?;
        Ok(PyDecoder {
            inner: crate::Decoder::with_limit(mode, max_frame),
            mode,
            max_frame,
            strings: Strings::default(),
        })
    }

    /// Feeds a chunk; returns the frames it completes (good and bad).
    #[allow(clippy::needless_pass_by_value)] // PyO3 extracts arguments by value
    fn feed<'py>(&mut self, py: Python<'py>, data: PyBackedBytes) -> PyResult<Bound<'py, PyList>> {
        self.run(py, &data, false)
    }

    /// End of stream: a partial frame comes out as a "truncated" error item.
    fn finish<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        self.run(py, &[], true)
    }

    /// Counters since the decoder was created.
    #[getter]
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let t = self.inner.transport_stats();
        let m = self.inner.message_stats();
        let d = PyDict::new(py);
        d.set_item("bytes", t.bytes)?;
        d.set_item("frames_ok", t.frames_ok - m.parse_errors)?;
        d.set_item("crc_errors", t.crc_errors)?;
        d.set_item("truncated", t.truncated)?;
        d.set_item("escape_errors", t.escape_errors)?;
        d.set_item("too_long", t.too_long)?;
        d.set_item("parse_errors", m.parse_errors)?;
        d.set_item("discarded_bytes", t.discarded_bytes)?;
        d.set_item("messages", m.messages)?;
        d.set_item("message_errors", m.message_errors)?;
        d.set_item("message_crc_errors", m.message_crc_errors)?;
        d.set_item("crc_x25", t.crc_x25)?;
        d.set_item("crc_kermit", t.crc_kermit)?;
        d.set_item("buffered", self.inner.buffered())?;
        Ok(d)
    }

    #[getter]
    fn crc(&self) -> &'static str {
        match self.mode {
            CrcMode::Auto => "auto",
            CrcMode::X25 => "x25",
            CrcMode::Kermit => "kermit",
        }
    }
}

/// Decodes a whole buffer (same result as one `feed` plus `finish`).
#[pyfunction]
#[pyo3(signature = (data, *, crc = "auto", max_frame = crate::transport::DEFAULT_MAX_FRAME))]
#[allow(clippy::needless_pass_by_value)] // PyO3 extracts arguments by value
fn decode<'py>(
    py: Python<'py>,
    data: PyBackedBytes,
    crc: &str,
    max_frame: usize,
) -> PyResult<Bound<'py, PyList>> {
    let mut d = PyDecoder::new(crc, max_frame)?;
    let _pause = GcPause::new(py);
    let out = d.run(py, &data, false)?;
    for f in d.run(py, &[], true)? {
        out.append(f)?;
    }
    Ok(out)
}

// ---------------------------------------------------------------- encoding

fn get<'py>(d: &Bound<'py, PyDict>, key: &str) -> PyResult<Option<Obj<'py>>> {
    Ok(d.get_item(key)?.filter(|v| !v.is_none()))
}

fn field_err(key: &str, what: &str) -> PyErr {
    PyValueError::new_err(format!("{key}: {what}"))
}

fn req<'py>(d: &Bound<'py, PyDict>, key: &str) -> PyResult<Obj<'py>> {
    get(d, key)?.ok_or_else(|| field_err(key, "is required"))
}

fn to_bytes(v: &Obj<'_>, key: &str) -> PyResult<Vec<u8>> {
    if let Ok(s) = v.downcast::<PyString>() {
        return Ok(s.to_cow()?.as_bytes().to_vec());
    }
    v.extract::<Vec<u8>>().map_err(|_| field_err(key, "must be bytes"))
}

fn opt_b<'a>(d: &Bound<'_, PyDict>, key: &str, arena: &'a Bump) -> PyResult<Option<&'a [u8]>> {
    get(d, key)?.map(|v| to_bytes(&v, key).map(|b| &*arena.alloc_slice_copy(&b))).transpose()
}

fn req_b<'a>(d: &Bound<'_, PyDict>, key: &str, arena: &'a Bump) -> PyResult<&'a [u8]> {
    Ok(arena.alloc_slice_copy(&to_bytes(&req(d, key)?, key)?))
}

fn num<T: for<'a, 'py> FromPyObject<'py>>(v: &Obj<'_>, key: &str) -> PyResult<T> {
    v.extract::<T>().map_err(|_| field_err(key, "integer out of range"))
}

fn opt_n<T: for<'a, 'py> FromPyObject<'py>>(d: &Bound<'_, PyDict>, key: &str) -> PyResult<Option<T>> {
    get(d, key)?.map(|v| num::<T>(&v, key)).transpose()
}

fn as_dict<'py>(v: &Obj<'py>, key: &str) -> PyResult<Bound<'py, PyDict>> {
    v.downcast::<PyDict>().cloned().map_err(|_| PyTypeError::new_err(format!("{key}: must be a dict")))
}

fn obis_name<'a>(v: &Obj<'_>, key: &str, arena: &'a Bump) -> PyResult<&'a [u8]> {
    if let Ok(s) = v.downcast::<PyString>() {
        let text = s.to_cow()?;
        return obis::parse_any(&text)
            .map(|b| &*arena.alloc_slice_copy(&b))
            .ok_or_else(|| field_err(key, &format!("{text:?} is no OBIS code (A-B:C.D.E*F) or hex")));
    }
    Ok(arena.alloc_slice_copy(&to_bytes(v, key)?))
}

fn time_from(v: &Obj<'_>, key: &str) -> PyResult<Time> {
    if let Ok(n) = v.extract::<u32>() {
        return Ok(Time::sec_index(n));
    }
    let d = as_dict(v, key)?;
    let value: u32 = num(&req(&d, "value")?, "value")?;
    let kind: String = get(&d, "kind")?.map_or(Ok("sec_index".to_owned()), |k| k.extract())?;
    let kind = match kind.as_str() {
        "sec_index" => TimeKind::SecIndex,
        "timestamp" => TimeKind::Timestamp,
        "local_timestamp" => TimeKind::LocalTimestamp,
        other => return Err(field_err(key, &format!("unknown time kind {other:?}"))),
    };
    Ok(Time {
        kind,
        value,
        local_offset: opt_n(&d, "local_offset")?.unwrap_or(0),
        season_offset: opt_n(&d, "season_time_offset")?.unwrap_or(0),
        bare: false,
    })
}

fn opt_time(d: &Bound<'_, PyDict>, key: &str) -> PyResult<Option<Time>> {
    get(d, key)?.map(|v| time_from(&v, key)).transpose()
}

/// SML_Value from a Python value. `wire` (e.g. "int16", "uint24") forces the
/// type and width; otherwise negatives become Integer and the rest Unsigned,
/// both in the smallest width.
fn value_from<'a>(v: &Obj<'_>, wire: Option<&str>, key: &str, arena: &'a Bump) -> PyResult<Value<'a>> {
    if let Ok(b) = v.downcast::<pyo3::types::PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if v.downcast::<PyBytes>().is_ok() || v.downcast::<pyo3::types::PyByteArray>().is_ok() {
        return Ok(Value::Bytes(arena.alloc_slice_copy(&to_bytes(v, key)?)));
    }
    if v.downcast::<PyDict>().is_ok() {
        return Ok(Value::Time(time_from(v, key)?));
    }
    let n: i128 = num(v, key)?;
    let (signed, width) = match wire {
        None => (n < 0, 0u8),
        Some(w) => {
            let (signed, bits) = if let Some(b) = w.strip_prefix("uint") {
                (false, b)
            } else if let Some(b) = w.strip_prefix("int") {
                (true, b)
            } else {
                return Err(field_err("wire", "must look like 'int16' or 'uint24'"));
            };
            let bits: u8 = bits.parse().map_err(|_| field_err("wire", "bad width"))?;
            if bits % 8 != 0 || bits == 0 || bits > 64 {
                return Err(field_err("wire", "width must be 8..64 in steps of 8"));
            }
            (signed, bits / 8)
        }
    };
    Ok(if signed {
        let value = i64::try_from(n).map_err(|_| field_err(key, "does not fit Integer64"))?;
        if width > 0 && width < 8 && crate::encode::int_width(value) > width {
            return Err(field_err(key, "does not fit the wire width"));
        }
        Value::Int { value, width: width.max(crate::encode::int_width(value)) }
    } else {
        let value = u64::try_from(n).map_err(|_| field_err(key, "does not fit Unsigned64"))?;
        if width > 0 && width < 8 && crate::encode::uint_width(value) > width {
            return Err(field_err(key, "does not fit the wire width"));
        }
        Value::UInt { value, width: width.max(crate::encode::uint_width(value)) }
    })
}

fn entry_from<'a>(v: &Obj<'_>, arena: &'a Bump) -> PyResult<ListEntry<'a>> {
    let d = as_dict(v, "values[]")?;
    let wire: Option<String> = get(&d, "wire")?.map(|w| w.extract()).transpose()?;
    let value = get(&d, "raw")?.map(|r| value_from(&r, wire.as_deref(), "raw", arena)).transpose()?;
    Ok(ListEntry {
        obj_name: obis_name(&req(&d, "obis")?, "obis", arena)?,
        status: opt_n(&d, "status")?,
        val_time: opt_time(&d, "val_time")?,
        unit: opt_n(&d, "unit")?,
        scaler: opt_n(&d, "scaler")?,
        quirks: if value.is_none() { quirk::MISSING_VALUE } else { 0 },
        value,
        value_signature: opt_b(&d, "value_signature", arena)?,
    })
}

fn octet_list_from<'a>(d: &Bound<'_, PyDict>, key: &str, arena: &'a Bump) -> PyResult<Vec<&'a [u8]>> {
    let Some(v) = get(d, key)? else {
        return Ok(Vec::new());
    };
    v.try_iter()?.map(|b| Ok(&*arena.alloc_slice_copy(&to_bytes(&b?, key)?))).collect()
}

fn period_from<'a>(v: &Obj<'_>, arena: &'a Bump) -> PyResult<PeriodEntry<'a>> {
    let d = as_dict(v, "period_list[]")?;
    Ok(PeriodEntry {
        obj_name: obis_name(&req(&d, "obis")?, "obis", arena)?,
        unit: opt_n(&d, "unit")?,
        scaler: opt_n(&d, "scaler")?,
        value: get(&d, "raw")?.map(|r| value_from(&r, None, "raw", arena)).transpose()?,
        value_signature: opt_b(&d, "value_signature", arena)?,
    })
}

fn tree_from<'a>(v: &Obj<'_>, depth: usize, arena: &'a Bump) -> PyResult<Tree<'a>> {
    if depth > crate::tl::MAX_DEPTH {
        return Err(PyValueError::new_err("parameter tree nested too deep"));
    }
    let d = as_dict(v, "tree")?;
    let parameter_value = match get(&d, "parameter_value")? {
        None => None,
        Some(pv) => {
            let pv = as_dict(&pv, "parameter_value")?;
            let kind: String = req(&pv, "kind")?.extract()?;
            let val = req(&pv, "value")?;
            Some(match kind.as_str() {
                "value" => ProcParValue::Value(value_from(&val, None, "value", arena)?),
                "time" => ProcParValue::Time(time_from(&val, "value")?),
                "period_entry" => ProcParValue::PeriodEntry(period_from(&val, arena)?),
                "list_entry" => ProcParValue::ListEntry(Box::new(entry_from(&val, arena)?)),
                other => return Err(field_err("parameter_value.kind", &format!("unsupported {other:?}"))),
            })
        }
    };
    let children = match get(&d, "children")? {
        None => None,
        Some(c) => {
            Some(c.try_iter()?.map(|t| tree_from(&t?, depth + 1, arena)).collect::<PyResult<Vec<_>>>()?)
        }
    };
    Ok(Tree { parameter_name: req_b(&d, "parameter_name", arena)?, parameter_value, children })
}

fn opt_tree<'a>(d: &Bound<'_, PyDict>, key: &str, arena: &'a Bump) -> PyResult<Option<Tree<'a>>> {
    get(d, key)?.map(|t| tree_from(&t, 0, arena)).transpose()
}

fn profile_request_from<'a>(b: &Bound<'_, PyDict>, arena: &'a Bump) -> PyResult<GetProfileRequest<'a>> {
    Ok(GetProfileRequest {
        server_id: opt_b(b, "server_id", arena)?,
        username: opt_b(b, "username", arena)?,
        password: opt_b(b, "password", arena)?,
        with_rawdata: get(b, "with_rawdata")?.map(|v| v.is_truthy()).transpose()?,
        begin_time: opt_time(b, "begin_time")?,
        end_time: opt_time(b, "end_time")?,
        parameter_tree_path: octet_list_from(b, "parameter_tree_path", arena)?,
        object_list: if get(b, "object_list")?.is_some() {
            Some(octet_list_from(b, "object_list", arena)?)
        } else {
            None
        },
        das_details: opt_tree(b, "das_details", arena)?,
    })
}

fn proc_set_from<'a>(b: &Bound<'_, PyDict>, arena: &'a Bump) -> PyResult<SetProcParameterRequest<'a>> {
    Ok(SetProcParameterRequest {
        server_id: opt_b(b, "server_id", arena)?,
        username: opt_b(b, "username", arena)?,
        password: opt_b(b, "password", arena)?,
        parameter_tree_path: octet_list_from(b, "parameter_tree_path", arena)?,
        parameter_tree: tree_from(&req(b, "parameter_tree")?, 0, arena)?,
    })
}

#[allow(clippy::too_many_lines)]
fn body_from<'a>(kind: &str, b: &Bound<'_, PyDict>, arena: &'a Bump) -> PyResult<Body<'a>> {
    Ok(match kind {
        "OpenRequest" => Body::OpenRequest(OpenRequest {
            codepage: opt_b(b, "codepage", arena)?,
            client_id: req_b(b, "client_id", arena)?,
            req_file_id: req_b(b, "req_file_id", arena)?,
            server_id: opt_b(b, "server_id", arena)?,
            username: opt_b(b, "username", arena)?,
            password: opt_b(b, "password", arena)?,
            sml_version: opt_n(b, "sml_version")?,
        }),
        "OpenResponse" => Body::OpenResponse(OpenResponse {
            codepage: opt_b(b, "codepage", arena)?,
            client_id: opt_b(b, "client_id", arena)?,
            req_file_id: req_b(b, "req_file_id", arena)?,
            server_id: req_b(b, "server_id", arena)?,
            ref_time: opt_time(b, "ref_time")?,
            sml_version: opt_n(b, "sml_version")?,
        }),
        "CloseRequest" => Body::CloseRequest { global_signature: opt_b(b, "global_signature", arena)? },
        "CloseResponse" => Body::CloseResponse { global_signature: opt_b(b, "global_signature", arena)? },
        "GetProfilePackRequest" => Body::GetProfilePackRequest(Box::new(profile_request_from(b, arena)?)),
        "GetProfileListRequest" => Body::GetProfileListRequest(Box::new(profile_request_from(b, arena)?)),
        "GetProfilePackResponse" => {
            let mut header_list = Vec::new();
            if let Some(hs) = get(b, "header_list")? {
                for h in hs.try_iter()? {
                    let h = as_dict(&h?, "header_list[]")?;
                    header_list.push(ProfObjHeaderEntry {
                        obj_name: obis_name(&req(&h, "obis")?, "obis", arena)?,
                        unit: num(&req(&h, "unit")?, "unit")?,
                        scaler: num(&req(&h, "scaler")?, "scaler")?,
                    });
                }
            }
            let mut period_list = Vec::new();
            if let Some(ps) = get(b, "period_list")? {
                for p in ps.try_iter()? {
                    let p = as_dict(&p?, "period_list[]")?;
                    let mut values = Vec::new();
                    if let Some(vs) = get(&p, "values")? {
                        for v in vs.try_iter()? {
                            let v = as_dict(&v?, "values[]")?;
                            values.push(ValueEntry {
                                value: get(&v, "value")?
                                    .map(|x| value_from(&x, None, "value", arena))
                                    .transpose()?,
                                value_signature: opt_b(&v, "value_signature", arena)?,
                            });
                        }
                    }
                    period_list.push(ProfObjPeriodEntry {
                        val_time: time_from(&req(&p, "val_time")?, "val_time")?,
                        status: num(&req(&p, "status")?, "status")?,
                        values,
                        period_signature: opt_b(&p, "period_signature", arena)?,
                    });
                }
            }
            Body::GetProfilePackResponse(Box::new(GetProfilePackResponse {
                server_id: req_b(b, "server_id", arena)?,
                act_time: time_from(&req(b, "act_time")?, "act_time")?,
                reg_period: num(&req(b, "reg_period")?, "reg_period")?,
                parameter_tree_path: octet_list_from(b, "parameter_tree_path", arena)?,
                header_list,
                period_list,
                rawdata: opt_b(b, "rawdata", arena)?,
                profile_signature: opt_b(b, "profile_signature", arena)?,
            }))
        }
        "GetProfileListResponse" => {
            let mut period_list = Vec::new();
            if let Some(ps) = get(b, "period_list")? {
                for p in ps.try_iter()? {
                    period_list.push(period_from(&p?, arena)?);
                }
            }
            Body::GetProfileListResponse(Box::new(GetProfileListResponse {
                server_id: req_b(b, "server_id", arena)?,
                act_time: time_from(&req(b, "act_time")?, "act_time")?,
                reg_period: num(&req(b, "reg_period")?, "reg_period")?,
                parameter_tree_path: octet_list_from(b, "parameter_tree_path", arena)?,
                val_time: time_from(&req(b, "val_time")?, "val_time")?,
                status: num(&req(b, "status")?, "status")?,
                period_list,
                rawdata: opt_b(b, "rawdata", arena)?,
                period_signature: opt_b(b, "period_signature", arena)?,
            }))
        }
        "GetProcParameterRequest" => Body::GetProcParameterRequest(Box::new(GetProcParameterRequest {
            server_id: opt_b(b, "server_id", arena)?,
            username: opt_b(b, "username", arena)?,
            password: opt_b(b, "password", arena)?,
            parameter_tree_path: octet_list_from(b, "parameter_tree_path", arena)?,
            attribute: opt_b(b, "attribute", arena)?,
        })),
        "GetProcParameterResponse" => Body::GetProcParameterResponse(Box::new(GetProcParameterResponse {
            server_id: req_b(b, "server_id", arena)?,
            parameter_tree_path: octet_list_from(b, "parameter_tree_path", arena)?,
            parameter_tree: tree_from(&req(b, "parameter_tree")?, 0, arena)?,
        })),
        "SetProcParameterRequest" => Body::SetProcParameterRequest(Box::new(proc_set_from(b, arena)?)),
        "SetProcParameterResponse" => Body::SetProcParameterResponse(Box::new(proc_set_from(b, arena)?)),
        "GetListRequest" => Body::GetListRequest(Box::new(GetListRequest {
            client_id: req_b(b, "client_id", arena)?,
            server_id: opt_b(b, "server_id", arena)?,
            username: opt_b(b, "username", arena)?,
            password: opt_b(b, "password", arena)?,
            list_name: get(b, "list_name")?.map(|n| obis_name(&n, "list_name", arena)).transpose()?,
        })),
        "GetListResponse" => {
            let values = match get(b, "values")? {
                None => Vec::new(),
                Some(vs) => vs.try_iter()?.map(|e| entry_from(&e?, arena)).collect::<PyResult<Vec<_>>>()?,
            };
            Body::GetListResponse(GetListResponse {
                client_id: opt_b(b, "client_id", arena)?,
                server_id: req_b(b, "server_id", arena)?,
                list_name: get(b, "list_name")?.map(|n| obis_name(&n, "list_name", arena)).transpose()?,
                act_sensor_time: opt_time(b, "act_sensor_time")?,
                values,
                list_signature: opt_b(b, "list_signature", arena)?,
                act_gateway_time: opt_time(b, "act_gateway_time")?,
            })
        }
        "AttentionResponse" => Body::AttentionResponse(Box::new(AttentionResponse {
            server_id: req_b(b, "server_id", arena)?,
            attention_no: req_b(b, "attention_no", arena)?,
            attention_msg: opt_b(b, "attention_msg", arena)?,
            attention_details: opt_tree(b, "attention_details", arena)?,
        })),
        "Unknown" => Body::Unknown { tag: num(&req(b, "tag")?, "tag")?, raw: req_b(b, "raw", arena)? },
        other => return Err(PyValueError::new_err(format!("type: unknown message type {other:?}"))),
    })
}

fn message_from<'a>(v: &Obj<'_>, arena: &'a Bump) -> PyResult<Message<'a>> {
    let d = as_dict(v, "message")?;
    let kind: String = req(&d, "type")?.extract().map_err(|_| field_err("type", "must be a str"))?;
    let body = match get(&d, "body")? {
        Some(b) => as_dict(&b, "body")?,
        None => PyDict::new(d.py()),
    };
    Ok(Message {
        transaction_id: opt_b(&d, "transaction_id", arena)?.unwrap_or(b"\x00"),
        group_no: opt_n(&d, "group_no")?.unwrap_or(0),
        abort_on_error: opt_n(&d, "abort_on_error")?.unwrap_or(0),
        body: body_from(&kind, &body, arena)?,
        crc: None,
        crc_ok: true,
    })
}

fn crc_kind(crc: &str) -> PyResult<CrcKind> {
    match crc {
        "x25" => Ok(CrcKind::X25),
        "kermit" => Ok(CrcKind::Kermit),
        other => Err(PyValueError::new_err(format!("crc must be 'x25' or 'kermit', not {other:?}"))),
    }
}

/// Encodes message dicts (shaped like `decode()` output) into one transport frame.
#[pyfunction]
#[pyo3(signature = (messages, *, crc = "x25"))]
fn encode<'py>(py: Python<'py>, messages: &Obj<'py>, crc: &str) -> PyResult<Bound<'py, PyBytes>> {
    let kind = crc_kind(crc)?;
    // Byte strings are copied once into an arena the messages borrow from.
    let arena = Bump::new();
    let msgs = messages.try_iter()?.map(|m| message_from(&m?, &arena)).collect::<PyResult<Vec<_>>>()?;
    let bytes = catch_unwind(AssertUnwindSafe(|| crate::encode::encode(&msgs, kind)))
        .map_err(|p| PyValueError::new_err(format!("internal encoder error: {}", panic_text(&*p))))?;
    Ok(PyBytes::new(py, &bytes))
}

/// Wraps an already encoded SML file in a transport frame.
#[pyfunction]
#[pyo3(signature = (payload, *, crc = "x25"))]
fn frame<'py>(py: Python<'py>, payload: &[u8], crc: &str) -> PyResult<Bound<'py, PyBytes>> {
    Ok(PyBytes::new(py, &crate::encode::frame(payload, crc_kind(crc)?)))
}

#[pyfunction]
fn crc16_x25(data: &[u8]) -> u16 {
    crate::crc::x25(data)
}

#[pyfunction]
fn crc16_kermit(data: &[u8]) -> u16 {
    crate::crc::kermit(data)
}

#[pyfunction]
fn obis_to_str(name: &[u8]) -> String {
    obis::to_string(name)
}

#[pyfunction]
fn obis_from_str<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyBytes>> {
    obis::parse_any(text)
        .map(|b| PyBytes::new(py, &b))
        .ok_or_else(|| PyValueError::new_err(format!("{text:?} is no OBIS code")))
}

#[pyfunction]
fn unit_symbol(code: u8) -> Option<String> {
    if code == 0 {
        return None;
    }
    Some(units::symbol(code).map_or_else(|| format!("?:{code}"), str::to_owned))
}

/// Frames-only pass over a buffer without building Python objects: returns
/// (frames_ok, bytes). Used by `smlogger bench` to show the core's own speed.
#[pyfunction]
#[pyo3(signature = (data, *, crc = "auto"))]
fn count_frames(py: Python<'_>, data: &[u8], crc: &str) -> PyResult<(u64, u64)> {
    let mode = parse_mode(crc)?;
    py.allow_threads(|| {
        catch_unwind(|| {
            let mut ok = 0u64;
            crate::decode_with(data, mode, |f| {
                if let Outcome::Ok(ms) = &f.outcome {
                    ok += 1;
                    std::hint::black_box(ms);
                }
            });
            (ok, data.len() as u64)
        })
        .map_err(|p| PyValueError::new_err(format!("internal decoder error: {}", panic_text(&*p))))
    })
}

#[pymodule]
fn _sml_core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DEFAULT_MAX_FRAME", crate::transport::DEFAULT_MAX_FRAME)?;
    m.add_class::<PyDecoder>()?;
    m.add_function(wrap_pyfunction!(decode, m)?)?;
    m.add_function(wrap_pyfunction!(encode, m)?)?;
    m.add_function(wrap_pyfunction!(frame, m)?)?;
    m.add_function(wrap_pyfunction!(crc16_x25, m)?)?;
    m.add_function(wrap_pyfunction!(crc16_kermit, m)?)?;
    m.add_function(wrap_pyfunction!(obis_to_str, m)?)?;
    m.add_function(wrap_pyfunction!(obis_from_str, m)?)?;
    m.add_function(wrap_pyfunction!(unit_symbol, m)?)?;
    m.add_function(wrap_pyfunction!(count_frames, m)?)?;
    Ok(())
}
