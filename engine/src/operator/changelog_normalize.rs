//! Turns an upsert stream into a retract changelog, as Flink's
//! `ChangelogNormalize` does after an `upsert-kafka` source.
//!
//! An upsert source knows only the latest row of each key (see
//! [`crate::changelog`], "Upsert streams"): `+U` (or `+I`) is the row of its
//! key now, `-D` deletes its key. This operator, keyed by the key (a hash
//! exchange in front of it), remembers each key's last row and emits what
//! the rest of the job understands:
//!
//! ```text
//!   upsert of a new key           -> +I new
//!   upsert of a known key         -> -U old, +U new   (nothing if new = old)
//!   deletion of a known key       -> -D old
//!   deletion of an unknown key    -> dropped, counted (weir_unmatched_deletes_total)
//!   -U                            -> ignored (the +U that follows carries the row)
//! ```
//!
//! An append-only input is a stream of upserts. A retract changelog (a
//! `debezium-json` source under `table.exec.source.cdc-events-duplicate`,
//! keyed by its primary key) is one too, read through its `+I`/`+U`/`-D`:
//! repeated change events then change nothing, and a deletion of a row
//! never inserted goes no further. State (one row per key) is
//! checkpointed by key group, so a restore at another parallelism hands each
//! key to its new owner. With a state TTL (`table.exec.state.ttl`) a key
//! untouched for that long is forgotten without a retraction, as Flink does,
//! and counted. Past the operator's memory budget the least recently
//! touched keys are evicted to RocksDB and loaded back when touched (see
//! [`super::evictable`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use async_trait::async_trait;

use super::evictable::EvictableKeys;
use super::snapshot::{KeyedStateBuilder, OperatorRestore, OperatorSnapshot, decode_batches};
use super::{Collector, Operator, OperatorContext, OperatorFactory, TaskInfo};
use crate::changelog::{RowKind, data_schema, split_row_kinds, updating_schema, with_row_kinds};
use crate::error::{Error, Result};
use crate::message::CheckpointBarrier;

/// Creates [`ChangelogNormalizeOperator`]s.
#[derive(Debug, Clone)]
pub struct ChangelogNormalizeFactory {
    /// The data columns of the input (without the row kind).
    input_data: SchemaRef,
    /// Input columns of the key (what the hash exchange in front hashes).
    key_columns: Vec<usize>,
    output_schema: SchemaRef,
    state_ttl_ms: Option<i64>,
}

impl ChangelogNormalizeFactory {
    /// Normalizes an upsert stream of `input_schema` keyed by `key_columns`;
    /// the output is `output_data` (the same columns, with the table's
    /// declared nullability) as a retract changelog.
    pub fn new(
        input_schema: &SchemaRef,
        key_columns: Vec<usize>,
        output_data: &SchemaRef,
    ) -> Result<Self> {
        let input_data = data_schema(input_schema);
        let output_data = data_schema(output_data);
        if key_columns.is_empty() {
            return Err(Error::internal("a ChangelogNormalize needs key columns"));
        }
        let same_types = input_data.fields().len() == output_data.fields().len()
            && input_data
                .fields()
                .iter()
                .zip(output_data.fields())
                .all(|(a, b)| a.data_type() == b.data_type());
        if !same_types || key_columns.iter().any(|&k| k >= input_data.fields().len()) {
            return Err(Error::internal(format!(
                "ChangelogNormalize over {input_data:?} cannot output {output_data:?} keyed by {key_columns:?}"
            )));
        }
        Ok(Self {
            input_data,
            key_columns,
            output_schema: updating_schema(&output_data),
            state_ttl_ms: None,
        })
    }

    /// Forgets keys untouched for `ttl_ms` of processing time.
    pub fn with_state_ttl(mut self, ttl_ms: Option<i64>) -> Self {
        self.state_ttl_ms = ttl_ms.filter(|&t| t > 0);
        self
    }
}

impl fmt::Display for ChangelogNormalizeFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key: Vec<&str> = self
            .key_columns
            .iter()
            .map(|&k| self.input_data.field(k).name().as_str())
            .collect();
        write!(f, "ChangelogNormalize: key=[{}]", key.join(", "))?;
        if let Some(ttl) = self.state_ttl_ms {
            write!(f, ", state-ttl={ttl}ms")?;
        }
        Ok(())
    }
}

