//! The Python bindings of the stream's receive side: `smr._native.Pending`, a drop-in for
//! `smr.core.pending.Pending` (the reference).
//!
//! The same constructor and methods (`append own take drain deliver`, `len()`), the same results
//! (deliveries are `smr.core.ready.Delivery` tuples, built as the reference builds them, with
//! `tuple.__new__`) and the same exceptions: `PeerProtocolError` with the reference's messages for
//! a sender's bad slot, `AssertionError` where the reference asserts. The ring is read through
//! the buffer protocol (the reference table's `bytearray` or the native table's `buf`), without a
//! copy of the ring: each payload is copied once, from the ring into its `bytes` object.

use std::ptr::NonNull;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyAssertionError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple, PyType};

use crate::python::peer_error;
use crate::stream::{Entry, Pending, Ring, StreamError};

static DELIVERY: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static TUPLE_NEW: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The table's bytes as the buffer protocol lends them, read by copies through the pointer (never
/// a `&[u8]` over the table: Python code may write it between two reads of one call, and a shared
/// reference would claim it does not).
struct Lent {
    base: NonNull<u8>,
    len: usize,
}

impl Ring for Lent {
    fn byte_len(&self) -> usize {
        self.len
    }

    fn copy_to(&self, at: usize, out: &mut [u8]) {
        let end = at.checked_add(out.len());
        assert!(end.is_some_and(|e| e <= self.len), "a read outside the lent buffer");
        // SAFETY: the table's shared memory. `[at, at + out.len())` lies inside the `len` bytes
        // the buffer export lent (checked above), and the export (the `PyBuffer` in `take`)
        // outlives every read, so the memory stays allocated and its length fixed (an exported
        // bytearray cannot resize). Every writer of a table's memory runs on a thread that holds
        // the GIL, as this call does, so no write runs during the copy; `out` is our own memory
        // and cannot overlap the table's.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base.as_ptr().add(at), out.as_mut_ptr(), out.len());
        }
    }
}

/// A stream error or a Python error raised on the way (a failed allocation, an import).
enum Failure {
    Stream(StreamError),
    Py(PyErr),
}

impl From<StreamError> for Failure {
    fn from(e: StreamError) -> Self {
        Failure::Stream(e)
    }
}

impl From<PyErr> for Failure {
    fn from(e: PyErr) -> Self {
        Failure::Py(e)
    }
}

impl Failure {
    fn into_pyerr(self, py: Python<'_>) -> PyErr {
        match self {
            Failure::Stream(StreamError::Peer(m)) => peer_error(py, m),
            Failure::Stream(StreamError::Assertion(m)) => PyAssertionError::new_err(m),
            Failure::Py(e) => e,
        }
    }
}

/// What builds a `Delivery`: its class and `tuple.__new__`, looked up once per call.
struct Deliveries<'py> {
    class: Bound<'py, PyType>,
    new: Bound<'py, PyAny>,
    list: Bound<'py, PyList>,
    subgroup: i64,
    shard: i64,
    epoch_bits: i64,
}

impl<'py> Deliveries<'py> {
    fn new(py: Python<'py>, subgroup: i64, shard: i64, epoch_bits: i64) -> PyResult<Self> {
        let class = DELIVERY.import(py, "smr.core.ready", "Delivery")?.clone();
        let new = TUPLE_NEW
            .get_or_try_init(py, || {
                py.get_type::<PyTuple>().getattr(intern!(py, "__new__")).map(Bound::unbind)
            })?
            .bind(py)
            .clone();
        Ok(Deliveries { class, new, list: PyList::empty(py), subgroup, shard, epoch_bits })
    }

    fn push(&self, seq: i64, sender: i64, e: Entry<Py<PyAny>>) -> PyResult<()> {
        let py = self.list.py();
        let payload = e.payload.unwrap_or_else(|| py.None());
        let fields =
            (self.subgroup, self.shard, self.epoch_bits | seq, e.ts, sender, payload, e.reply);
        self.list.append(self.new.call1((&self.class, fields))?)
    }
}

/// The native `Pending`: the same constructor and methods as `smr.core.pending.Pending`.
#[pyclass(module = "smr._native", name = "Pending")]
pub struct NativePending {
    core: Pending<Py<PyAny>>,
}

#[pymethods]
impl NativePending {
    #[new]
    fn new(sender_ids: Vec<i64>, g: i64, window_max: i64, slot_bytes: i64) -> PyResult<Self> {
        let core = Pending::new(&sender_ids, g, window_max, slot_bytes)
            .map_err(|e| PyAssertionError::new_err(e.to_string()))?;
        Ok(NativePending { core })
    }

