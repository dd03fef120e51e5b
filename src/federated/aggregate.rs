//! Aggregation rules for federated updates (bet 44): pure functions from
//! `n` workers' update vectors (gradients or pseudo-gradients, all of one
//! length) to one update, all in f64: a pseudo-gradient formed in f64 from
//! f32 parameters is exact, so a lone worker's update reaches the outer
//! step unrounded.
//!
//! - [`mean`]: the plain average;
//! - [`median`]: coordinate-wise median (the mean of the two middle values
//!   for an even count);
//! - [`trimmed_mean`]: per coordinate, drop the `floor(trim * n)` largest
//!   and smallest values and average the rest;
//! - [`krum`] and [`multi_krum`] (Blanchard et al. 2017): score each update
//!   by the summed squared distances to its `n - f - 2` nearest others and
//!   take the best one, or average the best `m`; every update counts once,
//!   never weighted by anything a worker reports about itself;
//! - [`bulyan`] (El Mhamdi et al. 2018): pick `n - 2f` updates by repeated
//!   Krum, then per coordinate average the `n - 4f` values closest to their
//!   median; it needs `n >= 4f + 3`.
//!
//! Ties go to the lowest worker index, so every rule is deterministic. A
//! NaN or infinite value is refused with the worker and coordinate named.

/// What an aggregation can refuse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AggregateError {
    #[error("no updates to aggregate")]
    Empty,
    #[error("worker {worker}'s update has {got} values, worker 0's has {expected}")]
    Length { worker: usize, expected: usize, got: usize },
    #[error("worker {worker}'s update is not finite at coordinate {coord} ({value})")]
    NonFinite { worker: usize, coord: usize, value: f64 },
    #[error("{rule} with f = {f} needs at least {needed} updates, got {n}")]
    TooFew { rule: &'static str, n: usize, f: usize, needed: usize },
    #[error("{rule}: {detail}")]
    Param { rule: &'static str, detail: String },
}

type Result<T> = std::result::Result<T, AggregateError>;

/// Check that `updates` are non-empty, of one length and finite.
fn checked(updates: &[&[f64]]) -> Result<usize> {
    let first = updates.first().ok_or(AggregateError::Empty)?;
    for (worker, u) in updates.iter().enumerate() {
        if u.len() != first.len() {
            return Err(AggregateError::Length { worker, expected: first.len(), got: u.len() });
        }
        if let Some((coord, &value)) = u.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(AggregateError::NonFinite { worker, coord, value });
        }
    }
    Ok(first.len())
}

fn average(updates: &[&[f64]], d: usize) -> Vec<f64> {
    (0..d).map(|j| updates.iter().map(|u| u[j]).sum::<f64>() / updates.len() as f64).collect()
}

/// Each coordinate's values, sorted ascending.
fn column(updates: &[&[f64]], j: usize) -> Vec<f64> {
    let mut c: Vec<f64> = updates.iter().map(|u| u[j]).collect();
    c.sort_by(f64::total_cmp);
    c
}

fn median_of_sorted(c: &[f64]) -> f64 {
    let n = c.len();
    if n % 2 == 1 { c[n / 2] } else { (c[n / 2 - 1] + c[n / 2]) / 2.0 }
}

/// The plain average.
pub fn mean(updates: &[&[f64]]) -> Result<Vec<f64>> {
    let d = checked(updates)?;
    Ok(average(updates, d))
}

/// The coordinate-wise median.
pub fn median(updates: &[&[f64]]) -> Result<Vec<f64>> {
    let d = checked(updates)?;
    Ok((0..d).map(|j| median_of_sorted(&column(updates, j))).collect())
}

/// The coordinate-wise mean after dropping the `floor(trim * n)` largest
/// and smallest values; `trim` in `[0, 0.5)` and at least one value left.
pub fn trimmed_mean(updates: &[&[f64]], trim: f64) -> Result<Vec<f64>> {
    let d = checked(updates)?;
    let n = updates.len();
    if !(0.0..0.5).contains(&trim) {
        return Err(AggregateError::Param { rule: "trimmed mean", detail: format!("trim {trim} is not in [0, 0.5)") });
    }
    let k = (trim * n as f64).floor() as usize;
    if 2 * k >= n {
        return Err(AggregateError::TooFew { rule: "trimmed mean", n, f: k, needed: 2 * k + 1 });
    }
    Ok((0..d)
        .map(|j| {
            let c = column(updates, j);
            c[k..n - k].iter().sum::<f64>() / (n - 2 * k) as f64
        })
        .collect())
}

fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum()
}

/// Krum scores of `updates` with `k` nearest neighbours each.
fn scores(updates: &[&[f64]], k: usize) -> Vec<f64> {
    let n = updates.len();
    (0..n)
        .map(|i| {
            let mut d: Vec<f64> = (0..n).filter(|&j| j != i).map(|j| sq_dist(updates[i], updates[j])).collect();
            d.sort_by(f64::total_cmp);
            d.iter().take(k).sum()
        })
        .collect()
}

/// Indices of the `m` best-scored updates, best first (ties: lowest index).
fn best(scores: &[f64], m: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    idx.truncate(m);
    idx
}

fn krum_needs(rule: &'static str, n: usize, f: usize) -> Result<()> {
    if n < 2 * f + 3 {
        return Err(AggregateError::TooFew { rule, n, f, needed: 2 * f + 3 });
    }
    Ok(())
}

/// Krum: the update whose `n - f - 2` nearest others are closest.
pub fn krum(updates: &[&[f64]], f: usize) -> Result<Vec<f64>> {
    multi_krum(updates, f, 1)
}

/// Multi-Krum: the average of the `m` best-scored updates (`1 <= m <= n`).
pub fn multi_krum(updates: &[&[f64]], f: usize, m: usize) -> Result<Vec<f64>> {
    let d = checked(updates)?;
    let n = updates.len();
    krum_needs("Krum", n, f)?;
    if m == 0 || m > n {
        return Err(AggregateError::Param { rule: "Multi-Krum", detail: format!("m = {m} is not in 1..={n}") });
    }
    let chosen: Vec<&[f64]> = best(&scores(updates, n - f - 2), m).into_iter().map(|i| updates[i]).collect();
    Ok(average(&chosen, d))
}

