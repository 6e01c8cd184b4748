//! The checks behind the `session` fuzz target: `mqtt_session::Connection` driven by an
//! [`Arbitrary`] list of operations, in three modes ([`Input`]):
//!
//! - [`Input::Server`]: a server session; the operations play the client (raw bytes,
//!   well-formed packets built with `mqtt_proto`, time, commands on the session, the
//!   transport closing, a new connection resuming the session).
//! - [`Input::Client`]: the same with a client session, which sends its CONNECT first.
//! - [`Input::Pair`]: a client and a server session wired together; operations move
//!   bytes between them, advance time and give commands to either side.
//!
//! After every operation each session's outputs are drained as an application would
//! (events, then bytes to send, then `handle_timeout` if `poll_timeout` is due) and checked;
//! any failed check is a panic. See [`Side::drain`] and [`Side::check_state`] for the list.
//!
//! UsageError results are expected (the fuzzer calls commands in every state) and ignored.

use arbitrary::Arbitrary;
use bytes::{Bytes, BytesMut};
use mqtt_proto::{
    AckProperties, Auth, ConnAck, Connect, DecodeError, Decoder, Disconnect, DisconnectProperties,
    MqttString, Packet, PacketId, PacketType, ProtocolVersion, PubResponse, Publish, QoS,
    ReasonCode, SubAck, Subscribe, SubscribeProperties, Subscription, TopicFilter, TopicName,
    UnsubAck, Unsubscribe, UnsubscribeProperties, Will, MAX_PACKET_SIZE,
};
use mqtt_session::{
    CloseReason, Config, Connection, EncodedPublish, Event, Role, SessionState, Violation,
};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::num::{NonZeroU16, NonZeroU32};
use std::time::{Duration, Instant};

/// Topic names used by PUBLISH, chosen by index.
pub const TOPICS: [&str; 4] = ["a", "a/b", "sensors/1/temp", "x/y/z"];
/// Topic filters used by SUBSCRIBE and UNSUBSCRIBE, chosen by a bit mask.
pub const FILTERS: [&str; 5] = ["a/b", "a/+", "#", "sensors/+/temp", "$share/g/x/#"];
/// Client identifiers, chosen by index; the empty one only outside [`Input::Pair`].
pub const CLIENT_IDS: [&str; 3] = ["c1", "client-2", ""];
/// How many recent packet identifiers each session remembers for [`IdArg`].
const RECENT_IDS: usize = 16;
/// How many messages may be parked for the next connection ([`Op::Offline`]).
const MAX_PARKED: usize = 64;

// ----- Input ------------------------------------------------------------------------------

/// One fuzz input.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A server session; the operations play its client.
    Server(Settings, Vec<Op>),
    /// A client session that sends this CONNECT first; the operations play its server.
    Client(Settings, ConnectArgs, Vec<Op>),
    /// A client session (first settings, sending this CONNECT) wired to a server session
    /// (second settings).
    Pair(Settings, Settings, ConnectArgs, Vec<PairOp>),
}

/// An operation on the one session of [`Input::Server`] and [`Input::Client`].
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Raw bytes from the peer.
    Raw(Vec<u8>),
    /// A well-formed packet from the peer, fed in chunks of this many bytes (0: at once).
    Packet(PacketArg, u8),
    /// Time passes, in seconds.
    Advance(u16),
    /// A command on the session.
    Command(Command),
    /// The transport closed (`handle_closed`).
    Closed,
    /// A new connection takes over the session (`into_state`): a client connects again with
    /// this Clean Start, resuming its state; a server waits for a CONNECT and keeps the
    /// state for [`Command::Accept`].
    Reconnect(bool),
    /// A message queued while offline (no packet id yet), added to the state the next
    /// [`Op::Reconnect`] resumes.
    Offline(PublishArgs),
}

/// An operation of [`Input::Pair`].
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum PairOp {
    /// Delivers up to this many bytes from the client to the server (0: all).
    ToServer(u8),
    /// Delivers up to this many bytes from the server to the client (0: all).
    ToClient(u8),
    /// Delivers everything both ways until both links are empty.
    Flush,
    /// Time passes, in seconds.
    Advance(u16),
    /// A command on the client.
    Client(Command),
    /// A command on the server.
    Server(Command),
    /// The transport closes; bytes in flight are lost.
    Hangup,
    /// Both sides start a new connection (bytes in flight are lost): the client resumes
    /// its state and connects with this Clean Start; the server keeps its session for
    /// [`Command::Accept`], as a broker would.
    Reconnect(bool),
    /// A message queued while offline for the next connection: by the client (true) or by
    /// the broker for the client (false).
    Offline(bool, PublishArgs),
}

/// Variations of [`Config`]; 0 stands for the default where noted.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// 0: no limit; else `16 + 4 * n` bytes.
    pub max_packet_size: u8,
    /// 0: 65,535.
    pub receive_maximum: u8,
    /// 0: 1,024.
    pub max_inflight: u8,
    /// 0: 1,000.
    pub max_queued_messages: u8,
    /// 0: 16 MiB; else `64 * n` bytes.
    pub max_queued_bytes: u8,
    /// Taken modulo 5.
    pub topic_alias_maximum: u8,
    /// Use topic aliases for outgoing messages.
    pub outgoing_topic_aliases: bool,
    /// Seconds; 0: 10 s.
    pub connect_timeout: u8,
    /// Seconds; 0: 10 s.
    pub ping_timeout: u8,
    /// Server Keep Alive.
    pub server_keep_alive: Option<u8>,
    /// Maximum QoS (server).
    pub maximum_qos: Qos,
    /// Retain Available (server).
    pub retain_available: bool,
    /// Acknowledge incoming messages only on [`Command::Ack`].
    pub manual_acks: bool,
}

impl Settings {
    /// The configuration these settings stand for.
    pub fn config(&self) -> Config {
        let or = |v: u8, default: u32| if v == 0 { default } else { u32::from(v) };
        Config {
            max_packet_size: match self.max_packet_size {
                0 => MAX_PACKET_SIZE,
                n => 16 + 4 * u32::from(n),
            },
            receive_maximum: or(self.receive_maximum, 65_535) as u16,
            max_inflight: or(self.max_inflight, 1024) as u16,
            max_queued_messages: or(self.max_queued_messages, 1000) as usize,
            max_queued_bytes: match self.max_queued_bytes {
                0 => 16 << 20,
                n => 64 * usize::from(n),
            },
            topic_alias_maximum: u16::from(self.topic_alias_maximum % 5),
            outgoing_topic_aliases: self.outgoing_topic_aliases,
            connect_timeout: Duration::from_secs(or(self.connect_timeout, 10).into()),
            ping_timeout: Duration::from_secs(or(self.ping_timeout, 10).into()),
            server_keep_alive: self.server_keep_alive.map(u16::from),
            maximum_qos: self.maximum_qos.get(),
            retain_available: self.retain_available,
            manual_acks: self.manual_acks,
        }
    }
}

/// A protocol version.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.
    V3_1,
    /// MQTT 3.1.1.
    V3_1_1,
    /// MQTT 5.0.
    V5,
}

impl Version {
    /// The `mqtt_proto` version.
    pub fn get(self) -> ProtocolVersion {
        match self {
            Version::V3_1 => ProtocolVersion::V3_1,
            Version::V3_1_1 => ProtocolVersion::V3_1_1,
            Version::V5 => ProtocolVersion::V5,
        }
    }
}

/// A QoS.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    /// QoS 0.
    Zero,
    /// QoS 1.
    One,
    /// QoS 2.
    Two,
}

impl Qos {
    /// The `mqtt_proto` QoS.
    pub fn get(self) -> QoS {
        match self {
            Qos::Zero => QoS::AtMostOnce,
            Qos::One => QoS::AtLeastOnce,
            Qos::Two => QoS::ExactlyOnce,
        }
    }
}

