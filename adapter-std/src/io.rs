//! A connection cut in two for two blocking threads: a read side and a write side over
//! clones of one `TcpStream`, for TCP, TLS and WebSocket alike.
//!
//! TLS: one `rustls::Connection` behind a mutex, held only while records are decrypted
//! or encrypted, never while the socket blocks. The read side reads raw bytes from its
//! clone of the socket and decrypts them; the write side encrypts and writes. Only the
//! write side writes to the socket, so records leave in the order they were made; when
//! decrypting leaves something to send (an alert, a key update), the read side asks the
//! write side to flush.
//!
//! WebSocket: the read side is a tungstenite `WebSocket` whose own writes (pongs, the
//! closing handshake) are queued to the write side as they are; the write side frames
//! each batch as one binary frame itself ([`mqtt_adapter_common::ws`]).

use bytes::{Bytes, BytesMut};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};

/// What a connection's writer thread gets.
pub(crate) enum ToWriter {
    /// MQTT bytes: one batch, one write (one binary frame on a WebSocket).
    Data(Bytes),
    /// Bytes the read side needs sent as they are (WebSocket control frames); empty:
    /// flush what TLS has to send.
    Raw(Bytes),
    /// Close after what came before.
    Close,
}

/// Buffer capacity a connection keeps between reads.
pub(crate) const KEPT_CAPACITY: usize = 4096;

/// Asks the thread that writes to flush TLS.
pub(crate) type Wake = Box<dyn Fn() + Send>;

/// A shared TLS connection.
pub(crate) type SharedTls = Arc<Mutex<rustls::Connection>>;

fn lock(tls: &SharedTls) -> MutexGuard<'_, rustls::Connection> {
    // A panic elsewhere while holding it leaves a connection that is closed anyway.
    tls.lock().unwrap_or_else(|e| e.into_inner())
}

/// The read side of a TLS connection: plaintext out of raw reads.
pub(crate) struct TlsRead {
    tcp: TcpStream,
    tls: SharedTls,
    /// Asks the writer to flush what decrypting left to send.
    wake: Wake,
    raw: Box<[u8]>,
    start: usize,
    end: usize,
}

impl TlsRead {
    pub(crate) fn new(tcp: TcpStream, tls: SharedTls, wake: Wake) -> Self {
        Self {
            tcp,
            tls,
            wake,
            raw: vec![0; 16 * 1024].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }
}

impl Read for TlsRead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut c = lock(&self.tls);
            match c.reader().read(out) {
                // 0: the peer sent close_notify.
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if self.start < self.end {
                // No plaintext is waiting, so the buffer has room for these records.
                let mut rest = &self.raw[self.start..self.end];
                let read = c.read_tls(&mut rest);
                self.start = self.end - rest.len();
                read?;
                let state = c.process_new_packets();
                let wants_write = c.wants_write();
                drop(c);
                if wants_write {
                    (self.wake)();
                }
                state.map_err(io::Error::other)?;
                continue;
            }
            drop(c);
            let n = self.tcp.read(&mut self.raw)?;
            if n == 0 {
                return Ok(0);
            }
            (self.start, self.end) = (0, n);
        }
    }
}

/// The write side of a TLS connection.
pub(crate) struct TlsWrite {
    tcp: TcpStream,
    tls: SharedTls,
    out: Vec<u8>,
}

impl TlsWrite {
    pub(crate) fn new(tcp: TcpStream, tls: SharedTls) -> Self {
        Self {
            tcp,
            tls,
            out: vec![],
        }
    }

    /// Encrypts `data` (may be empty) and writes every record TLS has to send.
    fn send(&mut self, data: &[u8], close_notify: bool) -> io::Result<()> {
        let mut c = lock(&self.tls);
        let mut rest = data;
        self.out.clear();
        loop {
            let n = c.writer().write(rest)?;
            rest = &rest[n..];
            while c.wants_write() {
                c.write_tls(&mut self.out)?;
            }
            if rest.is_empty() {
                break;
            }
        }
        if close_notify {
            c.send_close_notify();
            while c.wants_write() {
                c.write_tls(&mut self.out)?;
            }
        }
        drop(c);
        let r = self.tcp.write_all(&self.out);
        if self.out.capacity() > 4 * KEPT_CAPACITY {
            self.out = vec![];
        }
        r
    }
}

/// A connection's write side.
pub(crate) enum Out {
    /// A TCP socket.
    Tcp(TcpStream),
    /// TLS over one.
    Tls(TlsWrite),
}

impl Out {
    /// Ends it cleanly: TLS close_notify (the socket is shut down by the caller).
    pub(crate) fn close(&mut self) {
        if let Out::Tls(t) = self {
            let _ = t.send(&[], true);
        }
    }
}

impl Write for Out {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Out::Tcp(s) => s.write(data),
            Out::Tls(t) => t.send(data, false).map(|()| data.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Out::Tcp(s) => s.flush(),
            Out::Tls(t) => t.send(&[], false),
        }
    }
}

/// Where a WebSocket's own writes go: to the socket during the handshake, then to the
/// writer thread.
pub(crate) enum WsWrite {
    /// Straight to the socket (the handshake's response).
    Direct(Out),
    /// Queued to the writer thread as raw bytes.
    Queue(Sender<ToWriter>),
}

/// The stream under a read side's `WebSocket`.
pub(crate) struct WsSide {
    pub(crate) rd: Box<dyn Read + Send>,
    pub(crate) wr: WsWrite,
}

impl Read for WsSide {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.rd.read(buf)
    }
}

impl Write for WsSide {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.wr {
            WsWrite::Direct(o) => o.write(buf),
            WsWrite::Queue(tx) => tx
                .send(ToWriter::Raw(Bytes::copy_from_slice(buf)))
                .map(|()| buf.len())
                .map_err(|_| io::ErrorKind::BrokenPipe.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.wr {
            WsWrite::Direct(o) => o.flush(),
            WsWrite::Queue(_) => Ok(()),
        }
    }
}

/// A connection's read side: byte chunks as they arrive.
pub(crate) enum Reader {
    /// TCP or TLS: what one read returned.
    Stream(Box<dyn Read + Send>, BytesMut),
    /// WebSocket: the payload of each binary frame.
    Ws(Box<tungstenite::WebSocket<WsSide>>),
}

impl Reader {
    /// The next bytes; `None` when the peer closed or the connection failed.
    pub(crate) fn next(&mut self) -> Option<Bytes> {
        match self {
            Reader::Stream(r, buf) => {
                if buf.capacity() < KEPT_CAPACITY / 4 {
                    *buf = BytesMut::with_capacity(KEPT_CAPACITY);
                }
                buf.resize(buf.capacity(), 0);
                match r.read(buf) {
                    Ok(0) | Err(_) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some(buf.split().freeze())
                    }
                }
            }
            Reader::Ws(ws) => loop {
                match ws.read() {
                    Ok(tungstenite::Message::Binary(b)) if b.is_empty() => {}
                    Ok(tungstenite::Message::Binary(b)) => return Some(b),
                    // tungstenite answers pings itself.
                    Ok(
                        tungstenite::Message::Ping(_)
                        | tungstenite::Message::Pong(_)
                        | tungstenite::Message::Frame(_),
                    ) => {}
                    // Text frames are not MQTT ([MQTT-6.0.0-1]); close frames and
                    // errors end it.
                    _ => return None,
                }
            },
        }
    }
}
