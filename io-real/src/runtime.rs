//! The node runtime: one task owns the sans-IO [`Node`]; socket tasks feed it packets; a
//! committer task group-commits the store writes of the batches it produces and only then
//! sends their transmits, in order.

use crate::admin;
use crate::store::{apply_resolved, Store, StoreError};
use drongo_core::config::Config;
use drongo_core::message::{error_response_from_raw, Frame, Rejection, Rule, StreamFramer};
use drongo_core::node::{Batch, Node};
use drongo_core::store::StoreWrite;
use drongo_core::transaction::{Peer, Transmit, Transport};
use drongo_core::UnixMillis;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

/// How long a TCP connection may stay silent before we close it.
const TCP_IDLE: Duration = Duration::from_secs(600);
/// How long a commit keeps retrying a store that is unavailable before it gives up.
const STORE_PATIENCE: u64 = 5_000;
/// How long a drain (SIGTERM) may wait for transactions to finish (a second signal ends it
/// at once; see `main.rs`).
const DRAIN_LIMIT: u64 = 32_000;

pub fn now_ms() -> UnixMillis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The node's wall clock: the system clock plus a fixed offset. The offset is zero in
/// production; the simulation gives nodes clocks that disagree within a bound.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    pub offset_ms: i64,
}

impl Clock {
    pub fn now(&self) -> UnixMillis {
        now_ms().saturating_add_signed(self.offset_ms)
    }
}

/// What the socket and admin tasks hand to the node task.
pub enum Input {
    Packet {
        from: Peer,
        bytes: Vec<u8>,
    },
    StoreFailed(Batch),
    /// What the store holds at `key` now, read after a write to it failed.
    StoreRecord {
        key: String,
        record: Option<drongo_core::store::StoredRecord>,
    },
    Metrics(oneshot::Sender<String>),
}

/// Everything `drongo run` was told.
pub struct RunConfig {
    /// Where the SIP sockets (UDP and TCP) bind.
    pub sip: SocketAddr,
    /// What the node puts on the wire as its address (Via, Contact): `sip` unless a load
    /// balancer or NAT stands in front.
    pub advertise: SocketAddr,
    pub admin: SocketAddr,
    pub core: Config,
    pub node_id: u16,
    /// Seeds the node's tags, branches and Call-IDs (the simulation fixes it; `drongo run`
    /// takes it from the clock and the process id).
    pub seed: u64,
    pub clock: Clock,
}

type TcpConns = Arc<Mutex<HashMap<SocketAddr, mpsc::UnboundedSender<Vec<u8>>>>>;

/// Sends transmits over UDP or over (reused or new) TCP connections.
#[derive(Clone)]
struct Sender {
    udp: Arc<UdpSocket>,
    tcp: TcpConns,
    input: mpsc::Sender<Input>,
    max_message: usize,
}

