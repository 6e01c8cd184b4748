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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A server's idle timer and a client's keep-alive timer share a slot; each role gets
    /// its own back, earliest first, and the others keep theirs.
    #[test]
    fn timers_come_back_by_role() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut server = TimerTable::default();
        server.set(Timer::Connect, t0 + s);
        server.stop(Timer::Connect);
        server.set(Timer::Idle, t0 + 2 * s);
        assert_eq!(server.next(), Some(t0 + 2 * s));
        assert_eq!(server.expired(t0 + s, true), None);
        assert_eq!(server.expired(t0 + 2 * s, true), Some(Timer::Idle));
        assert_eq!(server.next(), None);

        let mut client = TimerTable::default();
        client.set(Timer::Connect, t0 + 3 * s);
        client.set(Timer::KeepAlive, t0 + s);
        client.set(Timer::PingResp, t0 + 2 * s);
        assert_eq!(client.expired(t0 + 3 * s, false), Some(Timer::KeepAlive));
        assert_eq!(client.expired(t0 + 3 * s, false), Some(Timer::PingResp));
        assert_eq!(client.expired(t0 + 3 * s, false), Some(Timer::Connect));
        assert_eq!(client.expired(t0 + 3 * s, false), None);
        client.set(Timer::KeepAlive, t0 + s);
        client.stop_all();
        assert_eq!(client.next(), None);
    }
}
