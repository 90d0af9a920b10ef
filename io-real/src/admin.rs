//! The admin HTTP endpoint: `GET /healthz`, `GET /metrics` (Prometheus text format) and,
//! on a cluster member, `GET /cluster` (JSON: this node's lease and the live members).
//! A few lines of HTTP/1.0 are all it needs, so it has no HTTP framework.
//!
//! `/healthz` answers `503 draining` once the node drains, so that a load balancer takes it
//! out of the pool while it finishes its transactions.

use crate::runtime::membership::Lease;
use drongo_core::node::Node;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// Prometheus text for counters: (name, help, value) each.
fn counters(s: &mut String, counters: &[(&str, &str, u64)]) {
    for (name, help, v) in counters {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    }
}

/// The copies of this region's registrations in the other regions' stores.
pub fn render_replication(r: &crate::runtime::replicate::Replication) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let mut s = String::new();
    counters(
        &mut s,
        &[
            (
                "drongo_region_copies_written_total",
                "Copies of registrations written to other regions.",
                r.copied.load(Relaxed),
            ),
            (
                "drongo_region_copies_removed_total",
                "Copies removed from other regions.",
                r.removed.load(Relaxed),
            ),
            (
                "drongo_region_syncs_total",
                "Full syncs of the copies in other regions.",
                r.syncs.load(Relaxed),
            ),
            (
                "drongo_region_sync_failures_total",
                "Copying interrupted (another region out of reach).",
                r.failures.load(Relaxed),
            ),
        ],
    );
    s
}

