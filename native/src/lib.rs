//! The native data plane of smr-toolkit, imported from Python as `smr._native`.
//!
//! It holds the shared state table (`table`, the semantics of `smr/core/table.py`) and the
//! receive side of a shard's stream (`stream`, the semantics of `smr/core/pending.py`); the
//! Python modules stay the reference. The pure-Rust logic lives in modules that never touch
//! Python (`cargo test` and the fuzz targets drive them directly); the bindings in `python` and
//! `python_stream` are compiled only with the `python` feature, which setuptools-rust turns on.

#![forbid(unsafe_op_in_unsafe_fn)]

pub mod fuzzing;
pub mod stream;
pub mod table;

#[cfg(feature = "python")]
mod python;
#[cfg(feature = "python")]
mod python_stream;
