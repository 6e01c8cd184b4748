//! The broker core: many connections, one routing table.

use crate::acl::Acl;
use crate::config::{BrokerConfig, DropPolicy};
use crate::smallmap::SmallMap;
use crate::store::{Record, Snapshot};
use crate::tree::{Match, SessionKey, SubEntry, SubscriptionTree};
use crate::types::*;
use bytes::Bytes;
use mqtt_proto::{
    AckProperties, Auth, ConnAck, Connect, DisconnectProperties, MqttString, PacketId, Publish,
    PublishProperties, QoS, ReasonCode, RetainHandling, Subscribe, Subscription, TopicFilter,
    TopicName, Unsubscribe, Will,
};
use mqtt_session::{
    CloseReason, Connection, DropReason, EncodedPublish, Event, Inflight, SessionState, UsageError,
};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::num::{NonZeroU32, NonZeroU64};
use std::time::{Duration, Instant};

/// A map keyed by the broker's own numbers (connection ids, session keys, sequence
/// numbers, packet ids it assigns): no client picks these keys, so the map needs no keyed
/// hasher, and SipHash on every lookup was a fifth of the core's instructions.
type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// An [`IdMap`] that most sessions never fill, allocated on its first insert: an empty
/// one costs a pointer instead of a hash table's 32 bytes.
struct LazyIdMap<K, V>(Option<Box<IdMap<K, V>>>);

impl<K, V> Default for LazyIdMap<K, V> {
    fn default() -> Self {
        Self(None)
    }
}

impl<K: std::hash::Hash + Eq, V> LazyIdMap<K, V> {
    fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|m| m.is_empty())
    }

    fn get(&self, k: &K) -> Option<&V> {
        self.0.as_ref()?.get(k)
    }

    fn insert(&mut self, k: K, v: V) -> Option<V> {
        self.0.get_or_insert_default().insert(k, v)
    }

    fn remove(&mut self, k: &K) -> Option<V> {
        self.0.as_mut()?.remove(k)
    }

    fn clear(&mut self) {
        self.0 = None;
    }
}

/// The sessions by client id. Only the session keys are kept: each entry's client id is
/// read from its session through `id_of`, so an entry costs 8 bytes rather than a second
/// view of the id (32 bytes) and the key. Client ids are the clients' choice, so the
/// hash is keyed (std's SipHash with a random key).
struct ClientIndex {
    table: hashbrown::HashTable<SessionKey>,
    hasher: std::hash::RandomState,
}

impl ClientIndex {
    fn new() -> Self {
        Self {
            table: hashbrown::HashTable::new(),
            hasher: std::hash::RandomState::new(),
        }
    }

    fn get<'a>(
        &self,
        id: &str,
        id_of: impl Fn(SessionKey) -> Option<&'a str>,
    ) -> Option<SessionKey> {
        let h = self.hasher.hash_one(id);
        self.table.find(h, |&k| id_of(k) == Some(id)).copied()
    }

    /// Makes `key` the session of `id` (its session must be in the map `id_of` reads).
    fn insert<'a>(
        &mut self,
        id: &str,
        key: SessionKey,
        id_of: impl Fn(SessionKey) -> Option<&'a str>,
    ) {
        let hasher = &self.hasher;
        let h = hasher.hash_one(id);
        // An entry whose session is gone cannot be hashed again; it hashes as the empty id
        // (sessions leave the index as they end, so there is none).
        let rehash = |&k: &SessionKey| hasher.hash_one(id_of(k).unwrap_or(""));
        match self.table.entry(h, |&k| id_of(k) == Some(id), rehash) {
            hashbrown::hash_table::Entry::Occupied(mut e) => *e.get_mut() = key,
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert(key);
            }
        }
    }

    /// Removes `id` if it leads to `key`.
    fn remove(&mut self, id: &str, key: SessionKey) {
        let h = self.hasher.hash_one(id);
        if let Ok(e) = self.table.find_entry(h, |&k| k == key) {
            e.remove();
        }
    }
}

/// One multiply per integer (FxHash's mixing step): fast, deterministic.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKey {
    Conn(ConnId),
    SessionExpiry(SessionKey),
    Will(SessionKey),
    Sys,
}

struct Conn {
    conn: Connection,
    info: ConnInfo,
    /// Its session's key (keys start at 1): 8 bytes where an `Option<SessionKey>` takes
    /// 16, which keeps the record in a smaller allocation.
    session: Option<NonZeroU64>,
    /// Shared, not copied, by each message's ACL check.
    username: Option<std::sync::Arc<str>>,
    will: Option<Box<Will>>,
    /// CONNECT waiting for the authentication answer.
    pending: Option<Box<Connect>>,
    /// The client id of a connection that has neither a session nor a CONNECT waiting
    /// (refused, or its session ended), for its last event; boxed, as the others keep
    /// theirs in the session.
    lone_client_id: Option<Box<MqttString>>,
    /// The client sent an empty client id and got one assigned.
    assigned: bool,
    /// In `Broker::dirty`: to be processed and flushed.
    dirty: bool,
    /// More is waiting to be written to it than the adapter allows before it drops QoS
    /// 0 ([`Broker::set_write_backlog`]).
    backlogged: bool,
    /// Deadline registered in the timer heap.
    deadline: Option<Instant>,
    /// When the transport connection opened.
    opened: Instant,
}

impl Conn {
    fn session(&self) -> Option<SessionKey> {
        self.session.map(NonZeroU64::get)
    }

    /// Its client id, kept once: its session's, while it waits for the authentication
    /// answer its CONNECT's, else [`lone_client_id`](Self::lone_client_id) (`None`
    /// before CONNECT).
    fn client_id<'a>(
        &'a self,
        sessions: &'a IdMap<SessionKey, Box<Session>>,
    ) -> Option<&'a MqttString> {
        match (self.session(), &self.pending) {
            (Some(key), _) => sessions.get(&key).map(|s| &s.client_id),
            (None, Some(p)) => Some(&p.client_id),
            (None, None) => self.lone_client_id.as_deref(),
        }
    }
}

struct Queued {
    at: Instant,
    publish: Publish,
    /// Its message number, if the session is stored.
    seq: Option<u64>,
}

/// What an offline session holds: boxed, so that a connected session (where all of it
/// is empty) costs a pointer for it.
struct Parked {
    /// The protocol state parked while offline.
    state: SessionState,
    /// Messages that arrived while offline.
    offline: VecDeque<Queued>,
    offline_bytes: usize,
    /// Acknowledgements made durable while the session was offline.
    durable_acks: Vec<(PacketId, ReasonCode)>,
    /// When `state` was parked: its queued messages' expiry counts from then.
    at: Instant,
    /// When the session expires, unless its client connects again (`None`: never).
    expires_at: Option<Instant>,
    /// A will waiting for its delay (only an offline session has one: its client's
    /// return cancels it).
    will: Option<Box<(Will, Instant)>>,
}

impl Parked {
    fn new(at: Instant) -> Box<Self> {
        Box::new(Parked {
            state: SessionState::default(),
            offline: VecDeque::new(),
            offline_bytes: 0,
            durable_acks: Vec::new(),
            at,
            expires_at: None,
            will: None,
        })
    }
}

struct Session {
    client_id: MqttString,
    conn: Option<ConnId>,
    /// Offline: the parked state and what arrived meanwhile.
    parked: Option<Box<Parked>>,
    subscriptions: SmallMap<TopicFilter, SubEntry>,
    /// How long the session lives after its connection closes, in seconds (0: it ends
    /// then; an Expiry Interval is 32 bits in MQTT 5.0, and longer ones are capped).
    expiry_secs: u32,
    /// QoS 1 messages sent to this session through a shared subscription and not yet
    /// acknowledged: if its connection ends they go to another member.
    shared_inflight: LazyIdMap<PacketId, TopicFilter>,
    /// The store keeps this session (persistence on and an expiry above zero).
    stored: bool,
    /// Stored sessions: message number of each QoS 1/2 copy with a packet id.
    seqs: LazyIdMap<PacketId, u64>,
}

impl Session {
    /// How long the session lives after its connection closes (0: it ends then).
    fn expiry(&self) -> Duration {
        Duration::from_secs(self.expiry_secs.into())
    }

    fn set_expiry(&mut self, expiry: Duration) {
        self.expiry_secs = expiry_secs(expiry);
    }
}

/// An expiry as a session keeps it: whole seconds, at most `u32::MAX` (136 years).
fn expiry_secs(expiry: Duration) -> u32 {
    u32::try_from(expiry.as_secs()).unwrap_or(u32::MAX)
}

struct Retained {
    publish: Publish,
    at: Instant,
}

/// The broker core: pure and deterministic, driven by an adapter.
///
/// - **Inputs**: [`handle_connection`](Self::handle_connection),
///   [`handle_input`](Self::handle_input), [`handle_closed`](Self::handle_closed),
///   [`handle_timeout`](Self::handle_timeout), [`handle_auth`](Self::handle_auth),
///   [`handle_durable`](Self::handle_durable).
/// - **Commands**: [`publish`](Self::publish) as the broker,
///   [`disconnect_client`](Self::disconnect_client), [`shutdown`](Self::shutdown).
/// - **Outputs**: [`poll_output`](Self::poll_output) (bytes per connection, batched;
///   closes; events; authentication requests; storage records) and
///   [`poll_timeout`](Self::poll_timeout).
/// - **Queries**: [`clients`](Self::clients), [`sessions`](Self::sessions),
///   [`subscriptions`](Self::subscriptions), [`retained`](Self::retained),
///   [`stats`](Self::stats), [`gauges`](Self::gauges),
///   [`queue_gauges`](Self::queue_gauges), [`started`](Self::started).
///
/// After every input or command, drain `poll_output` and arm a timer for `poll_timeout`.
/// A publisher never waits for a subscriber: each session has a bounded queue with a
/// documented drop policy ([`DropPolicy`]), counted in [`Stats`].
pub struct Broker {
    config: BrokerConfig,
    acl: Acl,
    hooks: Box<dyn Hooks>,
    // Boxed: a map's empty slots cost a pointer each, not a connection's or session's
    // size (a connection with its protocol state is about a kilobyte).
    conns: IdMap<ConnId, Box<Conn>>,
    sessions: IdMap<SessionKey, Box<Session>>,
    /// Keyed by the session's own client id (a shared view, not a copy).
    by_client_id: ClientIndex,
    next_key: SessionKey,
    next_assigned: u64,
    tree: SubscriptionTree,
    retained: BTreeMap<String, Retained>,
    out: VecDeque<Output>,
    dirty: Vec<ConnId>,
    timers: BinaryHeap<Reverse<(Instant, TimerKey)>>,
    stats: Stats,
    started: Instant,
    next_seq: u64,
    /// Acknowledgements waiting for durable records: seq -> (session, packet id, code).
    /// Keyed by session, not connection: after a reconnect the acknowledgement goes out on
    /// the new connection.
    held_acks: IdMap<u64, (SessionKey, PacketId, ReasonCode)>,
    matches: Vec<Match>,
    /// `config.session`, shared by every connection.
    session_config: std::sync::Arc<mqtt_session::Config>,
    /// Scratch space for routing: the non-shared matches (session, match number,
    /// options), sorted by session.
    targets: Vec<(SessionKey, u32, QoS, bool, Option<NonZeroU32>)>,
    /// Scratch space for routing: the copies of a message, one per receiving session.
    copies: Vec<(SessionKey, Publish)>,
    /// Payload bytes in all offline queues.
    offline_bytes: usize,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("connections", &self.conns.len())
            .field("sessions", &self.sessions.len())
            .field("subscriptions", &self.tree.len())
            .field("retained", &self.retained.len())
            .finish()
    }
}

