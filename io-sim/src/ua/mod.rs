//! A strict simulated SIP user agent.
//!
//! It registers (with refreshes, and sometimes lets its registration lapse), looks its
//! binding up now and then, calls registered users, rings, answers, rejects or is
//! cancelled, re-INVITEs, hangs up from either side and sometimes goes silent in a dialog.
//! Retransmissions come from the core's transaction layer; the dialog logic and every check
//! are its own. It checks what Drongo sends against RFC 3261 and records a violation in the
//! trace when something is wrong: a response to a request never sent, headers not copied,
//! a missing To tag, two different final responses for one transaction, a missing Contact
//! in a 2xx, a request routed to the wrong user, a CSeq going backwards, a registration
//! that is gone before it expires or lives on after, retransmissions faster than the RFC's
//! schedule or after the transaction should have given up. In a confirmed call it sends
//! INFOs and re-INVITEs all through the call (across faults) and ends its leg only when its
//! BYE's transaction ends: every 481, 408 or silence in a call Drongo confirmed is recorded
//! and judged at the end of the run (call continuity, `world::invariants`).

mod checks;
mod failover;
mod protocol;
mod registration;
mod reinvite;
mod twins;
mod workload;

use crate::ledger::{Ledger, Leg};
use crate::link::{first_line, Arrival, Link, LinkFaults};
use crate::trace::{fingerprint, sim_ms, Trace};
use drongo::runtime::now_ms;
use drongo_core::dialog::uri_of;
use drongo_core::ids::IdGen;
use drongo_core::message::{
    header_param, parse_and_validate, response_to, CSeq, Headers, Limits, Method, NameAddr,
    Request, Response, SipMessage, Via,
};
use drongo_core::transaction::{Peer, TimerConfig, TransactionLayer, Transport, TxEvent, TxKey};
use drongo_core::UnixMillis;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;

/// How a user agent behaves, fixed by the world from the seed.
#[derive(Debug, Clone)]
pub struct UaConfig {
    pub name: String,
    pub user: String,
    pub addr: SocketAddr,
    /// The Drongo node it registers with and calls through.
    pub home: SocketAddr,
    /// In a cluster: every node, `home` first. A request in a dialog that gets no answer
    /// within `failover_ms`, or a 503, goes again (same CSeq, new branch) to the next one,
    /// as a phone fails over between the addresses of a DNS SRV record (RFC 3263 §4.3).
    pub proxies: Vec<SocketAddr>,
    pub failover_ms: Option<u64>,
    /// With two regions: the other region's members (lookups go there too; nothing else).
    pub remote: Vec<SocketAddr>,
    /// Each new request in a dialog goes through the next of `proxies` (interchangeable
    /// balancers: nothing of the call is kept in them).
    pub switch_proxies: bool,
    pub node_id: u16,
    pub seed: u64,
    pub link: LinkFaults,
    /// Expiry asked for in REGISTER (seconds).
    pub reg_expires: u32,
    /// Stop refreshing the registration at this simulated time (it then lapses).
    pub lapse_at_ms: Option<u64>,
    /// Largest clock difference between Drongo nodes and the true time.
    pub skew_bound_ms: u64,
    /// Probability that the user agent goes silent in a dialog it is in.
    pub vanish: f64,
    /// Hold Drongo's retransmissions to the RFC's exact schedule. Off when the store
    /// misbehaves: Drongo then holds every message behind the slow commit before it (its
    /// batches leave in order), so copies leave late and bunched; they must still be at
    /// least T1/2 apart and no more than the schedule's number.
    pub strict_schedule: bool,
    /// How much longer than usual one store commit can take here (the store's extra
    /// latency, both ways): a retransmission may wait behind one such commit.
    pub commit_slack_ms: u64,
    /// Also hold Drongo's retransmissions to the schedule's upper bounds: each copy no
    /// later than its interval (plus the tolerance) after the previous. Only where no copy
    /// can be lost or held up: a clean network, a healthy store, no fault at all.
    pub upper_bounds: bool,
    /// For `WorldSpec::mutant_ignore_cancel`: CANCELs are dropped before they leave.
    pub swallow_cancel: bool,
    /// For `WorldSpec::mutant_no_adopter_ack`: an ACK from another node than the one the
    /// INVITE came from is dropped on arrival.
    pub lose_adopter_acks: bool,
    /// How long it rings as a callee, and waits as a caller before it cancels (ms).
    pub ring_ms: (u64, u64),
    pub patience_ms: (u64, u64),
    /// How long it takes to answer a re-INVITE (ms; `(0, 0)`: at once).
    pub reinvite_answer_ms: (u64, u64),
    /// For `WorldSpec::mutant_keep_bindings`: a de-REGISTER asks for an hour instead (as if
    /// the registrar kept the binding).
    pub mutant_keep_bindings: bool,
    /// One of several devices of its address-of-record (`twins`): never calls nor is
    /// called, and checks what a 200 lists against the other devices' views.
    pub twin: bool,
}

