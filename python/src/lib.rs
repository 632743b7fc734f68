//! `jobq._jobq`: the Python package's native half, a thin shell over the jobq library.
//!
//! Everything a Python program asks of jobq is one call into the library with the GIL
//! released (`py.detach`), so other Python threads run meanwhile; long waits are cut in
//! short slices between which signals are checked, so Ctrl-C interrupts them. A worker's
//! claims, heartbeats, timeouts and completions run in the library's own threads and never
//! take the GIL: a handler's call takes it for the call alone. Values cross as JSON text,
//! never pickle: a job enqueued here is read by the command line, HTTP and Rust alike.
//!
//! The friendly API (decorators, typed payloads, asyncio, handles with `result()`) is the
//! pure-Python layer in `jobq/`; this module only maps it onto the library.

use pyo3::prelude::*;

mod errors;
mod queue;
mod transaction;
mod worker;

/// Runs the `jobq` command line with `argv` (the program's name first) and returns its
/// exit code: the `jobq` command the package installs.
#[pyfunction]
fn cli_main(py: Python<'_>, argv: Vec<String>) -> i32 {
    py.detach(|| i32::from(jobq::cli::exit_code(argv)))
}

/// Parses a duration such as `30s`, `5m`, `1h30m` or `500ms` into seconds.
#[pyfunction]
fn parse_duration(text: &str) -> PyResult<f64> {
    jobq::parse_duration(text)
        .map(|d| d.as_secs_f64())
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))
}

#[pymodule]
fn _jobq(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<queue::Queue>()?;
    m.add_class::<transaction::Transaction>()?;
    m.add_class::<worker::Worker>()?;
    m.add_class::<worker::Job>()?;
    m.add_function(wrap_pyfunction!(cli_main, m)?)?;
    m.add_function(wrap_pyfunction!(parse_duration, m)?)?;
    m.add_function(wrap_pyfunction!(worker::drain_inline, m)?)?;
    m.add_function(wrap_pyfunction!(worker::interpreter_exiting, m)?)?;
    Ok(())
}
