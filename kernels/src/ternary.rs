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
//! How the paths get there: only the AVX-512 path for batches under 4 rows
//! literally adds, subtracts or skips (masked instructions).
//! The portable path adds `x * code`, and the FMA route (the AVX2 path, and
//! AVX-512 for larger batches) computes `fma(code, x, acc)`, with `code` in
//! {-1.0, 0.0, +1.0}: the product is exact, so the sum is `acc + x`, `acc - x`
//! or `acc + (±0)`, and the last is `acc` itself because an accumulator that
//! starts at +0.0 never becomes -0.0 (in round-to-nearest a sum is -0 only when
//! both addends are). Rust never contracts `a * b + c` on its own. So for
//! finite inputs every path gives bit-identical outputs, also where a sum
//! overflows to infinity, and splitting the output rows over threads with
//! [`gemm_rows_with`] does not change them either.
//!
//! Non-finite inputs: a NaN or infinity in `x` (or `dy`) reaches every output
//! whose weight row has a non-zero code on it, by the usual IEEE rules. Where
//! the code is 0 it depends on the path: `0 * inf = NaN` passes it on in the
//! portable path and on the FMA route, the masked route skips it. The sign and
//! payload of a NaN may differ between paths too. Only finite inputs are
//! promised the same bits.

use std::fmt;
use std::ops::Range;
use std::sync::OnceLock;

/// Lanes per packed group (one u32 word: bits 0..16 = the "+1" plane, bits 16..32 = the "-1" plane).
pub const GROUP: usize = 16;

/// Independent accumulator sets per dot product (group `g` goes to set `g % NACC`):
/// enough to hide the add latency; part of the fixed arithmetic order.
const NACC: usize = 4;

/// Batches with at least this many rows expand blocks of codes into floats once
/// and share them (and on AVX-512 leave the masked route, see the `avx512`
/// module): below it, the expansion costs more than it saves.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const FMA_MIN_N: usize = 4;

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
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Path::Avx512 => is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw"),
            #[cfg(not(target_arch = "x86_64"))]
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
        // SAFETY: the CPU has the features (checked above), the lengths fit.
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => unsafe { avx2::fwd(t, out, x, y) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Path::Avx512 => unsafe { avx512::fwd(t, out, x, y) },
        #[cfg(not(target_arch = "x86_64"))]
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
        // SAFETY: the CPU has the features (checked above), the lengths fit.
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => unsafe { avx2::bwd(t, dy, dx) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Path::Avx512 => unsafe { avx512::bwd(t, dy, dx) },
        #[cfg(not(target_arch = "x86_64"))]
        Path::Avx2 | Path::Avx512 => unreachable!("checked available above"),
    }
}

/// Eight lanes of 0.0 / 1.0, 32-byte aligned.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Bits8([f32; 8]);

/// `BITS8[b]` lane j is bit j of b: a plane's byte as floats; the "+1" byte's
/// minus the "-1" byte's is the codes as ±1.0 / 0.0, exactly.
static BITS8: [Bits8; 256] = {
    let mut t = [Bits8([0.0; 8]); 256];
    let mut b = 0;
    while b < 256 {
        let mut j = 0;
        while j < 8 {
            if (b >> j) & 1 == 1 {
                t[b].0[j] = 1.0;
            }
            j += 1;
        }
        b += 1;
    }
    t
};

/// The codes of one group as floats (lanes past the last column are 0.0).
#[inline(always)]
fn codes16(w: u32) -> [f32; GROUP] {
    let (p, m) = (w & 0xFFFF, w >> 16);
    let mut c = [0.0f32; GROUP];
    for (h, ch) in c.chunks_exact_mut(8).enumerate() {
        let (pb, mb) = (&BITS8[((p >> (8 * h)) & 0xFF) as usize].0, &BITS8[((m >> (8 * h)) & 0xFF) as usize].0);
        for ((cv, &a), &b) in ch.iter_mut().zip(pb).zip(mb) {
            *cv = a - b;
        }
    }
    c
}

/// One group of f32 lanes, 64-byte aligned: buffers of these never split a
/// vector load across cache lines (which halves the load rate).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; GROUP]);

#[cfg(target_arch = "x86_64")]
impl Line {
    const ZERO: Line = Line([0.0; GROUP]);
}

#[cfg(target_arch = "x86_64")]
fn flat(lines: &[Line]) -> &[f32] {
    // SAFETY: Line is a repr(C) wrapper of [f32; GROUP].
    unsafe { std::slice::from_raw_parts(lines.as_ptr() as *const f32, lines.len() * GROUP) }
}

#[cfg(target_arch = "x86_64")]
fn flat_mut(lines: &mut [Line]) -> &mut [f32] {
    // SAFETY: as for `flat`.
    unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr() as *mut f32, lines.len() * GROUP) }
}

/// The blocking both SIMD paths' FMA backward routes share (so it exists once):
/// blocks of `ib` dx rows, kept in an aligned buffer, accumulate over blocks of
/// `ob` output rows in order, whose codes `expand` writes as floats. In a block,
/// `tile(ni, cb, codes, coef, nb, pad, dxs)` adds `nb` output rows into `ni <= max_ni`
/// dx rows x `cb` groups at `dxs`, taking `max_ni` rows while they last and then
/// one, and `max_cb` groups likewise; `coef[i * nb + o]` is `dy * scale`. dx is
/// stored and reloaded between blocks, which changes no bit.
#[cfg(target_arch = "x86_64")]
struct BwdBlocking {
    code_block_bytes: usize,
    x_block_bytes: usize,
    max_ni: usize,
    max_cb: usize,
}

#[cfg(target_arch = "x86_64")]
type BwdTile<'a> = &'a dyn Fn(usize, usize, &[f32], &[f32], usize, usize, &mut [f32]);
#[cfg(target_arch = "x86_64")]
type Expand<'a> = &'a dyn Fn(&Ternary, Range<usize>, &mut [f32]);

