//! Data plane throughput: one exchange channel on loopback.
//!
//! A sending and a receiving [`Exchange`] live in this process but talk over
//! a real tonic server on 127.0.0.1, so every batch is Arrow IPC encoded,
//! framed as Flight `DoExchange` data, paced by credit and decoded again.
//! Batches are 8192 rows of `(BIGINT, BIGINT, STRING ~20 chars)`.
//!
//! Reported twice: as bytes/s of Arrow IPC and as rows/s.
//!
//! `cargo bench --bench exchange` (`WEIR_BENCH_EXCHANGE_BATCHES`, default
//! 200 batches per run).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::runtime::Runtime;
use tonic::transport::server::TcpIncoming;
use weir::engine::Message;
use weir::engine::exchange::{ChannelKey, Exchange, ExchangeConfig, server_builder};

const ROWS_PER_BATCH: usize = 8192;

fn batches() -> u64 {
    std::env::var("WEIR_BENCH_EXCHANGE_BATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

fn batch() -> RecordBatch {
    let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..ROWS_PER_BATCH as i64));
    let values: ArrayRef = Arc::new(Int64Array::from_iter_values(
        (0..ROWS_PER_BATCH as i64).map(|i| i * 31 % 1_000_003),
    ));
    let names: ArrayRef = Arc::new(StringArray::from_iter_values(
        (0..ROWS_PER_BATCH).map(|i| format!("channel-name-{i:07}")),
    ));
    RecordBatch::try_from_iter([("id", ids), ("value", values), ("name", names)])
        .expect("benchmark batch")
}

/// Both ends of the data plane, the receiver served on loopback.
struct Loopback {
    sending: Exchange,
    receiving: Exchange,
    address: String,
    runs: AtomicU64,
}

impl Loopback {
    fn start(runtime: &Runtime) -> Self {
        runtime.block_on(async {
            let (sending, _) = Exchange::new(ExchangeConfig::default());
            let (receiving, _) = Exchange::new(ExchangeConfig::default());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind loopback");
            let address = listener.local_addr().expect("local address").to_string();
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            let service = receiving.flight_service();
            tokio::spawn(async move {
                server_builder()
                    .add_service(service)
                    .serve_with_incoming(incoming)
                    .await
                    .expect("data plane server");
            });
            Self {
                sending,
                receiving,
                address,
                runs: AtomicU64::new(0),
            }
        })
    }

    /// Sends `count` batches and end of stream over a fresh channel and
    /// waits until the receiving side has taken all of it.
    async fn transfer(&self, batch: &RecordBatch, count: u64) {
        let run = self.runs.fetch_add(1, Ordering::Relaxed);
        let channel = ChannelKey {
            job_id: format!("bench-{run}"),
            edge: 0,
            from_subtask: 0,
            to_subtask: 0,
        };
        let mut rx = self.receiving.receiver(&channel);
        let mut tx = self
            .sending
            .sender(&self.address, channel)
            .await
            .expect("open channel");
        let batch = batch.clone();
        let sending = tokio::spawn(async move {
            for _ in 0..count {
                tx.send(Message::Data(batch.clone())).await?;
            }
            tx.send(Message::EndOfStream).await
        });
        let mut rows = 0;
        while let Some(message) = rx.recv().await {
            match message {
                Message::Data(batch) => rows += batch.num_rows() as u64,
                Message::EndOfStream => break,
                _ => {}
            }
        }
        sending
            .await
            .expect("sending task")
            .expect("sending succeeds");
        assert_eq!(rows, count * ROWS_PER_BATCH as u64);
        self.receiving.release_job(&format!("bench-{run}"));
    }
}

fn exchange(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let loopback = Loopback::start(&runtime);
    let batch = batch();
    let count = batches();

    // One run up front: warms the connection and measures the IPC bytes a run takes.
    let before = loopback.sending.stats().bytes_sent;
    runtime.block_on(loopback.transfer(&batch, count));
    let bytes_per_run = loopback.sending.stats().bytes_sent - before;

    for (name, throughput) in [
        ("exchange_bytes", Throughput::Bytes(bytes_per_run)),
        (
            "exchange_rows",
            Throughput::Elements(count * ROWS_PER_BATCH as u64),
        ),
    ] {
        let mut group = c.benchmark_group(name);
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(10));
        group.throughput(throughput);
        group.bench_function("loopback_one_channel", |b| {
            b.iter(|| runtime.block_on(loopback.transfer(&batch, count)))
        });
        group.finish();
    }
}

criterion_group!(benches, exchange);
criterion_main!(benches);
