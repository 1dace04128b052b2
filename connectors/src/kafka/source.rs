//! The Kafka source: one subtask reads the partitions Weir assigns it.
//!
//! On the first poll the subtask looks up the topics' partitions, keeps
//! those whose index in the sorted (topic, partition) list is congruent to
//! its subtask index, resolves where reading starts (a restored position, or
//! `'scan.startup.mode'`) and, for a bounded read, where it ends, and assigns
//! them to a consumer with concrete offsets. Each poll then takes what the
//! consumer has buffered (without waiting), decodes it in one batch and
//! advances the partitions' next offsets, which are what a checkpoint stores.
//! Nothing in a poll awaits after records were taken, so a poll dropped for a
//! barrier loses nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use weir_engine::{Error, Result, Source, SourcePoll, TableDescriptor, TaskInfo};

use super::decode::{BadRecord, BatchDecoder, RecordBuffer, RecordDecoder};
use super::producer::TrackedProducer;
use super::{
    BadRecordPolicy, BoundedMode, LOOKUP_TIMEOUT, SourceOptions, StartupMode, Topics,
    client_config, kafka_error,
};
use crate::util::projection_indices;

/// One partition's reading state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartitionPosition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The next offset to read.
    pub next: i64,
    /// A bounded read's end (exclusive).
    pub stop: Option<i64>,
    /// `'scan.startup.mode' = 'timestamp'`: records before the first one at
    /// or after this time are skipped. Checked here rather than trusted to
    /// the broker's offset lookup, which some brokers do not implement.
    #[serde(default)]
    pub skip_before: Option<i64>,
}

/// The checkpointed position: every partition of this subtask.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Position {
    partitions: Vec<PartitionPosition>,
}

struct Assigned {
    consumer: Arc<BaseConsumer>,
    /// Per partition: `next` is the next offset not yet emitted (what a
    /// checkpoint stores).
    partitions: Vec<PartitionPosition>,
    /// Per partition: the next offset not yet taken from the consumer.
    fetched: Vec<i64>,
    /// Per partition: records taken but not yet emitted.
    staged: Vec<RecordBuffer>,
    staged_total: usize,
    /// topic -> partition -> index into `partitions` (looked up per
    /// record, so without building a key).
    index: HashMap<String, HashMap<i32, usize>>,
}

impl Assigned {
    /// The index of a partition of this subtask.
    fn find(&self, topic: &str, partition: i32) -> Option<usize> {
        self.index.get(topic)?.get(&partition).copied()
    }
}

/// One subtask of a Kafka source.
pub struct KafkaSource {
    options: SourceOptions,
    decoder: Box<dyn BatchDecoder>,
    task: TaskInfo,
    table: String,
    restored: Option<Position>,
    starting: Option<JoinHandle<Result<Assigned>>>,
    assigned: Option<Assigned>,
    buffer: RecordBuffer,
    /// Records that did not decode, dropped or dead-lettered.
    bad_records: u64,
    dead_letters: Option<TrackedProducer>,
    /// Dead letters sent since the last flush.
    unflushed_dead_letters: bool,
    /// The partition (index) of the last batch.
    split: Option<u32>,
    /// Partitions not yet announced downstream (one empty batch each, so
    /// that per-partition watermarks wait for them).
    unannounced: Vec<u32>,
    /// With `'scan.watermark.idle-timeout'`: while no records come, an empty
    /// batch this often lets the watermark generator see partitions go idle.
    idle_tick: Option<Duration>,
    last_emit: std::time::Instant,
}

impl KafkaSource {
    /// The source for `task`'s share of the table.
    pub fn new(
        options: SourceOptions,
        table: &TableDescriptor,
        projection: Option<&[usize]>,
        task: &TaskInfo,
    ) -> Result<Self> {
        let projection = projection_indices(&table.schema, projection);
        let decoder = RecordDecoder::new(
            options.format.clone(),
            table,
            &projection,
            options.max_record_bytes,
        )?;
        Self::with_decoder(options, table, Box::new(decoder), task)
    }

