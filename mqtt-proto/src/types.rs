//! Small value types shared by every packet.

use std::fmt;

/// The protocol version of a connection, as carried by CONNECT.
///
/// The encoder and decoder switch on it; there is one packet model for all versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ProtocolVersion {
    /// MQTT 3.1: protocol name `MQIsdp`, level 3.
    V3_1,
    /// MQTT 3.1.1: protocol name `MQTT`, level 4.
    V3_1_1,
    /// MQTT 5.0: protocol name `MQTT`, level 5.
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte of CONNECT.
    pub const fn level(self) -> u8 {
        match self {
            Self::V3_1 => 3,
            Self::V3_1_1 => 4,
            Self::V5 => 5,
        }
    }

    /// The protocol name of CONNECT.
    pub const fn protocol_name(self) -> &'static str {
        match self {
            Self::V3_1 => "MQIsdp",
            Self::V3_1_1 | Self::V5 => "MQTT",
        }
    }

    /// True for MQTT 5.0, the only version with properties, reason codes and AUTH.
    pub const fn is_v5(self) -> bool {
        matches!(self, Self::V5)
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V3_1 => "MQTT 3.1",
            Self::V3_1_1 => "MQTT 3.1.1",
            Self::V5 => "MQTT 5.0",
        })
    }
}

/// Quality of service of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum QoS {
    /// QoS 0: at most once, no acknowledgement.
    #[default]
    AtMostOnce = 0,
    /// QoS 1: at least once, acknowledged by PUBACK.
    AtLeastOnce = 1,
    /// QoS 2: exactly once, PUBREC / PUBREL / PUBCOMP.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for the two-bit value `0..=2`; `None` for 3 and above.
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            2 => Some(Self::ExactlyOnce),
            _ => None,
        }
    }
}

/// Retain Handling subscription option (MQTT 5.0): when retained messages are sent on
/// subscribe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// 1: send retained messages only if the subscription did not exist before.
    SendIfNew = 1,
    /// 2: do not send retained messages at the time of the subscribe.
    DoNotSend = 2,
}

impl RetainHandling {
    /// The option for the value `0..=2`; `None` for 3.
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::SendAtSubscribe),
            1 => Some(Self::SendIfNew),
            2 => Some(Self::DoNotSend),
            _ => None,
        }
    }
}

/// The control packet type, the high nibble of the first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PacketType {
    /// 1: client asks to connect.
    Connect = 1,
    /// 2: connect acknowledgement.
    ConnAck = 2,
    /// 3: application message.
    Publish = 3,
    /// 4: QoS 1 acknowledgement.
    PubAck = 4,
    /// 5: QoS 2 part 1.
    PubRec = 5,
    /// 6: QoS 2 part 2.
    PubRel = 6,
    /// 7: QoS 2 part 3.
    PubComp = 7,
    /// 8: subscribe request.
    Subscribe = 8,
    /// 9: subscribe acknowledgement.
    SubAck = 9,
    /// 10: unsubscribe request.
    Unsubscribe = 10,
    /// 11: unsubscribe acknowledgement.
    UnsubAck = 11,
    /// 12: ping request.
    PingReq = 12,
    /// 13: ping response.
    PingResp = 13,
    /// 14: disconnect notification.
    Disconnect = 14,
    /// 15: authentication exchange (MQTT 5.0 only).
    Auth = 15,
}

impl PacketType {
    /// The packet type for a high nibble; `None` for the reserved value 0 and above 15.
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Connect,
            2 => Self::ConnAck,
            3 => Self::Publish,
            4 => Self::PubAck,
            5 => Self::PubRec,
            6 => Self::PubRel,
            7 => Self::PubComp,
            8 => Self::Subscribe,
            9 => Self::SubAck,
            10 => Self::Unsubscribe,
            11 => Self::UnsubAck,
            12 => Self::PingReq,
            13 => Self::PingResp,
            14 => Self::Disconnect,
            15 => Self::Auth,
            _ => return None,
        })
    }

    /// The fixed-header flags every packet but PUBLISH must carry ([MQTT-2.2.2-1]).
    pub(crate) const fn required_flags(self) -> u8 {
        match self {
            Self::PubRel | Self::Subscribe | Self::Unsubscribe => 0b0010,
            _ => 0,
        }
    }
}

impl fmt::Display for PacketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "CONNECT",
            Self::ConnAck => "CONNACK",
            Self::Publish => "PUBLISH",
            Self::PubAck => "PUBACK",
            Self::PubRec => "PUBREC",
            Self::PubRel => "PUBREL",
            Self::PubComp => "PUBCOMP",
            Self::Subscribe => "SUBSCRIBE",
            Self::SubAck => "SUBACK",
            Self::Unsubscribe => "UNSUBSCRIBE",
            Self::UnsubAck => "UNSUBACK",
            Self::PingReq => "PINGREQ",
            Self::PingResp => "PINGRESP",
            Self::Disconnect => "DISCONNECT",
            Self::Auth => "AUTH",
        })
    }
}
