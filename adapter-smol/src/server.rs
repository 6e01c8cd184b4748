//! The broker on any executor of the smol family: smol's, async-std's, or one of your
//! own, given as a [`Spawner`].
//!
//! Tasks: one owns the broker core ([`Core`]) and waits for the next input or the next
//! deadline (an `async_io::Timer`); one accept loop per listener; per connection, a
//! reader task (it ran the TLS and WebSocket handshakes first) and a writer task that
//! writes each batch the core queued in one write (one binary frame on a WebSocket).
//! Sockets are `async-net`, timers `async-io`, TLS `futures-rustls`, WebSocket
//! `async-tungstenite`: all futures-io, driven by async-io's reactor, which smol and
//! async-std both use. Password checks and the last fsync run on `blocking`'s thread
//! pool. No protocol decision is made here.

use crate::Spawner;
use async_channel::{Receiver, Sender};
use async_io::Timer;
use async_net::{TcpListener, TcpStream};
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use bytes::{Bytes, BytesMut};
use futures_lite::future;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures_util::StreamExt;
use mqtt_adapter_common::config::{Config, Listener};
use mqtt_adapter_common::console::{self, Console, Limit, Route};
use mqtt_adapter_common::core::{self, AuthDone, Conn, Core, Flow, Input, Offload};
use mqtt_adapter_common::tls::{client_identity, Reloading, TlsFiles};
use mqtt_broker::{BrokerEvent, ConnId, ConnInfo, Gauges, Hooks};
use mqtt_proto::{Publish, ReasonCode};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// How long a TLS or WebSocket handshake may take.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// Inputs handled before the outputs are drained.
const BATCH: usize = 1024;
/// Buffer capacity a connection keeps between reads.
const KEPT_CAPACITY: usize = 4096;
/// Most bytes copied together into one write; a larger transmit is written as it is.
const MAX_BATCH: usize = 256 * 1024;

type ToCore = Sender<Input<SmolConn>>;

enum ToConn {
    Data(Bytes),
    Close,
}

/// A connection's write side, as the core holds it.
pub struct SmolConn {
    tx: Sender<ToConn>,
    pending: Arc<AtomicUsize>,
    socket: TcpStream,
}

impl Conn for SmolConn {
    fn send(&self, data: Bytes) -> usize {
        let n = data.len();
        let pending = self.pending.fetch_add(n, Ordering::Relaxed) + n;
        let _ = self.tx.try_send(ToConn::Data(data));
        pending
    }

    fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    fn close(&self) {
        let _ = self.tx.try_send(ToConn::Close);
    }

    fn abort(&self) {
        // The writer may be waiting on this socket: cut it under it.
        let _ = self.socket.shutdown(Shutdown::Both);
        let _ = self.tx.try_send(ToConn::Close);
    }
}

/// A running broker. Dropping it shuts it down without waiting; call
/// [`shutdown`](Self::shutdown) to wait.
pub struct Running {
    /// The addresses the listeners are bound to (useful with port 0).
    pub local_addrs: Vec<SocketAddr>,
    /// The metrics endpoint's address, if enabled.
    pub metrics_addr: Option<SocketAddr>,
    core: ToCore,
    /// Closed to stop the accept loops.
    stop: Option<Sender<()>>,
    /// Closed when every accept loop has ended (and dropped its socket).
    listeners_done: Receiver<()>,
    /// Closed when the core has finished.
    done: Receiver<()>,
}

