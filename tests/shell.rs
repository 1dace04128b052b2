//! `weir sql`: scripts and `-e` in every output format, errors that point
//! at the problem, the interactive shell driven in a real terminal (tmux),
//! and the shared catalog surviving a coordinator restart.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::cluster::harness::{TestCluster, weir};

/// 1..1000 as `id`; `id % 5` has 200 ids per key, whose sums are known.
const SEQ: &str = "CREATE TABLE seq (id BIGINT) WITH ('connector' = 'datagen', \
    'number-of-rows' = '1000', 'fields.id.kind' = 'sequence', \
    'fields.id.start' = '1', 'fields.id.end' = '1000');";
const PER_KEY: &str = "SELECT id % 5 AS k, COUNT(*) AS c, SUM(id) AS s FROM seq GROUP BY id % 5;";
/// `k,c,s` for k = 0..4, checked by hand: the ids ≡ k (mod 5) in 1..1000.
const PER_KEY_ROWS: [(i64, i64, i64); 5] = [
    (0, 200, 100500),
    (1, 200, 99700),
    (2, 200, 99900),
    (3, 200, 100100),
    (4, 200, 100300),
];

fn sql(args: &[&str]) -> Output {
    weir()
        .arg("sql")
        .args(args)
        .env("WEIR_LOG", "warn")
        .output()
        .expect("run weir sql")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn scripts_print_rows_as_csv_json_and_tables() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("per_key.sql");
    // The table comes from a file run with \i.
    let tables = dir.path().join("tables.sql");
    std::fs::write(&tables, SEQ).unwrap();
    let text_of_script = format!("\\i {}\n\\timing on\n{PER_KEY}\n", tables.display());
    std::fs::write(&script, text_of_script).unwrap();
    let script = script.to_str().unwrap();

    let csv = sql(&["-f", script, "--format", "csv"]);
    assert!(csv.status.success(), "{}", text(&csv.stderr));
    let stdout = text(&csv.stdout);
    let mut lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"k,c,s"), "{stdout}");
    lines.remove(0);
    lines.sort();
    let expected: Vec<String> = PER_KEY_ROWS
        .iter()
        .map(|(k, c, s)| format!("{k},{c},{s}"))
        .collect();
    assert_eq!(lines, expected, "{stdout}");
    assert!(
        text(&csv.stderr).contains("Time: "),
        "\\timing on prints times"
    );

    let json = sql(&["-e", &format!("{SEQ} {PER_KEY}"), "--format", "json"]);
    assert!(json.status.success(), "{}", text(&json.stderr));
    let mut rows: Vec<(i64, i64, i64)> = text(&json.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON row");
            (
                v["k"].as_i64().unwrap(),
                v["c"].as_i64().unwrap(),
                v["s"].as_i64().unwrap(),
            )
        })
        .collect();
    rows.sort();
    assert_eq!(rows, PER_KEY_ROWS);

    let table = sql(&["-e", &format!("{SEQ} {PER_KEY} SHOW TABLES;")]);
    assert!(table.status.success(), "{}", text(&table.stderr));
    let stdout = text(&table.stdout);
    assert!(stdout.contains("Table 'seq' created."), "{stdout}");
    assert!(stdout.contains("| 3 | 200 | 100100 |"), "{stdout}");
    assert!(stdout.contains("(5 rows)"), "{stdout}");
    assert!(stdout.contains("| seq        |"), "{stdout}");
}

/// `LIMIT n` over an unbounded source ends `weir sql -e` with its n rows.
#[test]
fn limit_ends_a_query_over_an_unbounded_source() {
    let started = Instant::now();
    let out = sql(&[
        "-e",
        "CREATE TABLE endless (v BIGINT) WITH ('connector' = 'datagen', \
            'rows-per-second' = '200', 'fields.v.min' = '1', 'fields.v.max' = '9'); \
         SELECT v FROM endless LIMIT 3;",
        "--format",
        "csv",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(60));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"v"), "{stdout}");
    assert_eq!(lines.len(), 4, "a header and three rows: {stdout}");
    assert!(
        lines[1..]
            .iter()
            .all(|v| v.parse::<i64>().is_ok_and(|v| (1..=9).contains(&v))),
        "{stdout}"
    );
}