impl Broker {
    /// A broker started at `now`.
    pub fn new(config: BrokerConfig, now: Instant) -> Self {
        let mut b = Self {
            config,
            acl: Acl::default(),
            hooks: Box::new(NoHooks),
            conns: IdMap::default(),
            sessions: IdMap::default(),
            by_client_id: ClientIndex::new(),
            next_key: 1,
            next_assigned: 0,
            tree: SubscriptionTree::default(),
            retained: BTreeMap::new(),
            out: VecDeque::new(),
            dirty: Vec::new(),
            timers: BinaryHeap::new(),
            stats: Stats::default(),
            started: now,
            next_seq: 0,
            held_acks: IdMap::default(),
            matches: Vec::new(),
            session_config: Default::default(),
            targets: Vec::new(),
            copies: Vec::new(),
            offline_bytes: 0,
        };
        // The broker acknowledges every QoS 1/2 message itself, after routing it.
        b.config.session.manual_acks = true;
        b.session_config = std::sync::Arc::new(b.config.session.clone());
        // Durations too long for an Instant (a deadline past its range) never come.
        if let Some(at) = b.config.sys_interval.and_then(|i| now.checked_add(i)) {
            b.timers.push(Reverse((at, TimerKey::Sys)));
        }
        b
    }

    /// Sets the ACL.
    pub fn set_acl(&mut self, acl: Acl) {
        self.acl = acl;
    }

    /// Sets the hooks.
    pub fn set_hooks(&mut self, hooks: Box<dyn Hooks>) {
        self.hooks = hooks;
    }

    /// The configuration.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    // ----- Outputs ----------------------------------------------------------------------

