//! MQTT 5.0 properties (section 2.2.2): every property identifier of the specification,
//! one typed set per packet.
//!
//! Each packet's set has exactly the properties the specification allows on it; a property
//! outside the set is a Malformed Packet, a second copy of a single-valued property is a
//! Protocol Error, and User Properties keep their order and may repeat. Values that cannot
//! be zero are `NonZero*` types, so an invalid value cannot be built.

use crate::wire::{put_binary, put_var_int, var_int_len, Put, Reader};
use crate::{DecodeError, EncodeError, MqttString, PacketType, QoS, TopicName};
use bytes::{Bytes, BytesMut};
use std::fmt;
use std::num::{NonZeroU16, NonZeroU32};
use std::ops::{Deref, DerefMut};

/// A property identifier (MQTT 5.0 table 2-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u8)]
pub enum PropertyId {
    /// 0x01 Payload Format Indicator (byte).
    PayloadFormatIndicator = 0x01,
    /// 0x02 Message Expiry Interval (four-byte integer).
    MessageExpiryInterval = 0x02,
    /// 0x03 Content Type (string).
    ContentType = 0x03,
    /// 0x08 Response Topic (string).
    ResponseTopic = 0x08,
    /// 0x09 Correlation Data (binary).
    CorrelationData = 0x09,
    /// 0x0B Subscription Identifier (variable byte integer).
    SubscriptionIdentifier = 0x0B,
    /// 0x11 Session Expiry Interval (four-byte integer).
    SessionExpiryInterval = 0x11,
    /// 0x12 Assigned Client Identifier (string).
    AssignedClientIdentifier = 0x12,
    /// 0x13 Server Keep Alive (two-byte integer).
    ServerKeepAlive = 0x13,
    /// 0x15 Authentication Method (string).
    AuthenticationMethod = 0x15,
    /// 0x16 Authentication Data (binary).
    AuthenticationData = 0x16,
    /// 0x17 Request Problem Information (byte).
    RequestProblemInformation = 0x17,
    /// 0x18 Will Delay Interval (four-byte integer).
    WillDelayInterval = 0x18,
    /// 0x19 Request Response Information (byte).
    RequestResponseInformation = 0x19,
    /// 0x1A Response Information (string).
    ResponseInformation = 0x1A,
    /// 0x1C Server Reference (string).
    ServerReference = 0x1C,
    /// 0x1F Reason String (string).
    ReasonString = 0x1F,
    /// 0x21 Receive Maximum (two-byte integer).
    ReceiveMaximum = 0x21,
    /// 0x22 Topic Alias Maximum (two-byte integer).
    TopicAliasMaximum = 0x22,
    /// 0x23 Topic Alias (two-byte integer).
    TopicAlias = 0x23,
    /// 0x24 Maximum QoS (byte).
    MaximumQoS = 0x24,
    /// 0x25 Retain Available (byte).
    RetainAvailable = 0x25,
    /// 0x26 User Property (string pair).
    UserProperty = 0x26,
    /// 0x27 Maximum Packet Size (four-byte integer).
    MaximumPacketSize = 0x27,
    /// 0x28 Wildcard Subscription Available (byte).
    WildcardSubscriptionAvailable = 0x28,
    /// 0x29 Subscription Identifier Available (byte).
    SubscriptionIdentifierAvailable = 0x29,
    /// 0x2A Shared Subscription Available (byte).
    SharedSubscriptionAvailable = 0x2A,
}

/// How a property value is laid out on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    Byte,
    Two,
    Four,
    Var,
    Str,
    Bin,
    Pair,
}

