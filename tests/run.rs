//! `weir run` as a new user meets it: a script is planned whole before
//! anything runs, `LIMIT` ends a query over an unbounded source, every run
//! ends with a summary, a bare `SELECT` prints its header once, a second
//! Ctrl-C cancels (and the exit code says so), and the jobs checkpoint, so
//! an unbounded filesystem sink commits its files while it runs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn weir() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weir"))
}

/// Writes `sql` to `job.sql` in `dir` and runs `weir run` on it.
fn run(dir: &Path, sql: &str, args: &[&str]) -> Output {
    let script = dir.join("job.sql");
    std::fs::write(&script, sql).expect("write script");
    weir()
        .arg("run")
        .arg(&script)
        .args(args)
        .output()
        .expect("run weir")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The visible (committed) files of a sink directory, and the hidden ones.
fn sink_files(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (Vec::new(), Vec::new());
    };
    entries.map(|e| e.expect("entry").path()).partition(|p| {
        !p.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(".")
            .starts_with('.')
    })
}

/// Every line of the committed files.
/// `CREATE TABLE out` writing CSV files into `dir`.
fn csv_sink(dir: &Path) -> String {
    format!(
        "CREATE TABLE out WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');",
        dir.display()
    )
}

fn committed_lines(dir: &Path) -> Vec<String> {
    sink_files(dir)
        .0
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .expect("part file")
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect()
}

const NUMBERS: &str = "CREATE TABLE numbers (id BIGINT, v BIGINT) WITH ('connector' = 'datagen',
    'number-of-rows' = '1000', 'fields.id.kind' = 'sequence', 'fields.id.start' = '1',
    'fields.id.end' = '1000', 'fields.v.min' = '1', 'fields.v.max' = '9');";

#[test]
fn a_script_with_a_typo_runs_nothing_and_names_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let output = run(
        dir.path(),
        &format!(
            "{NUMBERS}
{sink}
INSERT INTO out SELECT id FROM numbers;
INSERT INTO out SELECT idd FROM numbers;
INSERT INTO out SELECT id FROM numbrs;
",
            sink = csv_sink(&out)
        ),
        &[],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    // Both bad statements, each with its line, column and a suggestion.
    assert!(stderr.contains("line 6, column 24"), "{stderr}");
    assert!(stderr.contains("idd"), "{stderr}");
    assert!(stderr.contains("line 7, column 32"), "{stderr}");
    assert!(stderr.contains("did you mean 'numbers'?"), "{stderr}");
    assert!(
        stderr.contains("2 statements of") && stderr.contains("nothing was run"),
        "{stderr}"
    );
    assert!(!stderr.contains("started"), "a job started: {stderr}");
    // The good INSERT before the typos wrote nothing.
    let (visible, hidden) = sink_files(&out);
    assert!(
        visible.is_empty() && hidden.is_empty(),
        "{visible:?} {hidden:?}"
    );
}

#[test]
fn a_statement_after_a_failed_create_table_is_not_reported_again() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(
        dir.path(),
        "CREATE TABLE t (id BIGINT) WITH ('connector' = 'datagen', 'number-of-rowz' = '5');
SELECT id FROM t;
SELECT nope FROM t;
",
        &[],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("number-of-rowz"), "{stderr}");
    assert!(
        stderr.contains("1 statement of") && stderr.contains("does not plan"),
        "only the CREATE TABLE is wrong: {stderr}"
    );
}

/// `LIMIT n` over an unbounded source ends the job, in one process and
/// when the source runs at parallelism 2 on two workers.
#[test]
fn limit_ends_a_query_over_an_unbounded_source() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["-p", "1"][..], &["-p", "2", "--workers", "2"][..]] {
        let started = Instant::now();
        let output = run(
            dir.path(),
            "CREATE TABLE endless (v BIGINT) WITH ('connector' = 'datagen',
                'rows-per-second' = '500', 'fields.v.min' = '1', 'fields.v.max' = '9');
             SELECT v FROM endless LIMIT 3;",
            args,
        );
        let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
        assert!(output.status.success(), "{args:?}: {stderr}");
        assert!(started.elapsed() < Duration::from_secs(60));
        let rows: Vec<&str> = stdout
            .lines()
            .filter(|l| l.starts_with("| ") && !l.contains(" v |"))
            .collect();
        assert_eq!(rows.len(), 3, "{args:?}: {stdout}");
        assert!(stdout.contains("3 rows"), "{stdout}");
        assert!(stderr.contains("3 rows printed"), "{stderr}");
    }
}

