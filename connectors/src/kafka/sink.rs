//! The Kafka sink.
//!
//! * `at-least-once` (the default) sends rows as they come and flushes the
//!   producer at every checkpoint barrier, so a completed checkpoint's rows
//!   are in Kafka; a restore may send some again.
//! * `exactly-once` keeps the rows of each checkpoint epoch (encoded) in the
//!   sink's checkpoint state, and writes them in one Kafka transaction once
//!   the coordinator reports the checkpoint complete. Every subtask has a
//!   stable transactional id, `<prefix>-<subtask>`, so a restarted subtask
//!   fences the producer of its previous incarnation.
//!
//! ## Re-committing after a crash
//!
//! A crash between "checkpoint complete" and "transaction committed" leaves
//! rows that belong to a completed checkpoint unwritten (or half written on a
//! broker that, like librdkafka's mock cluster, shows records before their
//! transaction commits). The restored sink therefore commits the
//! checkpoint's rows again, and makes that idempotent with commit markers
//! kept as the committed offsets of a consumer group named after the
//! transactional id (`<id>.commits`), on the output topic's partitions:
//!
//! 1. before the transaction: `begin` marker — every partition's end offset,
//!    with metadata `<checkpoint>:begin`;
//! 2. the transaction; every record carries headers `weir.writer` (the
//!    transactional id), `weir.checkpoint` and `weir.seq` (its index);
//! 3. after the commit: `done` marker, metadata `<checkpoint>:done`.
//!
//! To commit checkpoint N's rows, the sink reads the marker: `done` at N or
//! later means nothing to do; `begin` at N means a previous attempt may have
//! written some rows, so it reads (`read_committed`) every partition from the
//! begin offsets to the end and leaves out the sequence numbers it finds;
//! anything else means no attempt started. Rows are then written once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use async_trait::async_trait;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::Producer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use weir_engine::{CheckpointId, Error, Result, RowKind, Sink, TableDescriptor, TaskInfo};

use super::encode::{
    ChangeEncoder, OutRecord, RecordEncoder, frame_records, take, take_u64, unframe_records,
};
use super::producer::TrackedProducer;
use super::{
    DeliveryGuarantee, LOOKUP_TIMEOUT, Partitioner, SinkOptions, client_config, kafka_error,
};
use crate::util::split_row_kinds;

const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Checks the sink's columns against its options.
pub fn check_sink_columns(table: &TableDescriptor, options: &SinkOptions) -> Result<()> {
    let key = options
        .key
        .as_ref()
        .map(|(fields, format)| (fields.as_slice(), format.clone()));
    RecordEncoder::new(&table.schema, options.format.clone(), key).map(|_| ())
}

/// The rows of one checkpoint epoch, not yet committed.
#[derive(Debug, Clone)]
struct Epoch {
    /// The transactional id of the subtask that wrote them.
    writer: String,
    checkpoint: CheckpointId,
    records: Arc<Vec<OutRecord>>,
}

/// One subtask of a Kafka sink.
pub struct KafkaSink {
    options: SinkOptions,
    encoder: Box<dyn ChangeEncoder>,
    table: String,
    subtask: usize,
    transactional_id: String,
    /// Who wrote an epoch: the transactional id and the job, so that markers
    /// of another job with the same id prefix are never taken for ours.
    writer: String,
    /// Created on first use (creating a transactional producer talks to the cluster).
    producer: Option<Arc<TrackedProducer>>,
    partitions: i32,
    next_partition: i32,
    /// Exactly-once: rows since the last barrier.
    current: Vec<OutRecord>,
    /// Exactly-once: pre-committed epochs by checkpoint and writer.
    pending: BTreeMap<(CheckpointId, String), Epoch>,
    /// Restored epochs wait to be committed.
    recommit: bool,
    /// Exactly-once: the commit-marker consumer of each writer, kept
    /// between commits (creating one connects to the cluster).
    markers: HashMap<String, Arc<BaseConsumer>>,
}

