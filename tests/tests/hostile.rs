//! Hostile clients over real sockets, against the tokio broker started in-process on
//! 127.0.0.1 (ephemeral ports). Each case checks that the offending connection is closed
//! (with the 5.0 reason code of the DISCONNECT or CONNACK where the protocol has one),
//! that the broker logged why, and that a well-behaved client connected alongside keeps
//! publishing and receiving: it round-trips a message after every case, over the same
//! connection (it does not reconnect, so an interruption fails the test).
//!
//! The hostile side is a raw `TcpStream` writing bytes made by hand; what the broker
//! sends back is decoded with `mqtt_proto::Decoder`. Every wait is bounded.

use adapter_tokio::client::{Client, ClientOptions};
use adapter_tokio::config::Config;
use adapter_tokio::server::{start, Running};
use mqtt_proto::{Decoder, Packet, ProtocolVersion, Publish, QoS, ReasonCode};
use mqtt_tests::raw::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::Receiver;

/// `[limits] connect_timeout_secs` of every broker here.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// `[limits] max_packet_size` of every broker here (the default is 1 MiB).
const MAX_PACKET: usize = 128 * 1024;

// ----- The broker and the well-behaved client ---------------------------------------------

/// A broker with `limits` added to its `[limits]`, and a well-behaved client connected to
/// it and subscribed to `ok/{tag}`.
struct Bed {
    running: Running,
    addr: SocketAddr,
    client: Client,
    rx: Receiver<Publish>,
    tag: &'static str,
    sent: u32,
}

impl Bed {
    async fn start(tag: &'static str, limits: &str) -> Bed {
        Self::start_with(tag, limits, "").await
    }

    /// The same with more sections (`[auth]`, say).
    async fn start_with(tag: &'static str, limits: &str, more: &str) -> Bed {
        logs();
        let text = format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\n\
             [limits]\nconnect_timeout_secs = {}\nmax_packet_size = {MAX_PACKET}\n{limits}\n\
             [sys]\ninterval_secs = 0\n\
             [metrics]\nbind = \"127.0.0.1:0\"\n{more}",
            CONNECT_TIMEOUT.as_secs()
        );
        let running = start(
            Config::parse(&format!("{text}\n[persistence]\nenabled = false\n")).unwrap(),
            None,
        )
        .await
        .unwrap();
        let addr = running.local_addrs[0];
        let mut o = ClientOptions::new(&addr.to_string(), &format!("good-{tag}"));
        o.reconnect = None;
        let (client, rx) = Client::connect(o).await.unwrap();
        let code = client
            .subscribe(&format!("ok/{tag}"), QoS::AtLeastOnce)
            .await
            .unwrap();
        assert_eq!(code, ReasonCode::GrantedQoS1);
        let mut bed = Bed {
            running,
            addr,
            client,
            rx,
            tag,
            sent: 0,
        };
        bed.assert_serves().await;
        bed
    }

    /// The well-behaved client publishes a message (QoS 1) and receives it.
    async fn assert_serves(&mut self) {
        self.sent += 1;
        let payload = format!("{}-{}", self.tag, self.sent);
        let started = Instant::now();
        tokio::time::timeout(
            LIMIT,
            self.client.publish(
                &format!("ok/{}", self.tag),
                payload.clone(),
                QoS::AtLeastOnce,
                false,
            ),
        )
        .await
        .expect("the well-behaved client's PUBACK in time")
        .expect("the well-behaved client publishes");
        loop {
            let m = tokio::time::timeout(LIMIT, self.rx.recv())
                .await
                .expect("the well-behaved client receives in time")
                .expect("the well-behaved client's connection is up");
            if m.payload == payload.as_bytes() {
                break;
            }
        }
        let rtt = started.elapsed();
        assert!(rtt < LIMIT, "round trip took {rtt:?}");
    }

    async fn metric(&self, name: &str) -> u64 {
        let mut s = TcpStream::connect(self.running.metrics_addr.unwrap())
            .await
            .unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await.unwrap();
        let mut text = String::new();
        tokio::time::timeout(LIMIT, s.read_to_string(&mut text))
            .await
            .unwrap()
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in:\n{text}"))
    }

    async fn stop(mut self) {
        self.assert_serves().await;
        self.client.disconnect().await;
        self.running.shutdown().await;
    }
}

// ----- Reporting -------------------------------------------------------------------------

/// Prints one row of the outcome table (seen with `--nocapture`).
fn report(case: &str, closed: &Closed, log: &str) {
    let log = log
        .split_once("client disconnected")
        .map_or(log, |(_, l)| l);
    println!(
        "| {case} | {} | {:?} | {} |",
        match closed.reason() {
            Some(r) => r.to_string(),
            None if closed.packets.is_empty() => "closed, nothing sent".into(),
            None => format!("{:?}", closed.packets),
        },
        closed.after,
        log.trim()
    );
}

