//! Secrets at rest (EPP codes, generated hosting passwords, server credentials) are sealed
//! with AES-256-GCM under a key from configuration.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine as _;
use rand::RngCore;

use crate::payment_tokens::PaymentTokens;
use crate::{Result, ServiceError};

/// Seals and opens secrets. The key never leaves this type (its Debug hides it).
#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
    /// Base of the keys [`Sealer::derive_key`] gives (a hash of the key, not the key).
    derive_base: [u8; 32],
    /// Derives the payment page's tokens (under a key derived from this one).
    payment_tokens: PaymentTokens,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Self {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(b"lodge key derivation\0");
        h.update(key);
        let mut sealer = Sealer {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key)),
            derive_base: h.finalize().into(),
            payment_tokens: PaymentTokens::new([0; 32]),
        };
        sealer.payment_tokens = PaymentTokens::new(sealer.derive_key("lodge payment tokens"));
        sealer
    }

    /// The payment page's tokens, derived under a key of their own
    /// ([`crate::payment_tokens`]).
    pub fn payment_tokens(&self) -> &PaymentTokens {
        &self.payment_tokens
    }

    /// A key for one `purpose` (e.g. signing the payment page's forms), derived from the
    /// sealing key: the same on every node sharing the key, useless for opening secrets.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        use hmac::Mac as _;
        let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&self.derive_base)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Parses a 64-hex-digit key.
    pub fn from_hex(hex_key: &str) -> Result<Self> {
        // A setting's error, not Lodge's own (it read "internal: …"; found by the operator
        // audit).
        let bad = || {
            ServiceError::Conflict(
                "the secret key must be 64 hex digits (32 bytes), e.g. `openssl rand -hex 32`"
                    .into(),
            )
        };
        let bytes = hex::decode(hex_key.trim()).map_err(|_| bad())?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
        Ok(Self::new(&key))
    }

    /// `v1.<nonce>.<ciphertext>`, base64.
    pub fn seal(&self, plaintext: &str) -> Result<String> {
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext.as_bytes())
            .map_err(|_| ServiceError::Internal("sealing failed".into()))?;
        Ok(format!("v1.{}.{}", B64.encode(nonce), B64.encode(ct)))
    }

    /// Whether `stored` has [`Sealer::seal`]'s form (a value written in the clear before its
    /// column was sealed, a URL say, does not).
    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with("v1.")
    }

    pub fn open(&self, sealed: &str) -> Result<String> {
        let bad =
            || ServiceError::Internal("a sealed secret could not be opened (wrong key?)".into());
        let mut parts = sealed.split('.');
        if parts.next() != Some("v1") {
            return Err(bad());
        }
        let nonce = parts
            .next()
            .and_then(|n| B64.decode(n).ok())
            .ok_or_else(bad)?;
        let ct = parts
            .next()
            .and_then(|c| B64.decode(c).ok())
            .ok_or_else(bad)?;
        if nonce.len() != 12 {
            return Err(bad());
        }
        let pt = self
            .cipher
            .decrypt(Nonce::from_slice(&nonce), ct.as_ref())
            .map_err(|_| bad())?;
        String::from_utf8(pt).map_err(|_| bad())
    }
}

/// The text the key check seals.
const KEY_CHECK: &str = "lodge installation key check";

impl crate::Lodge {
    /// Refuses to start selling in another currency than the one the database's invoices
    /// and credit are in (found by the operator audit: `currency` changed after going live
    /// showed a EUR balance as USD and paid a USD invoice from it one for one). Lodge sells
    /// in one currency per installation.
    ///
    /// `catalog`: the prices of what the catalog sells too (found by the operator audit: a
    /// catalog imported by a command run with `LODGE_CURRENCY=EUR` was listed and invoiced
    /// as USD by a node left at the default, its EUR figures taken for dollars). Not for
    /// `catalog import` and `catalog export`: the import replaces the prices of every plan
    /// and TLD its file lists (or deactivates them), the way out.
    pub async fn check_currency(&self, catalog: bool) -> Result<()> {
        let configured = self.settings.currency.code();
        let mut conn = self.store.read_conn().await?;
        let in_use = lodge_store::billing::currencies_in_use(&mut conn).await?;
        // A code that is no currency (`UDS` for `USD`) is refused before anything is sold
        // in it, since it cannot be changed afterwards (found by the staff audit); an
        // installation that already sells in it keeps starting.
        if !self.settings.currency.is_iso_4217() && !in_use.iter().any(|u| u == configured) {
            return Err(ServiceError::Conflict(format!(
                "the currency {configured} (--currency, LODGE_CURRENCY, currency) is not an \
                 ISO 4217 currency code (e.g. USD, EUR, GBP)"
            )));
        }
        for used in in_use {
            if used != configured {
                return Err(ServiceError::Conflict(format!(
                    "the currency is {configured} (--currency, LODGE_CURRENCY, currency), but \
                     this database's invoices and credit are in {used}: an installation sells \
                     in one currency; set it back to {used}"
                )));
            }
        }
        if catalog {
            let others = lodge_store::catalog::priced_otherwise(&mut conn, configured, 20).await?;
            if !others.is_empty() {
                let listed: Vec<String> = others
                    .iter()
                    .map(|(what, used)| format!("{what} in {used}"))
                    .collect();
                return Err(ServiceError::Conflict(format!(
                    "the currency is {configured} (--currency, LODGE_CURRENCY, currency), but \
                     the catalog sells {}{} at prices in another currency: an installation \
                     sells in one. Import them again priced in {configured}, or with \
                     is_active = false (`lodge catalog import` runs all the same; every plan \
                     and TLD its file lists gets the file's prices), or set the currency the \
                     catalog was priced in",
                    listed.join(", "),
                    if others.len() == 20 { ", …" } else { "" }
                )));
            }
        }
        Ok(())
    }