impl PropertyId {
    /// The property for an identifier, if the specification defines it.
    pub fn from_u32(v: u32) -> Option<Self> {
        use PropertyId::*;
        Some(match v {
            0x01 => PayloadFormatIndicator,
            0x02 => MessageExpiryInterval,
            0x03 => ContentType,
            0x08 => ResponseTopic,
            0x09 => CorrelationData,
            0x0B => SubscriptionIdentifier,
            0x11 => SessionExpiryInterval,
            0x12 => AssignedClientIdentifier,
            0x13 => ServerKeepAlive,
            0x15 => AuthenticationMethod,
            0x16 => AuthenticationData,
            0x17 => RequestProblemInformation,
            0x18 => WillDelayInterval,
            0x19 => RequestResponseInformation,
            0x1A => ResponseInformation,
            0x1C => ServerReference,
            0x1F => ReasonString,
            0x21 => ReceiveMaximum,
            0x22 => TopicAliasMaximum,
            0x23 => TopicAlias,
            0x24 => MaximumQoS,
            0x25 => RetainAvailable,
            0x26 => UserProperty,
            0x27 => MaximumPacketSize,
            0x28 => WildcardSubscriptionAvailable,
            0x29 => SubscriptionIdentifierAvailable,
            0x2A => SharedSubscriptionAvailable,
            _ => return None,
        })
    }

    pub(crate) fn wire(self) -> Wire {
        use PropertyId::*;
        match self {
            PayloadFormatIndicator
            | RequestProblemInformation
            | RequestResponseInformation
            | MaximumQoS
            | RetainAvailable
            | WildcardSubscriptionAvailable
            | SubscriptionIdentifierAvailable
            | SharedSubscriptionAvailable => Wire::Byte,
            ServerKeepAlive | ReceiveMaximum | TopicAliasMaximum | TopicAlias => Wire::Two,
            MessageExpiryInterval
            | SessionExpiryInterval
            | WillDelayInterval
            | MaximumPacketSize => Wire::Four,
            SubscriptionIdentifier => Wire::Var,
            ContentType
            | ResponseTopic
            | AssignedClientIdentifier
            | AuthenticationMethod
            | ResponseInformation
            | ServerReference
            | ReasonString => Wire::Str,
            CorrelationData | AuthenticationData => Wire::Bin,
            UserProperty => Wire::Pair,
        }
    }
}

/// A property value as read off the wire, before it is checked against its field's type.
pub(crate) enum Value {
    Int(u32),
    Str(MqttString),
    Bin(Bytes),
    Pair(MqttString, MqttString),
}

fn read_value(wire: Wire, r: &mut Reader) -> Result<Value, DecodeError> {
    Ok(match wire {
        Wire::Byte => Value::Int(r.u8()?.into()),
        Wire::Two => Value::Int(r.u16()?.into()),
        Wire::Four => Value::Int(r.u32()?),
        Wire::Var => Value::Int(r.var_int()?),
        Wire::Str => Value::Str(r.string()?),
        Wire::Bin => Value::Bin(r.binary()?),
        Wire::Pair => Value::Pair(r.string()?, r.string()?),
    })
}

/// A Rust type a property value converts to and from.
pub(crate) trait PropType: Sized {
    /// `None` if the value is out of range for the property.
    fn from_value(v: Value) -> Option<Self>;
    /// Bytes of the value on the wire, without the identifier.
    fn value_len(&self, wire: Wire) -> usize;
    fn put(&self, wire: Wire, buf: &mut BytesMut);
    /// Whether the value can be encoded.
    fn valid(&self, _wire: Wire) -> bool {
        true
    }
}

fn int_len(wire: Wire, v: u32) -> usize {
    match wire {
        Wire::Byte => 1,
        Wire::Two => 2,
        Wire::Var => var_int_len(v as usize),
        _ => 4,
    }
}

fn put_int(wire: Wire, v: u32, buf: &mut BytesMut) {
    match wire {
        Wire::Byte => buf.put_u8(v as u8),
        Wire::Two => buf.put_u16(v as u16),
        Wire::Var => put_var_int(buf, v as usize),
        _ => buf.put_u32(v),
    }
}

impl PropType for bool {
    fn from_value(v: Value) -> Option<Self> {
        match v {
            Value::Int(0) => Some(false),
            Value::Int(1) => Some(true),
            _ => None,
        }
    }
    fn value_len(&self, _: Wire) -> usize {
        1
    }
    fn put(&self, _: Wire, buf: &mut BytesMut) {
        buf.put_u8(u8::from(*self));
    }
}

impl PropType for u16 {
    fn from_value(v: Value) -> Option<Self> {
        match v {
            Value::Int(n) => u16::try_from(n).ok(),
            _ => None,
        }
    }
    fn value_len(&self, _: Wire) -> usize {
        2
    }
    fn put(&self, _: Wire, buf: &mut BytesMut) {
        buf.put_u16(*self);
    }
}

