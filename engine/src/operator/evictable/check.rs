//! Checks shared by the tests of the operators that evict keys: the same
//! output as in memory, and a restore at another parallelism that finds the
//! evicted keys by key group.

use arrow::array::{BooleanArray, RecordBatch};

use crate::message::CheckpointBarrier;
use crate::operator::{Operator, TaskInfo};
use crate::testing::{OperatorHarness, TestStore};

/// Creates the operator under test as a subtask.
pub(crate) type Create<'a> = &'a dyn Fn(&TaskInfo) -> Box<dyn Operator>;

fn barrier(id: u64) -> CheckpointBarrier {
    CheckpointBarrier {
        id,
        timestamp_ms: 0,
        then_stop: false,
    }
}

fn changes(h: &mut OperatorHarness) -> Vec<String> {
    h.take_batches()
        .iter()
        .flat_map(|b| crate::testing::format_rows(&crate::changelog::for_display(b).unwrap()))
        .collect()
}

pub(crate) fn spilled_bytes(h: &OperatorHarness) -> u64 {
    h.context()
        .metrics
        .state_spilled_bytes
        .load(std::sync::atomic::Ordering::Relaxed)
}

fn subtask(index: usize, parallelism: usize) -> TaskInfo {
    TaskInfo {
        subtask: index,
        parallelism,
        ..TaskInfo::single("keyed")
    }
}

/// The rows of `batch` whose key (column `key_column`) `task` owns.
fn owned(batch: &RecordBatch, key_column: usize, task: &TaskInfo) -> RecordBatch {
    let keys = [std::sync::Arc::clone(batch.column(key_column))];
    let kgs = super::key_groups_of(
        &keys,
        true,
        batch.num_rows(),
        crate::partition::DEFAULT_MAX_KEY_GROUPS,
    )
    .unwrap();
    let mine = BooleanArray::from_iter(
        kgs.into_iter()
            .map(|kg| Some(task.key_groups().contains(&kg))),
    );
    arrow::compute::filter_record_batch(batch, &mine).unwrap()
}

/// Run under `budget` bytes with checkpoints (which defer the deletes of
/// loaded entries) and commits, `input` gives the output of a run in
/// memory, and most of the state went to RocksDB. Returns that output.
pub(crate) async fn evicting_gives_the_in_memory_output(
    create: Create<'_>,
    input: &[RecordBatch],
    budget: usize,
) -> Vec<String> {
    let task = TaskInfo::single("keyed");
    let mut unbounded = OperatorHarness::new(create(&task));
    let store = TestStore::new();
    let mut bounded = OperatorHarness::new(create(&task)).with_spill(store.store.clone(), budget);
    for (i, batch) in input.iter().enumerate() {
        unbounded.process(batch.clone()).await.unwrap();
        bounded.process(batch.clone()).await.unwrap();
        if i % 10 == 9 {
            let id = i as u64 / 10 + 1;
            bounded.checkpoint(barrier(id)).await.unwrap();
            bounded.snapshot().await.unwrap();
            if id.is_multiple_of(2) {
                bounded.commit(id).await.unwrap();
            }
        }
    }
    let expected = changes(&mut unbounded);
    assert_eq!(changes(&mut bounded), expected);
    let spilled = spilled_bytes(&bounded);
    assert!(spilled > 8 * budget as u64, "spilled {spilled}");
    expected
}

/// Checkpointed after `before` with keys evicted, then run on past the
/// barrier (evicting and loading more) before the local snapshot,
/// restored at parallelism 2 with the evicted keys of each subtask's
/// key groups copied: `after` gives what it gives in memory.
pub(crate) async fn evicted_keys_restore_at_another_parallelism(
    create: Create<'_>,
    before: &[RecordBatch],
    after: &[RecordBatch],
    key_column: usize,
    budget: usize,
) {
    let single = TaskInfo::single("keyed");
    let mut unbounded = OperatorHarness::new(create(&single));
    for batch in before {
        unbounded.process(batch.clone()).await.unwrap();
    }
    unbounded.take_batches();
    for batch in after {
        unbounded.process(batch.clone()).await.unwrap();
    }
    let mut expected = changes(&mut unbounded);
    expected.sort();

    let old = TestStore::new();
    let mut h = OperatorHarness::new(create(&single)).with_spill(old.store.clone(), budget);
    for batch in before {
        h.process(batch.clone()).await.unwrap();
    }
    h.checkpoint(barrier(1)).await.unwrap();
    let snapshot = h.snapshot().await.unwrap();
    let spilled = spilled_bytes(&h);
    assert!(spilled > 0, "nothing evicted before the barrier");
    for batch in &after[..after.len() / 2] {
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
        let new = TestStore::new();
        let copied = restored
            .copy_evicted_groups(&new.store, 1, &task.key_groups())
            .unwrap();
        assert!(copied > 0, "subtask {index} found no evicted keys");
        let mut h = OperatorHarness::restored_spilling(
            create(&task),
            task.clone(),
            std::slice::from_ref(&snapshot),
            new.store.clone(),
            budget,
            1,
        )
        .unwrap();
        for batch in after {
            h.process(owned(batch, key_column, &task)).await.unwrap();
        }
        got.extend(changes(&mut h));
    }
    got.sort();
    assert_eq!(got, expected);
}
