//! The `weir` binary, run as a user runs it.

use std::process::Command;

/// Writes `sql` to a script in `dir` and runs `weir <args> script`.
fn run_sql(dir: &std::path::Path, sql: &str, args: &[&str]) -> std::process::Output {
    let script = dir.join("job.sql");
    std::fs::write(&script, sql).expect("write script");
    weir().args(args).arg(&script).output().expect("run weir")
}

fn weir() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weir"))
}

#[test]
fn run_writes_a_bounded_pipeline_to_files_and_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let output = run_sql(
        dir.path(),
        &format!(
            "CREATE TABLE numbers (id BIGINT, v BIGINT) WITH (
                'connector' = 'datagen', 'number-of-rows' = '5000',
                'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '5000',
                'fields.v.min' = '1', 'fields.v.max' = '9');
             CREATE TABLE out WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
             INSERT INTO out SELECT id, v * 10 FROM numbers WHERE id % 2 = 0;",
            out.display()
        ),
        &["run", "--parallelism", "3"],
    );
    assert!(
        output.status.success(),
        "weir run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(&out).expect("sink directory") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        assert!(
            !name.starts_with('.'),
            "in-progress file left behind: {name}"
        );
        for line in std::fs::read_to_string(&path).expect("part file").lines() {
            let mut cols = line.split(',');
            let id: i64 = cols.next().and_then(|c| c.parse().ok()).expect("id column");
            let v: i64 = cols.next().and_then(|c| c.parse().ok()).expect("v column");
            assert!((10..=90).contains(&v) && v % 10 == 0, "bad value {v}");
            ids.push(id);
        }
    }
    ids.sort_unstable();
    assert_eq!(ids, (1..=2500).map(|i| i * 2).collect::<Vec<i64>>());
}

#[test]
fn run_reports_sql_errors_with_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = run_sql(
        dir.path(),
        "CREATE TABLE t (id BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '5');\n\nSELECT idd FROM t;\n",
        &["run"],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("line 3, column 8"),
        "no position in: {stderr}"
    );
    assert!(stderr.contains("idd"), "no column name in: {stderr}");
}

#[test]
fn explain_prints_dot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = run_sql(dir.path(), "CREATE TABLE t (id BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts) WITH ('connector' = 'datagen');
         SELECT window_end, COUNT(*) FROM TUMBLE(t, ts, INTERVAL '1' MINUTE) GROUP BY window_start, window_end;", &["explain", "--dot"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("digraph"), "{stdout}");
    assert!(stdout.contains("WindowAggregate"), "{stdout}");
}

/// `weir explain` of a script with several queries says which graph is whose.
#[test]
fn explain_labels_each_graph_with_its_statement() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = run_sql(
        dir.path(),
        "CREATE TABLE t (id BIGINT) WITH ('connector' = 'datagen');
CREATE TABLE out (id BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO out SELECT id FROM t WHERE id > 5;
SELECT COUNT(*) FROM t;",
        &["explain"],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let labels: Vec<&str> = stdout.lines().filter(|l| l.starts_with("-- ")).collect();
    assert_eq!(
        labels,
        [
            "-- line 3: INSERT INTO out SELECT id FROM t WHERE id > 5",
            "-- line 4: SELECT COUNT(*) FROM t"
        ],
        "{stdout}"
    );
}

/// Ctrl-C on an unbounded job stops it gracefully: sinks flush, exit 0.
#[test]
fn interrupt_stops_an_unbounded_job_gracefully() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let script = dir.path().join("forever.sql");
    std::fs::write(
        &script,
        format!(
            "CREATE TABLE ticks (id BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '2000',
                'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '9223372036854775806');
             CREATE TABLE out WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
             INSERT INTO out SELECT id FROM ticks;",
            out.display()
        ),
    )
    .expect("write script");
    let child = weir()
        .arg("run")
        .arg(&script)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn weir");
    // Wait until the job has produced something, then interrupt it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let running = || {
        std::fs::read_dir(&out)
            .map(|d| d.count() > 0)
            .unwrap_or(false)
    };
    while !running() {
        assert!(
            std::time::Instant::now() < deadline,
            "the job never started writing"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let output = child.wait_with_output().expect("weir exits");
    assert!(
        output.status.success(),
        "weir failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut ids: Vec<i64> = std::fs::read_dir(&out)
        .expect("sink directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or(".")
                .starts_with('.')
        })
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .expect("part file")
                .lines()
                .map(|l| l.parse::<i64>().expect("id"))
                .collect::<Vec<_>>()
        })
        .collect();
    ids.sort_unstable();
    assert!(!ids.is_empty(), "nothing was flushed");
    // A prefix of the sequence, each id once: nothing lost or duplicated before the stop.
    assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>());
}

