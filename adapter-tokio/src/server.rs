//! The drive loop: one task owns the broker core; one task per connection reads, one
//! writes. Input reaches the core in batches over a channel; each connection's output
//! leaves in one write per batch. No protocol decision is made here.

use crate::auth::{parse_acl, Passwords};
use crate::config::Config;
use crate::tls::{Reloading, TlsFiles};
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use mqtt_broker::{AuthResult, Broker, BrokerEvent, ConnId, ConnInfo, Hooks, Output};
use mqtt_proto::{Publish, ReasonCode};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::{http, Message};
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, error, info, warn};

enum ToCore {
    Open {
        id: ConnId,
        info: ConnInfo,
        outbox: Arc<Outbox>,
        identity_as_username: bool,
    },
    Input(ConnId, Bytes),
    Closed(ConnId),
    Auth(ConnId, AuthResult),
    Metrics(oneshot::Sender<String>),
    Gauges(oneshot::Sender<mqtt_broker::Gauges>),
    Publish(Publish),
    Disconnect(String, ReasonCode),
    Store(mqtt_store::Report),
}

struct ConnHandle {
    outbox: Arc<Outbox>,
    identity_as_username: bool,
}

/// A running broker.
pub struct Running {
    /// The addresses the listeners are bound to (useful with port 0).
    pub local_addrs: Vec<SocketAddr>,
    /// The metrics endpoint's address, if enabled.
    pub metrics_addr: Option<SocketAddr>,
    shutdown: Option<watch::Sender<bool>>,
    core: mpsc::Sender<ToCore>,
    done: Option<oneshot::Receiver<()>>,
    /// The accept loops (and the metrics endpoint's): they hold the listening sockets.
    listeners: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Publishes a message as the broker (no publisher session, no ACL).
    pub async fn publish(&self, publish: Publish) -> anyhow::Result<()> {
        self.core
            .send(ToCore::Publish(publish))
            .await
            .map_err(|_| anyhow::anyhow!("broker stopped"))
    }

    /// Current connections, sessions, subscriptions and retained messages.
    pub async fn gauges(&self) -> anyhow::Result<mqtt_broker::Gauges> {
        let (tx, rx) = oneshot::channel();
        self.core
            .send(ToCore::Gauges(tx))
            .await
            .map_err(|_| anyhow::anyhow!("broker stopped"))?;
        Ok(rx.await?)
    }

