//! Websites: hosting as the order form sells it (the model `/apiv2` speaks). A website order
//! is an order in the organization's default project, its cycle given as a period in
//! months; a website is a hosting account found by its legacy id within the caller's
//! organization; cancelling one follows the website rule (a never-paid one at once, a paid
//! one at the end of its period); paying names invoices or websites, and only what is
//! unpaid is paid. The dialect only reads and writes the wire shapes.

use lodge_core::{BillingCycle, RefundTo};
use lodge_store::{billing, hosting, orgs};

use crate::auth::Access;
use crate::catalog::Price;
use crate::hosting::{CancelType, Cancellation};
use crate::idempotency::{Answer, IdempotencyKey, Keyed};
use crate::model::{HostingRow, InvoiceRow, LedgerRow, OrgRow, PaymentRow, ProjectRow};
use crate::orders::{DbChecks, OrderForm, OrderSource, ValidOrder};
use crate::{FieldErrors, Lodge, Result, ServiceError, Validator};
use lodge_store::refunds::RefundRow;

/// A website order as the order form sends it (already read off the wire).
#[derive(Debug, Clone, Default)]
pub struct WebsiteOrder {
    /// The plan's legacy id.
    pub package_id: Option<i64>,
    /// Months of the billing cycle (1 when not given).
    pub period_months: Option<i64>,
    pub hostname: String,
    /// Register the hostname as a new domain; otherwise it is an external one.
    pub register_domain: bool,
    /// An offer's legacy id (`0` or none: no offer).
    pub service_offer_id: Option<i64>,
    pub coupon: String,
    /// The account's password; one is generated when blank.
    pub rootpass: String,
    pub comment: String,
    /// The terms of service were accepted.
    pub tos: bool,
}

/// A website with what its detail shows.
#[derive(Debug, Clone)]
pub struct Website {
    pub hosting: HostingRow,
    /// The invoices of the order that made it, oldest first.
    pub invoices: Vec<InvoiceRow>,
    pub organization: OrgRow,
    /// The server it is on, once placed.
    pub server: Option<lodge_store::servers::ServerRow>,
}

/// An invoice with the money it received and what went back of it.
#[derive(Debug, Clone)]
pub struct SettledInvoice {
    pub invoice: InvoiceRow,
    /// Its ledger entries, oldest first: the credit applied to it (negative `applied`),
    /// what went back to credit (`refund`) and what payments brought beyond it (`deposit`).
    pub ledger: Vec<LedgerRow>,
    /// Payments (card, bank transfer, recorded by staff), oldest first.
    pub payments: Vec<PaymentRow>,
    /// Refunds, oldest first, a refused one (`failed_at`) included.
    pub refunds: Vec<RefundRow>,
}

/// What paid an invoice: account credit applied, or a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaidBy {
    /// Credit applied, by its ledger entry.
    Credit { entry: i64 },
    /// A payment (card, bank transfer, recorded by staff).
    Payment {
        id: String,
        method: String,
        reference: String,
    },
}

/// One way an invoice was paid, with what went back of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoicePayment {
    pub by: PaidBy,
    /// What of it went to this invoice (a payment beyond what was due put the rest on
    /// credit in the same write).
    pub amount_minor: i64,
    pub at: i64,
    pub returned: Vec<Returned>,
}

/// Money that went back of an invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Returned {
    /// The ledger entry (to credit) or the refund (in money).
    pub id: i64,
    pub to_credit: bool,
    pub amount_minor: i64,
    pub at: i64,
}

