//! A small async MQTT client on the mqtt-session client role: connect over TCP, TLS,
//! WebSocket or WebSocket over TLS, publish and wait for the acknowledgement, subscribe
//! and receive messages on a channel, reconnect automatically with session resume.
//! MQTT 3.1.1 and 5.0.
//!
//! # Addresses
//!
//! The scheme of [`ClientOptions::address`] chooses the transport:
//!
//! | address                   | transport                        | default port |
//! |---------------------------|----------------------------------|-------------:|
//! | `mqtt://host:port`, `tcp://host:port` | TCP                  | 1883 |
//! | `mqtts://host:port`, `ssl://host:port` | TLS ([`ClientOptions::tls`] needed) | 8883 |
//! | `ws://host:port/path`     | WebSocket                        | 80 |
//! | `wss://host:port/path`    | WebSocket over TLS ([`ClientOptions::tls`] needed) | 443 |
//! | `host:port`               | TCP, or TLS when [`ClientOptions::tls`] is set | — |
//!
//! A WebSocket connection asks for the `mqtt` subprotocol and sends the MQTT byte stream
//! in binary frames; packets may span frames both ways. Without a path, a WebSocket
//! address means `/mqtt`, the broker listener's default. An IPv6 host is written in
//! brackets: `ws://[::1]:8080/mqtt`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use adapter_tokio::client::{Client, ClientOptions};
//! use mqtt_proto::QoS;
//!
//! let (client, mut messages) =
//!     Client::connect(ClientOptions::new("mqtt://127.0.0.1:1883", "demo")).await?;
//! client.subscribe("sensors/#", QoS::AtLeastOnce).await?;
//! client.publish("sensors/1", "21.5", QoS::AtLeastOnce, false).await?;
//! while let Some(m) = messages.recv().await {
//!     println!("{}: {:?}", m.topic, m.payload);
//! }
//! # Ok(()) }
//! ```
//!
//! The same over WebSocket, as MQTT 3.1.1 with a will and a password:
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use adapter_tokio::client::{Client, ClientOptions};
//! use mqtt_proto::{ProtocolVersion, QoS};
//!
//! let mut options = ClientOptions::new("ws://127.0.0.1:8080/mqtt", "sensor-1");
//! options.version = ProtocolVersion::V3_1_1;
//! options.credentials = Some(("sensor".into(), b"secret".to_vec()));
//! options.set_will("sensors/1/status", "offline", QoS::AtLeastOnce, true)?;
//! let (client, _messages) = Client::connect(options).await?;
//! client.publish("sensors/1/status", "online", QoS::AtLeastOnce, true).await?;
//! # Ok(()) }
//! ```

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
pub use mqtt_adapter_common::client::ClientOptions;
use mqtt_adapter_common::endpoint::{Endpoint, Scheme};
use mqtt_proto::{
    PacketId, Publish, QoS, ReasonCode, Subscription, SubscriptionOptions, TopicFilter, TopicName,
};
use mqtt_session::{CloseReason, Connection, DropReason, Event};
use std::collections::HashMap;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{http, Message};
use tokio_tungstenite::WebSocketStream;

/// Errors of client calls.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The client's task has ended (disconnected and not reconnecting).
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

enum Cmd {
    Publish(Publish, oneshot::Sender<Result<(), ClientError>>),
    Subscribe(
        Subscription,
        oneshot::Sender<Result<ReasonCode, ClientError>>,
    ),
    Unsubscribe(TopicFilter, oneshot::Sender<Result<(), ClientError>>),
    Disconnect(oneshot::Sender<()>),
    Abort(oneshot::Sender<()>),
}

/// A connected client; cheap to clone.
#[derive(Clone)]
pub struct Client {
    tx: mpsc::Sender<Cmd>,
    session_present: bool,
}