    /// The next output.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next.
    #[must_use]
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        // Drop stale entries at the top so the answer is a real deadline.
        while let Some(Reverse((at, key))) = self.timers.peek().copied() {
            if self.timer_valid(at, key) {
                return Some(at);
            }
            self.timers.pop();
        }
        None
    }

    fn timer_valid(&self, at: Instant, key: TimerKey) -> bool {
        match key {
            TimerKey::Conn(id) => self.conns.get(&id).is_some_and(|c| c.deadline == Some(at)),
            TimerKey::SessionExpiry(k) => self.sessions.get(&k).is_some_and(|s| {
                s.conn.is_none() && s.parked.as_ref().and_then(|p| p.expires_at) == Some(at)
            }),
            TimerKey::Will(k) => self
                .sessions
                .get(&k)
                .and_then(|s| s.parked.as_ref()?.will.as_ref())
                .is_some_and(|w| w.1 == at),
            TimerKey::Sys => true,
        }
    }

    // ----- Inputs -----------------------------------------------------------------------

    /// A transport connection opened.
    pub fn handle_connection(&mut self, now: Instant, id: ConnId, info: ConnInfo) {
        let conn = Connection::server(self.session_config.clone(), now);
        self.conns.insert(
            id,
            Box::new(Conn {
                conn,
                info,
                session: None,
                username: None,
                will: None,
                pending: None,
                lone_client_id: None,
                assigned: false,
                dirty: false,
                backlogged: false,
                deadline: None,
                opened: now,
            }),
        );
        self.touch(id);
        self.drain(now);
    }

    /// Bytes arrived on a connection.
    pub fn handle_input(&mut self, now: Instant, id: ConnId, bytes: &[u8]) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        self.stats.bytes_received += bytes.len() as u64;
        c.conn.handle_input(now, bytes);
        self.touch(id);
        self.drain(now);
    }

    /// A connection went idle (the adapter decides when: `adapter-tokio` when it parks
    /// the connection): its protocol state lets go of its empty buffers, which it keeps
    /// between packets otherwise ([`Connection::release_buffers`]). Nothing else changes.
    pub fn handle_idle(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.conn.release_buffers();
        }
    }

    /// A connection's transport closed.
    pub fn handle_closed(&mut self, now: Instant, id: ConnId) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.conn.handle_closed(now);
            self.touch(id);
            self.drain(now);
        }
    }

    /// A deadline from [`poll_timeout`](Self::poll_timeout) passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, key))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if !self.timer_valid(at, key) {
                continue;
            }
            match key {
                TimerKey::Conn(id) => {
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.deadline = None;
                        c.conn.handle_timeout(now);
                        self.touch(id);
                    }
                }
                TimerKey::SessionExpiry(k) => self.end_session(now, k),
                TimerKey::Will(k) => {
                    let will = self
                        .sessions
                        .get_mut(&k)
                        .and_then(|s| s.parked.as_mut()?.will.take());
                    if let Some(w) = will {
                        self.publish_will(now, w.0);
                    }
                }
                TimerKey::Sys => {
                    self.publish_sys(now);
                    if let Some(at) = self.config.sys_interval.and_then(|i| now.checked_add(i)) {
                        self.timers.push(Reverse((at, TimerKey::Sys)));
                    }
                }
            }
            self.drain(now);
        }
        self.drain(now);
    }

    /// The answer to an [`Output::Authenticate`].
    pub fn handle_auth(&mut self, now: Instant, id: ConnId, result: AuthResult) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        match result {
            AuthResult::Allow { username } => {
                if let Some(connect) = c.pending.take() {
                    if let Some(u) = username {
                        c.username = Some(u.into());
                    }
                    self.complete_connect(now, id, *connect);
                }
            }
            AuthResult::Deny(code) => {
                if let Some(p) = c.pending.take() {
                    c.lone_client_id = Some(Box::new(p.client_id));
                    self.stats.auth_failures += 1;
                    let _ = c.conn.reject(now, code);
                } else {
                    // Re-authentication refused: disconnect.
                    let _ = c
                        .conn
                        .disconnect(now, code, DisconnectProperties::default());
                }
                self.touch(id);
            }
            AuthResult::Continue(mut auth) => {
                // Without a method of its own, the answer goes on under the CONNECT's
                // ([MQTT-4.12.0-5]).
                let method = c
                    .pending
                    .as_ref()
                    .map(|p| &p.properties.authentication_method);
                if let (None, Some(Some(m))) = (&auth.properties.authentication_method, method) {
                    auth.properties.authentication_method = Some(m.clone());
                }
                if c.conn.auth(now, auth).is_err() {
                    // An exchange the client did not begin (its CONNECT named no method)
                    // or a reason code AUTH cannot carry here: refused.
                    if let Some(p) = c.pending.take() {
                        c.lone_client_id = Some(Box::new(p.client_id));
                        self.stats.auth_failures += 1;
                        let _ = c.conn.reject(now, ReasonCode::BadAuthenticationMethod);
                    } else {
                        let _ = c.conn.disconnect(
                            now,
                            ReasonCode::BadAuthenticationMethod,
                            DisconnectProperties::default(),
                        );
                    }
                }
                self.touch(id);
            }
        }
        self.drain(now);
    }

    /// The store made the record with this sequence number durable: the publisher's
    /// acknowledgement leaves.
    pub fn handle_durable(&mut self, now: Instant, seq: u64) {
        if let Some((key, packet_id, code)) = self.held_acks.remove(&seq) {
            if let Some(s) = self.sessions.get_mut(&key) {
                match s.conn {
                    Some(id) => {
                        if let Some(c) = self.conns.get_mut(&id) {
                            let _ = c.conn.ack(now, packet_id, code);
                            self.touch(id);
                        }
                    }
                    // Offline: the acknowledgement leaves when the session resumes.
                    None => s
                        .parked
                        .get_or_insert_with(|| Parked::new(now))
                        .durable_acks
                        .push((packet_id, code)),
                }
            }
        }
        self.drain(now);
    }

    /// Loads what a store kept ([`Snapshot`]), before any connection: stored sessions
    /// come back offline, each expiring `expiry` after its client disconnected
    /// (`offline_for` before `now`, or `now` when the store does not know) unless its
    /// client returns (one whose time ran out ends here),
    /// with their subscriptions, undelivered messages and incoming QoS 2 identifiers;
    /// retained messages come back too. Sessions already in the broker with the same
    /// client id are replaced.
    pub fn restore(&mut self, now: Instant, snapshot: Snapshot) {
        self.next_seq = self.next_seq.max(snapshot.next_seq);
        for p in snapshot.retained {
            self.retained.insert(
                p.topic.to_string(),
                Retained {
                    publish: p,
                    at: now,
                },
            );
        }
        for (client_id, stored) in snapshot.sessions {
            let Ok(client_id) = MqttString::new(&client_id) else {
                continue;
            };
            if let Some(k) = self.session_of(client_id.as_str()) {
                self.end_session(now, k);
            }
            let key = self.new_session(&client_id);
            for (sub, id) in stored.subscriptions {
                let entry = SubEntry {
                    options: sub.options,
                    id,
                };
                self.tree.insert(&sub.filter, key, entry.clone());
                let s = self.sessions.get_mut(&key).expect("session exists");
                s.subscriptions.insert(sub.filter, entry);
            }
            let s = self.sessions.get_mut(&key).expect("session exists");
            s.stored = self.config.persistence;
            s.set_expiry(stored.expiry);
            let parked = s.parked.insert(Parked::new(now));
            parked.state.incoming_qos2 = stored.incoming_qos2;
            // Copies with a packet id were in the inflight window or queued behind it,
            // oldest first; the window held at most `max_inflight`. Those may have been
            // sent: resent with DUP=1 on resume. The rest never were: sent first with
            // DUP=0 ([MQTT-3.3.1-1]), with the id they have.
            let mut may_have_been_sent = usize::from(self.config.session.max_inflight);
            for m in stored.messages {
                match m.publish.packet_id {
                    Some(id) if m.received => {
                        parked.state.inflight.push_back(Inflight::Released(id));
                        s.seqs.insert(id, m.seq);
                        may_have_been_sent = may_have_been_sent.saturating_sub(1);
                    }
                    Some(id) if may_have_been_sent > 0 => {
                        parked
                            .state
                            .inflight
                            .push_back(Inflight::Publish(m.publish));
                        s.seqs.insert(id, m.seq);
                        may_have_been_sent -= 1;
                    }
                    Some(id) => {
                        parked.state.queue.push_back(m.publish);
                        s.seqs.insert(id, m.seq);
                    }
                    None => {
                        let len = m.publish.payload.len();
                        parked.offline_bytes += len;
                        self.offline_bytes += len;
                        parked.offline.push_back(Queued {
                            at: now,
                            publish: m.publish,
                            seq: Some(m.seq),
                        });
                    }
                }
            }
            // Its expiry counts from when its client's connection closed, where the store
            // knows (5.0 section 3.1.2.11.2); an expiry too long for an Instant: the
            // session does not expire. One whose time ran out while the broker was down
            // ends now.
            let left = s
                .expiry()
                .saturating_sub(stored.offline_for.unwrap_or_default());
            if left.is_zero() {
                self.end_session(now, key);
                continue;
            }
            let expires_at = now.checked_add(left);
            if let Some(p) = s.parked.as_mut() {
                p.expires_at = expires_at;
            }
            if let Some(at) = expires_at {
                self.timers
                    .push(Reverse((at, TimerKey::SessionExpiry(key))));
            }
        }
        self.drain(now);
    }

    // ----- Commands ---------------------------------------------------------------------

    /// Publishes a message as the broker (no publisher session, no ACL).
    pub fn publish(&mut self, now: Instant, publish: Publish) -> usize {
        let n = self.accept_publish(now, None, publish);
        self.drain(now);
        n
    }

    /// Disconnects a client (5.0: DISCONNECT with `reason`). Returns false if it is not
    /// connected.
    pub fn disconnect_client(&mut self, now: Instant, client_id: &str, reason: ReasonCode) -> bool {
        let Some(id) = self
            .session_of(client_id)
            .and_then(|k| self.sessions.get(&k))
            .and_then(|s| s.conn)
        else {
            return false;
        };
        if let Some(c) = self.conns.get_mut(&id) {
            let _ = c
                .conn
                .disconnect(now, reason, DisconnectProperties::default());
            self.touch(id);
        }
        self.drain(now);
        true
    }

    /// Disconnects every client with 0x8B Server shutting down.
    pub fn shutdown(&mut self, now: Instant) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            if let Some(c) = self.conns.get_mut(&id) {
                if c.conn.is_open() {
                    let _ = c.conn.disconnect(
                        now,
                        ReasonCode::ServerShuttingDown,
                        DisconnectProperties::default(),
                    );
                } else {
                    c.conn.handle_closed(now);
                }
                self.touch(id);
            }
        }
        self.drain(now);
    }

    /// The adapter says whether more is waiting to be written to connection `id` than
    /// it allows before dropping QoS 0 (the client reads slower than messages come for
    /// it). While it is, QoS 0 messages for that connection are dropped, counted in
    /// [`Stats::dropped_write_backlog`] with a [`BrokerEvent::MessageDropped`]
    /// ([`Drop::WriteBacklog`]); QoS 1 and 2 messages are sent or queued as usual.
    pub fn set_write_backlog(&mut self, id: ConnId, backlogged: bool) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.backlogged = backlogged;
        }
    }

    // ----- Queries ----------------------------------------------------------------------

    /// What the adapter said of an open connection when it opened (peer, listener).
    pub fn conn_info(&self, id: ConnId) -> Option<&ConnInfo> {
        self.conns.get(&id).map(|c| &c.info)
    }

    /// Whether QoS 0 messages for connection `id` are being dropped (see
    /// [`set_write_backlog`](Self::set_write_backlog)).
    pub fn write_backlog(&self, id: ConnId) -> bool {
        self.conns.get(&id).is_some_and(|c| c.backlogged)
    }

    /// Connected clients.
    pub fn clients(&self) -> Vec<ClientInfo> {
        let mut v: Vec<ClientInfo> = self
            .conns
            .iter()
            .filter_map(|(id, c)| {
                Some(ClientInfo {
                    conn: *id,
                    client_id: c.client_id(&self.sessions)?.clone(),
                    username: c.username.as_deref().map(String::from),
                    peer: c.info.peer.clone(),
                    listener: c.info.listener.to_string(),
                    connected_at: c.opened,
                    version: c.conn.version()?,
                    keep_alive: c.conn.keep_alive().as_secs(),
                    inflight: c.conn.inflight(),
                    queued: c.conn.queued(),
                })
            })
            .filter(|ci| self.conns[&ci.conn].conn.is_open())
            .collect();
        v.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        v
    }

    /// All sessions, online and offline.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        let mut v: Vec<SessionInfo> = self
            .sessions
            .values()
            .map(|s| {
                let queued = match s.conn.and_then(|id| self.conns.get(&id)) {
                    Some(c) => c.conn.queued() + c.conn.inflight(),
                    None => s.parked.as_ref().map_or(0, |p| {
                        p.offline.len() + p.state.queue.len() + p.state.inflight.len()
                    }),
                };
                SessionInfo {
                    client_id: s.client_id.clone(),
                    online: s.conn.is_some(),
                    subscriptions: s.subscriptions.len(),
                    queued,
                    expiry_secs: s.expiry_secs.into(),
                    expires_at: match s.conn {
                        None => s.parked.as_ref().and_then(|p| p.expires_at),
                        Some(_) => None,
                    },
                }
            })
            .collect();
        v.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        v
    }

    /// Every subscription: client id, filter and options.
    pub fn subscriptions(&self) -> Vec<(MqttString, Subscription)> {
        let mut v = vec![];
        for s in self.sessions.values() {
            for (filter, e) in s.subscriptions.iter() {
                v.push((
                    s.client_id.clone(),
                    Subscription {
                        filter: filter.clone(),
                        options: e.options,
                    },
                ));
            }
        }
        v.sort_by(|a, b| (&a.0, a.1.filter.as_str()).cmp(&(&b.0, b.1.filter.as_str())));
        v
    }

    /// Retained messages.
    pub fn retained(&self) -> Vec<Publish> {
        self.retained.values().map(|r| r.publish.clone()).collect()
    }

    /// When the broker started (the `now` given to [`new`](Self::new)): uptime counts
    /// from it.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Gauges for metrics: (connections, sessions, subscriptions, retained messages,
    /// payload bytes in offline queues).
    pub fn gauges(&self) -> Gauges {
        Gauges {
            connections: self.conns.len(),
            sessions: self.sessions.len(),
            subscriptions: self.tree.len(),
            retained: self.retained.len(),
            offline_queued_bytes: self.offline_bytes,
        }
    }

    /// Queue depths across sessions, for metrics. It walks every session (and the
    /// messages parked with offline ones), so it suits a metrics scrape, not every input.
    pub fn queue_gauges(&self) -> QueueGauges {
        let mut g = QueueGauges::default();
        for s in self.sessions.values() {
            let (queued, bytes, inflight) = match s.conn.and_then(|id| self.conns.get(&id)) {
                Some(c) => (c.conn.queued(), c.conn.queued_bytes(), c.conn.inflight()),
                None => s.parked.as_ref().map_or((0, 0, 0), |p| {
                    (
                        p.offline.len() + p.state.queue.len(),
                        p.offline_bytes
                            + p.state.queue.iter().map(|q| q.payload.len()).sum::<usize>(),
                        p.state.inflight.len(),
                    )
                }),
            };
            g.queued_messages += queued;
            g.queued_bytes += bytes;
            g.inflight_messages += inflight;
            g.max_session_queued_messages = g.max_session_queued_messages.max(queued);
        }
        g
    }

    // ----- The work loop ----------------------------------------------------------------

    fn touch(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get_mut(&id) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    /// Handles the events of every touched connection, then flushes its bytes (one
    /// output per connection) and registers its next deadline.
    fn drain(&mut self, now: Instant) {
        while let Some(id) = self.dirty.pop() {
            if let Some(c) = self.conns.get_mut(&id) {
                c.dirty = false;
            }
            self.process(now, id);
        }
    }

    /// Handles a connection's events, then flushes it.
    fn process(&mut self, now: Instant, id: ConnId) {
        while let Some(ev) = self.conns.get_mut(&id).and_then(|c| c.conn.poll_event()) {
            self.on_event(now, id, ev);
        }
        self.flush(id);
    }

    fn flush(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if let Some(b) = c.conn.poll_transmit() {
            self.stats.bytes_sent += b.len() as u64;
            self.out.push_back(Output::Transmit(id, b));
        }
        if c.conn.is_closed() {
            self.conns.remove(&id);
            self.out.push_back(Output::Close(id));
            return;
        }
        // A deadline that moves later (keep-alive, with every packet) is not registered
        // again: the wake-up already registered finds nothing due and registers the new
        // one then. Only an earlier deadline adds an entry, so the timer heap does not
        // grow with the traffic.
        match (c.conn.poll_timeout(), c.deadline) {
            (Some(t), Some(d)) if d <= t => {}
            (Some(t), _) => {
                c.deadline = Some(t);
                self.timers.push(Reverse((t, TimerKey::Conn(id))));
            }
            (None, _) => c.deadline = None,
        }
    }

    fn on_event(&mut self, now: Instant, id: ConnId, ev: Event) {
        match ev {
            Event::ConnectReceived(c) => self.on_connect(now, id, c),
            Event::Message(p) => self.on_client_publish(now, id, p),
            Event::Subscribe(s) => self.on_subscribe(now, id, s),
            Event::Unsubscribe(u) => self.on_unsubscribe(now, id, u),
            Event::Auth(a) => self.on_auth(id, a),
            Event::Closed(reason) => self.on_closed(now, id, reason),
            Event::Delivered { packet_id, .. } => {
                if let Some(s) = self
                    .conns
                    .get(&id)
                    .and_then(|c| c.session())
                    .and_then(|k| self.sessions.get_mut(&k))
                {
                    // Both maps are empty unless the session is stored or takes part in
                    // shared subscriptions: no hashing then.
                    if !s.shared_inflight.is_empty() {
                        s.shared_inflight.remove(&packet_id);
                    }
                    let seq = if s.seqs.is_empty() {
                        None
                    } else {
                        s.seqs.remove(&packet_id)
                    };
                    if let Some(seq) = seq {
                        self.out.push_back(Output::Store(Record::Delivered {
                            client_id: s.client_id.clone(),
                            seq,
                            packet_id: Some(packet_id),
                        }));
                    }
                }
            }
            Event::Received { packet_id } => {
                if let Some(s) = key_of(&self.conns, id).and_then(|k| self.sessions.get_mut(&k)) {
                    if let Some(&seq) = s.seqs.get(&packet_id) {
                        self.out.push_back(Output::Store(Record::Received {
                            client_id: s.client_id.clone(),
                            seq,
                            packet_id,
                        }));
                    }
                }
            }
            Event::Released { packet_id } => {
                if let Some(s) = key_of(&self.conns, id)
                    .and_then(|k| self.sessions.get_mut(&k))
                    .filter(|s| s.stored)
                {
                    self.out.push_back(Output::Store(Record::IncomingReleased {
                        client_id: s.client_id.clone(),
                        packet_id,
                    }));
                }
            }
            Event::Dropped { reason, publish } => {
                if let Some(s) = key_of(&self.conns, id).and_then(|k| self.sessions.get_mut(&k)) {
                    if let Some(packet_id) = publish.packet_id {
                        if let Some(seq) = s.seqs.remove(&packet_id) {
                            self.out.push_back(Output::Store(Record::Delivered {
                                client_id: s.client_id.clone(),
                                seq,
                                packet_id: Some(packet_id),
                            }));
                        }
                    }
                }
                let reason = match reason {
                    DropReason::TooLarge => {
                        self.stats.dropped_too_large += 1;
                        Drop::TooLarge
                    }
                    DropReason::Expired => {
                        self.stats.dropped_expired += 1;
                        Drop::Expired
                    }
                    _ => {
                        self.stats.dropped_queue_full += 1;
                        Drop::QueueFull
                    }
                };
                let client_id = self
                    .conns
                    .get(&id)
                    .and_then(|c| c.client_id(&self.sessions).cloned());
                if let Some(client_id) = client_id {
                    self.out
                        .push_back(Output::Event(BrokerEvent::MessageDropped {
                            client_id,
                            reason,
                        }));
                }
            }
            _ => {}
        }
    }

    // ----- Connect ----------------------------------------------------------------------

    fn on_connect(&mut self, now: Instant, id: ConnId, mut connect: Box<Connect>) {
        // Kept for the connection and its session: a copy, not a view that would keep the
        // whole CONNECT (its password, its properties) alive as long.
        connect.client_id = connect.client_id.compact();
        let assigned = connect.client_id.is_empty();
        if assigned {
            // 3.1.1 with Clean Session 1 or 5.0: the server assigns one
            // (3.1.1 [MQTT-3.1.3-6], 5.0 [MQTT-3.1.3-6]); the decoder refused the rest.
            // Never one a restored session holds.
            loop {
                self.next_assigned += 1;
                connect.client_id =
                    MqttString::new(&format!("auto-{:016x}", self.next_assigned)).expect("valid");
                if self.session_of(connect.client_id.as_str()).is_none() {
                    break;
                }
            }
        }
        let info = self.conns[&id].info.clone();
        let anonymous =
            connect.username.is_none() && connect.properties.authentication_method.is_none();
        let refuse = if let Err(code) = self.hooks.validate_connection(&info, &connect) {
            Some(code)
        } else if connect.properties.authentication_method.is_some() && !self.config.authenticate {
            // 5.0 enhanced authentication needs an authenticator that knows the method;
            // without one the method is unsupported: refuse and close ([MQTT-4.12.0-1]).
            self.stats.auth_failures += 1;
            Some(ReasonCode::BadAuthenticationMethod)
        } else if connect.will.as_ref().is_some_and(|w| {
            !self.topic_ok(&w.topic)
                || broker_only(&w.topic)
                || !self
                    .acl
                    .can_publish(connect.username.as_deref(), &connect.client_id, &w.topic)
        }) {
            Some(ReasonCode::NotAuthorized)
        } else if anonymous
            && info.tls_identity.is_none()
            && !info.allow_anonymous.unwrap_or(self.config.allow_anonymous)
        {
            self.stats.auth_failures += 1;
            Some(ReasonCode::NotAuthorized)
        } else {
            None
        };
        let c = self.conns.get_mut(&id).expect("connection exists");
        c.assigned = assigned;
        c.username = connect.username.as_ref().map(|u| u.as_str().into());
        if let Some(code) = refuse {
            c.lone_client_id = Some(Box::new(connect.client_id.clone()));
            let _ = c.conn.reject(now, code);
            self.touch(id);
            return;
        }
        if self.config.authenticate && (!anonymous || info.tls_identity.is_some()) {
            self.out
                .push_back(Output::Authenticate(Box::new(AuthRequest {
                    conn: id,
                    client_id: connect.client_id.clone(),
                    username: connect.username.clone(),
                    password: connect.password.clone(),
                    tls_identity: info.tls_identity.as_deref().map(String::from),
                    method: connect.properties.authentication_method.clone(),
                    data: connect.properties.authentication_data.clone(),
                })));
            c.pending = Some(connect);
            return;
        }
        self.complete_connect(now, id, *connect);
    }

    fn on_auth(&mut self, id: ConnId, a: Auth) {
        let Some(c) = self.conns.get(&id) else {
            return;
        };
        let Some(client_id) = c.client_id(&self.sessions).cloned() else {
            return;
        };
        let properties = a.properties.into_inner();
        self.out
            .push_back(Output::Authenticate(Box::new(AuthRequest {
                conn: id,
                client_id,
                username: c.pending.as_ref().and_then(|p| p.username.clone()),
                password: None,
                tls_identity: c.info.tls_identity.as_deref().map(String::from),
                method: properties.authentication_method,
                data: properties.authentication_data,
            })));
    }

    fn complete_connect(&mut self, now: Instant, id: ConnId, mut connect: Connect) {
        let client_id = connect.client_id.clone();
        let v = connect.protocol_version;
        // Takeover: the old connection of this client id is closed (5.0 [MQTT-3.1.4-3]).
        if let Some(key) = self.session_of(client_id.as_str()) {
            if let Some(old) = self.sessions.get(&key).and_then(|s| s.conn) {
                if old != id {
                    self.take_over(now, old);
                }
            }
        }
        let mut session_present = false;
        let key = match self.session_of(client_id.as_str()) {
            Some(k) if !connect.clean_start => {
                session_present = true;
                k
            }
            Some(k) => {
                self.end_session(now, k);
                self.new_session(&client_id)
            }
            None => self.new_session(&client_id),
        };
        let expiry = if v.is_v5() {
            Duration::from_secs(
                connect
                    .properties
                    .session_expiry_interval
                    .unwrap_or(0)
                    .into(),
            )
            .min(self.config.max_session_expiry)
        } else if connect.clean_start {
            Duration::ZERO
        } else {
            self.config.persistent_session_expiry
        };
        let session = self.sessions.get_mut(&key).expect("session exists");
        session.conn = Some(id);
        let stored = self.config.persistence && !expiry.is_zero();
        if stored && (!session.stored || session.expiry_secs != expiry_secs(expiry)) {
            self.out.push_back(Output::Store(Record::Session {
                client_id: client_id.clone(),
                expiry,
            }));
        } else if !stored && session.stored {
            // Resumed with expiry 0: it ends with this connection, and the store can
            // forget it now.
            self.out.push_back(Output::Store(Record::SessionEnded {
                client_id: client_id.clone(),
            }));
            session.seqs.clear();
        }
        if stored && session.stored {
            // Its expiry stops running.
            self.out.push_back(Output::Store(Record::SessionOnline {
                client_id: client_id.clone(),
            }));
        }
        session.stored = stored;
        session.set_expiry(expiry);
        let parked = session.parked.take().unwrap_or_else(|| Parked::new(now));
        let Parked {
            mut state,
            offline,
            offline_bytes,
            durable_acks,
            at: parked_at,
            expires_at: _,
            // A delayed will of an earlier connection is cancelled by the resume.
            will: _,
        } = *parked;
        // Messages that waited in the parked connection's queue: the time offline counts
        // against their expiry too ([MQTT-3.3.2-5]).
        let waited = now.saturating_duration_since(parked_at);
        let queued = std::mem::take(&mut state.queue);
        let mut done = vec![];
        for p in queued {
            let packet_id = p.packet_id;
            match expire(p, waited) {
                Some(p) => state.queue.push_back(p),
                None => {
                    self.stats.dropped_expired += 1;
                    if let Some(id) = packet_id {
                        done.extend(session.seqs.remove(&id).map(|seq| (seq, Some(id))));
                    }
                }
            }
        }
        self.offline_bytes -= offline_bytes;
        // Messages that arrived while offline get their packet ids now, so a stored
        // session records them before anything is sent.
        let start = state.queue.len();
        let mut moved = vec![];
        // What arrived while offline is checked against the ACL now that the client is
        // known (see `route_from`).
        let user = self.conns.get(&id).and_then(|c| c.username.clone());
        for q in offline {
            if !self
                .acl
                .can_receive(user.as_deref(), client_id.as_str(), &q.publish.topic)
            {
                self.stats.receive_denied += 1;
                done.extend(q.seq.filter(|_| stored).map(|seq| (seq, None)));
            } else if let Some(p) = expire(q.publish, now.saturating_duration_since(q.at)) {
                state.queue.push_back(p);
                moved.push(q.seq.filter(|_| stored));
            } else {
                self.stats.dropped_expired += 1;
                done.extend(q.seq.filter(|_| stored).map(|seq| (seq, None)));
            }
        }
        state.assign_packet_ids();
        for (p, seq) in state.queue.iter().skip(start).zip(moved) {
            let Some(seq) = seq else { continue };
            match p.packet_id {
                Some(packet_id) => {
                    session.seqs.insert(packet_id, seq);
                    self.out.push_back(Output::Store(Record::PacketId {
                        client_id: client_id.clone(),
                        seq,
                        packet_id,
                    }));
                }
                // No packet id left: dropped on resume.
                None => done.push((seq, None)),
            }
        }
        for (seq, packet_id) in done {
            self.out.push_back(Output::Store(Record::Delivered {
                client_id: client_id.clone(),
                seq,
                packet_id,
            }));
        }
        let mut connack = ConnAck {
            session_present,
            ..Default::default()
        };
        if v.is_v5() {
            if self.conns.get(&id).is_some_and(|c| c.assigned) {
                connack.properties.assigned_client_identifier = Some(client_id.clone());
            }
            if let Some(max) = self.config.max_keep_alive {
                if connect.keep_alive == 0 || connect.keep_alive > max {
                    connack.properties.server_keep_alive = Some(max);
                }
            }
            if self.config.maximum_qos != QoS::ExactlyOnce {
                connack.properties.maximum_qos = Some(self.config.maximum_qos);
            }
            if expiry.as_secs()
                != u64::from(connect.properties.session_expiry_interval.unwrap_or(0))
            {
                connack.properties.session_expiry_interval = Some(expiry.as_secs() as u32);
            }
        }
        // Acknowledged copies are reported only where the session tracks copies one by
        // one: stored (their message numbers) or sent through a shared group.
        let delivery_events = self
            .sessions
            .get(&key)
            .is_some_and(|s| s.stored || !s.shared_inflight.is_empty());
        let c = self.conns.get_mut(&id).expect("connection exists");
        c.session = NonZeroU64::new(key);
        // A copy, kept until it is published or dropped: not a view of the CONNECT.
        c.will = connect.will.take().map(|w| Box::new(w.compact()));
        c.conn.set_delivery_events(delivery_events);
        let _ = c.conn.accept(now, connack, Some(state));
        // Acknowledgements that became durable while the session was offline.
        for (packet_id, code) in durable_acks {
            let _ = c.conn.ack(now, packet_id, code);
        }
        self.stats.connections_total += 1;
        self.out
            .push_back(Output::Event(BrokerEvent::ClientConnected {
                conn: id,
                client_id,
                username: c.username.as_deref().map(String::from),
                version: v,
                session_present,
                info: Box::new(c.info.clone()),
            }));
        self.touch(id);
    }

    /// The session of a client id.
    fn session_of(&self, client_id: &str) -> Option<SessionKey> {
        let sessions = &self.sessions;
        self.by_client_id.get(client_id, |k| {
            sessions.get(&k).map(|s| s.client_id.as_str())
        })
    }

    fn new_session(&mut self, client_id: &MqttString) -> SessionKey {
        let key = self.next_key;
        self.next_key += 1;
        self.sessions.insert(
            key,
            Box::new(Session {
                client_id: client_id.clone(),
                conn: None,
                parked: None,
                subscriptions: SmallMap::default(),
                expiry_secs: 0,
                shared_inflight: LazyIdMap::default(),
                stored: false,
                seqs: LazyIdMap::default(),
            }),
        );
        let sessions = &self.sessions;
        self.by_client_id.insert(client_id.as_str(), key, |k| {
            sessions.get(&k).map(|s| s.client_id.as_str())
        });
        key
    }

    /// Closes `old` because its client id connected again: 5.0 DISCONNECT 0x8E.
    fn take_over(&mut self, now: Instant, old: ConnId) {
        if let Some(c) = self.conns.get_mut(&old) {
            let _ = c.conn.disconnect(
                now,
                ReasonCode::SessionTakenOver,
                DisconnectProperties::default(),
            );
        }
        // Handle its Closed event now, so the session is parked before it resumes.
        if let Some(c) = self.conns.get_mut(&old) {
            c.dirty = false;
        }
        self.dirty.retain(|&id| id != old);
        self.process(now, old);
    }

    fn on_closed(&mut self, now: Instant, id: ConnId, reason: CloseReason) {
        let Some(c) = self.conns.remove(&id) else {
            return;
        };
        let client_id = c.client_id(&self.sessions).cloned();
        let Conn {
            mut conn,
            session: key,
            will,
            info,
            ..
        } = *c;
        // Its last bytes (a DISCONNECT or CONNACK refusal), then the close.
        if let Some(b) = conn.poll_transmit() {
            self.stats.bytes_sent += b.len() as u64;
            self.out.push_back(Output::Transmit(id, b));
        }
        self.out.push_back(Output::Close(id));
        // The session state leaves with the connection: it is parked below, its queue's
        // expiry intervals counted up to now.
        conn.age_queue(now);
        let state = conn.into_state();
        self.out
            .push_back(Output::Event(BrokerEvent::ClientDisconnected {
                conn: id,
                client_id,
                reason: reason.clone(),
                info: Box::new(info),
            }));
        let Some(key) = key.map(NonZeroU64::get) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        if s.conn != Some(id) {
            return;
        }
        s.conn = None;
        // Anything parked already (acknowledgements that became durable meanwhile) stays.
        let parked = s.parked.get_or_insert_with(|| Parked::new(now));
        parked.state = state;
        parked.at = now;
        self.redeliver_shared(now, key);
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        let mut publish_will = true;
        if let CloseReason::Disconnected {
            reason_code,
            properties,
        } = &reason
        {
            // A normal DISCONNECT discards the will; 0x04 asks for it.
            publish_will = *reason_code == ReasonCode::DisconnectWithWillMessage;
            if let Some(e) = properties.session_expiry_interval {
                let expiry = Duration::from_secs(e.into()).min(self.config.max_session_expiry);
                if s.stored && !expiry.is_zero() && expiry_secs(expiry) != s.expiry_secs {
                    self.out.push_back(Output::Store(Record::Session {
                        client_id: s.client_id.clone(),
                        expiry,
                    }));
                }
                s.set_expiry(expiry);
            }
        }
        if let (true, Some(will)) = (publish_will, will) {
            let delay =
                Duration::from_secs(will.properties.will_delay_interval.unwrap_or(0).into());
            let delay = delay.min(s.expiry());
            if delay.is_zero() {
                self.publish_will(now, *will);
            } else {
                let at = now + delay;
                s.parked.get_or_insert_with(|| Parked::new(now)).will = Some(Box::new((*will, at)));
                self.timers.push(Reverse((at, TimerKey::Will(key))));
            }
        }
        let s = self.sessions.get_mut(&key).expect("session exists");
        if s.expiry().is_zero() {
            self.end_session(now, key);
        } else {
            if s.stored {
                self.out.push_back(Output::Store(Record::SessionOffline {
                    client_id: s.client_id.clone(),
                }));
            }
            // An expiry too long for an Instant: the session does not expire.
            let expires_at = now.checked_add(s.expiry());
            if let Some(p) = s.parked.as_mut() {
                p.expires_at = expires_at;
            }
            if let Some(at) = expires_at {
                self.timers
                    .push(Reverse((at, TimerKey::SessionExpiry(key))));
            }
        }
    }

    /// A shared-subscription member's connection ended: its unacknowledged QoS 1
    /// messages from the group go to another member that is online (5.0 section 4.8.2
    /// allows it for QoS 1; a QoS 2 delivery in progress stays with its session,
    /// [MQTT-4.8.2-4]).
    fn redeliver_shared(&mut self, now: Instant, key: SessionKey) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        if s.shared_inflight.is_empty() {
            return;
        }
        let shared = std::mem::take(&mut s.shared_inflight);
        let mut moved = vec![];
        let take = |p: &Publish| p.packet_id.and_then(|id| shared.get(&id)).cloned();
        let parked = s.parked.get_or_insert_with(|| Parked::new(now));
        let mut kept = std::collections::VecDeque::new();
        for e in std::mem::take(&mut parked.state.inflight) {
            match &e {
                mqtt_session::Inflight::Publish(p) if take(p).is_some() => {
                    moved.push((take(p).expect("checked"), p.clone()))
                }
                _ => kept.push_back(e),
            }
        }
        parked.state.inflight = kept;
        let mut kept = std::collections::VecDeque::new();
        for p in std::mem::take(&mut parked.state.queue) {
            match take(&p) {
                Some(f) => moved.push((f, p)),
                None => kept.push_back(p),
            }
        }
        parked.state.queue = kept;
        for (filter, p) in moved {
            let s = self.sessions.get_mut(&key).expect("session exists");
            let client_id = s.client_id.clone();
            let seq = p.packet_id.and_then(|i| s.seqs.get(&i).copied());
            if p.properties.message_expiry_interval == Some(0) {
                // Expired on the way: not a new delivery to another member.
                self.stats.dropped_expired += 1;
                if let Some(packet_id) = p.packet_id {
                    if let Some(seq) = s.seqs.remove(&packet_id) {
                        self.out.push_back(Output::Store(Record::Delivered {
                            client_id,
                            seq,
                            packet_id: Some(packet_id),
                        }));
                    }
                }
                continue;
            }
            let sessions = &self.sessions;
            let other = self
                .tree
                .pick_shared(&filter, |k| {
                    k != key && sessions.get(&k).is_some_and(|s| s.conn.is_some())
                })
                .filter(|m| m.key != key);
            let Some(m) = other else {
                // No other member online: it stays with this session, with its packet
                // id.
                let s = self.sessions.get_mut(&key).expect("session exists");
                s.parked
                    .get_or_insert_with(|| Parked::new(now))
                    .state
                    .queue
                    .push_back(p);
                continue;
            };
            let mut copy = p.clone();
            copy.packet_id = None;
            copy.dup = false;
            copy.qos = copy.qos.min(m.entry.options.qos);
            set_subscription_identifiers(&mut copy, m.entry.id.into_iter().collect());
            let mut body = Body::recorded(&p, seq);
            if let Sent::Online(Some(id)) = self.send_to(now, m.key, copy, None, &mut body) {
                self.track_shared(m.key, id, filter);
            }
            // The copy left this session (after the other one took it: the body stays).
            let s = self.sessions.get_mut(&key).expect("session exists");
            if let Some(packet_id) = p.packet_id {
                if let Some(seq) = s.seqs.remove(&packet_id) {
                    self.out.push_back(Output::Store(Record::Delivered {
                        client_id,
                        seq,
                        packet_id: Some(packet_id),
                    }));
                }
            }
        }
    }

    /// A session ends: subscriptions go, a delayed will is published now.
    fn end_session(&mut self, now: Instant, key: SessionKey) {
        let Some(s) = self.sessions.remove(&key) else {
            return;
        };
        self.offline_bytes -= s.parked.as_ref().map_or(0, |p| p.offline_bytes);
        if let Some(id) = s.conn {
            if let Some(c) = self.conns.get_mut(&id) {
                c.session = None;
                c.lone_client_id = Some(Box::new(s.client_id.clone()));
            }
        }
        self.by_client_id.remove(s.client_id.as_str(), key);
        for (filter, _) in s.subscriptions.iter() {
            self.tree.remove(filter, key);
        }
        if s.stored {
            self.out.push_back(Output::Store(Record::SessionEnded {
                client_id: s.client_id.clone(),
            }));
        }
        self.out.push_back(Output::Event(BrokerEvent::SessionEnded {
            client_id: s.client_id,
        }));
        if let Some(w) = s.parked.and_then(|p| p.will) {
            self.publish_will(now, w.0);
        }
    }

    fn publish_will(&mut self, now: Instant, will: Will) {
        let mut p = Publish::new(will.topic, will.payload);
        p.qos = will.qos;
        p.retain = will.retain;
        let w = will.properties.into_inner();
        p.properties = PublishProperties {
            payload_format_indicator: w.payload_format_indicator,
            message_expiry_interval: w.message_expiry_interval,
            content_type: w.content_type,
            response_topic: w.response_topic,
            correlation_data: w.correlation_data,
            user_properties: w.user_properties,
            ..Default::default()
        }
        .into();
        self.accept_publish(now, None, p);
    }

    // ----- Publish ----------------------------------------------------------------------

    fn topic_ok(&self, t: &str) -> bool {
        t.len() <= self.config.max_topic_length
            && t.split('/').count() <= self.config.max_topic_levels
    }

    fn acl_publish(&self, user: Option<&str>, client_id: &str, topic: &str) -> bool {
        self.acl.can_publish(user, client_id, topic)
    }

    fn on_client_publish(&mut self, now: Instant, id: ConnId, mut p: Publish) {
        self.stats.messages_received += 1;
        let records_before = self.out.len();
        let c = &self.conns[&id];
        let client_id = c.client_id(&self.sessions).cloned().unwrap_or_default();
        let user = c.username.clone();
        let packet_id = p.packet_id;
        let code = if !self.topic_ok(&p.topic) {
            ReasonCode::TopicNameInvalid
        } else if broker_only(&p.topic) || !self.acl_publish(user.as_deref(), &client_id, &p.topic)
        {
            // Denied: dropped; 5.0 acknowledgements say 0x87, 3.x ones cannot say no.
            self.stats.publish_denied += 1;
            ReasonCode::NotAuthorized
        } else {
            match self.hooks.intercept_publish(&client_id, &mut p) {
                PublishDecision::Accept => {
                    let origin = self.conns[&id].session();
                    p.packet_id = None;
                    p.dup = false;
                    let n = self.route_from(now, origin, Some(client_id.clone()), p.clone());
                    if n == 0 {
                        ReasonCode::NoMatchingSubscribers
                    } else {
                        ReasonCode::Success
                    }
                }
                PublishDecision::Drop => ReasonCode::Success,
                PublishDecision::Reject(code) => code,
            }
        };
        let Some(packet_id) = packet_id else {
            return;
        };
        let key = key_of(&self.conns, id);
        if let Some(s) = key.and_then(|k| self.sessions.get_mut(&k)) {
            if s.stored && p.qos == QoS::ExactlyOnce && code.is_success() {
                // Its id blocks a resend as a duplicate, across a restart too.
                self.out.push_back(Output::Store(Record::IncomingQos2 {
                    client_id: s.client_id.clone(),
                    packet_id,
                }));
            }
        }
        let stored = self
            .out
            .range(records_before..)
            .any(|o| matches!(o, Output::Store(_)));
        if stored && code.is_success() {
            // The acknowledgement waits until the store has what it promises.
            let seq = self.next_seq;
            self.next_seq += 1;
            self.held_acks
                .insert(seq, (key.unwrap_or_default(), packet_id, code));
            self.out.push_back(Output::Store(Record::Sync { seq }));
        } else if let Some(c) = self.conns.get_mut(&id) {
            let _ = c.conn.ack(now, packet_id, code);
            self.touch(id);
        }
    }

    fn accept_publish(&mut self, now: Instant, client_id: Option<MqttString>, p: Publish) -> usize {
        self.route_from(now, None, client_id, p)
    }

    /// Stores it if retained, delivers it to every matching session. Returns the number
    /// of sessions it went to.
    fn route_from(
        &mut self,
        now: Instant,
        origin: Option<SessionKey>,
        client_id: Option<MqttString>,
        mut p: Publish,
    ) -> usize {
        if let Some(props) = p.properties.get_mut() {
            props.topic_alias = None;
            props.subscription_identifiers.clear();
        }
        if p.retain {
            let topic = p.topic.to_string();
            // `$SYS` topics are made anew by every broker: not worth a record.
            let record = self.config.persistence && !topic.starts_with("$SYS/");
            if p.payload.is_empty() {
                // An empty retained message clears the topic and is not stored
                // (5.0 [MQTT-3.3.1-6], 5.0 [MQTT-3.3.1-7]).
                if self.retained.remove(&topic).is_some() && record {
                    self.out.push_back(Output::Store(Record::Retained {
                        topic,
                        publish: None,
                    }));
                }
            } else {
                if record {
                    self.out.push_back(Output::Store(Record::Retained {
                        topic: topic.clone(),
                        publish: Some(Box::new(p.clone())),
                    }));
                }
                self.retained.insert(
                    topic,
                    Retained {
                        publish: p.clone(),
                        at: now,
                    },
                );
            }
        }
        let mut matches = std::mem::take(&mut self.matches);
        matches.clear();
        {
            let sessions = &self.sessions;
            self.tree.route(
                &p.topic,
                |k| sessions.get(&k).is_some_and(|s| s.conn.is_some()),
                &mut matches,
            );
        }
        if self.acl.may_deny_receive(&p.topic) {
            // A wildcard subscription is granted when no rule denies all of it; the
            // topics a rule denies its client are not delivered through it. Offline
            // sessions are checked when their client comes back, as who that is (its
            // user name) is known then. A shared group whose chosen member is denied
            // gets no copy.
            let (sessions, conns, acl) = (&self.sessions, &self.conns, &self.acl);
            let before = matches.len();
            matches.retain(|m| {
                let Some(s) = sessions.get(&m.key) else {
                    return true;
                };
                s.conn
                    .and_then(|id| conns.get(&id))
                    .is_none_or(|c| acl.can_receive(c.username.as_deref(), &s.client_id, &p.topic))
            });
            self.stats.receive_denied += (before - matches.len()) as u64;
        }
        // One copy per session for its non-shared subscriptions: the highest QoS, every
        // Subscription Identifier; shared groups each deliver their own copy.
        let mut targets = std::mem::take(&mut self.targets);
        targets.clear();
        let mut shared: Vec<(SessionKey, QoS, bool, Option<NonZeroU32>, TopicFilter)> = vec![];
        for m in &matches {
            let o = &m.entry.options;
            if let Some(f) = &m.shared {
                shared.push((m.key, o.qos, o.retain_as_published, m.entry.id, f.clone()));
                continue;
            }
            if o.no_local && Some(m.key) == origin {
                continue;
            }
            let seq = targets.len() as u32;
            targets.push((m.key, seq, o.qos, o.retain_as_published, m.entry.id));
        }
        self.matches = matches;
        // Sessions in key order; a session's matches stay in match order. Sorted by key
        // and match number: the order of a stable sort, without the scratch buffer a
        // stable sort of many targets allocates.
        targets.sort_unstable_by_key(|t| (t.0, t.1));
        let mut n = 0;
        let mut cache = EncodeCache::default();
        let mut body = Body::new(&p);
        let mut copies = std::mem::take(&mut self.copies);
        let mut i = 0;
        while i < targets.len() {
            let key = targets[i].0;
            let (mut qos, mut rap, mut ids) = (QoS::AtMostOnce, false, vec![]);
            while let Some(&(k, _, q, r, id)) = targets.get(i) {
                if k != key {
                    break;
                }
                qos = qos.max(q);
                rap |= r;
                ids.extend(id);
                i += 1;
            }
            copies.push((key, copy_for(&p, qos, rap, ids)));
        }
        self.targets = targets;
        // Every copy is made before any is sent. Making one takes a reference to the
        // topic and payload (an atomic increment), which waits for every store before it;
        // between sends, those are the sends' writes to the receivers' buffers, which are
        // rarely in cache.
        for (key, m) in copies.drain(..) {
            n += usize::from(self.deliver(now, key, m, &mut cache, None, &mut body));
        }
        // Kept for the next message, unless one with very many receivers made it large.
        copies.shrink_to(256);
        self.copies = copies;
        for (key, qos, rap, id, filter) in shared {
            let m = copy_for(&p, qos, rap, id.into_iter().collect());
            n += usize::from(self.deliver(now, key, m, &mut cache, Some(filter), &mut body));
        }
        self.out
            .push_back(Output::Event(BrokerEvent::MessageReceived {
                client_id,
                publish: Box::new(p),
                receivers: n,
            }));
        n
    }

    /// Remembers a QoS 1 copy sent to a session through a shared group, to give it to
    /// another member if the session's connection ends before it is acknowledged; the
    /// connection then reports its acknowledgements ([`Event::Delivered`]).
    fn track_shared(&mut self, key: SessionKey, id: PacketId, filter: TopicFilter) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        s.shared_inflight.insert(id, filter);
        if let Some(c) = s.conn.and_then(|c| self.conns.get_mut(&c)) {
            c.conn.set_delivery_events(true);
        }
    }

    /// Sends or queues one copy for a session. Returns false if it was dropped.
    fn deliver(
        &mut self,
        now: Instant,
        key: SessionKey,
        mut m: Publish,
        cache: &mut EncodeCache,
        shared: Option<TopicFilter>,
        body: &mut Body,
    ) -> bool {
        m.qos = m.qos.min(self.config.maximum_qos);
        let qos = m.qos;
        match self.send_to(now, key, m, Some(cache), body) {
            Sent::Dropped => false,
            Sent::Online(Some(id)) => {
                if let (Some(f), QoS::AtLeastOnce) = (shared, qos) {
                    self.track_shared(key, id, f);
                }
                true
            }
            Sent::Online(None) | Sent::Queued => true,
        }
    }

    fn send_to(
        &mut self,
        now: Instant,
        key: SessionKey,
        m: Publish,
        cache: Option<&mut EncodeCache>,
        body: &mut Body,
    ) -> Sent {
        let Some(s) = self.sessions.get_mut(&key) else {
            return Sent::Dropped;
        };
        // What a stored session records of this copy.
        let record = (s.stored && m.qos != QoS::AtMostOnce).then(|| Record::Queued {
            client_id: s.client_id.clone(),
            seq: 0,
            qos: m.qos,
            retain: m.retain,
            subscription_identifiers: m.properties.subscription_identifiers.clone(),
            packet_id: None,
        });
        let sent = match s.conn {
            Some(id) => {
                let Some(c) = self.conns.get_mut(&id) else {
                    return Sent::Dropped;
                };
                if c.backlogged && m.qos == QoS::AtMostOnce {
                    // The client reads slower than it is sent to. QoS 0 is "at most once"
                    // (section 4.3.1: the message arrives once or not at all): it is
                    // dropped rather than held for it. QoS 1 and 2 are bounded by the
                    // inflight window and the queue.
                    self.stats.dropped_write_backlog += 1;
                    self.out
                        .push_back(Output::Event(BrokerEvent::MessageDropped {
                            client_id: s.client_id.clone(),
                            reason: Drop::WriteBacklog,
                        }));
                    return Sent::Dropped;
                }
                let encoded = match (cache, c.conn.version()) {
                    (Some(cache), Some(v)) => cache.get(&m, v),
                    _ => None,
                };
                let r = match encoded {
                    Some(e) => c.conn.publish_encoded(now, m, e),
                    None => c.conn.publish(now, m),
                };
                let mut done = None;
                // The result is matched where the call returns it, never moved whole: a
                // wide copy of it would wait for every store the call made (a
                // store-forwarding failure), a large share of a fan-out's time.
                let r = match r {
                    Ok(id) => Ok(id),
                    Err(UsageError::QueueFull(m))
                        if self.config.drop_policy == DropPolicy::DropOldest =>
                    {
                        let old = c.conn.pop_queued().and_then(|p| p.packet_id);
                        done = old.and_then(|i| Some((s.seqs.remove(&i)?, i)));
                        self.stats.dropped_queue_full += 1;
                        self.out
                            .push_back(Output::Event(BrokerEvent::MessageDropped {
                                client_id: s.client_id.clone(),
                                reason: Drop::QueueFull,
                            }));
                        c.conn
                            .publish(now, *m)
                            .map_err(|e| matches!(e, UsageError::QueueFull(_)))
                    }
                    Err(e) => Err(matches!(e, UsageError::QueueFull(_))),
                };
                let sent = match r {
                    Ok(id) => {
                        self.stats.messages_sent += 1;
                        Sent::Online(id)
                    }
                    Err(true) => {
                        self.stats.dropped_queue_full += 1;
                        self.out
                            .push_back(Output::Event(BrokerEvent::MessageDropped {
                                client_id: s.client_id.clone(),
                                reason: Drop::QueueFull,
                            }));
                        Sent::Dropped
                    }
                    Err(false) => Sent::Dropped,
                };
                if let Some((seq, packet_id)) = done {
                    self.out.push_back(Output::Store(Record::Delivered {
                        client_id: s.client_id.clone(),
                        seq,
                        packet_id: Some(packet_id),
                    }));
                }
                // `touch`, with the connection at hand.
                if !c.dirty {
                    c.dirty = true;
                    self.dirty.push(id);
                }
                sent
            }
            None => 'offline: {
                if m.qos == QoS::AtMostOnce && !self.config.queue_qos0_offline {
                    self.stats.qos0_offline_skipped += 1;
                    break 'offline Sent::Dropped;
                }
                let parked = s.parked.get_or_insert_with(|| Parked::new(now));
                let full = |p: &Parked, extra: usize| {
                    p.offline.len() >= self.config.max_offline_messages
                        || p.offline_bytes + extra > self.config.max_offline_bytes
                };
                let len = m.payload.len();
                if full(parked, len) {
                    if self.config.drop_policy == DropPolicy::DropNewest {
                        self.stats.dropped_queue_full += 1;
                        self.out
                            .push_back(Output::Event(BrokerEvent::MessageDropped {
                                client_id: s.client_id.clone(),
                                reason: Drop::QueueFull,
                            }));
                        break 'offline Sent::Dropped;
                    }
                    while full(parked, len) {
                        let Some(old) = parked.offline.pop_front() else {
                            break;
                        };
                        parked.offline_bytes -= old.publish.payload.len();
                        self.offline_bytes -= old.publish.payload.len();
                        self.stats.dropped_queue_full += 1;
                        self.out
                            .push_back(Output::Event(BrokerEvent::MessageDropped {
                                client_id: s.client_id.clone(),
                                reason: Drop::QueueFull,
                            }));
                        if let Some(seq) = old.seq {
                            self.out.push_back(Output::Store(Record::Delivered {
                                client_id: s.client_id.clone(),
                                seq,
                                packet_id: None,
                            }));
                        }
                    }
                    if full(parked, len) {
                        break 'offline Sent::Dropped;
                    }
                }
                if self.offline_bytes + len > self.config.max_total_offline_bytes {
                    self.stats.dropped_memory_budget += 1;
                    self.out
                        .push_back(Output::Event(BrokerEvent::MessageDropped {
                            client_id: s.client_id.clone(),
                            reason: Drop::MemoryBudget,
                        }));
                    break 'offline Sent::Dropped;
                }
                self.offline_bytes += len;
                parked.offline_bytes += len;
                parked.offline.push_back(Queued {
                    at: now,
                    publish: m,
                    seq: None,
                });
                Sent::Queued
            }
        };
        let Some(Record::Queued {
            client_id,
            qos,
            retain,
            subscription_identifiers,
            ..
        }) = record
        else {
            return sent;
        };
        let packet_id = match sent {
            Sent::Dropped | Sent::Online(None) => return sent,
            Sent::Online(Some(id)) => Some(id),
            Sent::Queued => None,
        };
        let seq = match body.seq {
            Some(seq) => seq,
            None => {
                let seq = self.next_seq;
                self.next_seq += 1;
                let mut publish = body.publish.clone();
                publish.packet_id = None;
                publish.dup = false;
                set_subscription_identifiers(&mut publish, Vec::new());
                self.out.push_back(Output::Store(Record::Message {
                    seq,
                    publish: Box::new(publish),
                }));
                body.seq = Some(seq);
                seq
            }
        };
        let s = self.sessions.get_mut(&key).expect("session exists");
        match packet_id {
            Some(id) => {
                s.seqs.insert(id, seq);
            }
            None => {
                if let Some(q) = s.parked.as_mut().and_then(|p| p.offline.back_mut()) {
                    q.seq = Some(seq);
                }
            }
        }
        self.out.push_back(Output::Store(Record::Queued {
            client_id,
            seq,
            qos,
            retain,
            subscription_identifiers,
            packet_id,
        }));
        sent
    }

    // ----- Subscribe --------------------------------------------------------------------

    fn on_subscribe(&mut self, now: Instant, id: ConnId, sub: Subscribe) {
        let c = &self.conns[&id];
        let Some(key) = c.session() else {
            return;
        };
        let client_id = c.client_id(&self.sessions).cloned().unwrap_or_default();
        let user = c.username.clone();
        let v5 = c.conn.version().is_some_and(|v| v.is_v5());
        let sub_id = sub.properties.subscription_identifier;
        let mut codes = Vec::with_capacity(sub.subscriptions.len());
        let mut retained_to_send: Vec<(TopicFilter, SubEntry)> = vec![];
        for mut s in sub.subscriptions {
            let code = if !self.topic_ok(&s.filter) {
                ReasonCode::TopicFilterInvalid
            } else if !self
                .acl
                .can_subscribe(user.as_deref(), &client_id, &s.filter)
                || !self.hooks.intercept_subscription(&client_id, &mut s)
            {
                self.stats.subscribe_denied += 1;
                self.config.subscribe_denied_code
            } else {
                let session = self.sessions.get_mut(&key).expect("session exists");
                let exists = session.subscriptions.contains_key(s.filter.as_str());
                if !exists && session.subscriptions.len() >= self.config.max_subscriptions {
                    ReasonCode::QuotaExceeded
                } else {
                    s.options.qos = s.options.qos.min(self.config.maximum_qos);
                    let entry = SubEntry {
                        options: s.options,
                        id: sub_id,
                    };
                    // The session keeps a copy of the filter, not a view that would keep
                    // the whole SUBSCRIBE alive.
                    session
                        .subscriptions
                        .insert(s.filter.compact(), entry.clone());
                    self.tree.insert(&s.filter, key, entry.clone());
                    // Retained messages on subscribe, by Retain Handling; never for a
                    // shared subscription.
                    let send = s.filter.shared().is_none()
                        && match s.options.retain_handling {
                            RetainHandling::SendAtSubscribe => true,
                            RetainHandling::SendIfNew => !exists,
                            RetainHandling::DoNotSend => false,
                        };
                    if send {
                        retained_to_send.push((s.filter.clone(), entry));
                    }
                    if session.stored {
                        self.out.push_back(Output::Store(Record::Subscribed {
                            client_id: client_id.clone(),
                            subscription: s.clone(),
                            identifier: sub_id,
                        }));
                    }
                    self.out.push_back(Output::Event(BrokerEvent::Subscribed {
                        client_id: client_id.clone(),
                        filter: s.filter.clone(),
                        qos: s.options.qos,
                    }));
                    ReasonCode::granted(s.options.qos)
                }
            };
            // 3.x has only 0x80 for a failure; the codec maps it.
            codes.push(if !v5 && !code.is_success() {
                ReasonCode::UnspecifiedError
            } else {
                code
            });
        }
        if let Some(c) = self.conns.get_mut(&id) {
            let _ = c
                .conn
                .suback(now, sub.packet_id, codes, AckProperties::default());
        }
        self.touch(id);
        // After the SUBACK: the retained messages, with RETAIN=1 ([MQTT-3.3.1-8]).
        for (filter, entry) in retained_to_send {
            let inner = filter.as_str();
            let acl = &self.acl;
            let mut denied = 0;
            let found: Vec<Publish> = self
                .retained
                .values()
                .filter(|r| mqtt_proto::matches(inner, &r.publish.topic))
                .filter(|r| {
                    let ok = acl.can_receive(user.as_deref(), &client_id, &r.publish.topic);
                    denied += u64::from(!ok);
                    ok
                })
                .filter_map(|r| expire(r.publish.clone(), now.saturating_duration_since(r.at)))
                .collect();
            self.stats.receive_denied += denied;
            for r in found {
                let mut m = r.clone();
                m.qos = m.qos.min(entry.options.qos);
                m.retain = true;
                set_subscription_identifiers(&mut m, entry.id.into_iter().collect());
                self.send_to(now, key, m, None, &mut Body::new(&r));
            }
        }
    }

    fn on_unsubscribe(&mut self, now: Instant, id: ConnId, u: Unsubscribe) {
        let c = &self.conns[&id];
        let Some(key) = c.session() else {
            return;
        };
        let client_id = c.client_id(&self.sessions).cloned().unwrap_or_default();
        let mut codes = Vec::with_capacity(u.filters.len());
        for f in u.filters {
            let session = self.sessions.get_mut(&key).expect("session exists");
            let existed = session.subscriptions.remove(f.as_str()).is_some();
            if existed {
                self.tree.remove(&f, key);
                if session.stored {
                    self.out.push_back(Output::Store(Record::Unsubscribed {
                        client_id: client_id.clone(),
                        filter: f.clone(),
                    }));
                }
                self.out.push_back(Output::Event(BrokerEvent::Unsubscribed {
                    client_id: client_id.clone(),
                    filter: f,
                }));
                codes.push(ReasonCode::Success);
            } else {
                codes.push(ReasonCode::NoSubscriptionExisted);
            }
        }
        if let Some(c) = self.conns.get_mut(&id) {
            let _ = c
                .conn
                .unsuback(now, u.packet_id, codes, AckProperties::default());
        }
        self.touch(id);
    }

    // ----- $SYS -------------------------------------------------------------------------

    fn publish_sys(&mut self, now: Instant) {
        let online = self.sessions.values().filter(|s| s.conn.is_some()).count();
        let offline = self.sessions.len() - online;
        let st = self.stats.clone();
        let values: Vec<(&str, String)> = vec![
            ("version", self.config.version.clone()),
            (
                "uptime",
                format!(
                    "{} seconds",
                    now.saturating_duration_since(self.started).as_secs()
                ),
            ),
            ("clients/connected", online.to_string()),
            ("clients/disconnected", offline.to_string()),
            ("clients/total", self.sessions.len().to_string()),
            ("messages/received", st.messages_received.to_string()),
            ("messages/sent", st.messages_sent.to_string()),
            (
                "messages/dropped",
                (st.dropped_queue_full
                    + st.dropped_expired
                    + st.dropped_too_large
                    + st.dropped_write_backlog)
                    .to_string(),
            ),
            ("bytes/received", st.bytes_received.to_string()),
            ("bytes/sent", st.bytes_sent.to_string()),
            ("subscriptions/count", self.tree.len().to_string()),
            ("retained messages/count", self.retained.len().to_string()),
        ];
        for (name, value) in values {
            let topic = TopicName::new(&format!("$SYS/broker/{name}")).expect("valid topic");
            let mut p = Publish::new(topic, Bytes::from(value));
            p.retain = true;
            self.accept_publish(now, None, p);
        }
    }
}

