//! `cvk-controller`: the controller binary.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// jemalloc: transfers cycle through 1 MiB buffers, which glibc's malloc
/// hands back to the kernel and faults in again (see `BENCHMARKS.md`).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Kubernetes controller for the IOS-XE device lifecycle over gNOI and gNMI.
#[derive(Parser, Debug)]
#[command(name = "cvk-controller", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the CustomResourceDefinitions as multi-document YAML
    /// (`cvk-controller crds | kubectl apply -f -`), or write one file per
    /// definition into a directory.
    Crds {
        /// Write `<plural>.<group>.yaml` files into this directory instead
        /// of printing (the checked-in copies live in kind/crds).
        #[arg(long, env = "CVK_CRDS_OUT_DIR", value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Run the controllers: CiscoDevice, DeviceOperation, and the gated
    /// IOSXEOperationalAction / IOSXESoftwareUpgrade / IOSXESoftwareRollout
    /// kinds.
    Run(Box<cvk_controller::config::RunArgs>),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crds { out_dir } => crds(out_dir),
        Command::Run(args) => run(*args),
    }
}

fn run(args: cvk_controller::config::RunArgs) -> anyhow::Result<()> {
    cvk_controller::telemetry::init_logging(args.log_format, &args.log_level)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the Tokio runtime")?;
    runtime.block_on(cvk_controller::reconcile::run(args))?;
    Ok(())
}

fn crds(out_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let crds = cvk_controller::crd::all();
    match out_dir {
        None => {
            let yaml = cvk_controller::crd::to_multi_document_yaml(&crds)
                .context("rendering the CRDs as YAML")?;
            std::io::stdout()
                .lock()
                .write_all(yaml.as_bytes())
                .context("writing the CRDs to stdout")?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for crd in &crds {
                let path = dir.join(cvk_controller::crd::file_name(crd));
                let yaml = cvk_controller::crd::to_yaml(crd).context("rendering a CRD as YAML")?;
                std::fs::write(&path, yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}
