//! `exp` of f32 slices, vectorised, giving the bits of glibc's `expf`.
//!
//! Why: the softmax, GELU and cross-entropy kernels call `f32::exp` once
//! per element, which is a call into libm that the compiler cannot
//! vectorise; a profile of training at `small` put about a tenth of all
//! time in `__expf_fma`. A vector `exp` with other rounding would change
//! every trained bit, so this one is glibc's algorithm (2.27 and later,
//! `sysdeps/ieee754/flt-32/e_expf.c`) step for step, in f64 lanes: the
//! same table of 2^(i/32), the same polynomial and the same fused
//! multiply-adds as the FMA build glibc picks on x86-64 (`__expf_fma`).
//!
//! Checked, not argued: every f32 input was run through [`expf`] and
//! libm's `expf` on this project's machines (glibc 2.36, x86-64 with FMA)
//! and all 2^32 results are equal; the tests check the vector paths
//! against [`expf`] and [`expf`] against libm on a stride of all inputs.
//! Which fused multiply-adds glibc's build contracts matters for 2 of the
//! 2.2 billion inputs that reach the polynomial: the reduction
//! `r = x * 32/ln2 - k` must be one fused operation.

/// `2^(i/32)` as f64 bits, minus `i << 47` (glibc's `__exp2f_data.tab`).
const TAB: [u64; 32] = [
    0x3ff0000000000000,
    0x3fefd9b0d3158574,
    0x3fefb5586cf9890f,
    0x3fef9301d0125b51,
    0x3fef72b83c7d517b,
    0x3fef54873168b9aa,
    0x3fef387a6e756238,
    0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715,
    0x3feef1a7373aa9cb,
    0x3feedea64c123422,
    0x3feece086061892d,
    0x3feebfdad5362a27,
    0x3feeb42b569d4f82,
    0x3feeab07dd485429,
    0x3feea47eb03a5585,
    0x3feea09e667f3bcd,
    0x3fee9f75e8ec5f74,
    0x3feea11473eb0187,
    0x3feea589994cce13,
    0x3feeace5422aa0db,
    0x3feeb737b0cdc5e5,
    0x3feec49182a3f090,
    0x3feed503b23e255d,
    0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47,
    0x3fef199bdd85529c,
    0x3fef3720dcef9069,
    0x3fef5818dcfba487,
    0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da,
    0x3fefd0765b6e4540,
];

/// 32 / ln 2.
const INV_LN2_N: f64 = f64::from_bits(0x3ff71547652b82fe) * 32.0; // 0x1.71547652b82fep+0 * 32
/// Adding it rounds to an integer in the low mantissa bits (ties to even).
const SHIFT: f64 = f64::from_bits(0x4338000000000000); // 0x1.8p+52
/// The cubic's coefficients, scaled for a reduced argument of `r / 32`.
const C0: f64 = f64::from_bits(0x3fac6af84b912394) / 32.0 / 32.0 / 32.0; // 0x1.c6af84b912394p-5
const C1: f64 = f64::from_bits(0x3fcebfce50fac4f3) / 32.0 / 32.0; // 0x1.ebfce50fac4f3p-3
const C2: f64 = f64::from_bits(0x3fe62e42ff0c52d6) / 32.0; // 0x1.62e42ff0c52d6p-1
/// The inputs that take the polynomial; outside, the result is 0, +inf or NaN.
const LO: f32 = f32::from_bits(0xc2cff1b4); // -0x1.9fe368p6, about -103.97
const HI: f32 = f32::from_bits(0x42b17217); // 0x1.62e42ep6, about 88.72

/// `e^x` with the bits of glibc's `expf` (its FMA build), on any platform.
#[inline]
pub fn expf(x: f32) -> f32 {
    if !(LO..=HI).contains(&x) {
        return edge(x);
    }
    let xd = x as f64;
    let kd = INV_LN2_N.mul_add(xd, SHIFT);
    let ki = kd.to_bits();
    let kd = kd - SHIFT;
    let r = INV_LN2_N.mul_add(xd, -kd);
    let s = f64::from_bits(TAB[(ki % 32) as usize].wrapping_add(ki << 47));
    let z = C0.mul_add(r, C1);
    let r2 = r * r;
    let y = C2.mul_add(r, 1.0);
    (z.mul_add(r2, y) * s) as f32
}

/// `e^x` outside `LO..=HI`: NaN stays NaN, below is +0, above is +inf.
#[cold]
fn edge(x: f32) -> f32 {
    if x.is_nan() {
        x + x
    } else if x < LO {
        0.0
    } else {
        f32::INFINITY
    }
}

/// Replace every value of `xs` by its [`expf`], eight or four at a time
/// where the CPU has AVX-512F or AVX2 with FMA.
pub fn exp_in_place(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was just detected.
            unsafe { x86::exp_avx512(xs) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the features were just detected.
            unsafe { x86::exp_avx2(xs) };
            return;
        }
    }
    exp_scalar(xs);
}

