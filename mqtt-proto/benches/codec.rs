//! Codec benchmarks: mqtt-proto against the codecs of `mqttbytes` 0.6 and `rumqttc` 0.25
//! (`rumqttc::mqttbytes::v4` and `rumqttc::v5::mqttbytes::v5`), side by side.
//!
//! Each criterion group is one case (packet, size, protocol version, decode or encode)
//! and holds one function per implementation, so the report compares them directly. One
//! iteration is one packet (`Throughput::Elements(1)`).
//!
//! - **Decode**: every implementation reads the same bytes (the frame mqtt-proto encodes,
//!   which each peer is checked once to decode to the expected packet) from a `BytesMut`
//!   holding [`BATCH`] copies of the frame, through its stream-level entry point
//!   (`Decoder::decode`, `mqttbytes::v4::read`/`v5::read`, `rumqttc`'s `Packet::read`).
//!   Only the decode loop is timed; filling the buffer is not. Dropping each decoded packet
//!   is timed, as it is part of handling a packet.
//! - **Encode**: into one reused `BytesMut`, cleared before each packet. mqtt-proto goes
//!   through `Packet::encode` (which also checks the packet and the maximum size); the
//!   peers through their per-packet `write`, their fastest public path. Every peer's
//!   output is checked once to be byte for byte the same as mqtt-proto's.
//!
//! Run with `cargo bench -p mqtt-proto --bench codec`.

use bytes::{Bytes, BytesMut};
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use mqtt_proto::{
    Connect, Decoder, MqttString, Packet, PacketId, ProtocolVersion, Publish, QoS, Subscribe,
    Subscription, SubscriptionOptions, TopicFilter, TopicName, MAX_PACKET_SIZE,
};
use std::hint::black_box;
use std::time::{Duration, Instant};

use mqttbytes::v4 as mb4;
use mqttbytes::v5 as mb5;
use rumqttc::mqttbytes::v4 as rc4;
use rumqttc::v5::mqttbytes::v5 as rc5;

/// Frames per decode buffer: the buffer's one-time promotion to shared storage (one
/// allocation, on the first `split_to`) is spread over this many packets, as it is over a
/// connection's read buffer.
const BATCH: usize = 256;
/// Largest packet the peers accept when decoding.
const PEER_MAX: usize = 1 << 20;

const TOPIC: &str = "sensors/building-7/floor-3/room-12/temperature";
const PACKET_ID: u16 = 4242;
const CLIENT_ID: &str = "sensor-gateway-0042";
const USERNAME: &str = "gateway";
const PASSWORD: &str = "s3cret-passw0rd";
const KEEP_ALIVE: u16 = 30;
const PAYLOAD_SIZES: [(usize, &str); 3] = [(16, "16B"), (256, "256B"), (4096, "4KiB")];

const IMPL: &str = "mqtt-proto";
const MQTTBYTES: &str = "mqttbytes";
const RUMQTTC: &str = "rumqttc";

#[derive(Clone, Copy, PartialEq)]
enum Version {
    V311,
    V5,
}

impl Version {
    fn proto(self) -> ProtocolVersion {
        match self {
            Version::V311 => ProtocolVersion::V3_1_1,
            Version::V5 => ProtocolVersion::V5,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Version::V311 => "v3.1.1",
            Version::V5 => "v5",
        }
    }
}

fn payload(size: usize) -> Bytes {
    (0..size)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn subscribe_filters() -> Vec<String> {
    (0..10)
        .map(|i| format!("sensors/building-{i}/+/room-{i}/#"))
        .collect()
}

fn encode(packet: &Packet, version: Version) -> Bytes {
    let mut buf = BytesMut::new();
    packet
        .encode(&mut buf, version.proto(), MAX_PACKET_SIZE)
        .expect("encodes");
    buf.freeze()
}

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(1));
    g
}

/// Times `decode` on a buffer holding [`BATCH`] copies of `frame`, refilled (untimed)
/// whenever it is used up.
// Benchmarks read the clock; the crate's ban on `Instant::now` is for library code.
#[allow(clippy::disallowed_methods)]
fn bench_decode<T>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    frame: &[u8],
    mut decode: impl FnMut(&mut BytesMut) -> T,
) {
    let template = frame.repeat(BATCH);
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(BATCH as u64) as usize;
                let mut buf = BytesMut::from(&template[..n * frame.len()]);
                let start = Instant::now();
                for _ in 0..n {
                    black_box(decode(black_box(&mut buf)));
                }
                total += start.elapsed();
                assert!(buf.is_empty(), "{name}: bytes left over");
                left -= n as u64;
            }
            total
        })
    });
}

