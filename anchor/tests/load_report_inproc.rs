//! Three in-process anchors holding the root scope: reads served by a follower reach the
//! leader's split accounting through the follower's load reports (`RaftRpc::LoadReport`),
//! so `scope show` on the leader counts reads the leader never served itself.

mod common;

use std::time::{Duration, Instant};

use anchor::Anchor;
use libp2p::Multiaddr;
use proto::msg::ScopeTarget;
use proto::{ReadLevel, Record, ScopeId};
use resolver::{Client, ClientConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followers_reads_count_on_the_leader() {
    tokio::time::timeout(Duration::from_secs(90), run())
        .await
        .expect("the test finished in time");
}

async fn run() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut anchors = Vec::new();
    for i in 0..3 {
        anchors.push(
            Anchor::start(common::fast_config(dir.path(), i))
                .await
                .unwrap(),
        );
    }
    let addrs: Vec<String> = anchors.iter().map(|a| a.dial_addr()).collect();
    let dial: Vec<Multiaddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
    let policy = policy::Policy::development(None);
    anchor::operator::init_root(&dial, policy.to_toml())
        .await
        .unwrap();
    let all: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let writer_client = Client::connect_str(&all, ClientConfig::default())
        .await
        .unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[4; 32]);
    writer_client
        .put("/r/a", vec![Record::Text("a".into())], 60, &key)
        .await
        .unwrap();
    let leader = loop {
        let found = anchors.iter().position(|a| {
            a.status()
                .scopes
                .iter()
                .any(|s| s.id == ScopeId::root() && s.role == "leader")
        });
        if let Some(l) = found {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let follower = (leader + 1) % 3;
    // A client that knows only the follower: its replica reads are all served there.
    let reader = Client::connect_str(&[addrs[follower].as_str()], ClientConfig::default())
        .await
        .unwrap();
    let leader_reads = || {
        anchors[leader]
            .scope_info(&ScopeTarget::Id(ScopeId::root()))
            .ok()
            .and_then(|i| i.split)
            .map_or(0, |v| v.reads_peak.max(v.reads_per_s))
    };
    // The follower may not have applied the write yet.
    let applied = Instant::now() + Duration::from_secs(20);
    while reader.resolve("/r/a", ReadLevel::Replica).await.is_err() {
        assert!(Instant::now() < applied, "the follower never applied /r/a");
        reader.clear_cache();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = leader_reads();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for _ in 0..50 {
            reader.clear_cache();
            reader.resolve("/r/a", ReadLevel::Replica).await.unwrap();
        }
        let reports = anchors[leader]
            .metrics()
            .load_reports
            .with_label_values(&["ok"])
            .get();
        if reports > 0 && leader_reads() > before + 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the leader never counted the follower's reads ({reports} reports, {} reads/s)",
            leader_reads()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for a in &anchors {
        a.shutdown().await;
    }
}
