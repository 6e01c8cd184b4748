//! The checks behind the `broker` fuzz target: the `mqtt_broker::Broker` core driven by
//! an [`Arbitrary`] list of operations over a few connections at once, in two modes
//! ([`Input`]):
//!
//! - [`Input::Raw`]: the operations play the clients directly: connections open and close,
//!   raw bytes and well-formed packets built with `mqtt_proto` (CONNECT of 3.1, 3.1.1 and
//!   5.0 with a client id from a small set, so that takeovers happen; SUBSCRIBE,
//!   UNSUBSCRIBE, PUBLISH, the acknowledgements, PINGREQ, DISCONNECT, AUTH) arrive on
//!   them, time passes, and the adapter answers authentication requests and storage
//!   records and gives commands (publish as the broker, disconnect a client, shut down).
//! - [`Input::Clients`]: real `mqtt_session` client connections wired to the broker, with
//!   the bytes of each direction delivered in arbitrary chunks, so that deep states
//!   (persistent sessions, offline queues, shared subscriptions, wills, takeovers) are
//!   reached quickly.
//!
//! The broker is configured from the input ([`Settings`]): small queue limits, drop
//! policy, durable acknowledgements, authentication, anonymous access, subscription and
//! topic limits, `$SYS` interval, session limits.
//!
//! After every call into the broker its outputs are drained and checked, and whenever
//! `poll_timeout()` is due, `handle_timeout(now)` is called. Any failed check is a panic:
//!
//! - no broker call panics;
//! - every `Transmit(id, bytes)` holds whole packets that decode with `Decoder::client`
//!   of the connection's version (the version of the first CONNECT the connection sent,
//!   found by decoding what it sent as the broker does; 3.1.1 before one), limited to the
//!   client's 5.0 Maximum Packet Size; the packets go the right way (no CONNECT,
//!   SUBSCRIBE, UNSUBSCRIBE, PINGREQ; no DISCONNECT in 3.x), nothing but AUTH comes before
//!   CONNACK, CONNACK comes once, nothing follows a refusal, Session Present is 0 after
//!   Clean Start 1 and is what `ClientConnected` said; a PUBLISH's Topic Alias is within
//!   the client's Topic Alias Maximum and an empty topic uses an alias mapped before; no
//!   more QoS 1/2 messages are unacknowledged than the client's 5.0 Receive Maximum;
//!   with `persistence`, no PUBACK / PUBREC before a `Record::Sync` after a record of the
//!   message is durable;
//! - no `Transmit` or `Close` for a connection after its `Close`; events, authentication
//!   requests and `Store` records are consistent with the connections (a
//!   `ClientDisconnected` follows its `Close`, records only with `persistence`, with fresh
//!   sequence numbers; a `MemoryStore` applies them all and ends with no message body
//!   that no session holds);
//! - `handle_timeout(now)` makes progress: `poll_timeout()` is no longer due after a few
//!   calls;
//! - the `stats()` counters never decrease;
//! - `gauges().connections` is the number of connections opened and not closed by
//!   either side (a `Close` output or `handle_closed`); `sessions().len()` is
//!   `gauges().sessions`; `subscriptions()` (client id, filter, QoS) is exactly what the
//!   `Subscribed`, `Unsubscribed` and `SessionEnded` events built up, and
//!   `gauges().subscriptions` its size; `retained()` holds the last retained message
//!   routed on each topic and `gauges().retained` is its size; `clients()` lists exactly
//!   the online sessions; no offline queue bytes without an offline session; no
//!   connection after `shutdown`; `disconnect_client` says whether the client was
//!   connected;
//! - a session ends by expiry only after being offline for its expiry (as `sessions()`
//!   reported it), and no offline session outlives it;
//! - a client never gets a message on a topic that matches none of its session's
//!   subscriptions when the message was routed (the subscriptions as the events tell
//!   them, No Local honoured, matched by an independent matcher, [`topic_matches`]), nor
//!   at a QoS above the message's and those subscriptions'; a 5.0 message carries the
//!   Subscription Identifiers of those subscriptions, is not sent once its Message Expiry
//!   Interval passed and is sent with the interval reduced by the time it waited; a
//!   retained message (RETAIN 1) only on a topic that one of the session's subscriptions
//!   matches. Every message carries a unique payload, so each delivery is tied to its
//!   routing;
//! - with real clients: a QoS 2 message is never delivered twice to the same client (one
//!   client session state carried from connection to connection), beyond the copies its
//!   subscriptions allow (one for the non-shared ones, one per shared group); a client
//!   never closes because the broker broke the protocol, and the broker never closes a
//!   client for breaking it, except for what the client cannot know (3.x limits that
//!   cannot be announced, a CONNECT refused for its size).

use arbitrary::Arbitrary;
use bytes::{Bytes, BytesMut};
use mqtt_broker::{
    Access, Acl, AuthResult, Broker, BrokerConfig, BrokerEvent, ConnId, ConnInfo, DropPolicy,
    MemoryStore, Output, Record, Rule, Who,
};
use mqtt_proto::{
    Auth, AuthProperties, Connect, DecodeError, Decoder, Disconnect, DisconnectProperties,
    MqttString, Packet, PacketId, PacketType, ProtocolVersion, PubResponse, Publish, QoS,
    ReasonCode, RetainHandling, SubAck, Subscribe, SubscribeProperties, Subscription,
    SubscriptionOptions, TopicFilter, TopicName, Unsubscribe, Will, WillProperties,
    MAX_PACKET_SIZE,
};
use mqtt_session::{CloseReason, Config, Connection, Event, SessionState, Violation};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::num::{NonZeroU16, NonZeroU32};
use std::time::{Duration, Instant};

use crate::session::{put_all, tag, Put};
pub use crate::session::{Qos, Version};

/// Connection slots the operations address (`slot % SLOTS`).
pub const SLOTS: usize = 6;
/// Client identifiers, chosen by index; the empty one asks the broker to assign one.
pub const CLIENT_IDS: [&str; 4] = ["c0", "c1", "c2", ""];
/// Topic names of PUBLISH and wills, chosen by index.
pub const TOPICS: [&str; 7] = ["a", "a/b", "a/b/c", "x/y", "s/1/t", "$SYS/t", "w/c"];
/// Topic filters of SUBSCRIBE and UNSUBSCRIBE, chosen by a bit mask.
pub const FILTERS: [&str; 10] = [
    "a/b",
    "a/+",
    "#",
    "+/+",
    "a/#",
    "x/y",
    "$share/g/a/#",
    "$share/h/#",
    "$SYS/#",
    "+/1/#",
];
/// User names of CONNECT, chosen by index.
pub const USERS: [&str; 2] = ["u1", "u2"];
/// How many recent packet identifiers each connection remembers for [`IdArg::Recent`].
const RECENT_IDS: usize = 16;
/// Bound on the rounds of moving bytes and handling timers after one operation.
const SETTLE_ROUNDS: usize = 64;
/// Bound on the deadlines one [`Op::Advance`] steps through.
const ADVANCE_STEPS: usize = 16;

// ----- Input ------------------------------------------------------------------------------

/// One fuzz input.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The operations play the clients with bytes and packets.
    Raw(Settings, Vec<Op>),
    /// Real `mqtt_session` clients wired to the broker.
    Clients(Settings, Vec<ClientOp>),
}

/// An operation of [`Input::Raw`]. Slots are taken modulo [`SLOTS`].
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A transport connection opens in this slot (`handle_connection`); the slot's earlier
    /// connection, if still open, stays open but is no longer addressed.
    Open(u8, OpenArgs),
    /// Raw bytes from the slot's client.
    Raw(u8, Vec<u8>),
    /// A well-formed packet from the slot's client, fed in chunks of this many bytes (0:
    /// at once).
    Packet(u8, PacketArg, u8),
    /// The slot's transport closed (`handle_closed`).
    Closed(u8),
    /// Time passes, in seconds; with `true` stepping through every deadline on the way,
    /// else jumping.
    Advance(u16, bool),
    /// The adapter's part.
    Broker(BrokerOp),
}

/// An operation of [`Input::Clients`]. Slots are taken modulo [`SLOTS`].
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum ClientOp {
    /// A client connects in this slot (its earlier connection hangs up first): a new
    /// transport and a client `Connection` that sends this CONNECT, with these limits
    /// (5.0 only). With Clean Start 0 it resumes the client session state that its client
    /// id's last connection left, if that one is closed.
    Connect(u8, ConnectArgs, ClientLimits),
    /// Delivers up to this many bytes (0: all) from the slot's client to the broker.
    ToBroker(u8, u8),
    /// Delivers up to this many bytes (0: all) from the broker to the slot's client.
    ToClient(u8, u8),
    /// Delivers everything both ways, in chunks of this many bytes (0: at once), until
    /// nothing moves.
    Flush(u8),
    /// The slot's client publishes `1 + n % 8` messages.
    Publish(u8, PublishArgs, u8),
    /// The slot's client subscribes.
    Subscribe(u8, SubArgs),
    /// The slot's client unsubscribes from a mask of [`FILTERS`].
    Unsubscribe(u8, u16),
    /// The slot's client pings.
    Ping(u8),
    /// The slot's client disconnects: with the will (5.0 0x04) or not, and a 5.0 Session
    /// Expiry Interval.
    Disconnect(u8, bool, Option<u8>),
    /// The slot's transport breaks; bytes in flight are lost.
    Hangup(u8),
    /// Time passes, in seconds, stepping through every deadline; with `true`
    /// everything is delivered after each.
    Advance(u16, bool),
    /// The adapter's part.
    Broker(BrokerOp),
}

/// What the adapter does besides moving bytes.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerOp {
    /// Answers one of the pending `Authenticate` outputs (or, with none pending, the
    /// slot with this number).
    Auth(u8, AuthAnswer),
    /// `handle_durable` for one of the pending `Record::Sync` sequence numbers (or,
    /// with none pending, this number).
    Durable(u8),
    /// Publishes `1 + n % 8` messages as the broker.
    Publish(PublishArgs, u8),
    /// `disconnect_client` of a client id of [`CLIENT_IDS`] with a reason code, if valid
    /// on DISCONNECT.
    DisconnectClient(u8, u8),
    /// `shutdown`.
    Shutdown,
    /// `handle_idle` for the slot's connection (the adapter parked it).
    Idle(u8),
}

/// An answer to an authentication request.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthAnswer {
    /// Allow, replacing the user name if true.
    Allow(bool),
    /// Deny with this reason code, if it is a CONNACK error.
    Deny(u8),
    /// Continue the 5.0 exchange with an AUTH.
    Continue,
}

/// How a connection opens (always with a new id, as the adapters count them).
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenArgs {
    /// A verified TLS client certificate identity.
    pub tls: bool,
    /// The listener's anonymous access (`None`: the broker's).
    pub allow_anonymous: Option<bool>,
}

