//! The customer storefront InterServer's own web client walks through after ordering: the
//! cart (what is still due), paying from account credit ("prepay"), the account and its
//! billing address, the countries list, a domain name's availability and price, and the
//! login page's public settings. The dialect only renders these.

use lodge_store::DAY_US;
use std::collections::BTreeMap;

use lodge_core::{DomainName, InvoiceStatus};
use lodge_store::{account, billing, users};

use crate::auth::Access;
use crate::catalog::Tld;
use crate::countries::COUNTRIES;
use crate::idempotency::{Answer, IdempotencyKey, Keyed};
use crate::model::{HostingRow, InvoiceRow, LineRow, OrgRow, PaymentRow, UserRow};
use crate::registrar::Availability;
use crate::websites::InvoiceRef;
use crate::{Lodge, Result, ServiceError, Validator};

/// One unpaid invoice of the cart, with the website it bills (if it bills one).
#[derive(Debug, Clone)]
pub struct CartLine {
    pub invoice: InvoiceRow,
    /// What is still due on it (total − credit applied − paid).
    pub due_minor: i64,
    pub website: Option<HostingRow>,
    /// Its first line's description.
    pub description: String,
    /// Whole days since it was issued.
    pub days_old: i64,
}

/// The unpaid invoices of an organization and its account credit.
#[derive(Debug, Clone)]
pub struct Cart {
    pub lines: Vec<CartLine>,
    pub credit_balance_minor: i64,
}

/// An invoice with the website it bills and its payments (the invoice list and detail).
#[derive(Debug, Clone)]
pub struct BilledInvoice {
    pub invoice: InvoiceRow,
    pub lines: Vec<LineRow>,
    pub payments: Vec<PaymentRow>,
    pub website: Option<HostingRow>,
}

/// How paying from account credit went: the invoices the credit covered were paid in full,
/// in the order named; the others are still due.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PrepayOutcome {
    pub paid: Vec<i64>,
    pub paid_minor: i64,
    /// Named, unpaid and not covered by the credit.
    pub left: Vec<i64>,
    pub left_minor: i64,
}

/// The customer's account: the caller and its organization (whose address is the billing
/// address).
#[derive(Debug, Clone)]
pub struct Account {
    pub user: UserRow,
    pub organization: OrgRow,
}

/// A change of the account as InterServer's client posts it; `None` leaves a field as it
/// is (an empty string is refused for the required ones).
#[derive(Debug, Clone, Default)]
pub struct AccountChange {
    pub name: Option<String>,
    pub company: Option<String>,
    pub address: Option<String>,
    pub address2: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub zip: Option<String>,
    pub country: Option<String>,
    pub phone: Option<String>,
    /// Only the installation's currency is accepted (one currency per installation).
    pub currency: Option<String>,
    /// The account's e-mail address, which is not changed here: sent as it is, it changes
    /// nothing; another is refused (found by the support-desk audit: it was ignored and the
    /// answer said "Account updated.").
    pub email: Option<String>,
}

impl AccountChange {
    fn is_empty(&self) -> bool {
        [
            &self.name,
            &self.company,
            &self.address,
            &self.address2,
            &self.city,
            &self.state,
            &self.zip,
            &self.country,
            &self.phone,
            &self.currency,
        ]
        .iter()
        .all(|f| f.is_none())
    }
}

/// What a domain lookup found.
#[derive(Debug, Clone)]
pub struct DomainLookup {
    pub name: DomainName,
    /// Can be registered here now.
    pub available: bool,
    /// The caller's organization hosts a website of this name.
    pub website: bool,
    /// The caller's organization holds this domain.
    pub domain_service: bool,
    /// The extension's one-year prices, when it is sold here.
    pub tld: Option<Tld>,
}

/// The login page's public numbers.
#[derive(Debug, Clone, Copy)]
pub struct LoginCounts {
    pub websites: i64,
}

