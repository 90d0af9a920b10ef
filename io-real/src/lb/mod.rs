//! `drongo lb`: the load balancer's pure core ([`drongo_core::lb`]) on tokio. One UDP socket
//! faces the phones and the nodes; phones may also connect over TCP, TLS and WebSocket
//! (`streams`), terminated here. The members come from the cluster's `node/` records (read
//! every 200 ms: a node whose lease ended leaves routing within that) or from a static list;
//! OPTIONS probes check each node; an admin port serves `/healthz`, `/metrics`, `/pool`.

mod flows;
#[cfg(not(madsim))]
mod streams;

use flows::Flows;
#[cfg(not(madsim))]
pub use streams::{TlsConfig, WsConfig};

use crate::admin::{read_path, respond};
use crate::runtime::{now_ms, udp_send, udp_socket};
use crate::store::Store;
use drongo_core::cluster::{Member, MemberState};
use drongo_core::lb::{Affinity, Balancer, HealthConfig, Pool, FULL_WEIGHT};
use drongo_core::message::Limits;
use std::fmt::Write;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};
use tracing::{info, warn};

/// The balancer's TOML config: `[health]`, `[affinity]`, and the connections phones may
/// use besides UDP and TCP: `[tls]`, `[websocket]`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LbConfig {
    pub health: HealthConfig,
    pub affinity: Affinity,
    #[cfg(not(madsim))]
    pub tls: TlsConfig,
    #[cfg(not(madsim))]
    pub websocket: WsConfig,
}

/// Where the members come from.
pub enum Members<S> {
    /// `--nodes ID=HOST:PORT,…`: fixed, alive while their probes answer.
    Static(Vec<(u16, SocketAddr)>),
    /// `--store URL`: the cluster's live `node/` records.
    Store(S),
}

/// How often the store's member records are read.
const MEMBERS_EVERY: Duration = Duration::from_millis(200);
/// How often probes are due or time out, at the finest.
const PROBE_TICK: Duration = Duration::from_millis(20);

pub(crate) type Shared = Arc<Mutex<Balancer>>;

pub(crate) fn lock(b: &Shared) -> MutexGuard<'_, Balancer> {
    b.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the balancer until `shutdown` completes.
pub async fn run_lb<S: Store + Clone>(
    sip: SocketAddr,
    admin: SocketAddr,
    members: Members<S>,
    cfg: LbConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let started = now_ms();
    let from_store = matches!(members, Members::Store(_));
    let mut pool = Pool::new(cfg.health, from_store);
    if let Members::Static(list) = &members {
        for (id, addr) in list {
            pool.upsert(*id, *addr, 0, MemberState::Active, started, started);
        }
    }
    // The proxy's validation ignores Require (it forwards what it does not understand).
    let limits = Limits::default();
    let balancer: Shared = Arc::new(Mutex::new(Balancer::new(sip, pool, cfg.affinity, limits)));
    let socket = Arc::new(udp_socket(sip).await?);
    let admin_listener = TcpListener::bind(admin).await?;
    info!(%sip, %admin, "drongo lb listening (UDP)");
    let flows = Flows::default();
    #[cfg(not(madsim))]
    streams::listen(
        sip,
        &cfg.tls,
        &cfg.websocket,
        balancer.clone(),
        socket.clone(),
        flows.clone(),
    )
    .await?;
    if let Members::Store(store) = members {
        // Read the members once before taking traffic.
        read_members(&store, &balancer, started).await;
        tokio::task::spawn(follow_members(store, balancer.clone(), started));
    }
    tokio::task::spawn(probe(socket.clone(), balancer.clone(), sip));
    tokio::task::spawn(serve_admin(admin_listener, balancer.clone(), flows.clone()));
    // One forwarding task: two would reorder what one sender sent back to back (a 180
    // overtaken by its 200), which a strict peer (SIPp) takes for an error.
    tokio::task::spawn(forward(socket.clone(), balancer.clone(), flows));
    shutdown.await;
    info!("drongo lb stopped");
    Ok(())
}

/// Receives datagrams and sends each where the balancer says.
async fn forward(socket: Arc<UdpSocket>, balancer: Shared, flows: Flows) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP port unreachable from a gone peer surfaces here on Linux.
                warn!("udp receive: {e}");
                continue;
            }
        };
        let Some(bytes) = buf.get(..n) else { continue };
        let out = lock(&balancer).handle_datagram(bytes, from, now_ms());
        if let Some(out) = out {
            flows.deliver(&socket, out).await;
        }
    }
}

/// Sends the probes as they come due, and counts the unanswered ones.
async fn probe(socket: Arc<UdpSocket>, balancer: Shared, me: SocketAddr) {
    let mut tick = tokio::time::interval(PROBE_TICK);
    loop {
        tick.tick().await;
        let now = now_ms();
        let due = {
            let mut b = lock(&balancer);
            let Balancer { pool, probes, .. } = &mut *b;
            probes.handle_timeout(pool, now);
            std::iter::from_fn(|| probes.poll(pool, me, now)).collect::<Vec<_>>()
        };
        for p in due {
            if let Err(e) = udp_send(&socket, &p.bytes, p.to).await {
                warn!(node = p.node, "probe send: {e}");
            }
        }
    }
}

/// Reads the live member records every [`MEMBERS_EVERY`].
async fn follow_members<S: Store>(store: S, balancer: Shared, started: u64) {
    let mut tick = tokio::time::interval(MEMBERS_EVERY);
    loop {
        tick.tick().await;
        read_members(&store, &balancer, started).await;
    }
}

