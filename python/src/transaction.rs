//! `_jobq.Transaction`: the application's own transaction on the queue's database, in which
//! it runs its own statements and enqueues jobs, which commit together or not at all (the
//! library's `enqueue_tx` and `enqueue_pg_tx`). Its connection is its own, opened for it.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyString};

use crate::errors::{OrPy, invalid};
use crate::queue::{enqueued_tuple, new_job};

enum Connection {
    Sqlite(rusqlite::Connection),
    Postgres(postgres::Client),
}

/// An open transaction on the queue's database: `execute` runs the application's
/// statements, `enqueue` adds jobs, `commit` or `rollback` ends it.
#[pyclass(unsendable, module = "jobq._jobq")]
pub struct Transaction {
    queue: jobq::Queue,
    conn: Option<Connection>,
}

/// A `DatabaseError` for what the database said to one of the transaction's statements.
fn database_error(py: Python<'_>, e: impl std::fmt::Display) -> PyErr {
    crate::errors::database_error(py, format!("the transaction's statement failed: {e}"))
}

/// What PostgreSQL said, in full: its severity, SQLSTATE, message, detail and hint (the
/// client's own display is only "db error").
fn pg_error(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" ({detail})"));
            }
            if let Some(hint) = db.hint() {
                text.push_str(&format!("; hint: {hint}"));
            }
            text
        }
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// A value that Python could not convert (a wrong type, an int too large) as an
/// `InvalidInput` naming it and the column type it was meant for.
fn not_convertible(py: Python<'_>, v: &Bound<'_, PyAny>, target: &str, e: PyErr) -> PyErr {
    use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
    if e.is_instance_of::<PyTypeError>(py)
        || e.is_instance_of::<PyOverflowError>(py)
        || (e.is_instance_of::<PyValueError>(py)
            && !e.get_type(py).is(crate::errors::invalid_input_class(py)))
    {
        let shown = v
            .repr()
            .map(|r| r.to_string())
            .unwrap_or_else(|_| "a value".into());
        invalid(
            py,
            "params",
            format!("cannot pass {shown} as {target}: {e}"),
        )
    } else {
        e
    }
}

/// A Python value as a SQLite value.
fn sqlite_value(py: Python<'_>, v: &Bound<'_, PyAny>) -> PyResult<rusqlite::types::Value> {
    sqlite_value_of(py, v).map_err(|e| not_convertible(py, v, "a SQLite value", e))
}

fn sqlite_value_of(py: Python<'_>, v: &Bound<'_, PyAny>) -> PyResult<rusqlite::types::Value> {
    use rusqlite::types::Value;
    Ok(if v.is_none() {
        Value::Null
    } else if v.is_instance_of::<PyBool>() {
        Value::Integer(i64::from(v.extract::<bool>()?))
    } else if v.is_instance_of::<PyInt>() {
        Value::Integer(v.extract()?)
    } else if v.is_instance_of::<PyFloat>() {
        Value::Real(v.extract()?)
    } else if v.is_instance_of::<PyString>() {
        Value::Text(v.extract()?)
    } else if v.is_instance_of::<PyBytes>() {
        Value::Blob(v.extract()?)
    } else {
        return Err(invalid(
            py,
            "params",
            format!("cannot pass a {} to SQL", v.get_type().name()?),
        ));
    })
}

/// A Python value as a PostgreSQL parameter of type `ty` (what the statement expects).
fn postgres_value(
    py: Python<'_>,
    v: &Bound<'_, PyAny>,
    ty: &postgres::types::Type,
) -> PyResult<Box<dyn postgres::types::ToSql + Sync>> {
    postgres_value_of(py, v, ty)
        .map_err(|e| not_convertible(py, v, &format!("a PostgreSQL {}", ty.name()), e))
}

fn postgres_value_of(
    py: Python<'_>,
    v: &Bound<'_, PyAny>,
    ty: &postgres::types::Type,
) -> PyResult<Box<dyn postgres::types::ToSql + Sync>> {
    use postgres::types::Type;
    let null = v.is_none();
    Ok(match *ty {
        Type::BOOL => Box::new((!null).then(|| v.extract::<bool>()).transpose()?),
        Type::INT2 => Box::new((!null).then(|| v.extract::<i16>()).transpose()?),
        Type::INT4 => Box::new((!null).then(|| v.extract::<i32>()).transpose()?),
        Type::INT8 => Box::new((!null).then(|| v.extract::<i64>()).transpose()?),
        Type::FLOAT4 => Box::new((!null).then(|| v.extract::<f32>()).transpose()?),
        Type::FLOAT8 => Box::new((!null).then(|| v.extract::<f64>()).transpose()?),
        Type::BYTEA => Box::new((!null).then(|| v.extract::<Vec<u8>>()).transpose()?),
        Type::UUID => Box::new(
            (!null)
                .then(|| -> PyResult<uuid::Uuid> {
                    let text = v.str()?.to_string();
                    text.parse()
                        .map_err(|_| invalid(py, "params", format!("{text:?} is not a uuid")))
                })
                .transpose()?,
        ),
        Type::JSON | Type::JSONB => {
            let value: Option<serde_json::Value> = if null {
                None
            } else {
                let text: String = py.import("json")?.call_method1("dumps", (v,))?.extract()?;
                Some(
                    serde_json::from_str(&text)
                        .map_err(|e| invalid(py, "params", e.to_string()))?,
                )
            };
            Box::new(value)
        }
        _ if null => Box::new(None::<String>),
        _ if v.is_instance_of::<PyString>() => Box::new(v.extract::<String>()?),
        _ => {
            return Err(invalid(
                py,
                "params",
                format!(
                    "cannot pass a {} as a PostgreSQL {} (give a str, or cast in SQL)",
                    v.get_type().name()?,
                    ty.name()
                ),
            ));
        }
    })
}

