//! Prometheus metrics (`GET /metrics` on `[metrics] bind`, off by default): the text
//! exposition. The HTTP side, shared with the web console, is [`console`](crate::console).

use mqtt_broker::{Gauges, QueueGauges, Stats};
use std::fmt::Write;

/// Bytes handed to the connections' writers and not yet taken by their sockets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteGauges {
    /// All connections together.
    pub pending_bytes: usize,
    /// The most for one connection (compare with `limits.max_pending_write_bytes`).
    pub max_connection_pending_bytes: usize,
}

/// The text exposition of the broker's counters and gauges.
pub fn render(
    stats: &Stats,
    gauges: &Gauges,
    queues: &QueueGauges,
    writes: &WriteGauges,
) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP mqtt_{name} {help}");
        let _ = writeln!(out, "# TYPE mqtt_{name} {kind}");
        let _ = writeln!(out, "mqtt_{name} {value}");
    };
    metric(
        "connections",
        "gauge",
        "Open connections.",
        gauges.connections as u64,
    );
    metric(
        "sessions",
        "gauge",
        "Sessions, online and offline.",
        gauges.sessions as u64,
    );
    metric(
        "subscriptions",
        "gauge",
        "Subscriptions.",
        gauges.subscriptions as u64,
    );
    metric(
        "retained_messages",
        "gauge",
        "Retained messages.",
        gauges.retained as u64,
    );
    metric(
        "offline_queued_bytes",
        "gauge",
        "Payload bytes queued for offline sessions.",
        gauges.offline_queued_bytes as u64,
    );
    metric(
        "queued_messages",
        "gauge",
        "Messages waiting to be sent, all sessions together (online sessions with a full inflight window, and offline ones).",
        queues.queued_messages as u64,
    );
    metric(
        "queued_bytes",
        "gauge",
        "Payload bytes of the queued messages.",
        queues.queued_bytes as u64,
    );
    metric(
        "session_queued_messages_max",
        "gauge",
        "The most messages queued for one session.",
        queues.max_session_queued_messages as u64,
    );
    metric(
        "inflight_messages",
        "gauge",
        "Messages sent to clients and not yet acknowledged.",
        queues.inflight_messages as u64,
    );
    metric(
        "pending_write_bytes",
        "gauge",
        "Bytes encoded for clients and not yet taken by their sockets, all connections together.",
        writes.pending_bytes as u64,
    );
    metric(
        "connection_pending_write_bytes_max",
        "gauge",
        "The most bytes waiting to be written to one connection (limits.max_pending_write_bytes closes it, limits.qos0_pending_write_bytes drops its QoS 0 messages).",
        writes.max_connection_pending_bytes as u64,
    );
    metric(
        "connections_total",
        "counter",
        "Connections accepted.",
        stats.connections_total,
    );
    metric(
        "messages_received_total",
        "counter",
        "PUBLISH packets received.",
        stats.messages_received,
    );
    metric(
        "messages_sent_total",
        "counter",
        "PUBLISH packets sent.",
        stats.messages_sent,
    );
    metric(
        "bytes_received_total",
        "counter",
        "Bytes read from clients.",
        stats.bytes_received,
    );
    metric(
        "bytes_sent_total",
        "counter",
        "Bytes written to clients.",
        stats.bytes_sent,
    );
    metric(
        "dropped_queue_full_total",
        "counter",
        "Messages dropped: queue full.",
        stats.dropped_queue_full,
    );
    metric(
        "dropped_expired_total",
        "counter",
        "Messages dropped: expired while queued.",
        stats.dropped_expired,
    );
    metric(
        "dropped_too_large_total",
        "counter",
        "Messages dropped: too large for the client.",
        stats.dropped_too_large,
    );
    metric(
        "dropped_memory_budget_total",
        "counter",
        "Messages dropped: offline queue memory budget used up.",
        stats.dropped_memory_budget,
    );
    metric(
        "dropped_write_backlog_total",
        "counter",
        "QoS 0 messages dropped: more than limits.qos0_pending_write_bytes waiting to be written to the client.",
        stats.dropped_write_backlog,
    );
    metric(
        "publish_denied_total",
        "counter",
        "Publishes refused by the ACL.",
        stats.publish_denied,
    );
    metric(
        "subscribe_denied_total",
        "counter",
        "Subscriptions refused.",
        stats.subscribe_denied,
    );
    metric(
        "receive_denied_total",
        "counter",
        "Messages a wildcard subscription matched and the ACL denied its client.",
        stats.receive_denied,
    );
    metric(
        "auth_failures_total",
        "counter",
        "Connections refused by authentication.",
        stats.auth_failures,
    );
    out
}
