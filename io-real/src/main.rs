//! `drongo`: a SIP B2BUA node.
//!
//! `drongo run [--sip ADDR] [--advertise ADDR] [--admin ADDR] [--data DIR] [--config FILE] [--store URL] [--node-id N]`
//! `drongo lb --sip ADDR --admin ADDR (--store URL | --nodes ID=HOST:PORT,…) [--config FILE]`
//! `drongo cluster status --store URL`

use clap::{Parser, Subcommand};
use drongo::runtime::{run_with_regions, RunConfig};
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
        /// Node id, carried in generated identifiers; on a shared store (etcd) the id of
        /// this cluster member (`node/{id}`), which one live process at a time may hold.
        #[arg(long, default_value_t = 1)]
        node_id: u16,
    },
    /// Run a load balancer in front of a cluster's nodes.
    Lb {
        /// SIP address to bind (UDP and TCP): the one address phones reach the cluster at,
        /// which the nodes advertise (`drongo run --advertise`).
        #[arg(long, default_value = "127.0.0.1:5060")]
        sip: SocketAddr,
        /// Admin HTTP address (/healthz, /metrics, /pool).
        #[arg(long, default_value = "127.0.0.1:9070")]
        admin: SocketAddr,
        /// The cluster's store (`etcd://HOST:PORT,...`): members from its `node/` records.
        #[arg(long, conflicts_with = "nodes", required_unless_present = "nodes")]
        store: Option<String>,
        /// A static member list instead: `ID=HOST:PORT,...`.
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<String>,
        /// TOML config: `[health]` (interval_ms, timeout_ms, fall, rise, slow_start_ms),
        /// `[affinity]` (methods, prefixes), `[tls]` (listen, cert, key) and `[websocket]`
        /// (listen, secure_listen, cookie).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Look at a cluster.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// The live members, as the store holds them.
    Status {
        /// Store URL of the cluster (`etcd://HOST:PORT,...`).
        #[arg(long)]
        store: String,
    },
}

/// A tokio runtime (all cores for a node; one thread for a command), or `None`, logged.
fn runtime(multi_thread: bool) -> Option<tokio::runtime::Runtime> {
    let mut b = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    b.enable_all()
        .build()
        .map_err(|e| error!("runtime: {e}"))
        .ok()
}

/// `drongo cluster status`: one line per live member.
fn cluster_status(url: &str) -> ExitCode {
    use drongo::store::Store;
    use drongo_core::cluster::Member;
    let Some(rt) = runtime(false) else {
        return ExitCode::FAILURE;
    };
    let now = drongo::runtime::now_ms();
    // The members, and how many calls each owns (its owner index: none with strategy none).
    let records = rt.block_on(async {
        let store = AnyStore::open(url).await?;
        let members = store
            .scan(drongo_core::store::NODE_PREFIX, usize::MAX, now)
            .await?;
        let mut owned = Vec::new();
        for r in &members {
            let n = match Member::decode(&r.value) {
                Some(m) => {
                    let prefix = drongo_core::store::owns_prefix(m.id);
                    store.scan(&prefix, usize::MAX, now).await?.len()
                }
                None => 0,
            };
            owned.push(n);
        }
        Ok::<_, drongo::store::StoreError>((members, owned))
    });
    let (records, owned) = match records {
        Ok(r) => r,
        Err(e) => {
            error!("store {url}: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "{:<6} {:<12} {:<10} {:<22} {:<22} {:>10} {:>9} {:>8}",
        "id", "incarnation", "state", "sip", "admin", "up (s)", "lease (ms)", "calls"
    );
    for (r, calls) in records.iter().zip(&owned) {
        let Some(m) = Member::decode(&r.value) else {
            continue;
        };
        let state = serde_json::to_value(m.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        println!(
            "{:<6} {:<12} {:<10} {:<22} {:<22} {:>10} {:>9} {:>8}",
            m.id,
            m.incarnation,
            state,
            m.sip,
            m.admin,
            now.saturating_sub(m.since) / 1000,
            r.expires_at.map_or(0, |e| e.saturating_sub(now)),
            calls,
        );
    }
    println!("{} live member(s)", records.len());
    ExitCode::SUCCESS
}

/// `drongo lb`.
fn balancer(
    sip: SocketAddr,
    admin: SocketAddr,
    store: Option<String>,
    nodes: &[String],
    config: Option<&PathBuf>,
) -> ExitCode {
    use drongo::lb::{run_lb, LbConfig, Members};
    use drongo::store::AnyStore;
    let cfg: LbConfig = match config.map(|p| {
        std::fs::read_to_string(p)
            .map_err(|e| e.to_string())
            .and_then(|t| toml::from_str(&t).map_err(|e| e.to_string()))
            .map_err(|e| format!("{}: {e}", p.display()))
    }) {
        None => LbConfig::default(),
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            error!("config: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(rt) = runtime(true) else {
        return ExitCode::FAILURE;
    };
    let members = match store {
        Some(url) => match rt.block_on(AnyStore::open(&url)) {
            Ok(s) => Members::<AnyStore>::Store(s),
            Err(e) => {
                error!("store {url}: {e}");
                return ExitCode::from(2);
            }
        },
        None => {
            let mut list = Vec::new();
            for n in nodes {
                let parsed = n
                    .split_once('=')
                    .and_then(|(id, a)| Some((id.parse::<u16>().ok()?, a.parse().ok()?)));
                let Some(entry) = parsed else {
                    error!("--nodes {n}: expected ID=HOST:PORT");
                    return ExitCode::from(2);
                };
                list.push(entry);
            }
            Members::Static(list)
        }
    };
    match rt.block_on(run_lb(sip, admin, members, cfg, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
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
    let command = match cli.command {
        Command::Cluster {
            command: ClusterCommand::Status { store },
        } => return cluster_status(&store),
        Command::Lb {
            sip,
            admin,
            store,
            nodes,
            config,
        } => return balancer(sip, admin, store, &nodes, config.as_ref()),
        c => c,
    };
    let Command::Run {
        sip,
        advertise,
        admin,
        data,
        config,
        store,
        node_id,
    } = command
    else {
        return ExitCode::from(2);
    };
    let core = match load_config(config.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            error!("config: {e}");
            return ExitCode::from(2);
        }
    };
    let url = store.unwrap_or_else(|| format!("file:{}", data.display()));
    let Some(rt) = runtime(true) else {
        return ExitCode::FAILURE;
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
        // A shared store makes a cluster; the embedded and in-memory ones are one node's.
        cluster: url.starts_with("etcd://") || url.starts_with("tikv://"),
        unfenced: false,
    };
    let store = match rt.block_on(AnyStore::open(&url)) {
        Ok(s) => s,
        Err(e) => {
            error!("store {url}: {e}");
            return ExitCode::from(2);
        }
    };
    // The other regions' stores, opened when first reached (a region serves on its own).
    let regions: Vec<(String, drongo::store::LazyStore)> = rc
        .core
        .cluster
        .regions
        .iter()
        .map(|(name, url)| (name.clone(), drongo::store::LazyStore::new(url)))
        .collect();
    match rt.block_on(run_with_regions(rc, store, regions, drain_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}