/// Variations of [`BrokerConfig`]. Counts are taken modulo 8 and byte sizes modulo 16
/// (then times a unit), so that the limits are reached; 0 stands for the default.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Session: `n % 32`; 0: no limit; else `32 + 4 * n` bytes.
    pub max_packet_size: u8,
    /// Session: 0: 65,535.
    pub receive_maximum: u8,
    /// Session: 0: 1,024.
    pub max_inflight: u8,
    /// Session: messages an online session queues; 0: 1,000.
    pub max_queued_messages: u8,
    /// Session: 0: 16 MiB; else `16 * n` bytes.
    pub max_queued_bytes: u8,
    /// Session: taken modulo 5.
    pub topic_alias_maximum: u8,
    /// Session: topic aliases on what the broker sends.
    pub outgoing_topic_aliases: bool,
    /// Session: seconds; 0: 10 s.
    pub connect_timeout: u8,
    /// Session: Server Keep Alive.
    pub server_keep_alive: Option<u8>,
    /// Session: Maximum QoS of what clients publish.
    pub session_maximum_qos: Qos,
    /// Session: Retain Available.
    pub retain_available: bool,
    /// `allow_anonymous`.
    pub allow_anonymous: bool,
    /// `authenticate`.
    pub authenticate: bool,
    /// 0: 1,000.
    pub max_offline_messages: u8,
    /// 0: 16 MiB; else `16 * n` bytes.
    pub max_offline_bytes: u8,
    /// 0: 1 GiB; else `32 * n` bytes.
    pub max_total_offline_bytes: u8,
    /// `queue_qos0_offline`.
    pub queue_qos0_offline: bool,
    /// [`DropPolicy::DropOldest`] if true.
    pub drop_oldest: bool,
    /// Seconds (`None`: 2 days).
    pub persistent_session_expiry: Option<u8>,
    /// Seconds (`None`: 7 days).
    pub max_session_expiry: Option<u8>,
    /// `max_keep_alive`, seconds.
    pub max_keep_alive: Option<u8>,
    /// 0: 1,000.
    pub max_subscriptions: u8,
    /// 0: 32.
    pub max_topic_levels: u8,
    /// `subscribe_denied_code` 0x87 instead of 0x80.
    pub denied_not_authorized: bool,
    /// Seconds (0 is 1); `None`: no `$SYS`.
    pub sys_interval: Option<u8>,
    /// `persistence`.
    pub persistence: bool,
    /// `maximum_qos` of subscriptions.
    pub maximum_qos: Qos,
    /// An ACL: 0 none, else one of a few rule sets (see [`Settings::acl`]).
    pub acl: u8,
}

impl Settings {
    /// The configuration these settings stand for.
    pub fn config(&self) -> BrokerConfig {
        // Small limits, so that they are reached: `n % 8`, 0 for the default.
        let or = |v: u8, default: usize| match v % 8 {
            0 => default,
            n => usize::from(n),
        };
        // Byte limits: `unit * (n % 16)`, 0 for the default.
        let bytes = |v: u8, unit: usize, default: usize| match v % 16 {
            0 => default,
            n => unit * usize::from(n),
        };
        let secs = |v: u8| Duration::from_secs(v.into());
        let session = Config {
            max_packet_size: match self.max_packet_size % 32 {
                0 => MAX_PACKET_SIZE,
                n => 32 + 4 * u32::from(n),
            },
            receive_maximum: or(self.receive_maximum, 65_535) as u16,
            max_inflight: or(self.max_inflight, 1024) as u16,
            max_queued_messages: or(self.max_queued_messages, 1000),
            max_queued_bytes: bytes(self.max_queued_bytes, 16, 16 << 20),
            topic_alias_maximum: u16::from(self.topic_alias_maximum % 5),
            outgoing_topic_aliases: self.outgoing_topic_aliases,
            connect_timeout: secs(if self.connect_timeout == 0 {
                10
            } else {
                self.connect_timeout
            }),
            server_keep_alive: self.server_keep_alive.map(u16::from),
            maximum_qos: self.session_maximum_qos.get(),
            retain_available: self.retain_available,
            ..Config::default()
        };
        let d = BrokerConfig::default();
        BrokerConfig {
            session,
            allow_anonymous: self.allow_anonymous,
            authenticate: self.authenticate,
            max_offline_messages: or(self.max_offline_messages, 1000),
            max_offline_bytes: bytes(self.max_offline_bytes, 16, d.max_offline_bytes),
            max_total_offline_bytes: bytes(
                self.max_total_offline_bytes,
                32,
                d.max_total_offline_bytes,
            ),
            queue_qos0_offline: self.queue_qos0_offline,
            drop_policy: if self.drop_oldest {
                DropPolicy::DropOldest
            } else {
                DropPolicy::DropNewest
            },
            persistent_session_expiry: self
                .persistent_session_expiry
                .map_or(d.persistent_session_expiry, secs),
            max_session_expiry: self.max_session_expiry.map_or(d.max_session_expiry, secs),
            max_keep_alive: self.max_keep_alive.map(u16::from),
            max_subscriptions: or(self.max_subscriptions, 1000),
            max_topic_levels: or(self.max_topic_levels, 32),
            subscribe_denied_code: if self.denied_not_authorized {
                ReasonCode::NotAuthorized
            } else {
                ReasonCode::UnspecifiedError
            },
            sys_interval: self.sys_interval.map(|n| secs(n.max(1))),
            persistence: self.persistence,
            maximum_qos: self.maximum_qos.get(),
            ..d
        }
    }

    /// The ACL: 0 none; 1 anonymous clients may not publish below `x/` nor subscribe to
    /// `#`; 2 only user `u1` may touch `a/#` and nobody `$SYS/#`; 3 deny by default, allow
    /// `a/#` and `%c/#` and the will topics.
    pub fn acl(&self) -> Option<Acl> {
        let rule = |allow, who, access, filter: &str| Rule {
            allow,
            who,
            access,
            filter: filter.to_string(),
        };
        match self.acl % 4 {
            0 => None,
            1 => Some(Acl {
                rules: vec![
                    rule(false, Who::Anonymous, Access::Publish, "x/#"),
                    rule(false, Who::Anonymous, Access::Subscribe, "#"),
                ],
                default_allow: true,
            }),
            2 => Some(Acl {
                rules: vec![
                    rule(true, Who::User("u1".into()), Access::Both, "a/#"),
                    rule(false, Who::Any, Access::Both, "a/#"),
                    rule(false, Who::Any, Access::Both, "$SYS/#"),
                ],
                default_allow: true,
            }),
            _ => Some(Acl {
                rules: vec![
                    rule(true, Who::Any, Access::Both, "a/#"),
                    rule(true, Who::Any, Access::Both, "%c/#"),
                    rule(true, Who::Any, Access::Publish, "w/#"),
                ],
                default_allow: false,
            }),
        }
    }
}

/// Limits of a real client's configuration, used with 5.0 only (3.x cannot announce
/// them); 0 stands for the default.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Receive Maximum.
    pub receive_maximum: u8,
    /// Maximum Packet Size: `64 + 8 * n` bytes.
    pub max_packet_size: u8,
    /// Topic Alias Maximum, modulo 5.
    pub topic_alias_maximum: u8,
    /// Topic aliases on what the client sends.
    pub outgoing_topic_aliases: bool,
}

impl ClientLimits {
    /// The client configuration for a version.
    pub fn config(&self, v: ProtocolVersion) -> Config {
        if !v.is_v5() {
            return Config::default();
        }
        Config {
            receive_maximum: match self.receive_maximum {
                0 => u16::MAX,
                n => n.into(),
            },
            max_packet_size: match self.max_packet_size {
                0 => MAX_PACKET_SIZE,
                n => 64 + 8 * u32::from(n),
            },
            topic_alias_maximum: u16::from(self.topic_alias_maximum % 5),
            outgoing_topic_aliases: self.outgoing_topic_aliases,
            ..Config::default()
        }
    }
}

/// A CONNECT.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectArgs {
    /// Protocol version.
    pub version: Version,
    /// Index into [`CLIENT_IDS`].
    pub client_id: u8,
    /// Clean Start / Clean Session.
    pub clean_start: bool,
    /// Keep Alive, seconds.
    pub keep_alive: u8,
    /// 5.0 Session Expiry Interval, seconds (255: never expires).
    pub session_expiry: Option<u8>,
    /// A will.
    pub will: Option<WillArgs>,
    /// A user name of [`USERS`] and a password.
    pub credentials: Option<u8>,
    /// 5.0 Receive Maximum (raw packets only; 0: absent).
    pub receive_maximum: Option<u8>,
    /// 5.0 Maximum Packet Size `64 + 8 * n` (raw packets only).
    pub maximum_packet_size: Option<u8>,
    /// 5.0 Topic Alias Maximum (raw packets only).
    pub topic_alias_maximum: Option<u8>,
    /// 5.0 Authentication Method (raw packets only).
    pub auth_method: bool,
}

/// A will.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct WillArgs {
    /// QoS.
    pub qos: Qos,
    /// RETAIN.
    pub retain: bool,
    /// Index into [`TOPICS`].
    pub topic: u8,
    /// 5.0 Will Delay Interval, seconds.
    pub delay: Option<u8>,
    /// 5.0 Message Expiry Interval, seconds (0 is 1).
    pub expiry: Option<u8>,
}

/// An application message. Its payload is unique in the run: a counter, then `n` bytes.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishArgs {
    /// QoS.
    pub qos: Qos,
    /// RETAIN.
    pub retain: bool,
    /// Index into [`TOPICS`].
    pub topic: u8,
    /// Extra payload bytes.
    pub payload: u8,
    /// 5.0 Message Expiry Interval, seconds (0 is 1).
    pub expiry: Option<u8>,
}

/// A SUBSCRIBE.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubArgs {
    /// Bit mask over [`FILTERS`] (the first when none is set).
    pub mask: u16,
    /// Maximum QoS.
    pub qos: Qos,
    /// 5.0 No Local.
    pub no_local: bool,
    /// 5.0 Retain As Published.
    pub retain_as_published: bool,
    /// 5.0 Retain Handling, modulo 3.
    pub retain_handling: u8,
    /// 5.0 Subscription Identifier (0 is 1).
    pub id: Option<u8>,
}

/// A packet identifier.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdArg {
    /// `1 + n % 8`.
    Small(u8),
    /// One of the ids the broker recently sent on this connection (PUBLISH, PUBREC,
    /// PUBREL): what the client acknowledges.
    Recent(u8),
}

/// A well-formed packet from a client, built with `mqtt_proto` in the version of the
/// connection's CONNECT (5.0 before one; a CONNECT in its own).
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum PacketArg {
    /// CONNECT.
    Connect(ConnectArgs),
    /// PUBLISH.
    Publish {
        /// The message.
        msg: PublishArgs,
        /// Packet id (QoS 1/2).
        id: IdArg,
        /// DUP (QoS 1/2 only).
        dup: bool,
        /// 5.0 Topic Alias (0 is 1).
        alias: Option<u8>,
        /// With an alias: an empty topic name.
        alias_only: bool,
    },
    /// PUBACK with a reason code, if valid.
    PubAck(IdArg, u8),
    /// PUBREC with a reason code, if valid.
    PubRec(IdArg, u8),
    /// PUBREL with a reason code, if valid.
    PubRel(IdArg, u8),
    /// PUBCOMP with a reason code, if valid.
    PubComp(IdArg, u8),
    /// SUBSCRIBE.
    Subscribe(IdArg, SubArgs),
    /// UNSUBSCRIBE from a mask of [`FILTERS`].
    Unsubscribe(IdArg, u16),
    /// PINGREQ.
    PingReq,
    /// DISCONNECT: reason 0 normal, 1 with will (0x04), else the code if valid; a 5.0
    /// Session Expiry Interval.
    Disconnect(u8, Option<u8>),
    /// AUTH with a reason code, if valid, and the method `m`.
    Auth(u8),
    /// A packet only a server sends: CONNACK, SUBACK or PINGRESP (`n % 3`).
    ServerOnly(u8),
}

// ----- Building packets -------------------------------------------------------------------

/// The reason code `raw` if it is defined and valid on `t`, else `default`.
fn code(raw: u8, t: PacketType, default: ReasonCode) -> ReasonCode {
    ReasonCode::from_u8(raw)
        .filter(|c| c.is_valid_for(t))
        .unwrap_or(default)
}

fn topic(i: u8) -> TopicName {
    TopicName::new(TOPICS[usize::from(i) % TOPICS.len()]).expect("valid topic")
}

/// The filters of a bit mask over [`FILTERS`] (the first when none is set).
fn filters(mask: u16) -> Vec<TopicFilter> {
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

fn client_id(i: u8) -> &'static str {
    CLIENT_IDS[usize::from(i) % CLIENT_IDS.len()]
}

/// Unique payloads: a prefix, a counter, then padding.
#[derive(Debug, Default)]
struct Payloads(u64);

impl Payloads {
    fn next(&mut self, prefix: u8, extra: u8) -> Bytes {
        self.0 += 1;
        let mut v = format!("{}{}.", prefix as char, self.0).into_bytes();
        v.resize(v.len() + usize::from(extra), b'x');
        Bytes::from(v)
    }
}

