//! Keys, signatures and policies: random signing keys, hex, signing an `Op` with several
//! keys, and the policy TOML tests hand to `init` and delegations.

use anyhow::{anyhow, Context, Result};
use proto::{Op, SignedMutation};
use resolver::Client;

use crate::config::{toml_escape, toml_key};

/// A fresh random signing key.
pub fn random_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng)
}

/// Hex of a signing key's public key, as policies list keys.
pub fn public_hex(key: &ed25519_dalek::SigningKey) -> String {
    to_hex(&key.verifying_key().to_bytes())
}

/// Lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `op` wrapped by `client` (nonce, expiry) and signed by every key of `signers`, in order
/// (the first is the writer).
pub fn sign_op(
    client: &Client,
    op: Op,
    signers: &[&ed25519_dalek::SigningKey],
) -> Result<SignedMutation> {
    let (first, rest) = signers
        .split_first()
        .ok_or_else(|| anyhow!("a mutation needs at least one signer"))?;
    let mut signed = SignedMutation::sign(&client.prepare(op), first)?;
    for k in rest {
        signed.add_signature(k);
    }
    Ok(signed)
}

/// A policy in TOML: `[admin]` with the public keys of `admins` and `threshold` (omitted,
/// freezing the policy, when `admins` is empty); one `[[writers]]` rule per `(pattern,
/// keys)` of `writers` (an empty key list means any key); `[placement]` with `replicas`
/// and the required `labels`. Checked with `Policy::from_toml`.
pub fn policy_toml(
    admins: &[&ed25519_dalek::SigningKey],
    threshold: u32,
    writers: &[(&str, &[&ed25519_dalek::SigningKey])],
    replicas: u32,
    labels: &[(&str, &str)],
) -> Result<String> {
    let quoted = |keys: &[&ed25519_dalek::SigningKey]| -> String {
        keys.iter()
            .map(|k| format!("\"{}\"", public_hex(k)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut t = String::new();
    if !admins.is_empty() {
        t.push_str(&format!(
            "[admin]\nkeys = [{}]\nthreshold = {threshold}\n\n",
            quoted(admins)
        ));
    }
    for (pattern, keys) in writers {
        let keys = if keys.is_empty() {
            "\"*\"".to_string()
        } else {
            quoted(keys)
        };
        t.push_str(&format!(
            "[[writers]]\npattern = \"{}\"\nkeys = [{keys}]\n\n",
            toml_escape(pattern)
        ));
    }
    t.push_str(&format!("[placement]\nreplicas = {replicas}\n"));
    if !labels.is_empty() {
        let l: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{} = \"{}\"", toml_key(k), toml_escape(v)))
            .collect();
        t.push_str(&format!("labels = {{ {} }}\n", l.join(", ")));
    }
    policy::Policy::from_toml(&t).with_context(|| format!("the generated policy:\n{t}"))?;
    Ok(t)
}

/// `policy` (TOML without a `[split]` section) with one that turns automatic splits on,
/// with `settings` (`names_max`, `reads_per_s_max`, `window_s`, `interval_s_min`, ...).
/// Checked with `Policy::from_toml`.
pub fn split_policy(policy: &str, settings: &[(&str, u32)]) -> Result<String> {
    let mut t = format!("{policy}\n[split]\nauto = true\n");
    for (k, v) in settings {
        t.push_str(&format!("{} = {v}\n", toml_key(k)));
    }
    policy::Policy::from_toml(&t).with_context(|| format!("the split policy:\n{t}"))?;
    Ok(t)
}
