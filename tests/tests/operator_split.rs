//! Splits on three real anchor processes. `anchorage scope split`, as an operator uses it: a
//! subtree split off the root, then the new scope cut by range, each signed by the admin,
//! each taking over on the same anchors; `scope tree` shows the range; a split signed by a
//! key that is not an admin's is refused; every acknowledged write reads back
//! linearizably from a cold client, through the new scopes. `anchorage scope merge` then
//! takes the range and the subtree back (an outsider's merge refused), and everything still
//! reads back. And a flat scope over its size limit that splits by range at its median by
//! itself.

use std::collections::BTreeMap;
use std::time::Duration;

use anchorage_tests::proto::{ReadLevel, Record};
use anchorage_tests::{bounded, random_key, Cluster};
use anyhow::{ensure, Context, Result};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_splits_a_subtree_then_a_range_onto_the_same_anchors() {
    bounded(Duration::from_secs(120), run()).await;
}

async fn run() -> Result<()> {
    let mut c = Cluster::start(3).await?;
    let dir = c.dir().to_path_buf();
    let keygen = |name: &str| {
        let path = dir.join(name);
        let args = vec![
            "keygen".to_string(),
            "--out".into(),
            path.display().to_string(),
        ];
        (path, args)
    };
    let (admin_key, args) = keygen("admin.key");
    let admin_hex = c.cli_ok(&args).await?.trim().to_string();
    let (outsider_key, args) = keygen("outsider.key");
    c.cli_ok(&args).await?;
    let policy = format!(
        "[admin]\nkeys = [\"{admin_hex}\"]\nthreshold = 1\n\n[[writers]]\npattern = \"/**\"\nkeys = [\"*\"]\n\n[placement]\nreplicas = 3\n"
    );
    let policy_file = c.write_file("root.toml", &policy)?;
    c.init(Some(&policy_file)).await?;
    let client = c.client().await?;
    let writer = random_key();
    let mut acked = BTreeMap::new();
    let names: Vec<String> = ["/shop/eu/a", "/shop/eu/b", "/shop/us/c", "/other/d"]
        .iter()
        .map(|s| s.to_string())
        .chain((0..12).map(|i| format!("/users/u{i:02}")))
        .collect();
    for (i, name) in names.iter().enumerate() {
        let value = format!("v{i}");
        let version = client
            .put(name, vec![Record::Text(value.clone())], 300, &writer)
            .await
            .with_context(|| format!("put {name}"))?;
        acked.insert(name.clone(), (version, value));
    }
    let split = |args: &[&str], key: &std::path::Path| -> Result<Vec<String>> {
        let mut v: Vec<String> = ["scope", "split"].iter().map(|s| s.to_string()).collect();
        v.extend(args.iter().map(|s| s.to_string()));
        v.push("--sign".into());
        v.push(key.display().to_string());
        v.extend(c.anchor_args()?);
        Ok(v)
    };

    // Not an admin: refused, nothing changes.
    let out = c.cli(&split(&["/shop/eu"], &outsider_key)?).await?;
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    ensure!(!out.status.success(), "an outsider's split succeeded");
    ensure!(
        stderr.contains("admin"),
        "the refusal does not say why: {stderr}"
    );

    // A subtree two levels down, then /users off the root, then /users cut by range.
    for args in [
        vec!["/shop/eu"],
        vec!["/users"],
        vec!["/users", "--at", "/users/u06"],
    ] {
        let out = c.cli_ok(&split(&args, &admin_key)?).await?;
        ensure!(out.contains("active"), "scope split {args:?} printed {out}");
    }
    let mut tree = vec!["scope".to_string(), "tree".to_string()];
    tree.extend(c.anchor_args()?);
    let out = c.cli_ok(&tree).await?;
    ensure!(
        out.contains("/shop/eu") && out.contains("/users [/users/u06, -)"),
        "scope tree does not show the new scopes:\n{out}"
    );
    let info = client
        .scope_info(&anchorage_tests::proto::Name::parse("/users/u09")?)
        .await?;
    ensure!(
        info.descriptor.range.start.as_ref().map(|n| n.to_string()) == Some("/users/u06".into()),
        "/users/u09 is governed by {:?}",
        info.descriptor
    );
    // The new scopes take writes, and everything reads back from a cold client.
    for name in ["/shop/eu/z", "/users/u11", "/users/u01"] {
        let version = client
            .put(name, vec![Record::Text("after".into())], 300, &writer)
            .await
            .with_context(|| format!("put {name} after the splits"))?;
        acked.insert(name.to_string(), (version, "after".to_string()));
    }
    reads_back(&c.client().await?, &acked).await?;

    // The operator merges the range back into /users, then /shop/eu into the root.
    let merge = |name: &str, key: &std::path::Path| -> Result<Vec<String>> {
        let mut v: Vec<String> = ["scope", "merge", name]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.push("--sign".into());
        v.push(key.display().to_string());
        v.extend(c.anchor_args()?);
        Ok(v)
    };
    let out = c.cli(&merge("/users/u09", &outsider_key)?).await?;
    ensure!(!out.status.success(), "an outsider's merge succeeded");
    for name in ["/users/u09", "/shop/eu/a"] {
        let out = c.cli_ok(&merge(name, &admin_key)?).await?;
        ensure!(
            out.contains("merged back"),
            "scope merge {name} printed {out}"
        );
    }
    let info = client
        .scope_info(&anchorage_tests::proto::Name::parse("/users/u09")?)
        .await?;
    ensure!(
        info.descriptor.prefix.to_string() == "/users" && !info.descriptor.range.is_bounded(),
        "/users/u09 is governed by {:?} after the merge",
        info.descriptor
    );
    let version = client
        .put(
            "/users/u10",
            vec![Record::Text("merged".into())],
            300,
            &writer,
        )
        .await
        .context("put /users/u10 after the merge")?;
    acked.insert("/users/u10".to_string(), (version, "merged".to_string()));
    reads_back(&c.client().await?, &acked).await
}

