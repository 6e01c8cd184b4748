//! What the connection tells its owner.

use crate::CloseReason;
use mqtt_proto::{
    Auth, ConnAck, Connect, PacketId, Publish, ReasonCode, SubAck, Subscribe, UnsubAck, Unsubscribe,
};

/// An event, from [`Connection::poll_event`](crate::Connection::poll_event).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Server: a client asks to connect. Answer with
    /// [`Connection::accept`](crate::Connection::accept) or
    /// [`Connection::reject`](crate::Connection::reject); until then further packets wait.
    ConnectReceived(Box<Connect>),
    /// Client: the server accepted the connection.
    Connected(Box<ConnAck>),
    /// An application message arrived. A QoS 2 message is delivered once, however often
    /// the peer resends it before releasing it. With `manual_acks`, acknowledge it with
    /// [`Connection::ack`](crate::Connection::ack) and its `packet_id`.
    Message(Publish),
    /// One of our QoS 1/2 messages is complete: PUBACK, PUBCOMP, or PUBREC with an error
    /// code. `reason_code` is the peer's (Success in 3.x).
    Delivered {
        /// The message's packet identifier, now free.
        packet_id: PacketId,
        /// The peer's reason code.
        reason_code: ReasonCode,
    },
    /// One of our QoS 2 messages reached the peer (PUBREC) and PUBREL went out: only
    /// PUBCOMP remains, and a resumed session resends the PUBREL, never the PUBLISH
    /// (section 4.3.3). A broker that persists sessions records this step.
    Received {
        /// The message's packet identifier.
        packet_id: PacketId,
    },
    /// The peer released one of its QoS 2 messages (PUBREL) and PUBCOMP went out: a new
    /// PUBLISH with this packet identifier is a new message. A broker that persists
    /// sessions records this step.
    Released {
        /// The packet identifier, now free on the peer's side.
        packet_id: PacketId,
    },
    /// One of our messages was dropped without being delivered.
    Dropped {
        /// The message.
        publish: Box<Publish>,
        /// Why.
        reason: DropReason,
    },
    /// Server: SUBSCRIBE; answer with [`Connection::suback`](crate::Connection::suback).
    Subscribe(Subscribe),
    /// Server: UNSUBSCRIBE; answer with
    /// [`Connection::unsuback`](crate::Connection::unsuback).
    Unsubscribe(Unsubscribe),
    /// Client: SUBACK.
    SubAck(SubAck),
    /// Client: UNSUBACK.
    UnsubAck(UnsubAck),
    /// AUTH (5.0 enhanced authentication).
    Auth(Auth),
    /// The connection is closed: write what [`Connection::poll_transmit`]
    /// (crate::Connection::poll_transmit) still returns, then close the transport. Nothing
    /// happens after this event.
    Closed(CloseReason),
}

/// Why a message of ours was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// Larger than the peer's Maximum Packet Size ([MQTT-3.1.2-25]).
    TooLarge,
    /// The server did not keep our session (Session Present 0), so the client discards
    /// its state (5.0 section 3.2.2.1.1).
    SessionLost,
    /// A resumed session held more queued messages than there are packet identifiers.
    NoPacketId,
    /// Its Message Expiry Interval passed while it waited in the queue ([MQTT-3.3.2-5]).
    Expired,
    /// Above the peer's Maximum QoS, learned after the message was queued (5.0
    /// [MQTT-3.2.2-11]).
    QoSNotSupported,
    /// Retained, and the peer's Retain Available is 0, learned after the message was
    /// queued (5.0 [MQTT-3.2.2-14]).
    RetainNotSupported,
}
