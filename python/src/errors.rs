//! The library's errors as the package's exceptions (defined in `jobq/_errors.py`, where
//! Python users read them): each variant maps to the class a caller can act on.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

/// The Python class of an error, by its name in `jobq._errors`.
fn class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyType>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    let module = MODULE.get_or_try_init(py, || py.import("jobq._errors").map(Bound::unbind))?;
    module
        .bind(py)
        .getattr(name)?
        .cast_into::<PyType>()
        .map_err(Into::into)
}

/// The exception of a library error.
pub(crate) fn to_py(py: Python<'_>, e: jobq::Error) -> PyErr {
    let name = match &e {
        jobq::Error::NotFound { .. } => "NotFound",
        jobq::Error::InvalidInput { .. } => "InvalidInput",
        jobq::Error::InvalidTransition { .. }
        | jobq::Error::LockLost { .. }
        | jobq::Error::Duplicate { .. } => "Conflict",
        jobq::Error::BudgetExceeded { .. } => "BudgetExceeded",
        jobq::Error::Timeout { .. } => "Timeout",
        jobq::Error::Forbidden { .. } => "Forbidden",
        jobq::Error::Busy { .. }
        | jobq::Error::SchemaTooNew { .. }
        | jobq::Error::NotJobqDatabase { .. }
        | jobq::Error::Open { .. }
        | jobq::Error::Corrupt(_)
        | jobq::Error::DiskFull(_)
        | jobq::Error::Database(_)
        | jobq::Error::Unavailable { .. }
        | jobq::Error::Pool(_) => "DatabaseError",
        _ => "Error",
    };
    match class(py, name) {
        Ok(class) => match class.call1((e.to_string(),)) {
            Ok(instance) => PyErr::from_value(instance),
            Err(e) => e,
        },
        Err(import) => import,
    }
}

/// An exception of `jobq._errors` by its class name, with a message.
pub(crate) fn exception(py: Python<'_>, name: &str, message: &str) -> PyErr {
    match class(py, name) {
        Ok(class) => match class.call1((message,)) {
            Ok(instance) => PyErr::from_value(instance),
            Err(e) => e,
        },
        Err(import) => import,
    }
}

/// `?` for library results inside a call that holds `py`.
pub(crate) trait OrPy<T> {
    fn or_py(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> OrPy<T> for jobq::Result<T> {
    fn or_py(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_py(py, e))
    }
}

/// The `InvalidInput` class (`None` when the package's Python half cannot be imported).
pub(crate) fn invalid_input_class(py: Python<'_>) -> Bound<'_, PyAny> {
    match class(py, "InvalidInput") {
        Ok(c) => c.into_any(),
        Err(_) => py.None().into_bound(py),
    }
}

/// A `DatabaseError` with this message.
pub(crate) fn database_error(py: Python<'_>, message: String) -> PyErr {
    match class(py, "DatabaseError").and_then(|c| c.call1((message,))) {
        Ok(instance) => PyErr::from_value(instance),
        Err(e) => e,
    }
}

/// An `InvalidInput` for a bad argument.
pub(crate) fn invalid(py: Python<'_>, field: &'static str, reason: impl Into<String>) -> PyErr {
    to_py(
        py,
        jobq::Error::InvalidInput {
            field,
            reason: reason.into(),
        },
    )
}
