//! Packed ternary matrices ({-1, 0, +1} codes times a scale per row or per
//! tensor) and their products with f32 activations, on SIMD paths that give the
//! same bits as the portable one.
//!
//! # Format
//!
//! A [`Ternary`] of `rows x cols` holds `words_per_row = ceil(cols / 16)` `u32`
//! words a row. Word `g` of row `r` covers columns `16 g .. 16 g + 16`: bit `j`
//! (the "+1" plane) says code `(r, 16 g + j)` is +1, bit `16 + j` (the "-1"
//! plane) says it is -1, neither says 0. A lane never has both bits, and the
//! padding lanes past `cols` in the last word have neither. Weight `(r, c)` is
//! `code(r, c) * scale(r)`.
//!
//! # Arithmetic order (the same on every [`Path`])
//!
//! Bets reproduce bit for bit on other machines, so the result must not depend
//! on which instructions the CPU has. Every path therefore does the same f32
//! operations in the same order, and IEEE 754 fixes the rest:
//!
//! - forward, for each x row `i` and output row `o`: four sets of 16 lane
//!   accumulators `acc[a][j]`, all `+0.0`. Group `g` of the row goes to set
//!   `a = g % 4`; in lane `j`, `acc[a][j] += x[i, 16 g + j]` where the code is
//!   +1, `acc[a][j] -= x[i, 16 g + j]` where it is -1, and nothing where it is
//!   0 (no `+ 0.0`). Then `s[j] = (acc[0][j] + acc[1][j]) + (acc[2][j] + acc[3][j])`,
//!   the 16 lanes fold as a fixed tree (`s[j] += s[j + 8]` for `j < 8`, then
//!   `+ 4`, `+ 2`, `+ 1`), and `y[i, o] = s[0] * scale(o)`. SIMD paths keep
//!   the 16 lanes in one AVX-512 or two AVX2 registers; how many x rows or
//!   output rows they handle per pass changes nothing per element.
//! - backward ([`gemm_t`]), for each x row `i`: `dx[i, c]` starts at `+0.0`, and
//!   for `o = 0, 1, .., rows - 1` in turn, with `coef = dy[i, o] * scale(o)`,
//!   `dx[i, c] += coef` where code `(o, c)` is +1 and `-= coef` where it is -1.
//!
//! No fused multiply-add is used anywhere (Rust never contracts `a * b + c`).
//! So for finite inputs every path gives bit-identical outputs, also where a
//! sum overflows to infinity; and splitting the output rows over threads with
//! [`gemm_rows_with`] does not change them either. For non-finite inputs a
//! NaN or infinity reaches every output whose row has a non-zero code on it,
//! with the same IEEE rules, but the bits of a NaN (its sign and payload) may
//! differ between paths.

use std::fmt;
use std::ops::Range;
use std::sync::OnceLock;

/// Lanes per packed group (one u32 word: bits 0..16 = the "+1" plane, bits 16..32 = the "-1" plane).
pub const GROUP: usize = 16;

/// Independent accumulator sets per dot product (group `g` goes to set `g % NACC`):
/// enough to hide the add latency; part of the fixed arithmetic order.
const NACC: usize = 4;

/// What is wrong with the parts of a ternary matrix.
#[derive(Debug, Clone, PartialEq)]
pub enum TernaryError {
    /// `rows` or `cols` is zero, or `rows * cols` overflows.
    BadShape { rows: usize, cols: usize },
    /// A buffer's length does not fit the shape.
    Length { what: &'static str, rows: usize, cols: usize, expected: usize, got: usize },
    /// Some lanes of a word are in both planes (`lanes`: bit j = column 16 group + j).
    BothPlanes { row: usize, group: usize, lanes: u16 },
    /// The last word of a row has bits set for lanes past `cols`.
    Padding { row: usize, group: usize, bits: u32 },
    /// The scale count is neither `rows` (per row) nor 1 (per tensor).
    ScaleCount { rows: usize, got: usize },
    /// A scale is NaN or infinite (from quantisation: the weights were not finite).
    NonFiniteScale { index: usize, value: f32 },
    /// A code is not -1, 0 or 1.
    BadCode { row: usize, col: usize, code: i8 },
}

impl fmt::Display for TernaryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TernaryError::BadShape { rows, cols } => {
                write!(f, "ternary matrix of {rows}x{cols}: both sides must be at least 1 (and their product fit)")
            }
            TernaryError::Length { what, rows, cols, expected, got } => {
                write!(f, "{what} of a {rows}x{cols} ternary matrix: expected {expected}, got {got}")
            }
            TernaryError::BothPlanes { row, group, lanes } => write!(
                f,
                "row {row}, group {group} (columns {}..{}): lanes {lanes:#06x} are in both the +1 and the -1 plane",
                group * GROUP,
                group * GROUP + GROUP
            ),
            TernaryError::Padding { row, group, bits } => {
                write!(f, "row {row}, group {group}: padding bits {bits:#010x} set past the last column")
            }
            TernaryError::ScaleCount { rows, got } => {
                write!(f, "expected {rows} scales (per row) or 1 (per tensor), got {got}")
            }
            TernaryError::NonFiniteScale { index, value } => write!(f, "scale {index} is {value}, not finite"),
            TernaryError::BadCode { row, col, code } => {
                write!(f, "code at row {row}, column {col} is {code}, not -1, 0 or 1")
            }
        }
    }
}

