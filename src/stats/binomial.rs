//! Exact binomial tests for counts of wins.

/// Exact two-sided binomial p-value of `k` successes in `n` trials under
/// success probability `p`: the total probability of every outcome no more
/// likely than the one observed (the rule of R's `binom.test`, with the same
/// relative tolerance of 1e-7 so that outcomes tied in exact arithmetic are
/// not split by rounding). Exact rather than a normal approximation because
/// the catalogue's counts are small (15 cells).
///
/// # Panics
/// If `k > n` or `p` is outside `[0, 1]`: both are programming errors.
pub fn binomial_two_sided(k: u64, n: u64, p: f64) -> f64 {
    assert!(k <= n, "{k} successes in {n} trials");
    assert!((0.0..=1.0).contains(&p), "probability {p}");
    if p == 0.0 {
        return if k == 0 { 1.0 } else { 0.0 };
    }
    if p == 1.0 {
        return if k == n { 1.0 } else { 0.0 };
    }
    let pmf = pmf(n, p);
    let cutoff = pmf[k as usize] * (1.0 + 1e-7);
    let total: f64 = pmf.iter().filter(|&&x| x <= cutoff).sum();
    total.min(1.0)
}

/// The sign test: `wins` of `trials` paired comparisons (ties left out),
/// two-sided, under "either arm is as likely to win". A win count that a
/// fair coin would produce about as often says little, whatever the
/// criterion's threshold.
pub fn sign_test(wins: u64, trials: u64) -> f64 {
    binomial_two_sided(wins, trials, 0.5)
}

/// Up to this many trials, binomial coefficients are built exactly in f64
/// (every intermediate product stays below 2^53), so a fair-coin p-value is
/// an exact dyadic fraction: 12 wins of 15 gives 0.03515625 to the bit.
const EXACT_TRIALS: u64 = 50;

/// P(X = i) for i in 0..=n: exact coefficients for small n, the log-space
/// ratio recurrence (no factorial ever formed) beyond.
fn pmf(n: u64, p: f64) -> Vec<f64> {
    let q = 1.0 - p;
    let mut out = Vec::with_capacity(n as usize + 1);
    if n <= EXACT_TRIALS {
        let mut choose = 1.0f64;
        for i in 0..=n {
            if i > 0 {
                choose = choose * (n - i + 1) as f64 / i as f64;
            }
            out.push(choose * p.powi(i as i32) * q.powi((n - i) as i32));
        }
        return out;
    }
    let (lp, lq) = (p.ln(), q.ln());
    let mut ln_choose = 0.0;
    for i in 0..=n {
        if i > 0 {
            ln_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        out.push((ln_choose + i as f64 * lp + (n - i) as f64 * lq).exp());
    }
    out
}