impl PublishArgs {
    fn build(&self, v5: bool, payloads: &mut Payloads, prefix: u8) -> Publish {
        let mut p = Publish::new(topic(self.topic), payloads.next(prefix, self.payload));
        p.qos = self.qos.get();
        p.retain = self.retain;
        if v5 {
            p.properties.message_expiry_interval = self.expiry.map(|n| n.max(1).into());
        }
        p
    }
}

impl SubArgs {
    fn build(&self, v5: bool) -> (Vec<Subscription>, SubscribeProperties) {
        let subs = filters(self.mask)
            .into_iter()
            .map(|filter| Subscription {
                filter,
                options: SubscriptionOptions {
                    qos: self.qos.get(),
                    no_local: v5 && self.no_local,
                    retain_as_published: v5 && self.retain_as_published,
                    retain_handling: if v5 {
                        RetainHandling::from_u8(self.retain_handling % 3).expect("0..=2")
                    } else {
                        RetainHandling::SendAtSubscribe
                    },
                },
            })
            .collect();
        let props = SubscribeProperties {
            subscription_identifier: self
                .id
                .filter(|_| v5)
                .and_then(|n| NonZeroU32::new(u32::from(n).max(1))),
            ..Default::default()
        };
        (subs, props)
    }
}

impl ConnectArgs {
    /// The CONNECT; `raw` includes the 5.0 limits and method (a client session fills in
    /// its own limits).
    fn build(&self, raw: bool, payloads: &mut Payloads) -> Connect {
        let v = self.version.get();
        let v5 = v.is_v5();
        let mut c = Connect::new(
            v,
            MqttString::new(client_id(self.client_id)).expect("valid"),
        );
        c.clean_start = self.clean_start;
        c.keep_alive = self.keep_alive.into();
        if let Some(w) = self.will {
            let mut properties = WillProperties::default();
            if v5 {
                properties.will_delay_interval = w.delay.map(u32::from);
                properties.message_expiry_interval = w.expiry.map(|n| n.max(1).into());
            }
            c.will = Some(Box::new(Will {
                topic: topic(w.topic),
                payload: payloads.next(b'w', 0),
                qos: w.qos.get(),
                retain: w.retain,
                properties: properties.into(),
            }));
        }
        if let Some(u) = self.credentials {
            let user = USERS[usize::from(u) % USERS.len()];
            c.username = Some(MqttString::new(user).expect("valid"));
            c.password = Some(Bytes::from_static(b"pw"));
        }
        if v5 {
            let p = &mut c.properties;
            p.session_expiry_interval = self.session_expiry.map(|n| match n {
                255 => u32::MAX,
                n => n.into(),
            });
            if raw {
                p.receive_maximum = self.receive_maximum.and_then(|n| NonZeroU16::new(n.into()));
                p.maximum_packet_size = self
                    .maximum_packet_size
                    .and_then(|n| NonZeroU32::new(64 + 8 * u32::from(n)));
                p.topic_alias_maximum = self.topic_alias_maximum.map(u16::from);
                if self.auth_method {
                    p.authentication_method = Some(MqttString::new("m").expect("valid"));
                    p.authentication_data = Some(Bytes::from_static(b"d"));
                }
            }
        }
        c
    }
}

fn disconnect_code(raw: u8) -> ReasonCode {
    match raw {
        0 => ReasonCode::Success,
        1 => ReasonCode::DisconnectWithWillMessage,
        r => code(r, PacketType::Disconnect, ReasonCode::Success),
    }
}

// ----- The routing model ------------------------------------------------------------------

/// Whether `filter` (not shared) matches the topic name `name`, written independently of
/// the library's matcher: `+` one level, `#` this level and all below, and a wildcard at
/// the start never matches a name starting with `$` ([MQTT-4.7.2-1]).
pub fn topic_matches(filter: &str, name: &str) -> bool {
    if name.starts_with('$') && matches!(filter.as_bytes().first(), Some(b'+' | b'#')) {
        return false;
    }
    let f: Vec<&str> = filter.split('/').collect();
    let n: Vec<&str> = name.split('/').collect();
    for (i, level) in f.iter().enumerate() {
        match *level {
            "#" => return true,
            "+" if i < n.len() => {}
            l if i < n.len() && n[i] == l => {}
            _ => return false,
        }
    }
    f.len() == n.len()
}

/// `$share/{group}/{filter}`: the filter.
fn shared_inner(filter: &str) -> Option<&str> {
    filter.strip_prefix("$share/")?.split_once('/').map(|x| x.1)
}

/// Whether a (possibly shared) subscription's filter matches a topic.
fn sub_matches(filter: &str, name: &str) -> bool {
    topic_matches(shared_inner(filter).unwrap_or(filter), name)
}

/// A session as the events tell it: client id and how many sessions of that client id
/// ended before it.
type SessionId = (String, u64);

/// A subscription as the events tell it (granted QoS) and the SUBSCRIBE asked (No Local,
/// Subscription Identifier).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sub {
    qos: QoS,
    no_local: bool,
    id: Option<u32>,
}

/// What one session may get of a routed message.
#[derive(Debug, Clone, Default)]
struct Copies {
    /// 1 for its non-shared subscriptions, 1 per shared group.
    n: usize,
    /// The highest QoS.
    qos: Option<QoS>,
    /// Subscription Identifiers of the matching non-shared subscriptions.
    plain_ids: BTreeSet<u32>,
    /// ... and of the matching shared ones.
    shared_ids: BTreeSet<u32>,
    /// Whether a shared subscription matched.
    shared: bool,
}

/// What one routed message (topic and payload) may reach.
#[derive(Debug, Default)]
struct Routed {
    /// What each session may get (the most of any routing of this topic and payload).
    copies: HashMap<SessionId, Copies>,
    /// Shared subscriptions that matched (a QoS 1 message may move to another member).
    shared: BTreeSet<String>,
    /// When it was routed (more than once if a publisher sent it again), with its QoS.
    at: Vec<(Instant, QoS)>,
    /// Its 5.0 Message Expiry Interval when routed.
    expiry: Option<u32>,
}

/// Subscriptions per session and retained messages, built from the broker's events.
#[derive(Debug, Default)]
struct Model {
    epochs: HashMap<String, u64>,
    subs: HashMap<SessionId, BTreeMap<String, Sub>>,
    /// Every filter the session held at some point.
    history: HashMap<SessionId, BTreeSet<String>>,
    routed: HashMap<(String, Bytes), Routed>,
    /// Retained messages: topic -> payload, Message Expiry Interval and when stored.
    retained: BTreeMap<String, (Bytes, Option<u32>, Instant)>,
}

impl Model {
    fn session(&self, client_id: &str) -> SessionId {
        (
            client_id.to_string(),
            self.epochs.get(client_id).copied().unwrap_or(0),
        )
    }

    fn subscribed(&mut self, client_id: &str, filter: &str, sub: Sub) {
        let s = self.session(client_id);
        self.subs
            .entry(s.clone())
            .or_default()
            .insert(filter.to_string(), sub);
        self.history
            .entry(s)
            .or_default()
            .insert(filter.to_string());
    }

    fn unsubscribed(&mut self, client_id: &str, filter: &str) {
        let s = self.session(client_id);
        let removed = self
            .subs
            .get_mut(&s)
            .is_some_and(|f| f.remove(filter).is_some());
        assert!(
            removed,
            "Unsubscribed event for {client_id} {filter}, which it did not hold"
        );
    }

    fn ended(&mut self, client_id: &str) {
        let s = self.session(client_id);
        self.subs.remove(&s);
        *self.epochs.entry(client_id.to_string()).or_default() += 1;
    }

    /// A message is routed at `now`, from the session of `publisher` (`None`: the
    /// broker).
    fn routed(&mut self, now: Instant, publisher: Option<&str>, p: &Publish) {
        let origin = publisher.map(|c| self.session(c));
        if p.retain {
            if p.payload.is_empty() {
                self.retained.remove(p.topic.as_str());
            } else {
                let e = p.properties.message_expiry_interval;
                self.retained
                    .insert(p.topic.to_string(), (p.payload.clone(), e, now));
            }
        }
        let r = self
            .routed
            .entry((p.topic.to_string(), p.payload.clone()))
            .or_default();
        r.at.push((now, p.qos));
        r.expiry = p.properties.message_expiry_interval;
        for (s, filters) in &self.subs {
            let mut c = Copies::default();
            let mut plain = false;
            for (f, sub) in filters {
                if !sub_matches(f, &p.topic) {
                    continue;
                }
                if shared_inner(f).is_some() {
                    c.n += 1;
                    c.shared = true;
                    c.shared_ids.extend(sub.id);
                    r.shared.insert(f.clone());
                } else if sub.no_local && origin.as_ref() == Some(s) {
                    // No Local: not back to the publisher ([MQTT-3.8.3-3]).
                    continue;
                } else {
                    plain = true;
                    c.plain_ids.extend(sub.id);
                }
                c.qos = c.qos.max(Some(sub.qos.min(p.qos)));
            }
            c.n += usize::from(plain);
            if c.n > 0 {
                // Routing the same message again (a publisher's resend) allows no more
                // copies: at QoS 2 that would be a duplicate ([MQTT-4.3.3-10]).
                let e = r.copies.entry(s.clone()).or_default();
                e.n = e.n.max(c.n);
                e.qos = e.qos.max(c.qos);
                e.plain_ids.extend(c.plain_ids);
                e.shared_ids.extend(c.shared_ids);
                e.shared |= c.shared;
            }
        }
    }

    /// Checks a message sent to a session at `now` (`v5`: also its Message Expiry
    /// Interval and Subscription Identifiers) and returns the copies it may get.
    fn check_delivery(&self, s: &SessionId, p: &Publish, now: Instant, v5: bool) -> usize {
        let history = self.history.get(s);
        let held = |f: &String| history.is_some_and(|h| h.contains(f));
        let subs: Vec<&String> = history.into_iter().flatten().collect();
        let key = (p.topic.to_string(), p.payload.clone());
        let routed = self.routed.get(&key);
        if v5 && !p.dup {
            self.check_expiry(s, p, now, routed);
        }
        if p.retain {
            // A retained message on subscribe, or a live one with Retain As Published.
            assert!(
                subs.iter().any(|f| sub_matches(f, &p.topic)),
                "session {s:?} got a RETAIN message on {:?} ({:?}), which none of the \
                 filters it ever held matches: {subs:?}",
                p.topic,
                p.payload
            );
            return usize::MAX;
        }
        let routed = routed.unwrap_or_else(|| {
            panic!(
                "session {s:?} got a message on {:?} ({:?}) that was never routed",
                p.topic, p.payload
            )
        });
        let c = routed.copies.get(s).cloned().unwrap_or_default();
        let copies = c.n;
        let qos = c.qos.unwrap_or(QoS::AtMostOnce);
        // A QoS 1 message of a shared group may go to another member if its receiver's
        // connection ends (5.0 section 4.8.2).
        let moved = routed.shared.iter().any(held);
        assert!(
            copies > 0 || moved,
            "session {s:?} got a message on {:?} ({:?}) that none of its subscriptions \
             matched when it was routed (No Local counted); subscriptions now {:?}, routed \
             to {:?}",
            p.topic,
            p.payload,
            self.subs.get(s),
            routed
        );
        if v5 && !moved {
            // The Subscription Identifiers of the matching subscriptions: all of the
            // non-shared ones in their copy ([MQTT-3.3.4-3]), and no other.
            let ids: BTreeSet<u32> = p
                .properties
                .subscription_identifiers
                .iter()
                .map(|i| i.get())
                .collect();
            let ok = if c.shared || routed.at.len() > 1 {
                ids.is_subset(&c.plain_ids.union(&c.shared_ids).copied().collect())
            } else {
                ids == c.plain_ids
            };
            assert!(
                ok,
                "session {s:?} got {:?} ({:?}) with Subscription Identifiers {ids:?}; its \
                 matching subscriptions have {:?} (shared: {:?})",
                p.topic, p.payload, c.plain_ids, c.shared_ids
            );
        }
        if !moved {
            assert!(
                p.qos <= qos,
                "session {s:?} got {:?} ({:?}) at {:?}, above the QoS of the message and of \
                 its subscriptions ({qos:?})",
                p.topic,
                p.payload,
                p.qos
            );
        }
        copies.max(1)
    }

