//! A scripted SIP phone for the balancer's connection tests: one connection (TCP, TLS,
//! WebSocket or secure WebSocket) to `drongo lb`, plain messages written by hand, and the
//! core's parser to read the answers.

use drongo_core::message::{parse_datagram, response_to, Frame, Limits, SipMessage, StreamFramer};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

pub struct Phone {
    out: mpsc::UnboundedSender<Vec<u8>>,
    inbox: mpsc::UnboundedReceiver<Vec<u8>>,
    /// Via transport: TCP, TLS, WS or WSS.
    transport: &'static str,
    /// The host[:port] in its Via and Contact.
    host: String,
    /// The balancer, `127.0.0.1:PORT`.
    lb: String,
    /// The node cookie the WebSocket upgrade set.
    pub cookie: Option<String>,
    n: u32,
}

/// A TLS client config that trusts the PEM certificate `cert` alone.
fn tls_client(cert: &std::path::Path) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).expect("cert") {
        roots.add(c.expect("cert")).expect("a root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("tls versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

async fn tls_stream(
    port: u16,
    cert: &std::path::Path,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    tls_client(cert)
        .connect(name, tcp)
        .await
        .expect("tls handshake")
}

/// Runs a byte stream: whole messages out, framed messages in.
fn spawn_stream<S>(
    s: S,
) -> (
    mpsc::UnboundedSender<Vec<u8>>,
    mpsc::UnboundedReceiver<Vec<u8>>,
)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(s);
    let (out, mut to_send) = mpsc::unbounded_channel::<Vec<u8>>();
    let (deliver, inbox) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Some(b) = to_send.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        let mut framer = StreamFramer::new(65_536);
        let mut buf = vec![0u8; 16_384];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
            framer.push(&buf[..n]);
            while let Some(Ok(f)) = framer.next_frame() {
                if let Frame::Message(m) = f {
                    let _ = deliver.send(m);
                }
            }
        }
    });
    (out, inbox)
}

impl Phone {
    pub async fn tcp(port: u16) -> Phone {
        let s = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let host = s.local_addr().expect("local").to_string();
        let (out, inbox) = spawn_stream(s);
        Phone::new(out, inbox, "TCP", host, port, None)
    }

    pub async fn tls(port: u16, cert: &std::path::Path) -> Phone {
        let s = tls_stream(port, cert).await;
        let host = s.get_ref().0.local_addr().expect("local").to_string();
        let (out, inbox) = spawn_stream(s);
        Phone::new(out, inbox, "TLS", host, port, None)
    }

