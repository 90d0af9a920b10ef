//! Phones on connections: SIP over TCP on the balancer's SIP address, over TLS, over
//! WebSocket and secure WebSocket (RFC 7118), terminated here and forwarded to the nodes
//! over UDP like any datagram. Each connection is a flow (`flows`): what the balancer routes
//! to its address leaves on it.
//!
//! WebSocket clients (browsers) get a cookie on the upgrade naming the node their new
//! requests go to; a client that comes back with the cookie goes to that node again while
//! it lives, so a reconnecting browser keeps its registration's node.

use super::flows::Flows;
use super::{lock, Shared};
use crate::runtime::now_ms;
use drongo_core::lb::Source;
use drongo_core::message::{Frame, StreamFramer};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, info, warn};

/// How long a connection may stay silent before the balancer closes it (phones keep
/// theirs alive with CRLF pings or re-registrations well within this).
const IDLE: Duration = Duration::from_secs(600);

/// `[tls]`: SIP over TLS, and the certificate and key of TLS and secure WebSocket.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Where SIP over TLS is served (none: not served).
    pub listen: Option<SocketAddr>,
    /// PEM files: the certificate chain and its private key.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// `[websocket]`: SIP over WebSocket (RFC 7118).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WsConfig {
    /// Where `ws://` is served (none: not served).
    pub listen: Option<SocketAddr>,
    /// Where `wss://` is served, with `[tls]`'s certificate (none: not served).
    pub secure_listen: Option<SocketAddr>,
    /// The cookie naming a client's node.
    pub cookie: String,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            listen: None,
            secure_listen: None,
            cookie: "drongo-node".into(),
        }
    }
}

/// What every connection's task needs.
#[derive(Clone)]
struct Ctx {
    balancer: Shared,
    socket: Arc<UdpSocket>,
    flows: Flows,
    max_message: usize,
}

impl Ctx {
    /// Routes one message from the phone on connection `addr`, and sends what comes of it.
    async fn route(&self, bytes: &[u8], addr: SocketAddr, pin: Option<u16>) {
        let out = lock(&self.balancer).handle(bytes, Source::connection(addr, pin), now_ms());
        if let Some(out) = out {
            self.flows.deliver(&self.socket, out).await;
        }
    }
}

/// Starts the listeners the config asks for: TCP always, on the SIP address.
pub(super) async fn listen(
    sip: SocketAddr,
    tls: &TlsConfig,
    ws: &WsConfig,
    balancer: Shared,
    socket: Arc<UdpSocket>,
    flows: Flows,
) -> std::io::Result<()> {
    let max_message = lock(&balancer).max_message();
    let ctx = Ctx {
        balancer,
        socket,
        flows,
        max_message,
    };
    let acceptor = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        _ if tls.listen.is_some() || ws.secure_listen.is_some() => {
            return Err(invalid(
                "[tls] needs cert and key for TLS and secure WebSocket",
            ));
        }
        _ => None,
    };
    let tcp = TcpListener::bind(sip).await?;
    info!(%sip, "drongo lb listening (TCP)");
    tokio::task::spawn(accept(tcp, ctx.clone(), None, None));
    if let (Some(addr), Some(acc)) = (tls.listen, &acceptor) {
        let l = TcpListener::bind(addr).await?;
        info!(%addr, "drongo lb listening (TLS)");
        tokio::task::spawn(accept(l, ctx.clone(), Some(acc.clone()), None));
    }
    if let Some(addr) = ws.listen {
        let l = TcpListener::bind(addr).await?;
        info!(%addr, "drongo lb listening (WebSocket)");
        tokio::task::spawn(accept(l, ctx.clone(), None, Some(ws.cookie.clone())));
    }
    if let (Some(addr), Some(acc)) = (ws.secure_listen, &acceptor) {
        let l = TcpListener::bind(addr).await?;
        info!(%addr, "drongo lb listening (secure WebSocket)");
        tokio::task::spawn(accept(l, ctx, Some(acc.clone()), Some(ws.cookie.clone())));
    }
    Ok(())
}

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
}