/// A CONNECT.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectArgs {
    /// Protocol version.
    pub version: Version,
    /// Clean Start.
    pub clean_start: bool,
    /// Keep Alive, seconds.
    pub keep_alive: u8,
    /// Index into [`CLIENT_IDS`].
    pub client_id: u8,
    /// 5.0 Session Expiry Interval, seconds.
    pub session_expiry: Option<u8>,
    /// 5.0 Receive Maximum (0: absent).
    pub receive_maximum: Option<u8>,
    /// 5.0 Maximum Packet Size (0: absent).
    pub maximum_packet_size: Option<u16>,
    /// 5.0 Topic Alias Maximum.
    pub topic_alias_maximum: Option<u8>,
    /// 5.0 Request Problem Information.
    pub request_problem_information: Option<bool>,
    /// A will with this QoS.
    pub will: Option<Qos>,
    /// User name and password.
    pub credentials: bool,
}

impl ConnectArgs {
    /// The CONNECT. With `for_session` (the CONNECT a client session sends, whose limits
    /// come from its configuration) the 5.0 limits are left out and the client id is never
    /// empty.
    pub fn build(&self, for_session: bool) -> Connect {
        let v = self.version.get();
        let ids = if for_session {
            &CLIENT_IDS[..2]
        } else {
            &CLIENT_IDS[..]
        };
        let id = ids[usize::from(self.client_id) % ids.len()];
        let mut c = Connect::new(v, MqttString::new(id).expect("valid client id"));
        c.clean_start = self.clean_start;
        c.keep_alive = self.keep_alive.into();
        if let Some(q) = self.will {
            c.will = Some(Box::new(Will {
                topic: TopicName::new("will/t").expect("valid topic"),
                payload: Bytes::from_static(b"bye"),
                qos: q.get(),
                retain: false,
                properties: Default::default(),
            }));
        }
        if self.credentials {
            c.username = Some(MqttString::new("user").expect("valid"));
            c.password = Some(Bytes::from_static(b"pw"));
        }
        if v.is_v5() {
            let p = &mut c.properties;
            p.session_expiry_interval = self.session_expiry.map(u32::from);
            p.request_problem_information = self.request_problem_information;
            if !for_session {
                p.receive_maximum = self.receive_maximum.and_then(|n| NonZeroU16::new(n.into()));
                p.maximum_packet_size = self
                    .maximum_packet_size
                    .and_then(|n| NonZeroU32::new(n.into()));
                p.topic_alias_maximum = self.topic_alias_maximum.map(u16::from);
            }
        }
        c
    }
}

/// An application message for [`Command::Publish`] and [`Op::Offline`].
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishArgs {
    /// QoS.
    pub qos: Qos,
    /// RETAIN.
    pub retain: bool,
    /// Index into [`TOPICS`].
    pub topic: u8,
    /// Payload of `3 * n` bytes.
    pub payload: u8,
}

impl PublishArgs {
    /// The message, without a packet id.
    pub fn build(&self) -> Publish {
        let mut p = Publish::new(topic(self.topic), payload(self.payload));
        p.qos = self.qos.get();
        p.retain = self.retain;
        p
    }
}

fn topic(i: u8) -> TopicName {
    TopicName::new(TOPICS[usize::from(i) % TOPICS.len()]).expect("valid topic")
}

fn payload(n: u8) -> Bytes {
    Bytes::from(vec![b'x'; 3 * usize::from(n)])
}

/// The filters of a bit mask over [`FILTERS`] (the first when none is set).
fn filters(mask: u8) -> Vec<TopicFilter> {
    let mut v: Vec<TopicFilter> = FILTERS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, f)| TopicFilter::new(f).expect("valid filter"))
        .collect();
    if v.is_empty() {
        v.push(TopicFilter::new(FILTERS[0]).expect("valid filter"));
    }
    v
}

/// The reason code `raw` if it is defined and valid on `t`, else `default`.
fn code(raw: u8, t: PacketType, default: ReasonCode) -> ReasonCode {
    ReasonCode::from_u8(raw)
        .filter(|c| c.is_valid_for(t))
        .unwrap_or(default)
}

/// A packet identifier.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdArg {
    /// `1 + n % 8`.
    Small(u8),
    /// `n` (0 is 1).
    Any(u16),
    /// One of the ids the session sent recently (PUBLISH, PUBREL, SUBSCRIBE, UNSUBSCRIBE):
    /// what the peer acknowledges.
    Sent(u8),
    /// One of the ids the session received recently (messages, SUBSCRIBE, UNSUBSCRIBE):
    /// what it acknowledges.
    Received(u8),
}

/// A well-formed packet, built with `mqtt_proto` in the session's version (a CONNECT in its
/// own).
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum PacketArg {
    /// CONNECT.
    Connect(ConnectArgs),
    /// CONNACK.
    ConnAck {
        /// Session Present.
        session_present: bool,
        /// Reason code, if valid on CONNACK.
        reason: u8,
        /// 5.0 Receive Maximum (0: absent).
        receive_maximum: Option<u8>,
        /// 5.0 Maximum Packet Size (0: absent).
        maximum_packet_size: Option<u16>,
        /// 5.0 Topic Alias Maximum.
        topic_alias_maximum: Option<u8>,
        /// 5.0 Maximum QoS (2: absent).
        maximum_qos: Option<Qos>,
        /// 5.0 Retain Available.
        retain_available: Option<bool>,
        /// 5.0 Server Keep Alive.
        server_keep_alive: Option<u8>,
    },
    /// PUBLISH.
    Publish {
        /// QoS.
        qos: Qos,
        /// DUP (QoS 1/2 only).
        dup: bool,
        /// RETAIN.
        retain: bool,
        /// Index into [`TOPICS`].
        topic: u8,
        /// Packet id (QoS 1/2).
        id: IdArg,
        /// Payload of `3 * n` bytes.
        payload: u8,
        /// 5.0 Topic Alias (0 is 1).
        alias: Option<u8>,
        /// With an alias: send an empty topic name.
        alias_only: bool,
        /// 5.0: a Subscription Identifier (only servers may send one).
        subscription_id: bool,
    },
    /// PUBACK with a reason code, if valid.
    PubAck(IdArg, u8),
    /// PUBREC with a reason code, if valid.
    PubRec(IdArg, u8),
    /// PUBREL with a reason code, if valid.
    PubRel(IdArg, u8),
    /// PUBCOMP with a reason code, if valid.
    PubComp(IdArg, u8),
    /// SUBSCRIBE to a mask of [`FILTERS`].
    Subscribe(IdArg, u8, Qos),
    /// SUBACK with `1 + n % 3` codes, all this one if valid.
    SubAck(IdArg, u8, u8),
    /// UNSUBSCRIBE from a mask of [`FILTERS`].
    Unsubscribe(IdArg, u8),
    /// UNSUBACK with `1 + n % 3` codes (5.0), all this one if valid.
    UnsubAck(IdArg, u8, u8),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT with a reason code, if valid, and a Session Expiry Interval.
    Disconnect(u8, Option<u8>),
    /// AUTH with a reason code, if valid.
    Auth(u8),
}

/// A command on a session. Arguments that name something pending (an incoming CONNECT,
/// SUBSCRIBE, message) pick one of those the session reported.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `publish`.
    Publish(PublishArgs),
    /// `subscribe` to a mask of [`FILTERS`], with a Subscription Identifier.
    Subscribe(u8, Qos, Option<u8>),
    /// `unsubscribe` from a mask of [`FILTERS`].
    Unsubscribe(u8),
    /// `ack` with a reason code, if valid on PUBACK.
    Ack(IdArg, u8),
    /// `ping`.
    Ping,
    /// `disconnect` with a reason code, if valid, and a Session Expiry Interval.
    Disconnect(u8, Option<u8>),
    /// `accept` the pending CONNECT: Session Present, and whether to resume the stored
    /// session.
    Accept(bool, bool),
    /// `reject` with a reason code, if valid on CONNACK and an error.
    Reject(u8),
    /// `suback` one of the pending SUBSCRIBEs, one code per filter, this one if valid.
    SubAck(u8, u8),
    /// `unsuback` one of the pending UNSUBSCRIBEs.
    UnsubAck(u8, u8),
    /// `auth` with a reason code, if valid.
    Auth(u8),
    /// `connect` again (a client session is already connecting).
    Connect(ConnectArgs),
    /// `pop_queued`.
    PopQueued,
    /// `publish_encoded`, with the message encoded by `EncodedPublish::new` for this
    /// version (used only if it fits the connection).
    PublishEncoded(PublishArgs, Version),
}

