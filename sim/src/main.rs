//! `iosxe-sim`: serve a fleet of simulated Catalyst 9300s, or make images.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use iosxe_sim::{FaultFile, Fleet, FleetConfig, ImageSpec, Profile, TlsOptions};

/// jemalloc: transfers cycle through 1 MiB buffers, which glibc's malloc
/// hands back to the kernel and faults in again (see `BENCHMARKS.md`).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "iosxe-sim",
    version,
    about = "IOS-XE (Catalyst 9300) gNOI/gNMI simulator"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve N devices in this process.
    Serve(Serve),
    /// Write a fake IOS-XE image (streams; prints sha256 and size).
    Mkimage(Mkimage),
    /// Serve the files of a directory over HTTP, TFTP, FTP, SFTP and SCP.
    ServeImages(ServeImages),
    /// List built-in profiles, or print one as YAML.
    Profiles {
        /// Profile to print.
        name: Option<String>,
    },
}

#[derive(clap::Args)]
struct Serve {
    /// Number of devices.
    #[arg(long, env = "IOSXE_SIM_DEVICES", default_value_t = 1)]
    devices: usize,
    /// Built-in profile name or path to a profile YAML.
    #[arg(long, env = "IOSXE_SIM_PROFILE", default_value = "c9300-17.18")]
    profile: String,
    /// Port of the first device (device i: base + i). Default 50052, or 9339 with --tls.
    #[arg(long, env = "IOSXE_SIM_BASE_PORT")]
    base_port: Option<u16>,
    /// SSH CLI port of the first device (device i: base + i; 0: any free
    /// ports, reported in the ready file and the control API).
    #[arg(long, env = "IOSXE_SIM_SSH_BASE_PORT", default_value_t = 0)]
    ssh_base_port: u16,
    /// Serve no SSH CLI.
    #[arg(long, env = "IOSXE_SIM_NO_SSH")]
    no_ssh: bool,
    /// SSH CLI users start in user exec (`>`) and need `enable`.
    #[arg(long, env = "IOSXE_SIM_CLI_USER_EXEC")]
    cli_user_exec: bool,
    /// Secret `enable` asks for.
    #[arg(long, env = "IOSXE_SIM_ENABLE_SECRET")]
    enable_secret: Option<String>,
    /// Listen address.
    #[arg(long, env = "IOSXE_SIM_ADDRESS", default_value = "127.0.0.1")]
    address: IpAddr,
    /// Give device i the address `--address` + i (all on the base port).
    #[arg(long, env = "IOSXE_SIM_ADDRESS_PER_DEVICE")]
    address_per_device: bool,
    /// Control API port (0: any free port).
    #[arg(long, env = "IOSXE_SIM_CONTROL_PORT", default_value_t = 0)]
    control_port: u16,
    /// Serve TLS with generated certificates.
    #[arg(long, env = "IOSXE_SIM_TLS")]
    tls: bool,
    /// Require client certificates (implies --tls).
    #[arg(long, env = "IOSXE_SIM_MTLS")]
    mtls: bool,
    /// Where to write ca.pem, client.pem, client-key.pem.
    #[arg(long, env = "IOSXE_SIM_CERT_DIR")]
    cert_dir: Option<PathBuf>,
    /// Expected `username` metadata (`{n}` = device index).
    #[arg(long, env = "IOSXE_SIM_USERNAME", requires = "password")]
    username: Option<String>,
    /// Expected `password` metadata (`{n}` = device index).
    #[arg(long, env = "IOSXE_SIM_PASSWORD", requires = "username")]
    password: Option<String>,
    /// Reboot outage in ms (overrides the profile).
    #[arg(long, env = "IOSXE_SIM_REBOOT_MS")]
    reboot_ms: Option<u64>,
    /// Fault file (YAML or JSON) applied at start.
    #[arg(long, env = "IOSXE_SIM_FAULTS")]
    faults: Option<PathBuf>,
    /// Directory for file contents (default: a temporary directory).
    #[arg(long, env = "IOSXE_SIM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Write a JSON description of every device here once all listen.
    #[arg(long, env = "IOSXE_SIM_READY_FILE")]
    ready_file: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ServeImages {
    /// Directory whose files are served (paths are relative to it).
    #[arg(long)]
    dir: PathBuf,
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1")]
    address: IpAddr,
    /// HTTP port (0: any free port).
    #[arg(long, default_value_t = 0)]
    http_port: u16,
    /// TFTP port (0: any free port).
    #[arg(long, default_value_t = 0)]
    tftp_port: u16,
    /// FTP control port (0: any free port).
    #[arg(long, default_value_t = 0)]
    ftp_port: u16,
    /// SSH port for SFTP and SCP (0: any free port).
    #[arg(long, default_value_t = 0)]
    sftp_port: u16,
    /// FTP and SSH user.
    #[arg(long, default_value = "cvk")]
    username: String,
    /// FTP and SSH password.
    #[arg(long, default_value = "cvk")]
    password: String,
    /// Refuse anonymous FTP.
    #[arg(long)]
    no_anonymous: bool,
    /// File of OpenSSH public keys accepted for the user.
    #[arg(long)]
    authorized_keys: Option<PathBuf>,
    /// Write the URLs and the SSH known_hosts line here (JSON) once all listen.
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

#[derive(clap::Args)]
struct Mkimage {
    /// Full version written as CW_FULL_VERSION (e.g. 17.18.02.0.4112.1766116039).
    #[arg(long)]
    version: String,
    /// Size (bytes, or with K/M/G/KiB/MiB/GiB).
    #[arg(long, value_parser = iosxe_sim::image::parse_size)]
    size: u64,
    /// Output file.
    #[arg(long)]
    out: PathBuf,
    /// Platform family in the header.
    #[arg(long, default_value = "cat9k")]
    platform: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().cmd {
        Cmd::Serve(s) => serve(s).await,
        Cmd::Mkimage(m) => mkimage(m),
        Cmd::ServeImages(s) => serve_images(s).await,
        Cmd::Profiles { name: None } => {
            for n in Profile::builtin_names() {
                println!("{n}");
            }
            Ok(())
        }
        Cmd::Profiles { name: Some(n) } => {
            print!("{}", serde_yaml::to_string(&Profile::load(&n)?)?);
            Ok(())
        }
    }
}

async fn serve_images(s: ServeImages) -> anyhow::Result<()> {
    use iosxe_sim::image_servers::{ImageServers, ImageServersConfig};
    anyhow::ensure!(s.dir.is_dir(), "--dir {}: not a directory", s.dir.display());
    let mut cfg = ImageServersConfig::loopback(&s.dir);
    cfg.address = s.address;
    cfg.http_port = s.http_port;
    cfg.tftp_port = s.tftp_port;
    cfg.ftp_port = s.ftp_port;
    cfg.ssh_port = s.sftp_port;
    cfg.username = s.username;
    cfg.password = s.password;
    cfg.ftp_anonymous = !s.no_anonymous;
    if let Some(path) = &s.authorized_keys {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--authorized-keys {}", path.display()))?;
        cfg.authorized_keys = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
    }
    let servers = ImageServers::start(cfg).await?;
    let info = servers.info(&s.dir);
    if let Some(path) = &s.ready_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(&info)?)?;
        std::fs::rename(&tmp, path)?;
    }
    tracing::info!(http = %info.http, tftp = %info.tftp, ftp = %info.ftp, sftp = %info.sftp, "image servers listening");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    drop(servers);
    Ok(())
}

