//! The broker core's CPU per message, in memory (no sockets):
//!
//! - `route`: matching a topic against 100k subscriptions (exact, `+` and `#` filters);
//! - `fan-out`: one PUBLISH to 1,000 subscribers (half 3.1.1, half 5.0), encoded once per
//!   kind, QoS 0, and QoS 1 with every subscriber's PUBACK fed back;
//! - `fan-in`: PUBLISHes from 10 publishers to one subscriber, per message.
//!
//! `cargo bench -p mqtt-broker --bench broker`

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use mqtt_broker::{Broker, BrokerConfig, ConnId, ConnInfo, Output, SubEntry, SubscriptionTree};
use mqtt_proto::*;
use std::hint::black_box;
use std::time::{Duration, Instant};

fn encode(v: ProtocolVersion, p: Packet) -> Bytes {
    let mut b = BytesMut::new();
    p.encode(&mut b, v, MAX_PACKET_SIZE).unwrap();
    b.freeze()
}

fn connect(
    b: &mut Broker,
    now: Instant,
    id: ConnId,
    v: ProtocolVersion,
    filter: Option<(&str, QoS)>,
) {
    b.handle_connection(now, id, ConnInfo::default());
    let c = Connect::new(v, MqttString::new(&format!("c{id}")).unwrap());
    b.handle_input(now, id, &encode(v, Packet::Connect(Box::new(c))));
    if let Some((f, qos)) = filter {
        let s = Subscribe {
            packet_id: PacketId::new(1).unwrap(),
            properties: Default::default(),
            subscriptions: vec![Subscription {
                filter: TopicFilter::new(f).unwrap(),
                options: SubscriptionOptions {
                    qos,
                    ..Default::default()
                },
            }],
        };
        b.handle_input(now, id, &encode(v, Packet::Subscribe(s)));
    }
    while b.poll_output().is_some() {}
}

/// Drains the outputs; returns the bytes handed to connections.
fn drain(b: &mut Broker) -> usize {
    let mut n = 0;
    while let Some(o) = b.poll_output() {
        if let Output::Transmit(_, bytes) = o {
            n += bytes.len();
        }
    }
    n
}

