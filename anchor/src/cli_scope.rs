//! The hierarchy commands of the `anchorage` command line (issue 4): `scope tree`,
//! `scope show`, `scope delegate`, `policy get`, `policy set`, `watch` and `resolve --trace`.
//!
//! Each command talks to the cluster through [`resolver::Client`] (admin calls to specific
//! anchors through [`crate::cli::AdminConn`]) and prints for humans, or JSON with `--json`.
//! Everything that turns answers into text is a pure function of the answers
//! ([`render_tree`], [`trace_lines`], [`watch_line`], [`show_lines`], ...), unit-tested here.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use libp2p::Multiaddr;
use proto::limits::{REFERRAL_HOPS_MAX, REFERRAL_TTL_S_DEFAULT};
use proto::msg::{ChangeEvent, Load, ScopeInfo, ScopeTarget};
use proto::{
    AnchorInfo, Delegation, DelegationState, MemberSpec, Name, Op, ReadLevel, RecordSet, Referral,
    ScopeId, SignedMutation,
};
use resolver::{Hop, HopOutcome, Trace, WatchEvent};
use serde_json::{json, Value};

use crate::cli::{self, AdminConn, Target};

/// Scopes `scope tree` fetches at most (a guard against a runaway hierarchy).
pub const TREE_SCOPES_MAX: usize = 1024;
/// How long `scope delegate` waits for the delegation to become active, by default.
pub const DELEGATE_WAIT_S: u64 = 60;
/// Pause between two polls of the parent while waiting for a delegation.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

// ---- command line ----

/// `anchorage scope ...`
#[derive(Subcommand, Debug)]
pub enum ScopeCommand {
    /// Show the scope hierarchy as a tree from the root: members, leader, names, load.
    Tree {
        /// Where the cluster is.
        #[command(flatten)]
        target: Target,
    },
    /// Describe one scope: by prefix (`/eu`, the scope governing it) or by id (hex, or a
    /// unique leading part of it as `scope tree` prints it).
    Show {
        /// A name starting with '/', or a scope id in hex.
        scope: String,
        /// Where the cluster is.
        #[command(flatten)]
        target: Target,
    },
    /// Delegate the subtree PREFIX to a new child scope on the given anchors.
    Delegate(DelegateArgs),
}

/// Arguments of `anchorage scope delegate`.
#[derive(Args, Debug)]
pub struct DelegateArgs {
    /// The child's prefix, e.g. /eu (strictly under the parent scope's prefix).
    prefix: String,
    /// The child's member anchors, multiaddrs ending in /p2p/<peer id> (comma-separated or
    /// repeated).
    #[arg(long = "anchors", value_delimiter = ',', required = true)]
    members: Vec<String>,
    /// The child's first policy (TOML).
    #[arg(long)]
    policy: PathBuf,
    /// An admin key of the parent scope (repeat for k-of-n; the first one is the writer).
    #[arg(long = "sign", required = true)]
    sign: Vec<PathBuf>,
    /// How long resolvers may cache the referral, seconds.
    #[arg(long, default_value_t = REFERRAL_TTL_S_DEFAULT)]
    ttl: u32,
    /// Return once the delegation is committed, without waiting for the child to take over.
    #[arg(long)]
    no_wait: bool,
    /// How long to wait for the delegation to become active, seconds.
    #[arg(long, default_value_t = DELEGATE_WAIT_S)]
    wait_s: u64,
    #[command(flatten)]
    target: Target,
}

/// `anchorage policy ...`
#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Print the policy (TOML) of the scope governing PREFIX, exactly as stored.
    Get {
        /// A name; the policy of the scope governing it is printed.
        prefix: String,
        /// Where the cluster is.
        #[command(flatten)]
        target: Target,
    },
    /// Replace the policy of the scope whose prefix is PREFIX, signed by k of its admins.
    Set {
        /// The scope's prefix.
        prefix: String,
        /// The new policy (TOML).
        file: PathBuf,
        /// An admin key (repeat for k-of-n).
        #[arg(long = "sign", required = true)]
        sign: Vec<PathBuf>,
        /// Where the cluster is.
        #[command(flatten)]
        target: Target,
    },
}

/// Arguments of `anchorage watch`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Names under this prefix.
    prefix: String,
    /// Report every change after this version (default: from now on).
    #[arg(long = "from")]
    from: Option<u64>,
    /// Stop after this many changes (default: run until Ctrl-C).
    #[arg(long)]
    count: Option<u64>,
    #[command(flatten)]
    target: Target,
}

/// Runs `anchorage scope ...`.
pub async fn run_scope(cmd: ScopeCommand) -> Result<()> {
    match cmd {
        ScopeCommand::Tree { target } => scope_tree(&target).await,
        ScopeCommand::Show { scope, target } => scope_show(&target, &scope).await,
        ScopeCommand::Delegate(args) => scope_delegate(args).await,
    }
}

/// Runs `anchorage policy ...`.
pub async fn run_policy(cmd: PolicyCommand) -> Result<()> {
    match cmd {
        PolicyCommand::Get { prefix, target } => policy_get(&target, &prefix).await,
        PolicyCommand::Set {
            prefix,
            file,
            sign,
            target,
        } => policy_set(&target, &prefix, &file, &sign).await,
    }
}

// ---- small formatting helpers ----

/// The first 12 hex digits of a scope id, as `scope tree` and `status` print it.
pub fn short_id(id: &ScopeId) -> String {
    id.to_hex()[..12].to_string()
}

/// The last 6 characters of a peer id (they all start alike), after an ellipsis.
pub fn short_peer(peer: &str) -> String {
    let chars: Vec<char> = peer.chars().collect();
    if chars.len() <= 8 {
        return peer.to_string();
    }
    let tail: String = chars[chars.len() - 6..].iter().collect();
    format!("…{tail}")
}

fn short_members(members: &[AnchorInfo]) -> String {
    let list: Vec<String> = members.iter().map(|m| short_peer(&m.peer_id)).collect();
    list.join(",")
}

fn load_text(load: &Load) -> String {
    format!("{}r/{}w per {}s", load.reads, load.writes, Load::WINDOW_S)
}

fn state_text(state: DelegationState) -> &'static str {
    match state {
        DelegationState::Frozen => "frozen",
        DelegationState::Active => "active",
        DelegationState::Aborted => "aborted",
    }
}

fn labels_text(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "-".into();
    }
    let list: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    list.join(",")
}

fn parse_name(text: &str) -> Result<Name> {
    Name::parse(text).with_context(|| format!("{text:?} is not a name"))
}

fn read_keys(paths: &[PathBuf]) -> Result<Vec<ed25519_dalek::SigningKey>> {
    if paths.is_empty() {
        bail!("give at least one --sign KEY");
    }
    paths.iter().map(|p| cli::load_key(p)).collect()
}

