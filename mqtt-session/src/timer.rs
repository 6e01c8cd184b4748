//! The connection's timers: a fixed table, the earliest of which is the next deadline.

use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Server: CONNECT must arrive. Client: CONNACK must arrive.
    Connect = 0,
    /// Server: a packet must arrive within 1.5 x keep-alive ([MQTT-3.1.2-24]).
    Idle = 1,
    /// Client: send PINGREQ when nothing was sent for the keep-alive interval.
    KeepAlive = 2,
    /// Client: PINGRESP must arrive.
    PingResp = 3,
}

/// Where a timer's deadline is kept. `Idle` is a server's timer and `KeepAlive` a
/// client's, so they share a slot: three deadlines for four timers, 16 bytes less in
/// every connection.
const fn slot(t: Timer) -> usize {
    match t {
        Timer::Connect => 0,
        Timer::Idle | Timer::KeepAlive => 1,
        Timer::PingResp => 2,
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct TimerTable {
    at: [Option<Instant>; 3],
}

impl TimerTable {
    pub(crate) fn set(&mut self, t: Timer, at: Instant) {
        self.at[slot(t)] = Some(at);
    }

    pub(crate) fn stop(&mut self, t: Timer) {
        self.at[slot(t)] = None;
    }

    pub(crate) fn stop_all(&mut self) {
        self.at = [None; 3];
    }

    pub(crate) fn next(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }

    /// The first timer due at `now` (of a server's timers if `server`, else of a
    /// client's), removed from the table.
    pub(crate) fn expired(&mut self, now: Instant, server: bool) -> Option<Timer> {
        let shared = if server {
            Timer::Idle
        } else {
            Timer::KeepAlive
        };
        let t = [Timer::Connect, shared, Timer::PingResp]
            .into_iter()
            .filter(|&t| self.at[slot(t)].is_some_and(|at| at <= now))
            .min_by_key(|&t| self.at[slot(t)])?;
        self.at[slot(t)] = None;
        Some(t)
    }
}
