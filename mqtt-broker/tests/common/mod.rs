//! A whole broker in memory: clients are mqtt-session client connections, bytes move
//! between them and the broker core, and time is simulated.

#![allow(dead_code)]

use mqtt_broker::*;
use mqtt_proto::*;
use mqtt_session::{Config, Connection, Event};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub struct Client {
    pub conn: Connection,
    pub events: Vec<Event>,
    pub transport_open: bool,
}

pub struct Sim {
    pub now: Instant,
    pub broker: Broker,
    pub clients: BTreeMap<ConnId, Client>,
    pub next_id: ConnId,
    pub outputs: Vec<Output>,
    /// Answer authentication requests: Some(password) means "this password is right".
    pub password: Option<Vec<u8>>,
    /// The configuration, for a restart.
    pub config: BrokerConfig,
    /// The store the records go to (with `persistence`).
    pub store: MemoryStore,
    /// Records not yet durable, in order.
    pub pending: Vec<Record>,
    /// Make records durable as soon as they come (else with `flush_store`).
    pub auto_flush: bool,
}

pub fn topic(t: &str) -> TopicName {
    TopicName::new(t).unwrap()
}

impl Sim {
    pub fn new(config: BrokerConfig) -> Self {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        Sim {
            now,
            broker: Broker::new(config.clone(), now),
            clients: BTreeMap::new(),
            next_id: 1,
            outputs: vec![],
            password: None,
            config,
            store: MemoryStore::new(),
            pending: vec![],
            auto_flush: true,
        }
    }

    pub fn default() -> Self {
        Self::new(BrokerConfig {
            sys_interval: None,
            ..BrokerConfig::default()
        })
    }

    /// Opens a transport and sends CONNECT; returns the connection id.
    pub fn connect_with(&mut self, mut c: Connect, config: Config) -> ConnId {
        let id = self.next_id;
        self.next_id += 1;
        self.broker.handle_connection(
            self.now,
            id,
            ConnInfo {
                peer: format!("127.0.0.1:{}", 40000 + id),
                listener: "test".into(),
                tls_identity: None,
                allow_anonymous: None,
            },
        );
        let mut conn = Connection::client(config);
        if c.keep_alive == 60 {
            c.keep_alive = 0;
        }
        conn.connect(self.now, c).unwrap();
        self.clients.insert(
            id,
            Client {
                conn,
                events: vec![],
                transport_open: true,
            },
        );
        self.run();
        id
    }

    pub fn connect(&mut self, v: ProtocolVersion, client_id: &str, clean: bool) -> ConnId {
        let mut c = Connect::new(v, MqttString::new(client_id).unwrap());
        c.clean_start = clean;
        if v.is_v5() && !clean {
            c.properties.session_expiry_interval = Some(3600);
        }
        self.connect_with(c, Config::default())
    }

