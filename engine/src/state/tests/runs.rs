//! Spilled runs: written by key group and namespace, scanned one key group
//! at a time, listed by namespace, deleted by range, and copied on restore
//! only when the checkpoint covers them.

use super::*;

const NODE: u32 = 5;

fn ns(end: i64) -> u64 {
    namespace_of(end)
}

fn run(f: &Fixture, end: i64, epoch: u64, seq: u32, kgs: &[u32]) {
    let runs = kgs
        .iter()
        .map(|&kg| (kg, format!("e{end}-kg{kg}-s{seq}").into_bytes()));
    f.store
        .put_runs(NODE, ns(end), epoch, 0, seq, runs)
        .unwrap();
}

fn text(runs: Option<(u32, Vec<Vec<u8>>)>) -> Option<(u32, Vec<String>)> {
    runs.map(|(kg, r)| {
        let r = r.into_iter().map(|v| String::from_utf8(v).unwrap());
        (kg, r.collect())
    })
}

#[test]
fn namespaces_sort_like_the_window_ends_they_encode() {
    let ends = [i64::MIN, -50, -1, 0, 1, 100, i64::MAX];
    let encoded: Vec<u64> = ends.iter().map(|&e| namespace_of(e)).collect();
    assert!(encoded.windows(2).all(|w| w[0] < w[1]), "{encoded:?}");
    for e in ends {
        assert_eq!(namespace_value(namespace_of(e)), e);
    }
}

#[test]
fn runs_are_read_one_key_group_at_a_time_within_the_subtask_range() {
    let f = Fixture::new();
    run(&f, 100, 0, 0, &[1, 3, 7]);
    run(&f, 100, 0, 1, &[3]);
    run(&f, -50, 0, 2, &[2]);
    run(&f, 200, 2, 3, &[9]);
    // Another operator's runs and this one's checkpointed state are apart.
    f.store
        .put_runs(NODE + 1, ns(100), 0, 0, 0, [(1, b"other".to_vec())])
        .unwrap();
    f.put([(keyed(NODE, 1), b"memory part".to_vec())]);

    let next = |from, range: std::ops::Range<u32>| {
        text(f.store.next_runs(NODE, ns(100), from, &range).unwrap())
    };
    assert_eq!(next(0, 0..8), Some((1, vec!["e100-kg1-s0".into()])));
    assert_eq!(
        next(2, 0..8),
        Some((3, vec!["e100-kg3-s0".into(), "e100-kg3-s1".into()]))
    );
    assert_eq!(next(4, 0..8), Some((7, vec!["e100-kg7-s0".into()])));
    assert_eq!(next(8, 0..8), None);
    // Key groups outside the range belong to another subtask.
    assert_eq!(next(2, 0..3), None);
    assert_eq!(next(0, 2..4).map(|r| r.0), Some(3));

    assert_eq!(
        f.store.run_namespaces(NODE, &(0..8)).unwrap(),
        [ns(-50), ns(100)]
    );
    assert_eq!(f.store.run_namespaces(NODE, &(8..16)).unwrap(), [ns(200)]);
    assert_eq!(
        f.store.run_namespaces(NODE, &(4..6)).unwrap(),
        Vec::<u64>::new()
    );
    assert_eq!(f.store.run_namespaces(NODE, &(2..3)).unwrap(), [ns(-50)]);
    assert_eq!(
        f.store.run_namespaces(NODE + 1, &(0..128)).unwrap(),
        [ns(100)]
    );

    f.store.delete_runs(NODE, ns(100), &(0..4)).unwrap();
    assert_eq!(next(0, 0..8).map(|r| r.0), Some(7));
    assert_eq!(
        f.store.get(&keyed(NODE, 1)).unwrap(),
        Some(b"memory part".to_vec())
    );
    assert_eq!(
        text(f.store.next_runs(NODE + 1, ns(100), 0, &(0..128)).unwrap()),
        Some((1, vec!["other".into()]))
    );
}

#[tokio::test]
async fn a_restore_copies_only_the_runs_its_checkpoint_covers() {
    let _shared = shared().await;
    let mut f = Fixture::new();
    // Epochs 0 and 2 were written before barrier 3; epoch 3 after it (the
    // local snapshot of checkpoint 3 may still catch such runs).
    run(&f, 100, 0, 0, &[1, 9]);
    run(&f, 100, 2, 1, &[1]);
    run(&f, 100, 3, 2, &[1, 9]);
    run(&f, 300, 3, 3, &[1]);
    let manifest = f.checkpoint(3).await;
    let restored = f.restore(&manifest).await.unwrap();
    let target = f.backend.open_job(JOB, 2).unwrap();
    let mut seq = 0;
    let bytes = restored
        .copy_runs(&target, NODE, &(0..8), &mut seq)
        .unwrap();
    assert_eq!(seq, 2);
    assert_eq!(bytes, ("e100-kg1-s0".len() * 2) as u64);
    assert_eq!(
        text(target.next_runs(NODE, ns(100), 0, &(0..128)).unwrap()),
        Some((1, vec!["e100-kg1-s0".into(), "e100-kg1-s1".into()]))
    );
    assert_eq!(target.next_runs(NODE, ns(100), 2, &(0..128)).unwrap(), None);
    assert_eq!(target.run_namespaces(NODE, &(0..128)).unwrap(), [ns(100)]);
    // The other subtask's key groups, numbered on from the same counter.
    restored
        .copy_runs(&target, NODE, &(8..16), &mut seq)
        .unwrap();
    assert_eq!(seq, 3);
    assert_eq!(
        text(target.next_runs(NODE, ns(100), 8, &(8..16)).unwrap()),
        Some((9, vec!["e100-kg9-s0".into()]))
    );
}