/// What the workload tells a user agent to do.
#[derive(Debug)]
pub enum Command {
    Call { callee: String, token: String },
}

/// Something to do at a time.
#[derive(Debug, Clone)]
enum Action {
    Register,
    Deregister,
    Probe,
    Answer(String),
    Reject(String, u16),
    Cancel(String),
    Hangup(String),
    Reinvite(String),
    Info(String),
    Vanish(String),
    Resend2xx(String),
    /// Answer the re-INVITE held in the call (`Call::reinvite_in`).
    AnswerReinvite(String),
    /// A request in a dialog still without any answer: try the next node.
    Failover(TxKey),
    /// 64·T1 after our CANCEL: an INVITE still without a final response is given up (§9.1).
    Abandon(String),
}

/// Why a client transaction was started.
#[derive(Debug, Clone)]
enum Purpose {
    Register {
        requested: u32,
        sent_at: UnixMillis,
        cseq: u32,
    },
    Probe {
        sent_at: UnixMillis,
        /// Sent to the other region (`UaConfig::remote`).
        remote: bool,
    },
    Deregister,
    Invite(String),
    Reinvite(String),
    /// An INFO in call `.0`, with the id its body carries.
    Info(String, String),
    Cancel,
    Bye(String),
}

/// A request we sent, to check responses against.
struct Sent {
    method: Method,
    call_id: String,
    from_tag: String,
    cseq: u32,
    has_sdp: bool,
    to_tag: Option<String>,
    final_: Option<(u16, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    #[default]
    Early,
    Confirmed,
    /// Our BYE is out; the leg ends when its transaction does (§15.1.1).
    Closing,
    Ended,
}

/// A 2xx we retransmit until its ACK comes (§13.3.1.4).
struct Pending2xx {
    key: TxKey,
    response: Response,
    cseq: u32,
    interval: u64,
    give_up_at: UnixMillis,
}

/// One dialog of this user agent (a call it made or got).
#[derive(Default)]
struct Call {
    token: String,
    caller: bool,
    /// Index of this leg among the callee legs of the token (callee side).
    leg: usize,
    local_tag: String,
    remote_tag: Option<String>,
    local_uri: String,
    remote_uri: String,
    remote_target: String,
    local_cseq: u32,
    remote_cseq: Option<u32>,
    state: State,
    invite: Option<Request>,
    server_invite: Option<(TxKey, Request)>,
    canceled: bool,
    vanished: bool,
    pending_2xx: Option<Pending2xx>,
    /// Caller: a provisional response came (only then may a CANCEL go, §9.1).
    provisional: bool,
    /// Caller: we mean to CANCEL as soon as a provisional response allows it.
    cancel_wanted: bool,
    /// Callee: our 2xx to the INVITE went out (the dialog exists).
    sent_2xx: bool,
    reinvite_pending: bool,
    /// A request of ours in the dialog left after the pending re-INVITE: should that
    /// re-INVITE have been lost (with a node), it reaches Drongo after a higher CSeq and is
    /// rightly refused out of order (500, §12.2.2).
    reinvite_overtaken: bool,
    /// A re-INVITE of the other party's, not answered yet (`UaConfig::reinvite_answer_ms`).
    reinvite_in: Option<(TxKey, Request)>,
    acks: BTreeMap<u32, Request>,
    /// INFO requests sent so far (numbers their ids).
    infos: u32,
    /// BYEs sent again after a 5xx.
    bye_retries: u32,
    /// Index in `UaConfig::proxies` of the node its requests in the dialog go to.
    proxy: usize,
}

/// Binding facts for the registration checks (true time, milliseconds).
#[derive(Default)]
struct Registration {
    call_id: String,
    cseq: u32,
    /// Each 200 that listed our binding: (answer received, expiry it implies).
    grants: Vec<(UnixMillis, UnixMillis)>,
    /// Latest time a binding we asked for could expire: from each 200 (processed before
    /// it arrived) and from each REGISTER that got no answer at all (processed, if at all,
    /// by its last retransmission).
    could_live_until: UnixMillis,
    /// The bounds of the REGISTERs in flight, by CSeq, until their answers replace them (a
    /// refresh may go while an earlier REGISTER still retransmits).
    pending: BTreeMap<u32, UnixMillis>,
    /// A de-REGISTER is in flight.
    deregistering: bool,
    /// The latest expiry any REGISTER of ours could have set (never lowered: another
    /// region's copy may keep it while the regions are cut apart).
    latest_until: UnixMillis,
}

pub struct Ua {
    cfg: UaConfig,
    who: String,
    trace: Trace,
    ledger: Ledger,
    link: Link,
    tx: TransactionLayer,
    timers_cfg: TimerConfig,
    ids: IdGen,
    rng: ChaCha8Rng,
    timers: BTreeMap<(UnixMillis, u64), Action>,
    seq: u64,
    calls: BTreeMap<String, Call>,
    purposes: BTreeMap<TxKey, Purpose>,
    sent: BTreeMap<String, Sent>,
    /// Arrival times of each request Drongo retransmits (branch + method).
    copies: BTreeMap<String, Vec<u64>>,
    /// Arrival times of each 2xx to INVITE (Call-ID + CSeq).
    ok_copies: BTreeMap<String, Vec<u64>>,
    reg: Registration,
    limits: Limits,
    /// Requests in a dialog sent to more than one node (cluster only).
    resent: failover::Resent,
    /// Where each INVITE that opened a dialog came from (`UaConfig::lose_adopter_acks`).
    invited_from: BTreeMap<String, SocketAddr>,
}

fn contact_uri(cfg: &UaConfig) -> String {
    format!("sip:{}@{}", cfg.user, cfg.addr)
}

fn tag_of(value: Option<&str>) -> Option<String> {
    value
        .and_then(|v| header_param(v, "tag"))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// The branch of the top Via.
fn top_branch(h: &Headers) -> Option<String> {
    h.get("Via")
        .and_then(Via::parse)
        .and_then(|v| v.branch().map(str::to_string))
}

fn sdp(cfg: &UaConfig, token: &str, version: u32) -> Vec<u8> {
    format!(
        "v=0\r\no=- 1 {version} IN IP4 {ip}\r\ns={token}\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        ip = cfg.addr.ip()
    )
    .into_bytes()
}

fn token_of(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("s="))
        .map(|s| s.trim().to_string())
}

impl Ua {
    pub async fn run(
        cfg: UaConfig,
        trace: Trace,
        ledger: Ledger,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) {
        let (in_tx, mut inbox) = mpsc::unbounded_channel::<Arrival>();
        let who = cfg.name.clone();
        let link = match Link::bind(
            cfg.addr,
            cfg.link,
            cfg.seed ^ 0x11,
            trace.clone(),
            who.clone(),
            in_tx,
        )
        .await
        {
            Ok(l) => l,
            Err(e) => {
                trace.violation(&who, format_args!("cannot bind {}: {e}", cfg.addr));
                return;
            }
        };
        let timers_cfg = TimerConfig::default();
        let mut ua = Ua {
            who,
            trace,
            ledger,
            link,
            tx: TransactionLayer::new(timers_cfg),
            timers_cfg,
            ids: IdGen::new(cfg.node_id, cfg.seed),
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            timers: BTreeMap::new(),
            seq: 0,
            calls: BTreeMap::new(),
            purposes: BTreeMap::new(),
            sent: BTreeMap::new(),
            copies: BTreeMap::new(),
            ok_copies: BTreeMap::new(),
            reg: Registration::default(),
            limits: Limits::default(),
            resent: Default::default(),
            invited_from: BTreeMap::new(),
            cfg,
        };
        ua.reg.call_id = ua.ids.call_id();
        let start = now_ms();
        // The devices of one address-of-record register together (see `twins`).
        let first = if ua.cfg.twin {
            500
        } else {
            ua.between(0, 1_000)
        };
        ua.at(start + first, Action::Register);
        let probe = ua.between(5_000, 15_000);
        ua.at(start + probe, Action::Probe);
        // Some user agents de-register once (and register again): drawn from a generator of
        // their own, so that the other draws stay as they were.
        let mut d = ChaCha8Rng::seed_from_u64(ua.cfg.seed ^ 0xde5e_9157);
        // (A device of a shared address-of-record that lets its binding lapse leaves it to
        // expire beside the other's: the watchdog's to remove.)
        let lapsing_twin = ua.cfg.twin && ua.cfg.lapse_at_ms.is_some();
        if d.next_u64() % 100 < 30 && !lapsing_twin {
            ua.at(start + 20_000 + d.next_u64() % 40_000, Action::Deregister);
        }
        let mut commands_open = true;
        loop {
            ua.flush();
            let now = now_ms();
            let next = [ua.tx.poll_timeout(), ua.timers.keys().next().map(|k| k.0)]
                .into_iter()
                .flatten()
                .min();
            let wait = next.map_or(Duration::from_secs(3600), |t| {
                Duration::from_millis(t.saturating_sub(now))
            });
            tokio::select! {
                biased;
                arrival = inbox.recv() => {
                    let Some(a) = arrival else { break };
                    ua.on_arrival(a);
                }
                cmd = commands.recv(), if commands_open => match cmd {
                    Some(c) => ua.on_command(c),
                    None => commands_open = false,
                },
                _ = madsim::time::sleep(wait) => ua.on_timeout(),
            }
        }
    }

