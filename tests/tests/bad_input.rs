//! Bad input is refused with a clear error, changes nothing, and raises its counter:
//! malformed names (library, CLI, raw frames), garbage and oversize frames, a bad signature,
//! a key the policy does not allow, a replayed or expired mutation, a signed body holding a
//! malformed name, and Raft messages from a non-member and for an unknown scope.
//!
//! Each check is a step; a failing step is recorded and the others still run, so one anchor
//! bug does not hide the rest. The test fails at the end listing every failed step.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anchorage_tests::{bounded, metric_value, random_key, text_of, to_hex, wait_for, Cluster};
use anyhow::{anyhow, bail, ensure, Context, Result};
use ed25519_dalek::SigningKey;
use proto::codec;
use proto::limits::{CLIENT_FRAME_BYTES_MAX, RAFT_FRAME_BYTES_MAX};
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

/// What every step works with.
struct Ctx {
    c: Cluster,
    client: Client,
    /// A client swarm with a fresh identity, for raw frames.
    net: NetHandle,
    leader: usize,
    /// The one key the policy lets write.
    allowed: SigningKey,
    /// The version of `TARGET` holding `ORIGINAL`.
    version: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Ctx {
    /// `TARGET` still holds exactly `ORIGINAL` at `self.version`.
    async fn unchanged(&self, after: &str) -> Result<()> {
        let set = self
            .client
            .resolve(TARGET, ReadLevel::Linearizable)
            .await
            .with_context(|| format!("resolving {TARGET} after {after}"))?;
        ensure!(
            text_of(&set) == Some(ORIGINAL) && set.version == self.version,
            "after {after}, {TARGET} is {:?}@{} instead of {ORIGINAL:?}@{}",
            set.records,
            set.version,
            self.version
        );
        Ok(())
    }

    /// Metric `name{labels}` on the leader.
    async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        Ok(metric_value(
            &self.c.metrics(self.leader).await?,
            name,
            labels,
        ))
    }

    /// Metric `name{labels}` summed over all anchors (a refusal may be counted by the
    /// anchor that received the request and by the leader it forwarded to).
    async fn metric_all(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        let mut sum = 0.0;
        for i in 0..self.c.len() {
            sum += metric_value(&self.c.metrics(i).await?, name, labels);
        }
        Ok(sum)
    }

    /// Waits until `name{labels}` (on the leader, or summed over all anchors with `all`)
    /// exceeds `before`.
    async fn counter_above(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        before: f64,
        all: bool,
    ) -> Result<()> {
        let what = format!("{name}{labels:?} above {before}");
        wait_for(&what, Duration::from_secs(5), || async {
            let v = if all {
                self.metric_all(name, labels).await?
            } else {
                self.metric(name, labels).await?
            };
            Ok((v > before).then_some(()))
        })
        .await
    }

    /// Sends one raw frame to the leader from the test's own swarm.
    async fn raw(&self, protocol: Protocol, bytes: Vec<u8>) -> Result<Vec<u8>> {
        self.c
            .raw_request(&self.net, self.leader, protocol, bytes)
            .await
            .map_err(|e| anyhow!("raw {protocol:?} request: {e}"))
    }

    async fn raw_mutate(&self, mutation: SignedMutation) -> Result<MutateResponse> {
        let req = codec::encode(&MutateRequest {
            mutation,
            forwarded: false,
        })?;
        Ok(codec::decode(
            &self.raw(Protocol::Mutate, req).await?,
            CLIENT_FRAME_BYTES_MAX,
        )?)
    }

