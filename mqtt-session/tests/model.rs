//! Model-based property test: random publishes at QoS 0/1/2 in both directions, delivery
//! of any number of bytes at a time, connections cut at any byte and resumed, and time
//! passing. Invariants: QoS 1 delivered at least once, QoS 2 exactly once, QoS 0 at most
//! once, first deliveries of QoS 1/2 in publish order, inflight never above the limit,
//! packet ids never reused while in use.

use bytes::BytesMut;
use mqtt_proto::*;
use mqtt_session::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
enum Op {
    Publish {
        from_client: bool,
        qos: u8,
    },
    /// Move up to `n` bytes one way.
    Deliver {
        to_server: bool,
        n: usize,
    },
    /// Move everything both ways until quiet.
    Drive,
    /// The transport breaks (bytes in flight are lost); both sides resume on a new one.
    Cut,
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), 0u8..3).prop_map(|(from_client, qos)| Op::Publish { from_client, qos }),
        4 => (any::<bool>(), 1usize..64).prop_map(|(to_server, n)| Op::Deliver { to_server, n }),
        1 => Just(Op::Drive),
        1 => Just(Op::Cut),
        1 => (1u16..120).prop_map(Op::Advance),
    ]
}

struct World {
    version: ProtocolVersion,
    now: Instant,
    client: Connection,
    server: Connection,
    config: Config,
    to_server: BytesMut,
    to_client: BytesMut,
    server_session: Option<SessionState>,
    next_msg: u32,
    /// Per direction (true: client -> server): payload -> QoS of what was published.
    published: [BTreeMap<String, QoS>; 2],
    /// Per direction: payloads in publish order for QoS 1/2.
    order: [Vec<String>; 2],
    /// Per direction: every delivery, in order.
    delivered: [Vec<String>; 2],
}

impl World {
    fn new(version: ProtocolVersion, receive_maximum: u16) -> Self {
        let config = Config {
            receive_maximum,
            max_inflight: receive_maximum,
            max_queued_messages: 10_000,
            ..Config::default()
        };
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let mut w = World {
            version,
            now,
            client: Connection::client(config.clone()),
            server: Connection::server(config.clone(), now),
            config,
            to_server: BytesMut::new(),
            to_client: BytesMut::new(),
            server_session: None,
            next_msg: 0,
            published: Default::default(),
            order: Default::default(),
            delivered: Default::default(),
        };
        w.connect();
        w
    }

    fn connect(&mut self) {
        let mut c = Connect::new(self.version, MqttString::new("model").unwrap());
        c.clean_start = false;
        c.keep_alive = 30;
        if self.version.is_v5() {
            c.properties.session_expiry_interval = Some(u32::MAX);
        }
        self.client.connect(self.now, c).unwrap();
        self.drive();
    }

    fn collect(&mut self) {
        if let Some(b) = self.client.poll_transmit() {
            self.to_server.extend_from_slice(&b);
        }
        if let Some(b) = self.server.poll_transmit() {
            self.to_client.extend_from_slice(&b);
        }
        while let Some(e) = self.server.poll_event() {
            match e {
                Event::ConnectReceived(_) => {
                    let state = self.server_session.take();
                    let connack = ConnAck {
                        session_present: state.is_some(),
                        ..Default::default()
                    };
                    self.server.accept(self.now, connack, state).unwrap();
                }
                Event::Message(m) => self.delivered[0].push(payload(&m)),
                _ => {}
            }
        }
        while let Some(e) = self.client.poll_event() {
            if let Event::Message(m) = e {
                self.delivered[1].push(payload(&m));
            }
        }
    }

    fn deliver(&mut self, to_server: bool, n: usize) {
        self.collect();
        let (buf, peer) = if to_server {
            (&mut self.to_server, &mut self.server)
        } else {
            (&mut self.to_client, &mut self.client)
        };
        let n = n.min(buf.len());
        let chunk = buf.split_to(n);
        if !chunk.is_empty() {
            peer.handle_input(self.now, &chunk);
        }
        self.collect();
    }

    fn drive(&mut self) {
        for _ in 0..10_000 {
            self.collect();
            if self.to_server.is_empty() && self.to_client.is_empty() {
                return;
            }
            self.deliver(true, usize::MAX);
            self.deliver(false, usize::MAX);
        }
        panic!("the pair did not go quiet");
    }