    /// A message is not sent once its Message Expiry Interval has passed, and is sent
    /// with the interval reduced by the time it waited ([MQTT-3.3.2-5], [MQTT-3.3.2-6]).
    fn check_expiry(&self, s: &SessionId, p: &Publish, now: Instant, routed: Option<&Routed>) {
        let stored = self
            .retained
            .get(p.topic.as_str())
            .filter(|r| r.0 == p.payload)
            .map(|r| (r.1, r.2));
        let times: Vec<(Option<u32>, Instant)> = routed
            .into_iter()
            .flat_map(|r| r.at.iter().map(|a| (r.expiry, a.0)))
            .chain(stored)
            .collect();
        // (An interval of 0, which only raw bytes send, is left alone: the specification
        // does not say whether it expires at once.)
        let Some(&(Some(1..), _)) = times.first() else {
            return;
        };
        let fits = |&(e, at): &(Option<u32>, Instant)| {
            let Some(e) = e else { return false };
            let waited = now.saturating_duration_since(at).as_secs();
            u64::from(e) > waited
                && p.properties.message_expiry_interval == Some((u64::from(e) - waited) as u32)
        };
        assert!(
            times.iter().any(fits),
            "session {s:?} was sent {:?} ({:?}) with Message Expiry Interval {:?}; it was \
             routed or stored with {:?} seconds ago",
            p.topic,
            p.payload,
            p.properties.message_expiry_interval,
            times
                .iter()
                .map(|(e, at)| (*e, now.saturating_duration_since(*at).as_secs()))
                .collect::<Vec<_>>()
        );
    }
}

// ----- What a run reached -----------------------------------------------------------------

/// What a run reached, for choosing seeds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reached {
    /// `ClientConnected`.
    pub connected: u32,
    /// `ClientConnected` with Session Present.
    pub resumed: u32,
    /// `Subscribed`.
    pub subscribed: u32,
    /// PUBLISH packets the broker sent.
    pub delivered: u32,
    /// PUBLISH packets with RETAIN the broker sent.
    pub retained_sent: u32,
    /// QoS 2 PUBLISH packets the broker sent.
    pub qos2_sent: u32,
    /// Messages routed to a shared subscription.
    pub shared_routed: u32,
    /// Wills routed.
    pub wills: u32,
    /// `SessionEnded`.
    pub sessions_ended: u32,
    /// Connections closed by a takeover.
    pub takeovers: u32,
    /// `Authenticate` outputs.
    pub auth_requests: u32,
    /// `Record::Queued` outputs.
    pub stored: u32,
    /// `MessageDropped`.
    pub dropped: u32,
    /// Messages real clients received.
    pub client_messages: u32,
}

// ----- The broker and its connections -----------------------------------------------------

/// What the harness knows of one connection.
struct Track {
    /// `handle_closed` was called.
    transport_closed: bool,
    /// The broker's `Close` came.
    close_seen: bool,
    /// Decodes what the client sent, as the broker's connection does.
    shadow: Decoder,
    shadow_buf: BytesMut,
    shadow_dead: bool,
    /// The first CONNECT the client sent.
    connect: Option<Box<Connect>>,
    /// A CONNECT that did not decode but says protocol level 5: the broker answers it
    /// with a 5.0 CONNACK.
    bad_v5_connect: bool,
    /// CONNACK sent: with success?
    connack: Option<bool>,
    /// `ClientConnected`: the session, and whether it was resumed.
    session: Option<SessionId>,
    present: bool,
    /// Filters of the SUBSCRIBEs the client sent, in order, with No Local and the
    /// Subscription Identifier.
    subscribing: VecDeque<(String, bool, Option<u32>)>,
    /// Payloads of the client's QoS 1/2 PUBLISHes by packet id, since the broker last
    /// acknowledged that id.
    published: HashMap<u16, Vec<Bytes>>,
    /// Topic aliases the broker mapped.
    aliases: HashMap<u16, TopicName>,
    recent: VecDeque<u16>,
    /// The broker's QoS 1/2 messages not complete: `true` once PUBREL was sent.
    inflight: BTreeMap<u16, Flow>,
    /// Bytes for a real client.
    to_client: BytesMut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Qos1,
    Qos2,
    Released,
}

impl Track {
    fn new(max_packet_size: u32) -> Self {
        Self {
            transport_closed: false,
            close_seen: false,
            shadow: Decoder::server().with_max_packet_size(max_packet_size),
            shadow_buf: BytesMut::new(),
            shadow_dead: false,
            connect: None,
            bad_v5_connect: false,
            connack: None,
            session: None,
            present: false,
            subscribing: VecDeque::new(),
            published: HashMap::new(),
            aliases: HashMap::new(),
            recent: VecDeque::new(),
            inflight: BTreeMap::new(),
            to_client: BytesMut::new(),
        }
    }

    fn is_open(&self) -> bool {
        !self.transport_closed && !self.close_seen
    }

    fn version(&self) -> Option<ProtocolVersion> {
        self.connect.as_ref().map(|c| c.protocol_version)
    }

    fn is_v5(&self) -> bool {
        self.version().is_some_and(|v| v.is_v5())
    }

    fn remember(&mut self, id: PacketId) {
        self.recent.retain(|&x| x != id.get());
        self.recent.push_front(id.get());
        self.recent.truncate(RECENT_IDS);
    }

    fn id(&self, arg: IdArg) -> PacketId {
        let raw = match arg {
            IdArg::Small(n) => 1 + u16::from(n % 8),
            IdArg::Recent(i) if !self.recent.is_empty() => {
                self.recent[usize::from(i) % self.recent.len()]
            }
            IdArg::Recent(_) => 1,
        };
        PacketId::new(raw).expect("non-zero")
    }

