//! Limits and behaviour of one connection, with defaults a production broker or client
//! can start from.

use mqtt_proto::{QoS, MAX_PACKET_SIZE};
use std::time::Duration;

/// Configuration of a [`Connection`](crate::Connection). Every field has a default
/// ([`Config::default`]); the limits we announce to the peer (Receive Maximum, Maximum
/// Packet Size, Topic Alias Maximum) are sent in 5.0 CONNECT / CONNACK properties.
///
/// Build one with struct update syntax: `Config { receive_maximum: 100, ..Config::default() }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Largest packet we accept, fixed header included. A larger one closes the
    /// connection with 0x95 Packet too large. Default: the protocol's limit,
    /// 268,435,460 bytes.
    pub max_packet_size: u32,
    /// How many incoming QoS 1 and QoS 2 messages may be unacknowledged at once (our
    /// Receive Maximum). A peer that exceeds it is disconnected with 0x93. Default 65,535.
    pub receive_maximum: u16,
    /// How many outgoing QoS 1 and QoS 2 messages may be unacknowledged at once. In 5.0
    /// the peer's Receive Maximum lowers it further. Default 1,024.
    pub max_inflight: u16,
    /// How many outgoing messages may wait for room in the inflight window. When it is
    /// full, [`Connection::publish`](crate::Connection::publish) refuses with
    /// [`UsageError::QueueFull`](crate::UsageError::QueueFull) and hands the message back.
    /// Default 1,000.
    pub max_queued_messages: usize,
    /// The same bound in payload bytes. Default 16 MiB.
    pub max_queued_bytes: usize,
    /// Highest Topic Alias the peer may use toward us (5.0). Default 16.
    pub topic_alias_maximum: u16,
    /// Use topic aliases for what we send, up to the peer's Topic Alias Maximum (5.0).
    /// Default off here; the broker turns it on (`mqtt_broker::BrokerConfig::default`), so
    /// its 5.0 subscribers that announce a Topic Alias Maximum get aliases.
    pub outgoing_topic_aliases: bool,
    /// Server: how long to wait for CONNECT after the transport opened. Client: how long
    /// to wait for CONNACK after sending CONNECT. Default 10 s.
    pub connect_timeout: Duration,
    /// Client: how long to wait for PINGRESP after sending PINGREQ. Default 10 s.
    pub ping_timeout: Duration,
    /// Server: Server Keep Alive (5.0) that replaces the client's keep-alive; `None` keeps
    /// the client's. 3.x clients cannot be told, so it applies to 5.0 only. Default `None`.
    pub server_keep_alive: Option<u16>,
    /// Server: the highest QoS clients may publish with (5.0 Maximum QoS; 0 or 1 when
    /// lowered). A 5.0 client that exceeds it is disconnected with 0x9B. Default QoS 2.
    pub maximum_qos: QoS,
    /// Server: whether clients may publish retained messages (5.0 Retain Available). A 5.0
    /// client that sends one when not is disconnected with 0x9A. Default true.
    pub retain_available: bool,
    /// Acknowledge incoming QoS 1/2 messages only when the application calls
    /// [`Connection::ack`](crate::Connection::ack) (for example after the message is
    /// durable). Acknowledgements still leave in the order the messages arrived. Default
    /// off: messages are acknowledged as they are delivered.
    pub manual_acks: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_packet_size: MAX_PACKET_SIZE,
            receive_maximum: u16::MAX,
            max_inflight: 1024,
            max_queued_messages: 1000,
            max_queued_bytes: 16 << 20,
            topic_alias_maximum: 16,
            outgoing_topic_aliases: false,
            connect_timeout: Duration::from_secs(10),
            ping_timeout: Duration::from_secs(10),
            server_keep_alive: None,
            maximum_qos: QoS::ExactlyOnce,
            retain_available: true,
            manual_acks: false,
        }
    }
}
