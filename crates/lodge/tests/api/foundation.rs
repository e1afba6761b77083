//! Issue: the foundation (tenancy, credentials, catalog reads, operations).

use jiff::SignedDuration;
use lodge_services::demo::{DEMO_OWNER_EMAIL, DEMO_OWNER_PASSWORD};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::{assert_detail, messages, start_time, Options, TestApp};
use crate::on_both_engines;

on_both_engines!(
    every_bad_field_of_a_body_is_said_at_once,
    a_staff_made_organization_has_a_real_country_and_a_plain_company_name,
    demo_key_lists_demo_plans,
    missing_wrong_revoked_and_expired_credentials_get_401,
    jwt_login_refresh_and_expiry,
    other_organizations_answer_404,
    roles_limit_what_members_may_do,
    non_staff_credentials_get_403_on_the_admin_api,
    invalid_project_bodies_are_refused_and_write_nothing,
    plans_and_projects_paginate_with_absolute_links,
    page_size_is_capped_at_100,
    admin_upserts_lists_and_deactivates_a_plan,
    a_plan_edit_keeps_it_hidden_or_deactivated_unless_it_says_so,
    the_catalog_exported_and_imported_back_is_unchanged,
    bad_plan_specs_are_refused_and_change_nothing,
    admin_edits_coupons_offers_and_tlds,
    starter_discounts_follow_the_ladder_and_groups_are_listed,
    catalog_reads_carry_an_etag_that_changes_with_the_catalog,
);

on_both_engines!(options = three_a_minute; per_minute_limit_answers_429_with_retry_after);
on_both_engines!(options = no_limits; zero_limits_turn_rate_limiting_off);
on_both_engines!(options = two_a_second; burst_limit_per_second_also_limits);

// ---- helpers ----

/// A `400` keyed by field: `{"<field>": ["message", …]}`, no `detail`.
#[track_caller]
fn assert_field_error(status: StatusCode, body: &Value, field: &str) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body.get("detail").is_none(),
        "field-keyed, not detail: {body}"
    );
    let msgs = body[field]
        .as_array()
        .unwrap_or_else(|| panic!("no errors on {field:?}: {body}"));
    assert!(!msgs.is_empty(), "{body}");
    assert!(
        msgs.iter()
            .all(|m| m.as_str().is_some_and(|s| !s.is_empty())),
        "{body}"
    );
}

fn projects_path(org: &str) -> String {
    format!("/v1/organizations/{org}/projects")
}

fn keys_path(org: &str) -> String {
    format!("/v1/organizations/{org}/api-keys")
}

/// The path and query of an absolute link this server sent.
fn local(app: &TestApp, link: &Value) -> String {
    let link = link.as_str().unwrap_or_else(|| panic!("a link: {link}"));
    link.strip_prefix(&app.base)
        .unwrap_or_else(|| panic!("{link} is not under {}", app.base))
        .to_owned()
}

