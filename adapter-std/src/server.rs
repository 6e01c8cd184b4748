//! The broker on blocking std threads.
//!
//! Threads:
//! - one **driver** thread owns the broker core ([`Core`]): it waits on a
//!   `std::sync::mpsc` channel with `recv_timeout` until the broker's next deadline,
//!   handles every input already waiting (up to a batch), and drains the outputs;
//! - one **listener** thread per listener accepts and starts a connection thread;
//! - per connection, a **reader** thread (it ran the TLS and WebSocket handshakes first)
//!   sends what it reads to the driver, and a **writer** thread writes what the driver
//!   queued for it, everything waiting in one write.
//!
//! Why a writer thread rather than writes from the driver on a clone of the socket: a
//! write blocks while the client does not read, and a blocked driver would stall every
//! other client (a publisher never waits on a slow subscriber). The writer blocks
//! alone; the driver counts what waits for it and cuts the connection past
//! `limits.max_pending_write_bytes`. TLS needs it too: records must leave in the order
//! they were encrypted, so one thread writes them (see `io.rs`).
//!
//! Password checks run on a thread each; the durable store's group commit on its own
//! (`mqtt_store::Committer`). No protocol decision is made here.

use crate::io::{Out, Reader, SharedTls, TlsRead, TlsWrite, ToWriter, Wake, WsSide, WsWrite};
use bytes::{Bytes, BytesMut};
use mqtt_adapter_common::config::{Config, Listener};
use mqtt_adapter_common::console::{self, Console, Limit, Route};
use mqtt_adapter_common::core::{self, AuthDone, Conn, Core, Flow, Input, Offload};
use mqtt_adapter_common::tls::{client_identity, Reloading, TlsFiles};
use mqtt_broker::{BrokerEvent, ConnId, ConnInfo, Gauges, Hooks};
use mqtt_proto::{Publish, ReasonCode};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// How long a TLS or WebSocket handshake may take.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// Inputs handled before the outputs are drained.
const BATCH: usize = 1024;
/// Stack of connection threads (the handshakes run on the reader's).
const CONN_STACK: usize = 256 * 1024;

type ToCore = SyncSender<Input<StdConn>>;

/// A connection's write side, as the core holds it.
pub struct StdConn {
    tx: Sender<ToWriter>,
    pending: Arc<AtomicUsize>,
    socket: TcpStream,
}

impl Conn for StdConn {
    fn send(&self, data: Bytes) -> usize {
        let n = data.len();
        let pending = self.pending.fetch_add(n, Ordering::Relaxed) + n;
        let _ = self.tx.send(ToWriter::Data(data));
        pending
    }

    fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    fn close(&self) {
        let _ = self.tx.send(ToWriter::Close);
    }

    fn abort(&self) {
        // The writer may be blocked on this socket: cut it under it.
        let _ = self.socket.shutdown(Shutdown::Both);
        let _ = self.tx.send(ToWriter::Close);
    }
}

/// A running broker. Dropping it shuts it down, as [`shutdown`](Self::shutdown) does.
pub struct Running {
    /// The addresses the listeners are bound to (useful with port 0).
    pub local_addrs: Vec<SocketAddr>,
    /// The metrics endpoint's address, if enabled.
    pub metrics_addr: Option<SocketAddr>,
    core: ToCore,
    stop: Arc<AtomicBool>,
    /// Each accept loop, and the address that wakes it.
    listeners: Vec<(SocketAddr, JoinHandle<()>)>,
    driver: Option<JoinHandle<()>>,
}

