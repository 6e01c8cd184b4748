//! Durable broker state on disk. [`Store`] applies the storage records of `mqtt-broker`
//! ([`Record`]) in atomic batches and, at start, reads everything back as a [`Snapshot`]
//! for [`Broker::restore`](mqtt_broker::Broker::restore). It means the same as
//! [`MemoryStore`](mqtt_broker::MemoryStore), the in-memory reference, on disk.
//!
//! # Use
//!
//! ```no_run
//! # fn demo(records: Vec<mqtt_broker::Record>) -> Result<(), mqtt_store::StoreError> {
//! let (mut store, snapshot) = mqtt_store::Store::open("data".as_ref())?;
//! // broker.restore(now, snapshot); then, for the records of each round of work:
//! store.write(&records)?; // one atomic batch
//! store.sync()?; // fsync: what was written survives a power loss
//! # let _ = snapshot; Ok(()) }
//! ```
//!
//! The store does not decide when to fsync: the adapter does, by its durability mode
//! (after every batch, on an interval, or never), and answers the broker's
//! [`Record::Sync`] only after the fsync that covers it. Writing many records per batch
//! and per fsync (group commit) keeps throughput high: an fsync costs the same for one
//! record or a thousand.
//!
//! # Why fjall
//!
//! [fjall](https://crates.io/crates/fjall) (a log-structured merge tree with a journal)
//! and [redb](https://crates.io/crates/redb) (a copy-on-write B-tree) were measured on
//! this project's machine (2 cores, a VM disk) with the write pattern of a broker: commits
//! of 20 records of 200 bytes, each also deleting an older record. Per commit, fjall 3.1
//! took 2.9 ms with an fsync and 13 µs without; redb 3.1 took 5.3 ms and 76 µs. The
//! journal makes a commit one sequential append and one fsync, which is what group
//! commit needs. Both detect damaged files by checksums.
//!
//! # Layout
//!
//! One fjall database in the data directory with a keyspace per kind of state: `meta`
//! (the format marker), `sessions`, `subscriptions`, `messages` (bodies, once each, with
//! the wall-clock time they were stored), `copies` (each session's undelivered copies, in
//! order), `incoming` (incoming QoS 2 packet identifiers), `offline` (the wall-clock time a
//! stored session's client disconnected, so that its expiry still counts from then after
//! a restart) and `retained`. Keys start with
//! the client identifier and a 0 byte, which MQTT strings cannot contain. Messages are
//! stored as MQTT 5.0 PUBLISH packets, so every property survives.
//!
//! # Damage
//!
//! [`Store::open`] checks the format marker and decodes every entry; anything it cannot
//! read is [`StoreError::Corrupt`] or [`StoreError::Open`], naming the directory. The
//! broker then refuses to start, or, if told to, moves the directory aside with
//! [`move_aside`] and starts empty.
//!
//! # Bounds
//!
//! The store holds what the broker holds, within the broker's queue limits: a session's
//! copies go when delivered, dropped or expired, a message body with its last copy, and a
//! session with everything it owns when it ends or expires. Messages whose Message Expiry
//! Interval passed while the broker was down are removed at start.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod persister;

pub use persister::{Committer, Durability, Persister, Report};

use bytes::{Buf, BufMut, BytesMut};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use mqtt_broker::{Record, Snapshot, StoredMessage, StoredSession};
use mqtt_proto::{
    Decoder, Packet, PacketId, ProtocolVersion, Publish, QoS, RetainHandling, Subscription,
    SubscriptionOptions, TopicFilter, MAX_PACKET_SIZE,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A key and its value.
type Entry = (Vec<u8>, Vec<u8>);

/// The format marker in `meta`.
const FORMAT: &[u8] = b"mqtt-store 1";

/// Why the store cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened (damaged files, no permission, no space).
    #[error("cannot open the store in {path}: {source}")]
    Open {
        /// The data directory.
        path: PathBuf,
        /// What fjall said.
        source: fjall::Error,
    },
    /// An entry could not be read.
    #[error("the store in {path} is damaged: {what}")]
    Corrupt {
        /// The data directory.
        path: PathBuf,
        /// Which entry and why.
        what: String,
    },
    /// The directory holds something else, or a store of another format.
    #[error("{path} does not hold a store of this version (format marker {found:?})")]
    Format {
        /// The data directory.
        path: PathBuf,
        /// The marker found.
        found: String,
    },
    /// Reading or writing failed.
    #[error("store IO in {path}: {source}")]
    Io {
        /// The data directory.
        path: PathBuf,
        /// What fjall said.
        source: fjall::Error,
    },
}

