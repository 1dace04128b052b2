//! Unit tests of the Top-N: append-only and updating input, ranks, restore.

use arrow::datatypes::{DataType, Field};
use datafusion::physical_expr::expressions::Column;

use super::*;
use crate::testing::OperatorHarness;
use crate::testing::fixtures::{batch, input_schema};

fn top(n: usize, descending: bool) -> Box<dyn Operator> {
    let order = vec![PhysicalSortExpr {
        expr: Arc::new(Column::new("value", 2)),
        options: SortOptions {
            descending,
            nulls_first: false,
        },
    }];
    TopNFactory::new(
        input_schema(),
        vec![0],
        order,
        n,
        Field::new("rn", DataType::UInt64, false),
    )
    .unwrap()
    .create(&TaskInfo::single("topn"))
    .unwrap()
}

fn changes(h: &mut OperatorHarness) -> Vec<String> {
    h.take_batches()
        .iter()
        .flat_map(|b| crate::testing::format_rows(&crate::changelog::for_display(b).unwrap()))
        .collect()
}

#[tokio::test]
async fn keeps_the_best_rows_of_each_key_and_shifts_ranks() {
    let mut h = OperatorHarness::new(top(2, true));
    h.process(batch(&[(1, 10, 5), (2, 11, 7), (1, 12, 3)]))
        .await
        .unwrap();
    // 9 enters first, pushes 5 to second place and 3 out.
    h.process(batch(&[(1, 13, 9)])).await.unwrap();
    // 1 is worse than the top two: nothing changes.
    h.process(batch(&[(1, 14, 1)])).await.unwrap();
    assert_eq!(
        changes(&mut h),
        vec![
            "+I,1,10,5,1",
            "+I,1,12,3,2",
            "+I,2,11,7,1",
            "-U,1,10,5,1",
            "+U,1,13,9,1",
            "-U,1,12,3,2",
            "+U,1,10,5,2",
        ]
    );
}

/// `(key, time, value)` changes of an updating input.
fn updates(rows: &[(i64, i64, i64, RowKind)]) -> RecordBatch {
    let schema = updating_schema(&input_schema());
    let plain = batch(
        &rows
            .iter()
            .map(|&(k, t, v, _)| (k, t, v))
            .collect::<Vec<_>>(),
    );
    with_row_kinds(
        &schema,
        plain.columns().to_vec(),
        rows.iter().map(|r| r.3).collect(),
    )
    .unwrap()
}

#[tokio::test]
async fn over_updates_a_retracted_top_row_brings_the_next_one_back() {
    let order = vec![PhysicalSortExpr {
        expr: Arc::new(Column::new("value", 2)),
        options: SortOptions {
            descending: true,
            nulls_first: false,
        },
    }];
    let factory = TopNFactory::new(
        updating_schema(&input_schema()),
        vec![0],
        order,
        1,
        Field::new("rn", DataType::UInt64, false),
    )
    .unwrap();
    assert!(factory.to_string().contains("input=retract"));
    let mut h = OperatorHarness::new(factory.create(&TaskInfo::single("topn")).unwrap());
    h.process(updates(&[
        (1, 10, 5, RowKind::Insert),
        (1, 11, 7, RowKind::Insert),
    ]))
    .await
    .unwrap();
    // 7 is updated to 3: 5 (kept though out of the top 1) comes back.
    h.process(updates(&[
        (1, 11, 7, RowKind::UpdateBefore),
        (1, 11, 3, RowKind::UpdateAfter),
    ]))
    .await
    .unwrap();
    // A retraction of a row never seen is skipped; deleting the last
    // rows empties the partition.
    h.process(updates(&[
        (1, 99, 1, RowKind::Delete),
        (1, 10, 5, RowKind::Delete),
        (1, 11, 3, RowKind::Delete),
    ]))
    .await
    .unwrap();
    assert_eq!(
        changes(&mut h),
        vec!["+I,1,11,7,1", "-U,1,11,7,1", "+U,1,10,5,1", "-D,1,10,5,1",]
    );
    // Snapshot and restore of the kept rows: a later insert ranks among them.
    let mut h2 = OperatorHarness::new(factory.create(&TaskInfo::single("topn")).unwrap());
    h2.process(updates(&[
        (2, 1, 4, RowKind::Insert),
        (2, 2, 6, RowKind::Insert),
    ]))
    .await
    .unwrap();
    let _ = h2.take_batches();
    let snapshot = h2.snapshot().await.unwrap();
    let mut h3 =
        OperatorHarness::restored(factory.create(&TaskInfo::single("topn")).unwrap(), snapshot)
            .unwrap();
    h3.process(updates(&[(2, 2, 6, RowKind::Delete)]))
        .await
        .unwrap();
    assert_eq!(changes(&mut h3), vec!["-U,2,2,6,1", "+U,2,1,4,1"]);
}