impl Client {
    /// Connects (waiting for CONNACK) and starts the client's task. Messages arrive on
    /// the returned channel, which ends when the task does (after
    /// [`disconnect`](Self::disconnect), or a lost connection without
    /// [`reconnect`](ClientOptions::reconnect)).
    ///
    /// A refusal by the server is an error that downcasts to
    /// [`ClientError::ConnectRefused`].
    pub async fn connect(
        options: ClientOptions,
    ) -> anyhow::Result<(Client, mpsc::Receiver<Publish>)> {
        let (tx, rx) = mpsc::channel(256);
        let (msg_tx, msg_rx) = mpsc::channel(1024);
        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::spawn(run(options, rx, msg_tx, ready_tx));
        let session_present = ready_rx
            .await
            .map_err(|_| anyhow::anyhow!("client task ended"))??;
        Ok((
            Client {
                tx,
                session_present,
            },
            msg_rx,
        ))
    }

    /// Session Present of the CONNACK that answered [`connect`](Self::connect): the
    /// server had kept this client id's session.
    pub fn session_present(&self) -> bool {
        self.session_present
    }

    /// Publishes; returns when it is acknowledged (QoS 1: PUBACK, QoS 2: PUBCOMP) or
    /// handed to the socket (QoS 0).
    pub async fn publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Result<(), ClientError> {
        let mut p = Publish::new(TopicName::new(topic)?, payload.into());
        p.qos = qos;
        p.retain = retain;
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Publish(p, tx))
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// Subscribes; returns the granted QoS code (or the refusal). The subscription is
    /// made again by itself if a reconnect finds the session gone.
    pub async fn subscribe(&self, filter: &str, qos: QoS) -> Result<ReasonCode, ClientError> {
        let s = Subscription {
            filter: TopicFilter::new(filter)?,
            options: SubscriptionOptions {
                qos,
                ..Default::default()
            },
        };
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Subscribe(s, tx))
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// Unsubscribes.
    pub async fn unsubscribe(&self, filter: &str) -> Result<(), ClientError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Unsubscribe(TopicFilter::new(filter)?, tx))
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// Sends DISCONNECT and ends the client's task.
    pub async fn disconnect(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Disconnect(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Closes the network connection without DISCONNECT, as a crash or a lost network
    /// would, and ends the client's task: the server publishes the will.
    pub async fn abort(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Abort(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

type Waiters = HashMap<PacketId, oneshot::Sender<Result<(), ClientError>>>;

#[derive(Default)]
struct Pending {
    publishes: Waiters,
    subscribes: HashMap<PacketId, oneshot::Sender<Result<ReasonCode, ClientError>>>,
    unsubscribes: Waiters,
    /// Filters to make again if the server forgot the session.
    filters: Vec<Subscription>,
}

async fn run(
    options: ClientOptions,
    mut cmds: mpsc::Receiver<Cmd>,
    messages: mpsc::Sender<Publish>,
    ready: oneshot::Sender<anyhow::Result<bool>>,
) {
    let mut ready = Some(ready);
    let mut pending = Pending::default();
    let mut state = None;
    let mut first = true;
    loop {
        let outcome = session(
            &options,
            &mut cmds,
            &messages,
            &mut pending,
            &mut ready,
            state.take(),
            first,
        )
        .await;
        first = false;
        match outcome {
            Ok(Some(s)) => state = Some(s),
            Ok(None) => return,
            Err(e) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(Err(e));
                    return;
                }
            }
        }
        let Some(wait) = options.reconnect else {
            return;
        };
        tokio::time::sleep(wait).await;
    }
}

/// One connection. Returns the session state to resume, `None` to stop.
#[allow(clippy::too_many_arguments)]
async fn session(
    options: &ClientOptions,
    cmds: &mut mpsc::Receiver<Cmd>,
    messages: &mpsc::Sender<Publish>,
    pending: &mut Pending,
    ready: &mut Option<oneshot::Sender<anyhow::Result<bool>>>,
    state: Option<mqtt_session::SessionState>,
    first: bool,
) -> anyhow::Result<Option<mqtt_session::SessionState>> {
    let mut stream = match open(options).await {
        Ok(s) => s,
        Err(e) if ready.is_none() => {
            tracing::debug!("reconnect failed: {e}");
            return Ok(state);
        }
        Err(e) => return Err(e),
    };
    let mut conn = match state {
        Some(s) => Connection::client_with_state(options.session.clone(), s),
        None => Connection::client(options.session.clone()),
    };
    let clean = first && options.clean_start;
    conn.connect(Instant::now(), options.connect_packet(clean)?)?;
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if let Some(b) = conn.poll_transmit() {
            if stream.write(b).await.is_err() {
                conn.handle_closed(Instant::now());
            }
        }
        while let Some(e) = conn.poll_event() {
            match e {
                Event::Connected(ack) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(Ok(ack.session_present));
                    }
                    if !ack.session_present && !pending.filters.is_empty() {
                        let subs = pending.filters.clone();
                        let _ = conn.subscribe(Instant::now(), subs, Default::default());
                    }
                }
                Event::Message(m) => {
                    let _ = messages.send(m).await;
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
                    let waiter = publish
                        .packet_id
                        .and_then(|id| pending.publishes.remove(&id));
                    if reason == DropReason::SessionLost {
                        // The server forgot the session: the message is sent again, in
                        // a new one, and its caller keeps waiting.
                        match (conn.publish(Instant::now(), *publish), waiter) {
                            (Ok(Some(id)), Some(w)) => {
                                pending.publishes.insert(id, w);
                            }
                            (Ok(None), Some(w)) => {
                                let _ = w.send(Ok(()));
                            }
                            (Err(e), Some(w)) => {
                                let _ = w.send(Err(e.into()));
                            }
                            _ => {}
                        }
                    } else if let Some(w) = waiter {
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
                        return Ok(None);
                    }
                    tracing::debug!(?reason, "connection lost");
                    return Ok(Some(conn.into_state()));
                }
                _ => {}
            }
        }
        // What handling the events queued (a re-subscribe) leaves before waiting.
        if let Some(b) = conn.poll_transmit() {
            if stream.write(b).await.is_err() {
                conn.handle_closed(Instant::now());
                continue;
            }
        }
        let deadline = conn.poll_timeout();
        tokio::select! {
            r = stream.read(&mut buf) => match r {
                Ok(0) | Err(_) => conn.handle_closed(Instant::now()),
                Ok(_) => {
                    conn.handle_input(Instant::now(), &buf);
                    buf.clear();
                }
            },
            cmd = cmds.recv() => match cmd {
                None => {
                    let _ = conn.disconnect(Instant::now(), ReasonCode::Success, Default::default());
                    if let Some(b) = conn.poll_transmit() {
                        let _ = stream.write(b).await;
                    }
                    return Ok(None);
                }
                Some(Cmd::Disconnect(done)) => {
                    let _ = conn.disconnect(Instant::now(), ReasonCode::Success, Default::default());
                    if let Some(b) = conn.poll_transmit() {
                        let _ = stream.write(b).await;
                    }
                    stream.close().await;
                    let _ = done.send(());
                    return Ok(None);
                }
                Some(Cmd::Abort(done)) => {
                    // No DISCONNECT: the socket is dropped (a WebSocket without its
                    // closing handshake, TLS without close_notify).
                    drop(stream);
                    let _ = done.send(());
                    return Ok(None);
                }
                Some(Cmd::Publish(p, w)) => match conn.publish(Instant::now(), p) {
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
                Some(Cmd::Subscribe(s, w)) => {
                    pending.filters.retain(|f| f.filter != s.filter);
                    pending.filters.push(s.clone());
                    match conn.subscribe(Instant::now(), vec![s], Default::default()) {
                        Ok(id) => {
                            pending.subscribes.insert(id, w);
                        }
                        Err(e) => {
                            let _ = w.send(Err(e.into()));
                        }
                    }
                }
                Some(Cmd::Unsubscribe(f, w)) => {
                    pending.filters.retain(|s| s.filter != f);
                    match conn.unsubscribe(Instant::now(), vec![f], Default::default()) {
                        Ok(id) => {
                            pending.unsubscribes.insert(id, w);
                        }
                        Err(e) => {
                            let _ = w.send(Err(e.into()));
                        }
                    }
                }
            },
            _ = sleep_until(deadline) => conn.handle_timeout(Instant::now()),
        }
    }
}

