//! Tests of the window Top-N: firing, ranks, late rows, restores at another
//! parallelism, and eviction past the memory budget.

use arrow::compute::SortOptions;
use arrow::datatypes::DataType;
use datafusion::physical_expr::expressions::Column;

use super::*;
use crate::graph::OutputPort;
use crate::message::Message;
use crate::testing::OperatorHarness;
use crate::testing::fixtures::{batch, input_schema};

/// The best `n` rows by value (descending) per key and window; the
/// `time` column holds the window's end.
fn factory(n: usize, function: RankFunction) -> WindowTopNFactory {
    windowed(n, 0, vec![0], true).with_rank_function(function)
}

/// The best `n` rows by value per window, told by the `time` column
/// plus `offset`, and `keys`.
fn windowed(n: usize, offset: i64, keys: Vec<usize>, descending: bool) -> WindowTopNFactory {
    let options = SortOptions {
        descending,
        nulls_first: false,
    };
    let expr = Arc::new(Column::new("value", 2));
    let order = vec![PhysicalSortExpr { expr, options }];
    let rank = Field::new("rn", DataType::UInt64, false);
    WindowTopNFactory::new(input_schema(), 1, offset, keys, order, n, rank).unwrap()
}

fn top(n: usize) -> Box<dyn Operator> {
    factory(n, RankFunction::RowNumber)
        .create(&TaskInfo::single("wtopn"))
        .unwrap()
}

#[tokio::test]
async fn emits_each_window_once_in_rank_order_when_the_watermark_passes_its_end() {
    let mut h = OperatorHarness::new(top(2));
    h.process(batch(&[(1, 10, 5), (2, 10, 7), (1, 20, 1), (1, 10, 9)]))
        .await
        .unwrap();
    h.process(batch(&[(1, 10, 3), (1, 10, 6), (2, 20, 4)]))
        .await
        .unwrap();
    h.watermark(Watermark(8)).await.unwrap();
    assert!(h.rows_as_strings().is_empty(), "window 10 is still open");
    h.watermark(Watermark(9)).await.unwrap();
    assert_eq!(
        h.rows_as_strings(),
        vec!["1,10,9,1", "1,10,6,2", "2,10,7,1"]
    );
    assert_eq!(h.take_watermarks(), vec![Watermark(8), Watermark(9)]);
    h.close().await.unwrap();
    assert_eq!(h.rows_as_strings(), vec!["1,20,1,1", "2,20,4,1"]);
}

#[tokio::test]
async fn rows_of_a_fired_window_are_late_and_go_to_the_late_rows_output() {
    let mut op = factory(1, RankFunction::RowNumber)
        .with_late_rows()
        .create(&TaskInfo::single("wtopn"))
        .unwrap();
    let mut ctx = OperatorContext::for_test("WindowTopN");
    let mut out = Collector::new();
    op.process_batch(batch(&[(1, 10, 5)]), &mut ctx, &mut out)
        .await
        .unwrap();
    op.handle_watermark(Watermark(9), &mut ctx, &mut out)
        .await
        .unwrap();
    // Window 10 fired: its row is late; window 20 is open.
    op.process_batch(batch(&[(1, 10, 8), (1, 20, 2)]), &mut ctx, &mut out)
        .await
        .unwrap();
    op.on_close(&mut ctx, &mut out).await.unwrap();
    let side = out.take_side();
    assert_eq!(side.len(), 1);
    assert_eq!(side[0].0, OutputPort::LateRows);
    assert_eq!(
        crate::testing::format_rows(&side[0].1),
        vec!["1,10,8,WindowTopN (subtask 0),1970-01-01T00:00:00.009"]
    );
    let main = out.drain().unwrap();
    assert!(
        matches!(&main[..], [Message::Data(a), Message::Data(b)]
            if crate::testing::format_rows(a) == ["1,10,5,1"]
                && crate::testing::format_rows(b) == ["1,20,2,1"]),
        "{main:?}"
    );
    let late = ctx
        .metrics
        .late_records_dropped
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(late, 1);
}

#[tokio::test]
async fn rank_and_dense_rank_keep_ties() {
    let rows = [(1, 10, 5), (1, 10, 9), (1, 10, 5), (1, 10, 3), (1, 10, 1)];
    let mut rank = OperatorHarness::new(
        factory(2, RankFunction::Rank)
            .create(&TaskInfo::single("wtopn"))
            .unwrap(),
    );
    rank.process(batch(&rows)).await.unwrap();
    rank.close().await.unwrap();
    assert_eq!(
        rank.rows_as_strings(),
        vec!["1,10,9,1", "1,10,5,2", "1,10,5,2"]
    );
    let mut dense = OperatorHarness::new(
        factory(3, RankFunction::DenseRank)
            .create(&TaskInfo::single("wtopn"))
            .unwrap(),
    );
    dense.process(batch(&rows)).await.unwrap();
    dense.close().await.unwrap();
    assert_eq!(
        dense.rows_as_strings(),
        vec!["1,10,9,1", "1,10,5,2", "1,10,5,2", "1,10,3,3"]
    );
}

