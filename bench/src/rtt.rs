//! Round trips in a closed loop: one client publishes a message to a topic it is
//! subscribed to, waits until the broker has sent it back, and only then publishes the
//! next. The baseline is the same loop against a plain TCP echo server on 127.0.0.1 (a
//! thread of the harness), with messages of the same size.

use crate::client::{Conn, ConnectOptions, READ_CHUNK};
use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use mqtt_proto::{
    Packet, PacketId, ProtocolVersion, PubResponse, Publish, QoS, TopicName, MAX_PACKET_SIZE,
};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What to run.
#[derive(Debug, Clone)]
pub struct RoundTripSpec {
    /// Protocol version of the client.
    pub version: ProtocolVersion,
    /// QoS of the publishes and of the subscription.
    pub qos: QoS,
    /// Round trips.
    pub count: u64,
    /// Payload bytes.
    pub payload: usize,
    /// The loop stops after this at the latest.
    pub deadline: Duration,
}

/// What a loop measured.
#[derive(Debug, Clone, Default)]
pub struct RoundTrips {
    /// Round trips completed.
    pub done: u64,
    /// From the first write to the last message back.
    pub elapsed: Duration,
    /// Every round trip's time, nanoseconds, sorted.
    pub latencies_ns: Vec<u64>,
    /// The loop hit its deadline.
    pub timed_out: bool,
}

/// The PUBLISH the loop sends, encoded (packet identifier 1 at QoS 1).
pub fn publish_frame(spec: &RoundTripSpec) -> Result<Vec<u8>> {
    let mut p = Publish::new(TopicName::new("rtt/0")?, vec![0u8; spec.payload]);
    p.qos = spec.qos;
    if spec.qos != QoS::AtMostOnce {
        p.packet_id = PacketId::new(1);
    }
    let mut out = BytesMut::new();
    p.encode(&mut out, spec.version, MAX_PACKET_SIZE)?;
    Ok(out.to_vec())
}

/// The loop through an MQTT broker at `addr`.
pub async fn mqtt(addr: SocketAddr, spec: &RoundTripSpec) -> Result<RoundTrips> {
    let opts = ConnectOptions {
        version: spec.version,
        client_id: "bench-rtt".into(),
        clean: true,
        keep_alive: 600,
    };
    let mut conn = Conn::connect(addr, &opts).await?;
    conn.subscribe("rtt/0", spec.qos).await?;
    let frame = publish_frame(spec)?;
    let qos1 = spec.qos != QoS::AtMostOnce;
    let mut acks = BytesMut::new();
    let t0 = Instant::now();
    let deadline = t0 + spec.deadline;
    let mut out = RoundTrips::default();
    let mut latencies = Vec::with_capacity(spec.count as usize);
    while out.done < spec.count {
        let sent = Instant::now();
        if sent >= deadline {
            out.timed_out = true;
            break;
        }
        conn.wr.write_all(&frame).await?;
        // Back: our own PUBLISH, and at QoS 1 the PUBACK of the one we sent.
        let (mut got_publish, mut got_ack) = (false, !qos1);
        while !(got_publish && got_ack) {
            while let Some(p) = conn.dec.decode(&mut conn.buf)? {
                match p {
                    Packet::Publish(p) => {
                        got_publish = true;
                        if let Some(id) = p.packet_id {
                            Packet::PubAck(PubResponse::new(id)).encode(
                                &mut acks,
                                conn.version,
                                MAX_PACKET_SIZE,
                            )?;
                        }
                    }
                    Packet::PubAck(_) => got_ack = true,
                    _ => {}
                }
            }
            if got_publish && got_ack {
                break;
            }
            conn.buf.reserve(READ_CHUNK);
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, conn.rd.read_buf(&mut conn.buf)).await {
                Ok(r) => {
                    if r? == 0 {
                        bail!("connection closed by the broker");
                    }
                }
                Err(_) => {
                    out.timed_out = true;
                    break;
                }
            }
        }
        if out.timed_out {
            break;
        }
        let back = Instant::now();
        latencies.push(back.duration_since(sent).as_nanos() as u64);
        out.done += 1;
        out.elapsed = back.duration_since(t0);
        if !acks.is_empty() {
            conn.wr.write_all(&acks).await?;
            acks.clear();
        }
    }
    latencies.sort_unstable();
    out.latencies_ns = latencies;
    Ok(out)
}

/// A TCP echo server on a free port of 127.0.0.1: one thread, blocking reads and
/// writes, one connection. Returns its address; the thread ends with the connection.
pub fn echo_server() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new()
        .name("tcp-echo".into())
        .spawn(move || -> std::io::Result<()> {
            let (mut s, _) = listener.accept()?;
            s.set_nodelay(true)?;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                s.write_all(&buf[..n])?;
            }
        })?;
    Ok(addr)
}

/// The loop through a TCP echo server: write `len` bytes, read `len` bytes back.
pub async fn echo(addr: SocketAddr, spec: &RoundTripSpec, len: usize) -> Result<RoundTrips> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .context("connect to the echo server")?;
    s.set_nodelay(true)?;
    let msg = vec![0x30u8; len];
    let mut back = vec![0u8; len];
    let t0 = Instant::now();
    let deadline = t0 + spec.deadline;
    let mut out = RoundTrips::default();
    let mut latencies = Vec::with_capacity(spec.count as usize);
    while out.done < spec.count {
        let sent = Instant::now();
        if sent >= deadline {
            out.timed_out = true;
            break;
        }
        s.write_all(&msg).await?;
        let left = deadline.saturating_duration_since(sent);
        match tokio::time::timeout(left, s.read_exact(&mut back)).await {
            Ok(r) => {
                r?;
            }
            Err(_) => {
                out.timed_out = true;
                break;
            }
        }
        let now = Instant::now();
        latencies.push(now.duration_since(sent).as_nanos() as u64);
        out.done += 1;
        out.elapsed = now.duration_since(t0);
    }
    latencies.sort_unstable();
    out.latencies_ns = latencies;
    Ok(out)
}
