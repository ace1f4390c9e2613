//! The chunked framer: where bodies end, whatever way the bytes arrive.

use proxy::chunked::{ChunkedDecoder, ChunkedError, MAX_SIZE_LINE, MAX_TRAILERS};

/// Feeds `raw` whole, split at every boundary, and byte by byte; all three
/// must agree. Returns how many bytes the body took (`None`: not done).
fn frame(raw: &[u8]) -> Result<Option<usize>, ChunkedError> {
    let whole = feed_parts(raw, &[raw.len()]);
    for cut in 0..=raw.len() {
        assert_eq!(feed_parts(raw, &[cut, raw.len()]), whole, "split at {cut}");
    }
    let every: Vec<usize> = (1..=raw.len()).collect();
    assert_eq!(feed_parts(raw, &every), whole, "byte by byte");
    whole
}

/// Feeds `raw[prev..cut]` for each cut in turn, as a proxy forwards reads.
fn feed_parts(raw: &[u8], cuts: &[usize]) -> Result<Option<usize>, ChunkedError> {
    let mut d = ChunkedDecoder::new();
    let mut prev = 0;
    let mut used = 0;
    for &cut in cuts {
        let p = d.feed(&raw[prev..cut])?;
        used += p.consumed;
        if p.done {
            assert!(d.is_done());
            assert_eq!(d.body_len(), used as u64);
            return Ok(Some(used));
        }
        assert_eq!(p.consumed, cut - prev, "consumes everything until done");
        prev = cut;
    }
    Ok(None)
}

fn done(raw: &[u8]) -> usize {
    match frame(raw) {
        Ok(Some(n)) => n,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(raw)),
    }
}

fn bad(raw: &[u8]) -> ChunkedError {
    match frame(raw) {
        Err(e) => e,
        other => panic!("{:?} accepted: {other:?}", String::from_utf8_lossy(raw)),
    }
}

#[test]
fn bodies_end_where_they_should() {
    assert_eq!(done(b"0\r\n\r\n"), 5);
    assert_eq!(done(b"0\r\n\r\nGET / HTTP/1.1\r\n"), 5);
    let body = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    assert_eq!(done(body), body.len());
    // Hex of any case, leading zeros.
    let body = b"A\r\n0123456789\r\n00a\r\n0123456789\r\n000\r\n\r\nX";
    assert_eq!(done(body), body.len() - 1);
    // Extensions, with and without values, with whitespace before ';'.
    let body = b"3;name=value;flag\r\nabc\r\n3 ;q=\"quoted; \\\" x\"\r\nabc\r\n0;last\r\n\r\n";
    assert_eq!(done(body), body.len());
    // Trailers.
    let body = b"3\r\nabc\r\n0\r\nChecksum: abc\r\nX-Other:\r\n\r\nNEXT";
    assert_eq!(done(body), body.len() - 4);
    // Data may hold CRLFs and anything else.
    let body = b"4\r\n\r\n\r\n\r\n0\r\n\r\n";
    assert_eq!(done(body), body.len());
}

#[test]
fn incomplete_bodies_need_more() {
    for raw in [
        &b""[..],
        b"5",
        b"5\r\nhel",
        b"5\r\nhello\r\n",
        b"0\r\n",
        b"0\r\nX: y\r\n",
        b"0\r\n\r",
    ] {
        assert_eq!(frame(raw), Ok(None), "{:?}", String::from_utf8_lossy(raw));
    }
}

#[test]
fn malformed_bodies() {
    for raw in [
        &b"\r\n"[..],
        b"x\r\n",
        b"-1\r\n",
        b"+1\r\n",
        b"0x5\r\nhello\r\n",
        b"5\nhello\r\n",
        b"5\r\rhello\r\n",
        b"5 \r\nhello\r\n",
        b"5\r\nhelloX\r\n",
        b"5\r\nhello\n0\r\n\r\n",
        b"5;a\nb\r\n",
        b"5;\x00\r\n",
        b"0\r\nX: a\nY: b\r\n\r\n",
        b"0\r\n X: folded\r\n\r\n",
        b"0\r\nNo colon\r\n\r\n",
        b"0\r\nX: a\x01\r\n\r\n",
        b"0\r\n\r\r",
        b"0\r\n\n",
        b"10000000000000000\r\n",
        b"fffffffffffffffff\r\n",
    ] {
        bad(raw);
    }
    // The largest size is accepted (and its data awaited).
    assert_eq!(frame(b"ffffffffffffffff\r\nabc"), Ok(None));
    // Leading zeros do not count towards overflow.
    let zeros = b"00000000000000000000001\r\nx\r\n0\r\n\r\n";
    assert_eq!(frame(zeros), Ok(Some(zeros.len())));
}

#[test]
fn errors_stick() {
    let mut d = ChunkedDecoder::new();
    let e = d.feed(b"5\r\nhello\r\nz").expect_err("z is not hex");
    assert_eq!(e.at, 10);
    assert_eq!(d.feed(b"0\r\n\r\n"), Err(e));
    assert_eq!(d.feed(b""), Err(e));
}

#[test]
fn done_stays_done() {
    let mut d = ChunkedDecoder::new();
    let p = d.feed(b"0\r\n\r\nmore").expect("valid");
    assert_eq!((p.consumed, p.done), (5, true));
    let p = d.feed(b"more").expect("done stays done");
    assert_eq!((p.consumed, p.done), (0, true));
}

#[test]
fn bounded_lines() {
    let mut line = b"1;".to_vec();
    line.resize(MAX_SIZE_LINE, b'a');
    line.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
    let mut d = ChunkedDecoder::new();
    assert!(d.feed(&line).expect("at the limit").done);

    let mut line = b"1;".to_vec();
    line.resize(MAX_SIZE_LINE + 1, b'a');
    let mut d = ChunkedDecoder::new();
    d.feed(&line).expect_err("over the limit");

    // Zeros alone cannot keep the framer busy forever either.
    let mut d = ChunkedDecoder::new();
    d.feed(&vec![b'0'; MAX_SIZE_LINE + 1])
        .expect_err("over the limit");

    let mut trailers = b"0\r\n".to_vec();
    while trailers.len() < MAX_TRAILERS + 3 {
        trailers.extend_from_slice(b"X-Trailer: aaaaaaaaaaaa\r\n");
    }
    trailers.extend_from_slice(b"\r\n");
    let mut d = ChunkedDecoder::new();
    d.feed(&trailers).expect_err("trailers over the limit");
}

#[test]
fn large_chunks_are_counted_not_stored() {
    let mut d = ChunkedDecoder::new();
    d.feed(b"100000\r\n").expect("valid size");
    let data = vec![0u8; 0x1000];
    for _ in 0..0x100 {
        let p = d.feed(&data).expect("data");
        assert_eq!((p.consumed, p.done), (data.len(), false));
    }
    let p = d.feed(b"\r\n0\r\n\r\n").expect("end");
    assert!(p.done);
    assert_eq!(d.body_len(), 8 + 0x100000 + 7);
}