/// Times `encode` into a reused, cleared buffer, after checking once that it writes
/// `expected`.
fn bench_encode(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    expected: &[u8],
    mut encode: impl FnMut(&mut BytesMut),
) {
    let mut buf = BytesMut::with_capacity(expected.len() + 64);
    encode(&mut buf);
    assert_eq!(&buf[..], expected, "{name} encodes different bytes");
    g.bench_function(name, |b| {
        b.iter(|| {
            buf.clear();
            encode(black_box(&mut buf));
            black_box(&buf);
        })
    });
}

// ---------------------------------------------------------------------------------------
// PUBLISH, QoS 1

fn publish(payload: &Bytes) -> Packet {
    let mut p = Publish::new(TopicName::new(TOPIC).unwrap(), payload.clone());
    p.qos = QoS::AtLeastOnce;
    p.packet_id = PacketId::new(PACKET_ID);
    Packet::Publish(p)
}

/// Checks once that each peer decodes `frame` to the PUBLISH it encodes.
fn check_publish(frame: &Bytes, payload: &Bytes, version: Version) {
    let ours = Decoder::client(version.proto())
        .decode(&mut BytesMut::from(&frame[..]))
        .unwrap()
        .unwrap();
    assert_eq!(ours, publish(payload));
    match version {
        Version::V311 => {
            let Ok(mb4::Packet::Publish(p)) = mb4::read(&mut BytesMut::from(&frame[..]), PEER_MAX)
            else {
                panic!("mqttbytes v4 does not decode our PUBLISH");
            };
            assert_eq!(p, mb4_publish(payload));
            let Ok(rc4::Packet::Publish(p)) =
                rc4::Packet::read(&mut BytesMut::from(&frame[..]), PEER_MAX)
            else {
                panic!("rumqttc v4 does not decode our PUBLISH");
            };
            assert_eq!(p, rc4_publish(payload));
        }
        Version::V5 => {
            let Ok(mb5::Packet::Publish(p)) = mb5::read(&mut BytesMut::from(&frame[..]), PEER_MAX)
            else {
                panic!("mqttbytes v5 does not decode our PUBLISH");
            };
            assert!(p == mb5_publish(payload), "mqttbytes v5 PUBLISH differs");
            let Ok(rc5::Packet::Publish(p)) =
                rc5::Packet::read(&mut BytesMut::from(&frame[..]), Some(PEER_MAX as u32))
            else {
                panic!("rumqttc v5 does not decode our PUBLISH");
            };
            assert_eq!(p, rc5_publish(payload));
        }
    }
}

fn mb4_publish(payload: &Bytes) -> mb4::Publish {
    let mut p = mb4::Publish::from_bytes(TOPIC, mqttbytes::QoS::AtLeastOnce, payload.clone());
    p.pkid = PACKET_ID;
    p
}

fn mb5_publish(payload: &Bytes) -> mb5::Publish {
    let mut p = mb5::Publish::from_bytes(TOPIC, mqttbytes::QoS::AtLeastOnce, payload.clone());
    p.pkid = PACKET_ID;
    p
}

fn rc4_publish(payload: &Bytes) -> rc4::Publish {
    let mut p =
        rc4::Publish::from_bytes(TOPIC, rumqttc::mqttbytes::QoS::AtLeastOnce, payload.clone());
    p.pkid = PACKET_ID;
    p
}

fn rc5_publish(payload: &Bytes) -> rc5::Publish {
    let mut p = rc5::Publish::new(
        TOPIC,
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        payload.clone(),
        None,
    );
    p.pkid = PACKET_ID;
    p
}

