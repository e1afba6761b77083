//! The hosted payment page: server-rendered HTML reached by an invoice's unguessable token,
//! no login. It shows the invoice and the ways to pay that exist: account credit (when the
//! balance covers it), bank-transfer instructions from configuration, and a card through
//! Stripe when it is configured (Stripe Elements only with a publishable key; the page's
//! script is a file, `/pay/assets/card.js`, never inline).
//!
//! Every response under `/pay` (errors and unknown paths too) carries a strict
//! `Content-Security-Policy` (scripts from Lodge and Stripe.js's host only, the one inline
//! stylesheet by its hash, no framing, forms posting to Lodge only), `X-Frame-Options: DENY`,
//! `Referrer-Policy: no-referrer`, `Cache-Control: no-store` and `nosniff`. The page's POST
//! buttons carry a CSRF token: a per-render nonce and an HMAC of the payment token and the
//! nonce under a key derived from the node's secret key (so any node sharing the key
//! accepts it); a POST without it, or with a wrong one, is refused with 403 and changes
//! nothing.

use std::sync::LazyLock;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use base64::Engine as _;
use hmac::Mac as _;
use lodge_core::Currency;
use lodge_services::gateway::{CardCheckout, IntentOutcome};
use lodge_services::queries::{PagePayment, PayPage};
use lodge_services::ServiceError;
use minijinja::{context, Environment};
use rand::RngCore as _;
use serde::Deserialize;
use sha2::Digest as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::wire::{money_str, ts};
use crate::AppState;

static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    // `.html` names turn on HTML escaping.
    if let Err(e) = env.add_template("pay.html", include_str!("templates/pay.html")) {
        tracing::error!(error = %e, "payment page template is invalid");
    }
    env
});

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(payment_page))
        .routes(routes!(pay_with_credit))
        .routes(routes!(pay_by_card))
        .routes(routes!(card_return))
        .routes(routes!(card_script))
}

/// The page's card script: mounts Stripe Elements in `#card-form` from its data attributes.
const CARD_JS: &str = include_str!("templates/card.js");

/// The page's stylesheet, inlined in `<style>` and allowed by its hash.
const PAGE_CSS: &str = include_str!("templates/pay.css");

/// `'sha256-…'` of [`PAGE_CSS`], for the policy's `style-src`.
static CSS_HASH: LazyLock<String> = LazyLock::new(|| {
    let digest = sha2::Sha256::digest(PAGE_CSS.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
});

/// The `Content-Security-Policy` of the pages: Stripe.js's origin is allowed (scripts and
/// frames) and Stripe's API (the card form's requests) only when card payments are on.
pub(crate) fn content_security_policy(st: &AppState) -> String {
    let stripe = st.lodge.stripe.as_ref().map(|s| s.settings());
    let js = stripe.map(|s| origin(&s.js_url()));
    let api = stripe.map(|s| origin(&s.api_base));
    let mut script = "'self'".to_owned();
    let mut frame = "'none'".to_owned();
    let mut connect = "'self'".to_owned();
    if let (Some(js), Some(api)) = (js, api) {
        script = format!("'self' {js}");
        frame = if js == "https://js.stripe.com" {
            format!("{js} https://hooks.stripe.com")
        } else {
            js.clone()
        };
        connect = format!("'self' {api}");
    }
    format!(
        "default-src 'self'; script-src {script}; style-src {}; img-src 'self' data:; \
         frame-src {frame}; connect-src {connect}; frame-ancestors 'none'; form-action 'self'; \
         base-uri 'none'; object-src 'none'",
        *CSS_HASH
    )
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let host = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{host}")
}

/// Adds the pages' security headers to every response under `/pay` (the pages' own and the
/// 404 of unknown paths below it).
pub(crate) async fn security_headers(
    State(st): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    let pages = is_page_path(path);
    let script = path == "/pay/assets/card.js";
    let mut resp = next.run(req).await;
    if !pages {
        return resp;
    }
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&content_security_policy(&st)) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !script {
        // The script is the same for everyone (and holds no secret): it may be cached.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

fn csrf_mac(st: &AppState, token: &str, nonce: &str) -> HmacSha256 {
    let key = st.lodge.sealer.derive_key("lodge payment page forms");
    let mut mac = <HmacSha256 as hmac::Mac>::new_from_slice(&key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(token.as_bytes());
    mac.update(b"\0");
    mac.update(nonce.as_bytes());
    mac
}

/// A fresh CSRF token for a page of `token`: `<nonce>.<mac>`, hex.
fn csrf_token(st: &AppState, token: &str) -> String {
    let mut nonce = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut nonce);
    let nonce = hex::encode(nonce);
    let mac = hex::encode(csrf_mac(st, token, &nonce).finalize().into_bytes());
    format!("{nonce}.{mac}")
}

/// What the page's buttons post.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PageForm {
    /// The CSRF token of the page the button is on (its forms carry it in a hidden field).
    pub csrf: Option<String>,
}

/// Whether a form body carries a CSRF token made for `token` (compared in constant time).
fn csrf_ok(st: &AppState, token: &str, body: &[u8]) -> bool {
    let Ok(form) = serde_urlencoded::from_bytes::<PageForm>(body) else {
        return false;
    };
    let Some((nonce, mac)) = form.csrf.as_deref().and_then(|c| c.split_once('.')) else {
        return false;
    };
    let Ok(mac) = hex::decode(mac) else {
        return false;
    };
    nonce.len() == 32 && csrf_mac(st, token, nonce).verify_slice(&mac).is_ok()
}

/// A short page of the payment pages' errors: in English, sized for a phone, its text in a
/// `main` landmark (found by the accessibility audit: no `lang`, no viewport).
fn short_page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title></head><body><main>{body}</main></body></html>"
    ))
}