    /// Organizations made before the installation's currency was set take it, when a node
    /// starts (after [`Lodge::check_currency`] let it), as long as nothing was sold in
    /// another currency: their credit was shown in the currency recorded with them (found
    /// by the currencies audit: 5000 JPY of credit listed as "50.00" on an organization
    /// `lodge orgs create` made first). Commands never write it (found by review: one run
    /// without the setting turned them all back).
    pub async fn adopt_currency(&self) -> Result<()> {
        let configured = self.settings.currency.code();
        if !lodge_store::orgs::any_in_other_currency(&mut self.store.read_conn().await?, configured)
            .await?
        {
            return Ok(());
        }
        let mut tx = self.store.begin().await?;
        let adopted = lodge_store::orgs::adopt_currency(&mut tx, configured).await?;
        tx.commit().await.map_err(lodge_store::StoreError::from)?;
        if adopted > 0 {
            tracing::info!(
                organizations = adopted,
                currency = configured,
                "organizations made before the installation's currency was set take it"
            );
        }
        Ok(())
    }

    /// Checks that this node's secret key is the installation's: it opens the value the
    /// first node sealed in the database (written now if none is there; on a database from
    /// before the check, a secret already sealed there must open first). A node with
    /// another key would answer 404 to the other nodes' payment links, make links they
    /// cannot open, and fail every job touching a sealed secret, so it is refused at start
    /// (found by the multi-node audit: it started without a word).
    ///
    /// `fresh`: the key was made just now (no key given, no key file): on a database that
    /// already holds invoices it is refused rather than written as the installation's (a
    /// command run without the key must not lock the nodes that have it out).
    ///
    /// `node`: a node (`serve`, `worker`) or the demo's seeding, which seal and sign with
    /// their key from now on: on PostgreSQL even a key made just now becomes the
    /// installation's, so that a second node with a key of its own is refused at start (found
    /// by the PostgreSQL audit: two nodes started in two directories ran with two keys,
    /// and the first secret either sealed locked the other out at its next start).
    pub async fn check_secret_key(&self, fresh: bool, node: bool) -> Result<()> {
        use lodge_store::key_check;
        let wrong = || {
            ServiceError::Conflict(
                "the secret key (LODGE_SECRET_KEY, or the lodge-secret.key file: beside a \
                 SQLite database, in the working directory with PostgreSQL) is not this installation's: it does not open the secrets sealed in \
                 the database. Give every node the key the database was first opened with"
                    .into(),
            )
        };
        let db = self.store.reader();
        let sealed = match key_check::sealed(db).await? {
            Some(s) => s,
            None => {
                if let Some(old) = key_check::some_sealed_secret(db).await? {
                    if self.sealer.open(&old).is_err() {
                        return Err(wrong());
                    }
                } else if fresh && key_check::has_invoices(db).await? {
                    return Err(ServiceError::Conflict(
                        "no secret key was given (LODGE_SECRET_KEY, or the lodge-secret.key \
                         file: beside a SQLite database, in the working directory with \
                         PostgreSQL) and a new one was just made, but this database already \
                         holds invoices whose payment links come from the key it was used with: \
                         give that key"
                            .into(),
                    ));
                }
                // A key file made just now in the working directory for a PostgreSQL
                // database by a command (`migrate`, `keys`, … run without the
                // installation's key) does not become the installation's: the first node,
                // or command with a given key, writes it.
                if fresh && !node && self.store.engine() == lodge_store::Engine::Postgres {
                    return Ok(());
                }
                let now = self.clock.now().as_microsecond();
                key_check::insert(self.store.writer(), &self.sealer.seal(KEY_CHECK)?, now).await?;
                key_check::sealed(db)
                    .await?
                    .ok_or_else(|| ServiceError::Internal("the key check was not written".into()))?
            }
        };
        match self.sealer.open(&sealed) {
            Ok(text) if text == KEY_CHECK => Ok(()),
            _ => Err(wrong()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let s = Sealer::new(&[7u8; 32]);
        let sealed = s.seal("epp-code-123").unwrap();
        assert!(!sealed.contains("epp-code"));
        assert_eq!(s.open(&sealed).unwrap(), "epp-code-123");
        assert_ne!(
            s.seal("x").unwrap(),
            s.seal("x").unwrap(),
            "fresh nonce each time"
        );
        let other = Sealer::new(&[8u8; 32]);
        assert!(other.open(&sealed).is_err());
        let mut tampered = sealed.clone();
        tampered.pop();
        assert!(s.open(&tampered).is_err());
    }
}
