//! Test scaffolding: [`bounded`] runs a test body under an overall time limit and, when it
//! fails, prints the tail of the logs of every cluster the body created (their directories
//! wait in a "graveyard" until the outcome is known).

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;

/// Lines of each log printed when a test fails.
const LOG_TAIL_LINES: usize = 60;

static NEXT_TEST: AtomicU64 = AtomicU64::new(1);

tokio::task_local! {
    pub(crate) static TEST_ID: u64;
}

/// Directories of clusters dropped inside [`bounded`], kept until the test's outcome is
/// known (so their logs can be printed on failure).
pub(crate) struct Grave {
    pub(crate) test: u64,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) logs: Vec<PathBuf>,
}

static GRAVEYARD: Mutex<Vec<Grave>> = Mutex::new(Vec::new());

pub(crate) fn graveyard() -> std::sync::MutexGuard<'static, Vec<Grave>> {
    GRAVEYARD.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs a test body with an overall time limit. On an error or a timeout it prints the tail
/// of every anchor's logs (of clusters created inside the body) and panics; a panic inside
/// the body prints them as the cluster unwinds.
pub async fn bounded<F>(limit: Duration, body: F)
where
    F: Future<Output = Result<()>>,
{
    let id = NEXT_TEST.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let outcome = TEST_ID
        .scope(id, async { tokio::time::timeout(limit, body).await })
        .await;
    let failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("{e:#}")),
        Err(_) => Some(format!("the test did not finish within {limit:?}")),
    };
    let graves: Vec<Grave> = {
        let mut all = graveyard();
        let (mine, rest): (Vec<Grave>, Vec<Grave>) = all.drain(..).partition(|g| g.test == id);
        *all = rest;
        mine
    };
    match failure {
        None => {
            eprintln!(
                "test body passed in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        Some(f) => {
            for g in graves {
                print_log_tails(&g.logs);
                keep_dir(g.dir);
            }
            panic!(
                "test failed after {:.1} s: {f}",
                started.elapsed().as_secs_f64()
            );
        }
    }
}

pub(crate) fn keep_dir(dir: tempfile::TempDir) {
    if std::env::var_os("ANCHORAGE_TEST_KEEP").is_some() {
        let path = dir.keep();
        eprintln!("kept the test directory {}", path.display());
    }
}

pub(crate) fn print_log_tails(logs: &[PathBuf]) {
    for path in logs {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(LOG_TAIL_LINES);
        eprintln!(
            "----- {} (last {} of {} lines) -----",
            path.display(),
            lines.len() - from,
            lines.len()
        );
        for l in &lines[from..] {
            eprintln!("{l}");
        }
    }
    if !logs.is_empty() {
        eprintln!("----- end of anchor logs -----");
    }
}
