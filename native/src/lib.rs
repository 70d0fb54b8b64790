//! The native data plane of smr-toolkit, imported from Python as `smr._native`.
//!
//! This first step holds only the shared state table (`table`), the same semantics as
//! `smr/core/table.py`, which stays the reference. The pure-Rust logic lives in modules that
//! never touch Python (`cargo test` and the fuzz targets drive them directly); the bindings in
//! `python` are compiled only with the `python` feature, which setuptools-rust turns on.

#![forbid(unsafe_op_in_unsafe_fn)]

pub mod fuzzing;
pub mod table;

#[cfg(feature = "python")]
mod python;
