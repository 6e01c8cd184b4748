//! Many idle connections: each connects, subscribes to a topic of its own and then sends
//! nothing.

use crate::client::{Conn, ConnectOptions};
use anyhow::{Context, Result};
use mqtt_proto::{ProtocolVersion, QoS};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Connection attempts under way at once: below the listen backlogs, so that no SYN is
/// dropped and retried a second later.
const CONCURRENCY: usize = 64;

/// Open connections and how long opening them took.
pub struct Idle {
    /// The connections, kept open until dropped.
    pub conns: Vec<Conn>,
    /// From the first connect to the last SUBACK.
    pub elapsed: Duration,
}

/// Opens `n` connections to `addr`, each with CONNECT and a SUBSCRIBE to `idle/N`.
pub async fn open(addr: SocketAddr, version: ProtocolVersion, n: usize) -> Result<Idle> {
    let t0 = Instant::now();
    let gate = Arc::new(Semaphore::new(CONCURRENCY));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let opts = ConnectOptions {
                version,
                client_id: format!("idle-{i}"),
                clean: true,
                keep_alive: 600,
            };
            let mut c = Conn::connect(addr, &opts).await?;
            c.subscribe(&format!("idle/{i}"), QoS::AtLeastOnce).await?;
            // Let the decoder's buffer go: this connection stays quiet from now on.
            c.buf = Default::default();
            anyhow::Ok(c)
        }));
    }
    let mut conns = Vec::with_capacity(n);
    for (i, t) in tasks.into_iter().enumerate() {
        conns.push(
            t.await
                .context("task panicked")?
                .with_context(|| format!("idle connection {i} of {n}"))?,
        );
    }
    Ok(Idle {
        conns,
        elapsed: t0.elapsed(),
    })
}