    /// A WebSocket phone (`cert`: over TLS, trusting it), sending `cookie` on the upgrade.
    pub async fn ws(port: u16, cert: Option<&std::path::Path>, cookie: Option<&str>) -> Phone {
        let scheme = if cert.is_some() { "wss" } else { "ws" };
        let mut req = format!("{scheme}://127.0.0.1:{port}/")
            .into_client_request()
            .expect("request");
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "sip".parse().expect("header"));
        if let Some(c) = cookie {
            req.headers_mut()
                .insert("Cookie", c.parse().expect("cookie header"));
        }
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let (set_cookie, out, inbox) = match cert {
            Some(cert) => {
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
                let tls = tls_client(cert).connect(name, tcp).await.expect("tls");
                let (ws, resp) = tokio_tungstenite::client_async(req, tls)
                    .await
                    .expect("upgrade");
                let c = set_cookie(&resp);
                let (o, i) = spawn_ws(ws);
                (c, o, i)
            }
            None => {
                let (ws, resp) = tokio_tungstenite::client_async(req, tcp)
                    .await
                    .expect("upgrade");
                let c = set_cookie(&resp);
                let (o, i) = spawn_ws(ws);
                (c, o, i)
            }
        };
        let transport = if cert.is_some() { "WSS" } else { "WS" };
        let host = format!("p{}.invalid", std::process::id());
        Phone::new(out, inbox, transport, host, port, set_cookie)
    }

    fn new(
        out: mpsc::UnboundedSender<Vec<u8>>,
        inbox: mpsc::UnboundedReceiver<Vec<u8>>,
        transport: &'static str,
        host: String,
        lb: u16,
        cookie: Option<String>,
    ) -> Phone {
        Phone {
            out,
            inbox,
            transport,
            host,
            lb: format!("127.0.0.1:{lb}"),
            cookie,
            n: 0,
        }
    }

    fn contact(&self, user: &str) -> String {
        let t = self.transport.to_ascii_lowercase();
        let t = if t == "wss" { "ws".to_string() } else { t };
        format!("<sip:{user}@{};transport={t}>", self.host)
    }

    fn send(&self, text: String) {
        let _ = self.out.send(text.into_bytes());
    }

    /// The next message within `limit`.
    pub async fn recv(&mut self, limit: Duration) -> Option<SipMessage> {
        let bytes = tokio::time::timeout(limit, self.inbox.recv())
            .await
            .ok()??;
        parse_datagram(&bytes, &Limits::default()).ok()
    }

    /// The final response to the request just sent (provisionals skipped).
    async fn final_response(&mut self) -> Option<drongo_core::message::Response> {
        loop {
            match self.recv(Duration::from_secs(5)).await? {
                SipMessage::Response(r) if r.code >= 200 => return Some(r),
                _ => {}
            }
        }
    }

    fn next(&mut self) -> u32 {
        self.n += 1;
        self.n
    }

    fn head(&mut self, method: &str, uri: &str, call: &str, cseq: u32, to: &str) -> String {
        let n = self.next();
        format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/{} {};branch=z9hG4bK{call}-{n};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a-{call}\r\nTo: {to}\r\n\
             Call-ID: {call}\r\nCSeq: {cseq} {method}\r\n",
            self.transport, self.host
        )
    }

    /// REGISTERs `user` (Call-ID `call`); the final response's code.
    pub async fn register(&mut self, user: &str, call: &str) -> u16 {
        let mut m = self.head(
            "REGISTER",
            "sip:example.com",
            call,
            self.n + 1,
            &format!("<sip:{user}@example.com>"),
        );
        m += &format!(
            "Contact: {}\r\nExpires: 300\r\nContent-Length: 0\r\n\r\n",
            self.contact(user)
        );
        self.send(m);
        self.final_response().await.map_or(0, |r| r.code)
    }

    /// Calls `user` through the balancer and hangs up: INVITE, 200, ACK, BYE, 200 (each
    /// in-dialog request routed as the 200's Record-Route says). `Err` says what failed.
    pub async fn call(&mut self, user: &str, call: &str) -> Result<(), String> {
        let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                   m=audio 9 RTP/AVP 0\r\n";
        let to = format!("<sip:{user}@example.com>");
        let mut m = self.head("INVITE", &format!("sip:{user}@{}", self.lb), call, 1, &to);
        m += &format!(
            "Contact: {}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            self.contact("alice"),
            sdp.len()
        );
        self.send(m);
        let ok = self.final_response().await.ok_or("no answer to INVITE")?;
        if ok.code != 200 {
            return Err(format!("INVITE answered {}", ok.code));
        }
        let target = ok
            .headers
            .get("Contact")
            .map(|c| {
                c.trim()
                    .trim_start_matches('<')
                    .split('>')
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .ok_or("200 without Contact")?;
        let routes: Vec<String> = ok
            .headers
            .get_all("Record-Route")
            .map(str::to_string)
            .collect();
        if routes.is_empty() {
            return Err("the 200 has no Record-Route through the balancer".into());
        }
        let to = ok.headers.get("To").unwrap_or_default().to_string();
        let route_lines: String = routes
            .iter()
            .rev()
            .map(|r| format!("Route: {r}\r\n"))
            .collect();
        let mut ack = self.head("ACK", &target, call, 1, &to);
        ack += &format!("{route_lines}Content-Length: 0\r\n\r\n");
        self.send(ack);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut bye = self.head("BYE", &target, call, 2, &to);
        bye += &format!("{route_lines}Content-Length: 0\r\n\r\n");
        self.send(bye);
        match self.final_response().await {
            Some(r) if r.code == 200 => Ok(()),
            other => Err(format!("BYE answered {:?}", other.map(|r| r.code))),
        }
    }

    /// Answers one call: the INVITE (180, 200 echoing its Record-Route), its ACK, then the
    /// caller's BYE (200). `Err` says what did not come.
    pub async fn answer(&mut self, limit: Duration) -> Result<(), String> {
        let inv = loop {
            match self.recv(limit).await.ok_or("no INVITE came")? {
                SipMessage::Request(r) if r.method.as_str() == "INVITE" => break r,
                _ => {}
            }
        };
        let ringing = response_to(&inv, 180, None, "callee");
        self.send(String::from_utf8_lossy(&ringing.to_bytes()).to_string());
        let mut ok = response_to(&inv, 200, None, "callee");
        for rr in inv.headers.get_all("Record-Route") {
            ok.headers.push("Record-Route", rr);
        }
        ok.headers.push("Contact", self.contact("alice"));
        self.send(String::from_utf8_lossy(&ok.to_bytes()).to_string());
        let mut acked = false;
        loop {
            let m = self.recv(Duration::from_secs(10)).await;
            match m.ok_or(if acked { "no BYE came" } else { "no ACK came" })? {
                SipMessage::Request(r) if r.method.as_str() == "ACK" => acked = true,
                SipMessage::Request(r) if r.method.as_str() == "BYE" => {
                    let done = response_to(&r, 200, None, "callee");
                    self.send(String::from_utf8_lossy(&done.to_bytes()).to_string());
                    return if acked {
                        Ok(())
                    } else {
                        Err("BYE before ACK".into())
                    };
                }
                _ => {}
            }
        }
    }
}

/// The cookie a WebSocket upgrade's response set (`name=value`).
fn set_cookie(
    resp: &tokio_tungstenite::tungstenite::handshake::client::Response,
) -> Option<String> {
    let v = resp.headers().get("Set-Cookie")?.to_str().ok()?;
    Some(v.split(';').next()?.trim().to_string())
}

/// Runs a WebSocket: one SIP message per WebSocket message both ways.
fn spawn_ws<S>(
    ws: tokio_tungstenite::WebSocketStream<S>,
) -> (
    mpsc::UnboundedSender<Vec<u8>>,
    mpsc::UnboundedReceiver<Vec<u8>>,
)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let (out, mut to_send) = mpsc::unbounded_channel::<Vec<u8>>();
    let (deliver, inbox) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Some(b) = to_send.recv().await {
            let text = String::from_utf8_lossy(&b).to_string();
            if sink.send(Message::text(text)).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        while let Some(Ok(m)) = stream.next().await {
            match m {
                Message::Text(t) => {
                    let _ = deliver.send(t.as_bytes().to_vec());
                }
                Message::Binary(b) => {
                    let _ = deliver.send(b.to_vec());
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
    });
    (out, inbox)
}
