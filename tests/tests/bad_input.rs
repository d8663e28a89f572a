//! Bad input is refused with a clear error, changes nothing, and raises its counter:
//! malformed names (library and CLI), garbage and oversize frames, a bad signature, a key the
//! policy does not allow, a replayed or expired mutation, a malformed mutation body, and Raft
//! messages from a non-member and for an unknown scope.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anchorage_tests::{bounded, random_key, text_of, to_hex, wait_for, Cluster};
use anyhow::{anyhow, ensure, Context, Result};
use proto::codec;
use proto::limits::CLIENT_FRAME_BYTES_MAX;
use proto::msg::{
    MutateRequest, MutateResponse, RaftRequest, RaftResponse, RaftRpc, ResolveRequest,
    ResolveResponse,
};
use proto::{Mutation, Name, Op, ReadLevel, Record, ScopeId, SignedMutation, WireError};
use resolver::net::{self, NetConfig, NetHandle, Protocol};
use resolver::{Client, Error};

const TARGET: &str = "/bi/target";
const ORIGINAL: &str = "original";

const MUTATIONS: &str = "anchorage_mutations_total";
const REFUSED: &str = "anchorage_refused_messages_total";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The target name still holds exactly what the setup wrote.
async fn unchanged(client: &Client, version: u64, after: &str) -> Result<()> {
    let set = client
        .resolve(TARGET, ReadLevel::Linearizable)
        .await
        .with_context(|| format!("resolving {TARGET} after {after}"))?;
    ensure!(
        text_of(&set) == Some(ORIGINAL) && set.version == version,
        "after {after}, {TARGET} is {:?}@{} instead of {ORIGINAL:?}@{version}",
        set.records,
        set.version
    );
    Ok(())
}

/// Waits until metric `name{labels}` on anchor `i` exceeds `before`.
async fn counter_above(
    c: &Cluster,
    i: usize,
    name: &str,
    labels: &[(&str, &str)],
    before: f64,
) -> Result<f64> {
    wait_for(
        &format!("{name}{labels:?} on anchor {i} above {before}"),
        Duration::from_secs(5),
        || async {
            let v = anchorage_tests::metric_value(&c.metrics(i).await?, name, labels);
            Ok((v > before).then_some(v))
        },
    )
    .await
}

async fn metric(c: &Cluster, i: usize, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
    Ok(anchorage_tests::metric_value(
        &c.metrics(i).await?,
        name,
        labels,
    ))
}

/// Sends a raw mutate frame to anchor `i` and decodes the answer.
async fn raw_mutate(
    c: &Cluster,
    net: &NetHandle,
    i: usize,
    bytes: Vec<u8>,
) -> Result<MutateResponse> {
    let answer = c
        .raw_request(net, i, Protocol::Mutate, bytes)
        .await
        .map_err(|e| anyhow!("raw mutate: {e}"))?;
    Ok(codec::decode(&answer, CLIENT_FRAME_BYTES_MAX)?)
}

fn signed_put(
    client: &Client,
    key: &ed25519_dalek::SigningKey,
    value: &str,
) -> Result<SignedMutation> {
    let op = Op::Put {
        name: Name::parse(TARGET)?,
        records: vec![Record::Text(value.into())],
        ttl_s: 60,
    };
    Ok(SignedMutation::sign(&client.prepare(op), key)?)
}