#[test]
fn bad_input_gets_a_clear_error_with_the_spot_marked() {
    // A planning error: the position, the caret and a suggestion.
    let out = sql(&["-e", &format!("{SEQ}\nSELECT id FROM seqq;")]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("table 'seqq' not found (did you mean 'seq'?)"),
        "{err}"
    );
    assert!(
        err.contains("-e: planning error at line 2, column 16"),
        "{err}"
    );
    assert!(err.contains("  2 | SELECT id FROM seqq;"), "{err}");
    assert!(err.contains("  |                ^"), "{err}");

    // An unterminated string.
    let out = sql(&["-e", "SELECT 'abc FROM seq;"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.to_lowercase().contains("unterminated"), "{err}");

    // An unknown statement and an unknown command: both reported, and
    // nothing of the script runs (it is planned whole first).
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("bad.sql");
    std::fs::write(
        &script,
        format!("{SEQ}\n\\frobnicate\nFROBNICATE seq;\nSHOW TABLES;\n"),
    )
    .unwrap();
    let out = sql(&["-f", script.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("bad.sql, line 2: unknown command \\frobnicate"),
        "{err}"
    );
    assert!(
        err.contains("bad.sql: ") && err.contains("line 3, column 1"),
        "{err}"
    );
    assert!(
        err.contains("2 errors in the script; nothing was run"),
        "{err}"
    );
    let stdout = text(&out.stdout);
    assert!(
        !stdout.contains("table_name") && !stdout.contains("created"),
        "something ran: {stdout}"
    );
}

/// A terminal session run by tmux, read back as the screen shows it.
struct Terminal {
    name: String,
}

impl Terminal {
    fn start(name: &str, command: &str) -> Self {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", name])
            .output();
        let status = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                name,
                "-x",
                "150",
                "-y",
                "45",
                command,
            ])
            .status()
            .expect("tmux must be installed (./dev test installs it)");
        assert!(status.success());
        Self { name: name.into() }
    }

    fn send(&self, keys: &[&str]) {
        let status = Command::new("tmux")
            .args(["send-keys", "-t", &self.name])
            .args(keys)
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Types a line of text literally, then Enter.
    fn type_line(&self, line: &str) {
        // tmux takes a trailing ';' for its command separator unless escaped.
        let escaped = match line.strip_suffix(';') {
            Some(head) => format!("{head}\\;"),
            None => line.to_string(),
        };
        self.send(&["-l", &escaped]);
        self.send(&["Enter"]);
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .unwrap();
        text(&out.stdout)
    }

    fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["has-session", "-t", &self.name])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Waits until the screen satisfies `ok`; returns it.
    fn wait_for(&self, what: &str, within: Duration, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "waited for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .output();
    }
}

