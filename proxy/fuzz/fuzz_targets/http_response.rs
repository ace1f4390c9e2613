//! Any bytes: no panic; a parsed head lies within the input and parsing
//! exactly the head agrees with parsing the whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy::http::{Limits, Method, parse_response};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, data)) = data.split_first() else {
        return;
    };
    let method = match pick % 4 {
        0 => Method::Get,
        1 => Method::Head,
        2 => Method::Connect,
        _ => Method::Post,
    };
    let limits = Limits::default();
    let whole = parse_response(data, method, &limits);
    if let Ok(Some(head)) = &whole {
        assert!(head.head_len <= data.len());
        assert!((100..1000).contains(&head.status));
        assert!(head.reason.end <= head.head_len);
        for h in &head.headers {
            assert!(h.name.end <= head.head_len && h.value.end <= head.head_len);
        }
        assert_eq!(
            parse_response(&data[..head.head_len], method, &limits),
            whole
        );
        assert_eq!(
            parse_response(&data[..head.head_len - 1], method, &limits),
            Ok(None)
        );
    }
});