/// Without the rank column only membership changes: a row whose rank
/// moves emits nothing; one that enters is inserted, one that leaves
/// deleted.
#[tokio::test]
async fn without_the_rank_column_only_rows_entering_and_leaving_emit() {
    let order = vec![PhysicalSortExpr {
        expr: Arc::new(Column::new("value", 2)),
        options: SortOptions {
            descending: true,
            nulls_first: false,
        },
    }];
    let factory = TopNFactory::new(
        updating_schema(&input_schema()),
        vec![0],
        order,
        2,
        Field::new("rn", DataType::UInt64, false),
    )
    .unwrap()
    .without_rank_column();
    assert!(factory.to_string().contains("rank=not-emitted"));
    assert_eq!(
        factory.output_schema(),
        updating_schema(&input_schema()),
        "the input's columns, no rank"
    );
    let mut h = OperatorHarness::new(factory.create(&TaskInfo::single("topn")).unwrap());
    h.process(updates(&[
        (1, 10, 5, RowKind::Insert),
        (1, 11, 7, RowKind::Insert),
    ]))
    .await
    .unwrap();
    // 9 comes first: 7 and 5 only move, or leave.
    h.process(updates(&[(1, 12, 9, RowKind::Insert)]))
        .await
        .unwrap();
    // 9 is taken back: 5 returns, 7 moves up silently.
    h.process(updates(&[(1, 12, 9, RowKind::Delete)]))
        .await
        .unwrap();
    assert_eq!(
        changes(&mut h),
        vec![
            "+I,1,11,7",
            "+I,1,10,5",
            "-D,1,10,5",
            "+I,1,12,9",
            "-D,1,12,9",
            "+I,1,10,5",
        ]
    );
}

#[tokio::test]
async fn deduplication_keeps_the_first_row_on_ties() {
    let mut h = OperatorHarness::new(top(1, false));
    h.process(batch(&[(1, 10, 5), (1, 11, 5)])).await.unwrap();
    h.process(batch(&[(1, 12, 5), (1, 13, 4)])).await.unwrap();
    assert_eq!(
        changes(&mut h),
        vec!["+I,1,10,5,1", "-U,1,10,5,1", "+U,1,13,4,1"]
    );
}

#[tokio::test]
async fn rank_and_dense_rank_keep_ties() {
    let make = |function| {
        let order = vec![PhysicalSortExpr {
            expr: Arc::new(Column::new("value", 2)),
            options: SortOptions {
                descending: true,
                nulls_first: false,
            },
        }];
        TopNFactory::new(
            input_schema(),
            vec![0],
            order,
            2,
            Field::new("r", DataType::UInt64, false),
        )
        .unwrap()
        .with_rank_function(function)
        .create(&TaskInfo::single("topn"))
        .unwrap()
    };
    let mut rank = OperatorHarness::new(make(RankFunction::Rank));
    rank.process(batch(&[(1, 10, 5), (1, 11, 5), (1, 12, 3)]))
        .await
        .unwrap();
    // A better row: the tied pair moves to rank 2, both stay.
    rank.process(batch(&[(1, 13, 9)])).await.unwrap();
    assert_eq!(
        changes(&mut rank),
        vec![
            "+I,1,10,5,1",
            "+I,1,11,5,1",
            "-U,1,10,5,1",
            "+U,1,10,5,2",
            "-U,1,11,5,1",
            "+U,1,11,5,2",
            "+I,1,13,9,1",
        ]
    );
    let mut dense = OperatorHarness::new(make(RankFunction::DenseRank));
    dense
        .process(batch(&[(1, 10, 5), (1, 11, 5), (1, 12, 3), (1, 13, 1)]))
        .await
        .unwrap();
    assert_eq!(
        changes(&mut dense),
        vec!["+I,1,10,5,1", "+I,1,11,5,1", "+I,1,12,3,2"]
    );
}