// ----- Statistics ------------------------------------------------------------------------

/// What a run reached, for choosing seeds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections opened: CONNACK with success sent (server) or received (client).
    pub opened: u32,
    /// `Event::Message`.
    pub messages: u32,
    /// `Event::Delivered`.
    pub delivered: u32,
    /// PUBCOMP sent: a QoS 2 message received and released.
    pub pubcomp_sent: u32,
    /// `Event::SubAck` and `Event::UnsubAck` (client), SUBACK and UNSUBACK sent (server).
    pub subacks: u32,
    /// PUBLISH with DUP or PUBREL sent on a resumed session.
    pub resent: u32,
    /// PINGREQ or PINGRESP sent.
    pub pings: u32,
    /// `Event::Dropped`.
    pub dropped: u32,
    /// `Event::Closed`.
    pub closed: u32,
    /// New connections for an old session.
    pub reconnects: u32,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.opened += o.opened;
        self.messages += o.messages;
        self.delivered += o.delivered;
        self.pubcomp_sent += o.pubcomp_sent;
        self.subacks += o.subacks;
        self.resent += o.resent;
        self.pings += o.pings;
        self.dropped += o.dropped;
        self.closed += o.closed;
        self.reconnects += o.reconnects;
    }
}

// ----- One session and its checks --------------------------------------------------------

/// A session under test, with what the checks need to know about its connection.
pub struct Side {
    /// The session.
    pub conn: Connection,
    config: Config,
    name: &'static str,
    /// `Event::Closed` was seen, with its reason.
    pub closed: Option<CloseReason>,
    /// Closed in an earlier drain: nothing may come out any more.
    dead: bool,
    /// Server: the CONNECT of `Event::ConnectReceived`.
    pub connect: Option<Box<Connect>>,
    /// Client: the CONNECT it sent.
    sent_connect: Option<Box<Connect>>,
    /// CONNACK sent (server) / `Event::Connected` (client).
    opened: bool,
    connack_sent: bool,
    /// What the peer allows (5.0, from its CONNECT or CONNACK).
    peer_max_packet_size: u32,
    peer_alias_max: u16,
    peer_max_qos: QoS,
    peer_retain: bool,
    /// Topic aliases we sent, and their topics.
    aliases_out: HashMap<u16, TopicName>,
    /// Client: SUBSCRIBE / UNSUBSCRIBE ids waiting for SUBACK / UNSUBACK.
    pending_subs: BTreeSet<u16>,
    /// Server: SUBSCRIBE and UNSUBSCRIBE events not answered yet, with their sizes.
    subs_in: Vec<(PacketId, usize)>,
    unsubs_in: Vec<(PacketId, usize)>,
    sent_ids: VecDeque<u16>,
    received_ids: VecDeque<u16>,
    /// This connection resumes a session (DUP PUBLISH and PUBREL count as resent).
    resumed: bool,
    /// Counters.
    pub stats: Stats,
}

fn remember(list: &mut VecDeque<u16>, id: PacketId) {
    list.retain(|&x| x != id.get());
    list.push_front(id.get());
    list.truncate(RECENT_IDS);
}

impl Side {
    /// A session under test.
    pub fn new(conn: Connection, config: Config) -> Self {
        let name = match conn.role() {
            Role::Client => "client",
            Role::Server => "server",
        };
        Self {
            conn,
            config,
            name,
            closed: None,
            dead: false,
            connect: None,
            sent_connect: None,
            opened: false,
            connack_sent: false,
            peer_max_packet_size: MAX_PACKET_SIZE,
            peer_alias_max: 0,
            peer_max_qos: QoS::ExactlyOnce,
            peer_retain: true,
            aliases_out: HashMap::new(),
            pending_subs: BTreeSet::new(),
            subs_in: Vec::new(),
            unsubs_in: Vec::new(),
            sent_ids: VecDeque::new(),
            received_ids: VecDeque::new(),
            resumed: false,
            stats: Stats::default(),
        }
    }

    /// Replaces the connection by a new one for the same session; returns the old one.
    /// Recent packet ids and the counters are kept.
    pub fn replace(&mut self, conn: Connection) -> Connection {
        let mut fresh = Side::new(conn, self.config.clone());
        std::mem::swap(&mut fresh.sent_ids, &mut self.sent_ids);
        std::mem::swap(&mut fresh.received_ids, &mut self.received_ids);
        fresh.stats = self.stats;
        fresh.stats.reconnects += 1;
        fresh.resumed = true;
        std::mem::replace(self, fresh).conn
    }

    fn role(&self) -> Role {
        self.conn.role()
    }

    fn is_v5(&self) -> bool {
        self.conn.version().is_some_and(|v| v.is_v5())
    }

    /// A packet id for an [`IdArg`].
    pub fn id(&self, arg: IdArg) -> PacketId {
        let pick = |list: &VecDeque<u16>, i: u8| {
            if list.is_empty() {
                1
            } else {
                list[usize::from(i) % list.len()]
            }
        };
        let raw = match arg {
            IdArg::Small(n) => 1 + u16::from(n % 8),
            IdArg::Any(n) => n.max(1),
            IdArg::Sent(i) => pick(&self.sent_ids, i),
            IdArg::Received(i) => pick(&self.received_ids, i),
        };
        PacketId::new(raw).expect("non-zero")
    }

    /// Drains the session after an input or a command, as an application does, and checks
    /// it:
    ///
    /// 1. every event is handled (see `on_event`); after `Event::Closed` (in this drain or
    ///    an earlier one) no event comes, and there is at most one;
    /// 2. `poll_transmit` is checked packet by packet (see `check_output`); after a drain
    ///    that saw `Event::Closed`, nothing more is sent;
    /// 3. if `poll_timeout` is due, `handle_timeout(now)` is called once, after which no
    ///    timer is due any more, and the outputs are drained again;
    /// 4. [`check_state`](Self::check_state).
    ///
    /// Returns the bytes sent.
    pub fn drain(&mut self, now: Instant) -> BytesMut {
        let mut out = BytesMut::new();
        self.drain_outputs(&mut out);
        if self.conn.poll_timeout().is_some_and(|t| t <= now) {
            self.conn.handle_timeout(now);
            if let Some(t) = self.conn.poll_timeout() {
                assert!(
                    t > now,
                    "{}: handle_timeout(now) left a timer due {:?} before now",
                    self.name,
                    now - t
                );
            }
            self.drain_outputs(&mut out);
        }
        self.check_state();
        if self.closed.is_some() {
            self.dead = true;
        }
        out
    }