impl KafkaSink {
    /// The sink for `task`.
    pub fn new(options: SinkOptions, table: &TableDescriptor, task: &TaskInfo) -> Result<Self> {
        let key = options
            .key
            .as_ref()
            .map(|(fields, format)| (fields.as_slice(), format.clone()));
        let encoder = RecordEncoder::new(&table.schema, options.format.clone(), key)?;
        Ok(Self::with_encoder(options, table, task, Box::new(encoder)))
    }

    /// The sink for `task`, turning rows into records with `encoder`
    /// (`options.format` and `options.key` then only name the formats).
    pub fn with_encoder(
        options: SinkOptions,
        table: &TableDescriptor,
        task: &TaskInfo,
        encoder: Box<dyn ChangeEncoder>,
    ) -> Self {
        let prefix = options
            .transactional_id_prefix
            .clone()
            .unwrap_or_else(|| format!("weir-{}-{}", task.job, table.name));
        let transactional_id = format!("{prefix}-{}", task.subtask);
        KafkaSink {
            writer: format!("{transactional_id}@{}", task.job),
            transactional_id,
            options,
            encoder,
            table: table.name.clone(),
            subtask: task.subtask,
            producer: None,
            partitions: 0,
            next_partition: 0,
            current: Vec::new(),
            pending: BTreeMap::new(),
            recommit: false,
            markers: HashMap::new(),
        }
    }

    fn exactly_once(&self) -> bool {
        self.options.guarantee == DeliveryGuarantee::ExactlyOnce
    }

    /// The producer, created (and, for exactly-once, its transactions
    /// initialised, fencing older incarnations) on first use.
    async fn producer(&mut self) -> Result<Arc<TrackedProducer>> {
        if let Some(p) = &self.producer {
            return Ok(Arc::clone(p));
        }
        let mut config = client_config(&self.options.properties);
        config
            .set("enable.idempotence", "true")
            .set("partitioner", "murmur2_random");
        if self.exactly_once() {
            config.set("transactional.id", &self.transactional_id).set(
                "transaction.timeout.ms",
                TRANSACTION_TIMEOUT.as_millis().to_string(),
            );
        }
        let (exactly_once, table, topic) = (
            self.exactly_once(),
            self.table.clone(),
            self.options.topic.clone(),
        );
        let (producer, partitions) = blocking(move || {
            let producer = TrackedProducer::new(&config)?;
            if exactly_once {
                producer
                    .producer()
                    .init_transactions(LOOKUP_TIMEOUT)
                    .map_err(|e| {
                        kafka_error(
                            format!("table '{table}': cannot initialise transactions"),
                            e,
                        )
                    })?;
            }
            let metadata = producer
                .producer()
                .client()
                .fetch_metadata(Some(&topic), LOOKUP_TIMEOUT)
                .map_err(|e| {
                    kafka_error(format!("table '{table}': cannot read topic '{topic}'"), e)
                })?;
            let partitions = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map_or(0, |t| t.partitions().len() as i32);
            if partitions == 0 {
                return Err(Error::Config(format!(
                    "table '{table}': topic '{topic}' does not exist"
                )));
            }
            Ok((Arc::new(producer), partitions))
        })
        .await?;
        self.partitions = partitions;
        self.next_partition = self.subtask as i32 % partitions;
        self.producer = Some(Arc::clone(&producer));
        Ok(producer)
    }

    fn partition_for(&mut self) -> Option<i32> {
        match self.options.partitioner {
            Partitioner::Default => None,
            Partitioner::Fixed => Some(self.subtask as i32 % self.partitions.max(1)),
            Partitioner::RoundRobin => {
                let p = self.next_partition;
                self.next_partition = (p + 1) % self.partitions.max(1);
                Some(p)
            }
        }
    }

