//! One delivery: the worker runs a `webhook` job, which posts the event, signed, to its
//! endpoint and logs the attempt. A 2xx is success; any other answer, a network error or a
//! timeout fails the job, which the worker retries with backoff.

use std::time::Instant;

use hmac::{Hmac, Mac};
use lodge_store::events::EventRow;
use lodge_store::jobs::JobRow;
use lodge_store::webhooks::{self as store, NewDelivery};
use lodge_store::SqlConn;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;

use super::{target, TIMEOUT};
use crate::{Lodge, Result, ServiceError};

/// The header with the signature: `t=<unix seconds>,v1=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "Lodge-Signature";

/// `t=<t>,v1=<hex of HMAC-SHA256(secret, "<t>.<body>")>`, the key being the whole secret
/// (`whsec_…`) as bytes: the scheme of Stripe's `Stripe-Signature`.
pub fn signature(secret: &str, t: i64, body: &str) -> String {
    // HMAC takes a key of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return format!("t={t},v1="),
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// A `webhook` job's payload.
#[derive(Debug, Deserialize)]
struct Payload {
    endpoint_id: i64,
    event_id: String,
    /// Asked by staff: sent even if delivered before, and to a disabled endpoint.
    #[serde(default)]
    redelivery: bool,
}

/// What the receiver did.
struct Answer {
    status_code: Option<i64>,
    error: Option<String>,
    delivered: bool,
}

/// How much of a receiver's error answer is read (the first 200 characters are kept).
const ERROR_BODY_BYTES: usize = 1024;

fn subscribed(events: &str, kind: &str) -> bool {
    events == "*" || events.contains(&format!(",{kind},"))
}

impl Lodge {
    /// Runs a `webhook` job (see the module's documentation for what is sent when).
    pub(crate) async fn run_webhook(&self, job: &JobRow) -> Result<()> {
        let p: Payload = serde_json::from_str(&job.payload).map_err(|e| {
            ServiceError::Internal(format!("job {} has a bad payload: {e}", job.id))
        })?;
        let mut db = self.store.read_conn().await?;
        // Delivered by an earlier run whose completion was not recorded: never twice.
        if store::delivered_by_job(&mut db, job.id).await? {
            return Ok(());
        }
        let Some(endpoint) = store::by_id(&mut db, p.endpoint_id).await? else {
            return Ok(()); // deleted since
        };
        let Some(event) = lodge_store::events::event(&mut db, &p.event_id).await? else {
            return Err(ServiceError::Internal(format!(
                "job {}: no event {}",
                job.id, p.event_id
            )));
        };
        // The endpoint as it is now: moved to another organization since, it gets none of
        // this one's events, not even again (and the log says so: found by the mail and
        // webhooks audit, the retry dropped without a word).
        let moved = endpoint
            .organization_id
            .is_some_and(|o| o != event.organization_id);
        // Changed since the event was raised (found by the webhooks audit: a retry due while
        // the endpoint was disabled ended the job as if delivered, with no word in the log,
        // and the event never went once it was enabled again). Either way the log says so.
        let wanted = endpoint.enabled && subscribed(&endpoint.events, &event.kind);
        if moved || !(p.redelivery || wanted) {
            drop(db);
            let unsubscribed = moved || !subscribed(&endpoint.events, &event.kind);
            let why = if moved {
                "not sent: the endpoint now gets another organization's events only".to_owned()
            } else if unsubscribed {
                format!(
                    "not sent: the endpoint no longer subscribes to {}",
                    event.kind
                )
            } else {
                "not sent: the endpoint is disabled (tried again with backoff until it is \
                 enabled)"
                    .to_owned()
            };
            let mut conn = self.store.write_conn().await?;
            store::record(
                &mut *conn,
                &NewDelivery {
                    endpoint_id: endpoint.id,
                    event_id: &event.id,
                    job_id: Some(job.id),
                    attempt: job.attempts,
                    redelivery: false,
                    status_code: None,
                    error: Some(&why),
                    delivered: false,
                    duration_ms: 0,
                    now: self.now_us(),
                },
            )
            .await?;
            // Unsubscribed: not wanted, done. Disabled: kept for when it is enabled again
            // (dead after the usual day of retries, then retried or redelivered by staff).
            return if unsubscribed {
                Ok(())
            } else {
                Err(ServiceError::Internal(format!(
                    "webhook {}: {why}",
                    endpoint.id
                )))
            };
        }
        let body = event_body(&mut db, &event).await?;
        drop(db);
        let secret = self.sealer.open(&endpoint.secret)?;
        let now = self.now_us();
        let t = now.div_euclid(1_000_000);
        let mut header = signature(&secret, t, &body);
        // Rotated lately: the previous secret signs too, as a second `v1` (a Stripe-style
        // verifier accepts either).
        if let (Some(previous), Some(until)) = (&endpoint.previous_secret, endpoint.previous_until)
        {
            if now < until {
                let old = self.sealer.open(previous)?;
                if let Some((_, v1)) = signature(&old, t, &body).split_once(",v1=") {
                    header.push_str(",v1=");
                    header.push_str(v1);
                }
            }
        }
        let started = Instant::now();
        let url = self.webhook_url(&endpoint.url)?;
        let answer = self.post(&url, &body, &header, &event).await;
        let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let mut conn = self.store.write_conn().await?;
        store::record(
            &mut *conn,
            &NewDelivery {
                endpoint_id: endpoint.id,
                event_id: &event.id,
                job_id: Some(job.id),
                attempt: job.attempts,
                redelivery: p.redelivery,
                status_code: answer.status_code,
                error: answer.error.as_deref(),
                delivered: answer.delivered,
                duration_ms,
                now: self.now_us(),
            },
        )
        .await?;
        drop(conn);
        if answer.delivered {
            Ok(())
        } else {
            Err(ServiceError::Internal(format!(
                "webhook {} ({}): {}",
                endpoint.id,
                super::url_for_logs(&url),
                answer.error.as_deref().unwrap_or("not delivered")
            )))
        }
    }

    async fn post(&self, url: &str, body: &str, signature: &str, event: &EventRow) -> Answer {
        let failed = |error: String| Answer {
            status_code: None,
            error: Some(error),
            delivered: false,
        };
        let url = match target::parse(url) {
            Ok(u) => u,
            Err(e) => return failed(e),
        };
        // Checked again now: the name may resolve elsewhere than at registration. The
        // request goes to the addresses checked, not to a second lookup's.
        let addrs = match target::resolve(&url, self.settings.webhooks_allow_private).await {
            Ok(a) => a,
            Err(e) => return failed(e),
        };
        let mut client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(format!("Lodge/{}", env!("CARGO_PKG_VERSION")));
        if let Some(host) = url.host_str() {
            if host.parse::<std::net::IpAddr>().is_err() && !host.starts_with('[') {
                client = client.resolve_to_addrs(host, &addrs);
            }
        }
        let client = match client.build() {
            Ok(c) => c,
            Err(e) => return failed(format!("no HTTP client: {e}")),
        };
        let sent = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(super::SIGNATURE_HEADER, signature)
            .header("Lodge-Event-Id", &event.id)
            .header("Lodge-Event-Type", &event.kind)
            .body(body.to_owned())
            .send()
            .await;
        match sent {
            Ok(resp) => {
                let status = resp.status();
                if status.is_success() {
                    Answer {
                        status_code: Some(i64::from(status.as_u16())),
                        error: None,
                        delivered: true,
                    }
                } else {
                    // What the receiver said, from the first KiB of its answer at most (it
                    // may send gigabytes).
                    let mut head: Vec<u8> = Vec::new();
                    let mut resp = resp;
                    while head.len() < ERROR_BODY_BYTES {
                        match resp.chunk().await {
                            Ok(Some(chunk)) => head.extend_from_slice(&chunk),
                            _ => break,
                        }
                    }
                    head.truncate(ERROR_BODY_BYTES);
                    // Control characters blanked: the text goes to the logs, where a
                    // receiver's newline or escape sequence would forge lines.
                    let text: String = String::from_utf8_lossy(&head)
                        .chars()
                        .take(200)
                        .map(|c| if c.is_control() { ' ' } else { c })
                        .collect();
                    Answer {
                        status_code: Some(i64::from(status.as_u16())),
                        error: Some(format!("HTTP {status}: {}", text.trim())),
                        delivered: false,
                    }
                }
            }
            Err(e) if e.is_timeout() => {
                failed(format!("no answer within {} seconds", TIMEOUT.as_secs()))
            }
            // Without the URL reqwest puts in its words (it may carry a credential).
            Err(e) => failed(format!("{}", e.without_url())),
        }
    }
}

/// An event's data as it is shown (delivered, listed): an invoice's number, unassigned
/// when the event was recorded in a group commit, is read back by its `invoice_id`.
pub(crate) async fn event_data<C: SqlConn>(db: &mut C, e: &EventRow) -> Result<Value> {
    let data: Value = serde_json::from_str(&e.data)
        .map_err(|err| ServiceError::Internal(format!("event {} has bad data: {err}", e.id)))?;
    with_number(db, data).await
}

/// `data` with its invoice's number read back when it was unassigned at the event.
pub(crate) async fn with_number<C: SqlConn>(db: &mut C, mut data: Value) -> Result<Value> {
    if let (Some(invoice), Some(Value::Null)) = (
        data.get("invoice_id").and_then(Value::as_i64),
        data.get("number"),
    ) {
        if let Some(i) = lodge_store::billing::invoice(db, invoice).await? {
            if let Some(obj) = data.as_object_mut() {
                obj.insert("number".into(), json!(i.number));
            }
        }
    }
    Ok(data)
}

/// The body sent: `{id, type, created, organization_id, data}` with `created` in unix
/// seconds, the data as [`event_data`] shows it.
async fn event_body<C: SqlConn>(db: &mut C, e: &EventRow) -> Result<String> {
    let data = event_data(db, e).await?;
    Ok(json!({
        "id": e.id,
        "type": e.kind,
        "created": e.created_at.div_euclid(1_000_000),
        "organization_id": e.organization_id,
        "data": data,
    })
    .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed independently: what a receiver's verifier does.
    #[test]
    fn signature_is_hmac_sha256_of_t_dot_body() {
        let s = signature("whsec_test", 1_700_000_000, "{\"id\":\"evt_1\"}");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec_test").unwrap();
        mac.update(b"1700000000.{\"id\":\"evt_1\"}");
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(s, format!("t=1700000000,v1={expected}"));
    }

    #[test]
    fn subscriptions() {
        assert!(subscribed("*", "invoice.paid"));
        assert!(subscribed(",order.created,invoice.paid,", "invoice.paid"));
        assert!(!subscribed(",order.created,", "invoice.paid"));
        assert!(!subscribed(",invoice.paid,", "invoice"));
    }
}
