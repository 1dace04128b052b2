//! `weir-kafka-mock`: librdkafka's mock Kafka cluster in its own process, for tests.
//!
//! The mock cluster (`rdkafka::mocking::MockCluster`) speaks the Kafka protocol,
//! transactions included, on 127.0.0.1 TCP ports. Hosting it in a separate
//! process lets the coordinator and the worker processes of a test cluster reach
//! the same brokers, and lets the test inject faults while they run.
//!
//! ```text
//! weir-kafka-mock [--brokers N] [--topic NAME:PARTITIONS ...]
//! ```
//!
//! It prints one line `bootstrap=<bootstrap servers>`, then answers each command
//! read from stdin with one line, `ok` or `error: <message>`:
//!
//! ```text
//! create-topic NAME PARTITIONS
//! request-errors API ERROR COUNT     e.g. request-errors Produce REQUEST_TIMED_OUT 3
//! clear-request-errors API
//! broker-down ID | broker-up ID      brokers are numbered from 1
//! partition-leader TOPIC PARTITION BROKER
//! quit
//! ```
//!
//! It exits when stdin closes or on `quit`.

use std::io::{BufRead, Write};

use anyhow::{Context, bail};
use clap::Parser;
use rdkafka::error::KafkaResult;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

#[derive(Parser)]
#[command(
    name = "weir-kafka-mock",
    about = "librdkafka's mock Kafka cluster, driven by commands on stdin (for tests)"
)]
struct Args {
    /// Number of brokers (numbered 1..=N).
    #[arg(long, default_value_t = 3)]
    brokers: i32,
    /// A topic to create at start, as NAME:PARTITIONS (repeatable).
    #[arg(long = "topic", value_name = "NAME:PARTITIONS")]
    topics: Vec<String>,
}

type Cluster = MockCluster<'static, DefaultProducerContext>;

/// The API names accepted by `request-errors` and `clear-request-errors`.
const API_KEYS: &[(&str, RDKafkaApiKey)] = &[
    ("Produce", RDKafkaApiKey::Produce),
    ("Fetch", RDKafkaApiKey::Fetch),
    ("ListOffsets", RDKafkaApiKey::ListOffsets),
    ("Metadata", RDKafkaApiKey::Metadata),
    ("OffsetCommit", RDKafkaApiKey::OffsetCommit),
    ("OffsetFetch", RDKafkaApiKey::OffsetFetch),
    ("FindCoordinator", RDKafkaApiKey::FindCoordinator),
    ("JoinGroup", RDKafkaApiKey::JoinGroup),
    ("Heartbeat", RDKafkaApiKey::Heartbeat),
    ("LeaveGroup", RDKafkaApiKey::LeaveGroup),
    ("SyncGroup", RDKafkaApiKey::SyncGroup),
    ("ApiVersion", RDKafkaApiKey::ApiVersion),
    ("CreateTopics", RDKafkaApiKey::CreateTopics),
    ("InitProducerId", RDKafkaApiKey::InitProducerId),
    ("OffsetForLeaderEpoch", RDKafkaApiKey::OffsetForLeaderEpoch),
    ("AddPartitionsToTxn", RDKafkaApiKey::AddPartitionsToTxn),
    ("AddOffsetsToTxn", RDKafkaApiKey::AddOffsetsToTxn),
    ("EndTxn", RDKafkaApiKey::EndTxn),
    ("TxnOffsetCommit", RDKafkaApiKey::TxnOffsetCommit),
];

/// The error names listed when an unknown one is given; any other librdkafka
/// error name (without the `RD_KAFKA_RESP_ERR_` prefix) is accepted too.
const COMMON_ERRORS: &[&str] = &[
    "REQUEST_TIMED_OUT",
    "LEADER_NOT_AVAILABLE",
    "NOT_LEADER_FOR_PARTITION",
    "NOT_COORDINATOR",
    "COORDINATOR_NOT_AVAILABLE",
    "COORDINATOR_LOAD_IN_PROGRESS",
    "CONCURRENT_TRANSACTIONS",
    "UNKNOWN_TOPIC_OR_PART",
    "NOT_ENOUGH_REPLICAS",
    "BROKER_NOT_AVAILABLE",
    "_TRANSPORT",
];

