//! The data plane over a real tonic server on loopback.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arrow::array::{ArrayRef, DictionaryArray, Int64Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::Int32Type;
use arrow::record_batch::RecordBatch;
use arrow_flight::FlightData;
use arrow_flight::flight_service_client::FlightServiceClient;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tonic::Code;

use super::codec::{BatchEncoder, open_frame};
use super::*;
use crate::message::{CheckpointBarrier, Message, Watermark};

const DEADLINE: Duration = Duration::from_secs(10);
/// How long a blocked operation is watched to make sure it stays blocked.
const STAYS_BLOCKED: Duration = Duration::from_millis(500);

/// A data plane server on 127.0.0.1 counting the TCP connections it accepts.
struct TestServer {
    address: String,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(exchange: &Exchange) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    let incoming = futures::stream::unfold(listener, move |listener| {
        let counter = Arc::clone(&counter);
        async move {
            let stream = listener.accept().await.map(|(stream, _)| {
                counter.fetch_add(1, Ordering::SeqCst);
                stream
            });
            Some((stream, listener))
        }
    });
    let service = exchange.flight_service();
    let task = tokio::spawn(async move {
        let _ = server_builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await;
    });
    TestServer {
        address,
        accepted,
        task,
    }
}

fn key(job: &str, edge: u32, from: u32, to: u32) -> ChannelKey {
    ChannelKey {
        job_id: job.into(),
        edge,
        from_subtask: from,
        to_subtask: to,
    }
}

fn config() -> ExchangeConfig {
    ExchangeConfig {
        connect_timeout: Duration::from_secs(2),
        ..ExchangeConfig::default()
    }
}

/// ids, a dictionary-encoded name and a UTC timestamp.
fn rich_batch(ids: &[i64], names: &[&str]) -> RecordBatch {
    let id: ArrayRef = Arc::new(Int64Array::from(ids.to_vec()));
    let name: ArrayRef = Arc::new(
        names
            .iter()
            .copied()
            .collect::<DictionaryArray<Int32Type>>(),
    );
    let ts: ArrayRef = Arc::new(
        TimestampMillisecondArray::from(ids.iter().map(|i| i * 1000).collect::<Vec<_>>())
            .with_timezone("UTC"),
    );
    RecordBatch::try_from_iter([("id", id), ("name", name), ("ts", ts)]).unwrap()
}

fn seq_batch(seq: i64, rows: usize) -> RecordBatch {
    let seq: ArrayRef = Arc::new(Int64Array::from(vec![seq; rows]));
    RecordBatch::try_from_iter([("seq", seq)]).unwrap()
}

fn assert_same(expected: &Message, got: &Message) {
    match (expected, got) {
        (Message::Data(a), Message::Data(b)) => assert_eq!(a, b),
        (Message::Watermark(a), Message::Watermark(b)) => assert_eq!(a, b),
        (Message::Barrier(a), Message::Barrier(b)) => assert_eq!(a, b),
        (Message::EndOfStream, Message::EndOfStream) => {}
        _ => panic!("expected {expected:?}, got {got:?}"),
    }
}

async fn recv(rx: &mut mpsc::Receiver<Message>) -> Message {
    timeout(DEADLINE, rx.recv())
        .await
        .expect("message within the deadline")
        .expect("channel open")
}

