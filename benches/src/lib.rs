//! Shared parts of the transfer and latency benchmarks: a simulated
//! Catalyst 9300 on loopback, device clients with the classed connection
//! pool or one shared channel, in-memory images, the single-core SHA-256
//! baseline and latency percentiles.
//!
//! The criterion benches (`benches/transfer.rs`) and the `cvk-bench`
//! binary (`src/bin/cvk-bench.rs`, figures as ratios plus a JSON summary)
//! both build on this module; `BENCHMARKS.md` at the repository root has
//! the commands and the measured figures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use cvk_controller::client::os::{InstallOutcome, InstallParams};
use cvk_controller::client::{
    ClientMetrics, ClientPool, DeviceClient, DeviceTarget, GnoiSettings, Timeouts, Transport,
};
use cvk_controller::source::STREAM_CHUNK;
use iosxe_sim::{Fleet, FleetConfig, FleetHandle, ImageSpec, Profile};
use sha2::{Digest, Sha256};

/// Profile of the simulated device: full gNOI (System, File, OS).
pub const PROFILE: &str = "c9300-17.18";
/// Version of the images the benchmarks install (differs from the
/// profile's running version, so the device accepts the transfer).
pub const BENCH_VERSION: &str = "17.18.03.0.5000.1770000000";
/// 1 MiB.
pub const MIB: u64 = 1024 * 1024;

/// Which connection layout the device client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolMode {
    /// One HTTP/2 connection per workload class (the default).
    Classed,
    /// One HTTP/2 connection shared by every class (the baseline).
    Shared,
}

impl PoolMode {
    /// Label used in tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Classed => "classed",
            PoolMode::Shared => "shared",
        }
    }
}

/// One simulated device on loopback and a client to it.
pub struct Bench {
    /// The simulator fleet (one device).
    pub fleet: FleetHandle,
    /// The pool the client came from.
    pub pool: ClientPool,
    /// The device's client.
    pub client: Arc<DeviceClient>,
}

/// Client settings of the benchmarks: plaintext, generous deadlines (a
/// loaded machine must not turn a slow transfer into a failure).
pub fn bench_settings(mode: PoolMode) -> GnoiSettings {
    GnoiSettings {
        insecure: true,
        timeouts: Timeouts {
            control: Duration::from_secs(30),
            stream_idle: Duration::from_secs(60),
            install_validation: Duration::from_secs(120),
            ..Timeouts::default()
        },
        single_channel: mode == PoolMode::Shared,
        ..GnoiSettings::default()
    }
}

impl Bench {
    /// Starts one simulated device (built-in profile [`PROFILE`]) on
    /// 127.0.0.1 and builds its client. Must run inside a Tokio runtime.
    pub async fn start(mode: PoolMode) -> anyhow::Result<Bench> {
        let profile = Profile::builtin(PROFILE).context("loading the simulator profile")?;
        let fleet = Fleet::start(FleetConfig::new(1, profile).reboot_ms(200))
            .await
            .context("starting the simulator")?;
        let dev = fleet.nth(0).context("the fleet has no device")?;
        let target = DeviceTarget {
            port: Some(dev.addr().port()),
            transport: Transport::Insecure,
            ..DeviceTarget::new("bench/sim-0", dev.addr().ip().to_string())
        };
        let pool = ClientPool::new(bench_settings(mode), ClientMetrics::default());
        let client = pool
            .get_or_create(&target)
            .context("building the device client")?;
        Ok(Bench {
            fleet,
            pool,
            client,
        })
    }

    /// OS.Install of `image` cut into `chunk_bytes` messages; fails unless
    /// the device validated the transferred bytes. Then removes the staged
    /// image so the next install of the same version transfers again; that
    /// File.Remove is housekeeping and not part of [`Installed::elapsed`].
    pub async fn install(&self, image: &Image, chunk_bytes: usize) -> anyhow::Result<Installed> {
        let params = InstallParams {
            chunk_bytes,
            ..InstallParams::new(&image.version, image.len())
        };
        let started = Instant::now();
        let outcome = self
            .client
            .os_install(&params, image.stream(), |_| {})
            .await
            .context("OS.Install")?;
        let elapsed = started.elapsed();
        let sent = match outcome {
            InstallOutcome::Validated {
                already_present: false,
                bytes_sent,
                ..
            } => bytes_sent,
            other => bail!("OS.Install did not transfer and validate the image: {other:?}"),
        };
        if sent != image.len() {
            bail!("OS.Install sent {sent} of {} bytes", image.len());
        }
        self.client
            .file_remove(&image.staged_path())
            .await
            .context("removing the staged image")?;
        Ok(Installed {
            bytes: sent,
            elapsed,
        })
    }

    /// Stops the simulator.
    pub async fn shutdown(self) {
        self.fleet.shutdown().await;
    }
}

/// One measured OS.Install.
#[derive(Debug, Clone, Copy)]
pub struct Installed {
    /// Content bytes sent and validated.
    pub bytes: u64,
    /// From opening the RPC to the device's Validated answer.
    pub elapsed: Duration,
}

/// A simulator image held in memory, cut into the pieces the controller's
/// image stream hands the installer ([`STREAM_CHUNK`] bytes, as read from
/// the image cache), so that reading it costs nothing in the measurement.
#[derive(Clone)]
pub struct Image {
    /// Version the image carries.
    pub version: String,
    whole: Bytes,
    pieces: Arc<Vec<Bytes>>,
}