/// Bulyan: `n - 2f` updates chosen by repeated Krum (each round scores the
/// remaining ones with `max(1, r - f - 2)` neighbours, `r` of them left),
/// then per coordinate the mean of the `n - 4f` chosen values closest to
/// their median (ties: the smaller value).
pub fn bulyan(updates: &[&[f64]], f: usize) -> Result<Vec<f64>> {
    let d = checked(updates)?;
    let n = updates.len();
    if n < 4 * f + 3 {
        return Err(AggregateError::TooFew { rule: "Bulyan", n, f, needed: 4 * f + 3 });
    }
    let mut left: Vec<usize> = (0..n).collect();
    let mut chosen = Vec::with_capacity(n - 2 * f);
    while chosen.len() < n - 2 * f {
        let rest: Vec<&[f64]> = left.iter().map(|&i| updates[i]).collect();
        let k = (rest.len().saturating_sub(f + 2)).max(1);
        let pick = best(&scores(&rest, k), 1)[0];
        chosen.push(updates[left.remove(pick)]);
    }
    let beta = n - 4 * f;
    Ok((0..d)
        .map(|j| {
            let c = column(&chosen, j);
            let med = median_of_sorted(&c);
            let mut by_distance = c.clone();
            by_distance.sort_by(|a, b| (a - med).abs().total_cmp(&(b - med).abs()).then(a.total_cmp(b)));
            by_distance[..beta].iter().sum::<f64>() / beta as f64
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(v: &[&[f64]]) -> Vec<Vec<f64>> {
        v.iter().map(|r| r.to_vec()).collect()
    }

    fn refs(v: &[Vec<f64>]) -> Vec<&[f64]> {
        v.iter().map(Vec::as_slice).collect()
    }

    #[test]
    fn mean_median_and_trimmed_mean_match_hand_computed_values() {
        let u = rows(&[&[1.0, 2.0], &[3.0, 4.0], &[5.0, 9.0]]);
        assert_eq!(mean(&refs(&u)).unwrap(), [3.0, 5.0]);
        assert_eq!(median(&refs(&u)).unwrap(), [3.0, 4.0]);
        // An even count takes the mean of the middle two; ties are plain values.
        let even = rows(&[&[1.0], &[100.0], &[2.0], &[3.0]]);
        assert_eq!(median(&refs(&even)).unwrap(), [2.5]);
        assert_eq!(median(&refs(&rows(&[&[2.0], &[5.0], &[2.0]]))).unwrap(), [2.0]);
        // Trim 1 of 4 at each end: mean(2, 3).
        assert_eq!(trimmed_mean(&refs(&even), 0.25).unwrap(), [2.5]);
        assert_eq!(trimmed_mean(&refs(&even), 0.0).unwrap(), mean(&refs(&even)).unwrap());
        assert!(matches!(trimmed_mean(&refs(&even), 0.5), Err(AggregateError::Param { .. })));
        let two = rows(&[&[1.0], &[2.0]]);
        assert_eq!(trimmed_mean(&refs(&two), 0.49).unwrap(), [1.5], "floor(0.98) = 0 trimmed");
    }

    #[test]
    fn krum_and_multi_krum_pick_the_clustered_updates() {
        // 1-d points 0, 1, 2, 3, 100 with f = 1: 2 neighbours each. Scores:
        // 0 -> 1 + 4 = 5; 1 -> 1 + 1 = 2; 2 -> 1 + 1 = 2; 3 -> 1 + 4 = 5; 100 -> 97^2 + 98^2.
        let u = rows(&[&[0.0], &[1.0], &[2.0], &[3.0], &[100.0]]);
        assert_eq!(krum(&refs(&u), 1).unwrap(), [1.0], "a tie goes to the lower index");
        assert_eq!(multi_krum(&refs(&u), 1, 2).unwrap(), [1.5]);
        assert_eq!(multi_krum(&refs(&u), 1, 3).unwrap(), [1.0], "then worker 0 (score 5, before worker 3)");
        assert_eq!(krum(&refs(&u), 2).unwrap_err(), AggregateError::TooFew { rule: "Krum", n: 5, f: 2, needed: 7 });
        assert!(matches!(multi_krum(&refs(&u), 1, 6), Err(AggregateError::Param { .. })));
    }

    #[test]
    fn bulyan_matches_a_hand_computed_case_and_refuses_too_few_workers() {
        // 0..=5 and 100, f = 1: repeated Krum chooses 2, 3, 1, 4, 0; their
        // median is 2 and the 3 values closest to it are 1, 2, 3.
        let u = rows(&[&[0.0], &[1.0], &[2.0], &[3.0], &[4.0], &[5.0], &[100.0]]);
        assert_eq!(bulyan(&refs(&u), 1).unwrap(), [2.0]);
        let six = &u[..6];
        assert_eq!(
            bulyan(&refs(six), 1).unwrap_err(),
            AggregateError::TooFew { rule: "Bulyan", n: 6, f: 1, needed: 7 }
        );
        // With f = 0 every update is chosen and every value kept: the mean.
        assert_eq!(bulyan(&refs(&u), 0).unwrap(), [115.0f64 / 7.0]);
    }

    #[test]
    fn bad_input_is_refused_by_name() {
        assert_eq!(mean(&[]).unwrap_err(), AggregateError::Empty);
        let ragged = rows(&[&[1.0, 2.0], &[3.0]]);
        assert_eq!(median(&refs(&ragged)).unwrap_err(), AggregateError::Length { worker: 1, expected: 2, got: 1 });
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let u = rows(&[&[1.0, 2.0], &[3.0, bad]]);
            for rule in [mean, median] {
                match rule(&refs(&u)) {
                    Err(AggregateError::NonFinite { worker: 1, coord: 1, .. }) => {}
                    other => panic!("{bad}: {other:?}"),
                }
            }
            assert!(matches!(
                krum(&refs(&rows(&[&[0.0], &[1.0], &[2.0], &[bad]])), 0),
                Err(AggregateError::NonFinite { worker: 3, .. })
            ));
        }
        let e = bulyan(&refs(&rows(&[&[0.0], &[0.0], &[0.0]])), 1).unwrap_err().to_string();
        assert_eq!(e, "Bulyan with f = 1 needs at least 7 updates, got 3");
    }
}