    /// The rows since the last barrier become the pending epoch of `checkpoint`.
    fn seal_epoch(&mut self, checkpoint: CheckpointId) {
        let records = Arc::new(std::mem::take(&mut self.current));
        let writer = self.writer.clone();
        self.pending.insert(
            (checkpoint, writer.clone()),
            Epoch {
                writer,
                checkpoint,
                records,
            },
        );
    }

    /// Commits the pending epochs up to `upto`, oldest first.
    async fn commit_pending(&mut self, upto: CheckpointId) -> Result<()> {
        let producer = self.producer().await?;
        while let Some(entry) = self.pending.first_entry() {
            if entry.key().0 > upto {
                break;
            }
            let epoch = entry.get().clone();
            let markers = match self.markers.get(&epoch.writer) {
                Some(m) => Arc::clone(m),
                None => {
                    let (options, writer) = (self.options.clone(), epoch.writer.clone());
                    let m = Arc::new(blocking(move || marker_consumer(&options, &writer)).await?);
                    self.markers.insert(epoch.writer.clone(), Arc::clone(&m));
                    m
                }
            };
            let route = Route {
                partitioner: self.options.partitioner,
                partitions: self.partitions,
                first: self.next_partition,
                subtask: self.subtask as i32,
            };
            let n = i64::from(self.partitions.max(1));
            self.next_partition =
                ((i64::from(self.next_partition) + epoch.records.len() as i64) % n) as i32;
            let (options, producer2) = (self.options.clone(), Arc::clone(&producer));
            blocking(move || commit_epoch(&options, &producer2, &markers, route, &epoch)).await?;
            self.pending.pop_first();
        }
        Ok(())
    }

    /// Restored epochs belong to completed checkpoints: commit them first.
    async fn recommit_restored(&mut self) -> Result<()> {
        if self.recommit {
            self.commit_pending(CheckpointId::MAX).await?;
            self.recommit = false;
        }
        Ok(())
    }
}

/// Runs blocking client work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("a Kafka client task failed: {e}")))?
}

/// A consumer of the commit-marker group of `writer`.
fn marker_consumer(options: &SinkOptions, writer: &str) -> Result<BaseConsumer> {
    let mut config = client_config(&options.properties);
    config
        .set("group.id", format!("{writer}.commits"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed");
    config
        .create()
        .map_err(|e| kafka_error("cannot create the commit-marker consumer", e))
}

/// A commit marker: checkpoint, state (`begin` or `done`), and the begin
/// offsets by partition.
type Marker = (CheckpointId, String, BTreeMap<i32, i64>);

/// The marker of `writer`.
fn read_marker(consumer: &BaseConsumer, topic: &str, partitions: i32) -> Result<Option<Marker>> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_range(topic, 0, partitions - 1);
    let committed = consumer
        .committed_offsets(tpl, LOOKUP_TIMEOUT)
        .map_err(|e| kafka_error("cannot read the sink's commit marker", e))?;
    let mut marker = None;
    let mut offsets = BTreeMap::new();
    for e in committed.elements() {
        if let Offset::Offset(o) = e.offset() {
            offsets.insert(e.partition(), o);
        }
        if let Some((checkpoint, state)) = e.metadata().split_once(':')
            && let Ok(checkpoint) = checkpoint.parse::<CheckpointId>()
        {
            marker = Some((checkpoint, state.to_string()));
        }
    }
    Ok(marker.map(|(c, s)| (c, s, offsets)))
}

fn write_marker(
    consumer: &BaseConsumer,
    topic: &str,
    offsets: &BTreeMap<i32, i64>,
    metadata: &str,
) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets {
        let mut element = tpl.add_partition(topic, *p);
        element
            .set_offset(Offset::Offset(*o))
            .map_err(|e| kafka_error("building the commit marker", e))?;
        element.set_metadata(metadata);
    }
    consumer
        .commit(&tpl, CommitMode::Sync)
        .map_err(|e| kafka_error("cannot write the sink's commit marker", e))
}

