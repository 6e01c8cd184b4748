//! Parking quiet TCP connections.
//!
//! A connection's task and its socket's registration with tokio's reactor cost 512 bytes
//! (two 256-byte blocks, each aligned to 128 bytes), more than the broker core's whole
//! record of an idle client; and glibc's allocator does not reuse such aligned blocks once
//! they are freed, so a connection that had a task and lost it leaves holes behind. A
//! plain TCP connection therefore starts in the [`Lot`], without a task: one epoll
//! instance (mio's [`Poll`](mio::Poll)), itself watched by one task, that reads and writes
//! the short exchanges of quiet connections itself (a CONNECT and its CONNACK, a
//! SUBSCRIBE, a ping, the odd message). A connection gets a task of its own when it gets
//! busy: more than [`MAX_HANDLED`] exchanges in [`WINDOW_MS`], input that starts with a
//! PUBLISH (see `connection` on why a PUBLISH waits), a write the socket does not take
//! at once, a core too busy to take its input, a close, or the peer closing. A task that
//! stays idle for [`Runtime::park_idle_ms`](mqtt_adapter_common::config::Runtime::park_idle_ms)
//! (doubled each time it wakes, up to 128 times) hands the connection back and ends.
//!
//! Nothing is lost or reordered across these moves: only one of the lot and the task
//! has the socket at a time; a socket registered with an epoll instance while input
//! already waits is reported at once; what the lot read when it hands a connection over
//! goes to the task first; and output is looked at after the outbox is marked parked.

use super::{connection, Nap, Outbox, Parking, TcpLink, ToCore, KEPT_CAPACITY, OPEN};
use mqtt_adapter_common::core::Input;
use mqtt_broker::ConnId;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
use tracing::warn;

/// The most a connection's wait before parking doubles: 128 times the configured wait.
const MAX_LEVEL: u8 = 7;

/// The most reads and writes the lot does for one connection within [`WINDOW_MS`]; a
/// busier connection gets a task.
const MAX_HANDLED: u8 = 8;

/// See [`MAX_HANDLED`].
const WINDOW_MS: u128 = 1000;

/// The poller's token for [`Shared::waker`] (connections' tokens are their ids).
const WAKER: mio::Token = mio::Token(usize::MAX);

/// Where quiet TCP connections of one broker wait; cloned into every TCP connection.
#[derive(Clone)]
pub(super) struct Lot(Arc<Shared>);

/// How an outbox reaches its lot: output queued for a parked connection is written by
/// the lot. Weak, as the lot holds the outboxes.
pub(super) struct Notify(Weak<Shared>);

struct Shared {
    registry: mio::Registry,
    /// Wakes the poller when outboxes of parked connections have output.
    waker: mio::Waker,
    /// Parked connections whose outbox has output, for the poller's task.
    notified: Mutex<Vec<ConnId>>,
    /// The parked connections, by id (also their token in the poller).
    parked: Mutex<Table>,
    /// Where woken connections get their new task.
    runtime: tokio::runtime::Handle,
    /// The core; weak so that the lot does not keep the core's channel open.
    core: mpsc::WeakSender<ToCore>,
    /// `park_idle_ms`.
    after: Duration,
    /// Where [`Parked::window`] counts from.
    epoch: Instant,
}

/// A connection without a task: 16 bytes, as every idle connection has one.
struct Parked {
    stream: std::net::TcpStream,
    outbox: Arc<Outbox>,
    /// How many times its wait before parking has doubled.
    level: u8,
    /// Reads and writes done by the lot in `window`.
    handled: u8,
    /// The [`WINDOW_MS`] they were done in, counted from [`Shared::epoch`] (wrapping:
    /// a connection seen again exactly 256 windows later starts with the old count).
    window: u8,
}