/// One undelivered copy, as the store keeps it in memory to find and update its entry.
#[derive(Debug, Clone)]
struct Copy {
    ordinal: u64,
    seq: u64,
    qos: QoS,
    retain: bool,
    received: bool,
    packet_id: Option<PacketId>,
    subscription_identifiers: Vec<NonZeroU32>,
}

#[derive(Debug, Default)]
struct Session {
    subscriptions: BTreeSet<String>,
    copies: Vec<Copy>,
    incoming: BTreeSet<u16>,
}

/// The durable broker state in a data directory. See the crate documentation.
pub struct Store {
    path: PathBuf,
    db: Database,
    meta: Keyspace,
    sessions: Keyspace,
    subscriptions: Keyspace,
    messages: Keyspace,
    copies: Keyspace,
    incoming: Keyspace,
    offline: Keyspace,
    retained: Keyspace,
    /// What is stored, without the message bodies, to find entries without reading.
    state: HashMap<String, Session>,
    /// Message number -> copies that hold it.
    refs: HashMap<u64, u32>,
    next_ordinal: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("sessions", &self.state.len())
            .field("messages", &self.refs.len())
            .finish()
    }
}

fn key(client_id: &str, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(client_id.len() + 1 + rest.len());
    k.extend_from_slice(client_id.as_bytes());
    k.push(0);
    k.extend_from_slice(rest);
    k
}

/// Splits a key made by [`key`].
fn split(k: &[u8]) -> Option<(&str, &[u8])> {
    let at = k.iter().position(|&b| b == 0)?;
    Some((std::str::from_utf8(&k[..at]).ok()?, &k[at + 1..]))
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A message as stored: the wall-clock time, then the PUBLISH in MQTT 5.0.
fn encode_message(p: &Publish) -> Vec<u8> {
    let mut p = p.clone();
    p.dup = false;
    p.properties.topic_alias = None;
    p.packet_id = (p.qos != QoS::AtMostOnce).then_some(PacketId::MIN);
    let mut buf = BytesMut::with_capacity(8 + p.encoded_len(ProtocolVersion::V5));
    buf.put_u64(wall_ms());
    p.encode(&mut buf, ProtocolVersion::V5, MAX_PACKET_SIZE)
        .expect("a routed message encodes");
    buf.to_vec()
}

/// The message and how long ago it was stored.
fn decode_message(v: &[u8]) -> Option<(Publish, Duration)> {
    if v.len() < 8 {
        return None;
    }
    let at = u64::from_be_bytes(v[..8].try_into().ok()?);
    let mut buf = BytesMut::from(&v[8..]);
    let Ok(Some(Packet::Publish(mut p))) = Decoder::client(ProtocolVersion::V5).decode(&mut buf)
    else {
        return None;
    };
    if !buf.is_empty() {
        return None;
    }
    p.packet_id = None;
    Some((p, Duration::from_millis(wall_ms().saturating_sub(at))))
}

/// Lowers the Message Expiry Interval by `waited`; `None` if it expired.
fn age(mut p: Publish, waited: Duration) -> Option<Publish> {
    if let Some(e) = p.properties.message_expiry_interval {
        let left = u64::from(e)
            .checked_sub(waited.as_secs())
            .filter(|l| *l > 0)?;
        p.properties.message_expiry_interval = Some(left as u32);
    }
    Some(p)
}

fn encode_copy(c: &Copy) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + 4 * c.subscription_identifiers.len());
    v.put_u64(c.seq);
    v.put_u8(c.qos as u8);
    v.put_u8(u8::from(c.retain) | u8::from(c.received) << 1);
    v.put_u16(c.packet_id.map_or(0, |p| p.get()));
    for id in &c.subscription_identifiers {
        v.put_u32(id.get());
    }
    v
}

