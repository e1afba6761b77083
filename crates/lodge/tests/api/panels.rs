//! Issue 20: control panels. Lodge drives DirectAdmin, cPanel/WHM and Plesk through the
//! worker, against the testkit's stateful fakes of their published APIs (over TLS, the
//! fake's self-signed certificate pinned by its fingerprint). Each fake keeps accounts,
//! packages, suspension and owners, checks its auth and records every request, which the
//! tests compare with the documented parameters.

use jiff::SignedDuration;
use lodge_services::drivers::panel_username;
use lodge_services::provisioning::Worker;
use lodge_testkit::cpanel::FakeWhm;
use lodge_testkit::directadmin::FakeDirectAdmin;
use lodge_testkit::plesk::FakePlesk;
use lodge_testkit::tls::{Cert, Recorded};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::{add_credit, hosting, hosting_path, str_of, v2, Auth, TestApp};
use crate::on_both_engines;

on_both_engines!(
    directadmin_lifecycle_through_the_worker,
    cpanel_lifecycle_through_the_worker,
    plesk_lifecycle_through_the_worker,
    a_lost_create_answer_is_retried_into_one_account,
    a_whm_account_still_being_created_is_waited_for,
    a_termination_waits_for_the_panels_creation,
    a_password_whm_finds_too_weak,
    a_name_owned_by_someone_else_fails_visibly,
    a_domain_on_another_directadmin_user_is_not_taken_as_success,
    a_directadmin_command_the_key_may_not_run_is_not_done,
    a_wrong_token_is_a_clear_error,
    the_pinned_certificate_is_required,
    a_key_pin_outlives_the_panels_certificate_renewal,
    placement_takes_the_least_filled_server_of_the_plans_driver,
    an_internationalized_domain_stays_ours_on_plesk,
);

// ---- the three fakes behind one face ----

/// What a test reads of an account on a fake panel.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    domain: String,
    package: String,
    suspended: bool,
    password: String,
    owner: String,
}

#[derive(Debug, Clone)]
enum Fake {
    Da(FakeDirectAdmin),
    Whm(FakeWhm),
    Plesk(FakePlesk),
}

const SECRET: &str = "s3cret-Token_0123456789";

impl Fake {
    async fn start(driver: &str) -> Fake {
        match driver {
            "directadmin" => Fake::Da(
                FakeDirectAdmin::start(SECRET, &["bronze", "silver"], true)
                    .await
                    .unwrap(),
            ),
            "cpanel" => Fake::Whm(
                FakeWhm::start(SECRET, &["root_bronze", "root_silver"], true)
                    .await
                    .unwrap(),
            ),
            "plesk" => Fake::Plesk(
                FakePlesk::start(SECRET, &["Bronze Plan", "Silver Plan"], true)
                    .await
                    .unwrap(),
            ),
            other => panic!("no fake {other}"),
        }
    }

    fn driver(&self) -> &'static str {
        match self {
            Fake::Da(_) => "directadmin",
            Fake::Whm(_) => "cpanel",
            Fake::Plesk(_) => "plesk",
        }
    }

    fn url(&self) -> String {
        match self {
            Fake::Da(f) => f.url(),
            Fake::Whm(f) => f.url(),
            Fake::Plesk(f) => f.url(),
        }
    }

    fn cert(&self) -> Cert {
        match self {
            Fake::Da(f) => f.cert.clone(),
            Fake::Whm(f) => f.cert.clone(),
            Fake::Plesk(f) => f.cert.clone(),
        }
        .expect("over TLS")
    }

    fn admin(&self) -> &'static str {
        match self {
            Fake::Da(_) | Fake::Plesk(_) => "admin",
            Fake::Whm(_) => "root",
        }
    }

    /// The packages of the small and big plans on this panel.
    fn packages(&self) -> (&'static str, &'static str) {
        match self {
            Fake::Da(_) => ("bronze", "silver"),
            Fake::Whm(_) => ("root_bronze", "root_silver"),
            Fake::Plesk(_) => ("Bronze Plan", "Silver Plan"),
        }
    }

    fn account(&self, user: &str) -> Option<Seen> {
        match self {
            Fake::Da(f) => f.user(user).map(|u| Seen {
                domain: u.domain,
                package: u.package,
                suspended: u.suspended,
                password: u.password,
                owner: u.creator,
            }),
            Fake::Whm(f) => f.account(user).map(|a| Seen {
                domain: a.domain,
                package: a.plan,
                suspended: a.suspended,
                password: a.password,
                owner: a.owner,
            }),
            Fake::Plesk(f) => {
                let c = f.customer(user)?;
                let st = f.state();
                let (domain, w) = st
                    .webspaces
                    .iter()
                    .find(|(_, w)| w.owner_login == user)
                    .map(|(d, w)| (d.clone(), w.clone()))?;
                Some(Seen {
                    domain,
                    package: w.plan,
                    suspended: c.status == "16",
                    password: c.passwd,
                    owner: "admin".into(),
                })
            }
        }
    }

    fn accounts(&self) -> usize {
        match self {
            Fake::Da(f) => f.state().users.len(),
            Fake::Whm(f) => f.state().accounts.len(),
            Fake::Plesk(f) => f.state().webspaces.len(),
        }
    }

    fn requests(&self) -> Vec<Recorded> {
        match self {
            Fake::Da(f) => f.requests(),
            Fake::Whm(f) => f.requests(),
            Fake::Plesk(f) => f.requests(),
        }
    }

    /// The recorded create calls.
    fn creates(&self) -> Vec<Recorded> {
        match self {
            Fake::Da(f) => f.requests_to("CMD_API_ACCOUNT_USER"),
            Fake::Whm(f) => f.requests_to("createacct"),
            Fake::Plesk(f) => f.requests_to("webspace.add"),
        }
    }

    fn drop_next_create(&self) {
        match self {
            Fake::Da(f) => f.drop_next_create(),
            Fake::Whm(f) => f.drop_next_create(),
            Fake::Plesk(f) => f.drop_next_create(),
        }
    }

    fn add_foreign(&self, user: &str, domain: &str) {
        match self {
            Fake::Da(f) => f.add_foreign_user(user, domain, "reseller2"),
            Fake::Whm(f) => f.add_foreign_account(user, domain, "reseller2"),
            Fake::Plesk(f) => f.add_foreign_customer(user, domain),
        }
    }

    /// Server credentials as staff enter them.
    fn credentials(&self, secret: &str, pin: Option<&str>) -> String {
        let mut c = json!({ "user": self.admin(), "secret": secret, "url": self.url() });
        if let Some(p) = pin {
            c["tls_sha256"] = json!(p);
        }
        c.to_string()
    }
}

