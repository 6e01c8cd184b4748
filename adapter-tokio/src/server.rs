//! The drive loop: one task owns the broker core; a busy connection has one task that
//! reads and writes it, and quiet plain TCP connections have none: one shared poller
//! serves them (the `park` module). Input reaches the core in batches over a channel; each
//! connection's output leaves in one write per batch. No protocol decision is made here.

use crate::config::Config;
use crate::tls::{client_identity, Reloading, TlsFiles};
use bytes::{Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use futures_util::{SinkExt, StreamExt};
use mqtt_adapter_common::console::{self, Console, Route};
use mqtt_adapter_common::core::{AuthDone, Conn, Core, Flow, Input, Job, Offload, Reply};
use mqtt_broker::{BrokerEvent, ConnId, ConnInfo, Hooks};
use mqtt_proto::{Publish, ReasonCode};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{http, Message};
use tokio_tungstenite::WebSocketStream;
use tracing::{info, warn};

#[cfg(unix)]
mod park;
use park::Lot;

/// How handing a connection to the [`Lot`] went.
enum Parking<L> {
    /// The connection is in the lot; its task ends.
    Parked,
    /// The lot could not take it: it goes on with its task, unparked.
    Refused(L),
    /// The socket was lost on the way (tokio could not let go of it): the connection
    /// ended.
    Lost,
}

/// Parking needs an epoll instance: elsewhere, connections keep their tasks.
#[cfg(not(unix))]
mod park {
    use super::{Outbox, Parking, TcpLink, ToCore};
    use std::sync::Arc;
    use std::time::Duration;

    /// Never started ([`Lot::start`] fails), so no connection parks.
    #[derive(Clone)]
    pub(super) struct Lot;

    /// Never made.
    pub(super) struct Notify;

    impl Lot {
        pub(super) fn start(
            _: Duration,
            _: &tokio::sync::mpsc::Sender<ToCore>,
            _: tokio::sync::watch::Receiver<bool>,
        ) -> std::io::Result<Self> {
            Err(std::io::ErrorKind::Unsupported.into())
        }
        pub(super) fn notify(&self) -> Notify {
            Notify
        }
        pub(super) fn wait(&self, _: u8) -> Duration {
            Duration::MAX
        }
        pub(super) fn raise(level: u8) -> u8 {
            level
        }
        pub(super) fn park(&self, link: TcpLink, _: &Arc<Outbox>, _: u8) -> Parking<TcpLink> {
            Parking::Refused(link)
        }
        pub(super) fn len(&self) -> usize {
            0
        }
    }

    impl Notify {
        pub(super) fn output(&self, _: &Outbox, _: bool) {}
    }
}

/// What reaches the core task: the shared core's inputs, with each connection's outbox
/// as its write side.
type ToCore = Input<OutboxHandle>;

/// A connection's outbox as the shared core writes to it.
struct OutboxHandle(Arc<Outbox>);

impl Conn for OutboxHandle {
    fn send(&self, data: Bytes) -> usize {
        self.0.push(data)
    }

    fn close(&self) {
        self.0.close();
    }

    fn abort(&self) {
        self.0.abort();
    }

    fn pending(&self) -> usize {
        self.0.pending()
    }
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
    /// Where idle TCP connections park.
    lot: Option<Lot>,
}

impl Running {
    /// Publishes a message as the broker (no publisher session, no ACL).
    pub async fn publish(&self, publish: Publish) -> anyhow::Result<()> {
        self.core
            .send(Input::Publish(publish))
            .await
            .map_err(|_| anyhow::anyhow!("broker stopped"))
    }

    /// Current connections, sessions, subscriptions and retained messages.
    pub async fn gauges(&self) -> anyhow::Result<mqtt_broker::Gauges> {
        let (tx, rx) = oneshot::channel();
        self.core
            .send(Input::Gauges(Box::new(move |g| {
                let _ = tx.send(g);
            })))
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

    /// How many connections are parked now: idle plain TCP connections whose task was
    /// freed (`[runtime] park_idle_ms`, CONFIG.md "Runtime").
    pub fn parked_connections(&self) -> usize {
        self.lot.as_ref().map_or(0, Lot::len)
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
    // A configuration built in code has not been through `Config::parse`'s checks.
    config
        .metrics
        .check(config.auth.password_file.as_deref())
        .map_err(anyhow::Error::msg)?;
    let (mut broker, passwords) = mqtt_adapter_common::core::broker(&config, hooks)?;
    let (core_tx, core_rx) = mpsc::channel::<ToCore>(4096);
    // The durable state comes back before any listener accepts.
    let report = core_tx.clone();
    let persister =
        mqtt_adapter_common::persistence::start(&config.persistence, &mut broker, move |r| {
            let _ = report.blocking_send(Input::Store(r));
        })?;
    let core_tx_handle = core_tx.clone();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let next_id = Arc::new(AtomicUsize::new(1));
    let live = Arc::new(AtomicUsize::new(0));
    let mut local_addrs = vec![];
    let mut listeners = vec![];
    let lot = match config.runtime.park_idle_ms {
        0 => None,
        ms => match Lot::start(Duration::from_millis(ms), &core_tx, shutdown_rx.clone()) {
            Ok(lot) => Some(lot),
            Err(e) => {
                warn!("idle connections will not be parked: {e}");
                None
            }
        },
    };
    // A WebSocket message may hold a packet of the largest size and then some (packets
    // batched in one message), up to twice the maximum packet size.
    let ws_limit = (config.limits.max_packet_size as usize)
        .saturating_mul(2)
        .max(64 * 1024);
    for l in &config.listeners {
        let listener = TcpListener::bind(l.bind)
            .await
            .map_err(|e| anyhow::anyhow!("listener {}: {e}", l.bind))?;
        let addr = listener.local_addr()?;
        local_addrs.push(addr);
        let anonymous = l.allows_anonymous();
        let name: Arc<str> = l.name.clone().unwrap_or_else(|| addr.to_string()).into();
        let tls = |l: &crate::config::Listener| {
            Reloading::start(TlsFiles {
                cert: l.cert.clone().unwrap_or_default(),
                key: l.key.clone().unwrap_or_default(),
                client_ca: l.client_ca.clone(),
            })
        };
        let transport = match l.protocol.as_str() {
            "tls" => Transport::Tls(tls(l)?, l.use_identity_as_username),
            "ws" => Transport::Ws(l.path.clone(), ws_limit),
            "wss" => Transport::Wss(
                tls(l)?,
                l.path.clone(),
                l.use_identity_as_username,
                ws_limit,
            ),
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
            Duration::from_secs(config.limits.connect_timeout_secs),
            lot.clone(),
        )));
    }
    // Password checks run on blocking threads, as many at once as there are cores: each
    // takes the argon2 hash's memory (19 MiB with the defaults) and a core for a while.
    let checks = Arc::new(Semaphore::new(
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    ));
    let metrics_addr = match config.metrics.bind {
        Some(bind) => {
            let l = TcpListener::bind(bind)
                .await
                .map_err(|e| anyhow::anyhow!("metrics {bind}: {e}"))?;
            let addr = l.local_addr()?;
            console::log_listening(addr, &config.metrics);
            let console = Console::from_config(&config, passwords.clone(), &local_addrs);
            listeners.push(tokio::spawn(http_loop(
                l,
                core_tx.clone(),
                Arc::new(console),
                checks.clone(),
                shutdown_rx.clone(),
            )));
            Some(addr)
        }
        None => None,
    };
    let (done_tx, done_rx) = oneshot::channel();
    let offload: Offload = Box::new(move |job: Job| {
        let checks = checks.clone();
        tokio::spawn(async move {
            let Ok(_permit) = checks.acquire_owned().await else {
                return;
            };
            let _ = tokio::task::spawn_blocking(job).await;
        });
    });
    let answers = core_tx.clone();
    let auth_done: AuthDone = Arc::new(move |id, result| {
        let _ = answers.blocking_send(Input::Auth(id, result));
    });
    let mut core = Core::new(broker, passwords, &config, persister, offload, auth_done);
    if let Some(events) = events {
        // Dropped while the channel is full: the broker never waits for it.
        core.set_events(move |e| {
            let _ = events.try_send(e);
        });
    }
    tokio::spawn(async move {
        run_core(core, core_rx, shutdown_rx).await;
        let _ = done_tx.send(());
    });
    Ok(Running {
        local_addrs,
        metrics_addr,
        core: core_tx_handle,
        shutdown: Some(shutdown_tx),
        done: Some(done_rx),
        listeners,
        lot,
    })
}

#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    listener: TcpListener,
    name: Arc<str>,
    anonymous: bool,
    transport: Transport,
    core_tx: mpsc::Sender<ToCore>,
    mut shutdown: watch::Receiver<bool>,
    next_id: Arc<AtomicUsize>,
    live: Arc<AtomicUsize>,
    max_connections: usize,
    handshake: Duration,
    // Where idle TCP connections park (`None`: they do not).
    lot: Option<Lot>,
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
            warn!(listener = %name, %peer, max_connections, "limits.max_connections reached; closing");
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
        let live = Live(live.clone());
        let core_tx = core_tx.clone();
        if let Transport::Tcp = transport {
            // Registered here, so that the connection starts with its outbox; waiting for
            // room in the core's channel holds further accepts back.
            let Some(outbox) = register(id, info, live, &core_tx, lot.as_ref()).await else {
                return;
            };
            // A new connection starts in the lot (see `park`), or else with its own task:
            // the connection itself is the task, nothing else lives as long as it does.
            let link = match &lot {
                Some(lot) => match lot.park(TcpLink(stream), &outbox, 0) {
                    Parking::Parked => continue,
                    Parking::Refused(link) => link,
                    Parking::Lost => {
                        let _ = core_tx.send(Input::Closed(id)).await;
                        continue;
                    }
                },
                None => TcpLink(stream),
            };
            let nap = lot.clone().map(|lot| Nap::new(lot, 0));
            tokio::spawn(connection(outbox, link, core_tx, nap));
            continue;
        }
        let transport = transport.clone();
        let listener = name.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(id, stream, info, core_tx, transport, handshake, live).await {
                info!(conn = id, %listener, %peer, "handshake failed: {e}");
            }
        });
    }
}