/// The TLS server config from PEM files.
fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> std::io::Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| invalid(format!("{}: {e}", cert.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("{}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| invalid(format!("{}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(invalid)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(invalid)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts connections, wrapped in TLS and/or WebSocket as the listener serves them.
async fn accept(l: TcpListener, ctx: Ctx, tls: Option<TlsAcceptor>, ws_cookie: Option<String>) {
    loop {
        let (stream, addr) = match l.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (ctx, tls, cookie) = (ctx.clone(), tls.clone(), ws_cookie.clone());
        tokio::task::spawn(async move {
            match (tls, cookie) {
                (None, None) => serve_stream(stream, addr, ctx).await,
                (None, Some(c)) => serve_ws(stream, addr, ctx, c).await,
                (Some(acc), cookie) => match acc.accept(stream).await {
                    Ok(s) if cookie.is_none() => serve_stream(s, addr, ctx).await,
                    Ok(s) => serve_ws(s, addr, ctx, cookie.unwrap_or_default()).await,
                    Err(e) => debug!(%addr, "tls handshake: {e}"),
                },
            }
        });
    }
}

/// SIP over a byte stream (TCP, TLS): messages framed by Content-Length, CRLF keep-alive
/// pings answered (RFC 5626 §3.5.1).
async fn serve_stream<S>(stream: S, addr: SocketAddr, ctx: Ctx)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    ctx.flows.open(addr, tx.clone());
    tokio::task::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let mut framer = StreamFramer::new(ctx.max_message);
    let mut buf = vec![0u8; 16 * 1024];
    'conn: loop {
        let n = match tokio::time::timeout(IDLE, rd.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => n,
        };
        framer.push(buf.get(..n).unwrap_or_default());
        while let Some(frame) = framer.next_frame() {
            match frame {
                Ok(Frame::Message(bytes)) => ctx.route(&bytes, addr, None).await,
                Ok(Frame::KeepAlivePing) => {
                    let _ = tx.send(b"\r\n".to_vec());
                }
                Ok(Frame::KeepAlivePong) => {}
                Err(e) => {
                    warn!(%addr, error = ?e, "stream cannot be framed; closing");
                    break 'conn;
                }
            }
        }
    }
    ctx.flows.close(addr);
}

/// SIP over WebSocket: one SIP message per WebSocket message, the `sip` subprotocol
/// required (RFC 7118 §4.1), and the node cookie.
async fn serve_ws<S>(stream: S, addr: SocketAddr, ctx: Ctx, cookie: String)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let pinned: Arc<Mutex<Option<u16>>> = Arc::default();
    let chosen = pinned.clone();
    let balancer = ctx.balancer.clone();
    // tungstenite's callback type, large error and all.
    #[allow(clippy::result_large_err)]
    let upgrade = move |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        let sip = req
            .headers()
            .get_all("Sec-WebSocket-Protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().eq_ignore_ascii_case("sip"));
        if !sip {
            let mut e = ErrorResponse::new(Some("the sip subprotocol is required".into()));
            *e.status_mut() = StatusCode::BAD_REQUEST;
            return Err(e);
        }
        resp.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("sip"));
        let asked = req
            .headers()
            .get_all("Cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(name, _)| *name == cookie)
            .and_then(|(_, v)| v.trim().parse::<u16>().ok());
        let node = {
            let b = lock(&balancer);
            match asked.filter(|n| b.pool.alive(*n)) {
                Some(n) => Some(n),
                None => b.pool.for_new(&addr.to_string(), now_ms()),
            }
        };
        if let Some(n) = node {
            if let Ok(v) = HeaderValue::from_str(&format!("{cookie}={n}; Path=/; HttpOnly")) {
                resp.headers_mut().insert("Set-Cookie", v);
            }
            *chosen.lock().unwrap_or_else(|p| p.into_inner()) = Some(n);
        }
        Ok(resp)
    };
    let ws = match tokio_tungstenite::accept_hdr_async(stream, upgrade).await {
        Ok(ws) => ws,
        Err(e) => {
            debug!(%addr, "websocket upgrade: {e}");
            return;
        }
    };
    let pin = *pinned.lock().unwrap_or_else(|p| p.into_inner());
    let (mut sink, mut messages) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    ctx.flows.open(addr, tx);
    tokio::task::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            let msg = match String::from_utf8(bytes) {
                Ok(text) => Message::text(text),
                Err(e) => Message::binary(e.into_bytes()),
            };
            if sink.send(msg).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    loop {
        let msg = match tokio::time::timeout(IDLE, messages.next()).await {
            Ok(Some(Ok(m))) => m,
            _ => break,
        };
        match msg {
            Message::Text(t) => ctx.route(t.as_bytes(), addr, pin).await,
            Message::Binary(b) => ctx.route(&b, addr, pin).await,
            Message::Close(_) => break,
            _ => {}
        }
    }
    ctx.flows.close(addr);
}