impl std::error::Error for TernaryError {}

/// How many absmean scales a matrix gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleGranularity {
    PerRow,
    PerTensor,
}

/// A ternary matrix of `rows` output rows x `cols` inputs, packed 2 bits a weight:
/// row r's weights are words[r*words_per_row .. (r+1)*words_per_row], group g of a row
/// covers cols g*16..g*16+16 (the last group zero-padded: padding lanes have both planes 0).
/// scales.len() is rows (PerRow) or 1 (PerTensor). Weight (r,c) = code(r,c) * scale(r).
#[derive(Debug, Clone, PartialEq)]
pub struct Ternary {
    rows: usize,
    cols: usize,
    words: Vec<u32>,
    scales: Vec<f32>,
}

/// `rows * cols`, refusing empty or overflowing shapes.
fn checked_len(rows: usize, cols: usize) -> Result<usize, TernaryError> {
    match rows.checked_mul(cols) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(TernaryError::BadShape { rows, cols }),
    }
}

fn check_scales(rows: usize, scales: &[f32]) -> Result<(), TernaryError> {
    if scales.len() != rows && scales.len() != 1 {
        return Err(TernaryError::ScaleCount { rows, got: scales.len() });
    }
    match scales.iter().position(|s| !s.is_finite()) {
        Some(index) => Err(TernaryError::NonFiniteScale { index, value: scales[index] }),
        None => Ok(()),
    }
}

/// The lanes of group `g` that hold columns (all 16 but in a partial last group).
fn valid_lanes(cols: usize, g: usize) -> u32 {
    let n = (cols - g * GROUP).min(GROUP);
    if n == GROUP { 0xFFFF } else { (1u32 << n) - 1 }
}

/// Mean of |v|, summed in f64 in index order so the scale does not depend on
/// how a faster sum would be split.
fn absmean(v: &[f32]) -> f32 {
    (v.iter().map(|&x| x.abs() as f64).sum::<f64>() / v.len() as f64) as f32
}

impl Ternary {
    /// Absmean quantisation (BitNet b1.58): gamma = mean |w| over the scale group,
    /// code = clamp(round(w / (gamma + 1e-8)), -1, 1), scale = gamma. `w` is rows x cols row-major.
    ///
    /// The mean is taken in f64 and rounded to f32; the division is in f32; `round`
    /// is half-to-even like PyTorch's (so w = gamma / 2 gives code 0). Non-finite
    /// weights give a non-finite gamma, refused as [`TernaryError::NonFiniteScale`].
    pub fn quantize_absmean(w: &[f32], rows: usize, cols: usize, g: ScaleGranularity) -> Result<Ternary, TernaryError> {
        let n = checked_len(rows, cols)?;
        if w.len() != n {
            return Err(TernaryError::Length { what: "weights", rows, cols, expected: n, got: w.len() });
        }
        let scales: Vec<f32> = match g {
            ScaleGranularity::PerRow => w.chunks_exact(cols).map(absmean).collect(),
            ScaleGranularity::PerTensor => vec![absmean(w)],
        };
        check_scales(rows, &scales)?;
        let per_row = scales.len() == rows;
        let codes: Vec<i8> = w
            .iter()
            .enumerate()
            .map(|(k, &v)| {
                let gamma = scales[if per_row { k / cols } else { 0 }];
                (v / (gamma + 1e-8)).round_ties_even().clamp(-1.0, 1.0) as i8
            })
            .collect();
        Ternary::from_codes(&codes, rows, cols, scales)
    }