/// Replaces the first occurrence of `from` by `to` (same length) in `bytes`.
fn patch(bytes: &mut [u8], from: &[u8], to: &[u8]) -> Result<()> {
    assert_eq!(from.len(), to.len());
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .ok_or_else(|| anyhow!("pattern not found"))?;
    bytes[at..at + to.len()].copy_from_slice(to);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input() {
    bounded(Duration::from_secs(120), async {
        let mut c = Cluster::start(3).await?;

        // A policy that lets one key write and no other.
        let allowed = random_key();
        let policy = c.dir().join("policy.toml");
        std::fs::write(
            &policy,
            format!(
                "[[writers]]\npattern = \"/**\"\nkeys = [\"{}\"]\n",
                to_hex(&allowed.verifying_key().to_bytes())
            ),
        )?;
        c.init(Some(&policy)).await?;
        let leader = c.wait_settled(Duration::from_secs(10)).await?;
        let client = c.client().await?;
        let version = client
            .put(TARGET, vec![Record::Text(ORIGINAL.into())], 300, &allowed)
            .await?;
        unchanged(&client, version, "setup").await?;
        let (net, _) = net::spawn(NetConfig::client()).map_err(|e| anyhow!("{e}"))?;

        // 1. Malformed names: the library refuses them before sending...
        match client
            .put("/Bad$Name", vec![Record::Text("x".into())], 60, &allowed)
            .await
        {
            Err(Error::InvalidName { input, source }) => {
                let msg = source.to_string();
                ensure!(
                    input == "/Bad$Name" && msg.contains("'$'"),
                    "unclear: {msg}"
                );
            }
            other => return Err(anyhow!("bad name put gave {other:?}")),
        }
        ensure!(matches!(
            client.resolve("/a//b", ReadLevel::Linearizable).await,
            Err(Error::InvalidName { .. })
        ));
        // ...and so does the CLI, naming the rule.
        let key_file = c.dir().join("writer.key");
        let out = c
            .cli_ok(&[
                "keygen".into(),
                "--out".into(),
                key_file.display().to_string(),
            ])
            .await?;
        ensure!(out.trim().len() == 64, "keygen printed {out:?}");
        let mut args: Vec<String> = ["put", "/Bad$Name", "--text", "x", "--key"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(key_file.display().to_string());
        args.extend(c.anchor_args()?);
        let out = c.cli(&args).await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "CLI put of a bad name succeeded");
        ensure!(
            stderr.contains("'$'") && stderr.contains("a-z, 0-9"),
            "CLI error does not name the rule: {stderr}"
        );
        // A bad name smuggled inside a raw resolve frame: refused as malformed.
        let before = metric(
            &c,
            leader,
            REFUSED,
            &[("protocol", "resolve"), ("reason", "malformed")],
        )
        .await?;
        let mut bytes = codec::encode(&ResolveRequest {
            name: Name::parse("/bi/badxname")?,
            level: ReadLevel::Replica,
        })?;
        patch(&mut bytes, b"badxname", b"bad$name")?;
        let answer = c
            .raw_request(&net, leader, Protocol::Resolve, bytes)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        let answer: ResolveResponse = codec::decode(&answer, CLIENT_FRAME_BYTES_MAX)?;
        ensure!(
            matches!(answer, ResolveResponse::Error(WireError::Invalid { .. })),
            "bad name in resolve frame: {answer:?}"
        );
        counter_above(
            &c,
            leader,
            REFUSED,
            &[("protocol", "resolve"), ("reason", "malformed")],
            before,
        )
        .await?;
        unchanged(&client, version, "malformed names").await?;

        // 2. Garbage on the mutate protocol.
        let labels = [("protocol", "mutate"), ("reason", "malformed")];
        let before = metric(&c, leader, REFUSED, &labels).await?;
        let answer = raw_mutate(
            &c,
            &net,
            leader,
            b"\xff\xfe this is not a mutation \x00\x01".to_vec(),
        )
        .await?;
        ensure!(
            matches!(answer, MutateResponse::Error(WireError::Invalid { .. })),
            "garbage frame: {answer:?}"
        );
        counter_above(&c, leader, REFUSED, &labels, before).await?;
        unchanged(&client, version, "a garbage frame").await?;

        // 3. An oversize frame (over 256 KiB), sent by a client whose own limit is raised.
        let labels = [("protocol", "mutate"), ("reason", "bad_frame")];
        let before = metric(&c, leader, REFUSED, &labels).await?;
        let (big_net, _) = net::spawn(NetConfig {
            frame_bytes_max_override: Some(4 * CLIENT_FRAME_BYTES_MAX),
            ..NetConfig::client()
        })
        .map_err(|e| anyhow!("{e}"))?;
        let mut req = codec::encode(&MutateRequest {
            mutation: signed_put(&client, &allowed, "oversize")?,
            forwarded: false,
        })?;
        req.resize(CLIENT_FRAME_BYTES_MAX + 4096, 0);
        let answer = c.raw_request(&big_net, leader, Protocol::Mutate, req).await;
        if let Ok(bytes) = &answer {
            let decoded: Result<MutateResponse, _> = codec::decode(bytes, CLIENT_FRAME_BYTES_MAX);
            ensure!(
                !matches!(decoded, Ok(MutateResponse::Committed { .. })),
                "an oversize frame was committed"
            );
        }
        counter_above(&c, leader, REFUSED, &labels, before).await?;
        big_net.shutdown();
        unchanged(&client, version, "an oversize frame").await?;

        // 4. A bad signature: the library refuses to send it...
        let mut bad = signed_put(&client, &allowed, "forged")?;
        bad.signatures[0].sig[0] ^= 0x01;
        ensure!(
            matches!(
                client.submit(bad.clone()).await,
                Err(Error::BadSignature { .. })
            ),
            "library accepted a bad signature"
        );
        // ...and an anchor that receives it anyway refuses it.
        let labels = [("outcome", "bad_signature")];
        let before = metric(&c, leader, MUTATIONS, &labels).await?;
        let req = codec::encode(&MutateRequest {
            mutation: bad,
            forwarded: false,
        })?;
        match raw_mutate(&c, &net, leader, req).await? {
            MutateResponse::Error(w @ WireError::BadSignature { .. }) => {
                ensure!(matches!(Error::from(w), Error::BadSignature { .. }));
            }
            other => return Err(anyhow!("bad signature answered {other:?}")),
        }
        counter_above(&c, leader, MUTATIONS, &labels, before).await?;
        unchanged(&client, version, "a bad signature").await?;

        // 5. A key the policy does not allow.
        let before = c.metric_sum(MUTATIONS, &[("outcome", "denied")]).await?;
        let stranger = random_key();
        match client
            .put(TARGET, vec![Record::Text("stranger".into())], 60, &stranger)
            .await
        {
            Err(Error::Denied { reason }) => eprintln!("denied: {reason}"),
            other => return Err(anyhow!("a key outside the policy got {other:?}")),
        }
        wait_for("denied counter", Duration::from_secs(5), || {
            let c = &c;
            async move {
                let mut sum = 0.0;
                for i in 0..3 {
                    sum += metric(c, i, MUTATIONS, &[("outcome", "denied")]).await?;
                }
                Ok((sum > before).then_some(()))
            }
        })
        .await?;
        unchanged(&client, version, "a denied key").await?;

        // 6. A replayed mutation: the same signed bytes twice. The first one commits.
        let once = signed_put(&client, &allowed, "replay-me")?;
        let v1 = client.submit(once.clone()).await?;
        let version = v1;
        let replay_labels = [("outcome", "replayed")];
        let before: f64 = {
            let mut s = 0.0;
            for i in 0..3 {
                s += metric(&c, i, MUTATIONS, &replay_labels).await?;
            }
            s
        };
        match client.submit(once).await {
            Err(Error::Replayed { .. }) => {}
            other => return Err(anyhow!("a replay got {other:?}")),
        }
        wait_for("replayed counter", Duration::from_secs(5), || {
            let c = &c;
            async move {
                let mut sum = 0.0;
                for i in 0..3 {
                    sum += metric(c, i, MUTATIONS, &replay_labels).await?;
                }
                Ok((sum > before).then_some(()))
            }
        })
        .await?;
        let set = client.resolve(TARGET, ReadLevel::Linearizable).await?;
        ensure!(
            text_of(&set) == Some("replay-me") && set.version == v1,
            "after a replay: {set:?}"
        );
        // Restore the original value for the remaining checks.
        let version = {
            let _ = version;
            client
                .put(TARGET, vec![Record::Text(ORIGINAL.into())], 300, &allowed)
                .await?
        };
        unchanged(&client, version, "restoring").await?;

        // 7. An expired mutation, sent raw (the library would not send it).
        let labels = [("outcome", "expired")];
        let before = metric(&c, leader, MUTATIONS, &labels).await?;
        let stale = Mutation {
            op: Op::Put {
                name: Name::parse(TARGET)?,
                records: vec![Record::Text("stale".into())],
                ttl_s: 60,
            },
            nonce: rand::random(),
            expires_at_ms: now_ms() - 1_000,
        };
        let stale = SignedMutation::sign(&stale, &allowed)?;
        let req = codec::encode(&MutateRequest {
            mutation: stale,
            forwarded: false,
        })?;
        let answer = raw_mutate(&c, &net, leader, req).await?;
        ensure!(
            matches!(answer, MutateResponse::Error(WireError::Expired { .. })),
            "expired mutation: {answer:?}"
        );
        counter_above(&c, leader, MUTATIONS, &labels, before).await?;
        unchanged(&client, version, "an expired mutation").await?;

        // 8. A correctly signed body holding a malformed name.
        let labels = [("outcome", "invalid")];
        let before = metric(&c, leader, MUTATIONS, &labels).await?;
        let m = client.prepare(Op::Put {
            name: Name::parse("/bi/badxname")?,
            records: vec![Record::Text("x".into())],
            ttl_s: 60,
        });
        let mut body = codec::encode(&m)?;
        patch(&mut body, b"badxname", b"bad$name")?;
        let mut signed = SignedMutation {
            body,
            signatures: Vec::new(),
        };
        signed.add_signature(&allowed);
        let req = codec::encode(&MutateRequest {
            mutation: signed,
            forwarded: false,
        })?;
        let answer = raw_mutate(&c, &net, leader, req).await?;
        ensure!(
            matches!(answer, MutateResponse::Error(WireError::Invalid { .. })),
            "malformed body: {answer:?}"
        );
        counter_above(&c, leader, MUTATIONS, &labels, before).await?;
        unchanged(&client, version, "a malformed mutation body").await?;

        // 9. Raft from a peer that is not a member of the scope, and for an unknown scope.
        for (scope, reason) in [
            (ScopeId::root(), "non_member"),
            (ScopeId([9; 16]), "unknown_scope"),
        ] {
            let labels = [("protocol", "raft"), ("reason", reason)];
            let before = metric(&c, leader, REFUSED, &labels).await?;
            let req = codec::encode(&RaftRequest {
                scope,
                rpc: RaftRpc::Vote,
                payload: b"not a vote request".to_vec(),
            })?;
            let answer = c
                .raw_request(&net, leader, Protocol::Raft, req)
                .await
                .map_err(|e| anyhow!("{e}"))?;
            let answer: RaftResponse = codec::decode(&answer, proto::limits::RAFT_FRAME_BYTES_MAX)?;
            ensure!(
                matches!(answer, RaftResponse::Refused(_)),
                "raft {reason}: {answer:?}"
            );
            counter_above(&c, leader, REFUSED, &labels, before).await?;
            unchanged(&client, version, reason).await?;
        }
        // The cluster still has its leader.
        let now = c.wait_settled(Duration::from_secs(5)).await?;
        ensure!(now == leader, "leadership moved from {leader} to {now}");

        net.shutdown();
        Ok(())
    })
    .await;
}
