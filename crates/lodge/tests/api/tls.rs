//! Issue 21: TLS certificates by ACME on real servers: pebble (the test ACME CA) resolving
//! names through the test's PowerDNS (Lodge's zone for the domain), HTTP-01 answered by the
//! real nginx the site is on. A paid order gets its certificate and `https://` serves the
//! welcome page with it (then the suspension page); a second run of the job changes nothing;
//! the scheduler renews 30 days before expiry; termination takes the https site away and
//! stops renewals; a failure shows on the hosting.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lodge_services::drivers::nginx::NginxConfig;
use lodge_services::provisioning::Worker;
use lodge_testkit::nginx::NginxInstance;
use lodge_testkit::pdns::{dig, PdnsInstance};
use lodge_testkit::pebble::PebbleInstance;
use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{self, add_credit, hosting, str_of, Engine, Options, TestApp};
use crate::provisioning::{drain, order_paid, page_until, real_nginx, staff};

crate::on_both_engines!(
    engine: a_paid_site_gets_a_certificate_renewed_until_termination,
    a_failed_issuance_shows_on_the_hosting,
    a_zone_pointing_elsewhere_fails_validation_visibly,
    dns_01_issues_through_the_powerdns_zone,
);

/// The real servers of a TLS test: PowerDNS, nginx (with a TLS port) and pebble.
struct Servers {
    pdns: PdnsInstance,
    _base: tempfile::TempDir,
    nginx: NginxInstance,
    cfg: NginxConfig,
    tls_port: u16,
    pebble: PebbleInstance,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn servers() -> Option<Servers> {
    let pdns = match PdnsInstance::start().await {
        Ok(Some(p)) => p,
        Ok(None) => {
            lodge_testkit::skip_or_fail(
                "PowerDNS",
                &lodge_testkit::pdns::missing().unwrap_or_default(),
            );
            return None;
        }
        Err(e) => panic!("PowerDNS did not start: {e:#}"),
    };
    let (base, nginx, mut cfg, _sites) = real_nginx()?;
    let tls_port = free_port();
    cfg.tls_listen = format!("127.0.0.1:{tls_port}");
    let pebble = match PebbleInstance::start(
        nginx.port(),
        &format!("127.0.0.1:{}", pdns.dns_port()),
    )
    .await
    {
        Ok(Some(p)) => p,
        Ok(None) => {
            lodge_testkit::skip_or_fail("pebble", "pebble not found (Debian pebble)");
            return None;
        }
        Err(e) => panic!("pebble did not start: {e:#}"),
    };
    Some(Servers {
        pdns,
        _base: base,
        nginx,
        cfg,
        tls_port,
        pebble,
    })
}

fn options(s: &Servers, directory_url: String) -> Options {
    Options {
        nginx: Some(s.cfg.clone()),
        dns: Some((s.pdns.api_url(), s.pdns.api_key().to_owned())),
        acme: Some((directory_url, s.pebble.listener_ca_file())),
        ..Default::default()
    }
}

/// GET `https://<domain>:<port>/` resolving the domain to 127.0.0.1 and trusting only
/// `root`: the status, the body and the server's certificate (DER).
async fn https_get(
    port: u16,
    domain: &str,
    root: &str,
) -> Result<(u16, String, Vec<u8>), reqwest::Error> {
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(root.as_bytes()).expect("root"))
        .resolve(domain, SocketAddr::from(([127, 0, 0, 1], port)))
        .tls_info(true)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let resp = client
        .get(format!("https://{domain}:{port}/"))
        .send()
        .await?;
    let status = resp.status().as_u16();
    let cert = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    Ok((status, resp.text().await?, cert))
}

/// Asks until `https://<domain>/` serves a page containing `want` with a certificate
/// other than `not` (nginx reloads in the background; old workers finish their
/// connections). Within 30 s: under the whole suite on 2 cores a reload once took more than
/// 10 (the port still answered plain HTTP).
async fn https_until(port: u16, domain: &str, root: &str, want: &str) -> Vec<u8> {
    https_until_not(port, domain, root, want, &[]).await
}