    /// Packs `codes` (rows x cols row-major, each -1, 0 or 1) with `scales`
    /// (`rows` of them, or 1 for the whole tensor).
    pub fn from_codes(codes: &[i8], rows: usize, cols: usize, scales: Vec<f32>) -> Result<Ternary, TernaryError> {
        let n = checked_len(rows, cols)?;
        if codes.len() != n {
            return Err(TernaryError::Length { what: "codes", rows, cols, expected: n, got: codes.len() });
        }
        check_scales(rows, &scales)?;
        let wpr = cols.div_ceil(GROUP);
        let mut words = Vec::with_capacity(rows * wpr);
        for (row, rc) in codes.chunks_exact(cols).enumerate() {
            for (group, gc) in rc.chunks(GROUP).enumerate() {
                let mut w = 0u32;
                for (j, &code) in gc.iter().enumerate() {
                    match code {
                        1 => w |= 1 << j,
                        -1 => w |= 1 << (j + GROUP),
                        0 => {}
                        _ => return Err(TernaryError::BadCode { row, col: group * GROUP + j, code }),
                    }
                }
                words.push(w);
            }
        }
        Ok(Ternary { rows, cols, words, scales })
    }

    /// Validates everything (word count, planes disjoint, padding zero, scales count and finite).
    pub fn from_parts(rows: usize, cols: usize, words: Vec<u32>, scales: Vec<f32>) -> Result<Ternary, TernaryError> {
        checked_len(rows, cols)?;
        let wpr = cols.div_ceil(GROUP);
        if words.len() != rows * wpr {
            return Err(TernaryError::Length {
                what: "packed words",
                rows,
                cols,
                expected: rows * wpr,
                got: words.len(),
            });
        }
        for (row, rw) in words.chunks_exact(wpr).enumerate() {
            for (group, &w) in rw.iter().enumerate() {
                let both = (w & (w >> GROUP)) as u16;
                if both != 0 {
                    return Err(TernaryError::BothPlanes { row, group, lanes: both });
                }
                let valid = valid_lanes(cols, group);
                let bits = w & !(valid | valid << GROUP);
                if bits != 0 {
                    return Err(TernaryError::Padding { row, group, bits });
                }
            }
        }
        check_scales(rows, &scales)?;
        Ok(Ternary { rows, cols, words, scales })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn words_per_row(&self) -> usize {
        self.cols.div_ceil(GROUP)
    }

    pub fn words(&self) -> &[u32] {
        &self.words
    }

    /// The packed words of output row `row`.
    pub fn row_words(&self, row: usize) -> &[u32] {
        let wpr = self.words_per_row();
        &self.words[row * wpr..(row + 1) * wpr]
    }

    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// Per tensor when there is one scale (for a single row both mean the same).
    pub fn granularity(&self) -> ScaleGranularity {
        if self.scales.len() == 1 { ScaleGranularity::PerTensor } else { ScaleGranularity::PerRow }
    }

    pub fn scale(&self, row: usize) -> f32 {
        if self.scales.len() == 1 { self.scales[0] } else { self.scales[row] }
    }

    /// Bytes of the packed weights plus scales (what a file of it must hold at least).
    pub fn packed_bytes(&self) -> usize {
        4 * self.words.len() + 4 * self.scales.len()
    }

    /// Unpacks the codes, rows x cols row-major.
    pub fn codes(&self) -> Vec<i8> {
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            for (g, &w) in self.row_words(r).iter().enumerate() {
                for j in 0..(self.cols - g * GROUP).min(GROUP) {
                    out.push(((w >> j) & 1) as i8 - ((w >> (j + GROUP)) & 1) as i8);
                }
            }
        }
        out
    }

    /// The weights, rows x cols row-major: code * scale.
    pub fn dequantize(&self) -> Vec<f32> {
        let cols = self.cols;
        self.codes().iter().enumerate().map(|(k, &c)| c as f32 * self.scale(k / cols)).collect()
    }
}

/// A kernel implementation; chosen once at run time from CPU features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Path {
    Portable,
    Avx2,
    Avx512,
}

impl Path {
    const ALL: [Path; 3] = [Path::Portable, Path::Avx2, Path::Avx512];

    /// The best available path, decided once. `BETS_TERNARY_PATH=portable|avx2|avx512`
    /// forces another one if this CPU has it; an unknown or unavailable name is ignored.
    /// (Every path gives the same bits, so this only changes speed.)
    pub fn detect() -> Path {
        static CHOSEN: OnceLock<Path> = OnceLock::new();
        *CHOSEN.get_or_init(|| Path::choose(std::env::var("BETS_TERNARY_PATH").ok().as_deref()))
    }

    /// What [`Path::detect`] picks for a given value of the environment variable.
    fn choose(forced: Option<&str>) -> Path {
        match forced.and_then(|s| Path::from_name(s.trim())) {
            Some(p) if p.available() => p,
            _ => *Path::all_available().last().expect("the portable path is always available"),
        }
    }