fn decode_copy(ordinal: u64, mut v: &[u8]) -> Option<Copy> {
    if v.len() < 12 || !(v.len() - 12).is_multiple_of(4) {
        return None;
    }
    let seq = v.get_u64();
    let qos = QoS::from_u8(v.get_u8()).filter(|q| *q != QoS::AtMostOnce)?;
    let flags = v.get_u8();
    let packet_id = PacketId::new(v.get_u16());
    let mut ids = vec![];
    while v.has_remaining() {
        ids.push(NonZeroU32::new(v.get_u32())?);
    }
    Some(Copy {
        ordinal,
        seq,
        qos,
        retain: flags & 1 != 0,
        received: flags & 2 != 0,
        packet_id,
        subscription_identifiers: ids,
    })
}

fn encode_subscription(o: &SubscriptionOptions, id: Option<NonZeroU32>) -> Vec<u8> {
    let mut v = Vec::with_capacity(5);
    v.put_u8(
        o.qos as u8
            | u8::from(o.no_local) << 2
            | u8::from(o.retain_as_published) << 3
            | (o.retain_handling as u8) << 4,
    );
    v.put_u32(id.map_or(0, |i| i.get()));
    v
}

fn decode_subscription(mut v: &[u8]) -> Option<(SubscriptionOptions, Option<NonZeroU32>)> {
    if v.len() != 5 {
        return None;
    }
    let b = v.get_u8();
    let o = SubscriptionOptions {
        qos: QoS::from_u8(b & 3)?,
        no_local: b & 4 != 0,
        retain_as_published: b & 8 != 0,
        retain_handling: RetainHandling::from_u8(b >> 4)?,
    };
    Some((o, NonZeroU32::new(v.get_u32())))
}

/// Moves a damaged data directory aside (to `<dir>.damaged-<unix seconds>`) so the broker
/// can start with an empty one. Returns the new name.
pub fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".damaged-{secs}"));
    let to = PathBuf::from(name);
    std::fs::rename(path, &to)?;
    Ok(to)
}