/// A link back to the payment page of `token` (for the pages that tell the customer to go
/// back: reloading them would send the form, or ask Stripe, again; found by the
/// accessibility audit). None for a token that is not letters, digits, `-` and `_`.
fn back_link(token: &str) -> String {
    if token.is_empty()
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return String::new();
    }
    format!("<p><a id=\"back-to-page\" href=\"/pay/{token}\">Back to the payment page</a></p>")
}

fn forbidden(token: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        short_page(
            "This form has expired",
            &format!(
                "<h1>This form has expired</h1><p>Nothing was paid. Go back to the payment \
                 page and try again.</p>{}",
                back_link(token)
            ),
        ),
    )
        .into_response()
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageMessage {
    /// `paid` after a successful payment, `insufficient` when credit fell short.
    pub result: Option<String>,
    /// Where to send the customer back (an `/apiv2` client's `redirectUrl`): shown as a link
    /// only on a configured client origin (`--cors-origins`).
    #[serde(rename = "return")]
    pub return_to: Option<String>,
    /// The payment tokens of the invoices to pay after this one (comma list, as an
    /// `/apiv2` payment of several invoices gives): the page links to the next.
    pub then: Option<String>,
}

/// At most this many invoices follow a page.
const MAX_THEN: usize = 50;

impl PageMessage {
    /// The further invoices' tokens as given (well-formed ones only, at most [`MAX_THEN`]).
    fn then_tokens(&self) -> Vec<&str> {
        self.then
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .filter(|t| {
                !t.is_empty() && t.len() <= 200 && t.bytes().all(|b| b.is_ascii_alphanumeric())
            })
            .fold(Vec::new(), |mut seen, t| {
                // Each invoice once (found by the operator audit: a token given three
                // times was three invoices to pay).
                if seen.len() < MAX_THEN && !seen.contains(&t) {
                    seen.push(t);
                }
                seen
            })
    }

    /// What a page's forms, redirects and links carry on: `then` and `return` (a query
    /// string, empty when neither is given; `return` only when it is allowed).
    pub(crate) fn carried(&self, st: &AppState) -> String {
        let then = self.then_tokens().join(",");
        let back = crate::apiv2::billing::allowed_return(st, self.return_to.as_deref());
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        if !then.is_empty() {
            pairs.push(("then", &then));
        }
        if let Some(b) = back.as_deref() {
            pairs.push(("return", b));
        }
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    }
}