impl PropType for NonZeroU16 {
    fn from_value(v: Value) -> Option<Self> {
        NonZeroU16::new(u16::from_value(v)?)
    }
    fn value_len(&self, _: Wire) -> usize {
        2
    }
    fn put(&self, _: Wire, buf: &mut BytesMut) {
        buf.put_u16(self.get());
    }
}

impl PropType for u32 {
    fn from_value(v: Value) -> Option<Self> {
        match v {
            Value::Int(n) => Some(n),
            _ => None,
        }
    }
    fn value_len(&self, wire: Wire) -> usize {
        int_len(wire, *self)
    }
    fn put(&self, wire: Wire, buf: &mut BytesMut) {
        put_int(wire, *self, buf);
    }
}

impl PropType for NonZeroU32 {
    fn from_value(v: Value) -> Option<Self> {
        NonZeroU32::new(u32::from_value(v)?)
    }
    fn value_len(&self, wire: Wire) -> usize {
        int_len(wire, self.get())
    }
    fn put(&self, wire: Wire, buf: &mut BytesMut) {
        put_int(wire, self.get(), buf);
    }
    fn valid(&self, wire: Wire) -> bool {
        wire != Wire::Var || self.get() <= crate::wire::MAX_VAR_INT
    }
}

/// Maximum QoS: 0 or 1 only; 2 is expressed by leaving the property out.
impl PropType for QoS {
    fn from_value(v: Value) -> Option<Self> {
        match v {
            Value::Int(0) => Some(QoS::AtMostOnce),
            Value::Int(1) => Some(QoS::AtLeastOnce),
            _ => None,
        }
    }
    fn value_len(&self, _: Wire) -> usize {
        1
    }
    fn put(&self, _: Wire, buf: &mut BytesMut) {
        buf.put_u8(*self as u8);
    }
    fn valid(&self, _: Wire) -> bool {
        *self != QoS::ExactlyOnce
    }
}