fn bench_route(c: &mut Criterion) {
    let mut tree = SubscriptionTree::default();
    let entry = SubEntry {
        options: SubscriptionOptions::default(),
        id: None,
    };
    // 100k filters: 80% exact, 15% with '+', 5% with '#'. Each of the 1,000 sites gets 100
    // of them in that mix (5 `site/{s}/#`, 15 `site/{s}/+/temp`, 80 exact), so a lookup
    // walks the wildcard branches as well as the exact one.
    for i in 0..100_000u64 {
        let site = (i / 20) % 1000;
        let f = match i % 20 {
            0 => format!("site/{site}/#"),
            1..=3 => format!("site/{site}/+/temp"),
            _ => format!("site/{site}/dev{i}/temp"),
        };
        tree.insert(&TopicFilter::new(&f).unwrap(), i, entry.clone());
    }
    assert_eq!(tree.len(), 100_000);
    // Device 8344 is at site 417: its topic matches 5 '#', 15 '+' and 1 exact filter.
    let topic = "site/417/dev8344/temp";
    let mut out = Vec::new();
    tree.route(topic, |_| true, &mut out);
    assert_eq!(out.len(), 21);
    let mut g = c.benchmark_group("route");
    g.throughput(Throughput::Elements(1));
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(2));
    g.bench_function("100k subscriptions", |b| {
        b.iter(|| {
            out.clear();
            tree.route(black_box(topic), |_| true, &mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

fn bench_fan_out(c: &mut Criterion) {
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut g = c.benchmark_group("fan-out 1000 subscribers");
    g.throughput(Throughput::Elements(1000));
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        let cfg = BrokerConfig {
            sys_interval: None,
            ..Default::default()
        };
        let mut broker = Broker::new(cfg, now);
        for id in 1..=1000 {
            let v = if id % 2 == 0 {
                ProtocolVersion::V5
            } else {
                ProtocolVersion::V3_1_1
            };
            connect(&mut broker, now, id, v, Some(("fan/#", QoS::AtLeastOnce)));
        }
        connect(&mut broker, now, 5000, ProtocolVersion::V5, None);
        let mut p = Publish::new(TopicName::new("fan/out").unwrap(), vec![0x5a; 32]);
        p.qos = QoS::AtMostOnce;
        let publish = encode(ProtocolVersion::V5, Packet::Publish(p));
        let ack = |v| {
            encode(
                v,
                Packet::PubAck(PubResponse::new(PacketId::new(1).expect("non-zero"))),
            )
        };
        let (ack_v3, ack_v5) = (ack(ProtocolVersion::V3_1_1), ack(ProtocolVersion::V5));
        g.bench_function(format!("QoS {}", qos as u8), |b| {
            b.iter(|| {
                let mut p = Publish::new(TopicName::new("fan/out").unwrap(), vec![0x5a; 32]);
                if qos == QoS::AtLeastOnce {
                    p.qos = QoS::AtLeastOnce;
                    p.packet_id = PacketId::new(7);
                    broker.handle_input(
                        now,
                        5000,
                        &encode(ProtocolVersion::V5, Packet::Publish(p)),
                    );
                } else {
                    broker.handle_input(now, 5000, &publish);
                }
                let n = drain(&mut broker);
                if qos == QoS::AtLeastOnce {
                    // Every subscriber acknowledges its copy before the next one, so its
                    // session hands out the lowest free packet id, 1, every time: all
                    // copies carry the same id and the PUBACK is encoded once per version,
                    // not once per subscriber (that would time the clients' encoding, not
                    // the broker). The checks below the measurement fail if the ids differ.
                    for id in 1..=1000u64 {
                        let ack = if id % 2 == 0 { &ack_v5 } else { &ack_v3 };
                        broker.handle_input(now, id, ack);
                    }
                    drain(&mut broker);
                }
                black_box(n)
            })
        });
        // Every copy went out and none was dropped. With PUBACKs that missed their packet
        // ids, the inflight windows (1,024) and then the queues (1,000) would fill, and
        // copies would be dropped after 2,024 messages; a measurement runs thousands.
        let st = broker.stats();
        assert_eq!(st.messages_sent, 1000 * st.messages_received);
        assert_eq!(st.dropped_queue_full, 0);
        assert_eq!(broker.gauges().connections, 1001);
    }
    g.finish();
}

fn bench_fan_in(c: &mut Criterion) {
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let cfg = BrokerConfig {
        sys_interval: None,
        ..Default::default()
    };
    let mut broker = Broker::new(cfg, now);
    connect(
        &mut broker,
        now,
        1,
        ProtocolVersion::V3_1_1,
        Some(("in/#", QoS::AtMostOnce)),
    );
    for id in 10..20 {
        connect(&mut broker, now, id, ProtocolVersion::V3_1_1, None);
    }
    let mut g = c.benchmark_group("fan-in 10 publishers");
    g.throughput(Throughput::Elements(100));
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(2));
    let frames: Vec<Bytes> = (10..20)
        .map(|id| {
            let p = Publish::new(TopicName::new(&format!("in/{id}")).unwrap(), vec![1u8; 32]);
            let mut b = BytesMut::new();
            for _ in 0..10 {
                Packet::Publish(p.clone())
                    .encode(&mut b, ProtocolVersion::V3_1_1, MAX_PACKET_SIZE)
                    .unwrap();
            }
            b.freeze()
        })
        .collect();
    g.bench_function("QoS 0, 100 messages in batches of 10", |b| {
        b.iter_batched(
            || frames.clone(),
            |frames| {
                for (i, f) in frames.iter().enumerate() {
                    broker.handle_input(now, 10 + i as u64, f);
                }
                black_box(drain(&mut broker))
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
    let st = broker.stats();
    assert_eq!(st.messages_sent, st.messages_received);
    assert_eq!(st.dropped_queue_full, 0);
}

criterion_group!(benches, bench_route, bench_fan_out, bench_fan_in);
criterion_main!(benches);
