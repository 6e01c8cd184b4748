//! The owner of the broker core, for adapters that bring their own threads or tasks.
//!
//! [`Core`] holds the [`Broker`], the connections' write handles (anything that is a
//! [`Conn`]), the password file, and the [`Persister`](mqtt_store::Persister) when state
//! is durable. It never waits and never reads the clock: the adapter's drive loop waits
//! for the next [`Input`] or for [`Core::poll_timeout`], then calls
//!
//! ```text
//! loop {
//!     wait for an input, or until core.poll_timeout()
//!     now = Instant::now()
//!     core.handle(now, input)            (every input already waiting, up to a batch)
//!       or core.handle_timeout(now)      (the deadline passed)
//!     core.drain()                       (outputs to connections, durable acks)
//!     if core.is_finished() { break }
//! }
//! core.finish()                          (blocking: the last fsync)
//! ```
//!
//! What it decides is not protocol but plumbing: a connection whose unwritten bytes would
//! pass `limits.max_pending_write_bytes` is closed as too slow (what it was to be sent is
//! not queued, so the bytes held for it never exceed the limit); one with more than
//! `limits.qos0_pending_write_bytes` unwritten is reported to the broker, which drops QoS
//! 0 messages for it until it is back under (checked before each input); a TLS client certificate is
//! the credential on a listener with `use_identity_as_username`; password checks
//! (argon2, slow on purpose) run elsewhere through [`Offload`] and come back as
//! [`Input::Auth`].

use crate::auth::Passwords;
use crate::config::Config;
use bytes::Bytes;
use mqtt_broker::{AuthResult, Broker, BrokerEvent, ConnId, ConnInfo, Gauges, Hooks, Output};
use mqtt_proto::{Publish, ReasonCode};
use mqtt_session::CloseReason;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tracing::{debug, error, info, warn};

/// A connection's write side, as the core sees it.
pub trait Conn: Send + 'static {
    /// Queues bytes for the connection's writer; returns how many bytes now wait to be
    /// written (as [`pending`](Self::pending) after it).
    fn send(&self, data: Bytes) -> usize;
    /// How many bytes wait to be written: queued, and taken by the writer but not yet
    /// accepted by the transport. What the connection holds for its peer is these bytes
    /// and the adapter's own bounded constant (a batch being copied together, say).
    fn pending(&self) -> usize;
    /// Closes the connection once what was queued before is written.
    fn close(&self);
    /// Closes the connection at once, dropping what waits (the client is too slow).
    /// Default: [`close`](Self::close).
    fn abort(&self) {
        self.close();
    }
}

/// A job to run off the core (a password check): on a thread, or a blocking pool.
pub type Job = Box<dyn FnOnce() + Send>;

/// Runs [`Job`]s off the core.
pub type Offload = Box<dyn Fn(Job) + Send>;

/// How a finished password check comes back: the adapter sends it to its core as
/// [`Input::Auth`].
pub type AuthDone = Arc<dyn Fn(ConnId, AuthResult) + Send + Sync>;

/// An answer to a query, called on the core's thread.
pub type Reply<T> = Box<dyn FnOnce(T) + Send>;

/// What reaches the core.
pub enum Input<C> {
    /// A connection is ready (after its TLS and WebSocket handshakes).
    Open {
        /// Its id, unique in this broker.
        id: ConnId,
        /// Peer, listener, TLS identity.
        info: ConnInfo,
        /// Its write side.
        conn: C,
    },
    /// Bytes read from a connection (everything one read returned).
    Data(ConnId, Bytes),
    /// The connection ended (read side closed or failed).
    Closed(ConnId),
    /// The connection went idle: the broker lets go of its empty buffers
    /// ([`Broker::handle_idle`](mqtt_broker::Broker::handle_idle)).
    Idle(ConnId),
    /// A password check finished.
    Auth(ConnId, AuthResult),
    /// The committer thread's report.
    Store(mqtt_store::Report),
    /// Publish as the broker.
    Publish(Publish),
    /// Disconnect a client by id.
    Disconnect(String, ReasonCode),
    /// Current gauges.
    Gauges(Reply<Gauges>),
    /// The Prometheus text.
    Metrics(Reply<String>),
    /// A question of the web console (a disconnect included); see
    /// [`console`](crate::console).
    Console(crate::console::Query, Reply<crate::console::Answer>),
    /// Stop: disconnect every client (5.0: 0x8B) and finish once they are gone.
    Shutdown,
}

