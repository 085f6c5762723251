//! Time-based one-time passwords (RFC 6238, HMAC-SHA1, 30 s steps, 6 digits), the flavour that
//! TrueNAS two-factor authentication uses.

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Length of one time step in seconds.
pub const STEP_SECONDS: u64 = 30;
/// Number of digits in a code.
pub const DIGITS: u32 = 6;

/// The code for the time step that contains `unix_seconds`.
pub fn code_at(secret: &[u8], unix_seconds: u64, digits: u32) -> String {
    hotp(secret, unix_seconds / STEP_SECONDS, digits)
}

/// Whether `code` matches the current step or one of the `window` steps before or after it.
pub fn verify(secret: &[u8], code: &str, unix_seconds: u64, window: u64) -> bool {
    let step = unix_seconds / STEP_SECONDS;
    let first = step.saturating_sub(window);
    (first..=step + window)
        .any(|s| constant_time_eq(hotp(secret, s, DIGITS).as_bytes(), code.as_bytes()))
}

/// HOTP (RFC 4226) for one counter value.
fn hotp(secret: &[u8], counter: u64, digits: u32) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[19] & 0x0f);
    let binary = u32::from_be_bytes([
        digest[offset] & 0x7f,
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    let code = binary % 10u32.pow(digits);
    format!("{code:0width$}", width = digits as usize)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Decodes an RFC 4648 base32 secret, the form TrueNAS shows in provisioning URIs. Padding,
/// spaces and letter case are ignored.
pub fn decode_base32(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    for c in text.chars().filter(|c| !c.is_whitespace() && *c != '=') {
        let value = match c.to_ascii_uppercase() {
            c @ 'A'..='Z' => c as u32 - 'A' as u32,
            c @ '2'..='7' => c as u32 - '2' as u32 + 26,
            _ => return None,
        };
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6238 appendix B, SHA-1 rows.
    const RFC_SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn rfc6238_vectors_eight_digits() {
        assert_eq!(code_at(RFC_SECRET, 59, 8), "94287082");
        assert_eq!(code_at(RFC_SECRET, 1_111_111_109, 8), "07081804");
        assert_eq!(code_at(RFC_SECRET, 1_111_111_111, 8), "14050471");
        assert_eq!(code_at(RFC_SECRET, 1_234_567_890, 8), "89005924");
        assert_eq!(code_at(RFC_SECRET, 2_000_000_000, 8), "69279037");
        assert_eq!(code_at(RFC_SECRET, 20_000_000_000, 8), "65353130");
    }

    #[test]
    fn six_digit_codes_are_the_low_digits() {
        assert_eq!(code_at(RFC_SECRET, 59, 6), "287082");
        assert_eq!(code_at(RFC_SECRET, 1_111_111_109, 6), "081804");
    }

    #[test]
    fn verify_accepts_neighbouring_steps_only_within_window() {
        let now = 1_111_111_109;
        let previous = code_at(RFC_SECRET, now - 30, 6);
        assert!(verify(RFC_SECRET, &previous, now, 1));
        assert!(!verify(RFC_SECRET, &previous, now, 0));
        assert!(!verify(RFC_SECRET, "000000", now, 1) || code_at(RFC_SECRET, now, 6) == "000000");
        assert!(!verify(RFC_SECRET, "12345", now, 1));
    }

    #[test]
    fn base32_round_trip_of_rfc_secret() {
        // "12345678901234567890" in base32.
        let decoded = decode_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").expect("valid base32");
        assert_eq!(decoded, RFC_SECRET);
        assert_eq!(
            decode_base32("gezd gnbv gy3t qojq gezd gnbv gy3t qojq"),
            Some(RFC_SECRET.to_vec())
        );
        assert_eq!(decode_base32("GEZ1"), None);
    }
}