impl Running {
    async fn ask<T: Send + 'static>(
        &self,
        input: impl FnOnce(core::Reply<T>) -> Input<SmolConn>,
    ) -> anyhow::Result<T> {
        let (tx, rx) = async_channel::bounded(1);
        self.core
            .send(input(Box::new(move |v| {
                let _ = tx.try_send(v);
            })))
            .await
            .map_err(|_| anyhow::anyhow!("broker stopped"))?;
        rx.recv()
            .await
            .map_err(|_| anyhow::anyhow!("broker stopped"))
    }

    /// Publishes a message as the broker (no publisher session, no ACL).
    pub async fn publish(&self, publish: Publish) -> anyhow::Result<()> {
        self.core
            .send(Input::Publish(publish))
            .await
            .map_err(|_| anyhow::anyhow!("broker stopped"))
    }

    /// Current connections, sessions, subscriptions and retained messages.
    pub async fn gauges(&self) -> anyhow::Result<Gauges> {
        self.ask(Input::Gauges).await
    }

    /// The Prometheus text of the metrics.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        self.ask(Input::Metrics).await
    }

    /// Waits (up to `limit`) until the broker holds at least `n` subscriptions: tests use
    /// it to know a subscriber is ready.
    pub async fn wait_for_subscriptions(&self, n: usize, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if self.gauges().await?.subscriptions >= n {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "{n} subscriptions not reached");
            Timer::after(Duration::from_millis(10)).await;
        }
    }

    /// Disconnects a client (5.0: DISCONNECT with `reason`).
    pub async fn disconnect_client(
        &self,
        client_id: &str,
        reason: ReasonCode,
    ) -> anyhow::Result<()> {
        self.core
            .send(Input::Disconnect(client_id.into(), reason))
            .await
            .map_err(|_| anyhow::anyhow!("broker stopped"))
    }

    /// Resolves when the core stops on its own (the store failed), so the embedding
    /// application can exit.
    pub async fn stopped(&self) {
        let _ = self.done.recv().await;
    }

    /// Stops accepting, disconnects clients (5.0: 0x8B) and waits for the core to finish
    /// (the last fsync included) and the listening sockets to close.
    pub async fn shutdown(mut self) {
        self.stop.take();
        let _ = self.listeners_done.recv().await;
        let _ = self.core.send(Input::Shutdown).await;
        let _ = self.done.recv().await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // The accept loops end as the channel closes; the core disconnects the clients.
        self.stop.take();
        let _ = self.core.try_send(Input::Shutdown);
    }
}

/// Binds the listeners and starts the broker's tasks on `spawner`.
pub async fn start(
    config: Config,
    hooks: Option<Box<dyn Hooks>>,
    spawner: Spawner,
) -> anyhow::Result<Running> {
    start_with(config, hooks, None, spawner).await
}

/// Like [`start`], and every [`BrokerEvent`] is also sent to `events`; events are
/// dropped while the channel is full: the broker never waits for it.
pub async fn start_with(
    config: Config,
    hooks: Option<Box<dyn Hooks>>,
    events: Option<Sender<BrokerEvent>>,
    spawner: Spawner,
) -> anyhow::Result<Running> {
    // A configuration built in code has not been through `Config::parse`'s checks.
    config
        .metrics
        .check(config.auth.password_file.as_deref())
        .map_err(anyhow::Error::msg)?;
    let (mut broker, passwords) = core::broker(&config, hooks)?;
    let console_passwords = passwords.clone();
    let (core_tx, core_rx) = async_channel::bounded::<Input<SmolConn>>(4096);
    // The durable state comes back before any listener accepts.
    let persister = {
        let tx = core_tx.clone();
        mqtt_adapter_common::persistence::start(&config.persistence, &mut broker, move |r| {
            let _ = tx.send_blocking(Input::Store(r));
        })?
    };
    let offload: Offload = Box::new(|job| blocking::unblock(job).detach());
    let auth_done: AuthDone = {
        let tx = core_tx.clone();
        Arc::new(move |id, r| {
            let _ = tx.send_blocking(Input::Auth(id, r));
        })
    };
    let mut core = Core::new(broker, passwords, &config, persister, offload, auth_done);
    if let Some(tx) = events {
        core.set_events(move |e| {
            let _ = tx.try_send(e);
        });
    }
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    let (listeners_tx, listeners_done) = async_channel::bounded::<()>(1);
    let shared = Arc::new(Shared {
        core: core_tx.clone(),
        next_id: AtomicUsize::new(1),
        live: AtomicUsize::new(0),
        max_connections: config.limits.max_connections,
        spawner: spawner.clone(),
    });
    let mut local_addrs = vec![];
    for l in &config.listeners {
        let listener = TcpListener::bind(l.bind)
            .await
            .map_err(|e| anyhow::anyhow!("listener {}: {e}", l.bind))?;
        let addr = listener.local_addr()?;
        local_addrs.push(addr);
        let anonymous = l.allow_anonymous.unwrap_or(l.bind.ip().is_loopback());
        let name: Arc<str> = l.name.clone().unwrap_or_else(|| addr.to_string()).into();
        let transport = Transport::of(l)?;
        info!(listener = %name, %addr, protocol = %l.protocol, anonymous, "listening");
        let (shared, stop, done) = (shared.clone(), stop_rx.clone(), listeners_tx.clone());
        spawner.spawn(async move {
            accept_loop(listener, name, anonymous, transport, shared, stop).await;
            drop(done);
        });
    }
    let metrics_addr = match config.metrics.bind {
        Some(bind) => {
            let l = TcpListener::bind(bind)
                .await
                .map_err(|e| anyhow::anyhow!("metrics {bind}: {e}"))?;
            let addr = l.local_addr()?;
            console::log_listening(addr, &config.metrics);
            let console = Arc::new(Console::from_config(
                &config,
                console_passwords,
                &local_addrs,
            ));
            let (shared, stop, done) = (shared.clone(), stop_rx.clone(), listeners_tx.clone());
            spawner.spawn(async move {
                http_loop(l, shared, console, stop).await;
                drop(done);
            });
            Some(addr)
        }
        None => None,
    };
    let (done_tx, done_rx) = async_channel::bounded::<()>(1);
    spawner.spawn(async move {
        drive(core, core_rx).await;
        drop(done_tx);
    });
    Ok(Running {
        local_addrs,
        metrics_addr,
        core: core_tx,
        stop: Some(stop_tx),
        listeners_done,
        done: done_rx,
    })
}

