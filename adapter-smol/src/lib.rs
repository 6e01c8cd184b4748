//! Runs the broker core on smol and async-std (futures-io): sockets, TLS, WebSocket, timers
//! and storage.