/// The number in the live table's status line ("1234 rows …").
fn status_rows(screen: &str) -> Option<u64> {
    screen
        .lines()
        .rev()
        .find(|l| l.contains(" rows") && l.contains(" · "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
}

#[test]
fn the_shell_in_a_real_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history");
    let command = format!(
        "WEIR_LOG=error WEIR_HISTORY={} {} sql --workers 2",
        history.display(),
        env!("CARGO_BIN_EXE_weir")
    );
    let term = Terminal::start(&format!("weir-shell-{}", std::process::id()), &command);
    term.wait_for("the prompt", Duration::from_secs(60), |s| {
        s.contains("weir>")
    });

    // A multi-line CREATE TABLE: the statement runs at its ';'.
    term.type_line("CREATE TABLE ticks (id BIGINT, ts AS TO_TIMESTAMP_LTZ(id, 3),");
    term.type_line("  WATERMARK FOR ts AS ts) WITH ('connector' = 'datagen',");
    term.type_line("  'rows-per-second' = '2000', 'fields.id.kind' = 'sequence',");
    term.type_line("  'fields.id.start' = '1', 'fields.id.end' = '100000000');");
    term.wait_for("the table", Duration::from_secs(20), |s| {
        s.contains("Table 'ticks' created.")
    });

    // A windowed SELECT over an unbounded stream: one-second windows of
    // 1000 ids each fill the live table, which keeps growing in place.
    term.type_line(
        "SELECT window_start, COUNT(*) AS n FROM TUMBLE(ticks, ts, INTERVAL '1' SECOND) GROUP BY window_start, window_end;",
    );
    let first = term.wait_for("window rows", Duration::from_secs(60), |s| {
        s.contains("| 1000 |") && status_rows(s).is_some_and(|n| n >= 2)
    });
    let before = status_rows(&first).unwrap();
    let later = term.wait_for("more rows in place", Duration::from_secs(30), |s| {
        status_rows(s).is_some_and(|n| n >= before + 2)
    });
    assert!(later.contains("| window_start"), "{later}");
    assert_eq!(
        later.matches("| window_start").count(),
        1,
        "the table is redrawn in place, not printed again:\n{later}"
    );
    assert!(later.contains("Ctrl-C stops it"), "{later}");

    // Ctrl-C stops the query, not the shell.
    term.send(&["C-c"]);
    term.wait_for("the query to stop", Duration::from_secs(20), |s| {
        s.contains("Query stopped after")
    });
    term.send(&["C-l"]);
    term.type_line("\\jobs");
    let jobs = term.wait_for(
        "the cancelled query in \\jobs",
        Duration::from_secs(20),
        |s| s.contains("RESTARTS  NAME") && s.contains(" cancelled "),
    );
    // One line per job, well inside 120 columns (the terminal has 150).
    for line in jobs.lines() {
        assert!(line.trim_end().chars().count() <= 100, "too wide: {line:?}");
    }

    // LIMIT over the unbounded stream ends the query by itself.
    term.send(&["C-l"]);
    term.type_line("SELECT id FROM ticks LIMIT 3;");
    term.wait_for(
        "the limited query to finish",
        Duration::from_secs(60),
        |s| s.contains("query finished") && status_rows(s) == Some(3),
    );

    // Another query, bounded this time, and errors that leave the shell working.
    term.send(&["C-l"]);
    term.type_line("SELECT id, id * 2 AS twice FROM ticks WHERE id % 500 = 0;");
    term.wait_for("filtered rows", Duration::from_secs(60), |s| {
        s.contains("| 1500 | 3000  |") && s.contains("| id ")
    });
    term.send(&["C-c"]);
    term.wait_for("the second query to stop", Duration::from_secs(20), |s| {
        s.matches("Query stopped after").count() == 1 && s.contains("| 1500 | 3000  |")
    });
    term.send(&["C-l"]);
    term.type_line("SELECT nope FROM ticks;");
    term.wait_for(
        "a planning error with a caret",
        Duration::from_secs(20),
        |s| s.contains("nope") && s.contains('^'),
    );
    term.type_line("\\nosuch");
    term.wait_for("an unknown command", Duration::from_secs(10), |s| {
        s.contains("unknown command \\nosuch")
    });
    term.type_line("\\dt");
    term.wait_for("the tables", Duration::from_secs(10), |s| {
        s.contains("| ticks")
    });

    // Tab completes a table name.
    term.send(&["C-l"]);
    term.send(&["-l", "DESCRIBE tic"]);
    term.send(&["Tab"]);
    term.type_line(";");
    term.wait_for(
        "DESCRIBE of the completed name",
        Duration::from_secs(10),
        |s| s.contains("DESCRIBE ticks;") && s.contains("| id "),
    );

    // The changelog mode prints each row as an insert.
    term.send(&["C-l"]);
    term.type_line("\\mode changelog");
    term.type_line("SELECT id FROM ticks WHERE id % 1000 = 0;");
    term.wait_for("changelog rows", Duration::from_secs(30), |s| {
        s.contains("op | id") && s.contains("+I | 2000")
    });
    term.send(&["C-c"]);
    term.wait_for(
        "the changelog query to stop",
        Duration::from_secs(20),
        |s| s.contains("Query stopped after"),
    );

    term.type_line("\\q");
    let deadline = Instant::now() + Duration::from_secs(20);
    while term.alive() {
        assert!(Instant::now() < deadline, "\\q did not end the shell");
        std::thread::sleep(Duration::from_millis(100));
    }
    let saved = std::fs::read_to_string(&history).expect("the history file");
    assert!(saved.contains("CREATE TABLE ticks"), "{saved}");
    assert!(saved.contains("\\jobs"), "{saved}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_and_jobs_survive_a_coordinator_restart() {
    let mut cluster = TestCluster::start(2, 4).await;
    let address = cluster.address.clone();
    let on_cluster = |args: &[&str]| {
        let mut full = vec!["--coordinator", address.as_str()];
        full.extend_from_slice(args);
        sql(&full)
    };
    let created = on_cluster(&[
        "-e",
        &format!(
            "{SEQ} CREATE TABLE slow (id BIGINT) WITH ('connector' = 'datagen', \
             'rows-per-second' = '50', 'fields.id.kind' = 'sequence', \
             'fields.id.start' = '1', 'fields.id.end' = '1000000'); \
             CREATE TABLE sink WITH ('connector' = 'blackhole'); \
             SET 'execution.checkpointing.interval' = '500ms'; \
             INSERT INTO sink SELECT id FROM slow;"
        ),
    ]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let stdout = text(&created.stdout);
    let job_id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Job '").and_then(|l| l.split(": ").nth(1)))
        .unwrap_or_else(|| panic!("no job id in:\n{stdout}"))
        .trim()
        .to_string();

    // Another session sees the tables: the catalog is the cluster's.
    let other = on_cluster(&["-e", PER_KEY, "--format", "csv"]);
    assert!(other.status.success(), "{}", text(&other.stderr));
    assert_eq!(
        text(&other.stdout).lines().count(),
        6,
        "{}",
        text(&other.stdout)
    );
    // A table name is taken once.
    let again = on_cluster(&["-e", SEQ]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already exists"),
        "{}",
        text(&again.stderr)
    );

    cluster.restart_coordinator();
    cluster.wait_for_workers(2).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = on_cluster(&["-e", "SHOW JOBS; SHOW TABLES;", "--format", "csv"]);
        let stdout = text(&out.stdout);
        let running = stdout
            .lines()
            .any(|l| l.starts_with(&format!("{job_id},")) && l.contains(",running,"));
        if out.status.success() && running {
            for table in ["seq", "sink", "slow"] {
                assert!(stdout.lines().any(|l| l == table), "{stdout}");
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job and tables did not come back:\n{stdout}\n{}\n{}",
            text(&out.stderr),
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let after = on_cluster(&["-e", PER_KEY, "--format", "csv"]);
    let mut lines: Vec<String> = text(&after.stdout)
        .lines()
        .skip(1)
        .map(String::from)
        .collect();
    lines.sort();
    let expected: Vec<String> = PER_KEY_ROWS
        .iter()
        .map(|(k, c, s)| format!("{k},{c},{s}"))
        .collect();
    assert_eq!(lines, expected, "{}", text(&after.stderr));
    let stopped = on_cluster(&["-e", &format!("STOP JOB '{job_id}';")]);
    assert!(
        text(&stopped.stdout).contains("is stopping"),
        "{}",
        text(&stopped.stderr)
    );
    let dropped = on_cluster(&["-e", "DROP TABLE slow; SHOW TABLES;", "--format", "csv"]);
    assert!(!text(&dropped.stdout).lines().any(|l| l == "slow"));
}

/// The same script through `psql` (the coordinator's Postgres endpoint)
/// and through `weir sql -f` gives the same rows, which are the hand-checked ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_and_the_shell_give_the_same_rows() {
    let cluster =
        TestCluster::start_with_coordinator_args(2, 4, &["--pg-listen", "127.0.0.1:0"]).await;
    let pg = cluster
        .pg_address
        .clone()
        .expect("the coordinator serves postgres");
    let created = sql(&["--coordinator", &cluster.address, "-e", SEQ]);
    assert!(created.status.success(), "{}", text(&created.stderr));

    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("queries.sql");
    std::fs::write(
        &script,
        format!(
            "{PER_KEY}\nSELECT COUNT(*) AS n, MIN(id) AS lo, MAX(id) AS hi FROM seq WHERE id % 7 = 3;\n"
        ),
    )
    .unwrap();
    let shell = sql(&[
        "--coordinator",
        &cluster.address,
        "-f",
        script.to_str().unwrap(),
        "--format",
        "csv",
    ]);
    assert!(shell.status.success(), "{}", text(&shell.stderr));
    let mut from_shell: Vec<String> = text(&shell.stdout)
        .lines()
        .filter(|l| *l != "k,c,s" && *l != "n,lo,hi")
        .map(String::from)
        .collect();
    from_shell.sort();

    let (host, port) = pg.rsplit_once(':').unwrap();
    let psql = Command::new("timeout")
        .args([
            "120",
            "psql",
            "-X",
            "-A",
            "-t",
            "-F",
            ",",
            "-v",
            "ON_ERROR_STOP=1",
        ])
        .args(["-h", host, "-p", port, "-U", "weir", "-d", "weir", "-f"])
        .arg(&script)
        .output()
        .expect("psql (postgresql-client) is installed; `./dev test` installs it");
    assert!(psql.status.success(), "{}", text(&psql.stderr));
    let mut from_psql: Vec<String> = text(&psql.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    from_psql.sort();

    let mut expected: Vec<String> = PER_KEY_ROWS
        .iter()
        .map(|(k, c, s)| format!("{k},{c},{s}"))
        .collect();
    // ids ≡ 3 (mod 7) in 1..1000: 3, 10, …, 997.
    expected.push("143,3,997".into());
    expected.sort();
    assert_eq!(from_shell, expected);
    assert_eq!(from_psql, expected);
}

/// The shell's coordinator goes away in the middle of a query: the query
/// ends with a clear error, the shell stays up, and once the coordinator is
/// back the next statement works (and sees the persisted catalog).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_survives_losing_its_coordinator_mid_query() {
    let mut cluster = TestCluster::start(2, 4).await;
    let command = format!(
        "WEIR_LOG=error WEIR_HISTORY=/dev/null {} sql --coordinator {}",
        env!("CARGO_BIN_EXE_weir"),
        cluster.address
    );
    let term = Terminal::start(&format!("weir-lost-{}", std::process::id()), &command);
    term.wait_for("the prompt", Duration::from_secs(30), |s| {
        s.contains("weir>")
    });
    term.type_line(
        "CREATE TABLE t (id BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '500', 'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '100000000');",
    );
    term.wait_for("the table", Duration::from_secs(20), |s| {
        s.contains("Table 't' created.")
    });
    term.type_line("SELECT id FROM t WHERE id % 100 = 0;");
    term.wait_for("rows", Duration::from_secs(30), |s| s.contains("| 300 |"));
    cluster.restart_coordinator();
    let screen = term.wait_for("the failed query", Duration::from_secs(60), |s| {
        s.contains("the query failed") && s.trim_end().ends_with("weir>")
    });
    assert!(!screen.contains("panicked"), "{screen}");
    cluster.wait_for_workers(2).await;
    term.send(&["C-l"]);
    term.type_line("SHOW TABLES;");
    term.wait_for(
        "the table after the restart",
        Duration::from_secs(30),
        |s| s.contains("| t "),
    );
    term.type_line("\\q");
}

/// `weir sql --pg-listen` serves Postgres for its embedded cluster, on the
/// same catalog as the shell.
#[test]
fn the_embedded_shell_serves_postgres() {
    let command = format!(
        "WEIR_LOG=error WEIR_HISTORY=/dev/null {} sql --pg-listen 127.0.0.1:0",
        env!("CARGO_BIN_EXE_weir")
    );
    let term = Terminal::start(&format!("weir-pg-{}", std::process::id()), &command);
    let screen = term.wait_for("the prompt", Duration::from_secs(60), |s| {
        s.contains("weir>")
    });
    let address = screen
        .lines()
        .find_map(|l| l.strip_prefix("postgres on "))
        .unwrap_or_else(|| panic!("no postgres address on:\n{screen}"))
        .trim()
        .to_string();
    let (host, port) = address.rsplit_once(':').unwrap();
    let psql = Command::new("timeout")
        .args(["60", "psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .args([
            "-h", host, "-p", port, "-U", "weir", "-d", "weir", "-c", SEQ,
        ])
        .args(["-c", "SELECT COUNT(*), SUM(id) FROM seq;"])
        .output()
        .expect("psql (postgresql-client) is installed; `./dev test` installs it");
    assert!(psql.status.success(), "{}", text(&psql.stderr));
    assert!(
        text(&psql.stdout).contains("1000|500500"),
        "{}",
        text(&psql.stdout)
    );
    // The table psql created is the shell's too.
    term.type_line("\\dt");
    term.wait_for("the table from psql", Duration::from_secs(20), |s| {
        s.contains("| seq ")
    });
    term.type_line("\\q");
}
