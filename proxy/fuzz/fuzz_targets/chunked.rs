//! Any bytes, fed whole or in pieces: no panic, and the same answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy::chunked::ChunkedDecoder;

/// Feeds `data` in pieces ending at `cuts`; the body's length if it ended.
fn run(data: &[u8], cuts: &[usize]) -> Result<Option<usize>, ()> {
    let mut d = ChunkedDecoder::new();
    let mut prev = 0;
    let mut used = 0;
    for &cut in cuts {
        let p = d.feed(&data[prev..cut]).map_err(drop)?;
        assert!(p.consumed <= cut - prev);
        used += p.consumed;
        if p.done {
            assert!(d.is_done());
            return Ok(Some(used));
        }
        assert_eq!(p.consumed, cut - prev);
        prev = cut;
    }
    Ok(None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let whole = run(data, &[data.len()]);
    let cut = usize::from(split).min(data.len());
    assert_eq!(run(data, &[cut, data.len()]), whole);
    let step = usize::from(split % 7) + 1;
    let cuts: Vec<usize> = (step..data.len())
        .step_by(step)
        .chain([data.len()])
        .collect();
    assert_eq!(run(data, &cuts), whole);
});