/// The sequence numbers of `epoch` already in the topic, between the begin
/// offsets and the partitions' current ends.
fn written_sequences(
    options: &SinkOptions,
    epoch: &Epoch,
    begin: &BTreeMap<i32, i64>,
) -> Result<HashSet<u64>> {
    let mut config = client_config(&options.properties);
    config
        .set("group.id", format!("{}.scan", epoch.writer))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed");
    let consumer: BaseConsumer = config
        .create()
        .map_err(|e| kafka_error("cannot create the recovery consumer", e))?;
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for (&p, &start) in begin {
        let (_, high) = consumer
            .fetch_watermarks(&options.topic, p, LOOKUP_TIMEOUT)
            .map_err(|e| kafka_error("cannot read the topic's end offsets", e))?;
        if high > start {
            ends.insert(p, high);
            tpl.add_partition_offset(&options.topic, p, Offset::Offset(start))
                .map_err(|e| kafka_error("building the recovery assignment", e))?;
        }
    }
    let mut found = HashSet::new();
    if ends.is_empty() {
        return Ok(found);
    }
    consumer
        .assign(&tpl)
        .map_err(|e| kafka_error("cannot assign the recovery consumer", e))?;
    let checkpoint = epoch.checkpoint.to_string();
    let deadline = std::time::Instant::now() + LOOKUP_TIMEOUT * 3;
    while !ends.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(kafka_error(
                format!("topic '{}'", options.topic),
                "timed out reading back a half-committed checkpoint",
            ));
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                if let Some(headers) = m.headers() {
                    let get = |k: &str| {
                        headers
                            .iter()
                            .find(|h| h.key == k)
                            .and_then(|h| h.value)
                            .and_then(|v| std::str::from_utf8(v).ok())
                    };
                    if get("weir.writer") == Some(&epoch.writer)
                        && get("weir.checkpoint") == Some(&checkpoint)
                        && let Some(seq) = get("weir.seq").and_then(|s| s.parse().ok())
                    {
                        found.insert(seq);
                    }
                }
                if ends
                    .get(&m.partition())
                    .is_some_and(|&end| m.offset() + 1 >= end)
                {
                    ends.remove(&m.partition());
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "reading back a checkpoint's records"),
            None => {
                // Transaction markers and aborted records are skipped: go by position.
                if let Ok(positions) = consumer.position() {
                    for e in positions.elements() {
                        if let Offset::Offset(o) = e.offset()
                            && ends.get(&e.partition()).is_some_and(|&end| o >= end)
                        {
                            ends.remove(&e.partition());
                        }
                    }
                }
            }
        }
    }
    Ok(found)
}

/// Where an epoch's records go: `'sink.partitioner'` applied at commit time.
#[derive(Debug, Clone, Copy)]
struct Route {
    partitioner: Partitioner,
    partitions: i32,
    /// Round-robin: the partition of the epoch's first record.
    first: i32,
    subtask: i32,
}

impl Route {
    /// The partition of record `seq`; `None` leaves it to the producer.
    fn partition(&self, seq: usize) -> Option<i32> {
        let n = self.partitions.max(1);
        match self.partitioner {
            Partitioner::Default => None,
            Partitioner::Fixed => Some(self.subtask % n),
            Partitioner::RoundRobin => Some(((self.first as i64 + seq as i64) % n as i64) as i32),
        }
    }
}

