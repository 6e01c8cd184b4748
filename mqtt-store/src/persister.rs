//! Group commit and write-ahead for any adapter: [`Persister`] sits between the broker's
//! outputs and the transports. It takes the storage records, sends them to a
//! [`Committer`] thread in batches, and, with [`Durability::Fsync`], holds back every
//! byte and close that follows a record until the fsync covering that record is done.
//!
//! Holding the bytes is what makes a QoS 2 message exactly once across a crash: a
//! subscriber never sees a message (or a packet identifier) the store could still lose,
//! so a publisher that was never acknowledged resends nothing a subscriber already has.
//! Throughput stays high because one fsync covers every batch that arrived while the
//! previous one ran.

use crate::{Store, StoreError};
use mqtt_broker::{Output, Record};
use std::collections::VecDeque;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// When records become durable, and when a publisher is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync after every group of batches; acknowledgements and deliveries wait for it.
    /// Nothing acknowledged is lost, even on power loss.
    Fsync,
    /// Written at once by the committer thread, fsync every interval; acknowledgements
    /// do not wait. A crash of the machine can lose the last interval, a crash of the
    /// broker the records not yet written when it came (acknowledged moments before).
    Interval(Duration),
    /// Written at once by the committer thread, never forced to disk by the broker (the
    /// operating system writes it back); acknowledgements do not wait. A crash of the
    /// machine can lose what the OS had not written, a crash of the broker the records
    /// not yet written when it came.
    None,
}

/// What the committer thread reports.
#[derive(Debug)]
pub enum Report {
    /// This many more batches are durable (in the order they were sent).
    Durable(u64),
    /// The store failed; nothing more is written. The broker should stop.
    Failed(StoreError),
}

