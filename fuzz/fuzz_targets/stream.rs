//! Arbitrary chunking of a byte stream gives the same frames as one chunk.
#![no_main]

use drongo_core::message::{Frame, FramingError, StreamFramer};
use libfuzzer_sys::fuzz_target;

fn frames(chunks: &[&[u8]]) -> Vec<Result<Frame, FramingError>> {
    let mut framer = StreamFramer::new(4096);
    let mut out = Vec::new();
    for chunk in chunks {
        framer.push(chunk);
        while let Some(f) = framer.next_frame() {
            let failed = f.is_err();
            out.push(f);
            if failed {
                return out;
            }
        }
    }
    out
}

fuzz_target!(|input: (Vec<u8>, Vec<u8>)| {
    let (stream, cuts) = input;
    let whole = frames(&[&stream]);
    let mut chunks = Vec::new();
    let mut rest: &[u8] = &stream;
    for c in cuts {
        if rest.is_empty() {
            break;
        }
        let n = (c as usize % rest.len()) + 1;
        let (head, tail) = rest.split_at(n);
        chunks.push(head);
        rest = tail;
    }
    chunks.push(rest);
    assert_eq!(frames(&chunks), whole);
});
