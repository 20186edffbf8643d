//! Image sources against real servers on loopback (`iosxe_sim::image_servers`):
//! every scheme fetches a generated image and checks its digest; refusals,
//! size cap, single flight, cache hits and interrupted downloads.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cvk_controller::source::{
    FetchRequest, ImageCache, ImageStream, ReadCounters, STREAM_CHUNK, SourceError, SourceSettings,
    TftpOptions, UrlCredentials, source_error,
};
use futures::StreamExt;
use iosxe_sim::ImageSpec;
use iosxe_sim::image_servers::ftp::FtpAuth;
use iosxe_sim::image_servers::ssh::generate_ed25519;
use iosxe_sim::image_servers::{FtpServer, HttpServer, SshAuth, SshServer, TftpServer};
use sha2::{Digest, Sha256};

const VERSION: &str = "17.18.02.0.4112.1766116039";

/// A directory with one generated image `images/<name>`; returns its sha256.
fn write_image(dir: &Path, name: &str, size: u64) -> String {
    let path = dir.join("images").join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = std::fs::File::create(&path).unwrap();
    ImageSpec::new(VERSION, size)
        .write_to(std::io::BufWriter::new(f))
        .unwrap()
}

struct Fixture {
    _tmp: tempfile::TempDir,
    serve_dir: PathBuf,
    cache_dir: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let serve_dir = tmp.path().join("serve");
    let cache_dir = tmp.path().join("cache");
    std::fs::create_dir_all(&serve_dir).unwrap();
    Fixture {
        _tmp: tmp,
        serve_dir,
        cache_dir,
    }
}

fn settings(f: &Fixture) -> SourceSettings {
    let mut s = SourceSettings::new(&f.cache_dir);
    s.connect_timeout = Duration::from_secs(5);
    s.idle_timeout = Duration::from_secs(5);
    s
}

fn request(url: String, sha256: &str) -> FetchRequest {
    FetchRequest {
        url,
        sha256: sha256.to_owned(),
        credentials: None,
    }
}

/// Reads a stream to its end: (bytes, sha256, error).
async fn drain(mut s: ImageStream) -> (u64, String, Option<std::io::Error>) {
    let mut h = Sha256::new();
    let mut n = 0u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let item = tokio::time::timeout_at(deadline, s.next())
            .await
            .expect("stream stalled");
        match item {
            None => return (n, hex::encode(h.finalize()), None),
            Some(Ok(b)) => {
                n += b.len() as u64;
                h.update(&b);
            }
            Some(Err(e)) => return (n, hex::encode(h.finalize()), Some(e)),
        }
    }
}

/// Batches a live reader may hold (the tee's depth): the reader that starts
/// a download always gets at least this much straight from the download.
const LIVE_DEPTH_BYTES: u64 = 4 * STREAM_CHUNK as u64;

/// The reader that started a download got its first batches from the
/// download itself (all of an image of up to four batches, whatever the
/// scheduling), and the rest from the partial file.
fn assert_tee(reads: &ReadCounters, size: u64, what: &str) {
    assert!(
        reads.live() >= size.min(LIVE_DEPTH_BYTES),
        "{what}: {} of {size} bytes live, {} from disk",
        reads.live(),
        reads.from_disk()
    );
    assert_eq!(reads.live() + reads.from_disk(), size, "{what}");
}

/// An HTTP server on loopback serving one generated image, and a fresh
/// cache with a request for it.
struct HttpCase {
    /// Bind it (`_f: _tmp`), not `..`: the directories go with it.
    _f: Fixture,
    server: HttpServer,
    cache: ImageCache,
    req: FetchRequest,
    sha: String,
}