    /// The source for `task`'s share of the table, turning records into
    /// rows with `decoder` (`options.format` then only names the format).
    pub fn with_decoder(
        options: SourceOptions,
        table: &TableDescriptor,
        decoder: Box<dyn BatchDecoder>,
        task: &TaskInfo,
    ) -> Result<Self> {
        let idle_key = "scan.watermark.idle-timeout";
        let idle_tick = table
            .options
            .get(idle_key)
            .map(|v| weir_engine::time::parse_duration_ms(idle_key, v))
            .transpose()?
            .map(|ms| Duration::from_millis((ms as u64 / 2).clamp(10, 200)));
        let dead_letters = match &options.bad_records {
            BadRecordPolicy::DeadLetter(_) => {
                let mut config = client_config(&options.properties);
                for key in ["group.id", "isolation.level", "auto.offset.reset"] {
                    config.remove(key);
                }
                config.set("enable.idempotence", "true");
                Some(TrackedProducer::new(&config)?)
            }
            _ => None,
        };
        Ok(KafkaSource {
            options,
            decoder,
            task: task.clone(),
            table: table.name.clone(),
            restored: None,
            starting: None,
            assigned: None,
            buffer: RecordBuffer::default(),
            bad_records: 0,
            dead_letters,
            unflushed_dead_letters: false,
            split: None,
            unannounced: Vec::new(),
            idle_tick,
            last_emit: std::time::Instant::now(),
        })
    }

    /// Polls the consumer without waiting, staging records per partition,
    /// and moves the largest partition's records into the buffer (one split
    /// per batch, for per-partition watermarks). True when a bounded read is
    /// complete.
    fn fill_buffer(&mut self) -> Result<bool> {
        let Some(assigned) = &mut self.assigned else {
            return Ok(false);
        };
        let keep_keys = self.decoder.needs_keys() || self.dead_letters.is_some();
        let keep_headers = self.decoder.needs_headers() || self.dead_letters.is_some();
        self.buffer.clear();
        while assigned.staged_total < self.options.batch_size {
            let message = match assigned.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Ok(m)) => m,
                Some(Err(KafkaError::PartitionEOF(_))) => continue,
                Some(Err(e)) => {
                    if is_fatal(&e) {
                        return Err(kafka_error(format!("table '{}': reading", self.table), e));
                    }
                    tracing::warn!(table = %self.table, error = %e, "Kafka consumer error; retrying");
                    break;
                }
            };
            let Some(i) = assigned.find(message.topic(), message.partition()) else {
                continue;
            };
            let part = &mut assigned.partitions[i];
            if message.offset() < assigned.fetched[i]
                || part.stop.is_some_and(|s| message.offset() >= s)
            {
                continue;
            }
            let ts = message.timestamp().to_millis();
            if let BoundedMode::Timestamp(end) = self.options.bounded
                && ts.is_some_and(|ts| ts >= end)
            {
                // The first record at or after the end time ends the partition.
                part.stop = Some(message.offset());
                continue;
            }
            assigned.fetched[i] = message.offset() + 1;
            if let Some(start) = part.skip_before {
                if ts.is_none_or(|ts| ts < start) {
                    if assigned.staged[i].is_empty() {
                        part.next = message.offset() + 1;
                    }
                    continue;
                }
                part.skip_before = None;
            }
            assigned.staged_total += 1;
            let b = &mut assigned.staged[i];
            let topic_id = b.topic_id(message.topic());
            b.topic_ids.push(topic_id);
            b.partitions.push(message.partition());
            b.offsets.push(message.offset());
            b.timestamps.push(message.timestamp().to_millis());
            b.keys.push(if keep_keys {
                message.key().map(<[u8]>::to_vec)
            } else {
                None
            });
            b.headers.push(if keep_headers {
                message.headers().map(headers_json)
            } else {
                None
            });
            match message.payload() {
                Some(v) => {
                    let start = b.values.len();
                    b.values.extend_from_slice(v);
                    b.spans.push(Some((start, b.values.len())));
                }
                None => b.spans.push(None),
            }
        }
        let fullest = (0..assigned.staged.len()).max_by_key(|&i| assigned.staged[i].len());
        if let Some(i) = fullest.filter(|&i| !assigned.staged[i].is_empty()) {
            std::mem::swap(&mut self.buffer, &mut assigned.staged[i]);
            assigned.staged[i].clear();
            assigned.staged_total -= self.buffer.len();
            if let Some(last) = self.buffer.offsets.last() {
                assigned.partitions[i].next = last + 1;
            }
            self.split = Some(i as u32);
            return Ok(false);
        }
        if self.options.bounded == BoundedMode::Unbounded {
            return Ok(false);
        }
        // Nothing staged: a bounded read may have ended, also where the last
        // offsets were transaction markers, which the consumer skips.
        if assigned
            .partitions
            .iter()
            .any(|p| p.stop.is_some_and(|s| p.next < s))
            && let Ok(positions) = assigned.consumer.position()
        {
            for element in positions.elements() {
                if let (Some(i), Offset::Offset(o)) = (
                    assigned.find(element.topic(), element.partition()),
                    element.offset(),
                ) {
                    let part = &mut assigned.partitions[i];
                    part.next = part.next.max(o.min(part.stop.unwrap_or(i64::MAX)));
                    assigned.fetched[i] = assigned.fetched[i].max(part.next);
                }
            }
        }
        Ok(assigned
            .partitions
            .iter()
            .all(|p| p.stop.is_some_and(|s| p.next >= s)))
    }

    /// Applies the bad-record policy; the error of the `fail` policy.
    fn handle_bad(&mut self, bad: &[BadRecord]) -> Result<()> {
        for record in bad {
            let b = &self.buffer;
            let (topic, partition, offset) = (
                b.topic(record.index),
                b.partitions[record.index],
                b.offsets[record.index],
            );
            match &self.options.bad_records {
                BadRecordPolicy::Fail => {
                    return Err(Error::BadInput(format!(
                        "table '{}': bad record in topic '{topic}' partition {partition} offset {offset}: {} \
                         (set 'scan.bad-record-policy' to 'drop' or 'dead-letter' to skip such records)",
                        self.table, record.reason
                    )));
                }
                BadRecordPolicy::Drop => {
                    if self.bad_records.is_power_of_two() || self.bad_records == 0 {
                        tracing::warn!(table = %self.table, topic, partition, offset, reason = %record.reason,
                            dropped_so_far = self.bad_records, "dropping a bad record");
                    }
                }
                BadRecordPolicy::DeadLetter(dlq) => {
                    let headers = OwnedHeaders::new()
                        .insert(Header {
                            key: "weir.error",
                            value: Some(record.reason.as_str()),
                        })
                        .insert(Header {
                            key: "weir.source.topic",
                            value: Some(topic),
                        })
                        .insert(Header {
                            key: "weir.source.partition",
                            value: Some(&partition.to_string()),
                        })
                        .insert(Header {
                            key: "weir.source.offset",
                            value: Some(&offset.to_string()),
                        });
                    if let Some(producer) = &self.dead_letters {
                        producer.send(
                            dlq,
                            None,
                            b.keys[record.index].as_deref(),
                            b.value(record.index),
                            b.timestamps[record.index],
                            Some(headers),
                        )?;
                        self.unflushed_dead_letters = true;
                    }
                }
            }
            self.bad_records += 1;
        }
        Ok(())
    }
}