/// `path` with the query `first` (may be empty) and what a page carries on.
fn with_query(path: &str, first: &str, carried: &str) -> String {
    let q: Vec<&str> = [first, carried]
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect();
    if q.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", q.join("&"))
    }
}

/// The invoices to pay after this page's, each with its page's link (which carries on the
/// rest and the way back); unknown tokens are left out.
async fn next_invoices(st: &AppState, q: &PageMessage, shown: &str) -> Vec<minijinja::Value> {
    // Not the invoice on the page itself (found by the operator audit: it was listed as one
    // more to pay).
    let tokens: Vec<&str> = q
        .then_tokens()
        .into_iter()
        .filter(|t| *t != shown)
        .collect();
    let back = crate::apiv2::billing::allowed_return(st, q.return_to.as_deref());
    let mut out = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let Ok(page) = st.lodge.payment_page(token).await else {
            continue;
        };
        let inv = &page.detail.invoice;
        let cur = Currency::parse(&inv.currency).unwrap_or(st.lodge.settings.currency);
        let rest = PageMessage {
            result: None,
            return_to: back.clone(),
            then: Some(tokens.get(i + 1..).unwrap_or_default().join(",")),
        };
        out.push(context! {
            number => inv.number.clone().unwrap_or_else(|| inv.id.to_string()),
            status => inv.status,
            payable => inv.status.is_payable(),
            due => money_str(page.due_minor, cur),
            currency => cur.code(),
            url => with_query(&format!("/pay/{token}"), "", &rest.carried(st)),
        });
    }
    out
}

/// A service failure answered on the page's terms, in HTML (it was the API's JSON): `503`
/// with `Retry-After` while the database is unreachable, as the APIs answer (found by the
/// PostgreSQL audit: the page answered a 500 through an outage), else `500`. The cause is
/// logged, never shown.
fn failed(e: &ServiceError) -> Response {
    if !e.is_unavailable() {
        return server_error(e);
    }
    tracing::warn!(error = %e, "the database is unavailable");
    crate::error::retry_later(
        (
            StatusCode::SERVICE_UNAVAILABLE,
            short_page(
                "Unavailable",
                "<h1>The payment page is unavailable at the moment</h1><p>Try again in a few \
                 moments: the page then shows where the invoice stands.</p>",
            ),
        )
            .into_response(),
    )
}

/// An unexpected failure, in HTML; the cause is logged, never shown.
fn server_error(cause: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %cause, "request failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        short_page(
            "Error",
            "<h1>Something went wrong</h1><p>Reload the payment page to see where the invoice \
             stands.</p>",
        ),
    )
        .into_response()
}

/// Card steps (`/pay/{token}/card`, `/pay/{token}/return`) a payment token may take a
/// minute on a node, and a second: far above a customer's clicks and reloads, far below
/// what would spend the Stripe account's own rate limit.
pub(crate) const CARD_STEPS_PER_MINUTE: u32 = 20;
pub(crate) const CARD_STEPS_BURST: u32 = 5;

/// Which card step a limit stops: what the customer is told differs.
#[derive(Clone, Copy)]
enum CardStep {
    Start,
    Return,
}

/// `None` to go on; else the answer: `404` for a token that cannot be one (not counted: an
/// unknown path must not make the limiter keep it, found by review), `429` with
/// `Retry-After` when the token's card steps are over their limit.
fn card_step_limited(st: &AppState, token: &str, step: CardStep) -> Option<Response> {
    if !lodge_services::payment_tokens::plausible(token) {
        return Some(not_found());
    }
    let Err(crate::error::ApiError::RateLimited(secs)) = st.card_limiter.check(token) else {
        return None;
    };
    // On the way back from Stripe.js the card may have been charged already.
    let said = match step {
        CardStep::Start => format!(
            "Nothing was paid. Wait {secs} seconds, then go back to the payment page and try again."
        ),
        CardStep::Return => format!(
            "Your card payment may have gone through. Wait {secs} seconds, then go back to \
             the payment page: it shows whether the invoice is paid. Do not pay again before."
        ),
    };
    Some(
        (
            StatusCode::TOO_MANY_REQUESTS,
            [(axum::http::header::RETRY_AFTER, secs.to_string())],
            short_page(
                "Too many attempts",
                &format!(
                    "<h1>Too many attempts</h1><p>{said}</p>{}",
                    back_link(token)
                ),
            ),
        )
            .into_response(),
    )
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        short_page("Not found", "<h1>Invoice not found</h1>"),
    )
        .into_response()
}

