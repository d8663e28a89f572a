//! One name's operations made ready for the search ([`Part`]): validated and converted by
//! [`prepare`], checked for reads nothing could explain ([`impossible_reads`]), and given
//! the hints that let the search prune ([`hints`]: who can observe an unknown write, which
//! writes are interchangeable).

use std::collections::{HashMap, HashSet};

use super::history::{fmt_value, History, Input, Output};
use super::model::{seen_pin, step, Cur, Kind, POp, Pin, Res, State, NONE, NONE32};

/// The operations of one name, ready to search.
pub(super) struct Part<'h> {
    pub(super) history: &'h History,
    pub(super) name: &'h str,
    pub(super) ops: Vec<POp>,
    pub(super) values: Vec<&'h str>,
    /// For each write of unknown outcome, the operations that could observe it, by invoke.
    pub(super) observers: Vec<Vec<usize>>,
    /// Values no read returned and no compare-and-set may pin map to NONE32 (no one can
    /// tell them apart); the others to themselves.
    pub(super) canon: Vec<u32>,
    /// Number of classes of interchangeable writes.
    pub(super) classes: usize,
}

impl Part<'_> {
    pub(super) fn op(&self, i: usize) -> String {
        let p = &self.ops[i];
        format!("#{} {}", p.idx, self.history.ops[p.idx])
    }

    pub(super) fn state(&self, s: State) -> String {
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
    pub(super) fn why(&self, s: State, kind: &Kind) -> String {
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

/// Validates and converts the operations of one name; drops failed operations, unknown
/// reads and unknown writes nothing can observe. `Err`: an explanation of a violation found
/// without searching.
pub(super) fn prepare<'h>(
    history: &'h History,
    name: &'h str,
    idx: &[usize],
) -> Result<Part<'h>, String> {
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