impl PropType for MqttString {
    fn from_value(v: Value) -> Option<Self> {
        match v {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    fn value_len(&self, _: Wire) -> usize {
        2 + self.len()
    }
    fn put(&self, _: Wire, buf: &mut BytesMut) {
        put_binary(buf, self.as_bytes());
    }
}

/// Response Topic: a topic name, no wildcards ([MQTT-3.3.2-14]).
impl PropType for TopicName {
    fn from_value(v: Value) -> Option<Self> {
        TopicName::from_string(MqttString::from_value(v)?).ok()
    }
    fn value_len(&self, _: Wire) -> usize {
        2 + self.as_str().len()
    }
    fn put(&self, _: Wire, buf: &mut BytesMut) {
        put_binary(buf, self.as_mqtt_str().as_bytes());
    }
}

impl PropType for Bytes {
    fn from_value(v: Value) -> Option<Self> {
        match v {
            Value::Bin(b) => Some(b),
            _ => None,
        }
    }
    fn value_len(&self, _: Wire) -> usize {
        2 + Bytes::len(self)
    }
    fn put(&self, _: Wire, buf: &mut BytesMut) {
        put_binary(buf, self);
    }
    fn valid(&self, _: Wire) -> bool {
        Bytes::len(self) <= u16::MAX as usize
    }
}

/// User Property: a string pair ([MQTT-1.5.7-1]).
impl PropType for (MqttString, MqttString) {
    fn from_value(v: Value) -> Option<Self> {
        match v {
            Value::Pair(k, v) => Some((k, v)),
            _ => None,
        }
    }
    fn value_len(&self, _: Wire) -> usize {
        4 + self.0.len() + self.1.len()
    }
    fn put(&self, _: Wire, buf: &mut BytesMut) {
        put_binary(buf, self.0.as_bytes());
        put_binary(buf, self.1.as_bytes());
    }
}

/// Where a property lands in its set: once (`Option`) or repeatable (`Vec`).
pub(crate) trait Slot {
    fn store(&mut self, id: PropertyId, v: Value) -> Result<(), DecodeError>;
    fn wire_len(&self, id: PropertyId) -> usize;
    fn put(&self, id: PropertyId, buf: &mut BytesMut);
    fn check(&self, id: PropertyId) -> Result<(), EncodeError>;
}

impl<T: PropType> Slot for Option<T> {
    fn store(&mut self, id: PropertyId, v: Value) -> Result<(), DecodeError> {
        if self.is_some() {
            return Err(DecodeError::DuplicateProperty(id));
        }
        *self = Some(T::from_value(v).ok_or(DecodeError::InvalidPropertyValue(id))?);
        Ok(())
    }
    fn wire_len(&self, id: PropertyId) -> usize {
        self.as_ref().map_or(0, |v| 1 + v.value_len(id.wire()))
    }
    fn put(&self, id: PropertyId, buf: &mut BytesMut) {
        if let Some(v) = self {
            buf.put_u8(id as u8);
            v.put(id.wire(), buf);
        }
    }
    fn check(&self, id: PropertyId) -> Result<(), EncodeError> {
        match self {
            Some(v) if !v.valid(id.wire()) => Err(EncodeError::InvalidPropertyValue(id)),
            _ => Ok(()),
        }
    }
}

impl<T: PropType> Slot for Vec<T> {
    fn store(&mut self, id: PropertyId, v: Value) -> Result<(), DecodeError> {
        self.push(T::from_value(v).ok_or(DecodeError::InvalidPropertyValue(id))?);
        Ok(())
    }
    fn wire_len(&self, id: PropertyId) -> usize {
        self.iter().map(|v| 1 + v.value_len(id.wire())).sum()
    }
    fn put(&self, id: PropertyId, buf: &mut BytesMut) {
        for v in self {
            buf.put_u8(id as u8);
            v.put(id.wire(), buf);
        }
    }
    fn check(&self, id: PropertyId) -> Result<(), EncodeError> {
        if self.iter().all(|v| v.valid(id.wire())) {
            Ok(())
        } else {
            Err(EncodeError::InvalidPropertyValue(id))
        }
    }
}

/// The empty value of a property slot, usable in a `static`.
pub(crate) trait EmptySlot {
    const EMPTY: Self;
}

impl<T> EmptySlot for Option<T> {
    const EMPTY: Self = None;
}

impl<T> EmptySlot for Vec<T> {
    const EMPTY: Self = Vec::new();
}

/// A property set kept out of line: nothing is allocated until a property is set.
///
/// The packets that travel by value in [`Packet`](crate::Packet) (PUBLISH and the others
/// except CONNECT and CONNACK, which are boxed whole) hold their 5.0 properties this way,
/// so that a packet without properties, the common case and every 3.x packet, stays small
/// and is built, moved and dropped without walking an empty set.
///
/// It dereferences to the set, an empty one when none is stored, so
/// `publish.properties.topic_alias` reads as usual. A mutable access through `DerefMut`
/// (`publish.properties.topic_alias = Some(alias)`) stores an empty set first, which
/// allocates once; [`Properties::get_mut`] changes a stored set and allocates nothing.
/// Two values are equal when their sets are, stored or not.
#[derive(Clone, Default)]
pub struct Properties<T>(Option<Box<T>>);

impl<T> Properties<T> {
    /// No properties.
    pub const fn new() -> Self {
        Self(None)
    }

    /// The stored set, if any. `None` means no property is set; a stored set may still be
    /// empty after it was changed.
    pub fn get(&self) -> Option<&T> {
        self.0.as_deref()
    }

    /// The stored set, to change it without allocating; `None` if there is none (and so
    /// nothing to clear or change).
    pub fn get_mut(&mut self) -> Option<&mut T> {
        self.0.as_deref_mut()
    }

    /// Removes every property.
    pub fn clear(&mut self) {
        self.0 = None;
    }
}

impl<T: Default> Properties<T> {
    /// The set, stored first (an allocation) if there was none.
    pub fn make_mut(&mut self) -> &mut T {
        self.0.get_or_insert_with(Box::default)
    }

    /// The set, moved out.
    pub fn into_inner(self) -> T {
        self.0.map_or_else(T::default, |b| *b)
    }
}

/// The wire side of [`Properties`]: what the codec does with a set that may not be stored.
pub(crate) trait PropertyBlock: Sized {
    /// Reads a Property Length and the properties; no set is built when the length is 0.
    fn read(r: &mut Reader) -> Result<Self, DecodeError>;
    /// Bytes of all properties, without the Property Length.
    fn body_len(&self) -> usize;
    fn check(&self) -> Result<(), EncodeError>;
    /// Property Length and properties.
    fn put(&self, buf: &mut BytesMut);
    /// The properties without their length.
    fn put_body(&self, buf: &mut BytesMut);
}

impl<T: PropertySet> PropertyBlock for Properties<T> {
    #[inline]
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        if r.peek() == Some(0) {
            r.skip(1)?;
            return Ok(Self(None));
        }
        let set = T::read(r)?;
        Ok(Self((set.body_len() != 0).then(|| Box::new(set))))
    }

    #[inline]
    fn body_len(&self) -> usize {
        self.0.as_ref().map_or(0, |s| s.body_len())
    }

    #[inline]
    fn check(&self) -> Result<(), EncodeError> {
        self.0.as_ref().map_or(Ok(()), |s| s.check())
    }

    #[inline]
    fn put(&self, buf: &mut BytesMut) {
        match &self.0 {
            Some(s) => s.put(buf),
            None => buf.put_u8(0),
        }
    }

    #[inline]
    fn put_body(&self, buf: &mut BytesMut) {
        if let Some(s) = &self.0 {
            s.put_body(buf);
        }
    }
}

impl<T> PartialEq for Properties<T>
where
    Self: Deref<Target = T>,
    T: PartialEq,
{
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T> Eq for Properties<T>
where
    Self: Deref<Target = T>,
    T: Eq,
{
}

impl<T> fmt::Debug for Properties<T>
where
    Self: Deref<Target = T>,
    T: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T> DerefMut for Properties<T>
where
    Self: Deref<Target = T>,
    T: Default,
{
    fn deref_mut(&mut self) -> &mut T {
        self.make_mut()
    }
}

/// The property set of one packet.
pub(crate) trait PropertySet: Default + 'static {
    fn apply(&mut self, id: PropertyId, v: Value, packet: PacketType) -> Result<(), DecodeError>;
    /// Bytes of all properties, without the Property Length.
    fn body_len(&self) -> usize;
    fn put_body(&self, buf: &mut BytesMut);
    fn check(&self) -> Result<(), EncodeError>;

    fn put(&self, buf: &mut BytesMut) {
        let n = self.body_len();
        put_var_int(buf, n);
        if n > 0 {
            self.put_body(buf);
        }
    }

    /// `check` and `body_len` in one walk over the fields.
    fn checked_len(&self) -> Result<usize, EncodeError>;

    /// [`PropertySet::read`], with the common Property Length of 0 handled inline.
    #[inline]
    fn read_inline(r: &mut Reader) -> Result<Self, DecodeError> {
        if r.peek() == Some(0) {
            r.skip(1)?;
            return Ok(Self::default());
        }
        Self::read(r)
    }

    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        let len = r.var_int()? as usize;
        let mut block = r.sub(len)?;
        let mut set = Self::default();
        while !block.is_empty() {
            let raw = block.var_int()?;
            let id = PropertyId::from_u32(raw).ok_or(DecodeError::UnknownProperty(raw))?;
            let v = read_value(id.wire(), &mut block)?;
            set.apply(id, v, block.packet)?;
        }
        Ok(set)
    }
}

