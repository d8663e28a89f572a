//! The checker's entry points and verdicts: [`check`] and [`check_report`] run each name
//! (prepare, then search) within a [`Budget`] and give an [`Outcome`] per name in a
//! [`Report`]; a violation is explained in words.

use std::fmt;
use std::time::{Duration, Instant};

use super::history::History;
use super::model::NONE;
use super::prepare::{prepare, Part};
use super::search::{search, Search, Stuck};

/// How much work [`check`] may do before answering [`Outcome::Unknown`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Model states explored per name.
    pub max_states: u64,
    /// Wall time for the whole check (`None`: no limit; then the result is deterministic).
    pub max_time: Option<Duration>,
}

impl Default for Budget {
    /// Two million states per name (the memo then holds about 130 MB), no time limit.
    fn default() -> Budget {
        Budget {
            max_states: 2_000_000,
            max_time: None,
        }
    }
}

impl Budget {
    /// At most `max_states` states per name, no time limit.
    pub fn states(max_states: u64) -> Budget {
        Budget {
            max_states,
            max_time: None,
        }
    }
}

/// The verdict on a history (or on one name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Linearizable.
    Ok,
    /// Not linearizable: the first offending name (in name order) and why.
    Violation {
        /// The name whose operations admit no linearization.
        name: String,
        /// The operations involved, with their times, and the model state they met.
        explanation: String,
    },
    /// The budget ran out before a verdict (and no name was found violating).
    Unknown,
}

impl Outcome {
    /// True for [`Outcome::Ok`].
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok)
    }

    /// True for [`Outcome::Violation`].
    pub fn is_violation(&self) -> bool {
        matches!(self, Outcome::Violation { .. })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok => write!(f, "linearizable"),
            Outcome::Violation { name, explanation } => {
                write!(f, "linearizability violation on {name}:\n{explanation}")
            }
            Outcome::Unknown => write!(f, "unknown (checker budget exhausted)"),
        }
    }
}

/// The verdict on one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameReport {
    /// The name.
    pub name: String,
    /// Its operations in the history (all of them, including failed and unknown ones).
    pub operations: usize,
    /// Model states the search explored.
    pub states: u64,
    /// Its verdict.
    pub outcome: Outcome,
}

/// The verdicts of every name, in name order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// One entry per name.
    pub names: Vec<NameReport>,
}

impl Report {
    /// The first violation if any, else [`Outcome::Unknown`] if a name ran out of budget,
    /// else [`Outcome::Ok`].
    pub fn outcome(&self) -> Outcome {
        if let Some(v) = self.names.iter().find(|n| n.outcome.is_violation()) {
            return v.outcome.clone();
        }
        if self.names.iter().any(|n| n.outcome == Outcome::Unknown) {
            return Outcome::Unknown;
        }
        Outcome::Ok
    }

    /// Names whose operations are not linearizable.
    pub fn violations(&self) -> usize {
        self.names
            .iter()
            .filter(|n| n.outcome.is_violation())
            .count()
    }

    /// Names the budget did not suffice for.
    pub fn undecided(&self) -> usize {
        self.names
            .iter()
            .filter(|n| n.outcome == Outcome::Unknown)
            .count()
    }

    /// Model states explored, over all names.
    pub fn states(&self) -> u64 {
        self.names.iter().map(|n| n.states).sum()
    }
}

/// Decides whether `history` is linearizable; see the module documentation for the model.
pub fn check(history: &History, budget: Budget) -> Outcome {
    check_report(history, budget).outcome()
}

/// [`check`], with a verdict per name.
pub fn check_report(history: &History, budget: Budget) -> Report {
    let deadline = budget.max_time.map(|t| Instant::now() + t);
    let names = history
        .by_name()
        .into_iter()
        .map(|(name, idx)| {
            let (outcome, states) = check_name(history, name, &idx, budget.max_states, deadline);
            NameReport {
                name: name.to_string(),
                operations: idx.len(),
                states,
                outcome,
            }
        })
        .collect();
    Report { names }
}

impl History {
    /// [`check`] on this history.
    pub fn check(&self, budget: Budget) -> Outcome {
        check(self, budget)
    }
}

/// Checks the operations `idx` of `name`; returns the verdict and the states explored.
fn check_name(
    history: &History,
    name: &str,
    idx: &[usize],
    max_states: u64,
    deadline: Option<Instant>,
) -> (Outcome, u64) {
    let violation = |explanation: String| Outcome::Violation {
        name: name.to_string(),
        explanation,
    };
    let part = match prepare(history, name, idx) {
        Ok(p) => p,
        Err(e) => return (violation(e), 0),
    };
    match search(&part, max_states, deadline) {
        (Search::Ok, n) => (Outcome::Ok, n),
        (Search::Budget, n) => (Outcome::Unknown, n),
        (Search::Stuck(s), n) => (violation(explain(&part, &s, n)), n),
    }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn explain(part: &Part<'_>, s: &Stuck, states: u64) -> String {
    let mut out = format!(
        "no linearization of the {} of {} exists ({} explored).\n",
        plural(part.ops.len(), "operation"),
        part.name,
        plural(states as usize, "state")
    );
    if s.depth == 0 {
        out.push_str(&format!(
            "No operation can go first; the name starts holding {}.\n",
            part.state(s.state)
        ));
    } else {
        out.push_str(&format!(
            "The longest linearizable prefix has {}; it ends with:\n",
            plural(s.depth, "operation")
        ));
        for &o in &s.tail {
            out.push_str(&format!("    {}\n", part.op(o)));
        }
        out.push_str(&format!(
            "After it the name holds {}.\n",
            part.state(s.state)
        ));
    }
    // The acknowledged write due next in version order, if it is not there yet.
    let due = part.ops.iter().position(|p| p.rank == s.writes_done);
    let why = |o: usize| {
        let p = &part.ops[o];
        match due {
            Some(d) if p.rank != NONE && p.rank > s.writes_done => format!(
                "a write acknowledged at a lower version must take effect first: {}",
                part.op(d)
            ),
            _ => part.why(s.state, &p.kind),
        }
    };
    out.push_str(&format!(
        "Then {}\nmust take effect before it completes, but cannot: {}.\n",
        part.op(s.op),
        why(s.op)
    ));
    let others: Vec<usize> = s.pending.iter().copied().filter(|&o| o != s.op).collect();
    if others.is_empty() {
        out.push_str("No other operation could go before it.\n");
    } else {
        out.push_str("Operations that could go before it (none leads to a linearization):\n");
        for &o in &others {
            out.push_str(&format!("    {}: {}\n", part.op(o), why(o)));
        }
        let hidden = s.pending_total.saturating_sub(s.pending.len());
        if hidden > 0 {
            out.push_str(&format!("    ... and {hidden} more\n"));
        }
    }
    out
}