fn bench_publish(c: &mut Criterion) {
    for version in [Version::V311, Version::V5] {
        for (size, label) in PAYLOAD_SIZES {
            let payload = payload(size);
            let packet = publish(&payload);
            let frame = encode(&packet, version);
            check_publish(&frame, &payload, version);
            let case = format!("publish_qos1_{label}_{}", version.label());

            let mut g = group(c, &format!("decode_{case}"));
            let mut decoder = Decoder::client(version.proto());
            bench_decode(&mut g, IMPL, &frame, |b| {
                decoder.decode(b).unwrap().unwrap()
            });
            match version {
                Version::V311 => {
                    bench_decode(&mut g, MQTTBYTES, &frame, |b| {
                        mb4::read(b, PEER_MAX).unwrap()
                    });
                    bench_decode(&mut g, RUMQTTC, &frame, |b| {
                        rc4::Packet::read(b, PEER_MAX).unwrap()
                    });
                }
                Version::V5 => {
                    bench_decode(&mut g, MQTTBYTES, &frame, |b| {
                        mb5::read(b, PEER_MAX).unwrap()
                    });
                    bench_decode(&mut g, RUMQTTC, &frame, |b| {
                        rc5::Packet::read(b, Some(PEER_MAX as u32)).unwrap()
                    });
                }
            }
            g.finish();

            let mut g = group(c, &format!("encode_{case}"));
            let v = version.proto();
            bench_encode(&mut g, IMPL, &frame, |b| {
                black_box(&packet).encode(b, v, MAX_PACKET_SIZE).unwrap();
            });
            match version {
                Version::V311 => {
                    let p = mb4_publish(&payload);
                    bench_encode(&mut g, MQTTBYTES, &frame, |b| {
                        black_box(&p).write(b).unwrap();
                    });
                    let p = rc4_publish(&payload);
                    bench_encode(&mut g, RUMQTTC, &frame, |b| {
                        black_box(&p).write(b).unwrap();
                    });
                }
                Version::V5 => {
                    let p = mb5_publish(&payload);
                    bench_encode(&mut g, MQTTBYTES, &frame, |b| {
                        black_box(&p).write(b).unwrap();
                    });
                    let p = rc5_publish(&payload);
                    bench_encode(&mut g, RUMQTTC, &frame, |b| {
                        black_box(&p).write(b).unwrap();
                    });
                }
            }
            g.finish();
        }
    }
}

// ---------------------------------------------------------------------------------------
// CONNECT with client id, username, password and keep alive

fn connect(version: Version) -> Packet {
    let mut c = Connect::new(version.proto(), MqttString::new(CLIENT_ID).unwrap());
    c.keep_alive = KEEP_ALIVE;
    c.username = Some(MqttString::new(USERNAME).unwrap());
    c.password = Some(Bytes::from_static(PASSWORD.as_bytes()));
    Packet::Connect(Box::new(c))
}

fn mb4_connect() -> mb4::Connect {
    let mut c = mb4::Connect::new(CLIENT_ID);
    c.keep_alive = KEEP_ALIVE;
    c.set_login(USERNAME, PASSWORD);
    c
}

fn mb5_connect() -> mb5::Connect {
    let mut c = mb5::Connect::new(CLIENT_ID);
    c.keep_alive = KEEP_ALIVE;
    c.set_login(USERNAME, PASSWORD);
    c
}

fn rc4_connect() -> rc4::Connect {
    let mut c = rc4::Connect::new(CLIENT_ID);
    c.keep_alive = KEEP_ALIVE;
    c.set_login(USERNAME, PASSWORD);
    c
}

type Rc5Connect = (rc5::Connect, Option<rc5::LastWill>, Option<rc5::Login>);

fn rc5_connect() -> Rc5Connect {
    let c = rc5::Connect {
        keep_alive: KEEP_ALIVE,
        client_id: CLIENT_ID.into(),
        clean_start: true,
        properties: None,
    };
    (c, None, Some(rc5::Login::new(USERNAME, PASSWORD)))
}

fn check_connect(frame: &Bytes, version: Version) {
    let ours = Decoder::server()
        .decode(&mut BytesMut::from(&frame[..]))
        .unwrap()
        .unwrap();
    assert_eq!(ours, connect(version));
    match version {
        Version::V311 => {
            let Ok(mb4::Packet::Connect(c)) = mb4::read(&mut BytesMut::from(&frame[..]), PEER_MAX)
            else {
                panic!("mqttbytes v4 does not decode our CONNECT");
            };
            assert_eq!(c, mb4_connect());
            let Ok(rc4::Packet::Connect(c)) =
                rc4::Packet::read(&mut BytesMut::from(&frame[..]), PEER_MAX)
            else {
                panic!("rumqttc v4 does not decode our CONNECT");
            };
            assert_eq!(c, rc4_connect());
        }
        Version::V5 => {
            let Ok(mb5::Packet::Connect(c)) = mb5::read(&mut BytesMut::from(&frame[..]), PEER_MAX)
            else {
                panic!("mqttbytes v5 does not decode our CONNECT");
            };
            assert!(c == mb5_connect(), "mqttbytes v5 CONNECT differs");
            let Ok(rc5::Packet::Connect(c, w, l)) =
                rc5::Packet::read(&mut BytesMut::from(&frame[..]), Some(PEER_MAX as u32))
            else {
                panic!("rumqttc v5 does not decode our CONNECT");
            };
            assert_eq!((c, w, l), rc5_connect());
        }
    }
}

