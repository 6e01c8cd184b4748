//! Runs the broker core on blocking std threads: sockets, TLS, WebSocket, timers and storage.
