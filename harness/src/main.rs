//! `cvk-hil`: the local control plane and the scenario runner.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cvk_hil::LocalControlPlane;
use tokio::signal::unix::{SignalKind, signal};

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
    /// The local control plane (a real etcd and kube-apiserver on loopback).
    #[command(subcommand)]
    ControlPlane(ControlPlaneCommand),
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::ControlPlane(ControlPlaneCommand::Up {
            kubeconfig,
            install_crds,
        }) => control_plane_up(kubeconfig, install_crds).await,
    }
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
