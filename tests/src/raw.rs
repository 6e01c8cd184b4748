//! A raw MQTT client for tests that break the rules: packets written byte by byte, what
//! the broker sends decoded with `mqtt_proto::Decoder`, and the broker's log lines
//! captured to check that it says why it closed a connection. Every wait is bounded by
//! [`LIMIT`].

use bytes::BytesMut;
use mqtt_proto::{Decoder, Packet, ProtocolVersion, ReasonCode};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest any single wait may take.
pub const LIMIT: Duration = Duration::from_secs(10);

// ----- Logs -------------------------------------------------------------------------------

/// Everything logged in this process (at info and above), as the broker binary would
/// print it: [`logs`] installs the subscriber that collects it.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The process's log lines, collected from the first call on.
pub fn logs() -> &'static Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
            .with_writer(move || writer.clone())
            .init();
        logs
    })
}

impl Logs {
    /// Everything so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("not poisoned")).into_owned()
    }

    /// The first line holding every one of `needles`, waiting for it up to [`LIMIT`].
    pub async fn line(&self, needles: &[&str]) -> String {
        self.line_after(0, needles).await
    }

    /// The same among the lines logged after the first `offset` bytes ([`Logs::text`]'s
    /// length at some point).
    pub async fn line_after(&self, offset: usize, needles: &[&str]) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            let text = self.text()[offset..].to_string();
            // A space after each line: a needle `field=value ` matches at the end too.
            if let Some(l) = text
                .lines()
                .find(|l| needles.iter().all(|n| format!("{l} ").contains(n)))
            {
                return l.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needles:?} in:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

// ----- The hostile side -------------------------------------------------------------------