impl SettledInvoice {
    /// What paid it, in the order it happened (credit applied first among equals), each
    /// with what went back: credit given back (a refund to credit, what a cancelled invoice
    /// returned, which no refund records) under the first credit applied, money refunded
    /// under the first payment (else under the first of either).
    pub fn paid_by(&self) -> Vec<InvoicePayment> {
        let mut paid: Vec<InvoicePayment> = self
            .ledger
            .iter()
            .filter(|c| c.kind == "applied")
            .map(|c| InvoicePayment {
                by: PaidBy::Credit { entry: c.id },
                amount_minor: c.amount_minor.saturating_neg(),
                at: c.created_at,
                returned: vec![],
            })
            .collect();
        for p in &self.payments {
            // What it brought beyond (an overpayment, a payment of an invoice paid or
            // cancelled already) is a `deposit` entry of the same write, the same instant
            // (found by the re-check: a 49.99 payment showed on a 19.99 invoice).
            let to_credit: i64 = self
                .ledger
                .iter()
                .filter(|c| c.kind == "deposit" && c.created_at == p.created_at)
                .map(|c| c.amount_minor)
                .sum();
            let applied = p.amount_minor.saturating_sub(to_credit);
            if applied > 0 {
                paid.push(InvoicePayment {
                    by: PaidBy::Payment {
                        id: p.id.to_string(),
                        method: p.method.clone(),
                        reference: p.reference.clone(),
                    },
                    amount_minor: applied,
                    at: p.created_at,
                    returned: vec![],
                });
            }
        }
        let back = self
            .ledger
            .iter()
            .filter(|c| c.kind == "refund" && c.amount_minor > 0)
            .map(|c| Returned {
                id: c.id,
                to_credit: true,
                amount_minor: c.amount_minor,
                at: c.created_at,
            })
            .chain(
                self.refunds
                    .iter()
                    .filter(|r| r.failed_at.is_none() && r.destination == RefundTo::Cash)
                    .map(|r| Returned {
                        id: r.id,
                        to_credit: false,
                        amount_minor: r.amount_minor,
                        at: r.created_at,
                    }),
            );
        for r in back {
            let under = paid
                .iter()
                .position(|s| matches!(s.by, PaidBy::Credit { .. }) == r.to_credit)
                .unwrap_or(0);
            if let Some(s) = paid.get_mut(under) {
                s.returned.push(r);
            }
        }
        paid
    }
}

/// An invoice named for payment: by its id, or every invoice of a website.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvoiceRef {
    Invoice(i64),
    /// A website's legacy id.
    Website(i64),
}

/// How a payment of invoices went.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Settlement {
    /// Paid in full from account credit.
    PaidFromCredit { invoices: usize },
    /// To be paid on the payment page of this invoice (the first unpaid one). Stored under
    /// an `Idempotency-Key` without its token (the salt derives it again on a replay).
    PayOnPage {
        #[serde(skip_serializing, default)]
        payment_token: String,
        payment_token_salt: String,
        /// The other unpaid invoices asked for, in order: their pages come after this one
        /// (the page links to them), as tokens and the salts that derive them again.
        #[serde(skip_serializing, default)]
        then_tokens: Vec<String>,
        #[serde(default)]
        then_salts: Vec<String>,
    },
}

impl crate::idempotency::StoredOutcome for Settlement {
    fn restore(&mut self, tokens: &crate::payment_tokens::PaymentTokens) {
        if let Settlement::PayOnPage {
            payment_token,
            payment_token_salt,
            then_tokens,
            then_salts,
        } = self
        {
            *payment_token = tokens.token(payment_token_salt);
            *then_tokens = then_salts.iter().map(|s| tokens.token(s)).collect();
        }
    }
}

/// The billing cycle of a website order for a plan with these prices (`None`: no such
/// plan). A plan sold only free or once has no months: its cycle is that (its default
/// price's) whatever the period. Otherwise the period's months (1 when none is given);
/// `None` for a period no cycle has.
pub fn website_cycle(
    plan_prices: Option<&[Price]>,
    period_months: Option<i64>,
) -> Option<BillingCycle> {
    let one_off = plan_prices
        .filter(|p| !p.is_empty() && p.iter().all(|x| !x.cycle.is_recurring()))
        .and_then(|p| p.iter().find(|x| x.is_default).or(p.first()))
        .map(|x| x.cycle);
    one_off.or_else(|| {
        BillingCycle::from_months(u32::try_from(period_months.unwrap_or(1)).unwrap_or(0))
    })
}

/// The cancellation a website gets: a never-paid (pending) one is cancelled at once with
/// its order and invoice, a paid one at the end of its paid period.
pub fn website_cancel_type(h: &HostingRow) -> CancelType {
    if h.status == lodge_core::HostingStatus::Pending {
        CancelType::Immediate
    } else {
        CancelType::EndOfPeriod
    }
}

/// Whether an invoice can still be paid.
fn unpaid(i: &InvoiceRow) -> bool {
    i.status == lodge_core::InvoiceStatus::Unpaid
}

/// Adds `more` to `errors`, after what is there.
fn merge(errors: &mut FieldErrors, more: FieldErrors) {
    for (field, list) in more {
        errors.entry(field).or_default().extend(list);
    }
}