/// Counts a connection as live until dropped (at the end of its task).
struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a listener's connections are wrapped.
#[derive(Clone)]
enum Transport {
    Tcp,
    /// TLS, and whether the client certificate's Common Name is the user name.
    Tls(Reloading, bool),
    /// WebSocket: the path, and the largest message (and frame) read.
    Ws(String, usize),
    Wss(Reloading, String, bool, usize),
}

async fn serve(
    id: ConnId,
    stream: TcpStream,
    mut info: ConnInfo,
    core: mpsc::Sender<ToCore>,
    transport: Transport,
    // The TLS and WebSocket handshakes get the connect timeout; CONNECT gets it again
    // after them.
    handshake: Duration,
    live: Live,
) -> anyhow::Result<()> {
    // Each transport's future is boxed: a connection's task is as large as its own
    // transport needs, not as the largest (TLS and WebSocket state are kilobytes).
    match transport {
        // TCP connections are spawned without this wrapper (see `accept_loop`).
        Transport::Tcp => {
            let Some(outbox) = register(id, info, live, &core, None).await else {
                return Ok(());
            };
            Box::pin(connection(outbox, TcpLink(stream), core, None)).await
        }
        Transport::Tls(tls, use_identity) => {
            Box::pin(async move {
                let s = tokio::time::timeout(handshake, tls.acceptor().accept(stream)).await??;
                if use_identity {
                    info.tls_identity = Some(client_identity(s.get_ref().1)?.into());
                }
                if let Some(outbox) = register(id, info, live, &core, None).await {
                    connection(outbox, StreamLink::new(s), core, None).await;
                }
                anyhow::Ok(())
            })
            .await?
        }
        Transport::Ws(path, limit) => {
            Box::pin(async move {
                let ws = tokio::time::timeout(handshake, ws_accept(stream, &path, limit)).await??;
                let who = format!("{} {}", info.listener, info.peer);
                if let Some(outbox) = register(id, info, live, &core, None).await {
                    connection(outbox, WsLink(ws, who), core, None).await;
                }
                anyhow::Ok(())
            })
            .await?
        }
        Transport::Wss(tls, path, use_identity, limit) => {
            Box::pin(async move {
                let ws = tokio::time::timeout(handshake, async {
                    let s = tls.acceptor().accept(stream).await?;
                    if use_identity {
                        info.tls_identity = Some(client_identity(s.get_ref().1)?.into());
                    }
                    ws_accept(s, &path, limit).await
                })
                .await??;
                let who = format!("{} {}", info.listener, info.peer);
                if let Some(outbox) = register(id, info, live, &core, None).await {
                    connection(outbox, WsLink(ws, who), core, None).await;
                }
                anyhow::Ok(())
            })
            .await?
        }
    }
    Ok(())
}