async fn read_members<S: Store>(store: &S, balancer: &Shared, started: u64) {
    let now = now_ms();
    let records = match store
        .scan(drongo_core::store::NODE_PREFIX, usize::MAX, now)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            // Keep the last view: a store outage is not a dead cluster.
            warn!("members: store: {e}");
            return;
        }
    };
    let members: Vec<Member> = records
        .iter()
        .filter_map(|r| Member::decode(&r.value))
        .collect();
    let mut b = lock(balancer);
    let gone: Vec<u16> = b
        .pool
        .nodes()
        .map(|n| n.id)
        .filter(|id| !members.iter().any(|m| m.id == *id))
        .collect();
    for id in gone {
        info!(node = id, "member gone");
        b.pool.remove(id);
    }
    for m in members {
        let reach = if m.direct.is_empty() {
            &m.sip
        } else {
            &m.direct
        };
        let Ok(addr) = reach.parse::<SocketAddr>() else {
            continue;
        };
        if b.pool
            .node(m.id)
            .is_none_or(|n| n.incarnation != m.incarnation)
        {
            info!(node = m.id, incarnation = m.incarnation, %addr, "member joined");
        }
        b.pool
            .upsert(m.id, addr, m.incarnation, m.state, now, started);
    }
}

async fn serve_admin(listener: TcpListener, balancer: Shared, flows: Flows) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let balancer = balancer.clone();
        let connections = flows.len();
        tokio::task::spawn(async move {
            let Some(path) = read_path(&mut stream).await else {
                return;
            };
            let now = now_ms();
            let (status, body) = {
                let b = lock(&balancer);
                match path.as_str() {
                    "/healthz" if b.pool.nodes().any(|n| b.pool.weight(n, now) > 0) => {
                        ("200 OK", "ok\n".to_string())
                    }
                    "/healthz" => ("503 Service Unavailable", "no node\n".to_string()),
                    "/metrics" => ("200 OK", render_metrics(&b, now, connections)),
                    "/pool" => ("200 OK", pool_json(&b, now)),
                    _ => ("404 Not Found", "not found\n".to_string()),
                }
            };
            respond(&mut stream, status, &body).await;
        });
    }
}

/// `/pool`: every node with its state, health, weight and what it was sent.
pub fn pool_json(b: &Balancer, now: u64) -> String {
    let nodes: Vec<serde_json::Value> = b
        .pool
        .nodes()
        .map(|n| {
            let mut v = serde_json::to_value(n).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("alive".into(), b.pool.alive(n.id).into());
                o.insert("weight".into(), b.pool.weight(n, now).into());
            }
            v
        })
        .collect();
    serde_json::json!({ "nodes": nodes, "metrics": b.metrics }).to_string() + "\n"
}

fn render_metrics(b: &Balancer, now: u64, connections: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# HELP drongo_lb_connections Phones' TCP, TLS and WebSocket connections open.
         # TYPE drongo_lb_connections gauge
drongo_lb_connections {connections}"
    );
    let m = &b.metrics;
    for (name, help, v) in [
        (
            "drongo_lb_requests_forwarded_total",
            "Requests sent to a node.",
            m.requests_forwarded,
        ),
        (
            "drongo_lb_responses_forwarded_total",
            "Responses relayed.",
            m.responses_forwarded,
        ),
        (
            "drongo_lb_no_node_total",
            "Requests answered 503: no node takes them.",
            m.no_node,
        ),
    ] {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    }
    let _ = writeln!(s, "# HELP drongo_lb_rejected_total Messages refused, by rule.\n# TYPE drongo_lb_rejected_total counter");
    for (k, v) in &m.rejected {
        let _ = writeln!(s, "drongo_lb_rejected_total{{rule=\"{k}\"}} {v}");
    }
    let _ = writeln!(s, "# HELP drongo_lb_dropped_total Messages dropped, by reason.\n# TYPE drongo_lb_dropped_total counter");
    for (k, v) in &m.dropped {
        let _ = writeln!(s, "drongo_lb_dropped_total{{reason=\"{k}\"}} {v}");
    }
    type Of = fn(&Balancer, &drongo_core::lb::PoolNode, u64) -> f64;
    let per_node: [(&str, &str, &str, Of); 5] = [
        (
            "drongo_lb_node_weight",
            "gauge",
            "Weight for new calls (1000: full).",
            |b, n, now| f64::from(b.pool.weight(n, now)),
        ),
        (
            "drongo_lb_node_slow_start_share",
            "gauge",
            "Share of its full weight (slow start).",
            |b, n, now| f64::from(b.pool.weight(n, now)) / f64::from(FULL_WEIGHT),
        ),
        (
            "drongo_lb_node_healthy",
            "gauge",
            "1 while its probes answer.",
            |_, n, _| f64::from(u8::from(n.healthy)),
        ),
        (
            "drongo_lb_node_probe_failures_total",
            "counter",
            "Probes unanswered or answered 5xx.",
            |_, n, _| n.probe_failures as f64,
        ),
        (
            "drongo_lb_node_routed_total",
            "counter",
            "Requests routed to it.",
            |_, n, _| n.routed as f64,
        ),
    ];
    for (name, kind, help, of) in per_node {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for n in b.pool.nodes() {
            let _ = writeln!(s, "{name}{{node=\"{}\"}} {}", n.id, of(b, n, now));
        }
    }
    s
}
