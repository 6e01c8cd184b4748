//! Memory held for a subscriber that stops reading its socket: bounded by
//! `limits.max_pending_write_bytes` when it is closed as too slow, by
//! `limits.qos0_pending_write_bytes` when QoS 0 messages for it are dropped instead.

use adapter_tokio::config::Config;
use adapter_tokio::server::start;
use bytes::BytesMut;
use mqtt_proto::{
    Connect, MqttString, Packet, PacketId, ProtocolVersion, Publish, Subscribe, Subscription,
    SubscriptionOptions, TopicFilter, TopicName, MAX_PACKET_SIZE,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The system allocator, counting the bytes allocated and not freed, and the peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// Forwarding to the system allocator unchanged is sound; the counters are only read.
#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        grew(layout.size());
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        grew(new);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { std::alloc::System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The heap is the process's: the tests measure it one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `p` as MQTT 3.1.1 bytes.
fn encode(p: Packet) -> Vec<u8> {
    let mut out = BytesMut::new();
    p.encode(&mut out, ProtocolVersion::V3_1_1, MAX_PACKET_SIZE)
        .unwrap();
    out.to_vec()
}

/// CONNECT (3.1.1, clean session, no keep-alive).
fn connect(client_id: &str) -> Vec<u8> {
    let mut c = Connect::new(ProtocolVersion::V3_1_1, MqttString::new(client_id).unwrap());
    c.keep_alive = 0;
    encode(Packet::Connect(Box::new(c)))
}

/// SUBSCRIBE to `topic` at QoS 0.
fn subscribe(topic: &str) -> Vec<u8> {
    encode(Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(1).unwrap(),
        properties: Default::default(),
        subscriptions: vec![Subscription {
            filter: TopicFilter::new(topic).unwrap(),
            options: SubscriptionOptions::default(),
        }],
    }))
}

/// PUBLISH at QoS 0.
fn publish(topic: &str, payload: &[u8]) -> Vec<u8> {
    encode(Packet::Publish(Publish::new(
        TopicName::new(topic).unwrap(),
        payload.to_vec(),
    )))
}

/// A 3.1.1 connection, subscribed to `topic` if given, CONNACK and SUBACK read.
async fn client(stream: TcpStream, id: &str, topic: Option<&str>) -> TcpStream {
    let mut s = stream;
    s.write_all(&connect(id)).await.unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    if let Some(t) = topic {
        s.write_all(&subscribe(t)).await.unwrap();
        let mut suback = [0u8; 5];
        s.read_exact(&mut suback).await.unwrap();
        assert_eq!(suback, [0x90, 3, 0, 1, 0]);
    }
    s
}

const MIB: usize = 1 << 20;

/// Publishes `count` QoS 0 messages of 1 KiB to `t` until `reader` received them all,
/// keeping at most 8 bursts of 64 ahead of it (the reader is never the slow one); the
/// heap's growth at its highest meanwhile.
async fn flood(publisher: &mut TcpStream, reader: TcpStream, count: usize) -> (usize, TcpStream) {
    let one = publish("t", &[b'x'; 1024]);
    let burst: Vec<u8> = one.repeat(64);
    let total = burst.len() * (count / 64);
    let (got_tx, mut got) = tokio::sync::watch::channel(0usize);
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let read = tokio::spawn(async move {
        let mut reader = reader;
        let mut buf = vec![0u8; 64 * 1024];
        let mut n = 0;
        while n < total {
            let r = reader.read(&mut buf).await.unwrap();
            assert!(r > 0, "the reader was closed");
            n += r;
            got_tx.send_replace(n);
        }
        reader
    });
    for i in 0..count / 64 {
        let ahead = (i * burst.len()).saturating_sub(8 * burst.len());
        got.wait_for(|&g| g >= ahead).await.unwrap();
        publisher.write_all(&burst).await.unwrap();
    }
    let reader = tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the reader got everything")
        .unwrap();
    (PEAK.load(Ordering::Relaxed) - base, reader)
}

/// A broker on 127.0.0.1 with these `[limits]`, and its metrics endpoint.
async fn broker(limits: &str) -> adapter_tokio::server::Running {
    let text = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n[limits]\n{limits}\n\
         [metrics]\nbind = \"127.0.0.1:0\"\n[sys]\ninterval_secs = 0\n\
         [persistence]\nenabled = false\n"
    );
    start(Config::parse(&text).unwrap(), None).await.unwrap()
}

/// A broker with these `[limits]`, a publisher, and a client that reads topic `t`.
async fn reader_and_publisher(
    limits: &str,
) -> (adapter_tokio::server::Running, TcpStream, TcpStream) {
    let running = broker(limits).await;
    let addr = running.local_addrs[0];
    let reader = client(TcpStream::connect(addr).await.unwrap(), "reader", Some("t")).await;
    let publisher = client(TcpStream::connect(addr).await.unwrap(), "pub", None).await;
    running
        .wait_for_subscriptions(1, Duration::from_secs(5))
        .await
        .unwrap();
    (running, publisher, reader)
}

