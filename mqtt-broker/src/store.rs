//! Durable broker state: the records the core emits for every change that must survive a
//! restart, the [`Snapshot`] it restores from, and [`MemoryStore`], which applies records
//! to a snapshot in memory (the reference a disk store must agree with).
//!
//! # What is recorded
//!
//! With [`BrokerConfig::persistence`](crate::BrokerConfig::persistence) on, the core
//! emits [`Output::Store`](crate::Output::Store) records, in the order the changes happen,
//! for:
//! - sessions that outlive their connection (Clean Session 0 in 3.x, a Session Expiry
//!   Interval above 0 in 5.0): created, expiry changed, ended; their subscriptions;
//! - retained messages set and cleared;
//! - QoS 1/2 messages such a session holds, queued or in flight: the message body once
//!   ([`Record::Message`]) and each session's copy ([`Record::Queued`]) with its packet
//!   identifier once it has one, the QoS 2 PUBREC step ([`Record::Received`]), and the
//!   end of the copy ([`Record::Delivered`]: acknowledged, expired or dropped);
//! - incoming QoS 2 packet identifiers such a session's client has not released yet.
//!
//! Not recorded: sessions that end with their connection, QoS 0 messages (at most once
//! even when queued), in-memory counters. A retained message delivered on subscribe to a
//! persistent session is recorded like any other copy.
//!
//! # Acknowledgements after durability
//!
//! When a client's QoS 1/2 PUBLISH changed durable state, the core emits
//! [`Record::Sync`] after its records and holds the PUBACK / PUBREC until the adapter
//! calls [`Broker::handle_durable`](crate::Broker::handle_durable) with its `seq`, which it
//! does once every record up to the `Sync` is durable. A PUBLISH that changed nothing
//! durable (no persistent receiver, not retained) is acknowledged at once.
//!
//! # Restoring
//!
//! A store turns the records it kept into a [`Snapshot`], and
//! [`Broker::restore`](crate::Broker::restore) loads it before any connection: sessions
//! come back offline with their subscriptions, undelivered messages in their original
//! order (QoS 2 ones with the packet identifier they were sent with, released ones as
//! PUBREL), and the incoming QoS 2 identifiers that still block duplicates.

use mqtt_proto::{MqttString, PacketId, Publish, QoS, Subscription, TopicFilter};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::time::Duration;

