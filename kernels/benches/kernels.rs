//! Fused kernels against their plain references, on the shapes of the
//! `small` profile (rows of d = 128; attention rows of t = 128), and the
//! vectorised `exp` against libm's: the speed
//! side of "every kernel is tested against its reference".
//! Run: `cargo bench -p kernels`.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

fn inputs(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect()
}

fn rmsnorm(c: &mut Criterion) {
    let (rows, d) = (1024, 128);
    let x = inputs(rows * d);
    let g = vec![1.0f32; d];
    let (mut y, mut r) = (vec![0.0; rows * d], vec![0.0; rows]);
    let (x64, g64): (Vec<f64>, Vec<f64>) =
        (x.iter().map(|&v| v as f64).collect(), g.iter().map(|&v| v as f64).collect());
    let mut group = c.benchmark_group("rmsnorm_fwd 1024x128");
    group.bench_function("fused", |b| b.iter(|| kernels::rmsnorm_fwd(black_box(&x), &g, 1e-5, &mut y, &mut r)));
    group.bench_function("reference", |b| b.iter(|| kernels::reference::rmsnorm_fwd(black_box(&x64), &g64, 1e-5)));
    group.finish();
}

fn softmax(c: &mut Criterion) {
    let t = 128;
    let heads = 8;
    let x = inputs(heads * t * t);
    let mut y = vec![0.0; heads * t * t];
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let mut group = c.benchmark_group("causal_softmax_fwd 8x128x128");
    group.bench_function("fused", |b| b.iter(|| kernels::causal_softmax_fwd(black_box(&x), t, 0.125, &mut y)));
    group.bench_function("reference", |b| b.iter(|| kernels::reference::causal_softmax_fwd(black_box(&x64), t, 0.125)));
    group.finish();
}

fn gelu(c: &mut Criterion) {
    let x = inputs(1024 * 256);
    let dy = inputs(1024 * 256);
    let mut dx = vec![0.0; x.len()];
    let (x64, dy64): (Vec<f64>, Vec<f64>) =
        (x.iter().map(|&v| v as f64).collect(), dy.iter().map(|&v| v as f64).collect());
    let mut group = c.benchmark_group("gelu_bwd 1024x256");
    group.bench_function("fused", |b| b.iter(|| kernels::gelu_bwd(black_box(&x), &dy, &mut dx)));
    group.bench_function("reference", |b| b.iter(|| kernels::reference::gelu_bwd(black_box(&x64), &dy64)));
    group.finish();
}

fn exp(c: &mut Criterion) {
    let x: Vec<f32> = inputs(65536).iter().map(|v| v * 20.0).collect();
    let mut y = x.clone();
    let mut group = c.benchmark_group("exp 65536");
    group.bench_function("vectorised", |b| {
        b.iter(|| {
            y.copy_from_slice(black_box(&x));
            kernels::exp_in_place(&mut y)
        })
    });
    group.bench_function("libm f32::exp", |b| {
        b.iter(|| {
            for (o, &v) in y.iter_mut().zip(black_box(&x)) {
                *o = v.exp();
            }
        })
    });
    group.finish();
}

criterion_group!(benches, rmsnorm, softmax, gelu, exp);
criterion_main!(benches);
