//! Issue 21: DNS zones on a real PowerDNS (gsqlite3 in a temp dir, loopback ports): a paid
//! order's zone answers `dig`, customers edit its records through `/v1`, termination
//! removes it, and a retried create makes one zone (adopting only its own).

use std::time::{Duration, Instant};

use lodge_services::dns::{pdns::RRset, zone_account, DnsSettings, PowerDns};
use lodge_services::provisioning::Worker;
use lodge_testkit::pdns::{dig, missing, PdnsInstance};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::{self, add_credit, hosting, other_tenant, str_of, Engine, Options, TestApp};
use crate::provisioning::{drain, FakeDriver};

crate::on_both_engines!(
    engine: a_paid_order_gets_a_zone_its_owner_edits_until_termination,
    a_retried_create_makes_one_zone_and_adopts_only_its_own,
);

async fn pdns() -> Option<PdnsInstance> {
    match PdnsInstance::start().await {
        Ok(Some(p)) => Some(p),
        Ok(None) => {
            lodge_testkit::skip_or_fail("PowerDNS", &missing().unwrap_or_default());
            None
        }
        Err(e) => panic!("PowerDNS did not start: {e:#}"),
    }
}

fn options(p: &PdnsInstance) -> Options {
    Options {
        dns: Some((p.api_url(), p.api_key().to_owned())),
        ..Default::default()
    }
}

fn client(p: &PdnsInstance) -> PowerDns {
    PowerDns::new(DnsSettings {
        api_url: p.api_url(),
        api_key: p.api_key().to_owned().into(),
        server_id: "localhost".into(),
        ttl: 3600,
    })
    .expect("client")
}