#[test]
fn limit_ends_an_insert_and_commits_exactly_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let output = run(
        dir.path(),
        &format!(
            "CREATE TABLE ticks (id BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '1000',
                'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '1000000000');
             {sink}
             INSERT INTO out SELECT id FROM ticks LIMIT 250;",
            sink = csv_sink(&out)
        ),
        &["-p", "2"],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let lines = committed_lines(&out);
    assert_eq!(lines.len(), 250, "{lines:?}");
    let (_, hidden) = sink_files(&out);
    assert!(hidden.is_empty(), "in-progress files left: {hidden:?}");
}

/// Every run ends with a summary, also one shorter than the progress
/// interval, and a bare SELECT prints its header once over many batches.
#[test]
fn a_short_run_ends_with_a_summary_and_rows_in_one_table() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let output = run(
        dir.path(),
        &format!(
            "{NUMBERS}
{sink}
INSERT INTO out SELECT id, v FROM numbers WHERE v > 4;
CREATE TABLE many (id BIGINT) WITH ('connector' = 'datagen', 'scan.batch-size' = '7',
    'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '50');
SELECT id, id * 2 AS twice FROM many;
",
            sink = csv_sink(&out)
        ),
        &["-p", "2"],
    );
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "{stderr}");
    let written = committed_lines(&out).len();
    assert!(written > 0);
    assert!(stderr.contains("Finished in "), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "1000 rows read, {written} rows written to table 'out' (filesystem: {})",
            out.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("50 rows read, 50 rows printed"), "{stderr}");
    // Tableau: one header over the 8 batches of rows, then the count.
    assert_eq!(stdout.matches("| id |").count(), 1, "{stdout}");
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("| ") && !l.contains("| id |"))
        .collect();
    assert_eq!(rows.len(), 50, "{stdout}");
    assert!(stdout.trim_end().ends_with("50 rows"), "{stdout}");
}

/// Reads `child`'s stderr on a thread; the lines so far.
fn collect_stderr(child: &mut Child) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let stderr = child.stderr.take().expect("piped stderr");
    let sink = std::sync::Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

fn interrupt(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// A second Ctrl-C cancels the run, and the exit code says so.
#[test]
fn a_second_interrupt_cancels_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("slow.sql");
    // A slow sink keeps the graceful stop of the first Ctrl-C draining.
    std::fs::write(
        &script,
        "CREATE TABLE ticks (id BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '5000',
            'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '1000000000');
         CREATE TABLE slow (id BIGINT) WITH ('connector' = 'blackhole', 'sink.rows-per-second' = '20');
         INSERT INTO slow SELECT id FROM ticks;",
    )
    .unwrap();
    let mut child = weir()
        .arg("run")
        .arg(&script)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn weir");
    let lines = collect_stderr(&mut child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lines.lock().unwrap().iter().any(|l| l.contains("started")) {
        assert!(Instant::now() < deadline, "the job never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1500));
    interrupt(&child);
    while !lines.lock().unwrap().iter().any(|l| l.contains("Stopping")) {
        assert!(Instant::now() < deadline, "the first Ctrl-C was not seen");
        std::thread::sleep(Duration::from_millis(20));
    }
    interrupt(&child);
    let status = child.wait().expect("weir exits");
    let stderr = lines.lock().unwrap().join("\n");
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("Cancelled in"), "{stderr}");
    assert!(stderr.contains("(cancelled)"), "{stderr}");
}

/// The jobs of `weir run` checkpoint like the cluster's: an unbounded
/// filesystem sink publishes files while it runs, and the committed rows
/// after a Ctrl-C are the sequence's prefix, each once.
#[test]
fn an_unbounded_run_commits_its_files_at_each_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let script = dir.path().join("stream.sql");
    std::fs::write(
        &script,
        format!(
            "SET 'execution.checkpointing.interval' = '1s';
             CREATE TABLE ticks (id BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '500',
                'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '1000000000');
             {sink}
             INSERT INTO out SELECT id FROM ticks;",
            sink = csv_sink(&out)
        ),
    )
    .unwrap();
    let mut child = weir()
        .arg("run")
        .arg(&script)
        .arg("-p")
        .arg("2")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn weir");
    let lines = collect_stderr(&mut child);
    // Committed files appear while the job runs, one checkpoint after another.
    let deadline = Instant::now() + Duration::from_secs(60);
    while sink_files(&out).0.len() < 4 {
        assert!(
            Instant::now() < deadline,
            "no committed files while running: {:?}\n{}",
            sink_files(&out),
            lines.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(child.try_wait().unwrap().is_none(), "the run ended early");
    interrupt(&child);
    let status = child.wait().expect("weir exits");
    let stderr = lines.lock().unwrap().join("\n");
    assert!(status.success(), "{stderr}");
    let mut ids: Vec<i64> = committed_lines(&out)
        .iter()
        .map(|l| l.parse().expect("id"))
        .collect();
    ids.sort_unstable();
    assert!(ids.len() > 500, "{} rows", ids.len());
    // Two source subtasks each read a contiguous part of the sequence;
    // what they committed is a prefix of each part, so no id twice.
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "duplicated rows");
    assert!(
        stderr.contains(&format!("{} rows written", ids.len())),
        "{stderr}"
    );
    assert!(sink_files(&out).1.is_empty(), "in-progress files left");
}

/// In the library's in-process runtime too, a limit ends its job: the
/// limit's request stops the sources of a job deployed whole here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_ends_a_job_of_the_in_process_runtime() {
    let mut engine = weir::Engine::new(2);
    engine
        .execute_script(
            "CREATE TABLE endless (v BIGINT) WITH ('connector' = 'datagen',
                'rows-per-second' = '500', 'fields.v.min' = '1', 'fields.v.max' = '9');",
        )
        .await
        .unwrap();
    let rows = tokio::time::timeout(
        Duration::from_secs(60),
        engine.query("SELECT v FROM endless LIMIT 4"),
    )
    .await
    .expect("the query ends")
    .unwrap();
    assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 4);
}

