//! Plain `f64` versions of every kernel: the test oracle, written for clarity
//! rather than speed (one formula per line, no fusion, no reuse).

use crate::AdamW;

/// Reference RMSNorm forward.
pub fn rmsnorm_fwd(x: &[f64], g: &[f64], eps: f64) -> Vec<f64> {
    let d = g.len();
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks(d) {
        let ms = row.iter().map(|v| v * v).sum::<f64>() / d as f64;
        let s = 1.0 / (ms + eps).sqrt();
        y.extend(row.iter().zip(g).map(|(v, gv)| v * s * gv));
    }
    y
}

/// Reference RMSNorm backward: `(dx, dgain)`.
pub fn rmsnorm_bwd(x: &[f64], g: &[f64], eps: f64, dy: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let d = g.len();
    let mut dx = Vec::with_capacity(x.len());
    let mut dg = vec![0.0; d];
    for (row, drow) in x.chunks(d).zip(dy.chunks(d)) {
        let ms = row.iter().map(|v| v * v).sum::<f64>() / d as f64;
        let s = 1.0 / (ms + eps).sqrt();
        // y_j = x_j g_j s; ds/dx_k = -x_k s^3 / d
        for k in 0..d {
            let mut acc = drow[k] * g[k] * s;
            for j in 0..d {
                acc -= drow[j] * g[j] * row[j] * row[k] * s * s * s / d as f64;
            }
            dx.push(acc);
        }
        for j in 0..d {
            dg[j] += drow[j] * row[j] * s;
        }
    }
    (dx, dg)
}

/// Reference causal softmax forward (masked entries are exactly 0).
pub fn causal_softmax_fwd(x: &[f64], t: usize, scale: f64) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for (b, xb) in x.chunks(t * t).enumerate() {
        for i in 0..t {
            let z: f64 = (0..=i).map(|j| (xb[i * t + j] * scale).exp()).sum();
            for j in 0..=i {
                y[b * t * t + i * t + j] = (xb[i * t + j] * scale).exp() / z;
            }
        }
    }
    y
}

/// Reference causal softmax backward through the full Jacobian.
pub fn causal_softmax_bwd(y: &[f64], dy: &[f64], t: usize, scale: f64) -> Vec<f64> {
    let mut dx = vec![0.0; y.len()];
    for b in 0..y.len() / (t * t) {
        let o = b * t * t;
        for i in 0..t {
            for k in 0..=i {
                let mut acc = 0.0;
                for j in 0..=i {
                    let jac = y[o + i * t + j] * (if j == k { 1.0 } else { 0.0 } - y[o + i * t + k]);
                    acc += dy[o + i * t + j] * jac;
                }
                dx[o + i * t + k] = scale * acc;
            }
        }
    }
    dx
}

fn gelu_u(x: f64) -> f64 {
    (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)
}

/// Reference tanh-GELU forward.
pub fn gelu_fwd(x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| 0.5 * v * (1.0 + gelu_u(v).tanh())).collect()
}

/// Reference tanh-GELU backward (analytic derivative).
pub fn gelu_bwd(x: &[f64], dy: &[f64]) -> Vec<f64> {
    x.iter()
        .zip(dy)
        .map(|(&v, &d)| {
            let th = gelu_u(v).tanh();
            let du = (2.0 / std::f64::consts::PI).sqrt() * (1.0 + 3.0 * 0.044715 * v * v);
            d * (0.5 * (1.0 + th) + 0.5 * v * (1.0 - th * th) * du)
        })
        .collect()
}

fn lse(row: &[f64]) -> f64 {
    let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    m + row.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// Reference cross-entropy per row.
pub fn cross_entropy_fwd(logits: &[f64], targets: &[u32], v: usize) -> Vec<f64> {
    logits.chunks(v).zip(targets).map(|(row, &t)| lse(row) - row[t as usize]).collect()
}

/// Reference cross-entropy backward.
pub fn cross_entropy_bwd(logits: &[f64], targets: &[u32], g: &[f64], v: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(logits.len());
    for ((row, &t), &gr) in logits.chunks(v).zip(targets).zip(g) {
        let l = lse(row);
        for (j, x) in row.iter().enumerate() {
            let onehot = if j == t as usize { 1.0 } else { 0.0 };
            out.push(gr * ((x - l).exp() - onehot));
        }
    }
    out
}

/// Reference AdamW step (PyTorch's `torch.optim.AdamW` update order).
pub fn adamw_step(p: &mut [f64], g: &[f64], m: &mut [f64], v: &mut [f64], h: &AdamW, step: u32, scale: f64) {
    let (b1, b2, lr) = (h.beta1 as f64, h.beta2 as f64, h.lr as f64);
    for i in 0..p.len() {
        let gi = g[i] * scale;
        p[i] -= lr * h.weight_decay as f64 * p[i];
        m[i] = b1 * m[i] + (1.0 - b1) * gi;
        v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
        let mhat = m[i] / (1.0 - b1.powi(step as i32));
        let vhat = v[i] / (1.0 - b2.powi(step as i32));
        p[i] -= lr * mhat / (vhat.sqrt() + h.eps as f64);
    }
}

fn ternary_scale(scales: &[f64], row: usize) -> f64 {
    if scales.len() == 1 { scales[0] } else { scales[row] }
}

/// Reference ternary forward: `y[i, o] = scale(o) * sum_c x[i, c] * code(o, c)`.
/// `codes` is rows x cols, `scales` has `rows` entries or 1; `x` is n x cols, `y` n x rows.
pub fn ternary_gemm(codes: &[i8], scales: &[f64], rows: usize, cols: usize, x: &[f64]) -> Vec<f64> {
    let n = x.len() / cols;
    let mut y = vec![0.0; n * rows];
    for i in 0..n {
        for o in 0..rows {
            let mut sum = 0.0;
            for c in 0..cols {
                sum += x[i * cols + c] * codes[o * cols + c] as f64;
            }
            y[i * rows + o] = ternary_scale(scales, o) * sum;
        }
    }
    y
}

/// Reference ternary backward to x: `dx[i, c] = sum_o dy[i, o] * scale(o) * code(o, c)`.
/// `dy` is n x rows, the result n x cols.
pub fn ternary_gemm_t(codes: &[i8], scales: &[f64], rows: usize, cols: usize, dy: &[f64]) -> Vec<f64> {
    let n = dy.len() / rows;
    let mut dx = vec![0.0; n * cols];
    for i in 0..n {
        for c in 0..cols {
            let mut sum = 0.0;
            for o in 0..rows {
                sum += dy[i * rows + o] * ternary_scale(scales, o) * codes[o * cols + c] as f64;
            }
            dx[i * cols + c] = sum;
        }
    }
    dx
}
