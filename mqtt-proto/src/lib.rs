//! MQTT 3.1, 3.1.1 and 5.0 control packets: a streaming, zero-copy, strict encoder and
//! decoder with no IO and no state beyond the protocol version.
//!
//! - **One model.** [`Packet`] covers all 15 control packets (the 14 of 3.1.1 plus AUTH)
//!   for every version; the [`Decoder`] and [`Packet::encode`] switch on
//!   [`ProtocolVersion`]. 5.0 properties are typed per packet ([`PublishProperties`],
//!   ...), with every property identifier of the specification; the packets carried by
//!   value in [`Packet`] keep them out of line in [`Properties`], allocated only when a
//!   property is set, so that a packet is 80 bytes.
//! - **Streaming.** [`Decoder::decode`] takes whatever bytes have arrived and returns the
//!   next packet or `Ok(None)` ("need more bytes") without consuming anything. A packet
//!   over the maximum size is refused as soon as its fixed header is read.
//! - **Zero-copy.** Topics, strings and payloads of decoded packets are [`bytes::Bytes`]
//!   slices of the read buffer; decoding a PUBLISH allocates nothing.
//! - **Strict.** Every format rule of the specifications is checked, and each
//!   [`DecodeError`] knows the 5.0 [`ReasonCode`] to send back.
//!
//! ```
//! use bytes::BytesMut;
//! use mqtt_proto::{Decoder, Packet, ProtocolVersion, Publish, TopicName, MAX_PACKET_SIZE};
//!
//! let publish = Packet::Publish(Publish::new(TopicName::new("a/b").unwrap(), "hello"));
//! let mut wire = BytesMut::new();
//! publish.encode(&mut wire, ProtocolVersion::V5, MAX_PACKET_SIZE).unwrap();
//!
//! let mut decoder = Decoder::client(ProtocolVersion::V5);
//! let mut input = BytesMut::from(&wire[..3]); // a partial packet
//! assert_eq!(decoder.decode(&mut input), Ok(None));
//! input.extend_from_slice(&wire[3..]);
//! assert_eq!(decoder.decode(&mut input), Ok(Some(publish)));
//! assert!(input.is_empty());
//! ```
//!
//! Dependencies: `bytes` for shared buffers, `bytestring` for a UTF-8 string that shares a
//! `Bytes` buffer (so decoded strings need neither a copy nor `unsafe` here), and
//! `thiserror` for the error enums, `memchr` to find wildcards in topic filters with SIMD.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod codec;
mod error;
mod packet;
mod properties;
mod reason;
mod string;
mod topic;
mod types;
mod wire;

pub use codec::{Decoder, MAX_PACKET_SIZE};
pub use error::{DecodeError, EncodeError};
pub use packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, PacketId, PubResponse, Publish, SubAck, Subscribe,
    Subscription, SubscriptionOptions, UnsubAck, Unsubscribe, Will,
};
pub use properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    Properties, PropertyId, PublishProperties, SubscribeProperties, UnsubscribeProperties,
    WillProperties,
};
pub use reason::ReasonCode;
pub use string::{MqttString, StringError};
pub use topic::{matches, TopicError, TopicFilter, TopicName};
pub use types::{PacketType, ProtocolVersion, QoS, RetainHandling};
pub use wire::MAX_VAR_INT;