/// Whether the drive loop goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Flow {
    /// Go on.
    Continue,
    /// Stop now: the store failed (every connection was closed).
    Stop,
}

/// Where a connection came from, for log lines.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// The listener's name.
    pub listener: String,
    /// The peer's address.
    pub addr: String,
}

/// The broker with its connections' write handles; see the [module docs](self).
pub struct Core<C: Conn> {
    broker: Broker,
    /// The connections' write handles, by id.
    conns: HashMap<ConnId, C>,
    passwords: Option<Arc<Passwords>>,
    max_pending: usize,
    /// `limits.qos0_pending_write_bytes` (0: off).
    qos0_pending: usize,
    /// The connections over `qos0_pending`, as the broker was told.
    backlogged: Vec<ConnId>,
    persister: Option<mqtt_store::Persister>,
    events: Option<Box<dyn FnMut(BrokerEvent) + Send>>,
    offload: Offload,
    auth_done: AuthDone,
    stopping: bool,
}

/// The broker a configuration describes, with its ACL and hooks, and the password file
/// it names.
pub fn broker(
    config: &Config,
    hooks: Option<Box<dyn Hooks>>,
) -> anyhow::Result<(Broker, Option<Arc<Passwords>>)> {
    let passwords = match &config.auth.password_file {
        Some(p) => Some(Arc::new(Passwords::load(p)?)),
        None => None,
    };
    let acl = match &config.auth.acl_file {
        Some(p) => Some(crate::auth::load_acl(p)?),
        None => None,
    };
    let mut broker = Broker::new(config.broker_config(), Instant::now());
    if let Some(acl) = acl {
        broker.set_acl(acl);
    }
    if let Some(h) = hooks {
        broker.set_hooks(h);
    }
    Ok((broker, passwords))
}

impl<C: Conn> Core<C> {
    /// A core around `broker` (see [`broker`]); `persister` from
    /// [`persistence::start`](crate::persistence::start).
    pub fn new(
        broker: Broker,
        passwords: Option<Arc<Passwords>>,
        config: &Config,
        persister: Option<mqtt_store::Persister>,
        offload: Offload,
        auth_done: AuthDone,
    ) -> Self {
        Self {
            broker,
            conns: HashMap::new(),
            passwords,
            max_pending: config.limits.max_pending_write_bytes,
            qos0_pending: config.limits.qos0_drop_threshold(),
            backlogged: Vec::new(),
            persister,
            events: None,
            offload,
            auth_done,
            stopping: false,
        }
    }

    /// Every [`BrokerEvent`] also goes to `f` (called on the core's thread: it must not
    /// block).
    pub fn set_events(&mut self, f: impl FnMut(BrokerEvent) + Send + 'static) {
        self.events = Some(Box::new(f));
    }

