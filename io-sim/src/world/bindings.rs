//! The store's view of registrations while a run goes on: a binding past its expiry must
//! be gone within one allowance (the leader's watchdog removes it at its expiry; after a
//! leader's death the next one is elected within about two lease TTLs and removes what
//! expired meanwhile). The store drops a record by itself only when every binding in it
//! expired; a binding that expires beside a live one is the watchdog's alone.

use super::*;
use drongo_core::registrar::AddressOfRecord;
use drongo_core::store::REG_PREFIX;
use std::collections::BTreeSet;

/// How often the store is looked at.
const PERIOD_MS: u64 = 250;

/// Looks at the store's `reg/` records every 250 ms until the run ends; counts the bindings
/// the watchdog had to remove (`Counts::watchdog_due`) and records a violation for each
/// one still stored `allowance_ms` after its expiry.
pub(super) async fn watch(server: StoreServer, trace: Trace, ledger: Ledger, allowance_ms: u64) {
    // Bindings seen about to expire (before the next look) beside one that outlives them,
    // the watchdog's to remove, by (key, Contact, expiry); and those reported late.
    let (mut due, mut late) = (BTreeSet::new(), BTreeSet::new());
    loop {
        madsim::time::sleep(Duration::from_millis(PERIOD_MS)).await;
        let now = now_ms();
        let Ok(records) = server.data.scan(REG_PREFIX, usize::MAX, now).await else {
            continue;
        };
        for r in records {
            let Some(aor) = AddressOfRecord::decode(&r.value) else {
                trace.violation(
                    "check",
                    format_args!("{}: not a registration record", r.key),
                );
                continue;
            };
            let last = aor.bindings.iter().map(|b| b.expires_at).max().unwrap_or(0);
            for b in &aor.bindings {
                let id = (r.key.clone(), b.uri.clone(), b.expires_at);
                let soon = b.expires_at > now && b.expires_at <= now + PERIOD_MS;
                if soon && b.expires_at < last && due.insert(id.clone()) {
                    ledger.lock().counts.watchdog_due += 1;
                }
                if b.expires_at + allowance_ms < now && late.insert(id) {
                    trace.violation(
                        "check",
                        format_args!(
                            "{}: {} expired at {}, still stored at {now}",
                            r.key, b.uri, b.expires_at
                        ),
                    );
                }
            }
        }
    }
}
