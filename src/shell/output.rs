//! How `weir sql` prints results: aligned tables, CSV or JSON lines; and
//! for a running SELECT in a terminal, a live table redrawn in place (Flink's
//! "table" result mode) or a changelog of `+I` rows.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::util::pretty::pretty_format_batches_with_schema;
use weir_engine::RowKind;
use weir_engine::changelog::{ChangelogMode, Materialized};

/// How rows are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An aligned table.
    Table,
    /// CSV with a header line.
    Csv,
    /// One JSON object per row.
    Json,
}

/// How a running SELECT is shown in a terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ResultMode {
    /// A table that updates in place as rows arrive.
    Table,
    /// Every change as a row, with an `op` column (`+I`: insert).
    Changelog,
}

/// Prints a complete result in `format`.
pub fn print_batches(
    out: &mut impl Write,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    format: Format,
) -> anyhow::Result<()> {
    match format {
        Format::Table => writeln!(
            out,
            "{}",
            pretty_format_batches_with_schema(Arc::clone(schema), batches)?
        )?,
        Format::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            if batches.is_empty() {
                writer.write(&RecordBatch::new_empty(Arc::clone(schema)))?;
            }
            for b in batches {
                writer.write(b)?;
            }
        }
        Format::Json => {
            let mut writer = arrow::json::LineDelimitedWriter::new(&mut *out);
            for b in batches {
                writer.write(b)?;
            }
            writer.finish()?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Rows streaming out as they come (CSV and JSON print each batch at once;
/// a table is printed at the end, when its column widths are known).
pub struct StreamPrinter {
    schema: SchemaRef,
    format: Format,
    held: Vec<RecordBatch>,
    csv_header_written: bool,
    pub rows: usize,
}

impl StreamPrinter {
    pub fn new(schema: SchemaRef, format: Format) -> Self {
        Self {
            schema: weir_engine::changelog::display_schema(&schema),
            format,
            held: Vec::new(),
            csv_header_written: false,
            rows: 0,
        }
    }

    /// An updating result's rows are printed with their kind (`op`).
    pub fn push(&mut self, batch: RecordBatch) -> anyhow::Result<()> {
        self.rows += batch.num_rows();
        let batch = weir_engine::changelog::for_display(&batch)?;
        let mut out = std::io::stdout().lock();
        match self.format {
            Format::Table => self.held.push(batch),
            Format::Csv => {
                let mut writer = arrow::csv::WriterBuilder::new()
                    .with_header(!self.csv_header_written)
                    .build(&mut out);
                writer.write(&batch)?;
                self.csv_header_written = true;
            }
            Format::Json => print_batches(&mut out, &self.schema, &[batch], Format::Json)?,
        }
        out.flush()?;
        Ok(())
    }

    pub fn finish(self) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        match self.format {
            Format::Table => print_batches(&mut out, &self.schema, &self.held, Format::Table),
            Format::Csv if !self.csv_header_written => {
                print_batches(&mut out, &self.schema, &[], Format::Csv)
            }
            _ => Ok(()),
        }
    }
}

/// The live table: every row so far (the newest that fit on the screen),
/// redrawn in place under a status line. An updating result is shown as
/// its current state: each change is applied, so rows update in place.
pub struct LiveTable {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    /// The state of an updating result.
    state: Option<Materialized>,
    pub rows: usize,
    drawn_lines: usize,
    dirty: bool,
    started: Instant,
    last_draw: Instant,
}

impl LiveTable {
    pub fn new(schema: SchemaRef) -> Self {
        let updating = ChangelogMode::of(&schema).is_updating();
        Self {
            schema: weir_engine::changelog::data_schema(&schema),
            batches: Vec::new(),
            state: updating.then(Materialized::new),
            rows: 0,
            drawn_lines: 0,
            dirty: true,
            started: Instant::now(),
            last_draw: Instant::now(),
        }
    }

    pub fn push(&mut self, batch: RecordBatch) -> anyhow::Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.dirty = true;
        match &mut self.state {
            Some(state) => {
                state.apply(&batch)?;
                self.rows = state.len();
                self.batches = state.current()?.into_iter().collect();
            }
            None => {
                self.rows += batch.num_rows();
                self.batches.push(batch);
            }
        }
        Ok(())
    }

    /// Redraws when something changed (or `force`), with `status` below.
    pub fn redraw(&mut self, status: &str, force: bool) -> anyhow::Result<()> {
        // The status line's clock moves even when no row came.
        let stale = self.last_draw.elapsed() >= std::time::Duration::from_secs(1);
        if !self.dirty && !force && !stale {
            return Ok(());
        }
        self.last_draw = Instant::now();
        let (width, height) = terminal_size::terminal_size()
            .map(|(w, h)| (w.0 as usize, h.0 as usize))
            .unwrap_or((120, 40));
        let fit = height.saturating_sub(8).max(3);
        let shown = tail(&self.batches, fit);
        let table = pretty_format_batches_with_schema(Arc::clone(&self.schema), &shown)
            .context("cannot format rows")?
            .to_string();
        let mut text = String::new();
        if self.drawn_lines > 0 {
            // Back to where the last drawing began, and clear below.
            text.push_str(&format!("\x1b[{}F\x1b[J", self.drawn_lines));
        }
        let mut lines = 0;
        for line in table.lines() {
            text.extend(line.chars().take(width.saturating_sub(1)));
            text.push('\n');
            lines += 1;
        }
        let hidden = self.rows - shown.iter().map(RecordBatch::num_rows).sum::<usize>();
        let more = if hidden > 0 {
            format!(" (the newest shown; {hidden} above)")
        } else {
            String::new()
        };
        text.push_str(&format!(
            "{} rows{more} · {:.1}s · {status}\n",
            self.rows,
            self.started.elapsed().as_secs_f64()
        ));
        lines += 1;
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()?;
        self.drawn_lines = lines;
        self.dirty = false;
        Ok(())
    }
}

/// The last `n` rows of `batches`.
fn tail(batches: &[RecordBatch], n: usize) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    let mut left = n;
    for b in batches.iter().rev() {
        if left == 0 {
            break;
        }
        let take = b.num_rows().min(left);
        out.push(b.slice(b.num_rows() - take, take));
        left -= take;
    }
    out.reverse();
    out
}