    /// The path named `name` (as [`Path::name`] writes it), if any.
    pub fn from_name(name: &str) -> Option<Path> {
        Path::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Whether this CPU can run the path.
    pub fn available(self) -> bool {
        match self {
            Path::Portable => true,
            Path::Avx2 | Path::Avx512 => false,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Path::Portable => "portable",
            Path::Avx2 => "avx2",
            Path::Avx512 => "avx512",
        }
    }

    /// The paths this CPU can run, slowest first.
    pub fn all_available() -> Vec<Path> {
        Path::ALL.into_iter().filter(|p| p.available()).collect()
    }
}

/// Forward: y[i, o] = scale(o) * sum_c x[i, c] * code(o, c), for the n = x.len()/cols rows of x.
/// y is n x rows. Panics (assert) on length mismatch — the engine checks shapes before calling.
pub fn gemm(t: &Ternary, x: &[f32], y: &mut [f32]) {
    gemm_rows_with(Path::detect(), t, 0..t.rows, x, y)
}

/// [`gemm`] on a given path (panics if this CPU cannot run it).
pub fn gemm_with(path: Path, t: &Ternary, x: &[f32], y: &mut [f32]) {
    gemm_rows_with(path, t, 0..t.rows, x, y)
}

/// The same for output rows `out` only: y is n x out.len() (so a caller can split a matrix-vector
/// product over threads by output rows; the bits do not depend on the split).
pub fn gemm_rows_with(path: Path, t: &Ternary, out: Range<usize>, x: &[f32], y: &mut [f32]) {
    assert!(path.available(), "ternary path {} is not available on this CPU", path.name());
    assert!(out.start <= out.end && out.end <= t.rows, "output rows {out:?} out of 0..{}", t.rows);
    assert_eq!(x.len() % t.cols, 0, "x has {} values, not a multiple of cols = {}", x.len(), t.cols);
    let n = x.len() / t.cols;
    assert_eq!(y.len(), n * out.len(), "y must hold {n} x {} values", out.len());
    match path {
        Path::Portable => portable::fwd(t, out, x, y),
        Path::Avx2 | Path::Avx512 => unreachable!("checked available above"),
    }
}

/// Backward with respect to x (the weights are frozen): dx[i, c] = sum_o dy[i, o] * scale(o) * code(o, c).
/// dy is n x rows, dx is n x cols (overwritten).
pub fn gemm_t(t: &Ternary, dy: &[f32], dx: &mut [f32]) {
    gemm_t_with(Path::detect(), t, dy, dx)
}

/// [`gemm_t`] on a given path (panics if this CPU cannot run it).
pub fn gemm_t_with(path: Path, t: &Ternary, dy: &[f32], dx: &mut [f32]) {
    assert!(path.available(), "ternary path {} is not available on this CPU", path.name());
    assert_eq!(dy.len() % t.rows, 0, "dy has {} values, not a multiple of rows = {}", dy.len(), t.rows);
    let n = dy.len() / t.rows;
    assert_eq!(dx.len(), n * t.cols, "dx must hold {n} x {} values", t.cols);
    match path {
        Path::Portable => portable::bwd(t, dy, dx),
        Path::Avx2 | Path::Avx512 => unreachable!("checked available above"),
    }
}

/// The fixed combination of the accumulator sets and the fixed 16-lane fold.
#[inline(always)]
fn fold(acc: &[[f32; GROUP]; NACC]) -> f32 {
    let mut s = [0.0f32; GROUP];
    for (j, sv) in s.iter_mut().enumerate() {
        *sv = (acc[0][j] + acc[1][j]) + (acc[2][j] + acc[3][j]);
    }
    let mut h = GROUP / 2;
    while h > 0 {
        for j in 0..h {
            s[j] += s[j + h];
        }
        h /= 2;
    }
    s[0]
}

/// The order of the module docs, in plain Rust: the oracle the SIMD paths must match bit for bit.
mod portable {
    use super::*;

    pub(super) fn fwd(t: &Ternary, out: Range<usize>, x: &[f32], y: &mut [f32]) {
        let m = out.len();
        if m == 0 {
            return;
        }
        for (xr, yr) in x.chunks_exact(t.cols).zip(y.chunks_exact_mut(m)) {
            for (o, yv) in out.clone().zip(yr.iter_mut()) {
                *yv = dot(t.row_words(o), xr) * t.scale(o);
            }
        }
    }

