//! BER-TLV as PIV cards use it: one-byte tags (two for `5F xx` and `7F xx`), definite lengths.

/// Splits `data` into (tag, value) pairs; stops at the first malformed one.
pub fn items(mut data: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while let Some((tag, value, rest)) = one(data) {
        out.push((tag, value));
        data = rest;
    }
    out
}

/// The value of the first item tagged `tag` at the top level of `data`.
pub fn find(data: &[u8], tag: u16) -> Option<&[u8]> {
    items(data)
        .into_iter()
        .find(|(t, _)| *t == tag)
        .map(|(_, v)| v)
}

fn one(data: &[u8]) -> Option<(u16, &[u8], &[u8])> {
    let (&first, rest) = data.split_first()?;
    let (tag, rest) = if first & 0x1F == 0x1F {
        let (&second, rest) = rest.split_first()?;
        (u16::from_be_bytes([first, second]), rest)
    } else {
        (u16::from(first), rest)
    };
    let (&len, rest) = rest.split_first()?;
    let (len, rest) = match len {
        0x81 => (usize::from(*rest.first()?), rest.get(1..)?),
        0x82 => (
            usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?])),
            rest.get(2..)?,
        ),
        n if n < 0x80 => (usize::from(n), rest),
        _ => return None,
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// `tag` (one byte) and `value` with a definite length.
pub fn encode(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match value.len() {
        n if n < 0x80 => out.push(n as u8),
        n if n <= 0xFF => out.extend_from_slice(&[0x81, n as u8]),
        n => {
            out.push(0x82);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_short_and_long_lengths() {
        let long = vec![1u8; 300];
        let data = [encode(0x70, &long), encode(0x71, &[0])].concat();
        assert_eq!(find(&data, 0x70), Some(&long[..]));
        assert_eq!(find(&data, 0x71), Some(&[0u8][..]));
        assert_eq!(find(&[0x5F, 0xC1, 1, 9], 0x5FC1), Some(&[9u8][..]));
        assert_eq!(items(&[0x70, 5, 1]), vec![]);
    }
}
