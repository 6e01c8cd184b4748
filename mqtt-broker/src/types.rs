//! What goes in and out of the broker besides bytes: connection info, outputs, events,
//! authentication requests and answers, storage records, hooks, and query results.

use bytes::Bytes;
use mqtt_proto::{
    Auth, Connect, MqttString, ProtocolVersion, Publish, QoS, ReasonCode, Subscription, TopicFilter,
};
use mqtt_session::CloseReason;

/// The adapter's id of a transport connection.
pub type ConnId = u64;

/// What the adapter knows about a new connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnInfo {
    /// Peer address, as text (for logs and hooks).
    pub peer: String,
    /// Name of the listener it came in on, shared by that listener's connections.
    pub listener: std::sync::Arc<str>,
    /// Identity from a verified TLS client certificate, if any.
    pub tls_identity: Option<Box<str>>,
    /// Whether this listener accepts clients without credentials; `None` uses
    /// [`BrokerConfig::allow_anonymous`](crate::BrokerConfig::allow_anonymous).
    pub allow_anonymous: Option<bool>,
}

/// An output of the broker, from [`Broker::poll_output`](crate::Broker::poll_output).
///
/// Every output is moved into the broker's queue and out again, and most are
/// [`Transmit`](Self::Transmit)s: the rare large ones (an authentication request, a
/// connection's details in its events) are boxed, so that an output is 88 bytes rather
/// than 192.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Bytes to write to a connection: everything pending for it, for one write.
    Transmit(ConnId, Bytes),
    /// Close a connection after writing what was transmitted for it before.
    Close(ConnId),
    /// Something happened.
    Event(BrokerEvent),
    /// Check these credentials and answer with
    /// [`Broker::handle_auth`](crate::Broker::handle_auth).
    Authenticate(Box<AuthRequest>),
    /// A change to make durable (only with
    /// [`BrokerConfig::persistence`](crate::BrokerConfig::persistence)); a
    /// [`Record::Sync`] asks for
    /// [`Broker::handle_durable`](crate::Broker::handle_durable).
    Store(crate::Record),
}

/// A request to authenticate a connecting client (or to continue a 5.0 AUTH exchange).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest {
    /// The connection.
    pub conn: ConnId,
    /// Client identifier.
    pub client_id: MqttString,
    /// User Name.
    pub username: Option<MqttString>,
    /// Password.
    pub password: Option<Bytes>,
    /// Identity from a verified TLS client certificate.
    pub tls_identity: Option<String>,
    /// 5.0 Authentication Method, if the client uses enhanced authentication.
    pub method: Option<MqttString>,
    /// 5.0 Authentication Data of CONNECT or of the latest AUTH.
    pub data: Option<Bytes>,
}

/// The adapter's answer to an [`AuthRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthResult {
    /// Accept; `username` replaces the client's for authorization (for example the
    /// identity of a TLS client certificate), if given.
    Allow {
        /// The user name the ACL sees.
        username: Option<String>,
    },
    /// Refuse with this reason (0x86 Bad user name or password, 0x87 Not authorized,
    /// 0x8C Bad authentication method, ...).
    Deny(ReasonCode),
    /// 5.0 enhanced authentication: send this AUTH (reason 0x18 Continue) and wait for
    /// the client's next one, which comes back as another [`AuthRequest`].
    Continue(Auth),
}

/// Something that happened in the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BrokerEvent {
    /// A client connected.
    ClientConnected {
        /// The connection.
        conn: ConnId,
        /// Client identifier (assigned, if the client sent none).
        client_id: MqttString,
        /// User name.
        username: Option<String>,
        /// Protocol version.
        version: ProtocolVersion,
        /// Whether a stored session was resumed.
        session_present: bool,
        /// What the adapter said of the connection when it opened (peer, listener).
        info: Box<ConnInfo>,
    },
    /// A client's connection closed.
    ClientDisconnected {
        /// The connection.
        conn: ConnId,
        /// Client identifier, if the client got as far as CONNECT.
        client_id: Option<MqttString>,
        /// Why.
        reason: CloseReason,
        /// What the adapter said of the connection when it opened (peer, listener).
        info: Box<ConnInfo>,
    },
    /// A client subscribed.
    Subscribed {
        /// Client identifier.
        client_id: MqttString,
        /// The filter.
        filter: TopicFilter,
        /// The granted QoS.
        qos: QoS,
    },
    /// A client unsubscribed.
    Unsubscribed {
        /// Client identifier.
        client_id: MqttString,
        /// The filter.
        filter: TopicFilter,
    },
    /// A message was accepted for routing.
    MessageReceived {
        /// The publisher (`None` for the broker itself).
        client_id: Option<MqttString>,
        /// The message.
        publish: Box<Publish>,
        /// How many sessions it went to (queued or sent).
        receivers: usize,
    },
    /// Messages were dropped.
    MessageDropped {
        /// The session that would have received it.
        client_id: MqttString,
        /// Why.
        reason: Drop,
    },
    /// A session ended (expired, or replaced by Clean Start).
    SessionEnded {
        /// Client identifier.
        client_id: MqttString,
    },
}

