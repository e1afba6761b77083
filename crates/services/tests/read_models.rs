//! The read models and website rules the dialects call, on SQLite and PostgreSQL: one
//! organization never sees another's rows (`NotFound`), field errors carry their codes from
//! their source, and the website rules (terms, period, what is due) hold.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;

use lodge_core::{Clock, Currency, ManualClock};
use lodge_services::auth::Access;
use lodge_services::crypto::Sealer;
use lodge_services::demo::DemoInfo;
use lodge_services::model::ProjectRow;
use lodge_services::orders::DbChecks;
use lodge_services::queries::PagePayment;
use lodge_services::tenancy::{NewOrganization, NewUser};
use lodge_services::websites::{InvoiceRef, Settlement, WebsiteOrder};
use lodge_services::{FieldCode, FieldErrors, Lodge, ServiceError, Settings};
use lodge_store::Store;
use secrecy::SecretString;

/// The demo Starter plan's legacy id.
const STARTER: i64 = 11447;

struct World {
    lodge: Lodge,
    demo: DemoInfo,
    /// The demo organization, and its default project.
    ours: Access,
    our_project: ProjectRow,
    /// Another customer's organization, and its default project.
    theirs: Access,
    their_project: ProjectRow,
    _dir: Option<tempfile::TempDir>,
}

async fn world(postgres: bool) -> Option<World> {
    let (url, dir) = if postgres {
        (lodge_testkit::pg::test_database_url().await?, None)
    } else {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/lodge.db", dir.path().display());
        (url, Some(dir))
    };
    let store = Store::open(&url).await.unwrap();
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new("2026-03-31T10:00:00Z".parse().unwrap()));
    let mut settings = Settings::new(Currency::USD, SecretString::from("test-secret"));
    settings.require_tos = true;
    let lodge = Lodge::new(store, clock, settings, Sealer::new(&[7; 32]));
    let demo = lodge.seed_demo().await.unwrap();
    let ours = customer(&lodge, &demo.api_key).await;
    let user = lodge
        .create_user(NewUser {
            email: "other@customer.test",
            name: "Other",
            password: None,
            is_staff: false,
        })
        .await
        .unwrap();
    let org = lodge
        .create_organization(NewOrganization {
            name: "Other Customer",
            organization_type: None,
            company_name: None,
            country: None,
            owner: Some(user.id),
        })
        .await
        .unwrap();
    let key = lodge
        .create_org_key(org.id, Some(user.id), "k", None, None)
        .await
        .unwrap();
    let theirs = customer(&lodge, &key.secret).await;
    let our_project = lodge.default_project(&ours).await.unwrap();
    let their_project = lodge.default_project(&theirs).await.unwrap();
    Some(World {
        lodge,
        demo,
        ours,
        our_project,
        theirs,
        their_project,
        _dir: dir,
    })
}

async fn customer(lodge: &Lodge, key: &str) -> Access {
    let p = lodge.authenticate_key(key).await.unwrap();
    lodge.customer_access(&p).await.unwrap()
}

fn order(hostname: &str) -> WebsiteOrder {
    WebsiteOrder {
        package_id: Some(STARTER),
        period_months: Some(1),
        hostname: hostname.to_owned(),
        tos: true,
        ..Default::default()
    }
}

fn invalid(e: ServiceError) -> FieldErrors {
    match e {
        ServiceError::Invalid(f) => f,
        other => panic!("not field errors: {other:?}"),
    }
}

fn codes(f: &FieldErrors, field: &str) -> Vec<FieldCode> {
    f.get(field)
        .unwrap_or_else(|| panic!("no {field} in {f:?}"))
        .iter()
        .map(|e| e.code)
        .collect()
}

macro_rules! on_both_engines {
    ($($f:ident),* $(,)?) => {$(
        mod $f {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if let Some(w) = super::world(false).await {
                    super::$f(w).await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(w) = super::world(true).await {
                    super::$f(w).await;
                }
            }
        }
    )*};
}