impl Sender {
    async fn send(&self, t: Transmit) {
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
fn spawn_connection(
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
                            .send(Input::Packet { from, bytes })
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

/// Keeps identical datagrams to one peer at least `window` apart.
///
/// A message whose batch waits for a slow store commit leaves late, but its transaction's
/// retransmission timers started when it was made: the copies they produce meanwhile queue
/// up behind it and would all leave at once when the commit finally succeeds (the
/// simulation's `store-outage` scenario found these bursts). A copy that follows an
/// identical datagram by less than half of T1 carries no news, so it is dropped; the next
/// scheduled retransmission goes out as usual.
struct Pacer {
    window: u64,
    recent: HashMap<(Peer, u64), UnixMillis>,
    order: std::collections::VecDeque<(UnixMillis, (Peer, u64))>,
}

impl Pacer {
    fn new(window: u64) -> Self {
        Self {
            window,
            recent: HashMap::new(),
            order: Default::default(),
        }
    }

    fn key(t: &Transmit) -> (Peer, u64) {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        t.bytes.hash(&mut h);
        (t.to, h.finish())
    }

    fn expire(&mut self, now: UnixMillis) {
        while let Some((at, key)) = self.order.front().cloned() {
            if now.saturating_sub(at) < self.window {
                break;
            }
            self.order.pop_front();
            if self.recent.get(&key) == Some(&at) {
                self.recent.remove(&key);
            }
        }
    }

    /// Whether an identical datagram went to the same peer less than `window` ago.
    fn contains(&mut self, t: &Transmit, now: UnixMillis) -> bool {
        self.expire(now);
        self.recent.contains_key(&Self::key(t))
    }

    /// Whether `t` may go out at `now` (and if so, remembers it).
    fn admit(&mut self, t: &Transmit, now: UnixMillis) -> bool {
        if self.contains(t, now) {
            return false;
        }
        let key = Self::key(t);
        self.recent.insert(key, now);
        self.order.push_back((now, key));
        true
    }
}

/// Takes batches in order, commits the writes of all that are waiting with one store
/// commit, then sends the transmits of those whose writes all succeeded.
async fn committer<S: Store + Clone>(
    store: S,
    mut rx: mpsc::Receiver<Batch>,
    sender: Sender,
    clock: Clock,
    t1: u64,
) {
    let mut pacer = Pacer::new(t1 / 2);
    // Transmits of failed batches (but failure responses to INVITE): later copies of them
    // (retransmissions queued meanwhile) must not go out either, or a peer would hear a
    // response the node has since taken back.
    let mut withheld = Pacer::new(64 * t1);
    while let Some(first) = rx.recv().await {
        let mut batches = vec![first];
        while batches.len() < 1024 {
            match rx.try_recv() {
                Ok(b) => batches.push(b),
                Err(_) => break,
            }
        }
        let writes: Vec<_> = batches
            .iter()
            .flat_map(|b| b.writes.iter().cloned())
            .collect();
        let results = if writes.is_empty() {
            Vec::new()
        } else {
            apply_resolved(&store, writes, || clock.now(), STORE_PATIENCE).await
        };
        let mut offset = 0;
        for batch in batches {
            let n = batch.writes.len();
            let answers = results.get(offset..offset + n).unwrap_or(&[]);
            offset += n;
            let failed: Vec<(&StoreWrite, &StoreError)> = batch
                .writes
                .iter()
                .zip(answers)
                .filter_map(|(w, r)| r.as_ref().err().map(|e| (w, e)))
                .collect();
            // Whatever failed is read back, so that the node learns what the store holds.
            for (w, _) in &failed {
                tokio::task::spawn(read_back(
                    store.clone(),
                    w.key().to_string(),
                    sender.input.clone(),
                    clock,
                ));
            }
            // A message may reveal only state that is durable; the core says which failed
            // writes its transmits reveal.
            let held = batch.held_by(failed.iter().map(|(w, _)| *w));
            let now = clock.now();
            if !held {
                for t in batch.transmits {
                    if withheld.contains(&t, now) {
                        debug!(to = %t.to.addr, "copy of a withheld message dropped");
                    } else if pacer.admit(&t, now) {
                        sender.send(t).await;
                    } else {
                        debug!(to = %t.to.addr, "identical datagram sent moments ago; copy dropped");
                    }
                }
            } else {
                let errors: Vec<&StoreError> = failed.iter().map(|(_, e)| *e).collect();
                warn!(
                    writes = n,
                    ?errors,
                    "store commit failed; transmits held back"
                );
                for t in batch.transmits.iter().filter(|t| !fails_an_invite(t)) {
                    withheld.admit(t, now);
                }
                let _ = sender.input.send(Input::StoreFailed(batch)).await;
            }
        }
    }
}

/// Whether `t` is a failure response to an INVITE: the node sends those again after a
/// failed commit rather than taking them back (see `Node::handle_store_failure`).
fn fails_an_invite(t: &Transmit) -> bool {
    match drongo_core::message::parse_datagram(&t.bytes, &Default::default()) {
        Ok(drongo_core::message::SipMessage::Response(r)) => {
            r.code >= 300
                && r.headers
                    .get("CSeq")
                    .and_then(drongo_core::message::CSeq::parse)
                    .is_some_and(|c| c.method == drongo_core::message::Method::Invite)
        }
        _ => false,
    }
}

/// After a failed write the node does not know what the store holds at `key` (the write
/// may or may not have happened): read it, as long as it takes, and tell the node.
async fn read_back<S: Store>(store: S, key: String, input: mpsc::Sender<Input>, clock: Clock) {
    let mut delay = 100;
    loop {
        match store.get(&key, clock.now()).await {
            Ok(record) => {
                let _ = input.send(Input::StoreRecord { key, record }).await;
                return;
            }
            Err(StoreError::Fatal(e)) => {
                warn!(%key, error = %e, "cannot read back a failed write");
                return;
            }
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                delay = (delay * 2).min(2_000);
            }
        }
    }
}

#[cfg(not(madsim))]
async fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
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
async fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    UdpSocket::bind(addr).await
}

#[cfg(not(madsim))]
async fn udp_send(socket: &UdpSocket, bytes: &[u8], to: SocketAddr) -> std::io::Result<()> {
    socket.send_to(bytes, to).await.map(|_| ())
}

/// madsim's `send_to` takes the destination first.
#[cfg(madsim)]
async fn udp_send(socket: &UdpSocket, bytes: &[u8], to: SocketAddr) -> std::io::Result<()> {
    socket.send_to(to, bytes).await
}

/// Runs a node until `shutdown` completes, then drains: no new calls, transactions finish,
/// every batch is committed and sent.
pub async fn run<S: Store + Clone>(
    rc: RunConfig,
    store: S,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let udp = Arc::new(udp_socket(rc.sip).await?);
    let tcp = TcpListener::bind(rc.sip).await?;
    let admin_listener = TcpListener::bind(rc.admin).await?;
    info!(sip = %rc.sip, advertise = %rc.advertise, admin = %rc.admin, "drongo listening (UDP and TCP)");

    let (input_tx, mut input_rx) = mpsc::channel::<Input>(65_536);
    let (batch_tx, batch_rx) = mpsc::channel::<Batch>(65_536);
    let sender = Sender {
        udp: udp.clone(),
        tcp: Arc::new(Mutex::new(HashMap::new())),
        input: input_tx.clone(),
        max_message: rc.core.limits.max_message_size,
    };
    let committer = tokio::task::spawn(committer(
        store.clone(),
        batch_rx,
        sender.clone(),
        rc.clock,
        rc.core.timers.t1,
    ));

    // UDP receiver.
    {
        let (udp, input) = (udp.clone(), input_tx.clone());
        tokio::task::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            loop {
                match udp.recv_from(&mut buf).await {
                    Ok((n, from)) => {
                        let from = Peer {
                            transport: Transport::Udp,
                            addr: from,
                        };
                        let bytes = buf[..n].to_vec();
                        if input.send(Input::Packet { from, bytes }).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => debug!(error = %e, "udp recv error"),
                }
            }
        });
    }
    // TCP acceptor.
    {
        let sender = sender.clone();
        tokio::task::spawn(async move {
            while let Ok((stream, addr)) = tcp.accept().await {
                let _ = stream.set_nodelay(true);
                spawn_connection(stream, addr, sender.clone());
            }
        });
    }
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    tokio::task::spawn(admin::serve(
        admin_listener,
        input_tx.clone(),
        draining.clone(),
    ));

