//! The store's contract, the same tests on SQLite and PostgreSQL: what services may rely on
//! whichever engine is behind the store. Constraint violations come back typed; the job
//! queue hands each due job to one worker at a time, takes it back when its lease ends and
//! retries or buries it; an idempotency key is claimed once and answered with its work;
//! a credit balance never goes below zero; invoice numbers have no gaps.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeSet;

use lodge_core::{DomainId, HostingId, OrderUuid, OrganizationId, PlanGroupId, PlanId, ProjectId};
use lodge_core::{ServerId, UserId};
use lodge_store::{
    billing, catalog, checks, hosting, idempotency, jobs, orgs, refunds, renewals, servers, users,
};
use lodge_store::{Check, Conflict, Store, StoreError};

/// Runs each test on a fresh SQLite file and a fresh PostgreSQL database (skipped without
/// PostgreSQL's binaries unless `LODGE_REQUIRE_SERVICES=1`).
macro_rules! on_both_engines {
    ($($f:ident),* $(,)?) => {$(
        mod $f {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}/contract.db", dir.path().display());
                let store = lodge_store::Store::open(&url).await.unwrap();
                super::$f(store.clone()).await;
                store.close().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(url) = lodge_testkit::pg::test_database_url().await else {
                    return;
                };
                let store = lodge_store::Store::open(&url).await.unwrap();
                super::$f(store.clone()).await;
                store.close().await;
            }
        }
    )*};
}

on_both_engines!(
    unique_violations_are_typed_conflicts,
    the_batch_writer_reports_conflicts_alike,
    check_violations_are_typed,
    a_credit_balance_never_goes_below_zero,
    invoice_numbers_have_no_gaps,
    invoice_numbers_grow_in_time_and_past_six_digits,
    an_invoice_paid_before_it_is_numbered_is_paid_when_issued,
    the_job_queue_claims_finishes_and_retries,
    concurrent_claimers_never_share_a_job,
    an_idempotency_key_is_claimed_once_and_answered,
    a_key_claimed_with_its_answer_is_claimed_once,
    a_claim_commits_or_rolls_back_with_its_work,
    refunds_move_a_paid_invoice_and_never_past_what_it_received,
    an_organizations_live_counts_follow_its_rows,
    a_payment_moves_its_invoice_once,
    renewal_pages_hold_every_due_account_once_in_order,
    a_batchs_activations_move_only_from_what_it_read,
    a_batchs_invoices_are_paid_as_one_payment_would_pay_them,
    a_mail_being_sent_is_not_started_again_until_its_window_passed,
);

const NOW: i64 = 1_800_000_000_000_000;

/// An organization with a default project, a plan and an order.
#[derive(Clone, Copy)]
struct World {
    org: OrganizationId,
    project: ProjectId,
    plan: PlanId,
    order: i64,
}

/// An organization with nothing else.
async fn organization(store: &Store) -> OrganizationId {
    let org = OrganizationId::new();
    let mut conn = store.write_conn().await.unwrap();
    orgs::insert(
        &mut conn,
        &orgs::NewOrg {
            id: org,
            name: "Contract".into(),
            organization_type: "personal".into(),
            company_name: String::new(),
            country: "FR".into(),
            currency: "USD".into(),
            now: NOW,
        },
    )
    .await
    .unwrap();
    org
}

async fn world(store: &Store) -> World {
    let org = organization(store).await;
    let project = ProjectId::new();
    let mut conn = store.write_conn().await.unwrap();
    orgs::insert_project(
        &mut conn,
        &orgs::NewProject {
            id: project,
            organization_id: org,
            name: "Default",
            description: "",
            is_default: true,
            now: NOW,
        },
    )
    .await
    .unwrap();
    let group = catalog::upsert_group(
        &mut conn,
        PlanGroupId::new(),
        &catalog::GroupInput {
            slug: format!("group-{org}"),
            name: "Group".into(),
            is_active: Some(true),
            ..Default::default()
        },
        NOW,
    )
    .await
    .unwrap();
    let plan = catalog::upsert_plan(
        &mut conn,
        store.engine(),
        PlanId::new(),
        group.id,
        &plan_input(None, &format!("plan-{org}")),
        NOW,
    )
    .await
    .unwrap();
    let order = billing::insert_order(
        &mut *conn,
        &billing::NewOrder {
            uuid: OrderUuid::new(),
            organization_id: org,
            project_id: project,
            status: lodge_core::OrderStatus::Pending,
            source: "v1",
            currency: "USD",
            coupon_id: None,
            actor: "contract",
            now: NOW,
        },
    )
    .await
    .unwrap();
    World {
        org,
        project,
        plan: plan.id,
        order,
    }
}

fn plan_input(legacy_id: Option<i64>, slug: &str) -> catalog::PlanInput {
    catalog::PlanInput {
        legacy_id,
        slug: slug.into(),
        name: slug.into(),
        hosting_type: "hostingaccount".into(),
        buyable: true,
        once_per_organization: false,
        is_active: Some(true),
        ..Default::default()
    }
}

fn domain<'a>(w: &World, id: DomainId, name: &'a str, status: &str) -> hosting::NewDomain<'a> {
    hosting::NewDomain {
        id,
        organization_id: w.org,
        project_id: w.project,
        order_id: Some(w.order),
        name,
        sld: "taken",
        tld: "com",
        status: status.parse().unwrap(),
        registrar: "none",
        epp_code: None,
        now: NOW,
    }
}

fn account<'a>(w: &World, name: &'a str, status: &str) -> hosting::NewHosting<'a> {
    hosting::NewHosting {
        id: HostingId::new(),
        organization_id: w.org,
        project_id: w.project,
        order_id: w.order,
        plan_id: w.plan,
        domain_name: name,
        domain_id: None,
        status: status.parse().unwrap(),
        billing_cycle: "monthly",
        recurring_minor: 100,
        first_period_months: Some(1),
        renewal_months: Some(1),
        currency: "USD",
        coupon_id: None,
        secret: None,
        comment: "",
        server_id: None,
        next_due_date: None,
        period_anchor: None,
        note: "ordered",
        actor: "contract",
        now: NOW,
    }
}

fn invoice<'a>(
    org: OrganizationId,
    token: &'a str,
    number: Option<&'a str>,
) -> billing::NewInvoice<'a> {
    billing::NewInvoice {
        number,
        organization_id: org,
        order_id: None,
        kind: lodge_core::InvoiceKind::Manual,
        currency: "USD",
        subtotal_minor: 0,
        tax_minor: 0,
        payment_token: billing::PaymentTokenKey {
            salt: token,
            digest: token,
        },
        due_date: "2027-01-01",
        credit_applied_minor: 0,
        paid: false,
        now: NOW,
    }
}