    fn drain_outputs(&mut self, out: &mut BytesMut) {
        while let Some(e) = self.conn.poll_event() {
            assert!(
                !self.dead,
                "{}: event after Event::Closed: {e:?}",
                self.name
            );
            assert!(
                self.closed.is_none(),
                "{}: event after Event::Closed: {e:?}",
                self.name
            );
            self.on_event(e);
        }
        if let Some(bytes) = self.conn.poll_transmit() {
            assert!(
                !self.dead,
                "{}: sends after Event::Closed: {:02x?}",
                self.name,
                &bytes[..]
            );
            assert!(
                !bytes.is_empty(),
                "{}: poll_transmit gave no bytes",
                self.name
            );
            self.check_output(&bytes);
            out.extend_from_slice(&bytes);
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::ConnectReceived(c) => {
                assert_eq!(self.role(), Role::Server, "ConnectReceived at a client");
                assert!(self.connect.is_none(), "server: a second ConnectReceived");
                if c.protocol_version.is_v5() {
                    let p = &c.properties;
                    self.peer_max_packet_size =
                        p.maximum_packet_size.map_or(MAX_PACKET_SIZE, |m| m.get());
                    self.peer_alias_max = p.topic_alias_maximum.unwrap_or(0);
                }
                self.connect = Some(c);
            }
            Event::Connected(c) => {
                assert_eq!(self.role(), Role::Client, "Connected at a server");
                assert!(!self.opened, "client: a second Connected");
                assert!(c.reason_code.is_success(), "Connected with {c:?}");
                self.opened = true;
                self.stats.opened += 1;
                if self.is_v5() {
                    let p = &c.properties;
                    self.peer_max_packet_size =
                        p.maximum_packet_size.map_or(MAX_PACKET_SIZE, |m| m.get());
                    self.peer_alias_max = p.topic_alias_maximum.unwrap_or(0);
                    self.peer_max_qos = p.maximum_qos.unwrap_or(QoS::ExactlyOnce);
                    self.peer_retain = p.retain_available.unwrap_or(true);
                }
            }
            Event::Message(p) => {
                assert!(
                    !p.topic.is_empty() && p.properties.topic_alias.is_none(),
                    "{}: a message's topic alias was not resolved: {p:?}",
                    self.name
                );
                assert_eq!(
                    p.packet_id.is_some(),
                    p.qos != QoS::AtMostOnce,
                    "{}: {p:?}",
                    self.name
                );
                if let Some(id) = p.packet_id {
                    remember(&mut self.received_ids, id);
                }
                self.stats.messages += 1;
            }
            Event::Delivered { .. } => self.stats.delivered += 1,
            Event::Dropped { .. } => self.stats.dropped += 1,
            Event::Subscribe(s) => {
                assert_eq!(self.role(), Role::Server, "Subscribe event at a client");
                remember(&mut self.received_ids, s.packet_id);
                self.subs_in.push((s.packet_id, s.subscriptions.len()));
            }
            Event::Unsubscribe(u) => {
                assert_eq!(self.role(), Role::Server, "Unsubscribe event at a client");
                remember(&mut self.received_ids, u.packet_id);
                self.unsubs_in.push((u.packet_id, u.filters.len()));
            }
            Event::SubAck(SubAck { packet_id, .. })
            | Event::UnsubAck(UnsubAck { packet_id, .. }) => {
                assert!(
                    self.pending_subs.remove(&packet_id.get()),
                    "client: SUBACK / UNSUBACK event for {packet_id}, which no SUBSCRIBE / \
                     UNSUBSCRIBE awaits"
                );
                self.stats.subacks += 1;
            }
            Event::Closed(r) => {
                assert!(
                    self.closed.is_none(),
                    "{}: a second Event::Closed: {r:?}",
                    self.name
                );
                self.closed = Some(r);
                self.stats.closed += 1;
            }
            _ => {}
        }
    }

    /// Every `poll_transmit` holds whole packets that decode with `Decoder::client` of the
    /// session's version (3.1.1 while unknown) limited to the peer's Maximum Packet Size,
    /// and:
    ///
    /// - each packet goes the right way (no CONNACK, SUBACK, UNSUBACK, PINGRESP from a
    ///   client; no CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ from a server; no server
    ///   DISCONNECT in 3.x);
    /// - a client sends CONNECT first and once; a server sends CONNACK once, and nothing but
    ///   AUTH before it;
    /// - a PUBLISH's Topic Alias is within the peer's Topic Alias Maximum, and an empty
    ///   topic only uses an alias mapped by an earlier PUBLISH on this connection;
    /// - a client's new (not DUP) PUBLISH respects the server's Maximum QoS and Retain
    ///   Available.
    fn check_output(&mut self, bytes: &Bytes) {
        let v = self.conn.version().unwrap_or(ProtocolVersion::V3_1_1);
        let max = self.peer_max_packet_size;
        let mut decoder = Decoder::client(v).with_max_packet_size(max);
        let mut buf = BytesMut::from(&bytes[..]);
        while !buf.is_empty() {
            match decoder.decode(&mut buf) {
                Ok(Some(p)) => self.on_sent(p),
                Ok(None) => panic!(
                    "{}: poll_transmit ends inside a packet ({v}): {:02x?}",
                    self.name,
                    &buf[..]
                ),
                Err(e) => panic!(
                    "{}: sent bytes do not decode in {v} with the peer's maximum packet \
                     size {max}: {e:?}\n{:02x?}",
                    self.name,
                    &buf[..]
                ),
            }
        }
    }

    fn on_sent(&mut self, p: Packet) {
        let name = self.name;
        let t = p.packet_type();
        let wrong_way = match self.role() {
            Role::Client => matches!(
                t,
                PacketType::ConnAck
                    | PacketType::SubAck
                    | PacketType::UnsubAck
                    | PacketType::PingResp
            ),
            Role::Server => {
                matches!(
                    t,
                    PacketType::Connect
                        | PacketType::Subscribe
                        | PacketType::Unsubscribe
                        | PacketType::PingReq
                ) || (t == PacketType::Disconnect && !self.is_v5())
            }
        };
        assert!(!wrong_way, "{name} sent {t} in {:?}", self.conn.version());
        match self.role() {
            Role::Client => {
                assert_eq!(
                    t == PacketType::Connect,
                    self.sent_connect.is_none(),
                    "client: CONNECT must be sent first and once; sent {t}"
                );
            }
            Role::Server => {
                assert!(
                    self.connack_sent || matches!(t, PacketType::ConnAck | PacketType::Auth),
                    "server: sent {t} before CONNACK"
                );
                assert!(
                    !(self.connack_sent && t == PacketType::ConnAck),
                    "server: a second CONNACK"
                );
            }
        }
        match p {
            Packet::Connect(c) => self.sent_connect = Some(c),
            Packet::ConnAck(c) => {
                self.connack_sent = true;
                if c.reason_code.is_success() {
                    self.opened = true;
                    self.stats.opened += 1;
                }
            }
            Packet::Publish(p) => {
                if let Some(alias) = p.properties.topic_alias {
                    assert!(
                        alias.get() <= self.peer_alias_max,
                        "{name}: topic alias {alias} above the peer's maximum {}",
                        self.peer_alias_max
                    );
                    if p.topic.is_empty() {
                        assert!(
                            self.aliases_out.contains_key(&alias.get()),
                            "{name}: PUBLISH with an empty topic and alias {alias}, which \
                             no PUBLISH sent on this connection mapped: {p:?}"
                        );
                    } else {
                        self.aliases_out.insert(alias.get(), p.topic.clone());
                    }
                }
                if self.role() == Role::Client && !p.dup {
                    assert!(
                        p.qos <= self.peer_max_qos,
                        "client: PUBLISH {:?} above the server's Maximum QoS {:?}",
                        p.qos,
                        self.peer_max_qos
                    );
                    assert!(
                        !p.retain || self.peer_retain,
                        "client: retained PUBLISH when the server has Retain Available 0"
                    );
                }
                if let Some(id) = p.packet_id {
                    remember(&mut self.sent_ids, id);
                }
                if p.dup && self.resumed {
                    self.stats.resent += 1;
                }
            }
            Packet::PubRel(r) => {
                remember(&mut self.sent_ids, r.packet_id);
                if self.resumed {
                    self.stats.resent += 1;
                }
            }
            Packet::PubComp(_) => self.stats.pubcomp_sent += 1,
            Packet::Subscribe(Subscribe { packet_id, .. })
            | Packet::Unsubscribe(Unsubscribe { packet_id, .. }) => {
                remember(&mut self.sent_ids, packet_id)
            }
            Packet::SubAck(_) | Packet::UnsubAck(_) => self.stats.subacks += 1,
            Packet::PingReq | Packet::PingResp => self.stats.pings += 1,
            _ => {}
        }
    }

