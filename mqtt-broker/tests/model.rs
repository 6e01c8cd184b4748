//! Model-based property test of the whole broker: random clients of mixed versions,
//! subscriptions, publishes, clean and persistent reconnects, takeovers, cuts and time;
//! with persistence on, broker crashes too (every connection breaks, and a new broker
//! restores from the records applied to a `MemoryStore`).
//!
//! Invariants: a message reaches only sessions whose filters matched when it was
//! published; every QoS 1/2 copy owed to a session that lives to the end arrives (queues
//! are large enough that nothing is dropped, and the test checks that no drop was
//! counted); QoS 2 and QoS 0 copies never arrive twice; each publisher's messages reach
//! each subscriber in publish order.

mod common;

use common::*;
use mqtt_broker::*;
use mqtt_proto::*;
use mqtt_session::Event;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const FILTERS: [&str; 5] = ["t/#", "t/+", "t/a", "+/a", "#"];
const TOPICS: [&str; 3] = ["t/a", "t/b", "u/a"];
const CLIENTS: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    Connect {
        c: usize,
        clean: bool,
    },
    Disconnect {
        c: usize,
    },
    Cut {
        c: usize,
    },
    /// The transport silently stops delivering (both ways) until a cut or a takeover.
    Stall {
        c: usize,
    },
    Subscribe {
        c: usize,
        f: usize,
        qos: u8,
    },
    Unsubscribe {
        c: usize,
        f: usize,
    },
    Publish {
        c: usize,
        t: usize,
        qos: u8,
    },
    Advance(u8),
    /// The broker restarts from its store (with persistence on).
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..CLIENTS;
    prop_oneof![
        2 => (c.clone(), any::<bool>()).prop_map(|(c, clean)| Op::Connect { c, clean }),
        1 => c.clone().prop_map(|c| Op::Disconnect { c }),
        1 => c.clone().prop_map(|c| Op::Cut { c }),
        1 => c.clone().prop_map(|c| Op::Stall { c }),
        3 => (c.clone(), 0..FILTERS.len(), 0u8..3).prop_map(|(c, f, qos)| Op::Subscribe { c, f, qos }),
        1 => (c.clone(), 0..FILTERS.len()).prop_map(|(c, f)| Op::Unsubscribe { c, f }),
        6 => (c.clone(), 0..TOPICS.len(), 0u8..3).prop_map(|(c, t, qos)| Op::Publish { c, t, qos }),
        1 => (1u8..30).prop_map(Op::Advance),
        1 => Just(Op::Crash),
    ]
}

/// The model's view of one client id's session.
#[derive(Default, Clone)]
struct ModelSession {
    /// Live (connected, or persistent and offline).
    alive: bool,
    connected: Option<ConnId>,
    stalled: bool,
    persistent: bool,
    subs: BTreeMap<usize, QoS>,
    /// Messages owed at QoS 1/2: payload -> QoS.
    owed: BTreeMap<String, QoS>,
}

struct World {
    sim: Sim,
    versions: [ProtocolVersion; CLIENTS],
    sessions: Vec<ModelSession>,
    next: u32,
    /// Payload -> clients that may receive it.
    may_receive: BTreeMap<String, BTreeSet<usize>>,
    /// Payload -> (publisher, sequence).
    origin: BTreeMap<String, (usize, u32)>,
    /// Conn id -> client index, for every connection ever made.
    owner: BTreeMap<ConnId, usize>,
}

impl World {
    fn id(c: usize) -> String {
        format!("client-{c}")
    }

    fn connect(&mut self, c: usize, clean: bool) {
        let conn = self.sim.connect(self.versions[c], &Self::id(c), clean);
        self.owner.insert(conn, c);
        let s = &mut self.sessions[c];
        // A takeover closes the old connection; a session that lived only as long as
        // that connection ends with it.
        let taken_over_transient = s.connected.take().is_some() && !s.persistent;
        if clean || !s.alive || taken_over_transient {
            s.subs.clear();
            s.owed.clear();
        }
        s.alive = true;
        s.persistent = !clean;
        s.connected = Some(conn);
        s.stalled = false;
    }

