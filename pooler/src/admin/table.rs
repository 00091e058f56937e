//! A console result set: typed columns, text rows, written as RowDescription + DataRows +
//! CommandComplete.

use bytes::BytesMut;
use pgmux_protocol::build;

/// Column types the console uses (PostgreSQL type oids).
#[derive(Debug, Clone, Copy)]
pub enum Ty {
    /// text
    Text,
    /// int4
    Int4,
    /// int8
    Int8,
    /// numeric: PgBouncer's type for its statistics counters
    Numeric,
    /// bytea
    Bytea,
}

impl Ty {
    fn oid(self) -> u32 {
        match self {
            Ty::Text => 25,
            Ty::Int4 => 23,
            Ty::Int8 => 20,
            Ty::Numeric => 1700,
            Ty::Bytea => 17,
        }
    }
}

/// A result set being built.
#[derive(Debug)]
pub struct Table {
    cols: Vec<(&'static str, Ty)>,
    rows: Vec<Vec<Option<String>>>,
}

impl Table {
    /// A table with these columns.
    pub fn new(cols: &[(&'static str, Ty)]) -> Self {
        Self { cols: cols.to_vec(), rows: Vec::new() }
    }

    /// Text columns only.
    pub fn text(names: &[&'static str]) -> Self {
        Self { cols: names.iter().map(|n| (*n, Ty::Text)).collect(), rows: Vec::new() }
    }

    /// Appends a row; `None` is NULL.
    pub fn row(&mut self, values: Vec<Option<String>>) {
        debug_assert_eq!(values.len(), self.cols.len());
        self.rows.push(values);
    }

    /// Column names and rows, for the metrics endpoint.
    pub fn into_parts(self) -> (Vec<String>, Vec<Vec<Option<String>>>) {
        (self.cols.iter().map(|c| c.0.to_owned()).collect(), self.rows)
    }

    /// Writes the result with CommandComplete `tag`.
    pub fn write(&self, out: &mut BytesMut, tag: &str) {
        let cols: Vec<(&str, u32)> = self.cols.iter().map(|(n, t)| (*n, t.oid())).collect();
        build::row_description(out, &cols);
        for r in &self.rows {
            let vals: Vec<Option<&[u8]>> = r.iter().map(|v| v.as_deref().map(str::as_bytes)).collect();
            build::data_row(out, &vals);
        }
        build::command_complete(out, tag);
    }
}

/// `Some(value.to_string())`, for building rows.
pub fn v(x: impl ToString) -> Option<String> {
    Some(x.to_string())
}
