//! CPU time of a message's full protocol exchange between two in-memory sessions: QoS 0
//! (PUBLISH), QoS 1 (PUBLISH, PUBACK) and QoS 2 (PUBLISH, PUBREC, PUBREL, PUBCOMP),
//! encode and decode included, one message at a time and in batches of 100.
//!
//! `cargo bench -p mqtt-session --bench roundtrip`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mqtt_proto::{ConnAck, Connect, MqttString, ProtocolVersion, Publish, QoS, TopicName};
use mqtt_session::{Config, Connection, Event};
use std::hint::black_box;
use std::time::{Duration, Instant};

struct Pair {
    now: Instant,
    client: Connection,
    server: Connection,
}

impl Pair {
    fn new(version: ProtocolVersion) -> Self {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let mut p = Pair {
            now,
            client: Connection::client(Config::default()),
            server: Connection::server(Config::default(), now),
        };
        p.client
            .connect(
                now,
                Connect::new(version, MqttString::new("bench").unwrap()),
            )
            .unwrap();
        p.pump();
        p
    }

    /// Moves bytes both ways until quiet; returns the number of delivered messages seen.
    fn pump(&mut self) -> usize {
        let mut n = 0;
        loop {
            let mut moved = false;
            if let Some(b) = self.client.poll_transmit() {
                self.server.handle_input(self.now, &b);
                moved = true;
            }
            if let Some(b) = self.server.poll_transmit() {
                self.client.handle_input(self.now, &b);
                moved = true;
            }
            while let Some(e) = self.server.poll_event() {
                moved = true;
                match e {
                    Event::ConnectReceived(_) => self
                        .server
                        .accept(self.now, ConnAck::default(), None)
                        .unwrap(),
                    Event::Message(m) => {
                        black_box(m);
                        n += 1;
                    }
                    _ => {}
                }
            }
            while let Some(e) = self.client.poll_event() {
                moved = true;
                black_box(e);
            }
            if !moved {
                return n;
            }
        }
    }
}

fn bench(c: &mut Criterion) {
    let topic = TopicName::new("sensors/room-1/temperature").unwrap();
    let payload = bytes::Bytes::from_static(&[0x5a; 32]);
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let mut g = c.benchmark_group(format!("session {version} QoS {}", qos as u8));
            g.warm_up_time(Duration::from_secs(1));
            g.measurement_time(Duration::from_secs(2));
            for batch in [1usize, 100] {
                g.throughput(Throughput::Elements(batch as u64));
                let mut pair = Pair::new(version);
                let mut msg = Publish::new(topic.clone(), payload.clone());
                msg.qos = qos;
                g.bench_function(BenchmarkId::new("round trip", batch), |b| {
                    b.iter(|| {
                        for _ in 0..batch {
                            pair.client.publish(pair.now, msg.clone()).unwrap();
                        }
                        assert_eq!(pair.pump(), batch);
                    })
                });
            }
            g.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