impl OperatorFactory for ChangelogNormalizeFactory {
    fn name(&self) -> &str {
        "ChangelogNormalize"
    }
    fn output_schema(&self) -> SchemaRef {
        Arc::clone(&self.output_schema)
    }
    fn create(&self, _task: &TaskInfo) -> Result<Box<dyn Operator>> {
        Ok(Box::new(ChangelogNormalizeOperator::new(self.clone())?))
    }
}

/// Keeps the last row of each key; see the module docs.
pub struct ChangelogNormalizeOperator {
    spec: ChangelogNormalizeFactory,
    keys: RowConverter,
    rows: RowConverter,
    /// Encoded key -> encoded last row.
    last: HashMap<Vec<u8>, Vec<u8>>,
    /// When each key was last touched, its size; eviction past the budget.
    keyed: EvictableKeys,
}

impl fmt::Debug for ChangelogNormalizeOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangelogNormalizeOperator")
            .field("keys", &self.last.len())
            .finish()
    }
}

impl ChangelogNormalizeOperator {
    fn new(spec: ChangelogNormalizeFactory) -> Result<Self> {
        let schema = &spec.input_data;
        let keys = RowConverter::new(
            spec.key_columns
                .iter()
                .map(|&k| SortField::new(schema.field(k).data_type().clone()))
                .collect(),
        )?;
        let rows = RowConverter::new(
            schema
                .fields()
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect(),
        )?;
        Ok(Self {
            keyed: EvictableKeys::new(spec.state_ttl_ms),
            spec,
            keys,
            rows,
            last: HashMap::new(),
        })
    }

    fn key_columns(&self, data: &RecordBatch) -> Vec<ArrayRef> {
        self.spec
            .key_columns
            .iter()
            .map(|&k| Arc::clone(data.column(k)))
            .collect()
    }

    /// The encoded keys and rows of `data` (input data columns).
    fn encode(&self, data: &RecordBatch) -> Result<(arrow::row::Rows, arrow::row::Rows)> {
        Ok((
            self.keys.convert_columns(&self.key_columns(data))?,
            self.rows.convert_columns(data.columns())?,
        ))
    }
}