/// Signs `op` with every key (the first is the writer), as k-of-n admin operations need.
fn sign_all(
    client: &resolver::Client,
    op: Op,
    keys: &[ed25519_dalek::SigningKey],
) -> Result<SignedMutation> {
    op.validate().context("the operation is invalid")?;
    let (first, rest) = keys
        .split_first()
        .ok_or_else(|| anyhow!("give at least one --sign KEY"))?;
    let m = client.prepare(op);
    let mut signed = SignedMutation::sign(&m, first).context("signing the mutation")?;
    for k in rest {
        signed.add_signature(k);
    }
    Ok(signed)
}

/// Turns a refusal of an admin operation into a message that says who refused and why.
fn admin_refusal(what: &str, e: resolver::Error) -> anyhow::Error {
    match e {
        resolver::Error::Denied { reason } => anyhow!("{what} was refused by the scope: {reason}"),
        other => anyhow::Error::new(other).context(format!("{what} failed")),
    }
}

// ---- scope tree ----

/// One scope of the hierarchy with what its parent says about its own delegations.
#[derive(Clone, Debug, PartialEq)]
pub struct ScopeNode {
    /// The scope as one of its members described it.
    pub info: ScopeInfo,
    /// Its delegations, in prefix order.
    pub children: Vec<ChildNode>,
}

/// A delegation of a [`ScopeNode`].
#[derive(Clone, Debug, PartialEq)]
pub enum ChildNode {
    /// An active child scope, described by one of its members.
    Active(Box<ScopeNode>),
    /// An active child whose members could not be asked.
    Unreachable {
        /// The parent's delegation.
        delegation: Delegation,
        /// Why.
        error: String,
    },
    /// Frozen (being seeded) or aborted: only the parent's record of it.
    Annotation(Delegation),
}

impl ChildNode {
    fn delegation_prefix(&self) -> (&Name, u64) {
        match self {
            ChildNode::Active(n) => (&n.info.descriptor.prefix, 0),
            ChildNode::Unreachable { delegation, .. } | ChildNode::Annotation(delegation) => {
                (&delegation.referral.prefix, delegation.index)
            }
        }
    }
}

/// Builds the tree below `root` from the child scopes fetched so far (by id; a missing
/// active child is shown as unreachable). Pure; guards against loops and depth.
pub fn build_tree(
    root: ScopeInfo,
    fetched: &BTreeMap<ScopeId, Result<ScopeInfo, String>>,
) -> ScopeNode {
    let mut seen = BTreeSet::new();
    build_node(root, fetched, &mut seen, 0)
}

fn build_node(
    info: ScopeInfo,
    fetched: &BTreeMap<ScopeId, Result<ScopeInfo, String>>,
    seen: &mut BTreeSet<ScopeId>,
    depth: usize,
) -> ScopeNode {
    seen.insert(info.descriptor.id);
    let mut children = Vec::new();
    for d in &info.delegations {
        let child = match d.state {
            DelegationState::Active => {
                let id = d.referral.scope;
                match fetched.get(&id) {
                    _ if seen.contains(&id) => ChildNode::Unreachable {
                        delegation: d.clone(),
                        error: "loop: this scope already appears above".into(),
                    },
                    _ if depth + 1 > REFERRAL_HOPS_MAX => ChildNode::Unreachable {
                        delegation: d.clone(),
                        error: format!("deeper than {REFERRAL_HOPS_MAX} levels"),
                    },
                    Some(Ok(child)) => {
                        let node = build_node(child.clone(), fetched, seen, depth + 1);
                        ChildNode::Active(Box::new(node))
                    }
                    Some(Err(e)) => ChildNode::Unreachable {
                        delegation: d.clone(),
                        error: e.clone(),
                    },
                    None => ChildNode::Unreachable {
                        delegation: d.clone(),
                        error: "not asked".into(),
                    },
                }
            }
            DelegationState::Frozen | DelegationState::Aborted => ChildNode::Annotation(d.clone()),
        };
        children.push(child);
    }
    children.sort_by(|a, b| a.delegation_prefix().cmp(&b.delegation_prefix()));
    ScopeNode { info, children }
}

/// The tree as text lines, one per scope or delegation annotation, columns aligned.
pub fn render_tree(root: &ScopeNode) -> Vec<String> {
    let mut rows = Vec::new();
    tree_rows(root, "", "", &mut rows);
    let width = rows
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    rows.into_iter()
        .map(|(label, rest)| {
            let pad = width - label.chars().count();
            format!("{label}{}  {rest}", " ".repeat(pad))
                .trim_end()
                .to_string()
        })
        .collect()
}

fn scope_row(info: &ScopeInfo) -> String {
    let leader = info
        .status
        .leader
        .as_deref()
        .map_or("-".to_string(), short_peer);
    let mut row = format!(
        "{}  members {}  leader {}  names {}  load {}",
        short_id(&info.descriptor.id),
        short_members(&info.descriptor.members),
        leader,
        info.status.names,
        load_text(&info.load),
    );
    if !info.active {
        row.push_str("  [inactive: waiting for the parent's hand-over]");
    }
    row
}

fn annotation_row(d: &Delegation) -> String {
    match d.state {
        DelegationState::Frozen => format!(
            "{}  [frozen since v{}: moving to {}; writes refused until active]",
            short_id(&d.referral.scope),
            d.index,
            short_members(&d.referral.members)
        ),
        DelegationState::Aborted => format!(
            "{}  [aborted delegation of v{}: the parent governs it again]",
            short_id(&d.referral.scope),
            d.index
        ),
        DelegationState::Active => format!(
            "{}  members {}",
            short_id(&d.referral.scope),
            short_members(&d.referral.members)
        ),
    }
}

fn tree_rows(
    node: &ScopeNode,
    label_prefix: &str,
    child_indent: &str,
    rows: &mut Vec<(String, String)>,
) {
    rows.push((
        format!("{label_prefix}{}", node.info.descriptor.prefix),
        scope_row(&node.info),
    ));
    let n = node.children.len();
    for (i, child) in node.children.iter().enumerate() {
        let last = i + 1 == n;
        let branch = format!("{child_indent}{}", if last { "└── " } else { "├── " });
        let below = format!("{child_indent}{}", if last { "    " } else { "│   " });
        match child {
            ChildNode::Active(c) => tree_rows(c, &branch, &below, rows),
            ChildNode::Unreachable { delegation, error } => rows.push((
                format!("{branch}{}", delegation.referral.prefix),
                format!(
                    "{}  members {}  [unreachable: {error}]",
                    short_id(&delegation.referral.scope),
                    short_members(&delegation.referral.members)
                ),
            )),
            ChildNode::Annotation(d) => {
                rows.push((format!("{branch}{}", d.referral.prefix), annotation_row(d)))
            }
        }
    }
}

fn delegation_json(d: &Delegation) -> Value {
    json!({
        "prefix": d.referral.prefix.to_string(),
        "scope": d.referral.scope.to_hex(),
        "state": state_text(d.state),
        "index": d.index,
        "epoch": d.referral.epoch,
        "ttl_s": d.referral.ttl_s,
        "members": d.members.iter().map(|m| json!({
            "peer_id": m.anchor.peer_id,
            "addrs": m.anchor.addrs,
            "labels": m.labels,
        })).collect::<Vec<_>>(),
    })
}

