//! The bench's randomness: a seeded xorshift RNG and the account samplers.
//!
//! Both are tiny and fully determined by the seed, so a bench run is reproducible: the
//! same flags and seed send the same transfers in the same batches.

/// xorshift64* (Vigna), seeded through splitmix64 so that any seed, 0 included, gives a
/// well-mixed non-zero state. Not cryptographic; plenty for picking accounts.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng { state: if z == 0 { 1 } else { z } }
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-32 for the
    /// account counts a bench uses).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Zipfian over `0..n`: index `k` has probability proportional to `1 / (k + 1)^s`, so
/// index 0 is the hottest. Sampling inverts a precomputed CDF by binary search:
/// `n` f64s of memory and O(log n) per draw, exact up to rounding.
#[derive(Clone, Debug)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, exponent: f64) -> Zipf {
        assert!(n > 0, "zipfian over an empty range");
        assert!(exponent.is_finite() && exponent >= 0.0, "zipfian exponent must be >= 0");
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 0..n {
            total += 1.0 / ((k + 1) as f64).powf(exponent);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        // Rounding must not leave a gap at the top.
        *cdf.last_mut().expect("n > 0") = 1.0;
        Zipf { cdf }
    }

    /// The probability of index `k`.
    #[cfg(test)]
    pub fn probability(&self, k: usize) -> f64 {
        self.cdf[k] - if k == 0 { 0.0 } else { self.cdf[k - 1] }
    }

    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cdf.partition_point(|&c| c <= u).min(self.cdf.len() - 1)
    }
}

/// How the bench picks the accounts of a transfer.
#[derive(Clone, Debug)]
pub enum AccountSampler {
    Uniform { count: u64 },
    Zipfian(Zipf),
}

impl AccountSampler {
    /// An account index in `0..count`.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        match self {
            AccountSampler::Uniform { count } => rng.below(*count),
            AccountSampler::Zipfian(zipf) => zipf.sample(rng) as u64,
        }
    }

    /// Two distinct account indices (debit, credit); needs at least two accounts.
    pub fn pair(&self, rng: &mut Rng) -> (u64, u64) {
        let debit = self.sample(rng);
        loop {
            let credit = self.sample(rng);
            if credit != debit {
                return (debit, credit);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_reproducible_and_seed_dependent() {
        let a: Vec<u64> = (0..5).scan(Rng::new(7), |r, _| Some(r.next_u64())).collect();
        let b: Vec<u64> = (0..5).scan(Rng::new(7), |r, _| Some(r.next_u64())).collect();
        let c: Vec<u64> = (0..5).scan(Rng::new(8), |r, _| Some(r.next_u64())).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut zero = Rng::new(0);
        assert_ne!(zero.next_u64(), zero.next_u64());
    }

    #[test]
    fn uniform_covers_the_range_evenly() {
        let mut rng = Rng::new(1);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[rng.below(10) as usize] += 1;
        }
        for count in counts {
            assert!((9_500..10_500).contains(&count), "{counts:?}");
        }
        for _ in 0..1000 {
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
        }
    }

    #[test]
    fn zipf_cdf_is_normalized_and_monotone() {
        let zipf = Zipf::new(1000, 0.99);
        assert_eq!(*zipf.cdf.last().unwrap(), 1.0);
        assert!(zipf.cdf.windows(2).all(|w| w[0] <= w[1]));
        // p(k) / p(0) = 1 / (k + 1)^s
        let ratio = zipf.probability(1) / zipf.probability(0);
        assert!((ratio - 0.5f64.powf(0.99)).abs() < 1e-12);
        // s = 0 is uniform
        let flat = Zipf::new(4, 0.0);
        for k in 0..4 {
            assert!((flat.probability(k) - 0.25).abs() < 1e-12);
        }
    }

    #[test]
    fn zipf_samples_follow_the_distribution() {
        let n = 100;
        let zipf = Zipf::new(n, 1.0);
        let mut rng = Rng::new(42);
        let draws = 400_000;
        let mut counts = vec![0u32; n];
        for _ in 0..draws {
            counts[zipf.sample(&mut rng)] += 1;
        }
        // Every bucket within 5 standard deviations of its expectation.
        for (k, &count) in counts.iter().enumerate() {
            let p = zipf.probability(k);
            let expected = p * draws as f64;
            let sd = (draws as f64 * p * (1.0 - p)).sqrt();
            assert!(
                (f64::from(count) - expected).abs() < 5.0 * sd + 1.0,
                "index {k}: {count} draws, expected {expected:.0}"
            );
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[9] && counts[9] > counts[99]);
    }

    #[test]
    fn pairs_are_distinct_and_in_range() {
        let mut rng = Rng::new(3);
        for sampler in
            [AccountSampler::Uniform { count: 2 }, AccountSampler::Zipfian(Zipf::new(3, 2.0))]
        {
            for _ in 0..1000 {
                let (debit, credit) = sampler.pair(&mut rng);
                assert_ne!(debit, credit);
                assert!(debit < 3 && credit < 3);
            }
        }
    }
}