impl Running {
    fn ask<T: Send + 'static>(
        &self,
        input: impl FnOnce(core::Reply<T>) -> Input<StdConn>,
    ) -> anyhow::Result<T> {
        let (tx, rx) = mpsc::channel();
        self.core
            .send(input(Box::new(move |v| {
                let _ = tx.send(v);
            })))
            .map_err(|_| anyhow::anyhow!("broker stopped"))?;
        rx.recv_timeout(Duration::from_secs(10))
            .map_err(|_| anyhow::anyhow!("broker stopped"))
    }

    /// Publishes a message as the broker (no publisher session, no ACL).
    pub fn publish(&self, publish: Publish) -> anyhow::Result<()> {
        self.core
            .send(Input::Publish(publish))
            .map_err(|_| anyhow::anyhow!("broker stopped"))
    }

    /// Current connections, sessions, subscriptions and retained messages.
    pub fn gauges(&self) -> anyhow::Result<Gauges> {
        self.ask(Input::Gauges)
    }

    /// The Prometheus text of the metrics.
    pub fn metrics(&self) -> anyhow::Result<String> {
        self.ask(Input::Metrics)
    }

    /// Waits (up to `limit`) until the broker holds at least `n` subscriptions: tests use
    /// it to know a subscriber is ready.
    pub fn wait_for_subscriptions(&self, n: usize, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if self.gauges()?.subscriptions >= n {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "{n} subscriptions not reached");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Disconnects a client (5.0: DISCONNECT with `reason`).
    pub fn disconnect_client(&self, client_id: &str, reason: ReasonCode) -> anyhow::Result<()> {
        self.core
            .send(Input::Disconnect(client_id.into(), reason))
            .map_err(|_| anyhow::anyhow!("broker stopped"))
    }

    /// True once the driver stopped: after [`shutdown`](Self::shutdown), or on its own
    /// when the store failed (the embedding application should exit).
    pub fn is_stopped(&self) -> bool {
        self.driver.as_ref().is_none_or(|d| d.is_finished())
    }

    /// Stops accepting, disconnects clients (5.0: 0x8B) and waits for the driver to
    /// finish (the last fsync included) and the listening sockets to close.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for (addr, l) in std::mem::take(&mut self.listeners) {
            // An accept loop sees the flag once it accepts again.
            let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
            let _ = l.join();
        }
        let _ = self.core.send(Input::Shutdown);
        if let Some(d) = self.driver.take() {
            let _ = d.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds the listeners and starts the broker.
pub fn start(config: Config, hooks: Option<Box<dyn Hooks>>) -> anyhow::Result<Running> {
    start_with(config, hooks, None)
}

/// Like [`start`], and every [`BrokerEvent`] is also sent to `events`; events are
/// dropped while the channel is full: the broker never waits for it.
pub fn start_with(
    config: Config,
    hooks: Option<Box<dyn Hooks>>,
    events: Option<SyncSender<BrokerEvent>>,
) -> anyhow::Result<Running> {
    // A configuration built in code has not been through `Config::parse`'s checks.
    config
        .metrics
        .check(config.auth.password_file.as_deref())
        .map_err(anyhow::Error::msg)?;
    let (mut broker, passwords) = core::broker(&config, hooks)?;
    let console_passwords = passwords.clone();
    let (core_tx, core_rx) = mpsc::sync_channel::<Input<StdConn>>(4096);
    // The durable state comes back before any listener accepts.
    let persister = {
        let tx = core_tx.clone();
        mqtt_adapter_common::persistence::start(&config.persistence, &mut broker, move |r| {
            let _ = tx.send(Input::Store(r));
        })?
    };
    let offload: Offload = Box::new(|job| {
        let _ = std::thread::Builder::new().name("auth".into()).spawn(job);
    });
    let auth_done: AuthDone = {
        let tx = core_tx.clone();
        Arc::new(move |id, r| {
            let _ = tx.send(Input::Auth(id, r));
        })
    };
    let mut core = Core::new(broker, passwords, &config, persister, offload, auth_done);
    if let Some(tx) = events {
        core.set_events(move |e| {
            let _ = tx.try_send(e);
        });
    }
    let stop = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(Shared {
        core: core_tx.clone(),
        stop: stop.clone(),
        next_id: AtomicUsize::new(1),
        live: AtomicUsize::new(0),
        max_connections: config.limits.max_connections,
    });
    let mut local_addrs = vec![];
    let mut listeners = vec![];
    for l in &config.listeners {
        let listener =
            TcpListener::bind(l.bind).map_err(|e| anyhow::anyhow!("listener {}: {e}", l.bind))?;
        let addr = listener.local_addr()?;
        local_addrs.push(addr);
        let anonymous = l.allow_anonymous.unwrap_or(l.bind.ip().is_loopback());
        let name: Arc<str> = l.name.clone().unwrap_or_else(|| addr.to_string()).into();
        let transport = Transport::of(l)?;
        info!(listener = %name, %addr, protocol = %l.protocol, anonymous, "listening");
        let shared = shared.clone();
        let t = std::thread::Builder::new()
            .name(format!("listen {addr}"))
            .spawn(move || accept_loop(listener, name, anonymous, transport, shared))?;
        listeners.push((wake_addr(addr), t));
    }
    let metrics_addr = match config.metrics.bind {
        Some(bind) => {
            let l = TcpListener::bind(bind).map_err(|e| anyhow::anyhow!("metrics {bind}: {e}"))?;
            let addr = l.local_addr()?;
            console::log_listening(addr, &config.metrics);
            let console = Arc::new(Console::from_config(
                &config,
                console_passwords,
                &local_addrs,
            ));
            let shared = shared.clone();
            let t = std::thread::Builder::new()
                .name("http".into())
                .spawn(move || http_loop(l, shared, console))?;
            listeners.push((wake_addr(addr), t));
            Some(addr)
        }
        None => None,
    };
    let driver = std::thread::Builder::new()
        .name("mqtt-core".into())
        .spawn(move || drive(core, core_rx))?;
    Ok(Running {
        local_addrs,
        metrics_addr,
        core: core_tx,
        stop,
        listeners,
        driver: Some(driver),
    })
}

/// The drive loop: wait for inputs or the next deadline, hand them to the core, drain.
fn drive(mut core: Core<StdConn>, rx: Receiver<Input<StdConn>>) {
    loop {
        let first = match core.poll_timeout() {
            Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            },
            None => match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => break,
            },
        };
        let now = Instant::now();
        if let Some(m) = first {
            // Everything already waiting is handled before the outputs are drained.
            let mut flow = core.handle(now, m);
            for m in rx.try_iter().take(BATCH) {
                if flow == Flow::Stop {
                    break;
                }
                flow = core.handle(now, m);
            }
            if flow == Flow::Stop {
                break;
            }
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
    core.finish();
}

/// What every accept loop shares.
struct Shared {
    core: ToCore,
    stop: Arc<AtomicBool>,
    next_id: AtomicUsize,
    live: AtomicUsize,
    max_connections: usize,
}

/// The address that reaches a listener bound to `addr` (loopback for a wildcard).
fn wake_addr(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
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

fn accept_loop(
    listener: TcpListener,
    name: Arc<str>,
    anonymous: bool,
    transport: Transport,
    shared: Arc<Shared>,
) {
    for accepted in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                warn!(listener = %name, "accept: {e}");
                continue;
            }
        };
        let Ok(peer) = stream.peer_addr() else {
            continue;
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
        let spawned = std::thread::Builder::new()
            .name(format!("conn {id}"))
            .stack_size(CONN_STACK)
            .spawn(move || {
                if let Err(e) = serve(id, stream, info, &shared2.core, transport) {
                    debug!(conn = id, %peer, "handshake failed: {e}");
                }
                shared2.live.fetch_sub(1, Ordering::Relaxed);
            });
        if let Err(e) = spawned {
            warn!(%peer, "no thread for the connection: {e}");
            shared.live.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Runs the handshakes, then becomes the connection's reader.
fn serve(
    id: ConnId,
    stream: TcpStream,
    mut info: ConnInfo,
    core: &ToCore,
    transport: Transport,
) -> anyhow::Result<()> {
    let (wtx, wrx) = mpsc::channel::<ToWriter>();
    let (tls, ws_path) = match transport {
        Transport::Tcp => (None, None),
        Transport::Tls(t, identity) => (Some((t, identity)), None),
        Transport::Ws(path) => (None, Some(path)),
        Transport::Wss(t, path, identity) => (Some((t, identity)), Some(path)),
    };
    stream.set_read_timeout(Some(HANDSHAKE))?;
    stream.set_write_timeout(Some(HANDSHAKE))?;
    let (rd, out): (Box<dyn Read + Send>, Out) = match tls {
        None => (Box::new(stream.try_clone()?), Out::Tcp(stream.try_clone()?)),
        Some((reloading, use_identity)) => {
            let mut tls = rustls::ServerConnection::new(reloading.current())?;
            let mut s = &stream;
            while tls.is_handshaking() {
                tls.complete_io(&mut s)?;
            }
            while tls.wants_write() {
                tls.write_tls(&mut s)?;
            }
            if use_identity {
                info.tls_identity = Some(client_identity(&tls)?.into());
            }
            let shared: SharedTls = Arc::new(Mutex::new(tls.into()));
            let wtx = wtx.clone();
            let wake: Wake = Box::new(move || {
                let _ = wtx.send(ToWriter::Raw(Bytes::new()));
            });
            (
                Box::new(TlsRead::new(stream.try_clone()?, shared.clone(), wake)),
                Out::Tls(TlsWrite::new(stream.try_clone()?, shared)),
            )
        }
    };
    let (reader, out, ws) = match ws_path {
        None => (Reader::Stream(rd, BytesMut::new()), out, false),
        Some(path) => {
            let side = WsSide {
                rd,
                wr: WsWrite::Direct(out),
            };
            let mut ws =
                match tungstenite::accept_hdr(side, mqtt_adapter_common::ws::handshake(&path)) {
                    Ok(ws) => ws,
                    Err(tungstenite::HandshakeError::Failure(e)) => return Err(e.into()),
                    Err(tungstenite::HandshakeError::Interrupted(_)) => {
                        anyhow::bail!("WebSocket handshake timed out")
                    }
                };
            // From now on its own writes (pongs, the closing handshake) go through the
            // writer thread.
            let out = match std::mem::replace(&mut ws.get_mut().wr, WsWrite::Queue(wtx.clone())) {
                WsWrite::Direct(out) => out,
                _ => unreachable!("the handshake writes directly"),
            };
            (Reader::Ws(Box::new(ws)), out, true)
        }
    };
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)?;
    let pending = Arc::new(AtomicUsize::new(0));
    let conn = StdConn {
        tx: wtx,
        pending: pending.clone(),
        socket: stream.try_clone()?,
    };
    if core.send(Input::Open { id, info, conn }).is_err() {
        return Ok(());
    }
    let socket = stream.try_clone()?;
    std::thread::Builder::new()
        .name(format!("conn {id} writer"))
        .stack_size(CONN_STACK)
        .spawn(move || write_loop(wrx, out, ws, &pending, &socket))?;
    read_loop(id, reader, core);
    drop(stream);
    Ok(())
}

/// Sends what arrives to the core until the peer closes.
fn read_loop(id: ConnId, mut reader: Reader, core: &ToCore) {
    while let Some(b) = reader.next() {
        if core.send(Input::Data(id, b)).is_err() {
            break;
        }
    }
    let _ = core.send(Input::Closed(id));
}

/// Writes each batch the core queued in one write (one binary frame on a WebSocket);
/// ends on a close, an error, or when the core forgot the connection.
fn write_loop(
    rx: Receiver<ToWriter>,
    mut out: Out,
    ws: bool,
    pending: &AtomicUsize,
    socket: &TcpStream,
) {
    let mut buf = Vec::new();
    let mut frame = Vec::new();
    let mut close = false;
    while let Ok(first) = rx.recv() {
        let mut taken = 0;
        for m in std::iter::once(first).chain(rx.try_iter()) {
            match m {
                ToWriter::Data(b) => {
                    taken += b.len();
                    if ws {
                        frame.extend_from_slice(&b);
                    } else {
                        buf.extend_from_slice(&b);
                    }
                }
                ToWriter::Raw(b) => {
                    end_frame(&mut frame, &mut buf);
                    buf.extend_from_slice(&b);
                }
                ToWriter::Close => {
                    close = true;
                    break;
                }
            }
            if buf.len() + frame.len() > 1 << 20 {
                break;
            }
        }
        end_frame(&mut frame, &mut buf);
        if out.write_all(&buf).and_then(|()| out.flush()).is_err() {
            break;
        }
        // Counted until written: a write blocked on a peer that does not read holds it.
        pending.fetch_sub(taken, Ordering::Relaxed);
        buf.clear();
        if buf.capacity() > 16 * crate::io::KEPT_CAPACITY {
            // A burst's allocation leaves with it: idle connections keep little memory.
            buf = Vec::new();
            frame = Vec::new();
        }
        if close {
            if ws {
                let _ = out.write_all(&mqtt_adapter_common::ws::CLOSE_FRAME);
            }
            out.close();
            break;
        }
    }
    // The reader sees the end too.
    let _ = socket.shutdown(Shutdown::Both);
}

/// Appends the WebSocket frame of the MQTT bytes gathered so far, if any.
fn end_frame(frame: &mut Vec<u8>, buf: &mut Vec<u8>) {
    if !frame.is_empty() {
        mqtt_adapter_common::ws::binary_header(frame.len(), buf);
        buf.append(frame);
    }
}

/// The HTTP listener: `GET /metrics` answers with the Prometheus text, and with
/// `[metrics] console = true` the web console and its API are served too; a thread per
/// request. What a request means is decided in [`mqtt_adapter_common::console`]; this
/// moves the bytes.
fn http_loop(listener: TcpListener, shared: Arc<Shared>, console: Arc<Console>) {
    let open = Limit::new(console::MAX_CONNECTIONS);
    // Password checks (argon2: memory and a core each).
    let checks = Limit::new(std::thread::available_parallelism().map_or(1, |n| n.get()));
    for s in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut s) = s else { continue };
        let Some(place) = open.try_take() else {
            continue;
        };
        let (core, console, checks) = (shared.core.clone(), console.clone(), checks.clone());
        let _ = std::thread::Builder::new()
            .name("http request".into())
            .spawn(move || {
                let _place = place;
                let _ = s.set_read_timeout(Some(console::READ_TIMEOUT));
                let _ = s.set_write_timeout(Some(console::WRITE_TIMEOUT));
                let response = match console::read_request(&mut s) {
                    None => return,
                    Some(Err(bad)) => bad,
                    Some(Ok(req)) => respond(req, &core, &console, &checks),
                };
                let _ = s.write_all(&response.to_bytes());
                let _ = s.shutdown(Shutdown::Both);
            });
    }
}

/// The answer to one request (on the request's own thread: the password check may take
/// a while).
fn respond(
    req: console::Request,
    core: &ToCore,
    console: &Console,
    checks: &Arc<Limit>,
) -> console::Response {
    if console.needs_auth() {
        let Some(_place) = checks.try_take() else {
            return console::unavailable();
        };
        if !console.authorized(req.authorization.as_deref(), Instant::now()) {
            return console::unauthorized();
        }
    }
    match console.route(&req) {
        Route::Respond(r) => r,
        Route::Metrics => {
            ask(core, Input::Metrics).map_or_else(console::unavailable, console::metrics_response)
        }
        Route::Query(q) => ask(core, |reply| Input::Console(q, reply))
            .map_or_else(console::unavailable, |a| console.answer(a)),
    }
}

/// Sends the driver a question and waits (5 s at most) for its answer.
fn ask<T: Send + 'static>(
    core: &ToCore,
    input: impl FnOnce(core::Reply<T>) -> Input<StdConn>,
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    let reply: core::Reply<T> = Box::new(move |answer| {
        let _ = tx.send(answer);
    });
    core.send(input(reply)).ok()?;
    rx.recv_timeout(Duration::from_secs(5)).ok()
}