/// One scope as JSON (ids in hex).
pub fn info_json(info: &ScopeInfo) -> Value {
    json!({
        "scope": info.descriptor.id.to_hex(),
        "prefix": info.descriptor.prefix.to_string(),
        "epoch": info.descriptor.epoch,
        "members": info.descriptor.members.iter().map(|m| json!({
            "peer_id": m.peer_id, "addrs": m.addrs,
        })).collect::<Vec<_>>(),
        "parent": info.parent.as_ref().map(|p| json!({
            "scope": p.id.to_hex(), "prefix": p.prefix.to_string(), "epoch": p.epoch,
            "members": p.members.iter().map(|m| m.peer_id.clone()).collect::<Vec<_>>(),
        })),
        "active": info.active,
        "status": {
            "role": info.status.role,
            "term": info.status.term,
            "leader": info.status.leader,
            "last_applied": info.status.last_applied,
            "last_log": info.status.last_log,
            "snapshot": info.status.snapshot,
            "names": info.status.names,
        },
        "load": {
            "reads": info.load.reads, "writes": info.load.writes, "window_s": Load::WINDOW_S,
        },
        "delegations": info.delegations.iter().map(delegation_json).collect::<Vec<_>>(),
        "policy_toml": info.policy_toml,
    })
}

/// The tree as nested JSON: every scope with `children` (active scopes) and `delegations`
/// (the parent's record of every delegation, frozen and aborted ones included).
pub fn tree_json(node: &ScopeNode) -> Value {
    let mut v = info_json(&node.info);
    if let Some(obj) = v.as_object_mut() {
        obj.remove("policy_toml");
        let children: Vec<Value> = node
            .children
            .iter()
            .filter_map(|c| match c {
                ChildNode::Active(c) => Some(tree_json(c)),
                ChildNode::Unreachable { delegation, error } => Some(json!({
                    "scope": delegation.referral.scope.to_hex(),
                    "prefix": delegation.referral.prefix.to_string(),
                    "unreachable": error,
                })),
                ChildNode::Annotation(_) => None,
            })
            .collect();
        obj.insert("children".into(), Value::Array(children));
    }
    v
}

/// Asks the given anchors in turn for a scope's info; the first answer wins.
async fn info_from(
    client: &resolver::Client,
    anchors: &[AnchorInfo],
    scope: ScopeId,
) -> Result<ScopeInfo> {
    let mut failures = Vec::new();
    for a in anchors {
        match client.scope_info_at(a, ScopeTarget::Id(scope)).await {
            Ok(info) => return Ok(info),
            Err(e) => failures.push(format!("{}: {e}", short_peer(&a.peer_id))),
        }
    }
    if failures.is_empty() {
        bail!("scope {} has no members to ask", short_id(&scope));
    }
    bail!(
        "no member of scope {} answered: {}",
        short_id(&scope),
        failures.join("; ")
    )
}

/// The trust anchors of a target as [`AnchorInfo`] (peer id, dialable address).
fn trust_infos(target: &Target) -> Result<Vec<AnchorInfo>> {
    cli::parse_anchors(&target.anchors)?
        .iter()
        .map(|a| {
            let (peer, base) = cli::split_peer(a)?;
            Ok(AnchorInfo {
                peer_id: peer.to_string(),
                addrs: vec![base.to_string()],
            })
        })
        .collect()
}

/// Fetches the whole hierarchy: the root from the trust anchors, then every active child
/// from its own members, breadth first.
pub async fn fetch_tree(client: &resolver::Client, trust: &[AnchorInfo]) -> Result<ScopeNode> {
    let root = info_from(client, trust, ScopeId::root())
        .await
        .context("asking the trust anchors for the root scope")?;
    let mut fetched: BTreeMap<ScopeId, Result<ScopeInfo, String>> = BTreeMap::new();
    let mut queue: VecDeque<(Referral, usize)> = active_referrals(&root)
        .into_iter()
        .map(|r| (r, 1))
        .collect();
    while let Some((referral, depth)) = queue.pop_front() {
        if fetched.contains_key(&referral.scope)
            || referral.scope == ScopeId::root()
            || depth > REFERRAL_HOPS_MAX
            || fetched.len() >= TREE_SCOPES_MAX
        {
            continue;
        }
        let got = info_from(client, &referral.members, referral.scope).await;
        if let Ok(info) = &got {
            queue.extend(active_referrals(info).into_iter().map(|r| (r, depth + 1)));
        }
        fetched.insert(referral.scope, got.map_err(|e| format!("{e:#}")));
    }
    Ok(build_tree(root, &fetched))
}

fn active_referrals(info: &ScopeInfo) -> Vec<Referral> {
    info.delegations
        .iter()
        .filter(|d| d.state == DelegationState::Active)
        .map(|d| d.referral.clone())
        .collect()
}

async fn scope_tree(target: &Target) -> Result<()> {
    let client = cli::client(target).await?;
    let tree = fetch_tree(&client, &trust_infos(target)?).await?;
    if target.json {
        println!("{}", serde_json::to_string_pretty(&tree_json(&tree))?);
    } else {
        for line in render_tree(&tree) {
            println!("{line}");
        }
    }
    Ok(())
}

// ---- scope show ----

/// What a hex id found in the tree.
#[derive(Debug, PartialEq)]
pub enum Found<'a> {
    /// A scope that answered.
    Scope(&'a ScopeInfo),
    /// A delegation known only from its parent (frozen, aborted or unreachable).
    Delegation {
        /// The parent.
        parent: &'a ScopeInfo,
        /// The delegation.
        delegation: &'a Delegation,
    },
}

/// Every scope or delegation in the tree whose hex id starts with `query` (lowercase).
pub fn find_in_tree<'a>(node: &'a ScopeNode, query: &str, out: &mut Vec<Found<'a>>) {
    if node.info.descriptor.id.to_hex().starts_with(query) {
        out.push(Found::Scope(&node.info));
    }
    for c in &node.children {
        match c {
            ChildNode::Active(c) => find_in_tree(c, query, out),
            ChildNode::Unreachable { delegation, .. } | ChildNode::Annotation(delegation) => {
                if delegation.referral.scope.to_hex().starts_with(query) {
                    out.push(Found::Delegation {
                        parent: &node.info,
                        delegation,
                    });
                }
            }
        }
    }
}

