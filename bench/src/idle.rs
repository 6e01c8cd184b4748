//! Many idle connections: each connects, subscribes to a topic of its own and then sends
//! nothing. Connections go round-robin over the broker's listeners: one client address
//! and one listener port give at most as many connections as there are ephemeral ports
//! (`/proc/sys/net/ipv4/ip_local_port_range`, 28,232 by default).

use crate::client::{Conn, ConnectOptions};
use anyhow::{Context, Result};
use mqtt_proto::{ProtocolVersion, QoS};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Open connections and how long opening them took.
pub struct Idle {
    /// The connections, kept open until dropped.
    pub conns: Vec<Conn>,
    /// From the first connect to the last SUBACK.
    pub elapsed: Duration,
}

/// Ephemeral ports of this machine (Linux), 28,232 when unknown.
pub fn ephemeral_ports() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|x| x.parse::<usize>().ok());
            Some(it.next()??..=it.next()??)
        })
        .map_or(28_232, |r| r.count())
}

/// Listeners needed so that `n` connections from one address find ephemeral ports, with
/// a tenth of them left for everything else.
pub fn listeners_for(n: usize) -> usize {
    let per_port = (ephemeral_ports() * 9 / 10).max(1);
    n.div_ceil(per_port).max(1)
}

/// Opens `n` connections over `addrs` in turn, `concurrency` attempts at a time, each with
/// CONNECT and a SUBSCRIBE to `idle/N`.
pub async fn open(
    addrs: &[SocketAddr],
    version: ProtocolVersion,
    n: usize,
    concurrency: usize,
) -> Result<Idle> {
    anyhow::ensure!(!addrs.is_empty(), "no listener");
    anyhow::ensure!(concurrency > 0, "no connection attempt at a time");
    let t0 = Instant::now();
    let gate = Arc::new(Semaphore::new(concurrency));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let gate = gate.clone();
        let addr = addrs[i % addrs.len()];
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