/// Errors after which reading cannot go on.
fn is_fatal(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownPartition
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed
                | RDKafkaErrorCode::Fatal
                | RDKafkaErrorCode::OffsetOutOfRange
        )
    )
}

/// A record's headers as a JSON object of strings (lossy UTF-8).
fn headers_json(headers: &rdkafka::message::BorrowedHeaders) -> String {
    let map: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|h| {
            let value = h.value.map_or(serde_json::Value::Null, |v| {
                serde_json::Value::String(String::from_utf8_lossy(v).into_owned())
            });
            (h.key.to_string(), value)
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// Looks up this subtask's partitions and where to read them, and assigns
/// them to a new consumer. Blocking: runs on the blocking pool.
fn start(
    options: &SourceOptions,
    task: &TaskInfo,
    table: &str,
    restored: Option<Position>,
) -> Result<Assigned> {
    let mut config = client_config(&options.properties);
    if config.get("group.id").is_none() {
        config.set("group.id", format!("weir-{}", task.job));
    }
    config
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = config
        .create()
        .map_err(|e| kafka_error(format!("table '{table}': cannot create a consumer"), e))?;
    let metadata = consumer.fetch_metadata(None, LOOKUP_TIMEOUT).map_err(|e| {
        kafka_error(
            format!("table '{table}': cannot read the cluster's metadata"),
            e,
        )
    })?;
    let mut all: Vec<(String, i32)> = Vec::new();
    match &options.topics {
        Topics::Names(names) => {
            for name in names {
                let topic = metadata.topics().iter().find(|t| t.name() == name);
                match topic {
                    Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                        all.extend(t.partitions().iter().map(|p| (name.clone(), p.id())));
                    }
                    _ => {
                        let hint = weir_engine::suggest::closest(
                            name,
                            metadata.topics().iter().map(|t| t.name()),
                        )
                        .map(|s| format!(" (did you mean '{s}'?)"))
                        .unwrap_or_default();
                        return Err(Error::Config(format!(
                            "table '{table}': topic '{name}' does not exist{hint}"
                        )));
                    }
                }
            }
        }
        Topics::Pattern(pattern) => {
            for t in metadata.topics() {
                if pattern.is_match(t.name()) && !t.name().starts_with("__") {
                    all.extend(
                        t.partitions()
                            .iter()
                            .map(|p| (t.name().to_string(), p.id())),
                    );
                }
            }
        }
    }
    all.sort();
    all.dedup();
    let parallelism = task.parallelism.max(1);
    let mine: Vec<(String, i32)> = all
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % parallelism == task.subtask)
        .map(|(_, tp)| tp)
        .collect();
    let restored: BTreeMap<(String, i32), PartitionPosition> = restored
        .map(|p| p.partitions)
        .unwrap_or_default()
        .into_iter()
        .map(|p| ((p.topic.clone(), p.partition), p))
        .collect();
    let watermarks = |topic: &str, partition: i32| {
        consumer
            .fetch_watermarks(topic, partition, LOOKUP_TIMEOUT)
            .map_err(|e| {
                kafka_error(
                    format!("table '{table}': cannot read the offsets of '{topic}' partition {partition}"),
                    e,
                )
            })
    };
    // The first offset at or after `ms` per partition; none where no record is that late yet.
    let at_time = |ms: i64, parts: &[(String, i32)]| -> Result<HashMap<(String, i32), i64>> {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in parts {
            tpl.add_partition_offset(t, *p, Offset::Offset(ms))
                .map_err(|e| kafka_error("building an offset query", e))?;
        }
        let found = consumer
            .offsets_for_times(tpl, LOOKUP_TIMEOUT)
            .map_err(|e| {
                kafka_error(
                    format!("table '{table}': cannot look up offsets by time"),
                    e,
                )
            })?;
        let mut out = HashMap::new();
        for e in found.elements() {
            if let Offset::Offset(o) = e.offset() {
                out.insert((e.topic().to_string(), e.partition()), o);
            }
        }
        Ok(out)
    };
    let committed = if options.startup == StartupMode::GroupOffsets && !mine.is_empty() {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in &mine {
            tpl.add_partition(t, *p);
        }
        let found = consumer
            .committed_offsets(tpl, LOOKUP_TIMEOUT)
            .map_err(|e| {
                kafka_error(
                    format!("table '{table}': cannot read the group's committed offsets"),
                    e,
                )
            })?;
        found
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
                _ => None,
            })
            .collect()
    } else {
        HashMap::new()
    };
    let startup_times = match options.startup {
        StartupMode::Timestamp(ms) if !mine.is_empty() => at_time(ms, &mine)?,
        _ => HashMap::new(),
    };
    let mut partitions = Vec::with_capacity(mine.len());
    for (topic, partition) in mine {
        let key = (topic.clone(), partition);
        let position = match restored.get(&key) {
            Some(p) => p.clone(),
            None => {
                let (low, high) = watermarks(&topic, partition)?;
                // A partition the checkpoint does not know is new: read it whole.
                let next = if !restored.is_empty() {
                    low
                } else {
                    match options.startup {
                        StartupMode::Earliest => low,
                        StartupMode::Latest => high,
                        StartupMode::GroupOffsets => committed.get(&key).copied().unwrap_or(low),
                        // The broker's answer is a hint: records before the time are skipped anyway.
                        StartupMode::Timestamp(_) => {
                            startup_times.get(&key).copied().unwrap_or(low)
                        }
                    }
                };
                let stop = match options.bounded {
                    BoundedMode::LatestOffset => Some(high),
                    // The first record at or after the time ends the partition.
                    BoundedMode::Unbounded | BoundedMode::Timestamp(_) => None,
                };
                let skip_before = match options.startup {
                    StartupMode::Timestamp(ms) if restored.is_empty() => Some(ms),
                    _ => None,
                };
                PartitionPosition {
                    topic,
                    partition,
                    next: next.max(low).min(high.max(low)),
                    stop,
                    skip_before,
                }
            }
        };
        partitions.push(position);
    }
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.next))
            .map_err(|e| kafka_error("building the assignment", e))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| kafka_error(format!("table '{table}': cannot assign partitions"), e))?;
    tracing::info!(
        table,
        subtask = task.subtask,
        partitions = ?partitions.iter().map(|p| format!("{}-{}@{}", p.topic, p.partition, p.next)).collect::<Vec<_>>(),
        "Kafka source assigned"
    );
    let mut index: HashMap<String, HashMap<i32, usize>> = HashMap::new();
    for (i, p) in partitions.iter().enumerate() {
        index
            .entry(p.topic.clone())
            .or_default()
            .insert(p.partition, i);
    }
    Ok(Assigned {
        consumer: Arc::new(consumer),
        fetched: partitions.iter().map(|p| p.next).collect(),
        staged: partitions.iter().map(|_| RecordBuffer::default()).collect(),
        staged_total: 0,
        partitions,
        index,
    })
}