impl Image {
    /// Builds an image of `size` bytes with the simulator's image writer.
    pub fn new(version: &str, size: u64) -> anyhow::Result<Image> {
        let spec = ImageSpec::new(version, size);
        let mut all = Vec::with_capacity(size as usize);
        spec.write_to(&mut all)
            .map_err(|e| anyhow::anyhow!("image of {size} bytes: {e}"))?;
        let all = Bytes::from(all);
        let pieces: Vec<Bytes> = (0..all.len())
            .step_by(STREAM_CHUNK)
            .map(|at| all.slice(at..(at + STREAM_CHUNK).min(all.len())))
            .collect();
        Ok(Image {
            version: version.to_owned(),
            whole: all,
            pieces: Arc::new(pieces),
        })
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.whole.len() as u64
    }

    /// Whether the image has no bytes (never, for a valid image).
    pub fn is_empty(&self) -> bool {
        self.whole.is_empty()
    }

    /// The pieces as the byte stream `os_install` takes.
    pub fn stream(
        &self,
    ) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Unpin + Send + 'static {
        let pieces = self.pieces.clone();
        futures::stream::iter((0..pieces.len()).map(move |i| Ok(pieces[i].clone())))
    }

    /// The whole image as one buffer (for File.Put).
    pub fn to_bytes(&self) -> Bytes {
        self.whole.clone()
    }

    /// Where the simulator stages this image after a validated install.
    pub fn staged_path(&self) -> String {
        format!("flash:gNOI_iosxe_{}.bin", self.version)
    }

    /// SHA-256 of the image on this thread (one core); returns the digest
    /// so the work cannot be optimised away.
    pub fn sha256(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for p in self.pieces.iter() {
            h.update(p);
        }
        h.finalize().into()
    }

    /// Single-core SHA-256 rate over this image's bytes, in bytes per
    /// second: the best of `rounds` passes (at least one).
    pub fn sha256_rate(&self, rounds: usize) -> f64 {
        let mut best = Duration::MAX;
        for _ in 0..rounds.max(1) {
            let t = Instant::now();
            std::hint::black_box(self.sha256());
            best = best.min(t.elapsed());
        }
        rate(self.len(), best)
    }
}

/// Bytes per second of `bytes` moved in `elapsed`.
pub fn rate(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// Latency percentiles of a sample set.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Percentiles {
    /// Number of samples.
    pub samples: usize,
    /// Median, microseconds.
    pub p50_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
    /// Largest sample, microseconds.
    pub max_us: f64,
}

/// Nearest-rank p50/p99/max of `samples`; `None` when there are none.
pub fn percentiles(samples: &[Duration]) -> Option<Percentiles> {
    if samples.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = samples
        .iter()
        .map(|d| d.as_secs_f64() * 1e6)
        .collect::<Vec<_>>();
    v.sort_by(f64::total_cmp);
    let rank = |q: f64| {
        let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        v[i]
    };
    Some(Percentiles {
        samples: v.len(),
        p50_us: rank(0.50),
        p99_us: rank(0.99),
        max_us: v[v.len() - 1],
    })
}

/// Parses a size such as `64MiB`, `4M`, `512KiB`, `1GiB` or a byte count.
pub fn parse_size(s: &str) -> Result<u64, String> {
    iosxe_sim::image::parse_size(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let ms = |n: u64| Duration::from_millis(n);
        let samples: Vec<Duration> = (1..=100).map(ms).collect();
        let p = percentiles(&samples).unwrap();
        assert_eq!(p.samples, 100);
        assert_eq!(p.p50_us, 50_000.0);
        assert_eq!(p.p99_us, 99_000.0);
        assert_eq!(p.max_us, 100_000.0);
        let one = percentiles(&[ms(7)]).unwrap();
        assert_eq!((one.p50_us, one.p99_us), (7000.0, 7000.0));
        assert!(percentiles(&[]).is_none());
    }

    #[test]
    fn image_pieces_are_the_simulator_image() {
        let img = Image::new(BENCH_VERSION, 300 * 1024).unwrap();
        assert_eq!(img.len(), 300 * 1024);
        let mut written = Vec::new();
        let hex_digest = ImageSpec::new(BENCH_VERSION, 300 * 1024)
            .write_to(&mut written)
            .unwrap();
        assert_eq!(&img.to_bytes()[..], &written[..]);
        let digest: String = img.sha256().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(digest, hex_digest);
        assert!(Image::new(BENCH_VERSION, 10).is_err());
    }

    #[tokio::test]
    async fn image_streams_in_cache_sized_pieces() {
        use futures::StreamExt;
        let size = 2 * STREAM_CHUNK as u64 + 12345;
        let img = Image::new(BENCH_VERSION, size).unwrap();
        let pieces: Vec<Bytes> = img.stream().map(|p| p.unwrap()).collect().await;
        let lens: Vec<usize> = pieces.iter().map(Bytes::len).collect();
        assert_eq!(lens, vec![STREAM_CHUNK, STREAM_CHUNK, 12345]);
        assert_eq!(pieces.concat(), img.to_bytes());
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 * MIB);
        assert!(parse_size("lots").is_err());
    }

    #[tokio::test]
    async fn install_round_trips_through_the_simulator() {
        let bench = Bench::start(PoolMode::Shared).await.unwrap();
        let img = Image::new(BENCH_VERSION, 2 * MIB + 17).unwrap();
        for _ in 0..2 {
            let done = bench.install(&img, 256 * 1024).await.unwrap();
            assert_eq!(done.bytes, img.len());
            assert!(done.elapsed > Duration::ZERO);
        }
        bench.client.time().await.unwrap();
        bench.shutdown().await;
    }
}
