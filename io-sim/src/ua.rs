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
//! schedule or after the transaction should have given up.

use crate::ledger::{Ledger, Leg};
use crate::link::{first_line, Arrival, Link, LinkFaults};
use crate::trace::{fnv64, sim_ms, Trace};
use drongo::runtime::now_ms;
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
    Probe,
    Answer(String),
    Reject(String, u16),
    Cancel(String),
    Hangup(String),
    Reinvite(String),
    Vanish(String),
    Resend2xx(String),
    /// 64·T1 after our CANCEL: an INVITE still without a final response is given up (§9.1).
    Abandon(String),
}

/// Why a client transaction was started.
#[derive(Debug, Clone)]
enum Purpose {
    Register { requested: u32, sent_at: UnixMillis },
    Probe { sent_at: UnixMillis },
    Invite(String),
    Reinvite(String),
    Cancel,
    Bye,
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
    acks: BTreeMap<u32, Request>,
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
    /// The bound of the REGISTER in flight, until its answer replaces it.
    pending: Option<UnixMillis>,
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

fn uri_in(value: &str) -> String {
    NameAddr::parse(value).map_or_else(|| value.to_string(), |n| n.uri)
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
            cfg,
        };
        ua.reg.call_id = ua.ids.call_id();
        let start = now_ms();
        let first = ua.between(0, 1_000);
        ua.at(start + first, Action::Register);
        let probe = ua.between(5_000, 15_000);
        ua.at(start + probe, Action::Probe);
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

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.rng.next_u64() % (hi - lo + 1)
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.rng.next_u64() % 1_000_000) as f64) < p * 1_000_000.0
    }

    fn at(&mut self, when: UnixMillis, action: Action) {
        self.seq += 1;
        self.timers.insert((when, self.seq), action);
    }

    fn home(&self) -> Peer {
        Peer {
            transport: Transport::Udp,
            addr: self.cfg.home,
        }
    }

    fn violation(&self, what: impl std::fmt::Display) {
        self.trace.violation(&self.who, what);
    }

    /// Sends what the transaction layer queued, and handles what it has to say.
    fn flush(&mut self) {
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
        match self.tx.send_request(req, self.home(), now_ms()) {
            Ok(key) => {
                self.purposes.insert(key, purpose);
            }
            Err(e) => self.violation(format_args!("own request refused: {e:?}")),
        }
    }

    fn register(&mut self, query: bool) {
        let now = now_ms();
        let uri = format!("sip:{}", self.cfg.home);
        let mut r = self.base_request(Method::Register, &uri);
        let aor = format!("<sip:{}@drongo>", self.cfg.user);
        let tag = self.ids.tag();
        r.headers.push("From", format!("{aor};tag={tag}"));
        r.headers.push("To", aor);
        r.headers.push("Call-ID", self.reg.call_id.clone());
        self.reg.cseq += 1;
        r.headers
            .push("CSeq", format!("{} REGISTER", self.reg.cseq));
        let purpose = if query {
            Purpose::Probe { sent_at: now }
        } else {
            let e = self.cfg.reg_expires;
            r.headers.push(
                "Contact",
                format!("<{}>;expires={e}", contact_uri(&self.cfg)),
            );
            // Processed at the latest when its last retransmission arrives (64·T1).
            let latest = now + self.timers_cfg.t1 * 64 + u64::from(e) * 1000;
            self.reg.pending = Some(latest);
            Purpose::Register {
                requested: e,
                sent_at: now,
            }
        };
        self.send_request(r, purpose);
    }

    fn dialog_request(&mut self, call_id: &str, method: Method) -> Option<Request> {
        let c = self.calls.get(call_id)?;
        let (uri, local, remote, local_tag, remote_tag) = (
            c.remote_target.clone(),
            c.local_uri.clone(),
            c.remote_uri.clone(),
            c.local_tag.clone(),
            c.remote_tag.clone().unwrap_or_default(),
        );
        let mut r = self.base_request(method.clone(), &uri);
        let c = self.calls.get_mut(call_id)?;
        c.local_cseq += 1;
        r.headers.push("From", format!("{local};tag={local_tag}"));
        r.headers.push("To", format!("{remote};tag={remote_tag}"));
        r.headers.push("Call-ID", call_id);
        r.headers.push("CSeq", format!("{} {method}", c.local_cseq));
        Some(r)
    }

    fn on_command(&mut self, cmd: Command) {
        let Command::Call { callee, token } = cmd;
        let now = now_ms();
        let uri = format!("sip:{callee}@{}", self.cfg.home);
        let mut r = self.base_request(Method::Invite, &uri);
        let call_id = self.ids.call_id();
        let local_tag = self.ids.tag();
        let local_uri = format!("<sip:{}@drongo>", self.cfg.user);
        let remote_uri = format!("<sip:{callee}@drongo>");
        r.headers
            .push("From", format!("{local_uri};tag={local_tag}"));
        r.headers.push("To", remote_uri.clone());
        r.headers.push("Call-ID", call_id.clone());
        r.headers.push("CSeq", "1 INVITE");
        r.headers
            .push("Contact", format!("<{}>", contact_uri(&self.cfg)));
        r.headers.push("Content-Type", "application/sdp");
        r.body = sdp(&self.cfg, &token, 1);
        self.ledger.call(&token, |c| {
            c.caller = Leg {
                ua: self.who.clone(),
                ..Leg::default()
            }
        });
        self.ledger.lock().calls_started += 1;
        self.trace.log(
            &self.who,
            format_args!("calls {callee} (call {token}, Call-ID {call_id})"),
        );
        self.calls.insert(
            call_id.clone(),
            Call {
                token,
                caller: true,
                local_tag,
                local_uri,
                remote_uri,
                remote_target: uri,
                local_cseq: 1,
                invite: Some(r.clone()),
                ..Call::default()
            },
        );
        let patience = self.between(3_000, 9_000);
        self.at(now + patience, Action::Cancel(call_id.clone()));
        self.send_request(r, Purpose::Invite(call_id));
    }

    fn on_action(&mut self, action: Action, now: UnixMillis) {
        match action {
            Action::Register => {
                if self.cfg.lapse_at_ms.is_some_and(|t| sim_ms() >= t) {
                    self.trace
                        .log(&self.who, "stops refreshing its registration");
                    return;
                }
                self.register(false);
            }
            Action::Probe => {
                self.register(true);
                let next = self.between(10_000, 20_000);
                self.at(now + next, Action::Probe);
            }
            Action::Answer(id) => self.answer(&id, now),
            Action::Reject(id, code) => {
                let Some(c) = self.calls.get_mut(&id) else {
                    return;
                };
                if c.state != State::Early || c.canceled {
                    return;
                }
                c.state = State::Ended;
                let Some((key, req)) = c.server_invite.clone() else {
                    return;
                };
                let tag = c.local_tag.clone();
                let _ = self
                    .tx
                    .send_response(&key, response_to(&req, code, None, &tag), now);
            }
            Action::Cancel(id) => self.cancel(&id, now),
            Action::Abandon(id) => {
                let Some(c) = self.calls.get_mut(&id) else {
                    return;
                };
                if c.state != State::Early {
                    return;
                }
                c.state = State::Ended;
                let Some(invite) = c.invite.clone() else {
                    return;
                };
                self.trace.log(
                    &self.who,
                    format_args!("no final response after CANCEL; {id} given up"),
                );
                self.tx.abandon_request(&invite);
            }
            Action::Hangup(id) => self.hang_up(&id),
            Action::Reinvite(id) => {
                let Some(c) = self.calls.get(&id) else { return };
                if c.state != State::Confirmed
                    || c.vanished
                    || c.reinvite_pending
                    || c.pending_2xx.is_some()
                {
                    return;
                }
                let token = c.token.clone();
                let Some(mut r) = self.dialog_request(&id, Method::Invite) else {
                    return;
                };
                r.headers
                    .push("Contact", format!("<{}>", contact_uri(&self.cfg)));
                r.headers.push("Content-Type", "application/sdp");
                r.body = sdp(&self.cfg, &token, 2);
                if let Some(c) = self.calls.get_mut(&id) {
                    c.reinvite_pending = true;
                }
                self.ledger.call(&token, |c| c.reinvites_pending += 1);
                self.send_request(r, Purpose::Reinvite(id));
            }
            Action::Vanish(id) => {
                let Some(c) = self.calls.get_mut(&id) else {
                    return;
                };
                if c.state != State::Confirmed {
                    return;
                }
                c.vanished = true;
                let (token, caller, leg) = (c.token.clone(), c.caller, c.leg);
                self.trace
                    .log(&self.who, format_args!("goes silent in {id}"));
                self.ledger_leg(&token, caller, leg, |l| l.vanished = true);
            }
            Action::Resend2xx(id) => {
                let Some(c) = self.calls.get_mut(&id) else {
                    return;
                };
                if c.vanished {
                    return;
                }
                let Some(p) = c.pending_2xx.as_mut() else {
                    return;
                };
                if now >= p.give_up_at {
                    // §13.3.1.4: no ACK for our 2xx: the dialog is ended with BYE.
                    // The 2xx made the dialog, ACKed or not.
                    c.pending_2xx = None;
                    c.state = State::Confirmed;
                    self.trace
                        .log(&self.who, format_args!("no ACK for 2xx in {id}; BYE"));
                    self.hang_up(&id);
                    return;
                }
                let (key, resp) = (p.key.clone(), p.response.clone());
                p.interval = (p.interval * 2).min(self.timers_cfg.t2);
                let next = now + p.interval;
                let _ = self.tx.send_response(&key, resp, now);
                self.at(next, Action::Resend2xx(id));
            }
        }
    }

    fn cancel(&mut self, id: &str, now: UnixMillis) {
        let t1 = self.timers_cfg.t1;
        let Some(c) = self.calls.get_mut(id) else {
            return;
        };
        if c.state != State::Early || c.canceled {
            return;
        }
        if !c.provisional {
            // §9.1: no CANCEL before a provisional response; it goes when one comes.
            c.cancel_wanted = true;
            return;
        }
        c.canceled = true;
        let Some(invite) = c.invite.clone() else {
            return;
        };
        let cancel = drongo_core::message::cancel_for(&invite);
        self.trace
            .log(&self.who, format_args!("gives up on {id}: CANCEL"));
        self.send_request(cancel, Purpose::Cancel);
        self.at(now + 64 * t1, Action::Abandon(id.to_string()));
    }

    fn hang_up(&mut self, id: &str) {
        let Some(c) = self.calls.get(id) else { return };
        if c.state != State::Confirmed || c.vanished {
            return;
        }
        let Some(r) = self.dialog_request(id, Method::Bye) else {
            return;
        };
        self.end_leg(id);
        self.send_request(r, Purpose::Bye);
    }

    /// This user agent is done with the dialog.
    fn end_leg(&mut self, id: &str) {
        let Some(c) = self.calls.get_mut(id) else {
            return;
        };
        c.state = State::Ended;
        c.pending_2xx = None;
        let (token, caller, leg) = (c.token.clone(), c.caller, c.leg);
        self.ledger_leg(&token, caller, leg, |l| l.ended = true);
    }

    /// Updates this user agent's leg of call `token` in the ledger.
    fn ledger_leg(&self, token: &str, caller: bool, leg: usize, f: impl FnOnce(&mut Leg)) {
        self.ledger.call(token, |l| {
            let leg = if caller {
                Some(&mut l.caller)
            } else {
                l.callees.get_mut(leg)
            };
            if let Some(leg) = leg {
                f(leg);
            }
        });
    }

    fn answer(&mut self, id: &str, now: UnixMillis) {
        let contact = format!("<{}>", contact_uri(&self.cfg));
        let cfg = self.cfg.clone();
        let t1 = self.timers_cfg.t1;
        let Some(c) = self.calls.get_mut(id) else {
            return;
        };
        if c.state != State::Early || c.canceled {
            return;
        }
        let Some((key, req)) = c.server_invite.clone() else {
            return;
        };
        let mut resp = response_to(&req, 200, None, &c.local_tag);
        resp.headers.push("Contact", contact);
        resp.headers.push("Content-Type", "application/sdp");
        resp.body = sdp(&cfg, &c.token, 1);
        let cseq = c.remote_cseq.unwrap_or(0);
        c.sent_2xx = true;
        c.pending_2xx = Some(Pending2xx {
            key: key.clone(),
            response: resp.clone(),
            cseq,
            interval: t1,
            give_up_at: now + 64 * t1,
        });
        let (token, leg) = (c.token.clone(), c.leg);
        self.ledger.call(&token, |l| {
            if let Some(leg) = l.callees.get_mut(leg) {
                leg.answered = true;
            }
        });
        if self.tx.send_response(&key, resp, now).is_err() {
            self.violation(format_args!("cannot answer {id}: INVITE transaction gone"));
        }
        self.at(now + t1, Action::Resend2xx(id.to_string()));
    }

    /// Plans what this side does in a confirmed call: hang up, maybe re-INVITE first,
    /// maybe go silent.
    fn plan_confirmed(&mut self, id: &str, now: UnixMillis) {
        let hold = self.between(1_000, 25_000);
        self.at(now + hold, Action::Hangup(id.to_string()));
        if self.chance(0.3) {
            let at = self.between(200, hold);
            self.at(now + at, Action::Reinvite(id.to_string()));
        }
        if self.chance(self.cfg.vanish) {
            let at = self.between(0, hold);
            self.at(now + at, Action::Vanish(id.to_string()));
        }
    }

    // ----- what arrives -----

    fn on_arrival(&mut self, a: Arrival) {
        let now = now_ms();
        self.trace.log(
            &self.who,
            format_args!("< {} {}", a.from, summary(&a.bytes)),
        );
        let msg = match parse_and_validate(&a.bytes, &self.limits) {
            Ok(m) => m,
            Err(e) => {
                self.violation(format_args!(
                    "Drongo sent a message we cannot accept ({e:?}): {}",
                    first_line(&a.bytes)
                ));
                return;
            }
        };
        match &msg {
            SipMessage::Response(r) => self.check_response(r, a.duplicate),
            SipMessage::Request(r) => self.check_request(r, a.duplicate),
        }
        self.tx.handle_message(
            msg,
            Peer {
                transport: Transport::Udp,
                addr: a.from,
            },
            now,
        );
    }

    /// Slack for schedule checks: network delay differences, and one store commit a copy
    /// may wait behind (Drongo's batches leave in order; with a fast store a commit takes
    /// up to ~22 ms here).
    fn tolerance(&self) -> u64 {
        2 * self.cfg.link.jitter_ms + 50 + self.cfg.commit_slack_ms
    }

    /// Arrival `times` of copies of one message: each gap at least the RFC's interval
    /// (`cap`: T2 for non-INVITE requests and 2xx), and none after 64·T1.
    fn check_schedule(&self, what: &str, times: &[u64], cap: Option<u64>) {
        let (t1, tol) = (self.timers_cfg.t1, self.tolerance());
        let Some(first) = times.first() else { return };
        let n = times.len();
        if n < 2 {
            return;
        }
        let k = (n - 1) as u32;
        let mut expected = t1.saturating_mul(1 << (k - 1).min(20));
        if let Some(cap) = cap {
            expected = expected.min(cap);
        }
        if k == 1 {
            // The first copy may have waited for its store write while the retransmission
            // timer ran; Drongo then keeps the next copy at least T1/2 behind it.
            expected = t1 / 2;
        }
        if !self.cfg.strict_schedule {
            expected = t1 / 2;
            let most = if cap.is_some() { 11 } else { 7 };
            if n > most {
                self.violation(format_args!(
                    "{what}: {n} copies, more than the RFC's {most}"
                ));
            }
        }
        let gap = times[n - 1] - times[n - 2];
        if gap + tol < expected {
            self.violation(format_args!(
                "{what}: copy {n} came {gap} ms after the previous one; the RFC's interval is {expected} ms"
            ));
        }
        if self.cfg.strict_schedule && times[n - 1] - first > 64 * t1 + tol {
            self.violation(format_args!(
                "{what}: copy {n} came {} ms after the first, past 64·T1",
                times[n - 1] - first
            ));
        }
    }

    fn check_request(&mut self, r: &Request, duplicate: bool) {
        let h = &r.headers;
        let Some(branch) = top_branch(h).filter(|b| b.starts_with("z9hG4bK")) else {
            return self.violation(format_args!("{} without an RFC 3261 branch", r.method));
        };
        if h.get("Max-Forwards").is_none() || tag_of(h.get("From")).is_none() {
            self.violation(format_args!(
                "{} without Max-Forwards or From tag",
                r.method
            ));
        }
        if r.method == Method::Ack || duplicate {
            return;
        }
        let key = format!("{branch} {}", r.method);
        let t = sim_ms();
        let times = self.copies.entry(key.clone()).or_default();
        times.push(t);
        let times = times.clone();
        let cap = (r.method != Method::Invite).then_some(self.timers_cfg.t2);
        self.check_schedule(&format!("{} {key}", r.method), &times, cap);
    }

    fn check_response(&mut self, r: &Response, duplicate: bool) {
        let h = &r.headers;
        let branch = top_branch(h).unwrap_or_default();
        let code = r.code;
        let cseq = h.get("CSeq").and_then(CSeq::parse);
        let method = cseq.as_ref().map_or(Method::Ack, |c| c.method.clone());
        let Some(sent) = self.sent.get_mut(&format!("{branch} {method}")) else {
            return self.violation(format_args!("{code} for a request never sent"));
        };
        let mut wrong = Vec::new();
        if h.get("Call-ID") != Some(sent.call_id.as_str()) {
            wrong.push("Call-ID");
        }
        if cseq.as_ref().map(|c| (c.seq, &c.method)) != Some((sent.cseq, &sent.method)) {
            wrong.push("CSeq");
        }
        if tag_of(h.get("From")).as_deref() != Some(sent.from_tag.as_str()) {
            wrong.push("From tag");
        }
        let to_tag = tag_of(h.get("To"));
        if code > 100 && to_tag.is_none() {
            wrong.push("To tag (missing)");
        }
        if (101..300).contains(&code) {
            if let Some(tag) = &to_tag {
                match &sent.to_tag {
                    Some(t) if t != tag => wrong.push("To tag (changed)"),
                    Some(_) => {}
                    None => sent.to_tag = Some(tag.clone()),
                }
            }
        }
        let method = sent.method.clone();
        if code >= 200 {
            let this = (code, to_tag.clone().unwrap_or_default());
            let clash = match &sent.final_ {
                Some(f) if *f != this => Some(f.0),
                Some(_) => None,
                None => {
                    sent.final_ = Some(this);
                    None
                }
            };
            if let Some(first) = clash {
                self.trace.violation(
                    &self.who,
                    format_args!(
                        "two different final responses for one {method}: {first} then {code}"
                    ),
                );
            }
        }
        let has_sdp = sent.has_sdp;
        let call_id = sent.call_id.clone();
        if method == Method::Invite && (200..300).contains(&code) {
            if h.get("Contact").is_none() {
                wrong.push("Contact (missing in 2xx)");
            }
            if has_sdp && token_of(&r.body).is_none() {
                wrong.push("SDP answer (missing)");
            }
            if !duplicate {
                let key = format!("{call_id} {}", cseq.map_or(0, |c| c.seq));
                let t = sim_ms();
                let times = self.ok_copies.entry(key.clone()).or_default();
                times.push(t);
                let times = times.clone();
                let cap = Some(self.timers_cfg.t2);
                self.check_schedule(&format!("2xx to INVITE {key}"), &times, cap);
            }
        }
        if !wrong.is_empty() {
            self.violation(format_args!(
                "{code} to {method}: wrong {}",
                wrong.join(", ")
            ));
        }
    }

    fn on_event(&mut self, e: TxEvent) {
        let now = now_ms();
        match e {
            TxEvent::Request { key, request, .. } => self.on_request(key, request, now),
            TxEvent::Response { key, response } => {
                let purpose = self.purposes.get(&key).cloned();
                if key.method == Method::Invite {
                    let id = format!("{} {}", self.who, key.branch);
                    let mut l = self.ledger.lock();
                    if response.code < 200 {
                        let what = format!(
                            "{}: INVITE {} got {} and no final response",
                            self.who,
                            response.headers.get("Call-ID").unwrap_or(""),
                            response.code
                        );
                        l.proceeding.entry(id).or_insert((sim_ms(), what));
                    } else {
                        l.proceeding.remove(&id);
                    }
                }
                self.on_response(purpose, response, now);
            }
            TxEvent::StrayResponse { response, .. } => {
                // A 2xx retransmission after the INVITE transaction ended: ACK it again.
                self.reack(&response);
            }
            TxEvent::Ack { request, .. } => self.on_ack(&request),
            TxEvent::Timeout { key, .. } | TxEvent::TransportError { key } => {
                let purpose = self.purposes.get(&key).cloned();
                self.on_failure(purpose, now);
            }
            TxEvent::Terminated { key } => {
                self.purposes.remove(&key);
                let id = format!("{} {}", self.who, key.branch);
                self.ledger.lock().proceeding.remove(&id);
            }
        }
    }

    fn reack(&mut self, resp: &Response) {
        let h = &resp.headers;
        let cseq = h.get("CSeq").and_then(CSeq::parse);
        let (Some(id), Some(cseq)) = (h.get("Call-ID"), cseq) else {
            return;
        };
        if cseq.method != Method::Invite || !(200..300).contains(&resp.code) {
            return;
        }
        let ack = self.calls.get(id).and_then(|c| {
            if c.vanished {
                None
            } else {
                c.acks.get(&cseq.seq).cloned()
            }
        });
        if let Some(ack) = ack {
            self.tx
                .send_stateless(&SipMessage::Request(ack), self.home(), false);
        }
    }

    fn on_failure(&mut self, purpose: Option<Purpose>, now: UnixMillis) {
        match purpose {
            Some(Purpose::Register { .. }) => {
                // No answer: it may have been processed all the same.
                if let Some(latest) = self.reg.pending.take() {
                    self.reg.could_live_until = self.reg.could_live_until.max(latest);
                }
                self.at(now + 5_000, Action::Register);
            }
            Some(Purpose::Invite(id)) => {
                if let Some(c) = self.calls.get_mut(&id) {
                    if c.state == State::Early {
                        c.state = State::Ended;
                        let token = c.token.clone();
                        self.ledger.call(&token, |l| l.final_seen = true);
                    }
                }
            }
            Some(Purpose::Reinvite(id)) => {
                // §12.2.1.2 / §14.1: a timed-out re-INVITE ends the dialog.
                self.reinvite_done(&id);
                self.hang_up(&id);
            }
            _ => {}
        }
    }

    fn reinvite_done(&mut self, id: &str) {
        if let Some(c) = self.calls.get_mut(id) {
            if c.reinvite_pending {
                c.reinvite_pending = false;
                let token = c.token.clone();
                self.ledger.call(&token, |l| {
                    l.reinvites_pending = l.reinvites_pending.saturating_sub(1)
                });
            }
        }
    }

    fn send_ack(&mut self, id: &str, resp: &Response) {
        let Some(c) = self.calls.get(id) else { return };
        let cseq = resp
            .headers
            .get("CSeq")
            .and_then(CSeq::parse)
            .map_or(0, |c| c.seq);
        if let Some(ack) = c.acks.get(&cseq).cloned() {
            self.tx
                .send_stateless(&SipMessage::Request(ack), self.home(), false);
            return;
        }
        let (uri, local, remote, local_tag, remote_tag) = (
            c.remote_target.clone(),
            c.local_uri.clone(),
            c.remote_uri.clone(),
            c.local_tag.clone(),
            c.remote_tag.clone().unwrap_or_default(),
        );
        let mut ack = self.base_request(Method::Ack, &uri);
        ack.headers.push("From", format!("{local};tag={local_tag}"));
        ack.headers.push("To", format!("{remote};tag={remote_tag}"));
        ack.headers.push("Call-ID", id);
        ack.headers.push("CSeq", format!("{cseq} ACK"));
        if let Some(c) = self.calls.get_mut(id) {
            c.acks.insert(cseq, ack.clone());
        }
        self.tx
            .send_stateless(&SipMessage::Request(ack), self.home(), false);
    }

    fn on_response(&mut self, purpose: Option<Purpose>, resp: Response, now: UnixMillis) {
        let code = resp.code;
        match purpose {
            Some(Purpose::Register { requested, sent_at }) if code >= 200 => {
                // Answered: a 200 says what the binding is (below); a refusal changed nothing.
                self.reg.pending = None;
                self.on_register_answer(&resp, requested, sent_at, now)
            }
            Some(Purpose::Probe { sent_at }) if code >= 200 => {
                self.on_probe_answer(&resp, sent_at, now)
            }
            Some(Purpose::Invite(id)) => self.on_invite_response(&id, &resp, now),
            Some(Purpose::Reinvite(id)) if code >= 200 => {
                self.reinvite_done(&id);
                if (200..300).contains(&code) {
                    self.send_ack(&id, &resp);
                } else if code == 481 || code == 408 {
                    self.end_leg(&id);
                }
            }
            _ => {}
        }
    }

    fn on_invite_response(&mut self, id: &str, resp: &Response, now: UnixMillis) {
        let code = resp.code;
        let Some(c) = self.calls.get_mut(id) else {
            return;
        };
        let token = c.token.clone();
        if code == 180 || code == 183 {
            self.ledger.call(&token, |l| l.ringing = true);
        }
        if code < 200 {
            if c.remote_tag.is_none() {
                c.remote_tag = tag_of(resp.headers.get("To"));
            }
            c.provisional = true;
            if c.cancel_wanted {
                c.cancel_wanted = false;
                self.cancel(id, now);
            }
            return;
        }
        self.ledger.call(&token, |l| l.final_seen = true);
        if code >= 300 {
            c.state = State::Ended;
            return;
        }
        if c.state == State::Confirmed || c.state == State::Ended {
            // A retransmission, or a 2xx that crossed a BYE: ACK it (§13.2.2.4), with the
            // To tag the 2xx carries if the dialog never learnt one.
            if c.remote_tag.is_none() {
                c.remote_tag = tag_of(resp.headers.get("To"));
            }
            self.send_ack(id, resp);
            return;
        }
        c.remote_tag = tag_of(resp.headers.get("To"));
        if let Some(target) = resp.headers.get("Contact") {
            c.remote_target = uri_in(target);
        }
        c.state = State::Confirmed;
        let canceled = c.canceled;
        self.ledger.call(&token, |l| l.caller.answered = true);
        self.trace
            .log(&self.who, format_args!("call {token} answered"));
        self.send_ack(id, resp);
        if canceled {
            // The 2xx crossed our CANCEL: the call is up, so it is ended with BYE.
            self.hang_up(id);
        } else {
            self.plan_confirmed(id, now);
        }
    }

    fn on_register_answer(
        &mut self,
        resp: &Response,
        requested: u32,
        sent_at: UnixMillis,
        now: UnixMillis,
    ) {
        if resp.code != 200 {
            self.at(now + 5_000, Action::Register);
            return;
        }
        let granted = self
            .our_binding(resp)
            .and_then(|n| n.param("expires").and_then(|e| e.parse::<u64>().ok()));
        let Some(secs) = granted else {
            return self.violation("200 to REGISTER does not list our binding");
        };
        if secs > u64::from(requested) {
            self.violation(format_args!(
                "granted {secs} s, more than the {requested} s asked"
            ));
        }
        // Drongo set the expiry when it processed the request: after we sent it, before
        // its answer arrived.
        self.reg.grants.push((sent_at, sent_at + secs * 1000));
        self.reg.could_live_until = self.reg.could_live_until.max(now + secs * 1000);
        self.ledger
            .lock()
            .regs
            .entry(self.who.clone())
            .or_default()
            .refreshed += 1;
        let refresh = secs * 1000 / 2 + self.between(0, 2_000);
        self.at(now + refresh, Action::Register);
    }

    /// Our contact among the bindings a 200 to REGISTER lists.
    fn our_binding(&self, resp: &Response) -> Option<NameAddr> {
        let ours = contact_uri(&self.cfg);
        resp.headers
            .get_all("Contact")
            .filter_map(NameAddr::parse)
            .find(|n| n.uri.eq_ignore_ascii_case(&ours))
    }

    fn on_probe_answer(&mut self, resp: &Response, sent_at: UnixMillis, now: UnixMillis) {
        if resp.code != 200 {
            return;
        }
        let listed = self.our_binding(resp).is_some();
        let bound = 1_500 + self.cfg.skew_bound_ms + self.tolerance();
        // Found until it expires: a grant whose expiry is after the latest time the lookup
        // could have been processed (plus the bound) must be listed.
        let must = self
            .reg
            .grants
            .iter()
            .any(|(_, until)| *until > now + bound);
        // None lives on after its expiry: nothing we asked for could still be alive.
        let must_not = self.reg.could_live_until + bound < sent_at && self.reg.pending.is_none();
        self.ledger
            .lock()
            .regs
            .entry(self.who.clone())
            .or_default()
            .lookups += 1;
        if must && !listed {
            let until = self.reg.grants.iter().map(|g| g.1).max().unwrap_or(0);
            self.violation(format_args!(
                "registration lost: granted until {until}, not listed at {now}"
            ));
        }
        if must_not && listed {
            self.violation(format_args!(
                "registration outlived its expiry: could live until {}, listed at {sent_at}",
                self.reg.could_live_until
            ));
        }
    }

    fn on_ack(&mut self, ack: &Request) {
        let h = &ack.headers;
        let Some(id) = h.get("Call-ID") else { return };
        let cseq = h.get("CSeq").and_then(CSeq::parse).map_or(0, |c| c.seq);
        let now = now_ms();
        let Some(c) = self.calls.get_mut(id) else {
            return;
        };
        let Some(p) = &c.pending_2xx else { return };
        if p.cseq != cseq {
            return;
        }
        c.pending_2xx = None;
        if c.state == State::Early {
            c.state = State::Confirmed;
            let id = id.to_string();
            self.plan_confirmed(&id, now);
        }
    }

    fn on_request(&mut self, key: TxKey, req: Request, now: UnixMillis) {
        let h = &req.headers;
        let to_tag = tag_of(h.get("To"));
        let call_id = h.get("Call-ID").unwrap_or("").to_string();
        if req.method == Method::Cancel {
            let invite = self.tx.invite_for_cancel(&key);
            let call = self
                .calls
                .values_mut()
                .find(|c| c.server_invite.as_ref().map(|s| &s.0) == invite.as_ref());
            let Some(c) = call else {
                let r = response_to(&req, 481, None, "x");
                let _ = self.tx.send_response(&key, r, now);
                return;
            };
            let tag = c.local_tag.clone();
            let _ = self
                .tx
                .send_response(&key, response_to(&req, 200, None, &tag), now);
            // After our 2xx the INVITE is answered: the CANCEL changes nothing (§9.2).
            if c.state == State::Early && !c.sent_2xx {
                c.canceled = true;
                c.state = State::Ended;
                if let Some((ikey, inv)) = c.server_invite.clone() {
                    let _ = self
                        .tx
                        .send_response(&ikey, response_to(&inv, 487, None, &tag), now);
                }
            }
            return;
        }
        if to_tag.is_none() {
            if req.method == Method::Invite {
                return self.new_call(key, req, now);
            }
            let r = response_to(&req, 405, None, "x");
            let _ = self.tx.send_response(&key, r, now);
            return;
        }
        // In a dialog.
        let cseq = h.get("CSeq").and_then(CSeq::parse).map_or(0, |c| c.seq);
        let known = self
            .calls
            .get(&call_id)
            .filter(|c| Some(&c.local_tag) == to_tag.as_ref());
        let Some(c) = known else {
            let r = response_to(&req, 481, None, "x");
            let _ = self.tx.send_response(&key, r, now);
            return;
        };
        if c.vanished {
            if req.method == Method::Bye {
                self.trace
                    .log(&self.who, format_args!("(silent) got BYE in {call_id}"));
                self.end_leg(&call_id);
            }
            return;
        }
        if c.state == State::Ended {
            let r = response_to(&req, 481, None, "x");
            let _ = self.tx.send_response(&key, r, now);
            return;
        }
        if c.remote_cseq.is_some_and(|r| cseq <= r) {
            self.violation(format_args!(
                "{} in {call_id} with CSeq {cseq}, not above the last ({:?})",
                req.method, c.remote_cseq
            ));
            let r = response_to(&req, 500, None, "x");
            let _ = self.tx.send_response(&key, r, now);
            return;
        }
        let tag = c.local_tag.clone();
        let (reinvite_pending, awaiting_ack, token) =
            (c.reinvite_pending, c.pending_2xx.is_some(), c.token.clone());
        if let Some(c) = self.calls.get_mut(&call_id) {
            c.remote_cseq = Some(cseq);
        }
        match req.method {
            Method::Bye => {
                let _ = self
                    .tx
                    .send_response(&key, response_to(&req, 200, None, &tag), now);
                self.end_leg(&call_id);
            }
            Method::Invite => {
                if reinvite_pending || awaiting_ack {
                    let r = response_to(&req, 491, None, &tag);
                    let _ = self.tx.send_response(&key, r, now);
                    return;
                }
                let mut resp = response_to(&req, 200, None, &tag);
                resp.headers
                    .push("Contact", format!("<{}>", contact_uri(&self.cfg)));
                resp.headers.push("Content-Type", "application/sdp");
                resp.body = sdp(&self.cfg, &token, 3);
                let t1 = self.timers_cfg.t1;
                if let Some(target) = req.headers.get("Contact") {
                    if let Some(c) = self.calls.get_mut(&call_id) {
                        c.remote_target = uri_in(target);
                    }
                }
                if let Some(c) = self.calls.get_mut(&call_id) {
                    c.pending_2xx = Some(Pending2xx {
                        key: key.clone(),
                        response: resp.clone(),
                        cseq,
                        interval: t1,
                        give_up_at: now + 64 * t1,
                    });
                }
                let _ = self.tx.send_response(&key, resp, now);
                self.at(now + t1, Action::Resend2xx(call_id));
            }
            _ => {
                let r = response_to(&req, 200, None, &tag);
                let _ = self.tx.send_response(&key, r, now);
            }
        }
    }

    fn new_call(&mut self, key: TxKey, req: Request, now: UnixMillis) {
        let h = &req.headers;
        let user = req
            .uri
            .strip_prefix("sip:")
            .and_then(|u| u.split('@').next())
            .unwrap_or("");
        if user != self.cfg.user {
            self.violation(format_args!(
                "INVITE for {} reached {}",
                req.uri, self.cfg.user
            ));
        }
        let Some(token) = token_of(&req.body) else {
            self.violation("INVITE without the caller's SDP");
            let r = response_to(&req, 488, None, "x");
            let _ = self.tx.send_response(&key, r, now);
            return;
        };
        let call_id = h.get("Call-ID").unwrap_or("").to_string();
        let local_tag = self.ids.tag();
        let leg = {
            let mut l = self.ledger.lock();
            let c = l.calls.entry(token.clone()).or_default();
            c.callees.push(Leg {
                ua: self.who.clone(),
                ..Leg::default()
            });
            c.callees.len() - 1
        };
        let call = Call {
            token,
            caller: false,
            leg,
            local_tag: local_tag.clone(),
            remote_tag: tag_of(h.get("From")),
            local_uri: h.get("To").unwrap_or("").to_string(),
            remote_uri: h
                .get("From")
                .map(|f| f.split(";tag=").next().unwrap_or(f).to_string())
                .unwrap_or_default(),
            remote_target: h.get("Contact").map(uri_in).unwrap_or_default(),
            local_cseq: 0,
            remote_cseq: h.get("CSeq").and_then(CSeq::parse).map(|c| c.seq),
            server_invite: Some((key.clone(), req.clone())),
            ..Call::default()
        };
        if call.remote_target.is_empty() {
            self.violation("INVITE without Contact");
        }
        self.calls.insert(call_id.clone(), call);
        let mut ringing = response_to(&req, 180, None, &local_tag);
        ringing
            .headers
            .push("Contact", format!("<{}>", contact_uri(&self.cfg)));
        let _ = self.tx.send_response(&key, ringing, now);
        let roll = self.rng.next_u64() % 100;
        let after = self.between(0, 5_000);
        let action = match roll {
            0..=74 => Action::Answer(call_id),
            75..=84 => Action::Reject(call_id, 486),
            85..=89 => Action::Reject(call_id, 603),
            _ => return, // never answers: the caller gives up
        };
        self.at(now + after, action);
    }
}

/// A trace line for a message: start line, Call-ID, CSeq and a hash of the exact bytes.
pub fn summary(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let header = |name: &str| {
        text.lines()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    format!(
        "{} | {} | {} | #{:08x}",
        first_line(bytes),
        header("Call-ID"),
        header("CSeq"),
        fnv64(bytes) as u32
    )
}
