//! Image sources against real servers on loopback (`iosxe_sim::image_servers`):
//! every scheme fetches a generated image and checks its digest; refusals,
//! size cap, single flight, cache hits and interrupted downloads.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cvk_controller::source::{
    FetchRequest, ImageCache, ImageStream, SourceError, SourceSettings, source_error,
};
use futures::StreamExt;
use iosxe_sim::ImageSpec;
use iosxe_sim::image_servers::HttpServer;
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
    let (n, got, err) = drain(stream).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!((n, got.as_str()), (size, sha.as_str()));
    assert!(cache.contains(&sha));
    assert_eq!(server.stats().downloads(), 1);
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
async fn size_cap_refuses_an_announced_size_and_a_counted_one() {
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
    let f = fixture();
    let size = 16 * 1024 * 1024;
    let sha = write_image(&f.serve_dir, "a.bin", size);
    let server = HttpServer::start(&f.serve_dir, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let cache = ImageCache::new(settings(&f)).unwrap();
    let req = request(server.url("images/a.bin"), &sha);
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
    let f = fixture();
    let size = 4 * 1024 * 1024;
    let sha = write_image(&f.serve_dir, "a.bin", size);
    let server = HttpServer::start(&f.serve_dir, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    server.faults().cut_next(1024 * 1024, 1);
    let cache = ImageCache::new(settings(&f)).unwrap();
    let req = request(server.url("images/a.bin"), &sha);
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