/// The drive loop: wait for inputs or the next deadline, hand them to the core, drain.
async fn drive(mut core: Core<SmolConn>, rx: Receiver<Input<SmolConn>>) {
    loop {
        let deadline = core.poll_timeout();
        let first = future::or(async { Some(rx.recv().await) }, async {
            sleep_until(deadline).await;
            None
        })
        .await;
        let now = Instant::now();
        match first {
            Some(Err(_)) => break,
            Some(Ok(m)) => {
                // Everything already waiting is handled before the outputs are drained.
                let mut flow = core.handle(now, m);
                for _ in 0..BATCH {
                    if flow == Flow::Stop {
                        break;
                    }
                    match rx.try_recv() {
                        Ok(m) => flow = core.handle(now, m),
                        Err(_) => break,
                    }
                }
                if flow == Flow::Stop {
                    break;
                }
            }
            None => {}
        }
        if core.poll_timeout().is_some_and(|at| at <= now) {
            core.handle_timeout(now);
        }
        core.drain();
        if core.is_finished() {
            break;
        }
    }
    // What was written is made durable before the broker stops.
    blocking::unblock(move || core.finish()).await;
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => {
            Timer::at(d).await;
        }
        None => future::pending().await,
    }
}

/// What every accept loop shares.
struct Shared {
    core: ToCore,
    next_id: AtomicUsize,
    live: AtomicUsize,
    max_connections: usize,
    spawner: Spawner,
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

impl Transport {
    fn of(l: &Listener) -> anyhow::Result<Self> {
        let tls = || Reloading::start(TlsFiles::of(l));
        Ok(match l.protocol.as_str() {
            "tls" => Transport::Tls(tls()?, l.use_identity_as_username),
            "ws" => Transport::Ws(l.path.clone()),
            "wss" => Transport::Wss(tls()?, l.path.clone(), l.use_identity_as_username),
            _ => Transport::Tcp,
        })
    }
}

async fn accept_loop(
    listener: TcpListener,
    name: Arc<str>,
    anonymous: bool,
    transport: Transport,
    shared: Arc<Shared>,
    stop: Receiver<()>,
) {
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            let _ = stop.recv().await;
            None
        })
        .await;
        let (stream, peer) = match accepted {
            None => return,
            Some(Ok(x)) => x,
            Some(Err(e)) => {
                warn!(listener = %name, "accept: {e}");
                continue;
            }
        };
        if shared.live.load(Ordering::Relaxed) >= shared.max_connections {
            warn!(%peer, "max_connections reached; closing");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed) as ConnId;
        let info = ConnInfo {
            peer: peer.to_string(),
            listener: name.clone(),
            tls_identity: None,
            allow_anonymous: Some(anonymous),
        };
        shared.live.fetch_add(1, Ordering::Relaxed);
        let (shared2, transport) = (shared.clone(), transport.clone());
        shared.spawner.spawn(async move {
            if let Err(e) = serve(id, stream, info, &shared2, transport).await {
                debug!(conn = id, %peer, "handshake failed: {e}");
            }
            shared2.live.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// `fut`, or an error after [`HANDSHAKE`].
async fn in_time<T>(
    fut: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    future::or(fut, async {
        Timer::after(HANDSHAKE).await;
        Err(anyhow::anyhow!("handshake timed out"))
    })
    .await
}

/// Runs the handshakes, then the connection.
async fn serve(
    id: ConnId,
    stream: TcpStream,
    mut info: ConnInfo,
    shared: &Shared,
    transport: Transport,
) -> anyhow::Result<()> {
    let socket = stream.clone();
    let c = Connection {
        id,
        core: &shared.core,
        spawner: &shared.spawner,
        socket,
    };
    // Each transport's future is boxed: a connection's task is as large as its own
    // transport needs, not as the largest.
    match transport {
        Transport::Tcp => Box::pin(c.stream(stream.clone(), stream, info)).await,
        Transport::Tls(tls, use_identity) => {
            let s = in_time(async {
                Ok(futures_rustls::TlsAcceptor::from(tls.current())
                    .accept(stream)
                    .await?)
            })
            .await?;
            if use_identity {
                info.tls_identity = Some(client_identity(s.get_ref().1)?.into());
            }
            let (rd, wr) = futures_lite::io::split(s);
            Box::pin(c.stream(rd, wr, info)).await
        }
        Transport::Ws(path) => {
            let ws = in_time(ws_accept(stream, &path)).await?;
            Box::pin(c.ws(ws, info)).await
        }
        Transport::Wss(tls, path, use_identity) => {
            let ws = in_time(async {
                let s = futures_rustls::TlsAcceptor::from(tls.current())
                    .accept(stream)
                    .await?;
                if use_identity {
                    info.tls_identity = Some(client_identity(s.get_ref().1)?.into());
                }
                ws_accept(s, &path).await
            })
            .await?;
            Box::pin(c.ws(ws, info)).await
        }
    }
    Ok(())
}

/// The WebSocket handshake (`mqtt_adapter_common::ws::handshake`'s rules).
async fn ws_accept<S>(stream: S, path: &str) -> anyhow::Result<WebSocketStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    Ok(
        async_tungstenite::accept_hdr_async(stream, mqtt_adapter_common::ws::handshake(path))
            .await?,
    )
}

/// What a connection's tasks need.
struct Connection<'a> {
    id: ConnId,
    core: &'a ToCore,
    spawner: &'a Spawner,
    socket: TcpStream,
}