    fn dot(words: &[u32], x: &[f32]) -> f32 {
        let mut acc = [[0.0f32; GROUP]; NACC];
        let mut chunks = x.chunks_exact(GROUP);
        for (g, (&w, xs)) in words.iter().zip(&mut chunks).enumerate() {
            lanes(&mut acc[g % NACC], w, xs);
        }
        let full = x.len() / GROUP;
        if full < words.len() {
            lanes(&mut acc[full % NACC], words[full], chunks.remainder());
        }
        fold(&acc)
    }

    #[inline(always)]
    fn lanes(a: &mut [f32; GROUP], w: u32, xs: &[f32]) {
        for (j, (av, &xv)) in a.iter_mut().zip(xs).enumerate() {
            if (w >> j) & 1 != 0 {
                *av += xv;
            } else if (w >> (j + GROUP)) & 1 != 0 {
                *av -= xv;
            }
        }
    }

    pub(super) fn bwd(t: &Ternary, dy: &[f32], dx: &mut [f32]) {
        for (dyr, dxr) in dy.chunks_exact(t.rows).zip(dx.chunks_exact_mut(t.cols)) {
            dxr.fill(0.0);
            for (o, &d) in dyr.iter().enumerate() {
                let coef = d * t.scale(o);
                for (&w, dxs) in t.row_words(o).iter().zip(dxr.chunks_mut(GROUP)) {
                    if w == 0 {
                        continue;
                    }
                    for (j, v) in dxs.iter_mut().enumerate() {
                        if (w >> j) & 1 != 0 {
                            *v += coef;
                        } else if (w >> (j + GROUP)) & 1 != 0 {
                            *v -= coef;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference;

    /// A small LCG: deterministic, no dependency.
    struct Lcg(u32);

    impl Lcg {
        fn new(seed: u32) -> Lcg {
            Lcg(seed.wrapping_mul(2_654_435_761).wrapping_add(1))
        }
        fn next(&mut self) -> u32 {
            self.0 = self.0.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            self.0 >> 8
        }
        /// Uniform in [-2, 2).
        fn float(&mut self) -> f32 {
            self.next() as f32 / (1u32 << 24) as f32 * 4.0 - 2.0
        }
        /// An integer in [lo, hi).
        fn int(&mut self, lo: i32, hi: i32) -> i32 {
            lo + (self.next() % (hi - lo) as u32) as i32
        }
        fn codes(&mut self, n: usize) -> Vec<i8> {
            (0..n).map(|_| self.int(-1, 2) as i8).collect()
        }
        fn floats(&mut self, n: usize) -> Vec<f32> {
            (0..n).map(|_| self.float()).collect()
        }
    }

    fn f64s(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&x| x as f64).collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Shapes that hit every tail: rows odd and not multiples of a row tile,
    /// cols around the 16-lane group and the 64-column accumulator cycle.
    const ROWS: [usize; 4] = [1, 3, 7, 9];
    const COLS: [usize; 10] = [1, 15, 16, 17, 33, 63, 64, 65, 100, 129];
    const NS: [usize; 4] = [1, 3, 5, 8];

    fn random_matrix(rng: &mut Lcg, rows: usize, cols: usize) -> Ternary {
        let scales = (0..rows).map(|_| 0.5 + rng.float().abs()).collect();
        Ternary::from_codes(&rng.codes(rows * cols), rows, cols, scales).unwrap()
    }

    #[test]
    fn codes_survive_packing_and_unpacking_on_odd_shapes() {
        let mut rng = Lcg::new(1);
        for rows in [1, 2, 5] {
            for cols in [1, 15, 16, 17, 33, 100] {
                let codes = rng.codes(rows * cols);
                let t = Ternary::from_codes(&codes, rows, cols, vec![1.0]).unwrap();
                assert_eq!(t.words().len(), rows * cols.div_ceil(16));
                assert_eq!(t.codes(), codes, "{rows}x{cols}");
                let again = Ternary::from_parts(rows, cols, t.words().to_vec(), t.scales().to_vec()).unwrap();
                assert_eq!(again, t);
            }
        }
    }

    #[test]
    fn the_packed_layout_is_plus_plane_low_minus_plane_high() {
        let t = Ternary::from_codes(&[1, -1, 0, 1, 0, -1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1], 1, 17, vec![2.0]).unwrap();
        assert_eq!(t.words(), &[0b1111_1111_1100_1001 | (0b10_0010 << 16), 1 << 16]);
        assert_eq!(t.packed_bytes(), 3 * 4);
    }

    #[test]
    fn absmean_quantisation_matches_a_hand_computed_2x4_case() {
        let w = [0.5f32, -1.0, 0.0, 2.5, 0.1, 0.2, -0.3, 0.4];
        // Row 0: gamma = 4 / 4 = 1; 0.5 / 1 = 0.5 rounds (half to even) to 0; 2.5 clamps to 1.
        // Row 1: gamma = 1 / 4 = 0.25; ratios 0.4, 0.8, -1.2, 1.6.
        let t = Ternary::quantize_absmean(&w, 2, 4, ScaleGranularity::PerRow).unwrap();
        assert_eq!(t.codes(), vec![0, -1, 0, 1, 0, 1, -1, 1]);
        assert_eq!(t.scales(), &[1.0, 0.25]);
        assert_eq!(t.granularity(), ScaleGranularity::PerRow);
        assert_eq!(t.dequantize(), vec![0.0, -1.0, 0.0, 1.0, 0.0, 0.25, -0.25, 0.25]);
        // Per tensor: gamma = 5 / 8 = 0.625; ratios 0.8, -1.6, 0, 4, 0.16, 0.32, -0.48, 0.64.
        let t = Ternary::quantize_absmean(&w, 2, 4, ScaleGranularity::PerTensor).unwrap();
        assert_eq!(t.codes(), vec![1, -1, 0, 1, 0, 0, 0, 1]);
        assert_eq!(t.scales(), &[0.625]);
        assert_eq!(t.granularity(), ScaleGranularity::PerTensor);
        assert_eq!(t.dequantize(), vec![0.625, -0.625, 0.0, 0.625, 0.0, 0.0, 0.0, 0.625]);
    }

    #[test]
    fn absmean_quantisation_of_zeros_gives_zero_codes_and_refuses_nan() {
        let t = Ternary::quantize_absmean(&[0.0; 6], 2, 3, ScaleGranularity::PerRow).unwrap();
        assert_eq!(t.codes(), vec![0; 6]);
        assert_eq!(t.scales(), &[0.0, 0.0]);
        let e = Ternary::quantize_absmean(&[1.0, f32::NAN, 0.0, 1.0], 2, 2, ScaleGranularity::PerRow).unwrap_err();
        assert!(matches!(e, TernaryError::NonFiniteScale { index: 0, .. }), "{e}");
        let e = Ternary::quantize_absmean(&[1.0; 5], 2, 3, ScaleGranularity::PerRow).unwrap_err();
        assert!(matches!(e, TernaryError::Length { expected: 6, got: 5, .. }), "{e}");
    }

    #[test]
    fn dequantize_is_codes_times_the_row_scale() {
        let mut rng = Lcg::new(2);
        let t = random_matrix(&mut rng, 5, 21);
        let want: Vec<f32> = t.codes().iter().enumerate().map(|(k, &c)| c as f32 * t.scale(k / 21)).collect();
        assert_eq!(t.dequantize(), want);
    }

    #[test]
    fn from_parts_refuses_a_lane_in_both_planes_naming_row_and_group() {
        let mut words = vec![0u32; 2 * 3];
        words[5] = (1 << 2) | (1 << 18); // row 1, group 2, lane 2
        let e = Ternary::from_parts(2, 40, words, vec![1.0]).unwrap_err();
        assert_eq!(e, TernaryError::BothPlanes { row: 1, group: 2, lanes: 1 << 2 });
        let msg = e.to_string();
        assert!(msg.contains("row 1") && msg.contains("group 2"), "{msg}");
    }

    #[test]
    fn from_parts_refuses_padding_bits() {
        // cols 17: the second word has one valid lane (bit 0 and bit 16).
        assert!(Ternary::from_parts(1, 17, vec![0, 1 << 16], vec![1.0]).is_ok());
        let e = Ternary::from_parts(1, 17, vec![0, 1 << 1], vec![1.0]).unwrap_err();
        assert_eq!(e, TernaryError::Padding { row: 0, group: 1, bits: 1 << 1 });
        let e = Ternary::from_parts(1, 17, vec![0, 1 << 31], vec![1.0]).unwrap_err();
        assert_eq!(e, TernaryError::Padding { row: 0, group: 1, bits: 1 << 31 });
    }

    #[test]
    fn from_parts_refuses_wrong_word_and_scale_counts_and_a_nan_scale() {
        let e = Ternary::from_parts(2, 17, vec![0; 3], vec![1.0]).unwrap_err();
        assert_eq!(e, TernaryError::Length { what: "packed words", rows: 2, cols: 17, expected: 4, got: 3 });
        let e = Ternary::from_parts(3, 16, vec![0; 3], vec![1.0, 1.0]).unwrap_err();
        assert_eq!(e, TernaryError::ScaleCount { rows: 3, got: 2 });
        let e = Ternary::from_parts(3, 16, vec![0; 3], vec![1.0, f32::NAN, 1.0]).unwrap_err();
        assert!(matches!(e, TernaryError::NonFiniteScale { index: 1, .. }), "{e}");
        let e = Ternary::from_parts(0, 16, vec![], vec![1.0]).unwrap_err();
        assert_eq!(e, TernaryError::BadShape { rows: 0, cols: 16 });
    }

    #[test]
    fn from_codes_refuses_a_code_outside_minus_one_to_one() {
        let e = Ternary::from_codes(&[0, 1, 2, 0], 2, 2, vec![1.0]).unwrap_err();
        assert_eq!(e, TernaryError::BadCode { row: 1, col: 0, code: 2 });
        let e = Ternary::from_codes(&[0, 1, 0, 0], 2, 2, vec![1.0; 3]).unwrap_err();
        assert_eq!(e, TernaryError::ScaleCount { rows: 2, got: 3 });
    }

    #[test]
    fn the_portable_path_is_always_available_and_avx512_where_the_cpu_has_it() {
        let paths = Path::all_available();
        eprintln!("ternary paths on this CPU: {:?}; detect() = {:?}", paths, Path::detect());
        assert!(paths.contains(&Path::Portable));
        assert!(paths.contains(&Path::detect()));
        assert_eq!(Path::choose(Some("portable")), Path::Portable);
        assert_eq!(Path::choose(Some("no-such-path")), *paths.last().unwrap());
        for p in Path::ALL {
            assert_eq!(Path::from_name(p.name()), Some(p));
        }
    }

    /// |terms| summed, for a tolerance relative to the size of what was added.
    fn abs_reference(t: &Ternary, x: &[f32]) -> Vec<f64> {
        let codes: Vec<i8> = t.codes().iter().map(|c| c.abs()).collect();
        let scales: Vec<f64> = t.scales().iter().map(|&s| s.abs() as f64).collect();
        let ax: Vec<f64> = x.iter().map(|v| v.abs() as f64).collect();
        reference::ternary_gemm(&codes, &scales, t.rows(), t.cols(), &ax)
    }

    fn abs_reference_t(t: &Ternary, dy: &[f32]) -> Vec<f64> {
        let codes: Vec<i8> = t.codes().iter().map(|c| c.abs()).collect();
        let scales: Vec<f64> = t.scales().iter().map(|&s| s.abs() as f64).collect();
        let ady: Vec<f64> = dy.iter().map(|v| v.abs() as f64).collect();
        reference::ternary_gemm_t(&codes, &scales, t.rows(), t.cols(), &ady)
    }

    /// Within 1e-5 of the reference, relative to the sum of |terms| (the f32
    /// error bound is about (cols / 64 + 8) ulps of that sum).
    fn close(got: &[f32], want: &[f64], scale: &[f64], what: &str) {
        assert_eq!(got.len(), want.len());
        for (k, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
            assert!((g as f64 - w).abs() <= 1e-5 * s + 1e-30, "{what}, index {k}: kernel {g} vs reference {w}");
        }
    }

    #[test]
    fn every_path_matches_the_reference_within_1e_5_of_the_absolute_sum() {
        let mut rng = Lcg::new(3);
        for path in Path::all_available() {
            for &rows in &ROWS {
                for &cols in &COLS {
                    for &n in &NS {
                        let t = random_matrix(&mut rng, rows, cols);
                        let sc = f64s(t.scales());
                        let x = rng.floats(n * cols);
                        let mut y = vec![f32::NAN; n * rows];
                        gemm_with(path, &t, &x, &mut y);
                        let what = format!("{} forward {n}x{cols} -> {rows}", path.name());
                        close(
                            &y,
                            &reference::ternary_gemm(&t.codes(), &sc, rows, cols, &f64s(&x)),
                            &abs_reference(&t, &x),
                            &what,
                        );
                        let dy = rng.floats(n * rows);
                        let mut dx = vec![f32::NAN; n * cols];
                        gemm_t_with(path, &t, &dy, &mut dx);
                        let what = format!("{} backward {n}x{rows} -> {cols}", path.name());
                        let want = reference::ternary_gemm_t(&t.codes(), &sc, rows, cols, &f64s(&dy));
                        close(&dx, &want, &abs_reference_t(&t, &dy), &what);
                    }
                }
            }
        }
    }

    #[test]
    fn every_path_equals_the_reference_exactly_on_integer_inputs() {
        let mut rng = Lcg::new(4);
        for path in Path::all_available() {
            for &rows in &ROWS {
                for &cols in &COLS {
                    for &n in &NS {
                        let t = Ternary::from_codes(&rng.codes(rows * cols), rows, cols, vec![1.0]).unwrap();
                        let x: Vec<f32> = (0..n * cols).map(|_| rng.int(-8, 8) as f32).collect();
                        let mut y = vec![f32::NAN; n * rows];
                        gemm_with(path, &t, &x, &mut y);
                        let want = reference::ternary_gemm(&t.codes(), &[1.0], rows, cols, &f64s(&x));
                        assert_eq!(f64s(&y), want, "{} forward {n}x{cols} -> {rows}", path.name());
                        let dy: Vec<f32> = (0..n * rows).map(|_| rng.int(-8, 8) as f32).collect();
                        let mut dx = vec![f32::NAN; n * cols];
                        gemm_t_with(path, &t, &dy, &mut dx);
                        let want = reference::ternary_gemm_t(&t.codes(), &[1.0], rows, cols, &f64s(&dy));
                        assert_eq!(f64s(&dx), want, "{} backward {n}x{rows} -> {cols}", path.name());
                    }
                }
            }
        }
    }

    #[test]
    fn every_path_gives_the_same_bits_as_the_portable_one() {
        let mut rng = Lcg::new(5);
        let mut ran = Vec::new();
        for &rows in &[1, 3, 7, 9, 33] {
            for &cols in COLS.iter().chain(&[255, 300]) {
                for &n in &NS {
                    let t = random_matrix(&mut rng, rows, cols);
                    // Values of very different sizes, and signed zeros, so that rounding
                    // differs as soon as the order does.
                    let mut x: Vec<f32> = (0..n * cols).map(|_| rng.float() * 2f32.powi(rng.int(-12, 12))).collect();
                    x[0] = -0.0;
                    let dy: Vec<f32> = (0..n * rows).map(|_| rng.float() * 2f32.powi(rng.int(-12, 12))).collect();
                    let sub = rows / 3..rows - rows / 4;
                    let (mut y0, mut ys0, mut dx0) =
                        (vec![0.0; n * rows], vec![0.0; n * sub.len()], vec![0.0; n * cols]);
                    gemm_with(Path::Portable, &t, &x, &mut y0);
                    gemm_rows_with(Path::Portable, &t, sub.clone(), &x, &mut ys0);
                    gemm_t_with(Path::Portable, &t, &dy, &mut dx0);
                    for (i, yr) in y0.chunks(rows).enumerate() {
                        assert_eq!(bits(&yr[sub.clone()]), bits(&ys0[i * sub.len()..(i + 1) * sub.len()]));
                    }
                    for path in Path::all_available() {
                        let what = format!("{} {n}x{cols} -> {rows}", path.name());
                        let (mut y, mut ys, mut dx) =
                            (vec![f32::NAN; n * rows], vec![f32::NAN; n * sub.len()], vec![f32::NAN; n * cols]);
                        gemm_with(path, &t, &x, &mut y);
                        assert_eq!(bits(&y), bits(&y0), "forward {what}");
                        gemm_rows_with(path, &t, sub.clone(), &x, &mut ys);
                        assert_eq!(bits(&ys), bits(&ys0), "forward rows {sub:?} {what}");
                        gemm_t_with(path, &t, &dy, &mut dx);
                        assert_eq!(bits(&dx), bits(&dx0), "backward {what}");
                        if !ran.contains(&path) {
                            ran.push(path);
                        }
                    }
                }
            }
        }
        eprintln!("bit-identical to portable: {ran:?}");
        assert_eq!(ran, Path::all_available());
    }

    #[test]
    fn per_tensor_scales_apply_to_every_row() {
        let t = Ternary::from_codes(&[1, -1, 0, 1, 1, 1], 2, 3, vec![0.5]).unwrap();
        for path in Path::all_available() {
            let mut y = vec![0.0; 2];
            gemm_with(path, &t, &[1.0, 2.0, 4.0], &mut y);
            assert_eq!(y, vec![-0.5, 3.5], "{}", path.name());
            let mut dx = vec![0.0; 3];
            gemm_t_with(path, &t, &[1.0, 2.0], &mut dx);
            assert_eq!(dx, vec![1.5, 0.5, 1.0], "{}", path.name());
        }
    }

    #[test]
    #[should_panic(expected = "y must hold")]
    fn gemm_panics_on_a_wrong_output_length() {
        let t = Ternary::from_codes(&[1, 0], 1, 2, vec![1.0]).unwrap();
        gemm(&t, &[1.0, 2.0], &mut [0.0; 2]);
    }
}
