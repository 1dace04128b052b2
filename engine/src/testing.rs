//! Test support: an [`OperatorHarness`] that drives one operator with
//! batches, watermarks and barriers and records what it emits.

use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::error::Result;
use crate::message::{CheckpointBarrier, Message, Watermark};
use crate::operator::{Collector, Operator, OperatorContext};

/// Drives one operator outside any runtime.
pub struct OperatorHarness {
    operator: Box<dyn Operator>,
    ctx: OperatorContext,
    output: Vec<Message>,
}

impl OperatorHarness {
    /// A harness around `operator`, with a single-subtask context.
    pub fn new(operator: Box<dyn Operator>) -> Self {
        Self {
            operator,
            ctx: OperatorContext::for_test("under-test"),
            output: Vec::new(),
        }
    }

    /// The operator's context (counters, task info).
    pub fn context(&self) -> &OperatorContext {
        &self.ctx
    }

    fn keep(&mut self, mut out: Collector) {
        self.output.extend(out.drain());
    }

    /// Feeds a batch.
    pub async fn process(&mut self, batch: RecordBatch) -> Result<()> {
        let mut out = Collector::new();
        self.operator.process_batch(batch, &mut self.ctx, &mut out).await?;
        self.keep(out);
        Ok(())
    }

    /// Feeds a watermark; a forwarded watermark is recorded as output.
    pub async fn watermark(&mut self, watermark: Watermark) -> Result<()> {
        let mut out = Collector::new();
        self.ctx.current_watermark = watermark;
        if let Some(w) = self.operator.handle_watermark(watermark, &mut self.ctx, &mut out).await? {
            out.emit_watermark(w);
        }
        self.keep(out);
        Ok(())
    }

    /// Feeds a checkpoint barrier.
    pub async fn checkpoint(&mut self, barrier: CheckpointBarrier) -> Result<()> {
        let mut out = Collector::new();
        self.operator.handle_checkpoint(&barrier, &mut self.ctx, &mut out).await?;
        self.keep(out);
        Ok(())
    }

    /// Ends the input.
    pub async fn close(&mut self) -> Result<()> {
        let mut out = Collector::new();
        self.operator.on_close(&mut self.ctx, &mut out).await?;
        self.keep(out);
        Ok(())
    }

    /// Takes the batches emitted so far.
    pub fn take_batches(&mut self) -> Vec<RecordBatch> {
        let (batches, rest): (Vec<_>, Vec<_>) =
            self.output.drain(..).partition(|m| matches!(m, Message::Data(_)));
        self.output = rest;
        batches
            .into_iter()
            .filter_map(|m| match m {
                Message::Data(b) => Some(b),
                _ => None,
            })
            .collect()
    }

    /// Takes the watermarks emitted so far.
    pub fn take_watermarks(&mut self) -> Vec<Watermark> {
        let (wms, rest): (Vec<_>, Vec<_>) =
            self.output.drain(..).partition(|m| matches!(m, Message::Watermark(_)));
        self.output = rest;
        wms.into_iter()
            .filter_map(|m| match m {
                Message::Watermark(w) => Some(w),
                _ => None,
            })
            .collect()
    }

    /// Takes the emitted rows, each formatted as comma-separated values.
    pub fn rows_as_strings(&mut self) -> Vec<String> {
        self.take_batches().iter().flat_map(format_rows).collect()
    }
}

/// Formats every row of a batch as comma-separated values (`NULL` for null).
pub fn format_rows(batch: &RecordBatch) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let formatters: Vec<_> = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<std::result::Result<_, _>>()
        .unwrap_or_default();
    (0..batch.num_rows())
        .map(|row| {
            formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}
