//! Why a connection closed, how the peer broke the protocol, and how the caller misused the
//! API: three separate types.

use mqtt_proto::{DecodeError, DisconnectProperties, PacketType, Properties, QoS, ReasonCode};

/// The peer broke the protocol. The connection sends DISCONNECT with
/// [`Violation::reason_code`] (5.0), closes, and ignores further input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// The bytes are not a valid packet.
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    /// A packet that may not arrive in this role or state (CONNACK at a server, SUBSCRIBE
    /// before CONNECT, anything but CONNACK first at a client, ...).
    #[error("unexpected {0}")]
    UnexpectedPacket(PacketType),
    /// A second CONNECT ([MQTT-3.1.0-2]).
    #[error("second CONNECT")]
    SecondConnect,
    /// An AUTH the exchange does not allow: after a CONNECT without an Authentication
    /// Method (5.0 [MQTT-4.12.0-6], [MQTT-4.12.0-7]), without an Authentication Method of
    /// its own (section 3.15.2.2.2), or with a reason code its sender does not use at this
    /// point (either side continues with 0x18; once connected, a client re-authenticates
    /// with 0x19 and a server confirms with 0x00).
    #[error("unexpected AUTH")]
    UnexpectedAuth,
    /// More unacknowledged QoS 1/2 messages than our Receive Maximum.
    #[error("receive maximum exceeded")]
    ReceiveMaximumExceeded,
    /// A Topic Alias above the maximum we announced.
    #[error("topic alias {0} above the maximum")]
    TopicAliasTooLarge(u16),
    /// An empty topic with a Topic Alias that has no mapping.
    #[error("topic alias {0} has no mapping")]
    UnknownTopicAlias(u16),
    /// A PUBLISH above the Maximum QoS we announced.
    #[error("QoS {0:?} not supported")]
    QoSNotSupported(QoS),
    /// A retained PUBLISH when we announced Retain Available = 0.
    #[error("retain not supported")]
    RetainNotSupported,
    /// A client PUBLISH carrying a Subscription Identifier ([MQTT-3.3.4-6]).
    #[error("subscription identifier in a client PUBLISH")]
    SubscriptionIdentifierFromClient,
    /// A Session Expiry Interval in DISCONNECT after CONNECT set it to 0.
    #[error("session expiry set in DISCONNECT after 0 in CONNECT")]
    SessionExpiryAfterZero,
    /// PUBREL for a message whose PUBREC was never sent.
    #[error("PUBREL before PUBREC")]
    PubRelBeforePubRec,
    /// SUBACK / UNSUBACK with a different number of codes than filters.
    #[error("{0} has the wrong number of reason codes")]
    ReasonCodeCount(PacketType),
    /// Server: more than `max_packet_size` bytes arrived after a CONNECT while it waited
    /// for the application's answer (a slow authentication): the client floods before it
    /// is let in. Nothing is sent back (CONNACK would have to come first).
    #[error("{0} bytes sent while CONNECT waited for its answer")]
    InputBeforeConnAck(usize),
}

impl Violation {
    /// The 5.0 reason code of the DISCONNECT that reports this violation.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            Violation::Decode(e) => e.reason_code(),
            Violation::ReceiveMaximumExceeded => ReasonCode::ReceiveMaximumExceeded,
            Violation::TopicAliasTooLarge(_) => ReasonCode::TopicAliasInvalid,
            Violation::QoSNotSupported(_) => ReasonCode::QoSNotSupported,
            Violation::InputBeforeConnAck(_) => ReasonCode::QuotaExceeded,
            Violation::RetainNotSupported => ReasonCode::RetainNotSupported,
            Violation::UnexpectedPacket(_)
            | Violation::SecondConnect
            | Violation::UnexpectedAuth
            | Violation::UnknownTopicAlias(_)
            | Violation::SubscriptionIdentifierFromClient
            | Violation::SessionExpiryAfterZero
            | Violation::PubRelBeforePubRec
            | Violation::ReasonCodeCount(_) => ReasonCode::ProtocolError,
        }
    }
}

/// Why a connection closed. Carried by [`Event::Closed`](crate::Event::Closed).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer sent DISCONNECT.
    Disconnected {
        /// Its reason code (Normal disconnection in 3.x).
        reason_code: ReasonCode,
        /// Its properties (5.0).
        properties: Properties<DisconnectProperties>,
    },
    /// We closed: [`Connection::disconnect`](crate::Connection::disconnect) or
    /// [`Connection::reject`](crate::Connection::reject).
    Local(ReasonCode),
    /// The server refused our CONNECT (client role).
    Refused(ReasonCode),
    /// The peer broke the protocol.
    Violation(Violation),
    /// Server: no packet for 1.5 times the keep-alive; client: no PINGRESP in time.
    KeepAliveTimeout,
    /// No CONNECT (server) or CONNACK (client) in time.
    ConnectTimeout,
    /// The transport closed without a DISCONNECT.
    TransportClosed,
}

/// The caller asked for something the connection cannot do now. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    /// The connection is closed.
    #[error("connection closed")]
    Closed,
    /// The call needs an open connection (after CONNECT / CONNACK) or a role it was not
    /// made for.
    #[error("not allowed in this state or role")]
    WrongState,
    /// Every packet identifier is in use.
    #[error("no free packet identifier")]
    NoPacketId,
    /// The outgoing queue is full; the message is handed back.
    #[error("outgoing queue full")]
    QueueFull(Box<mqtt_proto::Publish>),
    /// The peer does not accept this QoS (5.0 Maximum QoS).
    #[error("QoS above the peer's maximum")]
    QoSNotSupported,
    /// The peer does not accept retained messages (5.0 Retain Available).
    #[error("peer does not support retain")]
    RetainNotSupported,
    /// No incoming message with this packet identifier awaits an acknowledgement.
    #[error("no message awaits this acknowledgement")]
    UnknownPacketId,
    /// A Session Expiry Interval in DISCONNECT that the protocol does not allow here.
    #[error("session expiry interval not allowed in this DISCONNECT")]
    InvalidSessionExpiry,
    /// A reason code not defined for this acknowledgement.
    #[error("reason code {0} is not valid here")]
    InvalidReasonCode(ReasonCode),
    /// A packet cannot be encoded (for example a field longer than the protocol allows).
    #[error("encode: {0}")]
    Encode(#[from] mqtt_proto::EncodeError),
}
