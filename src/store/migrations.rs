//! The schema files' layout, shared by both engines: a `-- bookkeeping` section (the table
//! of applied migrations) and `-- migration N` sections, in order.

/// A migration: the version it brings the database to, and its SQL.
pub(crate) type Migration = (i64, &'static str);

/// Splits `schema.sql` into its bookkeeping section and its migrations.
pub(crate) fn parse(sql: &'static str) -> (&'static str, Vec<Migration>) {
    // (version, or None for the bookkeeping; where its marker line starts; where its body starts)
    let mut starts: Vec<(Option<i64>, usize, usize)> = Vec::new();
    let mut offset = 0;
    for line in sql.split_inclusive('\n') {
        let marker = line.trim();
        if marker == "-- bookkeeping" {
            starts.push((None, offset, offset + line.len()));
        } else if let Some(rest) = marker.strip_prefix("-- migration ") {
            if let Ok(version) = rest.trim().parse::<i64>() {
                starts.push((Some(version), offset, offset + line.len()));
            }
        }
        offset += line.len();
    }
    let mut bookkeeping = "";
    let mut migrations = Vec::new();
    for (i, &(version, _, body_start)) in starts.iter().enumerate() {
        let end = starts.get(i + 1).map_or(sql.len(), |next| next.1);
        match version {
            None => bookkeeping = &sql[body_start..end],
            Some(v) => migrations.push((v, &sql[body_start..end])),
        }
    }
    (bookkeeping, migrations)
}