#[tokio::test]
async fn idle_partitions_expire_past_the_state_ttl() {
    let clock = crate::clock::ManualClock::new(1_000);
    let order = vec![PhysicalSortExpr {
        expr: Arc::new(Column::new("value", 2)),
        options: SortOptions::default(),
    }];
    let op = TopNFactory::new(
        input_schema(),
        vec![0],
        order,
        1,
        Field::new("rn", DataType::UInt64, false),
    )
    .unwrap()
    .with_state_ttl(Some(5_000))
    .create(&TaskInfo::single("topn"))
    .unwrap();
    let mut h = OperatorHarness::new(op).with_clock(clock.clone());
    h.process(batch(&[(1, 10, 5), (2, 11, 5)])).await.unwrap();
    clock.advance(3_000);
    // Key 1's row cannot rank: it does not touch key 1, as in Flink,
    // whose state TTL is refreshed on writes.
    h.process(batch(&[(2, 12, 4), (1, 15, 6)])).await.unwrap();
    clock.advance(3_000);
    // Key 1 was idle 6 s: forgotten, so its next row ranks first again.
    h.process(batch(&[(1, 13, 7), (2, 14, 8)])).await.unwrap();
    assert_eq!(
        changes(&mut h),
        vec![
            "+I,1,10,5,1",
            "+I,2,11,5,1",
            "-U,2,11,5,1",
            "+U,2,12,4,1",
            "+I,1,13,7,1"
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
async fn rows_that_cannot_rank_are_dropped_and_those_that_can_still_rank() {
    let mut h = OperatorHarness::new(top(2, false));
    h.process(batch(&[(1, 10, 5), (1, 11, 7), (2, 12, 9)]))
        .await
        .unwrap();
    // Key 1 is full: a tie with its last row arrived later and ranks
    // behind it, a worse row never ranks; key 2 has room, key 3 is new.
    h.process(batch(&[(1, 13, 7), (1, 14, 8), (2, 15, 10), (3, 16, 1)]))
        .await
        .unwrap();
    // A better row pushes the last one out; after it a row equal to the new
    // last one still ranks behind it.
    h.process(batch(&[(1, 17, 6), (1, 18, 6)])).await.unwrap();
    assert_eq!(
        changes(&mut h),
        vec![
            "+I,1,10,5,1",
            "+I,1,11,7,2",
            "+I,2,12,9,1",
            "+I,2,15,10,2",
            "+I,3,16,1,1",
            "-U,1,11,7,2",
            "+U,1,17,6,2"
        ]
    );
}

#[tokio::test]
async fn a_restored_top_n_continues() {
    let mut h = OperatorHarness::new(top(2, true));
    h.process(batch(&[(1, 10, 5), (1, 11, 7)])).await.unwrap();
    let snapshot = h.snapshot().await.unwrap();
    let mut restored = OperatorHarness::restored(top(2, true), snapshot).unwrap();
    restored.process(batch(&[(1, 12, 6)])).await.unwrap();
    assert_eq!(changes(&mut restored), vec!["-U,1,10,5,2", "+U,1,12,6,2"]);
}

/// A top 2 by value, descending, partitioned by key, over input of
/// `schema` (append-only or updating).
fn top_two_factory(schema: SchemaRef) -> TopNFactory {
    let order = vec![PhysicalSortExpr {
        expr: Arc::new(Column::new("value", 2)),
        options: SortOptions {
            descending: true,
            nulls_first: false,
        },
    }];
    TopNFactory::new(
        schema,
        vec![0],
        order,
        2,
        Field::new("rn", DataType::UInt64, false),
    )
    .unwrap()
}

/// The changelog of a running `GROUP BY key, sub` (`sub` in the time
/// column) over 200 keys of 4 subs each: 60 batches of 20 changes, with
/// updates and deletions, every partition touched again long after.
fn grouped_changes() -> Vec<RecordBatch> {
    let mut current: HashMap<(i64, i64), i64> = HashMap::new();
    (0..60i64)
        .map(|b| {
            let mut rows = Vec::new();
            for i in 0..20i64 {
                let (key, sub) = ((b * 31 + i * 7) % 200, (b + i) % 4);
                let value = (b * 17 + i * 29) % 50;
                match current.get(&(key, sub)).copied() {
                    Some(old) if (b * i) % 11 == 0 => {
                        rows.push((key, sub, old, RowKind::Delete));
                        current.remove(&(key, sub));
                    }
                    Some(old) => {
                        rows.push((key, sub, old, RowKind::UpdateBefore));
                        rows.push((key, sub, value, RowKind::UpdateAfter));
                        current.insert((key, sub), value);
                    }
                    None => {
                        rows.push((key, sub, value, RowKind::Insert));
                        current.insert((key, sub), value);
                    }
                }
            }
            updates(&rows)
        })
        .collect()
}

/// Room for a few dozen partitions, of 200.
const TINY_BUDGET: usize = 8 << 10;

#[tokio::test]
async fn evicted_partitions_of_an_updating_input_reload_and_give_the_in_memory_changes() {
    let factory = top_two_factory(updating_schema(&input_schema()));
    let got = crate::operator::evictable::check::evicting_gives_the_in_memory_output(
        &|task| factory.create(task).unwrap(),
        &grouped_changes(),
        TINY_BUDGET,
    )
    .await;
    for kind in ["+I", "-U", "+U", "-D"] {
        assert!(got.iter().any(|r| r.starts_with(kind)), "no {kind}");
    }
}

#[tokio::test]
async fn evicted_partitions_of_an_append_only_input_reload() {
    let factory = top_two_factory(input_schema());
    let input: Vec<RecordBatch> = (0..60i64)
        .map(|b| {
            let rows: Vec<(i64, i64, i64)> = (0..20i64)
                .map(|i| ((b * 37 + i * 13) % 300, b * 100 + i, (b * 17 + i * 29) % 50))
                .collect();
            batch(&rows)
        })
        .collect();
    crate::operator::evictable::check::evicting_gives_the_in_memory_output(
        &|task| factory.create(task).unwrap(),
        &input,
        TINY_BUDGET / 2,
    )
    .await;
}

#[tokio::test]
async fn evicted_partitions_are_restored_by_key_group_at_another_parallelism() {
    let factory = top_two_factory(updating_schema(&input_schema()));
    let input = grouped_changes();
    let (before, after) = input.split_at(30);
    crate::operator::evictable::check::evicted_keys_restore_at_another_parallelism(
        &|task| factory.create(task).unwrap(),
        before,
        after,
        0,
        TINY_BUDGET,
    )
    .await;
}

#[tokio::test]
async fn retractions_of_rows_not_held_are_skipped_and_counted() {
    let factory = top_two_factory(updating_schema(&input_schema()));
    let mut h = OperatorHarness::new(factory.create(&TaskInfo::single("topn")).unwrap());
    h.process(updates(&[
        (1, 10, 5, RowKind::Insert),
        (1, 11, 7, RowKind::Insert),
    ]))
    .await
    .unwrap();
    // A row never seen, a known time with another value, and a partition
    // never seen: nothing to take back, nothing changes.
    h.process(updates(&[
        (1, 99, 1, RowKind::Delete),
        (1, 10, 6, RowKind::UpdateBefore),
        (2, 1, 1, RowKind::Delete),
    ]))
    .await
    .unwrap();
    let unmatched = h
        .context()
        .metrics
        .unmatched_deletes
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(unmatched, 3);
    assert_eq!(changes(&mut h), vec!["+I,1,11,7,1", "+I,1,10,5,2"]);
}