/// The end offsets of `topic`'s partitions (its last stable offsets, read
/// committed): one ListOffsets round trip, with a per-partition fallback.
fn end_offsets(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: i32,
) -> Result<BTreeMap<i32, i64>> {
    let mut request = TopicPartitionList::new();
    for p in 0..partitions {
        request
            .add_partition_offset(topic, p, Offset::End)
            .map_err(|e| kafka_error("building an offsets request", e))?;
    }
    let mut ends = BTreeMap::new();
    if let Ok(answer) = consumer.offsets_for_times(request, LOOKUP_TIMEOUT) {
        for e in answer.elements() {
            if let (Offset::Offset(o), None) = (e.offset(), e.error().err()) {
                ends.insert(e.partition(), o);
            }
        }
    }
    for p in 0..partitions {
        if let std::collections::btree_map::Entry::Vacant(slot) = ends.entry(p) {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, LOOKUP_TIMEOUT)
                .map_err(|e| kafka_error(format!("cannot read the end offsets of '{topic}'"), e))?;
            slot.insert(high);
        }
    }
    Ok(ends)
}

/// Writes one epoch's rows exactly once (see the module documentation).
fn commit_epoch(
    options: &SinkOptions,
    producer: &TrackedProducer,
    markers: &BaseConsumer,
    route: Route,
    epoch: &Epoch,
) -> Result<()> {
    if epoch.records.is_empty() {
        return Ok(());
    }
    let topic = &options.topic;
    let partitions = route.partitions;
    let marker = read_marker(markers, topic, partitions.max(1))?;
    let done = format!("{}:done", epoch.checkpoint);
    let (skip, begin) = match marker {
        Some((c, state, _)) if c >= epoch.checkpoint && state == "done" => return Ok(()),
        Some((c, _, _)) if c > epoch.checkpoint => return Ok(()),
        Some((c, state, begin)) if c == epoch.checkpoint && state == "begin" => {
            let found = written_sequences(options, epoch, &begin)?;
            tracing::info!(
                topic = %topic, writer = %epoch.writer, checkpoint = epoch.checkpoint,
                already = found.len(), total = epoch.records.len(),
                "re-committing a checkpoint's rows after a crash"
            );
            if found.len() >= epoch.records.len() {
                return write_marker(markers, topic, &begin, &done);
            }
            (found, begin)
        }
        _ => {
            let begin = end_offsets(markers, topic, partitions)?;
            write_marker(
                markers,
                topic,
                &begin,
                &format!("{}:begin", epoch.checkpoint),
            )?;
            (HashSet::new(), begin)
        }
    };
    let txn = producer.producer();
    txn.begin_transaction()
        .map_err(|e| kafka_error("cannot begin a transaction", e))?;
    let checkpoint = epoch.checkpoint.to_string();
    let send_all = || -> Result<()> {
        for (seq, record) in epoch.records.iter().enumerate() {
            if skip.contains(&(seq as u64)) {
                continue;
            }
            if seq == epoch.records.len() / 2 {
                // Tests crash here: half the rows written (and, on a broker
                // without isolation, visible), the transaction still open.
                fail::fail_point!("kafka::mid-transaction", |_| {
                    let _ = producer.producer().flush(LOOKUP_TIMEOUT);
                    tracing::warn!("failpoint kafka::mid-transaction: aborting the process");
                    std::process::abort();
                });
            }
            let seq_number = seq;
            let seq = seq.to_string();
            let headers = OwnedHeaders::new_with_capacity(3)
                .insert(Header {
                    key: "weir.writer",
                    value: Some(epoch.writer.as_str()),
                })
                .insert(Header {
                    key: "weir.checkpoint",
                    value: Some(checkpoint.as_str()),
                })
                .insert(Header {
                    key: "weir.seq",
                    value: Some(seq.as_str()),
                });
            producer.send(
                topic,
                route.partition(seq_number),
                record.key.as_deref(),
                record.value.as_deref(),
                record.timestamp,
                Some(headers),
            )?;
        }
        txn.commit_transaction(TRANSACTION_TIMEOUT)
            .map_err(|e| kafka_error("cannot commit the transaction", e))?;
        producer.check()
    };
    if let Err(e) = send_all() {
        let _ = txn.abort_transaction(LOOKUP_TIMEOUT);
        return Err(e);
    }
    write_marker(markers, topic, &begin, &done)
}

