//! Byzantine attacks on an aggregation round (bet 44): what the byzantine
//! workers send in place of their honest updates, given every honest
//! update of the round. Pure and seeded.
//!
//! - [`Attack::Scale`]: the honest update times a factor (the catalogue's 1000x);
//! - [`Attack::SignFlip`]: the honest update negated;
//! - [`Attack::Gaussian`]: seeded normal noise of a given standard deviation;
//! - [`Attack::LittleIsEnough`] (Baruch et al. 2019, "A little is enough"):
//!   per coordinate, the honest mean minus `z` honest standard deviations,
//!   small enough to sit inside the spread the median and Krum accept.

use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;

/// What a byzantine worker sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Attack {
    Scale { factor: f64 },
    SignFlip,
    Gaussian { sigma: f64 },
    LittleIsEnough { z: f64 },
}

/// Which `f` of `n` workers are byzantine, seeded, in ascending order.
pub fn byzantine_workers(n: usize, f: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut v = sample(&mut rng, n, f.min(n)).into_vec();
    v.sort_unstable();
    v
}

/// The standard normal CDF (Abramowitz and Stegun 7.1.26 for erf; absolute
/// error below 1.5e-7).
pub fn normal_cdf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.3275911 * x.abs() / std::f64::consts::SQRT_2);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let erf = 1.0 - poly * (-(x * x) / 2.0).exp();
    if x >= 0.0 { 0.5 * (1.0 + erf) } else { 0.5 * (1.0 - erf) }
}

/// The paper's `z` for `n` workers of which `f` are byzantine:
/// `Phi^-1((n - s) / n)` with `s = floor(n / 2 + 1) - f` (by bisection).
pub fn little_is_enough_z(n: usize, f: usize) -> f64 {
    let s = (n / 2 + 1).saturating_sub(f);
    let p = (n - s.min(n)) as f64 / n as f64;
    let (mut lo, mut hi) = (-10.0, 10.0);
    for _ in 0..200 {
        let mid = (lo + hi) / 2.0;
        if normal_cdf(mid) < p { lo = mid } else { hi = mid }
    }
    (lo + hi) / 2.0
}

impl Attack {
    /// The update a byzantine worker sends, from its own honest update
    /// `own` and the round's honest updates `honest`; `seed` fixes the
    /// noise (derive it from the round and the worker).
    pub fn forge(&self, own: &[f64], honest: &[&[f64]], seed: u64) -> Vec<f64> {
        match *self {
            Attack::Scale { factor } => own.iter().map(|&x| x * factor).collect(),
            Attack::SignFlip => own.iter().map(|&x| -x).collect(),
            Attack::Gaussian { sigma } => {
                let normals = crate::engine::model::normal_vec(own.len(), 1.0, seed);
                normals.iter().map(|&g| g as f64 * sigma).collect()
            }
            Attack::LittleIsEnough { z } => {
                let n = honest.len().max(1) as f64;
                (0..own.len())
                    .map(|j| {
                        let mean = honest.iter().map(|u| u[j]).sum::<f64>() / n;
                        let var = honest.iter().map(|u| (u[j] - mean).powi(2)).sum::<f64>() / n;
                        mean - z * var.sqrt()
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_attack_forges_what_it_declares() {
        let own = [1.0f64, -2.0, 0.5];
        assert_eq!(Attack::Scale { factor: 1000.0 }.forge(&own, &[], 0), [1000.0, -2000.0, 500.0]);
        assert_eq!(Attack::SignFlip.forge(&own, &[], 0), [-1.0, 2.0, -0.5]);
        let g = Attack::Gaussian { sigma: 2.0 };
        assert_eq!(g.forge(&own, &[], 7), g.forge(&own, &[], 7), "seeded");
        assert_ne!(g.forge(&own, &[], 7), g.forge(&own, &[], 8));
        let big = g.forge(&[0.0; 20_000], &[], 3);
        let sd = (big.iter().map(|&x| x.powi(2)).sum::<f64>() / big.len() as f64).sqrt();
        assert!((sd - 2.0).abs() < 0.05, "sample sd {sd}");
        // Honest coordinates (1, 3) and (2, 6): means 2 and 4, population sds 1 and 2.
        let honest: [&[f64]; 2] = [&[1.0, 2.0], &[3.0, 6.0]];
        assert_eq!(Attack::LittleIsEnough { z: 1.5 }.forge(&[0.0, 0.0], &honest, 0), [0.5, 1.0]);
    }

    #[test]
    fn byzantine_workers_are_seeded_and_the_paper_z_follows_its_formula() {
        let b = byzantine_workers(8, 2, 11);
        assert_eq!(b, byzantine_workers(8, 2, 11));
        assert_eq!(b.len(), 2);
        assert!(b[0] < b[1] && b[1] < 8);
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-9);
        assert!((normal_cdf(1.959964) - 0.975).abs() < 1e-6);
        // n = 8, f = 1: s = 4, Phi^-1(0.5) = 0; n = 50, f = 12: s = 14, Phi^-1(0.72) ~ 0.5828.
        assert!(little_is_enough_z(8, 1).abs() < 1e-6);
        assert!((little_is_enough_z(50, 12) - 0.5828).abs() < 1e-3, "{}", little_is_enough_z(50, 12));
    }
}