    fn home(&self) -> Peer {
        Peer {
            transport: Transport::Udp,
            addr: self.cfg.home,
        }
    }

    /// Where requests in call `id`'s dialog go: its current node.
    fn proxy_of(&self, id: &str) -> Peer {
        let i = self.calls.get(id).map_or(0, |c| c.proxy);
        Peer {
            transport: Transport::Udp,
            addr: self.cfg.proxies.get(i).copied().unwrap_or(self.cfg.home),
        }
    }

    /// Sends what the transaction layer queued, and handles what it has to say.
    fn flush(&mut self) {
        self.publish_view();
        loop {
            let mut busy = false;
            while let Some(t) = self.tx.poll_transmit() {
                busy = true;
                self.trace.log(
                    &self.who,
                    format_args!("> {} {}", t.to.addr, summary(&t.bytes)),
                );
                self.link.send(t.to.addr, t.bytes);
            }
            while let Some(e) = self.tx.poll_event() {
                busy = true;
                self.on_event(e);
            }
            if !busy {
                break;
            }
        }
    }

    fn on_timeout(&mut self) {
        let now = now_ms();
        self.tx.handle_timeout(now);
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let action = entry.remove();
            self.on_action(action, now);
        }
    }

    // ----- requests we start -----

    fn base_request(&mut self, method: Method, uri: &str) -> Request {
        let mut r = Request {
            method,
            uri: uri.to_string(),
            headers: Default::default(),
            body: Vec::new(),
        };
        let branch = self.ids.branch();
        r.headers.push(
            "Via",
            format!("SIP/2.0/UDP {};branch={branch}", self.cfg.addr),
        );
        r.headers.push("Max-Forwards", "70");
        r
    }