    fn cut(&mut self) {
        self.collect();
        self.client.handle_closed(self.now);
        self.server.handle_closed(self.now);
        self.collect();
        self.to_server.clear();
        self.to_client.clear();
        let client = std::mem::replace(&mut self.client, Connection::client(self.config.clone()));
        let server = std::mem::replace(
            &mut self.server,
            Connection::server(self.config.clone(), self.now),
        );
        self.server_session = Some(server.into_state());
        self.client = Connection::client_with_state(self.config.clone(), client.into_state());
        self.connect();
    }

    fn publish(&mut self, from_client: bool, qos: QoS) {
        self.next_msg += 1;
        let name = format!("{}{}", if from_client { 'c' } else { 's' }, self.next_msg);
        let mut m = Publish::new(TopicName::new("t").unwrap(), name.clone());
        m.qos = qos;
        let side = if from_client {
            &mut self.client
        } else {
            &mut self.server
        };
        if side.publish(self.now, m).is_ok() {
            let d = usize::from(!from_client);
            self.published[d].insert(name.clone(), qos);
            if qos != QoS::AtMostOnce {
                self.order[d].push(name);
            }
        }
    }

    fn check_invariants(&self) -> Result<(), TestCaseError> {
        for c in [&self.client, &self.server] {
            prop_assert!(c.inflight() <= usize::from(self.config.receive_maximum));
            let mut ids = HashSet::new();
            let st = c.state();
            for e in &st.inflight {
                prop_assert!(ids.insert(e.packet_id()), "id reused");
            }
            for p in &st.queue {
                if let Some(id) = p.packet_id {
                    prop_assert!(ids.insert(id), "id reused");
                }
            }
            prop_assert_eq!(ids.len(), c.packet_ids_in_use());
        }
        Ok(())
    }
}

fn payload(m: &Publish) -> String {
    String::from_utf8(m.payload.to_vec()).unwrap()
}

fn run(version: ProtocolVersion, receive_maximum: u16, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut w = World::new(version, receive_maximum);
    for op in ops {
        match op {
            Op::Publish { from_client, qos } => w.publish(from_client, QoS::from_u8(qos).unwrap()),
            Op::Deliver { to_server, n } => w.deliver(to_server, n),
            Op::Drive => w.drive(),
            Op::Cut => w.cut(),
            Op::Advance(s) => {
                w.now += Duration::from_secs(s.into());
                w.client.handle_timeout(w.now);
                w.server.handle_timeout(w.now);
                w.collect();
            }
        }
        // Whatever closed a connection (a keep-alive timeout while bytes sat undelivered),
        // the session resumes on a new one.
        if w.client.is_closed() || w.server.is_closed() {
            w.cut();
        }
        w.check_invariants()?;
    }
    w.drive();
    if w.client.is_closed() || w.server.is_closed() {
        w.cut();
        w.drive();
    }
    for d in 0..2 {
        let mut count: BTreeMap<&str, usize> = BTreeMap::new();
        for m in &w.delivered[d] {
            *count.entry(m.as_str()).or_default() += 1;
        }
        for (name, qos) in &w.published[d] {
            let n = count.get(name.as_str()).copied().unwrap_or(0);
            match qos {
                QoS::AtMostOnce => prop_assert!(n <= 1, "{name} QoS 0 delivered {n} times"),
                QoS::AtLeastOnce => prop_assert!(n >= 1, "{name} QoS 1 lost"),
                QoS::ExactlyOnce => prop_assert_eq!(n, 1, "{} QoS 2 delivered {} times", name, n),
            }
        }
        // First deliveries of QoS 1/2 follow publish order.
        let mut seen = HashSet::new();
        let firsts: Vec<&String> = w.delivered[d]
            .iter()
            .filter(|m| {
                w.published[d]
                    .get(*m)
                    .is_some_and(|q| *q != QoS::AtMostOnce)
            })
            .filter(|m| seen.insert(m.as_str()))
            .collect();
        let expected: Vec<&String> = w.order[d].iter().collect();
        prop_assert_eq!(firsts, expected);
    }
    prop_assert_eq!(w.client.inflight() + w.client.queued(), 0);
    prop_assert_eq!(w.server.inflight() + w.server.queued(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn delivery_guarantees_hold(
        version in prop_oneof![Just(ProtocolVersion::V3_1_1), Just(ProtocolVersion::V5)],
        receive_maximum in 1u16..5,
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        run(version, receive_maximum, ops)?;
    }
}
