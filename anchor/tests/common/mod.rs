//! What the in-process anchor tests share: a free loopback port, an anchor configuration
//! with fast Raft timers (so elections take a fraction of a second), and the log setup.

// Each test file compiles this module on its own and uses part of it.
#![allow(dead_code)]

use std::path::Path;

use anchor::AnchorConfig;

/// A TCP port free on loopback right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Anchor `i`'s configuration under `dir`: loopback on a free port, 50 ms heartbeats,
/// 300-600 ms elections.
pub fn fast_config(dir: &Path, i: usize) -> AnchorConfig {
    let mut cfg = AnchorConfig::new(dir.join(format!("a{i}")));
    cfg.listen = format!("/ip4/127.0.0.1/tcp/{}", free_port());
    cfg.raft.heartbeat_ms = 50;
    cfg.raft.election_min_ms = 300;
    cfg.raft.election_max_ms = 600;
    cfg
}

/// Logs to the test's output, filtered by `RUST_LOG`.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