impl Connection<'_> {
    /// Registers the connection with the core; its writer's queue and byte count.
    async fn register(&self, info: ConnInfo) -> Option<(Receiver<ToConn>, Arc<AtomicUsize>)> {
        let (tx, rx) = async_channel::unbounded();
        let pending = Arc::new(AtomicUsize::new(0));
        let conn = SmolConn {
            tx,
            pending: pending.clone(),
            socket: self.socket.clone(),
        };
        self.core
            .send(Input::Open {
                id: self.id,
                info,
                conn,
            })
            .await
            .ok()?;
        Some((rx, pending))
    }

    /// A byte-stream connection (TCP or TLS): reads go to the core, the core's batches
    /// are written.
    async fn stream<R, W>(self, mut rd: R, mut wr: W, info: ConnInfo)
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let Some((rx, pending)) = self.register(info).await else {
            return;
        };
        let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
        let (done_tx, done_rx) = async_channel::bounded::<()>(1);
        self.spawner.spawn(async move {
            let (mut buf, mut carry) = (BytesMut::new(), None);
            while let Some((data, close)) = next_batch(&rx, &mut buf, &mut carry).await {
                if !data.is_empty() && wr.write_all(&data).await.is_err() {
                    break;
                }
                pending.fetch_sub(data.len(), Ordering::Relaxed);
                if close {
                    break;
                }
                let _ = wr.flush().await;
            }
            let _ = wr.close().await;
            drop((stop_tx, done_tx));
        });
        let mut buf = BytesMut::new();
        loop {
            let chunk = future::or(async { Some(read_chunk(&mut rd, &mut buf).await) }, async {
                let _ = stop_rx.recv().await;
                None
            })
            .await;
            match chunk {
                Some(Ok(b)) if !b.is_empty() => {
                    if self.core.send(Input::Data(self.id, b)).await.is_err() {
                        break;
                    }
                }
                _ => break,
            }
        }
        // The core forgets the connection, which ends the writer once it has written
        // what was queued.
        let _ = self.core.send(Input::Closed(self.id)).await;
        let _ = done_rx.recv().await;
    }

    /// A WebSocket connection: binary frames carry the MQTT byte stream (packets may
    /// span frames); each batch leaves as one binary frame.
    async fn ws<S>(self, ws: WebSocketStream<S>, info: ConnInfo)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Some((rx, pending)) = self.register(info).await else {
            return;
        };
        let (mut sink, mut stream) = ws.split();
        let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
        let (done_tx, done_rx) = async_channel::bounded::<()>(1);
        self.spawner.spawn(async move {
            let (mut buf, mut carry) = (BytesMut::new(), None);
            while let Some((data, close)) = next_batch(&rx, &mut buf, &mut carry).await {
                let n = data.len();
                if n > 0 && sink.send(Message::Binary(data)).await.is_err() {
                    break;
                }
                pending.fetch_sub(n, Ordering::Relaxed);
                if close {
                    break;
                }
            }
            let _ = sink.close(None).await;
            drop((stop_tx, done_tx));
        });
        loop {
            let msg = future::or(async { stream.next().await }, async {
                let _ = stop_rx.recv().await;
                None
            })
            .await;
            match msg {
                Some(Ok(Message::Binary(b))) => {
                    if self.core.send(Input::Data(self.id, b)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                // Text frames are not MQTT ([MQTT-6.0.0-1]); close frames and errors end it.
                _ => break,
            }
        }
        // The core forgets the connection, which ends the writer once it has written
        // what was queued.
        let _ = self.core.send(Input::Closed(self.id)).await;
        let _ = done_rx.recv().await;
    }
}

