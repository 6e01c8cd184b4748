#![allow(unsafe_code)] // `clock_gettime` below; nothing else here is unsafe
//! The cases of `benches/codec.rs`, timed in CPU time of the thread rather than wall-clock
//! time, so that another process sharing the CPU does not count: a time slice lost to it
//! is not charged to the codec. Cache and branch-predictor pollution by that process
//! still is, so figures still move a little from run to run.
//!
//! Each case runs every implementation for a fixed number of packets, in turn, several
//! rounds; the lowest time per packet of the rounds is printed, in nanoseconds. Decoding
//! reads from buffers of 256 frames as `codec.rs` does; the time to fill those buffers
//! (measured alone with the same loop) is taken off. Each encoder's output is checked
//! once to be mqtt-proto's, byte for byte, and each decoder to use up its buffer.
//!
//! ```text
//! cargo bench -p mqtt-proto --bench codec_cpu            # every case
//! cargo bench -p mqtt-proto --bench codec_cpu -- decode  # cases whose name holds "decode"
//! ```

use bytes::{Bytes, BytesMut};
use mqtt_proto::{
    Connect, Decoder, MqttString, Packet, PacketId, ProtocolVersion, Publish, QoS, Subscribe,
    Subscription, SubscriptionOptions, TopicFilter, TopicName, MAX_PACKET_SIZE,
};
use std::hint::black_box;

use mqttbytes::v4 as mb4;
use mqttbytes::v5 as mb5;
use rumqttc::mqttbytes::v4 as rc4;
use rumqttc::v5::mqttbytes::v5 as rc5;

const BATCH: usize = 256;
const PEER_MAX: usize = 1 << 20;
const ROUNDS: usize = 5;
/// Packets per measurement: enough for tens of milliseconds, few enough for the whole
/// run to take under a minute.
const PACKETS_PER_RUN: usize = 400_000;

const TOPIC: &str = "sensors/building-7/floor-3/room-12/temperature";
const PACKET_ID: u16 = 4242;
const CLIENT_ID: &str = "sensor-gateway-0042";
const USERNAME: &str = "gateway";
const PASSWORD: &str = "s3cret-passw0rd";
const KEEP_ALIVE: u16 = 30;

/// CPU time of this thread, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable `timespec`; the clock id is a constant the
    // kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn payload(size: usize) -> Bytes {
    (0..size)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn filters() -> Vec<String> {
    (0..10)
        .map(|i| format!("sensors/building-{i}/+/room-{i}/#"))
        .collect()
}

#[derive(Clone, Copy)]
enum Shape {
    Publish(usize),
    Connect,
    Subscribe,
}

fn packet(shape: Shape, v: ProtocolVersion) -> Packet {
    match shape {
        Shape::Publish(size) => {
            let mut p = Publish::new(TopicName::new(TOPIC).unwrap(), payload(size));
            p.qos = QoS::AtLeastOnce;
            p.packet_id = PacketId::new(PACKET_ID);
            Packet::Publish(p)
        }
        Shape::Connect => {
            let mut c = Connect::new(v, MqttString::new(CLIENT_ID).unwrap());
            c.keep_alive = KEEP_ALIVE;
            c.username = Some(MqttString::new(USERNAME).unwrap());
            c.password = Some(Bytes::from_static(PASSWORD.as_bytes()));
            Packet::Connect(Box::new(c))
        }
        Shape::Subscribe => Packet::Subscribe(Subscribe {
            packet_id: PacketId::new(PACKET_ID).unwrap(),
            properties: Default::default(),
            subscriptions: filters()
                .iter()
                .map(|f| Subscription {
                    filter: TopicFilter::new(f).unwrap(),
                    options: SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        ..SubscriptionOptions::default()
                    },
                })
                .collect(),
        }),
    }
}