impl Lodge {
    /// The organization's default project, where website orders go.
    pub async fn default_project(&self, access: &Access) -> Result<ProjectRow> {
        orgs::default_project(&mut self.store.read_conn().await?, access.organization)
            .await?
            .ok_or(ServiceError::NotFound)
    }

    /// Validates a website order: the order form's own rules (its period, the terms when
    /// they must be accepted), then everything any order is checked for. Every field error
    /// is reported at once, keyed by `/v1` field names (`billing_cycle`, `tos`, …).
    /// `checks`: when what the database says of it is read ([`DbChecks`]; now all the same
    /// when the form's own rules refuse it).
    pub async fn validate_website_order(
        &self,
        access: &Access,
        o: &WebsiteOrder,
        checks: DbChecks,
    ) -> Result<ValidOrder> {
        let catalog = self.catalog().await?;
        let mut form_rules = Validator::new();
        let prices = o
            .package_id
            .and_then(|id| catalog.plan_by_legacy(id))
            .map(|p| p.prices.as_slice());
        let cycle = website_cycle(prices, o.period_months);
        if cycle.is_none() {
            form_rules.add(
                "billing_cycle",
                "The period must be 1, 3, 6, 12, 24 or 36 months.",
            );
        }
        if self.settings.require_tos && !o.tos {
            form_rules.add_coded(
                "tos",
                crate::FieldCode::Required,
                "You must agree to the terms of service and click the checkbox saying so.",
            );
        }
        let form = OrderForm {
            plan_legacy_id: o.package_id,
            domain_source: Some(
                if o.register_domain {
                    "register"
                } else {
                    "external"
                }
                .into(),
            ),
            domain_name: Some(o.hostname.clone()),
            billing_cycle: cycle.map(|c| c.as_str().to_owned()),
            offer_legacy_id: o.service_offer_id,
            coupon: Some(o.coupon.clone()),
            password: Some(o.rootpass.clone()),
            comment: Some(o.comment.clone()),
            ..Default::default()
        };
        let project = self.default_project(access).await?;
        let checks = checks.now_if(!form_rules.is_empty());
        // InterServer's form shows a refusal beside the fields: a registrar that cannot
        // answer is said there (`continue: false`), as its own form would, not as a 503
        // the page cannot show.
        let validated = self
            .validate_order(access, &project, &form, OrderSource::Apiv2, checks)
            .await
            .map_err(|e| e.unavailable_on("domain_name"));
        match (validated, form_rules.finish()) {
            (Ok(v), Ok(())) => Ok(v),
            (Ok(_), Err(e)) => Err(e),
            (Err(ServiceError::Invalid(more)), rules) => {
                let mut errors = match rules {
                    Err(ServiceError::Invalid(e)) => e,
                    _ => FieldErrors::new(),
                };
                merge(&mut errors, more);
                Err(ServiceError::Invalid(errors))
            }
            (Err(e), _) => Err(e),
        }
    }

    /// The organization's websites, cancelled ones included.
    pub async fn websites(&self, access: &Access) -> Result<Vec<HostingRow>> {
        let (rows, _) =
            hosting::hosting_page(self.store.reader(), access.organization, None, i64::MAX, 0)
                .await?;
        Ok(rows)
    }

    /// A website of the caller's organization by its legacy id (`NotFound` for anyone
    /// else's).
    pub async fn website(&self, access: &Access, legacy_id: i64) -> Result<HostingRow> {
        hosting::hosting_by_legacy(self.store.reader(), access.organization, legacy_id)
            .await?
            .ok_or(ServiceError::NotFound)
    }

    /// The invoices of the order that made a website, oldest first.
    pub async fn website_invoices(
        &self,
        access: &Access,
        legacy_id: i64,
    ) -> Result<Vec<InvoiceRow>> {
        let h = self.website(access, legacy_id).await?;
        Ok(
            lodge_store::renewals::invoices_of_account(self.store.reader(), h.order_id, h.id)
                .await?,
        )
    }