/// Runs one hostile connection: `bytes` after an optional CONNECT of version `v`; checks
/// that it is closed with `expected` (the reason code of the last DISCONNECT / CONNACK,
/// or `None` for a close without either), that the broker logged `why`, and that the
/// well-behaved client still round-trips.
async fn case(
    bed: &mut Bed,
    name: &str,
    connect: Option<ProtocolVersion>,
    bytes: &[u8],
    expected: Option<ReasonCode>,
    why: &str,
) {
    let mut raw = match connect {
        Some(v) => Raw::connected(bed.addr, v, &format!("bad-{}", bed.tag)).await,
        None => Raw::open(bed.addr).await,
    };
    raw.send(bytes).await;
    let local = raw.who.clone();
    let closed = raw.closed().await;
    assert_eq!(closed.reason(), expected, "{name}: {closed:?}");
    if expected.is_none() {
        assert!(closed.packets.is_empty(), "{name}: {closed:?}");
    }
    let log = local.log_line().await;
    assert!(log.contains(why), "{name}: {log}");
    report(name, &closed, &log);
    bed.assert_serves().await;
}

// ----- Malformed input --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes() {
    let mut bed = Bed::start("garbage", "").await;
    // An HTTP request, and random bytes, where a CONNECT should be: closed, nothing sent
    // (before CONNECT the broker does not know a version to answer in).
    let http = b"GET /mqtt HTTP/1.1\r\nHost: broker\r\n\r\n";
    case(
        &mut bed,
        "garbage: HTTP request first",
        None,
        http,
        None,
        "protocol violation",
    )
    .await;
    let noise = [0xde, 0xad, 0xbe, 0xef, 0x00, 0x13, 0x37];
    case(
        &mut bed,
        "garbage: random bytes first",
        None,
        &noise,
        None,
        "protocol violation",
    )
    .await;
    // After a 5.0 CONNECT: reserved packet type 0 is a Malformed Packet, DISCONNECT 0x81.
    case(
        &mut bed,
        "garbage after 5.0 CONNECT",
        Some(ProtocolVersion::V5),
        &[0x00, 0x00, 0xff],
        Some(ReasonCode::MalformedPacket),
        "reserved",
    )
    .await;
    // 3.1.1 has no DISCONNECT from the server: closed.
    case(
        &mut bed,
        "garbage after 3.1.1 CONNECT",
        Some(ProtocolVersion::V3_1_1),
        &[0x00, 0x00, 0xff],
        None,
        "reserved",
    )
    .await;
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remaining_length_of_five_bytes() {
    // A Variable Byte Integer is at most four bytes (section 1.5.5): a fifth is a
    // Malformed Packet.
    let mut bed = Bed::start("varint", "").await;
    let five = [0xff, 0xff, 0xff, 0xff, 0x01];
    let mut connect = vec![0x10];
    connect.extend_from_slice(&five);
    case(
        &mut bed,
        "5-byte remaining length, CONNECT",
        None,
        &connect,
        None,
        "variable byte integer",
    )
    .await;
    let mut publish = vec![0x30];
    publish.extend_from_slice(&five);
    case(
        &mut bed,
        "5-byte remaining length, 5.0 PUBLISH",
        Some(ProtocolVersion::V5),
        &publish,
        Some(ReasonCode::MalformedPacket),
        "variable byte integer",
    )
    .await;
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_length_beyond_the_maximum_packet_size() {
    let mut bed = Bed::start("toolarge", "").await;
    // Only the fixed header is sent: the broker refuses the packet from its declared
    // length, without waiting for (or buffering) the body.
    let mut header = frame(0x30, &vec![0; MAX_PACKET]);
    header.truncate(4);
    for v in [ProtocolVersion::V5, ProtocolVersion::V3_1_1] {
        let mut raw = Raw::connected(bed.addr, v, "big").await;
        raw.send(&header).await;
        let local = raw.who.clone();
        let closed = raw.closed().await;
        // 5.0: DISCONNECT 0x95 Packet too large; 3.1.1: closed.
        let expected = v.is_v5().then_some(ReasonCode::PacketTooLarge);
        assert_eq!(closed.reason(), expected, "{closed:?}");
        let log = local.log_line().await;
        assert!(log.contains("exceeds the maximum"), "{log}");
        report(&format!("length > max packet size ({v})"), &closed, &log);
        bed.assert_serves().await;
    }
    // The same for a CONNECT: closed before its body arrives.
    let mut connect = frame(0x10, &vec![0; MAX_PACKET]);
    connect.truncate(4);
    case(
        &mut bed,
        "CONNECT length > max packet size",
        None,
        &connect,
        None,
        "exceeds the maximum",
    )
    .await;
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_split_into_one_byte_writes() {
    let mut bed = Bed::start("split", "").await;
    for v in [ProtocolVersion::V5, ProtocolVersion::V3_1_1] {
        let mut raw = Raw::open(bed.addr).await;
        raw.decoder = Decoder::client(v);
        let mut bytes = connect_packet(b"MQTT", version_level(v), "split", 60);
        bytes.extend(subscribe_packet(v, 1, &[b"split/#"]));
        bytes.extend(publish_qos1_packet(v, b"split/x", 2, b"one byte at a time"));
        for b in &bytes {
            raw.send(&[*b]).await;
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let mut got = vec![];
        while got.len() < 4 {
            got.push(raw.next().await.expect("still connected"));
        }
        assert!(matches!(&got[0], Packet::ConnAck(c) if c.reason_code == ReasonCode::Success));
        assert!(
            got.iter().any(|p| matches!(p, Packet::SubAck(_))),
            "{got:?}"
        );
        assert!(
            got.iter().any(|p| matches!(p, Packet::PubAck(_))),
            "{got:?}"
        );
        assert!(
            got.iter().any(
                |p| matches!(p, Packet::Publish(m) if &m.payload[..] == b"one byte at a time")
            ),
            "{got:?}"
        );
        println!(
            "| {} bytes in 1-byte writes ({v}) | CONNACK, SUBACK, PUBACK, PUBLISH: works | - | - |",
            bytes.len()
        );
        bed.assert_serves().await;
    }
    bed.stop().await;
}

// ----- Protocol violations ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_must_come_first_and_once() {
    let mut bed = Bed::start("order", "").await;
    // [MQTT-3.1.0-1]: the first packet is CONNECT; anything else closes the connection.
    case(
        &mut bed,
        "PINGREQ before CONNECT",
        None,
        &[0xc0, 0x00],
        None,
        "before CONNECT",
    )
    .await;
    let sub = subscribe_packet(ProtocolVersion::V3_1_1, 1, &[b"a"]);
    case(
        &mut bed,
        "SUBSCRIBE before CONNECT",
        None,
        &sub,
        None,
        "before CONNECT",
    )
    .await;
    // [MQTT-3.1.0-2]: a second CONNECT is a Protocol Error.
    let again = connect_packet(b"MQTT", 5, "again", 60);
    case(
        &mut bed,
        "second CONNECT (5.0)",
        Some(ProtocolVersion::V5),
        &again,
        Some(ReasonCode::ProtocolError),
        "second CONNECT",
    )
    .await;
    let again = connect_packet(b"MQTT", 4, "again", 60);
    case(
        &mut bed,
        "second CONNECT (3.1.1)",
        Some(ProtocolVersion::V3_1_1),
        &again,
        None,
        "second CONNECT",
    )
    .await;
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_protocol_name_and_level() {
    let mut bed = Bed::start("protocol", "").await;
    // [MQTT-3.1.2-1]: another protocol name: closed without CONNACK.
    let c = connect_packet(b"MQTX", 4, "name", 60);
    case(
        &mut bed,
        "protocol name MQTX",
        None,
        &c,
        None,
        "protocol name",
    )
    .await;
    // [MQTT-3.1.2-2]: an unsupported level: CONNACK 0x01 Unacceptable protocol version in
    // the 3.1.1 form (the level is unknown, so is the client's format; 0x01 is 5.0's
    // 0x84 Unsupported Protocol Version), then closed.
    for level in [6, 0, 255] {
        let c = connect_packet(b"MQTT", level, "level", 60);
        let mut raw = Raw::open(bed.addr).await;
        raw.send(&c).await;
        let local = raw.who.clone();
        let closed = raw.closed().await;
        assert_eq!(
            closed.reason(),
            Some(ReasonCode::UnsupportedProtocolVersion)
        );
        assert_eq!(closed.bytes, [0x20, 0x02, 0x00, 0x01]);
        let log = local.log_line().await;
        assert!(log.contains("unsupported protocol level"), "{log}");
        report(&format!("protocol level {level}"), &closed, &log);
        bed.assert_serves().await;
    }
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_flags() {
    let mut bed = Bed::start("flags", "").await;
    let v5 = Some(ProtocolVersion::V5);
    let malformed = Some(ReasonCode::MalformedPacket);
    // [MQTT-3.1.2-3]: the CONNECT reserved flag is 0; a 5.0 CONNECT gets CONNACK 0x81
    // before the close ([MQTT-4.13.1-1]).
    let mut c = connect_packet(b"MQTT", 5, "flags", 60);
    c[9] |= 0x01;
    case(
        &mut bed,
        "CONNECT reserved flag",
        None,
        &c,
        malformed,
        "reserved flag",
    )
    .await;
    // 5.0 [MQTT-2.1.3-1]: fixed header flags other than those listed are a Malformed
    // Packet.
    let mut sub = subscribe_packet(ProtocolVersion::V5, 1, &[b"a"]);
    sub[0] = 0x80;
    case(
        &mut bed,
        "SUBSCRIBE flags 0000",
        v5,
        &sub,
        malformed,
        "flags",
    )
    .await;
    case(
        &mut bed,
        "PINGREQ flags 0001",
        v5,
        &[0xc1, 0x00],
        malformed,
        "flags",
    )
    .await;
    case(
        &mut bed,
        "PUBREL flags 0000",
        v5,
        &[0x60, 0x02, 0x00, 0x01],
        malformed,
        "flags",
    )
    .await;
    // [MQTT-3.3.1-4]: QoS 3.
    let mut p = publish_qos1_packet(ProtocolVersion::V5, b"a", 1, b"x");
    p[0] = 0x36;
    case(&mut bed, "PUBLISH QoS 3", v5, &p, malformed, "QoS 3").await;
    // 5.0 [MQTT-3.8.3-5]: reserved bits of the subscription options.
    let mut sub = subscribe_packet(ProtocolVersion::V5, 1, &[b"a"]);
    *sub.last_mut().unwrap() = 0xc0;
    case(
        &mut bed,
        "subscription options reserved bits",
        v5,
        &sub,
        malformed,
        "reserved bits",
    )
    .await;
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_topics() {
    let mut bed = Bed::start("topics", "").await;
    let v5 = ProtocolVersion::V5;
    let malformed = Some(ReasonCode::MalformedPacket);
    // 5.0 [MQTT-1.5.4-1]: ill-formed UTF-8 (a stray byte, an encoded surrogate) is a
    // Malformed Packet.
    for (name, topic) in [
        ("topic with byte 0xFF", &b"a/\xff"[..]),
        ("topic with a surrogate", &b"a/\xed\xa0\x80"[..]),
        // 5.0 [MQTT-1.5.4-2]: U+0000 too.
        ("topic with U+0000", &b"a/\x00/b"[..]),
    ] {
        let p = publish_packet(v5, topic, b"x");
        case(
            &mut bed,
            &format!("PUBLISH {name}"),
            Some(v5),
            &p,
            malformed,
            "invalid string",
        )
        .await;
        let s = subscribe_packet(v5, 1, &[topic]);
        case(
            &mut bed,
            &format!("SUBSCRIBE {name}"),
            Some(v5),
            &s,
            malformed,
            "invalid string",
        )
        .await;
    }
    // [MQTT-3.3.2-2]: no wildcards in a topic name: 0x90 Topic Name invalid.
    for topic in [&b"a/+"[..], b"a/#", b"#"] {
        let p = publish_packet(v5, topic, b"x");
        let name = format!("PUBLISH to {}", String::from_utf8_lossy(topic));
        case(
            &mut bed,
            &name,
            Some(v5),
            &p,
            Some(ReasonCode::TopicNameInvalid),
            "wildcard",
        )
        .await;
    }
    let p = publish_packet(ProtocolVersion::V3_1_1, b"a/+", b"x");
    case(
        &mut bed,
        "PUBLISH to a/+ (3.1.1)",
        Some(ProtocolVersion::V3_1_1),
        &p,
        None,
        "wildcard",
    )
    .await;
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_without_filters() {
    let mut bed = Bed::start("nofilters", "").await;
    // 5.0 [MQTT-3.8.3-2]: a SUBSCRIBE with no payload is a Protocol Error (0x82).
    let s = subscribe_packet(ProtocolVersion::V5, 1, &[]);
    case(
        &mut bed,
        "SUBSCRIBE without filters (5.0)",
        Some(ProtocolVersion::V5),
        &s,
        Some(ReasonCode::ProtocolError),
        "no topic filters",
    )
    .await;
    // 3.1.1 [MQTT-3.8.3-3]: a protocol violation; closed.
    let s = subscribe_packet(ProtocolVersion::V3_1_1, 1, &[]);
    case(
        &mut bed,
        "SUBSCRIBE without filters (3.1.1)",
        Some(ProtocolVersion::V3_1_1),
        &s,
        None,
        "no topic filters",
    )
    .await;
    // [MQTT-3.10.3-2]: UNSUBSCRIBE too.
    let u = frame(0xa2, &[0x00, 0x01, 0x00]);
    case(
        &mut bed,
        "UNSUBSCRIBE without filters (5.0)",
        Some(ProtocolVersion::V5),
        &u,
        Some(ReasonCode::ProtocolError),
        "no topic filters",
    )
    .await;
    bed.stop().await;
}

// ----- Deep topics ------------------------------------------------------------------------

/// `a/a/.../a` with `levels` levels.
fn deep_topic(levels: usize) -> Vec<u8> {
    let mut t = "a/".repeat(levels - 1);
    t.push('a');
    t.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_of_30000_levels() {
    let mut bed = Bed::start("deep", "").await;
    let deep = deep_topic(30_000);
    for v in [ProtocolVersion::V5, ProtocolVersion::V3_1_1] {
        let mut raw = Raw::connected(bed.addr, v, "deep").await;
        let started = Instant::now();
        // Well-formed, but beyond max_topic_levels (128): the
        // message is refused (5.0 PUBACK 0x90 Topic Name invalid; 3.1.1 cannot say no and
        // gets a plain PUBACK) and the subscription too (SUBACK 0x8F / 0x80). A topic the
        // broker does not accept is not a protocol violation: the connection stays.
        raw.send(&publish_qos1_packet(v, &deep, 7, b"deep")).await;
        match raw.next().await {
            Some(Packet::PubAck(a)) => {
                let expected = if v.is_v5() {
                    ReasonCode::TopicNameInvalid
                } else {
                    ReasonCode::Success
                };
                assert_eq!(a.reason_code, expected);
            }
            other => panic!("{other:?}"),
        }
        raw.send(&subscribe_packet(v, 8, &[&deep])).await;
        match raw.next().await {
            Some(Packet::SubAck(a)) => {
                let expected = if v.is_v5() {
                    ReasonCode::TopicFilterInvalid
                } else {
                    ReasonCode::UnspecifiedError
                };
                assert_eq!(a.reason_codes, [expected]);
            }
            other => panic!("{other:?}"),
        }
        raw.send(&[0xc0, 0x00]).await;
        assert_eq!(raw.next().await, Some(Packet::PingResp));
        println!(
            "| topic of 30,000 levels ({v}) | PUBACK {}, SUBACK {}; connection stays | {:?} | - |",
            if v.is_v5() { "0x90" } else { "0x00" },
            if v.is_v5() { "0x8F" } else { "0x80" },
            started.elapsed()
        );
        bed.assert_serves().await;
    }
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_of_30000_levels_with_raised_limits() {
    // With the limits raised, the deep topic is routed (the subscription tree walks it
    // without recursion: a recursive walk overflowed the stack here).
    let mut bed = Bed::start(
        "deeper",
        "max_topic_levels = 40000\nmax_topic_length = 65535",
    )
    .await;
    let deep = deep_topic(30_000);
    let v = ProtocolVersion::V5;
    let mut raw = Raw::connected(bed.addr, v, "deeper").await;
    raw.send(&subscribe_packet(v, 1, &[&deep])).await;
    assert!(matches!(raw.next().await, Some(Packet::SubAck(_))));
    raw.send(&publish_packet(v, &deep, b"deep")).await;
    match raw.next().await {
        Some(Packet::Publish(p)) => assert_eq!(&p.payload[..], b"deep"),
        other => panic!("{other:?}"),
    }
    bed.assert_serves().await;
    bed.stop().await;
}

// ----- Silence and slowness ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_half_sent_connections_time_out() {
    let mut bed = Bed::start("silent", "").await;
    // TCP connected, nothing sent: closed after connect_timeout_secs, nothing sent back.
    // Half a CONNECT, then nothing: the same.
    for (name, bytes) in [
        ("TCP connect, nothing sent", &[][..]),
        (
            "half a CONNECT, then nothing",
            &[0x10, 0x20, 0x00, 0x04, b'M', b'Q'][..],
        ),
    ] {
        let mut raw = Raw::open(bed.addr).await;
        raw.send(bytes).await;
        let local = raw.who.clone();
        let closed = raw.closed().await;
        assert!(closed.packets.is_empty(), "{closed:?}");
        assert!(
            closed.after >= CONNECT_TIMEOUT - Duration::from_millis(50)
                && closed.after < CONNECT_TIMEOUT * 3,
            "{name}: closed after {:?}",
            closed.after
        );
        let log = local.log_line().await;
        assert!(log.contains("no CONNECT within"), "{log}");
        report(name, &closed, &log);
        bed.assert_serves().await;
    }
    // Half a PUBLISH after CONNECT with a keep-alive of 1 s: bytes that do not make a
    // packet do not count as activity; closed after 1.5 times the keep-alive
    // ([MQTT-3.1.2-24]), 5.0 with DISCONNECT 0x8D Keep Alive timeout.
    for v in [ProtocolVersion::V5, ProtocolVersion::V3_1_1] {
        let mut raw = Raw::connected_with_keep_alive(bed.addr, v, "half", 1).await;
        let p = publish_packet(v, b"half/packet", &[7; 100]);
        raw.send(&p[..50]).await;
        let local = raw.who.clone();
        let closed = raw.closed().await;
        let expected = v.is_v5().then_some(ReasonCode::KeepAliveTimeout);
        assert_eq!(closed.reason(), expected, "{closed:?}");
        assert!(
            closed.after >= Duration::from_millis(1400) && closed.after < Duration::from_secs(4),
            "closed after {:?}",
            closed.after
        );
        let log = local.log_line().await;
        assert!(log.contains("keep-alive timeout"), "{log}");
        report(
            &format!("half a PUBLISH, keep-alive 1 s ({v})"),
            &closed,
            &log,
        );
        bed.assert_serves().await;
    }
    bed.stop().await;
}

/// Connects a fresh client, retrying until the broker has a free slot (within
/// [`LIMIT`]); returns how long it took.
async fn a_slot_is_free(addr: SocketAddr) -> Duration {
    let started = Instant::now();
    loop {
        let mut o = ClientOptions::new(&addr.to_string(), "late");
        o.reconnect = None;
        match Client::connect(o).await {
            Ok((c, _)) => {
                c.disconnect().await;
                return started.elapsed();
            }
            Err(e) => {
                assert!(started.elapsed() < LIMIT, "no free slot: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// A subscriber `client_id` to `topic` at QoS 0 that will read nothing more, and a
/// publisher flooding the topic with 16 KiB messages until a log line holds every one
/// of `until` and the subscriber's address. Returns the subscriber, the publisher (still
/// connected), the line and the number of messages published.
async fn flood_a_subscriber_that_does_not_read(
    bed: &Bed,
    client_id: &str,
    keep_alive: u16,
    until: &[&str],
) -> (Raw, Client, String, usize) {
    let v = ProtocolVersion::V5;
    let topic = format!("flood/{client_id}");
    let mut slow = Raw::connected_with_keep_alive(bed.addr, v, client_id, keep_alive).await;
    slow.send(&subscribe_packet(v, 1, &[topic.as_bytes()]))
        .await;
    assert!(matches!(slow.next().await, Some(Packet::SubAck(_))));
    let mut o = ClientOptions::new(&bed.addr.to_string(), &format!("{client_id}-publisher"));
    o.reconnect = None;
    let (publisher, _) = Client::connect(o).await.unwrap();
    let payload = bytes::Bytes::from(vec![0x55u8; 16 * 1024]);
    let [listener, peer] = slow.who.needles();
    let mut sent = 0usize;
    let line = loop {
        assert!(sent < 8192, "no {until:?} after {sent} messages");
        // Publish in bursts: enough to fill the socket buffers at first, a trickle after.
        let burst = if sent < 4096 { 64 } else { 1 };
        for _ in 0..burst {
            tokio::time::timeout(
                LIMIT,
                publisher.publish(&topic, payload.clone(), QoS::AtMostOnce, false),
            )
            .await
            .expect("the publisher does not wait for a slow subscriber")
            .unwrap();
            sent += 1;
        }
        let text = logs().text();
        if let Some(l) = text.lines().find(|l| {
            l.contains(&listener) && l.contains(&peer) && until.iter().all(|u| l.contains(u))
        }) {
            break l.to_string();
        }
        if sent >= 4096 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    (slow, publisher, line, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_qos0_is_closed_as_too_slow() {
    // Room for the well-behaved client, the slow one and its publisher. QoS 0 is never
    // dropped for a slow client (by default it is above half of max_pending_write_bytes).
    let mut bed = Bed::start(
        "slow0",
        "max_pending_write_bytes = 1048576\nqos0_pending_write_bytes = 0\nmax_connections = 3",
    )
    .await;
    // QoS 0 messages are not queued in a session: they wait to be written, and when more
    // than max_pending_write_bytes wait the broker drops the connection with them.
    let started = Instant::now();
    let (slow, publisher, line, sent) =
        flood_a_subscriber_that_does_not_read(&bed, "slow0", 60, &["client too slow"]).await;
    let flood = started.elapsed();
    // Dropped at once, although it still reads nothing: its slot is free.
    let free = a_slot_is_free(bed.addr).await;
    bed.assert_serves().await;
    publisher.disconnect().await;
    let log = slow.who.log_line().await;
    assert!(log.contains("client_id=slow0"), "{log}");
    let (read, _) = slow.drained().await;
    println!(
        "| stops reading, QoS 0 ({sent} x 16 KiB published) | dropped as too slow ({read} bytes were still on the way); its slot free again {free:?} later | {flood:?} after the flood began | {} |",
        line.split_once("WARN").map_or(&line[..], |(_, l)| l).trim()
    );
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_and_sending_is_closed_by_keep_alive() {
    let mut bed = Bed::start("stuck", "max_connections = 3").await;
    // Below max_pending_write_bytes, but more than the socket buffers hold: writes to it
    // block. The keep-alive (1 s) closes it; the DISCONNECT cannot reach it, and after
    // a linger the connection is dropped anyway.
    let started = Instant::now();
    let (slow, publisher, line, sent) = flood_a_subscriber_that_does_not_read(
        &bed,
        "stuck",
        1,
        &["client disconnected", "keep-alive timeout"],
    )
    .await;
    let closed = started.elapsed();
    let free = a_slot_is_free(bed.addr).await;
    assert!(free < Duration::from_secs(4), "slot free after {free:?}");
    bed.assert_serves().await;
    publisher.disconnect().await;
    let (read, _) = slow.drained().await;
    println!(
        "| stops reading and sending, keep-alive 1 s ({sent} x 16 KiB published) | closed by keep-alive ({read} bytes were on the way), dropped after the linger: slot free {free:?} later | {closed:?} | {} |",
        line.split_once("client disconnected").map_or(&line[..], |(_, l)| l).trim()
    );
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_qos1_has_its_queue_bounded() {
    let mut bed = Bed::start(
        "slow1",
        "max_inflight = 10\nmax_queued_messages = 50\ndrop_policy = \"drop-oldest\"",
    )
    .await;
    let v = ProtocolVersion::V5;
    let mut slow = Raw::connected(bed.addr, v, "slow1").await;
    let mut sub = subscribe_packet(v, 1, &[b"queue/slow1"]);
    *sub.last_mut().unwrap() = 0x01; // QoS 1
    slow.send(&sub).await;
    assert!(matches!(slow.next().await, Some(Packet::SubAck(_))));
    // It neither reads nor acknowledges: 10 messages in flight, 50 queued, the rest
    // dropped by the drop policy and counted; the publisher is never held up.
    let mut o = ClientOptions::new(&bed.addr.to_string(), "publisher1");
    o.reconnect = None;
    let (publisher, _) = Client::connect(o).await.unwrap();
    for i in 0..200 {
        tokio::time::timeout(
            LIMIT,
            publisher.publish("queue/slow1", format!("m{i:03}"), QoS::AtLeastOnce, false),
        )
        .await
        .expect("the publisher does not wait for a slow subscriber")
        .unwrap();
    }
    // (Checked while the well-behaved client has nothing in flight.)
    assert_eq!(bed.metric("mqtt_inflight_messages").await, 10);
    assert_eq!(bed.metric("mqtt_session_queued_messages_max").await, 50);
    assert_eq!(bed.metric("mqtt_queued_bytes").await, 50 * 4);
    let dropped = bed.metric("mqtt_dropped_queue_full_total").await;
    assert_eq!(dropped, 140);
    bed.assert_serves().await;
    println!(
        "| stops reading, QoS 1 (200 published) | stays connected: 10 in flight, 50 queued, {dropped} dropped (mqtt_dropped_queue_full_total) | - | - |"
    );
    // What it gets when it reads again: the 10 in flight, then the newest 50
    // (drop-oldest).
    let mut got = vec![];
    while got.len() < 60 {
        match slow.next().await {
            Some(Packet::Publish(p)) => {
                let id = p.packet_id.unwrap().get();
                got.push(String::from_utf8_lossy(&p.payload).into_owned());
                let mut ack = vec![0x40, 0x02];
                ack.extend_from_slice(&id.to_be_bytes());
                slow.send(&ack).await;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got[0], "m000");
    assert_eq!(got[10], "m150");
    assert_eq!(got[59], "m199");
    publisher.disconnect().await;
    bed.stop().await;
}

// ----- Floods -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_connections() {
    let mut bed = Bed::start("conns", "max_connections = 20").await;
    // The well-behaved client holds one of the 20.
    let mut raws = vec![];
    for _ in 0..60 {
        raws.push(Raw::open(bed.addr).await);
    }
    let started = Instant::now();
    // All watched at once, for less than the connect timeout: the refused ones are closed
    // at once, the others are still open.
    let watched: Vec<_> = raws
        .into_iter()
        .map(|mut r| {
            tokio::spawn(async move {
                let mut b = [0u8; 1];
                match tokio::time::timeout(Duration::from_millis(300), r.s.read(&mut b)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => Err(r.who),
                    Ok(Ok(_)) => panic!("the broker sent something"),
                    Err(_) => Ok(r),
                }
            })
        })
        .collect();
    let mut refused = vec![];
    let mut kept = vec![];
    for w in watched {
        match w.await.unwrap() {
            Ok(r) => kept.push(r),
            Err(local) => refused.push(local),
        }
    }
    assert_eq!((kept.len(), refused.len()), (19, 41));
    let [listener, peer] = refused[0].needles();
    let log = logs()
        .line(&["max_connections reached", &listener, &peer])
        .await;
    bed.assert_serves().await;
    // The accepted ones send nothing: closed by the connect timeout, and the slots are
    // free again.
    for r in kept {
        let closed = r.closed().await;
        assert!(closed.packets.is_empty());
    }
    let mut o = ClientOptions::new(&bed.addr.to_string(), "after-flood");
    o.reconnect = None;
    let deadline = Instant::now() + LIMIT;
    let (c, _) = loop {
        match Client::connect(o.clone()).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < deadline, "{e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    c.disconnect().await;
    println!(
        "| 60 connections, max_connections = 20 | 19 accepted (then closed by the connect timeout), 41 closed at once | {:?} | {} |",
        started.elapsed(),
        log.split_once("WARN").map_or(&log[..], |(_, l)| l).trim()
    );
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_beyond_max_subscriptions() {
    let mut bed = Bed::start("subs", "max_subscriptions = 5").await;
    let filters: Vec<Vec<u8>> = (0..8).map(|i| format!("s/{i}").into_bytes()).collect();
    let filters: Vec<&[u8]> = filters.iter().map(|f| &f[..]).collect();
    for (v, refusal) in [
        (ProtocolVersion::V5, ReasonCode::QuotaExceeded),
        (ProtocolVersion::V3_1_1, ReasonCode::UnspecifiedError),
    ] {
        let mut raw = Raw::connected(bed.addr, v, "subs").await;
        raw.send(&subscribe_packet(v, 1, &filters)).await;
        let codes = match raw.next().await {
            Some(Packet::SubAck(a)) => a.reason_codes,
            other => panic!("{other:?}"),
        };
        let mut expected = vec![ReasonCode::Success; 5];
        expected.extend([refusal; 3]);
        assert_eq!(codes, expected, "{v}");
        // Subscribing again to a filter it holds takes no new place.
        raw.send(&subscribe_packet(v, 2, &[b"s/0"])).await;
        assert!(
            matches!(raw.next().await, Some(Packet::SubAck(a)) if a.reason_codes == [ReasonCode::Success])
        );
        raw.send(&[0xc0, 0x00]).await;
        assert_eq!(raw.next().await, Some(Packet::PingResp));
        println!(
            "| 8 subscriptions, max_subscriptions = 5 ({v}) | SUBACK 5 x 0x00, 3 x {:#04x}; connection stays | - | - |",
            if v.is_v5() { 0x97 } else { 0x80 }
        );
        bed.assert_serves().await;
    }
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_flood_does_not_starve_others() {
    let mut bed = Bed::start("flood", "").await;
    let v = ProtocolVersion::V5;
    let mut flooder = Raw::connected(bed.addr, v, "flooder").await;
    let mut batch = vec![];
    while batch.len() < 64 * 1024 {
        batch.extend(publish_packet(v, b"flood/x", &[0xaa; 1000]));
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut written = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                flooder.send(&batch).await;
                written += batch.len();
            }
            (flooder, written)
        })
    };
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    let mut trips = 0;
    while started.elapsed() < Duration::from_secs(2) {
        let t = Instant::now();
        bed.assert_serves().await;
        worst = worst.max(t.elapsed());
        trips += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut flooder, written) = tokio::time::timeout(LIMIT, flood).await.unwrap().unwrap();
    // The flooder broke no rule: still connected.
    flooder.send(&[0xc0, 0x00]).await;
    assert_eq!(flooder.next().await, Some(Packet::PingResp));
    let received = bed.metric("mqtt_messages_received_total").await;
    println!(
        "| publish flood, QoS 0, 1 KB payloads, 2 s | {} MB written, {received} messages received by the broker; {trips} round trips of the other client, slowest {worst:?} | - | - |",
        written / 1_000_000
    );
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_flood() {
    let dir = std::env::temp_dir().join(format!("mqtt-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let passwd = dir.join("passwd");
    let mut p = adapter_tokio::auth::Passwords::default();
    p.set("alice", "the right one").unwrap();
    std::fs::write(&passwd, p.to_text()).unwrap();
    let mut bed = Bed::start_with(
        "creds",
        "",
        &format!("[auth]\npassword_file = \"{}\"\n", passwd.display()),
    )
    .await;
    // Wrong passwords from 12 connections at once: the checks (argon2, slow on purpose)
    // run off the core, a few at a time; each gets CONNACK 0x86 Bad User Name or
    // Password; the client alongside is served meanwhile.
    let started = Instant::now();
    let mut tries = vec![];
    for i in 0..12 {
        let mut raw = Raw::open(bed.addr).await;
        raw.decoder = Decoder::client(ProtocolVersion::V5);
        raw.send(&connect_with_credentials(
            ProtocolVersion::V5,
            &format!("guess{i}"),
            "alice",
            &format!("guess-{i}-secret"),
        ))
        .await;
        let who = raw.who.clone();
        tries.push((who, tokio::spawn(raw.closed())));
    }
    bed.assert_serves().await;
    let served_after = started.elapsed();
    let mut last = Duration::ZERO;
    for (who, t) in tries {
        let closed = t.await.unwrap();
        assert_eq!(
            closed.reason(),
            Some(ReasonCode::BadUserNameOrPassword),
            "{closed:?}"
        );
        let [listener, peer] = who.needles();
        let log = logs()
            .line(&["authentication failed", &listener, &peer])
            .await;
        assert!(
            log.contains("username=alice") && !log.contains("secret"),
            "{log}"
        );
        last = last.max(started.elapsed());
    }
    let text = logs().text();
    assert!(!text.contains("-secret"), "a password was logged");
    println!(
        "| 12 wrong passwords at once | CONNACK 0x86 each, the last after {last:?}; the other client served after {served_after:?}; password never logged | - | WARN authentication failed conn=.. listener=.. peer=.. client_id=guess0 username=alice |"
    );
    // A client that floods while its CONNECT waits for the password check: what it sends
    // before CONNACK is held up to max_packet_size, then it is closed.
    let mut raw = Raw::open(bed.addr).await;
    let mut bytes = connect_with_credentials(ProtocolVersion::V5, "eager", "alice", "wrong-secret");
    while bytes.len() < 3 * MAX_PACKET {
        bytes.extend(publish_packet(ProtocolVersion::V5, b"early", &[0; 4000]));
    }
    let who = raw.who.clone();
    raw.s.write_all(&bytes).await.ok();
    let (read, after) = raw.drained().await;
    assert_eq!(read, 0, "nothing is sent before CONNACK");
    let log = who.log_line().await;
    assert!(log.contains("while CONNECT waited"), "{log}");
    println!(
        "| {} bytes sent right after CONNECT, before the password check ends | closed, nothing sent | {after:?} | {} |",
        bytes.len(),
        log.split_once("client disconnected").map_or(&log[..], |(_, l)| l).trim()
    );
    bed.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