/// A thread that writes batches of records to a [`Store`], many batches per write and
/// per fsync.
pub struct Committer {
    tx: Option<mpsc::Sender<Vec<Record>>>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    /// Starts the thread; `report` is called from it.
    pub fn spawn(
        mut store: Store,
        durability: Durability,
        mut report: impl FnMut(Report) + Send + 'static,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<Vec<Record>>();
        let thread = std::thread::Builder::new()
            .name("mqtt-store".into())
            .spawn(move || {
                let mut next_sync = match durability {
                    Durability::Interval(i) => Some(Instant::now() + i),
                    _ => None,
                };
                let mut unsynced = false;
                loop {
                    let first = match next_sync {
                        Some(at) => {
                            match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                                Ok(b) => Some(b),
                                Err(mpsc::RecvTimeoutError::Timeout) => None,
                                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                            }
                        }
                        None => match rx.recv() {
                            Ok(b) => Some(b),
                            Err(_) => break,
                        },
                    };
                    let mut batches = 0u64;
                    if let Some(mut records) = first {
                        batches = 1;
                        while let Ok(more) = rx.try_recv() {
                            records.extend(more);
                            batches += 1;
                        }
                        if let Err(e) = store.write(&records) {
                            report(Report::Failed(e));
                            return;
                        }
                        unsynced = true;
                    }
                    let sync_now = match (durability, next_sync) {
                        (Durability::Fsync, _) => true,
                        (Durability::Interval(_), Some(at)) => Instant::now() >= at,
                        _ => false,
                    };
                    if sync_now && unsynced {
                        if let Err(e) = store.sync() {
                            report(Report::Failed(e));
                            return;
                        }
                        unsynced = false;
                    }
                    if let (Durability::Interval(i), true) = (durability, sync_now) {
                        next_sync = Some(Instant::now() + i);
                    }
                    if batches > 0 {
                        report(Report::Durable(batches));
                    }
                }
                // The sender is gone: what was written becomes durable before the end.
                if let Err(e) = store.sync() {
                    report(Report::Failed(e));
                }
            })
            .expect("a thread can be started");
        Self {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    /// Queues a batch. Returns false if the thread has stopped (after a failure).
    pub fn send(&self, records: Vec<Record>) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(records).is_ok())
    }

    /// Writes what is queued, fsyncs, and stops the thread.
    pub fn finish(mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Between the broker's outputs and the transports: see the module documentation.
///
/// For every output of [`Broker::poll_output`](mqtt_broker::Broker::poll_output), call
/// [`filter`](Self::filter) and carry out what it gives back; after draining, call
/// [`end_of_outputs`](Self::end_of_outputs), then answer the broker with
/// [`Broker::handle_durable`](mqtt_broker::Broker::handle_durable) for each of
/// [`take_acks`](Self::take_acks). When the committer reports [`Report::Durable`], call
/// [`durable`](Self::durable) and carry out the outputs it releases (then `take_acks`
/// again).
pub struct Persister {
    committer: Committer,
    durability: Durability,
    /// Records of the batch being gathered.
    batch: Vec<Record>,
    /// Syncs of the batch being gathered.
    batch_syncs: Vec<u64>,
    /// Batches sent, and batches reported durable.
    sent: u64,
    durable: u64,
    /// Outputs held until batch N is durable.
    held: VecDeque<(u64, Output)>,
    /// Sync sequence numbers answered when batch N is durable.
    syncs: VecDeque<(u64, u64)>,
    /// Sync sequence numbers to answer now.
    acks: Vec<u64>,
}

impl Persister {
    /// A persister writing through `committer`.
    pub fn new(committer: Committer, durability: Durability) -> Self {
        Self {
            committer,
            durability,
            batch: vec![],
            batch_syncs: vec![],
            sent: 0,
            durable: 0,
            held: VecDeque::new(),
            syncs: VecDeque::new(),
            acks: vec![],
        }
    }

    /// Takes a storage record, holds an output that must wait for one, or gives the
    /// output back to be carried out now.
    pub fn filter(&mut self, o: Output) -> Option<Output> {
        match o {
            Output::Store(Record::Sync { seq }) => {
                if self.durability == Durability::Fsync {
                    self.batch_syncs.push(seq);
                } else {
                    self.acks.push(seq);
                }
                None
            }
            Output::Store(r) => {
                self.batch.push(r);
                None
            }
            o @ (Output::Transmit(..) | Output::Close(_))
                if self.durability == Durability::Fsync
                    && (!self.batch.is_empty()
                        || self.sent > self.durable
                        || !self.held.is_empty()) =>
            {
                // Waits for the batch being gathered (or, if it stays empty, the last
                // one sent: what it says may concern records not yet durable), behind
                // everything held before it.
                self.held.push_back((self.sent + 1, o));
                None
            }
            o => Some(o),
        }
    }

    /// The outputs are drained: the gathered records leave as one batch.
    pub fn end_of_outputs(&mut self) {
        if self.batch.is_empty() {
            // Held outputs of this round wait for the batch already in flight.
            for (n, _) in self.held.iter_mut().rev() {
                if *n == self.sent + 1 {
                    *n = self.sent;
                } else {
                    break;
                }
            }
            for s in self.batch_syncs.drain(..) {
                self.syncs.push_back((self.sent, s));
            }
            return;
        }
        self.sent += 1;
        for s in self.batch_syncs.drain(..) {
            self.syncs.push_back((self.sent, s));
        }
        let batch = std::mem::take(&mut self.batch);
        let _ = self.committer.send(batch);
        if self.durability != Durability::Fsync {
            // Nothing waits for these.
            self.durable = self.sent;
        }
        self.release_due();
    }

    /// The committer made `n` more batches durable: returns the outputs released, in
    /// order.
    pub fn durable(&mut self, n: u64) -> Vec<Output> {
        if self.durability == Durability::Fsync {
            self.durable = (self.durable + n).min(self.sent);
        }
        self.release_due()
    }

    fn release_due(&mut self) -> Vec<Output> {
        while let Some(&(b, s)) = self.syncs.front() {
            if b > self.durable {
                break;
            }
            self.acks.push(s);
            self.syncs.pop_front();
        }
        let mut out = vec![];
        while let Some((b, _)) = self.held.front() {
            if *b > self.durable {
                break;
            }
            out.push(self.held.pop_front().expect("front exists").1);
        }
        out
    }

    /// Sync sequence numbers to answer with `handle_durable` now.
    pub fn take_acks(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.acks)
    }

    /// Outputs held, waiting for an fsync.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Writes what is queued, fsyncs and stops the committer.
    pub fn finish(self) {
        self.committer.finish();
    }
}
