//! `drongo`: a SIP B2BUA node.
//!
//! `drongo run [--sip ADDR] [--advertise ADDR] [--admin ADDR] [--data DIR] [--config FILE] [--store URL]`

use clap::{Parser, Subcommand};
use drongo::runtime::{run, RunConfig};
use drongo::store::AnyStore;
use drongo_core::config::Config;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use tracing::{error, warn};

/// mimalloc: the node allocates many small short-lived buffers per message; glibc malloc
/// spent ~29% of its CPU in malloc/free and trimming under the calls/s benchmark.
#[cfg(not(madsim))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "drongo",
    version,
    about = "Drongo: a SIP back-to-back user agent"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node.
    Run {
        /// SIP address to bind (UDP and TCP).
        #[arg(long, default_value = "127.0.0.1:5060")]
        sip: SocketAddr,
        /// SIP address to put on the wire (Via sent-by, Contact), when the node is reached
        /// through a load balancer or NAT at another address (default: --sip).
        #[arg(long)]
        advertise: Option<SocketAddr>,
        /// Admin HTTP address (/healthz, /metrics).
        #[arg(long, default_value = "127.0.0.1:9060")]
        admin: SocketAddr,
        /// Data directory of the embedded store.
        #[arg(long, default_value = "./drongo-data")]
        data: PathBuf,
        /// TOML config file (realm, users, routes, timers, limits).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Store URL: `file:DIR` (default: the data directory), `mem:`, or
        /// `etcd://HOST:PORT,...` (builds with the `etcd` feature).
        #[arg(long)]
        store: Option<String>,
        /// Node id, carried in generated identifiers.
        #[arg(long, default_value_t = 1)]
        node_id: u16,
    },
}

fn load_config(path: Option<&PathBuf>) -> Result<Config, String> {
    let Some(path) = path else {
        return Ok(Config::default());
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The first SIGTERM or SIGINT starts a drain; a second one ends the process at once.
async fn drain_signal() {
    shutdown_signal().await;
    tokio::task::spawn(async {
        shutdown_signal().await;
        warn!("second signal while draining: exiting now");
        std::process::exit(1);
    });
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let Command::Run {
        sip,
        advertise,
        admin,
        data,
        config,
        store,
        node_id,
    } = cli.command;
    let core = match load_config(config.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            error!("config: {e}");
            return ExitCode::from(2);
        }
    };
    let url = store.unwrap_or_else(|| format!("file:{}", data.display()));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let advertise = advertise.unwrap_or(sip);
    if advertise.ip().is_unspecified() {
        error!("--advertise {advertise}: a peer cannot reach an unspecified address; name one");
        return ExitCode::from(2);
    }
    let rc = RunConfig {
        sip,
        advertise,
        admin,
        core,
        node_id,
        seed: drongo::runtime::now_ms() ^ u64::from(std::process::id()).rotate_left(32),
        clock: Default::default(),
        queue: RunConfig::QUEUE,
    };
    let store = match rt.block_on(AnyStore::open(&url)) {
        Ok(s) => s,
        Err(e) => {
            error!("store {url}: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(rc, store, drain_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}
