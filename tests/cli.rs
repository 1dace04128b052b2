//! The `weir` binary, run as a user runs it.

use std::process::Command;

fn weir() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weir"))
}

#[test]
fn run_writes_a_bounded_pipeline_to_files_and_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let script = dir.path().join("job.sql");
    std::fs::write(
        &script,
        format!(
            "CREATE TABLE numbers (id BIGINT, v BIGINT) WITH (
                'connector' = 'datagen', 'number-of-rows' = '5000',
                'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '5000',
                'fields.v.min' = '1', 'fields.v.max' = '9');
             CREATE TABLE out WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
             INSERT INTO out SELECT id, v * 10 FROM numbers WHERE id % 2 = 0;",
            out.display()
        ),
    )
    .expect("write script");
    let output = weir()
        .args(["run", "--parallelism", "3"])
        .arg(&script)
        .output()
        .expect("run weir");
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
    let script = dir.path().join("bad.sql");
    std::fs::write(
        &script,
        "CREATE TABLE t (id BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '5');\n\nSELECT idd FROM t;\n",
    )
    .expect("write script");
    let output = weir().arg("run").arg(&script).output().expect("run weir");
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
    let script = dir.path().join("q.sql");
    std::fs::write(
        &script,
        "CREATE TABLE t (id BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts) WITH ('connector' = 'datagen');
         SELECT window_end, COUNT(*) FROM TUMBLE(t, ts, INTERVAL '1' MINUTE) GROUP BY window_start, window_end;",
    )
    .expect("write script");
    let output = weir()
        .args(["explain", "--dot"])
        .arg(&script)
        .output()
        .expect("run weir");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("digraph"), "{stdout}");
    assert!(stdout.contains("WindowAggregate"), "{stdout}");
}
