//! The load: publishers and subscribers over raw MQTT connections.
//!
//! A flow is set up first (every subscriber connected and subscribed, every publisher
//! connected), so that the harness can read the broker's counters before any message
//! moves, and then run. Publishers encode one PUBLISH with mqtt-proto and copy it for each
//! message, changing only the packet identifier and the payload (send time and sequence
//! number), and write many messages per system call. At QoS 1 each publisher keeps up to
//! `window` messages unacknowledged. Subscribers read whatever has arrived, decode all of
//! it and answer every QoS 1 PUBLISH in one write.
//!
//! Subscribers either all take every message (`bench/+`), or, point to point, subscriber
//! `i` takes only publisher `i`'s topic. Slow subscribers connect and subscribe like the
//! others and then never read their socket; they count in no figure.

use crate::client::{Conn, ConnectOptions, READ_CHUNK};
use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use mqtt_proto::{
    Packet, PacketId, ProtocolVersion, PubResponse, Publish, QoS, TopicName, MAX_PACKET_SIZE,
};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinHandle;

/// Payload size of every message unless a scenario says otherwise.
pub const PAYLOAD: usize = 32;
/// The smallest payload: send time and sequence number.
pub const MIN_PAYLOAD: usize = 16;
/// Messages a publisher writes in one system call at most.
const BATCH: usize = 64;
/// Keep alive of every client, seconds: longer than any run, so no PINGREQ is needed.
const KEEP_ALIVE: u16 = 600;
/// A run ends when all publishers are done and nothing arrived for this long.
const STALL: Duration = Duration::from_secs(5);

/// The clock the payload timestamps count from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos_since_epoch(t: Instant) -> u64 {
    t.duration_since(epoch()).as_nanos() as u64
}

/// What to run.
#[derive(Debug, Clone)]
pub struct FlowSpec {
    /// Protocol version of every client.
    pub version: ProtocolVersion,
    /// QoS of the publishes and of the subscriptions.
    pub qos: QoS,
    /// Number of publishers; publisher `i` publishes to `bench/i`.
    pub publishers: usize,
    /// Number of subscribers, each on `bench/+`: every message reaches all of them
    /// (point to point: subscriber `i` on `bench/i`).
    pub subscribers: usize,
    /// Point to point: as many subscribers as publishers, each on one publisher's topic.
    pub point_to_point: bool,
    /// Subscribers on `bench/+` that never read after their SUBACK; not counted.
    pub slow_subscribers: usize,
    /// Payload bytes of every message (at least [`MIN_PAYLOAD`]).
    pub payload: usize,
    /// Messages each publisher sends.
    pub messages_per_publisher: u64,
    /// Total publish rate in messages per second (spread over the publishers); `None`
    /// for as fast as possible.
    pub rate: Option<f64>,
    /// Unacknowledged QoS 1 messages per publisher.
    pub window: usize,
    /// Subscribers keep their session after the connection (Clean Session 0, or a
    /// Session Expiry Interval on 5.0), so that a broker with persistence stores the
    /// messages queued for them.
    pub persistent_subscribers: bool,
    /// The whole run, setup excluded, ends after this at the latest.
    pub deadline: Duration,
    /// Keep every message's latency.
    pub latency: bool,
}