/// CPU time of `n` encodes of the case's packet by `mqttbytes`.
fn mb_encode(shape: Shape, v5: bool, expected: &[u8], n: usize) -> u64 {
    use mqttbytes::QoS::AtLeastOnce;
    match (shape, v5) {
        (Shape::Publish(size), false) => {
            let mut p = mb4::Publish::from_bytes(TOPIC, AtLeastOnce, payload(size));
            p.pkid = PACKET_ID;
            time_encode(expected, n, |b: &mut BytesMut| {
                black_box(&p).write(b).unwrap();
            })
        }
        (Shape::Publish(size), true) => {
            let mut p = mb5::Publish::from_bytes(TOPIC, AtLeastOnce, payload(size));
            p.pkid = PACKET_ID;
            time_encode(expected, n, |b: &mut BytesMut| {
                black_box(&p).write(b).unwrap();
            })
        }
        (Shape::Connect, false) => {
            let mut c = mb4::Connect::new(CLIENT_ID);
            c.keep_alive = KEEP_ALIVE;
            c.set_login(USERNAME, PASSWORD);
            time_encode(expected, n, |b: &mut BytesMut| {
                black_box(&c).write(b).unwrap();
            })
        }
        (Shape::Connect, true) => {
            let mut c = mb5::Connect::new(CLIENT_ID);
            c.keep_alive = KEEP_ALIVE;
            c.set_login(USERNAME, PASSWORD);
            time_encode(expected, n, |b: &mut BytesMut| {
                black_box(&c).write(b).unwrap();
            })
        }
        (Shape::Subscribe, false) => {
            let f = filters().into_iter();
            let mut s =
                mb4::Subscribe::new_many(f.map(|f| mb4::SubscribeFilter::new(f, AtLeastOnce)));
            s.pkid = PACKET_ID;
            time_encode(expected, n, |b: &mut BytesMut| {
                black_box(&s).write(b).unwrap();
            })
        }
        (Shape::Subscribe, true) => {
            let f = filters().into_iter();
            let mut s =
                mb5::Subscribe::new_many(f.map(|f| mb5::SubscribeFilter::new(f, AtLeastOnce)));
            s.pkid = PACKET_ID;
            time_encode(expected, n, |b: &mut BytesMut| {
                black_box(&s).write(b).unwrap();
            })
        }
    }
}

/// CPU time of `n` encodes of the case's packet by `rumqttc`.
fn rc_encode(shape: Shape, v5: bool, expected: &[u8], n: usize) -> u64 {
    use rumqttc::mqttbytes::QoS::AtLeastOnce as Q4;
    use rumqttc::v5::mqttbytes::QoS::AtLeastOnce as Q5;
    match (shape, v5) {
        (Shape::Publish(size), false) => {
            let mut p = rc4::Publish::from_bytes(TOPIC, Q4, payload(size));
            p.pkid = PACKET_ID;
            time_encode(expected, n, |b: &mut BytesMut| {
                black_box(&p).write(b).unwrap();
            })
        }
        (Shape::Publish(size), true) => {
            let mut p = rc5::Publish::new(TOPIC, Q5, payload(size), None);
            p.pkid = PACKET_ID;
            time_encode(expected, n, |b: &mut BytesMut| {
                black_box(&p).write(b).unwrap();
            })
        }
        (Shape::Connect, false) => {
            let mut c = rc4::Connect::new(CLIENT_ID);
            c.keep_alive = KEEP_ALIVE;
            c.set_login(USERNAME, PASSWORD);
            time_encode(expected, n, |b: &mut BytesMut| {
                black_box(&c).write(b).unwrap();
            })
        }
        (Shape::Connect, true) => {
            let c = rc5::Connect {
                keep_alive: KEEP_ALIVE,
                client_id: CLIENT_ID.into(),
                clean_start: true,
                properties: None,
            };
            let login = Some(rc5::Login::new(USERNAME, PASSWORD));
            time_encode(expected, n, |b: &mut BytesMut| {
                black_box(&c).write(&None, &login, b).unwrap();
            })
        }
        (Shape::Subscribe, false) => {
            let f = filters().into_iter();
            let mut s = rc4::Subscribe::new_many(f.map(|f| rc4::SubscribeFilter::new(f, Q4)));
            s.pkid = PACKET_ID;
            time_encode(expected, n, |b: &mut BytesMut| {
                black_box(&s).write(b).unwrap();
            })
        }
        (Shape::Subscribe, true) => {
            let f = filters().into_iter();
            let mut s = rc5::Subscribe::new_many(f.map(|f| rc5::Filter::new(f, Q5)), None);
            s.pkid = PACKET_ID;
            time_encode(expected, n, |b: &mut BytesMut| {
                black_box(&s).write(b).unwrap();
            })
        }
    }
}

/// CPU time of decoding `n` frames with `decode`, buffer refills included.
fn time_decode(frame: &[u8], n: usize, mut decode: impl FnMut(&mut BytesMut)) -> u64 {
    let template = frame.repeat(BATCH);
    let start = thread_cpu_ns();
    let mut left = n;
    while left > 0 {
        let k = left.min(BATCH);
        let mut buf = BytesMut::from(&template[..k * frame.len()]);
        for _ in 0..k {
            decode(black_box(&mut buf));
        }
        assert!(buf.is_empty(), "bytes left over");
        left -= k;
    }
    thread_cpu_ns() - start
}

