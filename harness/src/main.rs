//! `cvk-hil`: the local control plane and the scenario runner.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cvk_hil::{LocalControlPlane, scenario};
use tokio::signal::unix::{SignalKind, signal};

/// jemalloc: transfers cycle through 1 MiB buffers, which glibc's malloc
/// hands back to the kernel and faults in again (see `BENCHMARKS.md`).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Hardware-in-the-loop scenario runner and local Kubernetes control plane
/// for the IOS-XE lifecycle controller.
#[derive(Parser, Debug)]
#[command(name = "cvk-hil", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run scenarios (default: every scenario in scenarios/ against
    /// simulators on a local control plane).
    Run(RunArgs),
    /// A chaos campaign: bounded trials, each a random mix of upgrades and
    /// actions on simulated switches with one random fault (leader or
    /// controller SIGKILL, kube-apiserver or etcd restart, switch reboot or
    /// connection cut during OS.Install); exits non-zero on any violation.
    Chaos(ChaosArgs),
    /// The local control plane (a real etcd and kube-apiserver on loopback).
    #[command(subcommand)]
    ControlPlane(ControlPlaneCommand),
    /// A real cluster the way users run the product.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Run the controller itself (`cvk-hil controller run ...` is
    /// `cvk-controller run ...`); the runner starts it this way, as a
    /// subprocess, so one binary carries both.
    #[command(disable_help_flag = true)]
    Controller {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Scenario files or names (default: every file in --scenarios-dir).
    scenarios: Vec<String>,
    /// Where the switches come from.
    #[arg(long, env = "CVK_HIL_TARGET", value_enum, default_value_t = TargetArg::Sim)]
    target: TargetArg,
    /// Which cluster: a local control plane, the kind cluster of
    /// `cvk-hil cluster kind up`, or the one in --kubeconfig.
    #[arg(long, env = "CVK_HIL_CLUSTER", value_enum, default_value_t = ClusterArg::Local)]
    cluster: ClusterArg,
    /// Kubeconfig of an existing cluster (with --cluster kubeconfig;
    /// default: $KUBECONFIG). The project's CRDs must be installed there.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Lab inventory (with --target hardware).
    #[arg(long, env = "CVK_HIL_INVENTORY")]
    inventory: Option<PathBuf>,
    /// Also run scenarios tagged destructive on hardware.
    #[arg(long, env = "CVK_HIL_ALLOW_DESTRUCTIVE")]
    allow_destructive: bool,
    /// Write a JUnit XML report here.
    #[arg(long, env = "CVK_HIL_JUNIT")]
    junit: Option<PathBuf>,
    /// Run the whole selection this many times and report every scenario
    /// that was not green in every round (a flake hunt).
    #[arg(long, env = "CVK_HIL_REPEAT", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    repeat: u32,
    /// Scenarios run at once.
    #[arg(long, env = "CVK_HIL_JOBS", default_value_t = 2)]
    jobs: usize,
    /// The scenario directory.
    #[arg(long, env = "CVK_HIL_SCENARIOS_DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios"))]
    scenarios_dir: PathBuf,
    /// Where the logs of failed scenarios are kept.
    #[arg(long, env = "CVK_HIL_ARTIFACTS", default_value = "target/cvk-hil")]
    artifacts: PathBuf,
}