macro_rules! property_set {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$fmeta:meta])* $field:ident : $slot:ident < $ty:ty > = $id:ident, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $slot<$ty>, )*
            /// User Property (0x26): name and value pairs, in order; may repeat.
            pub user_properties: Vec<(MqttString, MqttString)>,
        }

        impl $name {
            /// True if no property is set.
            pub fn is_empty(&self) -> bool {
                self.body_len() == 0
            }
        }

        impl Deref for Properties<$name> {
            type Target = $name;
            #[inline]
            fn deref(&self) -> &$name {
                static EMPTY: $name = $name {
                    $( $field: EmptySlot::EMPTY, )*
                    user_properties: Vec::new(),
                };
                self.0.as_deref().unwrap_or(&EMPTY)
            }
        }

        impl From<$name> for Properties<$name> {
            /// Stores the set; an empty one is not stored.
            fn from(set: $name) -> Self {
                Self((!set.is_empty()).then(|| Box::new(set)))
            }
        }

        impl PropertySet for $name {
            fn apply(
                &mut self,
                id: PropertyId,
                v: Value,
                packet: PacketType,
            ) -> Result<(), DecodeError> {
                match id {
                    $( PropertyId::$id => Slot::store(&mut self.$field, id, v), )*
                    PropertyId::UserProperty => Slot::store(&mut self.user_properties, id, v),
                    #[allow(unreachable_patterns)]
                    _ => Err(DecodeError::PropertyNotAllowed { property: id, packet }),
                }
            }

            fn body_len(&self) -> usize {
                0 $( + Slot::wire_len(&self.$field, PropertyId::$id) )*
                    + Slot::wire_len(&self.user_properties, PropertyId::UserProperty)
            }

            fn put_body(&self, buf: &mut BytesMut) {
                $( Slot::put(&self.$field, PropertyId::$id, buf); )*
                Slot::put(&self.user_properties, PropertyId::UserProperty, buf);
            }

            fn check(&self) -> Result<(), EncodeError> {
                $( Slot::check(&self.$field, PropertyId::$id)?; )*
                Ok(())
            }

            fn checked_len(&self) -> Result<usize, EncodeError> {
                Ok(0 $( + {
                    Slot::check(&self.$field, PropertyId::$id)?;
                    Slot::wire_len(&self.$field, PropertyId::$id)
                } )* + Slot::wire_len(&self.user_properties, PropertyId::UserProperty))
            }
        }
    };
}