/// Reads what is there: a chunk of up to a few kilobytes; empty when the peer closed.
async fn read_chunk<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
) -> std::io::Result<Bytes> {
    if buf.capacity() < KEPT_CAPACITY / 4 {
        *buf = BytesMut::with_capacity(KEPT_CAPACITY);
    }
    buf.resize(buf.capacity(), 0);
    let n = rd.read(buf).await?;
    buf.truncate(n);
    Ok(buf.split().freeze())
}

/// The next batch for the writer: what is queued, in one buffer of at most [`MAX_BATCH`]
/// bytes unless a single transmit is larger; `true` when the connection closes after it.
/// A transmit that would make the batch too large waits in `carry` for the next one. Its
/// bytes stay counted in `pending` until the writer wrote them.
async fn next_batch(
    rx: &Receiver<ToConn>,
    buf: &mut BytesMut,
    carry: &mut Option<ToConn>,
) -> Option<(Bytes, bool)> {
    let mut close = false;
    let next = match carry.take() {
        Some(m) => m,
        None => rx.recv().await.ok()?,
    };
    let mut first = match next {
        ToConn::Data(b) => Some(b),
        ToConn::Close => return Some((Bytes::new(), true)),
    };
    let mut len = first.as_ref().map_or(0, Bytes::len);
    while !close {
        match rx.try_recv() {
            Ok(ToConn::Data(b)) => {
                if len + b.len() > MAX_BATCH {
                    *carry = Some(ToConn::Data(b));
                    break;
                }
                len += b.len();
                if let Some(f) = first.take() {
                    buf.extend_from_slice(&f);
                }
                buf.extend_from_slice(&b);
            }
            Ok(ToConn::Close) => close = true,
            Err(_) => break,
        }
    }
    let data = match first {
        Some(b) => b,
        None => {
            let capacity = buf.capacity();
            let data = buf.split().freeze();
            if capacity > KEPT_CAPACITY {
                // The batch takes a burst's allocation with it.
                *buf = BytesMut::new();
            }
            data
        }
    };
    Some((data, close))
}