/// Whether `path` is the payment pages' (`/pay` and below), whose unknown paths and refused
/// methods are answered with a page rather than the API's JSON.
pub(crate) fn is_page_path(path: &str) -> bool {
    path == "/pay" || path.starts_with("/pay/")
}

/// An unknown path under `/pay`: most often a payment link cut short or mistyped.
pub(crate) fn unknown_page() -> Response {
    (
        StatusCode::NOT_FOUND,
        short_page(
            "Page not found",
            "<h1>Page not found</h1><p>This address is not a payment page. Open the payment \
             link from your invoice again, whole: it ends with a long code of letters and \
             digits.</p>",
        ),
    )
        .into_response()
}

/// A request to a payment page refused before its page could be made (a form over the body
/// limit, a body that did not arrive in time, a mangled address), in words, as a page.
pub(crate) fn refused_page(status: StatusCode) -> Response {
    if status == StatusCode::NOT_FOUND {
        return unknown_page();
    }
    let why = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "What was sent is too large.",
        StatusCode::REQUEST_TIMEOUT => "What was sent did not arrive in time.",
        _ => "The request could not be read.",
    };
    (
        status,
        short_page(
            "Not available",
            &format!(
                "<h1>This request cannot be taken</h1><p>{why} Nothing was paid. Open the \
                 payment link from your invoice again.</p>"
            ),
        ),
    )
        .into_response()
}

/// A payment page's address with a method it does not take (a form sent again from an old
/// tab, a link followed to a form's address).
pub(crate) fn method_page() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        short_page(
            "Not available",
            "<h1>This request cannot be taken here</h1><p>Nothing was paid. Open the payment \
             link from your invoice again.</p>",
        ),
    )
        .into_response()
}

/// The payment page of an invoice.
#[utoipa::path(get, path = "/pay/{token}", tag = "pages",
    params(("token" = String, Path, description = "The invoice's payment token"), PageMessage),
    responses((status = 200, description = "HTML page", content_type = "text/html"),
              (status = 404, description = "Unknown token", content_type = "text/html")))]
async fn payment_page(
    State(st): State<AppState>,
    Path(token): Path<String>,
    Query(q): Query<PageMessage>,
) -> Response {
    let page = match st.lodge.payment_page(&token).await {
        Ok(p) => p,
        Err(ServiceError::NotFound) => return not_found(),
        Err(e) => return failed(&e),
    };
    let message = match q.result.as_deref() {
        // A card payment for an invoice that was cancelled meanwhile went to credit (said
        // only when one did: found by the payments audit, `?result=paid` on any cancelled
        // invoice told of a payment never made).
        Some("paid") if page.detail.card_credited => {
            Some("Payment received: this invoice was cancelled meanwhile, so it was added to your account credit.")
        }
        // Said only of an invoice that is paid: the query alone proves nothing (found by
        // the payments audit: `?result=paid` showed it on an unpaid invoice).
        Some("paid") if page.detail.invoice.status == lodge_core::InvoiceStatus::Paid => {
            Some("Payment received: the invoice is paid.")
        }
        Some("paid") => None,
        Some("insufficient") => Some("Your account credit does not cover this invoice."),
        // A second click, or a payment made meanwhile elsewhere: say what the invoice is now.
        Some("closed") if page.detail.invoice.status == lodge_core::InvoiceStatus::Paid => {
            Some("This invoice is paid.")
        }
        Some("closed") if page.due_minor > 0 => Some(
            "A payment of this invoice was just recorded: check the amount due before paying again.",
        ),
        Some("closed") => Some("This invoice can no longer be paid."),
        Some("card_failed") => Some("The card payment failed."),
        Some("card_pending") => Some(
            "Your card payment is being processed by the card's bank: reload this page in a \
             minute to see it recorded. Do not pay again before.",
        ),
        Some("card_unfinished") => Some(
            "The card payment was not completed, and nothing was taken: you can try again, \
             or pay another way.",
        ),
        Some("card_unavailable") => {
            Some("Card payments are unavailable at the moment: please try again later.")
        }
        Some("card_off") => Some("Card payments are not offered: please pay another way."),
        Some("card_minimum") => {
            Some("This amount is below the smallest card payment: please pay it another way.")
        }
        _ => None,
    };
    let next = next_invoices(&st, &q, &token).await;
    render(&st, &token, &page, message, None, &q, next)
}