#[tokio::test]
async fn an_end_offset_fires_windows_told_by_their_start() {
    // The `time` column holds the start of 10 ms windows.
    let op = windowed(1, 10, vec![], false)
        .create(&TaskInfo::single("wtopn"))
        .unwrap();
    let mut h = OperatorHarness::new(op);
    h.process(batch(&[(1, 0, 5), (2, 0, 3), (3, 10, 1)]))
        .await
        .unwrap();
    h.watermark(Watermark(9)).await.unwrap();
    assert_eq!(h.rows_as_strings(), vec!["2,0,3,1"]);
}

#[tokio::test]
async fn restored_at_another_parallelism_every_window_fires_as_if_uninterrupted() {
    let first: Vec<(i64, i64, i64)> = (0..40).map(|i| (i % 8, 10 + 10 * (i % 2), i)).collect();
    let second: Vec<(i64, i64, i64)> = (40..80).map(|i| (i % 8, 20, i % 13)).collect();
    let mut plain = OperatorHarness::new(top(2));
    plain.process(batch(&first)).await.unwrap();
    plain.watermark(Watermark(9)).await.unwrap();
    plain.process(batch(&second)).await.unwrap();
    plain.close().await.unwrap();
    let mut want = plain.rows_as_strings();
    want.sort();
    // Two subtasks, each with the keys of its key groups, snapshotted
    // after window 10 fired.
    let mut snapshots = Vec::new();
    let mut got = Vec::new();
    for subtask in 0..2 {
        let task = TaskInfo {
            subtask,
            parallelism: 2,
            ..TaskInfo::single("wtopn")
        };
        let mut h = OperatorHarness::new(top(2));
        h.context_mut().task = task.clone();
        let mine: Vec<_> = first
            .iter()
            .copied()
            .filter(|&(k, _, _)| owned(&task, k))
            .collect();
        h.process(batch(&mine)).await.unwrap();
        h.watermark(Watermark(9)).await.unwrap();
        got.extend(h.rows_as_strings());
        snapshots.push(h.snapshot().await.unwrap());
    }
    // Restored at three subtasks.
    for subtask in 0..3 {
        let task = TaskInfo {
            subtask,
            parallelism: 3,
            ..TaskInfo::single("wtopn")
        };
        let mut h = OperatorHarness::restored_as(top(2), task.clone(), &snapshots).unwrap();
        let mine: Vec<_> = second
            .iter()
            .copied()
            .filter(|&(k, _, _)| owned(&task, k))
            .collect();
        h.process(batch(&mine)).await.unwrap();
        h.close().await.unwrap();
        got.extend(h.rows_as_strings());
    }
    got.sort();
    assert_eq!(got, want);
}

/// Whether `task` owns `key` (as the shuffle routes it).
fn owned(task: &TaskInfo, key: i64) -> bool {
    let keys: Vec<ArrayRef> = vec![Arc::new(arrow::array::Int64Array::from(vec![key]))];
    let hash = crate::partition::hash_keys(&keys, 1).unwrap()[0];
    task.key_groups()
        .contains(&crate::partition::key_group_of(hash, task.max_key_groups))
}

/// What a test feeds the operator.
#[derive(Clone)]
enum Step {
    Rows(RecordBatch),
    Watermark(i64),
}

/// 6,000 rows over 307 keys, at event time `n` for row `n`: each goes to
/// the 500 ms window it falls in or the next one, so two windows are open
/// at a time and a key comes back to a window every ~300 rows. Values tie
/// (ranked by arrival). Batches of 50, each followed by the watermark 200
/// ms behind it.
fn steps() -> Vec<Step> {
    let mut steps = Vec::new();
    for first in (0..6_000).step_by(50) {
        let rows: Vec<(i64, i64, i64)> = (first..first + 50)
            .map(|n| {
                let end = (n / 500 + 1) * 500 + 500 * (n % 2);
                ((n * 7919) % 307, end, (n * 31) % 17)
            })
            .collect();
        steps.push(Step::Rows(batch(&rows)));
        steps.push(Step::Watermark(first + 49 - 200));
    }
    steps
}

