//! Python → Rust for the encoder: message dicts shaped like `decode()` output
//! become [`Message`]s borrowing from one arena. Every error names the key
//! and what is allowed.

use bumpalo::Bump;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use crate::crc::CrcKind;
use crate::message::{
    AttentionResponse, Body, GetListRequest, GetListResponse, GetProcParameterRequest,
    GetProcParameterResponse, GetProfileListResponse, GetProfilePackResponse, GetProfileRequest, Message,
    OpenRequest, OpenResponse, ProfObjHeaderEntry, ProfObjPeriodEntry, SetProcParameterRequest, ValueEntry,
};
use crate::obis;
use crate::value::{quirk, ListEntry, PeriodEntry, ProcParValue, Time, TimeKind, Tree, Value};

type Obj<'py> = Bound<'py, PyAny>;

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
            if !bits.is_multiple_of(8) || bits == 0 || bits > 64 {
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

pub(super) fn message_from<'a>(v: &Obj<'_>, arena: &'a Bump) -> PyResult<Message<'a>> {
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

pub(super) fn crc_kind(crc: &str) -> PyResult<CrcKind> {
    match crc {
        "x25" => Ok(CrcKind::X25),
        "kermit" => Ok(CrcKind::Kermit),
        other => Err(PyValueError::new_err(format!("crc must be 'x25' or 'kermit', not {other:?}"))),
    }
}
