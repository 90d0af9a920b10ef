//! The invariants checked at the end of a run over what the user agents saw and what
//! the store holds.

use super::*;

/// The invariants over what the user agents saw and what the store holds.
/// `finals`: every INVITE that got a provisional response must have got a final one
/// (false when nodes are killed: their transactions die with them).
pub(super) async fn check(
    trace: &Trace,
    ledger: &Ledger,
    server: &StoreServer,
    finals: bool,
    t: u64,
) {
    {
        let l = ledger.lock();
        let end = sim_ms();
        for (since, what) in l.proceeding.values() {
            if finals && since + t < end {
                trace.violation("check", what);
            }
        }
        for (token, call) in &l.calls {
            if call.caller.answered {
                if !call.caller.ended {
                    trace.violation(
                        "check",
                        format_args!("{token}: answered, but the caller's leg never ended"),
                    );
                }
                if !call.callees.iter().any(|c| c.answered) {
                    trace.violation(
                        "check",
                        format_args!("{token}: the caller got a 2xx no callee sent"),
                    );
                }
            }
            for (i, leg) in call.callees.iter().enumerate() {
                if leg.answered && !leg.ended {
                    trace.violation(
                        "check",
                        format_args!("{token}: callee leg {i} ({}) answered, never ended", leg.ua),
                    );
                }
            }
        }
    }
    match server
        .data
        .scan(drongo_core::store::CALL_PREFIX, usize::MAX, now_ms())
        .await
    {
        Ok(left) if !left.is_empty() => {
            let keys: Vec<&str> = left.iter().map(|r| r.key.as_str()).collect();
            trace.violation(
                "check",
                format_args!("dialog state left in the store: {}", keys.join(" ")),
            );
        }
        Ok(_) => {}
        Err(e) => trace.violation("check", format_args!("store scan failed: {e}")),
    }
    trace.log("check", "done");
}
