//! A Zipf distribution over the ranks `0..n`: rank `k` is drawn with a weight proportional
//! to `1 / (k + 1)^s`, with the caller's (seeded) random number generator. The skewed
//! workloads of the split tests draw regions and items from it, so that a few names are
//! hot and most are cold.

use rand::Rng;

/// Zipf weights over `0..n`, kept as a cumulative table (drawing is a binary search).
#[derive(Clone, Debug)]
pub struct Zipf {
    /// `cdf[k]`: the probability of drawing a rank `<= k`; the last entry is 1.
    cdf: Vec<f64>,
}

impl Zipf {
    /// Ranks `0..n` (at least one) with exponent `s` (0 is uniform; larger is more skewed;
    /// a negative or non-finite `s` is taken as 0).
    pub fn new(n: usize, s: f64) -> Zipf {
        let s = if s.is_finite() && s > 0.0 { s } else { 0.0 };
        let weights: Vec<f64> = (1..=n.max(1)).map(|k| (k as f64).powf(-s)).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        if let Some(last) = cdf.last_mut() {
            *last = 1.0;
        }
        Zipf { cdf }
    }

    /// The number of ranks.
    pub fn len(&self) -> usize {
        self.cdf.len()
    }

    /// Always false: there is at least one rank.
    pub fn is_empty(&self) -> bool {
        self.cdf.is_empty()
    }

    /// The probability of drawing rank `k` (0 outside `0..len`).
    pub fn probability(&self, k: usize) -> f64 {
        match k {
            0 => self.cdf.first().copied().unwrap_or(0.0),
            k if k < self.cdf.len() => self.cdf[k] - self.cdf[k - 1],
            _ => 0.0,
        }
    }

    /// One rank drawn with `rng`.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        let u: f64 = rng.gen();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn probabilities_sum_to_one_and_fall_with_the_rank() {
        let z = Zipf::new(50, 1.2);
        let sum: f64 = (0..z.len()).map(|k| z.probability(k)).sum();
        assert!((sum - 1.0).abs() < 1e-9, "{sum}");
        for k in 1..z.len() {
            assert!(z.probability(k) < z.probability(k - 1), "rank {k}");
        }
        assert_eq!(z.probability(50), 0.0);
        // 1/(k+1)^s up to the normalisation.
        let ratio = z.probability(0) / z.probability(1);
        assert!((ratio - 2f64.powf(1.2)).abs() < 1e-9, "{ratio}");
    }

    #[test]
    fn exponent_zero_or_invalid_is_uniform_and_zero_ranks_is_one() {
        for s in [0.0, -1.0, f64::NAN] {
            let z = Zipf::new(4, s);
            for k in 0..4 {
                assert!((z.probability(k) - 0.25).abs() < 1e-12, "s {s}, rank {k}");
            }
        }
        let one = Zipf::new(0, 1.0);
        assert_eq!(one.len(), 1);
        assert_eq!(one.sample(&mut StdRng::seed_from_u64(1)), 0);
    }

    #[test]
    fn draws_follow_the_weights_and_replay_with_the_seed() {
        let z = Zipf::new(8, 1.5);
        let mut counts = [0u32; 8];
        let mut rng = StdRng::seed_from_u64(7);
        let draws = 40_000;
        for _ in 0..draws {
            counts[z.sample(&mut rng)] += 1;
        }
        for (k, &n) in counts.iter().enumerate() {
            let seen = f64::from(n) / f64::from(draws);
            assert!((seen - z.probability(k)).abs() < 0.01, "rank {k}: {seen}");
        }
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..32).map(|_| z.sample(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
    }
}
