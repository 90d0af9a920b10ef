//! The cluster's pure parts: what a member says of itself (its record under `node/{id}`),
//! who leads (`leader`), and who serves a key (rendezvous hashing), so that every node and the load balancer
//! reach the same answer from the same member list without talking.

pub mod hrw;
pub mod leader;
pub mod member;
pub mod token;

pub use hrw::{choose, ranked};
pub use leader::Leader;
pub use member::{Member, MemberState};
