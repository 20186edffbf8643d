//! Command line and environment of `cvk-controller run`.
//!
//! Every flag also reads an environment variable, and the gate and gNOI
//! variables carry exactly the names the product specification gives, so the
//! Helm chart's `gnoi.*` values (rendered into those variables) and the
//! command line are two spellings of one setting.
//!
//! | Helm value                  | variable                                   | flag |
//! |-----------------------------|--------------------------------------------|------|
//! | `gnoi.enableWriteClass`      | `CISCO_VK_ENABLE_WRITE_CLASS_GNOI=1`        | `--enable-write-class-gnoi` |
//! | `gnoi.enableSoftwareUpgrade` | `CISCO_VK_ENABLE_IOSXE_SOFTWARE_UPGRADE=1`  | `--enable-iosxesoftwareupgrade` |
//! | `gnoi.insecure`              | `CISCO_VK_GNOI_INSECURE=1`                  | `--gnoi-insecure` |
//! | `gnoi.port`                  | `CISCO_VK_GNOI_PORT=<port>`                 | `--gnoi-port` |
//! | `gnoi.disabled`              | `CISCO_VK_GNOI_DISABLED=1`                  | `--gnoi-disabled` |

use std::net::SocketAddr;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, ValueEnum};

/// Default cap on the size of one software image (8 GiB), as upstream.
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 8 * 1024 * 1024 * 1024;