fn mkimage(m: Mkimage) -> anyhow::Result<()> {
    let spec = ImageSpec::new(&m.version, m.size).with_platform(&m.platform);
    let f =
        std::fs::File::create(&m.out).with_context(|| format!("creating {}", m.out.display()))?;
    let sha = spec.write_to(std::io::BufWriter::with_capacity(1 << 20, f))?;
    println!(
        "{sha}  {}  {} bytes  version {}",
        m.out.display(),
        m.size,
        m.version
    );
    Ok(())
}

async fn serve(s: Serve) -> anyhow::Result<()> {
    let profile = Profile::load(&s.profile)?;
    let tls = s.tls || s.mtls;
    let mut cfg = FleetConfig::new(s.devices, profile);
    cfg.address = s.address;
    cfg.address_per_device = s.address_per_device;
    cfg.base_port = s.base_port.unwrap_or(if tls {
        iosxe_sim::fleet::TLS_PORT
    } else {
        iosxe_sim::fleet::INSECURE_PORT
    });
    cfg.control_port = Some(s.control_port);
    cfg.cli_base_port = (!s.no_ssh).then_some(s.ssh_base_port);
    cfg.cli = iosxe_sim::cli_ssh::CliOptions {
        user_exec: s.cli_user_exec,
        enable_secret: s.enable_secret,
    };
    cfg.reboot_ms = s.reboot_ms;
    cfg.data_dir = s.data_dir;
    if tls {
        cfg.tls = Some(TlsOptions {
            mtls: s.mtls,
            cert_dir: s.cert_dir,
        });
    }
    if let (Some(u), Some(p)) = (s.username, s.password) {
        cfg = cfg.credentials(&u, &p);
    }
    if let Some(path) = &s.faults {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        cfg.faults = FaultFile::parse(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            .faults;
    }
    let fleet = Fleet::start(cfg).await?;
    let ready = fleet.ready_info();
    if let Some(path) = &s.ready_file {
        // Write then rename, so a watcher never reads half a file.
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(serde_json::to_string_pretty(&ready)?.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
    }
    tracing::info!(
        devices = ready.devices.len(),
        first = ready
            .devices
            .first()
            .map(|d| format!("{}:{}", d.address, d.port))
            .unwrap_or_default(),
        control = ready.control.as_deref().unwrap_or("-"),
        "all devices listening"
    );
    tokio::signal::ctrl_c().await?;
    fleet.shutdown().await;
    Ok(())
}