/// How long a closed connection may still take to write what was queued before the
/// close (a DISCONNECT, say) to a peer that does not read it; then it is dropped with
/// whatever is left.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// The most bytes of queued transmits copied together into one write. A single larger
/// transmit is written as it is. What a connection holds is its pending bytes (at most
/// `limits.max_pending_write_bytes`) plus, while a batch is being put together, its
/// copy: at most this much more.
const MAX_BATCH: usize = 256 * 1024;

/// The connection writes everything it is given.
const OPEN: u8 = 0;
/// The connection is closing: it gets [`CLOSE_LINGER`] to finish writing.
const CLOSING: u8 = 1;
/// The connection is dropped now, with what is still unwritten.
const ABORT: u8 = 2;

/// What the core hands one connection: bytes to write and whether to close. A lock
/// around a list and a wake-up, so an idle connection holds no channel buffer.
struct Outbox {
    /// The connection's id.
    id: ConnId,
    /// Counts the connection as live while the outbox exists.
    _live: Live,
    queue: std::sync::Mutex<OutQueue>,
    /// The connection's task, woken when `woken` is set.
    waker: AtomicWaker,
    /// Set by the core side on every push, close and abort; taken by the connection.
    woken: AtomicBool,
    /// The connection is in its lot (see [`park`]), which is told of output instead of
    /// `waker`.
    parked: AtomicBool,
    /// The lot of a plain TCP connection.
    lot: Option<park::Notify>,
    /// Bytes handed over and not yet written: queued, and taken by the connection but
    /// not yet accepted by the socket.
    pending: AtomicUsize,
    /// [`OPEN`], [`CLOSING`] or [`ABORT`].
    state: AtomicU8,
}

#[derive(Default)]
struct OutQueue {
    /// In order; taken from the front. A `Vec` rather than a `VecDeque` (8 bytes less
    /// in every outbox): a take copies what it takes into one buffer anyway.
    data: Vec<Bytes>,
    /// When a write in progress is given up after a close ([`CLOSE_LINGER`] after the
    /// close was first seen). Kept here rather than in the connection's future, which
    /// every idle connection holds, and boxed: only a closing connection has one.
    linger_until: Option<Box<tokio::time::Instant>>,
}

