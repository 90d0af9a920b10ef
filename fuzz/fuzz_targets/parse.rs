//! Bytes → message. Never panics; an accepted message serializes and re-parses to the
//! same message, and serializing that gives the same bytes.
#![no_main]

use drongo_core::message::{
    error_response_from_raw, parse_datagram, validate, Limits,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    match parse_datagram(data, &limits) {
        Ok(msg) => {
            let verdict = validate(&msg, &limits);
            let wire = msg.to_bytes();
            let again = parse_datagram(&wire, &limits).expect("our own output must parse");
            assert_eq!(msg, again);
            assert_eq!(again.to_bytes(), wire);
            assert_eq!(validate(&again, &limits), verdict);
            if let Err(rej) = verdict {
                let _ = error_response_from_raw(data, &rej, "t");
            }
        }
        Err(rej) => {
            let _ = error_response_from_raw(data, &rej, "t");
        }
    }
});
