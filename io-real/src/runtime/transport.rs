//! Moving bytes: UDP, and TCP connections that are reused by address, framed with the
//! core's stream framer, and closed after a long silence. Under `--cfg madsim` the same code
//! runs on madsim's simulated sockets.

use drongo_core::message::{error_response_from_raw, Frame, Rejection, Rule, StreamFramer};
use drongo_core::node::Input;
use drongo_core::transaction::{Peer, Transmit, Transport};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// How long a TCP connection may stay silent before we close it.
const TCP_IDLE: Duration = Duration::from_secs(600);

pub(super) type TcpConns = Arc<Mutex<HashMap<SocketAddr, mpsc::UnboundedSender<Vec<u8>>>>>;

/// Sends transmits over UDP or over (reused or new) TCP connections.
#[derive(Clone)]
pub(super) struct Sender {
    pub(super) udp: Arc<UdpSocket>,
    pub(super) tcp: TcpConns,
    pub(super) input: mpsc::Sender<Input>,
    pub(super) max_message: usize,
    /// In a cluster: nothing leaves while the node's lease may have run out.
    pub(super) fence: Option<Arc<super::membership::Lease>>,
}

impl Sender {
    pub(super) async fn send(&self, t: Transmit) {
        if let Some(lease) = &self.fence {
            if !lease.holds() {
                lease.dropped();
                return;
            }
        }
        match t.to.transport {
            Transport::Udp => {
                if let Err(e) = udp_send(&self.udp, &t.bytes, t.to.addr).await {
                    debug!(to = %t.to.addr, error = %e, "udp send failed");
                }
            }
            _ => {
                let existing = self.conns().get(&t.to.addr).cloned();
                let conn = match existing {
                    Some(c) => Some(c),
                    None => self.connect(t.to.addr).await,
                };
                match conn {
                    Some(c) if c.send(t.bytes).is_ok() => {}
                    _ => debug!(to = %t.to.addr, "tcp send failed"),
                }
            }
        }
    }

    fn conns(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, mpsc::UnboundedSender<Vec<u8>>>> {
        self.tcp.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn connect(&self, addr: SocketAddr) -> Option<mpsc::UnboundedSender<Vec<u8>>> {
        let stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
            .await
            .ok()?
            .ok()?;
        Some(spawn_connection(stream, addr, self.clone()))
    }
}

/// Runs one TCP connection: a writer fed by a channel, a reader that frames messages.
pub(super) fn spawn_connection(
    stream: TcpStream,
    addr: SocketAddr,
    sender: Sender,
) -> mpsc::UnboundedSender<Vec<u8>> {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    sender.conns().insert(addr, tx.clone());
    tokio::task::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let writer = tx.clone();
    tokio::task::spawn(async move {
        let mut framer = StreamFramer::new(sender.max_message);
        let mut buf = vec![0u8; 16 * 1024];
        let from = Peer {
            transport: Transport::Tcp,
            addr,
        };
        'conn: loop {
            let n = match tokio::time::timeout(TCP_IDLE, rd.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(n)) => n,
            };
            framer.push(&buf[..n]);
            while let Some(frame) = framer.next_frame() {
                match frame {
                    Ok(Frame::Message(bytes)) => {
                        if sender
                            .input
                            .send(Input::Datagram { from, bytes })
                            .await
                            .is_err()
                        {
                            break 'conn;
                        }
                    }
                    Ok(Frame::KeepAlivePing) => {
                        let _ = writer.send(b"\r\n".to_vec());
                    }
                    Ok(Frame::KeepAlivePong) => {}
                    Err(e) => {
                        warn!(%addr, error = ?e, "tcp stream cannot be framed; closing");
                        let rule = match e {
                            drongo_core::message::FramingError::MessageTooLarge
                            | drongo_core::message::FramingError::HeadTooLarge => {
                                Rule::MessageTooLarge
                            }
                            _ => Rule::BadContentLength,
                        };
                        let rej = Rejection::new(rule, false);
                        if let Some(resp) = error_response_from_raw(framer.buffered(), &rej, "x") {
                            let _ = writer.send(resp);
                        }
                        break 'conn;
                    }
                }
            }
        }
        sender.conns().remove(&addr);
    });
    tx
}

#[cfg(not(madsim))]
pub(crate) async fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Large buffers: a burst of thousands of calls per second must not overflow them.
    let _ = socket.set_recv_buffer_size(8 << 20);
    let _ = socket.set_send_buffer_size(8 << 20);
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// Under simulation the socket is madsim's, which has no buffers to size.
#[cfg(madsim)]
pub(crate) async fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    UdpSocket::bind(addr).await
}

#[cfg(not(madsim))]
pub(crate) async fn udp_send(
    socket: &UdpSocket,
    bytes: &[u8],
    to: SocketAddr,
) -> std::io::Result<()> {
    socket.send_to(bytes, to).await.map(|_| ())
}

/// madsim's `send_to` takes the destination first.
#[cfg(madsim)]
pub(crate) async fn udp_send(
    socket: &UdpSocket,
    bytes: &[u8],
    to: SocketAddr,
) -> std::io::Result<()> {
    socket.send_to(to, bytes).await
}