async fn http_case(size: u64) -> HttpCase {
    let f = fixture();
    let sha = write_image(&f.serve_dir, "a.bin", size);
    let server = HttpServer::start(&f.serve_dir, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let cache = ImageCache::new(settings(&f)).unwrap();
    let req = request(server.url("images/a.bin"), &sha);
    HttpCase {
        _f: f,
        server,
        cache,
        req,
        sha,
    }
}

async fn fetch_ok(cache: &ImageCache, req: &FetchRequest) -> ImageStream {
    cache
        .open(req)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", req.url))
}

#[tokio::test]
async fn http_fetches_an_image_and_checks_the_digest() {
    let f = fixture();
    let size = 3 * 1024 * 1024 + 77;
    let sha = write_image(&f.serve_dir, "cat9k.bin", size);
    let server = HttpServer::start(&f.serve_dir, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let cache = ImageCache::new(settings(&f)).unwrap();
    let req = request(server.url("images/cat9k.bin"), &sha);
    let stream = fetch_ok(&cache, &req).await;
    assert_eq!(stream.total_bytes(), Some(size));
    assert!(!stream.from_cache());
    let reads = stream.reads();
    let (n, got, err) = drain(stream).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!((n, got.as_str()), (size, sha.as_str()));
    assert_eq!(
        reads.from_disk(),
        0,
        "the first reader of 4 batches reads no disk"
    );
    assert_tee(&reads, size, "http");
    assert!(cache.contains(&sha));
    assert_eq!(server.stats().downloads(), 1);
    // A later reader reads the verified file.
    let again = fetch_ok(&cache, &req).await;
    let reads = again.reads();
    let (n, got, err) = drain(again).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!((n, got.as_str()), (size, sha.as_str()));
    assert_eq!((reads.live(), reads.from_disk()), (0, size));
}

#[tokio::test]
async fn a_reader_that_falls_behind_goes_on_from_the_partial_file() {
    let size = 12 * 1024 * 1024 + 5;
    let HttpCase {
        server,
        cache,
        req,
        sha,
        _f: _tmp,
    } = http_case(size).await;
    let mut slow = fetch_ok(&cache, &req).await;
    let reads = slow.reads();
    let first = slow.next().await.expect("a first chunk").unwrap();
    // Stalls until the download is done: it can hold only four batches.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cache.contains(&sha) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "download did not finish"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut h = Sha256::new();
    h.update(&first);
    let mut n = first.len() as u64;
    while let Some(b) = slow.next().await {
        let b = b.unwrap();
        n += b.len() as u64;
        h.update(&b);
    }
    assert_eq!((n, hex::encode(h.finalize())), (size, sha.clone()));
    assert!(reads.live() >= LIVE_DEPTH_BYTES, "{reads:?}");
    assert!(
        reads.live() <= LIVE_DEPTH_BYTES + STREAM_CHUNK as u64,
        "{reads:?}"
    );
    assert_eq!(reads.live() + reads.from_disk(), size);
    assert_eq!(server.stats().downloads(), 1);
}

#[tokio::test]
async fn a_reader_that_joins_a_running_download_catches_up_from_the_file() {
    let size = 24 * 1024 * 1024 + 3;
    let HttpCase {
        server,
        cache,
        req,
        sha,
        _f: _tmp,
    } = http_case(size).await;
    let mut first = fetch_ok(&cache, &req).await;
    // Two chunks through the first reader: the download is past them.
    let mut h = Sha256::new();
    let mut n = 0u64;
    for _ in 0..2 {
        let b = first.next().await.unwrap().unwrap();
        n += b.len() as u64;
        h.update(&b);
    }
    let late = fetch_ok(&cache, &req).await;
    let late_reads = late.reads();
    let ((ln, lh, le), rest) = tokio::join!(drain(late), async {
        while let Some(b) = first.next().await {
            let b = b.unwrap();
            n += b.len() as u64;
            h.update(&b);
        }
        (n, hex::encode(h.finalize()))
    });
    assert!(le.is_none(), "{le:?}");
    assert_eq!((ln, lh.as_str()), (size, sha.as_str()));
    assert_eq!(rest, (size, sha.clone()));
    // Whether it joined the flight or found the verified file, what it
    // missed came from disk.
    assert!(
        late_reads.from_disk() >= 2 * STREAM_CHUNK as u64,
        "{late_reads:?}"
    );
    assert_eq!(late_reads.live() + late_reads.from_disk(), size);
    assert_eq!(server.stats().downloads(), 1);
}

#[tokio::test]
async fn https_fetches_with_an_extra_ca_and_refuses_an_unknown_one() {
    let f = fixture();
    let size = 1024 * 1024 + 1;
    let sha = write_image(&f.serve_dir, "a.bin", size);
    let server = HttpServer::start_tls(&f.serve_dir, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = server.url("images/a.bin");
    assert!(url.starts_with("https://localhost:"), "{url}");
    // Without the CA: the certificate is not trusted.
    let cache = ImageCache::new(settings(&f)).unwrap();
    let err = cache.open(&request(url.clone(), &sha)).await.unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut s = SourceSettings::new(dir.path());
    s.extra_ca_pem = Some(server.ca_pem().unwrap().to_owned());
    let cache = ImageCache::new(s).unwrap();
    let (n, got, err) = drain(fetch_ok(&cache, &request(url, &sha)).await).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!((n, got), (size, sha));
}

#[tokio::test]
async fn a_cached_second_open_does_not_touch_the_server() {
    let f = fixture();
    let size = 1024 * 1024;
    let sha = write_image(&f.serve_dir, "a.bin", size);
    let server = HttpServer::start(&f.serve_dir, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let cache = ImageCache::new(settings(&f)).unwrap();
    let req = request(server.url("images/a.bin"), &sha);
    let (n, got, err) = drain(cache.open(&req).await.unwrap()).await;
    assert!(err.is_none() && n == size && got == sha);
    let second = cache.open(&req).await.unwrap();
    assert!(second.from_cache());
    assert_eq!(second.total_bytes(), Some(size));
    let (n, got, err) = drain(second).await;
    assert!(err.is_none() && n == size && got == sha);
    assert_eq!(
        server.stats().downloads(),
        1,
        "the second open came from disk"
    );
    // A new cache over the same directory (a restarted controller) also hits.
    drop(cache);
    let cache = ImageCache::new(settings(&f)).unwrap();
    assert!(cache.open(&req).await.unwrap().from_cache());
    assert_eq!(server.stats().downloads(), 1);
}

#[tokio::test]
async fn a_digest_mismatch_ends_the_stream_with_an_error_and_caches_nothing() {
    let f = fixture();
    let size = 2 * 1024 * 1024;
    let _sha = write_image(&f.serve_dir, "a.bin", size);
    let server = HttpServer::start(&f.serve_dir, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let cache = ImageCache::new(settings(&f)).unwrap();
    let wrong = "0".repeat(64);
    let (n, _, err) = drain(
        cache
            .open(&request(server.url("images/a.bin"), &wrong))
            .await
            .unwrap(),
    )
    .await;
    let err = err.expect("a mismatch must end in an error, never in None");
    let se = source_error(&err).expect("wraps a SourceError");
    assert!(
        matches!(se, SourceError::DigestMismatch { expected, .. } if *expected == wrong),
        "{se}"
    );
    assert_eq!(se.reason(), "SourceDigestMismatch");
    assert!(!se.is_retryable());
    assert_eq!(n, size, "every byte was streamed before the verdict");
    assert!(!cache.contains(&wrong));
    let partial: Vec<_> = std::fs::read_dir(f.cache_dir.join("partial"))
        .unwrap()
        .collect();
    assert!(partial.is_empty(), "partial file discarded: {partial:?}");
}

#[tokio::test]
async fn http_not_found_is_not_retryable() {
    let f = fixture();
    let server = HttpServer::start(&f.serve_dir, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let cache = ImageCache::new(settings(&f)).unwrap();
    let err = cache
        .open(&request(server.url("images/missing.bin"), &"a".repeat(64)))
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::NotFound { .. }), "{err}");
    assert_eq!(err.reason(), "SourceNotFound");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_refused_connection_is_retryable() {
    let f = fixture();
    // Bind then drop: nothing listens on that port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cache = ImageCache::new(settings(&f)).unwrap();
    let err = cache
        .open(&request(
            format!("http://127.0.0.1:{port}/a.bin"),
            &"a".repeat(64),
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::Unreachable { .. }), "{err}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn size_cap_refuses_an_announced_size() {
    let f = fixture();
    let size = 2 * 1024 * 1024;
    let sha = write_image(&f.serve_dir, "a.bin", size);
    let server = HttpServer::start(&f.serve_dir, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut s = settings(&f);
    s.max_image_bytes = size - 1;
    let cache = ImageCache::new(s).unwrap();
    let err = cache
        .open(&request(server.url("images/a.bin"), &sha))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        SourceError::TooLarge {
            size,
            limit: size - 1
        }
    );
    assert_eq!(err.reason(), "ImageTooLarge");
    assert!(!cache.contains(&sha));
}

#[tokio::test]
async fn single_flight_two_concurrent_opens_make_one_download() {
    let size = 16 * 1024 * 1024;
    let HttpCase {
        server,
        cache,
        req,
        sha,
        _f: _tmp,
    } = http_case(size).await;
    let (a, b) = tokio::join!(cache.open(&req), cache.open(&req));
    let (a, b) = (a.unwrap(), b.unwrap());
    let ((na, ha, ea), (nb, hb, eb)) = tokio::join!(drain(a), drain(b));
    assert!(ea.is_none() && eb.is_none(), "{ea:?} {eb:?}");
    assert_eq!((na, nb), (size, size));
    assert_eq!((ha.as_str(), hb.as_str()), (sha.as_str(), sha.as_str()));
    assert_eq!(server.stats().downloads(), 1, "one download served both");
}

#[tokio::test]
async fn an_interrupted_download_errors_retryably_and_a_reopen_succeeds() {
    let size = 4 * 1024 * 1024;
    let HttpCase {
        server,
        cache,
        req,
        sha,
        _f: _tmp,
    } = http_case(size).await;
    server.faults().cut_next(1024 * 1024, 1);
    let (n, _, err) = drain(cache.open(&req).await.unwrap()).await;
    let err = err.expect("cut download must error");
    let se = source_error(&err).expect("SourceError inside");
    assert!(se.is_retryable(), "{se}");
    assert!(n < size);
    assert!(!cache.contains(&sha));
    let (n, got, err) = drain(cache.open(&req).await.unwrap()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!((n, got), (size, sha.clone()));
    assert_eq!(server.stats().downloads(), 2);
}

// ---------------------------------------------------------------- TFTP

fn tftp_settings(f: &Fixture, blksize: u16, windowsize: u16) -> SourceSettings {
    let mut s = settings(f);
    s.tftp = TftpOptions {
        blksize,
        windowsize,
        timeout: Duration::from_millis(300),
        retries: 3,
    };
    s
}

#[tokio::test]
async fn tftp_fetches_with_negotiated_options() {
    let f = fixture();
    let size = 5 * 1024 * 1024 + 123;
    let sha = write_image(&f.serve_dir, "cat9k.bin", size);
    let server = TftpServer::start(&f.serve_dir, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    for (blk, win) in [(1468, 1), (8192, 8), (8192, 16), (512, 4)] {
        let dir = tempfile::tempdir().unwrap();
        let mut s = tftp_settings(&f, blk, win);
        s.cache_dir = dir.path().to_owned();
        let cache = ImageCache::new(s).unwrap();
        let stream = fetch_ok(&cache, &request(server.url("images/cat9k.bin"), &sha)).await;
        assert_eq!(stream.total_bytes(), Some(size), "tsize negotiated");
        let reads = stream.reads();
        let (n, got, err) = drain(stream).await;
        assert_tee(&reads, size, &format!("tftp blksize {blk} window {win}"));
        assert!(err.is_none(), "blksize {blk} window {win}: {err:?}");
        assert_eq!(
            (n, got.as_str()),
            (size, sha.as_str()),
            "blksize {blk} window {win}"
        );
    }
    assert_eq!(server.stats().completed(), 4);
}

#[tokio::test]
async fn tftp_falls_back_when_the_server_ignores_options_and_wraps_block_numbers() {
    let f = fixture();
    // 512-byte blocks: 34 MiB is 69632 blocks, past the 16-bit block number.
    let size = 34 * 1024 * 1024;
    let sha = write_image(&f.serve_dir, "a.bin", size);
    let server = TftpServer::start(&f.serve_dir, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    server.set_options_enabled(false);
    let cache = ImageCache::new(tftp_settings(&f, 8192, 16)).unwrap();
    let stream = fetch_ok(&cache, &request(server.url("images/a.bin"), &sha)).await;
    let (n, got, err) = drain(stream).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!((n, got), (size, sha));
}

#[tokio::test]
async fn size_cap_counts_bytes_when_the_source_announces_no_size() {
    let f = fixture();
    let size = 1024 * 1024;
    let sha = write_image(&f.serve_dir, "a.bin", size);
    let server = TftpServer::start(&f.serve_dir, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    server.set_options_enabled(false); // no tsize
    let mut s = tftp_settings(&f, 8192, 8);
    s.max_image_bytes = 300 * 1024;
    let cache = ImageCache::new(s).unwrap();
    let err = match cache.open(&request(server.url("images/a.bin"), &sha)).await {
        Err(e) => e,
        Ok(stream) => {
            assert_eq!(stream.total_bytes(), None);
            let (n, _, err) = drain(stream).await;
            assert!(n <= 300 * 1024, "{n}");
            source_error(&err.expect("over the cap")).cloned().unwrap()
        }
    };
    assert!(
        matches!(err, SourceError::TooLarge { limit, .. } if limit == 300 * 1024),
        "{err}"
    );
    assert!(!cache.contains(&sha));
}

#[tokio::test]
async fn tftp_not_found_and_interrupted() {
    let f = fixture();
    let size = 2 * 1024 * 1024;
    let sha = write_image(&f.serve_dir, "a.bin", size);
    let server = TftpServer::start(&f.serve_dir, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let cache = ImageCache::new(tftp_settings(&f, 8192, 8)).unwrap();
    let err = cache
        .open(&request(server.url("images/none.bin"), &sha))
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::NotFound { .. }), "{err}");
    server.faults().cut_next(512 * 1024, 1);
    let req = request(server.url("images/a.bin"), &sha);
    let (n, _, err) = drain(cache.open(&req).await.unwrap()).await;
    let err = err.expect("a silent server must end the stream with an error");
    let se = source_error(&err).unwrap();
    assert!(
        matches!(se, SourceError::Unreachable { .. }) && se.is_retryable(),
        "{se}"
    );
    assert!(n <= 512 * 1024);
    let (n, got, err) = drain(cache.open(&req).await.unwrap()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!((n, got), (size, sha));
}

#[tokio::test]
async fn curl_fetches_from_our_tftp_server_with_options() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("curl is not installed; skipping the cross-check");
        return;
    }
    let f = fixture();
    let size = 3 * 1024 * 1024 + 5;
    let sha = write_image(&f.serve_dir, "a.bin", size);
    let server = TftpServer::start(&f.serve_dir, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let out = f.cache_dir.with_file_name("curl.bin");
    let url = server.url("images/a.bin");
    let status = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "60", "--tftp-blksize", "1468", "-o"])
        .arg(&out)
        .arg(&url)
        .status()
        .await
        .unwrap();
    assert!(status.success(), "curl {url}: {status}");
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(bytes.len() as u64, size);
    assert_eq!(hex::encode(Sha256::digest(&bytes)), sha);
    // curl exits right after sending the last ACK; the server counts the
    // transfer once that ACK is processed, which may be a moment later.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while server.stats().completed() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(server.stats().completed(), 1);
}

// ---------------------------------------------------------------- FTP

fn ftp_auth() -> FtpAuth {
    FtpAuth {
        username: "images".into(),
        password: "s3cret".into(),
        anonymous: true,
    }
}

fn creds(user: &str, password: Option<&str>) -> UrlCredentials {
    UrlCredentials {
        username: Some(user.into()),
        password: password.map(Into::into),
        ..Default::default()
    }
}

#[tokio::test]
async fn ftp_fetches_anonymously_and_with_a_password() {
    let f = fixture();
    let size = 3 * 1024 * 1024 + 9;
    let sha = write_image(&f.serve_dir, "a.bin", size);
    let server = FtpServer::start(&f.serve_dir, "127.0.0.1:0".parse().unwrap(), ftp_auth())
        .await
        .unwrap();
    let anon = ImageCache::new(settings(&f)).unwrap();
    let stream = fetch_ok(&anon, &request(server.url("images/a.bin"), &sha)).await;
    assert_eq!(stream.total_bytes(), Some(size), "SIZE announced");
    let reads = stream.reads();
    let (n, got, err) = drain(stream).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!((n, got.as_str()), (size, sha.as_str()));
    assert_eq!(reads.from_disk(), 0, "ftp: four batches, all live");
    assert_tee(&reads, size, "ftp");

    let dir = tempfile::tempdir().unwrap();
    let authed = ImageCache::new(SourceSettings::new(dir.path())).unwrap();
    let mut req = request(server.url("images/a.bin"), &sha);
    req.credentials = Some(creds("images", Some("s3cret")));
    let (n, got, err) = drain(fetch_ok(&authed, &req).await).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!((n, got), (size, sha));
    assert_eq!(server.stats().completed(), 2);
}

#[tokio::test]
async fn ftp_refusals_wrong_password_not_found_and_a_cut_transfer() {
    let f = fixture();
    let size = 2 * 1024 * 1024;
    let sha = write_image(&f.serve_dir, "a.bin", size);
    let server = FtpServer::start(&f.serve_dir, "127.0.0.1:0".parse().unwrap(), ftp_auth())
        .await
        .unwrap();
    let cache = ImageCache::new(settings(&f)).unwrap();
    let mut req = request(server.url("images/a.bin"), &sha);
    req.credentials = Some(creds("images", Some("wrong")));
    let err = cache.open(&req).await.unwrap_err();
    assert!(matches!(err, SourceError::AuthFailed { .. }), "{err}");
    assert_eq!(err.reason(), "SourceAuthFailed");
    assert!(!err.is_retryable());

    let err = cache
        .open(&request(server.url("images/none.bin"), &sha))
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::NotFound { .. }), "{err}");

    server.faults().cut_next(700 * 1024, 1);
    let req = request(server.url("images/a.bin"), &sha);
    let (n, _, err) = drain(cache.open(&req).await.unwrap()).await;
    let se = source_error(&err.expect("cut")).cloned().unwrap();
    assert!(se.is_retryable(), "{se}");
    assert!(n < size);
    let (n, got, err) = drain(cache.open(&req).await.unwrap()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!((n, got), (size, sha));
}

// ---------------------------------------------------------------- SFTP / SCP

struct Ssh {
    server: SshServer,
    private_key: String,
}

async fn ssh_server(dir: &Path) -> Ssh {
    let (private_key, public) = generate_ed25519();
    let server = SshServer::start(
        dir,
        "127.0.0.1:0".parse().unwrap(),
        SshAuth {
            username: "images".into(),
            password: Some("s3cret".into()),
            authorized_keys: vec![public],
        },
    )
    .await
    .unwrap();
    Ssh {
        server,
        private_key,
    }
}

fn ssh_creds(ssh: &Ssh, password: Option<&str>, key: bool) -> UrlCredentials {
    UrlCredentials {
        username: Some("images".into()),
        password: password.map(Into::into),
        private_key: key.then(|| ssh.private_key.clone()),
        known_hosts: Some(format!("# lab\n{}\n", ssh.server.known_hosts_line())),
        ..Default::default()
    }
}

#[tokio::test]
async fn sftp_and_scp_fetch_with_password_and_private_key() {
    let f = fixture();
    let size = 3 * 1024 * 1024 + 1;
    let sha = write_image(&f.serve_dir, "a.bin", size);
    let ssh = ssh_server(&f.serve_dir).await;
    for (i, (url, password, key)) in [
        (ssh.server.sftp_url("images/a.bin"), Some("s3cret"), false),
        (ssh.server.sftp_url("images/a.bin"), None, true),
        (ssh.server.scp_url("images/a.bin"), Some("s3cret"), false),
        (ssh.server.scp_url("images/a.bin"), None, true),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(SourceSettings::new(dir.path())).unwrap();
        let mut req = request(url.clone(), &sha);
        req.credentials = Some(ssh_creds(&ssh, password, key));
        let stream = fetch_ok(&cache, &req).await;
        assert_eq!(stream.total_bytes(), Some(size), "{url}");
        let reads = stream.reads();
        let (n, got, err) = drain(stream).await;
        assert!(err.is_none(), "case {i} {url}: {err:?}");
        assert_eq!(
            reads.from_disk(),
            0,
            "case {i} {url}: four batches, all live"
        );
        assert_tee(&reads, size, &url);
        assert_eq!((n, got.as_str()), (size, sha.as_str()), "case {i} {url}");
    }
    assert_eq!(ssh.server.stats().downloads(), 4);
}

#[tokio::test]
async fn ssh_refusals_wrong_password_unknown_host_key_and_missing_known_hosts() {
    let f = fixture();
    let sha = write_image(&f.serve_dir, "a.bin", 64 * 1024);
    let ssh = ssh_server(&f.serve_dir).await;
    let cache = ImageCache::new(settings(&f)).unwrap();
    for url in [
        ssh.server.sftp_url("images/a.bin"),
        ssh.server.scp_url("images/a.bin"),
    ] {
        let mut req = request(url.clone(), &sha);
        req.credentials = Some(ssh_creds(&ssh, Some("wrong"), false));
        let err = cache.open(&req).await.unwrap_err();
        assert!(
            matches!(err, SourceError::AuthFailed { .. }),
            "{url}: {err}"
        );

        // A knownHosts entry for this host with another key.
        let (_, other) = generate_ed25519();
        let mut c = ssh_creds(&ssh, Some("s3cret"), false);
        c.known_hosts = Some(format!(
            "[127.0.0.1]:{} {other}\n",
            ssh.server.addr().port()
        ));
        req.credentials = Some(c);
        let err = cache.open(&req).await.unwrap_err();
        assert!(
            matches!(err, SourceError::HostKeyRejected { .. }),
            "{url}: {err}"
        );
        assert_eq!(err.reason(), "SourceHostKeyRejected");
        assert!(err.to_string().contains("differs"), "{err}");

        // No entry for this host at all.
        let mut c = ssh_creds(&ssh, Some("s3cret"), false);
        c.known_hosts = Some(format!("files.example.com {other}\n"));
        req.credentials = Some(c);
        let err = cache.open(&req).await.unwrap_err();
        assert!(
            err.to_string().contains("no knownHosts entry"),
            "{url}: {err}"
        );

        let mut c = ssh_creds(&ssh, Some("s3cret"), false);
        c.known_hosts = None;
        req.credentials = Some(c);
        let err = cache.open(&req).await.unwrap_err();
        assert_eq!(err, SourceError::MissingKnownHosts, "{url}");

        let missing = request(url.replace("a.bin", "none.bin"), &sha);
        let mut missing = missing;
        missing.credentials = Some(ssh_creds(&ssh, Some("s3cret"), false));
        let err = cache.open(&missing).await.unwrap_err();
        assert!(matches!(err, SourceError::NotFound { .. }), "{url}: {err}");
    }
    assert_eq!(ssh.server.stats().downloads(), 0);
}

#[tokio::test]
async fn insecure_skip_host_key_needs_the_url_opt_out_and_the_controller_setting() {
    let f = fixture();
    let size = 256 * 1024;
    let sha = write_image(&f.serve_dir, "a.bin", size);
    let ssh = ssh_server(&f.serve_dir).await;
    let url = format!(
        "{}?insecureSkipHostKey=true",
        ssh.server.sftp_url("images/a.bin")
    );
    let mut c = ssh_creds(&ssh, Some("s3cret"), false);
    c.known_hosts = None;
    let mut req = request(url, &sha);
    req.credentials = Some(c);

    // Opt-out in the URL but not allowed by the controller: refused.
    let cache = ImageCache::new(settings(&f)).unwrap();
    let err = cache.open(&req).await.unwrap_err();
    assert_eq!(err, SourceError::MissingKnownHosts);

    let dir = tempfile::tempdir().unwrap();
    let mut s = SourceSettings::new(dir.path());
    s.allow_insecure_ssh = true;
    let cache = ImageCache::new(s).unwrap();
    let (n, got, err) = drain(fetch_ok(&cache, &req).await).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!((n, got), (size, sha));
}

#[tokio::test]
async fn ssh_cut_transfers_are_retryable() {
    let f = fixture();
    let size = 2 * 1024 * 1024;
    let sha = write_image(&f.serve_dir, "a.bin", size);
    let ssh = ssh_server(&f.serve_dir).await;
    for url in [
        ssh.server.sftp_url("images/a.bin"),
        ssh.server.scp_url("images/a.bin"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SourceSettings::new(dir.path());
        s.idle_timeout = Duration::from_secs(5);
        let cache = ImageCache::new(s).unwrap();
        let mut req = request(url.clone(), &sha);
        req.credentials = Some(ssh_creds(&ssh, Some("s3cret"), false));
        ssh.server.faults().cut_next(600 * 1024, 1);
        let (n, _, err) = drain(cache.open(&req).await.unwrap()).await;
        let se = source_error(&err.expect("cut")).cloned().unwrap();
        assert!(se.is_retryable(), "{url}: {se}");
        assert!(n < size);
        let (n, got, err) = drain(cache.open(&req).await.unwrap()).await;
        assert!(err.is_none(), "{url}: {err:?}");
        assert_eq!((n, got.as_str()), (size, sha.as_str()));
    }
}