/// Feeds `steps` to `h` (of the rows, those of the keys `task` owns), and
/// returns the rows each step made it emit.
async fn feed(
    h: &mut OperatorHarness,
    steps: &[Step],
    task: Option<&TaskInfo>,
) -> Vec<Vec<String>> {
    let mut emitted = Vec::new();
    for step in steps {
        match step {
            Step::Rows(rows) => {
                let rows = match task {
                    Some(task) => {
                        let keys = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(
                            rows.column(0),
                        );
                        let mine = arrow::array::BooleanArray::from_iter(
                            keys.values().iter().map(|&k| Some(owned(task, k))),
                        );
                        arrow::compute::filter_record_batch(rows, &mine).unwrap()
                    }
                    None => rows.clone(),
                };
                h.process(rows).await.unwrap();
            }
            Step::Watermark(w) => h.watermark(Watermark(*w)).await.unwrap(),
        }
        emitted.push(h.rows_as_strings());
    }
    emitted
}

fn barrier(id: u64) -> crate::message::CheckpointBarrier {
    crate::message::CheckpointBarrier {
        id,
        timestamp_ms: 0,
        then_stop: false,
    }
}

/// Under a budget of `budget` bytes, with checkpoints and commits, the
/// operator made by `factory` emits the same batches, in the same order, as
/// in memory, after evicting most of its state.
async fn evicting_fires_as_in_memory(factory: WindowTopNFactory, budget: usize) {
    let create = || factory.create(&TaskInfo::single("wtopn")).unwrap();
    let steps = steps();
    let mut unbounded = OperatorHarness::new(create());
    let store = crate::testing::TestStore::new();
    let mut bounded = OperatorHarness::new(create()).with_spill(store.store.clone(), budget);
    let (mut expected, mut got) = (Vec::new(), Vec::new());
    for (i, chunk) in steps.chunks(20).enumerate() {
        expected.extend(feed(&mut unbounded, chunk, None).await);
        got.extend(feed(&mut bounded, chunk, None).await);
        let id = i as u64 + 1;
        bounded.checkpoint(barrier(id)).await.unwrap();
        bounded.snapshot().await.unwrap();
        if id.is_multiple_of(2) {
            bounded.commit(id).await.unwrap();
        }
    }
    unbounded.close().await.unwrap();
    bounded.close().await.unwrap();
    expected.push(unbounded.rows_as_strings());
    got.push(bounded.rows_as_strings());
    let ends: std::collections::BTreeSet<&str> = expected
        .iter()
        .flatten()
        .map(|r| r.split(',').nth(1).unwrap())
        .collect();
    assert_eq!(ends.len(), 13, "every window fired");
    for (i, (got, expected)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(got, expected, "step {i}");
    }
    let spilled = crate::operator::evictable::check::spilled_bytes(&bounded);
    assert!(spilled > 8 * budget as u64, "spilled {spilled}");
}

#[tokio::test]
async fn evicted_partitions_load_back_and_fire_as_in_memory() {
    evicting_fires_as_in_memory(windowed(2, 0, vec![0], true), 4096).await;
}

#[tokio::test]
async fn evicted_windows_without_partition_keys_fire_as_in_memory() {
    // One key per window: whole windows are evicted and read back to fire.
    evicting_fires_as_in_memory(windowed(20, 0, vec![], false), 1024).await;
}

