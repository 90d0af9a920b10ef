//! The node token: what a node puts where the far end must echo it, so that a load balancer
//! that keeps nothing per call still routes every in-dialog message to whoever serves it.
//!
//! - In the user part of its Contact (the Request-URI of every in-dialog request to it,
//!   §12.2.1.1): the node id, its incarnation and the call's id. The balancer sends such a
//!   request to that node while that incarnation lives, else to the call's rendezvous
//!   adopter, the same pure choice the cluster makes ([`super::hrw`]).
//! - In the branch of its Via (echoed in every response, §8.2.6): the node id, which the
//!   identifiers already carry (`z9hG4bK{node:x}.…`, see [`crate::ids`]).

use crate::ids::BRANCH_MAGIC_COOKIE;

/// The first label of a Contact user part that carries a token.
const LABEL: &str = "drongo";

/// Who a Contact named: the node, its incarnation (0 on a single node) and the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactToken<'a> {
    pub node: u16,
    pub incarnation: u64,
    pub call: &'a str,
}

/// The Contact user part for call `call` served by `node` in `incarnation`:
/// `drongo.{node:x}.{incarnation:x}.{call}`. Every character is an RFC 3261 `unreserved`
/// one when the call id is (ours are: hex, dots and base32).
pub fn contact_user(node: u16, incarnation: u64, call: &str) -> String {
    format!("{LABEL}.{node:x}.{incarnation:x}.{call}")
}

/// The token in a Request-URI user part, if it carries one.
pub fn parse_contact_user(user: &str) -> Option<ContactToken<'_>> {
    let mut parts = user.splitn(4, '.');
    if parts.next()? != LABEL {
        return None;
    }
    let node = u16::from_str_radix(parts.next()?, 16).ok()?;
    let incarnation = u64::from_str_radix(parts.next()?, 16).ok()?;
    let call = parts.next().filter(|c| !c.is_empty())?;
    Some(ContactToken {
        node,
        incarnation,
        call,
    })
}

/// The node whose identifier generator made `branch` (`z9hG4bK{node:x}.…`), if any.
pub fn node_of_branch(branch: &str) -> Option<u16> {
    let rest = branch.strip_prefix(BRANCH_MAGIC_COOKIE)?;
    let (node, _) = rest.split_once('.')?;
    if node.is_empty() || node.len() > 4 {
        return None;
    }
    u16::from_str_radix(node, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::IdGen;

    #[test]
    fn a_contact_token_round_trips() {
        let mut ids = IdGen::new(0x2a, 7);
        let call = ids.call_id();
        let user = contact_user(0x2a, 9, &call);
        assert_eq!(
            parse_contact_user(&user),
            Some(ContactToken {
                node: 0x2a,
                incarnation: 9,
                call: &call
            })
        );
        assert_eq!(node_of_branch(&ids.branch()), Some(0x2a));
    }

    #[test]
    fn foreign_user_parts_and_branches_carry_none() {
        for user in [
            "",
            "alice",
            "drongo",
            "drongo.1.2",
            "drongo.1.2.",
            "drongo.x.2.c",
            "x.1.2.c",
        ] {
            assert_eq!(parse_contact_user(user), None, "{user}");
        }
        for b in [
            "",
            "z9hG4bK",
            "z9hG4bKabc",
            "z9hG4bK.x",
            "z9hG4bKlb.x",
            "z9hG4bK12345.x",
            "1.x",
        ] {
            assert_eq!(node_of_branch(b), None, "{b}");
        }
    }
}