#[cfg(target_arch = "x86_64")]
impl BwdBlocking {
    fn run(&self, t: &Ternary, dy: &[f32], dx: &mut [f32], expand: Expand<'_>, tile: BwdTile<'_>) {
        let (rows, cols) = (t.rows, t.cols);
        let wpr = t.words_per_row();
        let pad = wpr * GROUP;
        let n = dy.len() / rows;
        let ob = (self.code_block_bytes / (4 * pad)).max(4);
        let ib = (self.x_block_bytes / (4 * pad)).max(self.max_ni);
        let mut codes = vec![Line::ZERO; ob * wpr];
        let mut dxb = vec![Line::ZERO; ib * wpr];
        let mut coef = vec![0.0f32; self.max_ni * ob];
        for i0 in (0..n).step_by(ib) {
            let i1 = (i0 + ib).min(n);
            dxb.fill(Line::ZERO);
            for o0 in (0..rows).step_by(ob) {
                let o1 = (o0 + ob).min(rows);
                let nb = o1 - o0;
                expand(t, o0..o1, flat_mut(&mut codes));
                let cf = flat(&codes);
                let mut i = i0;
                while i < i1 {
                    let ni = if i + self.max_ni <= i1 { self.max_ni } else { 1 };
                    for (ii, cr) in coef[..ni * nb].chunks_exact_mut(nb).enumerate() {
                        for (o, (c, &d)) in (o0..).zip(cr.iter_mut().zip(&dy[(i + ii) * rows + o0..][..nb])) {
                            *c = d * t.scale(o);
                        }
                    }
                    let dxs = &mut flat_mut(&mut dxb)[(i - i0) * pad..];
                    let mut g = 0;
                    while g < wpr {
                        let cb = if g + self.max_cb <= wpr { self.max_cb } else { 1 };
                        tile(ni, cb, &cf[g * GROUP..], &coef, nb, pad, &mut dxs[g * GROUP..]);
                        g += cb;
                    }
                    i += ni;
                }
            }
            let dxbf = flat(&dxb);
            for (k, dxr) in dx[i0 * cols..i1 * cols].chunks_exact_mut(cols).enumerate() {
                dxr.copy_from_slice(&dxbf[k * pad..k * pad + cols]);
            }
        }
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

/// The order of the module docs in plain Rust, written so that it vectorises on
/// any target: each group's codes become ±1.0 / 0.0 floats ([`codes16`]) and a
/// lane adds `x * code`, which is `+x`, `-x` or `±0` exactly, so for finite
/// inputs the bits are those of the add / subtract / skip of the module docs
/// (the tests hold it to a literal transcription of them).
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
        let full = x.len() / GROUP;
        // Unrolled by NACC so that the sets can stay in registers.
        let mut g = 0;
        while g + NACC <= full {
            for (a, acc_a) in acc.iter_mut().enumerate() {
                lanes(acc_a, words[g + a], &x[(g + a) * GROUP..(g + a + 1) * GROUP]);
            }
            g += NACC;
        }
        for (a, acc_a) in acc.iter_mut().enumerate().take(words.len() - g) {
            lanes(acc_a, words[g + a], &x[(g + a) * GROUP..((g + a + 1) * GROUP).min(x.len())]);
        }
        fold(&acc)
    }

    #[inline(always)]
    fn lanes(a: &mut [f32; GROUP], w: u32, xs: &[f32]) {
        let c = codes16(w);
        // A whole group as an array, so that the loop has a fixed length.
        if let Ok(xs) = <&[f32; GROUP]>::try_from(xs) {
            for ((av, &xv), &cv) in a.iter_mut().zip(xs).zip(&c) {
                *av += xv * cv;
            }
        } else {
            for ((av, &xv), &cv) in a.iter_mut().zip(xs).zip(&c) {
                *av += xv * cv;
            }
        }
    }

    pub(super) fn bwd(t: &Ternary, dy: &[f32], dx: &mut [f32]) {
        for (dyr, dxr) in dy.chunks_exact(t.rows).zip(dx.chunks_exact_mut(t.cols)) {
            dxr.fill(0.0);
            for (o, &d) in dyr.iter().enumerate() {
                let coef = d * t.scale(o);
                for (&w, dxs) in t.row_words(o).iter().zip(dxr.chunks_mut(GROUP)) {
                    // A group of zero codes adds ±0 to every lane: no change.
                    if w == 0 {
                        continue;
                    }
                    let c = codes16(w);
                    for (v, &cv) in dxs.iter_mut().zip(&c) {
                        *v += coef * cv;
                    }
                }
            }
        }
    }
}

