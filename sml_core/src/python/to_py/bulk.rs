//! `Decoder.feed` for bulk readers (a replay at full speed): per frame only
//! what the reading model takes from it, as tuples, instead of the frame,
//! message, body and entry dicts around it.
//!
//! CONTRACT (`sml.ListsFrame` in `smlogger/sml.py`): one item per frame, in
//! stream order, good and bad: `(offset, ok, lists)`, where `offset` is the
//! frame's `offset` in the whole fed stream and `lists` holds one
//! `(crc_ok, server_id, entries)` per GetListResponse of a good frame (empty
//! for a damaged one) and `entries` one `(obis, value, unit_symbol, raw,
//! scaler, status)` per list entry, each field as the entry dict of `feed`
//! has it. `tests/test_bulk_decode.py` checks both against each other over
//! every recording.

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyList, PyTuple};

use super::{Conv, Obj};
use crate::message::{Body, MessageResult};
use crate::python::{GcPause, PyDecoder};
use crate::value::ListEntry;
use crate::{Frame, Outcome};

impl<'py> Conv<'_, 'py> {
    /// One `(obis, value, unit_symbol, raw, scaler, status)` tuple: the fields
    /// of `entry()`'s dict that a reading needs, converted the same way.
    fn entry_tuple(&mut self, e: &ListEntry<'_>) -> PyResult<Obj<'py>> {
        let (raw, value) = match &e.value {
            Some(v) => self.converted(e, v)?,
            None => (self.none(), self.none()),
        };
        let fields = [
            self.obis(e.obj_name),
            value,
            self.unit_symbol(e.unit),
            raw,
            self.opt_int(e.scaler)?,
            self.opt_int(e.status)?,
        ];
        Ok(PyTuple::new(self.py, fields)?.into_any())
    }

    /// The `(offset, ok, lists)` item of one frame.
    fn lists_item(&mut self, f: &Frame<'_>) -> PyResult<Obj<'py>> {
        let py = self.py;
        let offset = self.int(f.offset)?;
        let Outcome::Ok(messages) = &f.outcome else {
            return Ok(PyTuple::new(py, [offset, self.int(false)?, PyList::empty(py).into_any()])?.into_any());
        };
        let lists = PyList::empty(py);
        for m in messages {
            let MessageResult::Ok(m) = m else { continue };
            let Body::GetListResponse(r) = &m.body else { continue };
            let entries = r.values.iter().map(|e| self.entry_tuple(e)).collect::<PyResult<Vec<_>>>()?;
            let list =
                [self.int(m.crc_ok)?, self.server_id(r.server_id), PyTuple::new(py, entries)?.into_any()];
            lists.append(PyTuple::new(py, list)?)?;
        }
        Ok(PyTuple::new(py, [offset, self.int(true)?, lists.into_any()])?.into_any())
    }
}

/// Feeds `data` to `decoder` (or, with `finish`, ends its stream) like
/// `Decoder.feed` / `Decoder.finish`, but returns every frame as an
/// `(offset, ok, lists)` tuple (see the module doc). Stats and state are the
/// decoder's own: both kinds of call may be mixed on one decoder.
#[pyfunction]
#[pyo3(signature = (decoder, data, *, finish = false))]
#[allow(clippy::needless_pass_by_value)] // PyO3 extracts arguments by value
pub(in crate::python) fn feed_lists<'py>(
    py: Python<'py>,
    decoder: &Bound<'py, PyDecoder>,
    data: PyBackedBytes,
    finish: bool,
) -> PyResult<Bound<'py, PyList>> {
    let mut decoder = decoder.try_borrow_mut()?;
    let mut pause = GcPause::new(py);
    let out = PyList::empty(py);
    // An internal error item (a frame the decoder could not handle) keeps its
    // offset and counts as a damaged frame.
    let failed = |item: Obj<'py>| -> PyResult<()> {
        let offset = item.get_item("offset")?;
        let ok = false.into_pyobject(py)?.to_owned().into_any();
        out.append(PyTuple::new(py, [offset, ok, PyList::empty(py).into_any()])?)
    };
    decoder
        .drive(py, &data, finish, &mut |conv, f| out.append(conv.lists_item(f)?), &mut |item| failed(item))?;
    pause.built(out.len());
    Ok(out)
}