fn bench_connect(c: &mut Criterion) {
    for version in [Version::V311, Version::V5] {
        let packet = connect(version);
        let frame = encode(&packet, version);
        check_connect(&frame, version);
        let case = format!("connect_{}", version.label());

        let mut g = group(c, &format!("decode_{case}"));
        let mut decoder = Decoder::server();
        bench_decode(&mut g, IMPL, &frame, |b| {
            decoder.decode(b).unwrap().unwrap()
        });
        match version {
            Version::V311 => {
                bench_decode(&mut g, MQTTBYTES, &frame, |b| {
                    mb4::read(b, PEER_MAX).unwrap()
                });
                bench_decode(&mut g, RUMQTTC, &frame, |b| {
                    rc4::Packet::read(b, PEER_MAX).unwrap()
                });
            }
            Version::V5 => {
                bench_decode(&mut g, MQTTBYTES, &frame, |b| {
                    mb5::read(b, PEER_MAX).unwrap()
                });
                bench_decode(&mut g, RUMQTTC, &frame, |b| {
                    rc5::Packet::read(b, Some(PEER_MAX as u32)).unwrap()
                });
            }
        }
        g.finish();

        let mut g = group(c, &format!("encode_{case}"));
        let v = version.proto();
        bench_encode(&mut g, IMPL, &frame, |b| {
            black_box(&packet).encode(b, v, MAX_PACKET_SIZE).unwrap();
        });
        match version {
            Version::V311 => {
                let p = mb4_connect();
                bench_encode(&mut g, MQTTBYTES, &frame, |b| {
                    black_box(&p).write(b).unwrap();
                });
                let p = rc4_connect();
                bench_encode(&mut g, RUMQTTC, &frame, |b| {
                    black_box(&p).write(b).unwrap();
                });
            }
            Version::V5 => {
                let p = mb5_connect();
                bench_encode(&mut g, MQTTBYTES, &frame, |b| {
                    black_box(&p).write(b).unwrap();
                });
                let (p, w, l) = rc5_connect();
                bench_encode(&mut g, RUMQTTC, &frame, |b| {
                    black_box(&p).write(&w, &l, b).unwrap();
                });
            }
        }
        g.finish();
    }
}

// ---------------------------------------------------------------------------------------
// SUBSCRIBE with 10 topic filters, QoS 1

fn subscribe() -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(PACKET_ID).unwrap(),
        properties: Default::default(),
        subscriptions: subscribe_filters()
            .iter()
            .map(|f| Subscription {
                filter: TopicFilter::new(f).unwrap(),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..SubscriptionOptions::default()
                },
            })
            .collect(),
    })
}

fn mb4_subscribe() -> mb4::Subscribe {
    let mut s = mb4::Subscribe::new_many(
        subscribe_filters()
            .into_iter()
            .map(|f| mb4::SubscribeFilter::new(f, mqttbytes::QoS::AtLeastOnce)),
    );
    s.pkid = PACKET_ID;
    s
}

fn mb5_subscribe() -> mb5::Subscribe {
    let mut s = mb5::Subscribe::new_many(
        subscribe_filters()
            .into_iter()
            .map(|f| mb5::SubscribeFilter::new(f, mqttbytes::QoS::AtLeastOnce)),
    );
    s.pkid = PACKET_ID;
    s
}

fn rc4_subscribe() -> rc4::Subscribe {
    let mut s = rc4::Subscribe::new_many(
        subscribe_filters()
            .into_iter()
            .map(|f| rc4::SubscribeFilter::new(f, rumqttc::mqttbytes::QoS::AtLeastOnce)),
    );
    s.pkid = PACKET_ID;
    s
}