    /// The invoices of a website (as [`Self::website_invoices`]), each with the credit
    /// applied to it, its payments and its refunds.
    pub async fn website_invoices_settled(
        &self,
        access: &Access,
        legacy_id: i64,
    ) -> Result<Vec<SettledInvoice>> {
        let invoices = self.website_invoices(access, legacy_id).await?;
        let mut settled = Vec::with_capacity(invoices.len());
        for invoice in invoices {
            let id = invoice.id;
            settled.push(SettledInvoice {
                ledger: billing::ledger_of_invoice(
                    self.store.reader(),
                    invoice.organization_id,
                    id,
                )
                .await?,
                payments: billing::payments(self.store.reader(), id).await?,
                refunds: lodge_store::refunds::refunds_of_invoice(self.store.reader(), id).await?,
                invoice,
            });
        }
        Ok(settled)
    }

    /// A website with its invoices and organization.
    pub async fn website_detail(&self, access: &Access, legacy_id: i64) -> Result<Website> {
        let hosting = self.website(access, legacy_id).await?;
        let invoices = lodge_store::renewals::invoices_of_account(
            self.store.reader(),
            hosting.order_id,
            hosting.id,
        )
        .await?;
        let organization = self.organization(access).await?;
        let server = match hosting
            .server_id
            .as_deref()
            .and_then(|s| s.parse::<lodge_core::ServerId>().ok())
        {
            Some(id) => lodge_store::servers::by_id(self.store.reader(), id).await?,
            None => None,
        };
        Ok(Website {
            hosting,
            invoices,
            organization,
            server,
        })
    }

