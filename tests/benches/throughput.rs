//! Throughput of the same broker core on each adapter: tokio, blocking std threads, smol
//! and async-std, over TCP on 127.0.0.1, QoS 0, 16-byte payloads.
//!
//! - fan-in: 4 publishers send 250,000 messages each to topics `bench/in/{p}`; one
//!   subscriber on `bench/in/#` receives all 1,000,000.
//! - fan-out: 1 publisher sends 50,000 messages to `bench/out`; 16 subscribers receive
//!   each (800,000 deliveries).
//!
//! The clients are the same for every broker: blocking threads on raw sockets, MQTT
//! 3.1.1 encoded with mqtt-proto, publishers writing 100 PUBLISH per write. The broker
//! runs in this process, on 2 worker threads where the runtime has a pool (tokio,
//! smol; async-std sizes its pool to the cores, 2 here), and shares the 2 cores with
//! the clients. The rate is deliveries divided by the time from the first publish to
//! the last delivery.
//!
//! `cargo bench -p mqtt-tests --bench throughput [-- RUNTIME...]` with RUNTIME among
//! `tokio`, `std`, `smol`, `async-std` (default: all).

use bytes::BytesMut;
use mqtt_proto::{
    Connect, Decoder, MqttString, Packet, ProtocolVersion, Publish, QoS, Subscribe, Subscription,
    SubscriptionOptions, TopicFilter, TopicName, MAX_PACKET_SIZE,
};
use mqtt_tests::brokers::{Broker, Runtime};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const V: ProtocolVersion = ProtocolVersion::V3_1_1;
const BATCH: usize = 100;

fn encode(p: Packet, out: &mut Vec<u8>) {
    let mut b = BytesMut::new();
    p.encode(&mut b, V, MAX_PACKET_SIZE).expect("encodable");
    out.extend_from_slice(&b);
}

/// A client connection: the socket, its decoder and read buffer.
struct Conn {
    s: TcpStream,
    decoder: Decoder,
    buf: BytesMut,
}

impl Conn {
    fn connect(port: u16, id: &str) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_nodelay(true).unwrap();
        let mut c = Conn {
            s,
            decoder: Decoder::client(V),
            buf: BytesMut::new(),
        };
        let mut connect = Connect::new(V, MqttString::new(id).unwrap());
        connect.keep_alive = 0;
        let mut out = vec![];
        encode(Packet::Connect(Box::new(connect)), &mut out);
        c.s.write_all(&out).unwrap();
        match c.next() {
            Packet::ConnAck(_) => c,
            other => panic!("{id}: {other:?}"),
        }
    }

    fn next(&mut self) -> Packet {
        loop {
            if let Some(p) = self.decoder.decode(&mut self.buf).expect("valid") {
                return p;
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self.s.read(&mut chunk).expect("read");
            assert!(n > 0, "the broker closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn subscribe(&mut self, filter: &str) {
        let mut out = vec![];
        encode(
            Packet::Subscribe(Subscribe {
                packet_id: std::num::NonZeroU16::MIN,
                properties: Default::default(),
                subscriptions: vec![Subscription {
                    filter: TopicFilter::new(filter).unwrap(),
                    options: SubscriptionOptions::default(),
                }],
            }),
            &mut out,
        );
        self.s.write_all(&out).unwrap();
        match self.next() {
            Packet::SubAck(_) => {}
            other => panic!("{other:?}"),
        }
    }

    /// Counts PUBLISH packets until `n`; the time of the last.
    fn receive(mut self, n: usize) -> Instant {
        self.s
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut got = 0;
        while got < n {
            if let Packet::Publish(_) = self.next() {
                got += 1;
            }
        }
        Instant::now()
    }
}

fn publisher(port: u16, id: &str, topic: &str, n: usize) -> impl FnOnce() + Send + 'static {
    let mut c = Conn::connect(port, id);
    let mut batch = vec![];
    for _ in 0..BATCH {
        let mut p = Publish::new(TopicName::new(topic).unwrap(), vec![0x5a; 16]);
        p.qos = QoS::AtMostOnce;
        encode(Packet::Publish(p), &mut batch);
    }
    move || {
        for _ in 0..n / BATCH {
            c.s.write_all(&batch).unwrap();
        }
    }
}

/// Runs publishers and subscribers; deliveries per second.
fn run(
    port: u16,
    publishers: usize,
    per_publisher: usize,
    subscribers: usize,
    fan_in: bool,
) -> f64 {
    let subs: Vec<Conn> = (0..subscribers)
        .map(|i| {
            let mut c = Conn::connect(port, &format!("sub-{i}"));
            c.subscribe(if fan_in { "bench/in/#" } else { "bench/out" });
            c
        })
        .collect();
    let expected = if fan_in {
        publishers * per_publisher
    } else {
        per_publisher
    };
    let pubs: Vec<_> = (0..publishers)
        .map(|p| {
            let topic = if fan_in {
                format!("bench/in/{p}")
            } else {
                "bench/out".into()
            };
            publisher(port, &format!("pub-{p}"), &topic, per_publisher)
        })
        .collect();
    let start = Instant::now();
    let receivers: Vec<_> = subs
        .into_iter()
        .map(|c| std::thread::spawn(move || c.receive(expected)))
        .collect();
    let senders: Vec<_> = pubs.into_iter().map(std::thread::spawn).collect();
    for s in senders {
        s.join().unwrap();
    }
    let end = receivers
        .into_iter()
        .map(|r| r.join().expect("every message delivered"))
        .max()
        .unwrap();
    (expected * subscribers) as f64 / (end - start).as_secs_f64()
}

fn main() {
    // smol's global executor reads it once, at its first use.
    std::env::set_var("SMOL_THREADS", "2");
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let all = [
        ("tokio", Runtime::Tokio),
        ("std", Runtime::Std),
        ("smol", Runtime::Smol),
        ("async-std", Runtime::AsyncStd),
    ];
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("| broker | fan-in 4→1 (msg/s) | fan-out 1→16 (deliveries/s) |");
    println!("|---|---:|---:|");
    for (name, rt) in all {
        if !args.is_empty() && !args.iter().any(|a| a == name) {
            continue;
        }
        let text = "[[listener]]\nbind = \"127.0.0.1:0\"\n[sys]\ninterval_secs = 0\n\
                    [limits]\nmax_pending_write_bytes = 1073741824\n";
        let broker = tokio.block_on(Broker::start(rt, text));
        let port = broker.port();
        let fan_in = run(port, 4, 250_000, 1, true);
        let fan_out = run(port, 1, 50_000, 16, false);
        tokio.block_on(broker.shutdown());
        println!(
            "| {name} | {:.2} M | {:.2} M |",
            fan_in / 1e6,
            fan_out / 1e6
        );
    }
}
