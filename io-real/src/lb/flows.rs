//! The balancer's connections from phones (TCP, TLS, WebSocket), by the phone's address: a
//! message the balancer routes to that address leaves on the connection, anything else as
//! a UDP datagram (see `drongo_core::lb::flow` for how a node's requests find them).

use crate::runtime::udp_send;
use drongo_core::lb::Out;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::warn;

/// A connection's writer: whole SIP messages, framed by its task (bytes on TCP and TLS, one
/// WebSocket message each on WebSocket).
pub(super) type Writer = mpsc::UnboundedSender<Vec<u8>>;

#[derive(Clone, Default)]
pub(super) struct Flows(Arc<Mutex<HashMap<SocketAddr, Writer>>>);

impl Flows {
    fn lock(&self) -> MutexGuard<'_, HashMap<SocketAddr, Writer>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// (The simulation serves UDP alone: no connection is ever opened there.)
    #[cfg_attr(madsim, allow(dead_code))]
    pub(super) fn open(&self, addr: SocketAddr, w: Writer) {
        self.lock().insert(addr, w);
    }

    pub(super) fn close(&self, addr: SocketAddr) {
        self.lock().remove(&addr);
    }

    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Sends `out` on its address's connection, else as a datagram. A message for a
    /// connection whose writer is gone is dropped (the phone connects again, and
    /// retransmits).
    pub(super) async fn deliver(&self, socket: &UdpSocket, out: Out) {
        let writer = self.lock().get(&out.to).cloned();
        match writer {
            Some(w) => {
                if w.send(out.bytes).is_err() {
                    self.close(out.to);
                }
            }
            None => {
                if let Err(e) = udp_send(socket, &out.bytes, out.to).await {
                    warn!(to = %out.to, "udp send: {e}");
                }
            }
        }
    }
}
