//! The packet model: one set of types for MQTT 3.1, 3.1.1 and 5.0.
//!
//! Fields that exist only in 5.0 (properties, most reason codes) are ignored when a packet
//! is encoded for 3.x and take their defaults when a 3.x packet is decoded.

use crate::properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    Properties, PublishProperties, SubscribeProperties, UnsubscribeProperties, WillProperties,
};
use crate::{MqttString, PacketType, ProtocolVersion, QoS, ReasonCode, RetainHandling};
use crate::{TopicFilter, TopicName};
use bytes::Bytes;
use std::num::NonZeroU16;

/// A packet identifier: never 0 ([MQTT-2.2.1-3]).
pub type PacketId = NonZeroU16;

/// An MQTT control packet.
///
/// This enum is exhaustive on purpose: the set of control packets is fixed by the
/// specification, and a state machine should match all of them. CONNECT and CONNACK, large
/// and once per connection, are boxed, and the other packets keep their 5.0 properties out
/// of line ([`Properties`]), so that the enum stays the size of a PUBLISH (80 bytes) and a
/// decoded packet is cheap to move and to drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT (client to server).
    Connect(Box<Connect>),
    /// CONNACK (server to client).
    ConnAck(Box<ConnAck>),
    /// PUBLISH (both ways).
    Publish(Publish),
    /// PUBACK (both ways).
    PubAck(PubResponse),
    /// PUBREC (both ways).
    PubRec(PubResponse),
    /// PUBREL (both ways).
    PubRel(PubResponse),
    /// PUBCOMP (both ways).
    PubComp(PubResponse),
    /// SUBSCRIBE (client to server).
    Subscribe(Subscribe),
    /// SUBACK (server to client).
    SubAck(SubAck),
    /// UNSUBSCRIBE (client to server).
    Unsubscribe(Unsubscribe),
    /// UNSUBACK (server to client).
    UnsubAck(UnsubAck),
    /// PINGREQ (client to server).
    PingReq,
    /// PINGRESP (server to client).
    PingResp,
    /// DISCONNECT (client to server; also server to client in 5.0).
    Disconnect(Disconnect),
    /// AUTH (MQTT 5.0 only, both ways).
    Auth(Auth),
}

impl Packet {
    /// The packet type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }
}

/// CONNECT: the first packet a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol version, from the protocol name and level.
    pub protocol_version: ProtocolVersion,
    /// Clean Session (3.x) / Clean Start (5.0).
    pub clean_start: bool,
    /// Keep Alive in seconds; 0 turns it off.
    pub keep_alive: u16,
    /// Client Identifier; may be empty (the server assigns one, or refuses).
    pub client_id: MqttString,
    /// The Will Message, if the Will Flag is set.
    pub will: Option<Box<Will>>,
    /// User Name.
    pub username: Option<MqttString>,
    /// Password (binary data).
    pub password: Option<Bytes>,
    /// CONNECT properties (5.0); stored apart only when one is set.
    pub properties: Properties<ConnectProperties>,
}

impl Connect {
    /// A CONNECT with the given version and client id, clean start, keep alive 60 s.
    pub fn new(protocol_version: ProtocolVersion, client_id: MqttString) -> Self {
        Self {
            protocol_version,
            clean_start: true,
            keep_alive: 60,
            client_id,
            will: None,
            username: None,
            password: None,
            properties: Properties::new(),
        }
    }
}

/// The Will Message of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Will Topic.
    pub topic: TopicName,
    /// Will Payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will Retain.
    pub retain: bool,
    /// Will Properties (5.0); stored apart only when one is set.
    pub properties: Properties<WillProperties>,
}

impl Will {
    /// A copy whose strings and bytes are buffers of their own, not views of the CONNECT
    /// it was decoded from: a will kept until it is published would otherwise keep the
    /// whole CONNECT, its password included (see [`MqttString::compact`]).
    pub fn compact(&self) -> Self {
        let mut w = self.clone();
        w.topic = self.topic.compact();
        w.payload = Bytes::copy_from_slice(&self.payload);
        if let Some(p) = w.properties.get_mut() {
            p.content_type = p.content_type.as_ref().map(MqttString::compact);
            p.response_topic = p.response_topic.as_ref().map(TopicName::compact);
            p.correlation_data = p.correlation_data.as_deref().map(Bytes::copy_from_slice);
            for (k, v) in &mut p.user_properties {
                (*k, *v) = (k.compact(), v.compact());
            }
        }
        w
    }
}

