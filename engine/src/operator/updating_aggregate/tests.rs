//! Unit tests of the updating aggregate: hand-checked changelogs.

use arrow::array::Int64Array;
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::min_max::{max_udaf, min_udaf};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateExprBuilder;
use datafusion::physical_expr::expressions::Column;

use super::*;
use crate::changelog::{materialize, with_row_kinds};
use crate::clock::ManualClock;
use crate::operator::AggregateSpec;
use crate::testing::OperatorHarness;
use crate::testing::fixtures::{batch, count_sum};

fn operator(spec: AggregateSpecRef, input: ChangelogMode) -> UpdatingAggregateFactory {
    UpdatingAggregateFactory::new(spec, input).unwrap()
}

fn create(factory: &UpdatingAggregateFactory) -> Box<dyn Operator> {
    factory.create(&TaskInfo::single("agg")).unwrap()
}

/// `(key, value)` rows of an updating stream.
fn changes(rows: &[(i64, i64, RowKind)]) -> RecordBatch {
    let schema = updating_schema(&Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new("value", DataType::Int64, true),
    ])));
    with_row_kinds(
        &schema,
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
        ],
        rows.iter().map(|r| r.2).collect(),
    )
    .unwrap()
}

/// `GROUP BY key: MIN(value), MAX(value), COUNT(DISTINCT value)` over [`changes`].
fn extremes() -> AggregateSpecRef {
    let input = changes(&[]).schema();
    let value: Arc<dyn PhysicalExpr> = Arc::new(Column::new("value", 1));
    let build = |udaf, alias: &str, distinct: bool| {
        Arc::new(
            AggregateExprBuilder::new(udaf, vec![Arc::clone(&value)])
                .schema(Arc::clone(&input))
                .alias(alias)
                .with_distinct(distinct)
                .build()
                .unwrap(),
        )
    };
    Arc::new(AggregateSpec {
        group_exprs: vec![Arc::new(Column::new("key", 0))],
        group_schema: Arc::new(Schema::new(vec![Field::new("key", DataType::Int64, false)])),
        aggregates: vec![
            build(min_udaf(), "lo", false),
            build(max_udaf(), "hi", false),
            build(count_udaf(), "distinct_values", true),
        ],
        filters: vec![None, None, None],
        output_schema: Arc::new(Schema::new(vec![
            Field::new("key", DataType::Int64, false),
            Field::new("lo", DataType::Int64, true),
            Field::new("hi", DataType::Int64, true),
            Field::new("distinct_values", DataType::Int64, false),
        ])),
        input_schema: input,
    })
}

fn kinds_and_rows(h: &mut OperatorHarness) -> Vec<String> {
    h.take_batches()
        .iter()
        .flat_map(|b| {
            let shown = crate::changelog::for_display(b).unwrap();
            crate::testing::format_rows(&shown)
        })
        .collect()
}

#[tokio::test]
async fn emits_an_insert_then_updates_per_batch() {
    let factory = operator(count_sum(&[("key", 0)]), ChangelogMode::AppendOnly);
    let mut h = OperatorHarness::new(create(&factory));
    h.process(batch(&[(1, 0, 5), (2, 0, 7), (1, 0, 1)]))
        .await
        .unwrap();
    h.process(batch(&[(1, 0, 3)])).await.unwrap();
    h.process(batch(&[(2, 0, 0)])).await.unwrap();
    assert_eq!(
        kinds_and_rows(&mut h),
        vec![
            "+I,1,2,6", "+I,2,1,7", "-U,1,2,6", "+U,1,3,9", "-U,2,1,7", "+U,2,2,7"
        ]
    );
}