const DRIVERS: [&str; 3] = ["directadmin", "cpanel", "plesk"];

// ---- helpers ----

/// Two plans per panel (`<driver>-small`, `<driver>-big`), each with its package named per
/// driver in the catalog.
async fn panel_catalog(app: &TestApp) {
    let mut toml =
        String::from("[[groups]]\nslug = \"panel-hosting\"\nname = \"Panel Hosting\"\n\n");
    for (i, d) in DRIVERS.iter().enumerate() {
        let (small, big) = match *d {
            "directadmin" => ("bronze", "silver"),
            "cpanel" => ("root_bronze", "root_silver"),
            _ => ("Bronze Plan", "Silver Plan"),
        };
        for (j, (size, package, price)) in [("small", small, "5.00"), ("big", big, "10.00")]
            .into_iter()
            .enumerate()
        {
            toml.push_str(&format!(
                "[[plans]]\nslug = \"{d}-{size}\"\nlegacy_id = {}\ngroup = \"panel-hosting\"\nname = \"{d} {size}\"\n\
                 driver = \"{d}\"\nfield2 = \"unused-{size}\"\npackages = {{ {d} = \"{package}\", nginx = \"n-{size}\" }}\n\
                 pricing = [ {{ billing_cycle = \"monthly\", price = \"{price}\", is_default = true }} ]\n\n",
                90_000 + i * 10 + j
            ));
        }
    }
    app.lodge
        .import_catalog_text(&toml)
        .await
        .expect("panel catalog");
}

async fn plan_of(app: &TestApp, slug: &str) -> String {
    let catalog = app.lodge.catalog().await.unwrap();
    catalog
        .plans
        .iter()
        .find(|p| p.row.slug == slug)
        .unwrap_or_else(|| panic!("no plan {slug}"))
        .row
        .id
        .to_string()
}

