//! Throughput of the image sources over loopback (a measurement, not a
//! timed test): a 256 MiB image over HTTP and over TFTP with blksize 1468
//! and 8192 and windowsize 1, 8 and 16, against the single-core SHA-256
//! rate measured in the same run. Run with
//! `cargo test --release -p cvk-controller --test source_bench -- --ignored --nocapture`
//! (`CVK_BENCH_IMAGE_MIB` changes the size).

use std::time::{Duration, Instant};

use cvk_controller::source::{FetchRequest, ImageCache, SourceSettings, TftpOptions};
use futures::StreamExt;
use iosxe_sim::ImageSpec;
use iosxe_sim::image_servers::{HttpServer, TftpServer};
use sha2::{Digest, Sha256};

fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly with --release --ignored --nocapture"]
async fn source_throughput_over_loopback() {
    let mib: u64 = std::env::var("CVK_BENCH_IMAGE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let size = mib * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let serve = dir.path().join("serve");
    std::fs::create_dir_all(&serve).unwrap();
    let sha = ImageSpec::new("17.18.02.0.4112.1766116039", size)
        .write_to(std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(serve.join("img.bin")).unwrap(),
        ))
        .unwrap();

    // Single-core SHA-256 rate over the same bytes, from memory.
    let block = vec![0x5au8; 1 << 20];
    let t = Instant::now();
    let mut h = Sha256::new();
    for _ in 0..mib {
        h.update(&block);
    }
    std::hint::black_box(h.finalize());
    let sha_rate = mib_per_s(size, t.elapsed());
    println!("sha256 single core: {sha_rate:.0} MiB/s");

    let http = HttpServer::start(&serve, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let tftp = TftpServer::start(&serve, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut cases: Vec<(String, String, TftpOptions)> =
        vec![("http".into(), http.url("img.bin"), TftpOptions::default())];
    for blksize in [1468u16, 8192] {
        for windowsize in [1u16, 8, 16] {
            cases.push((
                format!("tftp blksize {blksize} windowsize {windowsize}"),
                tftp.url("img.bin"),
                TftpOptions {
                    blksize,
                    windowsize,
                    timeout: Duration::from_secs(1),
                    retries: 5,
                },
            ));
        }
    }
    println!("| source | MiB/s | of sha256 rate |");
    println!("|---|---|---|");
    for (name, url, tftp_opts) in cases {
        let cache_dir = tempfile::tempdir().unwrap();
        let mut s = SourceSettings::new(cache_dir.path());
        s.tftp = tftp_opts;
        let cache = ImageCache::new(s).unwrap();
        let t = Instant::now();
        let mut stream = cache
            .open(&FetchRequest {
                url,
                sha256: sha.clone(),
                credentials: None,
            })
            .await
            .unwrap();
        let mut n = 0u64;
        while let Some(item) = stream.next().await {
            n += item.unwrap().len() as u64;
        }
        let d = t.elapsed();
        assert_eq!(n, size);
        let rate = mib_per_s(size, d);
        println!("| {name} | {rate:.0} | {:.2} |", rate / sha_rate);
    }
}
