//! Errors, split by cause: the peer sent bytes that break the specification
//! ([`DecodeError`]) or the caller asked to encode something that cannot be sent
//! ([`EncodeError`]).

use crate::properties::PropertyId;
use crate::topic::TopicError;
use crate::{PacketType, ProtocolVersion, ReasonCode, StringError};

/// The input is not a valid MQTT packet. Every variant knows the MQTT 5.0 reason code a
/// server (or client) sends in its DISCONNECT before closing ([`DecodeError::reason_code`]).
///
/// Incomplete input is never an error: the decoder answers `Ok(None)` instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The packet type is 0, or 15 (AUTH) before MQTT 5.0.
    #[error("packet type {0} is reserved in this protocol version")]
    ReservedPacketType(u8),
    /// Fixed-header flags other than those the packet type requires ([MQTT-2.1.3-1],
    /// 3.1.1 [MQTT-2.2.2-1]).
    #[error("invalid fixed header flags {flags:#06b} on {packet}")]
    InvalidFlags {
        /// The packet type.
        packet: PacketType,
        /// The low nibble received.
        flags: u8,
    },
    /// A Variable Byte Integer longer than four bytes.
    #[error("variable byte integer is longer than 4 bytes")]
    VarIntTooLong,
    /// A Variable Byte Integer not in its shortest form ([MQTT-1.5.5-1]).
    #[error("variable byte integer is not in its shortest form")]
    VarIntNotMinimal,
    /// The whole packet is larger than the maximum packet size.
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    PacketTooLarge {
        /// Size of the whole packet in bytes.
        size: usize,
        /// The limit.
        max: u32,
    },
    /// A field runs past the end of the packet.
    #[error("{0} ends in the middle of a field")]
    Truncated(PacketType),
    /// Bytes are left after the last field.
    #[error("{0} has bytes after its last field")]
    TrailingBytes(PacketType),
    /// A QoS field holds 3 ([MQTT-3.3.1-4], [MQTT-3.1.2-12], 3.1.1 [MQTT-3.1.2-14]).
    #[error("QoS 3 is reserved")]
    InvalidQoS,
    /// DUP set on a QoS 0 PUBLISH ([MQTT-3.3.1-2]).
    #[error("DUP flag set on a QoS 0 PUBLISH")]
    DupOnQoS0,
    /// Packet identifier 0 where a non-zero one is required ([MQTT-2.2.1-3],
    /// 3.1.1 [MQTT-2.3.1-1]).
    #[error("packet identifier 0")]
    ZeroPacketId,
    /// A string is not a valid UTF-8 Encoded String.
    #[error("invalid string: {0}")]
    InvalidString(StringError),
    /// A PUBLISH or Will topic name is invalid.
    #[error("invalid topic name: {0}")]
    InvalidTopicName(TopicError),
    /// A SUBSCRIBE or UNSUBSCRIBE topic filter is invalid.
    #[error("invalid topic filter: {0}")]
    InvalidTopicFilter(TopicError),
    /// SUBSCRIBE or UNSUBSCRIBE with no topic filter ([MQTT-3.8.3-2], [MQTT-3.10.3-2],
    /// 3.1.1 [MQTT-3.8.3-3]).
    #[error("{0} has no topic filters")]
    NoTopicFilters(PacketType),
    /// SUBACK or UNSUBACK (5.0) with no reason codes.
    #[error("{0} has no reason codes")]
    NoReasonCodes(PacketType),
    /// Reserved bits set in subscription options ([MQTT-3.8.3-5], 3.1.1 [MQTT-3.8.3-4]).
    #[error("reserved bits set in subscription options")]
    SubscriptionOptionsReserved,
    /// Retain Handling 3 in subscription options.
    #[error("retain handling 3 is reserved")]
    InvalidRetainHandling,
    /// No Local set on a shared subscription ([MQTT-3.8.3-4]).
    #[error("no local set on a shared subscription")]
    NoLocalOnSharedSubscription,
    /// A property identifier the specification does not define.
    #[error("unknown property identifier {0:#x}")]
    UnknownProperty(u32),
    /// A property not allowed on this packet.
    #[error("property {property:?} is not allowed on {packet}")]
    PropertyNotAllowed {
        /// The property.
        property: PropertyId,
        /// Where it appeared.
        packet: PacketType,
    },
    /// A property that may appear once appears again.
    #[error("property {0:?} appears more than once")]
    DuplicateProperty(PropertyId),
    /// A property value out of its range (for example Receive Maximum 0).
    #[error("invalid value for property {0:?}")]
    InvalidPropertyValue(PropertyId),
    /// Topic Alias 0 ([MQTT-3.3.2-8]).
    #[error("topic alias 0")]
    TopicAliasZero,
    /// A v5 PUBLISH with an empty topic name and no Topic Alias.
    #[error("empty topic name without a topic alias")]
    EmptyTopicWithoutAlias,
    /// Authentication Data without Authentication Method.
    #[error("authentication data without an authentication method")]
    AuthDataWithoutMethod,
    /// A reason code not defined for this packet.
    #[error("reason code {code:#04x} is not valid on {packet}")]
    InvalidReasonCode {
        /// The packet type.
        packet: PacketType,
        /// The value received.
        code: u8,
    },
    /// CONNECT protocol name is neither `MQTT` nor `MQIsdp` ([MQTT-3.1.2-1]).
    #[error("unknown protocol name")]
    InvalidProtocolName,
    /// CONNECT protocol level is not one this codec speaks ([MQTT-3.1.2-2]). A server
    /// answers with CONNACK 0x84 (0x01 in 3.1.1) and closes.
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolVersion(u8),
    /// CONNECT reserved flag set ([MQTT-3.1.2-3]).
    #[error("CONNECT reserved flag is set")]
    ConnectReservedFlag,
    /// Will QoS or Will Retain set without the Will Flag ([MQTT-3.1.2-11],
    /// [MQTT-3.1.2-13], 3.1.1 [MQTT-3.1.2-13], [MQTT-3.1.2-15]).
    #[error("will QoS or will retain set without the will flag")]
    WillFlagsWithoutWill,
    /// Password flag without User Name flag, in MQTT 3.1 and 3.1.1
    /// (3.1.1 [MQTT-3.1.2-22]).
    #[error("password without user name")]
    PasswordWithoutUsername,
    /// The Client Identifier is not acceptable: empty with Clean Session 0 in 3.1.1
    /// (3.1.1 [MQTT-3.1.3-8]), or empty or longer than 23 bytes in 3.1. A server answers with
    /// CONNACK 0x85 (0x02 in 3.x) and closes.
    #[error("client identifier not valid")]
    InvalidClientId,
    /// CONNACK acknowledge flags with reserved bits set ([MQTT-3.2.2-1]).
    #[error("CONNACK reserved flags are set")]
    ConnAckReservedFlags,
    /// CONNACK with Session Present and a refusal ([MQTT-3.2.2-6], 3.1.1 [MQTT-3.2.2-4]).
    #[error("CONNACK with session present and a non-zero reason code")]
    SessionPresentOnRefusal,
    /// A packet other than CONNECT before the protocol version is known.
    #[error("{0} before CONNECT: protocol version unknown")]
    VersionUnknown(PacketType),
}