impl OutQueue {
    /// Whether the connection closes after what was just taken: it is `closing` and
    /// nothing else is queued. An emptied queue lets its allocation go, as an idle
    /// connection holds no queue.
    fn drained(&mut self, closing: bool) -> bool {
        if self.data.is_empty() {
            self.data = Vec::new();
            return closing;
        }
        false
    }
}

impl Outbox {
    fn new(id: ConnId, live: Live, lot: Option<park::Notify>) -> Self {
        Self {
            id,
            _live: live,
            queue: std::sync::Mutex::new(OutQueue::default()),
            waker: AtomicWaker::new(),
            woken: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            lot,
            pending: AtomicUsize::new(0),
            state: AtomicU8::new(OPEN),
        }
    }

    /// Core side: queues bytes; returns the bytes now waiting.
    fn push(&self, b: Bytes) -> usize {
        let n = b.len();
        // Counted before the connection can take it.
        let waiting = self.pending.fetch_add(n, Ordering::Relaxed) + n;
        self.queue.lock().expect("not poisoned").data.push(b);
        self.wake();
        waiting
    }

    /// Core side: the connection closes after writing what is queued (within
    /// [`CLOSE_LINGER`]).
    fn close(&self) {
        {
            // Under the queue's lock: a take sees the close with the queue it follows.
            let _queue = self.queue.lock().expect("not poisoned");
            self.state.fetch_max(CLOSING, Ordering::AcqRel);
        }
        self.wake();
    }

    /// Core side: the connection is dropped at once, with what is unwritten (what waits
    /// is freed now; a batch being written, when its write is given up).
    fn abort(&self) {
        self.state.fetch_max(ABORT, Ordering::AcqRel);
        let dropped = std::mem::take(&mut self.queue.lock().expect("not poisoned").data);
        let n = dropped.iter().map(Bytes::len).sum();
        self.pending.fetch_sub(n, Ordering::Relaxed);
        self.wake();
    }

    /// Core side: the bytes waiting to be written.
    fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    fn aborted(&self) -> bool {
        self.state.load(Ordering::Acquire) == ABORT
    }

