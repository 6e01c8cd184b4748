//! An async MQTT client on the mqtt-session client role, for smol, async-std or any
//! executor given as a [`Spawner`]: connect over TCP, TLS, WebSocket or WebSocket over
//! TLS (the address's scheme chooses, see `mqtt_adapter_common::endpoint`), publish and
//! wait for the acknowledgement, subscribe and receive messages on a channel. MQTT 3.1.1
//! and 5.0.
//!
//! One task runs the session; calls are messages to it. It does not reconnect: when the
//! connection ends, calls fail with [`ClientError::Closed`] and the message channel
//! closes (the tokio client reconnects and resumes the session).
//!
//! ```no_run
//! # fn demo() -> anyhow::Result<()> {
//! use adapter_smol::client::{Client, ClientOptions};
//! use mqtt_proto::QoS;
//!
//! smol::block_on(async {
//!     let (client, messages) =
//!         Client::connect(ClientOptions::new("mqtt://127.0.0.1:1883", "demo")).await?;
//!     client.subscribe("sensors/#", QoS::AtLeastOnce).await?;
//!     client.publish("sensors/1", "21.5", QoS::AtLeastOnce, false).await?;
//!     while let Ok(m) = messages.recv().await {
//!         println!("{}: {:?}", m.topic, m.payload);
//!     }
//!     anyhow::Ok(())
//! })
//! # }
//! ```

use crate::Spawner;
use async_channel::{Receiver, Sender};
use async_io::Timer;
use async_net::TcpStream;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::{http, Message};
use async_tungstenite::WebSocketStream;
use bytes::Bytes;
use futures_lite::future;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures_util::{SinkExt, StreamExt};
pub use mqtt_adapter_common::client::ClientOptions;
use mqtt_adapter_common::endpoint::{Endpoint, Scheme};
use mqtt_proto::{
    PacketId, Publish, QoS, ReasonCode, Subscription, SubscriptionOptions, TopicFilter, TopicName,
};
use mqtt_session::{CloseReason, Connection, DropReason, Event};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long connecting (TCP, TLS, WebSocket, CONNACK) may take.
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

enum Cmd {
    Publish(Publish, Answer<()>),
    Subscribe(Subscription, Answer<ReasonCode>),
    Unsubscribe(TopicFilter, Answer<()>),
    Disconnect(Sender<()>),
}

/// A connected client; cheap to clone.
#[derive(Clone)]
pub struct Client {
    tx: Sender<Cmd>,
    session_present: bool,
}

impl Client {
    /// Connects (waiting for CONNACK) and runs the session on smol's executor. A
    /// refusal by the server is an error that downcasts to [`ClientError::ConnectRefused`].
    pub async fn connect(options: ClientOptions) -> anyhow::Result<(Client, Receiver<Publish>)> {
        Self::connect_on(options, Spawner::smol()).await
    }

    /// Like [`connect`](Self::connect), the session's task on `spawner`.
    pub async fn connect_on(
        options: ClientOptions,
        spawner: Spawner,
    ) -> anyhow::Result<(Client, Receiver<Publish>)> {
        let opened = future::or(open(&options), async {
            Timer::after(CONNECT_LIMIT).await;
            Err(anyhow::anyhow!(
                "{}: not connected within {CONNECT_LIMIT:?}",
                options.address
            ))
        });
        let stream = opened.await?;
        let mut conn = Connection::client(options.session.clone());
        conn.connect(Instant::now(), options.connect_packet(options.clean_start)?)?;
        let (tx, rx) = async_channel::bounded(256);
        let (msg_tx, msg_rx) = async_channel::bounded(1024);
        let (ready_tx, ready_rx) = async_channel::bounded(1);
        spawner.spawn(run(conn, stream, rx, msg_tx, ready_tx));
        let ready = future::or(async { ready_rx.recv().await.ok() }, async {
            Timer::after(CONNECT_LIMIT).await;
            None
        });
        let session_present = ready
            .await
            .ok_or_else(|| anyhow::anyhow!("no CONNACK within {CONNECT_LIMIT:?}"))??;
        Ok((
            Client {
                tx,
                session_present,
            },
            msg_rx,
        ))
    }

