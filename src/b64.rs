//! Base64 on the hot paths (process output, `fs/readFile`, `fs/writeFile`): the `base64-simd`
//! crate, AVX2/SSE4.1 picked at run time, several times the scalar `base64` crate (which was a
//! third of the server's CPU time while streaming output, by `perf`). Same alphabet and the
//! same strictness as `base64`'s STANDARD engine (padding required, a non-canonical last symbol
//! refused; the tests below hold them to it); a refusal is described by the `base64` crate,
//! whose message names the offending offset.

use base64::Engine as _;

/// Appends the base64 of `data` to `out`.
pub fn encode_append(data: &[u8], out: &mut String) {
    base64_simd::STANDARD.encode_append(data, out);
}

/// The base64 of `data`.
pub fn encode(data: &[u8]) -> String {
    base64_simd::STANDARD.encode_to_string(data)
}

/// Checks that `text` is strict, padded base64, without decoding it.
pub fn check(text: &[u8]) -> Result<(), base64::DecodeError> {
    match base64_simd::STANDARD.check(text) {
        Ok(()) => Ok(()),
        Err(_) => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(drop),
    }
}

/// Decodes `text`, which [`check`] accepted, a piece at a time: `each` gets the bytes of up to
/// `piece` base64 symbols (rounded down to whole quads) from a buffer reused throughout, so a
/// large payload needs no buffer of its size.
pub fn decode_in_pieces<E>(
    text: &[u8],
    piece: usize,
    mut each: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    let piece = (piece / 4).max(1) * 4;
    let mut buf = vec![0u8; piece / 4 * 3];
    for quads in text.chunks(piece) {
        let out = base64_simd::Out::from_slice(&mut buf[..]);
        // Whole quads of checked base64, padding only in the last: always decodes.
        let data = base64_simd::STANDARD
            .decode(quads, out)
            .expect("checked base64 decodes");
        each(data)?;
    }
    Ok(())
}

/// Decodes strict, padded base64.
pub fn decode(text: &[u8]) -> Result<Vec<u8>, base64::DecodeError> {
    match base64_simd::STANDARD.decode_to_vec(text) {
        Ok(data) => Ok(data),
        // Only the description comes from here: both refuse the same inputs.
        Err(_) => base64::engine::general_purpose::STANDARD.decode(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(text: &[u8]) -> Result<Vec<u8>, base64::DecodeError> {
        base64::engine::general_purpose::STANDARD.decode(text)
    }

    #[test]
    fn decode_accepts_and_refuses_what_the_base64_crate_does() {
        let cases: &[&str] = &[
            "",
            "QQ==",
            "QR==",
            "QQ=",
            "QQ",
            "Q===",
            "QUJD",
            "QUJ=",
            "QUI=",
            "QUJ",
            "QU I=",
            "QUI=\n",
            "====",
            "QUJDRA==QUJD",
            "QUJD\r\n",
            "-_==",
            "QUJDRA",
            "QUJDRA=",
            "Q",
            "QUJDRA==\0",
            "////",
            "+/+/",
        ];
        for case in cases {
            let ours = decode(case.as_bytes());
            let theirs = scalar(case.as_bytes());
            assert_eq!(ours, theirs, "{case:?}");
        }
        // Every length around the SIMD block sizes, every byte value, with one symbol broken.
        let data: Vec<u8> = (0..300u32).map(|i| (i * 97 % 256) as u8).collect();
        for len in 0..data.len() {
            let text = base64::engine::general_purpose::STANDARD.encode(&data[..len]);
            assert_eq!(decode(text.as_bytes()).unwrap(), &data[..len]);
            assert_eq!(encode(&data[..len]), text);
            if !text.is_empty() {
                let mut broken = text.clone().into_bytes();
                let at = len * 7 % broken.len();
                broken[at] = b'*';
                assert!(decode(&broken).is_err(), "len {len}");
            }
        }
    }

    #[test]
    fn decode_in_pieces_joins_to_the_whole_at_every_piece_size() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 31 % 256) as u8).collect();
        for len in [0, 1, 2, 3, 4, 5, 299, 300, 301, 1000] {
            let text = encode(&data[..len]);
            check(text.as_bytes()).unwrap();
            for piece in [1, 4, 7, 8, 400, 4000] {
                let mut joined = Vec::new();
                decode_in_pieces::<()>(text.as_bytes(), piece, |d| {
                    joined.extend_from_slice(d);
                    Ok(())
                })
                .unwrap();
                assert_eq!(joined, &data[..len], "len {len}, piece {piece}");
            }
        }
        assert!(check(b"QR==").is_err());
        assert!(check(b"QUJD\n").is_err());
    }

    #[test]
    fn encode_append_keeps_what_was_there() {
        let mut out = String::from("x");
        encode_append(b"hello", &mut out);
        assert_eq!(out, "xaGVsbG8=");
    }
}
