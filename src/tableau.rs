//! Rows printed as they come, in a table whose header is printed once (the
//! Flink SQL client's "tableau" mode): what `weir run` and `weir submit
//! --wait` show for a bare `SELECT`.
//!
//! ```text
//! +--------+-------+
//! | bidder | bids  |
//! +--------+-------+
//! |      7 |     3 |
//! |     12 |     1 |
//! +--------+-------+
//! 2 rows
//! ```
//! Column widths are fixed when the first rows arrive (the header, or the
//! widest value of the first batch, at most [`MAX_WIDTH`]). A later text
//! that does not fit is cut short with `...`; a number never is (its line
//! is just wider).

use std::io::Write;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};

/// The widest a column gets.
pub const MAX_WIDTH: usize = 40;

/// Prints rows in tableau form as they arrive.
pub struct Tableau<W: Write> {
    out: W,
    schema: SchemaRef,
    /// Set by the first batch (or the end, when no rows came).
    widths: Option<Vec<usize>>,
    rows: usize,
}

impl<W: Write> Tableau<W> {
    /// A printer of rows of `schema` into `out`.
    /// An updating result gets a leading `op` column with each row's kind.
    pub fn new(out: W, schema: SchemaRef) -> Self {
        Self {
            out,
            schema: weir_engine::changelog::display_schema(&schema),
            widths: None,
            rows: 0,
        }
    }

    /// Prints a batch's rows (and the header before the first ones).
    pub fn push(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = &weir_engine::changelog::for_display(batch)?;
        let cells = cells(batch)?;
        if self.widths.is_none() {
            let mut widths: Vec<usize> = self
                .schema
                .fields()
                .iter()
                .map(|f| f.name().chars().count())
                .collect();
            for row in &cells {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.chars().count());
                }
            }
            widths.iter_mut().for_each(|w| *w = (*w).min(MAX_WIDTH));
            self.header(&widths)?;
            self.widths = Some(widths);
        }
        let widths = self.widths.clone().unwrap_or_default();
        for row in cells {
            self.row(&widths, &row)?;
        }
        self.rows += batch.num_rows();
        self.out.flush()?;
        Ok(())
    }

    /// Closes the table and prints the row count.
    pub fn finish(mut self) -> anyhow::Result<()> {
        match self.widths.clone() {
            Some(widths) => self.rule(&widths)?,
            None => writeln!(self.out, "Empty set")?,
        }
        let rows = self.rows;
        writeln!(self.out, "{rows} row{}", if rows == 1 { "" } else { "s" })?;
        self.out.flush()?;
        Ok(())
    }

    fn header(&mut self, widths: &[usize]) -> std::io::Result<()> {
        self.rule(widths)?;
        let names: Vec<String> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        // Headers align as their values do.
        self.line(widths, &names)?;
        self.rule(widths)
    }

    fn row(&mut self, widths: &[usize], cells: &[String]) -> std::io::Result<()> {
        self.line(widths, cells)
    }

    fn rule(&mut self, widths: &[usize]) -> std::io::Result<()> {
        let mut text = String::from("+");
        for w in widths {
            text.push_str(&"-".repeat(w + 2));
            text.push('+');
        }
        writeln!(self.out, "{text}")
    }

    /// One line of cells: text left-aligned and cut to its width, the
    /// rest right-aligned and whole.
    fn line(&mut self, widths: &[usize], cells: &[String]) -> std::io::Result<()> {
        let mut line = String::from("|");
        let text = self.schema.fields().iter().map(|f| is_text(f.data_type()));
        for ((w, cell), text) in widths.iter().zip(cells).zip(text) {
            if text {
                let cell = fit(cell, *w);
                line.push_str(&format!(" {cell:<w$} |"));
            } else {
                line.push_str(&format!(" {cell:>w$} |"));
            }
        }
        writeln!(self.out, "{line}")
    }
}

/// Every cell of a batch as text (`NULL` for nulls), row by row.
pub fn cells(batch: &RecordBatch) -> anyhow::Result<Vec<Vec<String>>> {
    let options = FormatOptions::default().with_null("NULL");
    let formatters = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((0..batch.num_rows())
        .map(|row| {
            formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect()
        })
        .collect())
}

fn is_text(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
    )
}

/// `text` cut to `width` characters, ending in `...` when cut.
fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let keep = width.saturating_sub(3);
    let mut cut: String = text.chars().take(keep).collect();
    cut.push_str(&".".repeat(width.min(3)));
    cut
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, StringArray};

    use super::*;

    fn batch(ids: &[i64], names: &[&str]) -> RecordBatch {
        RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef),
            (
                "name",
                Arc::new(StringArray::from(names.to_vec())) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    #[test]
    fn the_header_is_printed_once_and_rows_as_they_come() {
        let first = batch(&[7, 12], &["ann", "bo"]);
        let mut out = Vec::new();
        let mut tableau = Tableau::new(&mut out, first.schema());
        tableau.push(&first).unwrap();
        tableau
            .push(&batch(&[123456, 5], &["a name far too long", "c"]))
            .unwrap();
        tableau.finish().unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "+----+------+\n\
             | id | name |\n\
             +----+------+\n\
             |  7 | ann  |\n\
             | 12 | bo   |\n\
             | 123456 | a... |\n\
             |  5 | c    |\n\
             +----+------+\n\
             4 rows\n"
        );
    }

    #[test]
    fn no_rows_is_an_empty_set() {
        let mut out = Vec::new();
        let tableau = Tableau::new(&mut out, batch(&[], &[]).schema());
        tableau.finish().unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "Empty set\n0 rows\n");
    }
}
