//! A blocking MQTT client on the mqtt-session client role, over TCP or TLS: connect,
//! publish and wait for the acknowledgement, subscribe, and iterate over the messages.
//! MQTT 3.1.1 and 5.0.
//!
//! Threads: one runs the session (it owns the `mqtt_session::Connection` and writes to
//! the socket), one reads the socket. Calls on [`Client`] are messages to the session
//! thread and wait for its answer; messages arrive on [`Messages`], an iterator.
//! Dropping the last [`Client`] disconnects. The client does not reconnect: when the connection ends, calls fail with
//! [`ClientError::Closed`] and the iterator ends. WebSocket addresses are refused (the
//! tokio and smol clients speak it).
//!
//! ```no_run
//! # fn demo() -> anyhow::Result<()> {
//! use adapter_std::client::{Client, ClientOptions};
//! use mqtt_proto::QoS;
//!
//! let (client, messages) = Client::connect(ClientOptions::new("mqtt://127.0.0.1:1883", "demo"))?;
//! client.subscribe("sensors/#", QoS::AtLeastOnce)?;
//! client.publish("sensors/1", "21.5", QoS::AtLeastOnce, false)?;
//! for m in messages.take(1) {
//!     println!("{}: {:?}", m.topic, m.payload);
//! }
//! client.disconnect();
//! # Ok(()) }
//! ```

use crate::io::{Out, SharedTls, TlsRead, TlsWrite};
use bytes::{Bytes, BytesMut};
pub use mqtt_adapter_common::client::ClientOptions;
use mqtt_adapter_common::endpoint::{Endpoint, Scheme};
use mqtt_proto::{
    PacketId, Publish, QoS, ReasonCode, Subscription, SubscriptionOptions, TopicFilter, TopicName,
};
use mqtt_session::{CloseReason, Connection, DropReason, Event};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long connecting (TCP, TLS, CONNACK) may take.
const CONNECT_LIMIT: Duration = Duration::from_secs(10);

