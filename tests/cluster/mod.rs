//! The distributed runtime with real processes: a coordinator and worker
//! processes of the `weir` binary on 127.0.0.x, talking gRPC.

pub mod fault;
pub mod harness;
mod join;
mod late_rows;
mod moto;
mod spill;
mod updating;
mod views;
mod window_top_n;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow_flight::FlightData;
use arrow_flight::flight_service_client::FlightServiceClient;
use prost::Message as _;
use weir::Engine;
use weir_proto as pb;

use harness::{HEARTBEAT_TIMEOUT, TestCluster, current_rss, peak_rss, wait_for_end, weir};

/// COUNT(*) of a bounded query run on the cluster.
async fn count_on(cluster: &TestCluster, parallelism: usize, rows: u64) -> i64 {
    let mut engine = Engine::on_cluster(cluster.client().await, parallelism).with_session_catalog();
    engine
        .execute_script(&format!(
            "CREATE TABLE seq (id BIGINT) WITH ('connector' = 'datagen', \
             'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '{rows}');"
        ))
        .await
        .unwrap();
    let batches = engine
        .query("SELECT id % 7 AS k, COUNT(*) AS c FROM seq GROUP BY id % 7")
        .await
        .unwrap();
    batches
        .iter()
        .flat_map(|b| {
            b.column(1)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .values()
                .to_vec()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_corpus_on_three_worker_processes() {
    let cluster = TestCluster::start(3, 2).await;
    for parallelism in [3, 6] {
        let client = cluster.client().await;
        crate::slt::run_corpus_with(
            &format!("3 worker processes, parallelism {parallelism}"),
            false,
            move || Engine::on_cluster(client.clone(), parallelism).with_session_catalog(),
        )
        .await;
    }
    let client = cluster.client().await;
    let jobs = client.jobs().await.unwrap();
    assert!(jobs.len() >= 60, "only {} jobs ran", jobs.len());
    for job in &jobs {
        assert_eq!(
            job.state(),
            pb::JobState::Finished,
            "{job:?}\n{}",
            cluster.logs()
        );
    }
    // A parallelism-6 job spread its slices over all three workers, two each.
    let detail = client.job(&jobs.last().unwrap().job_id).await.unwrap();
    let mut per_worker = std::collections::BTreeMap::<String, usize>::new();
    for t in detail
        .subtasks
        .iter()
        .filter(|t| t.task.as_ref().unwrap().vertex == 0)
    {
        *per_worker.entry(t.worker_id.clone()).or_default() += 1;
    }
    assert_eq!(per_worker.len(), 3, "{per_worker:?}");
    assert!(per_worker.values().all(|&n| n == 2), "{per_worker:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_worker_fails_its_job_and_the_cluster_carries_on() {
    let mut cluster = TestCluster::start(3, 2).await;
    let client = cluster.client().await;
    let sql = "SET 'restart-strategy.type' = 'none';
        CREATE TABLE src (id BIGINT, k INT) WITH ('connector' = 'datagen', 'rows-per-second' = '20000');
        CREATE TABLE out (k INT, c BIGINT) WITH ('connector' = 'blackhole');
        INSERT INTO out SELECT k, COUNT(*) FROM src GROUP BY k;";
    let job = client.submit(sql, 3, "endless").await.unwrap().jobs[0]
        .job_id
        .clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let detail = client.job(&job).await.unwrap();
        let summary = detail.summary.unwrap();
        if summary.records_read > 0 {
            assert_eq!(summary.state(), pb::JobState::Running);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "job never ran\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let killed = Instant::now();
    cluster.kill_worker("w2");
    let summary = wait_for_end(&client, &job, HEARTBEAT_TIMEOUT + Duration::from_secs(5)).await;
    assert_eq!(summary.state(), pb::JobState::Failed);
    assert!(
        summary.failure.contains("'w2'"),
        "the failure does not name the worker: {}",
        summary.failure
    );
    assert!(killed.elapsed() < HEARTBEAT_TIMEOUT + Duration::from_secs(2));
    // The coordinator and the other workers stay up and take the next job.
    assert!(cluster.coordinator_is_alive());
    assert_eq!(cluster.alive_workers(), 2);
    cluster.wait_for_workers(2).await;
    assert_eq!(count_on(&cluster, 4, 50_000).await, 50_000);
    let detail = client.job(&job).await.unwrap();
    assert!(
        detail
            .subtasks
            .iter()
            .all(|t| t.state() != pb::TaskState::Running || t.worker_id == "w2"),
        "subtasks on surviving workers still run: {:?}",
        detail.subtasks
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_the_cluster_keeps_running() {
    let mut cluster = TestCluster::start(2, 2).await;
    let client = cluster.client().await;

    // A worker pointed at a coordinator that is not there.
    let out = weir()
        .args([
            "worker",
            "--coordinator",
            "127.0.0.1:1",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("WEIR_WORKER_CONNECT_TIMEOUT_MS", "300")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot reach the coordinator at 127.0.0.1:1"),
        "{stderr}"
    );

    // A second worker with an id already taken.
    let out = weir()
        .args([
            "worker",
            "--coordinator",
            &cluster.address,
            "--id",
            "w1",
            "--listen",
            "127.0.0.9:0",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("worker id 'w1' is already registered"),
        "{stderr}"
    );

    // Garbage on the coordinator's and a worker's port.
    let workers = client.workers().await.unwrap();
    for address in [cluster.address.clone(), workers[0].data_address.clone()] {
        let mut socket = std::net::TcpStream::connect(&address).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        socket
            .write_all(b"\x16\x03\x01 this is not HTTP/2 \x00\xff\r\n\r\n")
            .unwrap();
        let mut buf = Vec::new();
        let _ = socket.read_to_end(&mut buf);
    }

    // Malformed frames on the data plane.
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", workers[0].data_address))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut flight = FlightServiceClient::new(channel);
    let no_open = FlightData {
        data_body: vec![1, 2, 3].into(),
        ..Default::default()
    };
    let err = match flight
        .do_exchange(futures::stream::iter(vec![no_open]))
        .await
    {
        Err(status) => status,
        Ok(response) => response.into_inner().message().await.unwrap_err(),
    };
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().contains("malformed"), "{err}");
    let open = pb::StreamMessage {
        kind: Some(pb::stream_message::Kind::Open(pb::ChannelId {
            job_id: "no-such-job".into(),
            edge: 0,
            from_subtask: 0,
            to_subtask: 0,
        })),
    };
    let frames = vec![
        FlightData {
            app_metadata: open.encode_to_vec().into(),
            ..Default::default()
        },
        FlightData {
            data_header: b"not an IPC message".to_vec().into(),
            data_body: vec![0; 64].into(),
            ..Default::default()
        },
    ];
    let result = match flight.do_exchange(futures::stream::iter(frames)).await {
        Err(status) => Err(status),
        Ok(response) => {
            let mut stream = response.into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => break Ok(()),
                    Err(status) => break Err(status),
                }
            }
        }
    };
    let err = result.expect_err("a garbage IPC frame must be refused");
    assert!(err.message().contains("malformed"), "{err}");

    // Invalid SQL through `weir submit`: the error points at the spot.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.sql");
    std::fs::write(
        &bad,
        "CREATE TABLE t (id BIGINT) WITH ('connector' = 'datagen');\n\
         CREATE TABLE o (id BIGINT) WITH ('connector' = 'blackhole');\n\
         INSERT INTO o SELECT idd FROM t;\n",
    )
    .unwrap();
    let out = weir()
        .args([
            "submit",
            bad.to_str().unwrap(),
            "--coordinator",
            &cluster.address,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("line 3") && stderr.contains("idd"),
        "{stderr}"
    );
    assert!(stderr.to_lowercase().contains("did you mean"), "{stderr}");

    // An unknown job id.
    let out = weir()
        .args(["job", "nope", "--coordinator", &cluster.address])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no job 'nope'"), "{stderr}");

    // Everything still runs.
    assert!(cluster.coordinator_is_alive());
    assert_eq!(cluster.alive_workers(), 2);
    assert_eq!(client.workers().await.unwrap().len(), 2);
    assert_eq!(
        count_on(&cluster, 4, 20_000).await,
        20_000,
        "{}",
        cluster.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sink_backpressures_the_sources_with_bounded_memory() {
    const ROWS: u64 = 3_000_000;
    const RATE: u64 = 1_000_000;
    // Each row carries 100 bytes: 300 MB in all, far more than may be buffered.
    let cluster =
        TestCluster::start_with_env(3, 1, &[("WEIR_EXCHANGE_CREDIT_BYTES", "262144")]).await;
    let client = cluster.client().await;
    let baseline: Vec<u64> = cluster
        .workers
        .iter()
        .map(|(_, c)| current_rss(c.id()))
        .collect();
    let sql = format!(
        "CREATE TABLE src (id BIGINT, payload STRING) WITH ('connector' = 'datagen',
            'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '{ROWS}',
            'fields.payload.length' = '100');
         CREATE TABLE slow (id BIGINT, payload STRING) WITH ('connector' = 'blackhole',
            'sink.parallelism' = '1', 'sink.rows-per-second' = '{RATE}');
         INSERT INTO slow SELECT id, payload FROM src;"
    );
    let started = Instant::now();
    let job = client.submit(&sql, 3, "slow-sink").await.unwrap().jobs[0]
        .job_id
        .clone();
    let summary = wait_for_end(&client, &job, Duration::from_secs(180)).await;
    assert_eq!(
        summary.state(),
        pb::JobState::Finished,
        "{}",
        summary.failure
    );
    assert_eq!(summary.records_written, ROWS, "every row reaches the sink");
    assert!(
        started.elapsed() >= Duration::from_secs_f64(ROWS as f64 / RATE as f64 * 0.9),
        "the sink was not slow"
    );
    // Sources ran ahead of the sink by at most the credit windows and queues.
    for ((id, child), base) in cluster.workers.iter().zip(baseline) {
        let grown = peak_rss(child.id()).saturating_sub(base);
        assert!(
            grown < 150 << 20,
            "worker {id} grew by {} MiB while 300 MB flowed through a slow sink",
            grown >> 20
        );
    }
    let detail = client.job(&job).await.unwrap();
    let sink = detail
        .subtasks
        .iter()
        .filter(|t| t.vertex_name.contains("Sink"))
        .map(|t| t.records_in)
        .sum::<u64>();
    assert_eq!(sink, ROWS);
}

/// Rows in the visible (committed) part files of a filesystem sink directory.
fn committed_rows(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    let name = p.file_name().unwrap().to_string_lossy().to_string();
                    !name.starts_with('.') && !name.starts_with('_')
                })
                .map(|p| std::fs::read_to_string(p).unwrap().lines().count())
                .sum()
        })
        .unwrap_or(0)
}

fn run_weir(args: &[&str]) -> (bool, String, String) {
    let out = weir().args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_submitted_followed_stopped_and_cancelled_from_the_cli() {
    let cluster = TestCluster::start(2, 2).await;
    let client = cluster.client().await;
    let coordinator = cluster.address.as_str();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, sql: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, sql).unwrap();
        path.to_str().unwrap().to_string()
    };
    let out_dir = |name: &str| dir.path().join(name).to_str().unwrap().to_string();

    // A bounded job, followed to the end: exit 0, the id on stdout, every row written.
    let bounded = write(
        "bounded.sql",
        format!(
            "CREATE TABLE src (id BIGINT) WITH ('connector' = 'datagen', 'fields.id.kind' = 'sequence',
                'fields.id.start' = '1', 'fields.id.end' = '30000');
             CREATE TABLE out (id BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
             INSERT INTO out SELECT id FROM src;",
            out_dir("bounded")
        ),
    );
    let (ok, stdout, stderr) = run_weir(&[
        "submit",
        &bounded,
        "--wait",
        "-p",
        "3",
        "--coordinator",
        coordinator,
    ]);
    assert!(ok, "{stderr}");
    let job_id = stdout.lines().next().unwrap().trim().to_string();
    assert!(
        stderr.contains(&format!("job {job_id} finished")),
        "{stderr}"
    );
    assert_eq!(committed_rows(&dir.path().join("bounded")), 30_000);
    let (ok, stdout, _) = run_weir(&["jobs", "--coordinator", coordinator]);
    assert!(
        ok && stdout.contains(&job_id) && stdout.contains("finished"),
        "{stdout}"
    );
    let (ok, stdout, _) = run_weir(&["job", &job_id, "--coordinator", coordinator]);
    assert!(ok, "{stdout}");
    assert!(
        stdout.contains("Source[src]") && stdout.contains("w1") && stdout.contains("w2"),
        "{stdout}"
    );
    // The subtasks that end in the sink count the rows they wrote as out.
    let detail = client.job(&job_id).await.unwrap();
    let written: u64 = detail
        .subtasks
        .iter()
        .filter(|t| t.vertex_name.contains("Sink"))
        .map(|t| t.records_out)
        .sum();
    assert_eq!(written, 30_000, "{stdout}");

    // An endless job stopped gracefully: sources stop, sinks flush and commit.
    let endless = |name: &str| {
        format!(
            "CREATE TABLE src (id BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '20000',
                'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '1000000000');
             CREATE TABLE out (id BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
             INSERT INTO out SELECT id FROM src;",
            out_dir(name)
        )
    };
    let stopped = write("stopped.sql", endless("stopped"));
    let (ok, stdout, stderr) =
        run_weir(&["submit", &stopped, "-p", "2", "--coordinator", coordinator]);
    assert!(ok, "{stderr}");
    let job_id = stdout.trim().to_string();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (ok, stdout, stderr) = run_weir(&["stop", &job_id, "--coordinator", coordinator]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("finishing") || stdout.contains("finished"),
        "{stdout}"
    );
    let summary = client
        .wait(&job_id, Duration::from_millis(50), |_| {})
        .await
        .unwrap();
    assert_eq!(
        summary.state(),
        pb::JobState::Finished,
        "{}",
        summary.failure
    );
    let rows = committed_rows(&dir.path().join("stopped"));
    assert!(rows > 0);
    assert_eq!(rows as u64, summary.records_written);
    assert_eq!(summary.records_read, summary.records_written);

    // An endless job cancelled: no flush, state cancelled, slots freed.
    let cancelled = write("cancelled.sql", endless("cancelled"));
    let (ok, stdout, _) = run_weir(&[
        "submit",
        &cancelled,
        "-p",
        "4",
        "--coordinator",
        coordinator,
    ]);
    assert!(ok);
    let job_id = stdout.trim().to_string();
    let (ok, stdout, _) = run_weir(&["cancel", &job_id, "--coordinator", coordinator]);
    assert!(ok && stdout.contains("cancelled"), "{stdout}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while client
        .workers()
        .await
        .unwrap()
        .iter()
        .any(|w| w.free_slots != w.slots)
    {
        assert!(Instant::now() < deadline, "slots not freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // More slices than slots: refused with the reason.
    let (ok, _, stderr) = run_weir(&["submit", &bounded, "-p", "5", "--coordinator", coordinator]);
    assert!(!ok && stderr.contains("not enough free slots"), "{stderr}");

    // A SELECT returns rows: with --wait they are printed.
    let select = write(
        "select.sql",
        "CREATE TABLE src (id BIGINT) WITH ('connector' = 'datagen', 'fields.id.kind' = 'sequence',
            'fields.id.start' = '1', 'fields.id.end' = '1000');
         SELECT COUNT(*) AS n, SUM(id) AS total FROM src;"
            .to_string(),
    );
    let (ok, stdout, stderr) = run_weir(&[
        "submit",
        &select,
        "--wait",
        "-p",
        "2",
        "--coordinator",
        coordinator,
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("| 1000 | 500500 |"), "{stdout}");
    let (ok, _, stderr) = run_weir(&["submit", &select, "--coordinator", coordinator]);
    assert!(!ok && stderr.contains("--wait"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_worker_is_lost_after_the_heartbeat_timeout() {
    let cluster = TestCluster::start(2, 1).await;
    let client = cluster.client().await;
    let sql = "SET 'restart-strategy.type' = 'none';
        CREATE TABLE src (id BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '1000');
        CREATE TABLE out (id BIGINT) WITH ('connector' = 'blackhole');
        INSERT INTO out SELECT id FROM src;";
    let job = client.submit(sql, 2, "frozen").await.unwrap().jobs[0]
        .job_id
        .clone();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // SIGSTOP keeps the connections open: only the missing heartbeats tell.
    cluster.signal_worker("w2", "STOP");
    let frozen = Instant::now();
    let summary = wait_for_end(&client, &job, HEARTBEAT_TIMEOUT + Duration::from_secs(5)).await;
    let workers = client.workers().await.unwrap();
    cluster.signal_worker("w2", "CONT");
    assert!(workers.iter().all(|w| w.worker_id != "w2"), "{workers:?}");
    assert_eq!(summary.state(), pb::JobState::Failed);
    assert!(
        summary.failure.contains("'w2'") && summary.failure.contains("no heartbeat"),
        "{}",
        summary.failure
    );
    assert!(frozen.elapsed() >= HEARTBEAT_TIMEOUT - Duration::from_millis(500));
    // Thawed, it finds its session gone and registers again.
    cluster.wait_for_workers(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_and_workers_serve_prometheus_metrics() {
    use harness::{http_get, read_prefixed};
    let cluster = TestCluster::start(2, 2).await;
    let mut worker = weir()
        .args(["worker", "--coordinator", &cluster.address, "--id", "w9"])
        .args([
            "--listen",
            "127.0.0.9:0",
            "--metrics-listen",
            "127.0.0.9:0",
            "--slots",
            "2",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(worker.stdout.take().unwrap());
    read_prefixed(&mut stdout, "worker w9 listening on ");
    let worker_metrics = read_prefixed(&mut stdout, "metrics on http://")
        .trim_end_matches("/metrics")
        .to_string();
    cluster.wait_for_workers(3).await;
    // Six slices over three workers: the shuffle crosses processes.
    assert_eq!(count_on(&cluster, 6, 30_000).await, 30_000);

    let (status, body) = http_get(&cluster.metrics_address, "/metrics");
    assert!(status.contains("200"), "{status}");
    for expected in [
        "# TYPE weir_workers gauge",
        "weir_workers 3",
        "weir_worker_free_slots{worker=\"w9\"} 2",
        "weir_jobs{state=\"finished\"} 1",
        "weir_job_records_read_total{job=",
        "weir_subtask_records_in_total{job=",
    ] {
        assert!(body.contains(expected), "{expected} missing from\n{body}");
    }
    let read: u64 = body
        .lines()
        .find(|l| l.starts_with("weir_job_records_read_total{"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap();
    assert_eq!(read, 30_000);

    let (status, body) = http_get(&worker_metrics, "/metrics");
    assert!(status.contains("200"), "{status}");
    let sent: u64 = body
        .lines()
        .find(|l| l.starts_with("weir_exchange_sent_bytes_total{worker=\"w9\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exchange counter in\n{body}"));
    assert!(sent > 0, "w9 sent nothing over the data plane\n{body}");
    // The counters the README names are served (with samples while jobs run).
    for family in [
        "# TYPE weir_late_records_dropped_total counter",
        "# TYPE weir_source_bad_records_total counter",
        "# TYPE weir_subtask_records_out_total counter",
    ] {
        assert!(body.contains(family), "{family} missing from\n{body}");
    }
    let (status, _) = http_get(&worker_metrics, "/nope");
    assert!(status.contains("404"), "{status}");
    let _ = worker.kill();
    let _ = worker.wait();
}