#[tokio::test]
async fn min_max_and_distinct_counts_take_retractions() {
    use RowKind::*;
    let factory = operator(extremes(), ChangelogMode::Retract);
    let mut h = OperatorHarness::new(create(&factory));
    h.process(changes(&[(1, 5, Insert), (1, 9, Insert), (1, 5, Insert)]))
        .await
        .unwrap();
    // The maximum goes; the minimum has a second copy and stays.
    h.process(changes(&[(1, 9, UpdateBefore), (1, 5, Delete)]))
        .await
        .unwrap();
    // A retraction of a group never seen is skipped.
    h.process(changes(&[(2, 1, Delete), (1, 7, UpdateAfter)]))
        .await
        .unwrap();
    // The last rows of the group go: the group is deleted.
    h.process(changes(&[(1, 5, Delete), (1, 7, Delete)]))
        .await
        .unwrap();
    assert_eq!(
        kinds_and_rows(&mut h),
        vec![
            "+I,1,5,9,2",
            "-U,1,5,9,2",
            "+U,1,5,5,1",
            "-U,1,5,5,1",
            "+U,1,5,7,2",
            "-D,1,5,7,2",
        ]
    );
}

#[tokio::test]
async fn an_update_that_changes_nothing_is_not_emitted() {
    use RowKind::*;
    let factory = operator(extremes(), ChangelogMode::Retract);
    let mut h = OperatorHarness::new(create(&factory));
    h.process(changes(&[(1, 5, Insert), (1, 9, Insert)]))
        .await
        .unwrap();
    h.process(changes(&[(1, 9, UpdateBefore), (1, 9, UpdateAfter)]))
        .await
        .unwrap();
    assert_eq!(kinds_and_rows(&mut h), vec!["+I,1,5,9,2"]);
}

#[tokio::test]
async fn a_restored_aggregate_continues_the_changelog() {
    use RowKind::*;
    let factory = operator(extremes(), ChangelogMode::Retract);
    let mut h = OperatorHarness::new(create(&factory));
    h.process(changes(&[(1, 5, Insert), (1, 9, Insert), (2, 4, Insert)]))
        .await
        .unwrap();
    let snapshot = h.snapshot().await.unwrap();
    let mut restored = OperatorHarness::restored(create(&factory), snapshot).unwrap();
    restored
        .process(changes(&[(1, 9, Delete), (2, 4, Delete), (3, 1, Insert)]))
        .await
        .unwrap();
    assert_eq!(
        kinds_and_rows(&mut restored),
        vec!["-U,1,5,9,2", "+U,1,5,5,1", "-D,2,4,4,1", "+I,3,1,1,1"]
    );
}

#[tokio::test]
async fn a_mini_batch_folds_batches_in_at_once() {
    let factory = operator(count_sum(&[("key", 0)]), ChangelogMode::AppendOnly).with_mini_batch(
        Some(MiniBatch {
            allow_latency_ms: 60_000,
            size: 4,
        }),
    );
    let mut h = OperatorHarness::new(create(&factory));
    h.process(batch(&[(1, 0, 5)])).await.unwrap();
    h.process(batch(&[(1, 0, 1), (2, 0, 2)])).await.unwrap();
    assert!(h.take_batches().is_empty(), "held until the batch is full");
    h.process(batch(&[(1, 0, 1)])).await.unwrap();
    // A barrier flushes what was held.
    h.process(batch(&[(1, 0, 10)])).await.unwrap();
    h.checkpoint(CheckpointBarrier {
        id: 1,
        timestamp_ms: 0,
        then_stop: false,
    })
    .await
    .unwrap();
    assert_eq!(
        kinds_and_rows(&mut h),
        vec!["+I,1,3,7", "+I,2,1,2", "-U,1,3,7", "+U,1,4,17"]
    );
}

#[tokio::test]
async fn a_mini_batch_goes_out_on_a_tick_once_its_latency_passed() {
    let clock = ManualClock::new(1_000);
    let factory = operator(count_sum(&[("key", 0)]), ChangelogMode::AppendOnly).with_mini_batch(
        Some(MiniBatch {
            allow_latency_ms: 2_000,
            size: 1_000,
        }),
    );
    let mut h = OperatorHarness::new(create(&factory)).with_clock(clock.clone());
    h.process(batch(&[(1, 0, 5), (2, 0, 2)])).await.unwrap();
    clock.advance(1_500);
    h.process(batch(&[(1, 0, 1)])).await.unwrap();
    h.tick().await.unwrap();
    assert!(h.take_batches().is_empty(), "the oldest row waited 1.5 s");
    // No more input: the tick after the latency sends the batch out.
    clock.advance(500);
    h.tick().await.unwrap();
    assert_eq!(kinds_and_rows(&mut h), vec!["+I,1,2,6", "+I,2,1,2"]);
    clock.advance(5_000);
    h.tick().await.unwrap();
    assert!(h.take_batches().is_empty(), "nothing is buffered");
}