fn rc5_subscribe() -> rc5::Subscribe {
    let mut s = rc5::Subscribe::new_many(
        subscribe_filters()
            .into_iter()
            .map(|f| rc5::Filter::new(f, rumqttc::v5::mqttbytes::QoS::AtLeastOnce)),
        None,
    );
    s.pkid = PACKET_ID;
    s
}

fn check_subscribe(frame: &Bytes, version: Version) {
    let mut decoder = Decoder::server();
    decoder.set_version(version.proto());
    let ours = decoder
        .decode(&mut BytesMut::from(&frame[..]))
        .unwrap()
        .unwrap();
    assert_eq!(ours, subscribe());
    match version {
        Version::V311 => {
            let Ok(mb4::Packet::Subscribe(s)) =
                mb4::read(&mut BytesMut::from(&frame[..]), PEER_MAX)
            else {
                panic!("mqttbytes v4 does not decode our SUBSCRIBE");
            };
            assert_eq!(s, mb4_subscribe());
            let Ok(rc4::Packet::Subscribe(s)) =
                rc4::Packet::read(&mut BytesMut::from(&frame[..]), PEER_MAX)
            else {
                panic!("rumqttc v4 does not decode our SUBSCRIBE");
            };
            assert_eq!(s, rc4_subscribe());
        }
        Version::V5 => {
            let Ok(mb5::Packet::Subscribe(s)) =
                mb5::read(&mut BytesMut::from(&frame[..]), PEER_MAX)
            else {
                panic!("mqttbytes v5 does not decode our SUBSCRIBE");
            };
            assert!(s == mb5_subscribe(), "mqttbytes v5 SUBSCRIBE differs");
            let Ok(rc5::Packet::Subscribe(s)) =
                rc5::Packet::read(&mut BytesMut::from(&frame[..]), Some(PEER_MAX as u32))
            else {
                panic!("rumqttc v5 does not decode our SUBSCRIBE");
            };
            assert_eq!(s, rc5_subscribe());
        }
    }
}

fn bench_subscribe(c: &mut Criterion) {
    for version in [Version::V311, Version::V5] {
        let packet = subscribe();
        let frame = encode(&packet, version);
        check_subscribe(&frame, version);
        let case = format!("subscribe_10_{}", version.label());

        let mut g = group(c, &format!("decode_{case}"));
        let mut decoder = Decoder::server();
        decoder.set_version(version.proto());
        bench_decode(&mut g, IMPL, &frame, |b| {
            decoder.decode(b).unwrap().unwrap()
        });
        match version {
            Version::V311 => {
                bench_decode(&mut g, MQTTBYTES, &frame, |b| {
                    mb4::read(b, PEER_MAX).unwrap()
                });
                bench_decode(&mut g, RUMQTTC, &frame, |b| {
                    rc4::Packet::read(b, PEER_MAX).unwrap()
                });
            }
            Version::V5 => {
                bench_decode(&mut g, MQTTBYTES, &frame, |b| {
                    mb5::read(b, PEER_MAX).unwrap()
                });
                bench_decode(&mut g, RUMQTTC, &frame, |b| {
                    rc5::Packet::read(b, Some(PEER_MAX as u32)).unwrap()
                });
            }
        }
        g.finish();

        let mut g = group(c, &format!("encode_{case}"));
        let v = version.proto();
        bench_encode(&mut g, IMPL, &frame, |b| {
            black_box(&packet).encode(b, v, MAX_PACKET_SIZE).unwrap();
        });
        match version {
            Version::V311 => {
                let p = mb4_subscribe();
                bench_encode(&mut g, MQTTBYTES, &frame, |b| {
                    black_box(&p).write(b).unwrap();
                });
                let p = rc4_subscribe();
                bench_encode(&mut g, RUMQTTC, &frame, |b| {
                    black_box(&p).write(b).unwrap();
                });
            }
            Version::V5 => {
                let p = mb5_subscribe();
                bench_encode(&mut g, MQTTBYTES, &frame, |b| {
                    black_box(&p).write(b).unwrap();
                });
                let p = rc5_subscribe();
                bench_encode(&mut g, RUMQTTC, &frame, |b| {
                    black_box(&p).write(b).unwrap();
                });
            }
        }
        g.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_publish, bench_connect, bench_subscribe
}
criterion_main!(benches);
