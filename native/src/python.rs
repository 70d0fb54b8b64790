//! The Python bindings: `smr._native.Table`, a drop-in for `smr.core.table.Table`.
//!
//! The constructor takes the same `Layout` object, members and `me`; every method has the
//! reference's name, arguments and results (`push` returns `smr.core.table.Write` values) and
//! raises the reference's exception types with its messages (`PeerProtocolError` from
//! `smr.core.errors` for a peer's bad write). `buf` and `words` are writable memoryviews of the
//! native memory (bytes and int64 words), so code that indexes them directly, as
//! `smr.core.multicast` does, runs unchanged.
//!
//! PyO3 turns a Rust panic in any entry point into a Python `PanicException` (the release profile
//! keeps `panic = "unwind"`), never an abort; `_panic_for_test` proves it in the tests.

use std::ffi::c_int;
use std::sync::OnceLock;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{
    PyAssertionError, PyBufferError, PyIndexError, PyKeyError, PyOverflowError, PyValueError,
};
use pyo3::ffi;
use pyo3::gc::{PyTraverseError, PyVisit};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyMemoryView, PyString, PyTuple, PyType};

use crate::table::{ColumnSpec, Kind, Layout, Table, TableError};

static PEER_PROTOCOL_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static WRITE: PyOnceLock<Py<PyType>> = PyOnceLock::new();

pub(crate) fn peer_error(py: Python<'_>, message: String) -> PyErr {
    match PEER_PROTOCOL_ERROR.import(py, "smr.core.errors", "PeerProtocolError") {
        Ok(t) => PyErr::from_type(t.clone(), message),
        Err(import_error) => import_error,
    }
}

fn to_pyerr(py: Python<'_>, e: TableError) -> PyErr {
    match e {
        TableError::Peer(m) => peer_error(py, m),
        TableError::Assertion(m) => PyAssertionError::new_err(m),
        TableError::Index(m) => PyIndexError::new_err(m),
        TableError::Key(m) => PyKeyError::new_err(m),
        TableError::Value(m) => PyValueError::new_err(m),
    }
}

/// A Python int argument: an int64, or the text and sign of an int that does not fit one (the
/// reference takes any int, so its errors for those are rebuilt from the text).
enum IntArg {
    Fits(i64),
    Huge { negative: bool, text: String },
}

fn int_arg(v: &Bound<'_, PyAny>) -> PyResult<IntArg> {
    match v.extract::<i64>() {
        Ok(x) => Ok(IntArg::Fits(x)),
        Err(e) if e.is_instance_of::<PyOverflowError>(v.py()) => {
            Ok(IntArg::Huge { negative: v.lt(0)?, text: v.str()?.to_str()?.to_owned() })
        }
        Err(e) => Err(e),
    }
}

/// The bytes of `data`: `bytes` without a copy, any other byte buffer (bytearray, memoryview)
/// copied once.
fn with_bytes<R>(data: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> R) -> PyResult<R> {
    if let Ok(b) = data.cast::<PyBytes>() {
        return Ok(f(b.as_bytes()));
    }
    let buffer = PyBuffer::<u8>::get(data)?;
    let copy = buffer.to_vec(data.py())?;
    Ok(f(&copy))
}

/// A `smr.core.table.Write` of `len` bytes at `offset` of my row, the bytes copied from the
/// table straight into the new `bytes` object.
fn write_object<'py>(
    py: Python<'py>,
    t: &Table,
    (offset, len): (usize, usize),
) -> PyResult<Bound<'py, PyAny>> {
    let write = WRITE.import(py, "smr.core.table", "Write")?;
    let data = PyBytes::new_with(py, len, |b| {
        t.read_own(offset, b);
        Ok(())
    })?;
    write.call1((offset, data))
}

