//! Kafka brokers for tests, and plain rdkafka clients to fill and read their topics.
//!
//! - [`MockKafka`]: librdkafka's mock cluster, hosted by the `weir-kafka-mock`
//!   process so that worker processes reach it too. It has transactions and
//!   fault injection, but shares librdkafka's reading of the protocol.
//! - [`Tansu`]: the tansu broker, an independent Kafka implementation, with
//!   in-memory storage. `./dev test` installs it (`cargo install tansu`).
//!
//! [`produce`] and [`consume_all`] are the test's own view of a topic: they
//! check what a connector wrote, or write what it should read.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

/// librdkafka's mock cluster in a `weir-kafka-mock` process, killed on drop.
///
/// What the mock does with transactions (librdkafka 2.12, checked by
/// `kafka_brokers_mock_transactions`): EndTxn only answers; no commit or abort
/// markers are written, and Fetch ignores the isolation level (its last stable
/// offset is the high watermark and it lists no aborted transactions). So a
/// `read_committed` consumer sees the records of aborted transactions, and of
/// open ones before they commit. Exactly-once sinks can be tested against the
/// mock for the transactional protocol (fencing, retries, injected errors),
/// but their visibility guarantees only against a real broker.
pub struct MockKafka {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    bootstrap: String,
}

impl MockKafka {
    /// A mock cluster of three brokers (ids 1, 2, 3).
    pub fn start() -> Self {
        Self::start_with_brokers(3)
    }

    /// A mock cluster of `brokers` brokers, numbered from 1.
    pub fn start_with_brokers(brokers: u32) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir-kafka-mock"))
            .args(["--brokers", &brokers.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start weir-kafka-mock");
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("read the bootstrap line");
        let bootstrap = line
            .trim_end()
            .strip_prefix("bootstrap=")
            .unwrap_or_else(|| panic!("weir-kafka-mock printed {line:?}, not bootstrap=…"))
            .to_string();
        Self {
            child,
            stdin,
            stdout,
            bootstrap,
        }
    }

    /// The `bootstrap.servers` of the mock brokers.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Sends one command (see `src/bin/kafka_mock.rs`), e.g.
    /// `request-errors Produce REQUEST_TIMED_OUT 3`, and returns its answer.
    pub fn command(&mut self, line: &str) -> Result<(), String> {
        writeln!(self.stdin, "{line}").expect("write to weir-kafka-mock");
        self.stdin.flush().expect("write to weir-kafka-mock");
        let mut answer = String::new();
        self.stdout
            .read_line(&mut answer)
            .expect("read from weir-kafka-mock");
        match answer.trim_end() {
            "ok" => Ok(()),
            "" => panic!("weir-kafka-mock exited while answering {line:?}"),
            other => Err(other.strip_prefix("error: ").unwrap_or(other).to_string()),
        }
    }

    /// Creates a topic (replication factor 1); panics if it exists.
    pub fn create_topic(&mut self, name: &str, partitions: i32) {
        self.command(&format!("create-topic {name} {partitions}"))
            .unwrap_or_else(|e| panic!("create topic {name}: {e}"));
    }
}

impl Drop for MockKafka {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tansu broker with in-memory storage on a free 127.0.0.1 port, killed on drop.
///
/// What tansu 0.6 does (memory storage, librdkafka 2.12 clients): produce,
/// fetch, idempotent producers, CreateTopics, consumer groups (subscribe,
/// commit, committed offsets) work. It has no transactions: InitProducerId
/// succeeds but EndTxn is not offered, so `commit_transaction` fails.
/// ListOffsets is approximate: "latest" is the last batch's base offset + 1
/// (too low after a batch of several records), and a timestamp is matched
/// against the time batches were written, not the records' timestamps.
pub struct Tansu {
    child: Child,
    bootstrap: String,
    dir: tempfile::TempDir,
}

impl Tansu {
    /// Starts tansu and waits until it answers a metadata request.
    /// Panics when tansu is not installed: `./dev test` installs it.
    pub fn start() -> Self {
        let program = tansu_program();
        // tansu reads a `.env` file from its working directory: start it in an empty one.
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("tansu.log")).unwrap();
        let child = Command::new(&program)
            .current_dir(dir.path())
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        let mut tansu = Self {
            child,
            bootstrap: format!("127.0.0.1:{port}"),
            dir,
        };
        tansu.wait_until_ready();
        tansu
    }