    /// Moves bytes until nothing moves.
    pub fn run(&mut self) {
        for _ in 0..100_000 {
            let mut moved = false;
            let ids: Vec<ConnId> = self.clients.keys().copied().collect();
            for id in ids {
                let c = self.clients.get_mut(&id).unwrap();
                if let Some(b) = c.conn.poll_transmit() {
                    if c.transport_open {
                        self.broker.handle_input(self.now, id, &b);
                    }
                    moved = true;
                }
                while let Some(e) = c.conn.poll_event() {
                    c.events.push(e);
                    moved = true;
                }
            }
            while let Some(o) = self.broker.poll_output() {
                moved = true;
                match &o {
                    Output::Transmit(id, b) => {
                        if let Some(c) = self.clients.get_mut(id) {
                            if c.transport_open {
                                c.conn.handle_input(self.now, b);
                            }
                        }
                    }
                    Output::Close(id) => {
                        if let Some(c) = self.clients.get_mut(id) {
                            if c.transport_open {
                                c.transport_open = false;
                                c.conn.handle_closed(self.now);
                            }
                        }
                    }
                    Output::Authenticate(r) => {
                        let ok = self
                            .password
                            .as_deref()
                            .is_none_or(|p| r.password.as_deref() == Some(p));
                        let result = if ok {
                            AuthResult::Allow { username: None }
                        } else {
                            AuthResult::Deny(ReasonCode::BadUserNameOrPassword)
                        };
                        self.broker.handle_auth(self.now, r.conn, result);
                    }
                    Output::Store(r) => self.pending.push(r.clone()),
                    _ => {}
                }
                self.outputs.push(o);
            }
            if self.auto_flush && !self.pending.is_empty() {
                self.flush_store();
                moved = true;
            }
            if !moved {
                return;
            }
        }
        panic!("simulation did not settle");
    }

    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let mut next = self.broker.poll_timeout();
            for c in self.clients.values() {
                if let Some(t) = c.conn.poll_timeout() {
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            }
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.broker.handle_timeout(self.now);
                    for c in self.clients.values_mut() {
                        c.conn.handle_timeout(self.now);
                    }
                    self.run();
                }
                _ => break,
            }
        }
        self.now = end;
        self.run();
    }

    pub fn publish(&mut self, id: ConnId, t: &str, payload: &str, qos: QoS, retain: bool) {
        let mut p = Publish::new(topic(t), payload.to_string());
        p.qos = qos;
        p.retain = retain;
        self.publish_msg(id, p);
    }

    pub fn publish_msg(&mut self, id: ConnId, p: Publish) {
        let now = self.now;
        self.clients
            .get_mut(&id)
            .unwrap()
            .conn
            .publish(now, p)
            .unwrap();
        self.run();
    }

    pub fn subscribe(&mut self, id: ConnId, filter: &str, qos: QoS) -> Vec<ReasonCode> {
        self.subscribe_with(
            id,
            filter,
            SubscriptionOptions {
                qos,
                ..Default::default()
            },
            None,
        )
    }

    pub fn subscribe_with(
        &mut self,
        id: ConnId,
        filter: &str,
        options: SubscriptionOptions,
        sub_id: Option<u32>,
    ) -> Vec<ReasonCode> {
        let now = self.now;
        let props = SubscribeProperties {
            subscription_identifier: sub_id.and_then(std::num::NonZeroU32::new),
            ..Default::default()
        };
        let pid = self
            .clients
            .get_mut(&id)
            .unwrap()
            .conn
            .subscribe(
                now,
                vec![Subscription {
                    filter: TopicFilter::new(filter).unwrap(),
                    options,
                }],
                props,
            )
            .unwrap();
        self.run();
        // The latest: packet ids are reused once acknowledged.
        self.clients[&id]
            .events
            .iter()
            .rev()
            .find_map(|e| match e {
                Event::SubAck(s) if s.packet_id == pid => Some(s.reason_codes.clone()),
                _ => None,
            })
            .expect("SUBACK")
    }

    /// The transport breaks without DISCONNECT.
    pub fn cut(&mut self, id: ConnId) {
        let c = self.clients.get_mut(&id).unwrap();
        c.transport_open = false;
        c.conn.handle_closed(self.now);
        self.broker.handle_closed(self.now, id);
        self.run();
    }

    pub fn disconnect(&mut self, id: ConnId, code: ReasonCode) {
        let now = self.now;
        self.clients
            .get_mut(&id)
            .unwrap()
            .conn
            .disconnect(now, code, Default::default())
            .unwrap();
        self.run();
        // The client closes the transport after DISCONNECT.
        let c = self.clients.get_mut(&id).unwrap();
        if c.transport_open {
            c.transport_open = false;
            self.broker.handle_closed(self.now, id);
        }
        self.run();
    }

    pub fn messages(&self, id: ConnId) -> Vec<Publish> {
        self.clients[&id]
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Message(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }

    /// The `MessageDropped` events of the outputs so far with this reason.
    pub fn drop_events(&self, reason: Drop) -> usize {
        self.outputs
            .iter()
            .filter(|o| {
                matches!(o, Output::Event(BrokerEvent::MessageDropped { reason: r, .. }) if *r == reason)
            })
            .count()
    }

    pub fn payloads(&self, id: ConnId) -> Vec<String> {
        self.messages(id)
            .iter()
            .map(|m| String::from_utf8(m.payload.to_vec()).unwrap())
            .collect()
    }

    pub fn connack(&self, id: ConnId) -> Option<ConnAck> {
        self.clients[&id].events.iter().find_map(|e| match e {
            Event::Connected(c) => Some((**c).clone()),
            _ => None,
        })
    }

    pub fn closed(&self, id: ConnId) -> Option<mqtt_session::CloseReason> {
        self.clients[&id].events.iter().find_map(|e| match e {
            Event::Closed(r) => Some(r.clone()),
            _ => None,
        })
    }

    /// The store makes what it has durable and answers every `Sync` (the answers' bytes
    /// wait for the next `run`).
    pub fn flush_store(&mut self) {
        for r in std::mem::take(&mut self.pending) {
            self.store.apply(&r);
            if let Record::Sync { seq } = r {
                self.broker.handle_durable(self.now, seq);
            }
        }
    }

    /// The broker process dies: records not yet durable and bytes not yet written are
    /// lost, every client sees its connection break. A new broker starts from the store.
    pub fn crash(&mut self) {
        self.pending.clear();
        for c in self.clients.values_mut() {
            if c.transport_open {
                c.transport_open = false;
                c.conn.handle_closed(self.now);
            }
        }
        self.broker = Broker::new(self.config.clone(), self.now);
        self.broker.restore(self.now, self.store.snapshot());
        self.run();
    }

    /// A client whose connection broke connects again with Clean Start 0, resuming its
    /// own session state; returns the new connection.
    pub fn resume(&mut self, old: ConnId, v: ProtocolVersion, client_id: &str) -> ConnId {
        let c = self.clients.get_mut(&old).unwrap();
        assert!(!c.transport_open, "resume after the connection broke");
        let state =
            std::mem::replace(&mut c.conn, Connection::client(Config::default())).into_state();
        let id = self.next_id;
        self.next_id += 1;
        self.broker
            .handle_connection(self.now, id, ConnInfo::default());
        let mut conn = Connection::client_with_state(Config::default(), state);
        let mut c = Connect::new(v, MqttString::new(client_id).unwrap());
        c.clean_start = false;
        c.keep_alive = 0;
        if v.is_v5() {
            c.properties.session_expiry_interval = Some(3600);
        }
        conn.connect(self.now, c).unwrap();
        self.clients.insert(
            id,
            Client {
                conn,
                events: vec![],
                transport_open: true,
            },
        );
        self.run();
        id
    }

    pub fn clear(&mut self) {
        for c in self.clients.values_mut() {
            c.events.clear();
        }
        self.outputs.clear();
    }
}
