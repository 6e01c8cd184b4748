//! The connection state machine.

use crate::state::{needs_id, Inflight, PacketIds, SessionState};
use crate::timer::{Timer, TimerTable};
use crate::{CloseReason, Config, DropReason, EncodedPublish, Event, UsageError, Violation};
use bytes::{Bytes, BytesMut};
use mqtt_proto::{
    AckProperties, Auth, ConnAck, Connect, DecodeError, Decoder, Disconnect, DisconnectProperties,
    EncodeError, Packet, PacketId, PacketType, ProtocolVersion, PubResponse, Publish, QoS,
    ReasonCode, SubAck, Subscribe, SubscribeProperties, Subscription, TopicFilter, TopicName,
    UnsubAck, Unsubscribe, UnsubscribeProperties, MAX_PACKET_SIZE,
};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Output buffer capacity kept between transmits; a larger buffer is let go once its
/// bytes are handed out.
const KEPT_OUTPUT_CAPACITY: usize = 4096;

/// Which end of the connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sends CONNECT, receives CONNACK.
    Client,
    /// Receives CONNECT, sends CONNACK.
    Server,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Client: not connected yet. Server: waiting for CONNECT.
    Idle,
    /// Client: CONNECT sent, waiting for CONNACK. Server: CONNECT received, waiting for
    /// `accept` or `reject`.
    Connecting,
    Open,
    Closed,
}

/// Whether `sender` may send an AUTH with `reason` in `phase` (5.0 section 4.12): either
/// side continues an exchange (0x18); once connected, a client re-authenticates (0x19) and
/// a server reports a re-authentication's success (0x00) ([MQTT-4.12.1-1]).
fn auth_reason_allowed(sender: Role, reason: ReasonCode, phase: Phase) -> bool {
    match (sender, reason) {
        (_, ReasonCode::ContinueAuthentication) => true,
        (Role::Client, ReasonCode::ReAuthenticate) | (Role::Server, ReasonCode::Success) => {
            phase == Phase::Open
        }
        _ => false,
    }
}

/// What the peer allows us to send (5.0 CONNECT / CONNACK properties).
#[derive(Debug, Clone)]
struct PeerLimits {
    receive_maximum: u16,
    max_packet_size: u32,
    topic_alias_maximum: u16,
    maximum_qos: QoS,
    retain_available: bool,
}

impl Default for PeerLimits {
    fn default() -> Self {
        Self {
            receive_maximum: u16::MAX,
            max_packet_size: MAX_PACKET_SIZE,
            topic_alias_maximum: 0,
            maximum_qos: QoS::ExactlyOnce,
            retain_available: true,
        }
    }
}

/// An incoming QoS 1/2 message waiting for its acknowledgement to leave, in arrival order.
#[derive(Debug, Clone)]
struct PendingAck {
    packet_id: PacketId,
    qos: QoS,
    reason: Option<ReasonCode>,
}

/// What messages at QoS 1 and 2 (and messages queued behind a full inflight window)
/// use: allocated on first use and kept, so that a connection that only subscribes, or
/// only sends at QoS 0, goes without its 184 bytes.
#[derive(Debug, Default)]
struct Delivery {
    state: SessionState,
    ids: PacketIds,
    /// Incoming QoS 1/2 messages whose acknowledgement has not left yet.
    pending_acks: VecDeque<PendingAck>,
    /// Payload bytes of the messages in `state.queue`.
    queued_bytes: usize,
}

/// What a connection without a [`Delivery`] reads.
static NO_DELIVERY: Delivery = Delivery {
    state: SessionState {
        inflight: VecDeque::new(),
        queue: VecDeque::new(),
        incoming_qos2: std::collections::BTreeSet::new(),
        incoming_unacked: Vec::new(),
    },
    ids: PacketIds::new(),
    pending_acks: VecDeque::new(),
    queued_bytes: 0,
};

/// The delivery state to read: the empty one if there is none.
fn dr(d: &Option<Box<Delivery>>) -> &Delivery {
    d.as_deref().unwrap_or(&NO_DELIVERY)
}

/// The delivery state to change, allocated if there is none.
fn dm(d: &mut Option<Box<Delivery>>) -> &mut Delivery {
    d.get_or_insert_with(Box::default)
}

/// A connection's buffers: input not yet decoded, output not yet handed out, events not
/// yet taken. An idle connection has all three empty, and three empty containers are 96
/// bytes: boxed, they cost an idle connection a pointer.
#[derive(Debug, Default)]
struct Io {
    read_buf: BytesMut,
    out: BytesMut,
    events: VecDeque<Event>,
}

impl Io {
    fn holds_nothing(&self) -> bool {
        self.read_buf.capacity() == 0 && self.out.capacity() == 0 && self.events.capacity() == 0
    }
}

/// The buffers to read: empty ones if there are none.
fn io_ref(b: &Option<Box<Io>>) -> &Io {
    static NONE: std::sync::LazyLock<Io> = std::sync::LazyLock::new(Io::default);
    b.as_deref().unwrap_or(&NONE)
}

/// The buffers to change, allocated if there are none.
fn io(b: &mut Option<Box<Io>>) -> &mut Io {
    b.get_or_insert_with(Box::default)
}

/// The topic alias maps of one connection (5.0).
#[derive(Debug, Default)]
struct Aliases {
    /// The peer's aliases: alias to topic.
    incoming: HashMap<u16, TopicName>,
    /// Ours: topic to alias.
    outgoing: HashMap<TopicName, NonZeroU16>,
}

/// One MQTT connection's protocol state, in the client or the server role.
///
/// Pure and deterministic: it does no IO and never reads the clock. Methods fall into
/// four groups, in the style of quinn-proto:
///
/// - **Inputs** (`handle_*`): bytes received ([`handle_input`](Self::handle_input), any
///   chunking), the transport closed ([`handle_closed`](Self::handle_closed)), a deadline
///   passed ([`handle_timeout`](Self::handle_timeout)).
/// - **Commands**: client [`connect`](Self::connect), [`subscribe`](Self::subscribe),
///   [`unsubscribe`](Self::unsubscribe), [`ping`](Self::ping); server
///   [`accept`](Self::accept), [`reject`](Self::reject), [`suback`](Self::suback),
///   [`unsuback`](Self::unsuback); both [`publish`](Self::publish),
///   [`ack`](Self::ack), [`auth`](Self::auth), [`disconnect`](Self::disconnect).
/// - **Outputs** (`poll_*`): bytes to send ([`poll_transmit`](Self::poll_transmit), all
///   pending packets in one `Bytes`), events ([`poll_event`](Self::poll_event)), the next
///   deadline ([`poll_timeout`](Self::poll_timeout)).
/// - **Getters**: [`role`](Self::role), [`version`](Self::version),
///   [`is_closed`](Self::is_closed), [`state`](Self::state), ...
///
/// After any input or command, drain the outputs: write `poll_transmit` in one write,
/// handle every `poll_event`, and arm a timer for `poll_timeout`. Every call that can
/// change state takes `now`.
///
/// A peer that breaks the protocol gets DISCONNECT with the reason code (5.0), an
/// [`Event::Closed`] with [`CloseReason::Violation`], and further input is ignored.
/// Misuse by the caller returns [`UsageError`] and changes nothing.
#[derive(Debug)]
pub struct Connection {
    role: Role,
    /// Shared: a server's connections usually all have the same configuration.
    config: Arc<Config>,
    phase: Phase,
    version: Option<ProtocolVersion>,
    decoder: Decoder,
    /// Allocated on first use, let go by [`release_buffers`](Self::release_buffers)
    /// (see [`Io`]).
    io: Option<Box<Io>>,
    timers: TimerTable,
    /// Allocated on first use (see [`Delivery`]).
    delivery: Option<Box<Delivery>>,
    /// Bytes of the last [`poll_transmit`](Self::poll_transmit): the output buffer is
    /// sized for as much when it runs out, rather than growing by doubling each time.
    last_transmit: usize,
    /// One second after the time the Message Expiry Intervals of queued messages are
    /// counted from: before it, there is nothing to count (a comparison per message,
    /// where a subtraction of instants would cost several times more).
    queue_age_due: Option<Instant>,
    /// Client: SUBSCRIBE / UNSUBSCRIBE ids waiting for SUBACK / UNSUBACK, with the number
    /// of filters. Boxed on first use: a server never has any, and the box costs a
    /// pointer where an empty map costs 24 bytes.
    #[allow(clippy::box_collection)]
    pending_subs: Option<Box<BTreeMap<u16, usize>>>,
    peer: PeerLimits,
    keep_alive: u16,
    ping_outstanding: bool,
    /// 5.0: the Session Expiry Interval of CONNECT was 0.
    session_expiry_zero: bool,
    /// 5.0 Request Problem Information of the client (server role): when false, Reason
    /// Strings and User Properties are left out of acknowledgements.
    problem_information: bool,
    /// Whether completing an outgoing QoS 1/2 message reports [`Event::Delivered`].
    delivery_events: bool,
    /// Server: the CONNECT carried an Authentication Method, so AUTH may follow (5.0
    /// section 4.12).
    enhanced_auth: bool,
    /// Server: a PINGREQ came after packets whose events still wait to be taken; its
    /// PINGRESP leaves once they are, after the application's answers to them.
    pingresp_pending: bool,
    /// Closed by the peer's input while earlier events still wait to be taken: the
    /// [`Event::Closed`] is queued after them and the close completes when it is taken
    /// (see `close_for_input`).
    closing: bool,
    /// Topic aliases, boxed on first use: most connections never use one.
    aliases: Option<Box<Aliases>>,
}