impl Store {
    /// Opens (or creates) the store in `path` and reads everything back. Messages that
    /// expired while the broker was down are removed.
    pub fn open(path: &Path) -> Result<(Self, Snapshot), StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        if let Err(e) = std::fs::create_dir_all(path) {
            return Err(open_err(fjall::Error::Io(e)));
        }
        let db = Database::builder(path).open().map_err(open_err)?;
        let ks = |name: &str| {
            db.keyspace(name, KeyspaceCreateOptions::default)
                .map_err(open_err)
        };
        let mut store = Store {
            meta: ks("meta")?,
            sessions: ks("sessions")?,
            subscriptions: ks("subscriptions")?,
            messages: ks("messages")?,
            copies: ks("copies")?,
            incoming: ks("incoming")?,
            offline: ks("offline")?,
            retained: ks("retained")?,
            path: path.to_owned(),
            db,
            state: HashMap::new(),
            refs: HashMap::new(),
            next_ordinal: 0,
        };
        let snapshot = store.load()?;
        Ok((store, snapshot))
    }

    fn corrupt(&self, what: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            what,
        }
    }

    fn io(&self, source: fjall::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Every entry of a keyspace.
    fn entries(&self, ks: &Keyspace) -> Result<Vec<Entry>, StoreError> {
        let mut v = vec![];
        for g in ks.iter() {
            let (k, val) = g.into_inner().map_err(|e| self.io(e))?;
            v.push((k.to_vec(), val.to_vec()));
        }
        Ok(v)
    }

    fn load(&mut self) -> Result<Snapshot, StoreError> {
        match self.meta.get("format").map_err(|e| self.io(e))? {
            Some(f) if &f[..] == FORMAT => {}
            Some(f) => {
                return Err(StoreError::Format {
                    path: self.path.clone(),
                    found: String::from_utf8_lossy(&f).into_owned(),
                })
            }
            None => {
                let empty = [
                    &self.sessions,
                    &self.subscriptions,
                    &self.messages,
                    &self.copies,
                    &self.incoming,
                    &self.retained,
                ]
                .iter()
                .all(|k| k.first_key_value().is_none());
                if !empty {
                    return Err(StoreError::Format {
                        path: self.path.clone(),
                        found: String::new(),
                    });
                }
                self.meta.insert("format", FORMAT).map_err(|e| self.io(e))?;
                self.sync()?;
            }
        }
        let mut snap = Snapshot::default();
        let mut cleanup = self.db.batch();
        for (k, v) in self.entries(&self.sessions)? {
            let client = String::from_utf8(k)
                .map_err(|_| self.corrupt("a session key is not UTF-8".into()))?;
            let secs: [u8; 8] = v
                .as_slice()
                .try_into()
                .map_err(|_| self.corrupt(format!("session {client:?}: bad value")))?;
            snap.sessions.insert(
                client.clone(),
                StoredSession {
                    expiry: Duration::from_secs(u64::from_be_bytes(secs)),
                    ..Default::default()
                },
            );
            self.state.insert(client, Session::default());
        }
        for (k, v) in self.entries(&self.subscriptions)? {
            let bad = || format!("subscription {:?}", String::from_utf8_lossy(&k));
            let (client, filter) = split(&k).ok_or_else(|| self.corrupt(bad()))?;
            let filter = std::str::from_utf8(filter)
                .ok()
                .and_then(|f| TopicFilter::new(f).ok())
                .ok_or_else(|| self.corrupt(bad()))?;
            let (options, id) = decode_subscription(&v).ok_or_else(|| self.corrupt(bad()))?;
            let (Some(s), Some(st)) = (snap.sessions.get_mut(client), self.state.get_mut(client))
            else {
                cleanup.remove(&self.subscriptions, k.clone());
                continue;
            };
            st.subscriptions.insert(filter.to_string());
            s.subscriptions.push((Subscription { filter, options }, id));
        }
        for (k, _) in self.entries(&self.incoming)? {
            let (client, id) = split(&k)
                .filter(|(_, id)| id.len() == 2)
                .ok_or_else(|| self.corrupt("an incoming QoS 2 key".into()))?;
            let id = u16::from_be_bytes([id[0], id[1]]);
            let (Some(s), Some(st), Some(pid)) = (
                snap.sessions.get_mut(client),
                self.state.get_mut(client),
                PacketId::new(id),
            ) else {
                cleanup.remove(&self.incoming, k.clone());
                continue;
            };
            st.incoming.insert(id);
            s.incoming_qos2.insert(pid);
        }
        let now = wall_ms();
        for (k, v) in self.entries(&self.offline)? {
            let client = std::str::from_utf8(&k).unwrap_or_default();
            let at: Option<[u8; 8]> = v.as_slice().try_into().ok();
            let (Some(s), Some(at)) = (snap.sessions.get_mut(client), at) else {
                cleanup.remove(&self.offline, k.clone());
                continue;
            };
            // A clock set back counts as no time.
            s.offline_for = Some(Duration::from_millis(
                now.saturating_sub(u64::from_be_bytes(at)),
            ));
        }
        let mut bodies: BTreeMap<u64, (Publish, Duration)> = BTreeMap::new();
        for (k, v) in self.entries(&self.messages)? {
            let seq: [u8; 8] = k
                .as_slice()
                .try_into()
                .map_err(|_| self.corrupt("a message key".into()))?;
            let seq = u64::from_be_bytes(seq);
            let body = decode_message(&v).ok_or_else(|| self.corrupt(format!("message {seq}")))?;
            bodies.insert(seq, body);
        }
        snap.next_seq = bodies.keys().next_back().map_or(0, |s| s + 1);
        for (k, v) in self.entries(&self.copies)? {
            let bad = || format!("a copy {:?}", String::from_utf8_lossy(&k));
            let (client, ordinal) = split(&k)
                .filter(|(_, o)| o.len() == 8)
                .ok_or_else(|| self.corrupt(bad()))?;
            let ordinal = u64::from_be_bytes(ordinal.try_into().expect("8 bytes"));
            self.next_ordinal = self.next_ordinal.max(ordinal + 1);
            let c = decode_copy(ordinal, &v).ok_or_else(|| self.corrupt(bad()))?;
            let Some((body, waited)) = bodies.get(&c.seq) else {
                return Err(self.corrupt(format!(
                    "{} holds message {} without body",
                    bad(),
                    c.seq
                )));
            };
            let (Some(s), Some(st)) = (snap.sessions.get_mut(client), self.state.get_mut(client))
            else {
                cleanup.remove(&self.copies, k.clone());
                continue;
            };
            // A received copy needs nothing but its id: it never expires.
            let p = if c.received {
                Some(body.clone())
            } else {
                age(body.clone(), *waited)
            };
            let Some(mut p) = p else {
                // Expired while the broker was down.
                cleanup.remove(&self.copies, k.clone());
                continue;
            };
            p.qos = c.qos;
            p.retain = c.retain;
            p.packet_id = c.packet_id;
            p.properties.subscription_identifiers = c.subscription_identifiers.clone();
            s.messages.push(StoredMessage {
                seq: c.seq,
                publish: p,
                received: c.received,
            });
            *self.refs.entry(c.seq).or_default() += 1;
            st.copies.push(c);
        }
        for seq in bodies.keys() {
            if !self.refs.contains_key(seq) {
                cleanup.remove(&self.messages, seq.to_be_bytes());
            }
        }
        for (k, v) in self.entries(&self.retained)? {
            let topic = String::from_utf8_lossy(&k).into_owned();
            let (p, waited) = decode_message(&v)
                .ok_or_else(|| self.corrupt(format!("retained message on {topic:?}")))?;
            match age(p, waited) {
                Some(p) => snap.retained.push(p),
                None => cleanup.remove(&self.retained, k.clone()),
            }
        }
        if !cleanup.is_empty() {
            cleanup.commit().map_err(|e| self.io(e))?;
            self.sync()?;
        }
        Ok(snap)
    }

    /// Applies records in order as one atomic batch: after a crash either all of them
    /// are there or none. Durable after the next [`sync`](Self::sync).
    pub fn write(&mut self, records: &[Record]) -> Result<(), StoreError> {
        let mut b = self.db.batch();
        for r in records {
            match r {
                Record::Session { client_id, expiry } => {
                    self.state.entry(client_id.to_string()).or_default();
                    b.insert(
                        &self.sessions,
                        client_id.as_str().as_bytes(),
                        expiry.as_secs().to_be_bytes(),
                    );
                }
                Record::SessionOffline { client_id }
                    if self.state.contains_key(client_id.as_str()) =>
                {
                    b.insert(
                        &self.offline,
                        client_id.as_str().as_bytes(),
                        wall_ms().to_be_bytes(),
                    );
                }
                Record::SessionOnline { client_id } => {
                    b.remove(&self.offline, client_id.as_str().as_bytes());
                }
                Record::SessionEnded { client_id } => {
                    let Some(s) = self.state.remove(client_id.as_str()) else {
                        continue;
                    };
                    b.remove(&self.sessions, client_id.as_str().as_bytes());
                    b.remove(&self.offline, client_id.as_str().as_bytes());
                    for f in &s.subscriptions {
                        b.remove(&self.subscriptions, key(client_id, f.as_bytes()));
                    }
                    for id in &s.incoming {
                        b.remove(&self.incoming, key(client_id, &id.to_be_bytes()));
                    }
                    for c in &s.copies {
                        b.remove(&self.copies, key(client_id, &c.ordinal.to_be_bytes()));
                        self.release(&mut b, c.seq);
                    }
                }
                Record::Subscribed {
                    client_id,
                    subscription,
                    identifier,
                } => {
                    let Some(s) = self.state.get_mut(client_id.as_str()) else {
                        continue;
                    };
                    s.subscriptions.insert(subscription.filter.to_string());
                    b.insert(
                        &self.subscriptions,
                        key(client_id, subscription.filter.as_bytes()),
                        encode_subscription(&subscription.options, *identifier),
                    );
                }
                Record::Unsubscribed { client_id, filter } => {
                    let Some(s) = self.state.get_mut(client_id.as_str()) else {
                        continue;
                    };
                    if s.subscriptions.remove(filter.as_str()) {
                        b.remove(&self.subscriptions, key(client_id, filter.as_bytes()));
                    }
                }
                Record::Retained { topic, publish } => match publish {
                    Some(p) => b.insert(&self.retained, topic.as_bytes(), encode_message(p)),
                    None => b.remove(&self.retained, topic.as_bytes()),
                },
                Record::Message { seq, publish } => {
                    // Kept until its last copy goes (a body no copy ever took goes at the
                    // next start).
                    self.refs.insert(*seq, 0);
                    b.insert(&self.messages, seq.to_be_bytes(), encode_message(publish));
                }
                Record::Queued {
                    client_id,
                    seq,
                    qos,
                    retain,
                    subscription_identifiers,
                    packet_id,
                } => {
                    let (Some(s), Some(refs)) = (
                        self.state.get_mut(client_id.as_str()),
                        self.refs.get_mut(seq),
                    ) else {
                        continue;
                    };
                    *refs += 1;
                    let c = Copy {
                        ordinal: self.next_ordinal,
                        seq: *seq,
                        qos: *qos,
                        retain: *retain,
                        received: false,
                        packet_id: *packet_id,
                        subscription_identifiers: subscription_identifiers.clone(),
                    };
                    self.next_ordinal += 1;
                    b.insert(
                        &self.copies,
                        key(client_id, &c.ordinal.to_be_bytes()),
                        encode_copy(&c),
                    );
                    s.copies.push(c);
                }
                Record::PacketId {
                    client_id,
                    seq,
                    packet_id,
                } => {
                    if let Some(c) = self.copy(client_id, *seq, None) {
                        c.packet_id = Some(*packet_id);
                        let (k, v) = (key(client_id, &c.ordinal.to_be_bytes()), encode_copy(c));
                        b.insert(&self.copies, k, v);
                    }
                }
                Record::Received {
                    client_id,
                    seq,
                    packet_id,
                } => {
                    if let Some(c) = self.copy(client_id, *seq, Some(*packet_id)) {
                        c.received = true;
                        let (k, v) = (key(client_id, &c.ordinal.to_be_bytes()), encode_copy(c));
                        b.insert(&self.copies, k, v);
                    }
                }
                Record::Delivered {
                    client_id,
                    seq,
                    packet_id,
                } => {
                    let Some(s) = self.state.get_mut(client_id.as_str()) else {
                        continue;
                    };
                    let Some(at) = s
                        .copies
                        .iter()
                        .position(|c| c.seq == *seq && c.packet_id == *packet_id)
                    else {
                        continue;
                    };
                    let c = s.copies.remove(at);
                    b.remove(&self.copies, key(client_id, &c.ordinal.to_be_bytes()));
                    self.release(&mut b, c.seq);
                }
                Record::IncomingQos2 {
                    client_id,
                    packet_id,
                } => {
                    if let Some(s) = self.state.get_mut(client_id.as_str()) {
                        s.incoming.insert(packet_id.get());
                        b.insert(
                            &self.incoming,
                            key(client_id, &packet_id.get().to_be_bytes()),
                            [],
                        );
                    }
                }
                Record::IncomingReleased {
                    client_id,
                    packet_id,
                } => {
                    if let Some(s) = self.state.get_mut(client_id.as_str()) {
                        if s.incoming.remove(&packet_id.get()) {
                            b.remove(
                                &self.incoming,
                                key(client_id, &packet_id.get().to_be_bytes()),
                            );
                        }
                    }
                }
                _ => {}
            }
        }
        if b.is_empty() {
            return Ok(());
        }
        b.commit().map_err(|e| self.io(e))
    }

    /// Makes everything written so far durable (fsync).
    pub fn sync(&self) -> Result<(), StoreError> {
        self.db
            .persist(PersistMode::SyncAll)
            .map_err(|e| self.io(e))
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stored sessions and message bodies.
    pub fn counts(&self) -> (usize, usize) {
        (self.state.len(), self.refs.len())
    }

    fn copy(
        &mut self,
        client_id: &str,
        seq: u64,
        packet_id: Option<PacketId>,
    ) -> Option<&mut Copy> {
        self.state
            .get_mut(client_id)?
            .copies
            .iter_mut()
            .find(|c| c.seq == seq && c.packet_id == packet_id)
    }

    /// One copy fewer holds message `seq`; the body goes with the last.
    fn release(&mut self, b: &mut fjall::OwnedWriteBatch, seq: u64) {
        if let Some(n) = self.refs.get_mut(&seq) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.refs.remove(&seq);
                b.remove(&self.messages, seq.to_be_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_back() {
        let k = key("client", b"a/b");
        assert_eq!(split(&k), Some(("client", &b"a/b"[..])));
    }

    #[test]
    fn a_message_survives_encoding_with_its_properties() {
        let mut p = Publish::new(TopicName::new("t/x").unwrap(), "payload");
        p.qos = QoS::ExactlyOnce;
        p.retain = true;
        p.properties.message_expiry_interval = Some(100);
        p.properties.content_type = Some(MqttString::new("text/plain").unwrap());
        let (back, waited) = decode_message(&encode_message(&p)).unwrap();
        assert!(waited < Duration::from_secs(5));
        assert_eq!(back, p);
    }

    use mqtt_proto::{MqttString, TopicName};
}
