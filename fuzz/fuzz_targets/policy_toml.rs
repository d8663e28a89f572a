//! Policy TOML parsing: `policy::Policy::from_toml`.
//!
//! Input: the TOML text (invalid UTF-8 is replaced, so every input reaches the parser).
//! Never panics; a policy that parses has a `to_toml()` form that parses back to an equal
//! policy, and survives the codec round trip.
#![no_main]

use anchorage_fuzz::check_policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match policy::Policy::from_toml(&text) {
        Ok(p) => check_policy(&p),
        Err(e) => drop(e.to_string()),
    }
});