    fn send_request(&mut self, req: Request, purpose: Purpose) {
        let in_dialog = match &purpose {
            Purpose::Reinvite(id) | Purpose::Info(id, _) | Purpose::Bye(id) => Some(id.clone()),
            _ => None,
        };
        let Some(id) = in_dialog else {
            // In a cluster a lookup asks any member: each must find every registration.
            let to = match purpose {
                Purpose::Probe { remote: true, .. } => {
                    let i = self.between(0, self.cfg.remote.len() as u64 - 1) as usize;
                    let addr = self.cfg.remote.get(i).copied().unwrap_or(self.cfg.home);
                    Peer {
                        transport: Transport::Udp,
                        addr,
                    }
                }
                Purpose::Probe { .. } if self.cfg.failover_ms.is_some() => {
                    let i = self.between(0, self.cfg.proxies.len() as u64 - 1) as usize;
                    let addr = self.cfg.proxies.get(i).copied().unwrap_or(self.cfg.home);
                    Peer {
                        transport: Transport::Udp,
                        addr,
                    }
                }
                _ => self.home(),
            };
            self.send_to(req, purpose, to);
            return;
        };
        if self.cfg.failover_ms.is_some() {
            return self.send_in_dialog(id, req, purpose);
        }
        let n = self.cfg.proxies.len();
        if let Some(c) = self
            .calls
            .get_mut(&id)
            .filter(|_| self.cfg.switch_proxies && n > 1)
        {
            c.proxy = (c.proxy + 1) % n;
            self.ledger.lock().counts.switches += 1;
        }
        let to = self.proxy_of(&id);
        self.send_to(req, purpose, to);
    }

