//! The payment page's tokens (`/pay/{token}`), kept out of the database.
//!
//! A token is derived, not stored: `token = t ‖ base32(HMAC-SHA256(k, "payment-token:" ‖
//! salt))[..32]`, where `salt` is the invoice's `payment_token_salt` (its 11 leading
//! characters `t` the moment it was made in base 36, then 128 random bits in hex; stored,
//! not a secret) and `k` a key derived from the node's secret key
//! ([`crate::crypto::Sealer::derive_key`]; the same on every node sharing
//! `LODGE_SECRET_KEY`). Lodge can so show the link again wherever it shows it (order
//! answers, invoices, mails, the `/apiv2` pay redirect) from the invoice row, while the
//! database holds only the salt and the token's digest ([`digest`]), which the page looks up:
//! a copy of the database opens no payment page.
//!
//! A token is 43 lowercase letters and digits (the form tokens had before), 160 bits of
//! it from the HMAC. It starts with the time it was made, as before, and so does its
//! digest: the unique index on digests grows at its end, as an order's other indexes do,
//! instead of at a random leaf page per order. That an invoice was issued at that moment is
//! no secret of its payer's (the row says so anyway).
//!
//! Invoices issued before tokens were stored as digests (migration 0023) are converted when
//! a node opens the database ([`Lodge::convert_payment_tokens`]): each is given a salt, and
//! its old token's digest is kept as `legacy_token_digest`, so a link sent before the
//! upgrade still opens its page.

use hmac::Mac as _;
use rand::RngCore as _;
use sha2::Digest as _;

use lodge_store::billing::{self, InvoiceRow, PaymentTokenKey};
use lodge_store::StoreError;

use crate::{Lodge, Result};

/// How many leading characters of a token (and of its salt) tell when it was made.
const TIME_DIGITS: usize = 11;

/// Derives payment tokens from invoices' salts. The key never leaves this type (its Debug
/// hides it).
#[derive(Clone)]
pub struct PaymentTokens {
    key: [u8; 32],
}

impl std::fmt::Debug for PaymentTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PaymentTokens(..)")
    }
}

/// A new invoice's token: what is stored of it (salt, digest) and the token to show.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub salt: String,
    pub digest: String,
    pub token: String,
}

impl NewToken {
    /// What the invoice row stores.
    pub fn key(&self) -> PaymentTokenKey<'_> {
        PaymentTokenKey {
            salt: &self.salt,
            digest: &self.digest,
        }
    }
}

impl PaymentTokens {
    /// Tokens under `key` (derived from the node's secret key for this purpose only).
    pub fn new(key: [u8; 32]) -> Self {
        PaymentTokens { key }
    }

    /// A fresh token for an invoice issued at `now_us`.
    pub fn issue(&self, now_us: i64) -> NewToken {
        let salt = new_salt(now_us);
        let token = self.token(&salt);
        NewToken {
            digest: digest(&token),
            salt,
            token,
        }
    }

    /// The token of the invoice whose salt is `salt`.
    pub fn token(&self, salt: &str) -> String {
        let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"payment-token:");
        mac.update(salt.as_bytes());
        let tag: [u8; 32] = mac.finalize().into_bytes().into();
        let mut token = time_part(salt).to_owned();
        token.push_str(&base32(tag.get(..20).unwrap_or(tag.as_slice())));
        token
    }

    /// The token of `invoice` (the payment page's path is `/pay/{token}`).
    pub fn of(&self, invoice: &InvoiceRow) -> String {
        self.token(&invoice.payment_token_salt)
    }
}

/// Whether `token` could be a payment token at all (20 to 100 printable ASCII characters;
/// Lodge's are 43, a link from before migration 0023 carries its old form): anything else
/// is no invoice's, and is answered so before anything is looked up or counted.
pub fn plausible(token: &str) -> bool {
    (20..=100).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_graphic())
}

/// What the database holds of a token to find its invoice: its leading time digits (when
/// they are letters and digits) and the hex SHA-256 of the whole token. Not reversible;
/// the token has 160 bits besides its time.
pub fn digest(token: &str) -> String {
    let mut out = time_part(token).to_owned();
    out.push_str(&hex::encode(sha2::Sha256::digest(token.as_bytes())));
    out
}

/// The leading time digits of a token or salt: its first [`TIME_DIGITS`] characters when
/// they are ASCII letters and digits, else nothing.
fn time_part(s: &str) -> &str {
    s.get(..TIME_DIGITS)
        .filter(|t| t.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or("")
}

/// A salt for an invoice issued at `now_us`: the moment in microseconds, 11 base-36
/// digits (so tokens sort in the order they were made, on SQLite's byte order and
/// PostgreSQL's collations alike), then 128 random bits in hex.
fn new_salt(now_us: i64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut t = u64::try_from(now_us).unwrap_or(0);
    let mut time = [b'0'; TIME_DIGITS];
    for d in time.iter_mut().rev() {
        // t % 36 < 36, DIGITS's length.
        *d = DIGITS.get((t % 36) as usize).copied().unwrap_or(b'0');
        t /= 36;
    }
    let mut salt: String = time.iter().map(|&b| char::from(b)).collect();
    let mut random = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut random);
    salt.push_str(&hex::encode(random));
    salt
}

/// `bytes` in base 32 with the digits and the letters `a`–`v` (a subset of a token's
/// time digits), five bits a digit, the last one padded with zero bits.
fn base32(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    let digit = |d: u32| char::from(DIGITS.get(d as usize & 31).copied().unwrap_or(b'0'));
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(digit(acc >> bits));
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(digit(acc << (5 - bits)));
    }
    out
}