impl Transaction {
    pub(crate) fn begin(py: Python<'_>, queue: jobq::Queue) -> PyResult<Transaction> {
        let location = queue.path().to_string_lossy().into_owned();
        let conn = py.detach(|| -> Result<Connection, String> {
            if jobq::is_postgres_url(&location) {
                let mut client = postgres::Client::connect(&location, postgres::NoTls)
                    .map_err(|e| pg_error(&e))?;
                client.batch_execute("BEGIN").map_err(|e| pg_error(&e))?;
                Ok(Connection::Postgres(client))
            } else {
                let conn = rusqlite::Connection::open(&location).map_err(|e| e.to_string())?;
                conn.busy_timeout(std::time::Duration::from_secs(5))
                    .map_err(|e| e.to_string())?;
                conn.execute_batch("PRAGMA foreign_keys = ON; BEGIN IMMEDIATE")
                    .map_err(|e| e.to_string())?;
                Ok(Connection::Sqlite(conn))
            }
        });
        let conn = conn.map_err(|e| database_error(py, e))?;
        Ok(Transaction {
            queue,
            conn: Some(conn),
        })
    }

    fn conn(&mut self, py: Python<'_>) -> PyResult<&mut Connection> {
        self.conn
            .as_mut()
            .ok_or_else(|| invalid(py, "transaction", "the transaction has ended"))
    }

    fn end(&mut self, py: Python<'_>, sql: &str) -> PyResult<()> {
        let Some(conn) = self.conn.take() else {
            return Ok(());
        };
        let ended = py.detach(move || match conn {
            Connection::Sqlite(c) => c.execute_batch(sql).map_err(|e| e.to_string()),
            Connection::Postgres(mut c) => c.batch_execute(sql).map_err(|e| pg_error(&e)),
        });
        ended.map_err(|e| database_error(py, e))
    }
}

#[pymethods]
impl Transaction {
    /// Runs one of the application's statements with `params` (a list or tuple, `?1`/`?`
    /// placeholders on SQLite, `$1` on PostgreSQL); returns the rows it changed.
    #[pyo3(signature = (sql, params=None))]
    fn execute(
        &mut self,
        py: Python<'_>,
        sql: String,
        params: Option<Vec<Bound<'_, PyAny>>>,
    ) -> PyResult<u64> {
        let params = params.unwrap_or_default();
        match self.conn(py)? {
            Connection::Sqlite(conn) => {
                let values: Vec<rusqlite::types::Value> = params
                    .iter()
                    .map(|v| sqlite_value(py, v))
                    .collect::<PyResult<_>>()?;
                let conn: &mut rusqlite::Connection = conn;
                let changed = py
                    .detach(move || conn.execute(&sql, rusqlite::params_from_iter(values.iter())));
                changed.map(|n| n as u64).map_err(|e| database_error(py, e))
            }
            Connection::Postgres(client) => {
                let statement = py
                    .detach(|| client.prepare(&sql))
                    .map_err(|e| database_error(py, pg_error(&e)))?;
                if statement.params().len() != params.len() {
                    return Err(invalid(
                        py,
                        "params",
                        format!(
                            "the statement takes {} parameters, not {}",
                            statement.params().len(),
                            params.len()
                        ),
                    ));
                }
                let values: Vec<Box<dyn postgres::types::ToSql + Sync>> = params
                    .iter()
                    .zip(statement.params())
                    .map(|(v, ty)| postgres_value(py, v, ty))
                    .collect::<PyResult<_>>()?;
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    values.iter().map(|v| &**v).collect();
                py.detach(|| client.execute(&statement, &refs))
                    .map_err(|e| database_error(py, pg_error(&e)))
            }
        }
    }

    /// Enqueues a job in this transaction (as `Queue.enqueue`): it exists if and only if the
    /// transaction commits.
    #[pyo3(signature = (kind, input_json=None, options=None))]
    fn enqueue(
        &mut self,
        py: Python<'_>,
        kind: String,
        input_json: Option<String>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<(String, String, bool)> {
        let job = new_job(py, kind, input_json, options)?;
        let queue = self.queue.clone();
        let enqueued = match self.conn(py)? {
            Connection::Sqlite(conn) => {
                let conn: &mut rusqlite::Connection = conn;
                py.detach(move || queue.enqueue_tx(conn, job))
            }
            Connection::Postgres(client) => py.detach(|| queue.enqueue_pg_tx(client, job)),
        };
        Ok(enqueued_tuple(enqueued.or_py(py)?))
    }

    /// Commits the application's writes and the jobs together.
    fn commit(&mut self, py: Python<'_>) -> PyResult<()> {
        self.end(py, "COMMIT")?;
        self.queue.notify();
        Ok(())
    }

    /// Rolls everything back: none of it happened.
    fn rollback(&mut self, py: Python<'_>) -> PyResult<()> {
        self.end(py, "ROLLBACK")
    }
}
