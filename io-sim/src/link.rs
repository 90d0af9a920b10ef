//! UDP between a user agent and Drongo, with the faults of a bad network: loss,
//! duplication, and extra delay (which reorders). Applied at the user agent in both
//! directions, from the run's seed, so that every fault is in the trace.

use crate::trace::Trace;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// How bad the network is (the same both ways).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkFaults {
    pub loss: f64,
    pub duplicate: f64,
    /// Extra delay drawn from 0..=this (milliseconds); unequal delays reorder datagrams.
    pub jitter_ms: u64,
}

impl LinkFaults {
    pub fn is_clean(&self) -> bool {
        self.loss == 0.0 && self.duplicate == 0.0 && self.jitter_ms == 0
    }
}

/// A datagram that reached the user agent.
pub struct Arrival {
    pub from: SocketAddr,
    pub bytes: Vec<u8>,
    /// A copy the network made (not sent by the peer): excluded from schedule checks.
    pub duplicate: bool,
}

struct Dice {
    rng: ChaCha8Rng,
    faults: LinkFaults,
}

impl Dice {
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.rng.next_u64() % 1_000_000) as f64) < p * 1_000_000.0
    }

    fn jitter(&mut self) -> u64 {
        match self.faults.jitter_ms {
            0 => 0,
            j => self.rng.next_u64() % (j + 1),
        }
    }
}

/// One user agent's socket and its faults.
#[derive(Clone)]
pub struct Link {
    socket: Arc<UdpSocket>,
    dice: Arc<Mutex<Dice>>,
    trace: Trace,
    who: String,
}

impl Link {
    /// Binds `addr` and starts delivering arrivals (after the inbound faults) to `inbox`.
    pub async fn bind(
        addr: SocketAddr,
        faults: LinkFaults,
        seed: u64,
        trace: Trace,
        who: String,
        inbox: mpsc::UnboundedSender<Arrival>,
    ) -> std::io::Result<Self> {
        let socket = Arc::new(UdpSocket::bind(addr).await?);
        let link = Self {
            socket,
            dice: Arc::new(Mutex::new(Dice {
                rng: ChaCha8Rng::seed_from_u64(seed),
                faults,
            })),
            trace,
            who,
        };
        let rx = link.clone();
        tokio::task::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            while let Ok((n, from)) = rx.socket.recv_from(&mut buf).await {
                let bytes = buf.get(..n).unwrap_or_default().to_vec();
                rx.deliver(from, bytes, &inbox);
            }
        });
        Ok(link)
    }

    fn roll(&self) -> (bool, bool, u64, u64) {
        let mut d = self.dice.lock().unwrap_or_else(|p| p.into_inner());
        let f = d.faults;
        let lost = d.chance(f.loss);
        let dup = d.chance(f.duplicate);
        (lost, dup, d.jitter(), d.jitter())
    }

    fn deliver(&self, from: SocketAddr, bytes: Vec<u8>, inbox: &mpsc::UnboundedSender<Arrival>) {
        let (lost, dup, delay, dup_delay) = self.roll();
        if lost {
            self.trace.log(
                &self.who,
                format_args!("net drops {} from {from}", first_line(&bytes)),
            );
            return;
        }
        let copies = if dup {
            vec![(delay, false), (dup_delay, true)]
        } else {
            vec![(delay, false)]
        };
        for (delay, duplicate) in copies {
            let arrival = Arrival {
                from,
                bytes: bytes.clone(),
                duplicate,
            };
            if duplicate {
                self.trace.log(
                    &self.who,
                    format_args!("net duplicates {} from {from}", first_line(&bytes)),
                );
            }
            if delay == 0 {
                let _ = inbox.send(arrival);
            } else {
                let inbox = inbox.clone();
                tokio::task::spawn(async move {
                    madsim::time::sleep(Duration::from_millis(delay)).await;
                    let _ = inbox.send(arrival);
                });
            }
        }
    }

    /// Sends `bytes` to `to` through the outbound faults.
    pub fn send(&self, to: SocketAddr, bytes: Vec<u8>) {
        let (lost, dup, delay, dup_delay) = self.roll();
        if lost {
            self.trace.log(
                &self.who,
                format_args!("net drops {} to {to}", first_line(&bytes)),
            );
            return;
        }
        let copies = if dup { 2 } else { 1 };
        for (i, delay) in [delay, dup_delay].into_iter().take(copies).enumerate() {
            if i == 1 {
                self.trace.log(
                    &self.who,
                    format_args!("net duplicates {} to {to}", first_line(&bytes)),
                );
            }
            let socket = self.socket.clone();
            let bytes = bytes.clone();
            tokio::task::spawn(async move {
                if delay > 0 {
                    madsim::time::sleep(Duration::from_millis(delay)).await;
                }
                let _ = socket.send_to(to, &bytes).await;
            });
        }
    }
}

/// The start line of a SIP message, for trace lines.
pub fn first_line(bytes: &[u8]) -> String {
    let end = bytes
        .iter()
        .position(|b| *b == b'\r' || *b == b'\n')
        .unwrap_or(bytes.len());
    String::from_utf8_lossy(bytes.get(..end).unwrap_or_default()).into_owned()
}