/// CONNACK: the server's answer to CONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAck {
    /// Session Present (3.1.1 and 5.0).
    pub session_present: bool,
    /// 5.0 reason code; in 3.x, the return code mapped by
    /// [`ReasonCode::v3_connack_code`].
    pub reason_code: ReasonCode,
    /// CONNACK properties (5.0).
    pub properties: ConnAckProperties,
}

/// PUBLISH: an application message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP: this may be a re-delivery. Never set with QoS 0.
    pub dup: bool,
    /// QoS.
    pub qos: QoS,
    /// RETAIN.
    pub retain: bool,
    /// Topic Name; empty only in a 5.0 PUBLISH that carries a Topic Alias.
    pub topic: TopicName,
    /// Packet Identifier: present exactly when QoS > 0.
    pub packet_id: Option<PacketId>,
    /// PUBLISH properties (5.0), stored only when there are some.
    pub properties: Properties<PublishProperties>,
    /// Payload, a slice of the read buffer when decoded.
    pub payload: Bytes,
}

impl Publish {
    /// A QoS 0 PUBLISH without properties.
    pub fn new(topic: TopicName, payload: impl Into<Bytes>) -> Self {
        Self {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic,
            packet_id: None,
            properties: Properties::new(),
            payload: payload.into(),
        }
    }
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP: the QoS 1 and QoS 2 acknowledgements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubResponse {
    /// Packet Identifier of the PUBLISH.
    pub packet_id: PacketId,
    /// Reason code (5.0); Success in 3.x.
    pub reason_code: ReasonCode,
    /// Properties (5.0).
    pub properties: Properties<AckProperties>,
}

impl PubResponse {
    /// A successful response.
    pub fn new(packet_id: PacketId) -> Self {
        Self {
            packet_id,
            reason_code: ReasonCode::Success,
            properties: Properties::new(),
        }
    }
}

/// Subscription options of one topic filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS.
    pub qos: QoS,
    /// No Local (5.0): do not send this client's own messages back.
    pub no_local: bool,
    /// Retain As Published (5.0): keep the RETAIN flag when forwarding.
    pub retain_as_published: bool,
    /// Retain Handling (5.0).
    pub retain_handling: RetainHandling,
}

/// One topic filter of a SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Topic Filter.
    pub filter: TopicFilter,
    /// Options.
    pub options: SubscriptionOptions,
}

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet Identifier.
    pub packet_id: PacketId,
    /// Properties (5.0).
    pub properties: Properties<SubscribeProperties>,
    /// At least one subscription.
    pub subscriptions: Vec<Subscription>,
}

/// SUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet Identifier of the SUBSCRIBE.
    pub packet_id: PacketId,
    /// Properties (5.0).
    pub properties: Properties<AckProperties>,
    /// One code per subscription, in order: granted QoS or a failure. In 3.x every
    /// failure is sent as 0x80.
    pub reason_codes: Vec<ReasonCode>,
}

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet Identifier.
    pub packet_id: PacketId,
    /// Properties (5.0).
    pub properties: Properties<UnsubscribeProperties>,
    /// At least one topic filter.
    pub filters: Vec<TopicFilter>,
}

/// UNSUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet Identifier of the UNSUBSCRIBE.
    pub packet_id: PacketId,
    /// Properties (5.0).
    pub properties: Properties<AckProperties>,
    /// One code per topic filter (5.0); empty in 3.x, which has no payload.
    pub reason_codes: Vec<ReasonCode>,
}

/// DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// Reason code (5.0); Normal disconnection in 3.x.
    pub reason_code: ReasonCode,
    /// Properties (5.0).
    pub properties: Properties<DisconnectProperties>,
}

/// AUTH (MQTT 5.0 only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// Reason code: Success, Continue authentication or Re-authenticate.
    pub reason_code: ReasonCode,
    /// Properties.
    pub properties: Properties<AuthProperties>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    /// Decoded packets are moved by value through the decoder and the caller: a PUBLISH
    /// stays small (its properties are out of line) and no other variant is larger.
    #[test]
    fn packet_is_the_size_of_a_publish() {
        assert!(size_of::<Publish>() <= 80, "{}", size_of::<Publish>());
        assert_eq!(size_of::<Packet>(), size_of::<Publish>());
    }
}
