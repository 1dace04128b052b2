//! Unit tests of the regular join: every kind, retractions, null keys, an
//! extra condition, restore and eviction.

use arrow::array::Int64Array;
use arrow::datatypes::{DataType, Field};
use datafusion::logical_expr::Operator as BinaryOp;
use datafusion::physical_expr::expressions::{BinaryExpr, Column};

use super::*;
use crate::message::Watermark;
use crate::testing::OperatorHarness;
use crate::testing::fixtures::{batch, input_schema};

/// The left's `(key, time, value)` then the right's, as `r_…`, nullable.
fn joined(kind: JoinKind) -> SchemaRef {
    let mut fields: Vec<Field> = Vec::new();
    let left = input_schema();
    let right = input_schema();
    if kind.filtered_side() != Some(Side::Right) {
        fields.extend(
            left.fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true)),
        );
    }
    if kind.filtered_side() != Some(Side::Left) {
        fields.extend(
            right
                .fields()
                .iter()
                .map(|f| Field::new(format!("r_{}", f.name()), f.data_type().clone(), true)),
        );
    }
    Arc::new(Schema::new(fields))
}

fn factory(kind: JoinKind, updating: bool) -> JoinFactory {
    let schema = if updating {
        updating_schema(&input_schema())
    } else {
        input_schema()
    };
    JoinFactory::new(
        kind,
        [&schema, &schema],
        [vec![0], vec![0]],
        None,
        joined(kind),
    )
    .unwrap()
}

fn harness(factory: &JoinFactory) -> OperatorHarness {
    OperatorHarness::new(factory.create(&TaskInfo::single("join")).unwrap())
}

fn changes(h: &mut OperatorHarness) -> Vec<String> {
    h.take_batches()
        .iter()
        .flat_map(|b| crate::testing::format_rows(&crate::changelog::for_display(b).unwrap()))
        .collect()
}

/// `(key, time, value)` changes of an updating input.
fn updates(rows: &[(i64, i64, i64, RowKind)]) -> RecordBatch {
    let plain = batch(
        &rows
            .iter()
            .map(|&(k, t, v, _)| (k, t, v))
            .collect::<Vec<_>>(),
    );
    with_row_kinds(
        &updating_schema(&input_schema()),
        plain.columns().to_vec(),
        rows.iter().map(|r| r.3).collect(),
    )
    .unwrap()
}

#[tokio::test]
async fn an_inner_join_of_append_only_inputs_is_append_only_and_pairs_every_copy() {
    let f = factory(JoinKind::Inner, false);
    assert!(!ChangelogMode::of(&f.output_schema()).is_updating());
    assert!(f.to_string().contains("state=unbounded"), "{f}");
    let mut h = harness(&f);
    h.process(batch(&[(1, 10, 100), (2, 11, 200), (1, 10, 100)]))
        .await
        .unwrap();
    assert!(h.take_batches().is_empty());
    h.process_input(1, batch(&[(1, 20, 7), (3, 21, 8)]))
        .await
        .unwrap();
    h.process(batch(&[(1, 12, 101)])).await.unwrap();
    let mut rows = h.rows_as_strings();
    rows.sort();
    assert_eq!(
        rows,
        vec!["1,10,100,1,20,7", "1,10,100,1,20,7", "1,12,101,1,20,7"]
    );
}

#[tokio::test]
async fn a_left_join_pads_until_the_first_match_and_again_after_the_last() {
    let mut h = harness(&factory(JoinKind::Left, true));
    h.process(updates(&[(1, 10, 100, RowKind::Insert)]))
        .await
        .unwrap();
    h.process_input(1, updates(&[(1, 20, 7, RowKind::Insert)]))
        .await
        .unwrap();
    h.process_input(1, updates(&[(1, 21, 8, RowKind::Insert)]))
        .await
        .unwrap();
    h.process_input(
        1,
        updates(&[(1, 20, 7, RowKind::Delete), (1, 21, 8, RowKind::Delete)]),
    )
    .await
    .unwrap();
    // A right row without a left one: nothing (the right is not preserved).
    h.process_input(1, updates(&[(9, 1, 1, RowKind::Insert)]))
        .await
        .unwrap();
    h.process(updates(&[(1, 10, 100, RowKind::Delete)]))
        .await
        .unwrap();
    assert_eq!(
        changes(&mut h),
        vec![
            "+I,1,10,100,NULL,NULL,NULL",
            "-D,1,10,100,NULL,NULL,NULL",
            "+I,1,10,100,1,20,7",
            "+I,1,10,100,1,21,8",
            "-D,1,10,100,1,20,7",
            "-D,1,10,100,1,21,8",
            "+I,1,10,100,NULL,NULL,NULL",
            "-D,1,10,100,NULL,NULL,NULL",
        ]
    );
}