/// Every acknowledged write reads back linearizably from `cold`.
async fn reads_back(
    cold: &anchorage_tests::resolver::Client,
    acked: &BTreeMap<String, (u64, String)>,
) -> Result<()> {
    for (name, (version, value)) in acked {
        let set = cold
            .resolve(name, ReadLevel::Linearizable)
            .await
            .with_context(|| format!("resolve {name}"))?;
        ensure!(
            set.version == *version && set.records == vec![Record::Text(value.clone())],
            "{name}: {set:?}, acknowledged v{version} {value}"
        );
    }
    Ok(())
}

/// A flat scope over its size limit splits by range at its median, by itself, on three real
/// anchor processes: the root splits `/users` off (one child label holds every name), then
/// `/users`, which no child label dominates, cuts its range near the median name.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flat_scope_over_its_size_limit_splits_by_range_at_the_median() {
    bounded(Duration::from_secs(120), flat_run()).await;
}

async fn flat_run() -> Result<()> {
    let mut c = Cluster::start(3).await?;
    let policy = anchorage_tests::split_policy(
        &anchorage_tests::policy_toml(&[], 0, &[("/**", &[])], 3, &[])?,
        &[("names_max", 12), ("interval_s_min", 1)],
    )?;
    let policy_file = c.write_file("root.toml", &policy)?;
    c.init(Some(&policy_file)).await?;
    let client = c.client().await?;
    let writer = random_key();
    let mut acked = BTreeMap::new();
    for i in 0..20 {
        let name = format!("/users/u{i:02}");
        let value = format!("v{i}");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let version = loop {
            match client
                .put(&name, vec![Record::Text(value.clone())], 300, &writer)
                .await
            {
                Ok(v) => break v,
                Err(e) => {
                    ensure!(std::time::Instant::now() < deadline, "{name}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        acked.insert(name, (version, value));
    }
    // The last name ends in a range scope of /users whose start lies near the middle.
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let start = loop {
        let info = client
            .scope_info(&anchorage_tests::proto::Name::parse("/users/u19")?)
            .await?;
        if info.active && info.descriptor.prefix.to_string() == "/users" {
            if let Some(start) = info.descriptor.range.start {
                break start.to_string();
            }
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "/users never split by range: {:?}",
            info.descriptor
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    ensure!(
        ("/users/u05".to_string()..="/users/u15".to_string()).contains(&start),
        "the cut {start} is far from the median"
    );
    let cold = c.client().await?;
    for (name, (version, value)) in &acked {
        let set = cold.resolve(name, ReadLevel::Linearizable).await?;
        ensure!(
            set.version == *version && set.records == vec![Record::Text(value.clone())],
            "{name}: {set:?}"
        );
    }
    Ok(())
}