/// A change of durable broker state, for a store to apply in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Record {
    /// A session that outlives its connection was created, or its expiry changed. The
    /// store keeps it until [`Record::SessionEnded`]. After a restart its expiry counts
    /// from when its client's connection closed ([`Record::SessionOffline`]) where the
    /// store knows that time, else from the restore.
    Session {
        /// Client identifier.
        client_id: MqttString,
        /// How long it lives after its connection closes.
        expiry: Duration,
    },
    /// A session ended; everything stored for it goes.
    SessionEnded {
        /// Client identifier.
        client_id: MqttString,
    },
    /// The connection of a stored session's client closed: its expiry runs from now. A
    /// store with a clock keeps the time, so that the expiry still counts from it after
    /// a restart ([`StoredSession::offline_for`]).
    SessionOffline {
        /// Client identifier.
        client_id: MqttString,
    },
    /// A stored session's client connected again: its expiry no longer runs.
    SessionOnline {
        /// Client identifier.
        client_id: MqttString,
    },
    /// A subscription of a stored session was added or replaced.
    Subscribed {
        /// Client identifier.
        client_id: MqttString,
        /// The subscription.
        subscription: Subscription,
        /// Its Subscription Identifier (5.0).
        identifier: Option<NonZeroU32>,
    },
    /// A subscription was removed.
    Unsubscribed {
        /// Client identifier.
        client_id: MqttString,
        /// The filter.
        filter: TopicFilter,
    },
    /// A retained message was stored (`Some`) or cleared (`None`).
    Retained {
        /// The topic.
        topic: String,
        /// The message.
        publish: Option<Box<Publish>>,
    },
    /// A message body that stored sessions will hold, recorded once however many hold
    /// it. It can go when no session holds it any more.
    Message {
        /// Its number, unique for the broker's lifetime and across restores.
        seq: u64,
        /// The message as routed (QoS of the publisher, no packet id, no Subscription
        /// Identifiers).
        publish: Box<Publish>,
    },
    /// A stored session holds a copy of message `seq` to deliver, after the copies it
    /// already holds.
    Queued {
        /// Client identifier.
        client_id: MqttString,
        /// The message.
        seq: u64,
        /// This copy's QoS (1 or 2).
        qos: QoS,
        /// This copy's RETAIN flag.
        retain: bool,
        /// This copy's Subscription Identifiers.
        subscription_identifiers: Vec<NonZeroU32>,
        /// Its packet identifier, if it has one yet.
        packet_id: Option<PacketId>,
    },
    /// The oldest copy of message `seq` without a packet identifier got this one (the
    /// session came online).
    PacketId {
        /// Client identifier.
        client_id: MqttString,
        /// The message.
        seq: u64,
        /// The packet identifier.
        packet_id: PacketId,
    },
    /// QoS 2: the client has the copy (PUBREC); only PUBREL / PUBCOMP remain, and a
    /// restore resends the PUBREL, never the PUBLISH.
    Received {
        /// Client identifier.
        client_id: MqttString,
        /// The message.
        seq: u64,
        /// The copy's packet identifier.
        packet_id: PacketId,
    },
    /// The session is done with one copy: acknowledged, expired, dropped, or handed to
    /// another member of a shared subscription.
    Delivered {
        /// Client identifier.
        client_id: MqttString,
        /// The message.
        seq: u64,
        /// The copy's packet identifier; `None`: the oldest copy without one. (A session
        /// can hold two copies of one message, through a shared subscription and another
        /// one.)
        packet_id: Option<PacketId>,
    },
    /// The session's client sent a QoS 2 message with this packet identifier and has not
    /// released it: a resend with the same identifier is a duplicate.
    IncomingQos2 {
        /// Client identifier.
        client_id: MqttString,
        /// The packet identifier.
        packet_id: PacketId,
    },
    /// The client released that identifier (PUBREL).
    IncomingReleased {
        /// Client identifier.
        client_id: MqttString,
        /// The packet identifier.
        packet_id: PacketId,
    },
    /// Call [`Broker::handle_durable`](crate::Broker::handle_durable) with `seq` once
    /// every record before this one is durable: a publisher's acknowledgement waits for
    /// it.
    Sync {
        /// Sequence number to answer with.
        seq: u64,
    },
}

/// One undelivered copy of a message held by a stored session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The message number ([`Record::Message`]).
    pub seq: u64,
    /// The copy as the session delivers it: its QoS, RETAIN, Subscription Identifiers
    /// and packet identifier (if it had one). A store that knows how long the message
    /// waited may lower its Message Expiry Interval accordingly.
    pub publish: Publish,
    /// QoS 2 and PUBREC received: only PUBREL / PUBCOMP remain.
    pub received: bool,
}

/// A stored session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredSession {
    /// How long it lives after its connection closes.
    pub expiry: Duration,
    /// How long before the snapshot its client's connection closed, when the store
    /// knows ([`Record::SessionOffline`] with a clock); `None` for a session whose
    /// client was connected when the broker stopped, or a store without a clock: its
    /// expiry then counts from the restore.
    pub offline_for: Option<Duration>,
    /// Subscriptions, with their Subscription Identifiers.
    pub subscriptions: Vec<(Subscription, Option<NonZeroU32>)>,
    /// Undelivered copies, oldest first.
    pub messages: Vec<StoredMessage>,
    /// Incoming QoS 2 packet identifiers not yet released by the client.
    pub incoming_qos2: BTreeSet<PacketId>,
}

/// Everything the broker restores from ([`Broker::restore`](crate::Broker::restore)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Sessions by client identifier.
    pub sessions: BTreeMap<String, StoredSession>,
    /// Retained messages.
    pub retained: Vec<Publish>,
    /// Above every message number in use: the next one the broker hands out.
    pub next_seq: u64,
}

