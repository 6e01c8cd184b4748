//! Runs the broker core on tokio: sockets, TLS, WebSocket, timers and storage.