on_both_engines!(
    website_orders_report_coded_field_errors,
    another_organization_sees_none_of_our_rows,
    what_is_due_is_paid_once,
);

async fn website_orders_report_coded_field_errors(w: World) {
    let l = &w.lodge;
    let ok = l
        .validate_website_order(&w.ours, &order("coded.example.com"), DbChecks::Now)
        .await
        .unwrap();
    assert_eq!(ok.project, w.our_project.id, "the default project");

    let mut no_terms = order("coded.example.com");
    no_terms.tos = false;
    let f = invalid(
        l.validate_website_order(&w.ours, &no_terms, DbChecks::Now)
            .await
            .unwrap_err(),
    );
    assert_eq!(f.keys().collect::<Vec<_>>(), ["tos"], "{f:?}");
    assert_eq!(codes(&f, "tos"), [FieldCode::Required]);

    let f = invalid(
        l.validate_website_order(&w.ours, &order(""), DbChecks::Now)
            .await
            .unwrap_err(),
    );
    assert_eq!(codes(&f, "domain_name"), [FieldCode::Required]);
    let f = invalid(
        l.validate_website_order(&w.ours, &order("bad host!"), DbChecks::Now)
            .await
            .unwrap_err(),
    );
    assert_eq!(codes(&f, "domain_name"), [FieldCode::InvalidDomain]);

    // The order form's rules and every order's are reported together.
    let mut everything = order("");
    everything.period_months = Some(2);
    everything.package_id = None;
    everything.tos = false;
    let f = invalid(
        l.validate_website_order(&w.ours, &everything, DbChecks::Now)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        f.keys().map(String::as_str).collect::<Vec<_>>(),
        ["billing_cycle", "domain_name", "plan_id", "tos"],
        "{f:?}"
    );
    assert_eq!(codes(&f, "plan_id"), [FieldCode::Required]);
    assert_eq!(codes(&f, "billing_cycle"), [FieldCode::Invalid]);
}

async fn another_organization_sees_none_of_our_rows(w: World) {
    let l = &w.lodge;
    let v = l
        .validate_website_order(&w.ours, &order("ours.example.com"), DbChecks::Now)
        .await
        .unwrap();
    let placed = l.place_order(&v, "test").await.unwrap();
    let website = placed.hosting_legacy_id;
    let invoice = placed.invoice_id.unwrap();

    // We see it.
    assert_eq!(
        l.website(&w.ours, website).await.unwrap().id,
        placed.hosting_id
    );
    assert_eq!(l.website_invoices(&w.ours, website).await.unwrap().len(), 1);
    let detail = l.website_detail(&w.ours, website).await.unwrap();
    assert_eq!(detail.organization.id, w.demo.organization_id);
    assert_eq!(l.websites(&w.ours).await.unwrap().len(), 1);
    let page = l
        .project_hosting(&w.ours, &w.our_project, 10, 0)
        .await
        .unwrap();
    assert_eq!(page.count, 1);
    assert!(page.rows[0].server.is_some(), "placed on the demo server");
    assert_eq!(l.org_invoices(&w.ours, 10, 0).await.unwrap().count, 1);

    // They do not, even by id or through our project.
    let not_found = |r: Result<_, ServiceError>, what: &str| {
        assert!(matches!(r, Err(ServiceError::NotFound)), "{what}: {r:?}");
    };
    not_found(l.website(&w.theirs, website).await.map(|_| ()), "website");
    not_found(
        l.website_invoices(&w.theirs, website).await.map(|_| ()),
        "website invoices",
    );
    not_found(
        l.website_detail(&w.theirs, website).await.map(|_| ()),
        "website detail",
    );
    not_found(
        l.cancel_website(&w.theirs, website, "no", None)
            .await
            .map(|_| ()),
        "cancel",
    );
    for r in [InvoiceRef::Website(website), InvoiceRef::Invoice(invoice)] {
        not_found(
            l.settle_invoices(&w.theirs, &[r], true, "test")
                .await
                .map(|_| ()),
            &format!("settle {r:?}"),
        );
    }
    not_found(
        l.project_hosting(&w.theirs, &w.our_project, 10, 0)
            .await
            .map(|_| ()),
        "our project's hosting",
    );
    not_found(
        l.project_domains(&w.theirs, &w.our_project, 10, 0)
            .await
            .map(|_| ()),
        "our project's domains",
    );
    not_found(
        l.hosting_detail(&w.theirs, w.their_project.id, placed.hosting_id)
            .await
            .map(|_| ()),
        "hosting detail",
    );
    assert!(l.websites(&w.theirs).await.unwrap().is_empty());
    assert_eq!(
        l.project_hosting(&w.theirs, &w.their_project, 10, 0)
            .await
            .unwrap()
            .count,
        0
    );
    assert_eq!(l.org_invoices(&w.theirs, 10, 0).await.unwrap().count, 0);
    // Nothing of ours was touched.
    assert_eq!(
        l.website(&w.ours, website).await.unwrap().status,
        lodge_core::HostingStatus::Pending
    );
}