#[async_trait]
impl Operator for ChangelogNormalizeOperator {
    async fn process_batch(
        &mut self,
        batch: RecordBatch,
        ctx: &mut OperatorContext,
        out: &mut Collector,
    ) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.keyed
            .sweep(&mut self.last, ctx, "ChangelogNormalize forgot keys")?;
        let (data, kinds) = split_row_kinds(&batch)?;
        let (keys, rows) = self.encode(&data)?;
        let key_columns = self.key_columns(&data);
        self.keyed.load(&mut self.last, &key_columns, &keys, ctx)?;
        let mut emitted: Vec<Vec<u8>> = Vec::new();
        let mut emitted_kinds: Vec<RowKind> = Vec::new();
        let mut unmatched = 0;
        for i in 0..data.num_rows() {
            let kind = kinds.as_ref().map_or(RowKind::Insert, |k| k[i]);
            let key = keys.row(i);
            match kind {
                RowKind::Insert | RowKind::UpdateAfter => {
                    let row = rows.row(i);
                    let row = row.as_ref();
                    match self.last.get_mut(key.as_ref()) {
                        Some(old) if old.as_slice() == row => {}
                        Some(old) => {
                            let old = std::mem::replace(old, row.to_vec());
                            emitted.extend([old, row.to_vec()]);
                            emitted_kinds.extend([RowKind::UpdateBefore, RowKind::UpdateAfter]);
                        }
                        None => {
                            self.last.insert(key.as_ref().to_vec(), row.to_vec());
                            emitted.push(row.to_vec());
                            emitted_kinds.push(RowKind::Insert);
                        }
                    }
                    self.keyed.touch(key.as_ref(), row.len(), ctx);
                }
                RowKind::Delete => match self.last.remove(key.as_ref()) {
                    Some(old) => {
                        self.keyed.forget(key.as_ref());
                        emitted.push(old);
                        emitted_kinds.push(RowKind::Delete);
                    }
                    None => unmatched += 1,
                },
                // The `+U` after it says what the key is now.
                RowKind::UpdateBefore => {}
            }
        }
        if unmatched > 0 {
            ctx.metrics.add_unmatched_deletes(unmatched);
            tracing::debug!(
                unmatched,
                "ChangelogNormalize dropped deletions of unknown keys"
            );
        }
        if !emitted.is_empty() {
            let parser = self.rows.parser();
            let columns = self
                .rows
                .convert_rows(emitted.iter().map(|r| parser.parse(r)))?;
            out.collect(with_row_kinds(
                &self.spec.output_schema,
                columns,
                emitted_kinds,
            )?);
        }
        self.keyed
            .evict_if_over_budget(&mut self.last, &self.keys, ctx)
    }

    async fn handle_checkpoint(
        &mut self,
        _barrier: &CheckpointBarrier,
        ctx: &mut OperatorContext,
        _out: &mut Collector,
    ) -> Result<()> {
        self.keyed
            .sweep(&mut self.last, ctx, "ChangelogNormalize forgot keys")
    }

    async fn snapshot_state(
        &mut self,
        ctx: &mut OperatorContext,
        snapshot: &mut OperatorSnapshot,
    ) -> Result<()> {
        let mut builder = KeyedStateBuilder::default();
        if !self.last.is_empty() {
            let parser = self.rows.parser();
            let columns = self
                .rows
                .convert_rows(self.last.values().map(|row| parser.parse(row)))?;
            builder.add_rows(
                &columns,
                &self.spec.key_columns,
                self.last.len(),
                ctx.task.max_key_groups,
            )?;
        }
        snapshot.put_key_groups(ctx.task.key_groups(), builder.finish()?)
    }

    fn restore_state(&mut self, ctx: &OperatorContext, restore: OperatorRestore) -> Result<()> {
        let width = self.spec.input_data.fields().len();
        for (_, bytes) in restore.keyed {
            for (columns, rows) in decode_batches(&bytes)? {
                if columns.len() != width {
                    return Err(Error::internal(format!(
                        "checkpointed ChangelogNormalize state has {} columns, expected {width}",
                        columns.len()
                    )));
                }
                let batch = RecordBatch::try_new_with_options(
                    Arc::clone(&self.spec.input_data),
                    columns,
                    &arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
                )?;
                let (keys, encoded) = self.encode(&batch)?;
                for i in 0..rows {
                    let key = keys.row(i).as_ref().to_vec();
                    let row = encoded.row(i).as_ref().to_vec();
                    self.keyed.touch(&key, row.len(), ctx);
                    self.last.insert(key, row);
                }
            }
        }
        // Keys evicted before the checkpoint were copied into the store by
        // key group; they come back when touched.
        self.keyed.restored(ctx)
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::changelog::upsert_schema;
    use crate::testing::OperatorHarness;

    /// `(id BIGINT NOT NULL, name STRING, v BIGINT NOT NULL)`, keyed by `id`.
    fn table() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("v", DataType::Int64, false),
        ]))
    }

    fn factory() -> ChangelogNormalizeFactory {
        ChangelogNormalizeFactory::new(&upsert_schema(&table(), &[0]), vec![0], &table()).unwrap()
    }

    fn create(factory: &ChangelogNormalizeFactory) -> Box<dyn Operator> {
        factory.create(&TaskInfo::single("normalize")).unwrap()
    }

    /// An upsert batch: `Some((name, v))` upserts the id, `None` deletes it.
    #[allow(clippy::type_complexity)]
    fn upserts(rows: &[(i64, Option<(&str, i64)>)]) -> RecordBatch {
        let ids: Int64Array = rows.iter().map(|(id, _)| Some(*id)).collect();
        let names: StringArray = rows.iter().map(|(_, r)| r.map(|(n, _)| n)).collect();
        let values: Int64Array = rows.iter().map(|(_, r)| r.map(|(_, v)| v)).collect();
        let kinds = rows
            .iter()
            .map(|(_, r)| match r {
                Some(_) => RowKind::UpdateAfter,
                None => RowKind::Delete,
            })
            .collect();
        with_row_kinds(
            &upsert_schema(&table(), &[0]),
            vec![Arc::new(ids), Arc::new(names), Arc::new(values)],
            kinds,
        )
        .unwrap()
    }

    fn changes(h: &mut OperatorHarness) -> Vec<String> {
        h.take_batches()
            .iter()
            .flat_map(|b| crate::testing::format_rows(&crate::changelog::for_display(b).unwrap()))
            .collect()
    }

    #[tokio::test]
    async fn upserts_and_tombstones_become_a_retract_changelog() {
        let mut h = OperatorHarness::new(create(&factory()));
        h.process(upserts(&[
            (1, Some(("a", 10))),
            (2, Some(("b", 20))),
            (1, Some(("c", 11))),
            (2, None),
            // Unknown key: dropped and counted.
            (3, None),
            // The same row again: nothing changes.
            (1, Some(("c", 11))),
        ]))
        .await
        .unwrap();
        h.process(upserts(&[(2, Some(("d", 21))), (1, None)]))
            .await
            .unwrap();
        assert_eq!(
            changes(&mut h),
            vec![
                "+I,1,a,10",
                "+I,2,b,20",
                "-U,1,a,10",
                "+U,1,c,11",
                "-D,2,b,20",
                "+I,2,d,21",
                "-D,1,c,11",
            ]
        );
        let unmatched = h
            .context()
            .metrics
            .unmatched_deletes
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(unmatched, 1);
        // The output has the table's nullability back.
        assert!(!factory().output_schema().field(2).is_nullable());
    }

    #[tokio::test]
    async fn append_only_rows_are_upserts() {
        let mut h = OperatorHarness::new(create(&factory()));
        let batch = RecordBatch::try_new(
            table(),
            vec![
                Arc::new(Int64Array::from(vec![1, 1])),
                Arc::new(StringArray::from(vec!["a", "b"])),
                Arc::new(Int64Array::from(vec![1, 2])),
            ],
        )
        .unwrap();
        h.process(batch).await.unwrap();
        assert_eq!(changes(&mut h), vec!["+I,1,a,1", "-U,1,a,1", "+U,1,b,2"]);
    }

    #[tokio::test]
    async fn restored_at_another_parallelism_each_key_continues_where_it_was() {
        let factory = factory();
        let mut h = OperatorHarness::new(create(&factory));
        let first: Vec<(i64, Option<(&str, i64)>)> =
            (0..50).map(|id| (id, Some(("x", id * 10)))).collect();
        h.process(upserts(&first)).await.unwrap();
        h.take_batches();
        let snapshot = h.snapshot().await.unwrap();
        // Two subtasks now: each gets the keys of its key groups.
        let mut all = Vec::new();
        for subtask in 0..2 {
            let task = TaskInfo {
                subtask,
                parallelism: 2,
                ..TaskInfo::single("normalize")
            };
            let mut restored = OperatorHarness::restored_as(
                factory.create(&task).unwrap(),
                task.clone(),
                std::slice::from_ref(&snapshot),
            )
            .unwrap();
            // Every key: deleted where this subtask owns it, else unknown here.
            let deletes: Vec<(i64, Option<(&str, i64)>)> = (0..50).map(|id| (id, None)).collect();
            restored.process(upserts(&deletes)).await.unwrap();
            let got = changes(&mut restored);
            assert!(
                !got.is_empty() && got.len() < 50,
                "subtask {subtask}: {got:?}"
            );
            let unmatched = restored
                .context()
                .metrics
                .unmatched_deletes
                .load(std::sync::atomic::Ordering::Relaxed);
            assert_eq!(got.len() as u64 + unmatched, 50);
            all.extend(got);
        }
        all.sort();
        let mut want: Vec<String> = (0..50).map(|id| format!("-D,{id},x,{}", id * 10)).collect();
        want.sort();
        assert_eq!(all, want);
    }

    /// 60 batches of 20 upserts and deletions over 300 keys: every key is
    /// touched again long after it was evicted.
    fn churn() -> Vec<RecordBatch> {
        let names = ["a", "bb", "ccc"];
        (0..60i64)
            .map(|b| {
                let rows: Vec<(i64, Option<(&str, i64)>)> = (0..20i64)
                    .map(|i| {
                        let id = (b * 37 + i * 13) % 300;
                        let row =
                            ((b + i) % 7 != 0).then(|| (names[(b % 3) as usize], b * 100 + i));
                        (id, row)
                    })
                    .collect();
                upserts(&rows)
            })
            .collect()
    }

    /// Room for a few dozen keys, of 300.
    const TINY_BUDGET: usize = 4 << 10;

    fn create_as(task: &TaskInfo) -> Box<dyn Operator> {
        factory().create(task).unwrap()
    }

    #[tokio::test]
    async fn evicted_keys_reload_and_give_the_in_memory_changelog() {
        let got = crate::operator::evictable::check::evicting_gives_the_in_memory_output(
            &create_as,
            &churn(),
            TINY_BUDGET,
        )
        .await;
        for kind in ["+I", "-U", "+U", "-D"] {
            assert!(got.iter().any(|r| r.starts_with(kind)), "no {kind}");
        }
    }

    #[tokio::test]
    async fn evicted_keys_are_restored_by_key_group_at_another_parallelism() {
        let input = churn();
        let (before, after) = input.split_at(30);
        crate::operator::evictable::check::evicted_keys_restore_at_another_parallelism(
            &create_as,
            before,
            after,
            0,
            TINY_BUDGET,
        )
        .await;
    }

    #[tokio::test]
    async fn evicted_keys_expire_past_the_state_ttl() {
        let clock = crate::clock::ManualClock::new(1_000);
        let store = crate::testing::TestStore::new();
        let op = factory()
            .with_state_ttl(Some(5_000))
            .create(&TaskInfo::single("normalize"))
            .unwrap();
        let mut h = OperatorHarness::new(op)
            .with_clock(clock.clone())
            .with_spill(store.store.clone(), TINY_BUDGET);
        let rows: Vec<(i64, Option<(&str, i64)>)> =
            (0..200).map(|id| (id, Some(("x", id)))).collect();
        for chunk in rows.chunks(20) {
            h.process(upserts(chunk)).await.unwrap();
        }
        assert!(crate::operator::evictable::check::spilled_bytes(&h) > 0);
        clock.advance(3_000);
        h.process(upserts(&[(0, Some(("y", 0)))])).await.unwrap();
        clock.advance(3_000);
        h.take_batches();
        // Key 0 (evicted, loaded and touched 3 s ago) lives on; key 1,
        // evicted and idle 6 s, is dropped when loaded: an insert again.
        h.process(upserts(&[(0, Some(("z", 0))), (1, Some(("z", 1)))]))
            .await
            .unwrap();
        assert_eq!(changes(&mut h), vec!["-U,0,y,0", "+U,0,z,0", "+I,1,z,1"]);
        let expired = |h: &OperatorHarness| {
            h.context()
                .metrics
                .state_expired
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        assert!(expired(&h) >= 1);
        // The sweep finds the evicted keys never touched again: each of the
        // 200 keys expired once, key 1 twice.
        clock.advance(crate::operator::evictable::SWEEP_MIN_INTERVAL_MS);
        h.process(upserts(&[(500, Some(("x", 1)))])).await.unwrap();
        assert_eq!(expired(&h), 201);
    }

    #[tokio::test]
    async fn idle_keys_are_forgotten_past_the_state_ttl() {
        let clock = crate::clock::ManualClock::new(1_000);
        let op = factory()
            .with_state_ttl(Some(5_000))
            .create(&TaskInfo::single("normalize"))
            .unwrap();
        let mut h = OperatorHarness::new(op).with_clock(clock.clone());
        h.process(upserts(&[(1, Some(("a", 1))), (2, Some(("b", 2)))]))
            .await
            .unwrap();
        clock.advance(3_000);
        h.process(upserts(&[(2, Some(("b", 3)))])).await.unwrap();
        clock.advance(3_000);
        // Key 1 was idle 6 s: forgotten, so its next upsert is an insert.
        h.process(upserts(&[(1, Some(("a", 4)))])).await.unwrap();
        assert_eq!(
            changes(&mut h),
            vec!["+I,1,a,1", "+I,2,b,2", "-U,2,b,2", "+U,2,b,3", "+I,1,a,4"]
        );
        assert!(
            factory()
                .with_state_ttl(Some(5))
                .to_string()
                .contains("state-ttl=5ms")
        );
    }
}