    fn send_to(&mut self, req: Request, purpose: Purpose, to: Peer) -> Option<TxKey> {
        let h = &req.headers;
        let branch = top_branch(h).unwrap_or_default();
        let cseq = h.get("CSeq").and_then(CSeq::parse).map_or(0, |c| c.seq);
        self.sent.insert(
            format!("{branch} {}", req.method),
            Sent {
                method: req.method.clone(),
                call_id: h.get("Call-ID").unwrap_or("").to_string(),
                from_tag: tag_of(h.get("From")).unwrap_or_default(),
                cseq,
                has_sdp: !req.body.is_empty(),
                to_tag: None,
                final_: None,
            },
        );
        match self.tx.send_request(req, to, now_ms()) {
            Ok(key) => {
                self.purposes.insert(key.clone(), purpose);
                Some(key)
            }
            Err(e) => {
                self.violation(format_args!("own request refused: {e:?}"));
                None
            }
        }
    }
}

/// A piece of a message as text, trimmed (borrowed when it is UTF-8, as it nearly always is).
fn text(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b.trim_ascii())
}

/// A trace line for a message: start line, Call-ID, CSeq and a hash of the exact bytes.
/// Written straight into the trace (no text of its own is built).
pub struct Summary<'a>(pub &'a [u8]);

pub fn summary(bytes: &[u8]) -> Summary<'_> {
    Summary(bytes)
}

impl std::fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Read as bytes: every message of a run passes through here, and building a
        // lossy copy of each was a tenth of the trace's cost.
        let mut lines = self.0.split(|b| *b == b'\n');
        let first = lines.next().unwrap_or_default();
        let (mut call_id, mut cseq): (&[u8], &[u8]) = (b"", b"");
        for l in lines {
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            if l.is_empty() {
                break;
            }
            let Some(colon) = l.iter().position(|b| *b == b':') else {
                continue;
            };
            let (n, v) = l.split_at(colon);
            let (n, v) = (n.trim_ascii(), v.get(1..).unwrap_or_default());
            if call_id.is_empty() && n.eq_ignore_ascii_case(b"Call-ID") {
                call_id = v;
            } else if cseq.is_empty() && n.eq_ignore_ascii_case(b"CSeq") {
                cseq = v;
            }
        }
        write!(
            f,
            "{} | {} | {} | #{:08x}",
            text(first),
            text(call_id),
            text(cseq),
            fingerprint(self.0) as u32
        )
    }
}