/// Checkpointed with keys evicted, then run on past the barrier (evicting,
/// loading and firing more) before the local snapshot, restored at two and
/// at three subtasks with the evicted keys of each one's key groups copied:
/// every window fires exactly once, at the watermark that fires it in
/// memory, with the same rows.
#[tokio::test]
async fn evicted_keys_restore_at_another_parallelism_and_fire_each_window_once() {
    let budget = 4096;
    let create = || top_desc(2);
    let steps = steps();
    let split = 101;
    let (before, after) = steps.split_at(split);
    let mut unbounded = OperatorHarness::new(create());
    let mut expected = feed(&mut unbounded, &steps, None).await;
    unbounded.close().await.unwrap();
    expected.push(unbounded.rows_as_strings());
    let all: Vec<&String> = expected.iter().flatten().collect();
    let windows: std::collections::BTreeSet<(&str, &str, &str)> = all
        .iter()
        .map(|r| {
            let f: Vec<&str> = r.split(',').collect();
            (f[0], f[1], f[3])
        })
        .collect();
    assert_eq!(windows.len(), all.len(), "a window's rank came twice");

    let old = crate::testing::TestStore::new();
    let mut h = OperatorHarness::new(create()).with_spill(old.store.clone(), budget);
    let fired_before = feed(&mut h, before, None).await;
    h.checkpoint(barrier(1)).await.unwrap();
    let snapshot = h.snapshot().await.unwrap();
    assert!(fired_before.iter().any(|rows| !rows.is_empty()));
    let spilled = crate::operator::evictable::check::spilled_bytes(&h);
    assert!(spilled > 0, "nothing evicted before the barrier");
    // Past the barrier: more evictions, loads and windows fired, whose
    // entries the local snapshot must still hold.
    let fired_past = feed(&mut h, &after[..40], None).await;
    assert!(
        fired_past.iter().any(|rows| !rows.is_empty()),
        "no window fired past the barrier"
    );
    let spilled_after = crate::operator::evictable::check::spilled_bytes(&h);
    assert!(spilled_after > spilled, "nothing evicted past the barrier");
    let local = old.store.snapshot(1).unwrap();
    let restored = crate::state::RestoredSnapshot::open(&local.dir, 1).unwrap();

    for parallelism in [2, 3] {
        let mut got = fired_before.clone();
        got.resize(steps.len() + 1, Vec::new());
        for subtask in 0..parallelism {
            let task = TaskInfo {
                subtask,
                parallelism,
                ..TaskInfo::single("wtopn")
            };
            let new = crate::testing::TestStore::new();
            let copied = restored
                .copy_evicted_groups(&new.store, 1, &task.key_groups())
                .unwrap();
            assert!(
                copied > 0,
                "subtask {subtask} of {parallelism} found no evicted keys"
            );
            let mut h = OperatorHarness::restored_spilling(
                create(),
                task.clone(),
                std::slice::from_ref(&snapshot),
                new.store.clone(),
                budget,
                1,
            )
            .unwrap();
            let emitted = feed(&mut h, after, Some(&task)).await;
            h.close().await.unwrap();
            for (i, rows) in emitted.into_iter().enumerate() {
                got[split + i].extend(rows);
            }
            got[steps.len()].extend(h.rows_as_strings());
        }
        for rows in got.iter_mut().chain(expected.iter_mut()) {
            rows.sort();
        }
        for (i, (got, expected)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(
                got, expected,
                "step {i}, restored at {parallelism} subtasks"
            );
        }
    }
}

/// The best `n` rows by value (descending) per key and window.
fn top_desc(n: usize) -> Box<dyn Operator> {
    windowed(n, 0, vec![0], true)
        .create(&TaskInfo::single("wtopn"))
        .unwrap()
}

#[test]
fn state_keys_order_as_window_ends() {
    let ends = [i64::MIN, -1_000, -1, 0, 1, 999, i64::MAX];
    for pair in ends.windows(2) {
        assert!(end_prefix(pair[0]) < end_prefix(pair[1]), "{pair:?}");
    }
    for end in ends {
        assert_eq!(end_of(&state_key(end, b"k")).unwrap(), end);
    }
}

/// Rows arriving after a restore tie behind every row from before it, the
/// evicted ones too: the arrival counter is checkpointed, not rebuilt from
/// the rows in memory.
#[tokio::test]
async fn restored_arrivals_continue_past_those_of_evicted_rows() {
    let create = || {
        factory(1, RankFunction::Rank)
            .create(&TaskInfo::single("wtopn"))
            .unwrap()
    };
    // Room for one partition: the least recently touched goes to disk.
    let budget = 300;
    let old = crate::testing::TestStore::new();
    let mut h = OperatorHarness::new(create()).with_spill(old.store.clone(), budget);
    h.process(batch(&[(2, 10, 5)])).await.unwrap();
    h.process(batch(&[(1, 10, 5)])).await.unwrap();
    // Key 2 again (a row that does not rank): key 1, holding the latest
    // arrival, is evicted.
    h.process(batch(&[(2, 10, 1)])).await.unwrap();
    assert!(crate::operator::evictable::check::spilled_bytes(&h) > 0);
    h.checkpoint(barrier(1)).await.unwrap();
    let snapshot = h.snapshot().await.unwrap();
    let local = old.store.snapshot(1).unwrap();
    let restored = crate::state::RestoredSnapshot::open(&local.dir, 1).unwrap();
    let task = TaskInfo::single("wtopn");
    let new = crate::testing::TestStore::new();
    restored
        .copy_evicted_groups(&new.store, 1, &task.key_groups())
        .unwrap();
    let mut h = OperatorHarness::restored_spilling(
        create(),
        task,
        std::slice::from_ref(&snapshot),
        new.store.clone(),
        budget,
        1,
    )
    .unwrap();
    // A tie with key 1's evicted row: both rank first.
    h.process(batch(&[(1, 10, 5)])).await.unwrap();
    h.close().await.unwrap();
    let mut rows = h.rows_as_strings();
    rows.sort();
    assert_eq!(rows, vec!["1,10,5,1", "1,10,5,1", "2,10,5,1"]);
}