/// Flags of `cvk-controller run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Reconcile write-class IOSXEOperationalAction objects (reboot, cancel
    /// reboot, kill process, file put/remove, factory reset). Off by default.
    #[arg(long = "enable-write-class-gnoi", env = "CISCO_VK_ENABLE_WRITE_CLASS_GNOI",
          action = ArgAction::Set, num_args = 0..=1, default_value = "false",
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub enable_write_class_gnoi: bool,

    /// Reconcile IOSXESoftwareUpgrade objects (install, activate, verify,
    /// rollback). Off by default.
    #[arg(long = "enable-iosxesoftwareupgrade", env = "CISCO_VK_ENABLE_IOSXE_SOFTWARE_UPGRADE",
          action = ArgAction::Set, num_args = 0..=1, default_value = "false",
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub enable_iosxe_software_upgrade: bool,

    /// Use the insecure IOS-XE gNxI listener (default port 50052) for devices
    /// whose transport is `auto` and that have no TLS material.
    #[arg(long = "gnoi-insecure", env = "CISCO_VK_GNOI_INSECURE",
          action = ArgAction::Set, num_args = 0..=1, default_value = "false",
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub gnoi_insecure: bool,

    /// Pin the gNOI listener port. Empty lets the controller infer 50052 for
    /// insecure and 9339 for TLS.
    #[arg(long = "gnoi-port", env = "CISCO_VK_GNOI_PORT", value_parser = parse_port)]
    pub gnoi_port: Option<u16>,

    /// Never construct a gNOI client: gNOI-backed work ends with a reason
    /// saying so.
    #[arg(long = "gnoi-disabled", env = "CISCO_VK_GNOI_DISABLED",
          action = ArgAction::Set, num_args = 0..=1, default_value = "false",
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub gnoi_disabled: bool,

    /// Namespace whose devices this controller serves. Defaults to the pod's
    /// namespace, then to the kubeconfig's namespace.
    #[arg(long, env = "CISCO_VK_DEVICE_NAMESPACE")]
    pub namespace: Option<String>,

    /// Serve every namespace instead of one (cluster-wide RBAC needed).
    /// Cannot be combined with --namespace or --device.
    #[arg(long, env = "CVK_ALL_NAMESPACES",
          action = ArgAction::Set, num_args = 0..=1, default_value = "false",
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub all_namespaces: bool,

    /// Serve exactly one CiscoDevice (the per-device deployment of the spec).
    /// Without it the controller serves every device of its namespace.
    #[arg(long, env = "CISCO_VK_DEVICE_NAME")]
    pub device: Option<String>,

    /// Namespace of the per-device mutation Leases. Defaults to the served
    /// namespace.
    #[arg(long, env = "CONFIG_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// Namespaces whose DeviceOperations may run ConfigDiff (comma
    /// separated; `*` for all). Unset: every namespace; set but not naming
    /// an operation's namespace: Failed, reason NamespaceNotAuthorized.
    #[arg(
        long,
        env = "CVK_OPS_CONFIGDIFF_ALLOWED_NAMESPACES",
        value_delimiter = ','
    )]
    pub configdiff_allowed_namespaces: Option<Vec<String>>,

    /// Seconds a device CLI command may take before its session is
    /// abandoned (CommandTimeout).
    #[arg(long, env = "CVK_CLI_COMMAND_TIMEOUT_SECONDS", default_value_t = 30)]
    pub cli_command_timeout_seconds: u64,

    /// Identity written into Leases and Events. Defaults to the pod name, then
    /// to the host name plus the process id.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Address of the Prometheus metrics endpoint (`/metrics`).
    #[arg(long, env = "CVK_METRICS_BIND_ADDRESS", default_value = "0.0.0.0:8080")]
    pub metrics_bind_address: SocketAddr,

    /// Address of the health endpoints (`/healthz`, `/readyz`).
    #[arg(
        long,
        env = "CVK_HEALTH_PROBE_BIND_ADDRESS",
        default_value = "0.0.0.0:8081"
    )]
    pub health_probe_bind_address: SocketAddr,

    /// Log format.
    #[arg(long, env = "CVK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// Log filter (tracing `EnvFilter` syntax, e.g. `info,cvk_controller=debug`).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Largest software image the controller accepts, in bytes.
    #[arg(long, env = "CISCO_VK_UPGRADE_MAX_IMAGE_BYTES", default_value_t = DEFAULT_MAX_IMAGE_BYTES,
          value_parser = parse_positive_u64)]
    pub upgrade_max_image_bytes: u64,

    /// How many image transfers may run at once across all devices.
    #[arg(long, env = "CVK_MAX_CONCURRENT_TRANSFERS", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_concurrent_transfers: u32,

    /// How often a reachable CiscoDevice is probed again, in seconds.
    #[arg(long, env = "CVK_DEVICE_PROBE_INTERVAL_SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub device_probe_interval_seconds: u64,

    /// How long an UNIMPLEMENTED answer keeps a gNOI service marked
    /// unsupported, in seconds.
    #[arg(long, env = "CVK_CAPABILITY_CACHE_TTL_SECONDS", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub capability_cache_ttl_seconds: u64,

    /// Directory of the content-addressed image cache.
    #[arg(
        long,
        env = "CVK_IMAGE_CACHE_DIR",
        default_value = "/tmp/cvk-upgrade-cache"
    )]
    pub image_cache_dir: std::path::PathBuf,

    /// Elect one leader among the replicas on a `coordination.k8s.io` Lease;
    /// only the leader reconciles.
    #[arg(long, env = "CVK_LEADER_ELECT",
          action = ArgAction::Set, num_args = 0..=1, default_value = "false",
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub leader_elect: bool,

    /// Name of the leader election Lease.
    #[arg(
        long,
        env = "CVK_LEADER_ELECTION_ID",
        default_value = "cvk-controller-leader"
    )]
    pub leader_election_id: String,

    /// Namespace of the leader election Lease. Defaults to the pod's
    /// namespace (`POD_NAMESPACE`), then to the client's namespace.
    #[arg(long, env = "CVK_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// How long a standby waits on an unrenewed leader Lease, in seconds.
    #[arg(long, env = "CVK_LEADER_LEASE_DURATION_SECONDS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub leader_lease_duration_seconds: u64,

    /// How long the leader leads without a successful renew, in seconds.
    #[arg(long, env = "CVK_LEADER_RENEW_DEADLINE_SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub leader_renew_deadline_seconds: u64,

    /// How often candidates retry and the leader renews, in seconds.
    #[arg(long, env = "CVK_LEADER_RETRY_PERIOD_SECONDS", default_value_t = 2,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub leader_retry_period_seconds: u64,

    /// After SIGTERM, how long reconciles in flight may finish before they
    /// are abandoned (their at-most-once markers make that safe), in seconds.
    #[arg(long, env = "CVK_SHUTDOWN_GRACE_SECONDS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(0..=300))]
    pub shutdown_grace_seconds: u64,

    /// Content chunk size of OS.Install transfers, in bytes.
    #[arg(long, env = "CVK_INSTALL_CHUNK_BYTES", default_value_t = 1024 * 1024,
          value_parser = clap::value_parser!(u32).range(4096..=4 * 1024 * 1024))]
    pub install_chunk_bytes: u32,

    /// Allow SSH host-key checks to be skipped for scp/sftp URLs that carry
    /// `insecureSkipHostKey=true` (lab only).
    #[arg(long, env = "CISCO_VK_UPGRADE_ALLOW_INSECURE_SSH",
          action = ArgAction::Set, num_args = 0..=1, default_value = "false",
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub allow_insecure_ssh: bool,
}