property_set! {
    /// Properties of CONNECT (MQTT 5.0 section 3.1.2.11).
    ConnectProperties {
        /// 0x11 Session Expiry Interval, seconds; absent means 0.
        session_expiry_interval: Option<u32> = SessionExpiryInterval,
        /// 0x21 Receive Maximum; absent means 65,535.
        receive_maximum: Option<NonZeroU16> = ReceiveMaximum,
        /// 0x27 Maximum Packet Size the client accepts.
        maximum_packet_size: Option<NonZeroU32> = MaximumPacketSize,
        /// 0x22 Topic Alias Maximum; absent means 0.
        topic_alias_maximum: Option<u16> = TopicAliasMaximum,
        /// 0x19 Request Response Information.
        request_response_information: Option<bool> = RequestResponseInformation,
        /// 0x17 Request Problem Information; absent means true.
        request_problem_information: Option<bool> = RequestProblemInformation,
        /// 0x15 Authentication Method for extended authentication.
        authentication_method: Option<MqttString> = AuthenticationMethod,
        /// 0x16 Authentication Data.
        authentication_data: Option<Bytes> = AuthenticationData,
    }
}

property_set! {
    /// Will Properties of CONNECT (MQTT 5.0 section 3.1.3.2).
    WillProperties {
        /// 0x18 Will Delay Interval, seconds.
        will_delay_interval: Option<u32> = WillDelayInterval,
        /// 0x01 Payload Format Indicator: true means UTF-8 payload.
        payload_format_indicator: Option<bool> = PayloadFormatIndicator,
        /// 0x02 Message Expiry Interval, seconds.
        message_expiry_interval: Option<u32> = MessageExpiryInterval,
        /// 0x03 Content Type.
        content_type: Option<MqttString> = ContentType,
        /// 0x08 Response Topic.
        response_topic: Option<TopicName> = ResponseTopic,
        /// 0x09 Correlation Data.
        correlation_data: Option<Bytes> = CorrelationData,
    }
}