/// Errors of client calls.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection has ended.
    #[error("client closed")]
    Closed,
    /// The session refused the call.
    #[error("{0}")]
    Usage(#[from] mqtt_session::UsageError),
    /// The message was dropped (too large for the server, or the server lost the session).
    #[error("message dropped: {0:?}")]
    Dropped(DropReason),
    /// The server refused it (5.0 reason code 0x80 and above).
    #[error("refused: {0}")]
    Refused(ReasonCode),
    /// Invalid topic.
    #[error("{0}")]
    Topic(#[from] mqtt_proto::TopicError),
    /// The server refused the connection: CONNACK with this code (3.1.1 return codes
    /// mapped to their 5.0 reason codes). [`Client::connect`]'s error downcasts to it.
    #[error("connection refused: {0}")]
    ConnectRefused(ReasonCode),
}

type Answer<T> = Sender<Result<T, ClientError>>;

enum Msg {
    Data(Bytes),
    Eof,
    FlushTls,
    Publish(Publish, Answer<()>),
    Subscribe(Subscription, Answer<ReasonCode>),
    Unsubscribe(TopicFilter, Answer<()>),
    Disconnect(Sender<()>),
}

/// A connected client; cheap to clone, usable from any thread. When the last clone is
/// dropped, the client disconnects.
#[derive(Clone)]
pub struct Client {
    tx: Arc<Handle>,
    session_present: bool,
}

/// The session thread's queue; disconnects when dropped.
struct Handle(Sender<Msg>);

impl Drop for Handle {
    fn drop(&mut self) {
        let (tx, _) = mpsc::channel();
        let _ = self.0.send(Msg::Disconnect(tx));
    }
}

/// The messages the subscriptions bring, in order; ends with the connection.
pub struct Messages {
    rx: Receiver<Publish>,
}

impl Messages {
    /// The next message, waiting at most `limit`; `None` on timeout or when the
    /// connection ended.
    pub fn next_timeout(&self, limit: Duration) -> Option<Publish> {
        self.rx.recv_timeout(limit).ok()
    }
}

impl Iterator for Messages {
    type Item = Publish;

    fn next(&mut self) -> Option<Publish> {
        self.rx.recv().ok()
    }
}

impl Client {
    /// Connects and waits for CONNACK. A refusal by the server is an error that
    /// downcasts to [`ClientError::ConnectRefused`].
    pub fn connect(options: ClientOptions) -> anyhow::Result<(Client, Messages)> {
        let (tx, rx) = mpsc::channel();
        let (out, socket) = open(&options, &tx)?;
        let mut conn = Connection::client(options.session.clone());
        conn.connect(Instant::now(), options.connect_packet(options.clean_start)?)?;
        let (msg_tx, msg_rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("mqtt-client".into())
            .spawn(move || run(conn, out, socket, rx, msg_tx, ready_tx))?;
        let session_present = ready_rx
            .recv_timeout(CONNECT_LIMIT)
            .map_err(|_| anyhow::anyhow!("no CONNACK within {CONNECT_LIMIT:?}"))??;
        Ok((
            Client {
                tx: Arc::new(Handle(tx)),
                session_present,
            },
            Messages { rx: msg_rx },
        ))
    }

    /// Session Present of the CONNACK: the server had kept this client id's session.
    pub fn session_present(&self) -> bool {
        self.session_present
    }

    fn call<T>(&self, msg: impl FnOnce(Answer<T>) -> Msg) -> Result<T, ClientError> {
        let (tx, rx) = mpsc::channel();
        self.tx.0.send(msg(tx)).map_err(|_| ClientError::Closed)?;
        rx.recv().map_err(|_| ClientError::Closed)?
    }

    /// Publishes; returns when it is acknowledged (QoS 1: PUBACK, QoS 2: PUBCOMP) or
    /// handed to the socket (QoS 0).
    pub fn publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Result<(), ClientError> {
        let mut p = Publish::new(TopicName::new(topic)?, payload.into());
        p.qos = qos;
        p.retain = retain;
        self.call(|a| Msg::Publish(p, a))
    }

    /// Subscribes; returns the granted QoS code (or the refusal).
    pub fn subscribe(&self, filter: &str, qos: QoS) -> Result<ReasonCode, ClientError> {
        let s = Subscription {
            filter: TopicFilter::new(filter)?,
            options: SubscriptionOptions {
                qos,
                ..Default::default()
            },
        };
        self.call(|a| Msg::Subscribe(s, a))
    }

    /// Unsubscribes.
    pub fn unsubscribe(&self, filter: &str) -> Result<(), ClientError> {
        let f = TopicFilter::new(filter)?;
        self.call(|a| Msg::Unsubscribe(f, a))
    }

    /// Sends DISCONNECT and closes the connection.
    pub fn disconnect(&self) {
        let (tx, rx) = mpsc::channel();
        if self.tx.0.send(Msg::Disconnect(tx)).is_ok() {
            let _ = rx.recv();
        }
    }
}

/// Opens the socket (and TLS) and starts the reader thread.
fn open(options: &ClientOptions, tx: &Sender<Msg>) -> anyhow::Result<(Out, TcpStream)> {
    let ep = Endpoint::parse(&options.address, options.tls.is_some())?;
    anyhow::ensure!(
        matches!(ep.scheme, Scheme::Tcp | Scheme::Tls),
        "{}: the blocking client speaks TCP and TLS",
        options.address
    );
    let addr = ep
        .authority
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{}: no address", ep.authority))?;
    let tcp = TcpStream::connect_timeout(&addr, CONNECT_LIMIT)?;
    let _ = tcp.set_nodelay(true);
    let (rd, out): (Box<dyn Read + Send>, Out) = match ep.scheme {
        Scheme::Tls => {
            let Some((config, name)) = &options.tls else {
                anyhow::bail!("{}: TLS needs ClientOptions::tls", options.address);
            };
            let name = rustls_pki_types::ServerName::try_from(name.clone())?;
            let mut tls = rustls::ClientConnection::new(config.clone(), name)?;
            tcp.set_read_timeout(Some(CONNECT_LIMIT))?;
            let mut s = &tcp;
            while tls.is_handshaking() {
                tls.complete_io(&mut s)?;
            }
            tcp.set_read_timeout(None)?;
            let shared: SharedTls = Arc::new(Mutex::new(tls.into()));
            let wake = tx.clone();
            (
                Box::new(TlsRead::new(
                    tcp.try_clone()?,
                    shared.clone(),
                    Box::new(move || {
                        let _ = wake.send(Msg::FlushTls);
                    }),
                )),
                Out::Tls(TlsWrite::new(tcp.try_clone()?, shared)),
            )
        }
        _ => (Box::new(tcp.try_clone()?), Out::Tcp(tcp.try_clone()?)),
    };
    let tx = tx.clone();
    std::thread::Builder::new()
        .name("mqtt-client-reader".into())
        .spawn(move || {
            let mut rd = rd;
            let mut buf = BytesMut::new();
            loop {
                buf.resize(4096, 0);
                match rd.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.send(Msg::Data(buf.split().freeze())).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = tx.send(Msg::Eof);
        })?;
    Ok((out, tcp))
}

#[derive(Default)]
struct Pending {
    publishes: HashMap<PacketId, Answer<()>>,
    subscribes: HashMap<PacketId, Answer<ReasonCode>>,
    unsubscribes: HashMap<PacketId, Answer<()>>,
}

/// The session thread.
fn run(
    mut conn: Connection,
    mut out: Out,
    socket: TcpStream,
    rx: Receiver<Msg>,
    messages: Sender<Publish>,
    ready: Sender<anyhow::Result<bool>>,
) {
    let mut ready = Some(ready);
    let mut pending = Pending::default();
    let mut disconnected: Option<Sender<()>> = None;
    loop {
        if let Some(b) = conn.poll_transmit() {
            if out.write_all(&b).is_err() {
                conn.handle_closed(Instant::now());
            }
        }
        while let Some(e) = conn.poll_event() {
            match e {
                Event::Connected(ack) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(Ok(ack.session_present));
                    }
                }
                Event::Message(m) => {
                    let _ = messages.send(m);
                }
                Event::Delivered {
                    packet_id,
                    reason_code,
                } => {
                    if let Some(w) = pending.publishes.remove(&packet_id) {
                        let _ = w.send(if reason_code.is_success() {
                            Ok(())
                        } else {
                            Err(ClientError::Refused(reason_code))
                        });
                    }
                }
                Event::Dropped { publish, reason } => {
                    if let Some(w) = publish
                        .packet_id
                        .and_then(|id| pending.publishes.remove(&id))
                    {
                        let _ = w.send(Err(ClientError::Dropped(reason)));
                    }
                }
                Event::SubAck(s) => {
                    if let Some(w) = pending.subscribes.remove(&s.packet_id) {
                        let code = s
                            .reason_codes
                            .first()
                            .copied()
                            .unwrap_or(ReasonCode::UnspecifiedError);
                        let _ = w.send(Ok(code));
                    }
                }
                Event::UnsubAck(u) => {
                    if let Some(w) = pending.unsubscribes.remove(&u.packet_id) {
                        let _ = w.send(Ok(()));
                    }
                }
                Event::Closed(reason) => {
                    if let Some(r) = ready.take() {
                        let e = match reason {
                            CloseReason::Refused(code) => ClientError::ConnectRefused(code).into(),
                            other => anyhow::anyhow!("connection closed: {other:?}"),
                        };
                        let _ = r.send(Err(e));
                    }
                    // What was queued (a DISCONNECT) leaves before the socket closes.
                    if let Some(b) = conn.poll_transmit() {
                        let _ = out.write_all(&b);
                    }
                    out.close();
                    let _ = socket.shutdown(Shutdown::Both);
                    if let Some(d) = disconnected.take() {
                        let _ = d.send(());
                    }
                    // Every waiting call fails with Closed as its answer is dropped.
                    return;
                }
                _ => {}
            }
        }
        if let Some(b) = conn.poll_transmit() {
            if out.write_all(&b).is_err() {
                conn.handle_closed(Instant::now());
                continue;
            }
        }
        let msg = match conn.poll_timeout() {
            Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                // Unreachable while the reader holds a sender; kept for clarity.
                Err(RecvTimeoutError::Disconnected) => Some(Msg::Eof),
            },
            None => Some(rx.recv().unwrap_or(Msg::Eof)),
        };
        let now = Instant::now();
        match msg {
            None => conn.handle_timeout(now),
            Some(Msg::Data(b)) => conn.handle_input(now, &b),
            Some(Msg::Eof) => conn.handle_closed(now),
            Some(Msg::FlushTls) => {
                if out.flush().is_err() {
                    conn.handle_closed(now);
                }
            }
            Some(Msg::Disconnect(done)) => {
                disconnected = Some(done);
                if conn
                    .disconnect(now, ReasonCode::Success, Default::default())
                    .is_err()
                {
                    conn.handle_closed(now);
                }
            }
            Some(Msg::Publish(p, w)) => match conn.publish(now, p) {
                Ok(Some(id)) => {
                    pending.publishes.insert(id, w);
                }
                Ok(None) => {
                    let _ = w.send(Ok(()));
                }
                Err(e) => {
                    let _ = w.send(Err(e.into()));
                }
            },
            Some(Msg::Subscribe(s, w)) => match conn.subscribe(now, vec![s], Default::default()) {
                Ok(id) => {
                    pending.subscribes.insert(id, w);
                }
                Err(e) => {
                    let _ = w.send(Err(e.into()));
                }
            },
            Some(Msg::Unsubscribe(f, w)) => {
                match conn.unsubscribe(now, vec![f], Default::default()) {
                    Ok(id) => {
                        pending.unsubscribes.insert(id, w);
                    }
                    Err(e) => {
                        let _ = w.send(Err(e.into()));
                    }
                }
            }
        }
    }
}