/// Why a message was dropped for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Drop {
    /// The session's queue was full.
    QueueFull,
    /// Its Message Expiry Interval passed while it was queued.
    Expired,
    /// Larger than the client's Maximum Packet Size.
    TooLarge,
    /// All offline queues together hold `max_total_offline_bytes`.
    MemoryBudget,
    /// A QoS 0 message for a client with more waiting to be written to it than the
    /// adapter allows ([`Broker::set_write_backlog`](crate::Broker::set_write_backlog)).
    WriteBacklog,
}

/// What a publish interceptor decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishDecision {
    /// Route the (possibly rewritten) message.
    Accept,
    /// Acknowledge it as usual but do not route it.
    Drop,
    /// Refuse it: 5.0 acknowledgements carry this code; 3.x ones cannot say no.
    Reject(ReasonCode),
}

/// Callbacks for applications that embed the broker. They run synchronously inside the
/// core, so they must be quick and do no IO. Every method has a default that accepts.
pub trait Hooks: Send {
    /// Validate a connection before authentication: `Err(code)` refuses it with CONNACK.
    fn validate_connection(
        &mut self,
        _info: &ConnInfo,
        _connect: &Connect,
    ) -> Result<(), ReasonCode> {
        Ok(())
    }

    /// Accept (`true`, possibly after rewriting it) or refuse a subscription.
    fn intercept_subscription(
        &mut self,
        _client_id: &str,
        _subscription: &mut Subscription,
    ) -> bool {
        true
    }

    /// Accept, rewrite, drop or refuse a message from a client.
    fn intercept_publish(&mut self, _client_id: &str, _publish: &mut Publish) -> PublishDecision {
        PublishDecision::Accept
    }
}

/// Hooks that accept everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHooks;

impl Hooks for NoHooks {}

/// A connected client, from [`Broker::clients`](crate::Broker::clients).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// The connection.
    pub conn: ConnId,
    /// Client identifier.
    pub client_id: MqttString,
    /// User name.
    pub username: Option<String>,
    /// Peer address.
    pub peer: String,
    /// Name of the listener it came in on.
    pub listener: String,
    /// When its transport connection opened.
    pub connected_at: std::time::Instant,
    /// Protocol version.
    pub version: ProtocolVersion,
    /// Keep-alive in seconds.
    pub keep_alive: u64,
    /// Outgoing QoS 1/2 messages unacknowledged.
    pub inflight: usize,
    /// Outgoing messages waiting for room.
    pub queued: usize,
}

/// A session, online or not, from [`Broker::sessions`](crate::Broker::sessions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Client identifier.
    pub client_id: MqttString,
    /// Online now.
    pub online: bool,
    /// Subscriptions held.
    pub subscriptions: usize,
    /// Messages waiting (offline queue, or the connection's queue and inflight).
    pub queued: usize,
    /// How long it lives once offline, in seconds (0: it ends with its connection).
    pub expiry_secs: u64,
    /// Offline sessions: when it expires (`None` while online, or when it never does).
    pub expires_at: Option<std::time::Instant>,
}

/// Counters, also published under `$SYS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted (CONNACK success).
    pub connections_total: u64,
    /// PUBLISH packets received from clients.
    pub messages_received: u64,
    /// PUBLISH packets handed to client connections.
    pub messages_sent: u64,
    /// Bytes read from clients.
    pub bytes_received: u64,
    /// Bytes written to clients.
    pub bytes_sent: u64,
    /// Messages dropped because a queue was full.
    pub dropped_queue_full: u64,
    /// Messages dropped because they expired while queued.
    pub dropped_expired: u64,
    /// Messages dropped because they were too large for the receiver.
    pub dropped_too_large: u64,
    /// Messages dropped because the offline queues' memory budget was used up.
    pub dropped_memory_budget: u64,
    /// QoS 0 messages dropped because too much was waiting to be written to the client.
    pub dropped_write_backlog: u64,
    /// QoS 0 messages not queued for offline sessions (not a drop: QoS 0 is "at most once").
    pub qos0_offline_skipped: u64,
    /// Publishes refused by the ACL.
    pub publish_denied: u64,
    /// Subscriptions refused by the ACL or a hook.
    pub subscribe_denied: u64,
    /// Messages not delivered to a subscriber whose wildcard subscription matched them
    /// because the ACL denies it their topic (live, retained, or queued while offline).
    pub receive_denied: u64,
    /// Connections refused by authentication.
    pub auth_failures: u64,
}

/// Current sizes, from [`Broker::gauges`](crate::Broker::gauges).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Open connections (including those not yet past CONNECT).
    pub connections: usize,
    /// Sessions, online and offline.
    pub sessions: usize,
    /// Subscriptions.
    pub subscriptions: usize,
    /// Retained messages.
    pub retained: usize,
    /// Payload bytes in offline queues.
    pub offline_queued_bytes: usize,
}

/// How much waits in the sessions' queues, from
/// [`Broker::queue_gauges`](crate::Broker::queue_gauges).
///
/// A message *queued* for a session waits to be sent: in its online connection's queue
/// (the inflight window is full), or while the session is offline. A message *inflight*
/// was sent and is not acknowledged yet. Counts cover QoS 0 messages that wait too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueGauges {
    /// Messages queued, all sessions together.
    pub queued_messages: usize,
    /// Payload bytes of the queued messages.
    pub queued_bytes: usize,
    /// Messages inflight, all sessions together.
    pub inflight_messages: usize,
    /// The most messages queued for one session.
    pub max_session_queued_messages: usize,
}