/// `header`, the Remaining Length, `body`.
pub fn frame(header: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![header];
    let mut n = body.len();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// A length-prefixed string (or binary data).
pub fn string(s: &[u8]) -> Vec<u8> {
    let mut out = (s.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(s);
    out
}

/// The protocol level of a version's CONNECT (3.1.1 for 3.1 too).
pub fn version_level(v: ProtocolVersion) -> u8 {
    match v {
        ProtocolVersion::V5 => 5,
        _ => 4,
    }
}

/// CONNECT with any protocol name and level, Clean Start, this keep-alive.
pub fn connect_packet(name: &[u8], level: u8, client_id: &str, keep_alive: u16) -> Vec<u8> {
    let mut body = string(name);
    body.push(level);
    body.push(0x02);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    if level == 5 {
        body.push(0); // no properties
    }
    body.extend_from_slice(&string(client_id.as_bytes()));
    frame(0x10, &body)
}

/// CONNECT (3.1.1 or 5.0) with a user name and password, Clean Start, keep-alive 60 s.
pub fn connect_with_credentials(
    v: ProtocolVersion,
    client_id: &str,
    user: &str,
    password: &str,
) -> Vec<u8> {
    let mut body = string(b"MQTT");
    body.extend_from_slice(&[version_level(v), 0xc2, 0, 60]);
    if v.is_v5() {
        body.push(0);
    }
    body.extend_from_slice(&string(client_id.as_bytes()));
    body.extend_from_slice(&string(user.as_bytes()));
    body.extend_from_slice(&string(password.as_bytes()));
    frame(0x10, &body)
}

/// PUBLISH QoS 0 with raw topic bytes.
pub fn publish_packet(v: ProtocolVersion, topic: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = string(topic);
    if v.is_v5() {
        body.push(0);
    }
    body.extend_from_slice(payload);
    frame(0x30, &body)
}

/// PUBLISH QoS 1, packet id `id`.
pub fn publish_qos1_packet(v: ProtocolVersion, topic: &[u8], id: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = string(topic);
    body.extend_from_slice(&id.to_be_bytes());
    if v.is_v5() {
        body.push(0);
    }
    body.extend_from_slice(payload);
    frame(0x32, &body)
}

/// SUBSCRIBE (packet id `id`) to raw filters at QoS 0.
pub fn subscribe_packet(v: ProtocolVersion, id: u16, filters: &[&[u8]]) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    if v.is_v5() {
        body.push(0);
    }
    for f in filters {
        body.extend_from_slice(&string(f));
        body.push(0);
    }
    frame(0x82, &body)
}

/// How a hostile connection ended.
#[derive(Debug)]
pub struct Closed {
    /// What the broker sent before closing.
    pub packets: Vec<Packet>,
    /// From the call to [`Raw::closed`] to the end of the stream.
    pub after: Duration,
    /// Every byte the broker sent on this connection.
    pub bytes: Vec<u8>,
}

impl Closed {
    /// The reason code of the DISCONNECT or CONNACK the broker sent last, if any.
    pub fn reason(&self) -> Option<ReasonCode> {
        self.packets.iter().rev().find_map(|p| match p {
            Packet::Disconnect(d) => Some(d.reason_code),
            Packet::ConnAck(c) => Some(c.reason_code),
            _ => None,
        })
    }
}

/// A connection as the broker's log lines name it: listener and peer address.
#[derive(Debug, Clone)]
pub struct Who {
    /// The listener's address, as the broker names it by default.
    pub listener: String,
    /// The client's address: the peer the broker sees.
    pub local: String,
}

impl Who {
    /// What a log line about this connection holds.
    pub fn needles(&self) -> [String; 2] {
        [
            format!("listener={} ", self.listener),
            format!("peer={} ", self.local),
        ]
    }

    /// The broker's log line about closing this connection.
    pub async fn log_line(&self) -> String {
        let [l, p] = self.needles();
        logs().line(&["client disconnected", &l, &p]).await
    }
}

/// A hostile client: a raw TCP connection.
pub struct Raw {
    /// The socket.
    pub s: TcpStream,
    /// How the broker's logs name it.
    pub who: Who,
    /// Decodes what the broker sends (3.1.1 until set otherwise).
    pub decoder: Decoder,
    buf: BytesMut,
    /// Every byte received.
    seen: Vec<u8>,
}

impl Raw {
    /// Opens a connection.
    pub async fn open(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        Raw {
            who: Who {
                listener: addr.to_string(),
                local: s.local_addr().unwrap().to_string(),
            },
            s,
            decoder: Decoder::client(ProtocolVersion::V3_1_1),
            buf: BytesMut::new(),
            seen: vec![],
        }
    }

    /// Opens a connection and connects as `client_id`: CONNACK 0x00.
    pub async fn connected(addr: SocketAddr, v: ProtocolVersion, client_id: &str) -> Raw {
        Self::connected_with_keep_alive(addr, v, client_id, 60).await
    }

    /// The same with a keep-alive.
    pub async fn connected_with_keep_alive(
        addr: SocketAddr,
        v: ProtocolVersion,
        client_id: &str,
        keep_alive: u16,
    ) -> Raw {
        let mut r = Raw::open(addr).await;
        r.decoder = Decoder::client(v);
        r.send(&connect_packet(
            b"MQTT",
            version_level(v),
            client_id,
            keep_alive,
        ))
        .await;
        match r.next().await {
            Some(Packet::ConnAck(c)) => assert_eq!(c.reason_code, ReasonCode::Success),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        r
    }

    /// Writes all of `bytes`.
    pub async fn send(&mut self, bytes: &[u8]) {
        // A CONNECT sets the version the broker answers in (a 5.0 CONNECT that it refuses
        // still gets a 5.0 CONNACK).
        if let [0x10, ..] = bytes {
            if let Some(level) = connect_level(bytes) {
                let v = [
                    ProtocolVersion::V3_1,
                    ProtocolVersion::V3_1_1,
                    ProtocolVersion::V5,
                ]
                .into_iter()
                .find(|v| v.level() == level);
                if let Some(v) = v {
                    self.decoder = Decoder::client(v);
                }
            }
        }
        self.s.write_all(bytes).await.unwrap();
    }

    /// The next packet from the broker; `None` when it closed the connection.
    pub async fn next(&mut self) -> Option<Packet> {
        loop {
            if let Some(p) = self
                .decoder
                .decode(&mut self.buf)
                .expect("broker sends valid packets")
            {
                return Some(p);
            }
            let before = self.buf.len();
            let n = match tokio::time::timeout(LIMIT, self.s.read_buf(&mut self.buf)).await {
                Ok(Ok(n)) => n,
                Ok(Err(_)) => 0,
                Err(_) => panic!("the broker neither sent nor closed within {LIMIT:?}"),
            };
            self.seen.extend_from_slice(&self.buf[before..]);
            if n == 0 {
                assert!(
                    self.buf.is_empty(),
                    "closed inside a packet: {:?}",
                    self.buf
                );
                return None;
            }
        }
    }

    /// Reads until the broker closes the connection (within [`LIMIT`]).
    pub async fn closed(mut self) -> Closed {
        let started = Instant::now();
        let mut packets = vec![];
        while let Some(p) = self.next().await {
            packets.push(p);
        }
        Closed {
            packets,
            after: started.elapsed(),
            bytes: self.seen,
        }
    }

    /// Reads and discards until the broker closes the connection (within [`LIMIT`]),
    /// without decoding: a connection aborted by the broker may end inside a packet.
    /// Returns the bytes read and how long it took.
    pub async fn drained(mut self) -> (usize, Duration) {
        let started = Instant::now();
        let mut total = self.buf.len();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match tokio::time::timeout_at((started + LIMIT).into(), self.s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return (total, started.elapsed()),
                Ok(Ok(n)) => total += n,
                Err(_) => panic!("not closed within {LIMIT:?}, {total} bytes read"),
            }
        }
    }
}

/// The protocol level of a CONNECT packet's bytes, if they reach that far.
fn connect_level(bytes: &[u8]) -> Option<u8> {
    // Fixed header: type byte and a remaining length of 1 to 4 bytes.
    let mut i = 1;
    while *bytes.get(i)? & 0x80 != 0 {
        i += 1;
    }
    let name_len = u16::from_be_bytes([*bytes.get(i + 1)?, *bytes.get(i + 2)?]) as usize;
    bytes.get(i + 3 + name_len).copied()
}