/// Encodes epochs for the checkpoint: count, then per epoch its writer,
/// checkpoint id and framed records.
fn encode_epochs<'a>(epochs: impl ExactSizeIterator<Item = &'a Epoch>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(epochs.len() as u64).to_le_bytes());
    for epoch in epochs {
        out.extend_from_slice(&(epoch.writer.len() as u64).to_le_bytes());
        out.extend_from_slice(epoch.writer.as_bytes());
        out.extend_from_slice(&epoch.checkpoint.to_le_bytes());
        frame_records(&epoch.records, &mut out);
    }
    out
}

fn decode_epochs(mut input: &[u8]) -> Result<Vec<Epoch>> {
    let input = &mut input;
    let count = take_u64(input)?;
    let mut epochs = Vec::new();
    for _ in 0..count {
        let len = take_u64(input)? as usize;
        let writer = String::from_utf8_lossy(take(input, len)?).into_owned();
        let checkpoint = take_u64(input)?;
        let records = Arc::new(unframe_records(input)?);
        epochs.push(Epoch {
            writer,
            checkpoint,
            records,
        });
    }
    Ok(epochs)
}

#[async_trait]
impl Sink for KafkaSink {
    async fn write_batch(&mut self, batch: RecordBatch) -> Result<()> {
        self.recommit_restored().await?;
        let (batch, kinds) = split_row_kinds(&batch)?;
        if !self.encoder.takes_updates()
            && kinds
                .as_ref()
                .is_some_and(|k| k.iter().any(|k| *k != RowKind::Insert))
        {
            return Err(Error::Config(format!(
                "table '{}': format '{}' only takes inserts, but the query produces updates or deletes; \
                 use 'format' = 'debezium-json'",
                self.table,
                self.options.format.name()
            )));
        }
        let records = self.encoder.encode_changes(&batch, kinds.as_deref())?;
        if self.exactly_once() {
            self.current.extend(records);
            return Ok(());
        }
        let producer = self.producer().await?;
        producer.check()?;
        for record in records {
            let partition = self.partition_for();
            producer.send(
                &self.options.topic,
                partition,
                record.key.as_deref(),
                record.value.as_deref(),
                record.timestamp,
                None,
            )?;
        }
        Ok(())
    }

    async fn pre_commit(&mut self, checkpoint: CheckpointId) -> Result<()> {
        self.recommit_restored().await?;
        if self.exactly_once() {
            self.seal_epoch(checkpoint);
            return Ok(());
        }
        if self.options.guarantee == DeliveryGuarantee::AtLeastOnce
            && let Some(producer) = self.producer.clone()
        {
            blocking(move || producer.flush_checked()).await?;
        }
        Ok(())
    }

    async fn commit(&mut self, checkpoint: CheckpointId) -> Result<()> {
        self.recommit_restored().await?;
        if self.exactly_once() {
            self.commit_pending(checkpoint).await?;
        }
        Ok(())
    }

    fn snapshot_state(&mut self) -> Result<Option<Vec<u8>>> {
        if !self.exactly_once() {
            return Ok(None);
        }
        Ok(Some(encode_epochs(self.pending.values())))
    }

    fn restore_state(&mut self, states: Vec<Vec<u8>>) -> Result<()> {
        for state in states {
            for epoch in decode_epochs(&state)? {
                self.pending
                    .insert((epoch.checkpoint, epoch.writer.clone()), epoch);
                self.recommit = true;
            }
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        self.recommit_restored().await?;
        if self.exactly_once() {
            if !self.current.is_empty() {
                let checkpoint = self.pending.keys().next_back().map_or(0, |k| k.0 + 1);
                self.seal_epoch(checkpoint);
            }
            return self.commit_pending(CheckpointId::MAX).await;
        }
        if let Some(producer) = self.producer.clone() {
            blocking(move || producer.flush_checked()).await?;
        }
        Ok(())
    }
}
