//! Any bytes: no panic; a parsed head lies within the input, and parsing
//! exactly the head, or any shorter prefix, agrees with parsing the whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy::http::{Limits, parse_request};

fuzz_target!(|data: &[u8]| {
    for limits in [
        Limits::default(),
        Limits {
            max_head_len: 128,
            max_headers: 4,
        },
    ] {
        let whole = parse_request(data, &limits);
        if let Ok(Some(head)) = &whole {
            assert!(head.head_len <= data.len() && head.head_len <= limits.max_head_len);
            assert!(head.headers.len() <= limits.max_headers);
            for h in &head.headers {
                assert!(h.name.end <= head.head_len && h.value.end <= head.head_len);
                assert!(h.name.start < h.name.end && h.value.start <= h.value.end);
            }
            assert!(head.method.end <= head.target.start && head.target.end <= head.head_len);
            assert_eq!(parse_request(&data[..head.head_len], &limits), whole);
            if head.head_len > 0 {
                assert_eq!(parse_request(&data[..head.head_len - 1], &limits), Ok(None));
            }
        }
    }
});
