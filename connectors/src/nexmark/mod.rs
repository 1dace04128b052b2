//! The `nexmark` source: the Nexmark benchmark's Person, Auction and Bid
//! streams, with RisingWave's option names.
//!
//! ```sql
//! CREATE TABLE bid WITH ('connector' = 'nexmark', 'nexmark.table.type' = 'bid',
//!                        'nexmark.event.num' = '100000');
//! ```
//!
//! Events come from the `nexmark` crate (RisingWave's port of the Beam/Flink
//! generator): one event stream numbered `0, 1, 2, …`, in which every 50
//! events hold 1 person, 3 auctions and 46 bids; each event is a pure
//! function of its number (its RNG is seeded with it), including its event
//! time, spaced by the configured event rate from `nexmark.base.time`. A
//! table keeps the events of its type; subtask `k` of `p` takes every `p`-th
//! of them starting at the `k`-th, so any parallelism yields the same rows.

mod tables;

use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use nexmark::EventGenerator;
use nexmark::config::{NexmarkConfig, RateShape};
use weir_engine::{
    Connector, ConnectorOptions, Error, Result, Source, SourcePoll, TableDescriptor, TaskInfo,
};

pub use self::tables::TableType;
use crate::util::{make_batch, positive_usize, projected_schema, projection_indices};

const NAME: &str = "nexmark";
const TABLE_TYPE: &str = "nexmark.table.type";
const EVENT_NUM: &str = "nexmark.event.num";
const MAX_CHUNK_SIZE: &str = "nexmark.max.chunk.size";
const MIN_EVENT_GAP: &str = "nexmark.min.event.gap.in.ns";
const BASE_TIME: &str = "nexmark.base.time";
const FIRST_EVENT_RATE: &str = "nexmark.first.event.rate";
const NEXT_EVENT_RATE: &str = "nexmark.next.event.rate";
const EVENTS_PER_SEC: &str = "nexmark.events.per.sec";
const RATE_SHAPE: &str = "nexmark.rate.shape";
const RATE_PERIOD: &str = "nexmark.rate.period";