#[derive(clap::Args, Debug)]
struct ChaosArgs {
    /// How many trials.
    #[arg(long, env = "CVK_CHAOS_TRIALS", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10000))]
    trials: u32,
    /// Seed of the campaign (trial n uses seed + n - 1); default: random,
    /// printed so a run can be replayed.
    #[arg(long, env = "CVK_CHAOS_SEED")]
    seed: Option<u64>,
    /// Faults to draw from, comma-separated (default: all): leader-kill,
    /// controller-restart, apiserver-restart, etcd-restart, sim-reboot,
    /// install-cut.
    #[arg(long, env = "CVK_CHAOS_FAULTS", value_delimiter = ',', value_parser = cvk_hil::chaos::Fault::parse)]
    faults: Vec<cvk_hil::chaos::Fault>,
    /// Most switches (one object each) in a trial; at least 2.
    #[arg(long, env = "CVK_CHAOS_MAX_DEVICES", default_value_t = 3, value_parser = clap::value_parser!(u16).range(2..=32))]
    max_devices: u16,
    /// Start no new trial after this long.
    #[arg(long, env = "CVK_CHAOS_MAX_DURATION", default_value = "45m", value_parser = humantime_serde::re::humantime::parse_duration)]
    max_duration: std::time::Duration,
    /// Where the logs of trials with a violation are kept.
    #[arg(
        long,
        env = "CVK_HIL_ARTIFACTS",
        default_value = "target/cvk-hil/chaos"
    )]
    artifacts: PathBuf,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum TargetArg {
    Sim,
    Hardware,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ClusterArg {
    Local,
    Kind,
    Kubeconfig,
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// A kind cluster built here with no container registry: the node image
    /// from Go modules and Debian packages (cached in ~/.cache/cvk/kind), the
    /// project's images, the Helm chart (two leader-elected controllers), a
    /// simulated fleet behind Services. See kind/README.md.
    #[command(subcommand)]
    Kind(KindCommand),
}

#[derive(Subcommand, Debug)]
enum KindCommand {
    /// Build what is missing, create (or reuse) the cluster, load the
    /// images, install the chart and the fleet; prints progress.
    Up,
    /// Delete the cluster and its network, stop the Docker engine `up`
    /// started; the caches stay.
    Down,
    /// Say whether the cluster runs, and print its kubeconfig path.
    Status,
}

#[derive(Subcommand, Debug)]
enum ControlPlaneCommand {
    /// Start one, write its admin kubeconfig, and run until SIGINT or
    /// SIGTERM; then stop both processes and remove their files.
    Up {
        /// Where to write the admin kubeconfig.
        #[arg(long, env = "CVK_HIL_KUBECONFIG", value_name = "FILE")]
        kubeconfig: PathBuf,
        /// Also apply the project's CRDs (kind/crds) and wait until they are
        /// Established.
        #[arg(long, env = "CVK_HIL_INSTALL_CRDS")]
        install_crds: bool,
    },
}

fn main() -> anyhow::Result<()> {
    // The controller sets up its own logging and runtime.
    let cli = Cli::parse();
    if let Command::Controller { args } = cli.command {
        return controller(args);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(async_main(cli))
}

async fn async_main(cli: Cli) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                // The readiness poll expects refused connections and 500s while
                // the API server starts; kube logs each as an error.
                "info,kube_client::client::builder=off".into()
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::ControlPlane(ControlPlaneCommand::Up {
            kubeconfig,
            install_crds,
        }) => control_plane_up(kubeconfig, install_crds).await,
        Command::Run(args) => {
            let code = run(args).await?;
            std::process::exit(code);
        }
        Command::Chaos(args) => {
            let code = chaos(args).await?;
            std::process::exit(code);
        }
        Command::Cluster(ClusterCommand::Kind(cmd)) => kind(cmd).await,
        Command::Controller { .. } => unreachable!("handled before the runtime starts"),
    }
}

/// `cvk-hil controller run ...`: the same library entry point as
/// `cvk-controller run ...`, with the same flags and environment.
fn controller(args: Vec<String>) -> anyhow::Result<()> {
    #[derive(Parser)]
    #[command(name = "cvk-hil controller")]
    enum ControllerCli {
        /// Run the controllers.
        Run(cvk_controller::config::RunArgs),
    }
    let ControllerCli::Run(run) =
        ControllerCli::parse_from(std::iter::once("cvk-hil controller".to_owned()).chain(args));
    cvk_controller::telemetry::init_logging(run.log_format, &run.log_level)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(cvk_controller::reconcile::run(run))
        .map_err(anyhow::Error::from)
}