impl Connection {
    fn new(role: Role, config: Arc<Config>, version: Option<ProtocolVersion>) -> Self {
        let decoder = match version {
            Some(v) => Decoder::client(v),
            None => Decoder::server(),
        }
        .with_max_packet_size(config.max_packet_size);
        Self {
            role,
            config,
            phase: Phase::Idle,
            version,
            decoder,
            io: None,
            timers: TimerTable::default(),
            delivery: None,
            last_transmit: 0,
            queue_age_due: None,
            pending_subs: None,
            peer: PeerLimits::default(),
            keep_alive: 0,
            ping_outstanding: false,
            session_expiry_zero: true,
            problem_information: true,
            delivery_events: true,
            enhanced_auth: false,
            pingresp_pending: false,
            closing: false,
            aliases: None,
        }
    }

    /// A server-side connection whose transport opened at `now`. It waits for CONNECT
    /// for `config.connect_timeout`. The configuration can be shared (`Arc<Config>`)
    /// by many connections, so that each does not keep a copy.
    pub fn server(config: impl Into<Arc<Config>>, now: Instant) -> Self {
        let mut c = Self::new(Role::Server, config.into(), None);
        if let Some(at) = now.checked_add(c.config.connect_timeout) {
            c.timers.set(Timer::Connect, at);
        }
        c
    }

    /// A client-side connection with a fresh session. Call [`connect`](Self::connect) to
    /// send CONNECT.
    pub fn client(config: impl Into<Arc<Config>>) -> Self {
        Self::new(Role::Client, config.into(), None)
    }

    /// A client-side connection that resumes `state` if the server has kept the session
    /// (CONNECT with Clean Start 0 and CONNACK with Session Present 1).
    pub fn client_with_state(config: impl Into<Arc<Config>>, state: SessionState) -> Self {
        let mut c = Self::client(config);
        c.set_state(state);
        c
    }

    fn set_state(&mut self, mut state: SessionState) {
        let mut ids = PacketIds::from_state(&state);
        // Messages queued while the session was offline may have no packet id yet.
        let mut kept = VecDeque::with_capacity(state.queue.len());
        for mut p in std::mem::take(&mut state.queue) {
            if needs_id(&p) && p.packet_id.is_none() {
                match ids.alloc() {
                    Some(id) => p.packet_id = Some(id),
                    None => {
                        io(&mut self.io).events.push_back(Event::Dropped {
                            publish: Box::new(p),
                            reason: DropReason::NoPacketId,
                        });
                        continue;
                    }
                }
            } else if !needs_id(&p) {
                p.dup = false;
            }
            // A queued message that was sent before (moved back by a smaller inflight
            // window) keeps DUP=1.
            kept.push_back(p);
        }
        state.queue = kept;
        let queued_bytes = state.queue.iter().map(|p| p.payload.len()).sum();
        // QoS 1 and 2 messages delivered before: their acknowledgement is still the
        // application's to give.
        let mut pending_acks = self
            .delivery
            .take()
            .map(|d| d.pending_acks)
            .unwrap_or_default();
        for id in std::mem::take(&mut state.incoming_unacked) {
            let qos = if state.incoming_qos2.contains(&id) {
                QoS::ExactlyOnce
            } else {
                QoS::AtLeastOnce
            };
            pending_acks.push_back(PendingAck {
                packet_id: id,
                qos,
                reason: (!self.config.manual_acks).then_some(ReasonCode::Success),
            });
        }
        // A fresh session (and a resumed one with nothing in it) goes without.
        self.delivery =
            (!state.is_empty() || ids.len() > 0 || !pending_acks.is_empty()).then(|| {
                Box::new(Delivery {
                    state,
                    ids,
                    pending_acks,
                    queued_bytes,
                })
            });
    }

    // ----- Getters ----------------------------------------------------------------------

