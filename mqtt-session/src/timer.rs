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

const TIMERS: [Timer; 4] = [
    Timer::Connect,
    Timer::Idle,
    Timer::KeepAlive,
    Timer::PingResp,
];

#[derive(Debug, Clone, Default)]
pub(crate) struct TimerTable {
    at: [Option<Instant>; 4],
}

impl TimerTable {
    pub(crate) fn set(&mut self, t: Timer, at: Instant) {
        self.at[t as usize] = Some(at);
    }

    pub(crate) fn stop(&mut self, t: Timer) {
        self.at[t as usize] = None;
    }

    pub(crate) fn stop_all(&mut self) {
        self.at = [None; 4];
    }

    pub(crate) fn next(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }

    /// The first timer due at `now`, removed from the table.
    pub(crate) fn expired(&mut self, now: Instant) -> Option<Timer> {
        let t = TIMERS
            .into_iter()
            .filter(|&t| self.at[t as usize].is_some_and(|at| at <= now))
            .min_by_key(|&t| self.at[t as usize])?;
        self.at[t as usize] = None;
        Some(t)
    }
}
