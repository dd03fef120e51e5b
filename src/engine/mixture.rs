//! Combining specialists per token (bets 04 and 18), in f64 from each
//! specialist's f32 logits:
//!
//! - the **mixture** averages probabilities: `log p(b) = logsumexp_i log
//!   p_i(b) - log N`;
//! - the **product of experts** adds log-probabilities and renormalises over
//!   the vocabulary: `log p(b) = s(b) - logsumexp_b' s(b')` with
//!   `s = sum_i log p_i`.
//!
//! The mixture of one specialist is that specialist; so is the product.

/// `log softmax` of one row of logits, in f64.
pub fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let m = logits.iter().map(|&x| x as f64).fold(f64::NEG_INFINITY, f64::max);
    let lse = m + logits.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
    logits.iter().map(|&x| x as f64 - lse).collect()
}

/// `log(sum(exp(x)))`, stable; `-inf` for an empty or all `-inf` input.
pub fn log_sum_exp(xs: impl IntoIterator<Item = f64> + Clone) -> f64 {
    let m = xs.clone().into_iter().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + xs.into_iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// The mixture's log-probability of byte `y`, given each specialist's
/// log-probability of it.
pub fn mixture_logp(logps_of_y: &[f64]) -> f64 {
    log_sum_exp(logps_of_y.iter().copied()) - (logps_of_y.len() as f64).ln()
}

/// The product of experts' log-probability of byte `y`, given each
/// specialist's full log-probability row.
pub fn product_logp(rows: &[Vec<f64>], y: usize) -> f64 {
    let vocab = rows[0].len();
    let s: Vec<f64> = (0..vocab).map(|b| rows.iter().map(|r| r[b]).sum()).collect();
    s[y] - log_sum_exp(s.iter().copied())
}

/// Per-byte log-probabilities of one predicted byte under every combiner.
#[derive(Debug, Clone, PartialEq)]
pub struct Combined {
    /// Each specialist's, in order.
    pub singles: Vec<f64>,
    pub mixture: f64,
    pub product: f64,
}

/// Every combiner's log-probability of `y` from each specialist's logits row.
pub fn combine(rows: &[&[f32]], y: usize) -> Combined {
    let logp: Vec<Vec<f64>> = rows.iter().map(|r| log_softmax(r)).collect();
    let singles: Vec<f64> = logp.iter().map(|r| r[y]).collect();
    Combined { mixture: mixture_logp(&singles), product: product_logp(&logp, y), singles }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Equal up to the f32 rounding of the logits the cases are given as.
    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn mixture_and_product_match_hand_computed_values_on_a_three_token_vocabulary() {
        // Specialist 1: p = (1/2, 1/4, 1/4); specialist 2: p = (1/4, 1/2, 1/4).
        let r1: Vec<f32> = [0.5f32, 0.25, 0.25].iter().map(|p| p.ln()).collect();
        let r2: Vec<f32> = [0.25f32, 0.5, 0.25].iter().map(|p| p.ln()).collect();
        let c = combine(&[&r1, &r2], 0);
        // Mixture: (1/2 + 1/4) / 2 = 3/8.
        assert!(close(c.mixture, (3.0f64 / 8.0).ln()), "{}", c.mixture);
        // Product: 1/8, 1/8, 1/16 normalised -> p(0) = (1/8) / (5/16) = 2/5.
        assert!(close(c.product, 0.4f64.ln()), "{}", c.product);
        assert!(close(c.singles[0], 0.5f64.ln()) && close(c.singles[1], 0.25f64.ln()));
        let c = combine(&[&r1, &r2], 2);
        assert!(close(c.mixture, 0.25f64.ln()));
        assert!(close(c.product, 0.2f64.ln()));
    }

    #[test]
    fn one_specialist_is_its_own_mixture_and_product() {
        let r: Vec<f32> = vec![1.5, -0.5, 0.25, 3.0];
        for y in 0..4 {
            let c = combine(&[&r], y);
            assert!(close(c.mixture, c.singles[0]) && close(c.product, c.singles[0]), "{c:?}");
        }
        // Shifting logits changes no probability.
        let shifted: Vec<f32> = r.iter().map(|x| x + 10.0).collect();
        assert!(close(log_softmax(&shifted)[3], log_softmax(&r)[3]));
        assert_eq!(log_sum_exp(std::iter::empty::<f64>()), f64::NEG_INFINITY);
    }
}