/// Adds a panel server through the staff API; returns its id.
async fn add_server(app: &TestApp, fake: &Fake, name: &str, creds: &str, capacity: i64) -> String {
    let (status, s) = app
        .post(
            "/v1/admin/servers",
            &app.admin_key(),
            &json!({ "name": name, "hostname": "127.0.0.1", "driver": fake.driver(),
                     "credentials": creds, "capacity": capacity,
                     "ns1": "ns1.panel.example", "ns2": "ns2.panel.example" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    assert!(!s.to_string().contains(SECRET), "{s}");
    str_of(&s, "id").to_owned()
}

/// A pinned server of the fake's panel.
async fn pinned_server(app: &TestApp, fake: &Fake) -> String {
    let creds = fake.credentials(SECRET, Some(&fake.cert().colon_fingerprint()));
    add_server(app, fake, &format!("{}-1", fake.driver()), &creds, 0).await
}

fn order_path(app: &TestApp) -> String {
    format!(
        "/v1/organizations/{}/projects/{}/hosting/order",
        app.org_id(),
        app.project_id()
    )
}

/// Orders `domain` on `plan` paid from credit; returns the hosting id.
async fn order(app: &TestApp, plan: &str, domain: &str) -> String {
    let body = json!({ "plan_id": plan, "domain_source": "external", "domain_name": domain });
    let (status, o) = app.post(&order_path(app), &app.key(), &body).await;
    assert_eq!(status, StatusCode::CREATED, "order {domain}: {o}");
    assert_eq!(o["status"], "active", "paid from credit: {o}");
    str_of(&o, "hosting_id").to_owned()
}

async fn staff(app: &TestApp, id: &str, action: &str) {
    let (status, body) = app
        .post(
            &format!("/v1/admin/hosting/{id}/{action}"),
            &app.admin_key(),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{action}: {body}");
}

async fn run(worker: &Worker) -> usize {
    worker.run_once().await.expect("worker round")
}

async fn test_server(app: &TestApp, id: &str) -> Value {
    let (status, body) = app
        .post(
            &format!("/v1/admin/servers/{id}/test"),
            &app.admin_key(),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The parameter names of a recorded request, sorted.
fn names(r: &Recorded) -> Vec<String> {
    let mut n: Vec<String> = r.names().into_iter().map(str::to_owned).collect();
    n.sort();
    n
}

fn sorted(list: &[&str]) -> Vec<String> {
    let mut n: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
    n.sort();
    n
}

/// The XML of a recorded Plesk packet.
fn xml(r: &Recorded) -> &str {
    r.param("xml").unwrap_or_default()
}

// ---- the lifecycle, per panel ----

async fn lifecycle(app: TestApp, driver: &str) {
    let fake = Fake::start(driver).await;
    panel_catalog(&app).await;
    let server = pinned_server(&app, &fake).await;
    let check = test_server(&app, &server).await;
    assert_eq!(check["ok"], true, "{check}");
    add_credit(&app, &app.org_id(), "100.00").await;
    let worker = Worker::new(app.lodge.clone(), "node-1");
    let (small, big) = fake.packages();
    let domain = format!("shop-{driver}.example");

    // Create.
    let id = order(
        &app,
        &plan_of(&app, &format!("{driver}-small")).await,
        &domain,
    )
    .await;
    let h = hosting(&app, &id).await;
    assert_eq!(h["status"], "provisioning", "{h}");
    assert!(h["username"].is_null(), "no name before the worker: {h}");
    assert_eq!(run(&worker).await, 1);
    let h = hosting(&app, &id).await;
    assert_eq!(h["status"], "active", "{h}");
    assert_eq!(h["server"]["id"], server.as_str(), "{h}");
    let user = str_of(&h, "username").to_owned();
    assert_eq!(
        user,
        panel_username(&domain, h["legacy_id"].as_i64().unwrap())
    );
    assert!(
        user.len() <= 8 && user.starts_with(|c: char| c.is_ascii_lowercase()),
        "{user}"
    );
    let acct = fake.account(&user).expect("the account is on the panel");
    assert_eq!(acct.domain, domain);
    assert_eq!(acct.package, small, "the catalog's package for this driver");
    assert_eq!(acct.owner, fake.admin());
    assert!(!acct.suspended);
    assert_eq!(fake.creates().len(), 1);

    // A read-only key sees the account but gets no login link: the panel changes
    // everything (found by review).
    let (status, ro) = app
        .post(
            &format!("/v1/organizations/{}/api-keys", app.org_id()),
            &app.key(),
            &json!({ "name": "look only", "scopes": ["read"] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ro}");
    let ro = str_of(&ro, "key_secret").to_owned();
    let (status, seen) = app.get(&hosting_path(&app, str_of(&h, "id")), &ro).await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert!(seen.get("login_url").is_none(), "{seen}");
    let (status, w) = v2(
        &app,
        Method::GET,
        &format!("/apiv2/websites/{}", h["legacy_id"]),
        Auth::Key(&ro),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{w}");
    assert_eq!(w["client_links"], json!([]), "{w}");

    // The customer's login link, on both dialects.
    let url = h["login_url"]
        .as_str()
        .unwrap_or_else(|| panic!("no login_url: {h}"))
        .to_owned();
    let (status, w) = v2(
        &app,
        Method::GET,
        &format!("/apiv2/websites/{}", h["legacy_id"]),
        Auth::Key(&app.key()),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{w}");
    let link = w["client_links"][0]["link"]
        .as_str()
        .unwrap_or_else(|| panic!("{w}"));
    match &fake {
        Fake::Da(_) => {
            assert!(
                url.starts_with("https://127.0.0.1:2222/api/login/url?key="),
                "{url}"
            );
            assert!(
                link.starts_with("https://127.0.0.1:2222/api/login/url?key="),
                "{link}"
            );
        }
        Fake::Whm(_) => {
            assert!(
                url.contains("/cpsess") && url.contains("create_user_session"),
                "{url}"
            );
            assert!(link.contains("/cpsess"), "{link}");
        }
        Fake::Plesk(p) => {
            assert!(
                url.starts_with(&format!(
                    "{}/enterprise/rsession_init.php?PLESKSESSID=",
                    p.url()
                )),
                "{url}"
            );
            assert!(link.contains("rsession_init.php?PLESKSESSID="), "{link}");
            // The session is for the customer's address (through a trusted proxy here:
            // X-Forwarded-For), as create_session's user_ip asks.
            let resp = app
                .client
                .get(app.url(&crate::harness::hosting_path(&app, &id)))
                .bearer_auth(app.key())
                .header("X-Forwarded-For", "203.0.113.7")
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let sessions = p.requests_to("server.create_session");
            let last = sessions.last().expect("a session");
            assert!(
                xml(last).contains("<user_ip>MjAzLjAuMTEzLjc=</user_ip>"),
                "{}",
                xml(last)
            );
        }
    }
    assert_ne!(url, link, "each link is made for one login");

    // Suspend, unsuspend.
    staff(&app, &id, "suspend").await;
    assert_eq!(run(&worker).await, 1);
    assert_eq!(hosting(&app, &id).await["status"], "suspended");
    assert!(fake.account(&user).unwrap().suspended);
    staff(&app, &id, "unsuspend").await;
    assert_eq!(run(&worker).await, 1);
    assert_eq!(hosting(&app, &id).await["status"], "active");
    assert!(!fake.account(&user).unwrap().suspended);

    // Change package (an upgrade paid from credit).
    let (status, body) = app
        .post(
            &format!("{}/change-plan", hosting_path(&app, &id)),
            &app.key(),
            &json!({ "plan_id": format!("{driver}-big") }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["plan_change"]["status"], "applied", "{body}");
    assert_eq!(run(&worker).await, 1);
    assert_eq!(fake.account(&user).unwrap().package, big);

    // Password.
    let (status, body) = app
        .post(
            &format!("{}/password", hosting_path(&app, &id)),
            &app.key(),
            &json!({ "password": "short" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = app
        .post(
            &format!("{}/password", hosting_path(&app, &id)),
            &app.key(),
            &json!({ "password": "N3w-Passw0rd" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(run(&worker).await, 1);
    assert_eq!(fake.account(&user).unwrap().password, "N3w-Passw0rd");

    // Terminate.
    staff(&app, &id, "terminate").await;
    assert_eq!(run(&worker).await, 1);
    assert_eq!(hosting(&app, &id).await["status"], "terminated");
    assert!(fake.account(&user).is_none(), "removed from the panel");
    assert_eq!(fake.accounts(), 0);

    // The requests, against the documented parameters.
    match &fake {
        Fake::Da(f) => check_directadmin_requests(f, &user, &domain),
        Fake::Whm(f) => check_whm_requests(f, &user, &domain),
        Fake::Plesk(f) => check_plesk_requests(f, &user, &domain),
    }
    app.stop().await;
}

/// DirectAdmin: CMD_API_* as the legacy API documents them (FOSSBilling/Paymenter's calls).
fn check_directadmin_requests(f: &FakeDirectAdmin, user: &str, domain: &str) {
    let create = f.requests_to("CMD_API_ACCOUNT_USER");
    let [c] = create.as_slice() else {
        panic!("one create: {create:?}")
    };
    assert_eq!(c.method, "POST");
    assert_eq!(
        names(c),
        sorted(&[
            "action", "add", "username", "email", "passwd", "passwd2", "domain", "package", "ip",
            "notify"
        ])
    );
    assert_eq!(c.param("action"), Some("create"));
    assert_eq!(c.param("add"), Some("Submit"));
    assert_eq!(c.param("username"), Some(user));
    assert_eq!(c.param("domain"), Some(domain));
    assert_eq!(c.param("package"), Some("bronze"));
    assert_eq!(c.param("ip"), Some(lodge_testkit::directadmin::IP));
    assert_eq!(c.param("notify"), Some("no"));
    assert_eq!(c.param("passwd"), c.param("passwd2"));
    let select = f.requests_to("CMD_API_SELECT_USERS");
    let params: Vec<Vec<(String, String)>> = select.iter().map(|r| r.params.clone()).collect();
    let p = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    assert_eq!(
        params,
        vec![
            p(&[
                ("location", "CMD_SELECT_USERS"),
                ("suspend", "Suspend"),
                ("reason", "billing"),
                ("select0", user)
            ]),
            p(&[
                ("location", "CMD_SELECT_USERS"),
                ("suspend", "Unsuspend"),
                ("select0", user)
            ]),
            p(&[
                ("location", "CMD_SELECT_USERS"),
                ("confirmed", "Confirm"),
                ("delete", "yes"),
                ("select0", user)
            ]),
        ]
    );
    let modify = f.requests_to("CMD_API_MODIFY_USER");
    assert_eq!(modify.len(), 1);
    assert_eq!(
        modify[0].params,
        p(&[("action", "package"), ("user", user), ("package", "silver")])
    );
    let passwd = f.requests_to("CMD_API_USER_PASSWD");
    assert_eq!(
        passwd[0].params,
        p(&[
            ("username", user),
            ("passwd", "N3w-Passw0rd"),
            ("passwd2", "N3w-Passw0rd")
        ])
    );
    let keys = f.requests_to("CMD_API_LOGIN_KEYS");
    assert!(!keys.is_empty());
    assert_eq!(
        keys[0].params,
        p(&[
            ("action", "create"),
            ("type", "one_time_url"),
            ("expiry", "30m")
        ])
    );
    // Lookups ask for JSON; every request was authenticated as admin with the login key.
    let show = f.requests_to("CMD_API_SHOW_USER_CONFIG");
    assert!(show.iter().all(|r| r.method == "GET"
        && r.param("user") == Some(user)
        && r.param("json") == Some("yes")));
}

/// WHM API 1: every call to /json-api/<function> with api.version=1, its parameters in a
/// form body (POST: no password in a URL).
fn check_whm_requests(f: &FakeWhm, user: &str, domain: &str) {
    let all = f.requests();
    assert!(
        all.iter()
            .all(|r| r.method == "POST" && r.param("api.version") == Some("1")),
        "{all:?}"
    );
    let create = f.requests_to("createacct");
    let [c] = create.as_slice() else {
        panic!("one create: {create:?}")
    };
    assert_eq!(
        names(c),
        sorted(&[
            "api.version",
            "username",
            "domain",
            "plan",
            "password",
            "contactemail"
        ])
    );
    assert_eq!(c.param("username"), Some(user));
    assert_eq!(c.param("domain"), Some(domain));
    assert_eq!(c.param("plan"), Some("root_bronze"));
    assert_eq!(
        c.param("contactemail"),
        Some(format!("webmaster@{domain}").as_str())
    );
    let one = |function: &str| {
        let list = f.requests_to(function);
        assert_eq!(list.len(), 1, "{function}: {list:?}");
        list.into_iter().next().unwrap()
    };
    let s = one("suspendacct");
    assert_eq!(names(&s), sorted(&["api.version", "user", "reason"]));
    assert_eq!(s.param("user"), Some(user));
    assert_eq!(
        names(&one("unsuspendacct")),
        sorted(&["api.version", "user"])
    );
    let c = one("changepackage");
    assert_eq!(
        (c.param("user"), c.param("pkg")),
        (Some(user), Some("root_silver"))
    );
    let p = one("passwd");
    assert_eq!(
        (p.param("user"), p.param("password")),
        (Some(user), Some("N3w-Passw0rd"))
    );
    let r = one("removeacct");
    assert_eq!(
        (r.param("username"), r.param("keepdns")),
        (Some(user), Some("0"))
    );
    let sessions = f.requests_to("create_user_session");
    assert!(sessions
        .iter()
        .all(|s| s.param("user") == Some(user) && s.param("service") == Some("cpaneld")));
}

/// Plesk XML API: the packets api-php-lib sends.
fn check_plesk_requests(f: &FakePlesk, user: &str, domain: &str) {
    let all = f.requests();
    assert!(all
        .iter()
        .all(|r| r.method == "POST" && r.path == "/enterprise/control/agent.php"));
    let add = f.requests_to("customer.add");
    assert_eq!(add.len(), 1);
    let x = xml(&add[0]);
    for part in [
        format!("<login>{user}</login>"),
        format!("<email>webmaster@{domain}</email>"),
        format!("<pname>{domain}</pname>"),
    ] {
        assert!(x.contains(&part), "{part} in {x}");
    }
    let ws = f.requests_to("webspace.add");
    assert_eq!(ws.len(), 1);
    let x = xml(&ws[0]);
    for part in [
        format!("<gen_setup><name>{domain}</name><owner-login>{user}</owner-login><htype>vrt_hst</htype>"),
        "<plan-name>Bronze Plan</plan-name>".to_owned(),
        format!("<name>ftp_login</name><value>{user}</value>"),
    ] {
        assert!(x.contains(&part), "{part} in {x}");
    }
    let sets: Vec<String> = f
        .requests_to("customer.set")
        .iter()
        .map(|r| xml(r).to_owned())
        .collect();
    assert_eq!(sets.len(), 3, "suspend, activate, password: {sets:?}");
    assert!(sets[0].contains("<status>16</status>"), "{}", sets[0]);
    assert!(sets[1].contains("<status>0</status>"), "{}", sets[1]);
    assert!(
        sets[2].contains("<passwd>N3w-Passw0rd</passwd>"),
        "{}",
        sets[2]
    );
    let switch = f.requests_to("webspace.switch-subscription");
    assert!(xml(&switch[0]).contains(&format!(
        "<filter><name>{domain}</name></filter><plan-guid>"
    )));
    let del = f.requests_to("customer.del");
    assert!(xml(&del[0]).contains(&format!("<filter><login>{user}</login></filter>")));
    let sessions = f.requests_to("server.create_session");
    assert!(sessions.iter().all(
        |s| xml(s).contains(&format!("<login>{user}</login>")) && xml(s).contains("<user_ip>")
    ));
}

async fn directadmin_lifecycle_through_the_worker(app: TestApp) {
    lifecycle(app, "directadmin").await;
}

async fn cpanel_lifecycle_through_the_worker(app: TestApp) {
    lifecycle(app, "cpanel").await;
}

async fn plesk_lifecycle_through_the_worker(app: TestApp) {
    lifecycle(app, "plesk").await;
}

// ---- failures ----

/// The panel commits the create, then the connection drops: the job fails and is retried;
/// the retry finds the account (our name, our domain, our owner) and adopts it. One account,
/// one create call.
async fn a_lost_create_answer_is_retried_into_one_account(app: TestApp) {
    panel_catalog(&app).await;
    add_credit(&app, &app.org_id(), "100.00").await;
    let worker = Worker::new(app.lodge.clone(), "node-1");
    for driver in DRIVERS {
        let fake = Fake::start(driver).await;
        pinned_server(&app, &fake).await;
        let domain = format!("lost-{driver}.example");
        let id = order(
            &app,
            &plan_of(&app, &format!("{driver}-small")).await,
            &domain,
        )
        .await;
        fake.drop_next_create();
        assert_eq!(run(&worker).await, 1);
        let h = crate::harness::staff_hosting(&app, &id).await;
        assert_eq!(h["status"], "provisioning", "{h}");
        let error = str_of(&h, "last_error");
        assert!(error.contains("answer was lost"), "{driver}: {error}");
        assert!(
            !error.contains("127.0.0.1"),
            "no URL (nor its parameters): {error}"
        );
        let user = str_of(&h, "username").to_owned();
        assert!(!user.is_empty(), "the name was stored before the call: {h}");
        assert_eq!(fake.accounts(), 1, "the panel made it");

        app.clock.advance(SignedDuration::from_hours(2));
        assert_eq!(run(&worker).await, 1);
        let h = hosting(&app, &id).await;
        assert_eq!(h["status"], "active", "{h}");
        assert_eq!(h["username"], user.as_str(), "the retry used the same name");
        assert!(h["last_error"].is_null(), "{h}");
        assert_eq!(fake.accounts(), 1, "{driver}: exactly one account");
        assert_eq!(
            fake.creates().len(),
            1,
            "{driver}: the retry did not create again"
        );
        assert_eq!(fake.account(&user).unwrap().domain, domain);
    }
    app.stop().await;
}

/// WHM goes on creating an account after the request timed out (FOSSBilling issue
/// 1086): a retry meanwhile does not find it listed, and `createacct` answers that its
/// group already exists. That is retried, not a failed account, and the next attempt
/// adopts the account once WHM lists it.
async fn a_whm_account_still_being_created_is_waited_for(app: TestApp) {
    panel_catalog(&app).await;
    add_credit(&app, &app.org_id(), "100.00").await;
    let worker = Worker::new(app.lodge.clone(), "node-1");
    let fake = FakeWhm::start(SECRET, &["root_bronze", "root_silver"], true)
        .await
        .unwrap();
    let wrapped = Fake::Whm(fake.clone());
    pinned_server(&app, &wrapped).await;
    let domain = "slow-whm.example";
    let id = order(&app, &plan_of(&app, "cpanel-small").await, domain).await;
    let legacy = hosting(&app, &id).await["legacy_id"].as_i64().unwrap();
    let user = panel_username(domain, legacy);
    fake.still_creating(&user, domain, "root_bronze");
    assert_eq!(run(&worker).await, 1);
    let h = crate::harness::staff_hosting(&app, &id).await;
    assert_eq!(h["status"], "provisioning", "retried, not failed: {h}");
    assert!(str_of(&h, "last_error").contains("already exists"), "{h}");
    fake.created(&user);
    app.clock.advance(SignedDuration::from_hours(2));
    assert_eq!(run(&worker).await, 1);
    let h = hosting(&app, &id).await;
    assert_eq!(h["status"], "active", "adopted: {h}");
    assert_eq!(fake.state().accounts.len(), 1);
    app.stop().await;
}

/// Staff terminate an account whose create timed out while WHM goes on making it: the
/// termination waits until the creation is over, then removes what WHM made (it found
/// nothing listed, ended the account, and WHM then finished a live account nothing would
/// remove: found by the panels audit).
async fn a_termination_waits_for_the_panels_creation(app: TestApp) {
    panel_catalog(&app).await;
    add_credit(&app, &app.org_id(), "100.00").await;
    let worker = Worker::new(app.lodge.clone(), "node-1");
    let fake = FakeWhm::start(SECRET, &["root_bronze", "root_silver"], true)
        .await
        .unwrap();
    let wrapped = Fake::Whm(fake.clone());
    pinned_server(&app, &wrapped).await;
    let domain = "orphan-whm.example";
    let id = order(&app, &plan_of(&app, "cpanel-small").await, domain).await;
    let legacy = hosting(&app, &id).await["legacy_id"].as_i64().unwrap();
    let user = panel_username(domain, legacy);
    fake.still_creating(&user, domain, "root_bronze");
    assert_eq!(run(&worker).await, 1);
    assert_eq!(
        crate::harness::staff_hosting(&app, &id).await["status"],
        "provisioning"
    );
    staff(&app, &id, "terminate").await;
    // The termination waits while the creation is under way: nothing removed, not ended.
    assert_eq!(run(&worker).await, 1);
    assert_eq!(
        crate::harness::staff_hosting(&app, &id).await["status"],
        "provisioning",
        "the termination waits"
    );
    assert_eq!(fake.state().accounts.len(), 1, "nothing removed meanwhile");
    // WHM finishes; the creation is adopted, then the termination removes the account.
    fake.created(&user);
    for _ in 0..4 {
        app.clock.advance(SignedDuration::from_hours(2));
        run(&worker).await;
    }
    let h = crate::harness::staff_hosting(&app, &id).await;
    assert_eq!(h["status"], "terminated", "{h}");
    assert!(
        fake.state().accounts.is_empty(),
        "removed from the panel: {:?}",
        fake.state().accounts
    );
    app.stop().await;
}

/// WHM refuses a password below its minimum strength (a dictionary word), which Lodge's
/// own rule lets through: the paid account is made with a strong password instead of failing
/// for good, and a change to such a password ends at once with WHM's words, the panel's
/// password unchanged (it was retried for hours: found by the panels audit).
async fn a_password_whm_finds_too_weak(app: TestApp) {
    app.expect_dead_jobs("WHM refused a weak password change");
    panel_catalog(&app).await;
    add_credit(&app, &app.org_id(), "100.00").await;
    let worker = Worker::new(app.lodge.clone(), "node-1");
    let fake = FakeWhm::start(SECRET, &["root_bronze", "root_silver"], true)
        .await
        .unwrap();
    let wrapped = Fake::Whm(fake.clone());
    pinned_server(&app, &wrapped).await;
    let id = order(
        &app,
        &plan_of(&app, "cpanel-small").await,
        "weak-pw.example",
    )
    .await;
    // The customer's chosen password (as an /apiv2 order's `rootpass` stores it).
    let hosting_id: lodge_core::HostingId = id.parse().unwrap();
    let sealed = app.lodge.sealer.seal("welcome2026").unwrap();
    let mut tx = app.lodge.store.begin().await.unwrap();
    lodge_store::hosting::set_secret(&mut tx, hosting_id, &sealed, 0)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(run(&worker).await, 1);
    let h = crate::harness::staff_hosting(&app, &id).await;
    assert_eq!(h["status"], "active", "made anyway: {h}");
    let user = str_of(&h, "username").to_owned();
    let made = fake.account(&user).unwrap().password;
    assert_ne!(made, "welcome2026");
    assert!(made.len() >= 16, "a strong password of Lodge's: {made}");
    assert!(h.to_string().contains("refused the chosen password"), "{h}");

    let (status, body) = app
        .post(
            &format!("{}/password", hosting_path(&app, &id)),
            &app.key(),
            &json!({ "password": "welcome2027" }),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "Lodge's rule lets it through: {body}"
    );
    assert_eq!(run(&worker).await, 1);
    let h = crate::harness::staff_hosting(&app, &id).await;
    assert!(str_of(&h, "last_error").contains("too weak"), "{h}");
    assert_eq!(fake.account(&user).unwrap().password, made, "unchanged");
    let dead = lodge_store::jobs::with_status(
        app.lodge.store.reader(),
        lodge_core::JobStatus::Dead,
        None,
        10,
    )
    .await
    .unwrap();
    assert!(
        dead.iter()
            .any(|j| j.kind == "change_password" && j.attempts == 1),
        "ended at once: {dead:?}"
    );
    app.stop().await;
}

/// Our username exists on the panel for another domain and owner: the job fails at once
/// (no retries), the account is `failed` with the panel's reason for staff and customer.
async fn a_name_owned_by_someone_else_fails_visibly(app: TestApp) {
    app.expect_dead_jobs("the panels refused names owned by someone else");
    panel_catalog(&app).await;
    add_credit(&app, &app.org_id(), "100.00").await;
    let worker = Worker::new(app.lodge.clone(), "node-1");
    for driver in DRIVERS {
        let fake = Fake::start(driver).await;
        pinned_server(&app, &fake).await;
        let domain = format!("taken-{driver}.example");
        let id = order(
            &app,
            &plan_of(&app, &format!("{driver}-small")).await,
            &domain,
        )
        .await;
        let legacy = hosting(&app, &id).await["legacy_id"].as_i64().unwrap();
        let user = panel_username(&domain, legacy);
        fake.add_foreign(&user, &format!("other-{driver}.example"));
        assert_eq!(run(&worker).await, 1);
        let (status, staff_view) = app
            .get(&format!("/v1/admin/hosting/{id}"), &app.admin_key())
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(staff_view["status"], "failed", "{driver}: {staff_view}");
        let error = str_of(&staff_view, "last_error");
        assert!(
            error.contains("refused by the panel") && error.contains(&user),
            "{error}"
        );
        assert!(
            error.contains(&format!("other-{driver}.example")),
            "{error}"
        );
        // The customer is told it failed, not the other customer's account and domain
        // (found by the panels audit).
        let h = hosting(&app, &id).await;
        assert_eq!(h["status"], "failed", "{driver}: {h}");
        assert!(h["last_error"].is_string(), "{h}");
        assert!(
            !h.to_string().contains(&format!("other-{driver}.example"))
                && !h.to_string().contains("refused"),
            "{driver}: {h}"
        );
        // The other owner's account is untouched; nothing was created.
        assert_eq!(fake.accounts(), 1);
        assert!(fake.creates().is_empty(), "{driver}: never created");
        assert_eq!(
            fake.account(&user).unwrap().domain,
            format!("other-{driver}.example")
        );
        // Staff end the failed account: nothing of ours is on the panel, the other one
        // stays, and the account (and its domain) ends (found by the panels audit: the
        // termination was refused for good, so it could never end).
        // Staff retry it later; refused again. A termination then waits ten minutes after
        // that latest creation failed (a create whose answer timed out may still be
        // finishing on the panel), its attempts not counted; not after the order's first
        // one, long over (found by review).
        app.clock.advance(SignedDuration::from_mins(11));
        staff(&app, &id, "retry").await;
        assert_eq!(run(&worker).await, 1);
        assert_eq!(
            hosting(&app, &id).await["status"],
            "failed",
            "{driver}: refused again"
        );
        staff(&app, &id, "terminate").await;
        assert_eq!(run(&worker).await, 1);
        assert_eq!(
            hosting(&app, &id).await["status"],
            "failed",
            "{driver}: waits"
        );
        app.clock.advance(SignedDuration::from_mins(11));
        assert_eq!(run(&worker).await, 1);
        assert_eq!(hosting(&app, &id).await["status"], "terminated", "{driver}");
        assert_eq!(fake.accounts(), 1, "{driver}: the other account stays");
        assert_eq!(
            fake.account(&user).unwrap().domain,
            format!("other-{driver}.example")
        );
    }
    app.stop().await;
}

/// DirectAdmin answers "That domain already exists" for a domain another user holds:
/// that is a refusal (FOSSBilling takes it as success), with the panel's own words.
async fn a_domain_on_another_directadmin_user_is_not_taken_as_success(app: TestApp) {
    app.expect_dead_jobs("DirectAdmin refused a domain another user holds");
    panel_catalog(&app).await;
    add_credit(&app, &app.org_id(), "100.00").await;
    let fake = Fake::start("directadmin").await;
    pinned_server(&app, &fake).await;
    fake.add_foreign("someone", "held.example");
    let worker = Worker::new(app.lodge.clone(), "node-1");
    let id = order(
        &app,
        &plan_of(&app, "directadmin-small").await,
        "held.example",
    )
    .await;
    assert_eq!(run(&worker).await, 1);
    let h = crate::harness::staff_hosting(&app, &id).await;
    assert_eq!(h["status"], "failed", "{h}");
    assert!(
        str_of(&h, "last_error").contains("That domain already exists"),
        "{h}"
    );
    assert_eq!(fake.accounts(), 1);

    // WHM says "already exists" of a domain another account holds as it does of one it
    // is still creating for us: the holder is looked up, and another's is final at once
    // (it was retried eight times over hours).
    let whm = Fake::start("cpanel").await;
    pinned_server(&app, &whm).await;
    whm.add_foreign("someone2", "held-on-whm.example");
    let id = order(
        &app,
        &plan_of(&app, "cpanel-small").await,
        "held-on-whm.example",
    )
    .await;
    assert_eq!(run(&worker).await, 1);
    let h = crate::harness::staff_hosting(&app, &id).await;
    assert_eq!(h["status"], "failed", "{h}");
    let error = str_of(&h, "last_error");
    assert!(
        error.contains("already exists") && error.contains("someone2"),
        "{h}"
    );
    assert_eq!(whm.accounts(), 1);
    app.stop().await;
}

/// DirectAdmin answers a command the login key may not run with plain text, without its
/// `error` field: that is not success (read as one, the suspension was recorded while the
/// account ran on).
async fn a_directadmin_command_the_key_may_not_run_is_not_done(app: TestApp) {
    panel_catalog(&app).await;
    add_credit(&app, &app.org_id(), "100.00").await;
    let da = FakeDirectAdmin::start(SECRET, &["bronze", "silver"], true)
        .await
        .unwrap();
    let fake = Fake::Da(da.clone());
    pinned_server(&app, &fake).await;
    let worker = Worker::new(app.lodge.clone(), "node-1");
    // A key that may not read a user's configuration: the order is retried with the
    // panel's words, never failed for good as a name someone else holds.
    da.state()
        .not_allowed
        .insert("CMD_API_SHOW_USER_CONFIG".into());
    let id = order(
        &app,
        &plan_of(&app, "directadmin-small").await,
        "limited.example",
    )
    .await;
    assert_eq!(run(&worker).await, 1);
    let h = crate::harness::staff_hosting(&app, &id).await;
    assert_eq!(h["status"], "provisioning", "retried: {h}");
    assert!(str_of(&h, "last_error").contains("authority level"), "{h}");
    assert!(
        da.requests_to("CMD_API_ACCOUNT_USER").is_empty(),
        "no create"
    );
    da.state().not_allowed.clear();
    app.clock.advance(SignedDuration::from_hours(2));
    assert_eq!(run(&worker).await, 1);
    assert_eq!(hosting(&app, &id).await["status"], "active");
    da.state().not_allowed.insert("CMD_API_SELECT_USERS".into());
    staff(&app, &id, "suspend").await;
    assert_eq!(run(&worker).await, 1);
    let h = crate::harness::staff_hosting(&app, &id).await;
    assert_eq!(h["status"], "active", "not suspended: {h}");
    assert!(str_of(&h, "last_error").contains("authority level"), "{h}");
    let user = str_of(&h, "username").to_owned();
    assert!(
        !da.user(&user).unwrap().suspended,
        "nothing happened on the panel"
    );
    // Allowed again: the retry suspends it.
    da.state().not_allowed.clear();
    app.clock.advance(SignedDuration::from_hours(2));
    assert_eq!(run(&worker).await, 1);
    assert_eq!(hosting(&app, &id).await["status"], "suspended");
    assert!(da.user(&user).unwrap().suspended);
    app.stop().await;
}

/// A wrong token: the server check says so; provisioning fails with the same reason (and
/// is retried, not failed for good: credentials can be fixed).
async fn a_wrong_token_is_a_clear_error(app: TestApp) {
    panel_catalog(&app).await;
    add_credit(&app, &app.org_id(), "100.00").await;
    let worker = Worker::new(app.lodge.clone(), "node-1");
    for driver in DRIVERS {
        let fake = Fake::start(driver).await;
        let creds = fake.credentials("wrong-token", Some(&fake.cert().sha256));
        let server = add_server(&app, &fake, &format!("{driver}-bad"), &creds, 0).await;
        let check = test_server(&app, &server).await;
        assert_eq!(check["ok"], false, "{check}");
        let message = str_of(&check, "message");
        let expected = match driver {
            "directadmin" => "answered with its login page: the user or login key is wrong",
            "cpanel" => "refused the credentials (HTTP 403)",
            _ => "Plesk refused the credentials (1001",
        };
        assert!(message.contains(expected), "{driver}: {message}");
        assert!(
            !message.contains("wrong-token"),
            "the secret is never shown: {message}"
        );

        let id = order(
            &app,
            &plan_of(&app, &format!("{driver}-small")).await,
            &format!("tok-{driver}.example"),
        )
        .await;
        assert_eq!(run(&worker).await, 1);
        let h = crate::harness::staff_hosting(&app, &id).await;
        assert_eq!(h["status"], "provisioning", "retried: {h}");
        assert!(str_of(&h, "last_error").contains(expected), "{h}");
        assert_eq!(fake.accounts(), 0);

        // Fixed credentials: the retry provisions it.
        let (status, body) = app
            .call(
                Method::PUT,
                &format!("/v1/admin/servers/{server}"),
                Some(&app.admin_key()),
                Some(&json!({ "name": format!("{driver}-bad"), "hostname": "127.0.0.1",
                              "driver": driver, "credentials": fake.credentials(SECRET, Some(&fake.cert().sha256)) })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(test_server(&app, &server).await["ok"], true);
        app.clock.advance(SignedDuration::from_hours(2));
        assert_eq!(run(&worker).await, 1);
        assert_eq!(hosting(&app, &id).await["status"], "active");
        assert_eq!(fake.accounts(), 1);
    }
    app.stop().await;
}

/// TLS: the pinned fingerprint is accepted; another fingerprint, or none (the self-signed
/// certificate fails normal verification), is refused before any credentials are sent; a
/// panel that does not answer times out with a clear message.
async fn the_pinned_certificate_is_required(app: TestApp) {
    let fake = Fake::start("directadmin").await;
    let right = fake.cert().colon_fingerprint();
    let server = add_server(
        &app,
        &fake,
        "da-tls",
        &fake.credentials(SECRET, Some(&right)),
        0,
    )
    .await;
    let check = test_server(&app, &server).await;
    assert_eq!(check["ok"], true, "{check}");
    assert!(
        str_of(&check, "message").contains("accepts admin"),
        "{check}"
    );
    let seen = fake.requests().len();

    let put = |creds: String| json!({ "name": "da-tls", "hostname": "127.0.0.1", "driver": "directadmin", "credentials": creds });
    let other = Cert::self_signed().unwrap();
    for (creds, what) in [
        (
            fake.credentials(SECRET, Some(&other.sha256)),
            "not the pinned one",
        ),
        (fake.credentials(SECRET, None), "certificate"),
    ] {
        let (status, body) = app
            .call(
                Method::PUT,
                &format!("/v1/admin/servers/{server}"),
                Some(&app.admin_key()),
                Some(&put(creds)),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let check = test_server(&app, &server).await;
        assert_eq!(check["ok"], false, "{check}");
        let message = str_of(&check, "message");
        assert!(
            message.contains("TLS") && message.contains(what),
            "{message}"
        );
    }
    assert_eq!(
        fake.requests().len(),
        seen,
        "nothing reached the panel over a refused TLS"
    );

    // A malformed pin, or credentials that are not the panel's JSON, are refused when
    // entered (the answer never repeats them).
    for creds in [
        fake.credentials(SECRET, Some("AB:CD")),
        format!("{{\"user\": \"admin\", \"token\": \"{SECRET}\", \"verify\": false}}"),
        SECRET.to_owned(),
    ] {
        let (status, body) = app
            .call(
                Method::PUT,
                &format!("/v1/admin/servers/{server}"),
                Some(&app.admin_key()),
                Some(&put(creds)),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["credentials"][0]
                .as_str()
                .unwrap()
                .contains("tls_sha256"),
            "{body}"
        );
        assert!(!body.to_string().contains(SECRET), "{body}");
    }

    // A panel that accepts the connection and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://127.0.0.1:{}", silent.local_addr().unwrap().port());
    let creds = json!({ "user": "admin", "secret": SECRET, "url": url, "timeout_secs": 1,
                        "tls_sha256": right })
    .to_string();
    app.call(
        Method::PUT,
        &format!("/v1/admin/servers/{server}"),
        Some(&app.admin_key()),
        Some(&put(creds)),
    )
    .await;
    let check = test_server(&app, &server).await;
    assert_eq!(check["ok"], false);
    assert!(str_of(&check, "message").contains("timeout"), "{check}");
    drop(silent);
    app.stop().await;
}

/// A panel's self-signed certificate renewed with the same key (as panels do when theirs
/// expires): a certificate pin (`tls_sha256`) no longer matches and the server fails its
/// check; a public-key pin (`tls_spki_sha256`) still does. Another key is refused either
/// way, and the error gives both fingerprints of what the panel presented.
async fn a_key_pin_outlives_the_panels_certificate_renewal(app: TestApp) {
    let first = Cert::self_signed().unwrap();
    let renewed = first.renewed().unwrap();
    assert_ne!(first.sha256, renewed.sha256);
    assert_eq!(first.spki_sha256, renewed.spki_sha256);
    let old = Fake::Da(
        FakeDirectAdmin::start_with(SECRET, &["bronze"], Some(first.clone()))
            .await
            .unwrap(),
    );
    let new = Fake::Da(
        FakeDirectAdmin::start_with(SECRET, &["bronze"], Some(renewed.clone()))
            .await
            .unwrap(),
    );
    let with_key_pin = |fake: &Fake, pin: &str| {
        json!({ "user": "admin", "secret": SECRET, "url": fake.url(), "tls_spki_sha256": pin })
            .to_string()
    };
    let put = |creds: String| json!({ "name": "da-key", "hostname": "127.0.0.1", "driver": "directadmin", "credentials": creds });
    let server = add_server(
        &app,
        &old,
        "da-key",
        &with_key_pin(&old, &first.spki_sha256),
        0,
    )
    .await;
    assert_eq!(test_server(&app, &server).await["ok"], true);
    let other = Cert::self_signed().unwrap();
    for (creds, ok) in [
        // The renewed certificate, pinned by its key: accepted.
        (with_key_pin(&new, &first.spki_sha256), true),
        // Pinned by the old certificate: refused.
        (new.credentials(SECRET, Some(&first.sha256)), false),
        // Another key: refused.
        (with_key_pin(&new, &other.spki_sha256), false),
    ] {
        let (status, body) = app
            .call(
                Method::PUT,
                &format!("/v1/admin/servers/{server}"),
                Some(&app.admin_key()),
                Some(&put(creds)),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let check = test_server(&app, &server).await;
        assert_eq!(check["ok"], ok, "{check}");
        if !ok {
            let message = str_of(&check, "message");
            assert!(
                message.contains(&renewed.sha256) && message.contains(&renewed.spki_sha256),
                "{message}"
            );
        }
    }
    // A malformed key pin is refused when entered.
    let (status, body) = app
        .call(
            Method::PUT,
            &format!("/v1/admin/servers/{server}"),
            Some(&app.admin_key()),
            Some(&put(with_key_pin(&new, "AB:CD"))),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["credentials"][0]
        .as_str()
        .unwrap()
        .contains("tls_spki_sha256"));
    app.stop().await;
}

/// Two limited DirectAdmin servers and an nginx one: DirectAdmin plans go to the less
/// filled DirectAdmin server, never to nginx; a full one is skipped.
async fn placement_takes_the_least_filled_server_of_the_plans_driver(app: TestApp) {
    panel_catalog(&app).await;
    add_credit(&app, &app.org_id(), "100.00").await;
    let fake = Fake::start("directadmin").await;
    let pin = fake.cert().sha256.clone();
    let a = add_server(
        &app,
        &fake,
        "da-a",
        &fake.credentials(SECRET, Some(&pin)),
        2,
    )
    .await;
    let b = add_server(
        &app,
        &fake,
        "da-b",
        &fake.credentials(SECRET, Some(&pin)),
        1,
    )
    .await;
    let plan = plan_of(&app, "directadmin-small").await;
    let worker = Worker::new(app.lodge.clone(), "node-1");
    let mut placed = vec![];
    for n in 0..3 {
        let id = order(&app, &plan, &format!("p{n}.example")).await;
        run(&worker).await;
        let h = hosting(&app, &id).await;
        assert_eq!(h["status"], "active", "{h}");
        placed.push(str_of(&h["server"], "id").to_owned());
    }
    // a (0 of 2) first; then b (0 of 1) beats a (1 of 2)? Both hold less than their room:
    // the fewer accounts wins, ties to the older server.
    assert_eq!(placed, vec![a.clone(), b.clone(), a.clone()]);
    assert_eq!(app.admin_server(&a).await["accounts"], 2);
    assert_eq!(app.admin_server(&b).await["accounts"], 1);
    // Both full: the next order is refused.
    let body = json!({ "plan_id": plan, "domain_source": "external", "domain_name": "p9.example" });
    let (status, o) = app.post(&order_path(&app), &app.key(), &body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{o}");
    app.stop().await;
}

/// Plesk names an internationalized subscription in Unicode (`name`) and gives its ASCII
/// form as `ascii-name`; Lodge's domains are ASCII. Found by the panels audit: comparing
/// `name` refused every later step on such an account as someone else's.
async fn an_internationalized_domain_stays_ours_on_plesk(app: TestApp) {
    let fake = Fake::start("plesk").await;
    panel_catalog(&app).await;
    pinned_server(&app, &fake).await;
    add_credit(&app, &app.org_id(), "100.00").await;
    let worker = Worker::new(app.lodge.clone(), "node-1");
    let id = order(
        &app,
        &plan_of(&app, "plesk-small").await,
        "bücher-laden.example",
    )
    .await;
    assert_eq!(run(&worker).await, 1);
    let h = hosting(&app, &id).await;
    assert_eq!(h["status"], "active", "{h}");
    let user = str_of(&h, "username").to_owned();
    assert_eq!(
        fake.account(&user).unwrap().domain,
        "xn--bcher-laden-thb.example"
    );
    staff(&app, &id, "suspend").await;
    assert_eq!(run(&worker).await, 1);
    assert_eq!(hosting(&app, &id).await["status"], "suspended");
    assert!(fake.account(&user).unwrap().suspended);
    staff(&app, &id, "terminate").await;
    assert_eq!(run(&worker).await, 1);
    assert_eq!(hosting(&app, &id).await["status"], "terminated");
    assert!(fake.account(&user).is_none(), "removed from the panel");
    app.stop().await;
}
