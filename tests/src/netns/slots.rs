//! Slots and leftovers: the names a slot's namespaces and links get, the `flock` that
//! claims a slot, and removing what a crashed run left in a slot nobody holds.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use super::tools::{run_quiet, Tools};

/// Highest slot number (the third byte of `10.200.X.0/24`).
pub(super) const SLOTS: u32 = 250;

/// Every name this module creates starts with this, then the slot number.
pub(super) const PREFIX: &str = "anch";

/// The slot a namespace or link name of ours belongs to: `anch<X>h` (hub),
/// `anch<X>a<i>` (anchor), `anch<X>r` (root link).
fn owner_slot(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let slot: u32 = rest[..digits].parse().ok()?;
    let tail = &rest[digits..];
    let ours = tail == "h"
        || tail == "r"
        || tail
            .strip_prefix('a')
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
    (ours && (1..=SLOTS).contains(&slot)).then_some(slot)
}

/// Our namespaces by slot, from `ip netns list`, and the slots of our root links.
pub(super) fn ours(tools: &Tools) -> (Vec<(u32, String)>, BTreeSet<u32>) {
    let list = run_quiet(Command::new(&tools.ip).args(["netns", "list"])).unwrap_or_default();
    let namespaces = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|n| owner_slot(n).map(|s| (s, n.to_string())))
        .collect();
    let links = run_quiet(Command::new(&tools.ip).args(["-o", "link", "show"])).unwrap_or_default();
    let links = links
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or(""))
        .filter(|n| n.ends_with('r'))
        .filter_map(owner_slot)
        .collect();
    (namespaces, links)
}

/// Kills every process in namespace `ns` (SIGKILL) and waits briefly for them to go.
fn kill_in(tools: &Tools, ns: &str) {
    for _ in 0..50 {
        let pids: Vec<i32> = run_quiet(Command::new(&tools.ip).args(["netns", "pids", ns]))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() {
            return;
        }
        #[cfg(target_os = "linux")]
        for p in pids {
            // SAFETY: kill with a pid read from the namespace; at worst ESRCH.
            unsafe {
                libc::kill(p, libc::SIGKILL);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Kills the processes in `namespaces`, deletes slot `slot`'s root link (which deletes its
/// peer in the hub) and the namespaces (which deletes the veths in them).
pub(super) fn remove_slot(tools: &Tools, slot: u32, namespaces: &[String]) {
    for ns in namespaces {
        kill_in(tools, ns);
    }
    let root = format!("{PREFIX}{slot}r");
    let _ = run_quiet(Command::new(&tools.ip).args(["link", "del", &root]));
    for ns in namespaces {
        let _ = run_quiet(Command::new(&tools.ip).args(["netns", "del", ns]));
    }
}

/// Removes what crashed runs left in slots nobody holds (and in `mine`, which we hold).
pub(super) fn remove_leftovers(tools: &Tools, dir: &Path, mine: u32) {
    let (namespaces, links) = ours(tools);
    let slots: BTreeSet<u32> = namespaces
        .iter()
        .map(|(s, _)| *s)
        .chain(links.iter().copied())
        .collect();
    for slot in slots {
        // A slot whose lock we can take has no live owner: whatever it holds is left over.
        let lock = if slot == mine {
            None
        } else {
            match try_lock(dir, slot) {
                Ok(Some(lock)) => Some(lock),
                _ => continue,
            }
        };
        let found: Vec<String> = namespaces
            .iter()
            .filter(|(s, _)| *s == slot)
            .map(|(_, n)| n.clone())
            .collect();
        eprintln!(
            "netns: removing leftovers of an earlier run in slot {slot}: namespaces {found:?}{}",
            if links.contains(&slot) {
                format!(", link {PREFIX}{slot}r")
            } else {
                String::new()
            }
        );
        remove_slot(tools, slot, &found);
        drop(lock);
    }
}

pub(super) fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("anchorage-netns")
}

/// Tries to take slot `x`'s lock without waiting.
pub(super) fn try_lock(dir: &Path, x: u32) -> Result<Option<std::fs::File>> {
    let path = dir.join(format!("slot-{x}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: flock on a file descriptor we own; LOCK_NB makes it return at once.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Ok(None);
            }
            return Err(e).with_context(|| format!("flock {}", path.display()));
        }
    }
    let mut file = file;
    let _ = writeln!(file, "{}", std::process::id());
    Ok(Some(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_names_belong_to_a_slot() {
        assert_eq!(owner_slot("anch7a2"), Some(7));
        assert_eq!(owner_slot("anch250h"), Some(250));
        assert_eq!(owner_slot("anch12r"), Some(12));
        for other in [
            "anch7", "anch7x", "anch7a", "anch0h", "anch251h", "docker0", "anchx1h",
        ] {
            assert_eq!(owner_slot(other), None, "{other}");
        }
    }
}
