//! Signing key files as `anchorage keygen` writes them (64 hex digits, mode 0600), and
//! signing admin operations with k of them.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use ed25519_dalek::SigningKey;
use proto::{Op, SignedMutation};

/// Writes a signing key as hex, mode 0600.
pub fn write_key(path: &Path, key: &SigningKey) -> Result<()> {
    std::fs::write(path, format!("{}\n", hex::encode(key.to_bytes())))
        .with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Reads a signing key written by `anchorage keygen`.
pub fn load_key(path: &Path) -> Result<SigningKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading key {}", path.display()))?;
    let bytes =
        hex::decode(text.trim()).with_context(|| format!("{} is not hex", path.display()))?;
    let seed: [u8; 32] = bytes
        .try_into()
        .map_err(|_| anyhow!("{} must hold 32 bytes (64 hex digits)", path.display()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The keys of every `--sign KEY`, in order.
pub fn read_keys(paths: &[PathBuf]) -> Result<Vec<SigningKey>> {
    if paths.is_empty() {
        bail!("give at least one --sign KEY");
    }
    paths.iter().map(|p| load_key(p)).collect()
}

/// Signs `op` with every key (the first is the writer), as k-of-n admin operations need.
pub fn sign_all(client: &resolver::Client, op: Op, keys: &[SigningKey]) -> Result<SignedMutation> {
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
pub fn admin_refusal(what: &str, e: resolver::Error) -> anyhow::Error {
    match e {
        resolver::Error::Denied { reason } => anyhow!("{what} was refused by the scope: {reason}"),
        other => anyhow::Error::new(other).context(format!("{what} failed")),
    }
}