    let clock = rc.clock;
    let now_ms = || clock.now();
    let mut node = Node::new(rc.core, rc.advertise, rc.node_id, rc.seed);
    // Load every record; a store that is briefly unavailable is waited for, a fatal error
    // (or one that lasts) stops the node rather than run it without its state.
    let mut delay = 100;
    let records = loop {
        match store.scan("", usize::MAX, now_ms()).await {
            Ok(records) => break records,
            Err(e @ (StoreError::Fatal(_) | StoreError::Conflict)) => {
                return Err(std::io::Error::other(format!("cannot load state: {e}")));
            }
            Err(e) if delay > 20_000 => {
                return Err(std::io::Error::other(format!("cannot load state: {e}")));
            }
            Err(e) => {
                warn!(error = %e, "store not ready; loading state again");
                tokio::time::sleep(Duration::from_millis(delay)).await;
                delay *= 2;
            }
        }
    };
    let now = now_ms();
    info!(records = records.len(), "state loaded from the store");
    node.restore(&records, now);

    tokio::pin!(shutdown);
    let mut draining_since: Option<UnixMillis> = None;
    loop {
        while let Some(line) = node.poll_diagnostic() {
            warn!("{line}");
        }
        while let Some(b) = node.poll_batch() {
            if batch_tx.send(b).await.is_err() {
                break;
            }
        }
        let now = now_ms();
        if let Some(since) = draining_since {
            if node.is_idle() || now.saturating_sub(since) > DRAIN_LIMIT {
                break;
            }
        }
        let wait = node
            .poll_timeout()
            .map_or(Duration::from_secs(1), |t| {
                Duration::from_millis(t.saturating_sub(now))
            })
            .min(Duration::from_secs(1));
        tokio::select! {
            biased;
            _ = &mut shutdown, if draining_since.is_none() => {
                info!("draining: no new calls; waiting for transactions");
                node.drain();
                draining.store(true, std::sync::atomic::Ordering::Relaxed);
                draining_since = Some(now_ms());
            }
            input = input_rx.recv() => {
                let Some(input) = input else { break };
                handle_input(&mut node, input, now_ms());
                // Take whatever else is ready, up to a bound, before looking at timers.
                for _ in 0..256 {
                    match input_rx.try_recv() {
                        Ok(i) => handle_input(&mut node, i, now_ms()),
                        Err(_) => break,
                    }
                }
                let now = now_ms();
                if node.poll_timeout().is_some_and(|t| t <= now) {
                    node.handle_timeout(now);
                }
            }
            _ = tokio::time::sleep(wait) => node.handle_timeout(now_ms()),
        }
    }
    drop(batch_tx);
    let _ = committer.await;
    info!("drained; state flushed");
    Ok(())
}