fn int_list(rows: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<i64>>> {
    match rows {
        None => Ok(None),
        Some(r) if r.is_none() => Ok(None),
        Some(r) => Ok(Some(r.try_iter()?.map(|x| x?.extract::<i64>()).collect::<PyResult<_>>()?)),
    }
}

/// The native table: the same constructor, attributes and methods as `smr.core.table.Table`.
///
/// `frozen`: every method takes `&self` (the memory is atomics), so calls skip PyO3's borrow flag.
#[pyclass(module = "smr._native", name = "Table", frozen)]
pub struct NativeTable {
    core: Table,
    layout: Py<PyAny>,
    members: Py<PyTuple>,
    /// memoryviews of the table's own memory, made at first use; they hold a reference to the
    /// table (a cycle the garbage collector sees through `__traverse__`).
    buf: OnceLock<Py<PyAny>>,
    words: OnceLock<Py<PyAny>>,
}

fn column_specs(layout: &Bound<'_, PyAny>) -> PyResult<Vec<ColumnSpec>> {
    let mut specs = Vec::new();
    for column in layout.getattr("columns")?.try_iter()? {
        let column = column?;
        let name: String = column.getattr("name")?.extract()?;
        let kind: String = column.getattr("kind")?.getattr("value")?.extract()?;
        let length: usize = column.getattr("length")?.extract()?;
        let Some(kind) = Kind::parse(&kind) else {
            return Err(PyValueError::new_err(format!("column {name} has unknown kind {kind:?}")));
        };
        specs.push(ColumnSpec { name, kind, length });
    }
    Ok(specs)
}

impl NativeTable {
    fn err(&self, py: Python<'_>, e: TableError) -> PyErr {
        to_pyerr(py, e)
    }
}

#[pymethods]
impl NativeTable {
    #[new]
    #[pyo3(signature = (layout, members, me, *, strict = false))]
    fn new(
        py: Python<'_>,
        layout: &Bound<'_, PyAny>,
        members: &Bound<'_, PyAny>,
        me: i64,
        strict: bool,
    ) -> PyResult<Self> {
        let native = Layout::new(&column_specs(layout)?).map_err(|e| to_pyerr(py, e))?;
        // The Python layout is the one its users index (`table.layout["x"].word`): it must be
        // the one this table computed.
        let row_bytes: usize = layout.getattr("row_bytes")?.extract()?;
        let placed = layout.getattr("placed")?;
        for p in native.columns() {
            let offset: usize = placed.get_item(&p.name)?.getattr("offset")?.extract()?;
            if offset != p.offset || row_bytes != native.row_bytes() {
                return Err(PyAssertionError::new_err(format!(
                    "the native layout places {} at {} in a {}-byte row, the Python layout at \
                     {offset} in a {row_bytes}-byte row",
                    p.name,
                    p.offset,
                    native.row_bytes()
                )));
            }
        }
        let ids: Vec<i64> =
            members.try_iter()?.map(|m| m?.extract::<i64>()).collect::<PyResult<_>>()?;
        let core = Table::new(native, &ids, me, strict).map_err(|e| to_pyerr(py, e))?;
        Ok(NativeTable {
            core,
            layout: layout.clone().unbind(),
            members: PyTuple::new(py, &ids)?.unbind(),
            buf: OnceLock::new(),
            words: OnceLock::new(),
        })
    }

    // -- attributes, as the reference's ------------------------------------------------------

    #[getter]
    fn layout(&self, py: Python<'_>) -> Py<PyAny> {
        self.layout.clone_ref(py)
    }

    #[getter]
    fn members(&self, py: Python<'_>) -> Py<PyTuple> {
        self.members.clone_ref(py)
    }

    #[getter]
    fn n_rows(&self) -> usize {
        self.core.n_rows()
    }

    #[getter]
    fn my_row(&self) -> usize {
        self.core.my_row()
    }

    #[getter]
    fn row_bytes(&self) -> usize {
        self.core.row_bytes()
    }

    #[getter]
    fn row_words(&self) -> usize {
        self.core.row_words()
    }

    #[getter]
    fn get_strict(&self) -> bool {
        self.core.strict()
    }

    #[setter]
    fn set_strict(&self, strict: bool) {
        self.core.set_strict(strict);
    }

    /// The whole table as a writable byte memoryview (the reference's `bytearray`).
    #[getter]
    fn buf(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let me = slf.get();
        if let Some(b) = me.buf.get() {
            return Ok(b.clone_ref(slf.py()));
        }
        let view = PyMemoryView::from(slf.as_any())?.into_any().unbind();
        Ok(me.buf.get_or_init(|| view).clone_ref(slf.py()))
    }

    /// The whole table as a writable int64 memoryview (`words[row * row_words + word]`).
    #[getter]
    fn words(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let me = slf.get();
        if let Some(w) = me.words.get() {
            return Ok(w.clone_ref(slf.py()));
        }
        let view = Self::buf(slf)?.bind(slf.py()).call_method1("cast", ("q",))?.unbind();
        Ok(me.words.get_or_init(|| view).clone_ref(slf.py()))
    }

    /// The buffer protocol: the table's memory, writable, one byte per item.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        if view.is_null() {
            return Err(PyBufferError::new_err("a null Py_buffer"));
        }
        let memory = slf.get().core.memory();
        let len = isize::try_from(memory.len() * 8)?;
        // SAFETY: `view` is the non-null Py_buffer the interpreter passed us. The pointer is the
        // table's own memory, a boxed slice allocated once in `Table::new` and never resized or
        // moved; PyBuffer_FillInfo stores a new reference to the table in `view.obj`, so the
        // memory outlives every export. Writes through the export are sound: the memory is
        // `AtomicI64`s (interior mutability), and Python and Rust touch it only with the GIL held.
        let rc = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                memory.as_ptr() as *mut std::ffi::c_void,
                len,
                0,
                flags,
            )
        };
        if rc == -1 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(self.buf.get())?;
        visit.call(self.words.get())?;
        visit.call(&self.layout)?;
        Ok(())
    }

    // -- reads (any row) ---------------------------------------------------------------------

    fn get(&self, py: Python<'_>, row: i64, name: &str) -> PyResult<i64> {
        self.core.get(row, name).map_err(|e| self.err(py, e))
    }

    fn vget(&self, py: Python<'_>, row: i64, name: &str, index: i64) -> PyResult<i64> {
        self.core.vget(row, name, index).map_err(|e| self.err(py, e))
    }

    fn vrow(&self, py: Python<'_>, row: i64, name: &str) -> PyResult<Vec<i64>> {
        self.core.vrow(row, name).map_err(|e| self.err(py, e))
    }

    fn bget<'py>(
        &self,
        py: Python<'py>,
        row: i64,
        name: &str,
        start: i64,
        end: i64,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let data = self.core.bget(row, name, start, end).map_err(|e| self.err(py, e))?;
        Ok(PyBytes::new(py, &data))
    }

    #[pyo3(signature = (name, rows = None))]
    fn column_min(
        &self,
        py: Python<'_>,
        name: &str,
        rows: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<i64> {
        let rows = int_list(rows)?;
        self.core.column_min(name, rows.as_deref()).map_err(|e| self.err(py, e))
    }

    #[pyo3(signature = (name, index, rows = None))]
    fn vcolumn_min(
        &self,
        py: Python<'_>,
        name: &str,
        index: i64,
        rows: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<i64> {
        let rows = int_list(rows)?;
        self.core.vcolumn_min(name, index, rows.as_deref()).map_err(|e| self.err(py, e))
    }

    fn row_bytes_of<'py>(&self, py: Python<'py>, row: i64) -> PyResult<Bound<'py, PyBytes>> {
        let data = self.core.row_bytes_of(row).map_err(|e| self.err(py, e))?;
        Ok(PyBytes::new(py, &data))
    }

    // -- writes (own row only) ---------------------------------------------------------------

    fn set(&self, py: Python<'_>, name: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let r = match int_arg(value)? {
            IntArg::Fits(v) => self.core.set(name, v),
            IntArg::Huge { negative, text } => {
                let old = self.core.own_value(name, 0).map_err(|e| self.err(py, e))?;
                let flag = self.core.layout().get(name).is_ok_and(|p| p.kind == Kind::Flag);
                Err(huge(name, None, old, negative, flag, &text))
            }
        };
        r.map_err(|e| self.err(py, e))
    }

    fn vset(
        &self,
        py: Python<'_>,
        name: &str,
        index: i64,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let r = match int_arg(value)? {
            IntArg::Fits(v) => self.core.vset(name, index, v),
            IntArg::Huge { negative, text } => {
                let old = self.core.own_value(name, index).map_err(|e| self.err(py, e))?;
                Err(huge(name, Some(index), old, negative, false, &text))
            }
        };
        r.map_err(|e| self.err(py, e))
    }

    fn bset(
        &self,
        py: Python<'_>,
        name: &str,
        start: i64,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        with_bytes(data, |d| self.core.bset(name, start, d))?.map_err(|e| self.err(py, e))
    }

    // -- one-sided writes --------------------------------------------------------------------

    fn push<'py>(
        &self,
        py: Python<'py>,
        names: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let items: Vec<Bound<'py, PyString>> = names
            .try_iter()?
            .map(|n| n.and_then(|n| Ok(n.cast_into::<PyString>()?)))
            .collect::<PyResult<_>>()?;
        let strs: Vec<&str> = items.iter().map(|s| s.to_str()).collect::<PyResult<_>>()?;
        let spans = self.core.push_spans(&strs).map_err(|e| self.err(py, e))?;
        let objects: Vec<Bound<'py, PyAny>> = spans
            .into_iter()
            .map(|span| write_object(py, &self.core, span))
            .collect::<PyResult<_>>()?;
        PyTuple::new(py, objects)
    }

    fn push_bytes<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        start: i64,
        end: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let span = self.core.push_bytes_span(name, start, end).map_err(|e| self.err(py, e))?;
        write_object(py, &self.core, span)
    }

    fn push_row<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        write_object(py, &self.core, (0, self.core.row_bytes()))
    }

    /// A peer's one-sided write into its row of my copy. Any bad input (a row or offset out of
    /// range, whatever their size, a write past the row, a monotone value moved back in strict
    /// mode) is a `PeerProtocolError`, and a rejected write changes nothing.
    fn apply_write(
        &self,
        py: Python<'_>,
        row: &Bound<'_, PyAny>,
        offset: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let (row, offset) = (int_arg(row)?, int_arg(offset)?);
        let r = with_bytes(data, |d| match (row, offset) {
            (IntArg::Fits(row), IntArg::Fits(offset)) => self.core.apply_write(row, offset, d),
            (IntArg::Huge { text, .. }, _) => Err(TableError::Peer(format!(
                "write for row {text}, the table has {} rows",
                self.core.n_rows()
            ))),
            (IntArg::Fits(row), IntArg::Huge { text, .. }) => {
                // the row's checks come first, as in the reference: an empty write tests them
                self.core.apply_write(row, 0, &[]).and(Err(self.core.misfit(text, d.len())))
            }
        })?;
        r.map_err(|e| self.err(py, e))
    }

    // -- invariants --------------------------------------------------------------------------

    fn _check(&self, py: Python<'_>) -> PyResult<()> {
        self.core.check().map_err(|e| self.err(py, e))
    }
}