/// Log output format.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

fn parse_port(s: &str) -> Result<u16, String> {
    let s = s.trim();
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("'{s}' is not a TCP port (1-65535)")),
        Ok(p) => Ok(p),
    }
}

fn parse_positive_u64(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(0) | Err(_) => Err(format!("'{s}' is not a positive base-10 byte count")),
        Ok(v) => Ok(v),
    }
}

/// The runtime gates of the specification, resolved from the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Gates {
    /// `--enable-write-class-gnoi`.
    pub write_class: bool,
    /// `--enable-iosxesoftwareupgrade`.
    pub software_upgrade: bool,
}

/// A gated surface, for the "gate is off" status message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// IOSXEOperationalAction.
    WriteClass,
    /// IOSXESoftwareUpgrade.
    SoftwareUpgrade,
}

impl Gate {
    /// Reason written to status and Events while the gate is off.
    pub fn reason(self) -> &'static str {
        match self {
            Gate::WriteClass => "WriteClassGateDisabled",
            Gate::SoftwareUpgrade => "SoftwareUpgradeGateDisabled",
        }
    }

    /// The message that says which gate is off and how to turn it on.
    pub fn disabled_message(self) -> &'static str {
        match self {
            Gate::WriteClass => {
                "write-class gNOI actions are disabled on this controller; nothing was sent to the \
                 device. Enable them with --enable-write-class-gnoi, \
                 CISCO_VK_ENABLE_WRITE_CLASS_GNOI=1 or the Helm value gnoi.enableWriteClass=true"
            }
            Gate::SoftwareUpgrade => {
                "IOSXESoftwareUpgrade reconciliation is disabled on this controller; nothing was \
                 sent to the device. Enable it with --enable-iosxesoftwareupgrade, \
                 CISCO_VK_ENABLE_IOSXE_SOFTWARE_UPGRADE=1 or the Helm value \
                 gnoi.enableSoftwareUpgrade=true"
            }
        }
    }
}

impl Gates {
    /// Whether `gate` is on.
    pub fn is_enabled(self, gate: Gate) -> bool {
        match gate {
            Gate::WriteClass => self.write_class,
            Gate::SoftwareUpgrade => self.software_upgrade,
        }
    }
}

impl RunArgs {
    /// The gates these flags turn on.
    pub fn gates(&self) -> Gates {
        Gates {
            write_class: self.enable_write_class_gnoi,
            software_upgrade: self.enable_iosxe_software_upgrade,
        }
    }

    /// The leader election timings.
    pub fn leader_timings(&self) -> crate::leader::Timings {
        crate::leader::Timings {
            lease_duration: Duration::from_secs(self.leader_lease_duration_seconds),
            renew_deadline: Duration::from_secs(self.leader_renew_deadline_seconds),
            retry_period: Duration::from_secs(self.leader_retry_period_seconds),
        }
    }