    /// Session Present of the CONNACK: the server had kept this client id's session.
    pub fn session_present(&self) -> bool {
        self.session_present
    }

    async fn call<T>(&self, cmd: impl FnOnce(Answer<T>) -> Cmd) -> Result<T, ClientError> {
        let (tx, rx) = async_channel::bounded(1);
        self.tx
            .send(cmd(tx))
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.recv().await.map_err(|_| ClientError::Closed)?
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
        self.call(|a| Cmd::Publish(p, a)).await
    }

    /// Subscribes; returns the granted QoS code (or the refusal).
    pub async fn subscribe(&self, filter: &str, qos: QoS) -> Result<ReasonCode, ClientError> {
        let s = Subscription {
            filter: TopicFilter::new(filter)?,
            options: SubscriptionOptions {
                qos,
                ..Default::default()
            },
        };
        self.call(|a| Cmd::Subscribe(s, a)).await
    }

    /// Unsubscribes.
    pub async fn unsubscribe(&self, filter: &str) -> Result<(), ClientError> {
        let f = TopicFilter::new(filter)?;
        self.call(|a| Cmd::Unsubscribe(f, a)).await
    }

    /// Sends DISCONNECT and closes the connection.
    pub async fn disconnect(&self) {
        let (tx, rx) = async_channel::bounded(1);
        if self.tx.send(Cmd::Disconnect(tx)).await.is_ok() {
            let _ = rx.recv().await;
        }
    }
}

#[derive(Default)]
struct Pending {
    publishes: HashMap<PacketId, Answer<()>>,
    subscribes: HashMap<PacketId, Answer<ReasonCode>>,
    unsubscribes: HashMap<PacketId, Answer<()>>,
}

/// What woke the session task.
enum Wake {
    Read(std::io::Result<Option<Bytes>>),
    Cmd(Option<Cmd>),
    Timer,
}

