//! Operation histories and a linearizability checker for per-name registers with
//! compare-and-set and versions (`docs/design.md`, "Properties the tests hold").
//!
//! - [`Recorder`] is shared by the clients of a campaign: each operation is recorded with
//!   [`Recorder::invoke`] before it is sent and [`Recorder::complete`] (or
//!   [`Recorder::unknown`]) when its answer (or a timeout) arrives. Times are nanoseconds on
//!   one monotonic clock from the recorder's origin. Operations never completed count as
//!   unknown.
//! - [`check`] (and [`check_report`]) decides whether a [`History`] is linearizable. Names are
//!   independent registers, so the history is partitioned by name and each part is checked
//!   on its own with the Wing–Gong / Lowe algorithm (WGL), memoizing the visited
//!   (set of linearized operations, model state) pairs as in Porcupine.
//!
//! # The model
//!
//! Each name holds nothing or one value with a version; versions are Raft log indexes, so
//! every write that takes effect gets a version strictly greater than every version given
//! before it (in linearization order).
//!
//! - `Put`/`Delete` answered `Written{v}`: needs `v` > every earlier version; the name then
//!   holds the value at `v` (a delete: nothing).
//! - `Cas{expected, ..}` answered `Written{v}`: as a put, and the current version (0 when
//!   absent) must be `expected`. Answered `Conflict{current}`: the current version is
//!   `current` (≠ `expected`), nothing changes.
//! - `Read` answered `Value{v, x}` / `NotFound`: the name holds exactly that.
//! - `Failed` (a definite refusal) had no effect; such operations are ignored.
//! - An operation whose outcome is unknown (a timeout, a lost connection: `complete_ns` is
//!   `None` or the output is [`Output::Unknown`]) may take effect at any instant after its
//!   invoke, or never. Its version is then unknown too: the model keeps the smallest
//!   version consistent with what was seen so far, and pins it when a read or a conflict
//!   observes it. Unknown reads are ignored.
//!
//! Two events at the same instant count as concurrent. The checker is deterministic for
//! a given history and budget (unless [`Budget::max_time`] is set and reached).
//!
//! # Cost
//!
//! The search is exponential in the worst case; prunings that lose no linearization (see
//! `search`) keep it near one state per operation on realistic histories: 5 000
//! operations on one name with 16 concurrent clients and 5% of writes timing out are
//! accepted, or rejected with a planted stale read, in about 10 000 states and well under
//! a second unoptimized. What stays expensive is many writes of unknown outcome that no
//! read identifies combined with compare-and-sets that saw versions no read or
//! acknowledgement explains: any of those writes could have been the one seen. When the
//! budget runs out the answer is [`Outcome::Unknown`], never a guess.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Histories

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    /// Replace the record set with `value`.
    Put {
        /// The value written (unique per write in a campaign, so reads identify writes).
        value: String,
    },
    /// Remove the name (a no-op that still gets a version if it is absent).
    Delete,
    /// Replace the record set only if the current version is `expected_version`.
    Cas {
        /// The version the name must be at; 0 means "must not exist".
        expected_version: u64,
        /// The value written.
        value: String,
    },
    /// Read the name at `linearizable` level.
    Read,
}

/// What the client got back.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// A write took effect at this version (the Raft log index).
    Written {
        /// The committed version.
        version: u64,
    },
    /// A compare-and-set was refused: the name is at `current` (0: absent).
    Conflict {
        /// The current version.
        current: u64,
    },
    /// A read found this value at this version.
    Value {
        /// The version read.
        version: u64,
        /// The value read.
        value: String,
    },
    /// A read found nothing.
    NotFound,
    /// A definite failure (denied, invalid, not leader...): the operation had no effect.
    Failed,
    /// No answer (timeout, connection lost, ambiguous error): the operation may or may not
    /// take effect, at any time after its invoke. The same as `complete_ns: None`.
    Unknown,
}

/// One client operation on one name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Operation {
    /// Which client issued it (informational: clients need not be sequential).
    pub client: u32,
    /// The name it addresses.
    pub name: String,
    /// When it was issued, ns since the recorder's origin.
    pub invoke_ns: u64,
    /// When its answer arrived; `None`: unknown (timed out or ambiguous), it may or may not
    /// take effect, at any time after `invoke_ns`.
    pub complete_ns: Option<u64>,
    /// The request.
    pub input: Input,
    /// The answer (ignored when `complete_ns` is `None`).
    pub output: Output,
}

impl Operation {
    /// True if the outcome is unknown: no completion time, or [`Output::Unknown`].
    pub fn is_unknown(&self) -> bool {
        self.complete_ns.is_none() || self.output == Output::Unknown
    }
}

/// A sequence of operations, in any order (usually invoke order).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// The operations; `#i` in explanations is the index here.
    pub ops: Vec<Operation>,
}

impl History {
    /// An empty history.
    pub fn new() -> History {
        History::default()
    }

    /// Appends an operation; returns its index.
    pub fn push(&mut self, op: Operation) -> OpId {
        self.ops.push(op);
        OpId(self.ops.len() - 1)
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True if there are no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Indexes of the operations of each name, names in order.
    pub fn by_name(&self) -> BTreeMap<&str, Vec<usize>> {
        let mut m: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, op) in self.ops.iter().enumerate() {
            m.entry(op.name.as_str()).or_default().push(i);
        }
        m
    }

    /// [`check`] on this history.
    pub fn check(&self, budget: Budget) -> Outcome {
        check(self, budget)
    }
}

impl From<Vec<Operation>> for History {
    fn from(ops: Vec<Operation>) -> History {
        History { ops }
    }
}

/// The index of an operation in a [`Recorder`]'s (or a [`History`]'s) list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub usize);

/// A thread-safe history recorder; clones share the history and the clock origin.
#[derive(Clone, Debug)]
pub struct Recorder {
    origin: Instant,
    inner: Arc<Mutex<RecorderInner>>,
}