/// The HTTP listener: `GET /metrics` answers with the Prometheus text, and with
/// `[metrics] console = true` the web console and its API are served too. What a request
/// means is decided in [`mqtt_adapter_common::console`]; this moves the bytes.
async fn http_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    console: Arc<Console>,
    stop: Receiver<()>,
) {
    let open = Limit::new(console::MAX_CONNECTIONS);
    // Password checks (argon2: memory and a core each) on `blocking`'s threads.
    let checks = Limit::new(std::thread::available_parallelism().map_or(1, |n| n.get()));
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            let _ = stop.recv().await;
            None
        })
        .await;
        let mut s = match accepted {
            None => return,
            Some(Ok((s, _))) => s,
            Some(Err(_)) => continue,
        };
        let Some(place) = open.try_take() else {
            continue;
        };
        let (core, console, checks) = (shared.core.clone(), console.clone(), checks.clone());
        shared.spawner.spawn(async move {
            let read = future::or(read_request(&mut s), async {
                Timer::after(console::READ_TIMEOUT).await;
                None
            });
            let Some(req) = read.await else { return };
            let response = match req {
                Ok(req) => respond(req, &core, &console, &checks).await,
                Err(bad) => bad,
            };
            let write = async {
                let _ = s.write_all(&response.to_bytes()).await;
                let _ = s.close().await;
            };
            future::or(write, async {
                Timer::after(console::WRITE_TIMEOUT).await;
            })
            .await;
            drop(place);
        });
    }
}

/// Reads a request head (up to [`console::MAX_REQUEST`] bytes); `None` if the peer
/// closed first.
async fn read_request(s: &mut TcpStream) -> Option<Result<console::Request, console::Response>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        match console::parse_request(&buf) {
            console::Parsed::Partial => {}
            console::Parsed::Request(r) => return Some(Ok(r)),
            console::Parsed::Bad(r) => return Some(Err(r)),
        }
    }
}

async fn respond(
    req: console::Request,
    core: &ToCore,
    console: &Arc<Console>,
    checks: &Arc<Limit>,
) -> console::Response {
    if console.needs_auth() {
        let Some(place) = checks.try_take() else {
            return console::unavailable();
        };
        let (c, header) = (console.clone(), req.authorization.clone());
        let ok = blocking::unblock(move || {
            let _place = place;
            c.authorized(header.as_deref(), Instant::now())
        })
        .await;
        if !ok {
            return console::unauthorized();
        }
    }
    match console.route(&req) {
        Route::Respond(r) => r,
        Route::Metrics => ask(core, Input::Metrics)
            .await
            .map_or_else(console::unavailable, console::metrics_response),
        Route::Query(q) => ask(core, |reply| Input::Console(q, reply))
            .await
            .map_or_else(console::unavailable, |a| console.answer(a)),
    }
}

/// Sends the core a question and waits for its answer (`None`: the broker stopped).
async fn ask<T: Send + 'static>(
    core: &ToCore,
    input: impl FnOnce(core::Reply<T>) -> Input<SmolConn>,
) -> Option<T> {
    let (tx, rx) = async_channel::bounded(1);
    let reply: core::Reply<T> = Box::new(move |answer| {
        let _ = tx.try_send(answer);
    });
    core.send(input(reply)).await.ok()?;
    rx.recv().await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Transmits are joined into batches of at most `MAX_BATCH` bytes, a larger one goes
    /// alone, and nothing is lost or reordered, the close included.
    #[test]
    fn batches_are_bounded() {
        let (tx, rx) = async_channel::unbounded();
        let sizes = [1000, 200 * 1024, 100 * 1024, 300 * 1024, 10, 20];
        for (i, n) in sizes.iter().enumerate() {
            tx.try_send(ToConn::Data(Bytes::from(vec![i as u8; *n])))
                .unwrap();
        }
        tx.try_send(ToConn::Close).unwrap();
        let (mut buf, mut carry) = (BytesMut::new(), None);
        let mut batches = vec![];
        let mut closed = false;
        while !closed {
            let (data, close) =
                futures_lite::future::block_on(next_batch(&rx, &mut buf, &mut carry)).unwrap();
            closed = close;
            batches.push(data);
        }
        let lens: Vec<usize> = batches.iter().map(Bytes::len).collect();
        assert_eq!(
            lens,
            [1000 + 200 * 1024, 100 * 1024, 300 * 1024, 10 + 20],
            "batch lengths"
        );
        let all: Vec<u8> = batches.iter().flat_map(|b| b.iter().copied()).collect();
        let expected: Vec<u8> = sizes
            .iter()
            .enumerate()
            .flat_map(|(i, n)| std::iter::repeat_n(i as u8, *n))
            .collect();
        assert_eq!(all, expected, "bytes in order");
    }
}