async fn https_until_not(port: u16, domain: &str, root: &str, want: &str, not: &[u8]) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = https_get(port, domain, root).await;
        if let Ok((200, body, cert)) = &got {
            if body.contains(want) && cert.as_slice() != not {
                return cert.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "https://{domain}:{port}/ never served {want:?}: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

async fn issue_jobs(app: &TestApp) -> Vec<(String, String)> {
    sqlx::query_as::<_, (String, String)>(
        "SELECT status, dedupe_key FROM jobs WHERE kind = 'issue_certificate' ORDER BY id",
    )
    .fetch_all(app.lodge.store.reader())
    .await
    .expect("jobs")
}

async fn a_paid_site_gets_a_certificate_renewed_until_termination(engine: Engine) {
    let Some(s) = servers().await else {
        return;
    };
    let root = s.pebble.issuing_root().await.expect("pebble's root");
    let opts = options(&s, s.pebble.directory_url());
    let (port, tls_port) = (s.nginx.port(), s.tls_port);
    harness::run(engine, opts, |app| async move {
        add_credit(&app, &app.org_id(), "100.00").await;
        let domain = "tls-site.com";
        let o = order_paid(&app, domain).await;
        let id = str_of(&o, "hosting_id").to_owned();
        let worker = Worker::new(app.lodge.clone(), "node-1");
        drain_until_issued(&app, &worker, &id).await;

        // Active, the zone answers, and the certificate was issued through pebble.
        let h = hosting(&app, &id).await;
        assert_eq!(h["status"], "active", "{h}\n{}", s.pebble.log());
        let got = dig(s.pdns.dns_port(), domain, "A").await.expect("dig");
        assert_eq!(got, ["127.0.0.1"]);
        assert_eq!(h["tls"]["status"], "issued", "{h}\n{}", s.pebble.log());
        assert!(h["tls"]["error"].is_null(), "{h}");
        let expires = str_of(&h["tls"], "expires_at").to_owned();
        let welcome = format!("Welcome to {domain}");
        let cert = https_until(tls_port, domain, &root, &welcome).await;
        assert!(contains(&cert, domain), "the certificate names {domain}");
        let www = format!("www.{domain}");
        https_until(tls_port, &www, &root, &welcome).await;
        // Plain http still serves the site (and the challenges).
        page_until(port, domain, "welcome page over http", |st, b| {
            st == 200 && b.contains(&welcome)
        })
        .await;

        // The files nginx reads are the owner's only; the key is sealed in the database.
        let user = str_of(&h, "username").to_owned();
        let tls_dir = s.cfg.web_root.join(&user).join("tls");
        for f in ["fullchain.pem", "privkey.pem"] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(tls_dir.join(f))
                .expect(f)
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        let key_on_disk = std::fs::read_to_string(tls_dir.join("privkey.pem")).expect("key");
        let stored: String =
            sqlx::query_scalar("SELECT private_key FROM certificates WHERE hosting_id = $1")
                .bind(&id)
                .fetch_one(app.lodge.store.reader())
                .await
                .expect("stored key");
        assert!(!stored.contains("PRIVATE KEY"), "sealed at rest");
        assert_eq!(app.lodge.sealer.open(&stored).expect("open"), key_on_disk);
        let accounts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM acme_accounts")
            .fetch_one(app.lodge.store.reader())
            .await
            .expect("accounts");
        assert_eq!(accounts, 1);

        // The job once more (a retry): nothing new is issued, the same certificate serves.
        let chain_before = std::fs::read_to_string(tls_dir.join("fullchain.pem")).expect("chain");
        sqlx::query(
            "UPDATE jobs SET status = 'queued', run_at = 0 WHERE kind = 'issue_certificate'",
        )
        .execute(app.lodge.store.writer())
        .await
        .expect("requeue");
        assert_eq!(drain(worker.clone()).await, 1);
        let chain_after = std::fs::read_to_string(tls_dir.join("fullchain.pem")).expect("chain");
        assert_eq!(chain_before, chain_after, "not re-issued");
        let h = hosting(&app, &id).await;
        assert_eq!(h["tls"]["expires_at"], expires.as_str(), "{h}");
        // Nothing due: the scheduler queues nothing.
        app.lodge.schedule_due().await.expect("scheduler pass");
        let first = issue_jobs(&app).await;
        assert_eq!(first.len(), 1);
        // The renewals' jobs (the first one's finished job is forgotten once the clock is
        // past the retention window: years, below).
        let renewals = || async {
            let mut jobs = issue_jobs(&app).await;
            jobs.retain(|j| j.1 != first[0].1);
            jobs
        };

        // 29 days before expiry (Lodge's clock): the scheduler renews it, once.
        let not_after: jiff::Timestamp = expires.parse().expect("expires_at");
        app.clock
            .set(not_after - jiff::SignedDuration::from_hours(29 * 24));
        app.lodge.schedule_due().await.expect("scheduler pass");
        app.lodge.schedule_due().await.expect("scheduler pass");
        let jobs = renewals().await;
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        drain_until_issued(&app, &worker, &id).await;
        let renewed = std::fs::read_to_string(tls_dir.join("fullchain.pem")).expect("chain");
        assert_ne!(renewed, chain_before, "a new certificate");
        let h = hosting(&app, &id).await;
        assert_eq!(h["tls"]["status"], "issued", "{h}");
        // pebble dates a certificate from the second it signs it: a renewal in the same
        // second as the first issuance (a fast run) expires at the same instant, never before.
        let renewed_until: jiff::Timestamp =
            str_of(&h["tls"], "expires_at").parse().expect("expires_at");
        assert!(renewed_until >= not_after, "{h}");
        // nginx serves the renewed certificate.
        let cert2 = https_until_not(tls_port, domain, &root, &welcome, &cert).await;
        assert!(contains(&cert2, domain));

        // Suspended: the suspension page, over https with the same certificate.
        let (status, body) = staff(&app, &id, "suspend").await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        drain(worker.clone()).await;
        assert_eq!(hosting(&app, &id).await["status"], "suspended");
        let cert3 = https_until(tls_port, domain, &root, "This site is suspended").await;
        assert_eq!(cert3, cert2);

        // Terminated: no https site; the files left nginx with the site's archive; no
        // renewals any more.
        let (status, body) = staff(&app, &id, "terminate").await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        drain(worker.clone()).await;
        let h = hosting(&app, &id).await;
        assert_eq!(h["status"], "terminated", "{h}");
        assert_eq!(h["tls"]["status"], "removed", "{h}");
        assert!(!tls_dir.exists());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = https_get(tls_port, domain, &root).await;
            let gone = match &r {
                Err(_) => true,
                Ok((_, body, cert)) => !body.contains(&welcome) && !contains(cert, domain),
            };
            if gone {
                break;
            }
            assert!(Instant::now() < deadline, "still served: {r:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        app.clock
            .set(not_after + jiff::SignedDuration::from_hours(24));
        app.lodge.schedule_due().await.expect("scheduler pass");
        assert_eq!(renewals().await.len(), 1);
        app.stop().await;
    })
    .await;
}

/// The CA unreachable: the account is active all the same (provisioning never waits for
/// TLS), the hosting shows the failed certificate and why, and the job retries.
async fn a_failed_issuance_shows_on_the_hosting(engine: Engine) {
    let Some(s) = servers().await else {
        return;
    };
    let closed = free_port();
    let opts = options(&s, format!("https://127.0.0.1:{closed}/dir"));
    harness::run(engine, opts, |app| async move {
        add_credit(&app, &app.org_id(), "100.00").await;
        let o = order_paid(&app, "tls-fails.com").await;
        let id = str_of(&o, "hosting_id").to_owned();
        let worker = Worker::new(app.lodge.clone(), "node-1");
        drain(worker.clone()).await;
        let h = hosting(&app, &id).await;
        assert_eq!(h["status"], "active", "{h}");
        assert!(h["last_error"].is_null(), "the account itself is fine: {h}");
        assert_eq!(h["tls"]["status"], "failed", "{h}");
        assert!(h["tls"]["expires_at"].is_null(), "{h}");
        let error = h["tls"]["error"].as_str().unwrap_or_default();
        assert!(!error.is_empty(), "{h}");
        let jobs: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, attempts FROM jobs WHERE kind = 'issue_certificate'")
                .fetch_all(app.lodge.store.reader())
                .await
                .expect("jobs");
        assert_eq!(jobs, vec![("queued".to_owned(), 1)], "retried later");
        // While that job retries the scheduler adds none; once it ran out of attempts, the
        // next pass queues one more (at most one a day), and never a second beside it.
        let tls_jobs = |app: &TestApp| {
            let db = app.lodge.store.reader().clone();
            async move {
                sqlx::query_as::<_, (String,)>(
                    "SELECT status FROM jobs WHERE kind = 'issue_certificate' ORDER BY id",
                )
                .fetch_all(&db)
                .await
                .expect("jobs")
                .into_iter()
                .map(|(s,)| s)
                .collect::<Vec<_>>()
            }
        };
        app.lodge.schedule_due().await.expect("scheduler pass");
        assert_eq!(tls_jobs(&app).await, ["queued"]);
        sqlx::query("UPDATE jobs SET status = 'dead' WHERE kind = 'issue_certificate'")
            .execute(app.lodge.store.writer())
            .await
            .expect("out of attempts");
        app.lodge.schedule_due().await.expect("scheduler pass");
        app.lodge.schedule_due().await.expect("scheduler pass");
        assert_eq!(tls_jobs(&app).await, ["dead", "queued"]);
        app.expect_dead_jobs("the first issuance's job was made to run out of attempts");
        // The list shows no TLS (detail only).
        let (status, list) = app
            .get(
                &format!(
                    "/v1/organizations/{}/projects/{}/hosting",
                    app.org_id(),
                    app.project_id()
                ),
                &app.key(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let listed: &Value = &list["results"][0];
        assert_eq!(listed["id"], id.as_str(), "{list}");
        assert!(listed.get("tls").is_none(), "{listed}");
        app.stop().await;
    })
    .await;
}

/// Drains the worker until the account's certificate is issued: an attempt that failed on a
/// loaded machine (the CA's validation timing out) is retried after its backoff, as in
/// production; the failure is printed, and five in a row fail the test.
async fn drain_until_issued(app: &TestApp, worker: &Worker, id: &str) {
    for _ in 0..5 {
        drain(worker.clone()).await;
        let h = hosting(app, id).await;
        if h["tls"]["status"] == "issued" && h["tls"]["error"].is_null() {
            return;
        }
        eprintln!(
            "certificate not issued yet, retrying after the backoff: {}",
            h["tls"]
        );
        crate::provisioning::past_backoff(app);
    }
    panic!(
        "the certificate was never issued: {}",
        hosting(app, id).await
    );
}

/// The zone sends the domain elsewhere (an address where nothing answers): pebble cannot
/// validate HTTP-01, the order is invalid, and the hosting shows why; the site itself is
/// active. Once the zone points back, the retried job issues the certificate.
async fn a_zone_pointing_elsewhere_fails_validation_visibly(engine: Engine) {
    let Some(s) = servers().await else {
        return;
    };
    let root = s.pebble.issuing_root().await.expect("pebble's root");
    let opts = options(&s, s.pebble.directory_url());
    let tls_port = s.tls_port;
    harness::run(engine, opts, |app| async move {
        add_credit(&app, &app.org_id(), "100.00").await;
        let domain = "tls-elsewhere.com";
        let o = order_paid(&app, domain).await;
        let id = str_of(&o, "hosting_id").to_owned();
        let worker = Worker::new(app.lodge.clone(), "node-1");
        // Provisioned (and its certificate queued) in one round.
        assert_eq!(worker.run_once().await.expect("round"), 1);
        assert_eq!(hosting(&app, &id).await["status"], "active");
        assert_eq!(hosting(&app, &id).await["tls"]["status"], "pending");
        let zone = lodge_services::dns::PowerDns::new(lodge_services::dns::DnsSettings {
            api_url: s.pdns.api_url(),
            api_key: s.pdns.api_key().to_owned().into(),
            server_id: "localhost".into(),
            ttl: 60,
        })
        .expect("client");
        let a = |ip: &str| {
            [domain.to_owned(), format!("www.{domain}")]
                .map(|n| {
                    lodge_services::dns::pdns::RRset::new(
                        &format!("{n}."),
                        "A",
                        60,
                        &[ip.to_owned()],
                    )
                })
                .to_vec()
        };
        zone.patch(domain, a("127.0.0.2"), vec![])
            .await
            .expect("patch");
        assert_eq!(worker.run_once().await.expect("round"), 1);
        let h = hosting(&app, &id).await;
        assert_eq!(h["status"], "active", "{h}");
        assert!(h["last_error"].is_null(), "{h}");
        assert_eq!(h["tls"]["status"], "failed", "{h}");
        let error = h["tls"]["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("did not validate")
                && error.contains(domain)
                && error.contains("127.0.0.2"),
            "{h}\n{}",
            s.pebble.log()
        );

        // Back to this server: the retry (after its backoff) issues it.
        zone.patch(domain, a("127.0.0.1"), vec![])
            .await
            .expect("patch");
        app.clock.advance(jiff::SignedDuration::from_mins(5));
        drain(worker.clone()).await;
        let h = hosting(&app, &id).await;
        assert_eq!(h["tls"]["status"], "issued", "{h}\n{}", s.pebble.log());
        assert!(h["tls"]["error"].is_null(), "{h}");
        https_until(tls_port, domain, &root, &format!("Welcome to {domain}")).await;
        app.stop().await;
    })
    .await;
}

/// DNS-01: the CA checks a TXT record Lodge puts in the account's PowerDNS zone (and takes
/// out again); the certificate is installed as with HTTP-01.
async fn dns_01_issues_through_the_powerdns_zone(engine: Engine) {
    let Some(s) = servers().await else {
        return;
    };
    let root = s.pebble.issuing_root().await.expect("pebble's root");
    let mut opts = options(&s, s.pebble.directory_url());
    opts.acme_challenge = Some("dns-01".into());
    // The CA file as a private CA's bundle often is: another certificate before the one
    // that signed the ACME server's (every certificate in it is trusted, not the first).
    let bundle_dir = tempfile::tempdir().expect("a temp dir");
    let bundle = bundle_dir.path().join("ca-bundle.pem");
    let other = lodge_testkit::tls::Cert::self_signed().expect("another certificate");
    std::fs::write(
        &bundle,
        format!("{}\n{}", other.cert_pem, s.pebble.listener_ca_pem()),
    )
    .expect("the bundle");
    opts.acme = Some((s.pebble.directory_url(), bundle));
    let tls_port = s.tls_port;
    harness::run(engine, opts, |app| async move {
        add_credit(&app, &app.org_id(), "100.00").await;
        let domain = "tls-dns.com";
        let o = order_paid(&app, domain).await;
        let id = str_of(&o, "hosting_id").to_owned();
        drain(Worker::new(app.lodge.clone(), "node-1")).await;
        let h = hosting(&app, &id).await;
        assert_eq!(h["tls"]["status"], "issued", "{h}\n{}", s.pebble.log());
        let cert = https_until(tls_port, domain, &root, &format!("Welcome to {domain}")).await;
        assert!(contains(&cert, domain));
        let txt = dig(
            s.pdns.dns_port(),
            &format!("_acme-challenge.{domain}"),
            "TXT",
        )
        .await
        .expect("dig");
        assert!(txt.is_empty(), "the challenge records are gone: {txt:?}");
        app.stop().await;
    })
    .await;
}