/// A byte stream to the server: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The connection to the server: a byte stream, or WebSocket binary frames over one.
enum Transport {
    Stream(Box<dyn Io>),
    Ws(Box<WebSocketStream<Box<dyn Io>>>),
}

impl Transport {
    /// Reads what is there into `buf`; 0 when the server closed. Cancel safe.
    async fn read(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        match self {
            Transport::Stream(s) => s.read_buf(buf).await,
            Transport::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Binary(b))) => {
                        buf.extend_from_slice(&b);
                        if !b.is_empty() {
                            return Ok(b.len());
                        }
                    }
                    // tungstenite answers pings itself.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    // A text frame is not MQTT ([MQTT-6.0.0-1]); a close frame ends it.
                    Some(Ok(Message::Text(_) | Message::Close(_))) | None => return Ok(0),
                    Some(Err(e)) => return Err(std::io::Error::other(e)),
                }
            },
        }
    }

    /// Writes one batch: on a WebSocket, in binary messages of at most 64 KiB (MQTT
    /// packets may span messages, and a server may bound a message's size).
    async fn write(&mut self, data: Bytes) -> std::io::Result<()> {
        const WS_MESSAGE: usize = 64 * 1024;
        match self {
            Transport::Stream(s) => s.write_all(&data).await,
            Transport::Ws(ws) => {
                let mut at = 0;
                while at < data.len() {
                    let end = (at + WS_MESSAGE).min(data.len());
                    ws.feed(Message::Binary(data.slice(at..end)))
                        .await
                        .map_err(std::io::Error::other)?;
                    at = end;
                }
                ws.flush().await.map_err(std::io::Error::other)
            }
        }
    }

    /// Closes cleanly (TCP shutdown, TLS close_notify, the WebSocket closing handshake).
    async fn close(&mut self) {
        let _ = match self {
            Transport::Stream(s) => s.shutdown().await.map_err(drop),
            Transport::Ws(ws) => SinkExt::close(&mut **ws).await.map_err(drop),
        };
    }
}