#[tokio::test]
async fn a_full_join_pads_both_sides_and_drops_unheld_retractions() {
    let mut h = harness(&factory(JoinKind::Full, false));
    h.process_input(1, batch(&[(1, 20, 7)])).await.unwrap();
    h.process(batch(&[(1, 10, 100), (2, 11, 200)]))
        .await
        .unwrap();
    assert_eq!(
        changes(&mut h),
        vec![
            "+I,NULL,NULL,NULL,1,20,7",
            "-D,NULL,NULL,NULL,1,20,7",
            "+I,1,10,100,1,20,7",
            "+I,2,11,200,NULL,NULL,NULL",
        ]
    );
    let mut h = harness(&factory(JoinKind::Full, true));
    h.process(updates(&[(5, 1, 1, RowKind::Delete)]))
        .await
        .unwrap();
    assert!(
        h.take_batches().is_empty(),
        "a retraction of nothing emits nothing"
    );
}

#[tokio::test]
async fn semi_and_anti_joins_emit_a_row_once_by_whether_it_has_a_match() {
    let mut semi = harness(&factory(JoinKind::LeftSemi, true));
    let mut anti = harness(&factory(JoinKind::LeftAnti, true));
    for h in [&mut semi, &mut anti] {
        h.process(updates(&[(1, 10, 100, RowKind::Insert)]))
            .await
            .unwrap();
        // Two matches: the row flips once.
        h.process_input(
            1,
            updates(&[(1, 20, 7, RowKind::Insert), (1, 21, 8, RowKind::Insert)]),
        )
        .await
        .unwrap();
        h.process_input(1, updates(&[(1, 20, 7, RowKind::Delete)]))
            .await
            .unwrap();
        h.process_input(1, updates(&[(1, 21, 8, RowKind::Delete)]))
            .await
            .unwrap();
    }
    assert_eq!(changes(&mut semi), vec!["+I,1,10,100", "-D,1,10,100"]);
    assert_eq!(
        changes(&mut anti),
        vec!["+I,1,10,100", "-D,1,10,100", "+I,1,10,100"]
    );
}

#[tokio::test]
async fn null_keys_never_match_and_pass_a_preserved_side_padded() {
    let schema = input_schema();
    let nullable_value = batch(&[(1, 10, 0)]);
    // Join on the nullable `value` column.
    let f = JoinFactory::new(
        JoinKind::Left,
        [&schema, &schema],
        [vec![2], vec![2]],
        None,
        joined(JoinKind::Left),
    )
    .unwrap();
    let mut h = harness(&f);
    let with_null = RecordBatch::try_new(
        input_schema(),
        vec![
            Arc::new(Int64Array::from(vec![1])),
            Arc::new(Int64Array::from(vec![10])),
            Arc::new(Int64Array::from(vec![None])),
        ],
    )
    .unwrap();
    h.process_input(1, with_null.clone()).await.unwrap();
    h.process(with_null).await.unwrap();
    h.process(nullable_value).await.unwrap();
    assert_eq!(
        changes(&mut h),
        vec!["+I,1,10,NULL,NULL,NULL,NULL", "+I,1,10,0,NULL,NULL,NULL"]
    );
}

#[tokio::test]
async fn an_extra_condition_filters_pairs() {
    let schema = input_schema();
    // l.value < r.value, over an intermediate row (l.value, r.value).
    let condition = JoinCondition {
        expr: Arc::new(BinaryExpr::new(
            Arc::new(Column::new("l", 0)),
            BinaryOp::Lt,
            Arc::new(Column::new("r", 1)),
        )),
        columns: vec![(Side::Left, 2), (Side::Right, 2)],
        schema: Arc::new(Schema::new(vec![
            Field::new("l", DataType::Int64, true),
            Field::new("r", DataType::Int64, true),
        ])),
    };
    let f = JoinFactory::new(
        JoinKind::Left,
        [&schema, &schema],
        [vec![0], vec![0]],
        Some(condition),
        joined(JoinKind::Left),
    )
    .unwrap();
    assert!(
        f.to_string().contains("condition=left.value < right.value"),
        "{f}"
    );
    let mut h = harness(&f);
    h.process_input(1, batch(&[(1, 20, 50)])).await.unwrap();
    h.process(batch(&[(1, 10, 10), (1, 11, 90)])).await.unwrap();
    assert_eq!(
        changes(&mut h),
        vec!["+I,1,10,10,1,20,50", "+I,1,11,90,NULL,NULL,NULL"]
    );
}

