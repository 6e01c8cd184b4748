//! The drive loop: one task owns the broker core; one task per connection reads, one
//! writes. Input reaches the core in batches over a channel; each connection's output
//! leaves in one write per batch. No protocol decision is made here.

use crate::auth::{parse_acl, Passwords};
use crate::config::Config;
use bytes::{Bytes, BytesMut};
use mqtt_broker::{AuthResult, Broker, BrokerEvent, ConnId, ConnInfo, Hooks, Output};
use mqtt_proto::ReasonCode;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

enum ToCore {
    Open {
        id: ConnId,
        info: ConnInfo,
        tx: mpsc::UnboundedSender<ToConn>,
        pending: Arc<AtomicUsize>,
    },
    Input(ConnId, Bytes),
    Closed(ConnId),
    Auth(ConnId, AuthResult),
}

enum ToConn {
    Data(Bytes),
    Close,
}

struct ConnHandle {
    tx: mpsc::UnboundedSender<ToConn>,
    pending: Arc<AtomicUsize>,
}

/// A running broker.
pub struct Running {
    /// The addresses the listeners are bound to (useful with port 0).
    pub local_addrs: Vec<SocketAddr>,
    shutdown: Option<watch::Sender<bool>>,
    done: Option<oneshot::Receiver<()>>,
}

impl Running {
    /// Stops accepting, disconnects clients (5.0: 0x8B) and waits for the core to finish.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(true);
        }
        if let Some(d) = self.done.take() {
            let _ = d.await;
        }
    }
}

/// Binds the listeners and starts the broker.
pub async fn start(config: Config, hooks: Option<Box<dyn Hooks>>) -> anyhow::Result<Running> {
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
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let next_id = Arc::new(AtomicUsize::new(1));
    let live = Arc::new(AtomicUsize::new(0));
    let mut local_addrs = vec![];
    for l in &config.listeners {
        let listener = TcpListener::bind(l.bind)
            .await
            .map_err(|e| anyhow::anyhow!("listener {}: {e}", l.bind))?;
        let addr = listener.local_addr()?;
        local_addrs.push(addr);
        let anonymous = l.allow_anonymous.unwrap_or(l.bind.ip().is_loopback());
        let name = l.name.clone().unwrap_or_else(|| addr.to_string());
        info!(listener = %name, %addr, anonymous, "listening");
        tokio::spawn(accept_loop(
            listener,
            name,
            anonymous,
            core_tx.clone(),
            shutdown_rx.clone(),
            next_id.clone(),
            live.clone(),
            config.limits.max_connections,
        ));
    }
    let (done_tx, done_rx) = oneshot::channel();
    let max_pending = config.limits.max_pending_write_bytes;
    tokio::spawn(async move {
        core_loop(
            broker,
            core_rx,
            core_tx,
            shutdown_rx,
            passwords,
            max_pending,
        )
        .await;
        let _ = done_tx.send(());
    });
    Ok(Running {
        local_addrs,
        shutdown: Some(shutdown_tx),
        done: Some(done_rx),
    })
}