/// Asks until `dig` answers `want` (PowerDNS answers from its database, but give it a
/// moment).
async fn dig_until(p: &PdnsInstance, name: &str, kind: &str, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = dig(p.dns_port(), name, kind).await.expect("dig");
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "dig {name} {kind}: {got:?}, want {want:?}\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Orders `name` registered (the manual registrar) on Starter, paid from credit; returns
/// (hosting id, domain id).
async fn order_registered(app: &TestApp, name: &str) -> (String, String) {
    let (status, o) = app
        .post(
            &format!(
                "/v1/organizations/{}/projects/{}/hosting/order",
                app.org_id(),
                app.project_id()
            ),
            &app.key(),
            &json!({ "plan_id": harness::starter(app), "domain_source": "register",
                     "domain_name": name }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "order {name}: {o}");
    assert_eq!(o["status"], "active", "paid from credit: {o}");
    (
        str_of(&o, "hosting_id").to_owned(),
        str_of(&o, "domain_id").to_owned(),
    )
}

fn records_path(org: &str, project: &str, domain: &str) -> String {
    format!("/v1/organizations/{org}/projects/{project}/domains/{domain}/records")
}

async fn zones_named(p: &PdnsInstance, zone: &str) -> usize {
    let zones: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/servers/localhost/zones", p.api_url()))
        .header("X-API-Key", p.api_key())
        .send()
        .await
        .expect("list zones")
        .json()
        .await
        .expect("zones JSON");
    zones
        .as_array()
        .expect("a list")
        .iter()
        .filter(|z| z["name"] == zone)
        .count()
}

async fn a_paid_order_gets_a_zone_its_owner_edits_until_termination(engine: Engine) {
    let Some(p) = pdns().await else {
        return;
    };
    harness::run(engine, options(&p), |app| async move {
        FakeDriver::default().install(&app.lodge);
        // The start-up check: PowerDNS answers and takes the key.
        let checks = app.lodge.check_services().await;
        assert!(
            matches!(checks.as_slice(), [("powerdns", Ok(_))]),
            "{checks:?}"
        );
        // With zones on, a server Lodge provisions itself needs its nameservers.
        let (status, e) = app
            .post(
                "/v1/admin/servers",
                &app.admin_key(),
                &serde_json::json!({ "name": "web2", "hostname": "web2.example.com", "driver": "nginx" }),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{e}");
        assert!(e["ns1"].is_array() && e["ns2"].is_array(), "{e}");
        add_credit(&app, &app.org_id(), "100.00").await;
        let name = "zone-one.com";
        let (hosting_id, domain_id) = order_registered(&app, name).await;
        let worker = Worker::new(app.lodge.clone(), "node-1");
        drain(worker.clone()).await;
        let h = hosting(&app, &hosting_id).await;
        assert_eq!(h["status"], "active", "{h}");

        // The zone: the server (localhost) is the apex's and www's address; NS from the
        // server's ns1/ns2; Starter has mailboxes, so MX and mail.
        dig_until(&p, name, "A", &["127.0.0.1"]).await;
        dig_until(&p, &format!("www.{name}"), "A", &["127.0.0.1"]).await;
        dig_until(&p, &format!("mail.{name}"), "A", &["127.0.0.1"]).await;
        dig_until(&p, name, "NS", &["ns1.localhost.", "ns2.localhost."]).await;
        dig_until(&p, name, "MX", &[&format!("10 mail.{name}.")]).await;
        let soa = dig(p.dns_port(), name, "SOA").await.expect("dig SOA");
        assert!(
            soa.first().is_some_and(|s| s.starts_with("ns1.localhost. hostmaster.")),
            "{soa:?}"
        );

        // The owner reads the records (NS and SOA apart).
        let path = records_path(&app.org_id(), &app.project_id(), &domain_id);
        let (status, z) = app.get(&path, &app.key()).await;
        assert_eq!(status, StatusCode::OK, "{z}");
        assert_eq!(z["zone"], name, "{z}");
        assert_eq!(z["nameservers"], json!(["ns1.localhost", "ns2.localhost"]), "{z}");
        let records = z["records"].as_array().expect("records");
        assert!(
            records.iter().any(|r| r["name"] == name
                && r["type"] == "A"
                && r["values"] == json!(["127.0.0.1"])
                && r["ttl"] == 3600),
            "{z}"
        );
        assert!(records.iter().all(|r| r["type"] != "NS" && r["type"] != "SOA"), "{z}");

        // Bad records: every problem at once, in /v1's field-error shape; nothing changes.
        let (status, e) = app
            .call(
                Method::PUT,
                &path,
                Some(&app.key()),
                Some(&json!({ "records": [
                    { "name": "@", "type": "CNAME", "values": ["elsewhere.test"] },
                    { "name": "@", "type": "NS", "values": ["ns.evil.test"] },
                    { "name": "www.other.com.", "type": "A", "values": ["192.0.2.1"] },
                    { "name": "x", "type": "A", "values": ["300.1.1.1"] },
                    { "name": "y", "type": "A", "ttl": 1, "values": ["192.0.2.1"] },
                    { "name": "z", "type": "PTR", "values": ["a.test."] },
                ]})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
        for field in [
            "records[0].type",
            "records[1].type",
            "records[2].name",
            "records[3].values[0]",
            "records[4].ttl",
            "records[5].type",
        ] {
            assert!(
                e[field].as_array().is_some_and(|m| !m.is_empty()),
                "{field}: {e}"
            );
        }
        dig_until(&p, name, "A", &["127.0.0.1"]).await;

        // Good records: the zone becomes exactly these (and Lodge's NS and SOA).
        let (status, z) = app
            .call(
                Method::PUT,
                &path,
                Some(&app.key()),
                Some(&json!({ "records": [
                    { "name": "@", "type": "A", "ttl": 300, "values": ["192.0.2.10", "192.0.2.11"] },
                    { "name": "www", "type": "CNAME", "values": [name] },
                    { "name": name, "type": "TXT", "values": ["v=spf1 -all"] },
                    { "name": "@", "type": "MX", "values": ["10 mx1.mail.test", "20 mx2.mail.test."] },
                    { "name": "_sip._tcp", "type": "SRV", "values": ["0 5 5060 sip.zone-one.com."] },
                    { "name": "@", "type": "CAA", "values": ["0 issue letsencrypt.org"] },
                ]})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{z}");
        assert_eq!(z["records"].as_array().map(Vec::len), Some(6), "{z}");
        dig_until(&p, name, "A", &["192.0.2.10", "192.0.2.11"]).await;
        dig_until(&p, &format!("www.{name}"), "CNAME", &[&format!("{name}.")]).await;
        dig_until(&p, name, "TXT", &["\"v=spf1 -all\""]).await;
        dig_until(&p, name, "MX", &["10 mx1.mail.test.", "20 mx2.mail.test."]).await;
        dig_until(&p, &format!("_sip._tcp.{name}"), "SRV", &["0 5 5060 sip.zone-one.com."]).await;
        dig_until(&p, name, "CAA", &["0 issue \"letsencrypt.org\""]).await;
        // Left out: gone. Lodge's NS stay.
        dig_until(&p, &format!("mail.{name}"), "A", &[]).await;
        dig_until(&p, name, "NS", &["ns1.localhost.", "ns2.localhost."]).await;
        // Read again: the same.
        let (status, again) = app.get(&path, &app.key()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(again, z);

        // Another organization cannot see or touch it.
        let (other_org, other_project, other_key) = other_tenant(&app, "dns-other").await;
        let theirs = records_path(&other_org, &other_project, &domain_id);
        let (status, body) = app.get(&theirs, &other_key).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        let (status, body) = app
            .call(Method::PUT, &theirs, Some(&other_key), Some(&json!({ "records": [] })))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        let (status, _) = app.get(&path, &other_key).await;
        assert!(
            status == StatusCode::NOT_FOUND || status == StatusCode::FORBIDDEN,
            "{status}"
        );

        // Suspension keeps the zone; termination removes it.
        let staff = |action: &'static str| {
            let app = &app;
            let id = hosting_id.clone();
            async move {
                let (status, body) = app
                    .post(
                        &format!("/v1/admin/hosting/{id}/{action}"),
                        &app.admin_key(),
                        &json!({}),
                    )
                    .await;
                assert_eq!(status, StatusCode::ACCEPTED, "{action}: {body}");
            }
        };
        staff("suspend").await;
        drain(worker.clone()).await;
        assert_eq!(hosting(&app, &hosting_id).await["status"], "suspended");
        dig_until(&p, name, "A", &["192.0.2.10", "192.0.2.11"]).await;
        staff("terminate").await;
        drain(worker.clone()).await;
        assert_eq!(hosting(&app, &hosting_id).await["status"], "terminated");
        assert_eq!(zones_named(&p, &format!("{name}.")).await, 0);
        dig_until(&p, name, "A", &[]).await;
        let (status, body) = app.get(&path, &app.key()).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        app.stop().await;
    })
    .await;
}

async fn a_retried_create_makes_one_zone_and_adopts_only_its_own(engine: Engine) {
    let Some(p) = pdns().await else {
        return;
    };
    harness::run(engine, options(&p), |app| async move {
        FakeDriver::default().install(&app.lodge);
        add_credit(&app, &app.org_id(), "100.00").await;
        let dns = client(&p);
        let ns = ["ns1.localhost".to_owned()];

        // A first attempt made the zone but its answer was lost: the retry adopts it.
        let ours = "retried.com";
        let (id, _) = order_registered(&app, ours).await;
        let hosting_id = id.parse().expect("hosting id");
        let a = RRset::new(&format!("{ours}."), "A", 60, &["192.0.2.99".into()]);
        dns.create_zone(ours, &zone_account(hosting_id), &ns, &[a])
            .await
            .expect("create");
        let worker = Worker::new(app.lodge.clone(), "node-1");
        drain(worker.clone()).await;
        let h = hosting(&app, &id).await;
        assert_eq!(h["status"], "active", "{h}");
        assert_eq!(zones_named(&p, &format!("{ours}.")).await, 1);
        dig_until(&p, ours, "A", &["192.0.2.99"]).await;

        // Someone else's zone of the same name is never taken over: the job fails at once,
        // the account shows why.
        let theirs = "taken.com";
        let (id, _) = order_registered(&app, theirs).await;
        dns.create_zone(theirs, "someone-else", &ns, &[])
            .await
            .expect("create");
        app.expect_dead_jobs("the zone is someone else's");
        drain(worker.clone()).await;
        let h = crate::harness::staff_hosting(&app, &id).await;
        assert_eq!(h["status"], "failed", "{h}");
        let error = h["last_error"].as_str().unwrap_or_default();
        assert!(
            error.contains("taken.com") && error.contains("someone-else"),
            "{h}"
        );
        assert_eq!(zones_named(&p, &format!("{theirs}.")).await, 1);
        app.stop().await;
    })
    .await;
}