#[tokio::test]
async fn a_restored_join_keeps_both_sides_and_their_matches() {
    let f = factory(JoinKind::Left, true);
    let mut h = harness(&f);
    h.process(updates(&[
        (1, 10, 100, RowKind::Insert),
        (2, 11, 200, RowKind::Insert),
    ]))
    .await
    .unwrap();
    h.process_input(1, updates(&[(1, 20, 7, RowKind::Insert)]))
        .await
        .unwrap();
    let _ = h.take_batches();
    let snapshot = h.snapshot().await.unwrap();
    let mut restored =
        OperatorHarness::restored(f.create(&TaskInfo::single("join")).unwrap(), snapshot).unwrap();
    // The right row goes: the left row is padded again.
    restored
        .process_input(1, updates(&[(1, 20, 7, RowKind::Delete)]))
        .await
        .unwrap();
    restored
        .process_input(1, updates(&[(2, 21, 8, RowKind::Insert)]))
        .await
        .unwrap();
    assert_eq!(
        changes(&mut restored),
        vec![
            "-D,1,10,100,1,20,7",
            "+I,1,10,100,NULL,NULL,NULL",
            "-D,2,11,200,NULL,NULL,NULL",
            "+I,2,11,200,2,21,8",
        ]
    );
}

#[tokio::test]
async fn evicted_keys_load_back_and_join_as_in_memory() {
    let f = factory(JoinKind::Inner, false);
    let store = crate::testing::TestStore::new();
    let mut spilled = harness(&f).with_spill(store.store.clone(), 1024);
    let mut in_memory = harness(&f);
    for h in [&mut spilled, &mut in_memory] {
        let lefts: Vec<(i64, i64, i64)> = (0..500).map(|k| (k, k, k * 10)).collect();
        h.process(batch(&lefts)).await.unwrap();
        let rights: Vec<(i64, i64, i64)> = (0..500).rev().map(|k| (k, 1, k)).collect();
        for chunk in rights.chunks(50) {
            h.process_input(1, batch(chunk)).await.unwrap();
        }
    }
    let mut a = spilled.rows_as_strings();
    let mut b = in_memory.rows_as_strings();
    a.sort();
    b.sort();
    assert_eq!(a.len(), 500);
    assert_eq!(a, b);
    assert!(spilled.context().metrics.snapshot().state_spilled_bytes > 0);
}

/// With a state TTL, a join over an endless stream of new keys keeps its
/// checkpointed state under a fixed bound once the TTL moves on; without
/// one the state only grows.
#[tokio::test]
async fn a_state_ttl_bounds_the_state_of_an_endless_join() {
    async fn state_sizes(ttl: Option<i64>) -> Vec<usize> {
        let clock = crate::clock::ManualClock::new(0);
        let f = factory(JoinKind::Left, false).with_state_ttl(ttl);
        let mut h = harness(&f).with_clock(clock.clone());
        let mut sizes = Vec::new();
        for step in 0..100i64 {
            let rows: Vec<(i64, i64, i64)> = (0..40).map(|i| (step * 40 + i, step, i)).collect();
            h.process(batch(&rows)).await.unwrap();
            h.process_input(1, batch(&rows[..20])).await.unwrap();
            clock.advance(100);
            sizes.push(h.snapshot().await.unwrap().bytes());
        }
        // Every left row came out: matched or padded.
        assert!(
            h.take_batches()
                .iter()
                .map(RecordBatch::num_rows)
                .sum::<usize>()
                >= 4_000
        );
        sizes
    }
    let bounded = state_sizes(Some(1_000)).await;
    // After the TTL (10 steps) plus a sweep, the state holds at most ~12
    // steps' keys; the unbounded one holds all 100.
    let bound = bounded[15] * 2;
    assert!(
        bounded[20..].iter().all(|&s| s <= bound),
        "state grew past {bound}: {bounded:?}"
    );
    let unbounded = state_sizes(None).await;
    assert!(unbounded[99] > bounded[99] * 2, "{bounded:?} {unbounded:?}");
}

/// `(key, ts, value)` with `ts` a millisecond timestamp.
fn timed_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None),
            false,
        ),
        Field::new("value", DataType::Int64, true),
    ]))
}

