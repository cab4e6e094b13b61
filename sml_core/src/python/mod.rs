//! The Python binding, `smlogger._sml_core`: the only module that touches
//! PyO3. Laid out like jiter's Python layer:
//!
//! - `mod.rs` (here): the module, the `Decoder` class and the functions;
//! - [`to_py`]: decoded frames → dicts (and the key/string caches);
//! - [`from_py`]: dicts → messages for the encoder.
//!
//! Nothing here may let a panic reach Python: every call into the core runs
//! under `catch_unwind`, and a panic becomes an error item in the output.

mod from_py;
mod to_py;

use bumpalo::Bump;
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use crate::crc::CrcMode;
use crate::{obis, Frame, Outcome};
use from_py::{crc_kind, message_from};
use to_py::{internal_error, unit_text, Conv, Strings};

type Obj<'py> = Bound<'py, PyAny>;

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
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
///
/// A large batch is also handed to the oldest generation on the way out (see
/// [`GcPause::promote`]).
struct GcPause<'py> {
    gc: Option<Bound<'py, PyModule>>,
    frames: usize,
}

/// Batches of at least this many frames are promoted (tens of thousands of
/// containers); smaller ones, such as a daemon's chunk per second, are left to
/// the collector's normal schedule.
const PROMOTE_FRAMES: usize = 1000;

impl<'py> GcPause<'py> {
    fn new(py: Python<'py>) -> Self {
        let gc = py.import("gc").ok().filter(|gc| {
            gc.call_method0("isenabled").and_then(|v| v.is_truthy()).unwrap_or(false)
                && gc.call_method0("disable").is_ok()
        });
        GcPause { gc, frames: 0 }
    }

    /// Notes `n` frames built under this pause.
    fn built(&mut self, n: usize) {
        self.frames += n;
    }

    /// Moves every tracked object to the oldest generation in O(1):
    /// `gc.freeze()` parks all tracked objects (and resets the young count),
    /// `gc.unfreeze()` puts them back into the oldest generation.
    ///
    /// Without it, the first allocation after a big `decode()` starts a young
    /// collection over every container just built (hundreds of thousands of
    /// dicts and lists; 0.2 s for the 20 MB benchmark stream, as long as the
    /// decoding itself), and the survivors are scanned again one generation
    /// up. The data stays tracked: cycles through it are still found by full
    /// collections, which are scheduled as before. Skipped when the program
    /// has frozen objects of its own, which `unfreeze()` would release.
    fn promote(gc: &Bound<'py, PyModule>) -> PyResult<()> {
        if gc.call_method0("get_freeze_count")?.extract::<usize>()? == 0 {
            gc.call_method0("freeze")?;
            gc.call_method0("unfreeze")?;
        }
        Ok(())
    }
}

impl Drop for GcPause<'_> {
    fn drop(&mut self) {
        if let Some(gc) = &self.gc {
            if self.frames >= PROMOTE_FRAMES {
                // Only a scheduling hint: if it fails, collection runs as usual.
                let _ = Self::promote(gc);
            }
            // Re-enabling cannot fail in practice; if it did, Python's state is beyond us.
            let _ = gc.call_method0("enable");
        }
    }
}

