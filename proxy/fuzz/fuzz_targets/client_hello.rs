//! Any bytes: no panic; a parsed hello lies within the input, and parsing
//! exactly its records, or one byte less, agrees with parsing the whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy::tls::{DEFAULT_MAX_HELLO_LEN, parse_client_hello};

fuzz_target!(|data: &[u8]| {
    for max in [DEFAULT_MAX_HELLO_LEN, 200] {
        let whole = parse_client_hello(data, max);
        if let Ok(Some(hello)) = &whole {
            assert!(hello.len <= data.len() && hello.len <= max);
            assert_eq!(parse_client_hello(&data[..hello.len], max), whole);
            assert_eq!(parse_client_hello(&data[..hello.len - 1], max), Ok(None));
        }
    }
});