impl DecodeError {
    /// The MQTT 5.0 reason code that tells the peer what went wrong.
    ///
    /// Format errors are Malformed Packet (0x81); rules about values and repetition that
    /// the specification calls a Protocol Error are 0x82; a few have their own code.
    pub fn reason_code(&self) -> ReasonCode {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            InvalidTopicName(_) => ReasonCode::TopicNameInvalid,
            InvalidTopicFilter(_) => ReasonCode::TopicFilterInvalid,
            TopicAliasZero => ReasonCode::TopicAliasInvalid,
            UnsupportedProtocolVersion(_) | InvalidProtocolName => {
                ReasonCode::UnsupportedProtocolVersion
            }
            InvalidClientId => ReasonCode::ClientIdentifierNotValid,
            DuplicateProperty(_)
            | InvalidPropertyValue(_)
            | InvalidRetainHandling
            | NoLocalOnSharedSubscription
            | EmptyTopicWithoutAlias
            | AuthDataWithoutMethod
            // [MQTT-3.8.3-2], [MQTT-3.10.3-2]: "a SUBSCRIBE (UNSUBSCRIBE) packet with no
            // Payload is a Protocol Error".
            | NoTopicFilters(_)
            | SessionPresentOnRefusal
            | VersionUnknown(_) => ReasonCode::ProtocolError,
            ReservedPacketType(_)
            | InvalidFlags { .. }
            | VarIntTooLong
            | VarIntNotMinimal
            | Truncated(_)
            | TrailingBytes(_)
            | InvalidQoS
            | DupOnQoS0
            | ZeroPacketId
            | InvalidString(_)
            | NoReasonCodes(_)
            | SubscriptionOptionsReserved
            | UnknownProperty(_)
            | PropertyNotAllowed { .. }
            | InvalidReasonCode { .. }
            | ConnectReservedFlag
            | WillFlagsWithoutWill
            | PasswordWithoutUsername
            | ConnAckReservedFlags => ReasonCode::MalformedPacket,
        }
    }

    /// For errors in a CONNECT that the specification answers with a CONNACK refusal
    /// rather than a bare close: the reason code of that CONNACK. The CONNACK goes out in
    /// the client's protocol version if known, else in 3.1.1 form.
    pub fn connack_refusal(&self) -> Option<ReasonCode> {
        match self {
            Self::UnsupportedProtocolVersion(_) => Some(ReasonCode::UnsupportedProtocolVersion),
            Self::InvalidClientId => Some(ReasonCode::ClientIdentifierNotValid),
            _ => None,
        }
    }
}