#[async_trait]
impl Source for KafkaSource {
    async fn poll_batch(&mut self) -> Result<SourcePoll> {
        if self.assigned.is_none() {
            let handle = self.starting.get_or_insert_with(|| {
                let (options, task, table, restored) = (
                    self.options.clone(),
                    self.task.clone(),
                    self.table.clone(),
                    self.restored.clone(),
                );
                tokio::task::spawn_blocking(move || start(&options, &task, &table, restored))
            });
            let assigned = handle
                .await
                .map_err(|e| Error::internal(format!("the Kafka start-up task failed: {e}")))??;
            self.starting = None;
            if assigned.partitions.is_empty() {
                // It would hold back the watermark of everything downstream.
                tracing::warn!(table = %self.table, subtask = self.task.subtask,
                    "no partition for this source subtask (fewer partitions than the parallelism): it finishes");
                return Ok(SourcePoll::Finished);
            }
            self.unannounced = (0..assigned.partitions.len() as u32).rev().collect();
            self.assigned = Some(assigned);
        }
        if let Some(split) = self.unannounced.pop() {
            self.split = Some(split);
            return Ok(SourcePoll::Batch(RecordBatch::new_empty(Arc::clone(
                self.decoder.schema(),
            ))));
        }
        if let Some(producer) = &self.dead_letters {
            producer.check()?;
        }
        let finished = self.fill_buffer()?;
        if self.buffer.is_empty() {
            if finished {
                return Ok(SourcePoll::Finished);
            }
            if let Some(tick) = self.idle_tick
                && self.last_emit.elapsed() >= tick
            {
                self.last_emit = std::time::Instant::now();
                self.split = Some(0);
                return Ok(SourcePoll::Batch(RecordBatch::new_empty(Arc::clone(
                    self.decoder.schema(),
                ))));
            }
            return Ok(SourcePoll::Idle(Duration::from_millis(10)));
        }
        self.last_emit = std::time::Instant::now();
        let (batch, bad) = self.decoder.decode(&self.buffer)?;
        if !bad.is_empty() {
            self.handle_bad(&bad)?;
        }
        if batch.num_rows() == 0 {
            return Ok(SourcePoll::Idle(Duration::ZERO));
        }
        Ok(SourcePoll::Batch(batch))
    }

    fn snapshot_position(&self) -> Result<Option<Vec<u8>>> {
        if self.unflushed_dead_letters
            && let Some(producer) = &self.dead_letters
        {
            // The dead letters of records before this position must be durable.
            producer.flush_checked()?;
        }
        let position = match &self.assigned {
            Some(a) => Position {
                partitions: a.partitions.clone(),
            },
            // Not started yet: still where the restore put it (or nowhere).
            None => self.restored.clone().unwrap_or_default(),
        };
        serde_json::to_vec(&position)
            .map(Some)
            .map_err(|e| Error::internal(format!("cannot encode the Kafka position: {e}")))
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<()> {
        let position: Position =
            serde_json::from_slice(position).map_err(|e| Error::Connector {
                connector: "kafka".into(),
                message: format!("the checkpointed position is not readable: {e}"),
            })?;
        self.restored = Some(position);
        self.assigned = None;
        if let Some(handle) = self.starting.take() {
            handle.abort();
        }
        Ok(())
    }

    fn bad_records(&self) -> u64 {
        self.bad_records
    }

    fn batch_split(&self) -> Option<u32> {
        self.split
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        if let Some(handle) = self.starting.take() {
            handle.abort();
        }
    }
}