    /// The state after every operation:
    ///
    /// - `inflight() <= inflight_limit()`;
    /// - the packet ids of `state().inflight` and `state().queue` are distinct, and
    ///   `packet_ids_in_use()` is their number (client: plus its SUBSCRIBE / UNSUBSCRIBE
    ///   awaiting an answer; after a close only bounded by the two);
    /// - `queued() == state().queue.len()` and `queued_bytes()` is the sum of their payloads;
    /// - a closed session has no timer.
    pub fn check_state(&self) {
        let name = self.name;
        let c = &self.conn;
        // Released QoS 2 messages resumed from a session are counted by the peer
        // already; a smaller window after a reconnect cannot take them back.
        let released = c
            .state()
            .inflight
            .iter()
            .filter(|e| matches!(e, mqtt_session::Inflight::Released(_)))
            .count();
        assert!(
            c.inflight() <= c.inflight_limit().max(released),
            "{name}: inflight {} above the inflight limit {}",
            c.inflight(),
            c.inflight_limit()
        );
        let state = c.state();
        let mut ids = BTreeSet::new();
        for id in state
            .inflight
            .iter()
            .map(|e| Some(e.packet_id()))
            .chain(state.queue.iter().map(|p| p.packet_id))
            .flatten()
        {
            assert!(
                ids.insert(id.get()),
                "{name}: packet id {id} held twice in inflight/queue: {state:?}"
            );
        }
        let in_use = c.packet_ids_in_use();
        match (self.role(), self.closed.is_some()) {
            (Role::Server, _) => assert_eq!(
                in_use,
                ids.len(),
                "{name}: packet_ids_in_use() differs from the ids in inflight and queue: \
                 {state:?}"
            ),
            (Role::Client, false) => {
                assert!(
                    self.pending_subs.is_disjoint(&ids),
                    "client: a SUBSCRIBE id is also a message's: {:?} {state:?}",
                    self.pending_subs
                );
                assert_eq!(
                    in_use,
                    ids.len() + self.pending_subs.len(),
                    "client: packet_ids_in_use() differs from the ids in inflight and queue \
                     plus {} SUBSCRIBE/UNSUBSCRIBE awaiting an answer: {state:?}",
                    self.pending_subs.len()
                )
            }
            (Role::Client, true) => assert!(
                (ids.len()..=ids.len() + self.pending_subs.len()).contains(&in_use),
                "client: packet_ids_in_use() {in_use}, inflight and queue hold {}, {} \
                 SUBSCRIBE/UNSUBSCRIBE were pending: {state:?}",
                ids.len(),
                self.pending_subs.len()
            ),
        }
        assert_eq!(c.queued(), state.queue.len(), "{name}: queued()");
        let bytes: usize = state.queue.iter().map(|p| p.payload.len()).sum();
        assert_eq!(c.queued_bytes(), bytes, "{name}: queued_bytes()");
        if self.closed.is_some() {
            assert_eq!(
                c.poll_timeout(),
                None,
                "{name}: a closed connection still has a timer"
            );
        }
    }

    /// Runs a command; misuse errors are expected and ignored. `stored` is the session a
    /// server may resume on [`Command::Accept`]; `pair` keeps the command within what a
    /// correct application does, so that the peer session has no reason to complain.
    pub fn command(
        &mut self,
        now: Instant,
        cmd: &Command,
        stored: &mut Option<SessionState>,
        pair: bool,
    ) {
        match *cmd {
            Command::Publish(a) => {
                let _ = self.conn.publish(now, a.build());
            }
            Command::Subscribe(mask, qos, sub_id) => {
                let subs = filters(mask)
                    .into_iter()
                    .map(|filter| Subscription {
                        filter,
                        options: mqtt_proto::SubscriptionOptions {
                            qos: qos.get(),
                            ..Default::default()
                        },
                    })
                    .collect();
                let props = SubscribeProperties {
                    subscription_identifier: sub_id.and_then(|n| NonZeroU32::new(n.into())),
                    ..Default::default()
                };
                if let Ok(id) = self.conn.subscribe(now, subs, props) {
                    assert!(
                        self.pending_subs.insert(id.get()),
                        "client: subscribe returned {id}, already pending"
                    );
                }
            }
            Command::Unsubscribe(mask) => {
                let r = self
                    .conn
                    .unsubscribe(now, filters(mask), UnsubscribeProperties::default());
                if let Ok(id) = r {
                    assert!(
                        self.pending_subs.insert(id.get()),
                        "client: unsubscribe returned {id}, already pending"
                    );
                }
            }
            Command::Ack(id, reason) => {
                let id = self.id(id);
                let reason = code(reason, PacketType::PubAck, ReasonCode::Success);
                let _ = self.conn.ack(now, id, reason);
            }
            Command::Ping => {
                let _ = self.conn.ping(now);
            }
            Command::Disconnect(reason, expiry) => {
                let reason = code(reason, PacketType::Disconnect, ReasonCode::Success);
                // A client may set a Session Expiry Interval only if its CONNECT had a
                // non-zero one; a server never ([MQTT-3.14.2-2]).
                let allowed = !pair
                    || (self.role() == Role::Client
                        && self.sent_connect.as_ref().is_some_and(|c| {
                            c.properties.session_expiry_interval.unwrap_or(0) != 0
                        }));
                let props = DisconnectProperties {
                    session_expiry_interval: expiry.filter(|_| allowed).map(u32::from),
                    ..Default::default()
                };
                let _ = self.conn.disconnect(now, reason, props);
            }
            Command::Accept(session_present, resume) => {
                let (present, state) = if pair {
                    // As a broker: resume only what the client asked to keep.
                    let clean = self.connect.as_ref().is_none_or(|c| c.clean_start);
                    if resume && !clean {
                        (true, Some(stored.take().unwrap_or_default()))
                    } else {
                        (false, None)
                    }
                } else {
                    (session_present, if resume { stored.take() } else { None })
                };
                let connack = ConnAck {
                    session_present: present,
                    ..Default::default()
                };
                let had_state = state.is_some();
                if self.conn.accept(now, connack, state).is_ok() {
                    self.resumed = had_state;
                    if pair && !had_state {
                        *stored = None; // the old session is gone
                    }
                }
            }
            Command::Reject(reason) => {
                let reason = code(reason, PacketType::ConnAck, ReasonCode::NotAuthorized);
                let _ = self.conn.reject(now, reason);
            }
            Command::SubAck(which, raw) | Command::UnsubAck(which, raw) => {
                let sub = matches!(cmd, Command::SubAck(..));
                let pending = if sub {
                    &mut self.subs_in
                } else {
                    &mut self.unsubs_in
                };
                let (id, n) = if pending.is_empty() {
                    if pair {
                        return;
                    }
                    (PacketId::new(1).expect("non-zero"), 1)
                } else {
                    pending.remove(usize::from(which) % pending.len())
                };
                let r = if sub {
                    let c = code(raw, PacketType::SubAck, ReasonCode::GRANTED_QOS_0);
                    self.conn
                        .suback(now, id, vec![c; n], AckProperties::default())
                } else {
                    let c = code(raw, PacketType::UnsubAck, ReasonCode::Success);
                    self.conn
                        .unsuback(now, id, vec![c; n], AckProperties::default())
                };
                let _ = r;
            }
            Command::Auth(reason) => {
                let auth = Auth {
                    reason_code: code(reason, PacketType::Auth, ReasonCode::Success),
                    ..Default::default()
                };
                let _ = self.conn.auth(now, auth);
            }
            Command::Connect(args) => {
                let _ = self.conn.connect(now, args.build(pair));
            }
            Command::PopQueued => {
                let _ = self.conn.pop_queued();
            }
            Command::PublishEncoded(a, v) => {
                let p = a.build();
                if let Ok(e) = EncodedPublish::new(&p, v.get()) {
                    let _ = self.conn.publish_encoded(now, p, &e);
                }
            }
        }
    }
}

