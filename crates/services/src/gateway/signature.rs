//! Verifying Stripe's `Stripe-Signature` header ("verify manually",
//! stripe.com/docs/webhooks/signatures): `t=<unix seconds>,v1=<hex>[,v1=<hex>…]`, where each
//! `v1` is HMAC-SHA256, keyed with an endpoint secret, of `"<t>.<raw body>"`. Accepted when a
//! `v1` matches for any configured secret (several during a rotation), compared in constant
//! time, and `t` is within the tolerance of Lodge's clock. `v0` (test mode) is ignored.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// How far a signature's timestamp may be from now, seconds (Stripe's default).
pub const TOLERANCE_SECS: i64 = 300;

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    Missing,
    #[error("the Stripe-Signature header is malformed")]
    Malformed,
    #[error("the Stripe-Signature timestamp is outside the tolerance")]
    Stale,
    #[error("no signature matches")]
    NoMatch,
}

/// Checks `header` over `body` against `secrets` at `now_secs` (unix seconds).
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secrets: &[SecretString],
    now_secs: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp: Option<&str> = None;
    let mut signatures: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else {
            continue;
        };
        match k {
            "t" => timestamp = Some(v),
            "v1" => {
                // A `v1` that is not hex cannot match; others may.
                if let Ok(bytes) = hex::decode(v) {
                    signatures.push(bytes);
                }
            }
            _ => {}
        }
    }
    let t_text = timestamp.ok_or(SignatureError::Malformed)?;
    let t: i64 = t_text.parse().map_err(|_| SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let mut matched = false;
    for secret in secrets {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes()) else {
            continue;
        };
        mac.update(t_text.as_bytes());
        mac.update(b".");
        mac.update(body);
        for sig in &signatures {
            // `verify_slice` compares in constant time.
            if mac.clone().verify_slice(sig).is_ok() {
                matched = true;
            }
        }
    }
    if !matched {
        return Err(SignatureError::NoMatch);
    }
    if now_secs.abs_diff(t) > tolerance_secs.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

/// The header Stripe would send for `body` at `t` with `secret` (for tests and tools).
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let hex = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(t.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    };
    format!("t={t},v1={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"id":"evt_test_webhook","object":"event"}"#;
    const T: i64 = 1_492_774_577;
    // Computed independently (Python's hmac) for BODY at T.
    const SIG_TEST: &str = "88a022085c6bdb887b02cb26ff76dd681234d9675c0f22844059f55552a8883a";
    const SIG_ROTATED: &str = "af524073d451c7d4c88504f67486741f245b4510f893cacc6d6ce40699d5baa2";

    fn secrets(list: &[&str]) -> Vec<SecretString> {
        list.iter().map(|s| SecretString::from(*s)).collect()
    }

    fn check(header: &str, list: &[&str], now: i64) -> Result<(), SignatureError> {
        verify(Some(header), BODY, &secrets(list), now, TOLERANCE_SECS)
    }

    #[test]
    fn a_fixed_vector_verifies() {
        let h = format!("t={T},v1={SIG_TEST}");
        assert_eq!(check(&h, &["whsec_test_secret"], T), Ok(()));
        assert_eq!(check(&h, &["whsec_test_secret"], T + 300), Ok(()));
        assert_eq!(check(&h, &["whsec_test_secret"], T - 300), Ok(()));
        assert_eq!(sign("whsec_test_secret", T, BODY), h);
    }

    #[test]
    fn any_configured_secret_and_any_v1_match() {
        // A rotation: two secrets configured, the header signed with the second.
        let h = format!("t={T},v1={SIG_ROTATED}");
        assert_eq!(
            check(&h, &["whsec_test_secret", "whsec_rotated_secret"], T),
            Ok(())
        );
        // Stripe signs with every live secret: one v1 per secret, v0 ignored.
        let h = format!("t={T},v0=00ff,v1={},v1={SIG_TEST}", "ab".repeat(32));
        assert_eq!(check(&h, &["whsec_test_secret"], T), Ok(()));
    }

    #[test]
    fn stale_forged_and_malformed_are_refused() {
        let h = format!("t={T},v1={SIG_TEST}");
        assert_eq!(
            check(&h, &["whsec_test_secret"], T + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            check(&h, &["whsec_test_secret"], T - 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(check(&h, &["whsec_other"], T), Err(SignatureError::NoMatch));
        assert_eq!(check(&h, &[], T), Err(SignatureError::NoMatch));
        // Another body, or another timestamp, with the same signature.
        assert_eq!(
            verify(
                Some(&h),
                b"{}",
                &secrets(&["whsec_test_secret"]),
                T,
                TOLERANCE_SECS
            ),
            Err(SignatureError::NoMatch)
        );
        let moved = format!("t={},v1={SIG_TEST}", T + 1);
        assert_eq!(
            check(&moved, &["whsec_test_secret"], T),
            Err(SignatureError::NoMatch)
        );
        let short = format!("t={T},v1={}", SIG_TEST.get(..62).unwrap());
        assert_eq!(
            check(&short, &["whsec_test_secret"], T),
            Err(SignatureError::NoMatch)
        );
        for bad in ["", "garbage", "t=abc,v1=00", &format!("t={T}"), "v1=00"] {
            assert_eq!(
                check(bad, &["whsec_test_secret"], T),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            verify(None, BODY, &secrets(&["s"]), T, TOLERANCE_SECS),
            Err(SignatureError::Missing)
        );
    }
}