    /// Completes when a write in progress should be given up: at once after
    /// [`abort`](Self::abort), [`CLOSE_LINGER`] after the close was first seen (kept in
    /// `linger_until`); never while open.
    async fn give_up(&self) {
        loop {
            match self.state.load(Ordering::Acquire) {
                OPEN => std::future::poll_fn(|cx| self.poll_woken(cx)).await,
                CLOSING => {
                    let at = **self
                        .queue
                        .lock()
                        .expect("not poisoned")
                        .linger_until
                        .get_or_insert_with(|| {
                            Box::new(tokio::time::Instant::now() + CLOSE_LINGER)
                        });
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => return,
                        // An abort cuts the linger short.
                        _ = std::future::poll_fn(|cx| self.poll_woken(cx)) => {}
                    }
                }
                _ => return,
            }
        }
    }

    /// Core side: wakes the connection's task, or tells its lot.
    fn wake(&self) {
        // Sequentially consistent, with `parked` below and in `Lot::park`: one of the
        // two sees the other's store, so output that comes as a connection parks is
        // not left unseen.
        let was = self.woken.swap(true, Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) {
            if let Some(lot) = &self.lot {
                lot.output(self, !was);
                return;
            }
        }
        self.waker.wake();
    }

    /// Connection side: ready once the core side called [`wake`](Self::wake) since the
    /// last time it was ready. Holds no state of its own, unlike a `Notified` future.
    fn poll_woken(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.woken.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.woken.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Connection side: what is queued, as one buffer for one write (up to
    /// [`MAX_BATCH`] bytes, or one larger transmit), and whether to close after it (all
    /// was taken). The bytes stay counted as pending until [`written`](Self::written):
    /// a write blocked on a peer that does not read holds them.
    fn take(&self) -> (Bytes, bool) {
        let mut q = self.queue.lock().expect("not poisoned");
        let closing = self.state.load(Ordering::Acquire) != OPEN;
        let Some(first) = q.data.first() else {
            return (Bytes::new(), closing);
        };
        let more = q
            .data
            .get(1)
            .is_some_and(|b| first.len() + b.len() <= MAX_BATCH);
        if !more {
            let first = q.data.remove(0);
            return (first, q.drained(closing));
        }
        // Copied together: one write for many small transmits. The copy and the pieces
        // exist together for a moment, so the batch is bounded.
        let mut buf = BytesMut::with_capacity(MAX_BATCH.min(self.pending()));
        let mut taken = 0;
        for b in &q.data {
            if taken > 0 && buf.len() + b.len() > MAX_BATCH {
                break;
            }
            buf.extend_from_slice(b);
            taken += 1;
        }
        q.data.drain(..taken);
        (buf.freeze(), q.drained(closing))
    }

    /// Connection side: `n` bytes were written (the socket took them).
    fn written(&self, n: usize) {
        self.pending.fetch_sub(n, Ordering::Relaxed);
    }
}

/// Registers a new connection with the core: its outbox, which counts it as live from
/// now on. `None`: the broker stopped.
async fn register(
    id: ConnId,
    info: ConnInfo,
    live: Live,
    core: &mpsc::Sender<ToCore>,
    lot: Option<&Lot>,
) -> Option<Arc<Outbox>> {
    let outbox = Arc::new(Outbox::new(id, live, lot.map(Lot::notify)));
    core.send(Input::Open {
        id,
        info,
        conn: OutboxHandle(outbox.clone()),
    })
    .await
    .ok()?;
    Some(outbox)
}

/// Buffer capacity a TLS connection keeps between reads.
const KEPT_CAPACITY: usize = 4096;

/// One transport, read and written by the connection's single task.
trait Link: Send + 'static {
    /// The next bytes; empty when the peer closed. A `poll` function rather than a
    /// future, so that waiting for input adds nothing to the connection's future.
    fn poll_read_chunk(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<Bytes>>;
    /// Writes what it can of `data` without waiting, and advances `data` past it. The
    /// default writes nothing: the batch goes to [`write`](Self::write).
    fn try_write(&mut self, data: &mut Bytes) -> std::io::Result<()> {
        let _ = data;
        Ok(())
    }
    /// Writes one batch.
    fn write(
        &mut self,
        data: Bytes,
    ) -> impl std::future::Future<Output = std::io::Result<()>> + Send;
    /// Ends the transport.
    fn shutdown(&mut self) -> impl std::future::Future<Output = ()> + Send;
    /// Hands the connection, idle, to `lot` (see [`park`]); only plain TCP can be.
    fn park(self, lot: &Lot, outbox: &Arc<Outbox>, level: u8) -> Parking<Self>
    where
        Self: Sized,
    {
        let _ = (lot, outbox, level);
        Parking::Refused(self)
    }
}

/// TCP: waits for readability with no buffer, then reads into a fresh one, so an idle
/// connection holds no read buffer at all.
struct TcpLink(TcpStream);

impl Link for TcpLink {
    fn poll_read_chunk(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<Bytes>> {
        std::task::ready!(self.0.poll_read_ready(cx))?;
        let mut buf = BytesMut::with_capacity(KEPT_CAPACITY);
        // `poll_read` rather than `try_read`: a read that leaves room in the buffer shows
        // the socket drained, and tokio then forgets the readiness, so the next poll
        // waits for new input instead of trying a read that fails with `WouldBlock`
        // (one system call and one buffer fewer per read). When the readiness was stale,
        // it is cleared here and the task waits.
        std::task::ready!(tokio_util::io::poll_read_buf(
            std::pin::Pin::new(&mut self.0),
            cx,
            &mut buf
        ))?;
        Poll::Ready(Ok(buf.freeze()))
    }

    fn try_write(&mut self, data: &mut Bytes) -> std::io::Result<()> {
        while !data.is_empty() {
            match self.0.try_write(data) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes::Buf::advance(data, n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn write(&mut self, data: Bytes) -> std::io::Result<()> {
        self.0.write_all(&data).await
    }

    async fn shutdown(&mut self) {
        let _ = self.0.shutdown().await;
    }

    fn park(self, lot: &Lot, outbox: &Arc<Outbox>, level: u8) -> Parking<Self> {
        lot.park(self, outbox, level)
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
    fn poll_read_chunk(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<Bytes>> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(KEPT_CAPACITY);
        }
        std::task::ready!(tokio_util::io::poll_read_buf(
            std::pin::Pin::new(&mut self.s),
            cx,
            &mut self.buf
        ))?;
        let capacity = self.buf.capacity();
        let chunk = self.buf.split().freeze();
        if capacity > 16 * KEPT_CAPACITY {
            self.buf = BytesMut::new();
        }
        Poll::Ready(Ok(chunk))
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
/// The stream, and its listener and peer for log lines.
struct WsLink<S>(WebSocketStream<S>, String);

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Link for WsLink<S> {
    fn poll_read_chunk(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<Bytes>> {
        loop {
            match std::task::ready!(self.0.poll_next_unpin(cx)) {
                Some(Ok(Message::Binary(b))) => {
                    if !b.is_empty() {
                        return Poll::Ready(Ok(b));
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                // A message over the limit, a broken frame, ...
                Some(Err(e)) => {
                    info!(connection = %self.1, "WebSocket: {e}; closing");
                    return Poll::Ready(Ok(Bytes::new()));
                }
                // Text frames are not MQTT ([MQTT-6.0.0-1]); close frames end it.
                _ => return Poll::Ready(Ok(Bytes::new())),
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

/// A TCP connection's parking state (see [`park`]), boxed: one pointer in the
/// connection's future.
struct Nap {
    lot: Lot,
    /// The wait before parking, armed at the first wait for input.
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// How many times the wait has doubled.
    level: u8,
    /// Input came or output left since the wait was armed.
    busy: bool,
    /// Input the lot read when it woke the connection, handled before anything else is
    /// read: a woken connection's input is not a reactor turn later than an awake one's.
    input: Option<std::io::Result<Bytes>>,
    /// Output the lot took from the outbox and the socket did not take, written before
    /// anything else.
    output: Option<Bytes>,
}

impl Nap {
    fn new(lot: Lot, level: u8) -> Box<Self> {
        Box::new(Self {
            lot,
            sleep: None,
            level,
            busy: false,
            input: None,
            output: None,
        })
    }

    /// Arms the wait if it is not.
    fn arm(&mut self) {
        if self.sleep.is_none() {
            self.sleep = Some(Box::pin(tokio::time::sleep(self.lot.wait(self.level))));
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.sleep.as_mut() {
            Some(s) => std::future::Future::poll(s.as_mut(), cx),
            None => Poll::Pending,
        }
    }

    /// The wait passed: whether the connection parks now (it was idle), or else waits
    /// again, twice as long (it was busy).
    fn idle(&mut self) -> bool {
        if !std::mem::take(&mut self.busy) {
            return true;
        }
        self.level = Lot::raise(self.level);
        let wait = self.lot.wait(self.level);
        if let Some(s) = self.sleep.as_mut() {
            s.as_mut().reset(tokio::time::Instant::now() + wait);
        }
        false
    }
}

/// What the wait of a connection's task ended with.
enum Woke {
    /// The core queued output (or a close).
    Output,
    /// Input, or the end of it.
    Input(std::io::Result<Bytes>),
    /// Its wait before parking passed.
    Idle,
}

/// A connection: one task reads what arrives and sends it to the core, and writes what
/// the core queued, one write per batch. With a [`Lot`], a plain TCP connection idle for
/// the lot's wait (doubled `level` times) parks there and its task ends; the lot starts a
/// new one when it wakes.
///
/// Its future is what an idle connection costs, so only the wait for input or output is
/// kept inline; a write that has to wait for the peer, a send that has to wait for the
/// core, the wait before parking and the close are boxed when they happen.
// Not an `async fn`: an `async fn` moves its arguments into locals and keeps both copies
// in its future; the block below uses its captures in place.
#[allow(clippy::manual_async_fn)]
fn connection<L: Link>(
    outbox: Arc<Outbox>,
    mut link: L,
    core: mpsc::Sender<ToCore>,
    mut nap: Option<Box<Nap>>,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let mut closed_by_broker = false;
        loop {
            // What the core queued leaves before more is read. In a block of its own, so
            // that the batch takes no room in this future while it waits below.
            let (wrote, close) = {
                let (mut data, close) = match nap.as_mut().and_then(|n| n.output.take()) {
                    Some(data) => (data, false),
                    None => outbox.take(),
                };
                if outbox.aborted() {
                    break;
                }
                let wrote = !data.is_empty();
                if wrote {
                    let len = data.len();
                    if link.try_write(&mut data).is_err() {
                        break;
                    }
                    outbox.written(len - data.len());
                    // A peer that does not read blocks the write: "too slow" (an abort)
                    // ends it at once, a close after the linger.
                    let left = data.len();
                    if left > 0 {
                        if !Box::pin(write_or_give_up(&mut link, data, &outbox)).await {
                            break;
                        }
                        outbox.written(left);
                    }
                }
                (wrote, close)
            };
            if close {
                closed_by_broker = true;
                break;
            }
            if wrote {
                if let Some(n) = nap.as_mut() {
                    n.busy = true;
                }
                // More may have come while writing (its wake-up may have gone to the
                // write).
                continue;
            }
            if let Some(n) = nap.as_mut() {
                n.arm();
            }
            // Waits for output to write or input to read, with nothing held but the
            // borrows.
            let b = match std::future::poll_fn(|cx| {
                if outbox.poll_woken(cx).is_ready() {
                    return Poll::Ready(Woke::Output);
                }
                if let Some(r) = nap.as_mut().and_then(|n| n.input.take()) {
                    return Poll::Ready(Woke::Input(r));
                }
                if let Poll::Ready(r) = link.poll_read_chunk(cx) {
                    return Poll::Ready(Woke::Input(r));
                }
                match nap.as_mut().map(|n| n.poll(cx)) {
                    Some(Poll::Ready(())) => Poll::Ready(Woke::Idle),
                    _ => Poll::Pending,
                }
            })
            .await
            {
                Woke::Output => continue,
                Woke::Input(Ok(b)) if !b.is_empty() => b,
                Woke::Input(_) => break,
                Woke::Idle => {
                    let Some(n) = nap.as_mut() else { continue };
                    if !n.idle() {
                        continue;
                    }
                    match link.park(&n.lot, &outbox, n.level) {
                        Parking::Parked => {
                            // The core lets go of the connection's empty buffers; skipped
                            // when the core is busy, as nothing depends on it.
                            let _ = core.try_send(Input::Idle(outbox.id));
                            return;
                        }
                        Parking::Lost => {
                            // Not awaited here: the match would keep `woke` in the
                            // future.
                            let id = outbox.id;
                            tokio::spawn(async move {
                                let _ = core.send(Input::Closed(id)).await;
                            });
                            return;
                        }
                        Parking::Refused(back) => {
                            link = back;
                            nap = None;
                            continue;
                        }
                    }
                }
            };
            if let Some(n) = nap.as_mut() {
                n.busy = true;
            }
            if b[0] >> 4 == 3 {
                // Input that starts with a PUBLISH waits two scheduling rounds. Of the
                // tasks woken together, tokio runs the last woken first, which would let
                // a PUBLISH overtake a SUBSCRIBE that reached another connection just
                // before it; waiting restores the arrival order. MQTT orders nothing
                // across connections, but a client that subscribes and then has another
                // client publish expects the message. Twice: every 61 task polls, tokio's
                // scheduler polls its reactor between two tasks, and a task whose one
                // yield ends there runs next, before the tasks already queued.
                tokio::task::yield_now().await;
                tokio::task::yield_now().await;
            }
            // A slot first, then the input: a full channel is waited on without holding
            // the input in this future.
            let permit = match core.try_reserve() {
                Ok(permit) => permit,
                Err(mpsc::error::TrySendError::Full(())) => match Box::pin(core.reserve()).await {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                Err(mpsc::error::TrySendError::Closed(())) => break,
            };
            permit.send(Input::Data(outbox.id, b));
        }
        drop(nap);
        Box::pin(close(outbox.id, link, core, closed_by_broker)).await;
    }
}

/// Writes `data` unless the connection is aborted, or closing and past its linger;
/// whether it was written.
async fn write_or_give_up<L: Link>(link: &mut L, data: Bytes, outbox: &Outbox) -> bool {
    tokio::select! {
        r = link.write(data) => r.is_ok(),
        _ = outbox.give_up() => false,
    }
}

/// Ends a connection: shuts the transport down, tells the core, and after a close by the
/// broker reads what the peer still sends for a while (see [`linger`]).
async fn close<L: Link>(id: ConnId, mut link: L, core: mpsc::Sender<ToCore>, by_broker: bool) {
    let _ = tokio::time::timeout(CLOSE_LINGER, link.shutdown()).await;
    let _ = core.send(Input::Closed(id)).await;
    if by_broker {
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
    while let Ok(Ok(b)) = tokio::time::timeout_at(
        deadline,
        std::future::poll_fn(|cx| link.poll_read_chunk(cx)),
    )
    .await
    {
        if b.is_empty() || b.len() >= left {
            break;
        }
        left -= b.len();
    }
}

/// The WebSocket handshake: the path must match and the `mqtt` subprotocol is echoed.
/// Messages and frames larger than `limit` close the connection: they are read whole
/// before MQTT sees them, so the maximum packet size alone would not bound them.
// The callback's error type is tungstenite's.
#[allow(clippy::result_large_err)]
async fn ws_accept<S>(stream: S, path: &str, limit: usize) -> anyhow::Result<WebSocketStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let path = path.to_string();
    let config = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    let ws = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        move |req: &Request, mut resp: Response| {
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
        },
        Some(config),
    )
    .await?;
    Ok(ws)
}

/// The core task: waits for an input or the next deadline, lets the shared core handle
/// it, and carries out the outputs.
async fn run_core(
    mut core: Core<OutboxHandle>,
    mut rx: mpsc::Receiver<ToCore>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut stopping = false;
    loop {
        let deadline = core.poll_timeout();
        let flow = tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                let now = Instant::now();
                let mut flow = core.handle(now, msg);
                // Everything already waiting is handled before the outputs are drained.
                for _ in 0..1024 {
                    if flow == Flow::Stop {
                        break;
                    }
                    match rx.try_recv() {
                        Ok(m) => flow = core.handle(now, m),
                        Err(_) => break,
                    }
                }
                flow
            }
            _ = sleep_until(deadline) => {
                core.handle_timeout(Instant::now());
                Flow::Continue
            }
            _ = shutdown.changed(), if !stopping => {
                stopping = true;
                core.handle(Instant::now(), Input::Shutdown)
            }
        };
        if flow == Flow::Stop {
            break;
        }
        core.drain();
        if core.is_finished() {
            break;
        }
    }
    // What was written is made durable before the broker stops.
    let _ = tokio::task::spawn_blocking(move || core.finish()).await;
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// The HTTP listener: `GET /metrics` answers with the Prometheus text, and with
/// `[metrics] console = true` the web console and its API are served too. What a request
/// means is decided in [`mqtt_adapter_common::console`]; this moves the bytes.
async fn http_loop(
    listener: TcpListener,
    core: mpsc::Sender<ToCore>,
    console: Arc<Console>,
    checks: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) {
    let open = Arc::new(Semaphore::new(console::MAX_CONNECTIONS));
    loop {
        let (s, _) = tokio::select! {
            a = listener.accept() => match a { Ok(x) => x, Err(_) => continue },
            _ = shutdown.changed() => return,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            continue;
        };
        let (core, console, checks) = (core.clone(), console.clone(), checks.clone());
        tokio::spawn(async move {
            http(s, core, console, checks).await;
            drop(permit);
        });
    }
}

/// One HTTP request and its response; the connection closes after it.
async fn http(
    mut s: TcpStream,
    core: mpsc::Sender<ToCore>,
    console: Arc<Console>,
    checks: Arc<Semaphore>,
) {
    let req = match tokio::time::timeout(console::READ_TIMEOUT, read_request(&mut s)).await {
        Ok(Some(r)) => r,
        _ => return,
    };
    let response = match req {
        Ok(req) => respond(req, &core, &console, &checks).await,
        Err(bad) => bad,
    };
    let _ = tokio::time::timeout(console::WRITE_TIMEOUT, async {
        let _ = s.write_all(&response.to_bytes()).await;
        let _ = s.shutdown().await;
    })
    .await;
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
    core: &mpsc::Sender<ToCore>,
    console: &Arc<Console>,
    checks: &Arc<Semaphore>,
) -> console::Response {
    if console.needs_auth() {
        // The password check (argon2) runs on a blocking thread, counted with the MQTT
        // clients' checks.
        let Ok(permit) = checks.clone().acquire_owned().await else {
            return console::unavailable();
        };
        let (c, header) = (console.clone(), req.authorization.clone());
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            c.authorized(header.as_deref(), Instant::now())
        })
        .await
        .unwrap_or(false);
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
    core: &mpsc::Sender<ToCore>,
    input: impl FnOnce(Reply<T>) -> ToCore,
) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    let reply: Reply<T> = Box::new(move |answer| {
        let _ = tx.send(answer);
    });
    core.send(input(reply)).await.ok()?;
    rx.await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox() -> Outbox {
        Outbox::new(1, Live(Arc::new(AtomicUsize::new(1))), None)
    }

    /// A batch taken for writing stays counted until the socket took it: a write blocked
    /// on a peer that does not read holds its bytes, and the core's limit must see them.
    /// Every connection holds its outbox: at most 104 bytes, 120 with the `Arc`'s
    /// counts, which malloc serves from a 128-byte chunk (64-bit targets).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn outbox_stays_small() {
        let size = std::mem::size_of::<Outbox>();
        assert!(size <= 104, "{size}");
    }

    #[test]
    fn a_batch_being_written_is_still_pending() {
        let o = outbox();
        o.push(Bytes::from(vec![0u8; 1000]));
        o.push(Bytes::from(vec![0u8; 500]));
        let (batch, close) = o.take();
        assert_eq!((batch.len(), close), (1500, false));
        assert_eq!(o.pending(), 1500);
        o.written(1000);
        assert_eq!(o.pending(), 500);
        o.written(500);
        assert_eq!(o.pending(), 0);
    }

    /// Small transmits are copied together into batches of at most `MAX_BATCH` bytes (the
    /// copy and the pieces exist together for a moment); a larger one goes alone, as it
    /// is; the close comes with the last batch.
    #[test]
    fn batches_are_bounded() {
        let o = outbox();
        let piece = MAX_BATCH / 4 + 1;
        for _ in 0..5 {
            o.push(Bytes::from(vec![1u8; piece]));
        }
        let large = Bytes::from(vec![2u8; 2 * MAX_BATCH]);
        o.push(large.clone());
        o.close();
        let mut batches = vec![];
        loop {
            let (b, close) = o.take();
            assert!(!b.is_empty());
            o.written(b.len());
            batches.push(b);
            if close {
                break;
            }
        }
        let sizes: Vec<usize> = batches.iter().map(Bytes::len).collect();
        assert_eq!(sizes, [3 * piece, 2 * piece, 2 * MAX_BATCH]);
        // The large one was not copied.
        assert_eq!(batches[2].as_ptr(), large.as_ptr());
        assert_eq!(o.pending(), 0);
    }

    /// An abort frees what waits at once and stops counting it.
    #[test]
    fn abort_drops_what_waits() {
        let o = outbox();
        o.push(Bytes::from(vec![0u8; 1000]));
        let (batch, _) = o.take();
        o.push(Bytes::from(vec![0u8; 300]));
        o.push(Bytes::from(vec![0u8; 200]));
        o.abort();
        assert!(o.aborted());
        // The batch being written is still held by the writer, until it gives up.
        assert_eq!(o.pending(), batch.len());
        assert!(o.queue.lock().unwrap().data.is_empty());
    }

    /// What an idle TCP connection's task holds: its future, with the core's handle and
    /// the socket. Printed, and kept from growing back.
    #[tokio::test]
    async fn idle_connection_future_is_small() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (core, _rx) = mpsc::channel::<ToCore>(1);
        let live = Live(Arc::new(AtomicUsize::new(1)));
        let lot = Lot::start(Duration::from_millis(25), &core, watch::channel(false).1).unwrap();
        let outbox = Arc::new(Outbox::new(1, live, None));
        let future = connection(outbox, TcpLink(stream), core, Some(Nap::new(lot, 0)));
        let size = std::mem::size_of_val(&future);
        println!("TCP connection future: {size} B");
        // 832 B in a debug build (608 B in release) before its waits became `poll`
        // functions and its rare paths were boxed. tokio's task cell is aligned to 128
        // bytes: in release, a future of up to about 150 bytes makes a 256-byte cell.
        assert!(size <= 160, "TCP connection future is {size} B");
    }
}