// ----- Packets from a fuzzed peer --------------------------------------------------------

impl PacketArg {
    /// The packet and the version to encode it in (`v`, or a CONNECT's own); `side` gives
    /// the packet ids of [`IdArg::Sent`] and [`IdArg::Received`].
    pub fn build(&self, v: ProtocolVersion, side: &Side) -> (Packet, ProtocolVersion) {
        let resp = |id: &IdArg, raw: u8, t: PacketType| {
            let mut r = PubResponse::new(side.id(*id));
            r.reason_code = code(raw, t, ReasonCode::Success);
            r
        };
        let p = match self {
            PacketArg::Connect(c) => {
                let c = c.build(false);
                let v = c.protocol_version;
                return (Packet::Connect(Box::new(c)), v);
            }
            PacketArg::ConnAck {
                session_present,
                reason,
                receive_maximum,
                maximum_packet_size,
                topic_alias_maximum,
                maximum_qos,
                retain_available,
                server_keep_alive,
            } => {
                let mut c = ConnAck {
                    session_present: *session_present,
                    reason_code: code(*reason, PacketType::ConnAck, ReasonCode::Success),
                    ..Default::default()
                };
                let p = &mut c.properties;
                p.receive_maximum = receive_maximum.and_then(|n| NonZeroU16::new(n.into()));
                p.maximum_packet_size = maximum_packet_size.and_then(|n| NonZeroU32::new(n.into()));
                p.topic_alias_maximum = topic_alias_maximum.map(u16::from);
                p.maximum_qos = maximum_qos.map(Qos::get).filter(|&q| q != QoS::ExactlyOnce);
                p.retain_available = *retain_available;
                p.server_keep_alive = server_keep_alive.map(u16::from);
                Packet::ConnAck(Box::new(c))
            }
            PacketArg::Publish {
                qos,
                dup,
                retain,
                topic: t,
                id,
                payload: n,
                alias,
                alias_only,
                subscription_id,
            } => {
                let mut p = Publish::new(topic(*t), payload(*n));
                p.qos = qos.get();
                p.retain = *retain;
                if p.qos != QoS::AtMostOnce {
                    p.dup = *dup;
                    p.packet_id = Some(side.id(*id));
                }
                if let Some(a) = alias {
                    p.properties.topic_alias = NonZeroU16::new(u16::from(*a).max(1));
                    if *alias_only {
                        p.topic = TopicName::empty();
                    }
                }
                if *subscription_id {
                    p.properties.subscription_identifiers = vec![NonZeroU32::MIN];
                }
                Packet::Publish(p)
            }
            PacketArg::PubAck(id, r) => Packet::PubAck(resp(id, *r, PacketType::PubAck)),
            PacketArg::PubRec(id, r) => Packet::PubRec(resp(id, *r, PacketType::PubRec)),
            PacketArg::PubRel(id, r) => Packet::PubRel(resp(id, *r, PacketType::PubRel)),
            PacketArg::PubComp(id, r) => Packet::PubComp(resp(id, *r, PacketType::PubComp)),
            PacketArg::Subscribe(id, mask, qos) => Packet::Subscribe(Subscribe {
                packet_id: side.id(*id),
                properties: Default::default(),
                subscriptions: filters(*mask)
                    .into_iter()
                    .map(|filter| Subscription {
                        filter,
                        options: mqtt_proto::SubscriptionOptions {
                            qos: qos.get(),
                            ..Default::default()
                        },
                    })
                    .collect(),
            }),
            PacketArg::SubAck(id, n, r) => Packet::SubAck(SubAck {
                packet_id: side.id(*id),
                properties: Default::default(),
                reason_codes: vec![
                    code(*r, PacketType::SubAck, ReasonCode::GRANTED_QOS_0);
                    1 + usize::from(n % 3)
                ],
            }),
            PacketArg::Unsubscribe(id, mask) => Packet::Unsubscribe(Unsubscribe {
                packet_id: side.id(*id),
                properties: Default::default(),
                filters: filters(*mask),
            }),
            PacketArg::UnsubAck(id, n, r) => Packet::UnsubAck(UnsubAck {
                packet_id: side.id(*id),
                properties: Default::default(),
                reason_codes: if v.is_v5() {
                    vec![
                        code(*r, PacketType::UnsubAck, ReasonCode::Success);
                        1 + usize::from(n % 3)
                    ]
                } else {
                    Vec::new()
                },
            }),
            PacketArg::PingReq => Packet::PingReq,
            PacketArg::PingResp => Packet::PingResp,
            PacketArg::Disconnect(r, expiry) => Packet::Disconnect(Disconnect {
                reason_code: code(*r, PacketType::Disconnect, ReasonCode::Success),
                properties: DisconnectProperties {
                    session_expiry_interval: expiry.map(u32::from),
                    ..Default::default()
                }
                .into(),
            }),
            PacketArg::Auth(r) => Packet::Auth(Auth {
                reason_code: code(*r, PacketType::Auth, ReasonCode::Success),
                ..Default::default()
            }),
        };
        (p, v)
    }
}

// ----- Runs ------------------------------------------------------------------------------

/// Runs one input; panics when a check fails. Returns what the run reached.
pub fn run(input: &Input) -> Stats {
    // Any instant will do: from here on time is simulated.
    let start = Instant::now();
    match input {
        Input::Server(s, ops) => {
            let config = s.config();
            let side = Side::new(Connection::server(config.clone(), start), config);
            Single::new(side, start, None).run(ops)
        }
        Input::Client(s, connect, ops) => {
            let config = s.config();
            let side = Side::new(Connection::client(config.clone()), config);
            Single::new(side, start, Some(*connect)).run(ops)
        }
        Input::Pair(c, s, connect, ops) => Pair::new(c, s, *connect, start).run(ops),
    }
}

/// One session and a fuzzed peer.
struct Single {
    side: Side,
    now: Instant,
    /// Client: the CONNECT it sends.
    connect: Option<ConnectArgs>,
    /// Server: the session to resume on accept.
    stored: Option<SessionState>,
    parked: Vec<Publish>,
}

impl Single {
    fn new(mut side: Side, now: Instant, connect: Option<ConnectArgs>) -> Self {
        if let Some(args) = connect {
            let _ = side.conn.connect(now, args.build(false));
        }
        side.drain(now);
        Self {
            side,
            now,
            connect,
            stored: None,
            parked: Vec::new(),
        }
    }

    fn run(mut self, ops: &[Op]) -> Stats {
        for op in ops {
            self.op(op);
        }
        self.side.stats
    }

    fn op(&mut self, op: &Op) {
        let now = self.now;
        match op {
            Op::Raw(bytes) => {
                self.side.conn.handle_input(now, bytes);
                self.side.drain(now);
            }
            Op::Packet(arg, chunk) => {
                let v = self.side.conn.version().unwrap_or(ProtocolVersion::V5);
                let (p, v) = arg.build(v, &self.side);
                let mut wire = BytesMut::new();
                if p.encode(&mut wire, v, MAX_PACKET_SIZE).is_err() {
                    return; // not expressible in this version
                }
                let n = if *chunk == 0 {
                    wire.len()
                } else {
                    usize::from(*chunk)
                };
                for piece in wire.chunks(n) {
                    self.side.conn.handle_input(now, piece);
                    self.side.drain(now);
                }
            }
            Op::Advance(secs) => {
                self.now += Duration::from_secs((*secs).into());
                self.side.drain(self.now);
            }
            Op::Command(cmd) => {
                self.side.command(now, cmd, &mut self.stored, false);
                self.side.drain(now);
            }
            Op::Closed => {
                self.side.conn.handle_closed(now);
                self.side.drain(now);
            }
            Op::Reconnect(clean_start) => {
                let config = self.side.config.clone();
                match self.connect {
                    Some(mut args) => {
                        let old = self.side.replace(Connection::client(config.clone()));
                        let mut state = old.into_state();
                        state.queue.extend(self.parked.drain(..));
                        self.side.conn = Connection::client_with_state(config, state);
                        args.clean_start = *clean_start;
                        let _ = self.side.conn.connect(now, args.build(false));
                    }
                    None => {
                        let old = self.side.replace(Connection::server(config, now));
                        let mut state = old.into_state();
                        state.queue.extend(self.parked.drain(..));
                        self.stored = Some(state);
                    }
                }
                self.side.drain(now);
            }
            Op::Offline(a) => {
                if self.parked.len() < MAX_PARKED {
                    self.parked.push(a.build());
                }
            }
        }
    }
}