#[tokio::test]
async fn idle_groups_expire_past_the_state_ttl() {
    let clock = ManualClock::new(1_000);
    let factory =
        operator(count_sum(&[("key", 0)]), ChangelogMode::AppendOnly).with_state_ttl(Some(5_000));
    let mut h = OperatorHarness::new(create(&factory)).with_clock(clock.clone());
    h.process(batch(&[(1, 0, 5), (2, 0, 1)])).await.unwrap();
    clock.advance(3_000);
    h.process(batch(&[(2, 0, 1)])).await.unwrap();
    clock.advance(3_000);
    // Key 1 was idle 6 s: dropped without a retraction; key 2 lives on.
    h.process(batch(&[(1, 0, 7), (2, 0, 1)])).await.unwrap();
    assert_eq!(
        kinds_and_rows(&mut h),
        vec![
            "+I,1,1,5", "+I,2,1,1", "-U,2,1,1", "+U,2,2,2", "+I,1,1,7", "-U,2,2,2", "+U,2,3,3"
        ]
    );
    let expired = h
        .context()
        .metrics
        .state_expired
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(expired, 1);
}

#[tokio::test]
async fn the_changelog_applies_to_the_final_answer() {
    let factory = operator(count_sum(&[("key", 0)]), ChangelogMode::AppendOnly);
    let mut h = OperatorHarness::new(create(&factory));
    for b in 0..20 {
        h.process(batch(&[(b % 3, 0, b), (b % 5, 0, 1)]))
            .await
            .unwrap();
    }
    let changes = h.take_batches();
    let mut rows = crate::testing::format_rows(&materialize(&changes).unwrap()[0]);
    rows.sort();
    let mut expected = std::collections::BTreeMap::<i64, (i64, i64)>::new();
    for b in 0..20 {
        for (key, value) in [(b % 3, b), (b % 5, 1)] {
            let entry = expected.entry(key).or_default();
            *entry = (entry.0 + 1, entry.1 + value);
        }
    }
    let expected: Vec<String> = expected
        .iter()
        .map(|(k, (n, sum))| format!("{k},{n},{sum}"))
        .collect();
    assert_eq!(rows, expected);
}

/// Changes over `keys` groups that only take back rows they added:
/// `batches` batches of 40, from a fixed seed.
fn retracting_changes(keys: i64, batches: usize) -> Vec<RecordBatch> {
    use RowKind::*;
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    let mut live: Vec<Vec<i64>> = vec![Vec::new(); keys as usize];
    (0..batches)
        .map(|_| {
            let rows: Vec<(i64, i64, RowKind)> = (0..40)
                .map(|_| {
                    let key = next(keys as u64) as usize;
                    let values = &mut live[key];
                    if !values.is_empty() && next(3) == 0 {
                        let value = values.swap_remove(next(values.len() as u64) as usize);
                        let kind = if next(2) == 0 { Delete } else { UpdateBefore };
                        (key as i64, value, kind)
                    } else {
                        let value = next(20) as i64;
                        values.push(value);
                        let kind = if next(2) == 0 { Insert } else { UpdateAfter };
                        (key as i64, value, kind)
                    }
                })
                .collect();
            changes(&rows)
        })
        .collect()
}

fn barrier(id: u64) -> CheckpointBarrier {
    CheckpointBarrier {
        id,
        timestamp_ms: 0,
        then_stop: false,
    }
}