/// Prometheus text for a node's gauges and counters.
pub fn render_metrics(node: &Node) -> String {
    let m = node.metrics();
    let mut s = String::new();
    let mut gauge = |name: &str, help: &str, v: usize| {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    gauge(
        "drongo_active_dialogs",
        "Calls in progress (each has two dialogs).",
        node.active_calls(),
    );
    gauge(
        "drongo_standby_calls",
        "Calls this node stands by for (strategy hot-standby): their records held in memory.",
        node.standby_calls(),
    );
    gauge(
        "drongo_registrations",
        "Registered bindings.",
        node.registrations(),
    );
    gauge(
        "drongo_transactions",
        "Live SIP transactions.",
        node.transactions(),
    );
    counters(
        &mut s,
        &[
        (
            "drongo_calls_attempted_total",
            "INVITEs routed to a callee.",
            m.calls_attempted,
        ),
        (
            "drongo_calls_answered_total",
            "Calls answered.",
            m.calls_answered,
        ),
        (
            "drongo_calls_failed_total",
            "Calls that ended before an answer.",
            m.calls_failed,
        ),
        (
            "drongo_store_failures_total",
            "Store writes that failed.",
            m.store_failures,
        ),
        (
            "drongo_overload_refusals_total",
            "New requests answered 503 because too much waited for the store.",
            m.overload_refusals,
        ),
        (
            "drongo_retransmissions_dropped_total",
            "Retransmissions not sent because the first copy still waited for the store.",
            m.retransmissions_dropped,
        ),
        (
            "drongo_records_swept_total",
            "Call records no call held (a late write, say), deleted by the periodic sweep.",
            m.records_swept,
        ),
        (
            "drongo_forwarded_total",
            "In-dialog requests for a live member's call forwarded to it (each copy).",
            m.forwarded,
        ),
        (
            "drongo_forwarded_responses_total",
            "Responses of an owner to forwarded requests, sent on to their senders.",
            m.forwarded_responses,
        ),
        (
            "drongo_lookups_deferred_total",
            "REGISTER queries left for their retransmission while a write of the AOR waited.",
            m.lookups_deferred,
        ),
        (
            "drongo_lookups_read_through_total",
            "Lookups of an AOR that found nothing held and read the store first (cluster).",
            m.lookups_read_through,
        ),
        (
            "drongo_bindings_expired_total",
            "Expired bindings whose removal this node wrote (alone, or as leader: the watchdog).",
            m.bindings_expired,
        ),
        (
            "drongo_flow_bindings_removed_total",
            "Bindings whose connection lived on a member that is gone, removed as leader.",
            m.flow_bindings_removed,
        ),
        (
            "drongo_takeovers_total",
            "Calls of a member that is gone, taken over by this node.",
            m.takeovers,
        ),
        (
            "drongo_calls_loaded_total",
            "Calls this node did not hold, loaded from the store for a request.",
            m.calls_loaded,
        ),
        (
            "drongo_adoptions_total",
            "Calls of members that left that rendezvous hashing gave this node to adopt.",
            m.adoptions,
        ),
        (
            "drongo_standby_takeovers_total",
            "Takeovers made from this node's standby copy of the call, with no store read.",
            m.standby_takeovers,
        ),
        (
            "drongo_orphans_adopted_total",
            "Calls of dead members nobody adopted, taken by this node as the leader.",
            m.orphans_adopted,
        ),
        ],
    );
    let h = &m.failover_ms;
    if h.count() > 0 {
        let name = "drongo_failover_duration_ms";
        let _ = writeln!(
            s,
            "# HELP {name} Takeovers of a dead member's call: ms from the last member list \
             that had the owner to the takeover.\n# TYPE {name} histogram"
        );
        let mut total = 0;
        for (bound, c) in drongo_core::metrics::Histogram::BOUNDS.iter().zip(h.counts) {
            total += c;
            let _ = writeln!(s, "{name}_bucket{{le=\"{bound}\"}} {total}");
        }
        let _ = writeln!(s, "{name}_bucket{{le=\"+Inf\"}} {}", h.count());
        let _ = writeln!(s, "{name}_sum {}\n{name}_count {}", h.sum, h.count());
    }
    let labelled = |s: &mut String,
                    name: &str,
                    help: &str,
                    label: &str,
                    map: &std::collections::BTreeMap<String, u64>| {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter");
        for (k, v) in map {
            let k = k.replace(['"', '\\', '\n'], "_");
            let _ = writeln!(s, "{name}{{{label}=\"{k}\"}} {v}");
        }
    };
    labelled(
        &mut s,
        "drongo_parse_errors_total",
        "Messages rejected, by rule.",
        "kind",
        &m.parse_errors,
    );
    labelled(
        &mut s,
        "drongo_responses_refused_total",
        "Responses a transaction refused (InvalidState: a second final response).",
        "kind",
        &m.responses_refused,
    );
    labelled(
        &mut s,
        "drongo_messages_in_total",
        "Messages received, by method or status.",
        "type",
        &m.messages_in,
    );
    labelled(
        &mut s,
        "drongo_messages_out_total",
        "Messages sent, by method or status.",
        "type",
        &m.messages_out,
    );
    s
}

/// Serves the admin endpoint until the node task goes away. `/metrics` asks the node task
/// for its text through `metrics`.
pub async fn serve(
    listener: TcpListener,
    metrics: mpsc::Sender<oneshot::Sender<String>>,
    draining: Arc<AtomicBool>,
    cluster: Option<(u16, Arc<Lease>)>,
) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let metrics = metrics.clone();
        let draining = draining.clone();
        let cluster = cluster.clone();
        tokio::task::spawn(async move {
            let Some(path) = read_path(&mut stream).await else {
                return;
            };
            let path = path.as_str();
            let (status, body) = match path {
                "/healthz" if draining.load(Ordering::Relaxed) => {
                    ("503 Service Unavailable", "draining\n".to_string())
                }
                "/healthz" => ("200 OK", "ok\n".to_string()),
                "/metrics" => {
                    let (tx, rx) = oneshot::channel();
                    if metrics.send(tx).await.is_err() {
                        ("503 Service Unavailable", "node stopped\n".to_string())
                    } else {
                        match rx.await {
                            Ok(mut text) => {
                                if let Some((_, lease)) = &cluster {
                                    text.push_str(&lease.metrics());
                                }
                                ("200 OK", text)
                            }
                            Err(_) => ("503 Service Unavailable", "node stopped\n".to_string()),
                        }
                    }
                }
                "/cluster" => match &cluster {
                    Some((id, lease)) => ("200 OK", lease.status_json(*id)),
                    None => ("404 Not Found", "not a cluster member\n".to_string()),
                },
                _ => ("404 Not Found", "not found\n".to_string()),
            };
            respond(&mut stream, status, &body).await;
        });
    }
}

/// The path of the HTTP request on `stream` (its head read within 5 s), if any.
pub(crate) async fn read_path(stream: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while len < buf.len() {
            let n = stream.read(&mut buf[len..]).await.ok()?;
            if n == 0 {
                break;
            }
            len += n;
            if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        Some(())
    })
    .await;
    if !matches!(read, Ok(Some(()))) {
        return None;
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    head.split_whitespace().nth(1).map(str::to_string)
}

/// Writes an HTTP/1.0 answer and lets the connection close.
pub(crate) async fn respond(stream: &mut tokio::net::TcpStream, status: &str, body: &str) {
    let resp = format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(resp.as_bytes()).await;
}