async fn run(args: RunArgs) -> anyhow::Result<i32> {
    let paths = if args.scenarios.is_empty() {
        scenario::discover(&args.scenarios_dir)?
    } else {
        args.scenarios
            .iter()
            .map(|s| {
                let p = PathBuf::from(s);
                if p.exists() {
                    p
                } else {
                    args.scenarios_dir.join(format!("{s}.yaml"))
                }
            })
            .collect()
    };
    let scenarios = paths
        .iter()
        .map(|p| scenario::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    anyhow::ensure!(
        !scenarios.is_empty(),
        "no scenarios in {}",
        args.scenarios_dir.display()
    );

    let target = match args.target {
        TargetArg::Sim => scenario::Target::Sim,
        TargetArg::Hardware => {
            let path = args
                .inventory
                .as_ref()
                .context("--target hardware needs --inventory FILE")?;
            let inventory = scenario::Inventory::load(path).map_err(anyhow::Error::msg)?;
            scenario::Target::Hardware {
                inventory,
                allow_destructive: args.allow_destructive,
            }
        }
    };
    let (_local, kubeconfig) = match args.cluster {
        ClusterArg::Local => {
            eprintln!("starting a local control plane (kube-apiserver + etcd)");
            let cp = LocalControlPlane::start()
                .await
                .context("starting the local control plane")?;
            let client = cp.client().await?;
            cvk_hil::testing::install_project_crds(&client).await?;
            let yaml = cp.kubeconfig_yaml().to_owned();
            (Some(cp), yaml)
        }
        ClusterArg::Kind => {
            let cluster =
                cvk_hil::kind::KindCluster::existing(&cvk_hil::kind::Paths::from_env()?).await?;
            eprintln!(
                "running on the kind cluster {} ({})",
                cvk_hil::kind::CLUSTER_NAME,
                cluster.kubeconfig.display()
            );
            (None, cluster.kubeconfig_yaml()?)
        }
        ClusterArg::Kubeconfig => {
            let path = args
                .kubeconfig
                .as_ref()
                .context("--cluster kubeconfig needs --kubeconfig FILE or $KUBECONFIG")?;
            let yaml = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            (None, yaml)
        }
    };
    let ctx = scenario::RunContext {
        kubeconfig,
        target,
        controller: scenario::ControllerCommand {
            program: std::env::current_exe().context("finding this executable")?,
            args: vec!["controller".into()],
        },
        artifacts: args.artifacts.clone(),
        progress: Arc::new(|line| eprintln!("{line}")),
    };
    let started = std::time::Instant::now();
    eprintln!(
        "running {} scenario(s), {} at a time",
        scenarios.len(),
        args.jobs
    );
    let mut rounds = Vec::new();
    for round in 1..=args.repeat {
        if args.repeat > 1 {
            eprintln!("round {round} of {}", args.repeat);
        }
        let results = scenario::run_all(&ctx, &scenarios, args.jobs).await;
        println!();
        if args.repeat > 1 {
            println!("round {round} of {}:", args.repeat);
        }
        print!("{}", scenario::report::summary_table(&results));
        rounds.push(results);
    }
    let all: Vec<_> = rounds.iter().flatten().cloned().collect();
    if let Some(path) = &args.junit {
        let xml = scenario::report::junit_xml("cvk-hil", &all, started.elapsed());
        std::fs::write(path, xml).with_context(|| format!("writing {}", path.display()))?;
        println!("JUnit report: {}", path.display());
    }
    if args.repeat > 1 {
        println!();
        print!("{}", scenario::report::repeat_summary(&rounds));
    }
    Ok(if scenario::report::totals(&all).failed == 0 {
        0
    } else {
        1
    })
}

async fn kind(cmd: KindCommand) -> anyhow::Result<()> {
    use cvk_hil::kind;
    let paths = kind::Paths::from_env()?;
    match cmd {
        KindCommand::Up => {
            let c = kind::up(&paths, &kind::UpOptions::default()).await?;
            println!("kubeconfig: {}", c.kubeconfig.display());
            println!("step timings (s):");
            for (step, s) in &c.timings {
                println!("  {step:<16} {s:>7.1}");
            }
            Ok(())
        }
        KindCommand::Down => kind::down(&paths).await,
        KindCommand::Status => {
            let c = kind::KindCluster::existing(&paths).await?;
            println!("cluster {} runs on {}", kind::CLUSTER_NAME, c.node_image);
            println!("kubeconfig: {}", c.kubeconfig.display());
            print!("{}", c.kubectl(["get", "nodes", "-o", "wide"]).await?);
            print!(
                "{}",
                c.kubectl(["-n", kind::SYSTEM_NAMESPACE, "get", "pods", "-o", "wide"])
                    .await?
            );
            Ok(())
        }
    }
}

async fn chaos(args: ChaosArgs) -> anyhow::Result<i32> {
    let seed = args.seed.unwrap_or_else(rand::random);
    eprintln!("starting a local control plane of its own (kube-apiserver + etcd)");
    let cp = LocalControlPlane::start()
        .await
        .context("starting the local control plane")?;
    cvk_hil::testing::install_project_crds(&cp.client().await?).await?;
    let faults = if args.faults.is_empty() {
        cvk_hil::chaos::Fault::ALL.to_vec()
    } else {
        args.faults
    };
    let opts = cvk_hil::chaos::ChaosOptions {
        trials: args.trials,
        seed,
        faults,
        devices: 2..=usize::from(args.max_devices),
        max_duration: args.max_duration,
        controller: scenario::ControllerCommand {
            program: std::env::current_exe().context("finding this executable")?,
            args: vec!["controller".into()],
        },
        artifacts: args.artifacts,
        progress: Arc::new(|line| eprintln!("{line}")),
    };
    eprintln!("chaos: {} trial(s), seed {seed}", opts.trials);
    let report = cvk_hil::chaos::run_campaign(&cp, &opts).await;
    println!();
    print!("{}", report.table());
    Ok(if report.violations() == 0 { 0 } else { 1 })
}

async fn control_plane_up(kubeconfig: PathBuf, install_crds: bool) -> anyhow::Result<()> {
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let cp = LocalControlPlane::start()
        .await
        .context("starting the local control plane")?;
    cp.write_kubeconfig(&kubeconfig)
        .with_context(|| format!("writing {}", kubeconfig.display()))?;
    if install_crds {
        let client = cp.client().await?;
        let names = cvk_hil::testing::install_project_crds(&client).await?;
        println!("installed CRDs: {}", names.join(", "));
    }
    let kubectl = cp
        .binaries()
        .kubectl
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "kubectl".into());
    println!("local control plane is ready at {}", cp.api_url());
    println!("  kubeconfig: {}", kubeconfig.display());
    println!(
        "  try:        {kubectl} --kubeconfig {} get namespaces",
        kubeconfig.display()
    );
    println!("  or:         export KUBECONFIG={}", kubeconfig.display());
    println!("stop with Ctrl-C (SIGINT) or SIGTERM");
    tokio::select! {
        _ = sigint.recv() => eprintln!("SIGINT: stopping the control plane"),
        _ = sigterm.recv() => eprintln!("SIGTERM: stopping the control plane"),
    }
    drop(cp);
    let _ = std::fs::remove_file(&kubeconfig);
    Ok(())
}