fn spilled_bytes(h: &OperatorHarness) -> u64 {
    h.context()
        .metrics
        .state_spilled_bytes
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// Room for a few dozen of [`retracting_changes`]' groups, of 300.
const TINY_BUDGET: usize = 16 << 10;

#[tokio::test]
async fn evicted_groups_reload_and_give_the_unbounded_changelog() {
    let factory = operator(extremes(), ChangelogMode::Retract);
    let input = retracting_changes(300, 150);
    let mut unbounded = OperatorHarness::new(create(&factory));
    let store = crate::testing::TestStore::new();
    let mut bounded =
        OperatorHarness::new(create(&factory)).with_spill(store.store.clone(), TINY_BUDGET);
    for (i, batch) in input.iter().enumerate() {
        unbounded.process(batch.clone()).await.unwrap();
        bounded.process(batch.clone()).await.unwrap();
        // Checkpoints defer the deletes of loaded entries, completions run them.
        if i % 10 == 9 {
            let id = i as u64 / 10 + 1;
            bounded.checkpoint(barrier(id)).await.unwrap();
            bounded.snapshot().await.unwrap();
            if id.is_multiple_of(2) {
                bounded.commit(id).await.unwrap();
            }
        }
    }
    let expected = kinds_and_rows(&mut unbounded);
    assert!(expected.iter().any(|r| r.starts_with("-U")));
    assert!(expected.iter().any(|r| r.starts_with("-D")));
    assert_eq!(kinds_and_rows(&mut bounded), expected);
    // Most groups went to RocksDB, and were read back.
    assert!(
        spilled_bytes(&bounded) > 100_000,
        "{}",
        spilled_bytes(&bounded)
    );
}

/// The key group of each row's key.
fn key_groups_of_keys(batch: &RecordBatch) -> Vec<u32> {
    let keys = [Arc::clone(batch.column(0))];
    crate::operator::session_spill::key_groups_of(
        &keys,
        true,
        batch.num_rows(),
        crate::partition::DEFAULT_MAX_KEY_GROUPS,
    )
    .unwrap()
}

fn subtask(index: usize, parallelism: usize) -> TaskInfo {
    TaskInfo {
        subtask: index,
        parallelism,
        ..TaskInfo::single("agg")
    }
}

#[tokio::test]
async fn evicted_groups_are_restored_by_key_group_at_another_parallelism() {
    let factory = operator(extremes(), ChangelogMode::Retract);
    let input = retracting_changes(300, 120);
    let (before, after) = input.split_at(60);
    // What the changes after the checkpoint must be.
    let mut unbounded = OperatorHarness::new(create(&factory));
    for batch in before {
        unbounded.process(batch.clone()).await.unwrap();
    }
    unbounded.take_batches();
    for batch in after {
        unbounded.process(batch.clone()).await.unwrap();
    }
    let mut expected = kinds_and_rows(&mut unbounded);
    expected.sort();

    let old = crate::testing::TestStore::new();
    let mut h = OperatorHarness::new(create(&factory)).with_spill(old.store.clone(), TINY_BUDGET);
    for batch in before {
        h.process(batch.clone()).await.unwrap();
    }
    h.checkpoint(barrier(1)).await.unwrap();
    let snapshot = h.snapshot().await.unwrap();
    // The subtask goes on past the barrier before the local snapshot is
    // taken: its later evictions and loads land in the snapshot too, and
    // the restore must take the state as of the barrier.
    let spilled = spilled_bytes(&h);
    for batch in &after[..20] {
        h.process(batch.clone()).await.unwrap();
    }
    assert!(
        spilled_bytes(&h) > spilled,
        "nothing evicted past the barrier"
    );
    let local = old.store.snapshot(1).unwrap();
    let restored = crate::state::RestoredSnapshot::open(&local.dir, 1).unwrap();

    let mut got = Vec::new();
    for index in 0..2 {
        let task = subtask(index, 2);
        let new = crate::testing::TestStore::new();
        let copied = restored
            .copy_evicted_groups(&new.store, 1, &task.key_groups())
            .unwrap();
        assert!(copied > 0, "subtask {index} found no evicted groups");
        let mut h = OperatorHarness::restored_spilling(
            create(&factory),
            task.clone(),
            std::slice::from_ref(&snapshot),
            new.store.clone(),
            TINY_BUDGET,
            1,
        )
        .unwrap();
        for batch in after {
            let mine = BooleanArray::from_iter(
                key_groups_of_keys(batch)
                    .into_iter()
                    .map(|kg| Some(task.key_groups().contains(&kg))),
            );
            let mine = arrow::compute::filter_record_batch(batch, &mine).unwrap();
            h.process(mine).await.unwrap();
        }
        got.extend(kinds_and_rows(&mut h));
    }
    got.sort();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn evicted_groups_expire_past_the_state_ttl() {
    let clock = ManualClock::new(1_000);
    let factory =
        operator(count_sum(&[("key", 0)]), ChangelogMode::AppendOnly).with_state_ttl(Some(5_000));
    let store = crate::testing::TestStore::new();
    let mut h = OperatorHarness::new(create(&factory))
        .with_clock(clock.clone())
        .with_spill(store.store.clone(), 4 << 10);
    // 200 groups: most are evicted.
    let rows: Vec<(i64, i64, i64)> = (0..200).map(|k| (k, 0, 1)).collect();
    for chunk in rows.chunks(20) {
        h.process(batch(chunk)).await.unwrap();
    }
    assert!(spilled_bytes(&h) > 0);
    clock.advance(3_000);
    h.process(batch(&[(0, 0, 1)])).await.unwrap();
    clock.advance(3_000);
    // Group 0 (evicted, then loaded and touched 3 s ago) lives on; group 1,
    // evicted and idle 6 s, is dropped when loaded and starts afresh.
    h.take_batches();
    h.process(batch(&[(0, 0, 1), (1, 0, 7)])).await.unwrap();
    assert_eq!(
        kinds_and_rows(&mut h),
        vec!["-U,0,2,2", "+U,0,3,3", "+I,1,1,7"]
    );
    let expired = |h: &OperatorHarness| {
        h.context()
            .metrics
            .state_expired
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert!(expired(&h) >= 1);
    // The sweep finds the evicted groups never touched again: each of the
    // 200 groups expired once, and group 1 twice.
    clock.advance(crate::operator::evictable::SWEEP_MIN_INTERVAL_MS);
    h.process(batch(&[(500, 0, 1)])).await.unwrap();
    assert_eq!(expired(&h), 201);
    // What expired is gone from disk: the next sweep finds nothing more.
    clock.advance(crate::operator::evictable::SWEEP_MIN_INTERVAL_MS);
    h.process(batch(&[(501, 0, 1)])).await.unwrap();
    assert_eq!(expired(&h), 202, "group 500, in memory");
}

fn unmatched_deletes(h: &OperatorHarness) -> u64 {
    h.context()
        .metrics
        .unmatched_deletes
        .load(std::sync::atomic::Ordering::Relaxed)
}

#[tokio::test]
async fn retractions_of_groups_not_held_are_skipped_and_counted() {
    use RowKind::*;
    let factory = operator(extremes(), ChangelogMode::Retract);
    let mut h = OperatorHarness::new(create(&factory));
    h.process(changes(&[(1, 5, Insert), (1, 9, Insert)]))
        .await
        .unwrap();
    // Groups 2 and 3 were never seen.
    h.process(changes(&[(2, 1, Delete), (3, 4, UpdateBefore)]))
        .await
        .unwrap();
    assert_eq!(unmatched_deletes(&h), 2);
    // Group 1 empties; a third retraction of it has nothing to take back.
    h.process(changes(&[(1, 5, Delete), (1, 9, Delete), (1, 9, Delete)]))
        .await
        .unwrap();
    assert_eq!(unmatched_deletes(&h), 3);
    assert_eq!(kinds_and_rows(&mut h), vec!["+I,1,5,9,2", "-D,1,5,9,2"]);
}
