//! `Decoder.feed` for bulk readers (a replay at full speed): per frame only
//! what the reading model takes from it, its values by OBIS code as objects
//! of the caller's value class, instead of the frame, message, body and entry
//! dicts around it.
//!
//! CONTRACT (`sml.ValuesFrame` in `smlogger/sml.py`): one item per frame, in
//! stream order, good and bad: `(offset, ok, lists)`, where `offset` is the
//! frame's `offset` in the whole fed stream and `lists` holds one
//! `(crc_ok, server_id, values, statuses)` per GetListResponse of a good frame
//! (empty for a damaged one). `values` maps each entry's `obis` to an object
//! of `value_type` whose `__dict__` is `{obis, value, unit, raw, scaler}`
//! (`unit` being the entry dict's `unit_symbol`), every field as the entry
//! dict of `feed` has it; `statuses` maps the `obis` of each entry that has a
//! status word to it. A later entry with the same OBIS code replaces an
//! earlier one, as assigning to a dict does. `tests/test_bulk_decode.py`
//! checks both paths against each other over every recording.
//!
//! The value objects are never changed after they are made (the reading
//! model's `Value` is a frozen dataclass), so a register that repeats its
//! value gets the object of its last frame again: fewer objects per frame,
//! and the compact store recognises such an entry by identity.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyDict, PyList, PyTuple, PyType};

use super::{entry_key, Conv, LastValue, Obj, ENTRY_TEMPLATE_LIMIT};
use crate::message::{Body, MessageResult};
use crate::python::{GcPause, PyDecoder};
use crate::value::ListEntry;
use crate::{Frame, Outcome};

/// A register's last value object and the wire value it was made from.
pub(in crate::python) struct MadeValue {
    last: LastValue,
    object: Py<PyAny>,
}

/// What every value object of one `feed_values` call is made with.
struct ValueClass<'py> {
    class: Bound<'py, PyType>,
    /// `object.__new__`: an instance without running the class's `__init__`
    /// (a frozen dataclass writes its fields one by one through
    /// `object.__setattr__`, the slow part of making one).
    new: Bound<'py, PyAny>,
}

impl<'py> Conv<'_, 'py> {
    /// The value object of one entry: the register's last one if its value is
    /// the same, else a new one (remembered for the next frame).
    fn value_object(
        &mut self,
        e: &ListEntry<'_>,
        obis: &Obj<'py>,
        class: &ValueClass<'py>,
    ) -> PyResult<Obj<'py>> {
        let py = self.py;
        // As for the entry dicts' raw/value objects: entries with quirks are
        // corrected on the way, so they are made afresh every time.
        let key = entry_key(e);
        let cacheable = e.value.as_ref().filter(|_| e.quirks == 0);
        if let (Some(k), Some(v)) = (&key, cacheable) {
            if let Some(made) = self.strings.values.get(k) {
                let object = made.object.bind(py);
                if made.last.is(v) && object.get_type().is(&class.class) {
                    return Ok(object.clone());
                }
            }
        }
        let (raw, value) = match &e.value {
            Some(v) => self.converted(e, v)?,
            None => (self.none(), self.none()),
        };
        let object = class.new.call1((&class.class,))?;
        let fields = object.getattr(intern!(py, "__dict__"))?.downcast_into::<PyDict>()?;
        fields.set_item(intern!(py, "obis"), obis)?;
        fields.set_item(intern!(py, "value"), value)?;
        fields.set_item(intern!(py, "unit"), self.unit_symbol(e.unit))?;
        fields.set_item(intern!(py, "raw"), raw)?;
        fields.set_item(intern!(py, "scaler"), self.opt_int(e.scaler)?)?;
        // (only a changed or new register gets here: its wire value is copied once)
        if let (Some(k), Some(last)) = (key, cacheable.and_then(LastValue::of)) {
            let values = &mut self.strings.values;
            if values.len() < ENTRY_TEMPLATE_LIMIT || values.contains_key(&k) {
                values.insert(k, MadeValue { last, object: object.clone().unbind() });
            }
        }
        Ok(object)
    }

    /// The `(offset, ok, lists)` item of one frame.
    fn values_item(&mut self, f: &Frame<'_>, class: &ValueClass<'py>) -> PyResult<Obj<'py>> {
        let py = self.py;
        let offset = self.int(f.offset)?;
        let Outcome::Ok(messages) = &f.outcome else {
            return Ok(PyTuple::new(py, [offset, self.int(false)?, PyList::empty(py).into_any()])?.into_any());
        };
        let lists = PyList::empty(py);
        for m in messages {
            let MessageResult::Ok(m) = m else { continue };
            let Body::GetListResponse(r) = &m.body else { continue };
            let values = PyDict::new(py);
            let statuses = PyDict::new(py);
            for e in &r.values {
                let obis = self.obis(e.obj_name);
                values.set_item(&obis, self.value_object(e, &obis, class)?)?;
                if let Some(status) = e.status {
                    statuses.set_item(&obis, status)?;
                }
            }
            let list =
                [self.int(m.crc_ok)?, self.server_id(r.server_id), values.into_any(), statuses.into_any()];
            lists.append(PyTuple::new(py, list)?)?;
        }
        Ok(PyTuple::new(py, [offset, self.int(true)?, lists.into_any()])?.into_any())
    }
}

/// Feeds `data` to `decoder` (or, with `finish`, ends its stream) like
/// `Decoder.feed` / `Decoder.finish`, but returns every frame as an
/// `(offset, ok, lists)` tuple with values made as `value_type` objects (see
/// the module doc). Stats and state are the decoder's own: both kinds of call
/// may be mixed on one decoder.
#[pyfunction]
#[pyo3(signature = (decoder, data, value_type, *, finish = false))]
#[allow(clippy::needless_pass_by_value)] // PyO3 extracts arguments by value
pub(in crate::python) fn feed_values<'py>(
    py: Python<'py>,
    decoder: &Bound<'py, PyDecoder>,
    data: PyBackedBytes,
    value_type: Bound<'py, PyType>,
    finish: bool,
) -> PyResult<Bound<'py, PyList>> {
    let mut decoder = decoder.try_borrow_mut()?;
    let class =
        ValueClass { new: py.get_type::<PyAny>().getattr(intern!(py, "__new__"))?, class: value_type };
    let mut pause = GcPause::new(py);
    let out = PyList::empty(py);
    // An internal error item (a frame the decoder could not handle) keeps its
    // offset and counts as a damaged frame.
    let failed = |item: Obj<'py>| -> PyResult<()> {
        let offset = item.get_item("offset")?;
        let ok = false.into_pyobject(py)?.to_owned().into_any();
        out.append(PyTuple::new(py, [offset, ok, PyList::empty(py).into_any()])?)
    };
    decoder.drive(
        py,
        &data,
        finish,
        &mut |conv, f| out.append(conv.values_item(f, &class)?),
        &mut |item| failed(item),
    )?;
    pause.built(out.len());
    Ok(out)
}