    /// A put of `value` to `TARGET`, signed by `key`, with a fresh nonce.
    fn signed_put(&self, key: &SigningKey, value: &str) -> Result<SignedMutation> {
        let op = Op::Put {
            name: Name::parse(TARGET)?,
            records: vec![Record::Text(value.into())],
            ttl_s: 60,
        };
        Ok(SignedMutation::sign(&self.client.prepare(op), key)?)
    }
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

/// Malformed names: the library and the CLI refuse them naming the rule; one smuggled into a
/// raw resolve frame is refused as malformed and counted.
async fn malformed_names(x: &Ctx) -> Result<()> {
    match x
        .client
        .put("/Bad$Name", vec![Record::Text("x".into())], 60, &x.allowed)
        .await
    {
        Err(Error::InvalidName { input, source }) => {
            let msg = source.to_string();
            ensure!(
                input == "/Bad$Name" && msg.contains("'$'"),
                "unclear: {msg}"
            );
        }
        other => bail!("library put of a bad name gave {other:?}"),
    }
    match x.client.resolve("/a//b", ReadLevel::Linearizable).await {
        Err(Error::InvalidName { .. }) => {}
        other => bail!("library resolve of /a//b gave {other:?}"),
    }

    let key_file = x.c.dir().join("writer.key");
    let out =
        x.c.cli_ok(&[
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
    args.extend(x.c.anchor_args()?);
    let out = x.c.cli(&args).await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "CLI put of a bad name succeeded");
    ensure!(
        stderr.contains("'$'") && stderr.contains("a-z, 0-9"),
        "CLI error does not name the rule: {stderr}"
    );

    let labels = [("protocol", "resolve"), ("reason", "malformed")];
    let before = x.metric(REFUSED, &labels).await?;
    let mut bytes = codec::encode(&ResolveRequest {
        name: Name::parse("/bi/badxname")?,
        level: ReadLevel::Replica,
        scope: proto::ScopeId::root(),
    })?;
    patch(&mut bytes, b"badxname", b"bad$name")?;
    let answer: ResolveResponse = codec::decode(
        &x.raw(Protocol::Resolve, bytes).await?,
        CLIENT_FRAME_BYTES_MAX,
    )?;
    ensure!(
        matches!(answer, ResolveResponse::Error(WireError::Invalid { .. })),
        "bad name in a resolve frame: {answer:?}"
    );
    x.counter_above(REFUSED, &labels, before, false).await?;
    x.unchanged("malformed names").await
}

/// Garbage bytes on the mutate protocol.
async fn garbage_frame(x: &Ctx) -> Result<()> {
    let labels = [("protocol", "mutate"), ("reason", "malformed")];
    let before = x.metric(REFUSED, &labels).await?;
    let garbage = b"\xff\xfe this is not a mutation \x00\x01".to_vec();
    let answer: MutateResponse = codec::decode(
        &x.raw(Protocol::Mutate, garbage).await?,
        CLIENT_FRAME_BYTES_MAX,
    )?;
    ensure!(
        matches!(answer, MutateResponse::Error(WireError::Invalid { .. })),
        "garbage frame: {answer:?}"
    );
    x.counter_above(REFUSED, &labels, before, false).await?;
    x.unchanged("a garbage frame").await
}

/// A frame over 256 KiB on mutate, sent by a client whose own limit is raised: refused
/// before decoding, counted as `bad_frame` when /metrics is scraped.
async fn oversize_frame(x: &Ctx) -> Result<()> {
    let labels = [("protocol", "mutate"), ("reason", "bad_frame")];
    let before = x.metric(REFUSED, &labels).await?;
    let (big, _) = net::spawn(NetConfig {
        frame_bytes_max_override: Some(4 * CLIENT_FRAME_BYTES_MAX),
        faults: None,
        ..NetConfig::client()
    })
    .map_err(|e| anyhow!("{e}"))?;
    let mut req = codec::encode(&MutateRequest {
        mutation: x.signed_put(&x.allowed, "oversize")?,
        forwarded: false,
    })?;
    req.resize(CLIENT_FRAME_BYTES_MAX + 4096, 0);
    let answer = x.c.raw_request(&big, x.leader, Protocol::Mutate, req).await;
    big.shutdown();
    match &answer {
        Ok(bytes) => {
            let decoded: Result<MutateResponse, _> = codec::decode(bytes, CLIENT_FRAME_BYTES_MAX);
            ensure!(
                !matches!(decoded, Ok(MutateResponse::Committed { .. })),
                "an oversize frame was committed"
            );
            eprintln!("oversize frame answered: {decoded:?}");
        }
        Err(e) => eprintln!("oversize frame failed as expected: {e}"),
    }
    x.unchanged("an oversize frame").await?;
    x.counter_above(REFUSED, &labels, before, false).await
}

/// A flipped signature byte: the library refuses to send it, an anchor that gets it anyway
/// refuses it and counts it.
async fn bad_signature(x: &Ctx) -> Result<()> {
    let mut bad = x.signed_put(&x.allowed, "forged")?;
    bad.signatures[0].sig[0] ^= 0x01;
    match x.client.submit(bad.clone()).await {
        Err(Error::BadSignature { .. }) => {}
        other => bail!("the library sent a bad signature: {other:?}"),
    }
    let labels = [("outcome", "bad_signature")];
    let before = x.metric(MUTATIONS, &labels).await?;
    match x.raw_mutate(bad).await? {
        MutateResponse::Error(w @ WireError::BadSignature { .. }) => {
            ensure!(matches!(Error::from(w), Error::BadSignature { .. }));
        }
        other => bail!("a bad signature was answered {other:?}"),
    }
    x.counter_above(MUTATIONS, &labels, before, false).await?;
    x.unchanged("a bad signature").await
}

/// A key the policy does not list.
async fn denied_key(x: &Ctx) -> Result<()> {
    let labels = [("outcome", "denied")];
    let before = x.metric_all(MUTATIONS, &labels).await?;
    let stranger = random_key();
    match x
        .client
        .put(TARGET, vec![Record::Text("stranger".into())], 60, &stranger)
        .await
    {
        Err(Error::Denied { reason }) => eprintln!("denied: {reason}"),
        other => bail!("a key outside the policy got {other:?}"),
    }
    x.counter_above(MUTATIONS, &labels, before, true).await?;
    x.unchanged("a denied key").await
}

/// The same signed mutation twice: the first commits, the second is refused as a replay.
/// Puts `ORIGINAL` back afterwards and returns its new version.
async fn replayed(x: &Ctx) -> Result<u64> {
    let once = x.signed_put(&x.allowed, "replay-me")?;
    let v1 = x.client.submit(once.clone()).await?;
    let labels = [("outcome", "replayed")];
    let before = x.metric_all(MUTATIONS, &labels).await?;
    match x.client.submit(once).await {
        Err(Error::Replayed { .. }) => {}
        other => bail!("a replay got {other:?}"),
    }
    x.counter_above(MUTATIONS, &labels, before, true).await?;
    let set = x.client.resolve(TARGET, ReadLevel::Linearizable).await?;
    ensure!(
        text_of(&set) == Some("replay-me") && set.version == v1,
        "after a replay {TARGET} is {set:?}, not replay-me@{v1}"
    );
    let v = x
        .client
        .put(TARGET, vec![Record::Text(ORIGINAL.into())], 300, &x.allowed)
        .await?;
    Ok(v)
}

/// A mutation past its expiry, sent raw (the library would not send it).
async fn expired(x: &Ctx) -> Result<()> {
    let labels = [("outcome", "expired")];
    let before = x.metric(MUTATIONS, &labels).await?;
    let stale = Mutation {
        op: Op::Put {
            name: Name::parse(TARGET)?,
            records: vec![Record::Text("stale".into())],
            ttl_s: 60,
        },
        nonce: rand::random(),
        expires_at_ms: now_ms() - 1_000,
    };
    let answer = x
        .raw_mutate(SignedMutation::sign(&stale, &x.allowed)?)
        .await?;
    ensure!(
        matches!(answer, MutateResponse::Error(WireError::Expired { .. })),
        "an expired mutation was answered {answer:?}"
    );
    x.counter_above(MUTATIONS, &labels, before, false).await?;
    x.unchanged("an expired mutation").await
}

/// A correctly signed body that holds a malformed name.
async fn malformed_body(x: &Ctx) -> Result<()> {
    let labels = [("outcome", "invalid")];
    let before = x.metric(MUTATIONS, &labels).await?;
    let m = x.client.prepare(Op::Put {
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
    signed.add_signature(&x.allowed);
    let answer = x.raw_mutate(signed).await?;
    ensure!(
        matches!(answer, MutateResponse::Error(WireError::Invalid { .. })),
        "a malformed body was answered {answer:?}"
    );
    x.counter_above(MUTATIONS, &labels, before, false).await?;
    x.unchanged("a malformed mutation body").await
}

/// Raft messages from a peer that is no member, and for a scope not hosted here.
async fn raft_outsiders(x: &Ctx) -> Result<()> {
    for (scope, reason) in [
        (ScopeId::root(), "non_member"),
        (ScopeId([9; 16]), "unknown_scope"),
    ] {
        let labels = [("protocol", "raft"), ("reason", reason)];
        let before = x.metric(REFUSED, &labels).await?;
        let req = codec::encode(&RaftRequest {
            scope,
            rpc: RaftRpc::Vote,
            payload: b"not a vote request".to_vec(),
        })?;
        let answer: RaftResponse =
            codec::decode(&x.raw(Protocol::Raft, req).await?, RAFT_FRAME_BYTES_MAX)?;
        ensure!(
            matches!(answer, RaftResponse::Refused(_)),
            "raft ({reason}) was answered {answer:?}"
        );
        x.counter_above(REFUSED, &labels, before, false).await?;
        x.unchanged(reason).await?;
    }
    // Coalesced: a batch from a non-member is refused RPC by RPC, and a nested batch as a
    // whole.
    let labels = [("protocol", "raft"), ("reason", "non_member")];
    let before = x.metric(REFUSED, &labels).await?;
    let inner = RaftRequest {
        scope: ScopeId::root(),
        rpc: RaftRpc::Vote,
        payload: b"not a vote request".to_vec(),
    };
    let batch = |requests: Vec<RaftRequest>| -> Result<Vec<u8>> {
        Ok(codec::encode(&RaftRequest {
            scope: ScopeId::default(),
            rpc: RaftRpc::Coalesced,
            payload: codec::encode(&requests)?,
        })?)
    };
    let answer: RaftResponse = codec::decode(
        &x.raw(Protocol::Raft, batch(vec![inner.clone(), inner.clone()])?)
            .await?,
        RAFT_FRAME_BYTES_MAX,
    )?;
    let RaftResponse::Ok(inner_answers) = answer else {
        bail!("a batch was answered {answer:?}");
    };
    let answers: Vec<RaftResponse> = codec::decode(&inner_answers, RAFT_FRAME_BYTES_MAX)?;
    ensure!(
        answers.len() == 2
            && answers
                .iter()
                .all(|a| matches!(a, RaftResponse::Refused(_))),
        "a non-member's batch was answered {answers:?}"
    );
    x.counter_above(REFUSED, &labels, before, false).await?;
    let nested = RaftRequest {
        scope: ScopeId::default(),
        rpc: RaftRpc::Coalesced,
        payload: codec::encode(&vec![inner])?,
    };
    let answer: RaftResponse = codec::decode(
        &x.raw(Protocol::Raft, batch(vec![nested])?).await?,
        RAFT_FRAME_BYTES_MAX,
    )?;
    ensure!(
        matches!(answer, RaftResponse::Refused(WireError::Invalid { .. })),
        "a nested batch was answered {answer:?}"
    );
    x.unchanged("raft batches").await
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
        let (net, _) = net::spawn(NetConfig::client()).map_err(|e| anyhow!("{e}"))?;
        let mut x = Ctx {
            c,
            client,
            net,
            leader,
            allowed,
            version,
        };
        x.unchanged("setup").await?;

        let mut failed = Vec::new();
        let mut record = |step: &str, r: Result<()>| match r {
            Ok(()) => eprintln!("step {step}: ok"),
            Err(e) => {
                eprintln!("step {step}: FAILED: {e:#}");
                failed.push(format!("{step}: {e:#}"));
            }
        };
        record("malformed names", malformed_names(&x).await);
        record("garbage frame", garbage_frame(&x).await);
        record("oversize frame", oversize_frame(&x).await);
        record("bad signature", bad_signature(&x).await);
        record("denied key", denied_key(&x).await);
        match replayed(&x).await {
            Ok(v) => {
                x.version = v;
                record("replayed", x.unchanged("restoring after the replay").await);
            }
            Err(e) => record("replayed", Err(e)),
        }
        record("expired", expired(&x).await);
        record("malformed body", malformed_body(&x).await);
        record("raft outsiders", raft_outsiders(&x).await);

        // Nothing above disturbed the scope's leadership.
        let now = x.c.wait_settled(Duration::from_secs(5)).await?;
        ensure!(
            now == x.leader,
            "leadership moved from {} to {now}",
            x.leader
        );
        x.net.shutdown();
        ensure!(
            failed.is_empty(),
            "{} step(s) failed:\n{}",
            failed.len(),
            failed.join("\n")
        );
        Ok(())
    })
    .await;
}