/// A script's views are known to the statements after it: checked whole,
/// then run, in one process and on an embedded cluster (where the views
/// go to the cluster's catalog).
#[test]
fn a_script_inserts_from_the_views_it_creates() {
    let dir = tempfile::tempdir().unwrap();
    for (i, args) in [&["-p", "1"][..], &["-p", "2", "--workers", "2"][..]]
        .into_iter()
        .enumerate()
    {
        let out = dir.path().join(format!("out{i}"));
        let output = run(
            dir.path(),
            &format!(
                "{NUMBERS}
{sink}
CREATE VIEW small (id, doubled) AS SELECT id, v * 2 FROM numbers WHERE id <= 10;
CREATE TEMPORARY VIEW smaller AS SELECT id, doubled FROM small WHERE id <= 5;
INSERT INTO out SELECT id, doubled - doubled FROM smaller;
",
                sink = csv_sink(&out)
            ),
            args,
        );
        let stderr = text(&output.stderr);
        assert!(output.status.success(), "{args:?}: {stderr}");
        let mut lines = committed_lines(&out);
        lines.sort();
        assert_eq!(lines, ["1,0", "2,0", "3,0", "4,0", "5,0"], "{args:?}");
    }
    // A view that does not plan is reported with its position, and the
    // statement reading it is not reported again.
    let output = run(
        dir.path(),
        &format!(
            "{NUMBERS}
{sink}
CREATE VIEW v AS SELECT idd FROM numbers;
INSERT INTO out SELECT * FROM v;
",
            sink = csv_sink(&dir.path().join("never"))
        ),
        &[],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("line 5, column 25"), "{stderr}");
    assert!(stderr.contains("1 statement of"), "{stderr}");
}

/// A join whose state can only grow is named when its job starts, once;
/// with a state TTL or a time bound it is not.
#[test]
fn a_join_whose_state_grows_without_bound_is_warned_about_at_submit() {
    let dir = tempfile::tempdir().unwrap();
    let tables =
        "CREATE TABLE a (id BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '100',
          'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '100');
        CREATE TABLE b (id BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '100',
          'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '100');
        CREATE TABLE out WITH ('connector' = 'blackhole');";
    let join = "INSERT INTO out SELECT a.id, b.id FROM a LEFT JOIN b ON a.id = b.id;";
    let out = run(dir.path(), &format!("{tables}\n{join}"), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("Warning:"))
        .collect();
    assert_eq!(
        warnings,
        vec![
            "Warning: job 'insert-into-out-1': a left outer join keeps every row of both inputs, \
             so its state grows without bound; set 'table.exec.state.ttl' to drop keys idle that \
             long, or bound it by time (an interval or window join)."
        ],
        "{stderr}"
    );
    let bounded = format!("{tables}\nSET 'table.exec.state.ttl' = '1 h';\n{join}");
    let out = run(dir.path(), &bounded, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("Warning:"),
        "{}",
        text(&out.stderr)
    );
}