/// AVX-512. Small batches (decoding) load each group's two planes straight into
/// mask registers: one masked add and one masked subtract a lane, each x load
/// shared by four output rows. Batches of [`FMA_MIN_N`] rows or more first
/// expand a block of rows into ±1.0 / 0.0 floats ([`expand`]) and use FMAs with
/// each code vector shared by several x rows: a product by ±1 or 0 is exact, and
/// an accumulator that starts at +0.0 never becomes -0.0, so `acc + (±0)` leaves
/// it unchanged and the bits are those of the masked add and subtract.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::*;
    use std::arch::x86_64::*;

    /// Bytes of expanded codes per block of output rows (stays in L1).
    const CODE_BLOCK_BYTES: usize = 32 << 10;
    /// Bytes of x (or dx) per block of batch rows (stays in L2).
    const X_BLOCK_BYTES: usize = 256 << 10;

    /// The combination of the accumulator sets: `(acc0 + acc1) + (acc2 + acc3)`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn combine(a: [__m512; NACC]) -> __m512 {
        _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3]))
    }

    /// Folds 16 combined vectors at once with the additions of [`fold`] (the same
    /// operand pairs, only regrouped across registers by shuffles).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn fold16x16(s: &[__m512; 16]) -> [f32; 16] {
        // Lanes j and j + 8 of s[2k] and s[2k + 1]: t[k] = [s[2k] folded to 8 | s[2k + 1] folded to 8].
        let mut t = [_mm512_setzero_ps(); 8];
        for (k, tk) in t.iter_mut().enumerate() {
            let (a, b) = (s[2 * k], s[2 * k + 1]);
            *tk = _mm512_add_ps(_mm512_shuffle_f32x4::<0x44>(a, b), _mm512_shuffle_f32x4::<0xEE>(a, b));
        }
        // + 4: u[k] holds s[4k..4k + 4], four lanes each.
        let mut u = [_mm512_setzero_ps(); 4];
        for (k, uk) in u.iter_mut().enumerate() {
            let (p, q) = (t[2 * k], t[2 * k + 1]);
            *uk = _mm512_add_ps(_mm512_shuffle_f32x4::<0x88>(p, q), _mm512_shuffle_f32x4::<0xDD>(p, q));
        }
        // + 2: in 128-bit block b, v[k] holds s[8k + b] and s[8k + 4 + b], two lanes each.
        let mut v = [_mm512_setzero_ps(); 2];
        for (k, vk) in v.iter_mut().enumerate() {
            let (p, q) = (u[2 * k], u[2 * k + 1]);
            *vk = _mm512_add_ps(_mm512_shuffle_ps::<0x44>(p, q), _mm512_shuffle_ps::<0xEE>(p, q));
        }
        // + 1: lane 4b + q holds result 4q + b.
        let r = _mm512_add_ps(_mm512_shuffle_ps::<0x88>(v[0], v[1]), _mm512_shuffle_ps::<0xDD>(v[0], v[1]));
        let mut lanes = [0.0f32; 16];
        // SAFETY: lanes holds 16 values.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), r) };
        let mut out = [0.0f32; 16];
        for (k, o) in out.iter_mut().enumerate() {
            *o = lanes[4 * (k % 4) + k / 4];
        }
        out
    }

    /// Folds `s` 16 at a time into `r` (the same length).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn fold_all(s: &[__m512], r: &mut [f32]) {
        for (chunk, rc) in s.chunks(16).zip(r.chunks_mut(16)) {
            let mut batch = [_mm512_setzero_ps(); 16];
            batch[..chunk.len()].copy_from_slice(chunk);
            let folded = fold16x16(&batch);
            rc.copy_from_slice(&folded[..rc.len()]);
        }
    }

    /// # Safety
    /// The CPU has AVX-512 F and BW; the lengths were checked by the caller.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn fwd(t: &Ternary, out: Range<usize>, x: &[f32], y: &mut [f32]) {
        let n = x.len() / t.cols;
        // SAFETY: as for this function.
        unsafe { if n >= FMA_MIN_N { fwd_fma(t, out, x, y) } else { fwd_masked(t, out, x, y) } }
    }

    /// # Safety
    /// As [`fwd`].
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn fwd_masked(t: &Ternary, out: Range<usize>, x: &[f32], y: &mut [f32]) {
        let n = x.len() / t.cols;
        let m = out.len();
        let mut s = [_mm512_setzero_ps(); 16];
        for i in 0..n {
            // Sixteen output rows at a time, in tiles of four (and single rows at the end).
            for o0 in out.clone().step_by(16) {
                let cnt = (out.end - o0).min(16);
                let mut k = 0;
                while k < cnt {
                    // SAFETY: i < n and o0 + k + 4 <= out.end (or + 1) <= rows.
                    unsafe {
                        if k + 4 <= cnt {
                            s[k..k + 4].copy_from_slice(&masked_tile::<4>(t, i, o0 + k, x));
                            k += 4;
                        } else {
                            s[k] = masked_tile::<1>(t, i, o0 + k, x)[0];
                            k += 1;
                        }
                    }
                }
                let mut r = [0.0f32; 16];
                fold_all(&s[..cnt], &mut r[..cnt]);
                let yr = &mut y[i * m + o0 - out.start..][..cnt];
                for (k, (yv, &rv)) in yr.iter_mut().zip(&r).enumerate() {
                    *yv = rv * t.scale(o0 + k);
                }
            }
        }
    }

    /// x row `i` against output rows `o0..o0 + NO`: the combined accumulators.
    ///
    /// # Safety
    /// AVX-512 F and BW; `i < n`, `o0 + NO <= rows`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn masked_tile<const NO: usize>(t: &Ternary, i: usize, o0: usize, x: &[f32]) -> [__m512; NO] {
        let cols = t.cols;
        let wpr = t.words_per_row();
        let full = cols / GROUP;
        let xp = x[i * cols..].as_ptr();
        // Each word read as two u16 masks (little-endian: the +1 plane first).
        let mut wp = [t.words.as_ptr() as *const u16; NO];
        for (o, p) in wp.iter_mut().enumerate() {
            *p = t.words[(o0 + o) * wpr..].as_ptr() as *const u16;
        }
        let mut acc = [[_mm512_setzero_ps(); NACC]; NO];
        let mut g = 0;
        while g + NACC <= full {
            for a in 0..NACC {
                // SAFETY: group g + a is full, so its 16 columns are in the row.
                let xv = unsafe { _mm512_loadu_ps(xp.add((g + a) * GROUP)) };
                for (o, acc_o) in acc.iter_mut().enumerate() {
                    // SAFETY: g + a < words_per_row.
                    let (kp, km) = unsafe { (*wp[o].add(2 * (g + a)), *wp[o].add(2 * (g + a) + 1)) };
                    let v = _mm512_mask_add_ps(acc_o[a], kp, acc_o[a], xv);
                    acc_o[a] = _mm512_mask_sub_ps(v, km, v, xv);
                }
            }
            g += NACC;
        }
        // The rest: fewer than NACC full groups and at most one partial one,
        // which makes at most NACC groups, set a taking group g + a as above.
        for a in 0..NACC {
            if g + a >= wpr {
                break;
            }
            let valid = valid_lanes(cols, g + a) as u16;
            // SAFETY: the masked load touches only the valid lanes, inside the row.
            let xv = unsafe { _mm512_maskz_loadu_ps(valid, xp.add((g + a) * GROUP)) };
            for (o, acc_o) in acc.iter_mut().enumerate() {
                // SAFETY: g + a < words_per_row.
                let (kp, km) = unsafe { (*wp[o].add(2 * (g + a)), *wp[o].add(2 * (g + a) + 1)) };
                let v = _mm512_mask_add_ps(acc_o[a], kp, acc_o[a], xv);
                acc_o[a] = _mm512_mask_sub_ps(v, km, v, xv);
            }
        }
        let mut s = [_mm512_setzero_ps(); NO];
        for (so, acc_o) in s.iter_mut().zip(acc) {
            *so = combine(acc_o);
        }
        s
    }

    /// Writes the codes of output rows `rows` as floats, `words_per_row * 16` a row
    /// (padding lanes 0.0).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn expand(t: &Ternary, rows: Range<usize>, codes: &mut [f32]) {
        let wpr = t.words_per_row();
        let (one, minus_one) = (_mm512_set1_ps(1.0), _mm512_set1_ps(-1.0));
        for (row_codes, o) in codes.chunks_exact_mut(wpr * GROUP).zip(rows) {
            for (c, &w) in row_codes.chunks_exact_mut(GROUP).zip(t.row_words(o)) {
                let v = _mm512_mask_mov_ps(_mm512_maskz_mov_ps(w as u16, one), (w >> 16) as u16, minus_one);
                // SAFETY: c holds 16 values.
                unsafe { _mm512_storeu_ps(c.as_mut_ptr(), v) };
            }
        }
    }

    /// # Safety
    /// As [`fwd`].
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn fwd_fma(t: &Ternary, out: Range<usize>, x: &[f32], y: &mut [f32]) {
        let cols = t.cols;
        let wpr = t.words_per_row();
        let pad = wpr * GROUP;
        let n = x.len() / cols;
        let m = out.len();
        let ob = (CODE_BLOCK_BYTES / (4 * pad)).max(4);
        let ib = (X_BLOCK_BYTES / (4 * pad)).max(3);
        let mut codes = vec![Line::ZERO; ob * wpr];
        let mut xb = vec![Line::ZERO; ib * wpr];
        let mut s = vec![_mm512_setzero_ps(); 3 * ob];
        let mut r = vec![0.0f32; 3 * ob];
        for i0 in (0..n).step_by(ib) {
            let i1 = (i0 + ib).min(n);
            // Aligned, zero-padded copies of the x rows (the padding is never written).
            let xbf = flat_mut(&mut xb);
            for (k, xr) in x[i0 * cols..i1 * cols].chunks_exact(cols).enumerate() {
                xbf[k * pad..k * pad + cols].copy_from_slice(xr);
            }
            let xbf = flat(&xb);
            for o0 in out.clone().step_by(ob) {
                let o1 = (o0 + ob).min(out.end);
                expand(t, o0..o1, flat_mut(&mut codes));
                let cf = flat(&codes);
                let mut i = i0;
                while i < i1 {
                    let ni = if i + 3 <= i1 { 3 } else { 1 };
                    let xs = &xbf[(i - i0) * pad..];
                    let mut o = o0;
                    while o < o1 {
                        let no = if o + 2 <= o1 { 2 } else { 1 };
                        let c = &cf[(o - o0) * pad..];
                        // Entry (o - o0) * ni + k holds output row o + k / ni, x row i + k % ni.
                        let e = (o - o0) * ni;
                        match (ni, no) {
                            (3, 2) => s[e..e + 6].copy_from_slice(fma_tile::<3, 2>(c, xs, pad).as_flattened()),
                            (3, _) => s[e..e + 3].copy_from_slice(fma_tile::<3, 1>(c, xs, pad).as_flattened()),
                            (_, 2) => s[e..e + 2].copy_from_slice(fma_tile::<1, 2>(c, xs, pad).as_flattened()),
                            _ => s[e] = fma_tile::<1, 1>(c, xs, pad)[0][0],
                        }
                        o += no;
                    }
                    let nb = o1 - o0;
                    fold_all(&s[..nb * ni], &mut r[..nb * ni]);
                    for ii in 0..ni {
                        let yr = &mut y[(i + ii) * m + o0 - out.start..][..nb];
                        for (ol, yv) in yr.iter_mut().enumerate() {
                            *yv = r[ol * ni + ii] * t.scale(o0 + ol);
                        }
                    }
                    i += ni;
                }
            }
        }
    }

    /// NI rows of aligned, padded x at `xs` against NO rows of expanded codes at
    /// `codes` (both with row stride `pad`): the combined accumulators, `[o][i]`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn fma_tile<const NI: usize, const NO: usize>(codes: &[f32], xs: &[f32], pad: usize) -> [[__m512; NI]; NO] {
        let wpr = pad / GROUP;
        assert!(codes.len() >= NO * pad && xs.len() >= NI * pad);
        let (cp, xp) = (codes.as_ptr(), xs.as_ptr());
        let mut acc = [[[_mm512_setzero_ps(); NI]; NO]; NACC];
        let step = |acc_a: &mut [[__m512; NI]; NO], g: usize| {
            let mut xv = [_mm512_setzero_ps(); NI];
            for (i, v) in xv.iter_mut().enumerate() {
                // SAFETY: checked above; 64-byte aligned (Line buffers, offsets in whole groups).
                *v = unsafe { _mm512_load_ps(xp.add(i * pad + g * GROUP)) };
            }
            for (o, acc_o) in acc_a.iter_mut().enumerate() {
                // SAFETY: as above.
                let c = unsafe { _mm512_load_ps(cp.add(o * pad + g * GROUP)) };
                for (acc_oi, &v) in acc_o.iter_mut().zip(&xv) {
                    *acc_oi = _mm512_fmadd_ps(c, v, *acc_oi);
                }
            }
        };
        let mut g = 0;
        while g + NACC <= wpr {
            for (a, acc_a) in acc.iter_mut().enumerate() {
                step(acc_a, g + a);
            }
            g += NACC;
        }
        for (a, acc_a) in acc.iter_mut().enumerate().take(wpr - g) {
            step(acc_a, g + a);
        }
        let mut s = [[_mm512_setzero_ps(); NI]; NO];
        for (o, so) in s.iter_mut().enumerate() {
            for (i, soi) in so.iter_mut().enumerate() {
                *soi = combine([acc[0][o][i], acc[1][o][i], acc[2][o][i], acc[3][o][i]]);
            }
        }
        s
    }

    /// # Safety
    /// The CPU has AVX-512 F and BW; the lengths were checked by the caller.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn bwd(t: &Ternary, dy: &[f32], dx: &mut [f32]) {
        let n = dy.len() / t.rows;
        // SAFETY: as for this function.
        unsafe { if n >= FMA_MIN_N { bwd_fma(t, dy, dx) } else { bwd_masked(t, dy, dx) } }
    }

    /// # Safety
    /// As [`bwd`].
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn bwd_masked(t: &Ternary, dy: &[f32], dx: &mut [f32]) {
        let rows = t.rows;
        let wpr = t.words_per_row();
        let mut coef = vec![0.0f32; rows];
        for (dyr, dxr) in dy.chunks_exact(rows).zip(dx.chunks_exact_mut(t.cols)) {
            for (o, c) in coef.iter_mut().enumerate() {
                *c = dyr[o] * t.scale(o);
            }
            let mut g = 0;
            while g < wpr {
                let cb = if g + 4 <= wpr { 4 } else { 1 };
                // SAFETY: groups g..g + cb are in range.
                unsafe {
                    if cb == 4 { masked_tile_t::<4>(t, &coef, g, dxr) } else { masked_tile_t::<1>(t, &coef, g, dxr) }
                }
                g += cb;
            }
        }
    }

    /// One row of dx, groups `g0..g0 + CB`, kept in registers over all output rows.
    ///
    /// # Safety
    /// AVX-512 F and BW; `g0 + CB <= words_per_row`, `coef` holds `rows` values.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn masked_tile_t<const CB: usize>(t: &Ternary, coef: &[f32], g0: usize, dxr: &mut [f32]) {
        let wpr = t.words_per_row();
        let mut acc = [_mm512_setzero_ps(); CB];
        let w16 = t.words.as_ptr() as *const u16;
        for (o, &cf) in coef.iter().enumerate().take(t.rows) {
            let c = _mm512_set1_ps(cf);
            for (b, acc_b) in acc.iter_mut().enumerate() {
                let k = o * wpr + g0 + b;
                // SAFETY: k < rows * words_per_row.
                let (kp, km) = unsafe { (*w16.add(2 * k), *w16.add(2 * k + 1)) };
                let v = _mm512_mask_add_ps(*acc_b, kp, *acc_b, c);
                *acc_b = _mm512_mask_sub_ps(v, km, v, c);
            }
        }
        for (b, v) in acc.iter().enumerate() {
            let valid = valid_lanes(t.cols, g0 + b) as u16;
            // SAFETY: the masked store touches only the valid lanes, inside the row.
            unsafe { _mm512_mask_storeu_ps(dxr[(g0 + b) * GROUP..].as_mut_ptr(), valid, *v) };
        }
    }

    /// # Safety
    /// As [`bwd`].
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn bwd_fma(t: &Ternary, dy: &[f32], dx: &mut [f32]) {
        let blocking =
            BwdBlocking { code_block_bytes: CODE_BLOCK_BYTES, x_block_bytes: X_BLOCK_BYTES, max_ni: 4, max_cb: 4 };
        // The closures inherit this function's target features.
        let expand = |t: &Ternary, rows: Range<usize>, codes: &mut [f32]| expand(t, rows, codes);
        let tile =
            |ni: usize, cb: usize, c: &[f32], coef: &[f32], nb: usize, pad: usize, dxs: &mut [f32]| match (ni, cb) {
                (4, 4) => fma_tile_t::<4, 4>(c, coef, nb, pad, dxs),
                (4, _) => fma_tile_t::<4, 1>(c, coef, nb, pad, dxs),
                (_, 4) => fma_tile_t::<1, 4>(c, coef, nb, pad, dxs),
                _ => fma_tile_t::<1, 1>(c, coef, nb, pad, dxs),
            };
        blocking.run(t, dy, dx, &expand, &tile);
    }

    /// NI rows x CB groups of the aligned dx buffer at `dxs` (row stride `pad`),
    /// over `nb` output rows of expanded codes at `codes` (row stride `pad`, starting
    /// at the same group); `coef[i * nb + o]` = dy * scale.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn fma_tile_t<const NI: usize, const CB: usize>(
        codes: &[f32],
        coef: &[f32],
        nb: usize,
        pad: usize,
        dxs: &mut [f32],
    ) {
        assert!(codes.len() >= (nb - 1) * pad + CB * GROUP && coef.len() >= NI * nb);
        assert!(dxs.len() >= (NI - 1) * pad + CB * GROUP);
        let (cp, dp) = (codes.as_ptr(), dxs.as_mut_ptr());
        let mut acc = [[_mm512_setzero_ps(); NI]; CB];
        for (b, acc_b) in acc.iter_mut().enumerate() {
            for (i, a) in acc_b.iter_mut().enumerate() {
                // SAFETY: checked above; 64-byte aligned (Line buffers, offsets in whole groups).
                *a = unsafe { _mm512_load_ps(dp.add(i * pad + b * GROUP)) };
            }
        }
        for o in 0..nb {
            let mut cv = [_mm512_setzero_ps(); NI];
            for (i, v) in cv.iter_mut().enumerate() {
                *v = _mm512_set1_ps(coef[i * nb + o]);
            }
            for (b, acc_b) in acc.iter_mut().enumerate() {
                // SAFETY: as above.
                let c = unsafe { _mm512_load_ps(cp.add(o * pad + b * GROUP)) };
                for (a, &v) in acc_b.iter_mut().zip(&cv) {
                    *a = _mm512_fmadd_ps(c, v, *a);
                }
            }
        }
        for (b, acc_b) in acc.iter().enumerate() {
            for (i, a) in acc_b.iter().enumerate() {
                // SAFETY: as above.
                unsafe { _mm512_store_ps(dp.add(i * pad + b * GROUP), *a) };
            }
        }
    }
}

