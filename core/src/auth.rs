//! Digest authentication (RFC 3261 §22, RFC 7616, RFC 8760): SHA-256 and MD5 with
//! `qop=auth`, nonces that expire (answered with `stale=true`) and nonce-count replay
//! protection.
//!
//! A nonce is `<issued-at hex>.<mac>`, where the MAC is SHA-256 over a per-node secret and
//! the time, so nonces need no table; only the highest nonce-count seen per nonce is kept,
//! and only while the nonce is valid.

use crate::config::Config;
use crate::message::Request;
use crate::UnixMillis;
use md5::Md5;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Digest algorithms we offer, strongest first (RFC 8760 §2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Md5,
}

impl Algorithm {
    fn from_name(name: &str) -> Option<Self> {
        if name.eq_ignore_ascii_case("SHA-256") {
            Some(Algorithm::Sha256)
        } else if name.eq_ignore_ascii_case("MD5") {
            Some(Algorithm::Md5)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Md5 => "MD5",
        }
    }

    fn hash(self, data: &str) -> String {
        match self {
            Algorithm::Sha256 => hex(&Sha256::digest(data.as_bytes())),
            Algorithm::Md5 => hex(&Md5::digest(data.as_bytes())),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The result of checking a request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Valid credentials for this user.
    Authenticated(String),
    /// No (usable) credentials, or a stale nonce: challenge (with `stale=true` if stale).
    Challenge { stale: bool },
    /// Wrong credentials, unknown user or a replayed nonce-count.
    Forbidden,
}

/// Issues and checks digest credentials for one node.
#[derive(Debug)]
pub struct Authenticator {
    secret: String,
    /// Nonces issued so far: part of every nonce, so that two challenges issued in the same
    /// millisecond (two phones registering at once) never share one.
    issued: u64,
    /// Highest nonce-count seen per (nonce, username), with the nonce's issue time for
    /// pruning.
    nonce_counts: BTreeMap<(String, String), (UnixMillis, u32)>,
}

/// Splits a `Digest k=v, k="v"` credentials value into its parameters.
fn parse_params(value: &str) -> Option<BTreeMap<String, String>> {
    let rest = value.trim_start();
    let (scheme, rest) = rest.split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("Digest") {
        return None;
    }
    let mut out = BTreeMap::new();
    for part in crate::message::split_commas(rest)? {
        let (k, v) = part.split_once('=')?;
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        out.insert(k.trim().to_ascii_lowercase(), v.to_string());
    }
    Some(out)
}

impl Authenticator {
    pub fn new(secret: String) -> Self {
        Self {
            secret,
            issued: 0,
            nonce_counts: BTreeMap::new(),
        }
    }

    fn mac(&self, issued: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.secret.as_bytes());
        h.update(b":");
        h.update(issued.as_bytes());
        hex(&h.finalize()[..16])
    }

    /// A fresh nonce: `<issued-at hex>-<sequence hex>.<mac>`.
    pub fn nonce(&mut self, now: UnixMillis) -> String {
        self.issued += 1;
        let issued = format!("{now:x}-{:x}", self.issued);
        format!("{issued}.{}", self.mac(&issued))
    }

    /// The challenge header values, one per configured algorithm, in the configured order.
    pub fn challenges(&mut self, cfg: &Config, now: UnixMillis, stale: bool) -> Vec<String> {
        let nonce = self.nonce(now);
        let realm = &cfg.realm;
        cfg.digest_algorithms
            .iter()
            .filter_map(|a| Algorithm::from_name(a))
            .map(|a| {
                format!(
                    "Digest realm=\"{realm}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"{}",
                    a.name(),
                    if stale { ", stale=true" } else { "" }
                )
            })
            .collect()
    }

    /// Checks the credentials in `header` (Authorization or Proxy-Authorization) of `req`.
    pub fn verify(
        &mut self,
        req: &Request,
        header: &str,
        cfg: &Config,
        now: UnixMillis,
    ) -> Verdict {
        let lifetime = cfg.nonce_lifetime_secs * 1000;
        self.nonce_counts
            .retain(|_, (issued, _)| issued.saturating_add(lifetime) > now);
        let Some(creds) = req
            .headers
            .get_all(header)
            .filter_map(parse_params)
            .find(|p| p.get("realm").is_some_and(|r| *r == cfg.realm))
        else {
            return Verdict::Challenge { stale: false };
        };
        let field = |k: &str| creds.get(k).map(String::as_str).unwrap_or("");
        let algorithm = match field("algorithm") {
            "" | "MD5" | "md5" => Algorithm::Md5,
            a if a.eq_ignore_ascii_case("SHA-256") => Algorithm::Sha256,
            _ => return Verdict::Challenge { stale: false },
        };
        let nonce = field("nonce");
        let Some((issued_part, mac)) = nonce.split_once('.') else {
            return Verdict::Challenge { stale: false };
        };
        if !constant_time_eq(mac, &self.mac(issued_part)) {
            // Not ours (e.g. issued before a restart with another secret): a fresh challenge.
            return Verdict::Challenge { stale: true };
        }
        let issued_hex = issued_part.split('-').next().unwrap_or("");
        let Ok(issued) = u64::from_str_radix(issued_hex, 16) else {
            return Verdict::Challenge { stale: false };
        };
        if issued.saturating_add(lifetime) <= now {
            return Verdict::Challenge { stale: true };
        }
        let username = field("username");
        let Some(user) = cfg.user(username) else {
            return Verdict::Forbidden;
        };
        let ha1 = algorithm.hash(&format!("{username}:{}:{}", cfg.realm, user.password));
        let ha2 = algorithm.hash(&format!("{}:{}", req.method, field("uri")));
        let qop = field("qop");
        let expected = if qop.is_empty() {
            algorithm.hash(&format!("{ha1}:{nonce}:{ha2}"))
        } else if qop == "auth" {
            let Ok(nc) = u32::from_str_radix(field("nc"), 16) else {
                return Verdict::Forbidden;
            };
            let counted = (nonce.to_string(), username.to_string());
            let last = self.nonce_counts.get(&counted).map_or(0, |(_, n)| *n);
            if nc <= last {
                return Verdict::Forbidden; // replay
            }
            let expected = algorithm.hash(&format!(
                "{ha1}:{nonce}:{}:{}:auth:{ha2}",
                field("nc"),
                field("cnonce")
            ));
            if constant_time_eq(&expected, field("response")) {
                self.nonce_counts.insert(counted, (issued, nc));
            }
            expected
        } else {
            return Verdict::Challenge { stale: false };
        };
        if constant_time_eq(&expected, &field("response").to_ascii_lowercase()) {
            Verdict::Authenticated(username.to_string())
        } else {
            Verdict::Forbidden
        }
    }
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::User;
    use crate::message::{parse_datagram, Limits, SipMessage};

    fn cfg() -> Config {
        Config {
            users: vec![User {
                name: "alice".into(),
                password: "secret".into(),
            }],
            ..Config::default()
        }
    }

    fn register(auth: Option<String>) -> Request {
        let mut text = "REGISTER sip:drongo SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
            Max-Forwards: 70\r\nFrom: <sip:alice@drongo>;tag=1\r\nTo: <sip:alice@drongo>\r\n\
            Call-ID: x\r\nCSeq: 1 REGISTER\r\n"
            .to_string();
        if let Some(a) = auth {
            text.push_str(&format!("Authorization: {a}\r\n"));
        }
        text.push_str("\r\n");
        match parse_datagram(text.as_bytes(), &Limits::default()).unwrap() {
            SipMessage::Request(r) => r,
            SipMessage::Response(_) => unreachable!(),
        }
    }

    fn answer(alg: Algorithm, nonce: &str, nc: &str, password: &str) -> String {
        answer_as("alice", alg, nonce, nc, password)
    }

    fn answer_as(user: &str, alg: Algorithm, nonce: &str, nc: &str, password: &str) -> String {
        let ha1 = alg.hash(&format!("{user}:drongo:{password}"));
        let ha2 = alg.hash("REGISTER:sip:drongo");
        let resp = alg.hash(&format!("{ha1}:{nonce}:{nc}:abc:auth:{ha2}"));
        format!(
            "Digest username=\"{user}\", realm=\"drongo\", nonce=\"{nonce}\", uri=\"sip:drongo\", \
             response=\"{resp}\", algorithm={}, qop=auth, nc={nc}, cnonce=\"abc\"",
            alg.name()
        )
    }

    /// Two phones challenged in the same millisecond used to get the same nonce, and the
    /// second one's nc=1 was taken for a replay of the first's: 403 (found by the softphone
    /// test, where both baresip phones register at once).
    #[test]
    fn nonces_are_unique_and_nonce_counts_are_per_user() {
        let mut cfg = cfg();
        cfg.users.push(User {
            name: "bob".into(),
            password: "other".into(),
        });
        let mut a = Authenticator::new("s".into());
        let now = 1_000_000;
        assert_ne!(a.nonce(now), a.nonce(now), "one nonce per challenge");
        let shared = a.nonce(now);
        let alice = register(Some(answer_as(
            "alice",
            Algorithm::Md5,
            &shared,
            "00000001",
            "secret",
        )));
        let bob = register(Some(answer_as(
            "bob",
            Algorithm::Md5,
            &shared,
            "00000001",
            "other",
        )));
        assert_eq!(
            a.verify(&alice, "Authorization", &cfg, now + 1),
            Verdict::Authenticated("alice".into())
        );
        assert_eq!(
            a.verify(&bob, "Authorization", &cfg, now + 2),
            Verdict::Authenticated("bob".into()),
            "bob's first use of the nonce is no replay of alice's"
        );
    }

    #[test]
    fn sha256_and_md5_with_nonce_count_replay_and_staleness() {
        let cfg = cfg();
        let mut a = Authenticator::new("s".into());
        let now = 1_000_000;
        assert_eq!(
            a.verify(&register(None), "Authorization", &cfg, now),
            Verdict::Challenge { stale: false }
        );
        let nonce = a.nonce(now);
        for alg in [Algorithm::Sha256, Algorithm::Md5] {
            let mut a = Authenticator::new("s".into());
            let ok = register(Some(answer(alg, &nonce, "00000001", "secret")));
            assert_eq!(
                a.verify(&ok, "Authorization", &cfg, now + 10),
                Verdict::Authenticated("alice".into())
            );
            // The same nonce-count again is a replay.
            assert_eq!(
                a.verify(&ok, "Authorization", &cfg, now + 20),
                Verdict::Forbidden
            );
            let next = register(Some(answer(alg, &nonce, "00000002", "secret")));
            assert_eq!(
                a.verify(&next, "Authorization", &cfg, now + 30),
                Verdict::Authenticated("alice".into())
            );
            let wrong = register(Some(answer(alg, &nonce, "00000003", "guess")));
            assert_eq!(
                a.verify(&wrong, "Authorization", &cfg, now + 40),
                Verdict::Forbidden
            );
            let late = register(Some(answer(alg, &nonce, "00000004", "secret")));
            assert_eq!(
                a.verify(&late, "Authorization", &cfg, now + 301_000),
                Verdict::Challenge { stale: true }
            );
        }
        // A nonce from another secret (say, before a restart) is stale, not forbidden.
        let mut other = Authenticator::new("t".into());
        let req = register(Some(answer(Algorithm::Md5, &nonce, "00000001", "secret")));
        assert_eq!(
            other.verify(&req, "Authorization", &cfg, now),
            Verdict::Challenge { stale: true }
        );
    }
}
