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
    let pmf = log_pmf(n, p);
    let observed = pmf[k as usize];
    let cutoff = observed + (1.0f64 + 1e-7).ln();
    let total: f64 = pmf.iter().filter(|&&lp| lp <= cutoff).map(|lp| lp.exp()).sum();
    total.min(1.0)
}

/// The sign test: `wins` of `trials` paired comparisons (ties left out),
/// two-sided, under "either arm is as likely to win". A win count that a
/// fair coin would produce about as often says little, whatever the
/// criterion's threshold.
pub fn sign_test(wins: u64, trials: u64) -> f64 {
    binomial_two_sided(wins, trials, 0.5)
}

/// ln P(X = i) for i in 0..=n, built by the ratio recurrence so no factorial
/// is ever formed (exact enough for any n a catalogue has).
fn log_pmf(n: u64, p: f64) -> Vec<f64> {
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    let mut ln_choose = 0.0;
    let mut out = Vec::with_capacity(n as usize + 1);
    for i in 0..=n {
        if i > 0 {
            ln_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        out.push(ln_choose + i as f64 * lp + (n - i) as f64 * lq);
    }
    out
}