/// Whether a card can be paid on the page: Stripe with its publishable key (Stripe.js).
fn card_payable(st: &AppState) -> bool {
    st.lodge
        .stripe
        .as_ref()
        .is_some_and(|s| s.settings().publishable_key.is_some())
}

/// Renders the page; `checkout` is the card payment started by "Pay by card", `q` what the
/// page carries on (the (allowed) way back to the client the customer came from, the
/// invoices to pay after this one: `next`).
fn render(
    st: &AppState,
    token: &str,
    page: &PayPage,
    message: Option<&str>,
    checkout: Option<&CardCheckout>,
    q: &PageMessage,
    next: Vec<minijinja::Value>,
) -> Response {
    let back = crate::apiv2::billing::allowed_return(st, q.return_to.as_deref());
    let carried = q.carried(st);
    let inv = &page.detail.invoice;
    let cur = Currency::parse(&inv.currency).unwrap_or(st.lodge.settings.currency);
    let lines: Vec<_> = page
        .detail
        .lines
        .iter()
        .map(|l| {
            context! {
                description => l.description,
                period_start => l.period_start,
                period_end => l.period_end,
                amount => money_str(l.amount_minor, cur),
            }
        })
        .collect();
    let stripe = st.lodge.stripe.as_ref().map(|s| s.settings());
    let minimum = lodge_services::gateway::card_minimum_minor(cur.code());
    let card = context! {
        // The card is offered only where it can be paid: Stripe.js needs the publishable
        // key (found by the payments audit: without it the page offered the card and then
        // showed an intent id and no way to pay it), and Stripe takes no charge below its
        // minimum (said so instead of offered).
        enabled => card_payable(st) && page.due_minor >= minimum.max(1),
        below_minimum => (card_payable(st) && page.due_minor > 0 && page.due_minor < minimum)
            .then(|| money_str(minimum, cur)),
        action => with_query(&format!("/pay/{token}/card"), "", &carried),
        failure => page.detail.card_failure,
    };
    let checkout = checkout.map(|c| {
        let pk = stripe.and_then(|s| s.publishable_key.clone());
        context! {
            intent_id => c.intent_id,
            amount => money_str(c.amount_minor, cur),
            // Stripe.js needs both; without a publishable key the card form is not shown.
            client_secret => pk.as_ref().and(c.client_secret.clone()),
            publishable_key => pk,
            js_url => stripe.map(|s| s.js_url()),
            return_url => with_query(&format!("{}/pay/{token}/return", st.public_base_url), "", &carried),
        }
    });
    let rendered = TEMPLATES.get_template("pay.html").and_then(|t| {
        t.render(context! {
            invoice => context! {
                number => inv.number.clone().unwrap_or_else(|| inv.id.to_string()),
                status => inv.status,
                payable => inv.status.is_payable(),
                paid => inv.status == lodge_core::InvoiceStatus::Paid,
                due_date => inv.due_date,
            },
            issued => ts(inv.issued_at).get(..10).unwrap_or_default().to_owned(),
            lines => lines,
            currency => cur.code(),
            zero => money_str(0, cur),
            total => money_str(inv.total_minor, cur),
            credit_applied => money_str(inv.credit_applied_minor, cur),
            paid => money_str(inv.paid_minor, cur),
            refunded => money_str(inv.refunded_minor, cur),
            due => money_str(page.due_minor, cur),
            balance => money_str(page.credit_balance_minor, cur),
            can_pay_credit => page.can_pay_from_credit,
            pay_action => with_query(&format!("/pay/{token}/credit"), "", &carried),
            csrf => csrf_token(st, token),
            css => PAGE_CSS,
            bank_instructions => st.lodge.settings.bank_transfer_instructions,
            card => card,
            checkout => checkout,
            message => message,
            back => back,
            next => next,
        })
    });
    match rendered {
        Ok(html) => Html(html).into_response(),
        Err(e) => server_error(&e),
    }
}

