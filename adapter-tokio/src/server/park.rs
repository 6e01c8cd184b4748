//! Parking idle TCP connections.
//!
//! A connection's task and its socket's registration with tokio's reactor cost 512 bytes
//! (two 256-byte blocks, each aligned to 128 bytes), more than the broker core's whole
//! record of an idle client. A plain TCP connection with nothing to do for a while
//! ([`Runtime::park_idle_ms`](mqtt_adapter_common::config::Runtime::park_idle_ms)) hands
//! its socket and its outbox to the [`Lot`] and ends its task. The lot is one epoll
//! instance (mio's [`Poll`](mio::Poll)), itself watched by one task: when a parked socket
//! has input (or is closed by the peer), or the core queues output for it, the connection
//! gets a new task and carries on where it stopped. A parked connection costs its entry
//! in the lot's table and a small waker: about 90 bytes instead of 512.
//!
//! Nothing is lost across a park: a socket registered with an epoll instance while input
//! already waits is reported at once, and the outbox is checked after the lot's waker is
//! in place.

use super::{connection, Nap, Outbox, Parking, TcpLink, ToCore};
use mqtt_broker::ConnId;
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Wake, Waker};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tracing::warn;

/// The most a connection's wait before parking doubles: 128 times the configured wait.
const MAX_LEVEL: u8 = 7;

/// Where idle TCP connections of one broker wait; cloned into every TCP connection.
#[derive(Clone)]
pub(super) struct Lot(Arc<Shared>);

struct Shared {
    registry: mio::Registry,
    /// The parked connections, by id (also their token in the poller).
    parked: Mutex<HashMap<ConnId, Parked>>,
    /// Where woken connections get their new task.
    runtime: tokio::runtime::Handle,
    /// The core, for the woken connections' tasks; weak so that the lot does not keep
    /// the core's channel open.
    core: mpsc::WeakSender<ToCore>,
    /// `park_idle_ms`.
    after: Duration,
}

/// A connection without a task.
struct Parked {
    stream: std::net::TcpStream,
    outbox: Arc<Outbox>,
    /// How many times its wait before parking has doubled.
    level: u8,
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
            parked: Mutex::new(HashMap::new()),
            runtime: tokio::runtime::Handle::current(),
            core: core.downgrade(),
            after,
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

    /// How long a connection at `level` waits idle before it parks.
    pub(super) fn wait(&self, level: u8) -> Duration {
        self.0.after * (1u32 << level.min(MAX_LEVEL))
    }

    /// The next level: the wait doubles, up to [`MAX_LEVEL`].
    pub(super) fn raise(level: u8) -> u8 {
        (level + 1).min(MAX_LEVEL)
    }

    /// Parks a connection whose outbox is empty and whose socket had nothing to read.
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
            parked.insert(
                id,
                Parked {
                    stream,
                    outbox: outbox.clone(),
                    level,
                },
            );
        }
        // Output queued from now on wakes it; output queued before is seen below.
        outbox.waker.register(&Waker::from(Arc::new(Unpark {
            lot: Arc::downgrade(&self.0),
            id,
        })));
        if outbox.has_woken() {
            self.0.unpark(id, false);
        }
        Parking::Parked
    }

    /// How many connections are parked.
    pub(super) fn len(&self) -> usize {
        self.0.parked.lock().expect("not poisoned").len()
    }
}

impl Shared {
    /// Gives a parked connection a task again (nothing when it is not parked: a second
    /// wake-up for one it already woke). When its socket is `readable`, what it holds is
    /// read here and handed to the task: a socket newly registered with tokio is reported
    /// ready only at the reactor's next turn, and input that reached an awake connection
    /// after this one's would be handled first.
    fn unpark(self: &Arc<Self>, id: ConnId, readable: bool) {
        let Some(p) = self.parked.lock().expect("not poisoned").remove(&id) else {
            return;
        };
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
                if readable {
                    nap.input = read(&stream);
                }
                self.runtime
                    .spawn(connection(p.outbox, TcpLink(stream), core, Some(nap)));
            }
            Err(e) => {
                warn!(conn = id, "waking a parked connection: {e}; closing it");
                self.runtime.spawn(async move {
                    let _ = core
                        .send(mqtt_adapter_common::core::Input::Closed(id))
                        .await;
                });
            }
        }
    }
}

/// A parked connection's waker, in its outbox: output for it wakes it.
struct Unpark {
    lot: Weak<Shared>,
    id: ConnId,
}

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(lot) = self.lot.upgrade() {
            lot.unpark(self.id, false);
        }
    }
}

/// The lot's task: waits until the poller has events, and wakes their connections.
async fn watch(mut fd: AsyncFd<mio::Poll>, lot: Weak<Shared>, mut shutdown: watch::Receiver<bool>) {
    const CAPACITY: usize = 256;
    let mut events = mio::Events::with_capacity(CAPACITY);
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
            lot.unpark(e.token().0 as ConnId, e.is_readable() || e.is_read_closed());
        }
    }
}

/// What a woken socket holds, read at once (as [`TcpLink`] would): `None` when nothing
/// is there yet.
fn read(stream: &TcpStream) -> Option<std::io::Result<bytes::Bytes>> {
    let mut buf = vec![0u8; super::KEPT_CAPACITY];
    match stream.try_read(&mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Some(Ok(buf.into()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
        Err(e) => Some(Err(e)),
    }
}