/// A second subscriber to `t` that never reads, with a small receive buffer so that the
/// kernel takes little of what is sent to it.
async fn never_reading(running: &adapter_tokio::server::Running) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let slow = client(
        socket.connect(running.local_addrs[0]).await.unwrap(),
        "slow",
        Some("t"),
    )
    .await;
    running
        .wait_for_subscriptions(2, Duration::from_secs(5))
        .await
        .unwrap();
    slow
}

/// A counter or gauge of `GET /metrics`.
async fn metric(running: &adapter_tokio::server::Running, name: &str) -> u64 {
    let mut s = TcpStream::connect(running.metrics_addr.unwrap())
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut body))
        .await
        .unwrap()
        .unwrap();
    let line = body
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {body}"));
    line.parse().unwrap()
}

/// What the broker holds for a client that stops reading is bounded by
/// `limits.max_pending_write_bytes` (what waits to be written, the batch being written
/// included) and a small constant, and it is freed when the client is closed as too
/// slow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_costs_at_most_its_budget() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let budget = 4 * MIB;
    // QoS 0 is never dropped: the slow client is closed.
    let (running, mut publisher, reader) = reader_and_publisher(&format!(
        "max_pending_write_bytes = {budget}\nqos0_pending_write_bytes = 0"
    ))
    .await;
    // 10 MiB to one reader: what the flood itself costs.
    let (without, reader) = flood(&mut publisher, reader, 10_000).await;
    // The same again with a subscriber that never reads: the broker closes it once
    // 4 MiB wait.
    let slow = never_reading(&running).await;
    let before = LIVE.load(Ordering::Relaxed);
    let (with, _reader) = flood(&mut publisher, reader, 10_000).await;
    let after = LIVE.load(Ordering::Relaxed);
    println!(
        "heap growth during the flood: {:.2} MiB without the slow client, {:.2} MiB with \
         it; {:.2} MiB before, {:.2} MiB after",
        without as f64 / MIB as f64,
        with as f64 / MIB as f64,
        before as f64 / MIB as f64,
        after as f64 / MIB as f64,
    );
    assert_eq!(
        running.gauges().await.unwrap().connections,
        2,
        "slow one closed"
    );
    drop(slow);
    running.shutdown().await;
    // Its pending bytes, a batch of up to 256 KiB copied together for it, and what the
    // broker encoded for it in the round that went over: the budget and 1.5 MiB. Before
    // the batch being written was counted and transmits were cut to their length, it
    // was more than twice the budget (8.6 MiB).
    let cost = with.saturating_sub(without);
    assert!(
        cost <= budget + MIB + MIB / 2,
        "a client that does not read cost {:.2} MiB of heap; budget {} MiB",
        cost as f64 / MIB as f64,
        budget / MIB
    );
    // Closed, it holds nothing more.
    assert!(
        after <= before + MIB,
        "{:.2} MiB more after the slow client was closed",
        after.saturating_sub(before) as f64 / MIB as f64
    );
}

/// With `qos0_pending_write_bytes`, QoS 0 messages for a client with more than that
/// waiting to be written are dropped and counted: it keeps its connection, and what the
/// broker holds for it stays within that threshold (plus what one round of the core
/// encodes for it) rather than `max_pending_write_bytes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_for_a_client_that_does_not_read_is_dropped_over_the_threshold() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let threshold = 2 * MIB;
    let (running, mut publisher, reader) = reader_and_publisher(&format!(
        "max_pending_write_bytes = {}\nqos0_pending_write_bytes = {threshold}",
        64 * MIB
    ))
    .await;
    let (without, reader) = flood(&mut publisher, reader, 10_000).await;
    let slow = never_reading(&running).await;
    // 30 MiB: more than the threshold and the socket buffers together.
    let (with, _reader) = flood(&mut publisher, reader, 30_000).await;
    let dropped = metric(&running, "mqtt_dropped_write_backlog_total").await;
    // The bytes waiting for the slow client, as the gauges show them: about the
    // threshold, where its QoS 0 messages started to be dropped.
    let most = metric(&running, "mqtt_connection_pending_write_bytes_max").await;
    let all = metric(&running, "mqtt_pending_write_bytes").await;
    let connections = running.gauges().await.unwrap().connections;
    println!(
        "heap growth during the flood: {:.2} MiB without the slow client, {:.2} MiB with \
         it; {dropped} QoS 0 messages dropped",
        without as f64 / MIB as f64,
        with as f64 / MIB as f64,
    );
    drop(slow);
    running.shutdown().await;
    assert_eq!(connections, 3, "the slow client is still connected");
    assert!(
        most as usize > threshold / 2 && most as usize <= threshold + 2 * MIB,
        "{most} bytes waiting for the slow client; threshold {threshold}"
    );
    assert!(all >= most, "{all} in all, {most} for one connection");
    // The reader got all 30,000 (`flood` waits for them); the slow one lost most.
    assert!(dropped > 10_000, "{dropped} dropped");
    let cost = with.saturating_sub(without);
    assert!(
        cost <= threshold + 2 * MIB,
        "a client that does not read cost {:.2} MiB of heap; QoS 0 threshold {} MiB",
        cost as f64 / MIB as f64,
        threshold / MIB
    );
}