/// A packet cannot be encoded as asked. Nothing is written when encoding fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded packet would exceed the maximum packet size.
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    PacketTooLarge {
        /// Size of the whole packet in bytes.
        size: usize,
        /// The limit.
        max: u32,
    },
    /// The packet does not exist in this protocol version (AUTH before 5.0).
    #[error("{packet} does not exist in {version}")]
    NotInVersion {
        /// The packet type.
        packet: PacketType,
        /// The version asked for.
        version: ProtocolVersion,
    },
    /// QoS 1/2 PUBLISH without a packet identifier or QoS 0 with one.
    #[error("packet identifier must be present exactly when QoS > 0")]
    PacketIdMismatch,
    /// DUP on a QoS 0 PUBLISH ([MQTT-3.3.1-2]).
    #[error("DUP flag set on a QoS 0 PUBLISH")]
    DupOnQoS0,
    /// Empty topic name where a Topic Alias does not stand in for it.
    #[error("empty topic name without a topic alias")]
    EmptyTopic,
    /// SUBSCRIBE / UNSUBSCRIBE without filters, or SUBACK without reason codes.
    #[error("{0} must carry at least one entry")]
    Empty(PacketType),
    /// Binary data longer than 65,535 bytes.
    #[error("binary field longer than 65535 bytes")]
    FieldTooLong,
    /// A reason code not allowed on this packet.
    #[error("reason code {code} is not valid on {packet}")]
    InvalidReasonCode {
        /// The packet type.
        packet: PacketType,
        /// The code.
        code: ReasonCode,
    },
    /// A property value outside its allowed range (for example Maximum QoS 2).
    #[error("invalid value for property {0:?}")]
    InvalidPropertyValue(PropertyId),
    /// A password without a user name cannot be sent in MQTT 3.1 or 3.1.1.
    #[error("password without user name before MQTT 5.0")]
    PasswordWithoutUsername,
    /// A client identifier the version does not allow: empty with Clean Session 0 in
    /// 3.1.1, empty or longer than 23 bytes in 3.1.
    #[error("client identifier not valid in this version")]
    InvalidClientId,
    /// Authentication Data without Authentication Method.
    #[error("authentication data without an authentication method")]
    AuthDataWithoutMethod,
    /// CONNACK with Session Present and a refusal ([MQTT-3.2.2-6]).
    #[error("session present with a refusal")]
    SessionPresentOnRefusal,
    /// No Local on a shared subscription ([MQTT-3.8.3-4]).
    #[error("no local on a shared subscription")]
    NoLocalOnSharedSubscription,
}