/// Pays the invoice in full from the organization's account credit, then shows the page.
#[utoipa::path(post, path = "/pay/{token}/credit", tag = "pages",
    params(("token" = String, Path, description = "The invoice's payment token")),
    request_body(content = PageForm, content_type = "application/x-www-form-urlencoded",
        description = "The page form's CSRF token"),
    responses((status = 303, description = "Back to the payment page with the result"),
              (status = 403, description = "No or a wrong CSRF token: nothing was paid", content_type = "text/html"),
              (status = 404, description = "Unknown token", content_type = "text/html")))]
async fn pay_with_credit(
    State(st): State<AppState>,
    Path(token): Path<String>,
    Query(q): Query<PageMessage>,
    body: Bytes,
) -> Response {
    if !csrf_ok(&st, &token, &body) {
        return forbidden(&token);
    }
    let result = match st.lodge.pay_page_from_credit(&token).await {
        Ok(PagePayment::Paid) => "paid",
        Ok(PagePayment::InsufficientCredit) => "insufficient",
        Ok(PagePayment::Closed) => "closed",
        Err(ServiceError::NotFound) => return not_found(),
        Err(e) => return failed(&e),
    };
    let to = with_query(
        &format!("/pay/{token}"),
        &format!("result={result}"),
        &q.carried(&st),
    );
    Redirect::to(&to).into_response()
}

/// "Pay by card": creates (or reuses: one per invoice and amount due) the invoice's Stripe
/// PaymentIntent and shows the page with the card form.
#[utoipa::path(post, path = "/pay/{token}/card", tag = "pages",
    params(("token" = String, Path, description = "The invoice's payment token")),
    request_body(content = PageForm, content_type = "application/x-www-form-urlencoded",
        description = "The page form's CSRF token"),
    responses((status = 200, description = "The page with the card form", content_type = "text/html"),
              (status = 403, description = "No or a wrong CSRF token: nothing was started", content_type = "text/html"),
              (status = 303, description = "Back to the payment page: nothing due, the gateway unavailable, or card payments not configured (Stripe with its publishable key)"),
              (status = 404, description = "Unknown token", content_type = "text/html"),
              (status = 429, description = "The token's card steps are over their limit (on this node, 20 a minute and 5 a second): nothing was started; wait `Retry-After` seconds", content_type = "text/html")))]