#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    listener: TcpListener,
    name: String,
    anonymous: bool,
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
        let (core_tx, live) = (core_tx.clone(), live.clone());
        tokio::spawn(async move {
            connection(id, stream, info, core_tx).await;
            live.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// One connection: reads go to the core, the core's batches are written.
async fn connection(id: ConnId, stream: TcpStream, info: ConnInfo, core: mpsc::Sender<ToCore>) {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<ToConn>();
    let pending = Arc::new(AtomicUsize::new(0));
    if core
        .send(ToCore::Open {
            id,
            info,
            tx,
            pending: pending.clone(),
        })
        .await
        .is_err()
    {
        return;
    }
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        let mut buf = BytesMut::new();
        while let Some(msg) = rx.recv().await {
            let mut close = false;
            let mut one = match msg {
                ToConn::Data(b) => Some(b),
                ToConn::Close => {
                    close = true;
                    None
                }
            };
            // Everything already waiting leaves in the same write.
            while !close {
                match rx.try_recv() {
                    Ok(ToConn::Data(b)) => {
                        if let Some(first) = one.take() {
                            buf.extend_from_slice(&first);
                        }
                        buf.extend_from_slice(&b);
                    }
                    Ok(ToConn::Close) => close = true,
                    Err(_) => break,
                }
            }
            let data = match one.take() {
                Some(b) if buf.is_empty() => b,
                Some(b) => {
                    buf.extend_from_slice(&b);
                    buf.split().freeze()
                }
                None => buf.split().freeze(),
            };
            if !data.is_empty() {
                pending.fetch_sub(data.len(), Ordering::Relaxed);
                if wr.write_all(&data).await.is_err() {
                    break;
                }
            }
            if close {
                break;
            }
            if buf.capacity() > 64 * 1024 {
                // Idle connections keep little memory.
                buf = BytesMut::new();
            }
        }
        let _ = wr.shutdown().await;
        let _ = stop_tx.send(());
    });
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        let n = tokio::select! {
            r = rd.read_buf(&mut buf) => r,
            _ = &mut stop_rx => break,
        };
        match n {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if core
                    .send(ToCore::Input(id, buf.split().freeze()))
                    .await
                    .is_err()
                {
                    break;
                }
                if buf.capacity() > 64 * 1024 {
                    buf = BytesMut::with_capacity(4096);
                }
            }
        }
    }
    let _ = core.send(ToCore::Closed(id)).await;
    let _ = writer.await;
}

async fn core_loop(
    mut broker: Broker,
    mut rx: mpsc::Receiver<ToCore>,
    tx: mpsc::Sender<ToCore>,
    mut shutdown: watch::Receiver<bool>,
    passwords: Option<Arc<Passwords>>,
    max_pending: usize,
) {
    let mut conns: HashMap<ConnId, ConnHandle> = HashMap::new();
    let mut stopping = false;
    loop {
        let deadline = broker.poll_timeout();
        tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                let now = Instant::now();
                handle(&mut broker, &mut conns, now, msg);
                // Everything already waiting is handled before the outputs are drained.
                for _ in 0..1024 {
                    match rx.try_recv() {
                        Ok(m) => handle(&mut broker, &mut conns, now, m),
                        Err(_) => break,
                    }
                }
            }
            _ = sleep_until(deadline) => broker.handle_timeout(Instant::now()),
            _ = shutdown.changed(), if !stopping => {
                stopping = true;
                info!("shutting down");
                broker.shutdown(Instant::now());
            }
        }
        while let Some(o) = broker.poll_output() {
            match o {
                Output::Transmit(id, bytes) => {
                    if let Some(c) = conns.get(&id) {
                        let p = c.pending.fetch_add(bytes.len(), Ordering::Relaxed) + bytes.len();
                        if p > max_pending {
                            warn!(conn = id, pending = p, "client too slow; closing");
                            let _ = c.tx.send(ToConn::Close);
                            conns.remove(&id);
                            broker.handle_closed(Instant::now(), id);
                        } else {
                            let _ = c.tx.send(ToConn::Data(bytes));
                        }
                    }
                }
                Output::Close(id) => {
                    if let Some(c) = conns.remove(&id) {
                        let _ = c.tx.send(ToConn::Close);
                    }
                }
                Output::Authenticate(req) => {
                    let tx = tx.clone();
                    let passwords = passwords.clone();
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
                Output::Event(e) => log_event(&e),
                Output::Store(_) => {}
                _ => {}
            }
        }
        if stopping && conns.is_empty() {
            break;
        }
    }
}

fn handle(broker: &mut Broker, conns: &mut HashMap<ConnId, ConnHandle>, now: Instant, msg: ToCore) {
    match msg {
        ToCore::Open {
            id,
            info,
            tx,
            pending,
        } => {
            conns.insert(id, ConnHandle { tx, pending });
            broker.handle_connection(now, id, info);
        }
        ToCore::Input(id, b) => broker.handle_input(now, id, &b),
        ToCore::Closed(id) => {
            conns.remove(&id);
            broker.handle_closed(now, id);
        }
        ToCore::Auth(id, r) => broker.handle_auth(now, id, r),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
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
