//! Helpers shared by the integration tests.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};

/// The directory holding the sqllogictest files.
pub fn slt_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("slt")
}

/// Whether the corpus file `path` is to run: all of them, or with
/// `WEIR_SLT_FILES=cumulate,group` set, those whose name contains one of
/// the words (to iterate on a few files).
pub fn slt_selected(path: &std::path::Path) -> bool {
    let Ok(words) = std::env::var("WEIR_SLT_FILES") else {
        return true;
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    words.split(',').any(|w| name.contains(w.trim()))
}

fn format_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    // Four decimals: streaming and batch may add floats in different orders.
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.to_string() }
}

fn format_cell(col: &ArrayRef, row: usize, formatter: &ArrayFormatter<'_>) -> String {
    if col.is_null(row) {
        return "NULL".into();
    }
    match col.data_type() {
        DataType::Float64 => format_float(
            col.as_primitive::<arrow::datatypes::Float64Type>()
                .value(row),
        ),
        DataType::Float32 => format_float(f64::from(
            col.as_primitive::<arrow::datatypes::Float32Type>()
                .value(row),
        )),
        _ => {
            let s = formatter.value(row).to_string();
            if s.is_empty() { "(empty)".into() } else { s }
        }
    }
}

/// Every row of the batches as strings, one per cell, in a form both
/// sqllogictest files and the oracle comparison use.
pub fn rows_of(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formattable column"))
            .collect();
        for row in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .zip(&formatters)
                    .map(|(c, f)| format_cell(c, row, f))
                    .collect(),
            );
        }
    }
    rows
}

/// One sqllogictest column-type letter per column.
pub fn type_letters(batch: &RecordBatch) -> Vec<sqllogictest::DefaultColumnType> {
    batch
        .schema()
        .fields()
        .iter()
        .map(|f| {
            if f.data_type().is_integer() {
                sqllogictest::DefaultColumnType::Integer
            } else if f.data_type().is_floating()
                || matches!(f.data_type(), DataType::Decimal128(_, _))
            {
                sqllogictest::DefaultColumnType::FloatingPoint
            } else {
                sqllogictest::DefaultColumnType::Text
            }
        })
        .collect()
}