fn ids(page: &Value) -> Vec<String> {
    page["results"]
        .as_array()
        .unwrap_or_else(|| panic!("results: {page}"))
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn login(app: &TestApp, email: &str, password: &str) -> (StatusCode, Value) {
    app.call(
        Method::POST,
        "/v1/auth/login",
        None,
        Some(&json!({ "email": email, "password": password })),
    )
    .await
}

/// A `/v1` body with several bad fields is answered with all of them, keyed by field, as
/// the contract says (found by the /v1 client audit: only the first was said, outside the
/// order endpoint).
async fn every_bad_field_of_a_body_is_said_at_once(app: TestApp) {
    let keys =
        |body: &Value| -> Vec<String> { body.as_object().unwrap().keys().cloned().collect() };
    let (status, body) = app
        .call(Method::POST, "/v1/auth/login", None, Some(&json!({})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(keys(&body), ["email", "password"], "{body}");
    assert_eq!(body["password"][0], "This field is required.", "{body}");

    let (status, body) = app
        .post(
            &format!("/v1/organizations/{}/api-keys", app.org_id()),
            &app.key(),
            &json!({ "name": 7, "scopes": 5, "colour": "red" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(keys(&body), ["colour", "name", "scopes"], "{body}");
    app.stop().await;
}

/// Found by the engines' parity audit: staff creating an organization gave it any country
/// (`ZZ`), kept one as typed (`fr`), and any company name; `/apiv2/account` refused them.
async fn a_staff_made_organization_has_a_real_country_and_a_plain_company_name(app: TestApp) {
    let before = crate::harness::counts(&app).await;
    let (status, body) = app
        .post(
            "/v1/admin/organizations",
            &app.admin_key(),
            &json!({ "name": "Country Org", "country": "ZZ",
                     "company_name": "Line\nbreak" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let fields: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(fields, ["company_name", "country"], "{body}");
    let (status, body) = app
        .post(
            "/v1/admin/organizations",
            &app.admin_key(),
            &json!({ "name": "Long Org", "company_name": "x".repeat(101) }),
        )
        .await;
    assert_field_error(status, &body, "company_name");
    assert_eq!(
        crate::harness::counts(&app).await,
        before,
        "nothing written"
    );
    let (status, body) = app
        .post(
            "/v1/admin/organizations",
            &app.admin_key(),
            &json!({ "name": "French Org", "country": " fr ", "company_name": " Société " }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["country"], "FR", "{body}");
    assert_eq!(body["company_name"], "Société", "{body}");
    app.stop().await;
}

// ---- the demo catalog through /v1 ----

async fn demo_key_lists_demo_plans(app: TestApp) {
    let (status, body) = app.get("/v1/hosting/plans", &app.key()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let names: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"Starter"), "{names:?}");
    assert!(
        !names.contains(&"Legacy Basic"),
        "hidden plans are not listed"
    );
    app.stop().await;
}

// ---- 1. credentials ----

async fn missing_wrong_revoked_and_expired_credentials_get_401(app: TestApp) {
    let org = app.org_id();
    let path = projects_path(&org);

    // No Authorization header.
    let (status, body) = app.call(Method::GET, &path, None, None).await;
    assert_detail(status, &body, StatusCode::UNAUTHORIZED);
    // Not a bearer token.
    let resp = app
        .client
        .get(app.url(&path))
        .header("Authorization", format!("Basic {}", app.key()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    // A key that does not exist, and a garbled JWT.
    for bad in ["sk-lodge-thisisnotakey", "nonsense", "a.b.c"] {
        let (status, body) = app.get(&path, bad).await;
        assert_detail(status, &body, StatusCode::UNAUTHORIZED);
    }

    // A revoked key: works, is revoked by the owner, then answers 401.
    let (status, created) = app
        .post(
            &keys_path(&org),
            &app.key(),
            &json!({ "name": "to revoke" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["key_secret"].as_str().unwrap().to_owned();
    let key_id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["is_active"], true, "{created}");
    assert!(secret.starts_with(created["prefix"].as_str().unwrap()));
    assert_eq!(app.get(&path, &secret).await.0, StatusCode::OK);
    let (status, body) = app
        .delete(&format!("{}/{key_id}", keys_path(&org)), &app.key())
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = app.get(&path, &secret).await;
    assert_detail(status, &body, StatusCode::UNAUTHORIZED);
    assert!(
        body["detail"].as_str().unwrap().contains("revoked"),
        "{body}"
    );
    let (_, list) = app.get(&keys_path(&org), &app.key()).await;
    let listed = list["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == key_id.as_str())
        .unwrap_or_else(|| panic!("revoked key still listed: {list}"));
    assert_eq!(listed["is_active"], false, "{listed}");
    assert!(listed["revoked"].is_string(), "{listed}");
    assert!(listed.get("key_secret").is_none(), "secret shown once only");

    // An expired key: valid for an hour, refused once the clock has moved two.
    let expires = (start_time() + SignedDuration::from_hours(1)).to_string();
    let (status, created) = app
        .post(
            &keys_path(&org),
            &app.key(),
            &json!({ "name": "short-lived", "expires": expires }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let short = created["key_secret"].as_str().unwrap().to_owned();
    assert_eq!(app.get(&path, &short).await.0, StatusCode::OK);
    app.clock.advance(SignedDuration::from_hours(2));
    let (status, body) = app.get(&path, &short).await;
    assert_detail(status, &body, StatusCode::UNAUTHORIZED);
    assert!(
        body["detail"].as_str().unwrap().contains("expired"),
        "{body}"
    );

    // An expiry in the past is refused at creation.
    let (status, body) = app
        .post(
            &keys_path(&org),
            &app.key(),
            &json!({ "name": "stale", "expires": start_time().to_string() }),
        )
        .await;
    assert_field_error(status, &body, "expires");
    // Past the date library's range: said plainly, not with its internal limits.
    let (status, body) = app
        .post(
            &keys_path(&org),
            &app.key(),
            &json!({ "name": "far", "expires": "9999-12-31T23:59:59Z" }),
        )
        .await;
    assert_field_error(status, &body, "expires");
    assert!(
        body["expires"][0]
            .as_str()
            .unwrap()
            .contains("to 9999-12-30"),
        "{body}"
    );
    assert!(!body.to_string().contains(".."), "{body}");
    // A date alone is said to be one; a coupon's expiry is read the same way (found by the
    // engines' parity audit: the date library's "overflowed: parameter 'Unix timestamp
    // seconds'").
    let (status, body) = app
        .post(
            &keys_path(&org),
            &app.key(),
            &json!({ "name": "dated", "expires": "2031-01-01" }),
        )
        .await;
    assert_field_error(status, &body, "expires");
    assert!(
        body["expires"][0].as_str().unwrap().contains("date alone"),
        "{body}"
    );
    let (status, body) = app
        .post(
            "/v1/admin/coupons",
            &app.admin_key(),
            &json!({ "code": "FAR", "kind": "percent", "value": "10",
                     "expires": "9999-12-31T23:59:59Z" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("to 9999-12-30"), "{body}");
    assert!(!body.to_string().contains("overflow"), "{body}");

    // A misspelt restriction is refused, keyed by it, never dropped for the defaults (a
    // read-write key that never expires: found by the attacker's audit).
    let keys_before = app.count("api_keys").await;
    for (field, value) in [
        ("scope", json!(["read"])),
        ("expires_at", json!("2030-01-01T00:00:00Z")),
        ("user_id", json!("x")),
    ] {
        let mut b = json!({ "name": "misspelt" });
        b[field] = value;
        let (status, body) = app.post(&keys_path(&org), &app.key(), &b).await;
        assert_field_error(status, &body, field);
    }
    assert_eq!(app.count("api_keys").await, keys_before);

    // The demo key never stopped working.
    assert_eq!(app.get(&path, &app.key()).await.0, StatusCode::OK);
    app.stop().await;
}

// ---- 2. JWT ----

async fn jwt_login_refresh_and_expiry(app: TestApp) {
    let (status, tokens) = login(&app, DEMO_OWNER_EMAIL, DEMO_OWNER_PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let access = tokens["access"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh"].as_str().unwrap().to_owned();
    assert_ne!(access, refresh);

    // The access token lists the owner's organizations.
    let (status, orgs) = app.get("/v1/organizations", &access).await;
    assert_eq!(status, StatusCode::OK, "{orgs}");
    let orgs = orgs
        .as_array()
        .unwrap_or_else(|| panic!("a plain array: {orgs}"));
    assert_eq!(orgs.len(), 1, "{orgs:?}");
    assert_eq!(orgs[0]["id"], app.org_id().as_str());
    assert_eq!(orgs[0]["name"], "Demo Customer");

    // The refresh token yields a new, working pair.
    let (status, pair) = app
        .call(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(&json!({ "refresh": refresh })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{pair}");
    let access2 = pair["access"].as_str().unwrap().to_owned();
    // Refresh tokens rotate: the next one replaces the first (hardening.rs tests reuse).
    let refresh = pair["refresh"].as_str().unwrap().to_owned();
    assert_ne!(access2, access, "a new access token");
    assert_eq!(
        app.get("/v1/organizations", &access2).await.0,
        StatusCode::OK
    );

    // Wrong password and unknown email: the same 401.
    let (status, wrong) = login(&app, DEMO_OWNER_EMAIL, "not-the-password").await;
    assert_detail(status, &wrong, StatusCode::UNAUTHORIZED);
    let (status, unknown) = login(&app, "nobody@lodge.test", DEMO_OWNER_PASSWORD).await;
    assert_detail(status, &unknown, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong, unknown, "an unknown account is not revealed");
    // A missing field is a 400, not a 401.
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(&json!({ "email": DEMO_OWNER_EMAIL })),
        )
        .await;
    assert_eq!(body, json!({ "password": ["This field is required."] }));
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The token types are not interchangeable.
    let (status, body) = app.get("/v1/organizations", &refresh).await;
    assert_detail(status, &body, StatusCode::UNAUTHORIZED);
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(&json!({ "refresh": access })),
        )
        .await;
    assert_detail(status, &body, StatusCode::UNAUTHORIZED);

    // An hour later the access tokens have expired; the refresh token has not.
    app.clock.advance(SignedDuration::from_hours(1));
    for token in [&access, &access2] {
        let (status, body) = app.get("/v1/organizations", token).await;
        assert_detail(status, &body, StatusCode::UNAUTHORIZED);
    }
    let (status, pair) = app
        .call(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(&json!({ "refresh": refresh })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{pair}");
    let fresh = pair["access"].as_str().unwrap();
    assert_eq!(app.get("/v1/organizations", fresh).await.0, StatusCode::OK);
    let refresh = pair["refresh"].as_str().unwrap().to_owned();

    // Eight days later the refresh token has expired too.
    app.clock.advance(SignedDuration::from_hours(8 * 24));
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(&json!({ "refresh": refresh })),
        )
        .await;
    assert_detail(status, &body, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

// ---- 3. tenancy ----

async fn other_organizations_answer_404(app: TestApp) {
    let owner = app
        .admin_create_user("owner@other-tenant.test", Some("other-tenant-pw"))
        .await;
    let other = app.admin_create_org("Other Tenant", Some(&owner)).await;
    let other_id = other["id"].as_str().unwrap().to_owned();
    assert_eq!(other["name"], "Other Tenant");
    assert_eq!(other["project_count"], 1, "a default project: {other}");
    let other_key = app.admin_create_key(&other_id, None).await;

    // The other tenant sees its own default project and key.
    let (status, page) = app.get(&projects_path(&other_id), &other_key).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let other_project = ids(&page)[0].clone();
    let (status, keys) = app.get(&keys_path(&other_id), &other_key).await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    let other_key_id = ids(&keys)[0].clone();

    // The demo key cannot reach any of it, nor learn that it exists.
    let key = app.key();
    let owner_jwt = login(&app, DEMO_OWNER_EMAIL, DEMO_OWNER_PASSWORD).await.1["access"]
        .as_str()
        .unwrap()
        .to_owned();
    let foreign = [
        projects_path(&other_id),
        format!("{}/{other_project}", projects_path(&other_id)),
        keys_path(&other_id),
        // Another organization's project under one's own organization.
        format!("{}/{other_project}", projects_path(&app.org_id())),
    ];
    for token in [&key, &owner_jwt] {
        for path in &foreign {
            let (status, body) = app.get(path, token).await;
            assert_detail(status, &body, StatusCode::NOT_FOUND);
            assert_eq!(body["detail"], "Not found.", "{path}");
        }
    }
    // Writes into it are refused the same way and write nothing.
    let projects_before = app.count("projects").await;
    let keys_before = app.count("api_keys").await;
    let (status, body) = app
        .post(
            &projects_path(&other_id),
            &key,
            &json!({ "name": "Intruder" }),
        )
        .await;
    assert_detail(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = app
        .post(&keys_path(&other_id), &key, &json!({ "name": "Intruder" }))
        .await;
    assert_detail(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = app
        .delete(&format!("{}/{other_key_id}", keys_path(&other_id)), &key)
        .await;
    assert_detail(status, &body, StatusCode::NOT_FOUND);
    // Its key, addressed through the demo organization, is not found either.
    let (status, body) = app
        .delete(
            &format!("{}/{other_key_id}", keys_path(&app.org_id())),
            &key,
        )
        .await;
    assert_detail(status, &body, StatusCode::NOT_FOUND);
    assert_eq!(app.count("projects").await, projects_before);
    assert_eq!(app.count("api_keys").await, keys_before);
    assert_eq!(
        app.get(&projects_path(&other_id), &other_key).await.0,
        StatusCode::OK,
        "the other tenant's key was not revoked"
    );
    // Unknown and unparseable organization ids are simply not found.
    for org in [uuid_like(), "not-a-uuid".to_owned()] {
        let (status, body) = app.get(&projects_path(&org), &key).await;
        assert_detail(status, &body, StatusCode::NOT_FOUND);
    }

    // Each key lists only its own organization.
    for (token, expected) in [(&key, app.org_id()), (&other_key, other_id.clone())] {
        let (status, orgs) = app.get("/v1/organizations", token).await;
        assert_eq!(status, StatusCode::OK, "{orgs}");
        let listed: Vec<&str> = orgs
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].as_str().unwrap())
            .collect();
        assert_eq!(listed, vec![expected.as_str()]);
    }
    app.stop().await;
}

/// A well-formed id that names nothing.
fn uuid_like() -> String {
    "0190f3c2-7d1e-7a2b-9c4d-5e6f708192a3".to_owned()
}

// ---- 4. roles ----

async fn roles_limit_what_members_may_do(app: TestApp) {
    let org = app.org_id();
    let projects = projects_path(&org);

    // A viewer reads but may not write.
    let viewer = app.demo_member_key("viewer@demo.test", "viewer", &[]).await;
    let (status, page) = app.get(&projects, &viewer).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["count"], 1, "{page}");
    let before = app.count("projects").await;
    let (status, body) = app
        .post(&projects, &viewer, &json!({ "name": "By a viewer" }))
        .await;
    assert_detail(status, &body, StatusCode::FORBIDDEN);
    assert_eq!(app.count("projects").await, before);
    // Keys are the owner's business, and the refusal says so (a viewer was told it "may
    // read": found by the authorization audit).
    let (status, body) = app.get(&keys_path(&org), &viewer).await;
    assert_detail(status, &body, StatusCode::FORBIDDEN);
    assert_eq!(
        body["detail"], "Only an owner of the organization may do this.",
        "{body}"
    );

    // An editor creates projects but does not manage keys.
    let editor = app.demo_member_key("editor@demo.test", "editor", &[]).await;
    let (status, project) = app
        .post(&projects, &editor, &json!({ "name": "By an editor" }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{project}");
    assert_eq!(project["name"], "By an editor");
    assert_eq!(project["organization_id"], org.as_str());
    assert_eq!(project["is_default"], false);
    assert_eq!(app.count("projects").await, before + 1);
    let (status, body) = app
        .post(&keys_path(&org), &editor, &json!({ "name": "editor key" }))
        .await;
    assert_detail(status, &body, StatusCode::FORBIDDEN);

    // A read-only key of the owner may not write either.
    let (status, ro) = app
        .post(
            &keys_path(&org),
            &app.key(),
            &json!({ "name": "read only", "scopes": ["read"] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ro}");
    assert_eq!(ro["scopes"], json!(["read"]));
    let ro = ro["key_secret"].as_str().unwrap();
    assert_eq!(app.get(&projects, ro).await.0, StatusCode::OK);
    let (status, body) = app.post(&projects, ro, &json!({ "name": "x" })).await;
    assert_detail(status, &body, StatusCode::FORBIDDEN);
    // Only staff may hand out the admin scope.
    let (status, body) = app
        .post(
            &keys_path(&org),
            &app.key(),
            &json!({ "name": "sneaky", "scopes": "read admin" }),
        )
        .await;
    assert_field_error(status, &body, "scopes");
    // Every key reads (a key without `read` would read all the same: found by the
    // authorization audit), and a scope named twice is kept once.
    let (status, body) = app
        .post(
            &keys_path(&org),
            &app.key(),
            &json!({ "name": "write only", "scopes": ["write"] }),
        )
        .await;
    assert_field_error(status, &body, "scopes");
    let (status, twice) = app
        .post(
            &keys_path(&org),
            &app.key(),
            &json!({ "name": "twice", "scopes": ["read", "read", "write"] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{twice}");
    assert_eq!(twice["scopes"], json!(["read", "write"]));

    // A guest sees only the project it was added to.
    let guest_project = project["id"].as_str().unwrap().to_owned();
    let guest = app
        .demo_member_key("guest@demo.test", "guest", &[guest_project.as_str()])
        .await;
    let (status, page) = app.get(&projects, &guest).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["count"], 1, "{page}");
    assert_eq!(ids(&page), vec![guest_project.clone()]);
    let (status, one) = app
        .get(&format!("{projects}/{guest_project}"), &guest)
        .await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["name"], "By an editor");
    let (status, body) = app
        .get(&format!("{projects}/{}", app.project_id()), &guest)
        .await;
    assert_detail(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = app.post(&projects, &guest, &json!({ "name": "x" })).await;
    assert_detail(status, &body, StatusCode::FORBIDDEN);
    // Nor the organization's billing, in either dialect (`/apiv2` is the whole account).
    for path in [
        format!("/v1/organizations/{org}/invoices"),
        format!("/v1/organizations/{org}/invoices/1"),
        format!("/v1/organizations/{org}/credit"),
    ] {
        let (status, body) = app.get(&path, &guest).await;
        assert_detail(status, &body, StatusCode::FORBIDDEN);
        assert!(
            body["detail"].as_str().unwrap().contains("guest"),
            "{path}: {body}"
        );
        let (status, _) = app.get(&path, &app.key()).await;
        assert_ne!(status, StatusCode::FORBIDDEN, "{path}: the owner");
    }
    for path in [
        "/apiv2/billing/invoices",
        "/apiv2/websites",
        "/apiv2/account",
    ] {
        let resp = app
            .client
            .get(app.url(path))
            .header("X-API-KEY", &guest)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "403", "{path}: {body}");
    }
    // The owner still sees everything.
    let (_, page) = app.get(&projects, &app.key()).await;
    assert_eq!(page["count"], 2, "{page}");

    // A guest's project must belong to the organization; a refused request adds no one.
    let user = app.admin_create_user("guest2@demo.test", None).await;
    let members = app.count("memberships").await;
    let (status, body) = app
        .post(
            &format!("/v1/admin/organizations/{org}/members"),
            &app.admin_key(),
            &json!({ "user_id": user, "role": "guest", "project_ids": [uuid_like()] }),
        )
        .await;
    assert_field_error(status, &body, "project_ids");
    // And a role is one of the four.
    let (status, body) = app
        .post(
            &format!("/v1/admin/organizations/{org}/members"),
            &app.admin_key(),
            &json!({ "user_id": user, "role": "superuser" }),
        )
        .await;
    assert_field_error(status, &body, "role");
    // An unknown user is an error of the field that names it.
    let (status, body) = app
        .post(
            &format!("/v1/admin/organizations/{org}/members"),
            &app.admin_key(),
            &json!({ "user_id": uuid_like(), "role": "viewer" }),
        )
        .await;
    assert_field_error(status, &body, "user_id");
    // The organization's only owner cannot be made something else.
    let owner: String = sqlx::query_scalar(
        "SELECT user_id FROM memberships WHERE organization_id = $1 AND role = 'owner'",
    )
    .bind(org.clone())
    .fetch_one(app.lodge.store.reader())
    .await
    .expect("the demo owner");
    let (status, body) = app
        .post(
            &format!("/v1/admin/organizations/{org}/members"),
            &app.admin_key(),
            &json!({ "user_id": owner, "role": "viewer" }),
        )
        .await;
    assert_field_error(status, &body, "role");
    assert!(
        body["role"][0].as_str().unwrap().contains("only owner"),
        "{body}"
    );
    assert_eq!(app.count("memberships").await, members);

    // Members count against the organization's user quota; a member's role still changes
    // when it is full.
    let in_org: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM memberships WHERE organization_id = $1")
            .bind(org.clone())
            .fetch_one(app.lodge.store.reader())
            .await
            .unwrap();
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/v1/admin/organizations/{org}/quotas"),
            Some(&app.admin_key()),
            Some(&json!({ "user_quota": in_org })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .post(
            &format!("/v1/admin/organizations/{org}/members"),
            &app.admin_key(),
            &json!({ "user_id": user, "role": "viewer" }),
        )
        .await;
    assert_field_error(status, &body, "non_field_errors");
    assert!(
        body["non_field_errors"][0]
            .as_str()
            .unwrap()
            .contains(&format!("quota of {in_org} users")),
        "{body}"
    );
    assert_eq!(app.count("memberships").await, members, "nothing added");
    let (status, body) = app
        .post(
            &format!("/v1/admin/organizations/{org}/members"),
            &app.admin_key(),
            &json!({ "user_id": owner, "role": "owner" }),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "a member's role, when full: {body}"
    );
    app.stop().await;
}

/// Every staff route (from the route table of `ops.rs`), with ids that name nothing.
fn admin_routes() -> Vec<(Method, String)> {
    let routes: Vec<_> = crate::ops::ROUTES
        .iter()
        .filter(|(_, path)| path.starts_with("/v1/admin/"))
        .map(|(m, path)| {
            (
                Method::from_bytes(m.as_bytes()).unwrap(),
                crate::ops::fill_params(path),
            )
        })
        .collect();
    assert!(routes.len() >= 20, "{routes:?}");
    routes
}

async fn non_staff_credentials_get_403_on_the_admin_api(app: TestApp) {
    let owner_jwt = login(&app, DEMO_OWNER_EMAIL, DEMO_OWNER_PASSWORD).await.1["access"]
        .as_str()
        .unwrap()
        .to_owned();
    let users = app.count("users").await;
    let orgs = app.count("organizations").await;
    let keys = app.count("api_keys").await;
    let body = json!({
        "email": "sneaky@demo.test", "name": "Sneaky", "user_id": uuid_like(),
        "role": "owner", "is_active": false
    });
    for token in [app.key(), owner_jwt] {
        for (method, path) in admin_routes() {
            let send_body = (method != Method::GET).then_some(&body);
            let (status, resp) = app
                .call(method.clone(), &path, Some(&token), send_body)
                .await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {resp}");
            assert_detail(status, &resp, StatusCode::FORBIDDEN);
        }
    }
    assert_eq!(app.count("users").await, users);
    assert_eq!(app.count("organizations").await, orgs);
    assert_eq!(app.count("api_keys").await, keys);
    // Without credentials it is a 401, not a 403.
    let (status, resp) = app.call(Method::GET, "/v1/admin/plans", None, None).await;
    assert_detail(status, &resp, StatusCode::UNAUTHORIZED);
    // The staff key passes.
    assert_eq!(
        app.get("/v1/admin/plans", &app.admin_key()).await.0,
        StatusCode::OK
    );
    app.stop().await;
}

// ---- 5. validation ----

async fn invalid_project_bodies_are_refused_and_write_nothing(app: TestApp) {
    let path = projects_path(&app.org_id());
    let key = app.key();
    let before = app.count("projects").await;

    // Malformed JSON: a `detail`.
    let (status, body) = app
        .call_raw(
            Method::POST,
            &path,
            Some(&key),
            "application/json",
            "{\"name\": ",
        )
        .await;
    assert_detail(status, &body, StatusCode::BAD_REQUEST);
    assert_eq!(app.count("projects").await, before);

    // A field of the wrong type: keyed by that field.
    let (status, body) = app.post(&path, &key, &json!({ "name": 5 })).await;
    assert_field_error(status, &body, "name");
    assert_eq!(app.count("projects").await, before);

    // A missing field: DRF's message, exactly.
    let (status, body) = app.post(&path, &key, &json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, json!({ "name": ["This field is required."] }));
    assert_eq!(app.count("projects").await, before);

    // A blank name (and an empty body, read as `{}`).
    let (status, body) = app.post(&path, &key, &json!({ "name": "   " })).await;
    assert_field_error(status, &body, "name");
    let (status, body) = app
        .call_raw(Method::POST, &path, Some(&key), "application/json", "")
        .await;
    assert_field_error(status, &body, "name");
    // Several bad fields are reported together.
    let (status, body) = app
        .post(
            &path,
            &key,
            &json!({ "name": "", "description": "x".repeat(1001) }),
        )
        .await;
    assert_field_error(status, &body, "name");
    assert_field_error(status, &body, "description");
    // Not an object.
    let (status, body) = app.post(&path, &key, &json!(["name"])).await;
    assert_field_error(status, &body, "non_field_errors");
    // Not JSON at all.
    let (status, body) = app
        .call_raw(Method::POST, &path, Some(&key), "text/plain", "name=x")
        .await;
    assert_detail(status, &body, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(app.count("projects").await, before);

    // A good body is accepted (the count does move).
    let (status, body) = app
        .post(
            &path,
            &key,
            &json!({ "name": "  Website  ", "description": "Our site" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["name"], "Website", "trimmed: {body}");
    assert_eq!(body["description"], "Our site");
    assert_eq!(app.count("projects").await, before + 1);
    let (status, got) = app
        .get(&format!("{path}/{}", body["id"].as_str().unwrap()), &key)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, body, "GET returns what POST created");
    app.stop().await;
}

// ---- 6. pagination ----

async fn plans_and_projects_paginate_with_absolute_links(app: TestApp) {
    let key = app.key();

    // Four listed demo plans, one per page.
    let (status, all) = app.get("/v1/hosting/plans", &key).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(all["count"], 4, "{all}");
    assert_eq!(all["next"], Value::Null);
    assert_eq!(all["previous"], Value::Null);
    let expected = ids(&all);

    let mut path = "/v1/hosting/plans?page_size=1".to_owned();
    let mut seen = Vec::new();
    let mut page_no = 1;
    loop {
        let (status, page) = app.get(&path, &key).await;
        assert_eq!(status, StatusCode::OK, "{path}: {page}");
        assert_eq!(page["count"], 4, "{page}");
        assert_eq!(page["results"].as_array().unwrap().len(), 1, "{page}");
        seen.extend(ids(&page));
        if page_no == 1 {
            assert_eq!(page["previous"], Value::Null);
        } else {
            assert_eq!(
                page["previous"],
                app.url(&format!(
                    "/v1/hosting/plans?page={}&page_size=1",
                    page_no - 1
                ))
                .as_str()
            );
        }
        if page["next"].is_null() {
            break;
        }
        assert_eq!(
            page["next"],
            app.url(&format!(
                "/v1/hosting/plans?page={}&page_size=1",
                page_no + 1
            ))
            .as_str(),
            "absolute next link"
        );
        path = local(&app, &page["next"]);
        page_no += 1;
    }
    assert_eq!(page_no, 4);
    assert_eq!(seen, expected, "the pages cover the list once, in order");

    // Out of range or not a page: 404.
    for q in [
        "page=5&page_size=1",
        "page=2",
        "page=0",
        "page=-1",
        "page=abc",
    ] {
        let (status, body) = app.get(&format!("/v1/hosting/plans?{q}"), &key).await;
        assert_detail(status, &body, StatusCode::NOT_FOUND);
    }
    // A page size that is not a positive number falls back to the default (20).
    for q in ["page_size=0", "page_size=abc", "page_size=-3"] {
        let (status, page) = app.get(&format!("/v1/hosting/plans?{q}"), &key).await;
        assert_eq!(status, StatusCode::OK, "{q}: {page}");
        assert_eq!(ids(&page), expected, "{q}");
    }

    // A repeated parameter takes its last value (as Django does); others are ignored.
    let (status, page) = app
        .get(
            "/v1/hosting/plans?page=1&page_size=1&page=2&ordering=x",
            &key,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(ids(&page), vec![expected[1].clone()]);
    let (status, page) = app
        .get("/v1/hosting/plans?page_size=1&page_size=3", &key)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(ids(&page), expected[..3].to_vec());
    let (status, body) = app
        .get("/v1/hosting/plans?page=9&page=1&page=9", &key)
        .await;
    assert_detail(status, &body, StatusCode::NOT_FOUND);

    // Projects paginate the same way.
    let projects = projects_path(&app.org_id());
    let (status, _) = app
        .post(&projects, &key, &json!({ "name": "Second" }))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, first) = app.get(&format!("{projects}?page_size=1"), &key).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["count"], 2);
    assert_eq!(
        first["results"][0]["is_default"], true,
        "oldest first: {first}"
    );
    assert_eq!(
        first["next"],
        app.url(&format!("{projects}?page=2&page_size=1")).as_str()
    );
    let (status, second) = app.get(&local(&app, &first["next"]), &key).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["results"][0]["name"], "Second");
    assert_eq!(second["next"], Value::Null);
    let (status, body) = app
        .get(&format!("{projects}?page=3&page_size=1"), &key)
        .await;
    assert_detail(status, &body, StatusCode::NOT_FOUND);
    app.stop().await;
}

async fn page_size_is_capped_at_100(app: TestApp) {
    let key = app.key();
    let path = keys_path(&app.org_id());
    let (status, start) = app.get(&path, &key).await;
    assert_eq!(status, StatusCode::OK, "{start}");
    let existing = start["count"].as_i64().unwrap();
    // Key creation has no quota: make the list longer than one capped page.
    let total = 105;
    for i in existing..total {
        let (status, body) = app
            .post(&path, &key, &json!({ "name": format!("key {i}") }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    let (status, page) = app.get(&format!("{path}?page_size=500"), &key).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["count"], total);
    assert_eq!(page["results"].as_array().unwrap().len(), 100);
    assert_eq!(
        page["next"],
        app.url(&format!("{path}?page=2&page_size=100")).as_str(),
        "the link carries the capped size"
    );
    let (status, rest) = app.get(&local(&app, &page["next"]), &key).await;
    assert_eq!(status, StatusCode::OK, "{rest}");
    assert_eq!(rest["results"].as_array().unwrap().len(), 5);
    assert_eq!(rest["next"], Value::Null);
    let mut all = ids(&page);
    all.extend(ids(&rest));
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 105, "no key listed twice");
    let (status, body) = app.get(&format!("{path}?page=3&page_size=100"), &key).await;
    assert_detail(status, &body, StatusCode::NOT_FOUND);
    // The default page is 20.
    let (_, page) = app.get(&path, &key).await;
    assert_eq!(page["results"].as_array().unwrap().len(), 20);
    assert_eq!(
        page["next"],
        app.url(&format!("{path}?page=2&page_size=20")).as_str()
    );
    app.stop().await;
}

// ---- 7. rate limits ----

fn retry_after(resp: &reqwest::Response) -> u64 {
    resp.headers()
        .get("retry-after")
        .unwrap_or_else(|| panic!("a Retry-After header: {:?}", resp.headers()))
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in whole seconds")
}

fn three_a_minute() -> Options {
    Options {
        rate_limit_per_minute: 3,
        rate_limit_burst: 0,
        ..Default::default()
    }
}

async fn per_minute_limit_answers_429_with_retry_after(app: TestApp) {
    // A second key of the same organization, issued before the first is used up.
    let second = app.admin_create_key(&app.org_id(), None).await;
    let key = app.key();
    for i in 0..3 {
        let (status, body) = app.get("/v1/hosting/plans", &key).await;
        assert_eq!(status, StatusCode::OK, "request {i}: {body}");
    }
    let resp = app
        .send(Method::GET, "/v1/hosting/plans", Some(&key), None)
        .await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let secs = retry_after(&resp);
    assert!((1..=20).contains(&secs), "one request per 20 s: {secs}");
    let body: Value = resp.json().await.unwrap();
    assert_detail(
        StatusCode::TOO_MANY_REQUESTS,
        &body,
        StatusCode::TOO_MANY_REQUESTS,
    );
    // Writes are limited too, and write nothing.
    let before = app.count("projects").await;
    let (status, body) = app
        .post(&projects_path(&app.org_id()), &key, &json!({ "name": "x" }))
        .await;
    assert_detail(status, &body, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(app.count("projects").await, before);

    // Limits are per credential: the second key has its own three.
    for i in 0..3 {
        let (status, body) = app.get("/v1/hosting/plans", &second).await;
        assert_eq!(status, StatusCode::OK, "second key, request {i}: {body}");
    }
    assert_eq!(
        app.get("/v1/hosting/plans", &second).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Bad credentials are still a 401, and operations endpoints are not limited.
    let (status, body) = app.get("/v1/hosting/plans", "sk-lodge-nope").await;
    assert_detail(status, &body, StatusCode::UNAUTHORIZED);
    for _ in 0..5 {
        let resp = app.send(Method::GET, "/healthz", None, None).await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    app.stop().await;
}

fn no_limits() -> Options {
    Options {
        rate_limit_per_minute: 0,
        rate_limit_burst: 0,
        ..Default::default()
    }
}

async fn zero_limits_turn_rate_limiting_off(app: TestApp) {
    let key = app.key();
    let requests = (0..50).map(|_| app.get("/v1/hosting/plans", &key));
    let results = futures::future::join_all(requests).await;
    for (i, (status, body)) in results.iter().enumerate() {
        assert_eq!(*status, StatusCode::OK, "request {i}: {body}");
    }
    app.stop().await;
}

fn two_a_second() -> Options {
    Options {
        rate_limit_per_minute: 0,
        rate_limit_burst: 2,
        ..Default::default()
    }
}

async fn burst_limit_per_second_also_limits(app: TestApp) {
    let key = app.key();
    // Ten at once: two (plus one per half second elapsed) pass, the rest are throttled.
    let requests = (0..10).map(|_| app.send(Method::GET, "/v1/hosting/plans", Some(&key), None));
    let responses = futures::future::join_all(requests).await;
    let ok = responses
        .iter()
        .filter(|r| r.status() == StatusCode::OK)
        .count();
    let limited: Vec<_> = responses
        .into_iter()
        .filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert!(ok >= 2, "the burst allows two: {ok} passed");
    assert_eq!(ok + limited.len(), 10, "every answer is 200 or 429");
    assert!(!limited.is_empty(), "ten at once exceed two a second");
    for resp in limited {
        assert_eq!(
            retry_after(&resp),
            1,
            "the wait is under a second, rounded up"
        );
        let body: Value = resp.json().await.unwrap();
        assert_detail(
            StatusCode::TOO_MANY_REQUESTS,
            &body,
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    app.stop().await;
}

// ---- 8. catalog administration ----

fn pro_plan(name: &str, monthly: &str) -> Value {
    json!({
        "slug": "pro-test",
        "group": "web-hosting",
        "name": name,
        "name_fr": "Pro (test)",
        "description": "A plan made in a test.",
        "disk_space_mb": 20480,
        "max_databases": 10,
        "display_order": 9,
        "pricing": [
            { "billing_cycle": "monthly", "price": monthly, "is_default": true },
            { "billing_cycle": "annually", "price": "86.40", "setup_fee": "5.00" },
        ],
    })
}

async fn listed_plan_ids(app: &TestApp) -> Vec<String> {
    let (status, page) = app.get("/v1/hosting/plans?page_size=100", &app.key()).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    ids(&page)
}

async fn admin_upserts_lists_and_deactivates_a_plan(app: TestApp) {
    let admin = app.admin_key();
    let (status, plan) = app
        .post("/v1/admin/plans", &admin, &pro_plan("Pro Test", "8.00"))
        .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    let id = plan["id"].as_str().unwrap().to_owned();
    assert_eq!(plan["name"], "Pro Test");
    assert_eq!(plan["name_en"], "Pro Test", "defaults to the name");
    assert_eq!(plan["name_fr"], "Pro (test)");
    assert_eq!(plan["slug"], "pro-test");
    assert_eq!(plan["group"]["slug"], "web-hosting");
    assert_eq!(plan["hosting_type"], "hostingaccount");
    assert_eq!(plan["disk_space_mb"], 20480);
    assert_eq!(plan["is_active"], true);
    assert!(plan["legacy_id"].as_i64().unwrap() > 11448, "{plan}");
    assert_eq!(
        plan["pricing"],
        json!([
            { "billing_cycle": "monthly", "price": "8.00", "discount_percent": 0,
              "is_default": true, "setup_fee": "0.00" },
            { "billing_cycle": "annually", "price": "86.40", "discount_percent": 10,
              "is_default": false, "setup_fee": "5.00" },
        ])
    );

    // Customers see it.
    assert!(listed_plan_ids(&app).await.contains(&id));
    let (status, got) = app
        .get(&format!("/v1/hosting/plans/{id}"), &app.key())
        .await;
    assert_eq!(status, StatusCode::OK, "{got}");
    // Staff see the customers' object and what decides where and how it is sold.
    let mut customer_view = plan.clone();
    for (field, value) in [
        ("hidden", json!(false)),
        ("once_per_organization", json!(false)),
        ("driver", json!("nginx")),
    ] {
        let staff_only = customer_view.as_object_mut().unwrap().remove(field);
        assert_eq!(staff_only, Some(value), "{field}: {plan}");
    }
    customer_view
        .as_object_mut()
        .unwrap()
        .remove("display_order");
    assert_eq!(
        got, customer_view,
        "the same object in the list and the admin answer"
    );

    // The same slug updates it in place.
    let (status, updated) = app
        .post("/v1/admin/plans", &admin, &pro_plan("Pro Test 2", "9.00"))
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["id"], id.as_str());
    assert_eq!(updated["legacy_id"], plan["legacy_id"]);
    assert_eq!(updated["name"], "Pro Test 2");
    assert_eq!(updated["pricing"][0]["price"], "9.00");
    assert_eq!(updated["pricing"].as_array().unwrap().len(), 2);
    let (_, got) = app
        .get(&format!("/v1/hosting/plans/{id}"), &app.key())
        .await;
    assert_eq!(got["name"], "Pro Test 2");

    // Deactivated: gone from the list and from the detail route; staff still see it.
    let active = format!("/v1/admin/plans/{id}/active");
    let (status, body) = app
        .post(&active, &admin, &json!({ "is_active": false }))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(!listed_plan_ids(&app).await.contains(&id));
    let (status, body) = app
        .get(&format!("/v1/hosting/plans/{id}"), &app.key())
        .await;
    assert_detail(status, &body, StatusCode::NOT_FOUND);
    let (status, all) = app.get("/v1/admin/plans", &admin).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    let staff_view = all
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id.as_str())
        .unwrap_or_else(|| panic!("staff list has every plan: {all}"));
    assert_eq!(staff_view["is_active"], false);
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "Legacy Basic"),
        "hidden plans too"
    );

    // Reactivated: back.
    let (status, _) = app
        .post(&active, &admin, &json!({ "is_active": true }))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(listed_plan_ids(&app).await.contains(&id));

    // Unknown plans and bad bodies.
    let (status, body) = app
        .post(
            &format!("/v1/admin/plans/{}/active", uuid_like()),
            &admin,
            &json!({ "is_active": false }),
        )
        .await;
    assert_detail(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = app.post(&active, &admin, &json!({})).await;
    assert_eq!(body, json!({ "is_active": ["This field is required."] }));
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Hidden plans are not listed but can be fetched by id.
    let legacy_basic = all
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "Legacy Basic")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!listed_plan_ids(&app).await.contains(&legacy_basic));
    let (status, _) = app
        .get(&format!("/v1/hosting/plans/{legacy_basic}"), &app.key())
        .await;
    assert_eq!(status, StatusCode::OK);
    app.stop().await;
}

/// A plan hidden or deactivated stays so through an edit (staff API or catalog import) that
/// does not say `hidden` or `is_active` (found by the operator audit: a price change put a
/// hidden plan on sale and brought a deactivated one back).
async fn a_plan_edit_keeps_it_hidden_or_deactivated_unless_it_says_so(app: TestApp) {
    let admin = app.admin_key();
    let mut hidden = pro_plan("Pro Test", "8.00");
    hidden["hidden"] = json!(true);
    let (status, plan) = app.post("/v1/admin/plans", &admin, &hidden).await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["hidden"], true, "{plan}");
    let id = plan["id"].as_str().unwrap().to_owned();
    assert!(!listed_plan_ids(&app).await.contains(&id));
    let (status, plan) = app
        .post("/v1/admin/plans", &admin, &pro_plan("Pro Test", "9.00"))
        .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["pricing"][0]["price"], "9.00");
    assert_eq!(plan["hidden"], true, "{plan}");
    assert!(!listed_plan_ids(&app).await.contains(&id), "still hidden");
    // Deactivated, then changed by a catalog file that says nothing of it.
    let (status, _) = app
        .post(
            &format!("/v1/admin/plans/{id}/active"),
            &admin,
            &json!({ "is_active": false }),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let file = json!({ "plans": [{ "slug": "pro-test", "group": "web-hosting", "name": "Pro Test",
                                    "hidden": false,
                                    "pricing": [{ "billing_cycle": "monthly", "price": "7.00",
                                                  "is_default": true }] }] });
    let (status, r) = app.post("/v1/admin/catalog/import", &admin, &file).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let (_, all) = app.get("/v1/admin/plans", &admin).await;
    let staff_view = all
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{all}"))
        .clone();
    assert_eq!(
        staff_view["is_active"], false,
        "still deactivated: {staff_view}"
    );
    assert_eq!(staff_view["pricing"][0]["price"], "7.00", "{staff_view}");
    assert!(!listed_plan_ids(&app).await.contains(&id));
    // Said: active again, and no longer hidden (the file said so).
    let mut on = pro_plan("Pro Test", "7.00");
    on["is_active"] = json!(true);
    let (status, plan) = app.post("/v1/admin/plans", &admin, &on).await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert!(listed_plan_ids(&app).await.contains(&id));
    app.stop().await;
}

/// The catalog exported, imported back and exported again is the same file, and the
/// catalog itself unchanged (found by the operator audit: there was no way to get it out,
/// while an import writes each item whole). A deactivated plan and coupon stay so.
async fn the_catalog_exported_and_imported_back_is_unchanged(app: TestApp) {
    let admin = app.admin_key();
    let (status, all) = app.get("/v1/admin/plans", &admin).await;
    assert_eq!(status, StatusCode::OK);
    let starter = all
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["slug"] == "starter")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = app
        .post(
            &format!("/v1/admin/plans/{starter}/active"),
            &admin,
            &json!({ "is_active": false }),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let before = catalog_snapshot(&app).await;
    let (status, file) = app.get("/v1/admin/catalog/export", &admin).await;
    assert_eq!(status, StatusCode::OK, "{file}");
    assert_eq!(
        file["plans"].as_array().unwrap().len(),
        5,
        "hidden and inactive too: {file}"
    );
    let exported_starter = file["plans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["slug"] == "starter")
        .unwrap();
    assert_eq!(exported_starter["is_active"], false, "{exported_starter}");
    assert!(
        file["coupons"].as_array().is_some_and(|c| !c.is_empty()),
        "{file}"
    );
    assert!(
        file["tlds"].as_array().is_some_and(|t| !t.is_empty()),
        "{file}"
    );
    let (status, summary) = app.post("/v1/admin/catalog/import", &admin, &file).await;
    assert_eq!(status, StatusCode::OK, "{summary}");
    let (_, again) = app.get("/v1/admin/catalog/export", &admin).await;
    assert_eq!(again, file, "the same file after a round trip");
    let after = catalog_snapshot(&app).await;
    assert_eq!(after, before, "the same catalog");
    let (status, _) = app.get("/v1/admin/catalog/export", &app.key()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    app.stop().await;
}

/// Row counts of the catalog tables and the staff view of every plan.
async fn catalog_snapshot(app: &TestApp) -> (Vec<i64>, Value) {
    let mut counts = Vec::new();
    for t in [
        "plan_groups",
        "plans",
        "plan_prices",
        "service_offers",
        "coupons",
        "tlds",
        "tld_prices",
    ] {
        counts.push(app.count(t).await);
    }
    let (status, plans) = app.get("/v1/admin/plans", &app.admin_key()).await;
    assert_eq!(status, StatusCode::OK, "{plans}");
    (counts, plans)
}

async fn bad_plan_specs_are_refused_and_change_nothing(app: TestApp) {
    let admin = app.admin_key();
    let before = catalog_snapshot(&app).await;
    // Each case reuses the demo Starter's slug, so a partial write would show.
    let starter = |pricing: Value| json!({ "slug": "starter", "group": "web-hosting", "name": "Changed", "pricing": pricing });
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            starter(json!([{ "billing_cycle": "fortnightly", "price": "1.00" }])),
            "pricing",
            "billing cycle",
        ),
        (
            starter(json!([{ "billing_cycle": "monthly", "price": "-1.00" }])),
            "pricing",
            "negative",
        ),
        (
            starter(json!([{ "billing_cycle": "monthly", "price": "\u{2212}1.00" }])),
            "pricing",
            "1.00",
        ),
        (
            starter(json!([{ "billing_cycle": "monthly", "price": "abc" }])),
            "pricing",
            "abc",
        ),
        (
            starter(json!([
                { "billing_cycle": "monthly", "price": "5.00", "is_default": true },
                { "billing_cycle": "annually", "price": "50.00", "is_default": true },
            ])),
            "pricing",
            "default",
        ),
        (
            starter(json!([
                { "billing_cycle": "monthly", "price": "5.00" },
                { "billing_cycle": "monthly", "price": "6.00" },
            ])),
            "pricing",
            "twice",
        ),
        (
            starter(json!([{ "billing_cycle": "free", "price": "1.00" }])),
            "pricing",
            "free",
        ),
        (starter(json!([])), "pricing", "price"),
        (
            json!({ "slug": "starter", "group": "no-such-group", "name": "X",
                    "pricing": [{ "billing_cycle": "monthly", "price": "1.00" }] }),
            "group",
            "group",
        ),
        (
            json!({ "slug": "Not A Slug", "group": "web-hosting", "name": "X",
                    "pricing": [{ "billing_cycle": "monthly", "price": "1.00" }] }),
            "slug",
            "slug",
        ),
        (
            json!({ "slug": "starter", "group": "web-hosting", "name": "X" }),
            "pricing",
            "required",
        ),
        (
            json!({ "slug": "starter", "group": "web-hosting", "name": "X", "colour": "red",
                    "pricing": [{ "billing_cycle": "monthly", "price": "1.00" }] }),
            "colour",
            "unknown field",
        ),
        (
            json!({ "slug": "starter", "group": "web-hosting", "name": "X", "disk_space_mb": "big",
                    "pricing": [{ "billing_cycle": "monthly", "price": "1.00" }] }),
            "disk_space_mb",
            "",
        ),
    ];
    for (spec, field, phrase) in cases {
        let (status, body) = app.post("/v1/admin/plans", &admin, &spec).await;
        assert_field_error(status, &body, field);
        assert!(
            messages(&body, field).contains(phrase),
            "{field} should mention {phrase:?}: {body} (for {spec})"
        );
        assert_eq!(
            catalog_snapshot(&app).await,
            before,
            "nothing changed by {spec}"
        );
    }
    // A whole-file import with one bad item writes none of the good ones.
    let (status, body) = app
        .post(
            "/v1/admin/catalog/import",
            &admin,
            &json!({
                "groups": [{ "slug": "new-group", "name": "New group" }],
                "plans": [{ "slug": "new-plan", "group": "new-group", "name": "New",
                            "pricing": [{ "billing_cycle": "monthly", "price": "1.00" }] }],
                "tlds": [{ "tld": "dev", "prices": [{ "years": 2, "register": "1.00",
                           "renew": "1.00", "transfer": "1.00" }] }],
            }),
        )
        .await;
    assert_field_error(status, &body, "tlds");
    let (status, body) = app
        .post(
            "/v1/admin/catalog/import",
            &admin,
            &json!({ "currency": "EUR", "groups": [{ "slug": "eur", "name": "Euro" }] }),
        )
        .await;
    assert_field_error(status, &body, "currency");
    assert_eq!(catalog_snapshot(&app).await, before);
    // Starter still sells at 5.00 a month.
    let (_, page) = app.get("/v1/hosting/plans", &app.key()).await;
    let starter = page["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["slug"] == "starter")
        .unwrap();
    assert_eq!(starter["name"], "Starter");
    assert_eq!(starter["pricing"][0]["price"], "5.00");
    app.stop().await;
}

fn find<'a>(list: &'a Value, key: &str, value: &Value) -> Option<&'a Value> {
    list.as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .find(|x| &x[key] == value)
}

async fn admin_edits_coupons_offers_and_tlds(app: TestApp) {
    let admin = app.admin_key();

    // Coupons: create, list, update by code, deactivate; a bad one is refused.
    let (status, coupon) = app
        .post(
            "/v1/admin/coupons",
            &admin,
            &json!({ "code": "SPRING25", "kind": "percent", "value": "25", "plan": "business",
                     "max_uses": 10, "expires": "2026-06-01T00:00:00Z" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{coupon}");
    assert_eq!(coupon["code"], "SPRING25");
    assert_eq!(coupon["kind"], "percent");
    assert_eq!(coupon["value"], "25.00");
    assert_eq!(coupon["max_uses"], 10);
    assert_eq!(coupon["uses"], 0);
    assert_eq!(coupon["is_active"], true);
    assert!(coupon["plan_id"].is_string(), "{coupon}");
    assert!(coupon["expires"]
        .as_str()
        .unwrap()
        .starts_with("2026-06-01T00:00:00"));
    let (status, list) = app.get("/v1/admin/coupons", &admin).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    for code in ["WELCOME10", "SAVE5", "STARTER1", "SPRING25"] {
        assert!(
            find(&list, "code", &json!(code)).is_some(),
            "{code}: {list}"
        );
    }
    assert_eq!(
        find(&list, "code", &json!("SAVE5")).unwrap()["value"],
        "5.00"
    );
    assert_eq!(
        find(&list, "code", &json!("SAVE5")).unwrap()["kind"],
        "fixed_amount"
    );
    let (status, updated) = app
        .post(
            "/v1/admin/coupons",
            &admin,
            &json!({ "code": "SPRING25", "kind": "percent", "value": "12.5" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["id"], coupon["id"], "updated by code");
    assert_eq!(updated["value"], "12.50");
    // A code is one code whatever its case: `Spring25` updates SPRING25 (kept as written
    // first), and no second coupon is made that the order form could not tell apart.
    let coupons_before = app.count("coupons").await;
    let (status, same) = app
        .post(
            "/v1/admin/coupons",
            &admin,
            &json!({ "code": "Spring25", "kind": "percent", "value": "12.5" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{same}");
    assert_eq!(same["id"], coupon["id"], "{same}");
    assert_eq!(same["code"], "SPRING25", "{same}");
    assert_eq!(app.count("coupons").await, coupons_before);
    let (status, body) = app
        .post(
            &format!(
                "/v1/admin/coupons/{}/deactivate",
                coupon["id"].as_str().unwrap()
            ),
            &admin,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (_, list) = app.get("/v1/admin/coupons", &admin).await;
    assert_eq!(
        find(&list, "code", &json!("SPRING25")).unwrap()["is_active"],
        false
    );
    // Each error is keyed by the field of the request it is about.
    for (bad, field) in [
        (
            json!({ "code": "BAD", "kind": "bogus", "value": "5" }),
            "kind",
        ),
        (
            json!({ "code": "BAD", "kind": "percent", "value": "150" }),
            "value",
        ),
        (
            json!({ "code": "has space", "kind": "percent", "value": "5" }),
            "code",
        ),
        (
            json!({ "code": "BAD", "kind": "fixed_amount", "value": "-5.00" }),
            "value",
        ),
        (
            json!({ "code": "BAD", "kind": "percent", "value": "5", "plan": "no-such-plan" }),
            "plan",
        ),
    ] {
        let (status, body) = app.post("/v1/admin/coupons", &admin, &bad).await;
        assert_field_error(status, &body, field);
        assert!(body.get("coupons").is_none(), "{body}");
    }
    assert_eq!(app.count("coupons").await, coupons_before);
    let (status, body) = app
        .post(
            &format!("/v1/admin/coupons/{}/deactivate", uuid_like()),
            &admin,
            &json!({}),
        )
        .await;
    assert_detail(status, &body, StatusCode::NOT_FOUND);

    // Offers: the demo one is listed; a new one by legacy id; deactivation.
    let (status, offers) = app.get("/v1/admin/offers", &admin).await;
    assert_eq!(status, StatusCode::OK, "{offers}");
    let demo_offer = find(&offers, "legacy_id", &json!(136)).unwrap_or_else(|| panic!("{offers}"));
    assert_eq!(demo_offer["intro_total"], "36.00");
    assert_eq!(demo_offer["renewal"], "54.00");
    let offer = json!({ "legacy_id": 500, "plan": "business", "intro_total": "90.00",
                        "intro_months": 12, "renewal": "108.00", "renewal_months": 12 });
    let (status, offers) = app.post("/v1/admin/offers", &admin, &offer).await;
    assert_eq!(status, StatusCode::OK, "{offers}");
    assert_eq!(offers.as_array().unwrap().len(), 2, "{offers}");
    let created = find(&offers, "legacy_id", &json!(500)).unwrap().clone();
    assert_eq!(created["intro_total"], "90.00");
    assert_eq!(created["intro_months"], 12);
    assert_eq!(created["is_active"], true);
    let business = listed_plan_by_slug(&app, "business").await;
    assert_eq!(created["plan_id"], business["id"]);
    // Same legacy id: an update, not a second offer.
    let mut changed = offer.clone();
    changed["intro_total"] = json!("80.00");
    let (status, offers) = app.post("/v1/admin/offers", &admin, &changed).await;
    assert_eq!(status, StatusCode::OK, "{offers}");
    assert_eq!(offers.as_array().unwrap().len(), 2, "{offers}");
    let again = find(&offers, "legacy_id", &json!(500)).unwrap();
    assert_eq!(again["id"], created["id"]);
    assert_eq!(again["intro_total"], "80.00");
    let (status, _) = app
        .post(
            &format!(
                "/v1/admin/offers/{}/deactivate",
                created["id"].as_str().unwrap()
            ),
            &admin,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, offers) = app.get("/v1/admin/offers", &admin).await;
    assert_eq!(
        find(&offers, "legacy_id", &json!(500)).unwrap()["is_active"],
        false
    );
    let offers_before = app.count("service_offers").await;
    for (bad, field) in [
        (
            json!({ "plan": "business", "intro_total": "1.00", "intro_months": 5,
                "renewal": "1.00", "renewal_months": 12 }),
            "intro_months",
        ),
        (
            json!({ "plan": "no-such-plan", "intro_total": "1.00", "intro_months": 12,
                "renewal": "1.00", "renewal_months": 12 }),
            "plan",
        ),
        (
            json!({ "plan": "business", "intro_total": "x", "intro_months": 12,
                "renewal": "1.00", "renewal_months": 12 }),
            "intro_total",
        ),
    ] {
        let (status, body) = app.post("/v1/admin/offers", &admin, &bad).await;
        assert_field_error(status, &body, field);
    }
    assert_eq!(app.count("service_offers").await, offers_before);

    // TLDs: a new one (name normalised), listed, closed for sale; bad ones refused.
    let (status, tld) = app
        .post(
            "/v1/admin/tlds",
            &admin,
            &json!({ "tld": ".IO", "category": "country", "max_years": 5, "prices": [
                { "years": 1, "register": "40.00", "renew": "45.00", "transfer": "40.00" },
                { "years": 2, "register": "80.00", "renew": "90.00", "transfer": "80.00" },
            ] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{tld}");
    assert_eq!(tld["tld"], "io");
    assert_eq!(tld["display_name"], ".io");
    assert_eq!(tld["category"], "country");
    assert_eq!(tld["is_registration_available"], true);
    assert_eq!(tld["min_registration_years"], 1);
    assert_eq!(tld["max_registration_years"], 5);
    assert_eq!(
        tld["pricing"][0],
        json!({ "years": 1, "registration_price": "40.00", "renewal_price": "45.00",
                "transfer_price": "40.00" })
    );
    let (status, tlds) = app.get("/v1/admin/tlds", &admin).await;
    assert_eq!(status, StatusCode::OK, "{tlds}");
    for name in ["com", "net", "org", "io"] {
        assert!(find(&tlds, "tld", &json!(name)).is_some(), "{name}: {tlds}");
    }
    let (status, _) = app
        .post(
            "/v1/admin/tlds/io/active",
            &admin,
            &json!({ "is_active": false }),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, tlds) = app.get("/v1/admin/tlds", &admin).await;
    let io = find(&tlds, "tld", &json!("io")).unwrap();
    assert_eq!(io["is_registration_available"], false);
    assert_eq!(io["is_transfer_available"], false);
    let (status, body) = app
        .post(
            "/v1/admin/tlds/nosuch/active",
            &admin,
            &json!({ "is_active": false }),
        )
        .await;
    assert_detail(status, &body, StatusCode::NOT_FOUND);
    let tlds_before = (app.count("tlds").await, app.count("tld_prices").await);
    for (bad, field) in [
        (
            json!({ "tld": "dev", "prices": [{ "years": 2, "register": "1.00", "renew": "1.00", "transfer": "1.00" }] }),
            "prices",
        ),
        (
            json!({ "tld": "bad tld", "prices": [{ "years": 1, "register": "1.00", "renew": "1.00", "transfer": "1.00" }] }),
            "tld",
        ),
        (
            json!({ "tld": "dev", "min_years": 3, "max_years": 2, "prices": [{ "years": 1, "register": "1.00", "renew": "1.00", "transfer": "1.00" }] }),
            "min_years",
        ),
        (
            json!({ "tld": "dev", "prices": [{ "years": 1, "register": "-1.00", "renew": "1.00", "transfer": "1.00" }] }),
            "prices",
        ),
    ] {
        let (status, body) = app.post("/v1/admin/tlds", &admin, &bad).await;
        assert_field_error(status, &body, field);
    }
    assert_eq!(
        (app.count("tlds").await, app.count("tld_prices").await),
        tlds_before
    );
    app.stop().await;
}

async fn listed_plan_by_slug(app: &TestApp, slug: &str) -> Value {
    let (status, page) = app.get("/v1/hosting/plans?page_size=100", &app.key()).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    find(&page["results"], "slug", &json!(slug))
        .unwrap_or_else(|| panic!("{slug} not listed: {page}"))
        .clone()
}

async fn starter_discounts_follow_the_ladder_and_groups_are_listed(app: TestApp) {
    let starter = listed_plan_by_slug(&app, "starter").await;
    let ladder: Vec<(String, String, i64, bool)> = starter["pricing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["billing_cycle"].as_str().unwrap().to_owned(),
                p["price"].as_str().unwrap().to_owned(),
                p["discount_percent"].as_i64().unwrap(),
                p["is_default"].as_bool().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, String, i64, bool)> = [
        ("monthly", "5.00", 0, true),
        ("quarterly", "15.00", 0, false),
        ("semi_annually", "28.50", 5, false),
        ("annually", "54.00", 10, false),
        ("biennially", "102.00", 15, false),
        ("triennially", "144.00", 20, false),
    ]
    .into_iter()
    .map(|(c, p, d, def)| (c.to_owned(), p.to_owned(), d, def))
    .collect();
    assert_eq!(ladder, expected);
    assert_eq!(starter["legacy_id"], 11447);
    assert_eq!(starter["name_fr"], "Débutant");
    assert_eq!(starter["group"]["name_fr"], "Hébergement web");

    // Both demo groups, in display order, in the list envelope (page by page too).
    let (status, page) = app.get("/v1/hosting/plan-groups", &app.key()).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["count"], 2, "{page}");
    assert_eq!(page["next"], Value::Null, "{page}");
    let groups = page["results"].clone();
    let slugs: Vec<&str> = groups
        .as_array()
        .unwrap_or_else(|| panic!("results: {page}"))
        .iter()
        .map(|g| g["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, vec!["web-hosting", "reseller-hosting"]);
    assert_eq!(groups[1]["name"], "Reseller Hosting");
    assert_eq!(groups[1]["is_active"], true);
    let (status, second) = app
        .get("/v1/hosting/plan-groups?page=2&page_size=1", &app.key())
        .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["count"], 2, "{second}");
    assert_eq!(second["results"].as_array().unwrap().len(), 1, "{second}");
    assert_eq!(second["results"][0]["slug"], "reseller-hosting");
    assert!(
        second["previous"].as_str().unwrap().contains("page_size=1"),
        "{second}"
    );
    let (status, bad) = app.get("/v1/hosting/plan-groups?page=0", &app.key()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "as every list's: {bad}");

    // A group made through the admin API appears; a deactivated one takes its plans along.
    let (status, group) = app
        .post(
            "/v1/admin/plan-groups",
            &app.admin_key(),
            &json!({ "slug": "vps", "name": "VPS", "display_order": 3 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{group}");
    assert_eq!(group["name_fr"], "VPS");
    let reseller_id = groups[1]["id"].as_str().unwrap();
    let (status, _) = app
        .post(
            &format!("/v1/admin/plan-groups/{reseller_id}/active"),
            &app.admin_key(),
            &json!({ "is_active": false }),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, groups) = app.get("/v1/hosting/plan-groups", &app.key()).await;
    let slugs: Vec<&str> = groups["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, vec!["web-hosting", "vps"]);
    let (_, page) = app.get("/v1/hosting/plans", &app.key()).await;
    assert!(
        find(&page["results"], "slug", &json!("reseller-boost")).is_none(),
        "{page}"
    );
    assert_eq!(page["count"], 3);
    app.stop().await;
}

// ---- catalog reads: the same bytes per catalog version, with an ETag ----

/// (status, ETag, body bytes) of a GET sent with `If-None-Match: tag` when given.
async fn get_tagged(
    app: &TestApp,
    path: &str,
    v2: bool,
    tag: Option<&str>,
) -> (StatusCode, String, Vec<u8>) {
    let mut req = app.client.get(app.url(path));
    req = if v2 {
        req.header("X-API-KEY", app.key())
    } else {
        req.bearer_auth(app.key())
    };
    if let Some(t) = tag {
        req = req.header("If-None-Match", t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let etag = resp
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, etag, resp.bytes().await.unwrap().to_vec())
}

async fn catalog_reads_carry_an_etag_that_changes_with_the_catalog(app: TestApp) {
    for (path, v2) in [
        ("/v1/hosting/plans", false),
        ("/v1/hosting/plans?page_size=1&page=2", false),
        ("/apiv2/websites/order", true),
    ] {
        let (status, tag, body) = get_tagged(&app, path, v2, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(tag.starts_with('"') && tag.len() > 8, "{path}: {tag:?}");
        serde_json::from_slice::<Value>(&body).expect("JSON");
        // The same bytes and tag again; the tag back gets 304 and no body, weak or strong,
        // alone or in a list; another tag gets the page.
        let (_, again, body2) = get_tagged(&app, path, v2, None).await;
        assert_eq!((again.as_str(), &body2), (tag.as_str(), &body), "{path}");
        for sent in [tag.clone(), format!("W/{tag}"), format!("\"nope\", {tag}")] {
            let (status, same, empty) = get_tagged(&app, path, v2, Some(&sent)).await;
            assert_eq!(status, StatusCode::NOT_MODIFIED, "{path} {sent}");
            assert_eq!(same, tag);
            assert!(empty.is_empty());
        }
        let (status, _, full) = get_tagged(&app, path, v2, Some("\"nope\"")).await;
        assert_eq!((status, &full), (StatusCode::OK, &body), "{path}");
        // Without credentials: still 401, tag or not.
        let resp = app
            .client
            .get(app.url(path))
            .header("If-None-Match", &tag)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
    }

    // A catalog change gives new bytes and a new tag; the old tag gets the new page.
    let (_, plans_tag, plans) = get_tagged(&app, "/v1/hosting/plans", false, None).await;
    let (_, form_tag, form) = get_tagged(&app, "/apiv2/websites/order", true, None).await;
    let (status, plan) = app
        .post(
            "/v1/admin/plans",
            &app.admin_key(),
            &pro_plan("Pro Tagged", "8.00"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    let (status, tag, body) = get_tagged(&app, "/v1/hosting/plans", false, Some(&plans_tag)).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(tag, plans_tag);
    assert_ne!(body, plans);
    assert!(String::from_utf8(body).unwrap().contains("Pro Tagged"));
    let (status, tag, body) =
        get_tagged(&app, "/apiv2/websites/order", true, Some(&form_tag)).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(tag, form_tag);
    assert_ne!(body, form);
    app.stop().await;
}