/// A malformed record fails the job with the file and line, and exit code 1.
#[test]
fn a_bad_record_names_its_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("bad.csv");
    std::fs::write(&data, "1,2024-01-01 00:00:01\nx,2024-01-01 00:00:02\n").expect("write data");
    let output = run_sql(dir.path(), &format!(
            "CREATE TABLE t (id BIGINT, ts TIMESTAMP(3)) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
             SELECT id FROM t;",
            data.display()
        ), &["run"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.csv', line 2"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Late rows are counted and reported when the run ends. At parallelism 1:
/// with two source subtasks, which rows are late depends on when the idle
/// one's watermark arrives (in Flink too), so the count would vary.
#[test]
fn late_rows_are_reported() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/late.csv");
    let dir = tempfile::tempdir().expect("tempdir");
    let output = run_sql(dir.path(), &format!(
            "CREATE TABLE e (id BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)
               WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv', 'scan.batch-size' = '1');
             CREATE TABLE out WITH ('connector' = 'blackhole');
             INSERT INTO out SELECT window_start, COUNT(*) FROM TUMBLE(e, ts, INTERVAL '10' SECOND) GROUP BY window_start, window_end;",
            data.display()
        ), &["run", "-p", "1"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("2 late rows (they arrived"), "{stderr}");
}

/// With a late-rows table, `weir run` writes the late rows there (committed
/// with the job's checkpoints) and still counts them.
#[test]
fn late_rows_go_to_the_late_rows_table() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/late.csv");
    let dir = tempfile::tempdir().expect("tempdir");
    let late_dir = dir.path().join("late");
    let output = run_sql(dir.path(), &format!(
            "CREATE TABLE e (id BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)
               WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv', 'scan.batch-size' = '1');
             CREATE TABLE late (id BIGINT, late_watermark TIMESTAMP(3))
               WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
             CREATE TABLE out WITH ('connector' = 'blackhole');
             SET 'table.exec.late-records.sink' = 'late';
             INSERT INTO out SELECT window_start, COUNT(*), SUM(id) FROM TUMBLE(e, ts, INTERVAL '10' SECOND) GROUP BY window_start, window_end;",
            data.display(),
            late_dir.display()
        ), &["run", "-p", "1"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("2 late rows (they arrived"), "{stderr}");
    let mut rows: Vec<String> = std::fs::read_dir(&late_dir)
        .expect("the late-rows table was written")
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .flat_map(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        ["5,2024-01-01 00:00:11", "8,2024-01-01 00:00:23"],
        "{stderr}"
    );
    // The job's own output is the four windows; the late rows are apart.
    assert!(stderr.contains("4 rows written to table 'out'"), "{stderr}");
}

#[test]
fn run_on_an_embedded_cluster_gives_the_single_process_rows() {
    let script =
        "CREATE TABLE src (id BIGINT) WITH ('connector' = 'datagen', 'fields.id.kind' = 'sequence',
            'fields.id.start' = '1', 'fields.id.end' = '100000');
         SELECT id % 5 AS k, COUNT(*) AS n, SUM(id) AS total FROM src GROUP BY id % 5;";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("q.sql");
    std::fs::write(&file, script).unwrap();
    let rows = |args: &[&str]| {
        let out = weir().arg("run").arg(&file).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("| ") && !l.contains(" k "))
            .map(String::from)
            .collect();
        lines.sort();
        lines
    };
    let single = rows(&["-p", "1"]);
    assert_eq!(single.len(), 5);
    assert_eq!(rows(&["-p", "3", "--workers", "3"]), single);
}

