//! Operation histories: what a client asked ([`Input`]) and got ([`Output`]), one
//! [`Operation`] with its invoke and completion times, a [`History`] of them, and the
//! [`Recorder`] concurrent clients share to build one; how operations print.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

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

fn fmt_ns(ns: u64) -> String {
    format!("{}.{:06} ms", ns / 1_000_000, ns % 1_000_000)
}

pub(super) fn fmt_value(v: &str) -> String {
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