/// Waits until `condition` holds, failing after the deadline.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_round_trip_keeps_order_and_content() {
    let (sending, _) = Exchange::new(config());
    let (receiving, mut failures) = Exchange::new(config());
    let server = serve(&receiving).await;
    let channel = key("job", 0, 1, 2);
    let mut rx = receiving.receiver(&channel);
    let mut tx = sending.sender(&server.address, channel).await.unwrap();

    let other: ArrayRef = Arc::new(StringArray::from(vec![Some("x"), None, Some("z")]));
    let changed_schema = RecordBatch::try_from_iter([("other", other)]).unwrap();
    let messages = vec![
        Message::Data(rich_batch(&[1, 2, 3], &["a", "b", "a"])),
        Message::Watermark(Watermark(1_000)),
        // A new dictionary for the same column.
        Message::Data(rich_batch(&[4, 5], &["c", "d"])),
        Message::Barrier(CheckpointBarrier {
            id: 7,
            timestamp_ms: 123,
            then_stop: false,
        }),
        Message::Data(changed_schema),
        Message::Data(rich_batch(&[], &[])),
        Message::Watermark(Watermark::MAX),
        Message::EndOfStream,
    ];
    let expected = messages.clone();
    let sender = tokio::spawn(async move {
        for message in messages {
            tx.send(message).await?;
        }
        Ok::<_, Error>(())
    });
    for message in &expected {
        assert_same(message, &recv(&mut rx).await);
    }
    timeout(DEADLINE, sender).await.unwrap().unwrap().unwrap();
    // End of stream closes the queue cleanly.
    assert!(timeout(DEADLINE, rx.recv()).await.unwrap().is_none());

    let sent = sending.stats();
    let received = receiving.stats();
    assert_eq!(sent.batches_sent, 4);
    assert_eq!(sent.rows_sent, 8);
    assert_eq!(received.batches_received, 4);
    assert_eq!(received.bytes_received, sent.bytes_sent);
    assert!(failures.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_to_one_peer_share_one_connection() {
    let (sending, _) = Exchange::new(config());
    let (receiving, _failures) = Exchange::new(config());
    let server = serve(&receiving).await;
    let first = key("job", 0, 0, 0);
    let second = key("job", 0, 1, 0);
    let mut rx_first = receiving.receiver(&first);
    let mut rx_second = receiving.receiver(&second);
    let mut tx_first = sending.sender(&server.address, first).await.unwrap();
    let mut tx_second = sending.sender(&server.address, second).await.unwrap();

    for seq in 0..5 {
        tx_first
            .send(Message::Data(seq_batch(seq, 10)))
            .await
            .unwrap();
        tx_second
            .send(Message::Data(seq_batch(100 + seq, 10)))
            .await
            .unwrap();
    }
    let end_first = tokio::spawn(async move { tx_first.send(Message::EndOfStream).await });
    let end_second = tokio::spawn(async move { tx_second.send(Message::EndOfStream).await });
    for (rx, base) in [(&mut rx_first, 0), (&mut rx_second, 100)] {
        for seq in 0..5 {
            assert_same(&Message::Data(seq_batch(base + seq, 10)), &recv(rx).await);
        }
        assert_same(&Message::EndOfStream, &recv(rx).await);
    }
    end_first.await.unwrap().unwrap();
    end_second.await.unwrap().unwrap();

    assert_eq!(sending.peer_connections(), 1);
    assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_registered_after_the_sender_gets_everything() {
    let (sending, _) = Exchange::new(config());
    let (receiving, _failures) = Exchange::new(config());
    let server = serve(&receiving).await;
    let channel = key("late", 3, 0, 1);
    let mut tx = sending
        .sender(&server.address, channel.clone())
        .await
        .unwrap();
    let sender = tokio::spawn(async move {
        for seq in 0..20 {
            tx.send(Message::Data(seq_batch(seq, 4))).await?;
        }
        tx.send(Message::EndOfStream).await
    });
    wait_until("the first batch arrives", || {
        receiving.stats().batches_received > 0
    })
    .await;

    let mut rx = receiving.receiver(&channel);
    for seq in 0..20 {
        assert_same(&Message::Data(seq_batch(seq, 4)), &recv(&mut rx).await);
    }
    assert_same(&Message::EndOfStream, &recv(&mut rx).await);
    timeout(DEADLINE, sender).await.unwrap().unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_does_not_read_blocks_the_sender_within_the_window() {
    const WINDOW: u64 = 64 * 1024;
    const BATCHES: i64 = 40;
    let config = ExchangeConfig {
        credit_bytes: WINDOW,
        channel_capacity: 2,
        ..config()
    };
    let (sending, _) = Exchange::new(config.clone());
    let (receiving, _failures) = Exchange::new(config);
    let server = serve(&receiving).await;
    let channel = key("slow", 0, 0, 0);
    let mut rx = receiving.receiver(&channel);
    let mut tx = sending.sender(&server.address, channel).await.unwrap();
    let batch_bytes = BatchEncoder::new()
        .encode(&seq_batch(0, 2048))
        .unwrap()
        .bytes;
    assert!(batch_bytes > 8 * 1024 && batch_bytes < WINDOW);

    let mut blocked_at = None;
    for seq in 0..BATCHES {
        let send = tx.send(Message::Data(seq_batch(seq, 2048)));
        if timeout(STAYS_BLOCKED, send).await.is_err() {
            blocked_at = Some(seq);
            break;
        }
    }
    let blocked_at = blocked_at.expect("the sender blocks on a consumer that does not read");
    let stats = sending.stats();
    assert!(stats.max_inflight_bytes > 0);
    assert!(
        stats.max_inflight_bytes <= WINDOW + batch_bytes,
        "{} bytes in flight with a {WINDOW}-byte window and {batch_bytes}-byte batches",
        stats.max_inflight_bytes
    );

    // Reading unblocks it; the batch whose send was abandoned goes again.
    let sender = tokio::spawn(async move {
        for seq in blocked_at..BATCHES {
            tx.send(Message::Data(seq_batch(seq, 2048))).await?;
        }
        tx.send(Message::EndOfStream).await
    });
    for seq in 0..BATCHES {
        assert_same(&Message::Data(seq_batch(seq, 2048)), &recv(&mut rx).await);
    }
    assert_same(&Message::EndOfStream, &recv(&mut rx).await);
    timeout(DEADLINE, sender).await.unwrap().unwrap().unwrap();
    assert!(sending.stats().max_inflight_bytes <= WINDOW + batch_bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_are_rejected_and_the_service_keeps_serving() {
    let (receiving, mut failures) = Exchange::new(config());
    let server = serve(&receiving).await;
    let url = format!("http://{}", server.address);

    // No open message first.
    let connection = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightServiceClient::new(connection);
    let status = client
        .do_exchange(futures::stream::iter(vec![FlightData::default()]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("open message"), "{status}");

    // An open message, then frames that are not Arrow IPC.
    let mut encoded = BatchEncoder::new().encode(&seq_batch(1, 100)).unwrap();
    let mut truncated = encoded.frames.pop().unwrap();
    truncated.data_body = truncated.data_body.slice(..8);
    let garbage = FlightData {
        data_header: bytes::Bytes::from_static(b"not an IPC message"),
        ..Default::default()
    };
    for (job, bad) in [
        ("garbage", vec![garbage]),
        ("truncated", {
            let mut frames = encoded.frames;
            frames.push(truncated);
            frames
        }),
    ] {
        let channel = key(job, 0, 0, 0);
        let mut rx = receiving.receiver(&channel);
        let mut frames = vec![open_frame(&channel)];
        frames.extend(bad);
        let mut responses = client
            .do_exchange(futures::stream::iter(frames))
            .await
            .unwrap()
            .into_inner();
        let status = loop {
            match timeout(DEADLINE, responses.message()).await.unwrap() {
                Ok(Some(_grant)) => continue,
                Ok(None) => panic!("the stream of {job} ended without an error"),
                Err(status) => break status,
            }
        };
        assert_eq!(status.code(), Code::InvalidArgument, "{status}");
        assert!(status.message().contains("malformed frame"), "{status}");
        let failure = timeout(DEADLINE, failures.recv()).await.unwrap().unwrap();
        assert_eq!(failure.channel, channel);
        assert!(failure.message.contains("malformed frame"), "{failure:?}");
        // The receiving task does not see a (false) clean end.
        assert!(timeout(STAYS_BLOCKED, rx.recv()).await.is_err());
    }

    // A good channel afterwards still works.
    let (sending, _) = Exchange::new(config());
    let channel = key("good", 0, 0, 0);
    let mut rx = receiving.receiver(&channel);
    let mut tx = sending.sender(&server.address, channel).await.unwrap();
    tx.send(Message::Data(seq_batch(9, 3))).await.unwrap();
    let end = tokio::spawn(async move { tx.send(Message::EndOfStream).await });
    assert_same(&Message::Data(seq_batch(9, 3)), &recv(&mut rx).await);
    assert_same(&Message::EndOfStream, &recv(&mut rx).await);
    end.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_of_a_channel_is_rejected() {
    let (sending, _) = Exchange::new(config());
    let (receiving, _failures) = Exchange::new(config());
    let server = serve(&receiving).await;
    let channel = key("dup", 0, 0, 0);
    let _first = sending
        .sender(&server.address, channel.clone())
        .await
        .unwrap();
    let err = sending.sender(&server.address, channel).await.unwrap_err();
    assert!(matches!(err, Error::Network { .. }), "{err}");
    assert!(err.to_string().contains("already open"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_dying_mid_stream_is_reported_and_the_queue_stays_open() {
    let (receiving, mut failures) = Exchange::new(config());
    let server = serve(&receiving).await;
    let channel = key("dies", 1, 0, 0);
    let mut rx = receiving.receiver(&channel);

    // The sending worker runs on its own runtime; dropping that runtime
    // tears its connection down without any end of stream.
    let address = server.address.clone();
    let sending_channel = channel.clone();
    let (die, dying) = std::sync::mpsc::channel::<()>();
    let peer = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let alive = runtime.block_on(async move {
            let (sending, _) = Exchange::new(config());
            let mut tx = sending.sender(&address, sending_channel).await.unwrap();
            tx.send(Message::Data(seq_batch(1, 5))).await.unwrap();
            tx.send(Message::Watermark(Watermark(5))).await.unwrap();
            (sending, tx)
        });
        // The runtime's worker keeps the connection going until told to die.
        let _ = dying.recv();
        drop(runtime);
        drop(alive);
    });

    assert_same(&Message::Data(seq_batch(1, 5)), &recv(&mut rx).await);
    assert_same(&Message::Watermark(Watermark(5)), &recv(&mut rx).await);
    die.send(()).unwrap();
    let failure = timeout(DEADLINE, failures.recv()).await.unwrap().unwrap();
    assert_eq!(failure.channel, channel);
    assert!(
        failure.message.contains("before end of stream"),
        "{failure:?}"
    );
    assert!(failure.message.contains("127.0.0.1"), "{failure:?}");
    tokio::task::spawn_blocking(move || peer.join().unwrap())
        .await
        .unwrap();
    // Not closed: a closed queue would read as a clean end.
    assert!(timeout(STAYS_BLOCKED, rx.recv()).await.is_err());

    // Releasing the job lets go of the queue.
    receiving.release_job("dies");
    assert!(timeout(DEADLINE, rx.recv()).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_peer_is_a_network_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    let (sending, _) = Exchange::new(config());
    let err = sending
        .sender(&address, key("nowhere", 0, 0, 0))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Network { ref peer, .. } if *peer == address),
        "{err}"
    );
    assert!(err.to_string().contains("nowhere/0/0->0"), "{err}");
}