/// The message with its Message Expiry Interval reduced by `elapsed`, or `None` if it
/// expired ([MQTT-3.3.2-5]).
fn expire(mut p: Publish, elapsed: Duration) -> Option<Publish> {
    if let Some(e) = p.properties.message_expiry_interval {
        let left = u64::from(e).checked_sub(elapsed.as_secs())?;
        if left == 0 {
            return None;
        }
        p.properties.message_expiry_interval = Some(left as u32);
    }
    Some(p)
}

/// One session's copy of a routed message: the lower of the message's and the
/// subscription's QoS, and its Subscription Identifiers.
fn copy_for(p: &Publish, granted: QoS, retain_as_published: bool, ids: Vec<NonZeroU32>) -> Publish {
    let mut m = Publish {
        dup: false,
        qos: p.qos.min(granted),
        // Retain is kept only with Retain As Published (5.0 [MQTT-3.3.1-12],
        // [MQTT-3.3.1-13]); 3.x clients always get 0 on a live message.
        retain: p.retain && retain_as_published,
        topic: p.topic.clone(),
        packet_id: None,
        properties: p.properties.clone(),
        payload: p.payload.clone(),
    };
    set_subscription_identifiers(&mut m, ids);
    m
}

/// Sets a copy's Subscription Identifiers; a message without properties stays without
/// (no allocation) when there are none to set.
pub(crate) fn set_subscription_identifiers(p: &mut Publish, ids: Vec<NonZeroU32>) {
    match p.properties.get_mut() {
        Some(props) => props.subscription_identifiers = ids,
        None if ids.is_empty() => {}
        None => p.properties.subscription_identifiers = ids,
    }
}