fn handle_input(node: &mut Node, input: Input, now: UnixMillis) {
    match input {
        Input::Packet { from, bytes } => node.handle_datagram(now, from, &bytes),
        Input::StoreFailed(batch) => node.handle_store_failure(now, &batch),
        Input::StoreRecord { key, record } => node.handle_store_record(now, &key, record),
        Input::Metrics(reply) => {
            let _ = reply.send(admin::render_metrics(node));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(port: u16, bytes: &[u8]) -> Transmit {
        Transmit {
            to: Peer {
                transport: Transport::Udp,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
            },
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn pacer_keeps_identical_datagrams_apart() {
        let mut p = Pacer::new(250);
        assert!(p.admit(&t(1, b"BYE"), 1_000));
        assert!(
            !p.admit(&t(1, b"BYE"), 1_010),
            "a copy 10 ms later is dropped"
        );
        assert!(
            p.admit(&t(2, b"BYE"), 1_010),
            "another peer is another datagram"
        );
        assert!(
            p.admit(&t(1, b"BYE 2"), 1_010),
            "other bytes are another datagram"
        );
        assert!(!p.admit(&t(1, b"BYE"), 1_249));
        assert!(p.admit(&t(1, b"BYE"), 1_250), "a copy T1/2 later goes out");
        assert!(p.contains(&t(1, b"BYE"), 1_400));
        assert!(
            !p.contains(&t(1, b"BYE"), 1_500),
            "forgotten after the window"
        );
    }
}