    /// Client or server.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The protocol version, once known (client: from `connect`; server: from CONNECT).
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.version
    }

    /// True once open: CONNACK sent (server) or received (client) with success.
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// True after [`Event::Closed`].
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// The session state as it is now.
    pub fn state(&self) -> &SessionState {
        &dr(&self.delivery).state
    }

    /// The session state, to resume in a later connection.
    ///
    /// A QoS 1 or 2 message delivered by [`Event::Message`] stays known by its packet id
    /// if its PUBACK or PUBREC had not left yet (`manual_acks`; a QoS 1 message only if the
    /// application had not acknowledged it): the peer's resend on the next connection is a
    /// duplicate, not delivered again, and its acknowledgement waits for the
    /// [`ack`](Self::ack) the application gives on that next connection.
    pub fn into_state(self) -> SessionState {
        let Some(d) = self.delivery else {
            return SessionState::default();
        };
        let Delivery {
            mut state,
            pending_acks,
            ..
        } = *d;
        state.incoming_unacked = pending_acks
            .iter()
            .filter(|p| match p.qos {
                QoS::ExactlyOnce => state.incoming_qos2.contains(&p.packet_id),
                _ => p.reason.is_none(),
            })
            .map(|p| p.packet_id)
            .collect();
        state
    }

    /// Outgoing QoS 1/2 messages sent and not complete.
    pub fn inflight(&self) -> usize {
        dr(&self.delivery).state.inflight.len()
    }

    /// How many outgoing QoS 1/2 messages may be unacknowledged at once now.
    pub fn inflight_limit(&self) -> usize {
        usize::from(self.config.max_inflight.min(self.peer.receive_maximum)).max(1)
    }

    /// Outgoing messages waiting for room in the inflight window.
    pub fn queued(&self) -> usize {
        dr(&self.delivery).state.queue.len()
    }

    /// Payload bytes of the outgoing messages waiting in the queue.
    pub fn queued_bytes(&self) -> usize {
        dr(&self.delivery).queued_bytes
    }

    /// Counts the time since the last call off the Message Expiry Interval of every
    /// queued message (5.0) and drops those that expired ([MQTT-3.3.2-5]: a message not
    /// yet on its way is deleted once expired). Called by every command that queues or
    /// sends; a caller parking the session state calls it before
    /// [`into_state`](Self::into_state).
    pub fn age_queue(&mut self, now: Instant) {
        const SECOND: Duration = Duration::from_secs(1);
        let Some(due) = self.queue_age_due else {
            self.queue_age_due = Some(now + SECOND);
            return;
        };
        if now < due {
            return;
        }
        // Whole seconds since the time counted from (one second before `due`).
        let secs = now.saturating_duration_since(due).as_secs() + 1;
        self.queue_age_due = Some(due + Duration::from_secs(secs));
        let secs = u32::try_from(secs).unwrap_or(u32::MAX);
        if dr(&self.delivery).state.queue.is_empty() && dr(&self.delivery).state.inflight.is_empty()
        {
            return;
        }
        let mut kept = VecDeque::with_capacity(dr(&self.delivery).state.queue.len());
        for mut p in std::mem::take(&mut dm(&mut self.delivery).state.queue) {
            match p.properties.message_expiry_interval {
                Some(e) if e <= secs => {
                    dm(&mut self.delivery).queued_bytes -= p.payload.len();
                    self.drop_publish(p, DropReason::Expired);
                }
                Some(e) => {
                    p.properties.message_expiry_interval = Some(e - secs);
                    kept.push_back(p);
                }
                None => kept.push_back(p),
            }
        }
        dm(&mut self.delivery).state.queue = kept;
        // Messages on their way keep going ([MQTT-3.3.2-5]), but a resend carries the
        // interval left ([MQTT-3.3.2-6]), down to 0.
        for e in &mut dm(&mut self.delivery).state.inflight {
            if let Inflight::Publish(p) = e {
                if let Some(x) = p.properties.message_expiry_interval.as_mut() {
                    *x = x.saturating_sub(secs);
                }
            }
        }
    }

    /// Removes and returns the oldest message waiting in the queue (for a drop-oldest
    /// policy). Its packet id is freed; the returned message still carries it, so the
    /// caller can tell which message it was.
    pub fn pop_queued(&mut self) -> Option<Publish> {
        let p = dm(&mut self.delivery).state.queue.pop_front()?;
        dm(&mut self.delivery).queued_bytes -= p.payload.len();
        if let Some(id) = p.packet_id {
            dm(&mut self.delivery).ids.free(id);
        }
        Some(p)
    }

    /// Packet identifiers in use.
    pub fn packet_ids_in_use(&self) -> usize {
        dr(&self.delivery).ids.len()
    }

    /// The keep-alive interval in force (0: off).
    pub fn keep_alive(&self) -> Duration {
        Duration::from_secs(self.keep_alive.into())
    }

    // ----- Outputs ----------------------------------------------------------------------

    /// Everything waiting to be sent, as one buffer for one write; `None` if nothing.
    ///
    /// The buffer's allocation is its length: a caller that bounds the bytes it holds
    /// (an adapter's writes waiting for a slow peer) bounds the memory too.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        if io_ref(&self.io).out.is_empty() {
            return None;
        }
        let bytes = if io_ref(&self.io).out.capacity() > KEPT_OUTPUT_CAPACITY {
            // After a burst, the large allocation leaves with the bytes handed out, cut
            // to their length: the buffer grows by doubling, and up to half of it would
            // otherwise be held, unused, for as long as the bytes wait to be written.
            // Shrinking gives the tail back in place (no copy with the system
            // allocator).
            let mut v = Vec::from(std::mem::take(&mut io(&mut self.io).out));
            v.shrink_to_fit();
            Bytes::from(v)
        } else {
            // A copy of at most the kept capacity, which stays for the next packets. Handing
            // out a part of it instead would keep the whole allocation alive for as long
            // as any part waits, with the tail that was too short for the next packet.
            let b = Bytes::copy_from_slice(&io_ref(&self.io).out);
            io(&mut self.io).out.clear();
            b
        };
        self.last_transmit = bytes.len();
        Some(bytes)
    }

    /// Whether the connection holds delivery state (packet identifiers, messages in
    /// flight or queued, acknowledgements to send): allocated with the first message
    /// that needs it and kept, so that a connection that only ever sees QoS 0 holds
    /// none. For applications that account memory per connection.
    pub fn holds_delivery_state(&self) -> bool {
        self.delivery.is_some()
    }

    /// Bytes of buffer capacity the connection holds for input and output (not counting
    /// what it handed out): at most a few KiB once it is idle, none after
    /// [`release_buffers`](Self::release_buffers).
    pub fn buffer_capacity(&self) -> usize {
        io_ref(&self.io).read_buf.capacity() + io_ref(&self.io).out.capacity()
    }

    /// Lets go of the output buffer's allocation if nothing waits in it (the input buffer
    /// goes whenever it is empty). The output buffer is otherwise kept between transmits,
    /// up to 4 KiB, so that the next packets need no allocation; an application calls
    /// this when the connection goes idle, so that an idle connection holds no buffer.
    pub fn release_buffers(&mut self) {
        let Some(b) = self.io.as_mut() else { return };
        if b.out.is_empty() {
            b.out = BytesMut::new();
        }
        if b.read_buf.is_empty() {
            b.read_buf = BytesMut::new();
        }
        if b.holds_nothing() {
            self.io = None;
        }
    }

    /// Whether completing an outgoing QoS 1/2 message (PUBACK, or PUBCOMP) reports
    /// [`Event::Delivered`]; on by default. An application that keeps nothing per
    /// message in flight (a broker for a session it does not store) turns it off: each
    /// event would otherwise take the event queue's allocation back and forth, once per
    /// acknowledged message, on a connection with nothing else in flight.
    pub fn set_delivery_events(&mut self, on: bool) {
        self.delivery_events = on;
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        if io_ref(&self.io).events.is_empty() {
            self.flush_pingresp();
            if io_ref(&self.io).events.capacity() > 0
                && dr(&self.delivery).state.inflight.is_empty()
            {
                // Events are large (a PUBLISH each): a connection with nothing in flight
                // holds no queue. One with messages in flight keeps it for their
                // acknowledgements.
                io(&mut self.io).events = VecDeque::new();
            }
            // `None` itself, not an empty `pop_front` moved whole: the caller reads
            // this 80-byte value with wide loads, which would wait for the one-byte store
            // of its tag (every connection's last poll is this one).
            return None;
        }
        let e = self.io.as_mut().and_then(|b| b.events.pop_front());
        if self.closing && matches!(e, Some(Event::Closed(_))) {
            // The close the peer's input asked for, now that the application has
            // answered what came before it.
            self.closing = false;
            self.flush_pingresp();
            if let Some(Event::Closed(CloseReason::Violation(v))) = &e {
                self.send_disconnect(v.reason_code());
            }
            self.shut();
        }
        e
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    // ----- Inputs -----------------------------------------------------------------------

    /// Bytes received from the peer, in any chunking.
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) {
        if self.phase == Phase::Closed || self.closing {
            return;
        }
        // Acknowledgements and pings at the start of fresh input are handled straight
        // from it: a subscriber's input is mostly PUBACKs, and buffering them would
        // allocate a buffer and free it again for every read.
        let mut bytes = bytes;
        if io_ref(&self.io).read_buf.is_empty() && self.phase == Phase::Open {
            while let Some((packet, n)) = self.decoder.decode_borrowed(bytes) {
                bytes = &bytes[n..];
                if let Err(v) = self.handle_packet(now, packet) {
                    self.violation(now, v);
                }
                if self.phase != Phase::Open || self.closing {
                    return;
                }
            }
            if bytes.is_empty() {
                return;
            }
        }
        // A copy, on purpose: decoded fields that live long (client identifiers, topic
        // filters, retained messages) are slices of this buffer, and taking the
        // transport's read chunk as it is instead would keep a whole chunk alive for each
        // (an idle subscribed connection grew from about 2.6 to 10.7 KB).
        io(&mut self.io).read_buf.extend_from_slice(bytes);
        self.process_input(now);
        // Input held while a CONNECT waits for its answer is bounded: one packet's worth.
        if self.role == Role::Server
            && self.phase == Phase::Connecting
            && io_ref(&self.io).read_buf.len() > self.config.max_packet_size as usize
        {
            self.violation(
                now,
                Violation::InputBeforeConnAck(io_ref(&self.io).read_buf.len()),
            );
        }
        if io_ref(&self.io).read_buf.is_empty() {
            // Decoded payloads are slices of this buffer: an empty one is let go, so an
            // idle connection holds no input buffer, and no burst's allocation stays
            // alive through it once its messages are gone.
            if let Some(b) = self.io.as_mut() {
                b.read_buf = BytesMut::new();
            }
        }
    }

    fn process_input(&mut self, now: Instant) {
        while self.phase != Phase::Closed && !self.closing {
            // A server waiting for the application's answer to CONNECT holds further
            // packets (a client may send them before CONNACK), except AUTH and
            // DISCONNECT, which belong to the connect exchange.
            if self.role == Role::Server && self.phase == Phase::Connecting {
                match io_ref(&self.io).read_buf.first().map(|b| b >> 4) {
                    Some(14 | 15) => {}
                    _ => return,
                }
            }
            match self.decoder.decode(&mut io(&mut self.io).read_buf) {
                Ok(Some(packet)) => {
                    if let Err(v) = self.handle_packet(now, packet) {
                        self.violation(now, v);
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    self.decode_error(now, e);
                    return;
                }
            }
        }
    }

    /// The transport closed.
    pub fn handle_closed(&mut self, _now: Instant) {
        if self.phase != Phase::Closed {
            self.close(CloseReason::TransportClosed);
        }
    }

    /// A deadline from [`poll_timeout`](Self::poll_timeout) passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(t) = self.timers.expired(now, self.role == Role::Server) {
            match t {
                Timer::Connect => {
                    self.close(CloseReason::ConnectTimeout);
                }
                Timer::Idle => {
                    // [MQTT-3.1.2-24]: 1.5 x keep-alive without a packet.
                    self.send_disconnect(ReasonCode::KeepAliveTimeout);
                    self.close(CloseReason::KeepAliveTimeout);
                }
                Timer::KeepAlive => {
                    if !self.ping_outstanding {
                        self.ping_outstanding = true;
                        self.send(now, &Packet::PingReq);
                        self.set_timer_after(Timer::PingResp, now, self.config.ping_timeout);
                    }
                }
                Timer::PingResp => {
                    self.send_disconnect(ReasonCode::KeepAliveTimeout);
                    self.close(CloseReason::KeepAliveTimeout);
                }
            }
        }
    }

    // ----- Commands: client -------------------------------------------------------------

    /// Client: sends CONNECT. Its limits are filled in from the configuration (5.0
    /// Receive Maximum, Maximum Packet Size and Topic Alias Maximum).
    pub fn connect(&mut self, now: Instant, mut connect: Connect) -> Result<(), UsageError> {
        if self.role != Role::Client || self.phase != Phase::Idle {
            return Err(UsageError::WrongState);
        }
        let v = connect.protocol_version;
        if v.is_v5() {
            // The limits announced are the ones this connection enforces.
            let p = &mut connect.properties;
            p.receive_maximum = (self.config.receive_maximum != u16::MAX)
                .then(|| NonZeroU16::new(self.config.receive_maximum))
                .flatten();
            p.maximum_packet_size = (self.config.max_packet_size != MAX_PACKET_SIZE)
                .then(|| std::num::NonZeroU32::new(self.config.max_packet_size))
                .flatten();
            p.topic_alias_maximum =
                (self.config.topic_alias_maximum > 0).then_some(self.config.topic_alias_maximum);
            self.session_expiry_zero = p.session_expiry_interval.unwrap_or(0) == 0;
            self.enhanced_auth = p.authentication_method.is_some();
        }
        let keep_alive = connect.keep_alive;
        let mut buf = BytesMut::new();
        Packet::Connect(Box::new(connect)).encode(&mut buf, v, MAX_PACKET_SIZE)?;
        self.version = Some(v);
        self.decoder.set_version(v);
        self.keep_alive = keep_alive;
        io(&mut self.io).out.extend_from_slice(&buf);
        self.sent(now);
        self.phase = Phase::Connecting;
        self.set_timer_after(Timer::Connect, now, self.config.connect_timeout);
        Ok(())
    }

    /// Client: sends SUBSCRIBE; SUBACK arrives as [`Event::SubAck`] with this packet id.
    pub fn subscribe(
        &mut self,
        now: Instant,
        subscriptions: Vec<Subscription>,
        properties: SubscribeProperties,
    ) -> Result<PacketId, UsageError> {
        let n = subscriptions.len();
        self.send_request(now, n, |packet_id| {
            Packet::Subscribe(Subscribe {
                packet_id,
                properties: properties.into(),
                subscriptions,
            })
        })
    }

    /// Client: sends UNSUBSCRIBE; UNSUBACK arrives as [`Event::UnsubAck`].
    pub fn unsubscribe(
        &mut self,
        now: Instant,
        filters: Vec<TopicFilter>,
        properties: UnsubscribeProperties,
    ) -> Result<PacketId, UsageError> {
        let n = filters.len();
        self.send_request(now, n, |packet_id| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties: properties.into(),
                filters,
            })
        })
    }

    /// Sends a SUBSCRIBE or UNSUBSCRIBE of `n` filters with a fresh packet id and waits
    /// for its answer.
    fn send_request(
        &mut self,
        now: Instant,
        n: usize,
        build: impl FnOnce(PacketId) -> Packet,
    ) -> Result<PacketId, UsageError> {
        self.client_open()?;
        let id = dm(&mut self.delivery)
            .ids
            .alloc()
            .ok_or(UsageError::NoPacketId)?;
        if let Err(e) = self.try_send(now, &build(id)) {
            dm(&mut self.delivery).ids.free(id);
            return Err(e.into());
        }
        self.pending_subs
            .get_or_insert_default()
            .insert(id.get(), n);
        Ok(id)
    }

    /// Client: sends PINGREQ now (keep-alive sends it by itself when idle).
    pub fn ping(&mut self, now: Instant) -> Result<(), UsageError> {
        self.client_open()?;
        self.ping_outstanding = true;
        self.send(now, &Packet::PingReq);
        self.set_timer_after(Timer::PingResp, now, self.config.ping_timeout);
        Ok(())
    }

    fn client_open(&self) -> Result<(), UsageError> {
        match (self.role, self.phase) {
            (_, Phase::Closed) => Err(UsageError::Closed),
            (Role::Client, Phase::Open) => Ok(()),
            _ => Err(UsageError::WrongState),
        }
    }

    // ----- Commands: server -------------------------------------------------------------

    /// Server: accepts the CONNECT of [`Event::ConnectReceived`] with this CONNACK.
    ///
    /// `state` resumes a stored session: its inflight messages are resent (PUBLISH with
    /// DUP=1, then PUBREL, in their original order) and its queue follows. The CONNACK's
    /// limits are filled in from the configuration (5.0 Receive Maximum, Maximum Packet
    /// Size, Topic Alias Maximum, Server Keep Alive, Maximum QoS, Retain Available).
    pub fn accept(
        &mut self,
        now: Instant,
        mut connack: ConnAck,
        state: Option<SessionState>,
    ) -> Result<(), UsageError> {
        if self.role != Role::Server || self.phase != Phase::Connecting {
            return Err(if self.phase == Phase::Closed {
                UsageError::Closed
            } else {
                UsageError::WrongState
            });
        }
        let v = self.version.unwrap_or(ProtocolVersion::V3_1_1);
        connack.reason_code = ReasonCode::Success;
        if v.is_v5() {
            let p = &mut connack.properties;
            if self.config.receive_maximum != u16::MAX {
                p.receive_maximum = NonZeroU16::new(self.config.receive_maximum);
            }
            if self.config.max_packet_size != MAX_PACKET_SIZE {
                p.maximum_packet_size = std::num::NonZeroU32::new(self.config.max_packet_size);
            }
            if self.config.topic_alias_maximum > 0 {
                p.topic_alias_maximum = Some(self.config.topic_alias_maximum);
            }
            if let Some(ka) = self.config.server_keep_alive {
                p.server_keep_alive = Some(ka);
            }
            // A Server Keep Alive, from the configuration or set by the caller, is the
            // keep-alive both sides use ([MQTT-3.1.2-21]).
            if let Some(ka) = p.server_keep_alive {
                self.keep_alive = ka;
            }
            if self.config.maximum_qos != QoS::ExactlyOnce {
                p.maximum_qos = Some(self.config.maximum_qos);
            }
            if !self.config.retain_available {
                p.retain_available = Some(false);
            }
        }
        if let Err(EncodeError::PacketTooLarge { .. }) =
            self.try_send(now, &Packet::ConnAck(Box::new(connack.clone())))
        {
            // Too large for the client: the optional strings go first.
            let p = &mut connack.properties;
            p.reason_string = None;
            p.user_properties.clear();
            p.response_information = None;
            p.server_reference = None;
            self.send(now, &Packet::ConnAck(Box::new(connack)));
            if self.phase == Phase::Closed {
                return Ok(());
            }
        }
        self.phase = Phase::Open;
        self.timers.stop(Timer::Connect);
        self.arm_idle(now);
        if let Some(state) = state {
            self.set_state(state);
            self.resend_inflight(now);
            self.flush_acks(now);
        }
        self.pump(now);
        // Packets the client sent after CONNECT.
        self.process_input(now);
        Ok(())
    }

    /// Server: refuses the CONNECT with CONNACK `reason_code` (mapped to a 3.x return code
    /// for 3.x clients) and closes.
    pub fn reject(&mut self, now: Instant, reason_code: ReasonCode) -> Result<(), UsageError> {
        if self.role != Role::Server || self.phase != Phase::Connecting {
            return Err(UsageError::WrongState);
        }
        let code = if reason_code.is_success() {
            ReasonCode::UnspecifiedError
        } else {
            reason_code
        };
        let connack = ConnAck {
            session_present: false,
            reason_code: code,
            properties: Default::default(),
        };
        self.send(now, &Packet::ConnAck(Box::new(connack)));
        self.close(CloseReason::Local(code));
        Ok(())
    }

    /// Server: answers [`Event::Subscribe`] with one code per subscription, in order
    /// (granted QoS or a failure).
    pub fn suback(
        &mut self,
        now: Instant,
        packet_id: PacketId,
        reason_codes: Vec<ReasonCode>,
        properties: AckProperties,
    ) -> Result<(), UsageError> {
        self.server_open()?;
        self.send_ack_packet(
            now,
            Packet::SubAck(SubAck {
                packet_id,
                properties: properties.into(),
                reason_codes,
            }),
        )
    }

    /// Server: answers [`Event::Unsubscribe`] (5.0: one code per filter; ignored in 3.x).
    pub fn unsuback(
        &mut self,
        now: Instant,
        packet_id: PacketId,
        reason_codes: Vec<ReasonCode>,
        properties: AckProperties,
    ) -> Result<(), UsageError> {
        self.server_open()?;
        self.send_ack_packet(
            now,
            Packet::UnsubAck(UnsubAck {
                packet_id,
                properties: properties.into(),
                reason_codes,
            }),
        )
    }

    fn server_open(&self) -> Result<(), UsageError> {
        match (self.role, self.phase) {
            (_, Phase::Closed) => Err(UsageError::Closed),
            (Role::Server, Phase::Open) => Ok(()),
            _ => Err(UsageError::WrongState),
        }
    }

    /// Sends an acknowledgement. Its Reason String and User Properties are left out when
    /// the client asked for no problem information (5.0 [MQTT-3.1.2-29]) or when they
    /// would make the packet larger than the peer accepts.
    fn send_ack_packet(&mut self, now: Instant, mut p: Packet) -> Result<(), UsageError> {
        fn strip(p: &mut Packet) {
            match p {
                Packet::SubAck(s) => s.properties = Default::default(),
                Packet::UnsubAck(s) => s.properties = Default::default(),
                Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
                    r.properties = Default::default()
                }
                _ => {}
            }
        }
        if self.role == Role::Server && !self.problem_information {
            strip(&mut p);
        }
        match self.try_send(now, &p) {
            Err(EncodeError::PacketTooLarge { .. }) => {
                strip(&mut p);
                self.try_send(now, &p).map(drop).map_err(UsageError::from)
            }
            r => r.map(drop).map_err(UsageError::from),
        }
    }

    // ----- Commands: both ---------------------------------------------------------------

    /// Sends an application message: now if the inflight window has room, else after the
    /// messages queued before it. QoS 1/2 messages get a packet identifier from the
    /// session (any given is replaced); it is returned and comes back in
    /// [`Event::Delivered`].
    ///
    /// When the queue is full (`max_queued_messages` / `max_queued_bytes`) the message
    /// is handed back in [`UsageError::QueueFull`]; what to drop is the caller's policy.
    pub fn publish(
        &mut self,
        now: Instant,
        publish: Publish,
    ) -> Result<Option<PacketId>, UsageError> {
        self.publish_with(now, publish, None)
    }

    /// Like [`publish`](Self::publish), with the message already encoded once for many
    /// connections ([`EncodedPublish::new`] of this same `publish`): if it goes out now
    /// and the encoding fits this connection (same version family, QoS, RETAIN and size
    /// limit, no topic alias), its bytes are copied and only the packet id is written,
    /// instead of encoding again.
    pub fn publish_encoded(
        &mut self,
        now: Instant,
        publish: Publish,
        encoded: &EncodedPublish,
    ) -> Result<Option<PacketId>, UsageError> {
        self.publish_with(now, publish, Some(encoded))
    }

    fn publish_with(
        &mut self,
        now: Instant,
        mut publish: Publish,
        shared: Option<&EncodedPublish>,
    ) -> Result<Option<PacketId>, UsageError> {
        match self.phase {
            Phase::Closed => return Err(UsageError::Closed),
            Phase::Idle => return Err(UsageError::WrongState),
            Phase::Connecting if self.role == Role::Server => return Err(UsageError::WrongState),
            _ => {}
        }
        if publish.qos > self.peer.maximum_qos {
            return Err(UsageError::QoSNotSupported);
        }
        if publish.retain && !self.peer.retain_available {
            return Err(UsageError::RetainNotSupported);
        }
        publish.dup = false;
        publish.packet_id = None;
        self.age_queue(now);
        let direct = self.phase == Phase::Open
            && dr(&self.delivery).state.queue.is_empty()
            && (!needs_id(&publish)
                || dr(&self.delivery).state.inflight.len() < self.inflight_limit());
        if !direct
            && (dr(&self.delivery).state.queue.len() >= self.config.max_queued_messages
                || dr(&self.delivery).queued_bytes + publish.payload.len()
                    > self.config.max_queued_bytes)
        {
            return Err(UsageError::QueueFull(Box::new(publish)));
        }
        if needs_id(&publish) {
            publish.packet_id = Some(
                dm(&mut self.delivery)
                    .ids
                    .alloc()
                    .ok_or(UsageError::NoPacketId)?,
            );
        }
        let id = publish.packet_id;
        if direct {
            self.transmit_publish(now, publish, shared);
        } else {
            dm(&mut self.delivery).queued_bytes += publish.payload.len();
            dm(&mut self.delivery).state.queue.push_back(publish);
        }
        Ok(id)
    }

    /// Acknowledges an incoming QoS 1/2 message delivered by [`Event::Message`] (with
    /// `manual_acks`). `reason_code` is sent in 5.0 (0x80 and above refuse the message).
    /// Acknowledgements leave in the order the messages arrived ([MQTT-4.6.0-2],
    /// [MQTT-4.6.0-3]): one acknowledged early waits for those before it.
    pub fn ack(
        &mut self,
        now: Instant,
        packet_id: PacketId,
        reason_code: ReasonCode,
    ) -> Result<(), UsageError> {
        if self.phase == Phase::Closed {
            return Err(UsageError::Closed);
        }
        let v5 = self.version.is_some_and(|v| v.is_v5());
        let entry = self
            .delivery
            .as_deref_mut()
            .ok_or(UsageError::UnknownPacketId)?
            .pending_acks
            .iter_mut()
            .find(|p| p.packet_id == packet_id && p.reason.is_none())
            .ok_or(UsageError::UnknownPacketId)?;
        let kind = if entry.qos == QoS::ExactlyOnce {
            PacketType::PubRec
        } else {
            PacketType::PubAck
        };
        if v5 && !reason_code.is_valid_for(kind) {
            return Err(UsageError::InvalidReasonCode(reason_code));
        }
        entry.reason = Some(reason_code);
        self.flush_acks(now);
        Ok(())
    }

    /// Sends AUTH (5.0 enhanced authentication), in an exchange the CONNECT began with an
    /// Authentication Method and with one of its own: 0x18 Continue from either side;
    /// once connected, 0x19 Re-authenticate from a client and 0x00 Success from a server.
    /// Anything else is refused ([`UsageError::WrongState`],
    /// [`UsageError::InvalidReasonCode`]) and nothing is sent.
    pub fn auth(&mut self, now: Instant, auth: Auth) -> Result<(), UsageError> {
        if self.phase == Phase::Closed {
            return Err(UsageError::Closed);
        }
        if !self.version.is_some_and(|v| v.is_v5()) || self.phase == Phase::Idle {
            return Err(UsageError::WrongState);
        }
        // 5.0 section 4.12: AUTH belongs to an exchange the CONNECT began with an
        // Authentication Method ([MQTT-4.12.0-6], [MQTT-4.12.0-7]) and always names it
        // (section 3.15.2.2.2).
        if !self.enhanced_auth || auth.properties.authentication_method.is_none() {
            return Err(UsageError::WrongState);
        }
        if !auth_reason_allowed(self.role, auth.reason_code, self.phase) {
            return Err(UsageError::InvalidReasonCode(auth.reason_code));
        }
        self.try_send(now, &Packet::Auth(auth))?;
        Ok(())
    }

    /// Closes the connection: sends DISCONNECT with `reason_code` (client: always; server:
    /// 5.0 only, as 3.x has no server DISCONNECT) and emits [`Event::Closed`].
    pub fn disconnect(
        &mut self,
        _now: Instant,
        reason_code: ReasonCode,
        properties: DisconnectProperties,
    ) -> Result<(), UsageError> {
        if self.phase == Phase::Closed || self.closing {
            return Err(UsageError::Closed);
        }
        // 5.0: a session that had expiry 0 cannot be given one at DISCONNECT (the server
        // treats it as a protocol error), and a server never sends one.
        if let Some(e) = properties.session_expiry_interval {
            if e != 0 && (self.role == Role::Server || self.session_expiry_zero) {
                return Err(UsageError::InvalidSessionExpiry);
            }
        }
        if self.can_send_disconnect() {
            let v = self.version.unwrap_or(ProtocolVersion::V3_1_1);
            let d = Packet::Disconnect(Disconnect {
                reason_code,
                properties: properties.into(),
            });
            let max = self.peer.max_packet_size;
            if d.encode(&mut io(&mut self.io).out, v, max).is_err() {
                // Too large with its properties: send the bare reason.
                let _ = Packet::Disconnect(Disconnect {
                    reason_code,
                    properties: Default::default(),
                })
                .encode(&mut io(&mut self.io).out, v, max);
            }
        }
        self.close(CloseReason::Local(reason_code));
        Ok(())
    }

    // ----- Internals: sending -----------------------------------------------------------

    /// Room for `n` more output bytes: when the buffer has too little, it gets as much
    /// as the last transmit took (up to [`KEPT_OUTPUT_CAPACITY`]), so that a burst of
    /// copies costs one allocation instead of a series of reallocations.
    fn reserve_out(&mut self, n: usize) {
        if io_ref(&self.io).out.capacity() - io_ref(&self.io).out.len() < n {
            io(&mut self.io)
                .out
                .reserve(n.max(self.last_transmit.min(KEPT_OUTPUT_CAPACITY)));
        }
    }

    fn version_or_default(&self) -> ProtocolVersion {
        self.version.unwrap_or(ProtocolVersion::V3_1_1)
    }

    /// Encodes a packet into the output; records the send for keep-alive.
    fn try_send(&mut self, now: Instant, p: &Packet) -> Result<usize, EncodeError> {
        let (v, max) = (self.version_or_default(), self.peer.max_packet_size);
        let n = p.encode(&mut io(&mut self.io).out, v, max)?;
        self.sent(now);
        Ok(n)
    }

    /// Sends a packet the session built itself, which always encodes.
    fn send(&mut self, now: Instant, p: &Packet) {
        if self.try_send(now, p).is_err() {
            // Session-built control packets are a few bytes; a peer whose Maximum Packet
            // Size is smaller still cannot be served ([MQTT-3.1.2-24]: nothing larger is
            // sent), so the connection ends.
            self.close(CloseReason::Local(ReasonCode::PacketTooLarge));
        }
    }

    /// Arms a timer; a closed connection has none.
    fn set_timer(&mut self, t: Timer, at: Instant) {
        if self.phase != Phase::Closed && !self.closing {
            self.timers.set(t, at);
        }
    }

    /// A configured timeout: one too long for an Instant never fires.
    fn set_timer_after(&mut self, t: Timer, now: Instant, timeout: Duration) {
        match now.checked_add(timeout) {
            Some(at) => self.set_timer(t, at),
            None => self.timers.stop(t),
        }
    }

    fn sent(&mut self, now: Instant) {
        if self.role == Role::Client && self.keep_alive != 0 && self.phase != Phase::Closed {
            self.set_timer(Timer::KeepAlive, now + self.keep_alive());
        }
    }

    fn can_send_disconnect(&self) -> bool {
        match self.role {
            Role::Client => self.phase != Phase::Idle,
            // [MQTT-3.14.0-1]: not before CONNACK; 3.x servers send none.
            Role::Server => self.phase == Phase::Open && self.version.is_some_and(|v| v.is_v5()),
        }
    }

    fn send_disconnect(&mut self, reason_code: ReasonCode) {
        if self.can_send_disconnect() && self.version.is_some_and(|v| v.is_v5()) {
            let d = Packet::Disconnect(Disconnect {
                reason_code,
                properties: Default::default(),
            });
            let (v, max) = (self.version_or_default(), self.peer.max_packet_size);
            let _ = d.encode(&mut io(&mut self.io).out, v, max);
        }
    }

    /// Sends a PUBLISH that has room (and its packet id if QoS > 0), applying an outgoing
    /// topic alias; too large for the peer, it is dropped ([MQTT-3.1.2-25]). With a shared
    /// encoding that fits, its bytes are copied and only the packet id is written.
    fn transmit_publish(
        &mut self,
        now: Instant,
        publish: Publish,
        shared: Option<&EncodedPublish>,
    ) {
        // Limits learned after the message was queued (CONNACK, a resumed session) apply
        // too: a message the peer does not accept is dropped, not sent.
        let refused = if publish.qos > self.peer.maximum_qos {
            Some(DropReason::QoSNotSupported)
        } else if publish.retain && !self.peer.retain_available {
            Some(DropReason::RetainNotSupported)
        } else {
            None
        };
        if let Some(reason) = refused {
            self.drop_publish(publish, reason);
            return;
        }
        let v = self.version_or_default();
        let max = self.peer.max_packet_size;
        let sent = match shared {
            Some(e) if e.fits(&publish, v, max) && !self.aliases_apply() => {
                self.reserve_out(e.bytes.len());
                let start = io_ref(&self.io).out.len();
                io(&mut self.io).out.extend_from_slice(&e.bytes);
                if let (Some(at), Some(id)) = (e.id_at, publish.packet_id) {
                    io(&mut self.io).out[start + at..start + at + 2]
                        .copy_from_slice(&id.get().to_be_bytes());
                }
                Ok(e.bytes.len())
            }
            _ if self.aliases_apply() => {
                let (wire, new_alias) = self.with_alias(&publish);
                let r = wire.encode(&mut io(&mut self.io).out, v, max);
                // The mapping exists only once the peer has seen it.
                if let (Ok(_), Some(alias)) = (&r, new_alias) {
                    self.aliases
                        .get_or_insert_with(Box::default)
                        .outgoing
                        .insert(publish.topic.clone(), alias);
                }
                r
            }
            _ => publish.encode(&mut io(&mut self.io).out, v, max),
        };
        match sent {
            Ok(_) => {
                self.sent(now);
                if needs_id(&publish) {
                    dm(&mut self.delivery)
                        .state
                        .inflight
                        .push_back(Inflight::Publish(publish));
                }
            }
            Err(_) => self.drop_publish(publish, DropReason::TooLarge),
        }
    }

    fn drop_publish(&mut self, publish: Publish, reason: DropReason) {
        if let Some(id) = publish.packet_id {
            dm(&mut self.delivery).ids.free(id);
        }
        io(&mut self.io).events.push_back(Event::Dropped {
            publish: Box::new(publish),
            reason,
        });
    }

    fn aliases_apply(&self) -> bool {
        self.config.outgoing_topic_aliases
            && self.version.is_some_and(|v| v.is_v5())
            && self.peer.topic_alias_maximum > 0
    }

    /// The PUBLISH as sent with an outgoing topic alias, and the alias to map if it is new.
    fn with_alias(&self, publish: &Publish) -> (Publish, Option<NonZeroU16>) {
        let mut wire = publish.clone();
        if publish.topic.is_empty() {
            return (wire, None);
        }
        let outgoing = self.aliases.as_ref().map(|a| &a.outgoing);
        let mapped = outgoing.map_or(0, HashMap::len);
        if let Some(&alias) = outgoing.and_then(|m| m.get(&publish.topic)) {
            wire.topic = TopicName::empty();
            wire.properties.topic_alias = Some(alias);
            (wire, None)
        } else if mapped < usize::from(self.peer.topic_alias_maximum) {
            let alias = NonZeroU16::new(mapped as u16 + 1).expect("non-zero");
            wire.properties.topic_alias = Some(alias);
            (wire, Some(alias))
        } else {
            (wire, None)
        }
    }

    /// Moves queued messages into the inflight window while it has room.
    fn pump(&mut self, now: Instant) {
        if self.phase != Phase::Open {
            return;
        }
        self.age_queue(now);
        while let Some(front) = dr(&self.delivery).state.queue.front() {
            if needs_id(front) && dr(&self.delivery).state.inflight.len() >= self.inflight_limit() {
                break;
            }
            let p = dm(&mut self.delivery)
                .state
                .queue
                .pop_front()
                .expect("front exists");
            dm(&mut self.delivery).queued_bytes -= p.payload.len();
            self.transmit_publish(now, p, None);
        }
    }

    /// On resume: unacknowledged PUBLISH with DUP=1 and PUBREL, in the original order
    /// ([MQTT-4.4.0-1], [MQTT-3.3.1-1]), within the inflight window the peer allows now:
    /// every PUBREL goes (the peer already counts those messages), and PUBLISHes beyond
    /// the room left go back to the front of the queue (keeping DUP=1 and their ids), to
    /// be resent as acknowledgements make room.
    fn resend_inflight(&mut self, now: Instant) {
        if dr(&self.delivery).state.inflight.is_empty() {
            return;
        }
        let inflight = std::mem::take(&mut dm(&mut self.delivery).state.inflight);
        // Released messages are already counted by the peer; PUBLISHes get what is left.
        let released = inflight
            .iter()
            .filter(|e| matches!(e, Inflight::Released(_)))
            .count();
        let mut room = self.inflight_limit().saturating_sub(released);
        let mut back = VecDeque::new();
        for entry in inflight {
            if self.phase == Phase::Closed {
                // A PUBREL the peer's Maximum Packet Size cannot take closed the
                // connection: what is left stays in the session state as it was, and no
                // event follows the close.
                dm(&mut self.delivery).state.inflight.push_back(entry);
                continue;
            }
            match entry {
                Inflight::Publish(mut p) => {
                    p.dup = true;
                    // The peer's limits may have changed with the new connection.
                    if p.qos > self.peer.maximum_qos {
                        self.drop_publish(p, DropReason::QoSNotSupported);
                        continue;
                    }
                    if p.retain && !self.peer.retain_available {
                        self.drop_publish(p, DropReason::RetainNotSupported);
                        continue;
                    }
                    if room == 0 {
                        dm(&mut self.delivery).queued_bytes += p.payload.len();
                        back.push_back(p);
                        continue;
                    }
                    let (v, max) = (self.version_or_default(), self.peer.max_packet_size);
                    match p.encode(&mut io(&mut self.io).out, v, max) {
                        Ok(_) => {
                            room -= 1;
                            self.sent(now);
                            dm(&mut self.delivery)
                                .state
                                .inflight
                                .push_back(Inflight::Publish(p));
                        }
                        Err(_) => {
                            p.dup = false;
                            self.drop_publish(p, DropReason::TooLarge);
                        }
                    }
                }
                Inflight::Released(id) => {
                    // PUBREL of a message the peer already holds: it does not add to the
                    // peer's count.
                    self.send(now, &Packet::PubRel(PubResponse::new(id)));
                    dm(&mut self.delivery)
                        .state
                        .inflight
                        .push_back(Inflight::Released(id));
                }
            }
        }
        while let Some(p) = back.pop_back() {
            dm(&mut self.delivery).state.queue.push_front(p);
        }
    }

    /// Sends the acknowledgements at the front of the arrival order that have a decision.
    fn flush_acks(&mut self, now: Instant) {
        while let Some(PendingAck {
            packet_id,
            qos,
            reason: Some(reason),
        }) = dr(&self.delivery).pending_acks.front().cloned()
        {
            dm(&mut self.delivery).pending_acks.pop_front();
            let v5 = self.version.is_some_and(|v| v.is_v5());
            let mut r = PubResponse::new(packet_id);
            if v5 {
                r.reason_code = reason;
            }
            if qos == QoS::ExactlyOnce {
                if v5 && !reason.is_success() {
                    // A refused QoS 2 message ends here; its id is free again.
                    dm(&mut self.delivery)
                        .state
                        .incoming_qos2
                        .remove(&packet_id);
                }
                let _ = self.send_ack_packet(now, Packet::PubRec(r));
            } else {
                let _ = self.send_ack_packet(now, Packet::PubAck(r));
            }
        }
    }

    // ----- Internals: receiving ---------------------------------------------------------

    fn decode_error(&mut self, now: Instant, e: DecodeError) {
        if self.role == Role::Server && self.phase == Phase::Idle {
            // A CONNECT we cannot accept: some errors are answered with CONNACK
            // ([MQTT-3.1.2-2], 3.1.1 [MQTT-3.1.3-8]); the 3.1.1 form is the one every
            // client understands.
            if let Some(code) = e.connack_refusal() {
                let v = match e {
                    DecodeError::InvalidClientId => self.peek_connect_version(),
                    _ => ProtocolVersion::V3_1_1,
                };
                let c = Packet::ConnAck(Box::new(ConnAck {
                    session_present: false,
                    reason_code: code,
                    properties: Default::default(),
                }));
                let _ = c.encode(&mut io(&mut self.io).out, v, MAX_PACKET_SIZE);
                self.sent(now);
            } else if self.peek_connect_level() == Some(5)
                && e.reason_code().is_valid_for(PacketType::ConnAck)
            {
                // A 5.0 CONNECT that is malformed or breaks the protocol: a CONNACK with
                // the reason (0x81, 0x82, ...) tells the client why before the connection
                // closes ([MQTT-4.13.1-1]; no DISCONNECT may precede CONNACK).
                let c = Packet::ConnAck(Box::new(ConnAck {
                    session_present: false,
                    reason_code: e.reason_code(),
                    properties: Default::default(),
                }));
                // The connection speaks 5.0 from here on, as its CONNACK does.
                self.version = Some(ProtocolVersion::V5);
                let _ = c.encode(
                    &mut io(&mut self.io).out,
                    ProtocolVersion::V5,
                    MAX_PACKET_SIZE,
                );
                self.sent(now);
            }
            self.close(CloseReason::Violation(Violation::Decode(e)));
            return;
        }
        self.violation(now, Violation::Decode(e));
    }

    /// The protocol level of the CONNECT at the front of the read buffer, if it is one
    /// and that much of it arrived.
    fn peek_connect_level(&self) -> Option<u8> {
        let b = &io_ref(&self.io).read_buf;
        if b.first() != Some(&0x10) {
            return None;
        }
        let name_at = 1 + (1..5).find(|&i| b.get(i).is_some_and(|x| x & 0x80 == 0))?;
        let name_len = usize::from(u16::from_be_bytes([*b.get(name_at)?, *b.get(name_at + 1)?]));
        b.get(name_at + 2 + name_len).copied()
    }

    /// The version of the CONNECT at the front of the read buffer (for a refusal).
    fn peek_connect_version(&self) -> ProtocolVersion {
        let b = &io_ref(&self.io).read_buf;
        // Fixed header, then the protocol name: MQIsdp is 3.1.
        let name_at = 1
            + (1..5)
                .find(|&i| b.get(i).is_some_and(|x| x & 0x80 == 0))
                .unwrap_or(1);
        match b.get(name_at + 2..name_at + 8) {
            Some(b"MQIsdp") => ProtocolVersion::V3_1,
            _ => ProtocolVersion::V3_1_1,
        }
    }

    fn violation(&mut self, _now: Instant, v: Violation) {
        self.close_for_input(CloseReason::Violation(v));
    }

    /// Closes because of what the peer sent (a violation, a DISCONNECT). When events from
    /// before it still wait to be taken (a SUBSCRIBE, a PUBLISH to acknowledge), the close
    /// waits for them: [`Event::Closed`] comes after them, and the answers the
    /// application gives them (SUBACK, PUBACK, PUBREC) leave before the DISCONNECT that
    /// reports a violation ([MQTT-4.13.1-1]). Meanwhile no more input is read and no
    /// timer runs.
    fn close_for_input(&mut self, reason: CloseReason) {
        if self.phase == Phase::Open && !self.closing && !io_ref(&self.io).events.is_empty() {
            self.closing = true;
            self.timers.stop_all();
            if let Some(b) = self.io.as_mut() {
                b.read_buf = BytesMut::new();
            }
            io(&mut self.io).events.push_back(Event::Closed(reason));
            return;
        }
        if let CloseReason::Violation(v) = &reason {
            self.send_disconnect(v.reason_code());
        }
        self.close(reason);
    }

    /// Closes once: the first reason is the one reported.
    fn close(&mut self, reason: CloseReason) {
        if self.phase == Phase::Closed || self.closing {
            return;
        }
        self.shut();
        io(&mut self.io).events.push_back(Event::Closed(reason));
    }

    /// The PINGRESP held back by `pingresp_pending`: two bytes, which fit any Maximum
    /// Packet Size.
    fn flush_pingresp(&mut self) {
        if std::mem::take(&mut self.pingresp_pending) && self.phase == Phase::Open {
            io(&mut self.io).out.extend_from_slice(&[0xd0, 0x00]);
        }
    }

    fn shut(&mut self) {
        self.phase = Phase::Closed;
        self.timers.stop_all();
        if let Some(b) = self.io.as_mut() {
            b.read_buf = BytesMut::new();
        }
    }

    fn arm_idle(&mut self, now: Instant) {
        if self.role == Role::Server && self.keep_alive != 0 {
            // [MQTT-3.1.2-24]: one and a half times the keep-alive.
            self.set_timer(Timer::Idle, now + self.keep_alive() + self.keep_alive() / 2);
        }
    }

    fn handle_packet(&mut self, now: Instant, packet: Packet) -> Result<(), Violation> {
        self.arm_idle(now);
        // The QoS flows are the same in both roles once the connection is open.
        let packet = match (self.phase, packet) {
            (Phase::Open, Packet::Publish(p)) => return self.incoming_publish(now, p),
            (Phase::Open, Packet::PubAck(r)) => {
                self.outgoing_puback(now, r);
                return Ok(());
            }
            (Phase::Open, Packet::PubRec(r)) => {
                self.outgoing_pubrec(now, r);
                return Ok(());
            }
            (Phase::Open, Packet::PubRel(r)) => return self.incoming_pubrel(now, r),
            (Phase::Open, Packet::PubComp(r)) => {
                self.outgoing_pubcomp(now, r);
                return Ok(());
            }
            (_, packet) => packet,
        };
        match self.role {
            Role::Server => self.server_packet(now, packet),
            Role::Client => self.client_packet(now, packet),
        }
    }

    fn server_packet(&mut self, now: Instant, packet: Packet) -> Result<(), Violation> {
        let t = packet.packet_type();
        match (self.phase, packet) {
            (Phase::Idle, Packet::Connect(c)) => {
                self.timers.stop(Timer::Connect);
                let v = c.protocol_version;
                self.version = Some(v);
                self.keep_alive = c.keep_alive;
                if v.is_v5() {
                    let p = &c.properties;
                    if let Some(rm) = p.receive_maximum {
                        self.peer.receive_maximum = rm.get();
                    }
                    if let Some(m) = p.maximum_packet_size {
                        self.peer.max_packet_size = m.get();
                    }
                    self.peer.topic_alias_maximum = p.topic_alias_maximum.unwrap_or(0);
                    self.session_expiry_zero = p.session_expiry_interval.unwrap_or(0) == 0;
                    self.problem_information = p.request_problem_information.unwrap_or(true);
                    self.enhanced_auth = p.authentication_method.is_some();
                }
                self.phase = Phase::Connecting;
                io(&mut self.io).events.push_back(Event::ConnectReceived(c));
                Ok(())
            }
            // [MQTT-3.1.0-1]: CONNECT first.
            (Phase::Idle, _) => Err(Violation::UnexpectedPacket(t)),
            // [MQTT-3.1.0-2]
            (_, Packet::Connect(_)) => Err(Violation::SecondConnect),
            (_, Packet::Disconnect(d)) => self.peer_disconnect(d),
            (_, Packet::Auth(a)) => self.incoming_auth(Role::Client, a),
            (Phase::Open, Packet::Subscribe(s)) => {
                io(&mut self.io).events.push_back(Event::Subscribe(s));
                Ok(())
            }
            (Phase::Open, Packet::Unsubscribe(u)) => {
                io(&mut self.io).events.push_back(Event::Unsubscribe(u));
                Ok(())
            }
            (Phase::Open, Packet::PingReq) => {
                // [MQTT-3.12.4-1]. Answers leave in the order of what they answer: after
                // a SUBSCRIBE or PUBLISH read with it, whose answers the application
                // gives once it takes their events.
                if io_ref(&self.io).events.is_empty() {
                    self.send(now, &Packet::PingResp);
                } else {
                    self.pingresp_pending = true;
                }
                Ok(())
            }
            _ => Err(Violation::UnexpectedPacket(t)),
        }
    }

    fn client_packet(&mut self, now: Instant, packet: Packet) -> Result<(), Violation> {
        let t = packet.packet_type();
        match (self.phase, packet) {
            (Phase::Connecting, Packet::ConnAck(c)) => {
                self.timers.stop(Timer::Connect);
                if !c.reason_code.is_success() {
                    self.close(CloseReason::Refused(c.reason_code));
                    return Ok(());
                }
                let v = self.version_or_default();
                if v.is_v5() {
                    let p = &c.properties;
                    if let Some(rm) = p.receive_maximum {
                        self.peer.receive_maximum = rm.get();
                    }
                    if let Some(m) = p.maximum_packet_size {
                        self.peer.max_packet_size = m.get();
                    }
                    self.peer.topic_alias_maximum = p.topic_alias_maximum.unwrap_or(0);
                    if let Some(q) = p.maximum_qos {
                        self.peer.maximum_qos = q;
                    }
                    if let Some(r) = p.retain_available {
                        self.peer.retain_available = r;
                    }
                    if let Some(ka) = p.server_keep_alive {
                        self.keep_alive = ka;
                        if self.keep_alive == 0 {
                            self.timers.stop(Timer::KeepAlive);
                        } else {
                            self.set_timer(Timer::KeepAlive, now + self.keep_alive());
                        }
                    }
                }
                self.phase = Phase::Open;
                let present = c.session_present;
                io(&mut self.io).events.push_back(Event::Connected(c));
                if present {
                    self.resend_inflight(now);
                    self.flush_acks(now);
                } else {
                    self.discard_session();
                }
                self.pump(now);
                Ok(())
            }
            // [MQTT-3.2.0-1]: CONNACK first.
            (Phase::Connecting, Packet::Disconnect(d)) if self.version_or_default().is_v5() => {
                self.peer_disconnect(d)
            }
            (Phase::Connecting, Packet::Auth(a)) => self.incoming_auth(Role::Server, a),
            (Phase::Open, Packet::SubAck(s)) => {
                if let Some(n) = self.take_pending_sub(s.packet_id) {
                    dm(&mut self.delivery).ids.free(s.packet_id);
                    if n != s.reason_codes.len() {
                        return Err(Violation::ReasonCodeCount(PacketType::SubAck));
                    }
                    io(&mut self.io).events.push_back(Event::SubAck(s));
                }
                Ok(())
            }
            (Phase::Open, Packet::UnsubAck(u)) => {
                if let Some(n) = self.take_pending_sub(u.packet_id) {
                    dm(&mut self.delivery).ids.free(u.packet_id);
                    if self.version_or_default().is_v5() && n != u.reason_codes.len() {
                        return Err(Violation::ReasonCodeCount(PacketType::UnsubAck));
                    }
                    io(&mut self.io).events.push_back(Event::UnsubAck(u));
                }
                Ok(())
            }
            (Phase::Open, Packet::PingResp) => {
                self.ping_outstanding = false;
                self.timers.stop(Timer::PingResp);
                Ok(())
            }
            (Phase::Open, Packet::Disconnect(d)) if self.version_or_default().is_v5() => {
                self.peer_disconnect(d)
            }
            (Phase::Open, Packet::Auth(a)) => self.incoming_auth(Role::Server, a),
            _ => Err(Violation::UnexpectedPacket(t)),
        }
    }

    /// Session Present 0: the server has no session, so ours is discarded (5.0
    /// [MQTT-3.2.2-5]-style rule: the client's stored state no longer matches). Messages
    /// not yet complete are handed back as dropped so the application can send them again.
    /// The number of filters of a SUBSCRIBE or UNSUBSCRIBE waiting for its answer.
    fn take_pending_sub(&mut self, id: PacketId) -> Option<usize> {
        self.pending_subs.as_mut()?.remove(&id.get())
    }

    fn discard_session(&mut self) {
        let d = dm(&mut self.delivery);
        let state = std::mem::take(&mut d.state);
        d.ids = PacketIds::default();
        for p in self.pending_subs.iter().flat_map(|m| m.keys()) {
            d.ids.mark(PacketId::new(*p).expect("non-zero"));
        }
        d.queued_bytes = 0;
        for e in state.inflight {
            if let Inflight::Publish(mut p) = e {
                // The packet id stays, so the application can tell which message it was.
                p.dup = false;
                io(&mut self.io).events.push_back(Event::Dropped {
                    publish: Box::new(p),
                    reason: DropReason::SessionLost,
                });
            }
        }
        // Queued messages were never sent: they stay queued with fresh packet ids.
        for mut p in state.queue {
            p.packet_id = if needs_id(&p) {
                dm(&mut self.delivery).ids.alloc()
            } else {
                None
            };
            dm(&mut self.delivery).queued_bytes += p.payload.len();
            dm(&mut self.delivery).state.queue.push_back(p);
        }
    }

    /// An AUTH from the peer, whose role is `sender`: only in an exchange the CONNECT began
    /// with an Authentication Method (5.0 [MQTT-4.12.0-6], [MQTT-4.12.0-7]), always
    /// naming a method (section 3.15.2.2.2), with a reason code `sender` may use now.
    fn incoming_auth(&mut self, sender: Role, a: Auth) -> Result<(), Violation> {
        if !self.enhanced_auth
            || a.properties.authentication_method.is_none()
            || !auth_reason_allowed(sender, a.reason_code, self.phase)
        {
            return Err(Violation::UnexpectedAuth);
        }
        io(&mut self.io).events.push_back(Event::Auth(a));
        Ok(())
    }

    fn peer_disconnect(&mut self, d: Disconnect) -> Result<(), Violation> {
        if self.role == Role::Server
            && self.session_expiry_zero
            && d.properties.session_expiry_interval.is_some_and(|s| s != 0)
        {
            return Err(Violation::SessionExpiryAfterZero);
        }
        self.close_for_input(CloseReason::Disconnected {
            reason_code: d.reason_code,
            properties: d.properties,
        });
        Ok(())
    }

    /// Incoming QoS 1/2 messages not yet complete on our side (counted against our
    /// Receive Maximum).
    fn incoming_inflight(&self) -> usize {
        let unacked_qos1 = dr(&self.delivery)
            .pending_acks
            .iter()
            .filter(|p| p.qos == QoS::AtLeastOnce)
            .count();
        unacked_qos1 + dr(&self.delivery).state.incoming_qos2.len()
    }

    fn incoming_publish(&mut self, now: Instant, mut p: Publish) -> Result<(), Violation> {
        let v5 = self.version_or_default().is_v5();
        if v5 && self.role == Role::Server {
            if !p.properties.subscription_identifiers.is_empty() {
                return Err(Violation::SubscriptionIdentifierFromClient);
            }
            if p.qos > self.config.maximum_qos {
                return Err(Violation::QoSNotSupported(p.qos));
            }
            if p.retain && !self.config.retain_available {
                return Err(Violation::RetainNotSupported);
            }
        }
        // `get_mut`: taking the alias through `DerefMut` would store an empty property set
        // (an allocation) in every PUBLISH that has none, and every copy would clone it.
        if let Some(alias) = p.properties.get_mut().and_then(|s| s.topic_alias.take()) {
            if alias.get() > self.config.topic_alias_maximum {
                return Err(Violation::TopicAliasTooLarge(alias.get()));
            }
            if p.topic.is_empty() {
                p.topic = self
                    .aliases
                    .as_ref()
                    .and_then(|a| a.incoming.get(&alias.get()))
                    .cloned()
                    .ok_or(Violation::UnknownTopicAlias(alias.get()))?;
            } else {
                self.aliases
                    .get_or_insert_with(Box::default)
                    .incoming
                    .insert(alias.get(), p.topic.clone());
            }
        }
        let Some(id) = p.packet_id else {
            io(&mut self.io).events.push_back(Event::Message(p));
            return Ok(());
        };
        if p.qos == QoS::ExactlyOnce && dr(&self.delivery).state.incoming_qos2.contains(&id) {
            // A resend before PUBREL: acknowledge again once the first is acknowledged,
            // never deliver twice (3.1.1 [MQTT-4.3.3-2]).
            if !dr(&self.delivery)
                .pending_acks
                .iter()
                .any(|a| a.packet_id == id)
            {
                let _ = self.send_ack_packet(now, Packet::PubRec(PubResponse::new(id)));
            }
            return Ok(());
        }
        if p.qos == QoS::AtLeastOnce
            && dr(&self.delivery)
                .pending_acks
                .iter()
                .any(|a| a.packet_id == id && a.qos == QoS::AtLeastOnce)
        {
            // Sent again before its PUBACK left: the same message, since its id stays in
            // use until acknowledged ([MQTT-2.2.1-3], 3.1.1 [MQTT-2.3.1-2]). Delivered
            // once; the one PUBACK answers both.
            return Ok(());
        }
        if self.incoming_inflight() >= usize::from(self.config.receive_maximum) {
            return Err(Violation::ReceiveMaximumExceeded);
        }
        if p.qos == QoS::ExactlyOnce {
            dm(&mut self.delivery).state.incoming_qos2.insert(id);
        }
        dm(&mut self.delivery).pending_acks.push_back(PendingAck {
            packet_id: id,
            qos: p.qos,
            reason: (!self.config.manual_acks).then_some(ReasonCode::Success),
        });
        io(&mut self.io).events.push_back(Event::Message(p));
        self.flush_acks(now);
        Ok(())
    }

    fn incoming_pubrel(&mut self, now: Instant, r: PubResponse) -> Result<(), Violation> {
        let id = r.packet_id;
        if dr(&self.delivery)
            .pending_acks
            .iter()
            .any(|a| a.packet_id == id && a.qos == QoS::ExactlyOnce)
        {
            return Err(Violation::PubRelBeforePubRec);
        }
        let mut comp = PubResponse::new(id);
        if dm(&mut self.delivery).state.incoming_qos2.remove(&id) {
            io(&mut self.io)
                .events
                .push_back(Event::Released { packet_id: id });
        } else if self.version_or_default().is_v5() {
            comp.reason_code = ReasonCode::PacketIdentifierNotFound;
        }
        let _ = self.send_ack_packet(now, Packet::PubComp(comp));
        Ok(())
    }

    fn position(&self, id: PacketId, released: bool) -> Option<usize> {
        dr(&self.delivery)
            .state
            .inflight
            .iter()
            .position(|e| match e {
                Inflight::Publish(p) => !released && p.packet_id == Some(id),
                Inflight::Released(r) => released && *r == id,
            })
    }

    fn complete(&mut self, now: Instant, at: usize, id: PacketId, reason_code: ReasonCode) {
        dm(&mut self.delivery).state.inflight.remove(at);
        dm(&mut self.delivery).ids.free(id);
        if self.delivery_events {
            io(&mut self.io).events.push_back(Event::Delivered {
                packet_id: id,
                reason_code,
            });
        }
        self.pump(now);
    }

    fn outgoing_puback(&mut self, now: Instant, r: PubResponse) {
        let at = self.position(r.packet_id, false).filter(|&i| {
            matches!(&dr(&self.delivery).state.inflight[i], Inflight::Publish(p) if p.qos == QoS::AtLeastOnce)
        });
        if let Some(at) = at {
            self.complete(now, at, r.packet_id, r.reason_code);
        }
    }

    fn outgoing_pubrec(&mut self, now: Instant, r: PubResponse) {
        let id = r.packet_id;
        let at = self.position(id, false).filter(|&i| {
            matches!(&dr(&self.delivery).state.inflight[i], Inflight::Publish(p) if p.qos == QoS::ExactlyOnce)
        });
        match at {
            Some(at) if !r.reason_code.is_success() => self.complete(now, at, id, r.reason_code),
            Some(at) => {
                dm(&mut self.delivery).state.inflight[at] = Inflight::Released(id);
                self.send(now, &Packet::PubRel(PubResponse::new(id)));
                io(&mut self.io)
                    .events
                    .push_back(Event::Received { packet_id: id });
            }
            None => {
                // A PUBREC again (our PUBREL crossed it), or for an id we do not know.
                let mut rel = PubResponse::new(id);
                if self.position(id, true).is_none() && self.version_or_default().is_v5() {
                    rel.reason_code = ReasonCode::PacketIdentifierNotFound;
                }
                self.send(now, &Packet::PubRel(rel));
            }
        }
    }

    fn outgoing_pubcomp(&mut self, now: Instant, r: PubResponse) {
        if let Some(at) = self.position(r.packet_id, true) {
            self.complete(now, at, r.packet_id, r.reason_code);
        }
    }
}