    /// The next deadline of the broker's timers.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.broker.poll_timeout()
    }

    /// The deadline passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.broker.handle_timeout(now);
    }

    /// True once a [`Input::Shutdown`] was handled and every connection is gone.
    pub fn is_finished(&self) -> bool {
        self.stopping && self.conns.is_empty()
    }

    /// Makes what was written durable (blocks for the last fsync). Call it after the
    /// loop, off an async executor's threads.
    pub fn finish(mut self) {
        if let Some(p) = self.persister.take() {
            p.finish();
        }
    }

    /// Handles one input.
    pub fn handle(&mut self, now: Instant, input: Input<C>) -> Flow {
        if !self.backlogged.is_empty() {
            self.check_backlogs();
        }
        let b = &mut self.broker;
        match input {
            Input::Open { id, info, conn } => {
                self.conns.insert(id, conn);
                b.handle_connection(now, id, info);
            }
            Input::Data(id, bytes) => b.handle_input(now, id, &bytes),
            Input::Closed(id) => {
                if let Some(c) = self.conns.remove(&id) {
                    // Its writer finishes what is queued (within its linger) and stops.
                    c.close();
                }
                b.handle_closed(now, id);
            }
            Input::Idle(id) => b.handle_idle(id),
            Input::Auth(id, r) => b.handle_auth(now, id, r),
            Input::Publish(p) => {
                b.publish(now, p);
            }
            Input::Disconnect(client_id, reason) => {
                b.disconnect_client(now, &client_id, reason);
            }
            Input::Gauges(reply) => reply(b.gauges()),
            Input::Metrics(reply) => {
                let writes =
                    self.conns
                        .values()
                        .fold(crate::metrics::WriteGauges::default(), |mut w, c| {
                            let pending = c.pending();
                            w.pending_bytes += pending;
                            w.max_connection_pending_bytes =
                                w.max_connection_pending_bytes.max(pending);
                            w
                        });
                reply(crate::metrics::render(
                    b.stats(),
                    &b.gauges(),
                    &b.queue_gauges(),
                    &writes,
                ))
            }
            Input::Console(query, reply) => reply(crate::console::query(b, now, query)),
            Input::Shutdown => {
                if !self.stopping {
                    self.stopping = true;
                    info!("shutting down");
                    b.shutdown(now);
                }
            }
            Input::Store(mqtt_store::Report::Durable(n)) => {
                if let Some(p) = self.persister.as_mut() {
                    for o in p.durable(n) {
                        self.output(o);
                    }
                }
            }
            Input::Store(mqtt_store::Report::Failed(e)) => {
                // Nothing more can be made durable: stop without sending what waits for
                // it, so no acknowledgement is given that the store does not back.
                error!(error = %e, "store failed; stopping");
                for (_, c) in self.conns.drain() {
                    c.abort();
                }
                self.persister = None;
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    /// Carries out the broker's outputs, through the persister if there is one, and
    /// answers the acknowledgements that became due.
    pub fn drain(&mut self) {
        loop {
            while let Some(o) = self.broker.poll_output() {
                let o = match self.persister.as_mut() {
                    Some(p) => match p.filter(o) {
                        Some(o) => o,
                        None => continue,
                    },
                    None => o,
                };
                self.output(o);
            }
            let Some(p) = self.persister.as_mut() else {
                return;
            };
            p.end_of_outputs();
            let acks = p.take_acks();
            if acks.is_empty() {
                return;
            }
            let now = Instant::now();
            for seq in acks {
                self.broker.handle_durable(now, seq);
            }
        }
    }

    /// Tells the broker of the connections that are back under `qos0_pending` (their
    /// writers caught up since): QoS 0 messages for them go out again.
    fn check_backlogs(&mut self) {
        let (conns, broker, limit) = (&self.conns, &mut self.broker, self.qos0_pending);
        self.backlogged.retain(|id| {
            let over = conns.get(id).is_some_and(|c| c.pending() > limit);
            if !over {
                broker.set_write_backlog(*id, false);
            }
            over
        });
    }

    fn output(&mut self, o: Output) {
        match o {
            Output::Transmit(id, bytes) => {
                if let Some(c) = self.conns.get(&id) {
                    // Checked before queueing: what waits for one client never exceeds
                    // the limit.
                    let pending = c.pending() + bytes.len();
                    if pending <= self.max_pending {
                        c.send(bytes);
                        if self.qos0_pending > 0
                            && pending > self.qos0_pending
                            && !self.backlogged.contains(&id)
                        {
                            self.backlogged.push(id);
                            self.broker.set_write_backlog(id, true);
                        }
                    } else {
                        let peer = peer_of(&self.broker, id);
                        warn!(
                            conn = id,
                            listener = %peer.listener,
                            peer = %peer.addr,
                            pending,
                            "client too slow: more than limits.max_pending_write_bytes \
                             waiting to be written; closing"
                        );
                        // What waits is dropped with the connection.
                        c.abort();
                        self.conns.remove(&id);
                        self.broker.handle_closed(Instant::now(), id);
                    }
                }
            }
            Output::Close(id) => {
                if let Some(c) = self.conns.remove(&id) {
                    c.close();
                }
            }
            Output::Authenticate(req) if req.method.is_some() => {
                // Passwords and certificates only: no 5.0 enhanced authentication method
                // is supported ([MQTT-4.12.0-1]).
                self.broker.handle_auth(
                    Instant::now(),
                    req.conn,
                    AuthResult::Deny(ReasonCode::BadAuthenticationMethod),
                );
            }
            Output::Authenticate(req) => {
                // A TLS identity reaches the broker only from a listener that uses it
                // as the user name.
                let identity = self.conns.get(&req.conn).and(req.tls_identity.clone());
                if let Some(username) = identity {
                    // The verified certificate is the credential.
                    self.broker.handle_auth(
                        Instant::now(),
                        req.conn,
                        AuthResult::Allow {
                            username: Some(username),
                        },
                    );
                    return;
                }
                let passwords = self.passwords.clone();
                let done = self.auth_done.clone();
                let peer = peer_of(&self.broker, req.conn);
                (self.offload)(Box::new(move || {
                    let (conn, result) = verify(&passwords, &req, &peer);
                    done(conn, result);
                }));
            }
            Output::Event(e) => {
                log_event(&e);
                if let Some(f) = self.events.as_mut() {
                    f(e);
                }
            }
            _ => {}
        }
    }
}

/// Where a connection came from, for log lines; empty if the broker no longer knows it.
fn peer_of(broker: &Broker, id: ConnId) -> Peer {
    broker
        .conn_info(id)
        .map(|i| Peer {
            listener: i.listener.to_string(),
            addr: i.peer.clone(),
        })
        .unwrap_or_default()
}

/// Checks a password (slow on purpose): the connection and the answer for the core.
fn verify(
    passwords: &Option<Arc<Passwords>>,
    req: &mqtt_broker::AuthRequest,
    peer: &Peer,
) -> (ConnId, AuthResult) {
    let ok = match (passwords, &req.username, &req.password) {
        // argon2's verify compares the hashes in constant time.
        (Some(p), Some(u), Some(pw)) => p.verify(u, pw),
        (None, _, _) => true,
        _ => false,
    };
    let result = if ok {
        AuthResult::Allow { username: None }
    } else {
        // Who and from where; never the password.
        warn!(
            conn = req.conn,
            listener = %peer.listener,
            peer = %peer.addr,
            client_id = %req.client_id,
            username = %req.username.as_deref().unwrap_or(""),
            "authentication failed: bad user name or password"
        );
        AuthResult::Deny(ReasonCode::BadUserNameOrPassword)
    };
    (req.conn, result)
}

/// Logs a broker event (connections at info, with where they came from and why they
/// closed; dropped messages at debug; the rest at trace).
pub fn log_event(e: &BrokerEvent) {
    match e {
        BrokerEvent::ClientConnected {
            conn,
            client_id,
            username,
            version,
            session_present,
            info: conn_info,
            ..
        } => {
            let (listener, addr) = (&conn_info.listener, &conn_info.peer);
            info!(conn, %listener, peer = %addr, %client_id, username = %username.as_deref().unwrap_or(""), %version, session_present, "client connected")
        }
        BrokerEvent::ClientDisconnected {
            conn,
            client_id,
            reason,
            info: conn_info,
            ..
        } => {
            let (listener, addr) = (&conn_info.listener, &conn_info.peer);
            let client_id = client_id.as_deref().unwrap_or("");
            let reason = describe(reason);
            info!(conn, %listener, peer = %addr, %client_id, %reason, "client disconnected")
        }
        BrokerEvent::MessageDropped { client_id, reason } => {
            debug!(%client_id, ?reason, "message dropped")
        }
        other => tracing::trace!(?other),
    }
}

/// Why a connection closed, for its log line.
fn describe(reason: &CloseReason) -> String {
    match reason {
        CloseReason::Disconnected { reason_code, .. } => {
            format!("client sent DISCONNECT {reason_code}")
        }
        CloseReason::Local(code) => format!("closed by the broker: {code}"),
        CloseReason::Violation(v) => format!("protocol violation: {v}: {}", v.reason_code()),
        CloseReason::KeepAliveTimeout => "keep-alive timeout".into(),
        CloseReason::ConnectTimeout => "no CONNECT within limits.connect_timeout_secs".into(),
        CloseReason::TransportClosed => "connection closed without DISCONNECT".into(),
        other => format!("{other:?}"),
    }
}
