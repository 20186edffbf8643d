//! `cvk-bench fetch`: the controller's image sources over loopback, through
//! `ImageCache` with a fresh cache directory per case, against the
//! single-core SHA-256 rate of as many bytes and, for TFTP, against curl's
//! TFTP client on the same server and file. HTTP, FTP (passive, the
//! simulator's server), SFTP and SCP (the simulator's SSH server, password
//! login), and TFTP at each blksize and windowsize.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cvk_benches::{BENCH_VERSION, MIB, parse_size, rate};
use cvk_controller::source::{
    FetchRequest, ImageCache, SourceSettings, TftpOptions, UrlCredentials,
};
use futures::StreamExt;
use iosxe_sim::ImageSpec;
use iosxe_sim::image_servers::ftp::FtpAuth;
use iosxe_sim::image_servers::ssh::generate_ed25519;
use iosxe_sim::image_servers::{FtpServer, HttpServer, SshAuth, SshServer, TftpServer};
use serde_json::{Value, json};

use super::{FetchArgs, label, mib_s};

/// Single-core SHA-256 rate (bytes/s) over `bytes` bytes, from a 1 MiB
/// buffer in memory.
pub(crate) fn sha256_rate(bytes: u64) -> f64 {
    use sha2::{Digest, Sha256};
    let block = vec![0x5au8; MIB as usize];
    let t = Instant::now();
    let mut h = Sha256::new();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(MIB);
        h.update(&block[..n as usize]);
        left -= n;
    }
    std::hint::black_box(h.finalize());
    rate(bytes, t.elapsed())
}

/// The best of `rounds` [`sha256_rate`] passes.
pub(crate) fn sha256_rate_best(bytes: u64, rounds: usize) -> f64 {
    (0..rounds.max(1))
        .map(|_| sha256_rate(bytes))
        .fold(0.0, f64::max)
}

/// Fetches `url` through a fresh `ImageCache`, reading the stream to its
/// verified end; the bytes per second.
async fn through_cache(
    url: &str,
    sha256: &str,
    size: u64,
    tftp: TftpOptions,
    credentials: Option<UrlCredentials>,
) -> anyhow::Result<f64> {
    let cache_dir = tempfile::tempdir().context("cache directory")?;
    let mut settings = SourceSettings::new(cache_dir.path());
    settings.tftp = tftp;
    let cache = ImageCache::new(settings).context("opening the image cache")?;
    let t = Instant::now();
    let mut stream = cache
        .open(&FetchRequest {
            url: url.to_owned(),
            sha256: sha256.to_owned(),
            credentials,
        })
        .await
        .with_context(|| format!("opening {url}"))?;
    let mut n = 0u64;
    while let Some(item) = stream.next().await {
        n += item.with_context(|| format!("reading {url}"))?.len() as u64;
    }
    let d = t.elapsed();
    if n != size {
        bail!("{url}: {n} bytes read, the image has {size}");
    }
    Ok(rate(size, d))
}

