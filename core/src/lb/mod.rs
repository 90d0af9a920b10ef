//! The load balancer's pure part (`drongo lb`): where each datagram goes.
//!
//! It is a stateless proxy (RFC 3261 §16.11) in front of the cluster that keeps nothing per
//! call, so two balancers are interchangeable and a phone may move from one to the other
//! mid-call:
//! - A new request (no node token) goes to a node chosen by weighted rendezvous hashing of
//!   its Call-ID (or of its source address, for the methods and sources configured for
//!   source affinity) over the nodes taking new calls ([`pool`]).
//! - An in-dialog request carries a node token in its Request-URI (the node's Contact,
//!   [`crate::cluster::token`]): it goes to that node while it lives, else to the call's
//!   adopter, the same pure choice the cluster makes.
//! - The balancer adds its Via to what it forwards to a node (the branch a hash of the
//!   client's, so retransmissions, CANCEL and the ACK of a failure get the same one), and
//!   the node's responses come back through it: it removes its Via and sends each to the
//!   client's source address (it records `received` and `rport` on the client's Via,
//!   RFC 3581, whether asked or not: phones sit behind NAT).
//! - A response to a node's own request names the node in its Via branch: it goes there
//!   (or to the adopter).
//!
//! Phones on TCP, TLS or WebSocket connections the balancer terminates are reached back on
//! those connections ([`flow`]), and a WebSocket client's cookie can pin its new requests
//! to one node.
//!
//! One thing it does remember, briefly: which node got each INVITE (by Call-ID, for 64·T1),
//! so that its CANCEL and the ACK of its failure reach the same node even when slow start
//! moved the rendezvous choice meanwhile. Losing it (a restart, the other balancer) only
//! sends those to the rendezvous choice again.

pub mod flow;
pub mod health;
pub mod pool;
mod route;

pub use flow::{flow_token, parse_flow_token, Source};
pub use health::{Probe, Probes};
pub use pool::{HealthConfig, Pool, PoolNode, FULL_WEIGHT};
pub use route::{Affinity, Balancer, LbMetrics, Out};