    /// Cancels a website by the website rule ([`website_cancel_type`]). `Conflict` when it
    /// is already cancelled or a cancellation is pending.
    /// Under an `Idempotency-Key` the cancellation and its outcome commit together, and a
    /// retry is answered that outcome (not "already cancelled").
    pub async fn cancel_website(
        &self,
        access: &Access,
        legacy_id: i64,
        reason: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<Answer<Cancellation>> {
        access.require_write()?;
        self.keyed(key, || async {
            let h = self.website(access, legacy_id).await?;
            self.cancel_hosting_keyed(access, None, h.id, website_cancel_type, reason, key)
                .await
        })
        .await
    }

    /// The caller's invoices named by `refs` (each once, in the order named; a website
    /// names every invoice of its order).
    pub(crate) async fn named_invoices(
        &self,
        access: &Access,
        refs: &[InvoiceRef],
    ) -> Result<Vec<InvoiceRow>> {
        Ok(self.named_invoices_read(access, refs).await?.0)
    }

    /// [`Lodge::named_invoices`] and the organization's credit balance, read with the first
    /// invoice named by its id (a payment from credit needs both: one read fewer).
    pub(crate) async fn named_invoices_and_credit(
        &self,
        access: &Access,
        refs: &[InvoiceRef],
    ) -> Result<(Vec<InvoiceRow>, i64)> {
        let (invoices, credit) = self.named_invoices_read(access, refs).await?;
        let credit = match credit {
            Some(c) => c,
            None => self.organization(access).await?.credit_balance_minor,
        };
        Ok((invoices, credit))
    }

    async fn named_invoices_read(
        &self,
        access: &Access,
        refs: &[InvoiceRef],
    ) -> Result<(Vec<InvoiceRow>, Option<i64>)> {
        let mut out: Vec<InvoiceRow> = vec![];
        let mut credit = None;
        for r in refs {
            let found = match *r {
                // Every invoice of the website: paying keeps the unpaid ones, and answers
                // `Conflict` (nothing due) rather than `NotFound` for one already paid.
                InvoiceRef::Website(legacy) => self.website_invoices(access, legacy).await?,
                InvoiceRef::Invoice(id) => {
                    let mut db = self.store.read_conn().await?;
                    let (inv, balance) =
                        billing::invoice_and_credit(&mut db, access.organization, id)
                            .await?
                            .ok_or(ServiceError::NotFound)?;
                    credit.get_or_insert(balance);
                    vec![inv]
                }
            };
            for i in found {
                if !out.iter().any(|o| o.id == i.id) {
                    out.push(i);
                }
            }
        }
        // Only websites named, none with an invoice (a free plan's): the caller's, so
        // nothing is due, not `NotFound` (found by the apiv2 audit: a free order's `iids`
        // led to a 404).
        if out.is_empty() {
            return Err(ServiceError::Conflict(
                "Nothing is due on these invoices.".into(),
            ));
        }
        Ok((out, credit))
    }

    /// Pays the unpaid ones of the invoices named: from account credit (all or none), or
    /// on the payment page of the first. `NotFound` for an invoice or website of another
    /// organization, `Conflict` when nothing named is unpaid or the credit does not cover
    /// what is due.
    pub async fn settle_invoices(
        &self,
        access: &Access,
        refs: &[InvoiceRef],
        from_credit: bool,
        actor: &str,
    ) -> Result<Settlement> {
        self.settle_invoices_keyed(access, refs, from_credit, actor, None)
            .await
            .map(Answer::into_outcome)
    }

    /// [`Lodge::settle_invoices`] under an `Idempotency-Key`: the payment (or, for the
    /// payment page, nothing else) and its outcome commit together, and a retry is answered
    /// that outcome.
    pub async fn settle_invoices_keyed(
        &self,
        access: &Access,
        refs: &[InvoiceRef],
        from_credit: bool,
        actor: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<Answer<Settlement>> {
        access.require_write()?;
        self.keyed(key, || async {
            let invoices = self.named_invoices(access, refs).await?;
            let due: Vec<&InvoiceRow> = invoices.iter().filter(|i| unpaid(i)).collect();
            let Some(first) = due.first() else {
                return Err(ServiceError::Conflict(
                    "Nothing is due on these invoices.".into(),
                ));
            };
            if !from_credit {
                // Every invoice asked for is paid on its own page, one after another (found
                // by the apiv2 audit: the others were dropped without a word).
                let rest = due.get(1..).unwrap_or_default();
                let out = Settlement::PayOnPage {
                    payment_token: self.payment_token(first),
                    payment_token_salt: first.payment_token_salt.clone(),
                    then_tokens: rest.iter().map(|i| self.payment_token(i)).collect(),
                    then_salts: rest.iter().map(|i| i.payment_token_salt.clone()).collect(),
                };
                if let Some(key) = key {
                    self.record_outcome(key, &out).await?;
                }
                return Ok(out);
            }
            let ids: Vec<i64> = due.iter().map(|i| i.id).collect();
            let out = Settlement::PaidFromCredit {
                invoices: ids.len(),
            };
            let keyed = key.map(|k| Keyed::new(k, &out)).transpose()?;
            self.pay_from_credit_keyed(&ids, actor, keyed).await?;
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use lodge_core::{Currency, Money};

    use super::*;

    fn prices(cycles: &[(BillingCycle, bool)]) -> Vec<Price> {
        cycles
            .iter()
            .map(|&(cycle, is_default)| Price {
                cycle,
                price: Money::new(500, Currency::USD),
                setup_fee: Money::zero(Currency::USD),
                is_default,
            })
            .collect()
    }

    #[test]
    fn a_recurring_plan_takes_the_period() {
        let p = prices(&[
            (BillingCycle::Monthly, true),
            (BillingCycle::Annually, false),
        ]);
        let c = |months| website_cycle(Some(&p), months);
        assert_eq!(c(None), Some(BillingCycle::Monthly));
        assert_eq!(c(Some(12)), Some(BillingCycle::Annually));
        assert_eq!(c(Some(36)), Some(BillingCycle::Triennially));
        for bad in [0, 2, 5, -1, i64::MAX] {
            assert_eq!(c(Some(bad)), None, "{bad} months");
        }
    }

    #[test]
    fn a_one_off_plan_takes_its_own_cycle_whatever_the_period() {
        let once = prices(&[(BillingCycle::OneTime, false)]);
        let free_or_once = prices(&[(BillingCycle::Free, false), (BillingCycle::OneTime, true)]);
        for months in [None, Some(1), Some(2), Some(12)] {
            assert_eq!(
                website_cycle(Some(&once), months),
                Some(BillingCycle::OneTime)
            );
            assert_eq!(
                website_cycle(Some(&free_or_once), months),
                Some(BillingCycle::OneTime),
                "the default price's cycle"
            );
        }
        let mixed = prices(&[
            (BillingCycle::OneTime, true),
            (BillingCycle::Monthly, false),
        ]);
        assert_eq!(website_cycle(Some(&mixed), Some(2)), None, "it recurs");
    }

    #[test]
    fn an_unknown_or_unpriced_plan_takes_the_period() {
        assert_eq!(
            website_cycle(None, Some(6)),
            Some(BillingCycle::SemiAnnually)
        );
        assert_eq!(website_cycle(Some(&[]), None), Some(BillingCycle::Monthly));
        assert_eq!(website_cycle(None, Some(7)), None);
    }
}