impl FlowSpec {
    /// Deliveries the run should see.
    pub fn expected(&self) -> u64 {
        if self.point_to_point {
            self.publishers.min(self.subscribers) as u64 * self.messages_per_publisher
        } else {
            self.publishers as u64 * self.messages_per_publisher * self.subscribers as u64
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct FlowResult {
    /// Messages the publishers wrote.
    pub sent: u64,
    /// Deliveries expected.
    pub expected: u64,
    /// Deliveries that arrived.
    pub delivered: u64,
    /// From the first publish to the last delivery.
    pub elapsed: Duration,
    /// Latency of every delivery, nanoseconds, sorted (only when asked for).
    pub latencies_ns: Vec<u64>,
    /// The run hit its deadline.
    pub timed_out: bool,
    /// Slow subscribers that the broker had disconnected by the end of the run.
    pub slow_closed: usize,
}

struct Shared {
    received: AtomicU64,
    expected: u64,
    done: Notify,
    publishers_done: AtomicUsize,
}

struct SubOutcome {
    count: u64,
    last_rx: Option<Instant>,
    latencies: Vec<u64>,
}

/// A flow with every client connected and subscribed, not started yet.
pub struct Flow {
    spec: FlowSpec,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    start: watch::Sender<Option<Instant>>,
    subs: Vec<JoinHandle<Result<SubOutcome>>>,
    pubs: Vec<JoinHandle<Result<u64>>>,
    slow: Vec<Conn>,
}

impl Flow {
    /// Connects and subscribes every subscriber, then connects every publisher.
    pub async fn setup(addr: SocketAddr, spec: &FlowSpec) -> Result<Flow> {
        epoch();
        let shared = Arc::new(Shared {
            received: AtomicU64::new(0),
            expected: spec.expected(),
            done: Notify::new(),
            publishers_done: AtomicUsize::new(0),
        });
        let (stop, stop_rx) = watch::channel(false);
        let (start, start_rx) = watch::channel(None);
        let mut subs = Vec::new();
        for i in 0..spec.subscribers {
            let opts = ConnectOptions {
                version: spec.version,
                client_id: format!("bench-sub-{i}"),
                clean: !spec.persistent_subscribers,
                keep_alive: KEEP_ALIVE,
            };
            let mut conn = Conn::connect(addr, &opts).await?;
            let filter = if spec.point_to_point {
                format!("bench/{i}")
            } else {
                "bench/+".to_string()
            };
            conn.subscribe(&filter, spec.qos).await?;
            subs.push(tokio::spawn(subscriber(
                conn,
                shared.clone(),
                stop_rx.clone(),
                spec.latency,
            )));
        }
        let mut slow = Vec::new();
        for i in 0..spec.slow_subscribers {
            let opts = ConnectOptions {
                version: spec.version,
                client_id: format!("bench-slow-{i}"),
                clean: true,
                keep_alive: KEEP_ALIVE,
            };
            let mut conn = Conn::connect(addr, &opts).await?;
            conn.subscribe("bench/+", spec.qos).await?;
            slow.push(conn);
        }
        let mut pubs = Vec::new();
        for i in 0..spec.publishers {
            let opts = ConnectOptions {
                version: spec.version,
                client_id: format!("bench-pub-{i}"),
                clean: true,
                keep_alive: KEEP_ALIVE,
            };
            let conn = Conn::connect(addr, &opts).await?;
            pubs.push(tokio::spawn(publisher(
                conn,
                i,
                spec.clone(),
                shared.clone(),
                start_rx.clone(),
                stop_rx.clone(),
            )));
        }
        Ok(Flow {
            spec: spec.clone(),
            shared,
            stop,
            start,
            subs,
            pubs,
            slow,
        })
    }

    /// Starts the publishers and waits until every delivery arrived, the deadline passed,
    /// or the publishers are done and nothing arrives any more.
    pub async fn run(self) -> Result<FlowResult> {
        let t0 = Instant::now();
        self.start.send_replace(Some(t0));
        let deadline = t0 + self.spec.deadline;
        let mut last_count = 0;
        let mut last_progress = Instant::now();
        let mut timed_out = false;
        loop {
            let _ =
                tokio::time::timeout(Duration::from_millis(100), self.shared.done.notified()).await;
            let now = Instant::now();
            let count = self.shared.received.load(Ordering::Relaxed);
            if count >= self.shared.expected {
                break;
            }
            if count != last_count {
                last_count = count;
                last_progress = now;
            }
            if now >= deadline {
                timed_out = true;
                break;
            }
            let pubs_done = self.shared.publishers_done.load(Ordering::Relaxed) == self.pubs.len();
            if pubs_done && now.duration_since(last_progress) >= STALL {
                break;
            }
        }
        self.stop.send_replace(true);
        let mut sent = 0;
        for h in self.pubs {
            sent += join(h).await.context("publisher")?;
        }
        let mut delivered = 0;
        let mut last_rx: Option<Instant> = None;
        let mut latencies_ns = Vec::new();
        for h in self.subs {
            let o = join(h).await.context("subscriber")?;
            delivered += o.count;
            last_rx = last_rx.max(o.last_rx);
            latencies_ns.extend(o.latencies);
        }
        latencies_ns.sort_unstable();
        let mut slow_closed = 0;
        for c in self.slow {
            if closed_by_peer(c).await {
                slow_closed += 1;
            }
        }
        Ok(FlowResult {
            sent,
            expected: self.shared.expected,
            delivered,
            elapsed: last_rx.map_or(Duration::ZERO, |t| t.saturating_duration_since(t0)),
            latencies_ns,
            timed_out,
            slow_closed,
        })
    }
}

/// Whether the broker closed a connection that was never read: reads what waits in the
/// socket (for up to 2 s in all, or until nothing came for 200 ms) and looks for the end
/// of the stream or a reset.
async fn closed_by_peer(mut conn: Conn) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = vec![0u8; READ_CHUNK];
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), conn.rd.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
    false
}

/// Waits for a task that was told to stop, and gives up on it after a while.
async fn join<T>(h: JoinHandle<Result<T>>) -> Result<T> {
    let abort = h.abort_handle();
    match tokio::time::timeout(Duration::from_secs(5), h).await {
        Ok(r) => r.context("task panicked")?,
        Err(_) => {
            abort.abort();
            bail!("task did not stop")
        }
    }
}

async fn subscriber(
    conn: Conn,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    latency: bool,
) -> Result<SubOutcome> {
    let Conn {
        version,
        mut rd,
        mut wr,
        mut dec,
        mut buf,
    } = conn;
    let mut out = BytesMut::with_capacity(4096);
    let mut o = SubOutcome {
        count: 0,
        last_rx: None,
        latencies: Vec::new(),
    };
    loop {
        buf.reserve(READ_CHUNK);
        tokio::select! {
            r = rd.read_buf(&mut buf) => {
                if r? == 0 {
                    break;
                }
            }
            _ = stop.changed() => break,
        }
        let now = Instant::now();
        let now_ns = nanos_since_epoch(now);
        let mut n = 0;
        while let Some(p) = dec.decode(&mut buf)? {
            if let Packet::Publish(p) = p {
                n += 1;
                if let Some(id) = p.packet_id {
                    Packet::PubAck(PubResponse::new(id)).encode(
                        &mut out,
                        version,
                        MAX_PACKET_SIZE,
                    )?;
                }
                if latency && p.payload.len() >= 8 {
                    let sent = u64::from_le_bytes(p.payload[..8].try_into().expect("8 bytes"));
                    o.latencies.push(now_ns.saturating_sub(sent));
                }
            }
        }
        if !out.is_empty() {
            wr.write_all(&out).await?;
            out.clear();
        }
        if n > 0 {
            o.count += n;
            o.last_rx = Some(now);
            if shared.received.fetch_add(n, Ordering::Relaxed) + n >= shared.expected {
                shared.done.notify_one();
            }
        }
    }
    Ok(o)
}

/// One encoded PUBLISH to copy for each message.
struct Template {
    frame: Vec<u8>,
    id_at: Option<usize>,
    payload: usize,
}

impl Template {
    fn new(version: ProtocolVersion, topic: &str, qos: QoS, payload: usize) -> Result<Template> {
        let mut p = Publish::new(TopicName::new(topic)?, vec![0u8; payload.max(MIN_PAYLOAD)]);
        p.qos = qos;
        if qos != QoS::AtMostOnce {
            p.packet_id = PacketId::new(1);
        }
        let mut frame = BytesMut::new();
        p.encode(&mut frame, version, MAX_PACKET_SIZE)?;
        let id_at = p.packet_id_offset(version);
        Ok(Template {
            frame: frame.to_vec(),
            id_at,
            payload: payload.max(MIN_PAYLOAD),
        })
    }