/// How many rows the conversion reads at a time (all in one transaction).
const CONVERT_CHUNK: i64 = 1000;

impl Lodge {
    /// The payment token of `invoice` (the payment page is `/pay/{token}`).
    pub fn payment_token(&self, invoice: &InvoiceRow) -> String {
        self.sealer.payment_tokens().of(invoice)
    }

    /// Converts the invoices issued before payment tokens were stored as digests (migration
    /// 0023): in one transaction, each is given a salt and the digest of its new token, and
    /// keeps its old token's digest as `legacy_token_digest` (a link sent before the upgrade
    /// still opens its page); the plaintext is gone from the row. The outcomes stored under
    /// an `Idempotency-Key` that held such a token hold its invoice's salt instead. Run when
    /// a node opens the database; on a converted database it reads one empty index. Safe on
    /// several nodes at once (a row is converted only while it has no salt). Returns how
    /// many invoices it converted.
    pub async fn convert_payment_tokens(&self) -> Result<usize> {
        let tokens = self.sealer.payment_tokens();
        let mut tx = self.store.begin().await?;
        let mut converted = 0;
        loop {
            let rows = billing::plaintext_payment_tokens(&mut tx, CONVERT_CHUNK).await?;
            if rows.is_empty() {
                break;
            }
            for (id, old) in rows {
                // A fresh salt: the old token's time digits are not reused, so the new
                // token's digest sorts by when it was converted (a digest is unique).
                let new = tokens.issue(self.now_us());
                if billing::convert_payment_token(&mut tx, id, &new.key(), &digest(&old)).await? {
                    converted += 1;
                }
            }
        }
        if converted > 0 {
            let rewritten = self.convert_stored_outcomes(&mut tx).await?;
            tracing::info!(
                invoices = converted,
                stored_outcomes = rewritten,
                "payment tokens converted to digests (once)"
            );
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(converted)
    }

    /// The outcomes stored under an `Idempotency-Key` by a build that stored the payment
    /// token in them (a day's worth at most): the token is replaced by its invoice's salt
    /// (`payment_token_salt`, from which a replay derives the token again), or dropped when
    /// no invoice has it any more.
    async fn convert_stored_outcomes(&self, tx: &mut lodge_store::Tx) -> Result<usize> {
        let mut rewritten = 0;
        for (scope, key, body) in
            lodge_store::idempotency::responses_like(&mut *tx, "%\"payment_token\":\"%").await?
        {
            let Ok(serde_json::Value::Object(mut outcome)) =
                serde_json::from_str::<serde_json::Value>(&body)
            else {
                continue;
            };
            let Some(serde_json::Value::String(old)) = outcome.remove("payment_token") else {
                continue;
            };
            let salt = billing::invoice_by_token_digest(&mut **tx, &digest(&old))
                .await?
                .map(|i| i.payment_token_salt);
            outcome.insert("payment_token_salt".into(), salt.into());
            let body = serde_json::Value::Object(outcome).to_string();
            lodge_store::idempotency::replace_response(&mut *tx, &scope, &key, &body).await?;
            rewritten += 1;
        }
        Ok(rewritten)
    }
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    reason = "tokens are 43 ASCII characters, asserted first"
)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tokens() -> PaymentTokens {
        PaymentTokens::new([7; 32])
    }

    proptest! {
        /// A token made later sorts after one made earlier (byte order, as SQLite's index
        /// and PostgreSQL's collations order letters and digits of one case), and so does
        /// its digest.
        #[test]
        fn payment_tokens_sort_by_the_time_they_were_made(a in 0i64..4_000_000_000_000_000, b in 0i64..4_000_000_000_000_000) {
            let (ta, tb) = (tokens().issue(a), tokens().issue(b));
            prop_assert_eq!(ta.token.len(), 43);
            prop_assert!(ta.token.bytes().all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()));
            if a < b {
                prop_assert!(ta.token < tb.token, "{} !< {}", ta.token, tb.token);
                prop_assert!(ta.digest < tb.digest);
            }
            prop_assert_eq!(ta.token[..11] == tb.token[..11], a == b);
        }
    }

    #[test]
    fn a_token_is_derived_from_its_salt_under_the_key_and_stored_as_a_digest() {
        let now = 1_795_000_000_000_000;
        let a = tokens().issue(now);
        let b = tokens().issue(now);
        assert_eq!(a.token[..11], b.token[..11]);
        assert_ne!(a.token, b.token, "a fresh salt each time");
        assert_eq!(
            tokens().token(&a.salt),
            a.token,
            "derived again from the salt"
        );
        assert_ne!(
            PaymentTokens::new([8; 32]).token(&a.salt),
            a.token,
            "another key derives another token"
        );
        assert_eq!(digest(&a.token), a.digest);
        assert_eq!(a.digest.len(), 11 + 64);
        assert!(!a.digest.contains(&a.token[11..]));
        assert!(!a.salt.contains(&a.token[11..]));
        assert_eq!(&tokens().issue(0).token[..11], "00000000000");
        // A token too short, or not of letters and digits, has no time part.
        assert_eq!(digest("short").len(), 64);
        assert_eq!(digest("ééééééééééé-").len(), 64);
    }

    #[test]
    fn base32_takes_five_bits_a_digit() {
        assert_eq!(base32(&[0; 5]), "00000000");
        assert_eq!(base32(&[0xff; 5]), "vvvvvvvv");
        assert_eq!(base32(&[0x80]), "g0");
        assert_eq!(base32(&[0; 20]).len(), 32);
    }
}
