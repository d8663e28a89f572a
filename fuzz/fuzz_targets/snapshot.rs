//! The anchor's snapshot parser, `anchor::raft::sm::parse_snapshot`.
//!
//! Input: one mode byte, then data. Mode bit 0 clear: the data is parsed as it is (digest
//! and all), which checks that a wrong digest or short input is refused without a panic.
//! Mode bit 0 set: the data is the body and the harness prepends its correct blake3 digest,
//! so the fuzzer reaches the length-prefixed key/value parsing behind the digest check.
//!
//! Never panics, and whatever parses re-encodes to exactly the bytes it came from (the
//! format is canonical).
#![no_main]

use anchor::raft::sm::parse_snapshot;
use anchorage_fuzz::{encode_snapshot, with_digest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let owned;
    let snapshot = if mode & 1 == 1 {
        owned = with_digest(rest);
        &owned[..]
    } else {
        rest
    };
    match parse_snapshot(snapshot) {
        Ok(kvs) => assert_eq!(
            encode_snapshot(&kvs),
            snapshot,
            "parsed snapshot does not re-encode to its input"
        ),
        Err(e) => drop(e),
    }
});
