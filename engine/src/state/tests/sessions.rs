//! Spilled sessions: fragments per key, timers by session end, and the
//! restore's epoch filter.

use super::*;

const NODE: u32 = 9;

fn fragment(kg: u32, key: &str, ends: &[i64]) -> SessionFragment {
    SessionFragment {
        key_group: kg,
        key: key.as_bytes().to_vec(),
        value: format!("{key}{ends:?}").into_bytes(),
        ends: ends.to_vec(),
    }
}

fn id(epoch: u64, seq: u32) -> FragmentId {
    FragmentId {
        epoch,
        writer: 0,
        seq,
    }
}

fn due(store: &JobStore, kgs: std::ops::Range<u32>, bound: i64) -> Vec<(u32, String)> {
    kgs.flat_map(|kg| {
        let (keys, _) = store.due_sessions(NODE, kg, bound, |_| false).unwrap();
        keys.into_iter()
            .map(move |key| (kg, String::from_utf8(key).unwrap()))
    })
    .collect()
}

#[test]
fn timers_find_the_keys_with_sessions_ending_by_the_bound() {
    let f = Fixture::new();
    let store = &f.store;
    store
        .put_session_fragments(
            NODE,
            id(0, 0),
            &[fragment(1, "a", &[10, 40]), fragment(1, "ab", &[-5])],
        )
        .unwrap();
    store
        .put_session_fragments(
            NODE,
            id(1, 1),
            &[fragment(1, "a", &[20]), fragment(3, "c", &[i64::MAX])],
        )
        .unwrap();
    // Another node's sessions are apart.
    store
        .put_session_fragments(NODE + 1, id(0, 0), &[fragment(1, "a", &[0])])
        .unwrap();
    assert_eq!(due(store, 0..8, -6), []);
    assert_eq!(due(store, 0..8, -5), [(1, "ab".to_string())]);
    assert_eq!(due(store, 0..8, 20), [(1, "a".into()), (1, "ab".into())]);
    assert_eq!(due(store, 2..8, 20), []);
    assert_eq!(due(store, 0..8, i64::MAX).len(), 3);

    let both = store
        .session_fragments(NODE, 1, &[b"ab".to_vec(), b"a".to_vec()])
        .unwrap();
    assert_eq!(both[0].len(), 1);
    let fragments = both[1].clone();
    let values: Vec<String> = fragments
        .iter()
        .map(|f| String::from_utf8(f.value.clone()).unwrap())
        .collect();
    // "ab" shares a prefix with "a" but is another key.
    assert_eq!(values, ["a[10, 40]", "a[20]"]);
    assert_eq!(fragments[1].id, id(1, 1));
    assert!(store.has_session_fragments(NODE, &(0..2)).unwrap());
    assert!(!store.has_session_fragments(NODE, &(4..8)).unwrap());

    // Merged back: the fragment and its timers go, and readers skip them
    // until they do.
    let mut gone = JobStore::session_timer_keys(NODE, 1, b"a", fragments[0].id, &[10, 40]);
    gone.push(fragments[0].key.clone());
    let (skipped, next) = store
        .due_sessions(NODE, 1, 20, |k| gone.iter().any(|g| g == k))
        .unwrap();
    assert_eq!(skipped.len(), 2, "a still has the timer at 20: {skipped:?}");
    // The timer at 40 is gone too: nothing else ends in key group 1.
    assert_eq!(next, None);
    let (_, next) = store.due_sessions(NODE, 1, 15, |_| false).unwrap();
    assert_eq!(next, Some(20));
    store.delete_keys(gone).unwrap();
    let a = store.session_fragments(NODE, 1, &[b"a".to_vec()]).unwrap();
    assert_eq!(a[0].len(), 1);
    assert_eq!(due(store, 0..8, 15), [(1, "ab".to_string())]);
}

#[tokio::test]
async fn a_restore_copies_only_the_sessions_its_checkpoint_covers() {
    let _shared = shared().await;
    let mut f = Fixture::new();
    f.store
        .put_session_fragments(
            NODE,
            id(1, 0),
            &[fragment(1, "a", &[10]), fragment(9, "z", &[10])],
        )
        .unwrap();
    f.store
        .put_session_fragments(NODE, id(2, 1), &[fragment(1, "b", &[10])])
        .unwrap();
    let manifest = f.checkpoint(2).await;
    let restored = f.restore(&manifest).await.unwrap();
    let target = f.backend.open_job(JOB, 2).unwrap();
    let bytes = restored.copy_session_state(&target, NODE, &(0..8)).unwrap();
    assert!(bytes > 0);
    assert_eq!(due(&target, 0..128, 100), [(1, "a".to_string())]);
    let copied = target
        .session_fragments(NODE, 1, &[b"a".to_vec(), b"b".to_vec()])
        .unwrap();
    assert_eq!(copied[0][0].id, id(1, 0));
    assert!(copied[1].is_empty());
}
