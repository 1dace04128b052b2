//! A producer that counts failed deliveries, shared by the sink and the
//! source's dead-letter queue: `send` never loses a record silently, and
//! `flush_checked` reports the first failure since the last check.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{
    BaseRecord, DeliveryResult, NoCustomPartitioner, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::{ClientConfig, ClientContext};
use weir_engine::{Error, Result};

use super::kafka_error;

/// Counts deliveries that failed, keeping the first error.
#[derive(Debug, Default)]
pub struct DeliveryTracker {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, message)) = result {
            use rdkafka::Message;
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
            first.get_or_insert_with(|| {
                format!("delivery to topic '{}' failed: {e}", message.topic())
            });
        }
    }
}

/// A producer with a background polling thread and delivery tracking.
pub struct TrackedProducer {
    inner: ThreadedProducer<DeliveryTracker, NoCustomPartitioner>,
}

/// How long a flush may take before the checkpoint (or job) fails.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

impl TrackedProducer {
    /// A producer from `config`.
    pub fn new(config: &ClientConfig) -> Result<Self> {
        let inner = config
            .create_with_context(DeliveryTracker::default())
            .map_err(|e| kafka_error("cannot create a producer", e))?;
        Ok(TrackedProducer { inner })
    }

    /// The underlying producer (transactions).
    pub fn producer(&self) -> &ThreadedProducer<DeliveryTracker, NoCustomPartitioner> {
        &self.inner
    }

    /// Queues a record, waiting while the local queue is full.
    pub fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: Option<i64>,
        headers: Option<OwnedHeaders>,
    ) -> Result<()> {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        if let Some(ts) = timestamp {
            record = record.timestamp(ts);
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        loop {
            match self.inner.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((e, _)) => {
                    return Err(kafka_error(format!("cannot send to topic '{topic}'"), e));
                }
            }
        }
    }

    /// Waits until every queued record is delivered; an error when one failed
    /// since the last call.
    pub fn flush_checked(&self) -> Result<()> {
        self.inner
            .flush(FLUSH_TIMEOUT)
            .map_err(|e| kafka_error("flushing the producer", e))?;
        self.check()
    }

    /// An error when a delivery failed since the last call.
    pub fn check(&self) -> Result<()> {
        let tracker = self.inner.context();
        if tracker.failed.swap(0, Ordering::Relaxed) > 0 {
            let first = tracker
                .first_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or_default();
            return Err(Error::Connector {
                connector: "kafka".into(),
                message: first,
            });
        }
        Ok(())
    }
}