    fn gone(&mut self, c: usize) {
        let s = &mut self.sessions[c];
        s.connected = None;
        s.stalled = false;
        if !s.persistent {
            s.alive = false;
            s.subs.clear();
            s.owed.clear();
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Connect { c, clean } => self.connect(c, clean),
            Op::Disconnect { c } => {
                if let Some(conn) = self.sessions[c].connected {
                    if self.sessions[c].stalled {
                        self.sim.cut(conn);
                    } else {
                        self.sim.disconnect(conn, ReasonCode::Success);
                    }
                    self.gone(c);
                }
            }
            Op::Stall { c } => {
                if let Some(conn) = self.sessions[c].connected {
                    self.sim.clients.get_mut(&conn).unwrap().transport_open = false;
                    self.sessions[c].stalled = true;
                }
            }
            Op::Cut { c } => {
                if let Some(conn) = self.sessions[c].connected {
                    self.sim.cut(conn);
                    self.gone(c);
                }
            }
            Op::Subscribe { c, f, qos } => {
                if let (Some(conn), false) = (self.sessions[c].connected, self.sessions[c].stalled)
                {
                    let q = QoS::from_u8(qos).unwrap();
                    self.sim.subscribe(conn, FILTERS[f], q);
                    self.sessions[c].subs.insert(f, q);
                }
            }
            Op::Unsubscribe { c, f } => {
                if let (Some(conn), false) = (self.sessions[c].connected, self.sessions[c].stalled)
                {
                    let now = self.sim.now;
                    self.sim
                        .clients
                        .get_mut(&conn)
                        .unwrap()
                        .conn
                        .unsubscribe(
                            now,
                            vec![TopicFilter::new(FILTERS[f]).unwrap()],
                            Default::default(),
                        )
                        .unwrap();
                    self.sim.run();
                    self.sessions[c].subs.remove(&f);
                }
            }
            Op::Publish { c, t, qos } => {
                let (Some(conn), false) = (self.sessions[c].connected, self.sessions[c].stalled)
                else {
                    return;
                };
                self.next += 1;
                let payload = format!("m{}", self.next);
                let qos = QoS::from_u8(qos).unwrap();
                let mut may = BTreeSet::new();
                for (i, s) in self.sessions.iter_mut().enumerate() {
                    if !s.alive {
                        continue;
                    }
                    let granted = s
                        .subs
                        .iter()
                        .filter(|(f, _)| matches(FILTERS[**f], TOPICS[t]))
                        .map(|(_, q)| *q)
                        .max();
                    if let Some(g) = granted {
                        may.insert(i);
                        let eff = qos.min(g);
                        if eff != QoS::AtMostOnce {
                            s.owed.insert(payload.clone(), eff);
                        }
                    }
                }
                self.may_receive.insert(payload.clone(), may);
                self.origin.insert(payload.clone(), (c, self.next));
                self.sim.publish(conn, TOPICS[t], &payload, qos, false);
            }
            Op::Advance(s) => self.sim.advance(Duration::from_secs(s.into())),
            Op::Crash => {
                if !self.sim.config.persistence {
                    return;
                }
                self.sim.crash();
                for c in 0..CLIENTS {
                    if self.sessions[c].connected.is_some() {
                        self.gone(c);
                    }
                }
            }
        }
    }

    /// Every message each client received, over all its connections, in order.
    fn received(&self) -> Vec<Vec<(String, QoS)>> {
        let mut out = vec![vec![]; CLIENTS];
        for (conn, client) in &self.sim.clients {
            let c = self.owner[conn];
            for e in &client.events {
                if let Event::Message(m) = e {
                    out[c].push((String::from_utf8(m.payload.to_vec()).unwrap(), m.qos));
                }
            }
        }
        out
    }
}

fn run(
    versions: [ProtocolVersion; CLIENTS],
    ops: Vec<Op>,
    persistence: bool,
) -> Result<(), TestCaseError> {
    let mut w = World {
        sim: Sim::new(BrokerConfig {
            sys_interval: None,
            max_offline_messages: 100_000,
            persistence,
            ..BrokerConfig::default()
        }),
        versions,
        sessions: vec![ModelSession::default(); CLIENTS],
        next: 0,
        may_receive: BTreeMap::new(),
        origin: BTreeMap::new(),
        owner: BTreeMap::new(),
    };
    for op in ops {
        w.apply(op);
    }
    // Stalled transports break; persistent sessions come back to collect what they are
    // owed.
    for c in 0..CLIENTS {
        if let (Some(conn), true) = (w.sessions[c].connected, w.sessions[c].stalled) {
            w.sim.cut(conn);
            w.gone(c);
        }
    }
    for c in 0..CLIENTS {
        let s = &w.sessions[c];
        if s.alive && s.connected.is_none() {
            w.connect(c, false);
        }
    }
    w.sim.run();
    prop_assert_eq!(w.sim.broker.stats().dropped_queue_full, 0);
    if persistence {
        // Everything owed was delivered and acknowledged: the store holds no message.
        prop_assert_eq!(w.sim.store.bodies(), 0);
    }
    let received = w.received();
    for (c, msgs) in received.iter().enumerate() {
        let mut count: BTreeMap<&str, (usize, QoS)> = BTreeMap::new();
        let mut last_seq: BTreeMap<usize, u32> = BTreeMap::new();
        for (p, q) in msgs {
            prop_assert!(
                w.may_receive[p].contains(&c),
                "client {} got {} without a matching subscription",
                c,
                p
            );
            let e = count.entry(p.as_str()).or_insert((0, *q));
            e.0 += 1;
            if e.0 == 1 {
                let (publisher, seq) = w.origin[p];
                if let Some(prev) = last_seq.insert(publisher, seq) {
                    prop_assert!(
                        prev < seq,
                        "client {} got {}'s messages out of order",
                        c,
                        publisher
                    );
                }
            }
        }
        for (p, (n, q)) in &count {
            if *q != QoS::AtLeastOnce {
                prop_assert_eq!(*n, 1, "client {} got {} ({:?}) {} times", c, p, q, n);
            }
        }
        let s = &w.sessions[c];
        if s.alive {
            for p in s.owed.keys() {
                prop_assert!(
                    count.contains_key(p.as_str()),
                    "client {} never got {}",
                    c,
                    p
                );
            }
        }
    }
    Ok(())
}

fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![
        Just(ProtocolVersion::V3_1),
        Just(ProtocolVersion::V3_1_1),
        Just(ProtocolVersion::V5)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn routing_model_holds(
        versions in [version(), version(), version(), version()],
        ops in proptest::collection::vec(op(), 1..60),
        persistence in any::<bool>(),
    ) {
        run(versions, ops, persistence)?;
    }
}