/// One line summing up a policy TOML (admins, writers, reads, limits, placement, split).
pub fn policy_summary(toml: &str) -> String {
    let p = match policy::Policy::from_toml(toml) {
        Ok(p) => p,
        Err(e) => return format!("unreadable: {e}"),
    };
    let admin = match &p.admin {
        Some(a) => format!("{} of {} admin keys", a.threshold, a.keys.len()),
        None => "frozen (no admin)".into(),
    };
    let reads = match p.reads.access {
        policy::ReadAccess::Anonymous => "anonymous".to_string(),
        policy::ReadAccess::Keyed => format!("keyed ({} keys)", p.reads.keys.len()),
    };
    format!(
        "{admin}; {} writer rule(s); reads {reads}; ttl ≤ {}s; placement {} replicas, labels {}; \
         split at {} names or {} writes/s or {} reads/s for {}s",
        p.writers.len(),
        p.limits.ttl_s_max,
        p.placement.replicas,
        labels_text(&p.placement.labels),
        p.split.names_max,
        p.split.writes_per_s_max,
        p.split.reads_per_s_max,
        p.split.window_s,
    )
}

fn opt(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

/// `scope show` for one scope, as text lines.
pub fn show_lines(info: &ScopeInfo) -> Vec<String> {
    let d = &info.descriptor;
    let mut out = vec![format!(
        "scope {}  prefix {}  epoch {}  {}",
        d.id,
        d.prefix,
        d.epoch,
        if info.active {
            "active"
        } else {
            "inactive (waiting for the parent's hand-over; writes refused)"
        }
    )];
    out.push(match &info.parent {
        Some(p) => format!(
            "  parent       {} ({})  members {}",
            p.prefix,
            short_id(&p.id),
            short_members(&p.members)
        ),
        None => "  parent       - (root scope)".into(),
    });
    out.push("  members".into());
    for m in &d.members {
        let lead = if info.status.leader.as_deref() == Some(m.peer_id.as_str()) {
            "  (leader)"
        } else {
            ""
        };
        out.push(format!("    {}  {}{lead}", m.peer_id, m.addrs.join(" ")));
    }
    let s = &info.status;
    out.push(format!(
        "  status       {} term {}  applied {}  log {}  snapshot {}  names {}  (answering anchor)",
        s.role,
        s.term,
        opt(s.last_applied),
        opt(s.last_log),
        opt(s.snapshot),
        s.names
    ));
    out.push(format!(
        "  load         {} reads, {} writes in the last {} s (answering anchor)",
        info.load.reads,
        info.load.writes,
        Load::WINDOW_S
    ));
    out.push(format!(
        "  policy       {}",
        info.policy_toml
            .as_deref()
            .map_or("not returned".to_string(), policy_summary)
    ));
    if info.delegations.is_empty() {
        out.push("  delegations  none".into());
    } else {
        out.push("  delegations".into());
        for del in &info.delegations {
            out.push(format!(
                "    {}  {}  scope {}  v{}  ttl {}s  members {}",
                del.referral.prefix,
                state_text(del.state),
                short_id(&del.referral.scope),
                del.index,
                del.referral.ttl_s,
                del.members
                    .iter()
                    .map(|m| format!(
                        "{}[{}]",
                        short_peer(&m.anchor.peer_id),
                        labels_text(&m.labels)
                    ))
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
    }
    out
}

fn delegation_lines(parent: &ScopeInfo, d: &Delegation) -> Vec<String> {
    let mut out = vec![
        format!(
            "scope {}  prefix {}  {} delegation of {} ({}) at v{}",
            d.referral.scope,
            d.referral.prefix,
            state_text(d.state),
            parent.descriptor.prefix,
            short_id(&parent.descriptor.id),
            d.index
        ),
        "  members".into(),
    ];
    for m in &d.members {
        out.push(format!(
            "    {}  {}  labels {}",
            m.anchor.peer_id,
            m.anchor.addrs.join(" "),
            labels_text(&m.labels)
        ));
    }
    if d.policy_toml.is_empty() {
        // Anchors send delegations without their policy text: the child has it.
        out.push(format!(
            "  policy       not sent by the parent (once active: `anchorage policy get {}`)",
            d.referral.prefix
        ));
    } else {
        out.push(format!("  policy       {}", policy_summary(&d.policy_toml)));
    }
    out
}

async fn scope_show(target: &Target, what: &str) -> Result<()> {
    let client = cli::client(target).await?;
    if what.starts_with('/') {
        let name = parse_name(what)?;
        let info = client
            .scope_info(&name)
            .await
            .with_context(|| format!("asking for the scope governing {name}"))?;
        return print_show(target, &info);
    }
    let query = what.to_ascii_lowercase();
    if query.len() < 4 || query.len() > 32 || !query.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!(
            "{what:?} is neither a prefix (starting with '/') nor a scope id (4 to 32 hex digits)"
        );
    }
    let tree = fetch_tree(&client, &trust_infos(target)?).await?;
    let mut found = Vec::new();
    find_in_tree(&tree, &query, &mut found);
    match found.as_slice() {
        [] => bail!("no scope with id {what} in the hierarchy (see `anchorage scope tree`)"),
        [Found::Scope(info)] => print_show(target, info),
        [Found::Delegation { parent, delegation }] => {
            if target.json {
                let mut v = delegation_json(delegation);
                if let Some(o) = v.as_object_mut() {
                    o.insert("parent".into(), json!(parent.descriptor.id.to_hex()));
                    if !delegation.policy_toml.is_empty() {
                        o.insert("policy_toml".into(), json!(delegation.policy_toml));
                    }
                }
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for l in delegation_lines(parent, delegation) {
                    println!("{l}");
                }
            }
            Ok(())
        }
        many => bail!(
            "{what} matches {} scopes; give more digits of the id",
            many.len()
        ),
    }
}

fn print_show(target: &Target, info: &ScopeInfo) -> Result<()> {
    if target.json {
        println!("{}", serde_json::to_string_pretty(&info_json(info))?);
    } else {
        for l in show_lines(info) {
            println!("{l}");
        }
    }
    Ok(())
}

// ---- scope delegate ----

/// Asks each chosen anchor for its status: who it is, where it listens, its labels.
async fn member_specs(addrs: &[Multiaddr]) -> Result<Vec<MemberSpec>> {
    let conn = AdminConn::new()?;
    let mut out = Vec::new();
    for a in addrs {
        let (peer, base) = cli::split_peer(a)?;
        let s = conn
            .status(a)
            .await
            .with_context(|| format!("asking anchor {a} for its status"))?;
        if s.peer_id != peer.to_string() {
            bail!(
                "anchor {a} answered as {}: the address names another peer",
                s.peer_id
            );
        }
        let addrs = if s.addrs.is_empty() {
            vec![base.to_string()]
        } else {
            s.addrs
        };
        out.push(MemberSpec {
            anchor: AnchorInfo {
                peer_id: s.peer_id,
                addrs,
            },
            labels: s.labels,
        });
    }
    Ok(out)
}

async fn scope_delegate(args: DelegateArgs) -> Result<()> {
    let target = &args.target;
    let prefix = parse_name(&args.prefix)?;
    let policy_toml = std::fs::read_to_string(&args.policy)
        .with_context(|| format!("reading {}", args.policy.display()))?;
    policy::Policy::from_toml(&policy_toml)
        .with_context(|| format!("the child policy {} is invalid", args.policy.display()))?;
    let keys = read_keys(&args.sign)?;
    let addrs = cli::parse_anchors(&args.members)?;
    if addrs.is_empty() {
        bail!("--anchors lists no anchor");
    }
    let members = member_specs(&addrs).await?;
    let client = cli::client(target).await?;
    let parent = client
        .locate(&prefix)
        .await
        .with_context(|| format!("finding the scope that governs {prefix}"))?;
    let op = Op::Delegate {
        prefix: prefix.clone(),
        members: members.clone(),
        policy_toml,
        referral_ttl_s: args.ttl,
    };
    let signed = sign_all(&client, op, &keys)?;
    let index = client
        .submit(signed)
        .await
        .map_err(|e| admin_refusal(&format!("delegating {prefix}"), e))?;
    let child = ScopeId::child(&parent.scope, &prefix, index);
    let state = if args.no_wait {
        DelegationState::Frozen
    } else {
        if !target.json {
            eprintln!(
                "delegation committed in scope {} ({}) at v{index}; waiting for scope {} to take over…",
                parent.prefix,
                short_id(&parent.scope),
                short_id(&child)
            );
        }
        let deadline = Instant::now() + Duration::from_secs(args.wait_s);
        wait_delegation(&client, &parent.members, parent.scope, index, deadline)
            .await
            .with_context(|| {
                format!(
                    "delegation of {prefix} committed at v{index} in scope {}, but it did not \
                     become active (see `anchorage scope show {}`)",
                    parent.prefix, parent.prefix
                )
            })?
    };
    if target.json {
        println!(
            "{}",
            json!({
                "prefix": prefix.to_string(),
                "scope": child.to_hex(),
                "parent": parent.scope.to_hex(),
                "parent_prefix": parent.prefix.to_string(),
                "index": index,
                "state": state_text(state),
                "members": members.iter().map(|m| json!({
                    "peer_id": m.anchor.peer_id, "addrs": m.anchor.addrs, "labels": m.labels,
                })).collect::<Vec<_>>(),
            })
        );
    } else {
        println!(
            "{prefix}: scope {child} {} (delegated by {} at v{index})",
            state_text(state),
            parent.prefix
        );
        for m in &members {
            println!(
                "  {}  {}  labels {}",
                m.anchor.peer_id,
                m.anchor.addrs.join(" "),
                labels_text(&m.labels)
            );
        }
    }
    Ok(())
}

/// Polls the parent's members until the delegation committed at `index` is active (Ok),
/// aborted (error) or the deadline passes (error).
async fn wait_delegation(
    client: &resolver::Client,
    parent_members: &[AnchorInfo],
    parent: ScopeId,
    index: u64,
    deadline: Instant,
) -> Result<DelegationState> {
    loop {
        let last = match info_from(client, parent_members, parent).await {
            Ok(info) => match info.delegations.iter().find(|d| d.index == index) {
                Some(d) if d.state == DelegationState::Active => return Ok(d.state),
                Some(d) if d.state == DelegationState::Aborted => bail!(
                    "the delegation was aborted: the child's members could not be seeded \
                     (check that they run and can reach each other; the prefix is writable in \
                     the parent again)"
                ),
                Some(_) => "still frozen: seeding the child's members".to_string(),
                None => format!("the parent does not list a delegation at v{index} yet"),
            },
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() + POLL_INTERVAL > deadline {
            bail!("gave up waiting: {last}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

// ---- policy get / set ----

async fn policy_get(target: &Target, prefix: &str) -> Result<()> {
    let client = cli::client(target).await?;
    let name = parse_name(prefix)?;
    let info = client
        .scope_info(&name)
        .await
        .with_context(|| format!("asking for the scope governing {name}"))?;
    let toml = info.policy_toml.as_deref().ok_or_else(|| {
        anyhow!(
            "scope {} ({}) did not return its policy",
            info.descriptor.prefix,
            short_id(&info.descriptor.id)
        )
    })?;
    if target.json {
        println!(
            "{}",
            json!({
                "scope": info.descriptor.id.to_hex(),
                "prefix": info.descriptor.prefix.to_string(),
                "policy_toml": toml,
            })
        );
    } else {
        print!("{toml}");
        if !toml.ends_with('\n') {
            println!();
        }
    }
    Ok(())
}

async fn policy_set(
    target: &Target,
    prefix: &str,
    file: &std::path::Path,
    sign: &[PathBuf],
) -> Result<()> {
    let prefix = parse_name(prefix)?;
    let policy_toml =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    policy::Policy::from_toml(&policy_toml)
        .with_context(|| format!("the policy {} is invalid", file.display()))?;
    let keys = read_keys(sign)?;
    let client = cli::client(target).await?;
    let op = Op::SetPolicy {
        prefix: prefix.clone(),
        policy_toml,
    };
    let signed = sign_all(&client, op, &keys)?;
    let version = client
        .submit(signed)
        .await
        .map_err(|e| admin_refusal(&format!("the policy change of {prefix}"), e))?;
    if target.json {
        println!(
            "{}",
            json!({ "prefix": prefix.to_string(), "version": version, "signatures": keys.len() })
        );
    } else {
        println!(
            "policy of {prefix} committed at version {version} ({} signature(s))",
            keys.len()
        );
    }
    Ok(())
}

// ---- watch ----

fn records_text(set: &RecordSet) -> String {
    let list: Vec<String> = set.records.iter().map(|r| r.to_string()).collect();
    list.join(", ")
}

fn change_line(e: &ChangeEvent) -> String {
    match &e.set {
        Some(set) => format!(
            "v{}  {}  {}  ttl {}s",
            e.version,
            e.name,
            records_text(set),
            set.ttl_s
        ),
        None => format!("v{}  {}  deleted", e.version, e.name),
    }
}

/// One watch event as a line of text.
pub fn watch_line(event: &WatchEvent) -> String {
    match event {
        WatchEvent::Changed(e) => change_line(e),
        WatchEvent::Compacted { oldest, up_to } => format!(
            "compacted: resync from {up_to} (history before {oldest} is no longer kept; \
             re-read the names under the prefix)"
        ),
        WatchEvent::Moved(r) => format!(
            "moved to child scope {} ({}) [{}]; following it",
            r.prefix,
            short_id(&r.scope),
            short_members(&r.members)
        ),
    }
}

/// One watch event as a JSON object (one line of `--json` output).
pub fn watch_json(event: &WatchEvent) -> Value {
    match event {
        WatchEvent::Changed(e) => match &e.set {
            Some(set) => json!({
                "event": "changed", "version": e.version, "name": e.name.to_string(),
                "records": set.records.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                "ttl_s": set.ttl_s, "writer": hex::encode(set.writer),
            }),
            None => json!({ "event": "deleted", "version": e.version, "name": e.name.to_string() }),
        },
        WatchEvent::Compacted { oldest, up_to } => {
            json!({ "event": "compacted", "oldest": oldest, "up_to": up_to })
        }
        WatchEvent::Moved(r) => json!({
            "event": "moved", "scope": r.scope.to_hex(), "prefix": r.prefix.to_string(),
            "members": r.members.iter().map(|m| m.peer_id.clone()).collect::<Vec<_>>(),
        }),
    }
}

/// Runs `anchorage watch`.
pub async fn watch(args: WatchArgs) -> Result<()> {
    let target = &args.target;
    let prefix = parse_name(&args.prefix)?;
    let client = cli::client(target).await?;
    let mut w = match args.from {
        Some(after) => client.watch_from(&prefix, after).await,
        None => client.watch(&prefix.to_string()).await,
    }
    .with_context(|| format!("watching {prefix}"))?;
    if args.count == Some(0) {
        return Ok(());
    }
    let mut changes = 0u64;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let next = tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            next = w.next() => next,
        };
        let event = match next {
            None => return Ok(()),
            Some(Ok(e)) => e,
            Some(Err(e)) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "watching {prefix} (resume with --from {})",
                    w.position()
                )))
            }
        };
        if target.json {
            println!("{}", watch_json(&event));
        } else {
            println!("{}", watch_line(&event));
        }
        if matches!(event, WatchEvent::Changed(_)) {
            changes += 1;
            if args.count.is_some_and(|n| changes >= n) {
                return Ok(());
            }
        }
    }
}

// ---- resolve --trace ----

fn outcome_text(o: &HopOutcome) -> String {
    match o {
        HopOutcome::CachedAnswer => "cached answer".into(),
        HopOutcome::CachedReferral => "cached referral".into(),
        HopOutcome::Referral(r) => {
            format!("referral to {} [{}]", r.prefix, short_members(&r.members))
        }
        HopOutcome::Found { version } => format!("answer v{version}"),
        HopOutcome::NotFound => "not found".into(),
        HopOutcome::Failed { reason } => format!("failed: {reason}"),
    }
}

fn rtt_text(hop: &Hop) -> String {
    if hop.peer.is_none() && hop.rtt.is_zero() {
        return "-".into();
    }
    format!("{:.1} ms", hop.rtt.as_secs_f64() * 1000.0)
}

/// The hops of a traced resolve as aligned text lines (a header, then one per hop).
pub fn trace_lines(trace: &Trace) -> Vec<String> {
    let mut rows: Vec<[String; 5]> = vec![[
        ";; scope".into(),
        "id".into(),
        "anchor".into(),
        "rtt".into(),
        "outcome".into(),
    ]];
    for hop in &trace.hops {
        rows.push([
            format!(";; {}", hop.prefix),
            short_id(&hop.scope),
            hop.peer
                .map_or("(cache)".to_string(), |p| short_peer(&p.to_string())),
            rtt_text(hop),
            outcome_text(&hop.outcome),
        ]);
    }
    let mut widths = [0usize; 4];
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|r| {
            let mut line = String::new();
            for (i, cell) in r.iter().enumerate() {
                line.push_str(cell);
                if i < 4 {
                    let pad = widths[i] - cell.chars().count() + 2;
                    line.push_str(&" ".repeat(pad));
                }
            }
            line.trim_end().to_string()
        })
        .collect()
}

fn hop_json(hop: &Hop) -> Value {
    let (outcome, extra) = match &hop.outcome {
        HopOutcome::CachedAnswer => ("cached_answer", Value::Null),
        HopOutcome::CachedReferral => ("cached_referral", Value::Null),
        HopOutcome::Referral(r) => (
            "referral",
            json!({
                "scope": r.scope.to_hex(), "prefix": r.prefix.to_string(),
                "members": r.members.iter().map(|m| m.peer_id.clone()).collect::<Vec<_>>(),
            }),
        ),
        HopOutcome::Found { version } => ("found", json!({ "version": version })),
        HopOutcome::NotFound => ("not_found", Value::Null),
        HopOutcome::Failed { reason } => ("failed", json!({ "reason": reason })),
    };
    json!({
        "scope": hop.scope.to_hex(),
        "prefix": hop.prefix.to_string(),
        "peer": hop.peer.map(|p| p.to_string()),
        "rtt_ms": hop.rtt.as_secs_f64() * 1000.0,
        "outcome": outcome,
        "detail": extra,
    })
}

/// `resolve --json` output of a record set.
pub fn answer_json(name: &str, set: &RecordSet) -> Value {
    let records: Vec<String> = set.records.iter().map(|r| r.to_string()).collect();
    json!({
        "name": name, "version": set.version, "ttl_s": set.ttl_s,
        "writer": hex::encode(set.writer), "records": records,
    })
}

/// `resolve` human output of a record set.
pub fn answer_lines(name: &str, set: &RecordSet) -> Vec<String> {
    let mut out = vec![format!(
        "{name}  version {}  ttl {}s",
        set.version, set.ttl_s
    )];
    out.extend(set.records.iter().map(|r| format!("  {r}")));
    out
}

/// Runs `anchorage resolve NAME --trace`.
pub async fn resolve_trace(target: &Target, name: &str, level: ReadLevel) -> Result<()> {
    let parsed = parse_name(name)?;
    let client = cli::client(target).await?;
    let (result, trace) = client.resolve_traced(&parsed, level).await;
    if target.json {
        let mut v = json!({
            "name": parsed.to_string(),
            "level": level.to_string(),
            "hops": trace.hops.iter().map(hop_json).collect::<Vec<_>>(),
        });
        if let Some(o) = v.as_object_mut() {
            match &result {
                Ok(set) => o.insert("answer".into(), answer_json(&parsed.to_string(), set)),
                Err(e) => o.insert("error".into(), json!(e.to_string())),
            };
        }
        println!("{v}");
    } else {
        for l in trace_lines(&trace) {
            println!("{l}");
        }
        if let Ok(set) = &result {
            println!();
            for l in answer_lines(&parsed.to_string(), set) {
                println!("{l}");
            }
        }
    }
    result
        .map(|_| ())
        .with_context(|| format!("resolving {parsed}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::msg::ScopeStatus;
    use proto::{Record, ScopeDescriptor};

    const P1: &str = "12D3KooWAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAaaa111";
    const P2: &str = "12D3KooWBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBbbb222";
    const P3: &str = "12D3KooWCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCccc333";

    fn name(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    fn anchor(p: &str) -> AnchorInfo {
        AnchorInfo {
            peer_id: p.into(),
            addrs: vec!["/ip4/127.0.0.1/tcp/7401".into()],
        }
    }

    fn info(id: ScopeId, prefix: &str, members: &[&str], names: u64) -> ScopeInfo {
        let members: Vec<AnchorInfo> = members.iter().map(|p| anchor(p)).collect();
        ScopeInfo {
            status: ScopeStatus {
                id,
                prefix: name(prefix),
                role: "leader".into(),
                term: 2,
                leader: Some(members[0].peer_id.clone()),
                last_applied: Some(40),
                last_log: Some(40),
                snapshot: None,
                members: members.iter().map(|m| m.peer_id.clone()).collect(),
                names,
            },
            descriptor: ScopeDescriptor {
                id,
                prefix: name(prefix),
                epoch: 1,
                members,
            },
            parent: None,
            policy_toml: Some(policy::Policy::development(None).to_toml()),
            delegations: vec![],
            active: true,
            load: Load {
                reads: 12,
                writes: 3,
            },
        }
    }

    fn delegation(child: &ScopeInfo, index: u64, state: DelegationState) -> Delegation {
        Delegation {
            referral: Referral {
                scope: child.descriptor.id,
                prefix: child.descriptor.prefix.clone(),
                epoch: 1,
                members: child.descriptor.members.clone(),
                ttl_s: 600,
            },
            members: child
                .descriptor
                .members
                .iter()
                .map(|a| MemberSpec {
                    anchor: a.clone(),
                    labels: BTreeMap::from([("jurisdiction".into(), "eu".into())]),
                })
                .collect(),
            policy_toml: policy::Policy::development(None).to_toml(),
            index,
            state,
        }
    }

    /// / with /eu (active, itself delegating /eu/payments, frozen) and /us (aborted).
    fn sample() -> (ScopeInfo, BTreeMap<ScopeId, Result<ScopeInfo, String>>) {
        let root_id = ScopeId::root();
        let eu_id = ScopeId::child(&root_id, &name("/eu"), 17);
        let mut root = info(root_id, "/", &[P1, P2, P3], 3);
        let mut eu = info(eu_id, "/eu", &[P2, P3], 2);
        eu.parent = Some(root.descriptor.clone());
        let pay = info(
            ScopeId::child(&eu_id, &name("/eu/payments"), 42),
            "/eu/payments",
            &[P3],
            0,
        );
        let us = info(ScopeId::child(&root_id, &name("/us"), 9), "/us", &[P1], 0);
        eu.delegations = vec![delegation(&pay, 42, DelegationState::Frozen)];
        root.delegations = vec![
            delegation(&us, 9, DelegationState::Aborted),
            delegation(&eu, 17, DelegationState::Active),
        ];
        let fetched = BTreeMap::from([(eu_id, Ok(eu))]);
        (root, fetched)
    }

    #[test]
    fn short_forms() {
        assert_eq!(short_peer(P1), "…aaa111");
        assert_eq!(short_peer("abc"), "abc");
        assert_eq!(short_id(&ScopeId::root()).len(), 12);
        assert!(ScopeId::root()
            .to_hex()
            .starts_with(&short_id(&ScopeId::root())));
    }

    #[test]
    fn tree_renders_hierarchy_with_annotations() {
        let (root, fetched) = sample();
        let tree = build_tree(root, &fetched);
        let lines = render_tree(&tree);
        assert_eq!(lines.len(), 4, "{lines:#?}");
        let root_id = short_id(&ScopeId::root());
        assert!(lines[0].starts_with("/ "), "{}", lines[0]);
        assert!(lines[0].contains(&root_id));
        assert!(lines[0].contains("members …aaa111,…bbb222,…ccc333"));
        assert!(lines[0].contains("leader …aaa111"));
        assert!(lines[0].contains("names 3"));
        assert!(lines[0].contains("load 12r/3w per 10s"));
        // children sorted by prefix: /eu before /us
        assert!(lines[1].starts_with("├── /eu "), "{}", lines[1]);
        assert!(lines[1].contains("members …bbb222,…ccc333"));
        assert!(lines[2].starts_with("│   └── /eu/payments"), "{}", lines[2]);
        assert!(lines[2].contains("[frozen since v42"));
        assert!(lines[3].starts_with("└── /us"), "{}", lines[3]);
        assert!(lines[3].contains("[aborted delegation of v9"));
        // columns aligned: the id starts at the same column on every line
        let ids: Vec<String> = {
            let mut v = vec![tree.info.descriptor.id];
            for c in &tree.children {
                match c {
                    ChildNode::Active(n) => {
                        v.push(n.info.descriptor.id);
                        for cc in &n.children {
                            if let ChildNode::Annotation(d) = cc {
                                v.push(d.referral.scope);
                            }
                        }
                    }
                    ChildNode::Annotation(d) => v.push(d.referral.scope),
                    ChildNode::Unreachable { .. } => {}
                }
            }
            v.iter().map(short_id).collect()
        };
        let id_cols: Vec<usize> = lines
            .iter()
            .zip(&ids)
            .map(|(l, id)| l[..l.find(id.as_str()).unwrap()].chars().count())
            .collect();
        assert!(id_cols.windows(2).all(|w| w[0] == w[1]), "{lines:#?}");
    }

    #[test]
    fn tree_marks_unreachable_children_and_loops() {
        let (mut root, mut fetched) = sample();
        let eu_id = root.delegations[1].referral.scope;
        fetched.insert(eu_id, Err("no member of scope answered".into()));
        let lines = render_tree(&build_tree(root.clone(), &fetched));
        assert!(
            lines[1].contains("[unreachable: no member of scope answered]"),
            "{lines:#?}"
        );
        // a child claiming to be the root again is a loop, not infinite recursion
        let again = root.clone();
        root.delegations
            .push(delegation(&again, 50, DelegationState::Active));
        let lines = render_tree(&build_tree(root, &BTreeMap::new()));
        assert!(lines.iter().any(|l| l.contains("loop")), "{lines:#?}");
    }

    #[test]
    fn tree_json_nests_children_and_keeps_annotations() {
        let (root, fetched) = sample();
        let v = tree_json(&build_tree(root, &fetched));
        assert_eq!(v["prefix"], "/");
        assert_eq!(v["scope"], ScopeId::root().to_hex());
        assert_eq!(v["children"].as_array().unwrap().len(), 1);
        assert_eq!(v["children"][0]["prefix"], "/eu");
        assert_eq!(v["children"][0]["delegations"][0]["state"], "frozen");
        assert_eq!(v["delegations"][0]["state"], "aborted");
        assert_eq!(v["load"]["window_s"], Load::WINDOW_S);
        assert!(v.get("policy_toml").is_none());
    }

    #[test]
    fn find_by_id_prefix() {
        let (root, fetched) = sample();
        let eu_id = root.delegations[1].referral.scope;
        let us_id = root.delegations[0].referral.scope;
        let tree = build_tree(root, &fetched);
        let mut found = Vec::new();
        find_in_tree(&tree, &eu_id.to_hex(), &mut found);
        assert!(matches!(found.as_slice(), [Found::Scope(i)] if i.descriptor.id == eu_id));
        let mut found = Vec::new();
        find_in_tree(&tree, &us_id.to_hex()[..12], &mut found);
        assert!(
            matches!(found.as_slice(), [Found::Delegation { delegation, .. }]
            if delegation.state == DelegationState::Aborted)
        );
        let mut found = Vec::new();
        find_in_tree(&tree, "", &mut found);
        assert_eq!(found.len(), 4);
    }

    #[test]
    fn show_prints_descriptor_policy_and_delegations() {
        let (_, fetched) = sample();
        let eu = fetched.values().next().unwrap().as_ref().unwrap();
        let lines = show_lines(eu);
        let text = lines.join("\n");
        assert!(
            lines[0].contains("prefix /eu") && lines[0].contains("active"),
            "{text}"
        );
        assert!(text.contains("parent       / ("), "{text}");
        assert!(
            text.contains(&format!("{P2}  /ip4/127.0.0.1/tcp/7401  (leader)")),
            "{text}"
        );
        assert!(
            text.contains("12 reads, 3 writes in the last 10 s"),
            "{text}"
        );
        assert!(text.contains("policy       frozen (no admin)"), "{text}");
        assert!(text.contains("/eu/payments  frozen"), "{text}");
        assert!(text.contains("[jurisdiction=eu]"), "{text}");
    }

    #[test]
    fn delegation_lines_without_policy_text() {
        let (root, _) = sample();
        let mut d = root.delegations[0].clone();
        let text = delegation_lines(&root, &d).join("\n");
        assert!(
            text.contains("prefix /us  aborted delegation of / ("),
            "{text}"
        );
        assert!(text.contains("labels jurisdiction=eu"), "{text}");
        assert!(text.contains("policy       frozen (no admin)"), "{text}");
        d.policy_toml.clear();
        let text = delegation_lines(&root, &d).join("\n");
        assert!(text.contains("not sent by the parent"), "{text}");
    }

    #[test]
    fn policy_summary_reads_admins_and_placement() {
        let key = policy::PublicKey::from_bytes(
            &ed25519_dalek::SigningKey::from_bytes(&[7; 32])
                .verifying_key()
                .to_bytes(),
        )
        .unwrap();
        let mut p = policy::Policy::development(Some(key));
        p.placement
            .labels
            .insert("jurisdiction".into(), "eu".into());
        let s = policy_summary(&p.to_toml());
        assert!(s.starts_with("1 of 1 admin keys"), "{s}");
        assert!(s.contains("labels jurisdiction=eu"), "{s}");
        assert!(policy_summary("not toml [").starts_with("unreadable"));
    }

    #[test]
    fn child_id_matches_the_spec_derivation() {
        let p = ScopeId::root();
        let id = ScopeId::child(&p, &name("/eu"), 17);
        let want = ScopeId::derive(&[&p.0, b"/eu", &17u64.to_be_bytes()]);
        assert_eq!(id, want);
        assert_ne!(id, ScopeId::child(&p, &name("/eu"), 18));
    }

    fn set(version: u64) -> RecordSet {
        RecordSet {
            records: vec![Record::Text("hi".into())],
            ttl_s: 30,
            version,
            writer: [1; 32],
        }
    }

    #[test]
    fn watch_lines_and_json() {
        let changed = WatchEvent::Changed(ChangeEvent {
            name: name("/eu/a"),
            version: 17,
            set: Some(set(17)),
        });
        let line = watch_line(&changed);
        assert!(line.starts_with("v17  /eu/a  "), "{line}");
        assert!(line.contains("ttl 30s"));
        let deleted = WatchEvent::Changed(ChangeEvent {
            name: name("/eu/a"),
            version: 18,
            set: None,
        });
        assert_eq!(watch_line(&deleted), "v18  /eu/a  deleted");
        let compacted = WatchEvent::Compacted {
            oldest: 100,
            up_to: 250,
        };
        assert!(watch_line(&compacted).starts_with("compacted: "));
        assert!(watch_line(&compacted).starts_with("compacted: resync from 250 "));
        let r = Referral {
            scope: ScopeId::root(),
            prefix: name("/eu"),
            epoch: 1,
            members: vec![anchor(P1)],
            ttl_s: 60,
        };
        let moved = WatchEvent::Moved(r);
        assert!(
            watch_line(&moved).starts_with("moved to child scope /eu"),
            "{}",
            watch_line(&moved)
        );
        assert_eq!(watch_json(&changed)["event"], "changed");
        assert_eq!(watch_json(&changed)["version"], 17);
        assert_eq!(watch_json(&deleted)["event"], "deleted");
        assert_eq!(watch_json(&compacted)["up_to"], 250);
        assert_eq!(watch_json(&moved)["members"][0], P1);
        // JSON lines: one object per line
        assert!(!watch_json(&changed).to_string().contains('\n'));
    }

    #[test]
    fn trace_lines_like_dig() {
        let peer: libp2p::PeerId = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let eu = ScopeId::child(&ScopeId::root(), &name("/eu"), 17);
        let trace = Trace {
            hops: vec![
                Hop {
                    scope: ScopeId::root(),
                    prefix: Name::root(),
                    peer: Some(peer),
                    rtt: Duration::from_micros(1850),
                    outcome: HopOutcome::Referral(Referral {
                        scope: eu,
                        prefix: name("/eu"),
                        epoch: 1,
                        members: vec![anchor(P2), anchor(P3)],
                        ttl_s: 600,
                    }),
                },
                Hop {
                    scope: eu,
                    prefix: name("/eu"),
                    peer: Some(peer),
                    rtt: Duration::from_millis(2),
                    outcome: HopOutcome::Found { version: 17 },
                },
                Hop {
                    scope: eu,
                    prefix: name("/eu"),
                    peer: None,
                    rtt: Duration::ZERO,
                    outcome: HopOutcome::CachedAnswer,
                },
            ],
        };
        let lines = trace_lines(&trace);
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(lines[0].starts_with(";; scope"));
        assert!(lines[1].starts_with(";; /  "), "{}", lines[1]);
        assert!(lines[1].contains(&short_id(&ScopeId::root())));
        assert!(lines[1].contains("1.9 ms"), "{}", lines[1]);
        assert!(lines[1].contains("referral to /eu"), "{}", lines[1]);
        assert!(lines[1].contains("[…bbb222,…ccc333]"), "{}", lines[1]);
        assert!(lines[2].contains("answer v17"));
        assert!(lines[2].contains("2.0 ms"));
        assert!(lines[3].contains("(cache)") && lines[3].contains("cached answer"));
        // the outcome column starts at the same place on every line
        let at: Vec<usize> = lines[1..]
            .iter()
            .map(|l| {
                let i = l
                    .find("referral")
                    .or(l.find("answer v"))
                    .or(l.find("cached"))
                    .unwrap();
                l[..i].chars().count()
            })
            .collect();
        assert!(at.windows(2).all(|w| w[0] == w[1]), "{lines:#?}");
        let j = hop_json(&trace.hops[0]);
        assert_eq!(j["outcome"], "referral");
        assert_eq!(j["detail"]["prefix"], "/eu");
        assert_eq!(j["peer"], peer.to_string());
    }

    #[test]
    fn answer_output() {
        let lines = answer_lines("/hello", &set(5));
        assert_eq!(lines[0], "/hello  version 5  ttl 30s");
        assert_eq!(answer_json("/hello", &set(5))["version"], 5);
    }
}