    /// What the client sent, decoded as the broker's connection decodes it: the version
    /// and limits of its CONNECT, and its acknowledgements.
    fn feed_shadow(&mut self, bytes: &[u8]) {
        if self.shadow_dead || !self.is_open() {
            return;
        }
        self.shadow_buf.extend_from_slice(bytes);
        loop {
            match self.shadow.decode(&mut self.shadow_buf) {
                Ok(Some(Packet::Connect(c))) => {
                    if self.connect.is_some() {
                        // A second CONNECT: the broker closes.
                        self.shadow_dead = true;
                        return;
                    }
                    self.connect = Some(c);
                }
                Ok(Some(Packet::Subscribe(sub))) => {
                    let id = sub.properties.subscription_identifier.map(NonZeroU32::get);
                    for s in sub.subscriptions {
                        self.subscribing
                            .push_back((s.filter.to_string(), s.options.no_local, id));
                    }
                }
                Ok(Some(Packet::Publish(p))) => {
                    if let Some(id) = p.packet_id {
                        self.published.entry(id.get()).or_default().push(p.payload);
                    }
                }
                Ok(Some(Packet::PubAck(r))) => {
                    if self.inflight.get(&r.packet_id.get()) == Some(&Flow::Qos1) {
                        self.inflight.remove(&r.packet_id.get());
                    }
                }
                Ok(Some(Packet::PubRec(r))) => {
                    if !r.reason_code.is_success()
                        && self.inflight.get(&r.packet_id.get()) == Some(&Flow::Qos2)
                    {
                        self.inflight.remove(&r.packet_id.get());
                    }
                }
                Ok(Some(Packet::PubComp(r))) => {
                    if self.inflight.get(&r.packet_id.get()) == Some(&Flow::Released) {
                        self.inflight.remove(&r.packet_id.get());
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(_) => {
                    if self.connect.is_none() {
                        self.bad_v5_connect = connect_level(&self.shadow_buf) == Some(5);
                    }
                    self.shadow_dead = true;
                    return;
                }
            }
        }
    }
}

/// The protocol level of the CONNECT at the front of `b`, if that much of it is there.
fn connect_level(b: &[u8]) -> Option<u8> {
    if b.first() != Some(&0x10) {
        return None;
    }
    let name_at = 1 + (1..5).find(|&i| b.get(i).is_some_and(|x| x & 0x80 == 0))?;
    let name_len = usize::from(u16::from_be_bytes([*b.get(name_at)?, *b.get(name_at + 1)?]));
    b.get(name_at + 2 + name_len).copied()
}

/// The broker under test with what the checks need.
pub struct World {
    broker: Broker,
    persistence: bool,
    max_packet_size: u32,
    now: Instant,
    conns: HashMap<ConnId, Track>,
    next_id: ConnId,
    slots: [Option<ConnId>; SLOTS],
    model: Model,
    pending_auth: Vec<ConnId>,
    pending_durable: Vec<u64>,
    /// `Record::Sync` sequence numbers: the payloads of the records before it (since the
    /// previous one), and whether it is durable.
    seqs: BTreeMap<u64, (Vec<Bytes>, bool)>,
    /// Payloads recorded since the last `Record::Sync`.
    unsynced: Vec<Bytes>,
    /// Applies every record.
    store: MemoryStore,
    /// `Record::Message` sequence numbers seen.
    messages: HashSet<u64>,
    /// Print every output (`BROKER_FUZZ_TRACE`), with the time since the start.
    trace: bool,
    start: Instant,
    last_stats: mqtt_broker::Stats,
    /// Offline sessions: since when, per client id.
    offline_since: HashMap<String, Instant>,
    /// During `handle_timeout`: each session's expiry before the call.
    expiries: Option<HashMap<String, u64>>,
    payloads: Payloads,
    /// Real clients: also check that the broker closes no client for a violation.
    strict: bool,
    /// Counters.
    pub reached: Reached,
}

fn slot(n: u8) -> usize {
    usize::from(n) % SLOTS
}

impl World {
    /// The records applied in order describe the broker: every message body kept is held
    /// by a stored session, and every stored session is one the broker has.
    fn check_store(&self) {
        if !self.persistence {
            return;
        }
        let snap = self.store.snapshot();
        let held: HashSet<u64> = snap
            .sessions
            .values()
            .flat_map(|s| s.messages.iter().map(|m| m.seq))
            .collect();
        assert_eq!(
            self.store.bodies(),
            held.len(),
            "the store keeps message bodies no session holds"
        );
        let live: HashSet<String> = self
            .broker
            .sessions()
            .into_iter()
            .map(|s| s.client_id.to_string())
            .collect();
        for id in snap.sessions.keys() {
            assert!(
                live.contains(id),
                "stored session {id} the broker no longer has"
            );
        }
        // A broker restored from the snapshot has the stored sessions' subscriptions and
        // the retained messages.
        let mut restored = Broker::new(
            BrokerConfig {
                persistence: true,
                sys_interval: None,
                ..Default::default()
            },
            self.now,
        );
        restored.restore(self.now, snap.clone());
        let stored_subs = |b: &Broker| {
            b.subscriptions()
                .into_iter()
                .filter(|(c, _)| snap.sessions.contains_key(c.as_str()))
                .collect::<Vec<_>>()
        };
        assert_eq!(stored_subs(&restored), stored_subs(&self.broker));
        let retained = |b: &Broker| {
            let mut v: Vec<(String, Bytes)> = b
                .retained()
                .into_iter()
                .filter(|p| !p.topic.starts_with("$SYS/"))
                .map(|p| (p.topic.to_string(), p.payload))
                .collect();
            v.sort();
            v
        };
        assert_eq!(retained(&restored), retained(&self.broker));
    }

    fn new(settings: &Settings, now: Instant, strict: bool) -> Self {
        let config = settings.config();
        let persistence = config.persistence;
        let max_packet_size = config.session.max_packet_size;
        let mut broker = Broker::new(config, now);
        if let Some(acl) = settings.acl() {
            broker.set_acl(acl);
        }
        let mut w = Self {
            broker,
            persistence,
            max_packet_size,
            now,
            conns: HashMap::new(),
            next_id: 1,
            slots: [None; SLOTS],
            model: Model::default(),
            pending_auth: Vec::new(),
            pending_durable: Vec::new(),
            seqs: BTreeMap::new(),
            unsynced: Vec::new(),
            store: MemoryStore::new(),
            messages: HashSet::new(),
            trace: std::env::var_os("BROKER_FUZZ_TRACE").is_some(),
            start: now,
            last_stats: Default::default(),
            offline_since: HashMap::new(),
            expiries: None,
            payloads: Payloads::default(),
            strict,
            reached: Reached::default(),
        };
        w.after_call();
        w
    }

    /// The id a slot addresses: its connection, or an id never opened.
    fn slot_id(&self, n: u8) -> ConnId {
        self.slots[slot(n)].unwrap_or(u64::MAX - slot(n) as u64)
    }

    /// Opens a connection in a slot; returns its id.
    fn open(&mut self, n: u8, args: OpenArgs) -> ConnId {
        self.next_id += 1;
        let id = self.next_id;
        self.slots[slot(n)] = Some(id);
        self.conns.insert(id, Track::new(self.max_packet_size));
        let info = ConnInfo {
            peer: format!("10.0.0.{}:1883", slot(n)),
            listener: "fuzz".into(),
            tls_identity: args.tls.then(|| "cert-user".into()),
            allow_anonymous: args.allow_anonymous,
        };
        self.broker.handle_connection(self.now, id, info);
        self.after_call();
        id
    }

    /// Bytes from a client.
    fn input(&mut self, id: ConnId, bytes: &[u8]) {
        if let Some(t) = self.conns.get_mut(&id) {
            t.feed_shadow(bytes);
        }
        self.broker.handle_input(self.now, id, bytes);
        self.after_call();
    }

    /// The transport closed.
    fn closed(&mut self, id: ConnId) {
        if let Some(t) = self.conns.get_mut(&id) {
            t.transport_closed = true;
        }
        self.broker.handle_closed(self.now, id);
        self.after_call();
    }

    fn broker_op(&mut self, op: &BrokerOp) {
        let now = self.now;
        match *op {
            BrokerOp::Auth(which, answer) => {
                let id = if self.pending_auth.is_empty() {
                    self.slot_id(which)
                } else {
                    let i = usize::from(which) % self.pending_auth.len();
                    self.pending_auth.remove(i)
                };
                let result = match answer {
                    AuthAnswer::Allow(rename) => AuthResult::Allow {
                        username: rename.then(|| "renamed".to_string()),
                    },
                    AuthAnswer::Deny(raw) => AuthResult::Deny(
                        ReasonCode::from_u8(raw)
                            .filter(|c| c.is_valid_for(PacketType::ConnAck) && !c.is_success())
                            .unwrap_or(ReasonCode::NotAuthorized),
                    ),
                    AuthAnswer::Continue => AuthResult::Continue(Auth {
                        reason_code: ReasonCode::ContinueAuthentication,
                        properties: AuthProperties {
                            authentication_method: Some(MqttString::new("m").expect("valid")),
                            authentication_data: Some(Bytes::from_static(b"challenge")),
                            ..Default::default()
                        }
                        .into(),
                    }),
                };
                self.broker.handle_auth(now, id, result);
            }
            BrokerOp::Durable(which) => {
                let seq = if self.pending_durable.is_empty() {
                    u64::from(which)
                } else {
                    let i = usize::from(which) % self.pending_durable.len();
                    self.pending_durable.remove(i)
                };
                if let Some(r) = self.seqs.get_mut(&seq) {
                    r.1 = true;
                }
                self.broker.handle_durable(now, seq);
            }
            BrokerOp::Publish(a, n) => {
                for _ in 0..=n % 8 {
                    let p = a.build(true, &mut self.payloads, b's');
                    self.broker.publish(now, p);
                    self.after_call();
                }
            }
            BrokerOp::Idle(n) => {
                self.broker.handle_idle(self.slot_id(n));
                self.after_call();
            }
            BrokerOp::DisconnectClient(c, raw) => {
                let reason = code(
                    raw,
                    PacketType::Disconnect,
                    ReasonCode::AdministrativeAction,
                );
                let online = self
                    .broker
                    .clients()
                    .iter()
                    .any(|i| i.client_id.as_str() == client_id(c));
                let done = self.broker.disconnect_client(now, client_id(c), reason);
                assert_eq!(
                    done,
                    online,
                    "disconnect_client({:?}) returned {done}; connected: {online}",
                    client_id(c)
                );
            }
            BrokerOp::Shutdown => {
                self.broker.shutdown(now);
                self.after_call();
                assert_eq!(
                    self.broker.gauges().connections,
                    0,
                    "connections left after shutdown"
                );
                return;
            }
        }
        self.after_call();
    }

    /// Calls `handle_timeout(now)` while `poll_timeout()` is due; it must stop being due.
    /// Returns whether it was called.
    fn timers(&mut self) -> bool {
        let mut called = false;
        for round in 0.. {
            match self.broker.poll_timeout() {
                Some(t) if t <= self.now => {
                    assert!(
                        round < 4,
                        "poll_timeout() still due {:?} before now after {round} calls of \
                         handle_timeout(now)",
                        self.now - t
                    );
                    let expiries = self
                        .broker
                        .sessions()
                        .into_iter()
                        .map(|s| (s.client_id.to_string(), s.expiry_secs))
                        .collect();
                    self.expiries = Some(expiries);
                    self.broker.handle_timeout(self.now);
                    self.after_call();
                    self.expiries = None;
                    called = true;
                }
                _ => break,
            }
        }
        // No offline session outlives its expiry.
        for s in self.broker.sessions() {
            let Some(since) = self.offline_since.get(s.client_id.as_str()) else {
                continue;
            };
            assert!(
                s.online || self.now.saturating_duration_since(*since).as_secs() < s.expiry_secs,
                "session {} offline for {:?}, past its expiry of {} s",
                s.client_id,
                self.now.saturating_duration_since(*since),
                s.expiry_secs
            );
        }
        called
    }

    /// Time passes: to `end`, through each deadline (at most [`ADVANCE_STEPS`]) if `step`.
    fn advance(&mut self, secs: u16, step: bool) {
        let end = self.now + Duration::from_secs(secs.into());
        if step {
            for _ in 0..ADVANCE_STEPS {
                match self.broker.poll_timeout() {
                    Some(t) if t <= end => {
                        self.now = self.now.max(t);
                        self.timers();
                    }
                    _ => break,
                }
            }
        }
        self.now = end;
        self.timers();
    }

    /// Drains and checks the outputs after a call, then the broker's state.
    fn after_call(&mut self) {
        while let Some(o) = self.broker.poll_output() {
            self.on_output(o);
        }
        self.check_state();
    }

    fn on_output(&mut self, o: Output) {
        if self.trace {
            eprintln!("{:?} {o:?}", self.now.saturating_duration_since(self.start));
        }
        match o {
            Output::Transmit(id, bytes) => {
                let t = self
                    .conns
                    .get(&id)
                    .unwrap_or_else(|| panic!("Transmit for connection {id}, never opened"));
                assert!(
                    !t.close_seen,
                    "Transmit for connection {id} after its Close"
                );
                assert!(!bytes.is_empty(), "empty Transmit for connection {id}");
                self.check_transmit(id, &bytes);
                let t = self.conns.get_mut(&id).expect("known");
                if !t.transport_closed {
                    t.to_client.extend_from_slice(&bytes);
                }
            }
            Output::Close(id) => {
                let t = self
                    .conns
                    .get_mut(&id)
                    .unwrap_or_else(|| panic!("Close for connection {id}, never opened"));
                assert!(!t.close_seen, "a second Close for connection {id}");
                t.close_seen = true;
            }
            Output::Event(e) => self.on_event(e),
            Output::Authenticate(r) => {
                let t = self.conns.get(&r.conn).unwrap_or_else(|| {
                    panic!("Authenticate for connection {}, never opened", r.conn)
                });
                assert!(
                    !t.close_seen,
                    "Authenticate for connection {} after its Close",
                    r.conn
                );
                self.pending_auth.push(r.conn);
                self.reached.auth_requests += 1;
            }
            Output::Store(r) => {
                assert!(self.persistence, "Store without persistence: {r:?}");
                self.store.apply(&r);
                match r {
                    Record::Message { seq, publish } => {
                        assert!(self.messages.insert(seq), "Record::Message {seq} twice");
                        self.unsynced.push(publish.payload);
                    }
                    Record::Retained {
                        publish: Some(p), ..
                    } => self.unsynced.push(p.payload),
                    Record::Queued { seq, .. } => {
                        assert!(self.messages.contains(&seq), "Queued {seq} before Message");
                        self.reached.stored += 1;
                    }
                    Record::Sync { seq } => {
                        let payloads = std::mem::take(&mut self.unsynced);
                        let fresh = self.seqs.insert(seq, (payloads, false)).is_none();
                        assert!(fresh, "Record::Sync seq {seq} given twice");
                        self.pending_durable.push(seq);
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    fn on_event(&mut self, e: BrokerEvent) {
        match e {
            BrokerEvent::ClientConnected {
                conn,
                client_id,
                version,
                session_present,
                ..
            } => {
                let session = self.model.session(&client_id);
                let t = self
                    .conns
                    .get_mut(&conn)
                    .unwrap_or_else(|| panic!("ClientConnected for {conn}, never opened"));
                assert!(t.is_open(), "ClientConnected for closed connection {conn}");
                assert!(
                    t.session.is_none(),
                    "a second ClientConnected for connection {conn}"
                );
                if let Some(c) = &t.connect {
                    assert_eq!(version, c.protocol_version, "ClientConnected version");
                    assert!(
                        !(session_present && c.clean_start),
                        "Session Present after Clean Start for {client_id}"
                    );
                }
                t.session = Some(session);
                t.present = session_present;
                self.offline_since.remove(client_id.as_str());
                self.reached.connected += 1;
                self.reached.resumed += u32::from(session_present);
            }
            BrokerEvent::ClientDisconnected { conn, reason, .. } => {
                let t = self
                    .conns
                    .get(&conn)
                    .unwrap_or_else(|| panic!("ClientDisconnected for {conn}, never opened"));
                if let Some((c, e)) = &t.session {
                    if self.model.session(c).1 == *e {
                        self.offline_since.insert(c.clone(), self.now);
                    }
                }
                assert!(
                    t.close_seen,
                    "ClientDisconnected for {conn} before its Close"
                );
                if reason == CloseReason::Local(ReasonCode::SessionTakenOver) {
                    self.reached.takeovers += 1;
                }
                if let (true, CloseReason::Violation(v)) = (self.strict, &reason) {
                    let unannounced = !t.is_v5()
                        && matches!(
                            v,
                            Violation::ReceiveMaximumExceeded
                                | Violation::Decode(DecodeError::PacketTooLarge { .. })
                        );
                    assert!(
                        t.session.is_none() || unannounced,
                        "the broker closed connection {conn} of a real client ({:?}) for a \
                         protocol violation: {v:?}",
                        t.version()
                    );
                }
            }
            BrokerEvent::Subscribed {
                client_id,
                filter,
                qos,
            } => {
                // No Local as the SUBSCRIBE of the session's connection asked.
                let t = self
                    .conns
                    .values_mut()
                    .find(|t| t.is_open() && t.session.as_ref().is_some_and(|s| s.0 == *client_id));
                let mut sub = Sub {
                    qos,
                    no_local: false,
                    id: None,
                };
                if let Some(t) = t {
                    while let Some((f, no_local, id)) = t.subscribing.pop_front() {
                        if f == *filter {
                            sub.no_local = no_local;
                            sub.id = id.filter(|_| t.is_v5());
                            break;
                        }
                    }
                }
                self.model.subscribed(&client_id, &filter, sub);
                self.reached.subscribed += 1;
            }
            BrokerEvent::Unsubscribed { client_id, filter } => {
                self.model.unsubscribed(&client_id, &filter);
            }
            BrokerEvent::SessionEnded { client_id } => {
                // A session that expires was offline for its whole expiry.
                let since = self.offline_since.remove(client_id.as_str());
                if let (Some(expiries), Some(since)) = (&self.expiries, since) {
                    let expiry = expiries.get(client_id.as_str()).copied().unwrap_or(0);
                    let offline = self.now.saturating_duration_since(since);
                    assert!(
                        offline.as_secs() >= expiry,
                        "session {client_id} ended after {offline:?} offline, before its \
                         expiry of {expiry} s"
                    );
                }
                self.model.ended(&client_id);
                self.reached.sessions_ended += 1;
            }
            BrokerEvent::MessageReceived {
                client_id, publish, ..
            } => {
                self.model.routed(self.now, client_id.as_deref(), &publish);
                if self
                    .model
                    .routed
                    .get(&(publish.topic.to_string(), publish.payload.clone()))
                    .is_some_and(|r| !r.shared.is_empty())
                {
                    self.reached.shared_routed += 1;
                }
                self.reached.wills += u32::from(publish.payload.starts_with(b"w"));
            }
            BrokerEvent::MessageDropped { .. } => self.reached.dropped += 1,
            _ => {}
        }
    }

    /// Every Transmit holds whole packets of the connection's version, going the right
    /// way, within the client's limits; see the module documentation.
    fn check_transmit(&mut self, id: ConnId, bytes: &Bytes) {
        let t = self.conns.get(&id).expect("known");
        let (v, max) = match &t.connect {
            Some(c) => (
                c.protocol_version,
                c.properties
                    .maximum_packet_size
                    .filter(|_| c.protocol_version.is_v5())
                    .map_or(MAX_PACKET_SIZE, NonZeroU32::get),
            ),
            None if t.bad_v5_connect => (ProtocolVersion::V5, MAX_PACKET_SIZE),
            None => (ProtocolVersion::V3_1_1, MAX_PACKET_SIZE),
        };
        let mut decoder = Decoder::client(v).with_max_packet_size(max);
        let mut buf = BytesMut::from(&bytes[..]);
        while !buf.is_empty() {
            match decoder.decode(&mut buf) {
                Ok(Some(p)) => self.on_sent(id, v, p),
                Ok(None) => panic!(
                    "Transmit for connection {id} ends inside a packet ({v}): {:02x?}",
                    &buf[..]
                ),
                Err(e) => panic!(
                    "Transmit for connection {id} does not decode in {v} with the client's \
                     Maximum Packet Size {max}: {e:?}\n{:02x?}",
                    &buf[..]
                ),
            }
        }
    }

    fn on_sent(&mut self, id: ConnId, v: ProtocolVersion, p: Packet) {
        let t = self.conns.get_mut(&id).expect("known");
        let ty = p.packet_type();
        let wrong_way = matches!(
            ty,
            PacketType::Connect
                | PacketType::Subscribe
                | PacketType::Unsubscribe
                | PacketType::PingReq
        ) || (ty == PacketType::Disconnect && !v.is_v5());
        assert!(!wrong_way, "the broker sent {ty} to connection {id} ({v})");
        match t.connack {
            None => assert!(
                matches!(ty, PacketType::ConnAck | PacketType::Auth),
                "the broker sent {ty} to connection {id} before CONNACK"
            ),
            Some(true) => assert!(
                ty != PacketType::ConnAck,
                "the broker sent a second CONNACK to connection {id}"
            ),
            Some(false) => panic!("the broker sent {ty} to connection {id} after refusing it"),
        }
        match p {
            Packet::ConnAck(c) => {
                let ok = c.reason_code.is_success();
                t.connack = Some(ok);
                if let Some(connect) = &t.connect {
                    assert!(
                        !(c.session_present && (connect.clean_start || !ok)),
                        "CONNACK to connection {id} with Session Present after Clean Start \
                         or with a refusal: {c:?}"
                    );
                }
                if ok {
                    assert!(
                        t.session.is_some(),
                        "CONNACK success to connection {id} without ClientConnected"
                    );
                    // 3.1 has no Session Present flag.
                    assert!(
                        v == ProtocolVersion::V3_1 || c.session_present == t.present,
                        "CONNACK to connection {id}: Session Present {} but ClientConnected \
                         said {}",
                        c.session_present,
                        t.present
                    );
                }
            }
            Packet::Publish(mut p) => {
                self.reached.delivered += 1;
                self.reached.retained_sent += u32::from(p.retain);
                self.reached.qos2_sent += u32::from(p.qos == QoS::ExactlyOnce);
                let alias_max = t
                    .connect
                    .as_ref()
                    .filter(|c| c.protocol_version.is_v5())
                    .and_then(|c| c.properties.topic_alias_maximum)
                    .unwrap_or(0);
                if let Some(alias) = p.properties.topic_alias {
                    assert!(
                        alias.get() <= alias_max,
                        "topic alias {alias} to connection {id} above its maximum {alias_max}"
                    );
                    if p.topic.is_empty() {
                        p.topic = t.aliases.get(&alias.get()).cloned().unwrap_or_else(|| {
                            panic!("connection {id}: empty topic with unmapped alias {alias}")
                        });
                    } else {
                        t.aliases.insert(alias.get(), p.topic.clone());
                    }
                }
                if let Some(pid) = p.packet_id {
                    t.remember(pid);
                    let flow = if p.qos == QoS::AtLeastOnce {
                        Flow::Qos1
                    } else {
                        Flow::Qos2
                    };
                    t.inflight.insert(pid.get(), flow);
                }
                let session = t
                    .session
                    .clone()
                    .unwrap_or_else(|| panic!("PUBLISH to connection {id}, which has no session"));
                self.check_receive_maximum(id);
                self.model.check_delivery(&session, &p, self.now, v.is_v5());
            }
            Packet::PubAck(r) | Packet::PubRec(r) => {
                t.remember(r.packet_id);
                // With persistence, a message is acknowledged only once one of its
                // records (made on this connection or an earlier one of the session) is
                // durable, or if it has none (refused, or a duplicate).
                let payloads = t.published.remove(&r.packet_id.get()).unwrap_or_default();
                if self.persistence && r.reason_code.is_success() && !payloads.is_empty() {
                    let records: Vec<bool> = self
                        .seqs
                        .values()
                        .filter(|r| r.0.iter().any(|x| payloads.contains(x)))
                        .map(|r| r.1)
                        .collect();
                    assert!(
                        records.is_empty() || records.contains(&true),
                        "{ty} {} to connection {id} for {payloads:?} before a record of it is \
                         durable",
                        r.packet_id
                    );
                }
            }
            Packet::PubRel(r) => {
                t.remember(r.packet_id);
                t.inflight.insert(r.packet_id.get(), Flow::Released);
                self.check_receive_maximum(id);
            }
            _ => {}
        }
    }

    /// No more unacknowledged QoS 1/2 messages than the client's 5.0 Receive Maximum
    /// ([MQTT-3.3.4-9]); PUBRELs of a resumed session count but cannot be taken back.
    fn check_receive_maximum(&self, id: ConnId) {
        let t = &self.conns[&id];
        let Some(max) = t
            .connect
            .as_ref()
            .filter(|c| c.protocol_version.is_v5())
            .and_then(|c| c.properties.receive_maximum)
        else {
            return;
        };
        let released = t
            .inflight
            .values()
            .filter(|f| **f == Flow::Released)
            .count();
        assert!(
            t.inflight.len() <= usize::from(max.get()).max(released),
            "connection {id}: {} QoS 1/2 messages unacknowledged, above the client's \
             Receive Maximum {max}: {:?}",
            t.inflight.len(),
            t.inflight
        );
    }

    /// The broker's queries agree with each other and with what the harness saw.
    fn check_state(&mut self) {
        let b = &self.broker;
        let s = b.stats().clone();
        let last = &self.last_stats;
        let pairs = [
            (
                "connections_total",
                s.connections_total,
                last.connections_total,
            ),
            (
                "messages_received",
                s.messages_received,
                last.messages_received,
            ),
            ("messages_sent", s.messages_sent, last.messages_sent),
            ("bytes_received", s.bytes_received, last.bytes_received),
            ("bytes_sent", s.bytes_sent, last.bytes_sent),
            (
                "dropped_queue_full",
                s.dropped_queue_full,
                last.dropped_queue_full,
            ),
            ("dropped_expired", s.dropped_expired, last.dropped_expired),
            (
                "dropped_too_large",
                s.dropped_too_large,
                last.dropped_too_large,
            ),
            (
                "dropped_memory_budget",
                s.dropped_memory_budget,
                last.dropped_memory_budget,
            ),
            (
                "qos0_offline_skipped",
                s.qos0_offline_skipped,
                last.qos0_offline_skipped,
            ),
            ("publish_denied", s.publish_denied, last.publish_denied),
            (
                "subscribe_denied",
                s.subscribe_denied,
                last.subscribe_denied,
            ),
            ("auth_failures", s.auth_failures, last.auth_failures),
        ];
        for (name, now, before) in pairs {
            assert!(
                now >= before,
                "stats().{name} went down from {before} to {now}"
            );
        }
        self.last_stats = s;
        let g = b.gauges();
        let open = self.conns.values().filter(|t| t.is_open()).count();
        assert_eq!(
            g.connections, open,
            "gauges().connections differs from the connections open"
        );
        let sessions = b.sessions();
        assert_eq!(
            g.sessions,
            sessions.len(),
            "gauges().sessions vs sessions()"
        );
        let subs: BTreeSet<(String, String, QoS)> = b
            .subscriptions()
            .into_iter()
            .map(|(c, s)| (c.to_string(), s.filter.to_string(), s.options.qos))
            .collect();
        let model: BTreeSet<(String, String, QoS)> = self
            .model
            .subs
            .iter()
            .flat_map(|((c, _), fs)| {
                fs.iter()
                    .map(move |(f, sub)| (c.clone(), f.clone(), sub.qos))
            })
            .collect();
        assert_eq!(
            subs, model,
            "subscriptions() differs from what the Subscribed / Unsubscribed / SessionEnded \
             events tell"
        );
        assert_eq!(g.subscriptions, subs.len(), "gauges().subscriptions");
        let retained = b.retained();
        assert_eq!(g.retained, retained.len(), "gauges().retained");
        // Retained messages: the last non-empty RETAIN message of each topic, as routed;
        // one with a Message Expiry Interval may be gone once it expired.
        for r in &retained {
            let m = self.model.retained.get(r.topic.as_str());
            assert!(
                m.is_some_and(|m| m.0 == r.payload),
                "retained() holds {:?} ({:?}), not the last retained message routed on its \
                 topic: {m:?}",
                r.topic,
                r.payload
            );
        }
        for (topic, (payload, expiry, _)) in &self.model.retained {
            assert!(
                expiry.is_some() || retained.iter().any(|r| r.topic.as_str() == topic),
                "retained() lacks {topic:?} ({payload:?})"
            );
        }
        if sessions.iter().all(|s| s.online) {
            assert_eq!(
                g.offline_queued_bytes, 0,
                "gauges().offline_queued_bytes with no offline session"
            );
        }
        let clients = b.clients();
        let online: BTreeSet<String> = sessions
            .iter()
            .filter(|s| s.online)
            .map(|s| s.client_id.to_string())
            .collect();
        let listed: BTreeSet<String> = clients.iter().map(|c| c.client_id.to_string()).collect();
        assert_eq!(
            clients.len(),
            listed.len(),
            "clients() lists a client id twice: {clients:?}"
        );
        assert_eq!(listed, online, "clients() vs the online sessions()");
        for c in &clients {
            let t = self.conns.get(&c.conn);
            assert!(
                t.is_some_and(Track::is_open),
                "clients() lists connection {}, which is closed",
                c.conn
            );
        }
    }
}

// ----- Raw mode ---------------------------------------------------------------------------

impl World {
    fn raw_op(&mut self, op: &Op) {
        match op {
            Op::Open(n, args) => {
                self.open(*n, *args);
            }
            Op::Raw(n, bytes) => {
                let id = self.slot_id(*n);
                self.input(id, bytes);
            }
            Op::Packet(n, arg, chunk) => {
                let id = self.slot_id(*n);
                let Some(wire) = self.build(id, arg) else {
                    return;
                };
                let size = if *chunk == 0 {
                    wire.len()
                } else {
                    usize::from(*chunk)
                };
                for piece in wire.chunks(size) {
                    self.input(id, piece);
                }
            }
            Op::Closed(n) => {
                let id = self.slot_id(*n);
                self.closed(id);
            }
            Op::Advance(secs, step) => self.advance(*secs, *step),
            Op::Broker(op) => self.broker_op(op),
        }
        self.timers();
    }

    /// The bytes of a packet for a connection, or `None` if it cannot be encoded.
    fn build(&mut self, id: ConnId, arg: &PacketArg) -> Option<BytesMut> {
        let t = self.conns.get(&id);
        let v = t.and_then(Track::version).unwrap_or(ProtocolVersion::V5);
        let v5 = v.is_v5();
        let pid = |a: IdArg| match t {
            Some(t) => t.id(a),
            None => PacketId::new(1).expect("non-zero"),
        };
        let resp = |a: IdArg, raw: u8, ty: PacketType| {
            let mut r = PubResponse::new(pid(a));
            r.reason_code = code(raw, ty, ReasonCode::Success);
            r
        };
        let (p, v) = match arg {
            PacketArg::Connect(c) => {
                let c = c.build(true, &mut self.payloads);
                let v = c.protocol_version;
                (Packet::Connect(Box::new(c)), v)
            }
            PacketArg::Publish {
                msg,
                id: a,
                dup,
                alias,
                alias_only,
            } => {
                let mut p = msg.build(v5, &mut self.payloads, b'm');
                if p.qos != QoS::AtMostOnce {
                    p.dup = *dup;
                    p.packet_id = Some(pid(*a));
                }
                if let Some(n) = alias.filter(|_| v5) {
                    p.properties.topic_alias = NonZeroU16::new(u16::from(n).max(1));
                    if *alias_only {
                        p.topic = TopicName::empty();
                    }
                }
                (Packet::Publish(p), v)
            }
            PacketArg::PubAck(a, r) => (Packet::PubAck(resp(*a, *r, PacketType::PubAck)), v),
            PacketArg::PubRec(a, r) => (Packet::PubRec(resp(*a, *r, PacketType::PubRec)), v),
            PacketArg::PubRel(a, r) => (Packet::PubRel(resp(*a, *r, PacketType::PubRel)), v),
            PacketArg::PubComp(a, r) => (Packet::PubComp(resp(*a, *r, PacketType::PubComp)), v),
            PacketArg::Subscribe(a, s) => {
                let (subscriptions, properties) = s.build(v5);
                let sub = Subscribe {
                    packet_id: pid(*a),
                    properties: properties.into(),
                    subscriptions,
                };
                (Packet::Subscribe(sub), v)
            }
            PacketArg::Unsubscribe(a, mask) => {
                let u = Unsubscribe {
                    packet_id: pid(*a),
                    properties: Default::default(),
                    filters: filters(*mask),
                };
                (Packet::Unsubscribe(u), v)
            }
            PacketArg::PingReq => (Packet::PingReq, v),
            PacketArg::Disconnect(r, expiry) => {
                let d = Disconnect {
                    reason_code: disconnect_code(*r),
                    properties: DisconnectProperties {
                        session_expiry_interval: expiry.map(u32::from),
                        ..Default::default()
                    }
                    .into(),
                };
                (Packet::Disconnect(d), v)
            }
            PacketArg::Auth(r) => {
                let a = Auth {
                    reason_code: code(*r, PacketType::Auth, ReasonCode::ContinueAuthentication),
                    properties: AuthProperties {
                        authentication_method: Some(MqttString::new("m").expect("valid")),
                        authentication_data: Some(Bytes::from_static(b"response")),
                        ..Default::default()
                    }
                    .into(),
                };
                (Packet::Auth(a), v)
            }
            PacketArg::ServerOnly(n) => {
                let p = match n % 3 {
                    0 => Packet::ConnAck(Box::default()),
                    1 => Packet::SubAck(SubAck {
                        packet_id: pid(IdArg::Small(0)),
                        properties: Default::default(),
                        reason_codes: vec![ReasonCode::Success],
                    }),
                    _ => Packet::PingResp,
                };
                (p, v)
            }
        };
        let mut wire = BytesMut::new();
        p.encode(&mut wire, v, MAX_PACKET_SIZE).ok()?;
        Some(wire)
    }
}

// ----- Clients mode -----------------------------------------------------------------------

/// A real client on a slot.
struct Client {
    conn: Connection,
    id: ConnId,
    client_id: String,
    /// Which chain of client session states this connection continues.
    lineage: u64,
    to_broker: BytesMut,
    /// The transport is open (as the client sees it).
    transport_open: bool,
    /// `Event::Closed` was seen.
    closed: bool,
    /// The state was taken out of the closed connection.
    done: bool,
}

/// Real clients wired to the broker.
struct Clients {
    world: World,
    clients: Vec<Option<Client>>,
    /// Per client id: the state its last connection left, with the lineage.
    stored: HashMap<String, (SessionState, u64)>,
    /// Per client id: its last connection.
    latest: HashMap<String, ConnId>,
    next_lineage: u64,
    /// QoS 2 messages received: (lineage, session, topic, payload) -> count.
    qos2: HashMap<(u64, SessionId, String, Bytes), usize>,
}

impl Clients {
    fn new(world: World) -> Self {
        Self {
            world,
            clients: (0..SLOTS).map(|_| None).collect(),
            stored: HashMap::new(),
            latest: HashMap::new(),
            next_lineage: 0,
            qos2: HashMap::new(),
        }
    }

    fn op(&mut self, op: &ClientOp) {
        let now = self.world.now;
        match op {
            ClientOp::Connect(n, args, limits) => self.connect(slot(*n), args, limits),
            ClientOp::ToBroker(n, max) => {
                self.deliver_to_broker(slot(*n), *max);
            }
            ClientOp::ToClient(n, max) => {
                self.deliver_to_client(slot(*n), *max);
            }
            ClientOp::Flush(chunk) => self.flush(*chunk),
            ClientOp::Publish(n, a, repeat) => {
                if let Some(c) = self.clients[slot(*n)].as_mut() {
                    let v5 = c.conn.version().is_some_and(|v| v.is_v5());
                    for _ in 0..=repeat % 8 {
                        let p = a.build(v5, &mut self.world.payloads, b'm');
                        let _ = c.conn.publish(now, p);
                    }
                }
            }
            ClientOp::Subscribe(n, s) => {
                if let Some(c) = self.clients[slot(*n)].as_mut() {
                    let v5 = c.conn.version().is_some_and(|v| v.is_v5());
                    let (subs, props) = s.build(v5);
                    let _ = c.conn.subscribe(now, subs, props);
                }
            }
            ClientOp::Unsubscribe(n, mask) => {
                if let Some(c) = self.clients[slot(*n)].as_mut() {
                    let _ = c.conn.unsubscribe(now, filters(*mask), Default::default());
                }
            }
            ClientOp::Ping(n) => {
                if let Some(c) = self.clients[slot(*n)].as_mut() {
                    let _ = c.conn.ping(now);
                }
            }
            ClientOp::Disconnect(n, will, expiry) => {
                if let Some(c) = self.clients[slot(*n)].as_mut() {
                    let reason = if *will {
                        ReasonCode::DisconnectWithWillMessage
                    } else {
                        ReasonCode::Success
                    };
                    let props = DisconnectProperties {
                        session_expiry_interval: expiry.map(u32::from),
                        ..Default::default()
                    };
                    let _ = c.conn.disconnect(now, reason, props);
                }
            }
            ClientOp::Hangup(n) => self.hangup(slot(*n)),
            ClientOp::Advance(secs, flush) => self.advance(*secs, *flush),
            ClientOp::Broker(op) => self.world.broker_op(op),
        }
        self.settle();
    }

    fn connect(&mut self, s: usize, args: &ConnectArgs, limits: &ClientLimits) {
        self.hangup(s);
        self.settle();
        let now = self.world.now;
        let connect = args.build(false, &mut self.world.payloads);
        let cid = connect.client_id.to_string();
        let config = limits.config(connect.protocol_version);
        // The state the client id's last connection left, if that one is closed; a
        // connection that takes over one still open starts a new chain.
        let last_closed = self.latest.get(&cid).is_none_or(|id| {
            !self
                .clients
                .iter()
                .flatten()
                .any(|c| c.id == *id && !c.done)
        });
        let stored = self.stored.remove(&cid);
        let (state, lineage) = match stored {
            Some((state, lineage)) if !args.clean_start && last_closed => (state, lineage),
            _ => {
                self.next_lineage += 1;
                (SessionState::default(), self.next_lineage)
            }
        };
        let id = self.world.open(
            s as u8,
            OpenArgs {
                tls: false,
                allow_anonymous: None,
            },
        );
        let mut conn = Connection::client_with_state(config, state);
        let _ = conn.connect(now, connect);
        self.latest.insert(cid.clone(), id);
        self.clients[s] = Some(Client {
            conn,
            id,
            client_id: cid,
            lineage,
            to_broker: BytesMut::new(),
            transport_open: true,
            closed: false,
            done: false,
        });
    }

    /// The transport breaks: bytes in flight are lost, both sides see it close.
    fn hangup(&mut self, s: usize) {
        let Some(c) = self.clients[s].as_mut() else {
            return;
        };
        if !c.transport_open {
            return;
        }
        c.transport_open = false;
        c.to_broker.clear();
        c.conn.handle_closed(self.world.now);
        let id = c.id;
        if let Some(t) = self.world.conns.get_mut(&id) {
            t.to_client.clear();
        }
        self.world.closed(id);
    }

    /// Delivers up to `max` bytes (0: all) from a client to the broker.
    fn deliver_to_broker(&mut self, s: usize, max: u8) -> bool {
        let Some(c) = self.clients[s].as_mut() else {
            return false;
        };
        let n = match max {
            0 => c.to_broker.len(),
            n => c.to_broker.len().min(n.into()),
        };
        if n == 0 || !c.transport_open {
            return false;
        }
        let bytes = c.to_broker.split_to(n);
        let id = c.id;
        self.world.input(id, &bytes);
        true
    }

    /// Delivers up to `max` bytes (0: all) from the broker to a client.
    fn deliver_to_client(&mut self, s: usize, max: u8) -> bool {
        let Some(c) = self.clients[s].as_mut() else {
            return false;
        };
        let Some(t) = self.world.conns.get_mut(&c.id) else {
            return false;
        };
        let n = match max {
            0 => t.to_client.len(),
            n => t.to_client.len().min(n.into()),
        };
        if n == 0 || !c.transport_open {
            return false;
        }
        let bytes = t.to_client.split_to(n);
        c.conn.handle_input(self.world.now, &bytes);
        true
    }

    fn flush(&mut self, chunk: u8) {
        for _ in 0..SETTLE_ROUNDS {
            let mut moved = false;
            for s in 0..SLOTS {
                while self.deliver_to_broker(s, chunk) {
                    moved = true;
                }
                while self.deliver_to_client(s, chunk) {
                    moved = true;
                }
            }
            self.settle();
            if !moved {
                return;
            }
        }
    }

    fn advance(&mut self, secs: u16, flush: bool) {
        let end = self.world.now + Duration::from_secs(secs.into());
        for _ in 0..ADVANCE_STEPS {
            let next = self
                .clients
                .iter()
                .flatten()
                .filter_map(|c| c.conn.poll_timeout())
                .chain(self.world.broker.poll_timeout())
                .min();
            match next {
                Some(t) if t <= end => {
                    self.world.now = self.world.now.max(t);
                    self.settle();
                    if flush {
                        self.flush(0);
                    }
                }
                _ => break,
            }
        }
        self.world.now = end;
        self.settle();
    }

    /// Runs the clients' side until nothing more happens at this instant: their events,
    /// their bytes into the links, transports they or the broker close, due timers.
    fn settle(&mut self) {
        for _ in 0..SETTLE_ROUNDS {
            let mut moved = false;
            for s in 0..SLOTS {
                moved |= self.pump(s);
            }
            moved |= self.world.timers();
            if !moved {
                return;
            }
        }
    }

    fn pump(&mut self, s: usize) -> bool {
        let now = self.world.now;
        let Some(c) = self.clients[s].as_mut() else {
            return false;
        };
        if c.done {
            return false;
        }
        let mut moved = false;
        // The broker closed: what it wrote arrives, then the end of the stream.
        if c.transport_open && self.world.conns[&c.id].close_seen {
            let rest = self
                .world
                .conns
                .get_mut(&c.id)
                .expect("known")
                .to_client
                .split();
            c.conn.handle_input(now, &rest);
            c.conn.handle_closed(now);
            c.transport_open = false;
            moved = true;
        }
        if c.conn.poll_timeout().is_some_and(|t| t <= now) {
            c.conn.handle_timeout(now);
            moved = true;
        }
        while let Some(e) = c.conn.poll_event() {
            moved = true;
            match e {
                Event::Message(p) => {
                    self.world.reached.client_messages += 1;
                    if p.qos == QoS::ExactlyOnce && !p.retain {
                        let t = &self.world.conns[&c.id];
                        let session = t.session.clone().unwrap_or_else(|| {
                            panic!("client on {} got a message without a session", c.id)
                        });
                        // Checked when sent; here only how often it arrives.
                        let copies = self.world.model.check_delivery(&session, &p, now, false);
                        let key = (
                            c.lineage,
                            session.clone(),
                            p.topic.to_string(),
                            p.payload.clone(),
                        );
                        let n = self.qos2.entry(key).or_default();
                        *n += 1;
                        assert!(
                            *n <= copies,
                            "client {} (session {session:?}) got QoS 2 message {:?} on {:?} \
                             {n} times; its subscriptions allow {copies}",
                            c.client_id,
                            p.payload,
                            p.topic
                        );
                    }
                }
                Event::Closed(reason) => {
                    assert!(
                        !matches!(reason, CloseReason::Violation(_)),
                        "client {} on connection {} closed for a protocol violation by the \
                         broker: {reason:?}",
                        c.client_id,
                        c.id
                    );
                    c.closed = true;
                }
                _ => {}
            }
        }
        if let Some(b) = c.conn.poll_transmit() {
            moved = true;
            if c.transport_open {
                c.to_broker.extend_from_slice(&b);
            }
        }
        if c.closed {
            // The client closes its transport after writing what it had.
            let id = c.id;
            if c.transport_open {
                c.transport_open = false;
                let rest = c.to_broker.split();
                if !rest.is_empty() {
                    self.world.input(id, &rest);
                }
                if let Some(t) = self.world.conns.get_mut(&id) {
                    t.to_client.clear();
                }
                self.world.closed(id);
            }
            let c = self.clients[s].as_mut().expect("present");
            let conn = std::mem::replace(&mut c.conn, Connection::client(Config::default()));
            c.done = true;
            if self.latest.get(&c.client_id) == Some(&id) {
                self.stored
                    .insert(c.client_id.clone(), (conn.into_state(), c.lineage));
            }
            moved = true;
        }
        moved
    }
}

// ----- Runs -------------------------------------------------------------------------------

/// Runs one input; panics when a check fails. Returns what the run reached.
pub fn run(input: &Input) -> Reached {
    // Any instant will do: from here on time is simulated.
    let start = Instant::now();
    match input {
        Input::Raw(settings, ops) => {
            let mut w = World::new(settings, start, false);
            for op in ops {
                w.raw_op(op);
            }
            w.check_store();
            w.reached
        }
        Input::Clients(settings, ops) => {
            let mut c = Clients::new(World::new(settings, start, true));
            for op in ops {
                c.op(op);
            }
            c.world.check_store();
            c.world.reached
        }
    }
}

// ----- Writing inputs ---------------------------------------------------------------------

/// The bytes an [`Input`] is decoded from: the inverse of its `Arbitrary` decoding, as
/// `session::to_bytes`, so that seeds can be written as operation lists.
pub fn to_bytes(input: &Input) -> Vec<u8> {
    let mut out = Vec::new();
    input.put(&mut out);
    out
}

impl Put for Input {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            Input::Raw(s, ops) => {
                tag(out, 0, 2);
                put_all!(out; s, ops);
            }
            Input::Clients(s, ops) => {
                tag(out, 1, 2);
                put_all!(out; s, ops);
            }
        }
    }
}

impl Put for Op {
    fn put(&self, out: &mut Vec<u8>) {
        const N: u32 = 6;
        match self {
            Op::Open(n, a) => {
                tag(out, 0, N);
                put_all!(out; n, a);
            }
            Op::Raw(n, b) => {
                tag(out, 1, N);
                put_all!(out; n, b);
            }
            Op::Packet(n, p, chunk) => {
                tag(out, 2, N);
                put_all!(out; n, p, chunk);
            }
            Op::Closed(n) => {
                tag(out, 3, N);
                n.put(out);
            }
            Op::Advance(secs, step) => {
                tag(out, 4, N);
                put_all!(out; secs, step);
            }
            Op::Broker(b) => {
                tag(out, 5, N);
                b.put(out);
            }
        }
    }
}

impl Put for ClientOp {
    fn put(&self, out: &mut Vec<u8>) {
        const N: u32 = 12;
        match self {
            ClientOp::Connect(n, c, l) => {
                tag(out, 0, N);
                put_all!(out; n, c, l);
            }
            ClientOp::ToBroker(n, m) => {
                tag(out, 1, N);
                put_all!(out; n, m);
            }
            ClientOp::ToClient(n, m) => {
                tag(out, 2, N);
                put_all!(out; n, m);
            }
            ClientOp::Flush(chunk) => {
                tag(out, 3, N);
                chunk.put(out);
            }
            ClientOp::Publish(n, p, repeat) => {
                tag(out, 4, N);
                put_all!(out; n, p, repeat);
            }
            ClientOp::Subscribe(n, s) => {
                tag(out, 5, N);
                put_all!(out; n, s);
            }
            ClientOp::Unsubscribe(n, mask) => {
                tag(out, 6, N);
                put_all!(out; n, mask);
            }
            ClientOp::Ping(n) => {
                tag(out, 7, N);
                n.put(out);
            }
            ClientOp::Disconnect(n, will, expiry) => {
                tag(out, 8, N);
                put_all!(out; n, will, expiry);
            }
            ClientOp::Hangup(n) => {
                tag(out, 9, N);
                n.put(out);
            }
            ClientOp::Advance(secs, flush) => {
                tag(out, 10, N);
                put_all!(out; secs, flush);
            }
            ClientOp::Broker(b) => {
                tag(out, 11, N);
                b.put(out);
            }
        }
    }
}

impl Put for BrokerOp {
    fn put(&self, out: &mut Vec<u8>) {
        const N: u32 = 6;
        match self {
            BrokerOp::Auth(n, a) => {
                tag(out, 0, N);
                put_all!(out; n, a);
            }
            BrokerOp::Durable(n) => {
                tag(out, 1, N);
                n.put(out);
            }
            BrokerOp::Publish(p, repeat) => {
                tag(out, 2, N);
                put_all!(out; p, repeat);
            }
            BrokerOp::DisconnectClient(c, r) => {
                tag(out, 3, N);
                put_all!(out; c, r);
            }
            BrokerOp::Shutdown => tag(out, 4, N),
            BrokerOp::Idle(n) => {
                tag(out, 5, N);
                n.put(out);
            }
        }
    }
}

impl Put for AuthAnswer {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            AuthAnswer::Allow(rename) => {
                tag(out, 0, 3);
                rename.put(out);
            }
            AuthAnswer::Deny(r) => {
                tag(out, 1, 3);
                r.put(out);
            }
            AuthAnswer::Continue => tag(out, 2, 3),
        }
    }
}

impl Put for OpenArgs {
    fn put(&self, out: &mut Vec<u8>) {
        put_all!(out; &self.tls, &self.allow_anonymous);
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
            &self.server_keep_alive,
            &self.session_maximum_qos,
            &self.retain_available,
            &self.allow_anonymous,
            &self.authenticate,
            &self.max_offline_messages,
            &self.max_offline_bytes,
            &self.max_total_offline_bytes,
            &self.queue_qos0_offline,
            &self.drop_oldest,
            &self.persistent_session_expiry,
            &self.max_session_expiry,
            &self.max_keep_alive,
            &self.max_subscriptions,
            &self.max_topic_levels,
            &self.denied_not_authorized,
            &self.sys_interval,
            &self.persistence,
            &self.maximum_qos,
            &self.acl,
        );
    }
}

impl Put for ClientLimits {
    fn put(&self, out: &mut Vec<u8>) {
        put_all!(out;
            &self.receive_maximum,
            &self.max_packet_size,
            &self.topic_alias_maximum,
            &self.outgoing_topic_aliases,
        );
    }
}

impl Put for ConnectArgs {
    fn put(&self, out: &mut Vec<u8>) {
        put_all!(out;
            &self.version,
            &self.client_id,
            &self.clean_start,
            &self.keep_alive,
            &self.session_expiry,
            &self.will,
            &self.credentials,
            &self.receive_maximum,
            &self.maximum_packet_size,
            &self.topic_alias_maximum,
            &self.auth_method,
        );
    }
}

impl Put for WillArgs {
    fn put(&self, out: &mut Vec<u8>) {
        put_all!(out; &self.qos, &self.retain, &self.topic, &self.delay, &self.expiry);
    }
}

impl Put for PublishArgs {
    fn put(&self, out: &mut Vec<u8>) {
        put_all!(out; &self.qos, &self.retain, &self.topic, &self.payload, &self.expiry);
    }
}

impl Put for SubArgs {
    fn put(&self, out: &mut Vec<u8>) {
        put_all!(out;
            &self.mask,
            &self.qos,
            &self.no_local,
            &self.retain_as_published,
            &self.retain_handling,
            &self.id,
        );
    }
}

impl Put for IdArg {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            IdArg::Small(n) => {
                tag(out, 0, 2);
                n.put(out);
            }
            IdArg::Recent(n) => {
                tag(out, 1, 2);
                n.put(out);
            }
        }
    }
}