/// A country by its ISO 3166-1 alpha-2 code (any case).
pub fn country(
    code: &str,
) -> Option<&'static (&'static str, &'static str, &'static str, &'static str)> {
    COUNTRIES
        .iter()
        .find(|c| c.0.eq_ignore_ascii_case(code.trim()))
}

/// A phone number as InterServer keeps it: parentheses, dashes, underscores, dots and
/// spaces removed; `None` unless what is left is 4 to 20 digits, with an optional leading
/// `+`.
pub fn normalize_phone(raw: &str) -> Option<String> {
    let kept: String = raw
        .chars()
        .filter(|c| !matches!(c, '(' | ')' | '-' | '_' | '.' | ' '))
        .collect();
    let digits = kept.strip_prefix('+').unwrap_or(&kept);
    let ok = (4..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
    ok.then_some(kept)
}

/// Rows grouped by invoice, in their order.
fn by_invoice<T>(rows: Vec<T>, invoice: impl Fn(&T) -> i64) -> BTreeMap<i64, Vec<T>> {
    let mut out: BTreeMap<i64, Vec<T>> = BTreeMap::new();
    for r in rows {
        out.entry(invoice(&r)).or_default().push(r);
    }
    out
}

/// A field as sent, trimmed (`None`: not sent).
fn trimmed(f: &Option<String>) -> Option<&str> {
    f.as_deref().map(str::trim)
}

/// What an invoice bills, in words: its first line's description, or each line's in turn
/// for an invoice billing several services (a renewal of all an organization's services
/// due the same day: the first line's alone beside the whole invoice's amount read as that
/// service's price; found by the billing audit for the invoices, and by the populated
/// responses audit for the cart). `None` without lines.
pub fn invoice_description(lines: &[LineRow]) -> Option<String> {
    let services: std::collections::BTreeSet<&str> = lines
        .iter()
        .filter_map(|l| l.service_id.as_deref())
        .collect();
    if services.len() > 1 {
        return Some(
            lines
                .iter()
                .map(|l| l.description.as_str())
                .filter(|d| !d.is_empty())
                .collect::<Vec<_>>()
                .join("; "),
        );
    }
    lines.first().map(|l| l.description.clone())
}

/// The website an invoice bills: the first of its lines naming one of `websites`.
fn website_of(lines: &[LineRow], websites: &BTreeMap<String, HostingRow>) -> Option<HostingRow> {
    lines
        .iter()
        .filter_map(|l| l.service_id.as_ref())
        .find_map(|s| websites.get(s))
        .cloned()
}

impl Lodge {
    /// The organization's websites by hosting id.
    async fn websites_by_id(&self, access: &Access) -> Result<BTreeMap<String, HostingRow>> {
        Ok(self
            .websites(access)
            .await?
            .into_iter()
            .map(|h| (h.id.to_string(), h))
            .collect())
    }

    /// The cart: every unpaid invoice with something still due, oldest first, with the
    /// website it bills, and the account credit. `max_days_old` keeps only invoices issued
    /// that many days ago or later.
    pub async fn cart(&self, access: &Access, max_days_old: Option<i64>) -> Result<Cart> {
        let org = self.organization(access).await?;
        // The unpaid ones only (found by the big-database audit: the cart read every
        // invoice the organization ever had, 12 s for 150,000).
        let invoices = billing::unpaid_invoices(self.store.reader(), access.organization).await?;
        let websites = self.websites_by_id(access).await?;
        let mut all_lines = by_invoice(
            account::org_invoice_lines(self.store.reader(), access.organization, true).await?,
            |l| l.invoice_id,
        );
        let now = self.now_us();
        let mut lines = vec![];
        for invoice in invoices {
            let due_minor = invoice.amount_due();
            if invoice.status != InvoiceStatus::Unpaid || due_minor <= 0 {
                continue;
            }
            let days_old = (now - invoice.issued_at).max(0) / DAY_US;
            if max_days_old.is_some_and(|d| d >= 0 && days_old > d) {
                continue;
            }
            let invoice_lines = all_lines.remove(&invoice.id).unwrap_or_default();
            lines.push(CartLine {
                website: website_of(&invoice_lines, &websites),
                description: invoice_description(&invoice_lines).unwrap_or_default(),
                due_minor,
                days_old,
                invoice,
            });
        }
        lines.sort_by_key(|l| l.invoice.id);
        Ok(Cart {
            lines,
            credit_balance_minor: org.credit_balance_minor,
        })
    }

    /// The organization's invoices, newest first, each with its lines, payments and the
    /// website it bills.
    pub async fn billed_invoices(&self, access: &Access) -> Result<Vec<BilledInvoice>> {
        let (invoices, _) =
            billing::invoices_page(self.store.reader(), access.organization, None, i64::MAX, 0)
                .await?;
        let websites = self.websites_by_id(access).await?;
        let reader = self.store.reader();
        let mut lines = by_invoice(
            account::org_invoice_lines(reader, access.organization, false).await?,
            |l| l.invoice_id,
        );
        let mut payments = by_invoice(
            account::org_payments(reader, access.organization).await?,
            |p| p.invoice_id,
        );
        Ok(invoices
            .into_iter()
            .map(|invoice| {
                let lines = lines.remove(&invoice.id).unwrap_or_default();
                BilledInvoice {
                    website: website_of(&lines, &websites),
                    payments: payments.remove(&invoice.id).unwrap_or_default(),
                    lines,
                    invoice,
                }
            })
            .collect())
    }

    /// One invoice of the caller's organization (`NotFound` for anyone else's).
    pub async fn billed_invoice(&self, access: &Access, id: i64) -> Result<BilledInvoice> {
        let invoice = billing::invoice(&mut self.store.read_conn().await?, id)
            .await?
            .filter(|i| i.organization_id == access.organization)
            .ok_or(ServiceError::NotFound)?;
        let websites = self.websites_by_id(access).await?;
        self.billed(invoice, &websites).await
    }

    async fn billed(
        &self,
        invoice: InvoiceRow,
        websites: &BTreeMap<String, HostingRow>,
    ) -> Result<BilledInvoice> {
        let lines = billing::lines(self.store.reader(), invoice.id).await?;
        let payments = billing::payments(self.store.reader(), invoice.id).await?;
        Ok(BilledInvoice {
            website: website_of(&lines, websites),
            invoice,
            lines,
            payments,
        })
    }

    /// Pays from account credit the named invoices it covers, each in full, in the order
    /// named (an invoice the remaining credit does not cover is skipped and stays due; no
    /// invoice is paid in part). Paying goes through the one exactly-once path
    /// ([`Lodge::pay_from_credit`]): a retry finds them paid and pays nothing twice.
    /// `NotFound` for an invoice or website of another organization; `Conflict` when
    /// nothing named is due or the credit covers none of it. Under an `Idempotency-Key` the
    /// payment and its outcome commit together, and a retry is answered that outcome.
    pub async fn pay_from_prepay(
        &self,
        access: &Access,
        refs: &[InvoiceRef],
        actor: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<Answer<PrepayOutcome>> {
        access.require_write()?;
        self.keyed(key, || async {
            let (invoices, mut credit) = self.named_invoices_and_credit(access, refs).await?;
            let due: Vec<&InvoiceRow> = invoices
                .iter()
                .filter(|i| i.status == InvoiceStatus::Unpaid && i.amount_due() > 0)
                .collect();
            if due.is_empty() {
                return Err(ServiceError::Conflict(
                    "Nothing is due on these invoices.".into(),
                ));
            }
            let mut out = PrepayOutcome {
                paid: vec![],
                paid_minor: 0,
                left: vec![],
                left_minor: 0,
            };
            for i in due {
                let amount = i.amount_due();
                if amount <= credit {
                    credit -= amount;
                    out.paid.push(i.id);
                    out.paid_minor += amount;
                } else {
                    out.left.push(i.id);
                    out.left_minor += amount;
                }
            }
            if out.paid.is_empty() {
                return Err(ServiceError::InsufficientCredit(
                    "Your account credit does not cover these invoices.".into(),
                ));
            }
            // Under the organization's lock the balance and each invoice are read again: a
            // payment or order that raced this one makes it a 409, never an overdraft.
            let keyed = key.map(|k| Keyed::new(k, &out)).transpose()?;
            self.pay_from_credit_keyed(&out.paid, actor, keyed).await?;
            Ok(out)
        })
        .await
    }

    /// The caller's account.
    pub async fn customer_account(&self, access: &Access) -> Result<Account> {
        let user = users::by_id(self.store.reader(), access.principal().user)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let organization = self.organization(access).await?;
        Ok(Account { user, organization })
    }

    /// Changes the account: the caller's name and the organization's billing address. Every
    /// field error is reported at once; nothing changes unless all are right. Under an
    /// `Idempotency-Key` the change and its stored outcome commit together (a retry is
    /// answered it; the same key with another change is `KeyReused`).
    pub async fn update_account(
        &self,
        access: &Access,
        c: &AccountChange,
        key: Option<&IdempotencyKey>,
    ) -> Result<Answer<()>> {
        access.require_owner()?; // billing details: the owner's (editors order, not bill)
        self.keyed(key, || self.update_account_once(access, c, key))
            .await
    }

    async fn update_account_once(
        &self,
        access: &Access,
        c: &AccountChange,
        key: Option<&IdempotencyKey>,
    ) -> Result<()> {
        let mut v = Validator::new();
        if c.is_empty() {
            v.add("non_field_errors", "Nothing to change.");
        }
        for (field, value, required, max) in [
            ("name", trimmed(&c.name), true, 100),
            ("company", trimmed(&c.company), false, 100),
            ("address", trimmed(&c.address), true, 200),
            ("address2", trimmed(&c.address2), false, 200),
            ("city", trimmed(&c.city), true, 100),
            ("state", trimmed(&c.state), true, 100),
            ("zip", trimmed(&c.zip), true, 20),
        ] {
            match value {
                Some("") if required => v.add(field, "This field cannot be empty."),
                Some(s) => v.line(field, s, max),
                None => {}
            }
        }
        let country_code = match trimmed(&c.country) {
            None => None,
            Some(code) => match country(code) {
                Some(found) => Some(found.0),
                None => {
                    v.add("country", "Not an ISO 3166-1 alpha-2 country code.");
                    None
                }
            },
        };
        let phone = match trimmed(&c.phone) {
            None => None,
            Some(p) => {
                let n = normalize_phone(p);
                if n.is_none() {
                    v.add("phone", "Not a phone number.");
                }
                n
            }
        };
        if let Some(email) = trimmed(&c.email) {
            let user = users::by_id(self.store.reader(), access.principal().user)
                .await?
                .ok_or(ServiceError::NotFound)?;
            if !email.eq_ignore_ascii_case(&user.email) {
                v.add(
                    "email",
                    "The account's e-mail address cannot be changed here (invoices and notices \
                     go to it): ask the hosting provider's staff.",
                );
            }
        }
        if let Some(cur) = trimmed(&c.currency) {
            if !cur.eq_ignore_ascii_case(self.settings.currency.code()) {
                v.add(
                    "currency",
                    format!("Only {} is offered here.", self.settings.currency.code()),
                );
            }
        }
        v.finish()?;
        let now = self.now_us();
        let mut tx = self.store.begin().await?;
        if let Some(key) = key {
            // The organization, then the key (the money paths' lock order).
            billing::lock_credit(&mut tx, access.organization).await?;
            self.claim_key_in(&mut tx, key).await?;
        }
        let change = account::AddressChange {
            company_name: trimmed(&c.company),
            address_1: trimmed(&c.address),
            address_2: trimmed(&c.address2),
            city: trimmed(&c.city),
            state: trimmed(&c.state),
            postcode: trimmed(&c.zip),
            country: country_code,
            phone: phone.as_deref(),
        };
        if !account::update_address(&mut *tx, access.organization, &change, now).await? {
            return Err(ServiceError::NotFound);
        }
        if let Some(name) = trimmed(&c.name) {
            account::set_user_name(&mut *tx, access.principal().user, name, now).await?;
        }
        if let Some(key) = key {
            self.answer_key_in(&mut tx, key, &()).await?;
        }
        tx.commit().await.map_err(lodge_store::StoreError::from)?;
        Ok(())
    }

    /// Whether `name` can be registered here and what it costs. `Invalid` for a name that
    /// is not one. Not available when its extension is not sold or closed to registration,
    /// when any organization hosts or holds it in Lodge, when no registrar is configured,
    /// or when the registrar says so (a registrar that cannot tell leaves it available: the
    /// order proceeds and staff check, as orders do). `website` and `domain_service` say
    /// whether the caller's organization (if any) already has it. The one place a lookup's
    /// availability is decided.
    pub async fn domain_lookup(&self, access: Option<&Access>, name: &str) -> Result<DomainLookup> {
        let name = DomainName::parse(name.trim())
            .map_err(|_| ServiceError::field("domain_name", "Invalid Domain"))?;
        let catalog = self.catalog().await?;
        // Only `<label>.<extension>` of an extension sold here.
        let tld = crate::orders::validate::tld_for(&catalog, &name).cloned();
        let (held, website, domain_service) = {
            let mut db = self.store.read_conn().await?;
            let held = lodge_store::hosting::live_domain_for_name(&mut db, name.as_str()).await?
                || lodge_store::hosting::live_hosting_for_name(&mut db, name.as_str()).await?;
            match access {
                Some(a) => (
                    held,
                    account::org_hosts_name(&mut db, a.organization, name.as_str()).await?,
                    account::org_holds_domain(&mut db, a.organization, name.as_str()).await?,
                ),
                None => (held, false, false),
            }
        };
        // A name registries refuse (an emoji, reserved hyphens) is never available.
        let sellable = name.registration_problem().is_none()
            && tld
                .as_ref()
                .is_some_and(|t| t.row.register_open == 1 && t.price_for_years(1).is_some());
        let available = match &self.registrar {
            Some(r) if sellable && !held => match r.check(&name).await {
                Ok(Availability::Unavailable) => false,
                Ok(Availability::Available | Availability::Unknown) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "registrar availability check failed");
                    return Err(ServiceError::Unavailable(
                        crate::registrar::CHECK_UNAVAILABLE.into(),
                    ));
                }
            },
            _ => false,
        };
        Ok(DomainLookup {
            name,
            available,
            website,
            domain_service,
            tld,
        })
    }

    /// The login page's public numbers: hosting accounts ever ordered.
    pub async fn login_counts(&self) -> Result<LoginCounts> {
        let mut db = self.store.read_conn().await?;
        Ok(LoginCounts {
            websites: account::hosting_count(&mut db).await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_are_normalized_or_refused() {
        for (raw, kept) in [
            ("+44 (20) 7946-0958", Some("+442079460958")),
            ("867_5309", Some("8675309")),
            ("555.123.4567", Some("5551234567")),
            ("123", None),
            ("call me", None),
            ("", None),
            ("++1234567", None),
            ("123456789012345678901", None),
        ] {
            assert_eq!(normalize_phone(raw).as_deref(), kept, "{raw:?}");
        }
    }

    #[test]
    fn countries_are_iso_3166_alpha_2_in_any_case() {
        assert_eq!(country("us").map(|c| c.3), Some("United States"));
        assert_eq!(country(" GB ").map(|c| c.1), Some("GBR"));
        assert!(country("XX").is_none());
        assert!(country("").is_none());
        assert!(COUNTRIES.len() >= 240);
        let codes: std::collections::BTreeSet<&str> = COUNTRIES.iter().map(|c| c.0).collect();
        assert_eq!(codes.len(), COUNTRIES.len(), "each code once");
    }
}
