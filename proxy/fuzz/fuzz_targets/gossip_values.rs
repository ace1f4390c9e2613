//! The model's gossip parsers: a site key's value and a beat, both from
//! peers. Neither panics on any input; a beat that parses encodes back to
//! a value that parses to the same beat.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (key, value) = text.split_once('\n').unwrap_or(("site:blog", text));
    let _ = model::site::parse_site_key(key, value);
    if let Some(beat) = model::lease::parse_beat(value) {
        let again = model::lease::encode_beat(&beat);
        assert_eq!(model::lease::parse_beat(&again), Some(beat));
    }
});