    /// Appends one message with this packet identifier, send time and sequence number.
    fn put(&self, out: &mut BytesMut, id: u16, sent_ns: u64, seq: u64) {
        let start = out.len();
        out.extend_from_slice(&self.frame);
        if let Some(at) = self.id_at {
            out[start + at..start + at + 2].copy_from_slice(&id.to_be_bytes());
        }
        let payload = out.len() - self.payload;
        out[payload..payload + 8].copy_from_slice(&sent_ns.to_le_bytes());
        out[payload + 8..payload + 16].copy_from_slice(&seq.to_le_bytes());
    }
}

async fn publisher(
    conn: Conn,
    index: usize,
    spec: FlowSpec,
    shared: Arc<Shared>,
    mut start: watch::Receiver<Option<Instant>>,
    stop: watch::Receiver<bool>,
) -> Result<u64> {
    let result = publish_all(conn, index, &spec, &shared, &mut start, stop).await;
    if result.is_err() {
        shared.publishers_done.fetch_add(1, Ordering::Relaxed);
    }
    result
}

async fn publish_all(
    conn: Conn,
    index: usize,
    spec: &FlowSpec,
    shared: &Shared,
    start: &mut watch::Receiver<Option<Instant>>,
    mut stop: watch::Receiver<bool>,
) -> Result<u64> {
    let Conn {
        version,
        rd,
        mut wr,
        dec,
        buf,
    } = conn;
    let t0 = *start
        .wait_for(Option::is_some)
        .await?
        .as_ref()
        .expect("set");
    let template = Template::new(version, &format!("bench/{index}"), spec.qos, spec.payload)?;
    let total = spec.messages_per_publisher;
    let qos1 = spec.qos != QoS::AtMostOnce;
    let credits = Arc::new(Semaphore::new(if qos1 { spec.window } else { 0 }));
    // At QoS 0 the read half stays open, unread (nothing comes), until the run ends.
    let mut idle_rd = None;
    let acks = if qos1 {
        Some(tokio::spawn(read_acks(
            rd,
            dec,
            buf,
            total,
            credits.clone(),
            stop.clone(),
        )))
    } else {
        idle_rd = Some(rd);
        None
    };
    let per_sec = spec.rate.map(|r| r / spec.publishers as f64);
    // Large messages: fewer per write, about 256 KiB at most.
    let batch = (256 * 1024 / template.frame.len()).clamp(1, BATCH);
    let mut out = BytesMut::with_capacity(batch * template.frame.len());
    let mut sent = 0u64;
    let mut id: u16 = 0;
    while sent < total {
        let mut n = (total - sent).min(batch as u64);
        if let Some(r) = per_sec {
            let due = ((t0.elapsed().as_secs_f64() * r) as u64 + 1).min(total);
            if due <= sent {
                let next = t0 + Duration::from_secs_f64((sent as f64) / r);
                tokio::select! {
                    _ = tokio::time::sleep_until(next.into()) => {}
                    _ = stop.changed() => break,
                }
                continue;
            }
            n = n.min(due - sent);
        }
        if qos1 {
            tokio::select! {
                p = credits.acquire() => p?.forget(),
                _ = stop.changed() => break,
            }
            let more = (credits.available_permits() as u64).min(n - 1) as u32;
            if more > 0 {
                credits.try_acquire_many(more)?.forget();
            }
            n = 1 + more as u64;
        }
        let now_ns = nanos_since_epoch(Instant::now());
        for _ in 0..n {
            id = if id == u16::MAX { 1 } else { id + 1 };
            template.put(&mut out, id, now_ns, sent);
            sent += 1;
        }
        tokio::select! {
            r = wr.write_all(&out) => r?,
            _ = stop.changed() => break,
        }
        out.clear();
    }
    if let Some(h) = acks {
        // QoS 1: done once every message is acknowledged (or the run is stopped).
        join_unbounded(h).await?;
    }
    shared.publishers_done.fetch_add(1, Ordering::Relaxed);
    // Keep the connection open until the run ends, so that no broker drops what it has
    // read and not yet routed.
    let _ = stop.wait_for(|s| *s).await;
    drop((wr, idle_rd));
    Ok(sent)
}

async fn join_unbounded(h: JoinHandle<Result<u64>>) -> Result<u64> {
    h.await.context("task panicked")?
}

async fn read_acks(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    mut dec: mqtt_proto::Decoder,
    mut buf: BytesMut,
    total: u64,
    credits: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) -> Result<u64> {
    let mut acked = 0u64;
    while acked < total {
        buf.reserve(READ_CHUNK);
        tokio::select! {
            r = rd.read_buf(&mut buf) => {
                if r? == 0 {
                    bail!("connection closed by the broker after {acked} PUBACKs");
                }
            }
            _ = stop.changed() => break,
        }
        let mut n = 0;
        while let Some(p) = dec.decode(&mut buf)? {
            if let Packet::PubAck(a) = p {
                if !a.reason_code.is_success() {
                    bail!("PUBACK {:?}", a.reason_code);
                }
                n += 1;
            }
        }
        acked += n as u64;
        credits.add_permits(n);
    }
    Ok(acked)
}
