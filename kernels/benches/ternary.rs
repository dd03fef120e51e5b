//! Packed ternary products against candle's f32 matmul of the same shape:
//! matrix-vector at 1024^2, 4096^2 and 8192^2 (decoding; memory-bound, so
//! throughput is in bytes of weights read), a plain read of 256 MiB for the
//! machine's bandwidth, and one training-shaped forward and backward.
//! Run: `cargo bench -p kernels --bench ternary`.

use candle_core::{Device, Tensor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kernels::ternary::{self, Path, ScaleGranularity, Ternary};
use std::hint::black_box;
use std::time::Duration;

fn inputs(n: usize, seed: usize) -> Vec<f32> {
    (0..n).map(|i| (((i + seed) * 7919 % 1000) as f32 / 500.0) - 1.0).collect()
}

fn matrix(rows: usize, cols: usize) -> Ternary {
    Ternary::quantize_absmean(&inputs(rows * cols, 17), rows, cols, ScaleGranularity::PerRow).unwrap()
}

fn configure(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group.sample_size(15).warm_up_time(Duration::from_millis(700)).measurement_time(Duration::from_secs(2));
}

fn matvec(c: &mut Criterion) {
    for k in [1024, 4096, 8192] {
        let t = matrix(k, k);
        let x = inputs(k, 3);
        let mut y = vec![0.0f32; k];
        let mut group = c.benchmark_group(format!("ternary matvec {k}x{k}"));
        configure(&mut group);
        group.throughput(Throughput::Bytes(t.packed_bytes() as u64));
        for path in Path::all_available() {
            group.bench_function(path.name(), |b| b.iter(|| ternary::gemm_with(path, &t, black_box(&x), &mut y)));
        }
        // candle reads 4 bytes a weight: its throughput is in its own bytes.
        let dev = Device::Cpu;
        let w = Tensor::from_vec(t.dequantize(), (k, k), &dev).unwrap();
        let xt = Tensor::from_vec(x.clone(), (1, k), &dev).unwrap();
        group.throughput(Throughput::Bytes((4 * k * k) as u64));
        group.bench_function("candle f32 x.matmul(w.t()) (Linear)", |b| {
            b.iter(|| black_box(&xt).matmul(&w.t().unwrap()).unwrap())
        });
        group.bench_function("candle f32 x.matmul(w)", |b| b.iter(|| black_box(&xt).matmul(&w).unwrap()));
        group.finish();
    }
}

fn bandwidth(c: &mut Criterion) {
    let buf = vec![1.0f32; 256 << 20 >> 2];
    let mut group = c.benchmark_group("memory read bandwidth");
    configure(&mut group);
    group.throughput(Throughput::Bytes((buf.len() * 4) as u64));
    group.bench_function("sum 256 MiB f32", |b| {
        b.iter(|| {
            // 16 independent lanes so the loop vectorises without reassociation.
            let mut acc = [0.0f32; 16];
            for chunk in black_box(&buf).chunks_exact(16) {
                for (a, v) in acc.iter_mut().zip(chunk) {
                    *a += v;
                }
            }
            acc.iter().sum::<f32>()
        })
    });
    group.finish();
}

fn training(c: &mut Criterion) {
    let (n, cols, rows) = (2048, 256, 1024);
    let t = matrix(rows, cols);
    let x = inputs(n * cols, 5);
    let dy = inputs(n * rows, 7);
    let (mut y, mut dx) = (vec![0.0f32; n * rows], vec![0.0f32; n * cols]);
    let dev = Device::Cpu;
    let w = Tensor::from_vec(t.dequantize(), (rows, cols), &dev).unwrap();
    let (xt, dyt) =
        (Tensor::from_vec(x.clone(), (n, cols), &dev).unwrap(), Tensor::from_vec(dy.clone(), (n, rows), &dev).unwrap());
    let paths = Path::all_available();

    let mut group = c.benchmark_group(format!("ternary gemm n{n} {cols}->{rows}"));
    configure(&mut group);
    group.sample_size(10);
    group.throughput(Throughput::Elements((n * rows * cols) as u64));
    for &path in &paths {
        group.bench_function(path.name(), |b| b.iter(|| ternary::gemm_with(path, &t, black_box(&x), &mut y)));
    }
    group.bench_function("candle f32 x.matmul(w.t())", |b| b.iter(|| black_box(&xt).matmul(&w.t().unwrap()).unwrap()));
    group.finish();

    let mut group = c.benchmark_group(format!("ternary gemm_t n{n} {rows}->{cols}"));
    configure(&mut group);
    group.sample_size(10);
    group.throughput(Throughput::Elements((n * rows * cols) as u64));
    for &path in &paths {
        group.bench_function(path.name(), |b| b.iter(|| ternary::gemm_t_with(path, &t, black_box(&dy), &mut dx)));
    }
    group.bench_function("candle f32 dy.matmul(w)", |b| b.iter(|| black_box(&dyt).matmul(&w).unwrap()));
    group.finish();
}

criterion_group!(benches, matvec, bandwidth, training);
criterion_main!(benches);