/// A store in memory: applies records in order and answers with a [`Snapshot`]. It
/// defines what the records mean; a disk store keeps the same state in its tables.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    sessions: BTreeMap<String, StoredSession>,
    /// Message number -> (body, copies held by sessions).
    bodies: HashMap<u64, (Box<Publish>, usize)>,
    retained: BTreeMap<String, Publish>,
    next_seq: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one record. Records about unknown sessions or messages are ignored (a
    /// session that ended, a copy already delivered).
    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::Session { client_id, expiry } => {
                self.sessions
                    .entry(client_id.to_string())
                    .or_default()
                    .expiry = *expiry;
            }
            Record::SessionEnded { client_id } => {
                if let Some(s) = self.sessions.remove(client_id.as_str()) {
                    for m in s.messages {
                        self.release(m.seq);
                    }
                }
            }
            // No clock here: a restored session's expiry counts from the restore.
            Record::SessionOffline { .. } | Record::SessionOnline { .. } => {}
            Record::Subscribed {
                client_id,
                subscription,
                identifier,
            } => {
                if let Some(s) = self.sessions.get_mut(client_id.as_str()) {
                    s.subscriptions
                        .retain(|(x, _)| x.filter != subscription.filter);
                    s.subscriptions.push((subscription.clone(), *identifier));
                }
            }
            Record::Unsubscribed { client_id, filter } => {
                if let Some(s) = self.sessions.get_mut(client_id.as_str()) {
                    s.subscriptions.retain(|(x, _)| &x.filter != filter);
                }
            }
            Record::Retained { topic, publish } => match publish {
                Some(p) => {
                    self.retained.insert(topic.clone(), (**p).clone());
                }
                None => {
                    self.retained.remove(topic);
                }
            },
            Record::Message { seq, publish } => {
                self.next_seq = self.next_seq.max(seq + 1);
                self.bodies.insert(*seq, (publish.clone(), 0));
            }
            Record::Queued {
                client_id,
                seq,
                qos,
                retain,
                subscription_identifiers,
                packet_id,
            } => {
                let (Some(s), Some((body, refs))) = (
                    self.sessions.get_mut(client_id.as_str()),
                    self.bodies.get_mut(seq),
                ) else {
                    return;
                };
                let mut p = (**body).clone();
                p.qos = *qos;
                p.retain = *retain;
                crate::broker::set_subscription_identifiers(
                    &mut p,
                    subscription_identifiers.clone(),
                );
                p.packet_id = *packet_id;
                *refs += 1;
                s.messages.push(StoredMessage {
                    seq: *seq,
                    publish: p,
                    received: false,
                });
            }
            Record::PacketId {
                client_id,
                seq,
                packet_id,
            } => {
                if let Some(m) = self.copy(client_id, *seq, None) {
                    m.publish.packet_id = Some(*packet_id);
                }
            }
            Record::Received {
                client_id,
                seq,
                packet_id,
            } => {
                if let Some(m) = self.copy(client_id, *seq, Some(*packet_id)) {
                    m.received = true;
                }
            }
            Record::Delivered {
                client_id,
                seq,
                packet_id,
            } => {
                let Some(s) = self.sessions.get_mut(client_id.as_str()) else {
                    return;
                };
                let at = s
                    .messages
                    .iter()
                    .position(|m| m.seq == *seq && m.publish.packet_id == *packet_id);
                if let Some(at) = at {
                    s.messages.remove(at);
                    self.release(*seq);
                }
            }
            Record::IncomingQos2 {
                client_id,
                packet_id,
            } => {
                if let Some(s) = self.sessions.get_mut(client_id.as_str()) {
                    s.incoming_qos2.insert(*packet_id);
                }
            }
            Record::IncomingReleased {
                client_id,
                packet_id,
            } => {
                if let Some(s) = self.sessions.get_mut(client_id.as_str()) {
                    s.incoming_qos2.remove(packet_id);
                }
            }
            Record::Sync { .. } => {}
        }
    }

    /// The oldest copy of message `seq` with this packet identifier.
    fn copy(
        &mut self,
        client_id: &str,
        seq: u64,
        packet_id: Option<PacketId>,
    ) -> Option<&mut StoredMessage> {
        self.sessions
            .get_mut(client_id)?
            .messages
            .iter_mut()
            .find(|m| m.seq == seq && m.publish.packet_id == packet_id)
    }

    /// One session fewer holds message `seq`; the body goes with the last.
    fn release(&mut self, seq: u64) {
        if let Some((_, refs)) = self.bodies.get_mut(&seq) {
            *refs = refs.saturating_sub(1);
            if *refs == 0 {
                self.bodies.remove(&seq);
            }
        }
    }

    /// Message bodies held (for tests: a body no session holds is not kept).
    pub fn bodies(&self) -> usize {
        self.bodies.len()
    }

    /// What the broker restores from.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            sessions: self.sessions.clone(),
            retained: self.retained.values().cloned().collect(),
            next_seq: self.next_seq,
        }
    }
}