/// A client session wired to a server session.
struct Pair {
    client: Side,
    server: Side,
    now: Instant,
    connect: ConnectArgs,
    to_server: BytesMut,
    to_client: BytesMut,
    /// The broker's session for the client, resumed on accept.
    stored: Option<SessionState>,
    parked_client: Vec<Publish>,
    parked_server: Vec<Publish>,
}

impl Pair {
    fn new(c: &Settings, s: &Settings, connect: ConnectArgs, now: Instant) -> Self {
        let (cc, sc) = (c.config(), s.config());
        let mut pair = Self {
            client: Side::new(Connection::client(cc.clone()), cc),
            server: Side::new(Connection::server(sc.clone(), now), sc),
            now,
            connect,
            to_server: BytesMut::new(),
            to_client: BytesMut::new(),
            stored: None,
            parked_client: Vec::new(),
            parked_server: Vec::new(),
        };
        let _ = pair.client.conn.connect(now, connect.build(true));
        pair.drain();
        pair
    }

    fn run(mut self, ops: &[PairOp]) -> Stats {
        for op in ops {
            self.op(op);
        }
        let mut stats = self.client.stats;
        stats.add(&self.server.stats);
        stats
    }

    /// Drains both sides into the links, then checks that neither closed for a protocol
    /// violation: two sessions of this crate must not break the protocol toward each
    /// other. Allowed: what the CONNECT cannot know yet (a server that refuses the
    /// CONNECT itself), and in 3.x the limits 3.x cannot announce (Maximum Packet Size,
    /// Receive Maximum).
    fn drain(&mut self) {
        let was = (self.client.closed.is_some(), self.server.closed.is_some());
        let out = self.client.drain(self.now);
        self.to_server.extend_from_slice(&out);
        let out = self.server.drain(self.now);
        self.to_client.extend_from_slice(&out);
        let v5 = self.connect.version.get().is_v5();
        for (side, was_closed) in [(&self.client, was.0), (&self.server, was.1)] {
            let Some(CloseReason::Violation(v)) = &side.closed else {
                continue;
            };
            if was_closed {
                continue;
            }
            let before_connect = side.role() == Role::Server && side.connect.is_none();
            let unannounced = !v5
                && matches!(
                    v,
                    Violation::ReceiveMaximumExceeded
                        | Violation::Decode(DecodeError::PacketTooLarge { .. })
                );
            assert!(
                before_connect || unannounced,
                "pair ({}): the {} closed for a protocol violation by the other session: \
                 {v:?}",
                self.connect.version.get(),
                side.name
            );
        }
    }

    fn deliver(&mut self, to_server: bool, n: u8) {
        let link = if to_server {
            &mut self.to_server
        } else {
            &mut self.to_client
        };
        let k = match n {
            0 => link.len(),
            n => link.len().min(n.into()),
        };
        if k == 0 {
            return;
        }
        let bytes = link.split_to(k);
        let side = if to_server {
            &mut self.server
        } else {
            &mut self.client
        };
        side.conn.handle_input(self.now, &bytes);
        self.drain();
    }

    fn op(&mut self, op: &PairOp) {
        let now = self.now;
        match op {
            PairOp::ToServer(n) => self.deliver(true, *n),
            PairOp::ToClient(n) => self.deliver(false, *n),
            PairOp::Flush => {
                for _ in 0..8 {
                    if self.to_server.is_empty() && self.to_client.is_empty() {
                        break;
                    }
                    self.deliver(true, 0);
                    self.deliver(false, 0);
                }
            }
            PairOp::Advance(secs) => {
                self.now += Duration::from_secs((*secs).into());
                self.drain();
            }
            PairOp::Client(cmd) => {
                self.client.command(now, cmd, &mut None, true);
                self.drain();
            }
            PairOp::Server(cmd) => {
                self.server.command(now, cmd, &mut self.stored, true);
                self.drain();
            }
            PairOp::Hangup => {
                self.to_server.clear();
                self.to_client.clear();
                self.client.conn.handle_closed(now);
                self.server.conn.handle_closed(now);
                self.drain();
            }
            PairOp::Reconnect(clean_start) => {
                self.to_server.clear();
                self.to_client.clear();
                let cc = self.client.config.clone();
                let old = self.client.replace(Connection::client(cc.clone()));
                let mut state = old.into_state();
                state.queue.extend(self.parked_client.drain(..));
                self.client.conn = Connection::client_with_state(cc, state);
                let sc = self.server.config.clone();
                let old = self.server.replace(Connection::server(sc, now));
                // A session the last connection did not take over is still the broker's.
                let mut state = match self.stored.take() {
                    Some(s) => s,
                    None => old.into_state(),
                };
                state.queue.extend(self.parked_server.drain(..));
                self.stored = Some(state);
                self.connect.clean_start = *clean_start;
                let _ = self.client.conn.connect(now, self.connect.build(true));
                self.drain();
            }
            PairOp::Offline(client, a) => {
                let parked = if *client {
                    &mut self.parked_client
                } else {
                    &mut self.parked_server
                };
                if parked.len() < MAX_PARKED {
                    parked.push(a.build());
                }
            }
        }
    }
}

// ----- Writing inputs --------------------------------------------------------------------

/// The bytes an [`Input`] is decoded from: the inverse of its `Arbitrary` decoding
/// (arbitrary 1.x), so that seeds can be written as operation lists. Integers are little
/// endian, `bool` one byte, `Option` a `bool` then the value, a `Vec` each element after a
/// `true` byte then a `false` byte, an enum a `u32` whose high bits times the number of
/// variants give the variant, then its fields. `make-seeds` checks that every seed decodes
/// back to the same input.
pub fn to_bytes(input: &Input) -> Vec<u8> {
    let mut out = Vec::new();
    input.put(&mut out);
    out
}

/// Writes a value the way its `Arbitrary` implementation reads it.
pub(crate) trait Put {
    fn put(&self, out: &mut Vec<u8>);
}

/// The `u32` that `#[derive(Arbitrary)]` maps to variant `index` of `count`: the smallest
/// `t` with `(t * count) >> 32 == index`.
pub(crate) fn tag(out: &mut Vec<u8>, index: u32, count: u32) {
    assert!(index < count);
    let t = (u64::from(index) << 32).div_ceil(u64::from(count));
    out.extend_from_slice(&(t as u32).to_le_bytes());
}

impl Put for u8 {
    fn put(&self, out: &mut Vec<u8>) {
        out.push(*self);
    }
}

impl Put for u16 {
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

impl Put for bool {
    fn put(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
}

impl<T: Put> Put for Option<T> {
    fn put(&self, out: &mut Vec<u8>) {
        self.is_some().put(out);
        if let Some(v) = self {
            v.put(out);
        }
    }
}

impl<T: Put> Put for Vec<T> {
    fn put(&self, out: &mut Vec<u8>) {
        for v in self {
            true.put(out);
            v.put(out);
        }
        false.put(out);
    }
}

/// Puts each field in order.
macro_rules! put_all {
    ($out:ident; $($v:expr),* $(,)?) => { $( Put::put($v, $out); )* };
}
pub(crate) use put_all;

impl Put for Input {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            Input::Server(s, ops) => {
                tag(out, 0, 3);
                put_all!(out; s, ops);
            }
            Input::Client(s, c, ops) => {
                tag(out, 1, 3);
                put_all!(out; s, c, ops);
            }
            Input::Pair(c, s, connect, ops) => {
                tag(out, 2, 3);
                put_all!(out; c, s, connect, ops);
            }
        }
    }
}