/// AVX2 (with FMA): 16 lanes in two registers, and always the FMA route of the
/// `avx512` module, with each group's codes made as ±1.0 / 0.0 floats from a
/// byte table ([`BITS8`]: the "+1" byte's floats minus the "-1" byte's). Small
/// batches make them in registers as they go; batches of [`FMA_MIN_N`] rows or
/// more expand a block of rows once into a buffer and share it.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    /// Bytes of expanded codes per block of output rows (stays in L1).
    const CODE_BLOCK_BYTES: usize = 16 << 10;
    /// Bytes of x (or dx) per block of batch rows (stays in L2).
    const X_BLOCK_BYTES: usize = 128 << 10;

    /// The codes of one group as floats, lanes 0..8 and 8..16.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn codes16(w: u32) -> [__m256; 2] {
        let bits = |b: u32| -> __m256 {
            // SAFETY: b < 256; Bits8 is 32-byte aligned.
            unsafe { _mm256_load_ps(BITS8[b as usize].0.as_ptr()) }
        };
        [_mm256_sub_ps(bits(w & 0xFF), bits((w >> 16) & 0xFF)), _mm256_sub_ps(bits((w >> 8) & 0xFF), bits(w >> 24))]
    }

    /// The fixed combination and fold of [`fold`], lanes 0..8 and 8..16 in two registers.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn fold16(acc: [[__m256; 2]; NACC]) -> f32 {
        let lo = _mm256_add_ps(_mm256_add_ps(acc[0][0], acc[1][0]), _mm256_add_ps(acc[2][0], acc[3][0]));
        let hi = _mm256_add_ps(_mm256_add_ps(acc[0][1], acc[1][1]), _mm256_add_ps(acc[2][1], acc[3][1]));
        fold8x2(lo, hi)
    }

    /// # Safety
    /// The CPU has AVX2 and FMA; the lengths were checked by the caller.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn fwd(t: &Ternary, out: Range<usize>, x: &[f32], y: &mut [f32]) {
        let cols = t.cols;
        if x.len() / cols >= FMA_MIN_N {
            fwd_fma(t, out, x, y);
            return;
        }
        let wpr = t.words_per_row();
        let full = cols / GROUP;
        let m = out.len();
        let mut tail = [0.0f32; GROUP];
        for (i, xr) in x.chunks_exact(cols).enumerate() {
            // The partial last group, zero-padded (padding lanes have code 0 anyway).
            tail[..cols - full * GROUP].copy_from_slice(&xr[full * GROUP..]);
            for (yv, o) in y[i * m..(i + 1) * m].iter_mut().zip(out.clone()) {
                let words = t.row_words(o);
                let mut acc = [[_mm256_setzero_ps(); 2]; NACC];
                let group = |acc_a: &mut [__m256; 2], g: usize, src: &[f32]| {
                    assert!(src.len() >= GROUP);
                    let c = codes16(words[g]);
                    for (h, a) in acc_a.iter_mut().enumerate() {
                        // SAFETY: src holds 16 values.
                        let v = unsafe { _mm256_loadu_ps(src.as_ptr().add(8 * h)) };
                        *a = _mm256_fmadd_ps(c[h], v, *a);
                    }
                };
                // Unrolled by NACC so that the sets stay in registers.
                let mut g = 0;
                while g + NACC <= full {
                    for (a, acc_a) in acc.iter_mut().enumerate() {
                        group(acc_a, g + a, &xr[(g + a) * GROUP..]);
                    }
                    g += NACC;
                }
                for (a, acc_a) in acc.iter_mut().enumerate().take(wpr - g) {
                    let src = if g + a < full { &xr[(g + a) * GROUP..] } else { &tail[..] };
                    group(acc_a, g + a, src);
                }
                *yv = fold16(acc) * t.scale(o);
            }
        }
    }

    /// Writes the codes of output rows `rows` as floats, `words_per_row * 16` a row.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn expand(t: &Ternary, rows: Range<usize>, codes: &mut [f32]) {
        let wpr = t.words_per_row();
        for (row_codes, o) in codes.chunks_exact_mut(wpr * GROUP).zip(rows) {
            for (c, &w) in row_codes.chunks_exact_mut(GROUP).zip(t.row_words(o)) {
                let [lo, hi] = codes16(w);
                // SAFETY: c holds 16 values.
                unsafe {
                    _mm256_storeu_ps(c.as_mut_ptr(), lo);
                    _mm256_storeu_ps(c.as_mut_ptr().add(8), hi);
                }
            }
        }
    }

    /// NI x rows against one output row, on aligned, padded buffers with row
    /// stride `pad`. Lanes 0..8 and 8..16 only meet in the fold, so they take
    /// one pass each, which leaves registers for the four sets of NI rows.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn fma_dots<const NI: usize>(codes: &[f32], xs: &[f32], pad: usize) -> [f32; NI] {
        assert!(codes.len() >= pad && xs.len() >= NI * pad);
        let (cp, xp) = (codes.as_ptr(), xs.as_ptr());
        let mut half = [[_mm256_setzero_ps(); NI]; 2];
        for (h, half_h) in half.iter_mut().enumerate() {
            let mut acc = [[_mm256_setzero_ps(); NI]; NACC];
            let step = |acc_a: &mut [__m256; NI], g: usize| {
                // SAFETY: checked above; 32-byte aligned (Line buffers, offsets in half groups).
                let c = unsafe { _mm256_load_ps(cp.add(g * GROUP + 8 * h)) };
                for (i, a) in acc_a.iter_mut().enumerate() {
                    // SAFETY: as above.
                    let v = unsafe { _mm256_load_ps(xp.add(i * pad + g * GROUP + 8 * h)) };
                    *a = _mm256_fmadd_ps(c, v, *a);
                }
            };
            // Unrolled by NACC so that the sets stay in registers.
            let wpr = pad / GROUP;
            let mut g = 0;
            while g + NACC <= wpr {
                for (a, acc_a) in acc.iter_mut().enumerate() {
                    step(acc_a, g + a);
                }
                g += NACC;
            }
            for (a, acc_a) in acc.iter_mut().enumerate().take(wpr - g) {
                step(acc_a, g + a);
            }
            for (i, hv) in half_h.iter_mut().enumerate() {
                *hv = _mm256_add_ps(_mm256_add_ps(acc[0][i], acc[1][i]), _mm256_add_ps(acc[2][i], acc[3][i]));
            }
        }
        let mut r = [0.0f32; NI];
        for (i, rv) in r.iter_mut().enumerate() {
            *rv = fold8x2(half[0][i], half[1][i]);
        }
        r
    }

    /// [`fold`] from the combined lanes 0..8 and 8..16.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn fold8x2(lo: __m256, hi: __m256) -> f32 {
        let s8 = _mm256_add_ps(lo, hi); // s[j] + s[j + 8]
        let s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps::<1>(s8)); // + 4
        let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4)); // + 2
        let s1 = _mm_add_ss(s2, _mm_shuffle_ps::<1>(s2, s2)); // + 1
        _mm_cvtss_f32(s1)
    }

    /// The FMA route of the forward product.
    #[target_feature(enable = "avx2,fma")]
    fn fwd_fma(t: &Ternary, out: Range<usize>, x: &[f32], y: &mut [f32]) {
        let cols = t.cols;
        let wpr = t.words_per_row();
        let pad = wpr * GROUP;
        let n = x.len() / cols;
        let m = out.len();
        let ob = (CODE_BLOCK_BYTES / (4 * pad)).max(4);
        let ib = (X_BLOCK_BYTES / (4 * pad)).max(3);
        let mut codes = vec![Line::ZERO; ob * wpr];
        let mut xb = vec![Line::ZERO; ib * wpr];
        for i0 in (0..n).step_by(ib) {
            let i1 = (i0 + ib).min(n);
            let xbf = flat_mut(&mut xb);
            for (k, xr) in x[i0 * cols..i1 * cols].chunks_exact(cols).enumerate() {
                xbf[k * pad..k * pad + cols].copy_from_slice(xr);
            }
            let xbf = flat(&xb);
            for o0 in out.clone().step_by(ob) {
                let o1 = (o0 + ob).min(out.end);
                expand(t, o0..o1, flat_mut(&mut codes));
                let cf = flat(&codes);
                let mut i = i0;
                while i < i1 {
                    let ni = if i + 3 <= i1 { 3 } else { 1 };
                    let xs = &xbf[(i - i0) * pad..];
                    for o in o0..o1 {
                        let c = &cf[(o - o0) * pad..];
                        let at = i * m + o - out.start;
                        if ni == 3 {
                            for (k, r) in fma_dots::<3>(c, xs, pad).into_iter().enumerate() {
                                y[at + k * m] = r * t.scale(o);
                            }
                        } else {
                            y[at] = fma_dots::<1>(c, xs, pad)[0] * t.scale(o);
                        }
                    }
                    i += ni;
                }
            }
        }
    }

    /// # Safety
    /// The CPU has AVX2 and FMA; the lengths were checked by the caller.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn bwd(t: &Ternary, dy: &[f32], dx: &mut [f32]) {
        let (rows, cols) = (t.rows, t.cols);
        if dy.len() / rows >= FMA_MIN_N {
            bwd_fma(t, dy, dx);
            return;
        }
        let wpr = t.words_per_row();
        let full = cols / GROUP;
        let mut coef = vec![0.0f32; rows];
        for (dyr, dxr) in dy.chunks_exact(rows).zip(dx.chunks_exact_mut(cols)) {
            for ((c, &d), o) in coef.iter_mut().zip(dyr).zip(0..) {
                *c = d * t.scale(o);
            }
            let mut g = 0;
            while g < wpr {
                // Two groups (four registers) of dx at a time over all output rows.
                let cb = if g + 2 <= wpr { 2 } else { 1 };
                let mut acc = [[_mm256_setzero_ps(); 2]; 2];
                for (o, &c) in coef.iter().enumerate() {
                    let cv = _mm256_set1_ps(c);
                    for (b, acc_b) in acc.iter_mut().enumerate().take(cb) {
                        let w = t.words[o * wpr + g + b];
                        if w != 0 {
                            let c = codes16(w);
                            for (h, a) in acc_b.iter_mut().enumerate() {
                                *a = _mm256_fmadd_ps(c[h], cv, *a);
                            }
                        }
                    }
                }
                for (b, acc_b) in acc.iter().enumerate().take(cb) {
                    let mut buf = [0.0f32; GROUP];
                    // SAFETY: buf holds 16 values.
                    unsafe {
                        _mm256_storeu_ps(buf.as_mut_ptr(), acc_b[0]);
                        _mm256_storeu_ps(buf.as_mut_ptr().add(8), acc_b[1]);
                    }
                    let start = (g + b) * GROUP;
                    let len = if g + b < full { GROUP } else { cols - start };
                    dxr[start..start + len].copy_from_slice(&buf[..len]);
                }
                g += cb;
            }
        }
    }

    /// The FMA route of the backward product (the blocking is [`BwdBlocking`]'s).
    #[target_feature(enable = "avx2,fma")]
    fn bwd_fma(t: &Ternary, dy: &[f32], dx: &mut [f32]) {
        let blocking =
            BwdBlocking { code_block_bytes: CODE_BLOCK_BYTES, x_block_bytes: X_BLOCK_BYTES, max_ni: 2, max_cb: 3 };
        // The closures inherit this function's target features.
        let expand = |t: &Ternary, rows: Range<usize>, codes: &mut [f32]| expand(t, rows, codes);
        let tile =
            |ni: usize, cb: usize, c: &[f32], coef: &[f32], nb: usize, pad: usize, dxs: &mut [f32]| match (ni, cb) {
                (2, 3) => fma_tile_t::<2, 3>(c, coef, nb, pad, dxs),
                (2, _) => fma_tile_t::<2, 1>(c, coef, nb, pad, dxs),
                (_, 3) => fma_tile_t::<1, 3>(c, coef, nb, pad, dxs),
                _ => fma_tile_t::<1, 1>(c, coef, nb, pad, dxs),
            };
        blocking.run(t, dy, dx, &expand, &tile);
    }

    /// As `avx512::fma_tile_t`, in half groups.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn fma_tile_t<const NI: usize, const CB: usize>(
        codes: &[f32],
        coef: &[f32],
        nb: usize,
        pad: usize,
        dxs: &mut [f32],
    ) {
        assert!(codes.len() >= (nb - 1) * pad + CB * GROUP && coef.len() >= NI * nb);
        assert!(dxs.len() >= (NI - 1) * pad + CB * GROUP);
        let (cp, dp) = (codes.as_ptr(), dxs.as_mut_ptr());
        let mut acc = [[[_mm256_setzero_ps(); 2]; NI]; CB];
        for (b, acc_b) in acc.iter_mut().enumerate() {
            for (i, a) in acc_b.iter_mut().enumerate() {
                for (h, ah) in a.iter_mut().enumerate() {
                    // SAFETY: checked above; 32-byte aligned (Line buffers, offsets in half groups).
                    *ah = unsafe { _mm256_load_ps(dp.add(i * pad + b * GROUP + 8 * h)) };
                }
            }
        }
        for o in 0..nb {
            let mut cv = [_mm256_setzero_ps(); NI];
            for (i, v) in cv.iter_mut().enumerate() {
                *v = _mm256_set1_ps(coef[i * nb + o]);
            }
            for (b, acc_b) in acc.iter_mut().enumerate() {
                for h in 0..2 {
                    // SAFETY: as above.
                    let c = unsafe { _mm256_load_ps(cp.add(o * pad + b * GROUP + 8 * h)) };
                    for (a, &v) in acc_b.iter_mut().zip(&cv) {
                        a[h] = _mm256_fmadd_ps(c, v, a[h]);
                    }
                }
            }
        }
        for (b, acc_b) in acc.iter().enumerate() {
            for (i, a) in acc_b.iter().enumerate() {
                for (h, ah) in a.iter().enumerate() {
                    // SAFETY: as above.
                    unsafe { _mm256_store_ps(dp.add(i * pad + b * GROUP + 8 * h), *ah) };
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

    /// The module docs' order, transcribed literally (add, subtract or skip a
    /// lane): what the portable path must equal bit for bit on finite inputs.
    mod literal {
        use super::super::*;

        pub fn gemm(t: &Ternary, x: &[f32]) -> Vec<f32> {
            let mut y = Vec::new();
            for xr in x.chunks_exact(t.cols()) {
                for o in 0..t.rows() {
                    let mut acc = [[0.0f32; GROUP]; NACC];
                    for (g, &w) in t.row_words(o).iter().enumerate() {
                        for j in 0..GROUP.min(t.cols() - g * GROUP) {
                            if (w >> j) & 1 != 0 {
                                acc[g % NACC][j] += xr[g * GROUP + j];
                            } else if (w >> (j + GROUP)) & 1 != 0 {
                                acc[g % NACC][j] -= xr[g * GROUP + j];
                            }
                        }
                    }
                    y.push(fold(&acc) * t.scale(o));
                }
            }
            y
        }

        pub fn gemm_t(t: &Ternary, dy: &[f32]) -> Vec<f32> {
            let mut dx = Vec::new();
            for dyr in dy.chunks_exact(t.rows()) {
                let mut d = vec![0.0f32; t.cols()];
                for (o, &v) in dyr.iter().enumerate() {
                    let coef = v * t.scale(o);
                    for (c, dc) in d.iter_mut().enumerate() {
                        let w = t.row_words(o)[c / GROUP];
                        let j = c % GROUP;
                        if (w >> j) & 1 != 0 {
                            *dc += coef;
                        } else if (w >> (j + GROUP)) & 1 != 0 {
                            *dc -= coef;
                        }
                    }
                }
                dx.extend(d);
            }
            dx
        }
    }

    #[test]
    fn the_portable_path_gives_the_bits_of_the_documented_order() {
        let mut rng = Lcg::new(7);
        for &rows in &[1, 3, 7] {
            for &cols in COLS.iter().chain(&[255, 300]) {
                for &n in &NS {
                    let t = random_matrix(&mut rng, rows, cols);
                    let x: Vec<f32> = (0..n * cols).map(|_| rng.float() * 2f32.powi(rng.int(-12, 12))).collect();
                    let dy: Vec<f32> = (0..n * rows).map(|_| rng.float() * 2f32.powi(rng.int(-12, 12))).collect();
                    let (mut y, mut dx) = (vec![0.0; n * rows], vec![0.0; n * cols]);
                    gemm_with(Path::Portable, &t, &x, &mut y);
                    gemm_t_with(Path::Portable, &t, &dy, &mut dx);
                    assert_eq!(bits(&y), bits(&literal::gemm(&t, &x)), "forward {n}x{cols} -> {rows}");
                    assert_eq!(bits(&dx), bits(&literal::gemm_t(&t, &dy)), "backward {n}x{rows} -> {cols}");
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
    fn every_path_gives_the_same_bits_across_cache_block_boundaries() {
        // Wide rows make the SIMD paths split x into several blocks of batch rows
        // and the matrix into blocks of one or two output rows.
        let mut rng = Lcg::new(6);
        let (n, cols, rows) = (37, 4099, 7);
        let t = random_matrix(&mut rng, rows, cols);
        let x = rng.floats(n * cols);
        let dy = rng.floats(n * rows);
        let (mut y0, mut dx0) = (vec![0.0; n * rows], vec![0.0; n * cols]);
        gemm_with(Path::Portable, &t, &x, &mut y0);
        gemm_t_with(Path::Portable, &t, &dy, &mut dx0);
        for path in Path::all_available() {
            let (mut y, mut dx) = (vec![f32::NAN; n * rows], vec![f32::NAN; n * cols]);
            gemm_with(path, &t, &x, &mut y);
            assert_eq!(bits(&y), bits(&y0), "forward {}", path.name());
            gemm_t_with(path, &t, &dy, &mut dx);
            assert_eq!(bits(&dx), bits(&dx0), "backward {}", path.name());
        }
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
    fn empty_batches_and_empty_output_ranges_are_no_ops() {
        let t = Ternary::from_codes(&[1, -1, 0, 1, 1, 1], 2, 3, vec![0.5]).unwrap();
        for path in Path::all_available() {
            gemm_rows_with(path, &t, 1..1, &[1.0; 15], &mut []);
            gemm_with(path, &t, &[], &mut []);
            gemm_t_with(path, &t, &[], &mut []);
        }
    }

    #[test]
    #[should_panic(expected = "y must hold")]
    fn gemm_panics_on_a_wrong_output_length() {
        let t = Ternary::from_codes(&[1, 0], 1, 2, vec![1.0]).unwrap();
        gemm(&t, &[1.0, 2.0], &mut [0.0; 2]);
    }
}
