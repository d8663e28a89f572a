//! The register model one name is checked against: its [`State`], the checker's view of one
//! operation ([`POp`], [`Kind`]) and [`step`], which applies an operation to a state (or
//! refuses it); the sentinels the other rooms share.

/// The model state. `lb` is the smallest version the newest write (in linearization order)
/// can have; it is exact unless the state is `AtLeast` or came from an unknown delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct State {
    pub(super) lb: u64,
    pub(super) cur: Cur,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Cur {
    /// Nothing (never written, or deleted).
    Absent,
    /// This value (interned) at version `lb`.
    Exact(u32),
    /// This value, written by an operation of unknown outcome, at a version ≥ `lb` that no
    /// one observed yet.
    AtLeast(u32),
}

pub(super) const INITIAL: State = State {
    lb: 0,
    cur: Cur::Absent,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Res {
    Written(u64),
    Conflict(u64),
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
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
pub(super) struct POp {
    /// Index in the history.
    pub(super) idx: usize,
    pub(super) kind: Kind,
    pub(super) invoke: u64,
    /// `None`: unknown outcome.
    pub(super) complete: Option<u64>,
    /// For an acknowledged write, its rank in version order; else NONE.
    pub(super) rank: usize,
    /// For a read of a value: no other write wrote that value.
    pub(super) unique_value: bool,
    /// For a write of unknown outcome: nothing can observe it after this instant.
    pub(super) observers_end: u64,
    /// For a write of unknown outcome: its class of interchangeable writes, or NONE.
    pub(super) class: usize,
}

/// Applies `kind` to `s`; `None` if that is not a legal step.
pub(super) fn step(s: State, kind: &Kind) -> Option<State> {
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

/// Which write of unknown outcome a seen version (read, or seen by a compare-and-set) may
/// belong to. In a linearization versions are unique per name, so a version an
/// acknowledged write got belongs to no such write, and a version a read saw with value
/// `x` belongs to a write of `x`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pin {
    Any,
    Only(u32),
    No,
}

impl Pin {
    pub(super) fn allows(self, x: u32) -> bool {
        match self {
            Pin::Any => true,
            Pin::Only(y) => x == y,
            Pin::No => false,
        }
    }
}

/// The version a read or a compare-and-set saw, and its [`Pin`].
pub(super) fn seen_pin(kind: &Kind) -> Option<(u64, Pin)> {
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

/// True if `p`, applied in `before` giving `after`, can be linearized right away without
/// losing any linearization: an operation that changes nothing (a read, a refused
/// compare-and-set) can always move earlier to a point where it is valid; a read that pins
/// the version of the only write of its value sees that write's state, so nothing comes
/// between them.
pub(super) fn forced(p: &POp, before: State, after: State) -> bool {
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

pub(super) const NONE: usize = usize::MAX;

pub(super) const NONE32: u32 = u32::MAX;