/// The session task.
async fn run(
    mut conn: Connection,
    mut stream: Transport,
    cmds: Receiver<Cmd>,
    messages: Sender<Publish>,
    ready: Sender<anyhow::Result<bool>>,
) {
    let mut ready = Some(ready);
    let mut pending = Pending::default();
    let mut disconnected: Option<Sender<()>> = None;
    let mut buf = vec![0u8; 4096];
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
                        let _ = r.try_send(Ok(ack.session_present));
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
                        let _ = w.try_send(if reason_code.is_success() {
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
                        let _ = w.try_send(Err(ClientError::Dropped(reason)));
                    }
                }
                Event::SubAck(s) => {
                    if let Some(w) = pending.subscribes.remove(&s.packet_id) {
                        let code = s
                            .reason_codes
                            .first()
                            .copied()
                            .unwrap_or(ReasonCode::UnspecifiedError);
                        let _ = w.try_send(Ok(code));
                    }
                }
                Event::UnsubAck(u) => {
                    if let Some(w) = pending.unsubscribes.remove(&u.packet_id) {
                        let _ = w.try_send(Ok(()));
                    }
                }
                Event::Closed(reason) => {
                    if let Some(r) = ready.take() {
                        let e = match reason {
                            CloseReason::Refused(code) => ClientError::ConnectRefused(code).into(),
                            other => anyhow::anyhow!("connection closed: {other:?}"),
                        };
                        let _ = r.try_send(Err(e));
                    }
                    // What was queued (a DISCONNECT) leaves before the connection closes.
                    if let Some(b) = conn.poll_transmit() {
                        let _ = stream.write(b).await;
                    }
                    stream.close().await;
                    drop(disconnected.take());
                    // Every waiting call fails with Closed as its answer is dropped.
                    return;
                }
                _ => {}
            }
        }
        if let Some(b) = conn.poll_transmit() {
            if stream.write(b).await.is_err() {
                conn.handle_closed(Instant::now());
                continue;
            }
        }
        let deadline = conn.poll_timeout();
        let wake = future::or(
            async { Wake::Read(stream.read(&mut buf).await) },
            future::or(async { Wake::Cmd(cmds.recv().await.ok()) }, async {
                match deadline {
                    Some(d) => {
                        Timer::at(d).await;
                    }
                    None => future::pending::<()>().await,
                }
                Wake::Timer
            }),
        )
        .await;
        let now = Instant::now();
        match wake {
            Wake::Read(Ok(Some(b))) => conn.handle_input(now, &b),
            Wake::Read(_) => conn.handle_closed(now),
            Wake::Timer => conn.handle_timeout(now),
            Wake::Cmd(None) => {
                // Every handle is gone.
                if conn
                    .disconnect(now, ReasonCode::Success, Default::default())
                    .is_err()
                {
                    conn.handle_closed(now);
                }
            }
            Wake::Cmd(Some(Cmd::Disconnect(done))) => {
                disconnected = Some(done);
                if conn
                    .disconnect(now, ReasonCode::Success, Default::default())
                    .is_err()
                {
                    conn.handle_closed(now);
                }
            }
            Wake::Cmd(Some(Cmd::Publish(p, w))) => match conn.publish(now, p) {
                Ok(Some(id)) => {
                    pending.publishes.insert(id, w);
                }
                Ok(None) => {
                    let _ = w.try_send(Ok(()));
                }
                Err(e) => {
                    let _ = w.try_send(Err(e.into()));
                }
            },
            Wake::Cmd(Some(Cmd::Subscribe(s, w))) => {
                match conn.subscribe(now, vec![s], Default::default()) {
                    Ok(id) => {
                        pending.subscribes.insert(id, w);
                    }
                    Err(e) => {
                        let _ = w.try_send(Err(e.into()));
                    }
                }
            }
            Wake::Cmd(Some(Cmd::Unsubscribe(f, w))) => {
                match conn.unsubscribe(now, vec![f], Default::default()) {
                    Ok(id) => {
                        pending.unsubscribes.insert(id, w);
                    }
                    Err(e) => {
                        let _ = w.try_send(Err(e.into()));
                    }
                }
            }
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
    /// What arrived; `None` when the server closed. Cancel safe.
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<Option<Bytes>> {
        match self {
            Transport::Stream(s) => match s.read(buf).await? {
                0 => Ok(None),
                n => Ok(Some(Bytes::copy_from_slice(&buf[..n]))),
            },
            Transport::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Binary(b))) if b.is_empty() => {}
                    Some(Ok(Message::Binary(b))) => return Ok(Some(b)),
                    // tungstenite answers pings itself.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    // A text frame is not MQTT ([MQTT-6.0.0-1]); a close frame ends it.
                    Some(Ok(Message::Text(_) | Message::Close(_))) | None => return Ok(None),
                    Some(Err(e)) => return Err(std::io::Error::other(e)),
                }
            },
        }
    }

    /// Writes one batch: on a WebSocket, one binary frame.
    async fn write(&mut self, data: Bytes) -> std::io::Result<()> {
        match self {
            Transport::Stream(s) => {
                s.write_all(&data).await?;
                s.flush().await
            }
            Transport::Ws(ws) => ws
                .send(Message::Binary(data))
                .await
                .map_err(std::io::Error::other),
        }
    }

    /// Closes cleanly (TCP shutdown, TLS close_notify, the WebSocket closing handshake).
    async fn close(&mut self) {
        let _ = match self {
            Transport::Stream(s) => s.close().await.map_err(drop),
            Transport::Ws(ws) => SinkExt::close(&mut **ws).await.map_err(drop),
        };
    }
}

async fn open(options: &ClientOptions) -> anyhow::Result<Transport> {
    let ep = Endpoint::parse(&options.address, options.tls.is_some())?;
    let tcp = TcpStream::connect(ep.authority.as_str()).await?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Io> = match ep.scheme {
        Scheme::Tcp | Scheme::Ws => Box::new(tcp),
        Scheme::Tls | Scheme::Wss => {
            let Some((config, name)) = &options.tls else {
                anyhow::bail!("{}: TLS needs ClientOptions::tls", options.address);
            };
            let name = rustls_pki_types::ServerName::try_from(name.clone())?;
            let tls = futures_rustls::TlsConnector::from(config.clone())
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
    let (ws, resp) = async_tungstenite::client_async(req, stream).await?;
    anyhow::ensure!(
        mqtt_adapter_common::ws::offers_mqtt(resp.headers()),
        "{}: the server did not accept the `mqtt` WebSocket subprotocol",
        options.address
    );
    Ok(Transport::Ws(Box::new(ws)))
}
