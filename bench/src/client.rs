//! A raw MQTT connection for the load generator: tokio TCP, packets encoded and decoded
//! with mqtt-proto, no session layer. Just enough to connect, subscribe, publish and
//! acknowledge, with batched writes.

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use mqtt_proto::{
    Connect, Decoder, MqttString, Packet, PacketId, ProtocolVersion, QoS, ReasonCode, Subscribe,
    Subscription, SubscriptionOptions, TopicFilter, MAX_PACKET_SIZE,
};
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// How long connecting, CONNACK and SUBACK may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Read buffer growth step.
pub const READ_CHUNK: usize = 64 * 1024;

/// What a client asks for in CONNECT.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Protocol version.
    pub version: ProtocolVersion,
    /// Client identifier.
    pub client_id: String,
    /// Clean Session (3.1.1) / Clean Start (5.0). With `false` on 5.0 the session also
    /// gets a Session Expiry Interval, so that it outlives the connection as on 3.1.1.
    pub clean: bool,
    /// Keep alive in seconds.
    pub keep_alive: u16,
}

/// One connection, split into halves so a reader and a writer can run apart.
pub struct Conn {
    /// Protocol version of the connection.
    pub version: ProtocolVersion,
    /// Read half.
    pub rd: OwnedReadHalf,
    /// Write half.
    pub wr: OwnedWriteHalf,
    /// Decoder in the client role.
    pub dec: Decoder,
    /// Bytes read and not decoded yet.
    pub buf: BytesMut,
}

impl Conn {
    /// Connects, sends CONNECT and waits for a successful CONNACK.
    pub async fn connect(addr: SocketAddr, opts: &ConnectOptions) -> Result<Conn> {
        tokio::time::timeout(SETUP_TIMEOUT, Self::connect_inner(addr, opts))
            .await
            .with_context(|| format!("{}: CONNACK timed out", opts.client_id))?
    }

    async fn connect_inner(addr: SocketAddr, opts: &ConnectOptions) -> Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (rd, wr) = stream.into_split();
        let mut conn = Conn {
            version: opts.version,
            rd,
            wr,
            dec: Decoder::client(opts.version),
            buf: BytesMut::with_capacity(256),
        };
        let mut c = Connect::new(opts.version, MqttString::new(&opts.client_id)?);
        c.clean_start = opts.clean;
        c.keep_alive = opts.keep_alive;
        if opts.version == ProtocolVersion::V5 {
            // Let brokers send as many unacknowledged messages as they are configured to.
            c.properties.receive_maximum = NonZeroU16::new(u16::MAX);
            if !opts.clean {
                c.properties.session_expiry_interval = Some(3600);
            }
        }
        conn.send(&Packet::Connect(Box::new(c))).await?;
        match conn.next_packet().await? {
            Packet::ConnAck(a) if a.reason_code == ReasonCode::Success => Ok(conn),
            Packet::ConnAck(a) => bail!("{}: CONNACK {:?}", opts.client_id, a.reason_code),
            p => bail!(
                "{}: expected CONNACK, got {:?}",
                opts.client_id,
                p.packet_type()
            ),
        }
    }

    /// Encodes and writes one packet.
    pub async fn send(&mut self, p: &Packet) -> Result<()> {
        let mut out = BytesMut::new();
        p.encode(&mut out, self.version, MAX_PACKET_SIZE)?;
        self.wr.write_all(&out).await?;
        Ok(())
    }

    /// Reads until one whole packet is decoded.
    pub async fn next_packet(&mut self) -> Result<Packet> {
        loop {
            if let Some(p) = self.dec.decode(&mut self.buf)? {
                return Ok(p);
            }
            self.buf.reserve(READ_CHUNK);
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                bail!("connection closed by the broker");
            }
        }
    }

    /// Subscribes to one filter and waits for a SUBACK that grants it.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Result<()> {
        let s = Subscribe {
            packet_id: PacketId::new(1).expect("nonzero"),
            properties: Default::default(),
            subscriptions: vec![Subscription {
                filter: TopicFilter::new(filter)?,
                options: SubscriptionOptions {
                    qos,
                    ..Default::default()
                },
            }],
        };
        self.send(&Packet::Subscribe(s)).await?;
        let p = tokio::time::timeout(SETUP_TIMEOUT, self.next_packet())
            .await
            .context("SUBACK timed out")??;
        match p {
            Packet::SubAck(a) if a.reason_codes.iter().all(|c| c.is_success()) => Ok(()),
            Packet::SubAck(a) => bail!("SUBACK refused: {:?}", a.reason_codes),
            p => bail!("expected SUBACK, got {:?}", p.packet_type()),
        }
    }
}