/// A message as the store keeps it: recorded once ([`Record::Message`]), when the
/// first stored session takes a copy.
struct Body<'a> {
    publish: &'a Publish,
    seq: Option<u64>,
}

impl<'a> Body<'a> {
    fn new(publish: &'a Publish) -> Self {
        Self { publish, seq: None }
    }

    /// Already recorded as message `seq`.
    fn recorded(publish: &'a Publish, seq: Option<u64>) -> Self {
        Self { publish, seq }
    }
}

/// The session of a connection.
/// `$SYS` topics are the broker's own: clients may read them, never publish to them
/// (section 4.7.2: the Server SHOULD prevent Clients from using `$` topics to exchange
/// messages); otherwise any client could publish a retained `$SYS/broker/version`.
fn broker_only(topic: &str) -> bool {
    topic == "$SYS" || topic.starts_with("$SYS/")
}

fn key_of(conns: &IdMap<ConnId, Box<Conn>>, id: ConnId) -> Option<SessionKey> {
    conns.get(&id)?.session()
}

/// What became of one copy of a message.
#[derive(Clone, Copy)]
enum Sent {
    Dropped,
    /// Handed to the session's connection, with its packet id if QoS 1/2 and sent now
    /// or queued there.
    Online(Option<PacketId>),
    /// Queued for the offline session.
    Queued,
}

