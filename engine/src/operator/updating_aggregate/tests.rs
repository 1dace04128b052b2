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
