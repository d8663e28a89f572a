//! The search for a linearization of one name (Wing–Gong / Lowe with Porcupine's memo of
//! visited (linearized set, state) pairs, hashed with Zobrist keys), over a linked list of
//! call and return events; it answers Ok, out of budget, or where it got stuck.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::time::Instant;

use super::model::{forced, step, Cur, Kind, POp, State, INITIAL, NONE};
use super::prepare::Part;

/// Where the search got stuck with the most operations linearized.
pub(super) struct Stuck {
    /// Operations linearized.
    pub(super) depth: usize,
    /// The operation that had to be linearized next (its return was reached).
    pub(super) op: usize,
    /// The model state there.
    pub(super) state: State,
    /// Acknowledged writes linearized (the next one in version order has this rank).
    pub(super) writes_done: usize,
    /// The last few operations linearized, oldest first.
    pub(super) tail: Vec<usize>,
    /// Other operations that could have gone next.
    pub(super) pending: Vec<usize>,
    /// How many of them there were.
    pub(super) pending_total: usize,
}

pub(super) enum Search {
    Ok,
    Stuck(Stuck),
    Budget,
}

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
pub(super) fn mix(mut z: u64) -> u64 {
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
pub(super) fn search(part: &Part<'_>, max_states: u64, deadline: Option<Instant>) -> (Search, u64) {
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