    /// Waits (up to `limit`) until the broker holds at least `n` subscriptions: tests use
    /// it to know a subscriber is ready.
    pub async fn wait_for_subscriptions(&self, n: usize, limit: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.gauges().await?.subscriptions >= n {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{n} subscriptions not reached"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Disconnects a client (5.0: DISCONNECT with `reason`).
    pub async fn disconnect_client(
        &self,
        client_id: &str,
        reason: ReasonCode,
    ) -> anyhow::Result<()> {
        self.core
            .send(ToCore::Disconnect(client_id.into(), reason))
            .await
            .map_err(|_| anyhow::anyhow!("broker stopped"))
    }

    /// Resolves when the core stops on its own (the store failed), so the embedding
    /// application can exit.
    pub async fn stopped(&mut self) {
        match self.done.as_mut() {
            Some(d) => {
                let _ = d.await;
                self.done = None;
            }
            None => std::future::pending().await,
        }
    }

    /// Stops accepting, disconnects clients (5.0: 0x8B) and waits for the core to finish
    /// and the listening sockets to close (their ports can be bound again at once).
    pub async fn shutdown(mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(true);
        }
        for l in std::mem::take(&mut self.listeners) {
            let _ = l.await;
        }
        if let Some(d) = self.done.take() {
            let _ = d.await;
        }
    }
}

/// Binds the listeners and starts the broker.
pub async fn start(config: Config, hooks: Option<Box<dyn Hooks>>) -> anyhow::Result<Running> {
    start_with(config, hooks, None).await
}

/// Like [`start`], and every [`BrokerEvent`] (client connected and disconnected,
/// subscribed, message received, ...) is also sent to `events`, for an embedding
/// application. Events are dropped while the channel is full: the broker never waits
/// for it.
pub async fn start_with(
    config: Config,
    hooks: Option<Box<dyn Hooks>>,
    events: Option<mpsc::Sender<BrokerEvent>>,
) -> anyhow::Result<Running> {
    let passwords = match &config.auth.password_file {
        Some(p) => Some(Arc::new(Passwords::load(p)?)),
        None => None,
    };
    let acl = match &config.auth.acl_file {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
            Some(parse_acl(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?)
        }
        None => None,
    };
    let mut broker = Broker::new(config.broker_config(), Instant::now());
    if let Some(acl) = acl {
        broker.set_acl(acl);
    }
    if let Some(h) = hooks {
        broker.set_hooks(h);
    }
    let (core_tx, core_rx) = mpsc::channel::<ToCore>(4096);
    // The durable state comes back before any listener accepts.
    let persister = if config.persistence.enabled {
        let store = open_store(&config.persistence)?;
        let (store, snapshot) = store;
        info!(
            dir = %config.persistence.dir.display(),
            durability = %config.persistence.durability,
            sessions = snapshot.sessions.len(),
            retained = snapshot.retained.len(),
            "store opened"
        );
        broker.restore(Instant::now(), snapshot);
        let tx = core_tx.clone();
        let durability = config.persistence.durability();
        let committer = mqtt_store::Committer::spawn(store, durability, move |r| {
            let _ = tx.blocking_send(ToCore::Store(r));
        });
        Some(mqtt_store::Persister::new(committer, durability))
    } else {
        None
    };
    let core_tx_handle = core_tx.clone();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let next_id = Arc::new(AtomicUsize::new(1));
    let live = Arc::new(AtomicUsize::new(0));
    let mut local_addrs = vec![];
    let mut listeners = vec![];
    for l in &config.listeners {
        let listener = TcpListener::bind(l.bind)
            .await
            .map_err(|e| anyhow::anyhow!("listener {}: {e}", l.bind))?;
        let addr = listener.local_addr()?;
        local_addrs.push(addr);
        let anonymous = l.allow_anonymous.unwrap_or(l.bind.ip().is_loopback());
        let name = l.name.clone().unwrap_or_else(|| addr.to_string());
        let tls = |l: &crate::config::Listener| {
            Reloading::start(TlsFiles {
                cert: l.cert.clone().unwrap_or_default(),
                key: l.key.clone().unwrap_or_default(),
                client_ca: l.client_ca.clone(),
            })
        };
        let transport = match l.protocol.as_str() {
            "tls" => Transport::Tls(tls(l)?, l.use_identity_as_username),
            "ws" => Transport::Ws(l.path.clone()),
            "wss" => Transport::Wss(tls(l)?, l.path.clone(), l.use_identity_as_username),
            _ => Transport::Tcp,
        };
        info!(listener = %name, %addr, protocol = %l.protocol, anonymous, "listening");
        listeners.push(tokio::spawn(accept_loop(
            listener,
            name,
            anonymous,
            transport,
            core_tx.clone(),
            shutdown_rx.clone(),
            next_id.clone(),
            live.clone(),
            config.limits.max_connections,
        )));
    }
    let metrics_addr = match config.metrics.bind {
        Some(bind) => {
            let l = TcpListener::bind(bind)
                .await
                .map_err(|e| anyhow::anyhow!("metrics {bind}: {e}"))?;
            let addr = l.local_addr()?;
            info!(%addr, "metrics on http://{addr}/metrics");
            listeners.push(tokio::spawn(metrics_loop(
                l,
                core_tx.clone(),
                shutdown_rx.clone(),
            )));
            Some(addr)
        }
        None => None,
    };
    let (done_tx, done_rx) = oneshot::channel();
    let max_pending = config.limits.max_pending_write_bytes;
    tokio::spawn(async move {
        let core = Core {
            broker,
            conns: HashMap::new(),
            tx: core_tx,
            passwords,
            max_pending,
            events,
            persister,
        };
        core.run(core_rx, shutdown_rx).await;
        let _ = done_tx.send(());
    });
    Ok(Running {
        local_addrs,
        metrics_addr,
        core: core_tx_handle,
        shutdown: Some(shutdown_tx),
        done: Some(done_rx),
        listeners,
    })
}

#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    listener: TcpListener,
    name: String,
    anonymous: bool,
    transport: Transport,
    core_tx: mpsc::Sender<ToCore>,
    mut shutdown: watch::Receiver<bool>,
    next_id: Arc<AtomicUsize>,
    live: Arc<AtomicUsize>,
    max_connections: usize,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                warn!(listener = %name, "accept: {e}");
                continue;
            }
        };
        if live.load(Ordering::Relaxed) >= max_connections {
            warn!(%peer, "max_connections reached; closing");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let id = next_id.fetch_add(1, Ordering::Relaxed) as ConnId;
        let info = ConnInfo {
            peer: peer.to_string(),
            listener: name.clone(),
            tls_identity: None,
            allow_anonymous: Some(anonymous),
        };
        live.fetch_add(1, Ordering::Relaxed);
        let (core_tx, live, transport) = (core_tx.clone(), live.clone(), transport.clone());
        tokio::spawn(async move {
            if let Err(e) = serve(id, stream, info, core_tx, transport).await {
                debug!(conn = id, %peer, "handshake failed: {e}");
            }
            live.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// How a listener's connections are wrapped.
#[derive(Clone)]
enum Transport {
    Tcp,
    /// TLS, and whether the client certificate's Common Name is the user name.
    Tls(Reloading, bool),
    Ws(String),
    Wss(Reloading, String, bool),
}

/// The Common Name of the verified client certificate.
fn client_identity(tls: &tokio_rustls::rustls::ServerConnection) -> anyhow::Result<String> {
    let der = tls
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| anyhow::anyhow!("no client certificate"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| anyhow::anyhow!("client certificate: {e}"))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| anyhow::anyhow!("client certificate without a Common Name"))?;
    Ok(cn.to_string())
}

async fn serve(
    id: ConnId,
    stream: TcpStream,
    mut info: ConnInfo,
    core: mpsc::Sender<ToCore>,
    transport: Transport,
) -> anyhow::Result<()> {
    const HANDSHAKE: Duration = Duration::from_secs(10);
    // Each transport's future is boxed: a connection's task is as large as its own
    // transport needs, not as the largest (TLS and WebSocket state are kilobytes).
    match transport {
        Transport::Tcp => Box::pin(connection(id, TcpLink(stream), info, core)).await,
        Transport::Tls(tls, use_identity) => {
            Box::pin(async move {
                let s = tokio::time::timeout(HANDSHAKE, tls.acceptor().accept(stream)).await??;
                if use_identity {
                    info.tls_identity = Some(client_identity(s.get_ref().1)?);
                }
                connection(id, StreamLink::new(s), info, core).await;
                anyhow::Ok(())
            })
            .await?
        }
        Transport::Ws(path) => {
            Box::pin(async move {
                let ws = tokio::time::timeout(HANDSHAKE, ws_accept(stream, &path)).await??;
                connection(id, WsLink(ws), info, core).await;
                anyhow::Ok(())
            })
            .await?
        }
        Transport::Wss(tls, path, use_identity) => {
            Box::pin(async move {
                let ws = tokio::time::timeout(HANDSHAKE, async {
                    let s = tls.acceptor().accept(stream).await?;
                    if use_identity {
                        info.tls_identity = Some(client_identity(s.get_ref().1)?);
                    }
                    ws_accept(s, &path).await
                })
                .await??;
                connection(id, WsLink(ws), info, core).await;
                anyhow::Ok(())
            })
            .await?
        }
    }
    Ok(())
}

/// What the core hands one connection: bytes to write and whether to close. A lock
/// around a list and a wake-up, so an idle connection holds no channel buffer.
struct Outbox {
    queue: std::sync::Mutex<OutQueue>,
    wake: tokio::sync::Notify,
    /// Bytes handed over and not yet written.
    pending: AtomicUsize,
}

#[derive(Default)]
struct OutQueue {
    data: Vec<Bytes>,
    close: bool,
}

impl Outbox {
    fn new() -> Self {
        Self {
            queue: std::sync::Mutex::new(OutQueue::default()),
            wake: tokio::sync::Notify::new(),
            pending: AtomicUsize::new(0),
        }
    }

    /// Core side: queues bytes; returns the bytes now waiting.
    fn push(&self, b: Bytes) -> usize {
        let n = b.len();
        // Counted before the connection can take it.
        let waiting = self.pending.fetch_add(n, Ordering::Relaxed) + n;
        self.queue.lock().expect("not poisoned").data.push(b);
        self.wake.notify_one();
        waiting
    }

    /// Core side: the connection closes after writing what is queued.
    fn close(&self) {
        self.queue.lock().expect("not poisoned").close = true;
        self.wake.notify_one();
    }

    /// Connection side: everything queued, as one buffer for one write, and whether to
    /// close after it.
    fn take(&self) -> (Bytes, bool) {
        let (data, close) = {
            let mut q = self.queue.lock().expect("not poisoned");
            (std::mem::take(&mut q.data), q.close)
        };
        let bytes = match data.len() {
            0 => Bytes::new(),
            1 => data.into_iter().next().expect("one"),
            _ => {
                let mut buf = BytesMut::with_capacity(data.iter().map(Bytes::len).sum());
                for b in &data {
                    buf.extend_from_slice(b);
                }
                buf.freeze()
            }
        };
        self.pending.fetch_sub(bytes.len(), Ordering::Relaxed);
        (bytes, close)
    }
}

async fn register(id: ConnId, info: ConnInfo, core: &mpsc::Sender<ToCore>) -> Option<Arc<Outbox>> {
    let outbox = Arc::new(Outbox::new());
    // A TLS identity reaches this point only from a listener that uses it as the user name.
    let identity_as_username = info.tls_identity.is_some();
    core.send(ToCore::Open {
        id,
        info,
        outbox: outbox.clone(),
        identity_as_username,
    })
    .await
    .ok()?;
    Some(outbox)
}

/// Buffer capacity a TLS connection keeps between reads.
const KEPT_CAPACITY: usize = 4096;

/// One transport, read and written by the connection's single task.
trait Link: Send + 'static {
    /// The next bytes; empty when the peer closed. Cancel safe.
    fn read_chunk(&mut self) -> impl std::future::Future<Output = std::io::Result<Bytes>> + Send;
    /// Writes one batch.
    fn write(
        &mut self,
        data: Bytes,
    ) -> impl std::future::Future<Output = std::io::Result<()>> + Send;
    /// Ends the transport.
    fn shutdown(&mut self) -> impl std::future::Future<Output = ()> + Send;
}

/// TCP: waits for readability with no buffer, then reads into a fresh one, so an idle
/// connection holds no read buffer at all.
struct TcpLink(TcpStream);

impl Link for TcpLink {
    async fn read_chunk(&mut self) -> std::io::Result<Bytes> {
        loop {
            self.0.readable().await?;
            let mut buf = BytesMut::with_capacity(KEPT_CAPACITY);
            match self.0.try_read_buf(&mut buf) {
                Ok(_) => return Ok(buf.freeze()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    async fn write(&mut self, data: Bytes) -> std::io::Result<()> {
        self.0.write_all(&data).await
    }

    async fn shutdown(&mut self) {
        let _ = self.0.shutdown().await;
    }
}

/// Any other byte stream (TLS): a read buffer kept between reads, shrunk back after a
/// burst.
struct StreamLink<S> {
    s: S,
    buf: BytesMut,
}

impl<S> StreamLink<S> {
    fn new(s: S) -> Self {
        Self {
            s,
            buf: BytesMut::new(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Link for StreamLink<S> {
    async fn read_chunk(&mut self) -> std::io::Result<Bytes> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(KEPT_CAPACITY);
        }
        // `read_buf` is cancel safe: nothing is lost when a write wakes the task first.
        self.s.read_buf(&mut self.buf).await?;
        let capacity = self.buf.capacity();
        let chunk = self.buf.split().freeze();
        if capacity > 16 * KEPT_CAPACITY {
            self.buf = BytesMut::new();
        }
        Ok(chunk)
    }

    async fn write(&mut self, data: Bytes) -> std::io::Result<()> {
        self.s.write_all(&data).await?;
        self.s.flush().await
    }

    async fn shutdown(&mut self) {
        let _ = self.s.shutdown().await;
    }
}

/// WebSocket: binary frames carry the MQTT byte stream (packets may span frames); each
/// batch leaves as one binary frame.
struct WsLink<S>(WebSocketStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Link for WsLink<S> {
    async fn read_chunk(&mut self) -> std::io::Result<Bytes> {
        loop {
            match self.0.next().await {
                Some(Ok(Message::Binary(b))) => {
                    if !b.is_empty() {
                        return Ok(b);
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                // Text frames are not MQTT ([MQTT-6.0.0-1]); close frames and errors end
                // it.
                _ => return Ok(Bytes::new()),
            }
        }
    }

    async fn write(&mut self, data: Bytes) -> std::io::Result<()> {
        self.0
            .send(Message::Binary(data))
            .await
            .map_err(std::io::Error::other)
    }

    async fn shutdown(&mut self) {
        let _ = self.0.close(None).await;
    }
}

/// A connection: one task reads what arrives and sends it to the core, and writes what
/// the core queued, one write per batch.
async fn connection<L: Link>(id: ConnId, mut link: L, info: ConnInfo, core: mpsc::Sender<ToCore>) {
    let Some(outbox) = register(id, info, &core).await else {
        return;
    };
    let mut closed_by_broker = false;
    loop {
        tokio::select! {
            // Writing first: what the core queued leaves before more is read.
            biased;
            _ = outbox.wake.notified() => {}
            chunk = link.read_chunk() => match chunk {
                Ok(b) if !b.is_empty() => {
                    if b[0] >> 4 == 3 {
                        // Input that starts with a PUBLISH waits one scheduling round. Of
                        // the tasks woken together, tokio runs the last woken first, which
                        // would let a PUBLISH overtake a SUBSCRIBE that reached another
                        // connection just before it; waiting restores the arrival order.
                        // MQTT orders nothing across connections, but a client that
                        // subscribes and then has another client publish expects the
                        // message.
                        tokio::task::yield_now().await;
                    }
                    if core.send(ToCore::Input(id, b)).await.is_err() {
                        break;
                    }
                    continue;
                }
                _ => break,
            },
        }
        let (data, close) = outbox.take();
        if !data.is_empty() && link.write(data).await.is_err() {
            break;
        }
        if close {
            closed_by_broker = true;
            break;
        }
    }
    link.shutdown().await;
    let _ = core.send(ToCore::Closed(id)).await;
    if closed_by_broker {
        linger(&mut link).await;
    }
}

/// How long a connection the broker closed keeps reading, at most.
const LINGER: Duration = Duration::from_secs(2);
/// How many bytes it reads and discards meanwhile, at most.
const LINGER_BYTES: usize = 1 << 20;

/// After the broker closed a connection (our side is shut down, the last packets, often
/// a DISCONNECT with its reason code, are written), reads and discards what the peer
/// still sends until it closes too, for [`LINGER`] and [`LINGER_BYTES`] at most. Closing
/// a socket with input still arriving resets the connection, and a reset makes the peer
/// discard what it had not read yet: a client busy sending (PUBRELs, pings) would never
/// see why it was disconnected.
async fn linger<L: Link>(link: &mut L) {
    let deadline = tokio::time::Instant::now() + LINGER;
    let mut left = LINGER_BYTES;
    while let Ok(Ok(b)) = tokio::time::timeout_at(deadline, link.read_chunk()).await {
        if b.is_empty() || b.len() >= left {
            break;
        }
        left -= b.len();
    }
}

/// The WebSocket handshake: the path must match and the `mqtt` subprotocol is echoed.
// The callback's error type is tungstenite's.
#[allow(clippy::result_large_err)]
async fn ws_accept<S>(stream: S, path: &str) -> anyhow::Result<WebSocketStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let path = path.to_string();
    let ws =
        tokio_tungstenite::accept_hdr_async(stream, move |req: &Request, mut resp: Response| {
            if path != "*" && req.uri().path() != path {
                let mut r =
                    ErrorResponse::new(Some(format!("no MQTT endpoint at {}", req.uri().path())));
                *r.status_mut() = http::StatusCode::NOT_FOUND;
                return Err(r);
            }
            let offers_mqtt = req
                .headers()
                .get_all("Sec-WebSocket-Protocol")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|p| p.trim().eq_ignore_ascii_case("mqtt"));
            if offers_mqtt {
                resp.headers_mut().insert(
                    "Sec-WebSocket-Protocol",
                    http::HeaderValue::from_static("mqtt"),
                );
            }
            Ok(resp)
        })
        .await?;
    Ok(ws)
}

/// Opens the store, or, when configured, moves a damaged one aside and starts empty.
fn open_store(
    p: &crate::config::Persistence,
) -> anyhow::Result<(mqtt_store::Store, mqtt_broker::Snapshot)> {
    match mqtt_store::Store::open(&p.dir) {
        Ok(s) => Ok(s),
        Err(e) if p.on_damage == "move-aside" => {
            let to = mqtt_store::move_aside(&p.dir)
                .map_err(|io| anyhow::anyhow!("{e}; moving it aside failed: {io}"))?;
            warn!(error = %e, moved_to = %to.display(), "store damaged; moved aside, starting empty");
            Ok(mqtt_store::Store::open(&p.dir)?)
        }
        Err(e) => Err(anyhow::anyhow!(
            "{e}; refusing to start (set persistence.on_damage = \"move-aside\" to move it \
             aside and start empty)"
        )),
    }
}

/// The task that owns the broker core.
struct Core {
    broker: Broker,
    conns: HashMap<ConnId, ConnHandle>,
    tx: mpsc::Sender<ToCore>,
    passwords: Option<Arc<Passwords>>,
    max_pending: usize,
    events: Option<mpsc::Sender<BrokerEvent>>,
    /// With persistence: records go to the store, and bytes that depend on them wait.
    persister: Option<mqtt_store::Persister>,
}

impl Core {
    async fn run(mut self, mut rx: mpsc::Receiver<ToCore>, mut shutdown: watch::Receiver<bool>) {
        let mut stopping = false;
        loop {
            let deadline = self.broker.poll_timeout();
            tokio::select! {
                msg = rx.recv() => {
                    let Some(msg) = msg else { break };
                    let now = Instant::now();
                    let mut alive = self.handle(now, msg);
                    // Everything already waiting is handled before the outputs are drained.
                    for _ in 0..1024 {
                        if !alive {
                            break;
                        }
                        match rx.try_recv() {
                            Ok(m) => alive = self.handle(now, m),
                            Err(_) => break,
                        }
                    }
                    if !alive {
                        break;
                    }
                }
                _ = sleep_until(deadline) => self.broker.handle_timeout(Instant::now()),
                _ = shutdown.changed(), if !stopping => {
                    stopping = true;
                    info!("shutting down");
                    self.broker.shutdown(Instant::now());
                }
            }
            self.drain();
            if stopping && self.conns.is_empty() {
                break;
            }
        }
        if let Some(p) = self.persister.take() {
            // What was written is made durable before the broker stops.
            let _ = tokio::task::spawn_blocking(move || p.finish()).await;
        }
    }

    /// Carries out the broker's outputs, through the persister if there is one, and
    /// answers the acknowledgements that became due.
    fn drain(&mut self) {
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

    fn output(&mut self, o: Output) {
        match o {
            Output::Transmit(id, bytes) => {
                if let Some(c) = self.conns.get(&id) {
                    let p = c.outbox.push(bytes);
                    if p > self.max_pending {
                        warn!(conn = id, pending = p, "client too slow; closing");
                        c.outbox.close();
                        self.conns.remove(&id);
                        self.broker.handle_closed(Instant::now(), id);
                    }
                }
            }
            Output::Close(id) => {
                if let Some(c) = self.conns.remove(&id) {
                    c.outbox.close();
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
                let identity = self
                    .conns
                    .get(&req.conn)
                    .filter(|c| c.identity_as_username)
                    .and(req.tls_identity.clone());
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
                let tx = self.tx.clone();
                let passwords = self.passwords.clone();
                tokio::task::spawn_blocking(move || {
                    let ok = match (&passwords, &req.username, &req.password) {
                        (Some(p), Some(u), Some(pw)) => p.verify(u, pw),
                        (None, _, _) => true,
                        _ => false,
                    };
                    let result = if ok {
                        AuthResult::Allow { username: None }
                    } else {
                        AuthResult::Deny(ReasonCode::BadUserNameOrPassword)
                    };
                    let _ = tx.blocking_send(ToCore::Auth(req.conn, result));
                });
            }
            Output::Event(e) => {
                log_event(&e);
                if let Some(tx) = &self.events {
                    let _ = tx.try_send(e);
                }
            }
            _ => {}
        }
    }

    /// Handles one message; false if the broker must stop.
    fn handle(&mut self, now: Instant, msg: ToCore) -> bool {
        match msg {
            ToCore::Store(mqtt_store::Report::Durable(n)) => {
                if let Some(p) = self.persister.as_mut() {
                    for o in p.durable(n) {
                        self.output(o);
                    }
                }
                true
            }
            ToCore::Store(mqtt_store::Report::Failed(e)) => {
                // Nothing more can be made durable: stop without sending what waits for
                // it, so no acknowledgement is given that the store does not back.
                error!(error = %e, "store failed; stopping");
                for (_, c) in self.conns.drain() {
                    c.outbox.close();
                }
                self.persister = None;
                false
            }
            msg => {
                handle(&mut self.broker, &mut self.conns, now, msg);
                true
            }
        }
    }
}

fn handle(broker: &mut Broker, conns: &mut HashMap<ConnId, ConnHandle>, now: Instant, msg: ToCore) {
    match msg {
        ToCore::Open {
            id,
            info,
            outbox,
            identity_as_username,
        } => {
            conns.insert(
                id,
                ConnHandle {
                    outbox,
                    identity_as_username,
                },
            );
            broker.handle_connection(now, id, info);
        }
        ToCore::Input(id, b) => broker.handle_input(now, id, &b),
        ToCore::Closed(id) => {
            conns.remove(&id);
            broker.handle_closed(now, id);
        }
        ToCore::Auth(id, r) => broker.handle_auth(now, id, r),
        ToCore::Publish(p) => {
            broker.publish(now, p);
        }
        ToCore::Disconnect(client_id, reason) => {
            broker.disconnect_client(now, &client_id, reason);
        }
        ToCore::Gauges(reply) => {
            let _ = reply.send(broker.gauges());
        }
        ToCore::Store(_) => {}
        ToCore::Metrics(reply) => {
            let _ = reply.send(crate::metrics::render(
                broker.stats(),
                &broker.gauges(),
                &broker.queue_gauges(),
            ));
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// A minimal HTTP endpoint: `GET /metrics` answers with the Prometheus text.
async fn metrics_loop(
    listener: TcpListener,
    core: mpsc::Sender<ToCore>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (mut s, _) = tokio::select! {
            a = listener.accept() => match a { Ok(x) => x, Err(_) => continue },
            _ = shutdown.changed() => return,
        };
        let core = core.clone();
        tokio::spawn(async move {
            let mut req = vec![0u8; 1024];
            let n = match tokio::time::timeout(Duration::from_secs(5), s.read(&mut req)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let line = String::from_utf8_lossy(&req[..n]);
            let (status, body) = if line.starts_with("GET /metrics ") {
                let (tx, rx) = oneshot::channel();
                if core.send(ToCore::Metrics(tx)).await.is_err() {
                    return;
                }
                ("200 OK", rx.await.unwrap_or_default())
            } else {
                ("404 Not Found", "not found\n".to_string())
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(body.as_bytes()).await;
            let _ = s.shutdown().await;
        });
    }
}

fn log_event(e: &BrokerEvent) {
    match e {
        BrokerEvent::ClientConnected {
            conn,
            client_id,
            username,
            version,
            session_present,
        } => {
            info!(conn, %client_id, username = username.as_deref().unwrap_or(""), %version, session_present, "client connected")
        }
        BrokerEvent::ClientDisconnected {
            conn,
            client_id,
            reason,
        } => info!(
            conn,
            client_id = client_id.as_deref().unwrap_or(""),
            ?reason,
            "client disconnected"
        ),
        BrokerEvent::MessageDropped { client_id, reason } => {
            debug!(%client_id, ?reason, "message dropped")
        }
        other => tracing::trace!(?other),
    }
}