#[derive(Debug, Default)]
struct RecorderInner {
    ops: Vec<Operation>,
    /// Completed or declared unknown.
    done: Vec<bool>,
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder::new()
    }
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Recorder {
        Recorder::with_origin(Instant::now())
    }

    /// A recorder whose clock counts from `origin` (share it to compare with other logs).
    pub fn with_origin(origin: Instant) -> Recorder {
        Recorder {
            origin,
            inner: Arc::new(Mutex::new(RecorderInner::default())),
        }
    }

    /// The clock origin.
    pub fn origin(&self) -> Instant {
        self.origin
    }

    /// Nanoseconds since the origin (monotonic).
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, RecorderInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `client` is about to send `input` for `name`; call it before sending.
    pub fn invoke(&self, client: u32, name: impl Into<String>, input: Input) -> OpId {
        let name = name.into();
        let mut inner = self.lock();
        let invoke_ns = self.now_ns();
        inner.ops.push(Operation {
            client,
            name,
            invoke_ns,
            complete_ns: None,
            input,
            output: Output::Unknown,
        });
        inner.done.push(false);
        OpId(inner.ops.len() - 1)
    }

    /// Records the answer to `id`; call it as soon as the answer arrives.
    /// [`Output::Unknown`] is the same as [`Recorder::unknown`].
    ///
    /// # Panics
    /// If `id` was not returned by this recorder or was already completed.
    pub fn complete(&self, id: OpId, output: Output) {
        let mut inner = self.lock();
        let now = self.now_ns();
        Recorder::finish(&mut inner, id);
        let op = &mut inner.ops[id.0];
        if output == Output::Unknown {
            op.complete_ns = None;
        } else {
            op.complete_ns = Some(now.max(op.invoke_ns));
        }
        op.output = output;
    }

    /// Records that the outcome of `id` is unknown (a timeout, a lost connection).
    ///
    /// # Panics
    /// If `id` was not returned by this recorder or was already completed.
    pub fn unknown(&self, id: OpId) {
        let mut inner = self.lock();
        Recorder::finish(&mut inner, id);
        let op = &mut inner.ops[id.0];
        op.complete_ns = None;
        op.output = Output::Unknown;
    }

    fn finish(inner: &mut RecorderInner, id: OpId) {
        let done = inner
            .done
            .get_mut(id.0)
            .unwrap_or_else(|| panic!("operation {id:?} was not recorded here"));
        assert!(!*done, "operation {id:?} completed twice");
        *done = true;
    }

    /// Number of operations recorded so far.
    pub fn len(&self) -> usize {
        self.lock().ops.len()
    }

    /// True if nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.lock().ops.is_empty()
    }

    /// A copy of the history so far (operations still in flight are unknown).
    pub fn history(&self) -> History {
        History {
            ops: self.lock().ops.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Display

fn fmt_ns(ns: u64) -> String {
    format!("{}.{:06} ms", ns / 1_000_000, ns % 1_000_000)
}

fn fmt_value(v: &str) -> String {
    const MAX: usize = 40;
    if v.chars().count() <= MAX {
        format!("{v:?}")
    } else {
        let short: String = v.chars().take(MAX).collect();
        format!("{short:?}…")
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::Put { value } => write!(f, "put {}", fmt_value(value)),
            Input::Delete => write!(f, "delete"),
            Input::Cas {
                expected_version,
                value,
            } => write!(f, "cas(expect v{expected_version}) {}", fmt_value(value)),
            Input::Read => write!(f, "read"),
        }
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::Written { version } => write!(f, "written v{version}"),
            Output::Conflict { current } => write!(f, "conflict (current v{current})"),
            Output::Value { version, value } => write!(f, "{}@v{version}", fmt_value(value)),
            Output::NotFound => write!(f, "not found"),
            Output::Failed => write!(f, "failed"),
            Output::Unknown => write!(f, "unknown"),
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let complete = match self.complete_ns {
            Some(c) if !self.is_unknown() => fmt_ns(c),
            _ => "?".to_string(),
        };
        let output = if self.is_unknown() {
            &Output::Unknown
        } else {
            &self.output
        };
        write!(
            f,
            "client {} [{}, {}] {} -> {}",
            self.client,
            fmt_ns(self.invoke_ns),
            complete,
            self.input,
            output
        )
    }
}

// ---------------------------------------------------------------------------------------
// Checking

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

/// The model state. `lb` is the smallest version the newest write (in linearization order)
/// can have; it is exact unless the state is `AtLeast` or came from an unknown delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct State {
    lb: u64,
    cur: Cur,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Cur {
    /// Nothing (never written, or deleted).
    Absent,
    /// This value (interned) at version `lb`.
    Exact(u32),
    /// This value, written by an operation of unknown outcome, at a version ≥ `lb` that no
    /// one observed yet.
    AtLeast(u32),
}

const INITIAL: State = State {
    lb: 0,
    cur: Cur::Absent,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Res {
    Written(u64),
    Conflict(u64),
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    ReadValue {
        version: u64,
        val: u32,
        /// Which write of unknown outcome `version` may belong to.
        pin: Pin,
    },
    ReadAbsent,
    Write {
        /// `None`: delete.
        val: Option<u32>,
        /// `Some`: compare-and-set.
        expected: Option<u64>,
        res: Res,
        /// For a compare-and-set: which write of unknown outcome the version it sees may
        /// belong to.
        pin: Pin,
    },
}

/// One operation of a name, as the search sees it.
#[derive(Clone, Copy, Debug)]
struct POp {
    /// Index in the history.
    idx: usize,
    kind: Kind,
    invoke: u64,
    /// `None`: unknown outcome.
    complete: Option<u64>,
    /// For an acknowledged write, its rank in version order; else NONE.
    rank: usize,
    /// For a read of a value: no other write wrote that value.
    unique_value: bool,
    /// For a write of unknown outcome: nothing can observe it after this instant.
    observers_end: u64,
    /// For a write of unknown outcome: its class of interchangeable writes, or NONE.
    class: usize,
}

/// Applies `kind` to `s`; `None` if that is not a legal step.
fn step(s: State, kind: &Kind) -> Option<State> {
    match *kind {
        Kind::ReadValue { version, val, pin } => match s.cur {
            Cur::Exact(x) => (x == val && s.lb == version).then_some(s),
            Cur::AtLeast(x) => (x == val && version >= s.lb && pin.allows(x)).then_some(State {
                lb: version,
                cur: Cur::Exact(x),
            }),
            Cur::Absent => None,
        },
        Kind::ReadAbsent => (s.cur == Cur::Absent).then_some(s),
        Kind::Write {
            val,
            expected,
            res,
            pin,
        } => {
            // The highest version given so far (its smallest possible value).
            let highest = match expected {
                None => s.lb,
                Some(e) => {
                    let seen = match res {
                        Res::Conflict(c) => c,
                        _ => e,
                    };
                    let matches = match s.cur {
                        Cur::Absent => seen == 0,
                        Cur::Exact(_) => s.lb == seen,
                        Cur::AtLeast(x) => seen >= s.lb && pin.allows(x),
                    };
                    if !matches {
                        return None;
                    }
                    if let Res::Conflict(_) = res {
                        return Some(match s.cur {
                            Cur::AtLeast(x) => State {
                                lb: seen,
                                cur: Cur::Exact(x),
                            },
                            _ => s,
                        });
                    }
                    match s.cur {
                        Cur::Absent => s.lb,
                        _ => seen,
                    }
                }
            };
            match res {
                Res::Written(v) => (v > highest).then_some(State {
                    lb: v,
                    cur: val.map_or(Cur::Absent, Cur::Exact),
                }),
                Res::Unknown => Some(State {
                    lb: highest.checked_add(1)?,
                    cur: val.map_or(Cur::Absent, Cur::AtLeast),
                }),
                Res::Conflict(_) => None,
            }
        }
    }
}

/// The operations of one name, ready to search.
struct Part<'h> {
    history: &'h History,
    name: &'h str,
    ops: Vec<POp>,
    values: Vec<&'h str>,
    /// For each write of unknown outcome, the operations that could observe it, by invoke.
    observers: Vec<Vec<usize>>,
    /// Values no read returned and no compare-and-set may pin map to NONE32 (no one can
    /// tell them apart); the others to themselves.
    canon: Vec<u32>,
    /// Number of classes of interchangeable writes.
    classes: usize,
}

impl Part<'_> {
    fn op(&self, i: usize) -> String {
        let p = &self.ops[i];
        format!("#{} {}", p.idx, self.history.ops[p.idx])
    }

    fn state(&self, s: State) -> String {
        match s.cur {
            Cur::Absent if s.lb == 0 => "nothing (never written)".to_string(),
            Cur::Absent => format!("nothing (deleted; last version ≥ v{})", s.lb),
            Cur::Exact(x) => format!("{}@v{}", fmt_value(self.values[x as usize]), s.lb),
            Cur::AtLeast(x) => format!(
                "{}@v≥{} (written by an operation of unknown outcome)",
                fmt_value(self.values[x as usize]),
                s.lb
            ),
        }
    }

    /// Why `kind` cannot (or can) be applied in `s`.
    fn why(&self, s: State, kind: &Kind) -> String {
        if step(s, kind).is_some() {
            return match kind {
                Kind::Write {
                    res: Res::Unknown, ..
                } => "it may take effect there, but that does not help".to_string(),
                _ => "it fits there, but then nothing else does".to_string(),
            };
        }
        let st = self.state(s);
        match *kind {
            Kind::ReadValue { version, val, pin } => format!(
                "it read {}@v{version} but the name held {st}{}",
                fmt_value(self.values[val as usize]),
                match (s.cur, pin) {
                    (Cur::AtLeast(x), p) if x == val && !p.allows(x) =>
                        " (and that version belongs to another write)",
                    _ => "",
                }
            ),
            Kind::ReadAbsent => format!("it found nothing but the name held {st}"),
            Kind::Write {
                expected, res, pin, ..
            } => {
                let current = match s.cur {
                    Cur::Absent => "v0 (absent)".to_string(),
                    Cur::Exact(_) => format!("v{}", s.lb),
                    Cur::AtLeast(_) => format!("v≥{}", s.lb),
                };
                match (expected, res) {
                    (Some(_), Res::Conflict(c)) => format!(
                        "it reported current version v{c} but the name was at {current} ({st})"
                    ),
                    (Some(e), _)
                        if step(
                            s,
                            &Kind::Write {
                                val: None,
                                expected: Some(e),
                                res: Res::Unknown,
                                pin,
                            },
                        )
                        .is_none() =>
                    {
                        format!(
                            "it expected v{e} but the name was at {current} ({st}), so it \
                             could not succeed"
                        )
                    }
                    (_, Res::Written(v)) => format!(
                        "its version v{v} is not above the last version given \
                         (≥ v{}; the name held {st})",
                        s.lb
                    ),
                    _ => format!("it cannot apply when the name holds {st}"),
                }
            }
        }
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

/// Validates and converts the operations of one name; drops failed operations, unknown
/// reads and unknown writes nothing can observe. `Err`: an explanation of a violation found
/// without searching.
fn prepare<'h>(history: &'h History, name: &'h str, idx: &[usize]) -> Result<Part<'h>, String> {
    let mut interned: HashMap<&'h str, u32> = HashMap::new();
    let mut values: Vec<&'h str> = Vec::new();
    let mut intern = |v: &'h str| -> u32 {
        *interned.entry(v).or_insert_with(|| {
            values.push(v);
            (values.len() - 1) as u32
        })
    };
    let mut ops = Vec::new();
    for &i in idx {
        let op = &history.ops[i];
        let malformed = |why: &str| format!("#{i} {op}: malformed operation: {why}");
        let unknown = op.is_unknown();
        let complete = if unknown { None } else { op.complete_ns };
        if let Some(c) = complete {
            if c < op.invoke_ns {
                return Err(malformed("it completed before it was invoked"));
            }
        }
        if !unknown && op.output == Output::Failed {
            continue;
        }
        let res = |out: &Output| match out {
            _ if unknown => Some(Res::Unknown),
            Output::Written { version } => Some(Res::Written(*version)),
            _ => None,
        };
        let kind = match &op.input {
            Input::Read if unknown => continue,
            Input::Read => match &op.output {
                Output::Value { version, value } => Kind::ReadValue {
                    version: *version,
                    val: intern(value),
                    pin: Pin::Any,
                },
                Output::NotFound => Kind::ReadAbsent,
                _ => return Err(malformed("a read answered as a write")),
            },
            Input::Put { value } => Kind::Write {
                val: Some(intern(value)),
                expected: None,
                res: res(&op.output).ok_or_else(|| malformed("a put answered as a read"))?,
                pin: Pin::Any,
            },
            Input::Delete => Kind::Write {
                val: None,
                expected: None,
                res: res(&op.output).ok_or_else(|| malformed("a delete answered as a read"))?,
                pin: Pin::Any,
            },
            Input::Cas {
                expected_version,
                value,
            } => {
                let res = match &op.output {
                    Output::Conflict { current } if !unknown => {
                        if current == expected_version {
                            return Err(malformed(
                                "a conflict reporting the expected version as current",
                            ));
                        }
                        Res::Conflict(*current)
                    }
                    out => res(out).ok_or_else(|| malformed("a cas answered as a read"))?,
                };
                Kind::Write {
                    val: Some(intern(value)),
                    expected: Some(*expected_version),
                    res,
                    pin: Pin::Any,
                }
            }
        };
        ops.push(POp {
            idx: i,
            kind,
            invoke: op.invoke_ns,
            complete,
            rank: NONE,
            unique_value: false,
            observers_end: u64::MAX,
            class: NONE,
        });
    }
    let part = Part {
        history,
        name,
        ops,
        values,
        observers: Vec::new(),
        canon: Vec::new(),
        classes: 0,
    };
    impossible_reads(&part)?;
    Ok(hints(part))
}

/// Reads of a value no write of this name wrote, or of a value at a version none of its
/// (all acknowledged) writes got.
fn impossible_reads(part: &Part<'_>) -> Result<(), String> {
    // Per value: versions of acknowledged writes, and whether an unknown one wrote it.
    let mut writers: HashMap<u32, (Vec<u64>, bool)> = HashMap::new();
    for p in &part.ops {
        if let Kind::Write {
            val: Some(x), res, ..
        } = p.kind
        {
            let w = writers.entry(x).or_default();
            match res {
                Res::Written(v) => w.0.push(v),
                Res::Unknown => w.1 = true,
                Res::Conflict(_) => {}
            }
        }
    }
    for p in &part.ops {
        let Kind::ReadValue { version, val, .. } = p.kind else {
            continue;
        };
        let op = &part.history.ops[p.idx];
        match writers.get(&val) {
            Some((versions, false)) if versions.is_empty() => {
                return Err(format!(
                    "#{} {op}: it read a value that no write of {} wrote (only refused \
                     compare-and-sets carried it).",
                    p.idx, part.name
                ));
            }
            None => {
                return Err(format!(
                    "#{} {op}: it read a value that no write of {} wrote.",
                    p.idx, part.name
                ));
            }
            Some((versions, false)) if !versions.contains(&version) => {
                let list: Vec<String> = versions.iter().map(|v| format!("v{v}")).collect();
                return Err(format!(
                    "#{} {op}: every write of that value to {} was acknowledged at another \
                     version ({}).",
                    p.idx,
                    part.name,
                    list.join(", ")
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Which write of unknown outcome a seen version (read, or seen by a compare-and-set) may
/// belong to. In a linearization versions are unique per name, so a version an
/// acknowledged write got belongs to no such write, and a version a read saw with value
/// `x` belongs to a write of `x`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pin {
    Any,
    Only(u32),
    No,
}

impl Pin {
    fn allows(self, x: u32) -> bool {
        match self {
            Pin::Any => true,
            Pin::Only(y) => x == y,
            Pin::No => false,
        }
    }
}

/// The version a read or a compare-and-set saw, and its [`Pin`].
fn seen_pin(kind: &Kind) -> Option<(u64, Pin)> {
    match *kind {
        Kind::ReadValue { version, pin, .. } => Some((version, pin)),
        Kind::Write {
            expected: Some(e),
            res,
            pin,
            ..
        } => Some((
            match res {
                Res::Conflict(c) => c,
                _ => e,
            },
            pin,
        )),
        _ => None,
    }
}

/// For each write of unknown outcome, the operations that could observe it (empty for the
/// others): reads of its value (for a delete, reads finding nothing) and compare-and-sets
/// whose seen version could be its version (for a delete, 0), completing after its invoke.
/// Its version is above every version seen or given by an operation that completed before
/// its invoke.
fn observers_of(ops: &[POp]) -> Vec<Vec<usize>> {
    let mut seen_by_end: Vec<(u64, u64)> = ops
        .iter()
        .filter_map(|p| {
            let end = p.complete?;
            let v = match p.kind {
                Kind::Write {
                    res: Res::Written(v),
                    ..
                } => v,
                ref k => seen_pin(k)?.0,
            };
            Some((end, v))
        })
        .collect();
    seen_by_end.sort_unstable();
    let mut max_before = Vec::with_capacity(seen_by_end.len());
    let mut m = 0;
    for &(_, v) in &seen_by_end {
        m = m.max(v);
        max_before.push(m);
    }
    let lower_bound = |t: u64| match seen_by_end.partition_point(|&(end, _)| end < t) {
        0 => 0,
        k => max_before[k - 1],
    };
    let mut reads_of: HashMap<u32, Vec<usize>> = HashMap::new();
    let mut absent_reads = Vec::new();
    let mut cas = Vec::new();
    for (i, p) in ops.iter().enumerate() {
        match p.kind {
            Kind::ReadValue { val, .. } => reads_of.entry(val).or_default().push(i),
            Kind::ReadAbsent => absent_reads.push(i),
            Kind::Write {
                expected: Some(_), ..
            } => cas.push(i),
            Kind::Write { .. } => {}
        }
    }
    ops.iter()
        .enumerate()
        .map(|(i, p)| {
            let Kind::Write { val, .. } = p.kind else {
                return Vec::new();
            };
            if p.complete.is_some() {
                return Vec::new();
            }
            let lo = lower_bound(p.invoke);
            let after = |o: usize| ops[o].complete.is_none_or(|c| c >= p.invoke);
            let seen = |o: usize| seen_pin(&ops[o].kind).unwrap_or((0, Pin::No));
            let mut list: Vec<usize> = Vec::new();
            match val {
                Some(x) => {
                    let reads = reads_of.get(&x).map_or(&[][..], |v| &v[..]);
                    list.extend(
                        reads
                            .iter()
                            .copied()
                            .filter(|&o| after(o) && seen(o).0 > lo),
                    );
                    list.extend(cas.iter().copied().filter(|&o| {
                        let (v, pin) = seen(o);
                        o != i && after(o) && v > lo && pin.allows(x)
                    }));
                }
                None => {
                    list.extend(absent_reads.iter().copied().filter(|&o| after(o)));
                    list.extend(
                        cas.iter()
                            .copied()
                            .filter(|&o| o != i && after(o) && seen(o).0 == 0),
                    );
                }
            }
            list
        })
        .collect()
}

/// Prepares a part for the search:
/// - [`Pin`]s for reads and compare-and-sets;
/// - for each write of unknown outcome, its possible observers ([`observers_of`]) and
///   `observers_end`, after which nothing can observe it. One that nothing can observe
///   after its invoke is dropped: if it took effect, it is visible only through the
///   versions it consumed, and leaving it out only loosens those, so a linearization with
///   it gives one without it;
/// - the rank of each acknowledged write in version order, and which reads are of a value
///   only one write wrote;
/// - values no one can tell apart, and classes of interchangeable writes of unknown
///   outcome (see below).
fn hints(mut part: Part<'_>) -> Part<'_> {
    let acknowledged: HashSet<u64> = part
        .ops
        .iter()
        .filter_map(|p| match p.kind {
            Kind::Write {
                res: Res::Written(v),
                ..
            } => Some(v),
            _ => None,
        })
        .collect();
    let mut read_at: HashMap<u64, Pin> = HashMap::new();
    for p in &part.ops {
        if let Kind::ReadValue { version, val, .. } = p.kind {
            let e = read_at.entry(version).or_insert(Pin::Only(val));
            if *e != Pin::Only(val) {
                *e = Pin::No;
            }
        }
    }
    let pin_of = |seen: u64| {
        if seen == 0 || acknowledged.contains(&seen) {
            Pin::No
        } else {
            read_at.get(&seen).copied().unwrap_or(Pin::Any)
        }
    };
    for p in &mut part.ops {
        match &mut p.kind {
            Kind::ReadValue { version, pin, .. } => *pin = pin_of(*version),
            Kind::Write {
                expected: Some(e),
                res,
                pin,
                ..
            } => {
                *pin = pin_of(match res {
                    Res::Conflict(c) => *c,
                    _ => *e,
                })
            }
            _ => {}
        }
    }

    // Who can observe each write of unknown outcome, and until when; drop those nothing
    // can observe, renumbering the lists.
    let ends: Vec<u64> = part
        .ops
        .iter()
        .map(|p| p.complete.unwrap_or(u64::MAX))
        .collect();
    let observers = observers_of(&part.ops);
    for (p, obs) in part.ops.iter_mut().zip(&observers) {
        if p.complete.is_none() {
            p.observers_end = obs.iter().map(|&o| ends[o]).max().unwrap_or(0);
        }
    }
    let keep: Vec<bool> = part
        .ops
        .iter()
        .map(|p| p.complete.is_some() || p.observers_end >= p.invoke)
        .collect();
    let mut renumber = vec![NONE; keep.len()];
    let mut kept = 0;
    for (i, &k) in keep.iter().enumerate() {
        if k {
            renumber[i] = kept;
            kept += 1;
        }
    }
    let mut ops = Vec::with_capacity(kept);
    let mut lists = Vec::with_capacity(kept);
    for ((p, list), k) in part.ops.iter().zip(observers).zip(&keep) {
        if *k {
            ops.push(*p);
            lists.push(list);
        }
    }
    for list in &mut lists {
        list.retain(|&o| renumber[o] != NONE);
        for o in list.iter_mut() {
            *o = renumber[*o];
        }
        list.sort_by_key(|&o| (ops[o].invoke, o));
    }
    part.ops = ops;
    part.observers = lists;

    // Values no one can tell apart, and classes of interchangeable writes of unknown
    // outcome: the same kind, and the same observers, writing such values (or deletes).
    // Swapping two of them (once both are invoked) maps linearizations to linearizations,
    // so the search counts how many of each class took effect instead of which.
    let mut distinguishable = vec![false; part.values.len()];
    for p in &part.ops {
        match p.kind {
            Kind::ReadValue { val, .. } => distinguishable[val as usize] = true,
            Kind::Write {
                pin: Pin::Only(x), ..
            } => distinguishable[x as usize] = true,
            _ => {}
        }
    }
    part.canon = (0..part.values.len() as u32)
        .map(|x| {
            if distinguishable[x as usize] {
                x
            } else {
                NONE32
            }
        })
        .collect();
    let mut classes: HashMap<(Option<u64>, bool, &[usize]), usize> = HashMap::new();
    for (p, list) in part.ops.iter_mut().zip(&part.observers) {
        if let Kind::Write {
            val,
            expected,
            res: Res::Unknown,
            ..
        } = p.kind
        {
            if val.is_none_or(|x| !distinguishable[x as usize]) {
                let next = classes.len();
                p.class = *classes
                    .entry((expected, val.is_none(), &list[..]))
                    .or_insert(next);
            }
        }
    }
    part.classes = classes.len();

    let mut writes: Vec<(u64, usize)> = part
        .ops
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match p.kind {
            Kind::Write {
                res: Res::Written(v),
                ..
            } => Some((v, i)),
            _ => None,
        })
        .collect();
    writes.sort_unstable();
    for (r, &(_, i)) in writes.iter().enumerate() {
        part.ops[i].rank = r;
    }
    let mut writers: HashMap<u32, usize> = HashMap::new();
    for p in &part.ops {
        if let Kind::Write {
            val: Some(x), res, ..
        } = p.kind
        {
            if !matches!(res, Res::Conflict(_)) {
                *writers.entry(x).or_default() += 1;
            }
        }
    }
    for p in &mut part.ops {
        if let Kind::ReadValue { val, .. } = p.kind {
            p.unique_value = writers.get(&val) == Some(&1);
        }
    }
    part
}

/// True if `p`, applied in `before` giving `after`, can be linearized right away without
/// losing any linearization: an operation that changes nothing (a read, a refused
/// compare-and-set) can always move earlier to a point where it is valid; a read that pins
/// the version of the only write of its value sees that write's state, so nothing comes
/// between them.
fn forced(p: &POp, before: State, after: State) -> bool {
    match p.kind {
        Kind::ReadValue { .. } => after == before || p.unique_value,
        Kind::ReadAbsent => true,
        Kind::Write {
            res: Res::Conflict(_),
            ..
        } => after == before,
        Kind::Write { .. } => false,
    }
}

/// Where the search got stuck with the most operations linearized.
struct Stuck {
    /// Operations linearized.
    depth: usize,
    /// The operation that had to be linearized next (its return was reached).
    op: usize,
    /// The model state there.
    state: State,
    /// Acknowledged writes linearized (the next one in version order has this rank).
    writes_done: usize,
    /// The last few operations linearized, oldest first.
    tail: Vec<usize>,
    /// Other operations that could have gone next.
    pending: Vec<usize>,
    /// How many of them there were.
    pending_total: usize,
}

enum Search {
    Ok,
    Stuck(Stuck),
    Budget,
}

const NONE: usize = usize::MAX;
const NONE32: u32 = u32::MAX;
const TAIL: usize = 6;
const PENDING_SHOWN: usize = 8;

#[derive(Clone, Copy, PartialEq, Eq)]
struct Key {
    /// Zobrist hash of the set of linearized operations (less useless writes of unknown
    /// outcome).
    set: u128,
    state: State,
    /// The last operation linearized is a write of unknown outcome (so only an
    /// operation observing it may come next).
    after_unknown: bool,
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        let (tag, val) = match self.state.cur {
            Cur::Absent => (1u64, 0u64),
            Cur::Exact(x) => (2, u64::from(x)),
            Cur::AtLeast(x) => (3, u64::from(x)),
        };
        let s = mix(self.state.lb ^ mix(val ^ (tag << 56)));
        h.write_u64(
            (self.set as u64)
                ^ ((self.set >> 64) as u64).rotate_left(17)
                ^ s
                ^ u64::from(self.after_unknown),
        );
    }
}

/// Passes one already-mixed u64 through.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = mix(self.0 ^ u64::from(b));
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = x;
    }
}

/// splitmix64's finalizer.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The key of "the `k`-th member of class `c`" (a set holding `j` members of a class
/// hashes as the XOR of its first `j` keys, whichever members they are).
fn class_zobrist(c: usize, k: u64) -> u128 {
    let a = mix(mix(c as u64 ^ 0xc1a5_5000_0000_0000).wrapping_add(k));
    let b = mix(a ^ 0x0123_4567_89ab_cdef);
    (u128::from(a) << 64) | u128::from(b)
}

/// A fixed pseudo-random 128-bit key per operation: the hash of a set is the XOR of its
/// members' keys (two different sets collide with probability 2^-128).
fn zobrist(i: usize) -> u128 {
    let a = mix((i as u64).wrapping_mul(2).wrapping_add(0x5eed));
    let b = mix((i as u64).wrapping_mul(2).wrapping_add(0x5eee));
    (u128::from(a) << 64) | u128::from(b)
}

/// One linearized operation on the search stack.
struct Frame {
    /// Its call entry.
    entry: usize,
    /// The state before it.
    state: State,
    /// Linearized by [`forced`]: no alternative to try at its level.
    forced: bool,
    /// `horizon` at its level.
    horizon: u64,
    /// `useless_hash` at its level.
    useless_hash: u128,
    /// Calls unlinked on entering the next level.
    removed_after: usize,
}

/// The events of a part in time order, as a doubly linked list WGL lifts operations out
/// of. Calls sort before returns at the same time: such operations count as concurrent.
/// Unknown operations never return.
struct Events {
    time: Vec<u64>,
    is_call: Vec<bool>,
    op_of: Vec<usize>,
    /// For a call, its return (or NONE).
    match_of: Vec<usize>,
    next: Vec<usize>,
    prev: Vec<usize>,
    head: usize,
}

impl Events {
    fn new(ops: &[POp]) -> Events {
        let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * ops.len());
        for (i, p) in ops.iter().enumerate() {
            events.push((p.invoke, 0, i));
            if let Some(c) = p.complete {
                events.push((c, 1, i));
            }
        }
        events.sort_unstable();
        let m = events.len();
        let mut ret_of = vec![NONE; ops.len()];
        for (e, ev) in events.iter().enumerate() {
            if ev.1 == 1 {
                ret_of[ev.2] = e;
            }
        }
        let head = m;
        let mut next: Vec<usize> = (0..=m)
            .map(|e| if e + 1 < m { e + 1 } else { NONE })
            .collect();
        next[head] = if m > 0 { 0 } else { NONE };
        let mut prev: Vec<usize> = (0..=m).map(|e| if e == 0 { head } else { e - 1 }).collect();
        prev[head] = NONE;
        Events {
            time: events.iter().map(|e| e.0).collect(),
            is_call: events.iter().map(|e| e.1 == 0).collect(),
            op_of: events.iter().map(|e| e.2).collect(),
            match_of: events
                .iter()
                .map(|e| if e.1 == 0 { ret_of[e.2] } else { NONE })
                .collect(),
            next,
            prev,
            head,
        }
    }

    fn first(&self) -> usize {
        self.next[self.head]
    }

    /// The time of the first return still listed: every operation that completed before
    /// it is linearized.
    fn horizon(&self) -> u64 {
        let mut e = self.first();
        while e != NONE && self.is_call[e] {
            e = self.next[e];
        }
        if e == NONE {
            u64::MAX
        } else {
            self.time[e]
        }
    }

    fn unlink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = n;
        if n != NONE {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        if n != NONE {
            self.prev[n] = e;
        }
    }

    /// Removes call `e` and its return.
    fn lift(&mut self, e: usize) {
        self.unlink(e);
        if self.match_of[e] != NONE {
            self.unlink(self.match_of[e]);
        }
    }

    /// Undoes [`Events::lift`] (in reverse order of lifts).
    fn unlift(&mut self, e: usize) {
        if self.match_of[e] != NONE {
            self.relink(self.match_of[e]);
        }
        self.relink(e);
    }
}

/// Reads and compare-and-sets: the operations that observe the state.
fn observes(p: &POp) -> bool {
    matches!(
        p.kind,
        Kind::ReadValue { .. }
            | Kind::ReadAbsent
            | Kind::Write {
                expected: Some(_),
                ..
            }
    )
}

/// True if one of `observers` could be linearized next, in state `s`.
fn observed_next(
    ops: &[POp],
    observers: &[usize],
    linearized: &[bool],
    horizon: u64,
    s: State,
    writes_done: usize,
) -> bool {
    for &o in observers {
        let p = &ops[o];
        if p.invoke > horizon {
            break;
        }
        let useless = p.complete.is_none() && p.observers_end < horizon;
        if !linearized[o]
            && !useless
            && (p.rank == NONE || p.rank == writes_done)
            && step(s, &p.kind).is_some()
        {
            return true;
        }
    }
    false
}

/// WGL: depth-first search over linearizations, calls in invoke order, backtracking when
/// the return of an operation not yet linearized is reached; points (set of linearized
/// operations, state) already explored are skipped. Prunings keep it near-linear on
/// realistic histories, each losing no linearization:
/// - acknowledged writes are only tried in version order (the model rejects any other);
/// - at each point a [`forced`] operation, if there is one, is linearized without trying
///   alternatives;
/// - a write of unknown outcome is only linearized right before an operation that observes
///   it (one that takes effect unobserved is as good as one that never does), and not at
///   all once nothing can observe it any more;
/// - points that differ only in which writes of unknown outcome took effect among those
///   nothing can observe any more, or among interchangeable ones, or in values no one can
///   tell apart, have the same future: they share one memo key.
fn search(part: &Part<'_>, max_states: u64, deadline: Option<Instant>) -> (Search, u64) {
    let ops = &part.ops;
    let mut ev = Events::new(ops);
    let definite_total = ops.iter().filter(|p| p.complete.is_some()).count();
    let zob: Vec<u128> = (0..ops.len()).map(zobrist).collect();
    let mut cache: HashSet<Key, BuildHasherDefault<KeyHasher>> = HashSet::default();
    let mut stack: Vec<Frame> = Vec::new();
    // Calls of useless writes of unknown outcome unlinked on entering a point (undone when
    // the frame before that point is popped).
    let mut removed: Vec<usize> = Vec::new();
    // Writes of unknown outcome linearized, with what they added to `set`.
    let mut applied_unknown: Vec<(usize, u128)> = Vec::new();
    // Members of each class linearized.
    let mut class_count = vec![0u64; part.classes];
    // What linearizing `op` adds to `set`: a member of a class adds "one more of the
    // class", whichever it is.
    let contribution = |op: usize, class_count: &[u64]| match ops[op].class {
        NONE => zob[op],
        c => class_zobrist(c, class_count[c] + 1),
    };
    // Values no one can tell apart look the same in keys.
    let canon = |s: State| State {
        lb: s.lb,
        cur: match s.cur {
            Cur::Exact(x) => Cur::Exact(part.canon[x as usize]),
            Cur::AtLeast(x) => Cur::AtLeast(part.canon[x as usize]),
            Cur::Absent => Cur::Absent,
        },
    };
    let mut linearized = vec![false; ops.len()];
    let mut state = INITIAL;
    let mut set: u128 = 0;
    let mut definite_done = 0usize;
    let mut writes_done = 0usize;
    let mut states = 0u64;
    let mut best: Option<Stuck> = None;
    let mut iterations = 0u64;
    let mut entry = ev.first();
    // At a new point: drop useless writes, then look for a forced operation.
    let mut fresh = true;
    // The time of the first return listed at this point: writes of unknown outcome whose
    // observers all end before it are useless.
    let mut horizon = 0;
    // The hash of the useless writes of unknown outcome linearized: the future does not
    // depend on them, so they are left out of the memo keys.
    let mut useless_hash: u128 = 0;
    loop {
        if definite_done == definite_total {
            // The unknown operations left take effect never (or after everything: the same).
            return (Search::Ok, states);
        }
        iterations += 1;
        if iterations.is_multiple_of(4096) && deadline.is_some_and(|d| Instant::now() >= d) {
            return (Search::Budget, states);
        }
        // Right after a write of unknown outcome, only an operation that observes it.
        let restricted = stack
            .last()
            .is_some_and(|f| ops[ev.op_of[f.entry]].complete.is_none());
        // The next operation to linearize, with its state, and whether it is forced.
        let mut chosen: Option<(usize, State, bool)> = None;
        let mut dead_end = false;
        if fresh {
            fresh = false;
            horizon = ev.horizon();
            useless_hash = applied_unknown
                .iter()
                .filter(|&&(u, _)| ops[u].observers_end < horizon)
                .fold(0, |h, &(_, z)| h ^ z);
            let before = removed.len();
            let mut e = ev.first();
            while e != NONE && ev.is_call[e] {
                let p = &ops[ev.op_of[e]];
                if p.complete.is_none() && p.observers_end < horizon {
                    ev.unlink(e);
                    removed.push(e);
                } else if chosen.is_none() && p.rank == NONE {
                    if let Some(s) = step(state, &p.kind) {
                        if forced(p, state, s) {
                            chosen = Some((e, s, true));
                        }
                    }
                }
                e = ev.next[e];
            }
            if let Some(f) = stack.last_mut() {
                f.removed_after = removed.len() - before;
            }
            entry = ev.first();
        }
        let key_of = |op: usize, s: State| Key {
            set: set ^ contribution(op, &class_count) ^ useless_hash,
            state: canon(s),
            after_unknown: ops[op].complete.is_none(),
        };
        if chosen.is_none() {
            while entry != NONE && ev.is_call[entry] {
                let op = ev.op_of[entry];
                let p = &ops[op];
                if (!restricted || observes(p)) && (p.rank == NONE || p.rank == writes_done) {
                    if let Some(s) = step(state, &p.kind) {
                        if !cache.contains(&key_of(op, s))
                            && (p.complete.is_some()
                                || observed_next(
                                    ops,
                                    &part.observers[op],
                                    &linearized,
                                    horizon,
                                    s,
                                    writes_done,
                                ))
                        {
                            chosen = Some((entry, s, false));
                            break;
                        }
                    }
                }
                entry = ev.next[entry];
            }
            if chosen.is_none() {
                dead_end = true;
            }
        }
        if let Some((e, s, is_forced)) = chosen {
            let op = ev.op_of[e];
            if cache.insert(key_of(op, s)) {
                states += 1;
                if states > max_states {
                    return (Search::Budget, states);
                }
                stack.push(Frame {
                    entry: e,
                    state,
                    forced: is_forced,
                    horizon,
                    useless_hash,
                    removed_after: 0,
                });
                state = s;
                let z = contribution(op, &class_count);
                set ^= z;
                if ops[op].class != NONE {
                    class_count[ops[op].class] += 1;
                }
                linearized[op] = true;
                ev.lift(e);
                if ops[op].complete.is_some() {
                    definite_done += 1;
                } else {
                    applied_unknown.push((op, z));
                }
                if ops[op].rank != NONE {
                    writes_done += 1;
                }
                fresh = true;
                continue;
            }
            // A forced operation leading to an explored point: this point fails too.
        }
        // Reached the return of an operation not linearized yet (`entry` is never NONE
        // here while a definite operation is left, as its return is still listed).
        if dead_end && entry != NONE && !matches!(&best, Some(b) if stack.len() <= b.depth) {
            let mut pending = Vec::new();
            let mut pending_total = 0;
            let mut e = ev.first();
            while e != entry && e != NONE {
                if ev.is_call[e] {
                    pending_total += 1;
                    if pending.len() < PENDING_SHOWN {
                        pending.push(ev.op_of[e]);
                    }
                }
                e = ev.next[e];
            }
            best = Some(Stuck {
                depth: stack.len(),
                op: ev.op_of[entry],
                state,
                writes_done,
                tail: stack[stack.len().saturating_sub(TAIL)..]
                    .iter()
                    .map(|f| ev.op_of[f.entry])
                    .collect(),
                pending,
                pending_total,
            });
        }
        // Backtrack past forced operations to the last choice.
        loop {
            let Some(f) = stack.pop() else {
                let stuck = best.unwrap_or(Stuck {
                    depth: 0,
                    op: 0,
                    state: INITIAL,
                    writes_done: 0,
                    tail: Vec::new(),
                    pending: Vec::new(),
                    pending_total: 0,
                });
                return (Search::Stuck(stuck), states);
            };
            for _ in 0..f.removed_after {
                let e = removed
                    .pop()
                    .expect("removed entries are tracked per frame");
                ev.relink(e);
            }
            let op = ev.op_of[f.entry];
            state = f.state;
            if ops[op].class != NONE {
                class_count[ops[op].class] -= 1;
            }
            set ^= contribution(op, &class_count);
            linearized[op] = false;
            ev.unlift(f.entry);
            if ops[op].complete.is_some() {
                definite_done -= 1;
            } else {
                applied_unknown.pop();
            }
            if ops[op].rank != NONE {
                writes_done -= 1;
            }
            if !f.forced {
                entry = ev.next[f.entry];
                horizon = f.horizon;
                useless_hash = f.useless_hash;
                break;
            }
        }
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

// ---------------------------------------------------------------------------------------
// Tests

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NAME: &str = "/t/x";

    fn op(client: u32, inv: u64, cmp: Option<u64>, input: Input, output: Output) -> Operation {
        Operation {
            client,
            name: NAME.to_string(),
            invoke_ns: inv,
            complete_ns: cmp,
            input,
            output,
        }
    }

    fn put(v: &str) -> Input {
        Input::Put {
            value: v.to_string(),
        }
    }

    fn cas(e: u64, v: &str) -> Input {
        Input::Cas {
            expected_version: e,
            value: v.to_string(),
        }
    }

    fn written(version: u64) -> Output {
        Output::Written { version }
    }

    fn val(version: u64, v: &str) -> Output {
        Output::Value {
            version,
            value: v.to_string(),
        }
    }

    fn conflict(current: u64) -> Output {
        Output::Conflict { current }
    }

    fn run(ops: Vec<Operation>) -> Outcome {
        check(&History::from(ops), Budget::default())
    }

    fn assert_ok(ops: Vec<Operation>) {
        let out = run(ops);
        assert_eq!(out, Outcome::Ok, "{out}");
    }

    fn assert_violation(ops: Vec<Operation>) -> String {
        match run(ops) {
            Outcome::Violation { name, explanation } => {
                assert_eq!(name, NAME);
                explanation
            }
            other => panic!("expected a violation, got {other}"),
        }
    }

    #[test]
    fn empty_history_is_linearizable() {
        assert_ok(vec![]);
    }

    #[test]
    fn sequential_history() {
        assert_ok(vec![
            op(1, 0, Some(10), Input::Read, Output::NotFound),
            op(1, 20, Some(30), put("a"), written(3)),
            op(2, 40, Some(50), Input::Read, val(3, "a")),
            op(1, 60, Some(70), cas(3, "b"), written(7)),
            op(2, 80, Some(90), cas(3, "c"), conflict(7)),
            op(2, 100, Some(110), Input::Read, val(7, "b")),
            op(1, 120, Some(130), Input::Delete, written(9)),
            op(2, 140, Some(150), Input::Read, Output::NotFound),
            op(2, 160, Some(170), cas(0, "d"), written(12)),
            op(1, 180, Some(190), Input::Read, val(12, "d")),
            // Deleting an absent name is a no-op that still gets a version.
            op(1, 200, Some(210), Input::Delete, written(13)),
            op(1, 220, Some(230), Input::Delete, written(14)),
            op(2, 240, Some(250), cas(5, "e"), conflict(0)),
        ]);
    }

    #[test]
    fn concurrent_writes_in_either_order() {
        // Two overlapping puts; concurrent reads see nothing, either value; later reads
        // see the one with the higher version.
        let history = |va: u64, vb: u64, last: &str, lastv: u64| {
            vec![
                op(1, 0, Some(100), put("a"), written(va)),
                op(2, 10, Some(90), put("b"), written(vb)),
                op(3, 5, Some(15), Input::Read, Output::NotFound),
                op(
                    4,
                    20,
                    Some(95),
                    Input::Read,
                    val(va.min(vb), if va < vb { "a" } else { "b" }),
                ),
                op(5, 30, Some(99), Input::Read, val(lastv, last)),
                op(3, 120, Some(130), Input::Read, val(lastv, last)),
            ]
        };
        assert_ok(history(5, 6, "b", 6));
        assert_ok(history(6, 5, "a", 6));
        // A read after both, seeing the lower version, is wrong.
        assert_violation(vec![
            op(1, 0, Some(100), put("a"), written(5)),
            op(2, 10, Some(90), put("b"), written(6)),
            op(3, 120, Some(130), Input::Read, val(5, "a")),
        ]);
    }

    #[test]
    fn reads_concurrent_with_a_write_may_see_old_or_new() {
        assert_ok(vec![
            op(1, 0, Some(10), put("a"), written(1)),
            op(1, 20, Some(200), put("b"), written(2)),
            op(2, 30, Some(40), Input::Read, val(1, "a")),
            op(3, 50, Some(60), Input::Read, val(2, "b")),
            op(4, 55, Some(150), Input::Read, val(2, "b")),
        ]);
        // ... but not new then old.
        let e = assert_violation(vec![
            op(1, 0, Some(10), put("a"), written(1)),
            op(1, 20, Some(200), put("b"), written(2)),
            op(2, 30, Some(40), Input::Read, val(2, "b")),
            op(3, 50, Some(60), Input::Read, val(1, "a")),
        ]);
        assert!(e.contains("#3"), "{e}");
    }

    #[test]
    fn cas_race_one_wins_the_other_conflicts() {
        assert_ok(vec![
            op(1, 0, Some(10), put("a"), written(4)),
            op(1, 20, Some(60), cas(4, "x"), written(9)),
            op(2, 25, Some(55), cas(4, "y"), conflict(9)),
            op(3, 70, Some(80), Input::Read, val(9, "x")),
        ]);
        assert_ok(vec![
            op(1, 0, Some(10), put("a"), written(4)),
            op(1, 20, Some(60), cas(4, "x"), conflict(9)),
            op(2, 25, Some(55), cas(4, "y"), written(9)),
            op(3, 70, Some(80), Input::Read, val(9, "y")),
        ]);
        // Both winning is not possible.
        assert_violation(vec![
            op(1, 0, Some(10), put("a"), written(4)),
            op(1, 20, Some(60), cas(4, "x"), written(9)),
            op(2, 25, Some(55), cas(4, "y"), written(10)),
        ]);
    }

    #[test]
    fn unknown_writes_that_did_and_did_not_apply() {
        // Applied: a later read sees it (at a version learnt only from the read).
        assert_ok(vec![
            op(1, 0, Some(10), put("a"), written(1)),
            op(1, 20, None, put("b"), Output::Unknown),
            op(2, 500, Some(510), Input::Read, val(8, "b")),
            op(2, 520, Some(530), put("c"), written(9)),
            op(2, 540, Some(550), Input::Read, val(9, "c")),
        ]);
        // Not applied: later reads see the old value.
        assert_ok(vec![
            op(1, 0, Some(10), put("a"), written(1)),
            op(1, 20, Some(30), put("b"), Output::Unknown),
            op(2, 500, Some(510), Input::Read, val(1, "a")),
        ]);
        // Applied late: after another write, long after the client gave up.
        assert_ok(vec![
            op(1, 0, Some(10), put("a"), written(1)),
            op(1, 20, None, put("b"), Output::Unknown),
            op(2, 500, Some(510), put("c"), written(5)),
            op(2, 600, Some(610), Input::Read, val(5, "c")),
            op(2, 700, Some(710), Input::Read, val(6, "b")),
        ]);
        // An unknown delete that applied, and an unknown cas that applied.
        assert_ok(vec![
            op(1, 0, Some(10), put("a"), written(1)),
            op(1, 20, None, Input::Delete, Output::Unknown),
            op(2, 100, Some(110), Input::Read, Output::NotFound),
            op(2, 120, None, cas(0, "z"), Output::Unknown),
            op(3, 200, Some(210), cas(1, "w"), conflict(7)),
            op(3, 300, Some(310), Input::Read, val(7, "z")),
        ]);
        // But an unknown write cannot apply before it was invoked...
        assert_violation(vec![
            op(1, 0, Some(10), put("a"), written(1)),
            op(2, 20, Some(30), Input::Read, val(3, "b")),
            op(1, 40, None, put("b"), Output::Unknown),
        ]);
        // ... nor below a version given before it.
        assert_violation(vec![
            op(1, 0, Some(10), put("a"), written(5)),
            op(1, 20, None, put("b"), Output::Unknown),
            op(2, 40, Some(50), Input::Read, val(5, "b")),
        ]);
    }

    #[test]
    fn unknown_version_is_pinned_by_what_sees_it() {
        // The unknown write's version is seen as 4 by a conflict, then read as 4.
        assert_ok(vec![
            op(1, 0, Some(10), put("a"), written(1)),
            op(1, 20, None, put("b"), Output::Unknown),
            op(2, 100, Some(110), cas(1, "c"), conflict(4)),
            op(2, 120, Some(130), Input::Read, val(4, "b")),
        ]);
        // ... and then read at another version: impossible.
        assert_violation(vec![
            op(1, 0, Some(10), put("a"), written(1)),
            op(1, 20, None, put("b"), Output::Unknown),
            op(2, 100, Some(110), cas(1, "c"), conflict(4)),
            op(2, 120, Some(130), Input::Read, val(5, "b")),
        ]);
        // Two unknown writes in a row consume two versions.
        assert_violation(vec![
            op(1, 0, Some(10), put("a"), written(1)),
            op(1, 20, Some(30), put("b"), Output::Unknown),
            op(1, 40, Some(50), put("c"), Output::Unknown),
            op(2, 100, Some(110), Input::Read, val(2, "b")),
            op(2, 120, Some(130), Input::Read, val(2, "c")),
        ]);
        assert_ok(vec![
            op(1, 0, Some(10), put("a"), written(1)),
            op(1, 20, Some(30), put("b"), Output::Unknown),
            op(1, 40, Some(50), put("c"), Output::Unknown),
            op(2, 100, Some(110), Input::Read, val(2, "b")),
            op(2, 120, Some(130), Input::Read, val(3, "c")),
        ]);
    }

    #[test]
    fn failed_and_unknown_reads_are_ignored() {
        assert_ok(vec![
            op(1, 0, Some(10), put("a"), written(1)),
            op(1, 20, Some(30), put("b"), Output::Failed),
            op(1, 40, Some(50), cas(7, "c"), Output::Failed),
            op(2, 60, Some(70), Input::Read, Output::Failed),
            op(2, 80, None, Input::Read, Output::Unknown),
            op(2, 90, Some(95), Input::Read, Output::Unknown),
            op(2, 100, Some(110), Input::Read, val(1, "a")),
        ]);
        // A failed write's value cannot be read.
        assert_violation(vec![
            op(1, 0, Some(10), put("a"), written(1)),
            op(1, 20, Some(30), put("b"), Output::Failed),
            op(2, 100, Some(110), Input::Read, val(2, "b")),
        ]);
    }

    #[test]
    fn catches_stale_read() {
        let e = assert_violation(vec![
            op(1, 0, Some(10), put("a"), written(1)),
            op(1, 20, Some(30), put("b"), written(2)),
            // Starts after the second write completed, yet returns the first.
            op(2, 40, Some(50), Input::Read, val(1, "a")),
        ]);
        assert!(e.contains("#2 client 2"), "{e}");
        assert!(e.contains("\"b\"@v2"), "{e}");
        assert!(e.contains("0.000040 ms"), "{e}");
    }

    #[test]
    fn catches_stale_not_found() {
        assert_violation(vec![
            op(1, 0, Some(10), put("a"), written(1)),
            op(2, 20, Some(30), Input::Read, Output::NotFound),
        ]);
    }

    #[test]
    fn catches_lost_write() {
        // An acknowledged write is never seen: later reads see the older value.
        assert_violation(vec![
            op(1, 0, Some(10), put("a"), written(1)),
            op(1, 20, Some(30), put("b"), written(2)),
            op(2, 25, Some(35), Input::Read, val(2, "b")),
            op(3, 40, Some(50), Input::Read, val(1, "a")),
            op(3, 60, Some(70), Input::Read, val(1, "a")),
        ]);
        // A version going backwards: c@3 is read, then b@2.
        assert_violation(vec![
            op(1, 0, Some(10), put("b"), written(2)),
            op(2, 5, Some(50), put("c"), written(3)),
            op(3, 20, Some(30), Input::Read, val(3, "c")),
            op(4, 40, Some(45), Input::Read, val(2, "b")),
        ]);
        // A write acknowledged at a version lower than one already read.
        assert_violation(vec![
            op(1, 0, Some(10), put("a"), written(5)),
            op(2, 20, Some(30), Input::Read, val(5, "a")),
            op(1, 40, Some(50), put("b"), written(4)),
        ]);
    }

    #[test]
    fn catches_cas_against_wrong_version() {
        let e = assert_violation(vec![
            op(1, 0, Some(10), put("a"), written(3)),
            op(2, 20, Some(30), cas(2, "b"), written(4)),
        ]);
        assert!(e.contains("expected v2"), "{e}");
        // A conflict naming a version the name was not at.
        assert_violation(vec![
            op(1, 0, Some(10), put("a"), written(3)),
            op(2, 20, Some(30), cas(2, "b"), conflict(5)),
        ]);
        // A cas expecting absence on a present name.
        assert_violation(vec![
            op(1, 0, Some(10), put("a"), written(3)),
            op(2, 20, Some(30), cas(0, "b"), written(5)),
        ]);
    }

    #[test]
    fn catches_read_of_unwritten_value() {
        let e = assert_violation(vec![
            op(1, 0, Some(10), put("a"), written(1)),
            op(2, 20, Some(30), Input::Read, val(1, "zz")),
        ]);
        assert!(e.contains("no write"), "{e}");
        // Right value, version of no write of it.
        assert_violation(vec![
            op(1, 0, Some(10), put("a"), written(1)),
            op(2, 20, Some(30), Input::Read, val(2, "a")),
        ]);
        // A value carried only by a refused cas.
        assert_violation(vec![
            op(1, 0, Some(10), put("a"), written(1)),
            op(2, 20, Some(30), cas(7, "q"), conflict(1)),
            op(2, 40, Some(50), Input::Read, val(1, "q")),
        ]);
    }

    #[test]
    fn malformed_operations_are_violations() {
        let e = assert_violation(vec![op(1, 0, Some(10), cas(3, "a"), conflict(3))]);
        assert!(e.contains("malformed"), "{e}");
        assert_violation(vec![op(1, 0, Some(10), Input::Read, written(3))]);
        assert_violation(vec![op(1, 0, Some(10), put("a"), Output::NotFound)]);
        assert_violation(vec![op(1, 10, Some(5), put("a"), written(1))]);
        assert_violation(vec![op(1, 0, Some(10), put("a"), written(0))]);
    }

    #[test]
    fn names_are_independent() {
        fn o(h: &mut History, name: &str, inv: u64, cmp: u64, input: Input, output: Output) {
            let mut x = op(1, inv, Some(cmp), input, output);
            x.name = name.to_string();
            h.push(x);
        }
        let mut h = History::new();
        o(&mut h, "/a", 0, 10, put("a1"), written(5));
        o(&mut h, "/b", 20, 30, put("b1"), written(6));
        o(&mut h, "/a", 40, 50, Input::Read, val(5, "a1"));
        o(&mut h, "/b", 60, 70, Input::Read, val(6, "b1"));
        let report = check_report(&h, Budget::default());
        assert_eq!(report.outcome(), Outcome::Ok);
        assert_eq!(report.names.len(), 2);
        o(&mut h, "/b", 80, 90, Input::Read, Output::NotFound);
        let report = check_report(&h, Budget::default());
        assert_eq!(report.violations(), 1);
        match report.outcome() {
            Outcome::Violation { name, .. } => assert_eq!(name, "/b"),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn same_instant_counts_as_concurrent() {
        // The read is invoked at the instant the write completes: either order is fine.
        assert_ok(vec![
            op(1, 0, Some(10), put("a"), written(1)),
            op(1, 20, Some(30), put("b"), written(2)),
            op(2, 30, Some(40), Input::Read, val(1, "a")),
        ]);
    }

    #[test]
    fn recorder_records_from_threads() {
        let rec = Recorder::new();
        let mut threads = Vec::new();
        for c in 0..4u32 {
            let rec = rec.clone();
            threads.push(std::thread::spawn(move || {
                for i in 0..50u64 {
                    let name = format!("/r/{c}");
                    let id = rec.invoke(c, &name, put(&format!("{c}-{i}")));
                    rec.complete(id, written(i + 1));
                    let id = rec.invoke(c, &name, Input::Read);
                    rec.complete(
                        id,
                        Output::Value {
                            version: i + 1,
                            value: format!("{c}-{i}"),
                        },
                    );
                }
                let id = rec.invoke(c, format!("/r/{c}"), put("lost"));
                if c % 2 == 0 {
                    rec.unknown(id);
                }
            }));
        }
        for t in threads {
            t.join().unwrap();
        }
        let h = rec.history();
        assert_eq!(h.len(), 4 * 101);
        assert_eq!(h.ops.iter().filter(|o| o.is_unknown()).count(), 4);
        for o in h.ops.iter().filter(|o| !o.is_unknown()) {
            assert!(o.complete_ns.unwrap() >= o.invoke_ns);
        }
        assert_eq!(check(&h, Budget::default()), Outcome::Ok);
    }

    #[test]
    #[should_panic(expected = "completed twice")]
    fn recorder_refuses_double_completion() {
        let rec = Recorder::new();
        let id = rec.invoke(1, NAME, Input::Read);
        rec.complete(id, Output::NotFound);
        rec.unknown(id);
    }

    #[test]
    fn budget_exhaustion_is_unknown() {
        // Twelve concurrent writes of the same value with unknown outcomes, reads seeing
        // it at versions 1..=12, then at version 1 again: impossible, but the search has
        // to try every subset of the writes before concluding.
        let mut ops = Vec::new();
        for i in 0..12u64 {
            ops.push(op(i as u32, i, None, put("x"), Output::Unknown));
        }
        for i in 0..13u64 {
            let t = 1000 + 10 * i;
            ops.push(op(99, t, Some(t + 5), Input::Read, val(i % 12 + 1, "x")));
        }
        let h = History::from(ops);
        assert_eq!(check(&h, Budget::states(50)), Outcome::Unknown);
        let report = check_report(&h, Budget::states(50));
        assert_eq!(report.undecided(), 1);
        assert!(check(&h, Budget::default()).is_violation());
        // Without the last read it is fine.
        let mut ops = h.ops;
        ops.pop();
        assert_ok(ops);
    }

    /// A history of `n` operations on one name by `clients` clients, each running one
    /// operation at a time, linearizable by construction: each operation takes effect at
    /// its own instant inside its interval (or, for `unknown_pct`% of the writes, times out
    /// and takes effect or not). Compare-and-sets expect the last version their client saw.
    /// `plant_stale` adds a read, after everything, of the acknowledged write before last.
    fn big_history(n: usize, clients: u64, unknown_pct: u64, plant_stale: bool) -> History {
        // Deterministic pseudo-randomness.
        let mut seed = 7u64;
        let mut rnd = move |k: u64| {
            seed = mix(seed);
            seed % k
        };
        let mut h = History::new();
        let mut state: Option<(u64, String)> = None;
        let mut version = 0;
        let mut busy_until = vec![0u64; clients as usize];
        let mut seen = vec![0u64; clients as usize];
        for i in 0..n {
            let t = 1000 * (i as u64 + 1);
            let c = (i as u64 % clients) as usize;
            let inv = (t - rnd(900)).max(busy_until[c] + 1);
            // Up to about `clients / 2` operations overlap.
            let cmp = t + rnd(400 * clients);
            busy_until[c] = cmp;
            let kind = rnd(4);
            let unknown = kind >= 2 && rnd(100) < unknown_pct;
            let applies = !unknown || rnd(2) == 0;
            let cur = state.as_ref().map_or(0, |s| s.0);
            let x = format!("v{i}");
            let (input, output) = match kind {
                0 | 1 => {
                    seen[c] = cur;
                    let out = state.clone().map_or(Output::NotFound, |(v, x)| val(v, &x));
                    (Input::Read, out)
                }
                2 => {
                    let mut out = Output::Failed;
                    if applies {
                        version += 1 + rnd(3);
                        state = Some((version, x.clone()));
                        seen[c] = version;
                        out = written(version);
                    }
                    (put(&x), out)
                }
                _ => {
                    let e = seen[c];
                    let mut out = Output::Failed;
                    if applies && e == cur {
                        version += 1 + rnd(3);
                        state = Some((version, x.clone()));
                        seen[c] = version;
                        out = written(version);
                    } else if applies {
                        seen[c] = cur;
                        out = conflict(cur);
                    }
                    (cas(e, &x), out)
                }
            };
            h.push(Operation {
                client: c as u32,
                name: NAME.to_string(),
                invoke_ns: inv,
                complete_ns: (!unknown).then_some(cmp),
                input,
                output: if unknown { Output::Unknown } else { output },
            });
        }
        if plant_stale {
            let mut acked: Vec<(u64, String)> = h
                .ops
                .iter()
                .filter(|o| !o.is_unknown())
                .filter_map(|o| match (&o.input, &o.output) {
                    (Input::Put { value }, Output::Written { version })
                    | (Input::Cas { value, .. }, Output::Written { version }) => {
                        Some((*version, value.clone()))
                    }
                    _ => None,
                })
                .collect();
            acked.sort();
            let (v, x) = acked[acked.len() - 2].clone();
            let end = h.ops.iter().filter_map(|o| o.complete_ns).max().unwrap();
            h.push(op(99, end + 10, Some(end + 20), Input::Read, val(v, &x)));
        }
        h
    }

    #[test]
    fn thousands_of_operations_per_name() {
        for (clients, unknown_pct) in [(8, 0), (8, 5), (32, 0), (32, 5)] {
            let started = Instant::now();
            let ok = check_report(
                &big_history(5000, clients, unknown_pct, false),
                Budget::default(),
            );
            assert_eq!(
                ok.outcome(),
                Outcome::Ok,
                "{clients} clients, {unknown_pct}%"
            );
            let bad = check_report(
                &big_history(5000, clients, unknown_pct, true),
                Budget::default(),
            );
            assert!(bad.outcome().is_violation(), "{}", bad.outcome());
            eprintln!(
                "5000 ops, {clients} clients, {unknown_pct}% of writes unknown: {} states to \
                 accept, {} to reject, {:?} in all",
                ok.states(),
                bad.states(),
                started.elapsed()
            );
        }
    }

    #[test]
    fn explanation_names_the_operations_involved() {
        let e = assert_violation(vec![
            op(1, 0, Some(10), put("a"), written(1)),
            op(1, 20, Some(30), put("b"), written(2)),
            op(3, 25, Some(60), Input::Read, val(2, "b")),
            op(2, 40, Some(50), Input::Read, val(1, "a")),
        ]);
        assert!(
            e.contains("#3 client 2 [0.000040 ms, 0.000050 ms] read -> \"a\"@v1"),
            "{e}"
        );
        assert!(e.contains("#1 client 1"), "{e}");
        assert!(e.contains("\"b\"@v2"), "{e}");
    }

    // -----------------------------------------------------------------------------------
    // Property tests

    /// One generated operation.
    #[derive(Clone, Debug)]
    struct Gen {
        name: u8,
        /// 0 put, 1 delete, 2 cas that matches, 3 cas that conflicts, 4.. read.
        kind: u8,
        /// How long before its linearization point it was invoked.
        before: u64,
        /// How long after its linearization point it completed.
        after: u64,
        /// 0: unknown, applied; 1: unknown, not applied; 2: failed; else definite.
        fate: u8,
        /// Other names' writes in the log before this one.
        gap: u64,
    }

    fn gen_op() -> impl Strategy<Value = Gen> {
        (0u8..3, 0u8..7, 0u64..400, 0u64..400, 0u8..12, 0u64..3).prop_map(
            |(name, kind, before, after, fate, gap)| Gen {
                name,
                kind,
                before,
                after,
                fate,
                gap,
            },
        )
    }

    /// Runs a sequential model: operation `i` takes effect at `100 * (i + 1)` (if it
    /// does), inside its `[invoke, complete]` interval, so the result is linearizable.
    fn generate(gens: &[Gen]) -> History {
        let mut state: BTreeMap<u8, (u64, String)> = BTreeMap::new();
        let mut log = 0u64;
        let mut h = History::new();
        for (i, g) in gens.iter().enumerate() {
            let t = 100 * (i as u64 + 1);
            let invoke_ns = t.saturating_sub(g.before);
            let unknown = g.fate <= 1;
            let applies = g.fate == 0 || g.fate > 2;
            let cur = state.get(&g.name).cloned();
            let cur_v = cur.as_ref().map_or(0, |c| c.0);
            let value = format!("n{}-{i}", g.name);
            let input = match g.kind {
                0 => put(&value),
                1 => Input::Delete,
                2 => cas(cur_v, &value),
                3 => cas(cur_v + 1 + u64::from(g.fate % 2), &value),
                _ => Input::Read,
            };
            let mut output = Output::Failed;
            if applies {
                output = match &input {
                    Input::Read => cur.map_or(Output::NotFound, |(v, x)| val(v, &x)),
                    Input::Cas {
                        expected_version, ..
                    } if *expected_version != cur_v => conflict(cur_v),
                    _ => {
                        log += 1 + g.gap;
                        match &input {
                            Input::Delete => state.remove(&g.name),
                            _ => state.insert(g.name, (log, value.clone())),
                        };
                        written(log)
                    }
                };
            }
            let (complete_ns, output) = if unknown {
                (None, Output::Unknown)
            } else {
                (Some(t + g.after), output)
            };
            h.push(Operation {
                client: (i % 5) as u32,
                name: format!("/p/{}", g.name),
                invoke_ns,
                complete_ns,
                input,
                output,
            });
        }
        h
    }

    /// A small operation for the differential test: values from a pool of three, versions
    /// and times from small ranges, any well-formed answer.
    fn small_op() -> impl Strategy<Value = Operation> {
        let input = prop_oneof![
            (0u8..3).prop_map(|v| put(&format!("{v}"))),
            Just(Input::Delete),
            (0u64..5, 0u8..3).prop_map(|(e, v)| cas(e, &format!("{v}"))),
            Just(Input::Read),
            Just(Input::Read),
        ];
        (input, 0u8..8, 1u64..7, 0u8..3, 0u64..12, 0u64..8).prop_map(
            |(input, out, version, value, invoke, len)| {
                let output = match (&input, out) {
                    (_, 0) => Output::Unknown,
                    (_, 1) => Output::Failed,
                    (Input::Read, 2) => Output::NotFound,
                    (Input::Read, _) => val(version, &format!("{value}")),
                    (
                        Input::Cas {
                            expected_version, ..
                        },
                        2 | 3,
                    ) if *expected_version != version % 4 => conflict(version % 4),
                    _ => written(version),
                };
                let unknown = output == Output::Unknown;
                Operation {
                    client: 0,
                    name: NAME.to_string(),
                    invoke_ns: invoke,
                    complete_ns: (!unknown).then_some(invoke + len),
                    input,
                    output,
                }
            },
        )
    }

    /// A small history on one name from the sequential model (values from a pool of four,
    /// so some repeat), with one operation changed by `how`/`d`: a version, a value, an
    /// answer, or its times. Linearizable or not, but usually close.
    fn near_linearizable(
        mut gens: Vec<Gen>,
        pick: prop::sample::Index,
        how: u8,
        d: u64,
    ) -> Vec<Operation> {
        for g in &mut gens {
            g.name = 0;
            g.before /= 2;
        }
        let mut ops = generate(&gens).ops;
        let pool = |v: &mut String| {
            let n: u64 = v
                .rsplit('-')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            *v = format!("{}", n % 4);
        };
        for o in &mut ops {
            o.name = NAME.to_string();
            match &mut o.input {
                Input::Put { value } | Input::Cas { value, .. } => pool(value),
                _ => {}
            }
            if let Output::Value { value, .. } = &mut o.output {
                pool(value);
            }
        }
        let o = &mut ops[pick.index(gens.len())];
        match (how, &mut o.output) {
            (0, Output::Value { version, .. } | Output::Written { version }) => {
                *version = version.saturating_sub(d) + (d % 2) * 2;
            }
            (1, Output::Value { value, .. }) => *value = format!("{d}"),
            (2, _) if o.input == Input::Read && o.complete_ns.is_some() => {
                o.output = Output::NotFound;
            }
            (3, _) => {
                if let Some(c) = &mut o.complete_ns {
                    *c = c.saturating_sub(60 * d).max(o.invoke_ns);
                }
            }
            (4, _) => {
                o.invoke_ns += 50 * d;
                if let Some(c) = &mut o.complete_ns {
                    *c = (*c).max(o.invoke_ns);
                }
            }
            (5, Output::Conflict { current }) => {
                if let Input::Cas {
                    expected_version, ..
                } = o.input
                {
                    if *current + d != expected_version {
                        *current += d;
                    }
                }
            }
            _ => {}
        }
        ops
    }

    /// A plain exhaustive search over the model (no pruning): every order that respects
    /// real time, each operation of unknown outcome taking effect somewhere or never.
    fn reference(ops: &[Operation]) -> bool {
        let ops: Vec<(u64, Option<u64>, Kind)> = ops
            .iter()
            .filter(|o| o.is_unknown() || o.output != Output::Failed)
            .filter(|o| !(o.is_unknown() && o.input == Input::Read))
            .map(|o| {
                let res = match &o.output {
                    _ if o.is_unknown() => Res::Unknown,
                    Output::Written { version } => Res::Written(*version),
                    Output::Conflict { current } => Res::Conflict(*current),
                    _ => Res::Unknown,
                };
                let kind = match (&o.input, &o.output) {
                    (Input::Read, Output::Value { version, value }) => Kind::ReadValue {
                        version: *version,
                        val: value.parse().unwrap(),
                        pin: Pin::Any,
                    },
                    (Input::Read, _) => Kind::ReadAbsent,
                    (Input::Put { value }, _) => Kind::Write {
                        val: Some(value.parse().unwrap()),
                        expected: None,
                        res,
                        pin: Pin::Any,
                    },
                    (Input::Delete, _) => Kind::Write {
                        val: None,
                        expected: None,
                        res,
                        pin: Pin::Any,
                    },
                    (
                        Input::Cas {
                            expected_version,
                            value,
                        },
                        _,
                    ) => Kind::Write {
                        val: Some(value.parse().unwrap()),
                        expected: Some(*expected_version),
                        res,
                        pin: Pin::Any,
                    },
                };
                (
                    o.invoke_ns,
                    if o.is_unknown() { None } else { o.complete_ns },
                    kind,
                )
            })
            .collect();
        fn go(
            ops: &[(u64, Option<u64>, Kind)],
            done: u32,
            s: State,
            seen: &mut HashSet<(u32, State)>,
        ) -> bool {
            let definite = ops
                .iter()
                .enumerate()
                .all(|(i, o)| o.1.is_none() || done & (1 << i) != 0);
            if definite {
                return true;
            }
            if !seen.insert((done, s)) {
                return false;
            }
            for (i, o) in ops.iter().enumerate() {
                if done & (1 << i) != 0 {
                    continue;
                }
                // Everything that completed before it was invoked goes first.
                let ready = ops
                    .iter()
                    .enumerate()
                    .all(|(j, p)| done & (1 << j) != 0 || p.1.is_none_or(|c| c >= o.0));
                if !ready {
                    continue;
                }
                if let Some(n) = step(s, &o.2) {
                    if go(ops, done | (1 << i), n, seen) {
                        return true;
                    }
                }
            }
            false
        }
        go(&ops, 0, INITIAL, &mut HashSet::new())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The pruned search agrees with a plain exhaustive one on small random histories,
        /// linearizable or not.
        #[test]
        fn agrees_with_exhaustive_search(ops in prop::collection::vec(small_op(), 0..9)) {
            let want = reference(&ops);
            let got = check(&History::from(ops.clone()), Budget::default());
            prop_assert_eq!(got.is_ok(), want, "{}", got);
            prop_assert!(got != Outcome::Unknown);
        }

        /// The same on small histories close to linearizable ones.
        #[test]
        fn agrees_with_exhaustive_search_near_linearizable(
            gens in prop::collection::vec(gen_op(), 1..13),
            pick in any::<prop::sample::Index>(),
            how in 0u8..6,
            d in 0u64..4,
        ) {
            let ops = near_linearizable(gens, pick, how, d);
            let want = reference(&ops);
            let got = check(&History::from(ops.clone()), Budget::default());
            prop_assert_eq!(got.is_ok(), want, "{}", got);
            prop_assert!(got != Outcome::Unknown);
        }

        #[test]
        fn generated_histories_are_linearizable(gens in prop::collection::vec(gen_op(), 0..250)) {
            let h = generate(&gens);
            let out = check(&h, Budget::default());
            prop_assert_eq!(&out, &Outcome::Ok, "{}", out);
        }

        #[test]
        fn a_read_of_a_never_written_value_is_rejected(
            gens in prop::collection::vec(gen_op(), 1..250),
            pick in any::<prop::sample::Index>(),
            version in 0u64..5,
        ) {
            let mut h = generate(&gens);
            let reads: Vec<usize> = h
                .ops
                .iter()
                .enumerate()
                .filter(|(_, o)| {
                    matches!(o.output, Output::Value { .. } | Output::NotFound) && !o.is_unknown()
                })
                .map(|(i, _)| i)
                .collect();
            prop_assume!(!reads.is_empty());
            let i = reads[pick.index(reads.len())];
            let version = match &h.ops[i].output {
                Output::Value { version: v, .. } if version == 0 => *v,
                _ => version,
            };
            h.ops[i].output = val(version, "never written");
            let out = check(&h, Budget::default());
            let is_violation = matches!(&out, Outcome::Violation { name, .. } if *name == h.ops[i].name);
            prop_assert!(is_violation, "{}", out);
        }

        /// Stronger than the property asked for: the search itself (not the pre-check)
        /// rejects a read that returns an older acknowledged state after a newer write was
        /// acknowledged and before the read started.
        #[test]
        fn a_planted_stale_read_is_rejected(gens in prop::collection::vec(gen_op(), 1..200)) {
            let mut h = generate(&gens);
            // Acknowledged plain puts of /p/0, in version order.
            let mut puts: Vec<(u64, String, u64)> = h
                .ops
                .iter()
                .filter(|o| o.name == "/p/0" && !o.is_unknown())
                .filter_map(|o| match (&o.input, &o.output) {
                    (Input::Put { value }, Output::Written { version }) => {
                        Some((*version, value.clone(), o.complete_ns.unwrap()))
                    }
                    _ => None,
                })
                .collect();
            puts.sort();
            prop_assume!(puts.len() >= 2);
            let (old_v, old_x, _) = puts[puts.len() - 2].clone();
            let end = h.ops.iter().filter_map(|o| o.complete_ns).max().unwrap();
            h.push(Operation {
                client: 77,
                name: "/p/0".to_string(),
                invoke_ns: end + 1,
                complete_ns: Some(end + 2),
                input: Input::Read,
                output: val(old_v, &old_x),
            });
            let out = check(&h, Budget::default());
            let is_violation = matches!(&out, Outcome::Violation { name, .. } if name == "/p/0");
            prop_assert!(is_violation, "{}", out);
        }
    }
}