impl Parked {
    /// Counts one more read or write by the lot in window `now`: false when the
    /// connection is too busy for that and gets a task.
    fn handle(&mut self, now: u8) -> bool {
        if now != self.window {
            self.window = now;
            self.handled = 0;
        }
        if self.handled >= MAX_HANDLED {
            return false;
        }
        self.handled += 1;
        true
    }
}

/// The parked connections by their outbox's id: 16 bytes each (and a control byte) in
/// a table about half full, where a map with the id beside each entry took 24.
#[derive(Default)]
struct Table(hashbrown::HashTable<Parked>);

/// Connection ids are sequential: multiplied by an odd constant (2^64 over the golden
/// ratio), they spread over both the low bits (the bucket) and the top bits (the
/// table's tag) of the hash.
fn hash(id: ConnId) -> u64 {
    id.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl Table {
    fn insert(&mut self, p: Parked) {
        let id = p.outbox.id;
        match self
            .0
            .entry(hash(id), |q| q.outbox.id == id, |q| hash(q.outbox.id))
        {
            hashbrown::hash_table::Entry::Occupied(mut e) => *e.get_mut() = p,
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert(p);
            }
        }
    }

    fn get_mut(&mut self, id: ConnId) -> Option<&mut Parked> {
        self.0.find_mut(hash(id), |q| q.outbox.id == id)
    }

    fn remove(&mut self, id: ConnId) -> Option<Parked> {
        let e = self.0.find_entry(hash(id), |q| q.outbox.id == id).ok()?;
        Some(e.remove().0)
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// What a connection taken out of the lot starts its task with.
#[derive(Default)]
struct Handover {
    /// What the lot read from the socket.
    input: Option<std::io::Result<bytes::Bytes>>,
    /// What the lot took from the outbox and could not write.
    output: Option<bytes::Bytes>,
}

impl Lot {
    /// Starts the lot's poller task in the current runtime; `after` is
    /// `park_idle_ms` (not zero). Ends with the broker (`shutdown`).
    pub(super) fn start(
        after: Duration,
        core: &mpsc::Sender<ToCore>,
        shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<Self> {
        let poll = mio::Poll::new()?;
        let shared = Arc::new(Shared {
            registry: poll.registry().try_clone()?,
            waker: mio::Waker::new(poll.registry(), WAKER)?,
            notified: Mutex::new(Vec::new()),
            parked: Mutex::new(Table::default()),
            runtime: tokio::runtime::Handle::current(),
            core: core.downgrade(),
            after,
            epoch: Instant::now(),
        });
        // SAFETY: `AsyncFd` needs the descriptor to stay open and the same while it owns
        // `poll`: a `Poll` owns its epoll descriptor until it is dropped, and always
        // returns that one.
        #[allow(unsafe_code)]
        let fd = unsafe { AsyncFd::register_with_interest(poll, tokio::io::Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        tokio::spawn(watch(fd, Arc::downgrade(&shared), shutdown));
        Ok(Self(shared))
    }

    /// What an outbox of this lot's connections holds.
    pub(super) fn notify(&self) -> Notify {
        Notify(Arc::downgrade(&self.0))
    }

    /// How long a connection at `level` waits idle before it parks.
    pub(super) fn wait(&self, level: u8) -> Duration {
        self.0.after * (1u32 << level.min(MAX_LEVEL))
    }

    /// The next level: the wait doubles, up to [`MAX_LEVEL`].
    pub(super) fn raise(level: u8) -> u8 {
        (level + 1).min(MAX_LEVEL)
    }

    /// Parks a connection whose outbox is empty and whose socket had nothing to read (a
    /// new connection, or an idle one).
    pub(super) fn park(&self, link: TcpLink, outbox: &Arc<Outbox>, level: u8) -> Parking<TcpLink> {
        let id = outbox.id;
        let fd = link.0.as_raw_fd();
        {
            // Under the lock, so that a wake-up that comes at once finds the entry.
            let mut parked = self.0.parked.lock().expect("not poisoned");
            if let Err(e) = self.0.registry.register(
                &mut mio::unix::SourceFd(&fd),
                mio::Token(id as usize),
                mio::Interest::READABLE,
            ) {
                warn!(conn = id, "parking an idle connection: {e}; it stays awake");
                return Parking::Refused(link);
            }
            let stream = match link.0.into_std() {
                Ok(s) => s,
                Err(e) => {
                    // The socket is closed with it, which also takes it out of the poller.
                    warn!(conn = id, "parking an idle connection: {e}; closing it");
                    return Parking::Lost;
                }
            };
            parked.insert(Parked {
                stream,
                outbox: outbox.clone(),
                level,
                handled: 0,
                window: self.0.window(),
            });
        }
        // Output queued from now on goes to the lot; output queued before is seen below.
        outbox.parked.store(true, Ordering::SeqCst);
        if outbox.woken.load(Ordering::SeqCst) {
            self.0.notify(outbox, true);
        }
        Parking::Parked
    }

    /// How many connections are parked.
    pub(super) fn len(&self) -> usize {
        self.0.parked.lock().expect("not poisoned").len()
    }
}

impl Notify {
    /// `outbox`, of a parked connection, has output (`first`: since the lot last took
    /// its output). A close or an abort gives the connection its task at once (the
    /// lot's task may be gone: the broker is shutting down); anything else is written
    /// by the lot's task.
    pub(super) fn output(&self, outbox: &Outbox, first: bool) {
        if let Some(lot) = self.0.upgrade() {
            lot.notify(outbox, first);
        }
    }
}

impl Shared {
    /// See [`Notify::output`].
    fn notify(self: &Arc<Self>, outbox: &Outbox, first: bool) {
        if outbox.state.load(Ordering::Acquire) != OPEN {
            self.unpark(outbox.id, Handover::default());
            return;
        }
        if !first {
            return;
        }
        let mut notified = self.notified.lock().expect("not poisoned");
        notified.push(outbox.id);
        if notified.len() == 1 {
            drop(notified);
            if let Err(e) = self.waker.wake() {
                warn!("parked connections' poller: {e}");
            }
        }
    }

    /// The current [`WINDOW_MS`], counted from [`epoch`](Self::epoch), wrapping.
    fn window(&self) -> u8 {
        (self.epoch.elapsed().as_millis() / WINDOW_MS) as u8
    }

    /// A parked socket has input, or was closed by the peer: the lot reads it and hands
    /// it to the core, or gives the connection its task with what it read.
    fn input(self: &Arc<Self>, id: ConnId) {
        let mut parked = self.parked.lock().expect("not poisoned");
        let Some(p) = parked.get_mut(id) else { return };
        let mut buf = vec![0u8; KEPT_CAPACITY];
        let read = match (&p.stream).read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Ok(n) => {
                buf.truncate(n);
                Ok(bytes::Bytes::from(buf))
            }
            Err(e) => Err(e),
        };
        let input = match read {
            // Not the end of the input, no more than a read's buffer (there may be more
            // to read), no PUBLISH (it waits, in a task), and the lot may: to the core.
            Ok(b) if !b.is_empty() && b.len() < KEPT_CAPACITY && b[0] >> 4 != 3 => {
                if !p.handle(self.window()) {
                    Ok(b)
                } else {
                    let Some(core) = self.core.upgrade() else {
                        return;
                    };
                    match core.try_send(Input::Data(id, b)) {
                        Ok(()) => return,
                        Err(TrySendError::Full(Input::Data(_, b))) => Ok(b),
                        Err(_) => return,
                    }
                }
            }
            other => other,
        };
        drop(parked);
        self.unpark(
            id,
            Handover {
                input: Some(input),
                output: None,
            },
        );
    }

    /// A parked connection's outbox has output: the lot writes it, or gives the
    /// connection its task with what the socket did not take.
    fn output(self: &Arc<Self>, id: ConnId) {
        let mut parked = self.parked.lock().expect("not poisoned");
        let Some(p) = parked.get_mut(id) else { return };
        let handover = 'write: {
            if p.outbox.state.load(Ordering::Acquire) != OPEN || !p.handle(self.window()) {
                break 'write Handover::default();
            }
            p.outbox.woken.store(false, Ordering::SeqCst);
            let (mut data, close) = p.outbox.take();
            while !data.is_empty() {
                match (&p.stream).write(&data) {
                    Ok(n) if n > 0 => {
                        bytes::Buf::advance(&mut data, n);
                        p.outbox.written(n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // Full, or failed (the task's write fails again and ends it).
                    _ => break,
                }
            }
            if data.is_empty() && !close {
                // The core lets go of the connection's emptied buffers, as for a
                // connection that parks; skipped when the core is busy.
                if let Some(core) = self.core.upgrade() {
                    let _ = core.try_send(Input::Idle(id));
                }
                return;
            }
            Handover {
                input: None,
                output: Some(data).filter(|d| !d.is_empty()),
            }
        };
        drop(parked);
        self.unpark(id, handover);
    }

    /// Gives a parked connection a task again (nothing when it is not parked: a second
    /// wake-up for one it already woke).
    fn unpark(self: &Arc<Self>, id: ConnId, handover: Handover) {
        let Some(p) = self.parked.lock().expect("not poisoned").remove(id) else {
            return;
        };
        p.outbox.parked.store(false, Ordering::SeqCst);
        let _ = self
            .registry
            .deregister(&mut mio::unix::SourceFd(&p.stream.as_raw_fd()));
        // Without the core the broker is gone, and the connection with it.
        let Some(core) = self.core.upgrade() else {
            return;
        };
        let _runtime = self.runtime.enter();
        match TcpStream::from_std(p.stream) {
            Ok(stream) => {
                let mut nap = Nap::new(Lot(self.clone()), Lot::raise(p.level));
                nap.input = handover.input;
                nap.output = handover.output;
                self.runtime
                    .spawn(connection(p.outbox, TcpLink(stream), core, Some(nap)));
            }
            Err(e) => {
                warn!(conn = id, "waking a parked connection: {e}; closing it");
                self.runtime.spawn(async move {
                    let _ = core.send(Input::Closed(id)).await;
                });
            }
        }
    }
}

/// The lot's task: waits until the poller has events, and handles them.
async fn watch(mut fd: AsyncFd<mio::Poll>, lot: Weak<Shared>, mut shutdown: watch::Receiver<bool>) {
    const CAPACITY: usize = 256;
    let mut events = mio::Events::with_capacity(CAPACITY);
    let mut notified = Vec::new();
    loop {
        let mut guard = tokio::select! {
            g = fd.readable_mut() => match g {
                Ok(g) => g,
                Err(e) => {
                    warn!("parked connections' poller: {e}");
                    return;
                }
            },
            _ = shutdown.changed() => return,
        };
        match guard
            .get_inner_mut()
            .poll(&mut events, Some(Duration::ZERO))
        {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                warn!("parked connections' poller: {e}");
                return;
            }
        }
        // A full batch may leave more: the poller is still ready then.
        if events.iter().count() < CAPACITY {
            guard.clear_ready();
        }
        drop(guard);
        let Some(lot) = lot.upgrade() else { return };
        for e in events.iter() {
            if e.token() != WAKER {
                lot.input(e.token().0 as ConnId);
            }
        }
        std::mem::swap(
            &mut notified,
            &mut *lot.notified.lock().expect("not poisoned"),
        );
        for id in notified.drain(..) {
            lot.output(id);
        }
        // Each connection's turn is short, but there may be thousands.
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    /// Every idle connection has one: the lot's table holds 16 bytes per connection
    /// (64-bit targets).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn parked_is_small() {
        assert_eq!(std::mem::size_of::<super::Parked>(), 16);
    }
}