/// Generator knobs that are plain positive integers: option key and setter.
type Knob = (&'static str, fn(&mut NexmarkConfig, usize));
const KNOBS: &[Knob] = &[
    ("nexmark.active.people", |c, v| c.active_people = v),
    ("nexmark.in.flight.auctions", |c, v| {
        c.in_flight_auctions = v
    }),
    ("nexmark.avg.person.byte.size", |c, v| {
        c.avg_person_byte_size = v
    }),
    ("nexmark.avg.auction.byte.size", |c, v| {
        c.avg_auction_byte_size = v
    }),
    ("nexmark.avg.bid.byte.size", |c, v| c.avg_bid_byte_size = v),
    ("nexmark.hot.seller.ratio", |c, v| c.hot_seller_ratio = v),
    ("nexmark.hot.auction.ratio", |c, v| c.hot_auction_ratio = v),
    ("nexmark.hot.bidder.ratio", |c, v| c.hot_bidder_ratio = v),
    ("nexmark.hot.channel.ratio", |c, v| c.hot_channel_ratio = v),
    ("nexmark.num.categories", |c, v| c.num_categories = v),
    ("nexmark.person.proportion", |c, v| c.person_proportion = v),
    ("nexmark.auction.proportion", |c, v| {
        c.auction_proportion = v
    }),
    ("nexmark.bid.proportion", |c, v| c.bid_proportion = v),
];

/// The event time of event 0 unless `nexmark.base.time` says otherwise:
/// fixed (2024-01-01T00:00:00Z), so that every subtask, process and run
/// generates the same rows.
pub const DEFAULT_BASE_TIME_MS: u64 = 1_704_067_200_000;

const DEFAULT_CHUNK_SIZE: usize = 8192;
const MAX_BASE_TIME_MS: u64 = 253_402_300_799_999;

/// The `nexmark` connector (source only).
#[derive(Debug, Clone, Copy, Default)]
pub struct NexmarkConnector;

/// A table's options, parsed and checked.
#[derive(Debug, Clone)]
struct NexmarkOptions {
    table_type: TableType,
    event_num: Option<u64>,
    chunk_size: usize,
    min_event_gap_ns: u64,
    config: NexmarkConfig,
}

impl NexmarkOptions {
    fn parse(options: &ConnectorOptions) -> Result<Self> {
        let mut allowed = vec![
            TABLE_TYPE,
            EVENT_NUM,
            MAX_CHUNK_SIZE,
            MIN_EVENT_GAP,
            BASE_TIME,
            FIRST_EVENT_RATE,
            NEXT_EVENT_RATE,
            EVENTS_PER_SEC,
            RATE_SHAPE,
            RATE_PERIOD,
        ];
        allowed.extend(KNOBS.iter().map(|(key, _)| *key));
        options.check_keys(NAME, &allowed, |_| false)?;

        let table_type = TableType::parse(TABLE_TYPE, options.require(TABLE_TYPE)?)?;
        let positive = |key: &str| -> Result<Option<usize>> {
            match options.parse::<usize>(key)? {
                Some(0) => Err(Error::invalid_option(
                    key,
                    format!("option '{key}' must be greater than 0"),
                )),
                other => Ok(other),
            }
        };
        let mut config = NexmarkConfig {
            base_time: match options.parse::<u64>(BASE_TIME)? {
                // Beyond the year 9999 event times would overflow.
                Some(t) if t > MAX_BASE_TIME_MS => {
                    return Err(Error::invalid_option(
                        BASE_TIME,
                        format!(
                            "option '{BASE_TIME}' = {t} is beyond the year 9999 (milliseconds since 1970 expected)"
                        ),
                    ));
                }
                Some(t) => t,
                None => DEFAULT_BASE_TIME_MS,
            },
            ..NexmarkConfig::default()
        };
        for (key, set) in KNOBS {
            if let Some(value) = positive(key)? {
                set(&mut config, value);
            }
        }
        if let Some(rate) = positive(EVENTS_PER_SEC)? {
            config.first_rate = rate;
            config.next_rate = rate;
        }
        if let Some(rate) = positive(FIRST_EVENT_RATE)? {
            config.first_rate = rate;
            config.next_rate = rate;
        }
        if let Some(rate) = positive(NEXT_EVENT_RATE)? {
            config.next_rate = rate;
        }
        if config.next_rate > config.first_rate && config.rate_shape == RateShape::Sine {
            // The crate computes the sine's amplitude as first - next in unsigned arithmetic.
            config.rate_shape = RateShape::Square;
        }
        if let Some(shape) = options.get(RATE_SHAPE) {
            config.rate_shape = match shape.trim().to_ascii_lowercase().as_str() {
                "square" => RateShape::Square,
                "sine" if config.next_rate > config.first_rate => {
                    return Err(Error::invalid_option(
                        RATE_SHAPE,
                        format!(
                            "option '{RATE_SHAPE}' = 'sine' needs '{NEXT_EVENT_RATE}' at most '{FIRST_EVENT_RATE}'"
                        ),
                    ));
                }
                "sine" => RateShape::Sine,
                _ => {
                    return Err(Error::invalid_option(
                        RATE_SHAPE,
                        format!("option '{RATE_SHAPE}' = '{shape}' must be 'square' or 'sine'"),
                    ));
                }
            };
        }
        if let Some(period) = positive(RATE_PERIOD)? {
            config.rate_period = period;
        }
        Ok(NexmarkOptions {
            table_type,
            event_num: options.parse::<u64>(EVENT_NUM)?,
            chunk_size: positive_usize(options, MAX_CHUNK_SIZE, DEFAULT_CHUNK_SIZE)?,
            min_event_gap_ns: options.parse::<u64>(MIN_EVENT_GAP)?.unwrap_or(0),
            config,
        })
    }
}

/// Checks that declared columns, if any, are the table's (names and types).
fn check_schema(table: &TableDescriptor, table_type: TableType) -> Result<()> {
    let expected = table_type.schema();
    let declared = &table.schema;
    let same = declared.fields().len() == expected.fields().len()
        && declared
            .fields()
            .iter()
            .zip(expected.fields())
            .all(|(d, e)| d.name() == e.name() && d.data_type() == e.data_type());
    if same {
        return Ok(());
    }
    let describe = |s: &SchemaRef| {
        s.fields()
            .iter()
            .map(|f| format!("{} {}", f.name(), weir_engine::sql_type_name(f.data_type())))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(Error::Config(format!(
        "table '{}': the nexmark {table_type:?} table has columns ({}), not ({})",
        table.name,
        describe(&expected),
        describe(declared)
    )))
}

impl Connector for NexmarkConnector {
    fn name(&self) -> &str {
        NAME
    }

    fn defined_schema(&self, options: &ConnectorOptions) -> Result<Option<SchemaRef>> {
        let table_type = TableType::parse(TABLE_TYPE, options.require(TABLE_TYPE)?)?;
        Ok(Some(table_type.schema()))
    }

    fn validate_source(&self, table: &TableDescriptor) -> Result<()> {
        let options = NexmarkOptions::parse(&table.options)?;
        check_schema(table, options.table_type)
    }

    fn is_bounded(&self, table: &TableDescriptor) -> bool {
        NexmarkOptions::parse(&table.options).is_ok_and(|o| o.event_num.is_some())
    }

    fn create_source(
        &self,
        table: &TableDescriptor,
        projection: Option<&[usize]>,
        task: &TaskInfo,
    ) -> Result<Box<dyn Source>> {
        let options = NexmarkOptions::parse(&table.options)?;
        check_schema(table, options.table_type)?;
        Ok(Box::new(NexmarkSource::new(
            options, table, projection, task,
        )?))
    }
}

/// One subtask of a Nexmark table.
struct NexmarkSource {
    table_type: TableType,
    schema: SchemaRef,
    columns: Vec<usize>,
    generator: EventGenerator,
    /// How to rebuild the generator at a restored offset.
    config: NexmarkConfig,
    step: u64,
    event_num: Option<u64>,
    chunk_size: usize,
    min_event_gap_ns: u64,
    started: Option<Instant>,
}

impl NexmarkSource {
    fn new(
        options: NexmarkOptions,
        table: &TableDescriptor,
        projection: Option<&[usize]>,
        task: &TaskInfo,
    ) -> Result<Self> {
        let parallelism = task.parallelism.max(1) as u64;
        let generator = EventGenerator::new(options.config.clone())
            .with_type_filter(options.table_type.event_type())
            .with_offset(task.subtask as u64)
            .with_step(parallelism);
        Ok(NexmarkSource {
            config: options.config,
            step: parallelism,
            table_type: options.table_type,
            schema: projected_schema(&table.schema, projection)?,
            columns: projection_indices(&table.schema, projection),
            generator,
            event_num: options.event_num,
            chunk_size: options.chunk_size,
            min_event_gap_ns: options.min_event_gap_ns,
            started: None,
        })
    }

    /// How many events of the whole stream may have been emitted by now (`None`: no limit).
    fn released(&mut self) -> Option<u64> {
        if self.min_event_gap_ns == 0 {
            return None;
        }
        let started = *self.started.get_or_insert_with(Instant::now);
        let elapsed = started.elapsed().as_nanos();
        Some(u64::try_from(elapsed / u128::from(self.min_event_gap_ns)).unwrap_or(u64::MAX))
    }
}

#[async_trait]
impl Source for NexmarkSource {
    async fn poll_batch(&mut self) -> Result<SourcePoll> {
        let released = self.released();
        let mut events = Vec::with_capacity(self.chunk_size.min(DEFAULT_CHUNK_SIZE));
        let mut finished = false;
        while events.len() < self.chunk_size {
            // The event's number in the whole stream (all types).
            let global = self.generator.global_offset();
            if self.event_num.is_some_and(|n| global >= n) {
                finished = true;
                break;
            }
            if released.is_some_and(|r| global > r) {
                break;
            }
            match self.generator.next() {
                Some(event) => events.push(event),
                None => {
                    finished = true;
                    break;
                }
            }
        }
        if events.is_empty() {
            if finished {
                return Ok(SourcePoll::Finished);
            }
            // Throttled: the next event is due in about (global - released) gaps.
            let due = self
                .generator
                .global_offset()
                .saturating_sub(released.unwrap_or(0));
            let wait = Duration::from_nanos(due.saturating_mul(self.min_event_gap_ns));
            return Ok(SourcePoll::Idle(
                wait.clamp(Duration::from_millis(1), Duration::from_millis(100)),
            ));
        }
        let arrays = self.table_type.columns(&events, &self.columns)?;
        Ok(SourcePoll::Batch(make_batch(
            &self.schema,
            arrays,
            events.len(),
        )?))
    }

    /// The offset (among the table's events) of the next event.
    fn snapshot_position(&self) -> Result<Option<Vec<u8>>> {
        Ok(Some(self.generator.offset().to_le_bytes().to_vec()))
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<()> {
        let offset = crate::util::decode_u64_position(NAME, position)?;
        if offset % self.step != self.generator.offset() % self.step {
            return Err(Error::Connector {
                connector: NAME.into(),
                message: format!("checkpointed offset {offset} belongs to another subtask"),
            });
        }
        self.generator = EventGenerator::new(self.config.clone())
            .with_type_filter(self.table_type.event_type())
            .with_offset(offset)
            .with_step(self.step);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use arrow::array::{AsArray, RecordBatch};
    use arrow::datatypes::{Int64Type, TimestampMillisecondType};

    use super::*;
    use crate::util::test_support::{drain, rows, task};

    fn table(table_type: &str, extra: &[(&str, &str)]) -> TableDescriptor {
        let mut options = vec![
            ("connector".to_string(), "nexmark".to_string()),
            (TABLE_TYPE.to_string(), table_type.to_string()),
        ];
        options.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let options = ConnectorOptions::new(options);
        let schema = NexmarkConnector.defined_schema(&options).unwrap().unwrap();
        TableDescriptor::new(table_type, schema, options)
    }

    async fn read(
        table: &TableDescriptor,
        projection: Option<&[usize]>,
        parallelism: usize,
    ) -> Vec<RecordBatch> {
        crate::util::test_support::read_all(&NexmarkConnector, table, projection, parallelism).await
    }

    fn count(batches: &[RecordBatch]) -> usize {
        batches.iter().map(RecordBatch::num_rows).sum()
    }

    #[tokio::test]
    async fn proportions_follow_1_3_46() {
        let n = [("nexmark.event.num", "5000")];
        let people = count(&read(&table("person", &n), None, 1).await);
        let auctions = count(&read(&table("auction", &n), None, 1).await);
        let bids = count(&read(&table("bid", &n), None, 1).await);
        assert_eq!((people, auctions, bids), (100, 300, 4600));
    }

    #[tokio::test]
    async fn deterministic_and_split_union_equals_single_run() {
        for kind in ["person", "auction", "bid"] {
            let t = table(
                kind,
                &[
                    ("nexmark.event.num", "2000"),
                    ("nexmark.max.chunk.size", "64"),
                ],
            );
            let single = rows(&read(&t, None, 1).await);
            assert_eq!(
                single,
                rows(&read(&t, None, 1).await),
                "{kind} is not deterministic"
            );
            let mut split = rows(&read(&t, None, 3).await);
            let mut expected = single.clone();
            split.sort();
            expected.sort();
            assert_eq!(split, expected, "{kind} split differs");
        }
    }

    #[tokio::test]
    async fn bids_look_like_nexmark() {
        let t = table("bid", &[("nexmark.event.num", "10000")]);
        let batches = read(&t, None, 1).await;
        assert_eq!(batches[0].schema(), t.schema);
        let mut per_auction = BTreeMap::new();
        let mut last_time = i64::MIN;
        for b in &batches {
            let auctions = b.column(0).as_primitive::<Int64Type>();
            let prices = b.column(2).as_primitive::<Int64Type>();
            let times = b.column(5).as_primitive::<TimestampMillisecondType>();
            for i in 0..b.num_rows() {
                *per_auction.entry(auctions.value(i)).or_insert(0) += 1;
                assert!(auctions.value(i) >= 1000 && prices.value(i) >= 100);
                assert!(times.value(i) >= last_time, "event time goes back");
                last_time = times.value(i);
            }
        }
        // Hot auctions: the most popular auction gets far more than an even share.
        let max = per_auction.values().max().copied().unwrap_or(0);
        assert!(
            max * per_auction.len() > 10 * 9200,
            "no hot auction: max {max} of {}",
            per_auction.len()
        );
        // 10 000 events at 10 000 events/s span about one second of event time.
        let first = batches[0]
            .column(5)
            .as_primitive::<TimestampMillisecondType>()
            .value(0);
        assert!((first - DEFAULT_BASE_TIME_MS as i64) < 10);
        assert!(
            (900..1100).contains(&(last_time - first)),
            "{}",
            last_time - first
        );
    }

    #[tokio::test]
    async fn projection_and_chunks() {
        let t = table(
            "auction",
            &[
                ("nexmark.event.num", "500"),
                ("nexmark.max.chunk.size", "7"),
            ],
        );
        let batches = read(&t, Some(&[8, 0]), 1).await;
        assert!(batches.iter().all(|b| b.num_rows() <= 7));
        assert_eq!(
            batches[0].schema().as_ref(),
            &t.schema.project(&[8, 0]).unwrap()
        );
        assert_eq!(count(&batches), 30);
        let empty = read(&t, Some(&[]), 2).await;
        assert_eq!(count(&empty), 30);
    }

    #[tokio::test]
    async fn throttled_source_idles() {
        let t = table("bid", &[("nexmark.min.event.gap.in.ns", "1000000000")]);
        let mut source = NexmarkConnector
            .create_source(&t, None, &task(0, 1))
            .unwrap();
        assert!(!NexmarkConnector.is_bounded(&t));
        // Event 0 is a person; the first bid (event 4) is due after 4 s.
        match source.poll_batch().await.unwrap() {
            SourcePoll::Idle(d) => assert!(d <= Duration::from_millis(100)),
            other => panic!("expected Idle, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn restores_from_a_position() {
        let t = table(
            "auction",
            &[
                ("nexmark.event.num", "3000"),
                ("nexmark.max.chunk.size", "10"),
            ],
        );
        let mut source = NexmarkConnector
            .create_source(&t, None, &task(1, 2))
            .unwrap();
        let _ = source.poll_batch().await.unwrap();
        let position = source.snapshot_position().unwrap().unwrap();
        let rest = rows(&drain(source).await.unwrap());
        let mut restored = NexmarkConnector
            .create_source(&t, None, &task(1, 2))
            .unwrap();
        restored.restore_position(&position).unwrap();
        assert_eq!(rows(&drain(restored).await.unwrap()), rest);
        let mut other = NexmarkConnector
            .create_source(&t, None, &task(0, 2))
            .unwrap();
        assert!(other.restore_position(&position).is_err());
    }

    #[test]
    fn options_are_checked() {
        let t = table("bid", &[("nexmark.event.nun", "5")]);
        let err = NexmarkConnector
            .validate_source(&t)
            .unwrap_err()
            .to_string();
        assert!(err.contains("did you mean 'nexmark.event.num'"), "{err}");
        let t = table("bid", &[("nexmark.max.chunk.size", "0")]);
        assert!(NexmarkConnector.validate_source(&t).is_err());
        let options = ConnectorOptions::new([(TABLE_TYPE.to_string(), "bids".to_string())]);
        let err = NexmarkConnector
            .defined_schema(&options)
            .unwrap_err()
            .to_string();
        assert!(err.contains(TABLE_TYPE), "{err}");
    }
}
