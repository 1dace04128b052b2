//! psql's own commands against a real coordinator: `\d t`, `\d+ t`, `\l`,
//! `\dn` and `\d nosuch` printed by the installed psql as for a Postgres
//! table, and psql 16's hidden queries (`tests/pg/psql16.sql`, captured
//! with `psql -E`) answered row by row.

use crate::cluster::harness::TestCluster;

use super::{connect, psql_with, simple_rows};

const TABLE: &str = "CREATE TABLE t (id BIGINT NOT NULL, name STRING, score DOUBLE, \
    price DECIMAL(10, 2), ok BOOLEAN, ts TIMESTAMP(3), n INT, day DATE, payload BYTES, \
    doubled AS id * 2, WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) \
    WITH ('connector' = 'blackhole')";

/// Runs `script` through `psql` in its normal aligned format: (stdout, stderr).
fn psql_aligned(address: &str, script: &str) -> (String, String) {
    psql_with(&[], address, script, None)
}

/// `len` lines of `output` from the one equal to `first` on, without
/// trailing blanks (psql pads the last column).
fn block<'a>(output: &'a str, first: &str, len: usize) -> Vec<&'a str> {
    let lines: Vec<&str> = output.lines().map(str::trim_end).collect();
    let start = lines
        .iter()
        .position(|l| *l == first.trim_end())
        .unwrap_or_else(|| panic!("no line {first:?} in:\n{output}"));
    lines[start..(start + len).min(lines.len())].to_vec()
}