/// Encodings of one routed message, one per distinct (version family, QoS, RETAIN,
/// Subscription Identifiers): a message to many subscribers is encoded once per kind and
/// the bytes shared.
#[derive(Default)]
struct EncodeCache {
    entries: Vec<(bool, QoS, bool, Vec<NonZeroU32>, EncodedPublish)>,
}

impl EncodeCache {
    /// The encoding of `m` for `v`, made on first use. Lent, not cloned: a clone would
    /// be a reference-count increment and decrement per delivered copy.
    fn get(&mut self, m: &Publish, v: mqtt_proto::ProtocolVersion) -> Option<&EncodedPublish> {
        let v5 = v.is_v5();
        // 3.x carries no properties: the identifiers do not change its bytes.
        let ids: &[NonZeroU32] = if v5 {
            &m.properties.subscription_identifiers
        } else {
            &[]
        };
        // Lengths first: comparing two empty slices calls memcmp, which is slow on some
        // CPUs and C libraries.
        let at = match self.entries.iter().position(|e| {
            e.0 == v5
                && e.1 == m.qos
                && e.2 == m.retain
                && e.3.len() == ids.len()
                && (ids.is_empty() || e.3 == ids)
        }) {
            Some(at) => at,
            None => {
                let e = EncodedPublish::new(m, v).ok()?;
                self.entries.push((v5, m.qos, m.retain, ids.to_vec(), e));
                self.entries.len() - 1
            }
        };
        self.entries.get(at).map(|e| &e.4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every output is moved into the queue and out again: the rare large ones are boxed.
    #[test]
    fn outputs_stay_small() {
        assert!(size_of::<Output>() <= 96, "{}", size_of::<Output>());
    }

    /// What every connected client costs in the core, on a 64-bit target (the session's
    /// optional parts boxed or allocated on first use).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn records_stay_small() {
        assert!(size_of::<Session>() <= 120, "{}", size_of::<Session>());
        assert!(size_of::<Conn>() <= 296, "{}", size_of::<Conn>());
        assert!(
            size_of::<mqtt_session::Connection>() <= 144,
            "{}",
            size_of::<mqtt_session::Connection>()
        );
    }

    /// The client-id index finds every id through growth, replaces an id's session, and
    /// removes an id only for the session it leads to.
    #[test]
    fn client_index_finds_replaces_and_removes() {
        let mut ids: IdMap<SessionKey, String> = IdMap::default();
        let mut index = ClientIndex::new();
        for k in 0..1000u64 {
            ids.insert(k, format!("client-{k}"));
            let map = &ids;
            index.insert(&format!("client-{k}"), k, |k| {
                map.get(&k).map(String::as_str)
            });
        }
        let lookup = |index: &ClientIndex, ids: &IdMap<SessionKey, String>, id: &str| {
            index.get(id, |k| ids.get(&k).map(String::as_str))
        };
        for k in 0..1000u64 {
            assert_eq!(lookup(&index, &ids, &format!("client-{k}")), Some(k));
        }
        assert_eq!(lookup(&index, &ids, "client-1000"), None);
        // The id of session 7 now leads to a new session 5000.
        ids.insert(5000, "client-7".into());
        let map = &ids;
        index.insert("client-7", 5000, |k| map.get(&k).map(String::as_str));
        assert_eq!(lookup(&index, &ids, "client-7"), Some(5000));
        // Ending session 7 leaves the id to session 5000.
        ids.remove(&7);
        index.remove("client-7", 7);
        assert_eq!(lookup(&index, &ids, "client-7"), Some(5000));
        index.remove("client-7", 5000);
        assert_eq!(lookup(&index, &ids, "client-7"), None);
        assert_eq!(index.table.len(), 999);
    }
}
