//! Criterion benches of the transfer paths against the simulator on
//! loopback: single-core SHA-256 (the baseline), OS.Install at several
//! chunk sizes, File.Put, File.Get and an idle System.Time. Sizes are
//! small so a run stays short; `cvk-bench` has the large images, the
//! ratios and the latency-under-load figures (see `BENCHMARKS.md`).
//!
//! `CVK_BENCH_IMAGE` sets the image size (default `16MiB`).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use cvk_benches::{BENCH_VERSION, Bench, Image, MIB, PoolMode, parse_size};

/// The allocator the shipped binaries use (see `cvk-bench`).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn image_size() -> u64 {
    match std::env::var("CVK_BENCH_IMAGE") {
        Ok(s) => parse_size(&s).unwrap_or_else(|e| panic!("CVK_BENCH_IMAGE={s:?}: {e}")),
        Err(_) => 16 * MIB,
    }
}

fn transfer(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let bench = rt
        .block_on(Bench::start(PoolMode::Classed))
        .expect("simulator and client");
    let size = image_size();
    let image = Image::new(BENCH_VERSION, size).expect("image");
    let content = image.to_bytes();

    let mut g = c.benchmark_group("transfer");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Bytes(size));
    g.bench_function(BenchmarkId::new("sha256", size), |b| {
        b.iter(|| black_box(image.sha256()))
    });
    for chunk in [64 * 1024, 256 * 1024, 1024 * 1024, 4 * 1024 * 1024] {
        g.bench_function(
            BenchmarkId::new(format!("os_install/chunk={chunk}"), size),
            |b| {
                // The RPC's own time; the staged image's removal after
                // each install is not part of it.
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            rt.block_on(bench.install(&image, chunk))
                                .expect("OS.Install")
                                .elapsed
                        })
                        .sum()
                })
            },
        );
    }
    let path = "flash:criterion.bin";
    g.bench_function(BenchmarkId::new("file_put", size), |b| {
        b.iter(|| {
            rt.block_on(bench.client.file_put_bytes(path, 0o644, content.clone()))
                .expect("File.Put")
        })
    });
    g.bench_function(BenchmarkId::new("file_get", size), |b| {
        b.iter(|| {
            let got = rt
                .block_on(bench.client.file_get(path, size))
                .expect("File.Get");
            assert_eq!(got.bytes_read, size, "File.Get read the whole file");
        })
    });
    g.finish();

    let mut g = c.benchmark_group("control");
    g.sample_size(50).measurement_time(Duration::from_secs(3));
    g.bench_function("system_time_idle", |b| {
        b.iter(|| rt.block_on(bench.client.time()).expect("System.Time"))
    });
    g.finish();
    rt.block_on(bench.shutdown());
}

criterion_group!(benches, transfer);
criterion_main!(benches);