impl Put for Op {
    fn put(&self, out: &mut Vec<u8>) {
        const N: u32 = 7;
        match self {
            Op::Raw(b) => {
                tag(out, 0, N);
                b.put(out);
            }
            Op::Packet(p, chunk) => {
                tag(out, 1, N);
                put_all!(out; p, chunk);
            }
            Op::Advance(s) => {
                tag(out, 2, N);
                s.put(out);
            }
            Op::Command(c) => {
                tag(out, 3, N);
                c.put(out);
            }
            Op::Closed => tag(out, 4, N),
            Op::Reconnect(clean) => {
                tag(out, 5, N);
                clean.put(out);
            }
            Op::Offline(p) => {
                tag(out, 6, N);
                p.put(out);
            }
        }
    }
}

impl Put for PairOp {
    fn put(&self, out: &mut Vec<u8>) {
        const N: u32 = 9;
        match self {
            PairOp::ToServer(n) => {
                tag(out, 0, N);
                n.put(out);
            }
            PairOp::ToClient(n) => {
                tag(out, 1, N);
                n.put(out);
            }
            PairOp::Flush => tag(out, 2, N),
            PairOp::Advance(s) => {
                tag(out, 3, N);
                s.put(out);
            }
            PairOp::Client(c) => {
                tag(out, 4, N);
                c.put(out);
            }
            PairOp::Server(c) => {
                tag(out, 5, N);
                c.put(out);
            }
            PairOp::Hangup => tag(out, 6, N),
            PairOp::Reconnect(clean) => {
                tag(out, 7, N);
                clean.put(out);
            }
            PairOp::Offline(client, p) => {
                tag(out, 8, N);
                put_all!(out; client, p);
            }
        }
    }
}

impl Put for Settings {
    fn put(&self, out: &mut Vec<u8>) {
        put_all!(out;
            &self.max_packet_size,
            &self.receive_maximum,
            &self.max_inflight,
            &self.max_queued_messages,
            &self.max_queued_bytes,
            &self.topic_alias_maximum,
            &self.outgoing_topic_aliases,
            &self.connect_timeout,
            &self.ping_timeout,
            &self.server_keep_alive,
            &self.maximum_qos,
            &self.retain_available,
            &self.manual_acks,
        );
    }
}

impl Put for Version {
    fn put(&self, out: &mut Vec<u8>) {
        tag(out, *self as u32, 3);
    }
}

impl Put for Qos {
    fn put(&self, out: &mut Vec<u8>) {
        tag(out, *self as u32, 3);
    }
}

impl Put for ConnectArgs {
    fn put(&self, out: &mut Vec<u8>) {
        put_all!(out;
            &self.version,
            &self.clean_start,
            &self.keep_alive,
            &self.client_id,
            &self.session_expiry,
            &self.receive_maximum,
            &self.maximum_packet_size,
            &self.topic_alias_maximum,
            &self.request_problem_information,
            &self.will,
            &self.credentials,
        );
    }
}

impl Put for PublishArgs {
    fn put(&self, out: &mut Vec<u8>) {
        put_all!(out; &self.qos, &self.retain, &self.topic, &self.payload);
    }
}

impl Put for IdArg {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            IdArg::Small(n) => {
                tag(out, 0, 4);
                n.put(out);
            }
            IdArg::Any(n) => {
                tag(out, 1, 4);
                n.put(out);
            }
            IdArg::Sent(i) => {
                tag(out, 2, 4);
                i.put(out);
            }
            IdArg::Received(i) => {
                tag(out, 3, 4);
                i.put(out);
            }
        }
    }
}

impl Put for PacketArg {
    fn put(&self, out: &mut Vec<u8>) {
        const N: u32 = 15;
        match self {
            PacketArg::Connect(c) => {
                tag(out, 0, N);
                c.put(out);
            }
            PacketArg::ConnAck {
                session_present,
                reason,
                receive_maximum,
                maximum_packet_size,
                topic_alias_maximum,
                maximum_qos,
                retain_available,
                server_keep_alive,
            } => {
                tag(out, 1, N);
                put_all!(out;
                    session_present,
                    reason,
                    receive_maximum,
                    maximum_packet_size,
                    topic_alias_maximum,
                    maximum_qos,
                    retain_available,
                    server_keep_alive,
                );
            }
            PacketArg::Publish {
                qos,
                dup,
                retain,
                topic,
                id,
                payload,
                alias,
                alias_only,
                subscription_id,
            } => {
                tag(out, 2, N);
                put_all!(out;
                    qos, dup, retain, topic, id, payload, alias, alias_only, subscription_id,
                );
            }
            PacketArg::PubAck(id, r) => {
                tag(out, 3, N);
                put_all!(out; id, r);
            }
            PacketArg::PubRec(id, r) => {
                tag(out, 4, N);
                put_all!(out; id, r);
            }
            PacketArg::PubRel(id, r) => {
                tag(out, 5, N);
                put_all!(out; id, r);
            }
            PacketArg::PubComp(id, r) => {
                tag(out, 6, N);
                put_all!(out; id, r);
            }
            PacketArg::Subscribe(id, mask, qos) => {
                tag(out, 7, N);
                put_all!(out; id, mask, qos);
            }
            PacketArg::SubAck(id, n, r) => {
                tag(out, 8, N);
                put_all!(out; id, n, r);
            }
            PacketArg::Unsubscribe(id, mask) => {
                tag(out, 9, N);
                put_all!(out; id, mask);
            }
            PacketArg::UnsubAck(id, n, r) => {
                tag(out, 10, N);
                put_all!(out; id, n, r);
            }
            PacketArg::PingReq => tag(out, 11, N),
            PacketArg::PingResp => tag(out, 12, N),
            PacketArg::Disconnect(r, expiry) => {
                tag(out, 13, N);
                put_all!(out; r, expiry);
            }
            PacketArg::Auth(r) => {
                tag(out, 14, N);
                r.put(out);
            }
        }
    }
}

impl Put for Command {
    fn put(&self, out: &mut Vec<u8>) {
        const N: u32 = 14;
        match self {
            Command::Publish(p) => {
                tag(out, 0, N);
                p.put(out);
            }
            Command::Subscribe(mask, qos, id) => {
                tag(out, 1, N);
                put_all!(out; mask, qos, id);
            }
            Command::Unsubscribe(mask) => {
                tag(out, 2, N);
                mask.put(out);
            }
            Command::Ack(id, r) => {
                tag(out, 3, N);
                put_all!(out; id, r);
            }
            Command::Ping => tag(out, 4, N),
            Command::Disconnect(r, expiry) => {
                tag(out, 5, N);
                put_all!(out; r, expiry);
            }
            Command::Accept(present, resume) => {
                tag(out, 6, N);
                put_all!(out; present, resume);
            }
            Command::Reject(r) => {
                tag(out, 7, N);
                r.put(out);
            }
            Command::SubAck(which, r) => {
                tag(out, 8, N);
                put_all!(out; which, r);
            }
            Command::UnsubAck(which, r) => {
                tag(out, 9, N);
                put_all!(out; which, r);
            }
            Command::Auth(r) => {
                tag(out, 10, N);
                r.put(out);
            }
            Command::Connect(c) => {
                tag(out, 11, N);
                c.put(out);
            }
            Command::PopQueued => tag(out, 12, N),
            Command::PublishEncoded(p, v) => {
                tag(out, 13, N);
                put_all!(out; p, v);
            }
        }
    }
}