/// curl's TFTP client (`--tftp-blksize`) into /dev/null; bytes per second.
async fn curl_tftp(url: &str, blksize: u16, size: u64) -> anyhow::Result<f64> {
    let t = Instant::now();
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-S", "-o", "/dev/null", "-w", "%{size_download}"])
        .args([
            "--max-time",
            "600",
            "--tftp-blksize",
            &blksize.to_string(),
            url,
        ])
        .kill_on_drop(true)
        .output()
        .await
        .context("running curl")?;
    let d = t.elapsed();
    if !out.status.success() {
        bail!(
            "curl {url} --tftp-blksize {blksize}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let got: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("curl's size_download")?;
    if got != size {
        bail!("curl {url}: {got} bytes downloaded, the image has {size}");
    }
    Ok(rate(size, d))
}

fn curl_available() -> bool {
    std::process::Command::new("curl")
        .arg("--version")
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("tftp"))
        .unwrap_or(false)
}

/// Runs the fetch cases.
pub(crate) async fn run(a: &FetchArgs) -> anyhow::Result<Value> {
    let size = parse_size(&a.size).map_err(|e| anyhow::anyhow!("--size: {e}"))?;
    for &b in &a.blksizes {
        if !(8..=65464).contains(&b) {
            bail!("--blksizes: {b} is outside 8-65464 (RFC 2348)");
        }
    }
    if a.windowsizes.contains(&0) {
        bail!("--windowsizes: 0 is not a window size (1-65535, RFC 7440)");
    }
    let dir = tempfile::tempdir().context("image directory")?;
    let path = dir.path().join("img.bin");
    let sha256 = ImageSpec::new(BENCH_VERSION, size)
        .write_to(std::io::BufWriter::with_capacity(
            MIB as usize,
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
        ))
        .context("writing the image")?;
    let http = HttpServer::start(dir.path(), ([127, 0, 0, 1], 0).into())
        .await
        .context("starting the HTTP server")?;
    let tftp = TftpServer::start(dir.path(), ([127, 0, 0, 1], 0).into())
        .await
        .context("starting the TFTP server")?;
    let curl = !a.no_curl && curl_available();

    println!(
        "\nImage-source fetch over loopback through ImageCache, {} image",
        label(size)
    );
    println!(
        "{:>36} {:>10} {:>12} {:>8} {:>8}",
        "source", "MiB/s", "sha256 MiB/s", "ratio", "vs curl"
    );
    let mut rows = Vec::new();
    let mut print = |name: String, r: f64, s: f64, vs_curl: Option<f64>| {
        println!(
            "{:>36} {:>10.1} {:>12.1} {:>8.2} {:>8}",
            name,
            mib_s(r),
            mib_s(s),
            r / s,
            vs_curl.map(|v| format!("{v:.2}")).unwrap_or_default()
        );
        rows.push(json!({
            "source": name, "mib_per_s": mib_s(r), "sha256_mib_per_s": mib_s(s),
            "ratio_to_sha256": (r / s * 1000.0).round() / 1000.0,
            "ratio_to_curl": vs_curl.map(|v| (v * 100.0).round() / 100.0),
        }));
    };

    let s = sha256_rate_best(size, 2);
    let r = through_cache(
        &http.url("img.bin"),
        &sha256,
        size,
        TftpOptions::default(),
        None,
    )
    .await?;
    print("http".into(), r, s, None);

    // FTP and SFTP/SCP, with the user and password their servers know.
    let (user, password) = ("images", "bench");
    let ftp = FtpServer::start(
        dir.path(),
        ([127, 0, 0, 1], 0).into(),
        FtpAuth {
            username: user.into(),
            password: password.into(),
            anonymous: false,
        },
    )
    .await
    .context("starting the FTP server")?;
    let login = UrlCredentials {
        username: Some(user.into()),
        password: Some(password.into()),
        ..Default::default()
    };
    let s = sha256_rate_best(size, 2);
    let r = through_cache(
        &ftp.url("img.bin"),
        &sha256,
        size,
        TftpOptions::default(),
        Some(login.clone()),
    )
    .await?;
    print("ftp".into(), r, s, None);
    let (_, public) = generate_ed25519();
    let ssh = SshServer::start(
        dir.path(),
        ([127, 0, 0, 1], 0).into(),
        SshAuth {
            username: user.into(),
            password: Some(password.into()),
            authorized_keys: vec![public],
        },
    )
    .await
    .context("starting the SSH server")?;
    let ssh_login = UrlCredentials {
        known_hosts: Some(ssh.known_hosts_line()),
        ..login
    };
    for (name, url) in [
        ("sftp", ssh.sftp_url("img.bin")),
        ("scp", ssh.scp_url("img.bin")),
    ] {
        let s = sha256_rate_best(size, 2);
        let r = through_cache(
            &url,
            &sha256,
            size,
            TftpOptions::default(),
            Some(ssh_login.clone()),
        )
        .await?;
        print(name.into(), r, s, None);
    }

    for &blksize in &a.blksizes {
        let curl_rate = if curl {
            let s = sha256_rate_best(size, 2);
            let r = curl_tftp(&tftp.url("img.bin"), blksize, size).await?;
            print(format!("curl tftp blksize {blksize}"), r, s, None);
            Some(r)
        } else {
            None
        };
        for &windowsize in &a.windowsizes {
            let opts = TftpOptions {
                blksize,
                windowsize,
                timeout: Duration::from_secs(1),
                retries: 5,
            };
            let s = sha256_rate_best(size, 2);
            let r = through_cache(&tftp.url("img.bin"), &sha256, size, opts, None).await?;
            print(
                format!("tftp blksize {blksize} windowsize {windowsize}"),
                r,
                s,
                curl_rate.map(|c| r / c),
            );
        }
    }
    Ok(json!({
        "image_bytes": size,
        "curl": curl,
        "cases": rows,
    }))
}