async fn pay_by_card(
    State(st): State<AppState>,
    Path(token): Path<String>,
    Query(q): Query<PageMessage>,
    body: Bytes,
) -> Response {
    if !csrf_ok(&st, &token, &body) {
        return forbidden(&token);
    }
    if let Some(limited) = card_step_limited(&st, &token, CardStep::Start) {
        return limited;
    }
    if !card_payable(&st) {
        // A page shown while cards were on (Stripe since turned off): back to it with why,
        // not "Invoice not found" (which told a customer their invoice was gone).
        return back_to_page(&st, &token, "result=card_off", &q.carried(&st)).await;
    }
    let checkout = match st.lodge.card_checkout(&token).await {
        Ok(c) => c,
        Err(ServiceError::NotFound) => return not_found(),
        // Below the smallest charge the gateway takes.
        Err(ServiceError::Invalid(_)) => {
            let to = with_query(
                &format!("/pay/{token}"),
                "result=card_minimum",
                &q.carried(&st),
            );
            return Redirect::to(&to).into_response();
        }
        Err(ServiceError::Conflict(_)) => {
            let to = with_query(&format!("/pay/{token}"), "result=closed", &q.carried(&st));
            return Redirect::to(&to).into_response();
        }
        Err(e) => {
            tracing::error!(error = %e, "starting a card payment failed");
            let to = with_query(
                &format!("/pay/{token}"),
                "result=card_unavailable",
                &q.carried(&st),
            );
            return Redirect::to(&to).into_response();
        }
    };
    let page = match st.lodge.payment_page(&token).await {
        Ok(p) => p,
        Err(ServiceError::NotFound) => return not_found(),
        Err(e) => return failed(&e),
    };
    let next = next_invoices(&st, &q, &token).await;
    render(&st, &token, &page, None, Some(&checkout), &q, next)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CardReturn {
    /// The PaymentIntent Stripe.js confirmed.
    pub payment_intent: Option<String>,
    /// Carried on from the page (see [`PageMessage`]).
    #[serde(rename = "return")]
    pub return_to: Option<String>,
    pub then: Option<String>,
}

/// Where Stripe.js returns after the card form: the intent is read back from Stripe and a
/// succeeded payment recorded (once, however often this page and the webhook arrive).
#[utoipa::path(get, path = "/pay/{token}/return", tag = "pages",
    params(("token" = String, Path, description = "The invoice's payment token"), CardReturn),
    responses((status = 303, description = "Back to the payment page with the result"),
              (status = 404, description = "Unknown token or intent", content_type = "text/html"),
              (status = 429, description = "The token's card steps are over their limit (on this node, 20 a minute and 5 a second): the payment may have gone through; reload the payment page after `Retry-After` seconds", content_type = "text/html")))]
async fn card_return(
    State(st): State<AppState>,
    Path(token): Path<String>,
    Query(q): Query<CardReturn>,
) -> Response {
    // An intent id is printable ASCII (`pi_…`); anything else (a NUL, found by the review)
    // is no intent of this invoice's.
    let carried = PageMessage {
        result: None,
        return_to: q.return_to,
        then: q.then,
    }
    .carried(&st);
    let intent = q
        .payment_intent
        .filter(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_graphic()));
    let (Some(intent), true) = (intent, st.lodge.stripe.is_some()) else {
        // Back to a real invoice's page, not "Invoice not found" (found by the
        // accessibility audit: a return whose query was lost, or after cards were turned
        // off, told the customer the invoice was gone), as the card step does.
        if !lodge_services::payment_tokens::plausible(&token) {
            return not_found();
        }
        let result = if st.lodge.stripe.is_none() {
            "result=card_off"
        } else {
            ""
        };
        return back_to_page(&st, &token, result, &carried).await;
    };
    if let Some(limited) = card_step_limited(&st, &token, CardStep::Return) {
        return limited;
    }
    let result = match st.lodge.card_return(&token, &intent).await {
        Ok(IntentOutcome::Recorded | IntentOutcome::AlreadyRecorded) => "paid",
        Ok(IntentOutcome::Failed) => "card_failed",
        Ok(IntentOutcome::Unfinished) => "card_unfinished",
        Ok(IntentOutcome::Pending | IntentOutcome::Unknown) => "card_pending",
        Err(ServiceError::NotFound) => return not_found(),
        Err(e) => {
            tracing::error!(error = %e, "reading a card payment back failed");
            "card_unavailable"
        }
    };
    let to = with_query(
        &format!("/pay/{token}"),
        &format!("result={result}"),
        &carried,
    );
    Redirect::to(&to).into_response()
}

/// To the page of the invoice `token` pays, with `result` (a query pair, or nothing) and
/// what the page carries on; not found when no invoice has that token.
async fn back_to_page(st: &AppState, token: &str, result: &str, carried: &str) -> Response {
    match st.lodge.payment_page(token).await {
        Ok(_) => {
            Redirect::to(&with_query(&format!("/pay/{token}"), result, carried)).into_response()
        }
        Err(ServiceError::NotFound) => not_found(),
        Err(e) => failed(&e),
    }
}

/// The payment page's card script (Stripe Elements), served as a file so the page has no
/// inline script.
#[utoipa::path(get, path = "/pay/assets/card.js", tag = "pages",
    responses((status = 200, description = "JavaScript", content_type = "application/javascript")))]
async fn card_script() -> Response {
    (
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (axum::http::header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        CARD_JS,
    )
        .into_response()
}