async fn what_is_due_is_paid_once(w: World) {
    let l = &w.lodge;
    let v = l
        .validate_website_order(&w.ours, &order("due.example.com"), DbChecks::Now)
        .await
        .unwrap();
    let placed = l.place_order(&v, "test").await.unwrap();
    let website = InvoiceRef::Website(placed.hosting_legacy_id);
    let invoice = InvoiceRef::Invoice(placed.invoice_id.unwrap());

    // Named twice, paid once: on the page of that invoice.
    let Settlement::PayOnPage { payment_token, .. } = l
        .settle_invoices(&w.ours, &[website, invoice], false, "test")
        .await
        .unwrap()
    else {
        panic!("not from credit");
    };
    assert_eq!(Some(payment_token.clone()), placed.payment_token);
    let page = l.payment_page(&payment_token).await.unwrap();
    assert_eq!(page.due_minor, placed.amount_due_minor);
    assert!(page.due_minor > 0);
    assert!(!page.can_pay_from_credit, "no credit yet");

    // Not enough credit: refused, nothing paid.
    let short = l.settle_invoices(&w.ours, &[website], true, "test").await;
    assert!(
        matches!(short, Err(ServiceError::InsufficientCredit(_))),
        "{short:?}"
    );
    assert_eq!(
        l.pay_page_from_credit(&payment_token).await.unwrap(),
        PagePayment::InsufficientCredit
    );
    assert_eq!(
        l.payment_page(&payment_token).await.unwrap().due_minor,
        page.due_minor
    );

    l.add_credit(w.demo.organization_id, page.due_minor, "test", "test", None)
        .await
        .unwrap();
    assert!(
        l.payment_page(&payment_token)
            .await
            .unwrap()
            .can_pay_from_credit
    );
    assert_eq!(
        l.settle_invoices(&w.ours, &[website, invoice], true, "test")
            .await
            .unwrap(),
        Settlement::PaidFromCredit { invoices: 1 }
    );
    assert_eq!(
        l.pay_page_from_credit(&payment_token).await.unwrap(),
        PagePayment::Closed
    );
    assert!(matches!(
        l.pay_page_from_credit("no-such-token-of-twenty-chars")
            .await,
        Err(ServiceError::NotFound)
    ));
    let page = l.payment_page(&payment_token).await.unwrap();
    assert_eq!(page.due_minor, 0, "paid");
    assert!(!page.can_pay_from_credit, "nothing is due");
    for r in [website, invoice] {
        let again = l.settle_invoices(&w.ours, &[r], true, "test").await;
        assert!(
            matches!(&again, Err(ServiceError::Conflict(m)) if m.contains("Nothing is due")),
            "{again:?}"
        );
    }
}
