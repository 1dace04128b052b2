//! A mini-batch that no more input follows: an unbounded `GROUP BY` with
//! Flink's mini-batch settings over a Kafka topic that receives a few
//! records and then nothing. The aggregate sits behind a shuffle, in a task
//! with no source of its own, so only its processing-time tick can send the
//! batch out once its latency has passed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use weir::{Engine, Executed};
use weir_engine::changelog::Materialized;

use super::brokers::{MockKafka, produce};
use crate::common::rows_of;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mini_batch_goes_out_after_its_latency_when_the_input_stops() {
    let mut kafka = MockKafka::start();
    kafka.create_topic("clicks", 2);
    let bootstrap = kafka.bootstrap().to_string();
    let users = ["ann", "bob", "ann", "cyd", "ann", "bob"];
    let records: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(i, user)| {
            let value = format!(r#"{{"user": "{user}", "n": {i}}}"#).into_bytes();
            (Some((i % 2) as i32), None, Some(value), Some(1_000))
        })
        .collect();
    produce(&bootstrap, "clicks", &records).await;

    let mut engine = Engine::new(2);
    engine
        .execute_script(&format!(
            "CREATE TABLE clicks (user STRING, n BIGINT)
             WITH ('connector' = 'kafka', 'topic' = 'clicks', 'format' = 'json',
                   'properties.bootstrap.servers' = '{bootstrap}',
                   'scan.startup.mode' = 'earliest-offset');
             SET 'table.exec.mini-batch.enabled' = 'true';
             SET 'table.exec.mini-batch.allow-latency' = '1 s';
             SET 'table.exec.mini-batch.size' = '1000';"
        ))
        .await
        .unwrap();
    let started = Instant::now();
    let sql = "SELECT user, COUNT(*) AS clicks, SUM(n) AS total FROM clicks GROUP BY user";
    let Executed::Query { mut rows, job, .. } = engine.execute(sql).await.unwrap() else {
        panic!("{sql} is not a query");
    };
    // By hand: ann 0+2+4, bob 1+5, cyd 3.
    let expected: BTreeMap<String, (String, String)> = [
        ("ann", ("3", "6")),
        ("bob", ("2", "6")),
        ("cyd", ("1", "3")),
    ]
    .into_iter()
    .map(|(u, (c, s))| (u.to_string(), (c.to_string(), s.to_string())))
    .collect();
    let mut state = Materialized::new();
    let mut current = BTreeMap::new();
    let deadline = Duration::from_secs(30);
    while current != expected {
        let batch = tokio::time::timeout(deadline.saturating_sub(started.elapsed()), rows.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("the mini-batch never went out: {current:?} after {deadline:?}")
            })
            .expect("the unbounded query ended");
        state.apply(&batch).unwrap();
        current = rows_of(&state.current().unwrap().into_iter().collect::<Vec<_>>())
            .into_iter()
            .map(|r| (r[0].clone(), (r[1].clone(), r[2].clone())))
            .collect();
    }
    job.cancel();
    let _ = job.wait().await;
}
