//! `anchorage dev`: three anchors in this process on loopback, the root scope created with
//! the development policy and a few example names on the first run; prints how to use it.

use std::path::Path;

use anchor::operator::Operator;
use anchor::{Anchor, AnchorConfig};
use anyhow::{Context, Result};
use libp2p::Multiaddr;
use proto::{Name, Record, ScopeId};
use resolver::AnchorAddr;

use crate::keys::{load_key, write_key};
use crate::signal::wait_for_signal;
use crate::target::dial_multiaddr;

/// Runs `anchorage dev`.
pub async fn run(dir: &Path, port: u16) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut anchors = Vec::new();
    for i in 0..3u16 {
        let mut cfg = AnchorConfig::new(dir.join(format!("anchor{}", i + 1)));
        cfg.listen = format!("/ip4/127.0.0.1/tcp/{}", port + i);
        cfg.http = std::net::SocketAddr::from(([127, 0, 0, 1], port + 100 + i));
        anchors.push(Anchor::start(cfg).await?);
    }
    let addrs: Vec<AnchorAddr> = anchors
        .iter()
        .map(|a| AnchorAddr::parse(&a.dial_addr()))
        .collect::<Result<_, _>>()?;
    let admin_path = dir.join("admin.key");
    let dev_key_path = dir.join("dev.key");
    let fresh = !anchors[0]
        .replicas()
        .iter()
        .any(|r| r.id == ScopeId::root());
    if fresh {
        let admin = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        write_key(&admin_path, &admin)?;
        write_key(
            &dev_key_path,
            &ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng),
        )?;
        let admin_pub = policy::PublicKey::from_bytes(&admin.verifying_key().to_bytes())?;
        Operator::new()?
            .init_root(
                &addrs,
                policy::Policy::development(Some(admin_pub)).to_toml(),
            )
            .await?;
        let trust: Vec<Multiaddr> = addrs.iter().map(dial_multiaddr).collect();
        let client = resolver::Client::connect(&trust, resolver::ClientConfig::default()).await?;
        let key = load_key(&dev_key_path)?;
        let examples: [(&str, Record); 3] = [
            ("/hello", Record::Text("hello from anchorage".into())),
            ("/eu/payments/api", Record::Addr("127.0.0.1:8443".parse()?)),
            (
                "/eu/payments/db",
                Record::Service {
                    target: Name::parse("/eu/payments/db1")?,
                    port: 5432,
                    priority: 10,
                    weight: 10,
                },
            ),
        ];
        for (name, record) in examples {
            client.put(name, vec![record], 300, &key).await?;
        }
    }
    let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    println!(
        "Anchorage dev cluster: 3 anchors, data in {}",
        dir.display()
    );
    for a in &anchors {
        println!(
            "  {}  metrics http://{}/metrics",
            a.dial_addr(),
            a.http_addr().map_or("-".into(), |h| h.to_string())
        );
    }
    println!("\nFrom another terminal:\n");
    println!("  export ANCHORAGE_ANCHORS={}", list.join(","));
    println!("  anchorage status");
    println!("  anchorage resolve /hello");
    println!("  anchorage resolve /eu/payments/api --linearizable");
    println!(
        "  anchorage put /hello --text 'hi there' --key {}",
        dev_key_path.display()
    );
    println!("\nCtrl-C stops the cluster; run `anchorage dev` again to restart it with its data.");
    wait_for_signal().await;
    for a in &anchors {
        a.shutdown().await;
    }
    Ok(())
}