fn conflict<T: std::fmt::Debug>(r: Result<T, StoreError>) -> Conflict {
    match r {
        Err(StoreError::Conflict(c)) => c,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

/// Runs `sql` twice (it inserts one row): the second time, the conflict it runs into.
async fn twice(store: &Store, sql: &str) -> Conflict {
    sqlx::query(sql).execute(store.writer()).await.unwrap();
    conflict(
        sqlx::query(sql)
            .execute(store.writer())
            .await
            .map_err(StoreError::from),
    )
}

async fn unique_violations_are_typed_conflicts(store: Store) {
    let w = world(&store).await;
    let mut conn = store.write_conn().await.unwrap();

    let user = |email: &'static str| users::NewUser {
        id: UserId::new(),
        email,
        name: "U",
        password_hash: None,
        is_staff: false,
        now: NOW,
    };
    users::insert(&mut conn, &user("a@contract.test"))
        .await
        .unwrap();
    let again = users::insert(&mut conn, &user("a@contract.test")).await;
    assert_eq!(conflict(again), Conflict::UserEmail);

    let server = servers::ServerInput {
        name: "web1",
        hostname: "web1.contract.test",
        driver: "nginx",
        credentials: None,
        ns1: "",
        ns2: "",
        capacity: 0,
        is_active: true,
        node: None,
    };
    servers::insert(&mut conn, ServerId::new(), &server, NOW)
        .await
        .unwrap();
    let again = servers::insert(&mut conn, ServerId::new(), &server, NOW).await;
    assert_eq!(conflict(again), Conflict::ServerName);

    // A legacy id another plan (another slug) holds.
    let group = catalog::upsert_group(
        &mut conn,
        PlanGroupId::new(),
        &catalog::GroupInput {
            slug: "legacy".into(),
            name: "Legacy".into(),
            is_active: Some(true),
            ..Default::default()
        },
        NOW,
    )
    .await
    .unwrap();
    let engine = store.engine();
    catalog::upsert_plan(
        &mut conn,
        engine,
        PlanId::new(),
        group.id,
        &plan_input(Some(4242), "first"),
        NOW,
    )
    .await
    .unwrap();
    let taken = catalog::upsert_plan(
        &mut conn,
        engine,
        PlanId::new(),
        group.id,
        &plan_input(Some(4242), "second"),
        NOW,
    )
    .await;
    assert_eq!(conflict(taken), Conflict::PlanLegacyId);
    // The identity sequence was kept ahead of the explicit id.
    let next = catalog::upsert_plan(
        &mut conn,
        engine,
        PlanId::new(),
        group.id,
        &plan_input(None, "third"),
        NOW,
    )
    .await
    .unwrap();
    assert_eq!(next.legacy_id, 4243);
    // A row given no legacy id takes the next one: on PostgreSQL from the identity
    // sequence, which the explicit ids did not advance and the store moved past them.
    sqlx::query(
        "INSERT INTO plans (id, group_id, slug, name, created_at, modified_at)
         VALUES ($1, $2, 'fourth', 'Fourth', 1, 1)",
    )
    .bind(PlanId::new().to_string())
    .bind(group.id.to_string())
    .execute(&mut *conn)
    .await
    .unwrap();

    // Only live domain objects and hosting accounts hold their name.
    hosting::insert_domain(
        &mut *conn,
        &domain(&w, DomainId::new(), "taken.com", "active"),
    )
    .await
    .unwrap();
    let again = hosting::insert_domain(
        &mut *conn,
        &domain(&w, DomainId::new(), "taken.com", "pending_registration"),
    )
    .await;
    assert_eq!(conflict(again), Conflict::LiveDomainName);
    hosting::insert_domain(
        &mut *conn,
        &domain(&w, DomainId::new(), "taken.com", "cancelled"),
    )
    .await
    .unwrap();
    hosting::insert_hosting(&mut *conn, &account(&w, "taken.com", "active"))
        .await
        .unwrap();
    let again = hosting::insert_hosting(&mut *conn, &account(&w, "taken.com", "pending")).await;
    assert_eq!(conflict(again), Conflict::LiveHostingName);
    hosting::insert_hosting(&mut *conn, &account(&w, "taken.com", "terminated"))
        .await
        .unwrap();

    let again = orgs::insert_project(
        &mut conn,
        &orgs::NewProject {
            id: ProjectId::new(),
            organization_id: w.org,
            name: "Second default",
            description: "",
            is_default: true,
            now: NOW,
        },
    )
    .await;
    assert_eq!(conflict(again), Conflict::DefaultProject);

    billing::insert_invoice(&mut *conn, &invoice(w.org, "t1", Some("INV-900001")))
        .await
        .unwrap();
    let again =
        billing::insert_invoice(&mut *conn, &invoice(w.org, "t2", Some("INV-900001"))).await;
    assert_eq!(conflict(again), Conflict::InvoiceNumber);
    let invoice_id = billing::insert_invoice(&mut *conn, &invoice(w.org, "t3", None))
        .await
        .unwrap();
    drop(conn);

    // What the store's own statements avoid (ON CONFLICT … DO NOTHING or DO UPDATE) is
    // typed all the same when a statement runs into it.
    let org = w.org;
    for (sql, expected) in [
        (
            format!("INSERT INTO payments (id, invoice_id, organization_id, method, reference, amount_minor, currency, actor, created_at)
                     VALUES ('p-' || CAST(random() AS TEXT), {invoice_id}, '{org}', 'bank_transfer', 'ref-1', 100, 'USD', 'a', 1)"),
            Conflict::PaymentReference,
        ),
        (
            format!("INSERT INTO invoice_lines (invoice_id, position, kind, description, service_id, period_start, amount_minor)
                     VALUES ({invoice_id}, 0, 'plan', 'Plan', 'svc', '2027-01-01', 0)"),
            Conflict::InvoiceLinePeriod,
        ),
        (
            "INSERT INTO jobs (kind, payload, status, run_at, dedupe_key, created_at, modified_at)
             VALUES ('provision', '{}', 'queued', 1, 'same', 1, 1)"
                .to_owned(),
            Conflict::JobDedupeKey,
        ),
        (
            "INSERT INTO idempotency_keys (scope, key, request_hash, created_at) VALUES ('s', 'k', 'h', 1)"
                .to_owned(),
            Conflict::IdempotencyKey,
        ),
        (
            "INSERT INTO coupons (id, code, kind, value, created_at, modified_at)
             VALUES ('c-' || CAST(random() AS TEXT), 'SAVE', 1, 100, 1, 1)"
                .to_owned(),
            Conflict::CouponCode,
        ),
        (
            format!("INSERT INTO plans (id, group_id, slug, name, created_at, modified_at)
                     VALUES ('p-' || CAST(random() AS TEXT), '{}', 'plan-{org}', 'P', 1, 1)", group.id),
            Conflict::PlanSlug,
        ),
        (
            "INSERT INTO plan_groups (id, slug, name, created_at, modified_at)
             VALUES ('g-' || CAST(random() AS TEXT), 'legacy', 'G', 1, 1)"
                .to_owned(),
            Conflict::PlanGroupSlug,
        ),
    ] {
        let what = match expected {
            // Already there: one run is the conflict.
            Conflict::PlanSlug | Conflict::PlanGroupSlug => conflict(
                sqlx::query(&sql)
                    .execute(store.writer())
                    .await
                    .map_err(StoreError::from),
            ),
            _ => twice(&store, &sql).await,
        };
        assert_eq!(what, expected, "{sql}");
    }
    let user = UserId::new();
    sqlx::query("INSERT INTO users (id, email, name, created_at, modified_at) VALUES ($1, 'm@contract.test', 'M', 1, 1)")
        .bind(user.to_string())
        .execute(store.writer())
        .await
        .unwrap();
    let membership = format!(
        "INSERT INTO memberships (organization_id, user_id, role, created_at) VALUES ('{org}', '{user}', 'owner', 1)"
    );
    assert_eq!(twice(&store, &membership).await, Conflict::Membership);

    // Anything else keeps its engine's own spelling.
    sqlx::query("CREATE TABLE contract_other (name TEXT NOT NULL UNIQUE)")
        .execute(store.writer())
        .await
        .unwrap();
    let other = twice(&store, "INSERT INTO contract_other (name) VALUES ('x')").await;
    assert!(
        matches!(&other, Conflict::Other(w) if w.contains("contract_other")),
        "{other:?}"
    );
}

/// SQLite's batch writer (rusqlite) reports what sqlx reports.
async fn the_batch_writer_reports_conflicts_alike(store: Store) {
    if !store.has_batch_writer() {
        return;
    }
    let w = world(&store).await;
    let (domain_conflict, hosting_conflict) = store
        .batch(move |db| {
            db.transaction(|db| {
                lodge_store::run_ready(hosting::insert_domain(
                    db,
                    &domain(&w, DomainId::new(), "batch.com", "active"),
                ))?;
                let d = lodge_store::run_ready(hosting::insert_domain(
                    db,
                    &domain(&w, DomainId::new(), "batch.com", "pending_transfer"),
                ));
                lodge_store::run_ready(hosting::insert_hosting(
                    db,
                    &account(&w, "batch.com", "active"),
                ))?;
                let h = lodge_store::run_ready(hosting::insert_hosting(
                    db,
                    &account(&w, "batch.com", "suspended"),
                ));
                Ok::<_, StoreError>((conflict(d), conflict(h)))
            })
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(domain_conflict, Conflict::LiveDomainName);
    assert_eq!(hosting_conflict, Conflict::LiveHostingName);
}

async fn check_violations_are_typed(store: Store) {
    let w = world(&store).await;
    let mut conn = store.write_conn().await.unwrap();
    let id = billing::insert_invoice(
        &mut *conn,
        &billing::NewInvoice {
            subtotal_minor: 1000,
            ..invoice(w.org, "checked", None)
        },
    )
    .await
    .unwrap();
    billing::add_paid(&mut conn, id, 600, NOW).await.unwrap();
    let over = billing::add_paid(&mut conn, id, 600, NOW).await;
    assert!(
        matches!(over, Err(StoreError::Check(Check::InvoiceOverpaid))),
        "{over:?}"
    );
    drop(conn);
    sqlx::query(
        "INSERT INTO coupons (id, code, kind, value, max_uses, uses, created_at, modified_at)
         VALUES ('limited', 'ONCE', 1, 100, 1, 1, 1, 1)",
    )
    .execute(store.writer())
    .await
    .unwrap();
    let used = sqlx::query("UPDATE coupons SET uses = uses + 1 WHERE id = 'limited'")
        .execute(store.writer())
        .await
        .map_err(StoreError::from);
    assert!(
        matches!(used, Err(StoreError::Check(Check::CouponUsedUp))),
        "{used:?}"
    );
    // The store's own statement checks first and refuses quietly.
    let mut conn = store.write_conn().await.unwrap();
    assert!(!catalog::use_coupon(&mut *conn, "limited", NOW)
        .await
        .unwrap());
    drop(conn);

    // Expired (from its expiry on) and switched-off coupons are refused by the same update.
    sqlx::query(
        "INSERT INTO coupons (id, code, kind, value, expires_at, created_at, modified_at)
         VALUES ('dated', 'DATED', 1, 100, 1000, 1, 1)",
    )
    .execute(store.writer())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO coupons (id, code, kind, value, is_active, created_at, modified_at)
         VALUES ('off', 'OFF', 1, 100, 0, 1, 1)",
    )
    .execute(store.writer())
    .await
    .unwrap();
    let mut conn = store.write_conn().await.unwrap();
    assert!(catalog::use_coupon(&mut *conn, "dated", 999).await.unwrap());
    assert!(!catalog::use_coupon(&mut *conn, "dated", 1000)
        .await
        .unwrap());
    assert!(!catalog::use_coupon(&mut *conn, "off", 1).await.unwrap());
}

async fn a_credit_balance_never_goes_below_zero(store: Store) {
    let org = organization(&store).await;
    let entry = |amount: i64, kind: &'static str| billing::NewLedgerEntry {
        organization_id: org,
        kind,
        amount_minor: amount,
        currency: "USD",
        invoice_id: None,
        note: "",
        actor: "contract",
        now: NOW,
    };
    let mut tx = store.begin().await.unwrap();
    assert_eq!(billing::lock_credit(&mut tx, org).await.unwrap(), Some(0));
    let balance = billing::append_ledger(&mut tx, &entry(500, "deposit"))
        .await
        .unwrap();
    assert_eq!(balance, 500);
    tx.commit().await.unwrap();

    let mut tx = store.begin().await.unwrap();
    assert_eq!(billing::lock_credit(&mut tx, org).await.unwrap(), Some(500));
    let refused = billing::append_ledger(&mut tx, &entry(-501, "adjustment")).await;
    assert!(
        matches!(refused, Err(StoreError::Check(Check::NegativeBalance))),
        "{refused:?}"
    );
    tx.rollback().await.unwrap();

    let mut tx = store.begin().await.unwrap();
    let balance = billing::append_ledger(&mut tx, &entry(-500, "adjustment"))
        .await
        .unwrap();
    assert_eq!(balance, 0);
    tx.commit().await.unwrap();

    // An organization that does not exist has no balance to move.
    let mut tx = store.begin().await.unwrap();
    let nobody = OrganizationId::new();
    assert_eq!(billing::lock_credit(&mut tx, nobody).await.unwrap(), None);
    let missing = billing::append_ledger(
        &mut tx,
        &billing::NewLedgerEntry {
            organization_id: nobody,
            ..entry(5, "deposit")
        },
    )
    .await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
    tx.rollback().await.unwrap();

    let (entries, count) = billing::ledger_page(store.reader(), org, 10, 0)
        .await
        .unwrap();
    assert_eq!(count, 2);
    assert_eq!(entries.iter().map(|e| e.amount_minor).sum::<i64>(), 0);
    assert_eq!(
        checks::consistency_problems(store.reader()).await.unwrap(),
        Vec::<String>::new()
    );
}

/// Issues `count` invoices and numbers them in one transaction, committed or not.
async fn issue(store: &Store, org: OrganizationId, count: usize, commit: bool) -> Vec<i64> {
    let mut tx = store.begin().await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..count {
        let token = uuid_token();
        ids.push(
            billing::insert_invoice(&mut tx, &invoice(org, &token, None))
                .await
                .unwrap(),
        );
    }
    billing::number_invoices(&mut tx, &ids, || NOW)
        .await
        .unwrap();
    if commit {
        tx.commit().await.unwrap();
        ids
    } else {
        tx.rollback().await.unwrap();
        Vec::new()
    }
}

fn uuid_token() -> String {
    OrderUuid::new().to_string()
}

async fn invoice_numbers_have_no_gaps(store: Store) {
    let org = organization(&store).await;
    issue(&store, org, 3, true).await;
    issue(&store, org, 2, false).await;
    issue(&store, org, 1, true).await;
    // Side by side, some rolled back.
    let mut tasks = Vec::new();
    for t in 0..4_usize {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..5_usize {
                issue(&store, org, 1 + (t + round) % 3, (t + round) % 4 != 0).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    if store.has_batch_writer() {
        // The batch writer numbers from the same counter.
        store
            .batch(move |db| {
                db.transaction(|db| {
                    let mut ids = Vec::new();
                    for token in ["batch-a", "batch-b"] {
                        ids.push(lodge_store::run_ready(billing::insert_invoice(
                            db,
                            &invoice(org, token, None),
                        ))?);
                    }
                    lodge_store::run_ready(billing::number_invoices(db, &ids, || NOW))
                })
            })
            .await
            .unwrap()
            .unwrap();
    }
    let (invoices, count) = billing::invoices_page(store.reader(), org, None, 1000, 0)
        .await
        .unwrap();
    let numbers: BTreeSet<i64> = invoices
        .iter()
        .map(|i| {
            let n = i.number.as_deref().unwrap();
            n.strip_prefix("INV-").unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(numbers.len() as i64, count);
    assert_eq!(numbers, (1..=count).collect::<BTreeSet<i64>>());
    assert_eq!(
        lodge_store::counter(store.reader(), "invoice_number")
            .await
            .unwrap(),
        count
    );
    assert_eq!(
        checks::consistency_problems(store.reader()).await.unwrap(),
        Vec::<String>::new()
    );
}

/// A higher number is never issued earlier, though a batch reads its clock before it waits
/// for the counter (a later clock numbered first); numbers keep six digits at least and
/// grow past them.
async fn invoice_numbers_grow_in_time_and_past_six_digits(store: Store) {
    let org = organization(&store).await;
    sqlx::query("UPDATE counters SET value = 999998 WHERE name = 'invoice_number'")
        .execute(store.writer())
        .await
        .unwrap();
    let number = |later: i64| {
        let store = store.clone();
        async move {
            let mut tx = store.begin().await.unwrap();
            let mut ids = Vec::new();
            for _ in 0..2 {
                let token = uuid_token();
                ids.push(
                    billing::insert_invoice(&mut tx, &invoice(org, &token, None))
                        .await
                        .unwrap(),
                );
            }
            billing::number_invoices(&mut tx, &ids, || NOW + later)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    };
    number(1_000).await;
    number(0).await;
    let (mut invoices, _) = billing::invoices_page(store.reader(), org, None, 10, 0)
        .await
        .unwrap();
    invoices.sort_by_key(|i| i.id);
    let numbered: Vec<(&str, i64)> = invoices
        .iter()
        .map(|i| (i.number.as_deref().unwrap(), i.issued_at))
        .collect();
    // A clock read earlier (PostgreSQL: before the counter's wait) or stepped back (a
    // machine's clock, on either engine) dates no higher number earlier.
    assert_eq!(
        numbered,
        [
            ("INV-999999", NOW + 1_000),
            ("INV-1000000", NOW + 1_000),
            ("INV-1000001", NOW + 1_000),
            ("INV-1000002", NOW + 1_000),
        ],
    );
}

/// An invoice paid (from credit) before its batch numbers it is paid when it is issued, not
/// before; one left unpaid stays so.
async fn an_invoice_paid_before_it_is_numbered_is_paid_when_issued(store: Store) {
    let org = organization(&store).await;
    let mut tx = store.begin().await.unwrap();
    let paid_first = billing::NewInvoice {
        paid: true,
        ..invoice(org, "paid-first", None)
    };
    let paid = billing::insert_invoice(&mut tx, &paid_first).await.unwrap();
    let unpaid = billing::insert_invoice(&mut tx, &invoice(org, "unpaid-first", None))
        .await
        .unwrap();
    billing::number_invoices(&mut tx, &[paid, unpaid], || NOW + 7)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let (invoices, _) = billing::invoices_page(store.reader(), org, None, 10, 0)
        .await
        .unwrap();
    let times = |id: i64| {
        let i = invoices.iter().find(|i| i.id == id).unwrap();
        (i.issued_at, i.paid_at)
    };
    assert_eq!(times(paid), (NOW + 7, Some(NOW + 7)));
    assert_eq!(times(unpaid), (NOW + 7, None));
}

fn job<'a>(kind: &'a str, run_at: i64, dedupe_key: Option<&'a str>) -> jobs::NewJob<'a> {
    jobs::NewJob {
        kind,
        payload: "{}",
        dedupe_key,
        run_at,
        max_attempts: 5,
        now: NOW,
    }
}

async fn the_job_queue_claims_finishes_and_retries(store: Store) {
    let engine = store.engine();
    let mut conn = store.write_conn().await.unwrap();
    assert!(jobs::enqueue(&mut *conn, &job("a", NOW, None))
        .await
        .unwrap());
    assert!(jobs::enqueue(&mut *conn, &job("later", NOW + 100, None))
        .await
        .unwrap());
    assert!(jobs::enqueue(&mut *conn, &job("c", NOW, Some("once")))
        .await
        .unwrap());
    assert!(!jobs::enqueue(&mut *conn, &job("c", NOW, Some("once")))
        .await
        .unwrap());

    let lease = 30;
    let claimed = jobs::claim(
        &mut conn,
        engine,
        "w1",
        NOW,
        NOW + lease,
        10,
        jobs::KindFilter::Any,
    )
    .await
    .unwrap();
    // In the order they are due, then queued (not sorted here: the claim's own order).
    let kinds: Vec<&str> = claimed.iter().map(|j| j.kind.as_str()).collect();
    assert_eq!(kinds, ["a", "c"]);
    assert!(claimed
        .iter()
        .all(|j| j.status == lodge_core::JobStatus::Running
            && j.attempts == 1
            && j.locked_by.as_deref() == Some("w1")));
    let (a, c) = (claimed[0].id, claimed[1].id);
    // Leased: nobody else gets them.
    assert!(jobs::claim(
        &mut conn,
        engine,
        "w2",
        NOW + 1,
        NOW + lease,
        10,
        jobs::KindFilter::Any
    )
    .await
    .unwrap()
    .is_empty());

    // Only the holder finishes or fails a job.
    assert!(!jobs::finish(&mut *conn, a, "w2", NOW + 2).await.unwrap());
    assert!(jobs::finish(&mut *conn, a, "w1", NOW + 2).await.unwrap());
    assert_eq!(
        jobs::by_id(&mut *conn, a).await.unwrap().unwrap().status,
        lodge_core::JobStatus::Done
    );
    assert!(!jobs::finish(&mut *conn, a, "w1", NOW + 2).await.unwrap());
    assert!(
        jobs::fail(&mut *conn, c, "w1", "boom", Some(NOW + 5), NOW + 2)
            .await
            .unwrap()
    );
    let queued = jobs::by_id(&mut *conn, c).await.unwrap().unwrap();
    assert_eq!(
        (
            queued.status.as_str(),
            queued.run_at,
            queued.last_error.as_deref()
        ),
        ("queued", NOW + 5, Some("boom"))
    );
    assert!(jobs::claim(
        &mut conn,
        engine,
        "w2",
        NOW + 4,
        NOW + 4 + lease,
        10,
        jobs::KindFilter::Any
    )
    .await
    .unwrap()
    .is_empty());
    let again = jobs::claim(
        &mut conn,
        engine,
        "w2",
        NOW + 5,
        NOW + 5 + lease,
        10,
        jobs::KindFilter::Any,
    )
    .await
    .unwrap();
    assert_eq!(
        again.iter().map(|j| (j.id, j.attempts)).collect::<Vec<_>>(),
        [(c, 2)]
    );

    // A worker that died: its lease ends and another takes the job over.
    let late = NOW + 5 + lease + 1;
    let taken = jobs::claim(
        &mut conn,
        engine,
        "w3",
        late,
        late + lease,
        1,
        jobs::KindFilter::Any,
    )
    .await
    .unwrap();
    assert_eq!(
        taken.iter().map(|j| (j.id, j.attempts)).collect::<Vec<_>>(),
        [(c, 3)]
    );
    assert!(!jobs::fail(&mut *conn, c, "w2", "too late", None, late)
        .await
        .unwrap());
    assert!(jobs::fail(&mut *conn, c, "w3", "gave up", None, late)
        .await
        .unwrap());
    let dead = jobs::by_id(&mut *conn, c).await.unwrap().unwrap();
    assert_eq!(dead.status, lodge_core::JobStatus::Dead);
    assert_eq!(
        jobs::with_status(&mut *conn, lodge_core::JobStatus::Dead, None, 10)
            .await
            .unwrap()
            .iter()
            .map(|j| j.id)
            .collect::<Vec<_>>(),
        [c]
    );
    // A dead job is not claimed; retried, it starts over.
    assert!(jobs::claim(
        &mut conn,
        engine,
        "w1",
        late,
        late + lease,
        10,
        jobs::KindFilter::Any
    )
    .await
    .unwrap()
    .is_empty());
    assert!(jobs::retry(&mut *conn, c, late).await.unwrap());
    assert!(!jobs::retry(&mut *conn, c, late).await.unwrap());
    let retried = jobs::claim(
        &mut conn,
        engine,
        "w1",
        late,
        late + lease,
        10,
        jobs::KindFilter::Any,
    )
    .await
    .unwrap();
    assert_eq!(
        retried
            .iter()
            .map(|j| (j.id, j.attempts))
            .collect::<Vec<_>>(),
        [(c, 1)]
    );
    assert!(jobs::finish(&mut *conn, c, "w1", late).await.unwrap());

    // The job not yet due comes when its time does.
    let later = jobs::claim(
        &mut conn,
        engine,
        "w1",
        NOW + 100,
        NOW + 100 + lease,
        10,
        jobs::KindFilter::Any,
    )
    .await
    .unwrap();
    assert_eq!(
        later.iter().map(|j| j.kind.as_str()).collect::<Vec<_>>(),
        ["later"]
    );
}

async fn concurrent_claimers_never_share_a_job(store: Store) {
    {
        let mut tx = store.begin().await.unwrap();
        for i in 0..40 {
            jobs::enqueue(&mut tx, &job("bulk", NOW - (i * 7) % 5, None))
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
    let mut workers = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let mut conn = store.write_conn().await.unwrap();
                let batch = jobs::claim(
                    &mut conn,
                    store.engine(),
                    &format!("w{w}"),
                    NOW,
                    NOW + 60,
                    3,
                    jobs::KindFilter::Any,
                )
                .await
                .unwrap();
                if batch.is_empty() {
                    return mine;
                }
                // Each round in the order its jobs are due, then queued.
                assert!(
                    batch
                        .windows(2)
                        .all(|p| (p[0].run_at, p[0].id) < (p[1].run_at, p[1].id)),
                    "{:?}",
                    batch.iter().map(|j| (j.run_at, j.id)).collect::<Vec<_>>()
                );
                mine.extend(batch.into_iter().map(|j| j.id));
            }
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let distinct: BTreeSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), 40, "{all:?}");
    assert_eq!(distinct.len(), 40);
}

async fn an_idempotency_key_is_claimed_once_and_answered(store: Store) {
    let mut conn = store.write_conn().await.unwrap();
    let (scope, key) = ("v1:user:1", "k-1");
    assert!(idempotency::claim(&mut *conn, scope, key, "hash", NOW)
        .await
        .unwrap());
    assert!(!idempotency::claim(&mut *conn, scope, key, "other", NOW)
        .await
        .unwrap());
    // The same key in another scope is another key.
    assert!(
        idempotency::claim(&mut *conn, "v1:user:2", key, "hash", NOW)
            .await
            .unwrap()
    );
    let claimed = idempotency::get(&mut *conn, scope, key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            claimed.request_hash.as_str(),
            claimed.status_code,
            claimed.response
        ),
        ("hash", None, None)
    );
    idempotency::complete(&mut *conn, scope, key, 201, "{\"id\":1}")
        .await
        .unwrap();
    let answered = idempotency::get(&mut *conn, scope, key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (answered.status_code, answered.response.as_deref()),
        (Some(201), Some("{\"id\":1}"))
    );
    // Old keys are forgotten, answered or not; newer ones stay.
    assert!(idempotency::claim(&mut *conn, scope, "new", "h", NOW + 10)
        .await
        .unwrap());
    assert_eq!(
        idempotency::forget_before(&mut *conn, NOW + 10)
            .await
            .unwrap(),
        2
    );
    assert!(idempotency::get(&mut *conn, scope, key)
        .await
        .unwrap()
        .is_none());
    assert!(idempotency::get(&mut *conn, scope, "new")
        .await
        .unwrap()
        .is_some());
}

/// A stored key's request, claim time, status and answer.
async fn key_row(
    conn: &mut sqlx::AnyConnection,
    scope: &str,
    key: &str,
) -> (String, i64, Option<i64>, Option<String>) {
    let row = idempotency::get(conn, scope, key).await.unwrap().unwrap();
    (
        row.request_hash,
        row.created_at,
        row.status_code,
        row.response,
    )
}

/// A key claimed with its answer in one write: once; a key held is not changed; with a
/// staleness bound, a key claimed before it is taken over (its answer replaced), one
/// claimed since is not.
async fn a_key_claimed_with_its_answer_is_claimed_once(store: Store) {
    let mut conn = store.write_conn().await.unwrap();
    let scope = "v1:user:1";
    assert!(
        idempotency::claim_answered(&mut *conn, scope, "k", "h1", NOW, None, 201, "one")
            .await
            .unwrap()
    );
    assert!(
        !idempotency::claim_answered(&mut *conn, scope, "k", "h2", NOW + 1, None, 201, "two")
            .await
            .unwrap()
    );
    // Not stale yet (claimed at NOW, stale only before NOW): held, unchanged.
    assert!(!idempotency::claim_answered(
        &mut *conn,
        scope,
        "k",
        "h3",
        NOW + 2,
        Some(NOW),
        201,
        "3"
    )
    .await
    .unwrap());
    assert_eq!(
        key_row(&mut conn, scope, "k").await,
        ("h1".into(), NOW, Some(201), Some("one".into()))
    );
    // Stale: taken over, the new request's claim and answer in its place.
    assert!(idempotency::claim_answered(
        &mut *conn,
        scope,
        "k",
        "h4",
        NOW + 5,
        Some(NOW + 1),
        201,
        "four"
    )
    .await
    .unwrap());
    assert_eq!(
        key_row(&mut conn, scope, "k").await,
        ("h4".into(), NOW + 5, Some(201), Some("four".into()))
    );
    // A key claimed the other way (its answer still to come) is held too.
    assert!(idempotency::claim(&mut *conn, scope, "c", "h", NOW)
        .await
        .unwrap());
    assert!(
        !idempotency::claim_answered(&mut *conn, scope, "c", "h", NOW, None, 201, "x")
            .await
            .unwrap()
    );
}

/// A key claimed, its work done and its answer stored in one transaction: a rollback leaves
/// none of the three, a commit all of them; a second transaction claiming the same key
/// waits for the first and finds it taken.
async fn a_claim_commits_or_rolls_back_with_its_work(store: Store) {
    let w = world(&store).await;
    let (scope, key) = ("v1:admin", "deposit-1");
    let deposit = billing::NewLedgerEntry {
        organization_id: w.org,
        kind: "deposit",
        amount_minor: 700,
        currency: "USD",
        invoice_id: None,
        note: "",
        actor: "contract",
        now: NOW,
    };
    let keyed_deposit = |commit: bool| {
        let store = store.clone();
        let deposit = billing::NewLedgerEntry { ..deposit };
        async move {
            let mut tx = store.begin().await.unwrap();
            if !idempotency::claim(&mut tx, scope, key, "h", NOW)
                .await
                .unwrap()
            {
                tx.rollback().await.unwrap();
                return false;
            }
            billing::lock_credit(&mut tx, deposit.organization_id)
                .await
                .unwrap();
            billing::append_ledger(&mut tx, &deposit).await.unwrap();
            idempotency::complete(&mut tx, scope, key, 200, "{}")
                .await
                .unwrap();
            if commit {
                tx.commit().await.unwrap();
            } else {
                tx.rollback().await.unwrap();
            }
            true
        }
    };
    let balance = |store: Store| async move {
        let mut conn = store.write_conn().await.unwrap();
        billing::lock_credit(&mut *conn, w.org).await.unwrap()
    };
    // The crash between the work and its answer that cannot happen: rolled back, nothing.
    assert!(keyed_deposit(false).await);
    let mut conn = store.write_conn().await.unwrap();
    assert!(idempotency::get(&mut *conn, scope, key)
        .await
        .unwrap()
        .is_none());
    drop(conn);
    assert_eq!(balance(store.clone()).await, Some(0));

    // Committed: all three; a retry finds the key answered and deposits nothing.
    let mut first = store.begin().await.unwrap();
    assert!(idempotency::claim(&mut first, scope, key, "h", NOW)
        .await
        .unwrap());
    let second = tokio::spawn(keyed_deposit(true));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!second.is_finished(), "the second claim did not wait");
    billing::lock_credit(&mut first, w.org).await.unwrap();
    billing::append_ledger(&mut first, &deposit).await.unwrap();
    idempotency::complete(&mut first, scope, key, 200, "{}")
        .await
        .unwrap();
    first.commit().await.unwrap();
    assert!(!second.await.unwrap());
    assert!(!keyed_deposit(true).await);
    assert_eq!(balance(store.clone()).await, Some(700));
}

/// A refund moves a paid invoice's total and status in one conditional update: from `paid`
/// or `partially_refunded` only, never past what it received (the database's check); a
/// cash refund's reference is recorded once; the consistency checks see the refunds add
/// up to the invoice's total.
async fn refunds_move_a_paid_invoice_and_never_past_what_it_received(store: Store) {
    use lodge_core::{InvoiceEvent, InvoiceStatus, RefundTo};
    let org = organization(&store).await;
    let mut conn = store.write_conn().await.unwrap();
    let new = |subtotal: i64, token: &'static str| billing::NewInvoice {
        subtotal_minor: subtotal,
        ..invoice(org, token, None)
    };
    let paid = billing::insert_invoice(&mut *conn, &new(1000, "refund-paid"))
        .await
        .unwrap();
    let unpaid = billing::insert_invoice(&mut *conn, &new(1000, "refund-unpaid"))
        .await
        .unwrap();
    billing::number_invoices(&mut *conn, &[paid, unpaid], || NOW)
        .await
        .unwrap();
    billing::add_credit_applied(&mut *conn, paid, 400, NOW)
        .await
        .unwrap();
    billing::add_paid(&mut conn, paid, 600, NOW).await.unwrap();
    assert!(billing::mark_paid(&mut *conn, paid, NOW).await.unwrap());

    let status = |row: billing::InvoiceRow| (row.status, row.refunded_minor);
    let refund = |invoice: i64, amount: i64, to: RefundTo, reference: Option<&'static str>| {
        refunds::NewRefund {
            invoice_id: invoice,
            organization_id: org,
            amount_minor: amount,
            currency: "USD",
            destination: to,
            reference,
            reason: "contract",
            actor: "contract",
            now: NOW,
        }
    };
    assert!(
        !refunds::add_refunded(&mut *conn, unpaid, 100, InvoiceEvent::RefundPart, NOW)
            .await
            .unwrap()
    );
    assert!(
        refunds::add_refunded(&mut *conn, paid, 100, InvoiceEvent::Pay, NOW)
            .await
            .is_err(),
        "not a refund"
    );
    let cash = refunds::insert_refund(&mut *conn, &refund(paid, 300, RefundTo::Cash, Some("R1")))
        .await
        .unwrap();
    assert!(cash.is_some());
    assert!(
        refunds::add_refunded(&mut *conn, paid, 300, InvoiceEvent::RefundPart, NOW)
            .await
            .unwrap()
    );
    let row = billing::invoice(&mut *conn, paid).await.unwrap().unwrap();
    assert_eq!(status(row), (InvoiceStatus::PartiallyRefunded, 300));
    // The same cash reference again, on any invoice, writes nothing; as credit it may recur.
    for invoice in [paid, unpaid] {
        let again = refund(invoice, 1, RefundTo::Cash, Some("R1"));
        assert_eq!(
            refunds::insert_refund(&mut *conn, &again).await.unwrap(),
            None
        );
    }
    let credit =
        refunds::insert_refund(&mut *conn, &refund(paid, 700, RefundTo::Credit, Some("R1")))
            .await
            .unwrap();
    assert!(credit.is_some());
    let no_reference =
        refunds::insert_refund(&mut *conn, &refund(paid, 1, RefundTo::Cash, None)).await;
    assert!(
        matches!(no_reference, Err(StoreError::Check(_))),
        "{no_reference:?}"
    );
    // Past what it received: the database refuses.
    let over = refunds::add_refunded(&mut *conn, paid, 701, InvoiceEvent::RefundRest, NOW).await;
    assert!(matches!(over, Err(StoreError::Check(_))), "{over:?}");
    assert!(
        refunds::add_refunded(&mut *conn, paid, 700, InvoiceEvent::RefundRest, NOW)
            .await
            .unwrap()
    );
    let row = billing::invoice(&mut *conn, paid).await.unwrap().unwrap();
    assert_eq!(status(row), (InvoiceStatus::Refunded, 1000));
    assert!(
        !refunds::add_refunded(&mut *conn, paid, 0, InvoiceEvent::RefundPart, NOW)
            .await
            .unwrap()
    );
    assert_eq!(refunds::cash_refunded(&mut *conn, paid).await.unwrap(), 300);
    drop(conn);

    let listed = refunds::refunds_of_invoice(store.reader(), paid)
        .await
        .unwrap();
    let listed: Vec<(i64, RefundTo)> = listed
        .iter()
        .map(|r| (r.amount_minor, r.destination))
        .collect();
    assert_eq!(listed, [(300, RefundTo::Cash), (700, RefundTo::Credit)]);
    // The 7.00 to credit has no ledger entry here (nor lines, nor credit entry: this
    // invoice is bare): the checks see that, and that its refunds add up to its total.
    let problems = checks::consistency_problems(store.reader()).await.unwrap();
    assert!(
        problems.contains(&"1 refunds to credit the ledger does not show".to_owned()),
        "{problems:?}"
    );
    assert!(
        !problems.iter().any(|p| p.contains("refunded total")),
        "{problems:?}"
    );
}

/// The live accounts and domains an organization's quotas count (`organization_counts`,
/// kept by the triggers of migration 0027) follow every way a row can come, change status
/// and go, live as core says (`is_live`): an insert in every status, a transition that
/// ends an account or a domain or brings one back, a status change that moves no count, a
/// delete, a rolled-back transaction, another organization's rows, and many transactions
/// at once.
async fn an_organizations_live_counts_follow_its_rows(store: Store) {
    use lodge_core::{DomainEvent, DomainStatus, HostingEvent, HostingStatus, Status};
    let w = world(&store).await;
    let counts = |org: OrganizationId| {
        let store = store.clone();
        async move {
            let mut conn = store.write_conn().await.unwrap();
            let q = orgs::order_quotas(&mut *conn, org).await.unwrap().unwrap();
            (q.accounts, q.domains)
        }
    };
    assert_eq!(counts(w.org).await, (0, 0));

    // One account and one domain in each status.
    let mut conn = store.write_conn().await.unwrap();
    let mut accounts = std::collections::HashMap::new();
    for status in HostingStatus::ALL {
        let name = format!("{}.example", status.as_str());
        let a = account(&w, &name, status.as_str());
        accounts.insert(*status, a.id);
        hosting::insert_hosting(&mut *conn, &a).await.unwrap();
    }
    let mut domains = std::collections::HashMap::new();
    for status in DomainStatus::ALL {
        let (id, name) = (DomainId::new(), format!("{}.example", status.as_str()));
        domains.insert(*status, id);
        hosting::insert_domain(&mut *conn, &domain(&w, id, &name, status.as_str()))
            .await
            .unwrap();
    }
    drop(conn);
    let live = |n: usize| i64::try_from(n).unwrap();
    let (live_accounts, live_domains) = (
        live(HostingStatus::ALL.iter().filter(|s| s.is_live()).count()),
        live(DomainStatus::ALL.iter().filter(|s| s.is_live()).count()),
    );
    assert!(live_accounts > 1 && live_domains > 1);
    assert_eq!(counts(w.org).await, (live_accounts, live_domains));

    let mut conn = store.write_conn().await.unwrap();
    // Paid (pending → provisioning) and provisioned: still live, no change.
    for event in [HostingEvent::Paid, HostingEvent::Provisioned] {
        assert!(hosting::transition(
            &mut *conn,
            accounts[&HostingStatus::Pending],
            event,
            "",
            "t",
            NOW
        )
        .await
        .unwrap());
    }
    assert!(hosting::transition(
        &mut *conn,
        accounts[&HostingStatus::Active],
        HostingEvent::Terminate,
        "",
        "t",
        NOW
    )
    .await
    .unwrap());
    assert!(hosting::set_domain_status(
        &mut conn,
        domains[&DomainStatus::Expired],
        DomainEvent::Restore,
        NOW
    )
    .await
    .unwrap());
    drop(conn);
    let (live_accounts, live_domains) = (live_accounts - 1, live_domains + 1);
    assert_eq!(counts(w.org).await, (live_accounts, live_domains));

    // Rolled back: counted in the transaction, not after.
    let mut tx = store.begin().await.unwrap();
    hosting::insert_hosting(&mut tx, &account(&w, "rolled.example", "pending"))
        .await
        .unwrap();
    let q = orgs::order_quotas(&mut tx, w.org).await.unwrap().unwrap();
    assert_eq!((q.accounts, q.domains), (live_accounts + 1, live_domains));
    tx.rollback().await.unwrap();
    assert_eq!(counts(w.org).await, (live_accounts, live_domains));

    // Deleted rows (nothing in Lodge deletes them, a restore by hand might).
    for sql in [
        "DELETE FROM hosting_history WHERE hosting_id = $1",
        "DELETE FROM hosting WHERE id = $1",
    ] {
        sqlx::query(sql)
            .bind(accounts[&HostingStatus::Failed].to_string())
            .execute(store.writer())
            .await
            .unwrap();
    }
    sqlx::query("DELETE FROM domains WHERE id = $1")
        .bind(domains[&DomainStatus::PendingRegistration].to_string())
        .execute(store.writer())
        .await
        .unwrap();
    let (live_accounts, live_domains) = (live_accounts - 1, live_domains - 1);
    assert_eq!(counts(w.org).await, (live_accounts, live_domains));

    // Many rows of two organizations in one statement each (as a batch of orders writes
    // them on PostgreSQL, crate::deferred), live and not: each live one counts once, for
    // its own organization.
    let third = world(&store).await;
    let names: Vec<String> = (0..6).map(|i| format!("together{i}.example")).collect();
    let statuses = ["pending", "active", "terminated"];
    let mut tx = store.begin().await.unwrap();
    let keys = lodge_store::billing::reserve_order_keys(&mut tx, names.len())
        .await
        .unwrap();
    let rows: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let owner = if i % 2 == 0 { &w } else { &third };
            (
                account(owner, name, statuses[i % 3]),
                keys.get(i).map(|k| k.hosting),
                domain(owner, DomainId::new(), name, ["active", "expired"][i % 2]),
            )
        })
        .collect();
    async fn write_rows<C: lodge_store::SqlConn>(
        conn: &mut C,
        rows: &[(hosting::NewHosting<'_>, Option<i64>, hosting::NewDomain<'_>)],
        later: bool,
    ) {
        for (a, key, d) in rows {
            hosting::insert_hosting_keyed(conn, a, *key).await.unwrap();
            if later {
                hosting::insert_domain_later(conn, d).await.unwrap();
            } else {
                hosting::insert_domain(conn, d).await.unwrap();
            }
        }
    }
    if store.engine() == lodge_store::Engine::Postgres {
        let mut together = lodge_store::deferred::Deferred::new(&mut tx);
        write_rows(&mut together, &rows, true).await;
        together.flush().await.unwrap();
    } else {
        write_rows(&mut tx, &rows, false).await;
    }
    tx.commit().await.unwrap();
    // w: accounts 0 pending, 2 terminated, 4 active; domains 0, 2, 4 active.
    let (live_accounts, live_domains) = (live_accounts + 2, live_domains + 3);
    assert_eq!(counts(w.org).await, (live_accounts, live_domains));
    // third: accounts 1 active, 3 pending, 5 terminated; domains 1, 3, 5 expired.
    assert_eq!(counts(third.org).await, (2, 0));

    // Another organization's rows are its own; many transactions at once each count.
    let other = world(&store).await;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let name = format!("many{i}.example");
                let mut tx = store.begin().await.unwrap();
                hosting::insert_hosting(&mut tx, &account(&other, &name, "pending"))
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(counts(other.org).await, (16, 0));
    assert_eq!(counts(w.org).await, (live_accounts, live_domains));
    assert_eq!(
        checks::consistency_problems(store.reader()).await.unwrap(),
        Vec::<String>::new()
    );
}

/// What a payment writes moves its invoice once, by a conditional update: its credit with
/// its `paid` status (refused while the credit does not cover what is due, and once it is
/// paid; a zero invoice is paid with no credit). Its order's and accounts' moves are
/// `a_batchs_activations_move_only_from_what_it_read`'s.
async fn a_payment_moves_its_invoice_once(store: Store) {
    use lodge_core::InvoiceStatus;
    let w = world(&store).await;
    let mut conn = store.write_conn().await.unwrap();
    let new = |subtotal: i64, token: &'static str| billing::NewInvoice {
        subtotal_minor: subtotal,
        ..invoice(w.org, token, None)
    };
    let due = billing::insert_invoice(&mut *conn, &new(1000, "pay-due"))
        .await
        .unwrap();
    let zero = billing::insert_invoice(&mut *conn, &new(0, "pay-zero"))
        .await
        .unwrap();
    billing::number_invoices(&mut *conn, &[due, zero], || NOW)
        .await
        .unwrap();
    assert!(billing::apply_credit_in_full(&mut *conn, due, 999, NOW)
        .await
        .unwrap()
        .is_none());
    let before = billing::invoice(&mut *conn, due).await.unwrap().unwrap();
    assert_eq!(
        (before.status, before.credit_applied_minor),
        (InvoiceStatus::Unpaid, 0)
    );
    let paid = billing::apply_credit_in_full(&mut *conn, due, 1000, NOW + 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            paid.status,
            paid.credit_applied_minor,
            paid.paid_at,
            paid.amount_due()
        ),
        (InvoiceStatus::Paid, 1000, Some(NOW + 1), 0)
    );
    let read = billing::invoice(&mut *conn, due).await.unwrap().unwrap();
    assert_eq!(
        (read.status, read.credit_applied_minor),
        (paid.status, 1000)
    );
    assert!(
        billing::apply_credit_in_full(&mut *conn, due, 0, NOW)
            .await
            .unwrap()
            .is_none(),
        "paid once"
    );
    assert!(!billing::mark_paid(&mut *conn, due, NOW).await.unwrap());
    let z = billing::apply_credit_in_full(&mut *conn, zero, 0, NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((z.status, z.credit_applied_minor), (InvoiceStatus::Paid, 0));
}

/// The renewal pass's pages (`renewals::due`, read from a keyset) hold every account due by
/// the horizon exactly once, ordered by due date, organization and id (an organization's
/// accounts due on one date together), and nothing beyond the horizon or not billable;
/// `due_again_all` finds the same accounts again by id.
async fn renewal_pages_hold_every_due_account_once_in_order(store: Store) {
    let mut worlds = Vec::new();
    for _ in 0..3 {
        worlds.push(world(&store).await);
    }
    let dates = [
        "2030-01-05",
        "2030-01-03",
        "2030-02-01",
        "2030-01-03",
        "2031-01-01",
    ];
    let mut conn = store.write_conn().await.unwrap();
    let mut due = Vec::new();
    let mut all = Vec::new();
    for (i, w) in worlds.iter().enumerate() {
        for (j, date) in dates.iter().enumerate() {
            let name = format!("r{i}-{j}.example");
            // One account of each organization is terminated: never billed.
            let status = if j == 2 && i == 1 {
                "terminated"
            } else {
                "active"
            };
            let mut a = account(w, &name, status);
            a.next_due_date = Some((*date).to_owned());
            hosting::insert_hosting(&mut *conn, &a).await.unwrap();
            all.push(a.id);
            if status == "active" && *date <= "2030-06-01" {
                due.push(a.id);
            }
        }
    }
    drop(conn);
    let mut conn = store.write_conn().await.unwrap();
    let mut read = Vec::new();
    let mut after = None;
    loop {
        let page = renewals::due(&mut *conn, "2030-06-01", after.as_ref(), 2)
            .await
            .unwrap();
        if let Some(last) = page.last() {
            after = Some((
                last.organization_id.to_string(),
                last.next_due_date.clone(),
                last.legacy_id,
            ));
        }
        let full = page.len() == 2;
        read.extend(page);
        if !full {
            break;
        }
    }
    let keys: Vec<(String, String, i64)> = read
        .iter()
        .map(|s| {
            (
                s.next_due_date.clone(),
                s.organization_id.to_string(),
                s.legacy_id,
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(keys, sorted, "in order, each once");
    let ids: BTreeSet<HostingId> = read.iter().map(|s| s.id).collect();
    assert_eq!(ids, due.iter().copied().collect::<BTreeSet<_>>());
    let again = renewals::due_again_all(&mut *conn, &all).await.unwrap();
    let again: BTreeSet<HostingId> = again.iter().map(|s| s.id).collect();
    // Found again whatever their date (the caller compares it), but only the billable.
    assert_eq!(again.len(), all.len() - 1, "all but the terminated one");
    assert!(due.iter().all(|id| again.contains(id)));
}

/// A batch of payments reads its orders and their accounts in one statement
/// (`orders_to_activate`) and writes the moves it decided after its last payment
/// (`PendingActivations`): each only from the status it read. A move whose row changed
/// meanwhile fails the write, so the batch runs again a payment at a time.
async fn a_batchs_activations_move_only_from_what_it_read(store: Store) {
    use lodge_core::{HostingStatus, OrderStatus};
    let w = world(&store).await;
    let mut conn = store.write_conn().await.unwrap();
    let a = account(&w, "first.example", "pending");
    let b = account(&w, "second.example", "pending");
    hosting::insert_hosting(&mut *conn, &a).await.unwrap();
    hosting::insert_hosting(&mut *conn, &b).await.unwrap();
    let read = billing::orders_to_activate(&mut *conn, &[w.order, w.order + 1000])
        .await
        .unwrap();
    assert_eq!(read.len(), 1, "the known order only: {read:?}");
    assert_eq!(read[0].status, OrderStatus::Pending);
    let ids: Vec<HostingId> = read[0].accounts.iter().map(|x| x.id).collect();
    assert_eq!(
        ids,
        [a.id, b.id],
        "its accounts in the order they were created"
    );
    assert!(read[0]
        .accounts
        .iter()
        .all(|x| x.status == HostingStatus::Pending));
    drop(conn);

    let moves = |stale: bool| {
        let mut m = billing::PendingActivations::default();
        m.order(w.order, OrderStatus::Pending, OrderStatus::Active, NOW);
        let from = if stale {
            HostingStatus::Active
        } else {
            HostingStatus::Pending
        };
        m.account(
            a.id,
            (from, HostingStatus::Provisioning),
            Some(("2030-01-01".into(), "2030-02-01".into())),
            NOW,
        );
        m.account(
            b.id,
            (HostingStatus::Pending, HostingStatus::Provisioning),
            None,
            NOW,
        );
        m
    };
    // Decided from a status the account no longer has: refused, nothing kept.
    let mut tx = store.begin().await.unwrap();
    assert!(moves(true).write(&mut *tx).await.is_err());
    tx.rollback().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    moves(false).write(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    let mut conn = store.write_conn().await.unwrap();
    let read = billing::orders_to_activate(&mut *conn, &[w.order])
        .await
        .unwrap();
    assert_eq!(read[0].status, OrderStatus::Active);
    let statuses: Vec<HostingStatus> = read[0].accounts.iter().map(|x| x.status).collect();
    assert_eq!(
        statuses,
        [HostingStatus::Provisioning, HostingStatus::Provisioning]
    );
    let due: Vec<Option<String>> = vec![
        hosting::hosting(&mut *conn, a.id)
            .await
            .unwrap()
            .unwrap()
            .next_due_date,
        hosting::hosting(&mut *conn, b.id)
            .await
            .unwrap()
            .unwrap()
            .next_due_date,
    ];
    assert_eq!(due, [Some("2030-02-01".to_owned()), None]);
    drop(conn);
    // Moved once: the same moves again find nothing to move.
    let mut tx = store.begin().await.unwrap();
    assert!(moves(false).write(&mut *tx).await.is_err());
    tx.rollback().await.unwrap();
}

/// A batch of payments pays its first invoices in memory (`PendingActivations::pay_in_full`)
/// and writes them after its last payment, in one statement on PostgreSQL: the rows as
/// `apply_credit_in_full` would leave them, every one or none (one not covered, or paid
/// meanwhile, fails the write).
async fn a_batchs_invoices_are_paid_as_one_payment_would_pay_them(store: Store) {
    use lodge_core::InvoiceStatus;
    let w = world(&store).await;
    let mut conn = store.write_conn().await.unwrap();
    let new = |subtotal: i64, token: &'static str| billing::NewInvoice {
        subtotal_minor: subtotal,
        ..invoice(w.org, token, None)
    };
    let a = billing::insert_invoice(&mut *conn, &new(1000, "batch-a"))
        .await
        .unwrap();
    let b = billing::insert_invoice(&mut *conn, &new(250, "batch-b"))
        .await
        .unwrap();
    let rows = [
        billing::invoice(&mut *conn, a).await.unwrap().unwrap(),
        billing::invoice(&mut *conn, b).await.unwrap().unwrap(),
    ];
    drop(conn);
    let pay = |credits: [i64; 2]| {
        let mut m = billing::PendingActivations::default();
        let paid: Vec<_> = rows
            .iter()
            .zip(credits)
            .map(|(row, credit)| m.pay_in_full(row, credit, NOW + 5))
            .collect();
        (m, paid)
    };
    // One of them not covered: refused, nothing kept.
    let (short, _) = pay([1000, 249]);
    let mut tx = store.begin().await.unwrap();
    assert!(short.write(&mut *tx).await.is_err());
    tx.rollback().await.unwrap();
    let mut conn = store.write_conn().await.unwrap();
    for id in [a, b] {
        let read = billing::invoice(&mut *conn, id).await.unwrap().unwrap();
        assert_eq!(read.status, InvoiceStatus::Unpaid);
    }
    drop(conn);

    let (moves, paid) = pay([1000, 250]);
    let mut tx = store.begin().await.unwrap();
    moves.write(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    let mut conn = store.write_conn().await.unwrap();
    for p in &paid {
        assert_eq!(
            (p.status, p.paid_at, p.modified_at, p.amount_due()),
            (InvoiceStatus::Paid, Some(NOW + 5), NOW + 5, 0)
        );
        let read = billing::invoice(&mut *conn, p.id).await.unwrap().unwrap();
        assert_eq!(&read, p, "the row in memory is the row written");
    }
    drop(conn);
    // Paid once: the same payments again find nothing unpaid.
    let (again, _) = pay([1000, 250]);
    let mut tx = store.begin().await.unwrap();
    assert!(again.write(&mut *tx).await.is_err());
    tx.rollback().await.unwrap();
}

/// A mail whose send started (`sending`) is not started again by another attempt within
/// its in-flight window (another worker may be sending it); after it, it is, marked a
/// possible duplicate; a failed attempt is started again at once.
async fn a_mail_being_sent_is_not_started_again_until_its_window_passed(store: Store) {
    use lodge_store::mail;
    let s = |now: i64| mail::Sending {
        message_id: "<evt_1@lodge.test>",
        event_id: None,
        job_id: None,
        notice: "invoice_paid",
        to_address: "ann@example.com",
        subject: "Paid",
        now,
    };
    let mut conn = store.write_conn().await.unwrap();
    let window = 60_000_000;
    assert!(mail::start_sending(&mut *conn, &s(NOW), NOW - window)
        .await
        .unwrap());
    // 10 s later, another worker: still in flight.
    let t = NOW + 10_000_000;
    assert!(!mail::start_sending(&mut *conn, &s(t), t - window)
        .await
        .unwrap());
    // Past the window (the first worker died mid-send): started again.
    let t = NOW + 70_000_000;
    assert!(mail::start_sending(&mut *conn, &s(t), t - window)
        .await
        .unwrap());
    let row = mail::by_message_id(&mut *conn, "<evt_1@lodge.test>")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.attempts, 2);
    assert!(row.possible_duplicate);
    // A failed attempt is taken again at once.
    mail::finish_sending(
        &mut *conn,
        "<evt_1@lodge.test>",
        "failed",
        None,
        Some("down"),
        t,
    )
    .await
    .unwrap();
    let t = t + 1;
    assert!(mail::start_sending(&mut *conn, &s(t), t - window)
        .await
        .unwrap());
}