    /// How often reachable devices are probed.
    pub fn probe_interval(&self) -> Duration {
        Duration::from_secs(self.device_probe_interval_seconds)
    }

    /// The identity used for Leases and Events.
    pub fn identity(&self) -> String {
        if let Some(id) = &self.identity {
            return id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "cvk-controller".to_owned());
        format!("{host}-{}", std::process::id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let mut all = vec!["cvk-controller"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).map(|c| c.run)
    }

    #[test]
    fn gates_are_off_by_default() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.gates(), Gates::default());
        assert!(!a.gnoi_insecure);
        assert!(!a.gnoi_disabled);
        assert_eq!(a.gnoi_port, None);
        assert_eq!(a.upgrade_max_image_bytes, DEFAULT_MAX_IMAGE_BYTES);
    }

    #[test]
    fn gate_flags_turn_gates_on_independently() {
        let a = parse(&["--enable-write-class-gnoi"]).unwrap();
        assert_eq!(
            a.gates(),
            Gates {
                write_class: true,
                software_upgrade: false
            }
        );
        let b = parse(&["--enable-iosxesoftwareupgrade=true"]).unwrap();
        assert_eq!(
            b.gates(),
            Gates {
                write_class: false,
                software_upgrade: true
            }
        );
        let c = parse(&["--enable-iosxesoftwareupgrade=0"]).unwrap();
        assert!(!c.gates().software_upgrade);
    }

    #[test]
    fn leader_election_defaults_are_controller_runtimes() {
        let a = parse(&[]).unwrap();
        assert!(!a.leader_elect);
        assert_eq!(a.leader_election_id, "cvk-controller-leader");
        assert_eq!(a.leader_timings(), crate::leader::Timings::default());
        assert_eq!(a.shutdown_grace_seconds, 5);
        let a = parse(&[
            "--leader-elect",
            "--leader-lease-duration-seconds",
            "30",
            "--leader-renew-deadline-seconds",
            "20",
            "--leader-retry-period-seconds",
            "4",
            "--shutdown-grace-seconds",
            "0",
        ])
        .unwrap();
        assert!(a.leader_elect);
        assert_eq!(a.leader_timings().lease_duration, Duration::from_secs(30));
        assert_eq!(a.shutdown_grace_seconds, 0);
        // Timings that cannot work are refused before anything runs.
        let a = parse(&["--leader-elect", "--leader-renew-deadline-seconds", "15"]).unwrap();
        assert!(a.leader_timings().validate().is_err());
        let e = parse(&["--shutdown-grace-seconds", "301"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--shutdown-grace-seconds"), "{e}");
    }

    #[test]
    fn bad_values_name_the_flag() {
        let e = parse(&["--gnoi-port", "70000"]).unwrap_err().to_string();
        assert!(e.contains("--gnoi-port"), "{e}");
        assert!(e.contains("not a TCP port"), "{e}");
        let e = parse(&["--enable-write-class-gnoi=maybe"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--enable-write-class-gnoi"), "{e}");
        let e = parse(&["--upgrade-max-image-bytes", "0"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("positive"), "{e}");
    }

    #[test]
    fn disabled_messages_name_flag_env_and_helm_value() {
        for (gate, flag, env, helm) in [
            (
                Gate::WriteClass,
                "--enable-write-class-gnoi",
                "CISCO_VK_ENABLE_WRITE_CLASS_GNOI",
                "gnoi.enableWriteClass",
            ),
            (
                Gate::SoftwareUpgrade,
                "--enable-iosxesoftwareupgrade",
                "CISCO_VK_ENABLE_IOSXE_SOFTWARE_UPGRADE",
                "gnoi.enableSoftwareUpgrade",
            ),
        ] {
            let m = gate.disabled_message();
            assert!(
                m.contains(flag) && m.contains(env) && m.contains(helm),
                "{m}"
            );
        }
    }
}