/// The reference's error for an own-row write of an int that does not fit an int64: a negative
/// one is a decrease (its assertion), a positive one fails the flag check or the store.
fn huge(
    name: &str,
    index: Option<i64>,
    old: i64,
    negative: bool,
    flag: bool,
    text: &str,
) -> TableError {
    match (negative, index) {
        (true, None) => {
            TableError::Assertion(format!("column {name} would decrease from {old} to {text}"))
        }
        (true, Some(i)) => {
            TableError::Assertion(format!("column {name}[{i}] would decrease from {old} to {text}"))
        }
        (false, _) if flag => TableError::Assertion(format!("('{name}', {text})")),
        (false, _) => TableError::Value("memoryview: invalid value for format 'q'".to_owned()),
    }
}

/// Panics on purpose, so the tests can show a Rust panic reaches Python as an exception.
#[pyfunction]
fn _panic_for_test() {
    panic!("a deliberate panic in smr._native");
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeTable>()?;
    m.add_class::<crate::python_stream::NativePending>()?;
    m.add_function(wrap_pyfunction!(_panic_for_test, m)?)?;
    m.add("WORD_BYTES", crate::table::WORD_BYTES)?;
    m.add("ROW_ALIGN_BYTES", crate::table::ROW_ALIGN_BYTES)?;
    m.add("TABLE_BYTES_MAX", crate::table::TABLE_BYTES_MAX)?;
    Ok(())
}