fn api_key(name: &str) -> anyhow::Result<RDKafkaApiKey> {
    match API_KEYS.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
        Some((_, key)) => Ok(*key),
        None => {
            let known: Vec<&str> = API_KEYS.iter().map(|(n, _)| *n).collect();
            bail!("unknown API '{name}' (known: {})", known.join(", "))
        }
    }
}

/// Looks an error up by its librdkafka name, e.g. `REQUEST_TIMED_OUT`, or
/// `_TRANSPORT` for a local error (the broker then drops the connection).
fn resp_err(name: &str) -> anyhow::Result<RDKafkaRespErr> {
    let wanted = format!(
        "RD_KAFKA_RESP_ERR_{}",
        name.trim_start_matches("RD_KAFKA_RESP_ERR_")
    );
    // librdkafka's codes: local errors from -200, broker errors up to ~120.
    (-200..200)
        .filter_map(|code| RDKafkaRespErr::try_from(code).ok())
        .find(|err| format!("{err:?}").eq_ignore_ascii_case(&wanted))
        .with_context(|| {
            format!(
                "unknown error '{name}' (known: {}, or any other librdkafka error name)",
                COMMON_ERRORS.join(", ")
            )
        })
}

fn parse<T: std::str::FromStr>(what: &str, value: &str) -> anyhow::Result<T> {
    value
        .parse()
        .map_err(|_| anyhow::anyhow!("bad {what} '{value}'"))
}

/// The mock's errors without their source, which only repeats the code.
fn mock_op(result: KafkaResult<()>, what: impl FnOnce() -> String) -> anyhow::Result<()> {
    result.map_err(|e| anyhow::anyhow!("{}: {e}", what()))
}

fn create_topic(cluster: &Cluster, name: &str, partitions: i32) -> anyhow::Result<()> {
    // The mock would create a topic without partitions.
    if partitions < 1 {
        bail!("topic '{name}' needs at least one partition, not {partitions}");
    }
    mock_op(cluster.create_topic(name, partitions, 1), || {
        format!("cannot create topic '{name}'")
    })
}

/// What a command line asks for: go on, or stop.
enum Next {
    Continue,
    Quit,
}

fn execute(cluster: &Cluster, line: &str) -> anyhow::Result<Next> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["create-topic", name, partitions] => {
            create_topic(cluster, name, parse("partition count", partitions)?)?;
        }
        ["request-errors", api, error, count] => {
            let count: usize = parse("count", count)?;
            cluster.request_errors(api_key(api)?, &vec![resp_err(error)?; count]);
        }
        ["clear-request-errors", api] => cluster.clear_request_errors(api_key(api)?),
        ["broker-down", id] => mock_op(cluster.broker_down(parse("broker id", id)?), || {
            format!("cannot take broker {id} down")
        })?,
        ["broker-up", id] => mock_op(cluster.broker_up(parse("broker id", id)?), || {
            format!("cannot bring broker {id} up")
        })?,
        ["partition-leader", topic, partition, broker] => mock_op(
            cluster.partition_leader(
                topic,
                parse("partition", partition)?,
                Some(parse("broker id", broker)?),
            ),
            || format!("cannot move the leader of {topic}/{partition}"),
        )?,
        ["quit"] => return Ok(Next::Quit),
        [] => bail!("empty command"),
        [command, ..] => bail!(
            "unknown command or wrong arguments: '{command}' (commands: create-topic NAME \
             PARTITIONS | request-errors API ERROR COUNT | clear-request-errors API | \
             broker-down ID | broker-up ID | partition-leader TOPIC PARTITION BROKER | quit)"
        ),
    }
    Ok(Next::Continue)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cluster = MockCluster::new(args.brokers).context("cannot start the mock cluster")?;
    for topic in &args.topics {
        let Some((name, partitions)) = topic.rsplit_once(':') else {
            bail!("--topic wants NAME:PARTITIONS, got '{topic}'");
        };
        create_topic(&cluster, name, parse("partition count", partitions)?)?;
    }

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "bootstrap={}", cluster.bootstrap_servers())?;
    stdout.flush()?;

    for line in std::io::stdin().lock().lines() {
        let line = line.context("cannot read stdin")?;
        match execute(&cluster, &line) {
            Ok(next) => {
                writeln!(stdout, "ok")?;
                stdout.flush()?;
                if let Next::Quit = next {
                    break;
                }
            }
            // `{:#}` keeps the answer on one line with its causes.
            Err(e) => writeln!(stdout, "error: {e:#}")?,
        }
        stdout.flush()?;
    }
    Ok(())
}