property_set! {
    /// Properties of CONNACK (MQTT 5.0 section 3.2.2.3).
    ConnAckProperties {
        /// 0x11 Session Expiry Interval the server uses.
        session_expiry_interval: Option<u32> = SessionExpiryInterval,
        /// 0x21 Receive Maximum of the server.
        receive_maximum: Option<NonZeroU16> = ReceiveMaximum,
        /// 0x24 Maximum QoS the server supports (0 or 1; absent means 2).
        maximum_qos: Option<QoS> = MaximumQoS,
        /// 0x25 Retain Available; absent means true.
        retain_available: Option<bool> = RetainAvailable,
        /// 0x27 Maximum Packet Size the server accepts.
        maximum_packet_size: Option<NonZeroU32> = MaximumPacketSize,
        /// 0x12 Assigned Client Identifier.
        assigned_client_identifier: Option<MqttString> = AssignedClientIdentifier,
        /// 0x22 Topic Alias Maximum of the server.
        topic_alias_maximum: Option<u16> = TopicAliasMaximum,
        /// 0x1F Reason String.
        reason_string: Option<MqttString> = ReasonString,
        /// 0x28 Wildcard Subscription Available; absent means true.
        wildcard_subscription_available: Option<bool> = WildcardSubscriptionAvailable,
        /// 0x29 Subscription Identifiers Available; absent means true.
        subscription_identifiers_available: Option<bool> = SubscriptionIdentifierAvailable,
        /// 0x2A Shared Subscription Available; absent means true.
        shared_subscription_available: Option<bool> = SharedSubscriptionAvailable,
        /// 0x13 Server Keep Alive, overriding the client's.
        server_keep_alive: Option<u16> = ServerKeepAlive,
        /// 0x1A Response Information.
        response_information: Option<MqttString> = ResponseInformation,
        /// 0x1C Server Reference.
        server_reference: Option<MqttString> = ServerReference,
        /// 0x15 Authentication Method.
        authentication_method: Option<MqttString> = AuthenticationMethod,
        /// 0x16 Authentication Data.
        authentication_data: Option<Bytes> = AuthenticationData,
    }
}

property_set! {
    /// Properties of PUBLISH (MQTT 5.0 section 3.3.2.3).
    PublishProperties {
        /// 0x01 Payload Format Indicator: true means UTF-8 payload.
        payload_format_indicator: Option<bool> = PayloadFormatIndicator,
        /// 0x02 Message Expiry Interval, seconds.
        message_expiry_interval: Option<u32> = MessageExpiryInterval,
        /// 0x23 Topic Alias (never 0, [MQTT-3.3.2-8]).
        topic_alias: Option<NonZeroU16> = TopicAlias,
        /// 0x08 Response Topic.
        response_topic: Option<TopicName> = ResponseTopic,
        /// 0x09 Correlation Data.
        correlation_data: Option<Bytes> = CorrelationData,
        /// 0x0B Subscription Identifiers (server to client; may repeat).
        subscription_identifiers: Vec<NonZeroU32> = SubscriptionIdentifier,
        /// 0x03 Content Type.
        content_type: Option<MqttString> = ContentType,
    }
}

property_set! {
    /// Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK.
    AckProperties {
        /// 0x1F Reason String.
        reason_string: Option<MqttString> = ReasonString,
    }
}

property_set! {
    /// Properties of SUBSCRIBE (MQTT 5.0 section 3.8.2.1).
    SubscribeProperties {
        /// 0x0B Subscription Identifier (1..=268,435,455).
        subscription_identifier: Option<NonZeroU32> = SubscriptionIdentifier,
    }
}

property_set! {
    /// Properties of UNSUBSCRIBE (MQTT 5.0 section 3.10.2.1): user properties only.
    UnsubscribeProperties {}
}

property_set! {
    /// Properties of DISCONNECT (MQTT 5.0 section 3.14.2.2).
    DisconnectProperties {
        /// 0x11 Session Expiry Interval (client to server only).
        session_expiry_interval: Option<u32> = SessionExpiryInterval,
        /// 0x1F Reason String.
        reason_string: Option<MqttString> = ReasonString,
        /// 0x1C Server Reference.
        server_reference: Option<MqttString> = ServerReference,
    }
}

property_set! {
    /// Properties of AUTH (MQTT 5.0 section 3.15.2.2).
    AuthProperties {
        /// 0x15 Authentication Method.
        authentication_method: Option<MqttString> = AuthenticationMethod,
        /// 0x16 Authentication Data.
        authentication_data: Option<Bytes> = AuthenticationData,
        /// 0x1F Reason String.
        reason_string: Option<MqttString> = ReasonString,
    }
}
