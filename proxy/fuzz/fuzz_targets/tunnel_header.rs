//! Any bytes: no panic; a decoded header encodes back to the bytes it took
//! (when the sender added no later-revision bytes), and every prefix of an
//! accepted header asks for more.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy::tunnel::TunnelHeader;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((h, used))) = TunnelHeader::decode(data) {
        assert!(used <= data.len());
        let wire = h.encode().expect("a decoded header encodes");
        if wire.len() == used {
            assert_eq!(&wire[..], &data[..used]);
        }
        assert_eq!(TunnelHeader::decode(&wire), Ok(Some((h, wire.len()))));
        for cut in 0..used.min(8) {
            assert_eq!(TunnelHeader::decode(&data[..cut]), Ok(None));
        }
    }
});