    /// The `bootstrap.servers` of the broker.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Creates a topic through the Kafka admin API and waits until its
    /// partitions show in the metadata.
    pub fn create_topic(&mut self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = client_config(&self.bootstrap)
            .create()
            .expect("create an admin client");
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        // The admin future is completed by librdkafka's thread: blocking on it is safe.
        let results = futures::executor::block_on(admin.create_topics([&topic], &options))
            .unwrap_or_else(|e| panic!("create topic {name} on tansu: {e}"));
        for result in results {
            if let Err((topic, code)) = result {
                panic!("create topic {topic} on tansu: {code}\n{}", self.log());
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while partition_count(&self.bootstrap, name) != Some(partitions as usize) {
            assert!(
                Instant::now() < deadline,
                "topic {name} did not show {partitions} partitions in tansu's metadata\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_until_ready(&mut self) {
        let consumer: BaseConsumer = client_config(&self.bootstrap)
            .create()
            .expect("create a consumer");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("tansu exited with {status}\n{}", self.log());
            }
            match consumer.fetch_metadata(None, Duration::from_secs(1)) {
                Ok(metadata) if !metadata.brokers().is_empty() => return,
                Ok(_) | Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Ok(_) => panic!("tansu lists no brokers\n{}", self.log()),
                Err(e) => panic!(
                    "tansu does not answer metadata requests: {e}\n{}",
                    self.log()
                ),
            }
        }
    }

    /// The broker's output so far, for failure messages.
    fn log(&self) -> String {
        let path = self.dir.path().join("tansu.log");
        let log = std::fs::read_to_string(&path).unwrap_or_default();
        format!("--- {} ---\n{log}", path.display())
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tansu` on the PATH or in `~/.cargo/bin`.
fn tansu_program() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let cargo_bin = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo/bin"));
    std::env::split_paths(&path)
        .chain(cargo_bin)
        .map(|dir| dir.join("tansu"))
        .find(|program| program.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the tansu Kafka broker is not installed (not on the PATH nor in ~/.cargo/bin): \
                 run `./dev test`, or `cargo install --locked tansu --features dynostore`"
            )
        })
}

/// A 127.0.0.1 port that was free a moment ago.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    config
}

/// The number of partitions of `topic` in the metadata, if it exists.
fn partition_count(bootstrap: &str, topic: &str) -> Option<usize> {
    let consumer: BaseConsumer = client_config(bootstrap).create().ok()?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .ok()?;
    let topic = metadata.topics().iter().find(|t| t.name() == topic)?;
    let ready = topic.error().is_none()
        && !topic.partitions().is_empty()
        && topic.partitions().iter().all(|p| p.leader() >= 0);
    ready.then_some(topic.partitions().len())
}

/// A record to produce: partition (or the default partitioner), key, value,
/// timestamp in milliseconds (or the producer's clock).
pub type Record = (Option<i32>, Option<Vec<u8>>, Option<Vec<u8>>, Option<i64>);

/// The settings of [`produce`]'s producer: idempotent, so retried requests
/// do not duplicate records.
pub fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut config = client_config(bootstrap);
    config
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "60000");
    config
}

/// Produces `records` in order with an idempotent producer and waits until
/// all are acknowledged. Returns each record's (partition, offset).
pub async fn produce(bootstrap: &str, topic: &str, records: &[Record]) -> Vec<(i32, i64)> {
    let producer: FutureProducer = producer_config(bootstrap)
        .create()
        .expect("create a producer");
    send_all(&producer, topic, records).await
}

/// Enqueues `records` in order on `producer`, then waits for every delivery.
pub async fn send_all(
    producer: &FutureProducer,
    topic: &str,
    records: &[Record],
) -> Vec<(i32, i64)> {
    let mut deliveries = Vec::with_capacity(records.len());
    for (partition, key, value, timestamp) in records {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic);
        record.partition = *partition;
        record.key = key.as_deref();
        record.payload = value.as_deref();
        record.timestamp = *timestamp;
        // The queue holds 100 000 messages: enough for a test.
        let delivery = producer
            .send_result(record)
            .unwrap_or_else(|(e, _)| panic!("enqueue a record for {topic}: {e}"));
        deliveries.push(delivery);
    }
    let mut positions = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        match delivery.await.expect("the producer dropped a delivery") {
            Ok(delivery) => positions.push((delivery.partition, delivery.offset)),
            Err((e, message)) => panic!("deliver a record to {topic}/{}: {e}", message.partition()),
        }
    }
    positions
}

/// A record as read back by [`consume_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Milliseconds, when the record has a timestamp.
    pub timestamp: Option<i64>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Reads every partition of `topic` from the beginning to its end, in
/// consumption order (which keeps each partition's order). Partitions are
/// assigned, not subscribed to: the group id (which librdkafka wants for
/// that) only names the reader.
///
/// A partition ends where librdkafka reports partition EOF: at the high
/// watermark of a Fetch response, or its last stable offset for
/// `read_committed`. Not at the high watermark from ListOffsets, which tansu
/// gets wrong (the last batch's base offset + 1). Panics when reading takes
/// longer than `timeout`.
pub fn consume_all(
    bootstrap: &str,
    topic: &str,
    read_committed: bool,
    timeout: Duration,
) -> Vec<ConsumedRecord> {
    let deadline = Instant::now() + timeout;
    let consumer: BaseConsumer = client_config(bootstrap)
        .set("group.id", "weir-test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set(
            "isolation.level",
            if read_committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        .create()
        .expect("create a consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .unwrap_or_else(|e| panic!("metadata of {topic}: {e}"));
    // Partitions not read to their end yet.
    let mut pending: BTreeSet<i32> = match metadata.topics().iter().find(|t| t.name() == topic) {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
            t.partitions().iter().map(|p| p.id()).collect()
        }
        Some(t) => panic!("topic {topic}: {:?}", t.error()),
        None => panic!("topic {topic} is not in the metadata"),
    };
    let mut assignment = TopicPartitionList::new();
    for &partition in &pending {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();

    let mut records = Vec::new();
    while !pending.is_empty() {
        assert!(
            Instant::now() < deadline,
            "consuming {topic} timed out; partitions not read to their end: {pending:?} \
             (read {} records)",
            records.len()
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(message)) => {
                let partition = message.partition();
                let headers = message
                    .headers()
                    .map(|headers| {
                        headers
                            .iter()
                            .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                            .collect()
                    })
                    .unwrap_or_default();
                records.push(ConsumedRecord {
                    partition,
                    offset: message.offset(),
                    key: message.key().map(<[u8]>::to_vec),
                    value: message.payload().map(<[u8]>::to_vec),
                    timestamp: message.timestamp().to_millis(),
                    headers,
                });
            }
            // The records produced before this call are below the high
            // watermark of any Fetch response, so the first EOF is the end.
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                pending.remove(&partition);
            }
            // Brokers going down and the like: the consumer retries.
            Some(Err(e)) => eprintln!("consuming {topic}: {e}"),
        }
    }
    records
}

/// The broker fixtures themselves, and what each broker can do.
mod kafka_brokers {
    use super::*;

    const READ_TIMEOUT: Duration = Duration::from_secs(60);

    /// `n` records over `partitions` explicit partitions, with some null keys
    /// and values and explicit timestamps.
    fn records(n: usize, partitions: i32) -> Vec<Record> {
        (0..n)
            .map(|i| {
                let partition = (i % partitions as usize) as i32;
                let key = (i % 10 != 0).then(|| format!("key-{i}").into_bytes());
                let value = (i % 7 != 0).then(|| format!("value-{i}").into_bytes());
                (
                    Some(partition),
                    key,
                    value,
                    Some(1_700_000_000_000 + i as i64),
                )
            })
            .collect()
    }

    /// Each partition's (key, value, timestamp) in order.
    type ByPartition = HashMap<i32, Vec<(Option<Vec<u8>>, Option<Vec<u8>>, Option<i64>)>>;

    fn by_partition_expected(records: &[Record]) -> ByPartition {
        let mut map: HashMap<_, Vec<_>> = HashMap::new();
        for (partition, key, value, timestamp) in records {
            let partition = partition.expect("records with explicit partitions");
            map.entry(partition)
                .or_default()
                .push((key.clone(), value.clone(), *timestamp));
        }
        map
    }

    fn by_partition_consumed(records: &[ConsumedRecord]) -> ByPartition {
        let mut map: HashMap<i32, Vec<_>> = HashMap::new();
        for record in records {
            assert!(record.headers.is_empty(), "{record:?} has headers");
            let read = map.entry(record.partition).or_default();
            assert_eq!(
                record.offset,
                read.len() as i64,
                "partition {} skips or repeats an offset",
                record.partition
            );
            read.push((record.key.clone(), record.value.clone(), record.timestamp));
        }
        map
    }

    /// What was produced is read back exactly so, each partition in order
    /// with consecutive offsets from 0.
    fn assert_round_trip(produced: &[Record], consumed: &[ConsumedRecord]) {
        assert_eq!(consumed.len(), produced.len());
        assert_eq!(
            by_partition_consumed(consumed),
            by_partition_expected(produced)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kafka_brokers_mock_round_trip() {
        let mut kafka = MockKafka::start();
        kafka.create_topic("events", 4);
        assert!(
            kafka.command("create-topic events 4").is_err(),
            "the topic exists"
        );
        let unknown = kafka
            .command("request-errors Producer REQUEST_TIMED_OUT 1")
            .unwrap_err();
        assert!(
            unknown.starts_with("unknown API 'Producer' (known: Produce,"),
            "{unknown}"
        );

        let produced = records(1000, 4);
        let positions = produce(kafka.bootstrap(), "events", &produced).await;
        assert!(
            positions
                .iter()
                .zip(&produced)
                .all(|((p, _), r)| Some(*p) == r.0)
        );

        let consumed = consume_all(kafka.bootstrap(), "events", false, READ_TIMEOUT);
        assert_round_trip(&produced, &consumed);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kafka_brokers_mock_produce_survives_request_timeouts() {
        let mut kafka = MockKafka::start();
        kafka.create_topic("events", 2);
        kafka
            .command("request-errors Produce REQUEST_TIMED_OUT 3")
            .unwrap();

        // A fixed retry backoff shows that the errors were met: each costs one.
        let producer: FutureProducer = producer_config(kafka.bootstrap())
            .set("retry.backoff.ms", "1000")
            .set("retry.backoff.max.ms", "1000")
            .create()
            .unwrap();
        let produced = records(200, 2);
        let started = Instant::now();
        send_all(&producer, "events", &produced).await;
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "no retry happened"
        );

        let consumed = consume_all(kafka.bootstrap(), "events", false, READ_TIMEOUT);
        assert_round_trip(&produced, &consumed);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kafka_brokers_mock_transactions() {
        let mut kafka = MockKafka::start();
        kafka.create_topic("events", 2);
        let producer: FutureProducer = producer_config(kafka.bootstrap())
            .set("transactional.id", "weir-test")
            .create()
            .unwrap();
        producer.init_transactions(Duration::from_secs(30)).unwrap();

        producer.begin_transaction().unwrap();
        let committed = records(10, 2);
        send_all(&producer, "events", &committed).await;
        producer
            .commit_transaction(Duration::from_secs(30))
            .unwrap();
        let consumed = consume_all(kafka.bootstrap(), "events", true, READ_TIMEOUT);
        assert_round_trip(&committed, &consumed);

        // An aborted transaction: the mock writes no markers and does not filter
        // aborted records out for read_committed consumers (see `MockKafka`).
        producer.begin_transaction().unwrap();
        let aborted = records(6, 2);
        send_all(&producer, "events", &aborted).await;
        producer.abort_transaction(Duration::from_secs(30)).unwrap();
        let consumed = consume_all(kafka.bootstrap(), "events", true, READ_TIMEOUT);
        assert_eq!(consumed.len(), committed.len() + aborted.len());
        assert_round_trip(&[committed.clone(), aborted.clone()].concat(), &consumed);

        // Nor does it hold back the records of an open transaction.
        producer.begin_transaction().unwrap();
        let open = records(4, 2);
        send_all(&producer, "events", &open).await;
        let consumed = consume_all(kafka.bootstrap(), "events", true, READ_TIMEOUT);
        assert_round_trip(&[committed, aborted, open].concat(), &consumed);
        producer.abort_transaction(Duration::from_secs(30)).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kafka_brokers_tansu_round_trip() {
        let mut tansu = Tansu::start();
        tansu.create_topic("events", 3);

        let produced = records(1000, 3);
        produce(tansu.bootstrap(), "events", &produced).await;

        let consumed = consume_all(tansu.bootstrap(), "events", false, READ_TIMEOUT);
        assert_round_trip(&produced, &consumed);
    }
}
