//! A call that ended while a party's BYE may still be owed its 200 (the node that took
//! the BYE died, or lost its lease, before answering it) leaves a tombstone in place of
//! its record, for 64·T1: whichever node the BYE's retransmission reaches (the adopter,
//! a restarted node, any member) answers it 200 rather than 481, which would tell the
//! party its call had been lost. The store removes the tombstone when it expires.
//! A re-INVITE whose 2xx was still awaiting its ACK when the call ended is answered that
//! 2xx the same way: its sender may retransmit it to any member, and a 481 there would
//! be a second final response to one INVITE.

use super::call::{Call, Pending2xx, Side};
use crate::message::Response;
use crate::store::{call_key, leg_key, StoreWrite};
use crate::transaction::Peer;
use crate::UnixMillis;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Tombstone {
    /// Always true: what tells a tombstone from a call record.
    ended: bool,
    /// The call's dialogs: (Call-ID, our tag).
    pub(crate) dialogs: Vec<(String, String)>,
    pub(crate) until: UnixMillis,
    /// The 2xx still retransmitted when the call ended: (Call-ID of its leg, the 2xx,
    /// the party it goes to).
    #[serde(default)]
    pub(crate) owed_2xx: Option<(String, Pending2xx, Peer)>,
    /// The node that ended the call (and retransmits that 2xx).
    #[serde(default)]
    pub(crate) owner: u16,
}

impl Tombstone {
    /// The tombstone stored at a call key, if `value` is one.
    pub(crate) fn parse(value: &[u8]) -> Option<Tombstone> {
        serde_json::from_slice::<Tombstone>(value)
            .ok()
            .filter(|t| t.ended)
    }

    /// Whether a BYE on (Call-ID, our tag) is one of the call's.
    pub(crate) fn owes(&self, call_id: &str, local_tag: &str) -> bool {
        self.dialogs
            .iter()
            .any(|(c, t)| c == call_id && t == local_tag)
    }

    /// The 2xx the INVITE (Call-ID, CSeq) was answered, if it is the one still owed.
    pub(crate) fn owed_2xx(&self, call_id: &str, cseq: u32) -> Option<&Response> {
        self.owed_2xx
            .as_ref()
            .filter(|(c, p, _)| c == call_id && p.cseq == cseq)
            .map(|(_, p, _)| &p.response)
    }

    /// The writes that replace `call`'s record (and, in a cluster, its A-leg index, so
    /// that a BYE from the caller finds it) by a tombstone until `until`.
    pub(crate) fn writes(call: &Call, until: UnixMillis, clustered: bool) -> Vec<StoreWrite> {
        let t = Tombstone {
            ended: true,
            dialogs: [Side::A, Side::B]
                .into_iter()
                .map(|side| {
                    let d = call.dialog(side);
                    (d.call_id.clone(), d.local_tag.clone())
                })
                .collect(),
            until,
            owner: call.owner,
            owed_2xx: call.pending_2xx.as_ref().map(|p| {
                let leg = call.dialog(p.side);
                (leg.call_id.clone(), p.clone(), p.destination(leg.peer))
            }),
        };
        let mut w = vec![StoreWrite::Put {
            key: call_key(&call.id),
            value: serde_json::to_vec(&t).unwrap_or_default(),
            version: call.version + 1,
            expect: Some(call.version),
            expires_at: Some(until),
        }];
        if clustered {
            w.push(StoreWrite::Put {
                key: leg_key(&call.a.call_id),
                value: call.id.clone().into_bytes(),
                version: 2,
                expect: Some(1),
                expires_at: Some(until),
            });
        }
        w
    }
}