fn assert_block(output: &str, expected: &[&str]) {
    let found = block(output, expected[0], expected.len());
    assert_eq!(
        found,
        expected.iter().map(|l| l.trim_end()).collect::<Vec<_>>(),
        "\nfull output:\n{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_describes_tables_databases_and_schemas() {
    let cluster =
        TestCluster::start_with_coordinator_args(1, 2, &["--pg-listen", "127.0.0.1:0"]).await;
    let pg = cluster.pg_address.clone().unwrap();
    let client = connect(&pg, None).await.unwrap();
    client
        .simple_query(TABLE)
        .await
        .unwrap_or_else(|e| panic!("{TABLE}: {e}"));

    let (out, err) = psql_aligned(&pg, "\\d t\n\\d+ t\n\\l\n\\dn\n\\d\n\\du\n\\d nosuch\n");
    let context = format!("stdout:\n{out}\nstderr:\n{err}\n{}", cluster.logs());
    assert_block(
        &out,
        &[
            "                                           Table \"public.t\"",
            " Column  |              Type              | Collation | Nullable |               Default",
            "---------+--------------------------------+-----------+----------+-------------------------------------",
            " id      | bigint                         |           | not null |",
            " name    | text                           |           |          |",
            " score   | double precision               |           |          |",
            " price   | numeric(10,2)                  |           |          |",
            " ok      | boolean                        |           |          |",
            " ts      | timestamp(3) without time zone |           |          |",
            " n       | integer                        |           |          |",
            " day     | date                           |           |          |",
            " payload | bytea                          |           |          |",
            " doubled | bigint                         |           |          | generated always as (id * 2) stored",
        ],
    );
    assert_block(
        &out,
        &[
            "                                                                                  Table \"public.t\"",
            " Column  |              Type              | Collation | Nullable |               Default               | Storage  | Compression | Stats target |             Description",
            "---------+--------------------------------+-----------+----------+-------------------------------------+----------+-------------+--------------+-------------------------------------",
            " id      | bigint                         |           | not null |                                     | plain    |             |              |",
            " name    | text                           |           |          |                                     | extended |             |              |",
            " score   | double precision               |           |          |                                     | plain    |             |              |",
            " price   | numeric(10,2)                  |           |          |                                     | main     |             |              |",
            " ok      | boolean                        |           |          |                                     | plain    |             |              |",
            " ts      | timestamp(3) without time zone |           |          |                                     | plain    |             |              | watermark: ts - INTERVAL '5' SECOND",
            " n       | integer                        |           |          |                                     | plain    |             |              |",
            " day     | date                           |           |          |                                     | plain    |             |              |",
            " payload | bytea                          |           |          |                                     | extended |             |              |",
            " doubled | bigint                         |           |          | generated always as (id * 2) stored | plain    |             |              |",
            "Access method: heap",
        ],
    );
    assert_block(
        &out,
        &[
            "                                      List of databases",
            " Name | Owner | Encoding | Collate | Ctype | ICU Locale | Locale Provider | Access privileges",
            "------+-------+----------+---------+-------+------------+-----------------+-------------------",
            " weir | weir  | UTF8     | C       | C     |            | libc            |",
            "(1 row)",
        ],
    );
    assert_block(
        &out,
        &[
            "List of schemas",
            "  Name  | Owner",
            "--------+-------",
            " public | weir",
            "(1 row)",
        ],
    );
    assert_block(
        &out,
        &[
            "       List of relations",
            " Schema | Name | Type  | Owner",
            "--------+------+-------+-------",
            " public | t    | table | weir",
            "(1 row)",
        ],
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with(" weir      | Superuser, Create role, Create DB, Bypass RLS")),
        "\\du: {context}"
    );
    assert!(
        err.contains("Did not find any relation named \"nosuch\"."),
        "{context}"
    );
    assert!(!err.contains("ERROR"), "{context}");

    // psql 16's queries, as it sends them (the oid of t in place of 16385).
    let oid = simple_rows(
        &client,
        "SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relname = 't'",
    )
    .await;
    assert_eq!(oid.len(), 1, "{oid:?}");
    let text = include_str!("psql16.sql").replace("'16385'", &format!("'{}'", oid[0]));
    let queries: Vec<(&str, String)> = text
        .split("\n-- psql: ")
        .skip(1)
        .filter_map(|section| {
            let (label, sql) = section.split_once('\n')?;
            Some((label, sql.trim().to_string()))
        })
        .collect();
    let lookup = format!("{}|public|t", oid[0]);
    let table_info = "0|r|f|f|f|f|f|f|f||0||p|d|heap";
    let verbose_info = "0|r|f|f|f|f|f|f|f|NULL|0||p|d|heap";
    let columns = [
        "id|bigint|NULL|t|NULL||",
        "name|text|NULL|f|NULL||",
        "score|double precision|NULL|f|NULL||",
        "price|numeric(10,2)|NULL|f|NULL||",
        "ok|boolean|NULL|f|NULL||",
        "ts|timestamp(3) without time zone|NULL|f|NULL||",
        "n|integer|NULL|f|NULL||",
        "day|date|NULL|f|NULL||",
        "payload|bytea|NULL|f|NULL||",
        "doubled|bigint|id * 2|f|NULL||s",
    ];
    let verbose_columns = [
        "id|bigint|NULL|t|NULL|||p||NULL|NULL",
        "name|text|NULL|f|NULL|||x||NULL|NULL",
        "score|double precision|NULL|f|NULL|||p||NULL|NULL",
        "price|numeric(10,2)|NULL|f|NULL|||m||NULL|NULL",
        "ok|boolean|NULL|f|NULL|||p||NULL|NULL",
        "ts|timestamp(3) without time zone|NULL|f|NULL|||p||NULL|watermark: ts - INTERVAL '5' SECOND",
        "n|integer|NULL|f|NULL|||p||NULL|NULL",
        "day|date|NULL|f|NULL|||p||NULL|NULL",
        "payload|bytea|NULL|f|NULL|||x||NULL|NULL",
        "doubled|bigint|id * 2|f|NULL||s|p||NULL|NULL",
    ];
    let relations = vec!["public|t|table|weir".to_string()];
    let none: Vec<String> = vec![];
    let owned = |rows: &[&str]| rows.iter().map(|r| r.to_string()).collect::<Vec<_>>();
    let describe = |info: &str, columns: &[&str]| {
        vec![
            vec![lookup.clone()],
            vec![info.to_string()],
            owned(columns),
            none.clone(),
            none.clone(),
            none.clone(),
            none.clone(),
            none.clone(),
        ]
    };
    let mut expected: Vec<Vec<String>> = vec![relations.clone(), relations];
    expected.extend(describe(table_info, &columns));
    expected.extend(describe(verbose_info, &verbose_columns));
    expected.extend([
        vec!["weir|weir|UTF8|libc|C|C|NULL|NULL|NULL".to_string()],
        vec!["weir|weir|UTF8|libc|C|C|NULL|NULL|NULL|NULL|pg_default|NULL".to_string()],
        vec!["public|weir".to_string()],
        vec!["public|weir|NULL|standard public schema".to_string()],
        none.clone(),
    ]);
    assert_eq!(queries.len(), expected.len(), "{queries:?}");
    for ((label, sql), rows) in queries.iter().zip(expected) {
        assert_eq!(
            simple_rows(&client, sql).await,
            rows,
            "psql 16's {label}:\n{sql}"
        );
    }
}
