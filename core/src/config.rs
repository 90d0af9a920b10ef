//! Node configuration: realm and users, static routes, timers, limits. Deserialized from the
//! TOML config file by the runtime; every field has a default so that no file is needed.

use crate::message::Limits;
use crate::transaction::TimerConfig;
use serde::{Deserialize, Serialize};

/// A user who may register and call, with the password for digest authentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub password: String,
}

/// Calls to `user` go to `target` (a SIP URI with an IP address) instead of a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticRoute {
    pub user: String,
    pub target: String,
}

/// Registrar limits (§10.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RegistrarConfig {
    /// Shorter non-zero expirations get 423 Interval Too Brief.
    pub min_expires: u32,
    /// Longer expirations are shortened to this.
    pub max_expires: u32,
    /// Expiration when the request names none.
    pub default_expires: u32,
    /// Most bindings one address-of-record may hold.
    pub max_bindings: usize,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        Self {
            min_expires: 60,
            max_expires: 7200,
            default_expires: 3600,
            max_bindings: 10,
        }
    }
}

/// Message size limits and the overload bound, as in the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitsConfig {
    pub max_message_size: usize,
    pub max_body_size: usize,
    pub max_headers: usize,
    /// Batches handed to the store and not yet answered beyond which the node is
    /// overloaded: new INVITEs and REGISTERs get 503 with Retry-After (work already taken
    /// goes on).
    pub max_uncommitted_batches: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let l = Limits::default();
        Self {
            max_message_size: l.max_message_size,
            max_body_size: l.max_body_size,
            max_headers: l.max_headers,
            max_uncommitted_batches: 8192,
        }
    }
}

/// `[cluster]`: membership, when the node runs on a shared store (etcd).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterConfig {
    /// How long a member's record outlives its last renewal (renewed every third of it).
    /// A member that cannot renew stops sending and writing before it runs out.
    pub lease_ttl_ms: u64,
    /// What of a call is replicated (`none`, `lazy` or `hot-standby`).
    pub strategy: Strategy,
    /// What becomes of a ringing call whose node dies (`local` or `distributed`).
    pub transactions: Transactions,
    /// The balancer in front of the cluster, through which a member sends each request to a
    /// party over UDP (an INVITE to a callee, a request in a dialog without a route set;
    /// the balancer relays it on): the party answers the balancer, which sends the answer
    /// on to whoever runs the call by then. Without it the answers to a dead member's
    /// requests are lost with it (`transactions = "distributed"` needs it).
    pub outbound: Option<std::net::SocketAddr>,
    /// This cluster's region. Each region has its own store; its registrations are copied
    /// into the other regions' stores (`rreg/{region}/{aor}`, read-only there) by its
    /// leader, and theirs into ours.
    pub region: Option<String>,
    /// The other regions: name → store URL (`etcd://HOST:PORT,...`), whom this region's
    /// leader copies its registrations to.
    pub regions: std::collections::BTreeMap<String, String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            lease_ttl_ms: 2_000,
            strategy: Strategy::Lazy,
            transactions: Transactions::Local,
            outbound: None,
            region: None,
            regions: Default::default(),
        }
    }
}

/// `[cluster] transactions`: a ringing call is stored from its first INVITE (its early
/// dialogs and INVITE transactions with it), so that its adopter knows it; this says what
/// the adopter does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transactions {
    /// The plan's hybrid: transactions are the node's own. The adopter settles a ringing
    /// call: the caller gets 503 (never silence), the callee a CANCEL.
    Local,
    /// The adopter restores the call's INVITE transactions, rebuilds every deadline from
    /// their fields, and the call goes on as if nothing happened (the callee's answer
    /// reaches the adopter through a balancer, which routes it by the call).
    Distributed,
}

/// `[cluster] strategy`: how a call outlives its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Sticky routing only: a call's state stays in its node's memory (no store write per
    /// call, the fastest mode) and dies with the node; another node answers a request for
    /// it 481. Registrations are still stored.
    None,
    /// Calls are stored; any member loads one on demand, and a dead member's calls are
    /// adopted (rendezvous hashing over the survivors) so that their timers still fire.
    Lazy,
    /// As `lazy`, and each call's standby (the member that would adopt it) follows its
    /// record through a store watch and holds it in memory: a takeover reads nothing.
    HotStandby,
}

/// Everything a node needs to know that is not state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Digest realm.
    pub realm: String,
    /// Whether REGISTER and INVITE must carry valid digest credentials.
    pub auth_required: bool,
    /// Sources (IP addresses) whose INVITEs need no authentication, e.g. gateways.
    pub trusted_sources: Vec<std::net::IpAddr>,
    /// How long a nonce stays valid (seconds); after that it is answered `stale=true`.
    pub nonce_lifetime_secs: u64,
    /// Digest algorithms offered, one challenge each, in this order ("MD5", "SHA-256").
    /// The default is MD5 alone, so that common phones register out of the box: SIPp 3.6
    /// reads only the first challenge, and baresip 1.0 gives up on the whole response when
    /// any challenge names an algorithm it does not know (SHA-256), whatever the order.
    /// RFC 8760 clients take the first algorithm they support: where every phone knows
    /// SHA-256, list it first (or alone).
    pub digest_algorithms: Vec<String>,
    pub users: Vec<User>,
    pub routes: Vec<StaticRoute>,
    pub timers: TimerConfig,
    pub limits: LimitsConfig,
    pub registrar: RegistrarConfig,
    /// Calls longer than this are ended with BYE on both legs (0: no limit).
    pub max_call_duration_secs: u64,
    /// Session interval (RFC 4028) when neither side asks for one: a confirmed call with no
    /// refresh for this long is ended with BYE on both legs.
    pub session_expires_secs: u64,
    pub cluster: ClusterConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            realm: "drongo".into(),
            auth_required: false,
            trusted_sources: Vec::new(),
            nonce_lifetime_secs: 300,
            digest_algorithms: vec!["MD5".into()],
            users: Vec::new(),
            routes: Vec::new(),
            timers: TimerConfig::default(),
            limits: LimitsConfig::default(),
            registrar: RegistrarConfig::default(),
            max_call_duration_secs: 4 * 3600,
            session_expires_secs: 1800,
            cluster: ClusterConfig::default(),
        }
    }
}

impl Config {
    /// The parser limits, with the option tags the B2BUA supports.
    pub fn parse_limits(&self) -> Limits {
        Limits {
            max_message_size: self.limits.max_message_size,
            max_body_size: self.limits.max_body_size,
            max_headers: self.limits.max_headers,
            supported_extensions: vec!["timer".into()],
        }
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }
}