#[test]
fn cluster_configuration_errors_name_the_file_key_or_variable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("weir.toml");
    std::fs::write(&file, "[worker]\nslotz = 4\n").unwrap();
    let out = weir()
        .args(["worker", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("weir.toml") && stderr.contains("slotz"),
        "{stderr}"
    );

    std::fs::write(&file, "[coordinator]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let out = weir()
        .args(["coordinator", "--config", file.to_str().unwrap()])
        .env("WEIR_COORDINATOR_HEARTBEAT_TIMEOUT_MS", "soon")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("WEIR_COORDINATOR_HEARTBEAT_TIMEOUT_MS=soon"),
        "{stderr}"
    );
}

/// A stdout whose reader is already gone, as `| head -1` leaves it.
fn closed_stdout() -> std::process::Stdio {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    writer.into()
}

/// Runs `weir args` with a closed stdout: it must exit 0, without a panic.
fn exits_quietly_into_a_closed_pipe(args: &[&str]) {
    let output = weir()
        .args(args)
        .stdout(closed_stdout())
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run weir");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "weir {args:?} into a closed pipe: {:?}\n{stderr}",
        output.status
    );
    assert!(!stderr.contains("panicked"), "weir {args:?}: {stderr}");
}

/// `weir jobs | head -1` and friends: every command exits quietly when
/// its stdout closes, also while a query streams rows into it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_every_command_quietly() {
    let cluster = crate::cluster::harness::TestCluster::start(1, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("job.sql");
    std::fs::write(
        &script,
        "CREATE TABLE t (id BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '10',
            'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '1000000');
         CREATE TABLE out (id BIGINT) WITH ('connector' = 'blackhole');
         INSERT INTO out SELECT id FROM t;",
    )
    .unwrap();
    let submitted = weir()
        .args([
            "submit",
            script.to_str().unwrap(),
            "--coordinator",
            &cluster.address,
        ])
        .output()
        .unwrap();
    assert!(submitted.status.success(), "{submitted:?}");
    let job = String::from_utf8_lossy(&submitted.stdout)
        .trim()
        .to_string();
    let address = cluster.address.as_str();
    for args in [
        &["jobs", "--coordinator", address][..],
        &["job", &job, "--coordinator", address][..],
        &["workers", "--coordinator", address][..],
        &["explain", script.to_str().unwrap()][..],
    ] {
        exits_quietly_into_a_closed_pipe(args);
    }
    // A query over an unbounded source whose rows nobody reads ends.
    let query = dir.path().join("query.sql");
    std::fs::write(
        &query,
        "CREATE TABLE t (v BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '100');
         SELECT v FROM t;",
    )
    .unwrap();
    exits_quietly_into_a_closed_pipe(&["run", query.to_str().unwrap()]);
    exits_quietly_into_a_closed_pipe(&["sql", "-f", query.to_str().unwrap(), "--format", "csv"]);
}