/// The changelog: a header, then one line per row with its change kind.
pub struct Changelog {
    header_written: bool,
    schema: SchemaRef,
    pub rows: usize,
}

impl Changelog {
    pub fn new(schema: SchemaRef) -> Self {
        Self {
            header_written: false,
            schema: weir_engine::changelog::data_schema(&schema),
            rows: 0,
        }
    }

    pub fn push(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        if !self.header_written {
            let names: Vec<&str> = self
                .schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            writeln!(out, "op | {}", names.join(" | "))?;
            self.header_written = true;
        }
        let (data, kinds) = weir_engine::changelog::split_row_kinds(batch)?;
        for (i, values) in crate::tableau::cells(&data)?.into_iter().enumerate() {
            let kind = kinds.as_ref().map_or(RowKind::Insert, |k| k[i]);
            writeln!(out, "{} | {}", kind.short_string(), values.join(" | "))?;
        }
        self.rows += batch.num_rows();
        out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::Int64Array;

    use super::*;

    fn batch(values: &[i64]) -> RecordBatch {
        RecordBatch::try_from_iter([(
            "x",
            Arc::new(Int64Array::from(values.to_vec())) as arrow::array::ArrayRef,
        )])
        .unwrap()
    }

    #[test]
    fn tail_keeps_the_newest_rows_across_batches() {
        let batches = [batch(&[1, 2, 3]), batch(&[4, 5])];
        let kept = tail(&batches, 3);
        let values: Vec<i64> = kept
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        assert_eq!(values, vec![3, 4, 5]);
    }

    #[test]
    fn formats_print_every_row() {
        let b = batch(&[7, 8]);
        let schema = b.schema();
        let mut csv = Vec::new();
        print_batches(&mut csv, &schema, std::slice::from_ref(&b), Format::Csv).unwrap();
        assert_eq!(String::from_utf8(csv).unwrap(), "x\n7\n8\n");
        let mut json = Vec::new();
        print_batches(&mut json, &schema, std::slice::from_ref(&b), Format::Json).unwrap();
        assert_eq!(String::from_utf8(json).unwrap(), "{\"x\":7}\n{\"x\":8}\n");
        let mut table = Vec::new();
        print_batches(&mut table, &schema, &[b], Format::Table).unwrap();
        assert!(String::from_utf8(table).unwrap().contains("| 8 |"));
    }
}