fn timed(rows: &[(i64, i64, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        timed_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(arrow::array::TimestampMillisecondArray::from_iter_values(
                rows.iter().map(|r| r.1),
            )),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .unwrap()
}

/// A left interval join on `key` with `r.ts - l.ts` in `[-10, 20]` ms.
fn interval_join(kind: JoinKind) -> JoinFactory {
    let schema = timed_schema();
    let mut fields: Vec<Field> = Vec::new();
    if kind.filtered_side() != Some(Side::Right) {
        fields.extend(
            schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true)),
        );
    }
    if kind.filtered_side() != Some(Side::Left) {
        fields.extend(
            schema
                .fields()
                .iter()
                .map(|f| Field::new(format!("r_{}", f.name()), f.data_type().clone(), true)),
        );
    }
    // r.ts - l.ts BETWEEN -10 AND 20, over an intermediate row (l.ts, r.ts)
    // as Int64 milliseconds is what the bounds say; the condition here
    // compares the values instead (l.value <= r.value), so the test shows
    // the bounds alone decide when rows go.
    let condition = JoinCondition {
        expr: Arc::new(BinaryExpr::new(
            Arc::new(Column::new("l", 0)),
            BinaryOp::LtEq,
            Arc::new(Column::new("r", 1)),
        )),
        columns: vec![(Side::Left, 2), (Side::Right, 2)],
        schema: Arc::new(Schema::new(vec![
            Field::new("l", DataType::Int64, true),
            Field::new("r", DataType::Int64, true),
        ])),
    };
    JoinFactory::new(
        kind,
        [&schema, &schema],
        [vec![0], vec![0]],
        Some(condition),
        Arc::new(Schema::new(fields)),
    )
    .unwrap()
    .with_interval(IntervalBounds {
        left_time: 1,
        right_time: 1,
        lower_ms: -10,
        upper_ms: 20,
    })
    .unwrap()
}

#[tokio::test]
async fn an_interval_join_drops_closed_rows_and_pads_outer_ones_when_they_close() {
    let f = interval_join(JoinKind::Left);
    assert!(!ChangelogMode::of(&f.output_schema()).is_updating());
    assert!(!f.state_is_unbounded());
    assert!(f.to_string().contains("interval=[-10, 20]ms"), "{f}");
    let mut h = harness(&f);
    h.process(timed(&[(1, 100, 1), (2, 100, 2)])).await.unwrap();
    h.process_input(1, timed(&[(1, 110, 5)])).await.unwrap();
    // The left rows close at 120, the right one at 120 too (110 + 10).
    h.watermark(Watermark(120)).await.unwrap();
    let rows = h.rows_as_strings();
    assert_eq!(
        rows,
        vec!["1,1970-01-01T00:00:00.100,1,1,1970-01-01T00:00:00.110,5"]
    );
    h.watermark(Watermark(121)).await.unwrap();
    // Key 2 never matched: padded once its interval closed.
    assert_eq!(
        h.rows_as_strings(),
        vec!["2,1970-01-01T00:00:00.100,2,NULL,NULL,NULL"]
    );
    // The output watermark trails by the interval (20 ms).
    assert_eq!(h.take_watermarks(), vec![Watermark(100), Watermark(101)]);
    assert_eq!(
        h.snapshot().await.unwrap().bytes(),
        0,
        "every row was dropped"
    );
}

#[tokio::test]
async fn an_interval_anti_join_emits_unmatched_rows_when_they_close() {
    let mut h = harness(&interval_join(JoinKind::LeftAnti));
    h.process(timed(&[(1, 100, 1), (2, 100, 2)])).await.unwrap();
    h.process_input(1, timed(&[(1, 95, 5)])).await.unwrap();
    assert!(
        h.take_batches().is_empty(),
        "nothing before the interval closes"
    );
    h.watermark(Watermark::MAX).await.unwrap();
    assert_eq!(h.rows_as_strings(), vec!["2,1970-01-01T00:00:00.100,2"]);
}

/// An interval join over an endless stream keeps its checkpointed state
/// under a fixed bound as the watermark moves on.
#[tokio::test]
async fn an_interval_join_keeps_its_state_bounded_as_the_watermark_moves() {
    let mut h = harness(&interval_join(JoinKind::Full));
    let mut sizes = Vec::new();
    let mut emitted = 0;
    for step in 0..200i64 {
        let base = step * 100;
        let rows: Vec<(i64, i64, i64)> = (0..50).map(|i| (i % 7, base + i, i)).collect();
        h.process(timed(&rows)).await.unwrap();
        h.process_input(1, timed(&rows[..25])).await.unwrap();
        h.watermark(Watermark(base + 50)).await.unwrap();
        emitted += h
            .take_batches()
            .iter()
            .map(RecordBatch::num_rows)
            .sum::<usize>();
        sizes.push(h.snapshot().await.unwrap().bytes());
    }
    assert!(sizes[10] > 0, "rows whose interval is open stay");
    let bound = sizes[10] * 2;
    assert!(
        sizes[10..].iter().all(|&s| s <= bound),
        "state grew past {bound}: {sizes:?}"
    );
    h.watermark(Watermark::MAX).await.unwrap();
    emitted += h
        .take_batches()
        .iter()
        .map(RecordBatch::num_rows)
        .sum::<usize>();
    assert_eq!(h.snapshot().await.unwrap().bytes(), 0);
    // Every row came out, paired or alone.
    assert!(emitted >= 200 * 50, "{emitted}");
}