/// CPU time of encoding `n` packets with `encode` into a reused buffer.
fn time_encode(expected: &[u8], n: usize, mut encode: impl FnMut(&mut BytesMut)) -> u64 {
    let mut buf = BytesMut::with_capacity(expected.len() + 64);
    encode(&mut buf);
    assert_eq!(&buf[..], expected, "encodes different bytes");
    let start = thread_cpu_ns();
    for _ in 0..n {
        buf.clear();
        encode(black_box(&mut buf));
        black_box(&buf);
    }
    thread_cpu_ns() - start
}

/// Runs `runs` (mqtt-proto, mqttbytes, rumqttc) for `ROUNDS` rounds in turn and prints
/// the lowest time per packet of each, less `baseline` (also the lowest), and the
/// fastest peer's time divided by mqtt-proto's: above 1 means mqtt-proto is faster.
fn report(
    case: &str,
    n: usize,
    runs: &mut [Box<dyn FnMut() -> u64 + '_>],
    baseline: Option<&mut dyn FnMut() -> u64>,
) {
    let mut best = vec![u64::MAX; runs.len()];
    let mut base = if baseline.is_some() { u64::MAX } else { 0 };
    let mut baseline = baseline;
    for _ in 0..ROUNDS {
        if let Some(f) = baseline.as_mut() {
            base = base.min(f());
        }
        for (b, run) in best.iter_mut().zip(runs.iter_mut()) {
            *b = (*b).min(run());
        }
    }
    let per = |t: u64| t.saturating_sub(base) as f64 / n as f64;
    let ours = per(best[0]);
    let peer = per(best[1]).min(per(best[2]));
    println!(
        "{case:<34} {:>9.1} {:>9.1} {:>9.1} {:>7.2}x",
        ours,
        per(best[1]),
        per(best[2]),
        peer / ours
    );
}

fn main() {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>8}",
        "case (ns of CPU time per packet)", "mqtt-proto", "mqttbytes", "rumqttc", "peer÷ours"
    );
    let shapes = [
        ("publish_qos1_16B", Shape::Publish(16)),
        ("publish_qos1_256B", Shape::Publish(256)),
        ("publish_qos1_4KiB", Shape::Publish(4096)),
        ("connect", Shape::Connect),
        ("subscribe_10", Shape::Subscribe),
    ];
    for (v, label) in [
        (ProtocolVersion::V3_1_1, "v3.1.1"),
        (ProtocolVersion::V5, "v5"),
    ] {
        let v5 = v.is_v5();
        for (name, shape) in shapes {
            let packet = packet(shape, v);
            let mut frame = BytesMut::new();
            packet.encode(&mut frame, v, MAX_PACKET_SIZE).unwrap();
            let frame = frame.freeze();
            let n = PACKETS_PER_RUN;

            let case = format!("decode_{name}_{label}");
            if filter.as_ref().is_none_or(|f| case.contains(f.as_str())) {
                let new_decoder = || match shape {
                    Shape::Connect => Decoder::server(),
                    _ => Decoder::client(v),
                };
                let once = new_decoder().decode(&mut BytesMut::from(&frame[..]));
                assert_eq!(once, Ok(Some(packet.clone())), "{case}");
                let mut decoder = new_decoder();
                let mut ours = |b: &mut BytesMut| {
                    black_box(decoder.decode(b).unwrap().unwrap());
                };
                let mut mb = |b: &mut BytesMut| match v5 {
                    true => drop(black_box(mb5::read(b, PEER_MAX).unwrap())),
                    false => drop(black_box(mb4::read(b, PEER_MAX).unwrap())),
                };
                let mut rc = |b: &mut BytesMut| match v5 {
                    true => drop(black_box(
                        rc5::Packet::read(b, Some(PEER_MAX as u32)).unwrap(),
                    )),
                    false => drop(black_box(rc4::Packet::read(b, PEER_MAX).unwrap())),
                };
                let f = &frame[..];
                let mut fill = || time_decode(f, n, |b: &mut BytesMut| b.clear());
                report(
                    &case,
                    n,
                    &mut [
                        Box::new(|| time_decode(f, n, &mut ours)),
                        Box::new(|| time_decode(f, n, &mut mb)),
                        Box::new(|| time_decode(f, n, &mut rc)),
                    ],
                    Some(&mut fill),
                );
            }

            let case = format!("encode_{name}_{label}");
            if filter.as_ref().is_none_or(|f| case.contains(f.as_str())) {
                let mut ours = |b: &mut BytesMut| {
                    black_box(&packet).encode(b, v, MAX_PACKET_SIZE).unwrap();
                };
                let f = &frame[..];
                report(
                    &case,
                    n,
                    &mut [
                        Box::new(|| time_encode(f, n, &mut ours)),
                        Box::new(|| mb_encode(shape, v5, f, n)),
                        Box::new(|| rc_encode(shape, v5, f, n)),
                    ],
                    None,
                );
            }
        }
    }
}
