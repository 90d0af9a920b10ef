//! Responses for calls another member runs (cluster). A callee answers the INVITE of a
//! ringing call where its Via says, through the balancer, which sends the answer to the
//! node its branch names while that node lives, else to the call's adopter. Either can be
//! the wrong one for a moment: a node back from the dead gets answers for calls a survivor
//! adopted meanwhile, and an adopter the answers for calls their node claimed back on its
//! return. Such a response matches no transaction here: it waits while the call is looked
//! up (as a request in a dialog does, see `cluster`), then goes on, unchanged, to the
//! live owner (whose transaction it matches by its Via), or into this node's transactions
//! once the call is taken over here. A call that is over, or unknown, drops it.

use super::Node;
use crate::message::{Response, SipMessage};
use crate::store::{call_key, leg_key};
use crate::transaction::{Peer, Transport};
use crate::UnixMillis;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// At most this many calls with responses waiting, and responses for each.
const MAX_CALLS: usize = 4096;
const MAX_PER_CALL: usize = 4;

/// Responses waiting for their call's owner to be known, by Call-ID.
#[derive(Debug, Default)]
pub(super) struct Strays(BTreeMap<String, Vec<Response>>);

impl Strays {
    pub(super) fn clear(&mut self) {
        self.0.clear();
    }

    pub(super) fn take(&mut self, call_id: &str) -> Vec<Response> {
        self.0.remove(call_id).unwrap_or_default()
    }
}

impl Node {
    /// A response no transaction of ours matched: parked for its call's lookup when the
    /// call may be another member's. Whether it was.
    pub(super) fn await_owner(&mut self, resp: &Response) -> bool {
        let stored = self.sink.cfg.cluster.strategy != crate::config::Strategy::None;
        let Some(call_id) = resp.headers.get("Call-ID").map(str::to_string) else {
            return false;
        };
        let ours = |tag: &str| self.b2bua.dialog_of(&call_id, tag).is_some();
        let held = self.b2bua.holds(&call_id)
            || resp
                .headers
                .get("From")
                .and_then(|f| crate::message::header_param(f, "tag"))
                .is_some_and(ours);
        if !self.is_clustered() || !stored || held {
            return false;
        }
        let strays = &mut self.cluster.strays.0;
        let waiting = strays.contains_key(&call_id);
        if !waiting && strays.len() >= MAX_CALLS {
            return false;
        }
        let list = strays.entry(call_id.clone()).or_default();
        if list.len() < MAX_PER_CALL {
            list.push(resp.clone());
        }
        if self.cluster.held.contains_key(&call_id) {
            // The owner is known and alive: it goes there now.
            self.forward_held(&call_id);
        } else if !waiting && !self.cluster.waiting.contains(&call_id) {
            // A B-leg's Call-ID names its call; a caller's (the answer to a request relayed
            // to it) is found through the A-leg index.
            let key = if is_call_id(&call_id) {
                call_key(&call_id)
            } else {
                leg_key(&call_id)
            };
            self.load(key, &call_id);
        }
        true
    }

    /// The call's owner lives at `to`: its responses go there as they came.
    pub(super) fn forward_strays(&mut self, call_id: &str, to: SocketAddr) {
        let peer = Peer {
            addr: to,
            transport: Transport::Udp,
        };
        for resp in self.cluster.strays.take(call_id) {
            self.sink.metrics.forwarded_responses += 1;
            self.sink.send_stateless(&SipMessage::Response(resp), peer);
        }
    }

    /// The call is held here now: its responses go to its transactions.
    pub(super) fn replay_strays(&mut self, call_id: &str, now: UnixMillis) {
        let strays = self.cluster.strays.take(call_id);
        if strays.is_empty() {
            return;
        }
        let from = Peer {
            addr: self.sink.advertise,
            transport: Transport::Udp,
        };
        for resp in strays {
            self.sink
                .tx
                .handle_message(SipMessage::Response(resp), from, now);
        }
        self.process_events(now);
    }
}

/// Whether `call_id` is one a node made for a call's B-leg (`{node:x}.{base32}`, see
/// [`crate::ids`]): the call's own id, which names its record.
fn is_call_id(call_id: &str) -> bool {
    call_id.split_once('.').is_some_and(|(node, rest)| {
        (1..=4).contains(&node.len())
            && u16::from_str_radix(node, 16).is_ok()
            && !rest.is_empty()
            && rest.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7'))
    })
}
