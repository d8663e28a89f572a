//! `anchorage keygen --out FILE`: a new ed25519 signing key; prints its public half.

use std::path::Path;

use anyhow::{bail, Result};

use crate::keys::write_key;

/// Runs `anchorage keygen`.
pub fn run(out: &Path) -> Result<()> {
    if out.exists() {
        bail!("{} exists; refusing to overwrite a key", out.display());
    }
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    write_key(out, &key)?;
    println!("{}", hex::encode(key.verifying_key().to_bytes()));
    Ok(())
}
