//! Seeded fault injection for in-process anchors: partitions, isolation, request and
//! response drops, delays (which also reorder), all decided by one `StdRng` seeded from a
//! printed seed. Installed in each anchor's and client's network layer through
//! `resolver::net::FaultInjector`.
//!
//! The nemesis schedule (which fault, when, against whom) replays exactly from the seed;
//! individual message fates are drawn from the same seeded generator in the order messages
//! are sent, which thread scheduling can perturb.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use resolver::net::{Fate, FaultInjector, Protocol};
use resolver::PeerId;

/// Random message faults in force.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Noise {
    /// Probability of losing a request.
    pub drop_request: f64,
    /// Probability of losing a response (the receiver acted).
    pub drop_response: f64,
    /// Probability of delaying a message.
    pub delay: f64,
    /// Largest delay.
    pub delay_max: Duration,
}

#[derive(Debug)]
struct State {
    rng: StdRng,
    blocked: BTreeSet<(PeerId, PeerId)>,
    noise: Noise,
    injected: BTreeMap<&'static str, u64>,
}

/// The fault layer shared by every anchor and client of one campaign.
#[derive(Debug)]
pub struct SeededFaults {
    state: Mutex<State>,
}

/// How long a sender waits before it learns that a blocked or dropped request was lost.
const LOSS_NOTICE: Duration = Duration::from_millis(30);

impl SeededFaults {
    /// A fault layer with nothing in force.
    pub fn new(seed: u64) -> Arc<SeededFaults> {
        Arc::new(SeededFaults {
            state: Mutex::new(State {
                rng: StdRng::seed_from_u64(seed ^ 0x6661_756c_7473),
                blocked: BTreeSet::new(),
                noise: Noise::default(),
                injected: BTreeMap::new(),
            }),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    /// Cuts every link between `a` and `b`, both directions.
    pub fn partition(&self, a: &[PeerId], b: &[PeerId]) {
        self.with(|s| {
            for x in a {
                for y in b {
                    s.blocked.insert((*x, *y));
                    s.blocked.insert((*y, *x));
                }
            }
        });
    }

    /// Cuts `peer` off from everyone in `others`.
    pub fn isolate(&self, peer: PeerId, others: &[PeerId]) {
        self.partition(&[peer], others);
    }

    /// Sets the random message faults.
    pub fn set_noise(&self, noise: Noise) {
        self.with(|s| s.noise = noise);
    }

    /// Restores every link and stops all noise.
    pub fn heal(&self) {
        self.with(|s| {
            s.blocked.clear();
            s.noise = Noise::default();
        });
    }

    /// Messages affected so far, by kind.
    pub fn injected(&self) -> BTreeMap<&'static str, u64> {
        self.with(|s| s.injected.clone())
    }
}

impl FaultInjector for SeededFaults {
    fn fate(&self, from: PeerId, to: PeerId, _protocol: Protocol) -> Fate {
        self.with(|s| {
            let mut count = |k: &'static str| *s.injected.entry(k).or_insert(0) += 1;
            if s.blocked.contains(&(from, to)) {
                count("blocked");
                return Fate::DropRequest(LOSS_NOTICE);
            }
            let n = s.noise;
            let roll: f64 = s.rng.gen();
            if roll < n.drop_request {
                s.injected
                    .entry("dropped_request")
                    .and_modify(|c| *c += 1)
                    .or_insert(1);
                return Fate::DropRequest(LOSS_NOTICE);
            }
            if roll < n.drop_request + n.drop_response {
                s.injected
                    .entry("dropped_response")
                    .and_modify(|c| *c += 1)
                    .or_insert(1);
                return Fate::DropResponse;
            }
            if roll < n.drop_request + n.drop_response + n.delay && !n.delay_max.is_zero() {
                let ms = s.rng.gen_range(1..=n.delay_max.as_millis().max(1) as u64);
                s.injected
                    .entry("delayed")
                    .and_modify(|c| *c += 1)
                    .or_insert(1);
                return Fate::Delay(Duration::from_millis(ms));
            }
            Fate::Deliver
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_block_both_ways_and_heal() {
        let f = SeededFaults::new(1);
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        f.partition(&[a], &[b]);
        assert!(matches!(f.fate(a, b, Protocol::Raft), Fate::DropRequest(_)));
        assert!(matches!(f.fate(b, a, Protocol::Raft), Fate::DropRequest(_)));
        assert_eq!(f.fate(a, c, Protocol::Raft), Fate::Deliver);
        f.heal();
        assert_eq!(f.fate(a, b, Protocol::Raft), Fate::Deliver);
        assert_eq!(f.injected().get("blocked"), Some(&2));
    }

    #[test]
    fn noise_is_reproducible_from_the_seed() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let run = || {
            let f = SeededFaults::new(42);
            f.set_noise(Noise {
                drop_request: 0.2,
                drop_response: 0.2,
                delay: 0.2,
                delay_max: Duration::from_millis(9),
            });
            (0..200)
                .map(|_| f.fate(a, b, Protocol::Mutate))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
        assert!(run().contains(&Fate::DropResponse));
    }
}