impl PyDecoder {
    /// Feeds `data` (or, with `finish`, ends the stream) and hands every frame
    /// to `on_frame`. A panic while handling one frame becomes an internal
    /// error item for `on_item`; a panic in the framer resets the decoder. The
    /// first Python error stops the handling of later frames and is returned.
    fn drive<'py>(
        &mut self,
        py: Python<'py>,
        data: &[u8],
        finish: bool,
        on_frame: &mut dyn FnMut(&mut Conv<'_, 'py>, &Frame<'_>) -> PyResult<()>,
        on_item: &mut dyn FnMut(Obj<'py>) -> PyResult<()>,
    ) -> PyResult<()> {
        let mut first_err: Option<PyErr> = None;
        let strings = &mut self.strings;
        let inner = &mut self.inner;
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut each = |f: Frame<'_>| {
                if first_err.is_some() {
                    return;
                }
                let mut conv = Conv { py, strings: &mut *strings };
                let done = catch_unwind(AssertUnwindSafe(|| on_frame(&mut conv, &f))).unwrap_or_else(|p| {
                    internal_error(py, f.offset, f.length, &panic_text(&*p)).and_then(&mut *on_item)
                });
                if let Err(e) = done {
                    first_err = Some(e);
                }
            };
            if finish {
                inner.finish(&mut each);
            } else {
                inner.feed(data, &mut each);
            }
        }));
        if let Err(p) = result {
            // The framer itself failed: start afresh so later input still decodes.
            let offset = inner.transport_stats().bytes;
            *inner = crate::Decoder::with_limit(self.mode, self.max_frame);
            on_item(internal_error(py, offset, 0, &panic_text(&*p))?)?;
        }
        first_err.map_or(Ok(()), Err)
    }

    fn run<'py>(&mut self, py: Python<'py>, data: &[u8], finish: bool) -> PyResult<Bound<'py, PyList>> {
        let mut pause = GcPause::new(py);
        let out = PyList::empty(py);
        self.drive(py, data, finish, &mut |conv, f| out.append(conv.frame(f)?), &mut |item| {
            out.append(item)
        })?;
        pause.built(out.len());
        Ok(out)
    }

    fn run_lines<'py>(
        &mut self,
        py: Python<'py>,
        data: &[u8],
        finish: bool,
    ) -> PyResult<(Bound<'py, PyString>, usize, Bound<'py, PyList>)> {
        let _pause = GcPause::new(py);
        let bad = PyList::empty(py);
        let mut text = String::new();
        let mut good = 0usize;
        let mut lines = String::new();
        self.drive(
            py,
            data,
            finish,
            &mut |conv, f| match &f.outcome {
                Outcome::Ok(messages) => {
                    // Into a scratch buffer first, so a panic cannot leave half a line.
                    lines.clear();
                    crate::text::write_messages(messages, &mut lines);
                    text.push_str(&lines);
                    good += 1;
                    Ok(())
                }
                _ => bad.append(conv.frame(f)?),
            },
            &mut |item| bad.append(item),
        )?;
        Ok((PyString::new(py, &text), good, bad))
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

    /// Like `feed` (then `finish` when `finish` is true), but the good frames
    /// come back as `sml_server` text, one `OBIS#value#unit` line per value
    /// of every GetListResponse whose CRC held (what `sml.entries` yields),
    /// together with their count; damaged frames come back as frame dicts.
    #[pyo3(signature = (data, *, finish = false))]
    #[allow(clippy::needless_pass_by_value)] // PyO3 extracts arguments by value
    fn feed_lines<'py>(
        &mut self,
        py: Python<'py>,
        data: PyBackedBytes,
        finish: bool,
    ) -> PyResult<(Bound<'py, PyString>, usize, Bound<'py, PyList>)> {
        let (text, good, bad) = self.run_lines(py, &data, false)?;
        if !finish {
            return Ok((text, good, bad));
        }
        let (tail, more, worse) = self.run_lines(py, &[], true)?;
        for item in worse {
            bad.append(item)?;
        }
        Ok((text.add(tail)?.downcast_into::<PyString>()?, good + more, bad))
    }

    /// End of stream: a partial frame comes out as a "truncated" error item.
    fn finish<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        self.run(py, &[], true)
    }

    /// Counters since the decoder was created. The keys are `sml.DecoderStats`
    /// (the contract of `to_py.rs` holds here too; tests/test_sml_contract.py).
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
    let mut pause = GcPause::new(py);
    let out = d.run(py, &data, false)?;
    for f in d.run(py, &[], true)? {
        out.append(f)?;
    }
    pause.built(out.len());
    Ok(out)
}

/// The values of a whole buffer as flat rows, one
/// `(offset, server_id, obis, value, unit_symbol)` tuple per list entry: the
/// entries `sml.entries()` yields over `decode(data)`, without the frame,
/// message and entry dicts around them (for bulk analysis and pandas).
#[pyfunction]
#[pyo3(signature = (data, *, crc = "auto", max_frame = crate::transport::DEFAULT_MAX_FRAME))]
#[allow(clippy::needless_pass_by_value)] // PyO3 extracts arguments by value
fn decode_values<'py>(
    py: Python<'py>,
    data: PyBackedBytes,
    crc: &str,
    max_frame: usize,
) -> PyResult<Bound<'py, PyList>> {
    let mut d = PyDecoder::new(crc, max_frame)?;
    let mut pause = GcPause::new(py);
    let rows = PyList::empty(py);
    // Damaged frames carry no values; internal error items are dropped the same way.
    for finish in [false, true] {
        d.drive(py, &data, finish, &mut |conv, f| conv.value_rows(f, &rows), &mut |_| Ok(()))?;
    }
    // Rows are tuples, several per frame: count them like frames for the GC hint.
    pause.built(rows.len() / ROWS_PER_FRAME);
    Ok(rows)
}

/// A typical meter frame carries about this many values.
const ROWS_PER_FRAME: usize = 4;

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
    unit_text(code)
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
    m.add_function(wrap_pyfunction!(decode_values, m)?)?;
    m.add_function(wrap_pyfunction!(encode, m)?)?;
    m.add_function(wrap_pyfunction!(frame, m)?)?;
    m.add_function(wrap_pyfunction!(crc16_x25, m)?)?;
    m.add_function(wrap_pyfunction!(crc16_kermit, m)?)?;
    m.add_function(wrap_pyfunction!(obis_to_str, m)?)?;
    m.add_function(wrap_pyfunction!(obis_from_str, m)?)?;
    m.add_function(wrap_pyfunction!(unit_symbol, m)?)?;
    m.add_function(wrap_pyfunction!(count_frames, m)?)?;
    m.add_function(wrap_pyfunction!(to_py::bulk::feed_values, m)?)?;
    Ok(())
}