impl Put for PacketArg {
    fn put(&self, out: &mut Vec<u8>) {
        const N: u32 = 12;
        match self {
            PacketArg::Connect(c) => {
                tag(out, 0, N);
                c.put(out);
            }
            PacketArg::Publish {
                msg,
                id,
                dup,
                alias,
                alias_only,
            } => {
                tag(out, 1, N);
                put_all!(out; msg, id, dup, alias, alias_only);
            }
            PacketArg::PubAck(id, r) => {
                tag(out, 2, N);
                put_all!(out; id, r);
            }
            PacketArg::PubRec(id, r) => {
                tag(out, 3, N);
                put_all!(out; id, r);
            }
            PacketArg::PubRel(id, r) => {
                tag(out, 4, N);
                put_all!(out; id, r);
            }
            PacketArg::PubComp(id, r) => {
                tag(out, 5, N);
                put_all!(out; id, r);
            }
            PacketArg::Subscribe(id, s) => {
                tag(out, 6, N);
                put_all!(out; id, s);
            }
            PacketArg::Unsubscribe(id, mask) => {
                tag(out, 7, N);
                put_all!(out; id, mask);
            }
            PacketArg::PingReq => tag(out, 8, N),
            PacketArg::Disconnect(r, expiry) => {
                tag(out, 9, N);
                put_all!(out; r, expiry);
            }
            PacketArg::Auth(r) => {
                tag(out, 10, N);
                r.put(out);
            }
            PacketArg::ServerOnly(n) => {
                tag(out, 11, N);
                n.put(out);
            }
        }
    }
}