    fn __len__(&self) -> usize {
        self.core.len()
    }

    /// Queue one of my own messages (or null runs) as I place it in my ring.
    #[pyo3(signature = (k, index, count, kind, ts, payload, reply))]
    #[allow(clippy::too_many_arguments)]
    fn append(
        &mut self,
        k: usize,
        index: i64,
        count: i64,
        kind: u32,
        ts: i64,
        payload: Option<Py<PyAny>>,
        reply: bool,
    ) -> PyResult<()> {
        self.core
            .append(k, Entry { index, count, kind, ts, payload, reply })
            .map_err(|e| PyAssertionError::new_err(e.to_string()))
    }

    /// Sender rank `k`'s entries not yet delivered, oldest first, as the reference's tuples.
    fn own<'py>(&self, py: Python<'py>, k: usize) -> PyResult<Bound<'py, PyList>> {
        let entries = self.core.own(k).map_err(|e| PyAssertionError::new_err(e.to_string()))?;
        let list = PyList::empty(py);
        for e in entries {
            let payload = e.payload.as_ref().map(|p| p.clone_ref(py));
            list.append((e.index, e.count, e.kind, e.ts, payload, e.reply))?;
        }
        Ok(list)
    }

    /// Read sender rank `k`'s slots from `got` up to `sent` out of its ring at byte `ring` of
    /// `buf`, taking large payloads out of `large_inbox`; `(next got, largest timestamp,
    /// blocked on a large payload)`.
    #[allow(clippy::too_many_arguments)]
    fn take(
        &mut self,
        py: Python<'_>,
        k: usize,
        buf: &Bound<'_, PyAny>,
        ring: i64,
        got: i64,
        sent: i64,
        large_inbox: &Bound<'_, PyDict>,
    ) -> PyResult<(i64, i64, bool)> {
        let buffer = PyBuffer::<u8>::get(buf)?;
        let Some(lent) = buffer.as_slice_ptr() else {
            return Err(PyAssertionError::new_err("the table's buffer is not contiguous"));
        };
        let lent = Lent { base: lent.cast::<u8>(), len: lent.len() };
        let pop = intern!(py, "pop");
        let taken = self
            .core
            .take(
                k,
                &lent,
                ring,
                got,
                sent,
                |index| -> Result<_, Failure> {
                    let data = large_inbox.call_method1(pop, ((k, index), py.None()))?;
                    if data.is_none() {
                        return Ok(None);
                    }
                    let len = data.len()?;
                    Ok(Some((data.unbind(), len)))
                },
                |r: &Lent, at, len| -> Result<_, Failure> {
                    let bytes = PyBytes::new_with(py, len, |dst| {
                        r.copy_to(at, dst);
                        Ok(())
                    })?;
                    Ok(bytes.into_any().unbind())
                },
            )
            .map_err(|f| f.into_pyerr(py))?;
        Ok((taken.got, taken.ts_max, taken.blocked))
    }

    /// Raw mode: everything queued for sender rank `k`, delivered on receipt (nulls dropped).
    fn drain<'py>(
        &mut self,
        py: Python<'py>,
        k: usize,
        subgroup: i64,
        shard: i64,
        epoch_bits: i64,
    ) -> PyResult<Bound<'py, PyList>> {
        let out = Deliveries::new(py, subgroup, shard, epoch_bits)?;
        let sender =
            self.core.sender_id(k).map_err(|e| PyAssertionError::new_err(e.to_string()))?;
        self.core
            .drain(k, |seq, e| -> Result<(), Failure> { Ok(out.push(seq, sender, e)?) })
            .map_err(|f| f.into_pyerr(py))?;
        Ok(out.list)
    }

    /// Deliver sequence numbers `seq` up to `stable`, in order.
    fn deliver<'py>(
        &mut self,
        py: Python<'py>,
        seq: i64,
        stable: i64,
        subgroup: i64,
        shard: i64,
        epoch_bits: i64,
    ) -> PyResult<Bound<'py, PyList>> {
        let out = Deliveries::new(py, subgroup, shard, epoch_bits)?;
        let senders: Vec<i64> = self.core.sender_ids().to_vec();
        self.core
            .deliver(seq, stable, |s, k, e| -> Result<(), Failure> {
                Ok(out.push(s, senders[k], e)?)
            })
            .map_err(|f| f.into_pyerr(py))?;
        Ok(out.list)
    }
}
