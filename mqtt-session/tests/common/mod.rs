//! An in-memory client <-> server pair with simulated time: the link can be cut, sessions
//! resumed on a new connection, and every byte each side sent is kept for assertions.

#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use mqtt_proto::*;
use mqtt_session::*;
use std::time::{Duration, Instant};

pub fn s(v: &str) -> MqttString {
    MqttString::new(v).unwrap()
}

pub fn topic(v: &str) -> TopicName {
    TopicName::new(v).unwrap()
}

pub fn msg(t: &str, payload: &str, qos: QoS) -> Publish {
    let mut p = Publish::new(topic(t), payload.to_string());
    p.qos = qos;
    p
}

pub fn pid(v: u16) -> PacketId {
    PacketId::new(v).unwrap()
}

/// Decodes a byte stream into packets (CONNECT sets the version).
pub fn packets(version: ProtocolVersion, chunks: &[Bytes]) -> Vec<Packet> {
    let mut d = Decoder::client(version);
    let mut buf = BytesMut::new();
    for c in chunks {
        buf.extend_from_slice(c);
    }
    let mut out = Vec::new();
    while let Some(p) = d.decode(&mut buf).expect("valid stream") {
        out.push(p);
    }
    assert!(buf.is_empty(), "stream ends on a packet boundary");
    out
}

pub fn encode(version: ProtocolVersion, p: Packet) -> Bytes {
    let mut b = BytesMut::new();
    p.encode(&mut b, version, MAX_PACKET_SIZE).unwrap();
    b.freeze()
}

pub struct Pair {
    pub now: Instant,
    pub version: ProtocolVersion,
    pub client: Connection,
    pub server: Connection,
    pub client_config: Config,
    pub server_config: Config,
    pub client_events: Vec<Event>,
    pub server_events: Vec<Event>,
    pub client_sent: Vec<Bytes>,
    pub server_sent: Vec<Bytes>,
    /// When false, bytes are lost instead of delivered.
    pub link_up: bool,
    /// Answer CONNECT, SUBSCRIBE and UNSUBSCRIBE as a broker would.
    pub auto_server: bool,
    /// The server's stored session, resumed when the client connects with Clean Start 0.
    pub server_session: Option<SessionState>,
    pub keep_alive: u16,
}

impl Pair {
    pub fn new(version: ProtocolVersion) -> Self {
        Self::with_configs(version, Config::default(), Config::default())
    }

    pub fn with_configs(version: ProtocolVersion, client: Config, server: Config) -> Self {
        // Any instant will do: from here on time is simulated.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let mut p = Pair {
            now,
            version,
            client: Connection::client(client.clone()),
            server: Connection::server(server.clone(), now),
            client_config: client,
            server_config: server,
            client_events: vec![],
            server_events: vec![],
            client_sent: vec![],
            server_sent: vec![],
            link_up: true,
            auto_server: true,
            server_session: None,
            keep_alive: 60,
        };
        p.connect(true);
        p
    }

    pub fn connect_packet(&self, clean_start: bool) -> Connect {
        let mut c = Connect::new(self.version, s("client-1"));
        c.clean_start = clean_start;
        c.keep_alive = self.keep_alive;
        if self.version.is_v5() && !clean_start {
            c.properties.session_expiry_interval = Some(3600);
        }
        c
    }

    pub fn connect(&mut self, clean_start: bool) {
        let c = self.connect_packet(clean_start);
        self.client.connect(self.now, c).unwrap();
        self.drive();
    }

    /// Moves bytes both ways and answers for the server until nothing moves.
    pub fn drive(&mut self) {
        loop {
            let mut moved = false;
            if let Some(b) = self.client.poll_transmit() {
                self.client_sent.push(b.clone());
                if self.link_up {
                    self.server.handle_input(self.now, &b);
                }
                moved = true;
            }
            if let Some(b) = self.server.poll_transmit() {
                self.server_sent.push(b.clone());
                if self.link_up {
                    self.client.handle_input(self.now, &b);
                }
                moved = true;
            }
            while let Some(e) = self.server.poll_event() {
                moved = true;
                if self.auto_server {
                    self.answer(&e);
                }
                self.server_events.push(e);
            }
            while let Some(e) = self.client.poll_event() {
                moved = true;
                self.client_events.push(e);
            }
            if !moved {
                return;
            }
        }
    }

    fn answer(&mut self, e: &Event) {
        let now = self.now;
        match e {
            Event::ConnectReceived(c) => {
                let resume = !c.clean_start && self.server_session.is_some();
                let state = if resume {
                    self.server_session.take()
                } else {
                    self.server_session = None;
                    None
                };
                let connack = ConnAck {
                    session_present: resume,
                    ..Default::default()
                };
                self.server.accept(now, connack, state).unwrap();
            }
            Event::Subscribe(sub) => {
                let codes = sub
                    .subscriptions
                    .iter()
                    .map(|s| ReasonCode::granted(s.options.qos))
                    .collect();
                self.server
                    .suback(now, sub.packet_id, codes, Default::default())
                    .unwrap();
            }
            Event::Unsubscribe(u) => {
                let codes = vec![ReasonCode::Success; u.filters.len()];
                self.server
                    .unsuback(now, u.packet_id, codes, Default::default())
                    .unwrap();
            }
            _ => {}
        }
    }

    /// Advances simulated time to `now + d`, firing every deadline on the way.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next = [self.client.poll_timeout(), self.server.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.client.handle_timeout(self.now);
                    self.server.handle_timeout(self.now);
                    self.drive();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    /// The transport breaks: both sides see it closed. The server keeps the session.
    pub fn cut(&mut self) {
        self.client.handle_closed(self.now);
        self.server.handle_closed(self.now);
        let up = self.link_up;
        self.link_up = false;
        self.drive();
        self.link_up = up;
    }

    /// A new connection after `cut`: the client resumes its state and connects with
    /// Clean Start = `clean_start`; the server resumes its stored session.
    pub fn reconnect(&mut self, clean_start: bool) {
        let old_client = std::mem::replace(
            &mut self.client,
            Connection::client(self.client_config.clone()),
        );
        let old_server = std::mem::replace(
            &mut self.server,
            Connection::server(self.server_config.clone(), self.now),
        );
        assert!(old_client.is_closed() && old_server.is_closed());
        self.server_session = Some(old_server.into_state());
        if !clean_start {
            self.client =
                Connection::client_with_state(self.client_config.clone(), old_client.into_state());
        }
        self.link_up = true;
        self.connect(clean_start);
    }

    pub fn client_packets(&self) -> Vec<Packet> {
        packets(self.version, &self.client_sent)
    }

    pub fn server_packets(&self) -> Vec<Packet> {
        packets(self.version, &self.server_sent)
    }

    pub fn clear(&mut self) {
        self.client_events.clear();
        self.server_events.clear();
        self.client_sent.clear();
        self.server_sent.clear();
    }

    pub fn server_messages(&self) -> Vec<Publish> {
        messages(&self.server_events)
    }

    pub fn client_messages(&self) -> Vec<Publish> {
        messages(&self.client_events)
    }
}

pub fn messages(events: &[Event]) -> Vec<Publish> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

pub fn closed(events: &[Event]) -> Option<CloseReason> {
    events.iter().find_map(|e| match e {
        Event::Closed(r) => Some(r.clone()),
        _ => None,
    })
}
