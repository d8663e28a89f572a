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
/// 300-600 ms elections, no rebalancing (these tests place every scope themselves).
pub fn fast_config(dir: &Path, i: usize) -> AnchorConfig {
    let mut cfg = AnchorConfig::new(dir.join(format!("a{i}")));
    cfg.listen = format!("/ip4/127.0.0.1/tcp/{}", free_port());
    cfg.raft.heartbeat_ms = 50;
    cfg.raft.election_min_ms = 300;
    cfg.raft.election_max_ms = 600;
    cfg.placement.rebalance = false;
    cfg
}

/// Logs to the test's output, filtered by `RUST_LOG`.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Writes `name` = `value` through `client` until it is acknowledged (within 20 s) and
/// returns the acknowledged version. Only acknowledged writes are held to account, so a
/// failed attempt (no leader yet, the name moving) is simply made again.
pub async fn put_until_acked(
    client: &resolver::Client,
    name: &str,
    value: &str,
    key: &ed25519_dalek::SigningKey,
) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let records = vec![proto::Record::Text(value.to_string())];
        match client.put(name, records, 300, key).await {
            Ok(version) => return version,
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{name} never committed: {e}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// `name` reads back linearizably with the acknowledged version and text value.
pub async fn reads_back(client: &resolver::Client, name: &str, expected: &(u64, String)) {
    let set = client
        .resolve(name, proto::ReadLevel::Linearizable)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(set.version, expected.0, "{name}");
    assert_eq!(
        set.records,
        vec![proto::Record::Text(expected.1.clone())],
        "{name}"
    );
}

/// Three in-process anchors under `dir` whose root scope (initialized on them) splits by
/// itself once it holds more than `names_max` names (at most once a second), and their dial
/// addresses (the trust anchors).
pub async fn splitting_root(dir: &Path, names_max: u32) -> (Vec<anchor::Anchor>, Vec<String>) {
    root_with(dir, &split_policy(names_max), |_| {}).await
}

/// A development policy whose scopes split by themselves past `names_max` names (at most
/// once a second).
pub fn split_policy(names_max: u32) -> policy::Policy {
    let mut policy = policy::Policy::development(None);
    policy.split.auto = true;
    policy.split.names_max = names_max;
    policy.split.interval_s_min = 1;
    policy
}

/// [`split_policy`] whose split-off scopes also merge back by themselves once both sides
/// hold fewer than `names_min` names and the split is `age_s_min` old.
pub fn merge_policy(names_max: u32, names_min: u32, age_s_min: u32) -> policy::Policy {
    let mut policy = split_policy(names_max);
    policy.merge.auto = true;
    policy.merge.names_min = Some(names_min);
    policy.merge.age_s_min = age_s_min;
    policy.validate().expect("a valid merge policy");
    policy
}

/// Three in-process anchors under `dir` ([`fast_config`], then `tune`), the root scope
/// initialized on them with `policy`, and their dial addresses (the trust anchors).
pub async fn root_with(
    dir: &Path,
    policy: &policy::Policy,
    tune: impl Fn(&mut AnchorConfig),
) -> (Vec<anchor::Anchor>, Vec<String>) {
    let mut anchors = Vec::new();
    for i in 0..3 {
        let mut cfg = fast_config(dir, i);
        tune(&mut cfg);
        anchors.push(anchor::Anchor::start(cfg).await.unwrap());
    }
    let addrs: Vec<String> = anchors.iter().map(|a| a.dial_addr()).collect();
    let dial: Vec<libp2p::Multiaddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
    anchor::operator::init_root(&dial, policy.to_toml())
        .await
        .unwrap();
    (anchors, addrs)
}

/// Waits until `cond` holds, polling every 100 ms, or fails with `what` after `limit`.
pub async fn wait_for<F, Fut>(limit: std::time::Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + limit;
    while !cond().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