async fn open(options: &ClientOptions) -> anyhow::Result<Transport> {
    let ep = Endpoint::parse(&options.address, options.tls.is_some())?;
    let tcp = TcpStream::connect(&ep.authority).await?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Io> = match ep.scheme {
        Scheme::Tcp | Scheme::Ws => Box::new(tcp),
        Scheme::Tls | Scheme::Wss => {
            let Some((config, name)) = &options.tls else {
                anyhow::bail!("{}: TLS needs ClientOptions::tls", options.address);
            };
            let name = rustls_pki_types::ServerName::try_from(name.clone())?;
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await?;
            Box::new(tls)
        }
    };
    if matches!(ep.scheme, Scheme::Tcp | Scheme::Tls) {
        return Ok(Transport::Stream(stream));
    }
    let scheme = if ep.scheme == Scheme::Ws { "ws" } else { "wss" };
    let mut req = format!("{scheme}://{}{}", ep.authority, ep.path).into_client_request()?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        http::HeaderValue::from_static("mqtt"),
    );
    let (ws, resp) = tokio_tungstenite::client_async(req, stream).await?;
    let offered = resp
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok());
    anyhow::ensure!(
        offered.is_some_and(|p| p.eq_ignore_ascii_case("mqtt")),
        "{}: the server did not accept the `mqtt` WebSocket subprotocol",
        options.address
    );
    Ok(Transport::Ws(Box::new(ws)))
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}
