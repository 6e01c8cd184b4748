//! Broker limits and policies, with documented defaults.

use mqtt_proto::{QoS, ReasonCode};
use mqtt_session::Config as SessionConfig;
use std::time::Duration;

/// What happens when a session's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DropPolicy {
    /// Drop the new message (the default, like mosquitto): what is queued keeps its place.
    #[default]
    DropNewest,
    /// Drop the oldest queued message to make room: the subscriber sees the latest.
    DropOldest,
}

/// Configuration of the broker core. Build with struct update syntax from
/// [`BrokerConfig::default`]. A duration too long to be added to an `Instant`
/// (`Duration::MAX`, say) means "never": no deadline is armed for it.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Limits of each client connection (max packet size, receive maximum, max inflight,
    /// topic alias maximum, connect timeout, server keep alive, maximum QoS, retain
    /// available). `max_queued_messages` / `max_queued_bytes` bound each online session's
    /// queue; `manual_acks` is managed by the broker. Unlike the session's own default,
    /// `outgoing_topic_aliases` is on: a 5.0 client that announces a Topic Alias Maximum
    /// gets aliases for repeated topics, as it asked (such copies are encoded for that
    /// connection instead of sharing the common encoding).
    pub session: SessionConfig,
    /// Accept clients without a user name. Default true (the adapter restricts anonymous
    /// access to loopback unless configured otherwise).
    pub allow_anonymous: bool,
    /// Send credentials to the adapter for checking ([`Output::Authenticate`]
    /// (crate::Output::Authenticate)); when false every client with a user name is
    /// accepted, and a 5.0 client asking for enhanced authentication (an Authentication
    /// Method) is refused with 0x8C Bad authentication method, since no one could carry
    /// it out. Default false.
    pub authenticate: bool,
    /// Messages an offline persistent session may queue. Default 1,000.
    pub max_offline_messages: usize,
    /// Payload bytes an offline persistent session may queue. Default 16 MiB.
    pub max_offline_bytes: usize,
    /// Payload bytes all offline sessions together may queue: a memory budget across
    /// queues (each online connection's queue is bounded by `session.max_queued_bytes`).
    /// Messages beyond it are dropped and counted. Default 1 GiB.
    pub max_total_offline_bytes: usize,
    /// Queue QoS 0 messages for offline sessions too. Default false.
    pub queue_qos0_offline: bool,
    /// What a full queue drops. Default [`DropPolicy::DropNewest`].
    pub drop_policy: DropPolicy,
    /// Session expiry of MQTT 3.x persistent sessions (Clean Session 0), which the
    /// protocol lets live forever. Default 2 days.
    pub persistent_session_expiry: Duration,
    /// Upper bound of a 5.0 client's Session Expiry Interval. Default 7 days.
    pub max_session_expiry: Duration,
    /// Highest keep-alive a client may ask for; a 5.0 client asking for more (or for 0)
    /// is told this one with Server Keep Alive. Default: none.
    pub max_keep_alive: Option<u16>,
    /// Subscriptions one session may hold; more are refused with 0x97 / 0x80. Default
    /// 1,000.
    pub max_subscriptions: usize,
    /// Levels a topic name or filter may have. Default 128.
    pub max_topic_levels: usize,
    /// Bytes a topic name or filter may have. Default 65,535, the most MQTT can carry.
    pub max_topic_length: usize,
    /// Reason code for a subscription denied by the ACL: 0x80 (default; understood by
    /// 3.1.1 and 5.0 clients) or 0x87 Not authorized (5.0).
    pub subscribe_denied_code: ReasonCode,
    /// Interval of the `$SYS/broker/...` topics; `None` turns them off. Default 10 s.
    pub sys_interval: Option<Duration>,
    /// A store is attached: emit [`Output::Store`](crate::Output::Store) records for every
    /// change that must survive a restart (see [`Record`](crate::Record)), and hold a
    /// publisher's QoS 1/2 acknowledgement until its records are durable
    /// ([`Broker::handle_durable`](crate::Broker::handle_durable)). Default false: no
    /// store, no records, nothing waits.
    pub persistence: bool,
    /// Maximum QoS granted to subscriptions. Default 2.
    pub maximum_qos: QoS,
    /// The version string of `$SYS/broker/version`.
    pub version: String,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            session: SessionConfig {
                outgoing_topic_aliases: true,
                ..SessionConfig::default()
            },
            allow_anonymous: true,
            authenticate: false,
            max_offline_messages: 1000,
            max_offline_bytes: 16 << 20,
            max_total_offline_bytes: 1 << 30,
            queue_qos0_offline: false,
            drop_policy: DropPolicy::DropNewest,
            persistent_session_expiry: Duration::from_secs(2 * 86_400),
            max_session_expiry: Duration::from_secs(7 * 86_400),
            max_keep_alive: None,
            max_subscriptions: 1000,
            max_topic_levels: 128,
            max_topic_length: 65_535,
            subscribe_denied_code: ReasonCode::UnspecifiedError,
            sys_interval: Some(Duration::from_secs(10)),
            persistence: false,
            maximum_qos: QoS::ExactlyOnce,
            version: concat!("mqtt-broker ", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}
