//! Updating results end to end through `weir run`: a `GROUP BY` over small
//! batches of a bounded file in streaming mode, its whole changelog
//! compared with hand-checked rows (the counts per batch of 20 rows were
//! counted in the file) in the three places a user sees it: the `print`
//! sink, a `debezium-json` file sink, and a bare `SELECT`'s `op` column.

use std::process::Command;

#[test]
fn weir_run_shows_each_change_with_its_kind() {
    let dir = tempfile::tempdir().unwrap();
    let bids = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/bids.csv");
    let changes = dir.path().join("changes");
    let script = format!(
        "CREATE TABLE bids (id BIGINT, auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, ts TIMESTAMP(3))
         WITH ('connector' = 'filesystem', 'path' = '{bids}', 'format' = 'csv', 'scan.batch-size' = '20');
         SET 'execution.runtime-mode' = 'streaming';
         CREATE TABLE printed (bidder BIGINT, n BIGINT) WITH ('connector' = 'print', 'print-identifier' = 'counts');
         CREATE TABLE changes (bidder BIGINT, n BIGINT)
         WITH ('connector' = 'filesystem', 'path' = '{changes}', 'format' = 'debezium-json');
         INSERT INTO printed SELECT bidder, COUNT(*) FROM bids WHERE bidder < 3 GROUP BY bidder;
         INSERT INTO changes SELECT bidder, COUNT(*) FROM bids WHERE bidder < 3 GROUP BY bidder;
         SELECT bidder, COUNT(*) AS n FROM bids WHERE bidder < 3 GROUP BY bidder;",
        bids = bids.display(),
        changes = changes.display(),
    );
    let path = dir.path().join("job.sql");
    std::fs::write(&path, script).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", path.to_str().unwrap(), "-p", "1"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    // Bidder 1 has 7, 14, 20 rows after each batch; bidder 2 has 4, 8, 13
    // (and comes first in the third batch).
    let changelog = [
        ("+I", 1, 7),
        ("+I", 2, 4),
        ("-U", 1, 7),
        ("+U", 1, 14),
        ("-U", 2, 4),
        ("+U", 2, 8),
        ("-U", 2, 8),
        ("+U", 2, 13),
        ("-U", 1, 14),
        ("+U", 1, 20),
    ];
    let printed: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("counts> "))
        .collect();
    let expected: Vec<String> = changelog
        .iter()
        .map(|(op, b, n)| format!("counts> {op}[{b}, {n}]"))
        .collect();
    assert_eq!(printed, expected, "{stdout}");
    let selected: Vec<Vec<String>> = stdout
        .lines()
        .filter(|l| l.starts_with("| +") || l.starts_with("| -"))
        .map(|l| {
            l.split('|')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect();
    let expected: Vec<Vec<String>> = changelog
        .iter()
        .map(|(op, b, n)| vec![op.to_string(), b.to_string(), n.to_string()])
        .collect();
    assert_eq!(selected, expected, "{stdout}");
    assert!(stdout.contains("| op | bidder |"), "{stdout}");
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(&changes).unwrap().flatten() {
        if !entry.file_name().to_string_lossy().starts_with('.') {
            lines.extend(
                std::fs::read_to_string(entry.path())
                    .unwrap()
                    .lines()
                    .map(str::to_string),
            );
        }
    }
    let expected: Vec<String> = changelog
        .iter()
        .map(|(op, b, n)| {
            let row = format!(r#"{{"bidder":{b},"n":{n}}}"#);
            if op.starts_with('+') {
                format!(r#"{{"before":null,"after":{row},"op":"c"}}"#)
            } else {
                format!(r#"{{"before":{row},"after":null,"op":"d"}}"#)
            }
        })
        .collect();
    assert_eq!(lines, expected);
}

/// A sink that takes only inserts is refused at planning, with the sink
/// named and the formats that would take the changes.
#[test]
fn an_insert_only_sink_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let script = "CREATE TABLE src (id BIGINT) WITH ('connector' = 'datagen');
         CREATE TABLE out (k BIGINT, n BIGINT) WITH ('connector' = 'filesystem', 'path' = '/tmp/never', 'format' = 'csv');
         INSERT INTO out SELECT id % 10, COUNT(*) FROM src GROUP BY id % 10;";
    let path = dir.path().join("job.sql");
    std::fs::write(&path, script).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("table 'out' (connector 'filesystem', format 'csv') takes only inserts")
            && stderr.contains("'format' = 'debezium-json'")
            && stderr.contains("'connector' = 'upsert-kafka'"),
        "{stderr}"
    );
}

/// `weir sql` output that is not a live table (here CSV) carries each
/// change with its kind; applied in order, the changes give the answer.
#[test]
fn weir_sql_prints_changes_with_an_op_column() {
    let script = "CREATE TABLE seq (id BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '1000', \
         'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '1000', 'scan.batch-size' = '100');
         SET 'execution.runtime-mode' = 'streaming';
         SELECT id % 3 AS k, COUNT(*) AS c FROM seq GROUP BY id % 3;";
    let output = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["sql", "-e", script, "--format", "csv"])
        .env("WEIR_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut lines = stdout.lines().filter(|l| !l.is_empty());
    assert_eq!(lines.next(), Some("op,k,c"), "{stdout}");
    let mut state: std::collections::BTreeMap<String, i64> = Default::default();
    let mut changes = 0;
    for line in lines.filter(|l| l.starts_with('+') || l.starts_with('-')) {
        let (op, row) = line.split_once(',').unwrap();
        *state.entry(row.to_string()).or_default() += if op.starts_with('+') { 1 } else { -1 };
        changes += 1;
    }
    state.retain(|_, n| *n != 0);
    let expected: std::collections::BTreeMap<String, i64> =
        [("0,333", 1), ("1,334", 1), ("2,333", 1)]
            .into_iter()
            .map(|(r, n)| (r.to_string(), n))
            .collect();
    assert_eq!(state, expected, "{stdout}");
    assert!(changes > 3, "the counts changed along the way: {stdout}");
}