/// Nothing listening: the client says so at once, not after its timeout.
#[test]
fn a_refused_connection_is_reported_at_once() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let started = std::time::Instant::now();
    let output = weir()
        .args(["jobs", "--coordinator", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("connection refused"), "{stderr}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

/// A port in use is named once, not once per layer of the error.
#[test]
fn an_address_in_use_is_reported_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = weir()
        .args(["coordinator", "--listen", &address])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(stderr.matches("already in use").count(), 1, "{stderr}");
    assert!(stderr.contains(&address), "{stderr}");
}

/// `WEIR_COORDINATOR` reaches `weir worker` as it reaches the client commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_coordinator_reaches_the_worker() {
    let cluster = crate::cluster::harness::TestCluster::start(0, 1).await;
    let mut worker = weir()
        .args(["worker", "--listen", "127.0.0.1:0", "--id", "from-env"])
        .env("WEIR_COORDINATOR", &cluster.address)
        .env_remove("WEIR_WORKER_COORDINATOR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = cluster.client().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let workers = client.workers().await.unwrap();
        if workers.iter().any(|w| w.worker_id == "from-env") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never registered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = worker.kill();
    let _ = worker.wait();
}

/// A clean finish on an embedded cluster of two workers logs no warning
/// (no worker is "lost" while the cluster shuts down).
#[test]
fn a_clean_finish_warns_of_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_sql(
        dir.path(),
        "CREATE TABLE t (id BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '5000',
            'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '5000');
         CREATE TABLE out (id BIGINT) WITH ('connector' = 'blackhole');
         INSERT INTO out SELECT id FROM t;",
        &["run", "-p", "2", "--workers", "2"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("WARN"), "{stderr}");
    assert!(stderr.contains("5000 rows written"), "{stderr}");
}

/// What a submitted script's statements show goes to stdout, as with
/// `weir run`; a script's jobs start all or none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_prints_results_on_stdout_and_starts_all_jobs_or_none() {
    let cluster = crate::cluster::harness::TestCluster::start(1, 4).await;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("job.sql");
    let tables = "CREATE TABLE t (id BIGINT, name STRING) WITH ('connector' = 'datagen',
            'number-of-rows' = '10', 'fields.id.kind' = 'sequence', 'fields.id.start' = '1',
            'fields.id.end' = '10');
         CREATE TABLE out (id BIGINT) WITH ('connector' = 'blackhole');";
    std::fs::write(
        &script,
        format!("{tables}\nDESCRIBE t;\nINSERT INTO out SELECT id FROM t;"),
    )
    .unwrap();
    let submit = |args: &[&str]| {
        weir()
            .arg("submit")
            .arg(&script)
            .args(args)
            .args(["--coordinator", &cluster.address])
            .output()
            .unwrap()
    };
    let output = submit(&["--wait"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("| name "), "DESCRIBE on stdout: {stdout}");
    assert!(stderr.contains("Table 't' created."), "{stderr}");
    // Two jobs needing 3 slots each on a worker with 4: neither starts.
    std::fs::write(
        &script,
        format!(
            "{tables}\nINSERT INTO out SELECT id FROM t;\nINSERT INTO out SELECT id + 1 FROM t;"
        ),
    )
    .unwrap();
    let output = submit(&["-p", "3"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("no job was started"), "{stderr}");
    let client = cluster.client().await;
    assert_eq!(
        client.jobs().await.unwrap().len(),
        1,
        "only the first run's job"
    );
}

/// A query that reads no table is answered at once, as psql answers it.
#[test]
fn a_query_without_a_table_is_answered() {
    let output = weir()
        .args([
            "sql",
            "-e",
            "SELECT 1 + 1 AS two, 'x' AS s;",
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "two,s\n2,x\n");
}

/// ORDER BY over a bounded table sorts; over an unbounded one it is refused.
#[test]
fn order_by_sorts_bounded_input() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_sql(
        dir.path(),
        "CREATE TABLE seq (id BIGINT) WITH ('connector' = 'datagen', 'fields.id.kind' = 'sequence',
            'fields.id.start' = '1', 'fields.id.end' = '20');
         SELECT id, id % 7 AS k FROM seq ORDER BY k DESC, id DESC LIMIT 4;",
        &["run", "-p", "3"],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.starts_with("| ") && !l.contains(" k |"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        rows,
        ["| 20 | 6 |", "| 13 | 6 |", "| 6 | 6 |", "| 19 | 5 |"]
    );
    let output = run_sql(
        dir.path(),
        "CREATE TABLE endless (v BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '10');
         SELECT v FROM endless ORDER BY v;",
        &["run"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("ORDER BY on an unbounded stream"),
        "{stderr}"
    );
}