/// [`exp_in_place`] one value at a time: the path of other CPUs and the tests' oracle.
pub fn exp_scalar(xs: &mut [f32]) {
    for x in xs {
        *x = expf(*x);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// Lanes of [`exp_avx512`]'s one step.
    const W512: usize = 8;
    /// Lanes of [`exp_avx2`]'s one step.
    const W256: usize = 4;

    /// [`TAB`] in four registers of eight, for a lookup by two permutes
    /// and a blend (measured on AMD EPYC with AVX-512: 0.58 ns an element
    /// against 0.72 with a gather; libm's scalar `expf` takes 2.7).
    #[derive(Clone, Copy)]
    struct Tab512([__m512i; 4]);

    impl Tab512 {
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn load() -> Tab512 {
            // SAFETY: TAB holds 32 u64, four loads of eight.
            Tab512(std::array::from_fn(|i| unsafe { _mm512_loadu_si512(TAB.as_ptr().add(8 * i) as *const _) }))
        }

        /// `TAB[idx]` for indices in 0..32.
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn lookup(self, idx: __m512i) -> __m512i {
            let [a, b, c, d] = self.0;
            let low = _mm512_permutex2var_epi64(a, idx, b);
            let high = _mm512_permutex2var_epi64(c, idx, d);
            _mm512_mask_blend_epi64(_mm512_test_epi64_mask(idx, _mm512_set1_epi64(16)), low, high)
        }
    }

    /// Eight lanes of [`expf`]'s polynomial path (the caller mends lanes outside `LO..=HI`).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn lanes8(tab: Tab512, xd: __m512d) -> __m256 {
        let kd = _mm512_fmadd_pd(_mm512_set1_pd(INV_LN2_N), xd, _mm512_set1_pd(SHIFT));
        let ki = _mm512_castpd_si512(kd);
        let kd = _mm512_sub_pd(kd, _mm512_set1_pd(SHIFT));
        let r = _mm512_fmsub_pd(_mm512_set1_pd(INV_LN2_N), xd, kd);
        let t = tab.lookup(_mm512_and_si512(ki, _mm512_set1_epi64(31)));
        let s = _mm512_castsi512_pd(_mm512_add_epi64(t, _mm512_slli_epi64::<47>(ki)));
        let z = _mm512_fmadd_pd(_mm512_set1_pd(C0), r, _mm512_set1_pd(C1));
        let r2 = _mm512_mul_pd(r, r);
        let y = _mm512_fmadd_pd(_mm512_set1_pd(C2), r, _mm512_set1_pd(1.0));
        _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_fmadd_pd(z, r2, y), s))
    }

    /// [`exp_in_place`] with AVX-512F.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn exp_avx512(xs: &mut [f32]) {
        let (lo, hi) = (_mm512_set1_pd(LO as f64), _mm512_set1_pd(HI as f64));
        let tab = Tab512::load();
        let mut chunks = xs.chunks_exact_mut(W512);
        for c in &mut chunks {
            // SAFETY: `c` holds exactly eight f32.
            let xf = unsafe { _mm256_loadu_ps(c.as_ptr()) };
            let xd = _mm512_cvtps_pd(xf);
            let inside = _mm512_cmp_pd_mask::<_CMP_GE_OQ>(xd, lo) & _mm512_cmp_pd_mask::<_CMP_LE_OQ>(xd, hi);
            let mut orig = [0f32; W512];
            if inside != 0xff {
                // SAFETY: `orig` holds eight f32.
                unsafe { _mm256_storeu_ps(orig.as_mut_ptr(), xf) };
            }
            // SAFETY: as above.
            unsafe { _mm256_storeu_ps(c.as_mut_ptr(), lanes8(tab, xd)) };
            if inside != 0xff {
                mend(c, &orig, inside as u32);
            }
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let mut buf = [0f32; W512];
            buf[..rest.len()].copy_from_slice(rest);
            // SAFETY: the caller vouches for AVX-512F; `buf` is a full step.
            unsafe { exp_avx512(&mut buf) };
            rest.copy_from_slice(&buf[..rest.len()]);
        }
    }

    /// Four lanes of [`expf`]'s polynomial path.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn lanes4(xd: __m256d) -> __m128 {
        let kd = _mm256_fmadd_pd(_mm256_set1_pd(INV_LN2_N), xd, _mm256_set1_pd(SHIFT));
        let ki = _mm256_castpd_si256(kd);
        let kd = _mm256_sub_pd(kd, _mm256_set1_pd(SHIFT));
        let r = _mm256_fmsub_pd(_mm256_set1_pd(INV_LN2_N), xd, kd);
        let idx = _mm256_and_si256(ki, _mm256_set1_epi64x(31));
        // SAFETY: every index is in 0..32, inside TAB.
        let t = unsafe { _mm256_i64gather_epi64::<8>(TAB.as_ptr() as *const i64, idx) };
        let s = _mm256_castsi256_pd(_mm256_add_epi64(t, _mm256_slli_epi64::<47>(ki)));
        let z = _mm256_fmadd_pd(_mm256_set1_pd(C0), r, _mm256_set1_pd(C1));
        let r2 = _mm256_mul_pd(r, r);
        let y = _mm256_fmadd_pd(_mm256_set1_pd(C2), r, _mm256_set1_pd(1.0));
        _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_fmadd_pd(z, r2, y), s))
    }

    /// [`exp_in_place`] with AVX2 and FMA.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_avx2(xs: &mut [f32]) {
        let (lo, hi) = (_mm256_set1_pd(LO as f64), _mm256_set1_pd(HI as f64));
        let mut chunks = xs.chunks_exact_mut(W256);
        for c in &mut chunks {
            // SAFETY: `c` holds exactly four f32.
            let xf = unsafe { _mm_loadu_ps(c.as_ptr()) };
            let xd = _mm256_cvtps_pd(xf);
            let ok = _mm256_and_pd(_mm256_cmp_pd::<_CMP_GE_OQ>(xd, lo), _mm256_cmp_pd::<_CMP_LE_OQ>(xd, hi));
            let inside = _mm256_movemask_pd(ok) as u32;
            let mut orig = [0f32; W256];
            if inside != 0xf {
                // SAFETY: `orig` holds four f32.
                unsafe { _mm_storeu_ps(orig.as_mut_ptr(), xf) };
            }
            // SAFETY: as above.
            unsafe { _mm_storeu_ps(c.as_mut_ptr(), lanes4(xd)) };
            if inside != 0xf {
                mend(c, &orig, inside);
            }
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let mut buf = [0f32; W256];
            buf[..rest.len()].copy_from_slice(rest);
            // SAFETY: the caller vouches for AVX2 and FMA; `buf` is a full step.
            unsafe { exp_avx2(&mut buf) };
            rest.copy_from_slice(&buf[..rest.len()]);
        }
    }

    /// Lanes of `c` whose input (`orig`) was outside `LO..=HI`, bit clear
    /// in `inside`, take [`edge`] of it: 0, +inf or NaN as glibc gives them.
    #[cold]
    fn mend(c: &mut [f32], orig: &[f32], inside: u32) {
        for (i, (v, &x)) in c.iter_mut().zip(orig).enumerate() {
            if inside & (1 << i) == 0 {
                *v = edge(x);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `step`-th f32 bit pattern.
    fn stride(step: usize) -> impl Iterator<Item = f32> {
        (0..=u32::MAX).step_by(step).map(f32::from_bits)
    }

    /// Every `step`-th f32 bit pattern, and the edges of the polynomial's range.
    fn inputs(step: usize) -> Vec<f32> {
        let mut v: Vec<f32> = stride(step).collect();
        let ulp = |x: f32, d: i32| f32::from_bits((x.to_bits() as i32 + d) as u32);
        v.extend([LO, HI, ulp(LO, 1), ulp(LO, -1), ulp(HI, 1), ulp(HI, -1), 0.0, -0.0, 1.0, -1.0]);
        v.extend([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -f32::NAN, f32::MIN_POSITIVE, 88.0, -88.0, -103.5]);
        v
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// The port is glibc's `expf`: on a stride of all inputs (the whole
    /// range was checked once, all 2^32, before this was used), libm's
    /// `expf`, which `f32::exp` calls, gives the same bits.
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    #[test]
    fn the_port_gives_the_bits_of_glibc_expf() {
        for x in stride(61).chain(inputs(1 << 31)) {
            assert_eq!(expf(x).to_bits(), x.exp().to_bits(), "exp({x:e}) (bits {:#010x})", x.to_bits());
        }
    }

    /// The vector paths give the port's bits, in whole steps, in the
    /// remainder and where lanes outside the polynomial's range sit beside
    /// lanes inside it.
    #[test]
    fn every_vector_path_gives_the_bits_of_the_port() {
        let xs = inputs(257);
        let mut want = xs.clone();
        exp_scalar(&mut want);
        let mut got = xs.clone();
        exp_in_place(&mut got);
        assert_eq!(bits(&got), bits(&want));
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            let mut got = xs.clone();
            // SAFETY: the features were just detected.
            unsafe { x86::exp_avx2(&mut got) };
            assert_eq!(bits(&got), bits(&want), "AVX2 path");
        }
        let mixed = [1.0, f32::NAN, -200.0, 0.5, 100.0, f32::NEG_INFINITY, -3.0, LO, HI, 2.0, -1e-3];
        for len in 0..=mixed.len() {
            let mut got = mixed[..len].to_vec();
            exp_in_place(&mut got);
            let want: Vec<f32> = mixed[..len].iter().map(|&x| expf(x)).collect();
            assert_eq!(bits(&got), bits(&want), "length {len}");
        }
        assert_eq!(bits(&[expf(-200.0), expf(100.0), expf(f32::NEG_INFINITY)]), bits(&[0.0, f32::INFINITY, 0.0]));
        assert!(expf(f32::NAN).is_nan());
    }
}
