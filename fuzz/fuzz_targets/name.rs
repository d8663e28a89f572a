//! Name parsing: `Name::parse`, `Name::from_key`, `Name::from_dns`.
//!
//! Input: one mode byte (modulo 3), then the text or key.
//! - 0: `Name::parse(text)`
//! - 1: `Name::from_key(bytes)`
//! - 2: `Name::from_dns(fqdn, zone)` with the input split at its first `\n` into zone and fqdn
//!
//! Never panics, and every name that parses satisfies the name rules (`docs/design.md`,
//! "Names") and round-trips through display → parse, key → from_key, DNS form → from_dns and
//! the codec.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::limits::{LABEL_BYTES_MAX, NAME_BYTES_MAX, NAME_LABELS_MAX};
use proto::Name;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let text = String::from_utf8_lossy(rest);
            match Name::parse(&text) {
                Ok(n) => {
                    assert_eq!(
                        n.to_string(),
                        text.to_ascii_lowercase(),
                        "parse of {text:?}"
                    );
                    check_name(&n);
                }
                Err(e) => drop(e.to_string()),
            }
        }
        1 => match Name::from_key(rest) {
            Ok(n) => {
                assert_eq!(n.key(), rest.to_ascii_lowercase(), "from_key of {rest:?}");
                check_name(&n);
            }
            Err(e) => drop(e.to_string()),
        },
        _ => {
            let text = String::from_utf8_lossy(rest);
            let (zone, fqdn) = text.split_once('\n').unwrap_or(("anchorage.test", &text));
            match Name::from_dns(fqdn, zone) {
                Ok(n) => {
                    let back = Name::from_dns(&n.to_dns(zone), zone);
                    assert_eq!(back.as_ref(), Ok(&n), "to_dns/from_dns under zone {zone:?}");
                    check_name(&n);
                }
                Err(e) => drop(e.to_string()),
            }
        }
    }
});

/// The name rules and every round trip a valid name must survive.
fn check_name(n: &Name) {
    let text = n.to_string();
    assert!(text.len() <= NAME_BYTES_MAX, "{text:?} is too long");
    assert!(n.depth() <= NAME_LABELS_MAX, "{text:?} has too many labels");
    for label in n.labels() {
        assert!(
            (1..=LABEL_BYTES_MAX).contains(&label.len()),
            "label {label:?}"
        );
        assert!(
            label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'),
            "label {label:?} has a byte outside [a-z0-9_-]"
        );
    }
    assert_eq!(Name::parse(&text).as_ref(), Ok(n), "display → parse");
    assert_eq!(Name::from_key(&n.key()).as_ref(), Ok(n), "key → from_key");
    assert_eq!(Name::from_labels(n.labels()).as_ref(), Ok(n), "from_labels");
    let zone = "anchorage.test";
    assert_eq!(
        Name::from_dns(&n.to_dns(zone), zone).as_ref(),
        Ok(n),
        "DNS form"
    );
    let bytes = proto::codec::encode(n).expect("a name encodes");
    let back: Name = proto::codec::decode(&bytes, bytes.len()).expect("an encoded name decodes");
    assert_eq!(&back, n, "codec round trip");
    if let Some(parent) = n.parent() {
        assert!(n.is_under(&parent) && !parent.is_under(n));
        assert!(parent < *n && parent.key() < n.key());
        let last = n.labels().last().expect("a non-root name has a label");
        assert_eq!(parent.child(last).as_ref(), Ok(n), "parent/child");
    } else {
        assert!(n.is_root() && text == "/");
    }
}
