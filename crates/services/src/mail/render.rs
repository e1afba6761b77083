//! The notices' text: minijinja templates, one `<notice>.txt` and one `<notice>.html` per
//! notice (the text one's block `subject` is the subject), both extending `layout.txt` /
//! `layout.html`. The defaults are built in; a file of the same name in the operator's
//! templates directory replaces one.

use std::path::Path;

use minijinja::Environment;
use serde_json::Value;

/// Every template, with its built-in text.
pub const TEMPLATES: [(&str, &str); 28] = [
    ("layout.txt", include_str!("templates/layout.txt")),
    ("layout.html", include_str!("templates/layout.html")),
    (
        "order_created.txt",
        include_str!("templates/order_created.txt"),
    ),
    (
        "order_created.html",
        include_str!("templates/order_created.html"),
    ),
    (
        "invoice_created.txt",
        include_str!("templates/invoice_created.txt"),
    ),
    (
        "invoice_created.html",
        include_str!("templates/invoice_created.html"),
    ),
    (
        "invoice_paid.txt",
        include_str!("templates/invoice_paid.txt"),
    ),
    (
        "invoice_paid.html",
        include_str!("templates/invoice_paid.html"),
    ),
    (
        "invoice_updated.txt",
        include_str!("templates/invoice_updated.txt"),
    ),
    (
        "invoice_updated.html",
        include_str!("templates/invoice_updated.html"),
    ),
    (
        "invoice_reminder.txt",
        include_str!("templates/invoice_reminder.txt"),
    ),
    (
        "invoice_reminder.html",
        include_str!("templates/invoice_reminder.html"),
    ),
    (
        "invoice_overdue.txt",
        include_str!("templates/invoice_overdue.txt"),
    ),
    (
        "invoice_overdue.html",
        include_str!("templates/invoice_overdue.html"),
    ),
    (
        "hosting_suspended.txt",
        include_str!("templates/hosting_suspended.txt"),
    ),
    (
        "hosting_suspended.html",
        include_str!("templates/hosting_suspended.html"),
    ),
    (
        "hosting_unsuspended.txt",
        include_str!("templates/hosting_unsuspended.txt"),
    ),
    (
        "hosting_unsuspended.html",
        include_str!("templates/hosting_unsuspended.html"),
    ),
    (
        "hosting_terminated.txt",
        include_str!("templates/hosting_terminated.txt"),
    ),
    (
        "hosting_terminated.html",
        include_str!("templates/hosting_terminated.html"),
    ),
    (
        "hosting_active.txt",
        include_str!("templates/hosting_active.txt"),
    ),
    (
        "hosting_active.html",
        include_str!("templates/hosting_active.html"),
    ),
    (
        "hosting_cancellation_requested.txt",
        include_str!("templates/hosting_cancellation_requested.txt"),
    ),
    (
        "hosting_cancellation_requested.html",
        include_str!("templates/hosting_cancellation_requested.html"),
    ),
    (
        "payment_refunded.txt",
        include_str!("templates/payment_refunded.txt"),
    ),
    (
        "payment_refunded.html",
        include_str!("templates/payment_refunded.html"),
    ),
    ("test.txt", include_str!("templates/test.txt")),
    ("test.html", include_str!("templates/test.html")),
];

/// A rendered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The files of `dir` that are no template's name, with the nearest name (hidden files, an
/// editor's among them, are left out).
fn unknown_files(dir: &Path) -> Vec<(String, &'static str)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, &'static str)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && !TEMPLATES.iter().any(|(t, _)| t == n))
        .map(|n| {
            let nearest = TEMPLATES
                .iter()
                .map(|(t, _)| *t)
                .min_by_key(|t| strsim::levenshtein(&n, t))
                .unwrap_or("layout.txt");
            (n, nearest)
        })
        .collect();
    out.sort();
    out
}

/// The loaded templates.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
    /// The names read from the operator's directory.
    pub overridden: Vec<&'static str>,
    /// Files in the operator's directory that are no template's name (a misspelling, as
    /// `invoice_payed.txt`), each with the template name nearest to it: never read.
    pub unknown: Vec<(String, &'static str)>,
}

impl Templates {
    /// The built-in templates, each replaced by a file of the same name in `dir` when
    /// there is one. Fails on an unreadable file or a template that does not parse.
    pub fn load(dir: Option<&Path>) -> Result<Templates, String> {
        let mut env = Environment::new();
        // Text templates are not escaped; `.html` ones are (minijinja's default by name).
        let mut overridden = Vec::new();
        if let Some(d) = dir {
            if !d.is_dir() {
                return Err(format!(
                    "mail templates directory {} is not a directory",
                    d.display()
                ));
            }
        }
        for (name, default) in TEMPLATES {
            let path = dir.map(|d| d.join(name));
            let source = match path.as_ref().filter(|p| p.exists()) {
                Some(p) => {
                    overridden.push(name);
                    std::fs::read_to_string(p)
                        .map_err(|e| format!("reading mail template {}: {e}", p.display()))?
                }
                None => default.to_owned(),
            };
            env.add_template_owned(name, source)
                .map_err(|e| format!("mail template {name}: {e:#}"))?;
        }
        let unknown = dir.map(unknown_files).unwrap_or_default();
        let templates = Templates {
            env,
            overridden,
            unknown,
        };
        // A template may parse and still fail each time it is rendered (an unknown filter,
        // a test on a value it does not have): an operator's are rendered once now with
        // sample values, so a broken one is refused at start rather than every notice of
        // its kind dying in the queue (found by the webhooks and mail audit).
        // Every notice (a layout is in all of them) once any template is the operator's.
        let notices = TEMPLATES
            .iter()
            .filter_map(|(name, _)| name.strip_suffix(".txt"))
            .filter(|stem| *stem != "layout" && !templates.overridden.is_empty());
        let sample = sample_context();
        for notice in notices {
            templates
                .render(notice, &sample)
                .map_err(|e| format!("mail template {notice} fails when rendered: {e}"))?;
        }
        Ok(templates)
    }

    /// Renders `notice` (`order_created`, …) with `ctx`.
    pub fn render(&self, notice: &str, ctx: &Value) -> Result<Rendered, String> {
        let err = |what: &str, e: minijinja::Error| format!("rendering {notice}.{what}: {e:#}");
        let text = self
            .env
            .get_template(&format!("{notice}.txt"))
            .map_err(|e| err("txt", e))?;
        let mut captured = text.render_captured(ctx).map_err(|e| err("txt", e))?;
        let subject = captured
            .with_state_mut(|s| s.render_block("subject"))
            .map_err(|e| err("txt (subject)", e))?;
        let body = captured.into_output();
        let html = self
            .env
            .get_template(&format!("{notice}.html"))
            .and_then(|t| t.render(ctx))
            .map_err(|e| err("html", e))?;
        // A subject is one line.
        let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
        if subject.is_empty() {
            return Err(format!("{notice}.txt renders an empty subject"));
        }
        Ok(Rendered {
            subject,
            text: body,
            html,
        })
    }
}

/// Values of every field a notice's context has ([`crate::Lodge`]'s `notice_context`), for
/// rendering templates at start: a key missing here refuses an operator's template that
/// uses it (found by the mail audit: `event.id`, documented, stopped the server).
fn sample_context() -> Value {
    serde_json::json!({
            "installation": {
                "name": "Acme Hosting",
                "address": "1 Main St\nSpringfield",
                "address_lines": ["1 Main St", "Springfield"],
                "base_url": "https://acme.test",
            },
            "recipient": { "name": "Ann <Owner>", "email": "ann@example.com" },
            "organization": { "id": "01a24b98-bd24-77bd-97fa-0a9e854d1168", "name": "Ann's" },
            "event": { "id": "evt_hottv3r9a5i7hjhwLOUeX0OR", "kind": "invoice.created",
                       "data": { "invoice_id": 1, "number": "INV-2026-000001",
                                 "currency": "USD", "total_minor": 1200,
                                 "amount_due_minor": 1000,
                                 "reason": "the renewal was re-priced after a plan change, Starter → Business" } },
            "order": { "id": 7, "number": "ORD-7", "domain": "ann.test", "billing_cycle": "monthly",
                       "total": "12.00 USD", "total_minor": 1200,
                       "credit_applied": "2.00 USD", "credit_applied_minor": 200,
                       "amount_due": "10.00 USD", "amount_due_minor": 1000 },
            "invoice": { "id": 1, "number": "INV-2026-000001", "kind": "first",
                         "status": "unpaid", "total": "12.00 USD", "total_minor": 1200,
                         "credit_applied": "2.00 USD", "credit_applied_minor": 200,
                         "paid": "0.00 USD", "paid_minor": 0,
                         "received": "0.00 USD", "received_minor": 0,
                         "to_credit": "0.00 USD", "to_credit_minor": 0,
                         "amount_due": "10.00 USD", "amount_due_minor": 1000,
                         "due_date": "2026-04-01", "suspend_on": "2026-04-08",
                         "pay_url": "https://acme.test/pay/tok" },
            "hosting": { "id": "01a24b98-bd6c-7302-9d94-3999aa5ffc14", "domain": "ann.test",
                         "note": "overdue", "by": "scheduler", "username": "anntest1",
                         "plan": "Starter", "billing_cycle": "monthly",
                         "next_due_date": "2026-05-01", "status": "active",
                         "server": { "hostname": "web1.acme.test", "ns1": "ns1.acme.test",
                                     "ns2": "ns2.acme.test" } },
            "cancellation": { "type": "end_of_period", "effective_date": "2026-05-01" },
            "refund": { "amount": "2.50 USD", "amount_minor": 250, "to": "credit" },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Value {
        sample_context()
    }

    #[test]
    fn every_notice_renders_with_its_amounts_and_the_installation() {
        let t = Templates::load(None).unwrap();
        for notice in [
            "order_created",
            "invoice_created",
            "invoice_paid",
            "invoice_updated",
            "invoice_reminder",
            "invoice_overdue",
            "hosting_suspended",
            "hosting_unsuspended",
            "hosting_terminated",
            "hosting_active",
            "hosting_cancellation_requested",
            "payment_refunded",
            "test",
        ] {
            let r = t.render(notice, &ctx()).unwrap();
            assert!(!r.subject.contains('\n'), "{notice}: {r:?}");
            assert!(!r.text.contains("Subject"), "{notice}: {r:?}");
            for body in [&r.text, &r.html] {
                assert!(body.contains("Acme Hosting"), "{notice}: {body}");
                assert!(body.contains("Springfield"), "{notice}: {body}");
            }
            assert!(r.html.contains("Ann &lt;Owner&gt;"), "escaped: {}", r.html);
            assert!(r.text.contains("Ann <Owner>"), "not escaped: {}", r.text);
        }
        let order = t.render("order_created", &ctx()).unwrap();
        assert_eq!(order.subject, "Order ORD-7 received");
        assert!(
            order.text.contains("Amount due: 10.00 USD"),
            "{}",
            order.text
        );
        assert!(order.text.contains("https://acme.test/pay/tok"));
        let inv = t.render("invoice_created", &ctx()).unwrap();
        assert_eq!(
            inv.subject,
            "Invoice INV-2026-000001: 10.00 USD due 2026-04-01"
        );
        let changed = t.render("invoice_updated", &ctx()).unwrap();
        assert_eq!(
            changed.subject,
            "Invoice INV-2026-000001 changed: 10.00 USD due 2026-04-01"
        );
        assert!(
            changed.text.contains(
                "was changed: the renewal was re-priced after a plan change, Starter → Business."
            ),
            "{}",
            changed.text
        );
        let overdue = t.render("invoice_overdue", &ctx()).unwrap();
        assert!(overdue.text.contains("suspended on 2026-04-08"));
        let s = t.render("hosting_suspended", &ctx()).unwrap();
        assert_eq!(s.subject, "ann.test is suspended");
        // For an unpaid renewal: paying brings it back; by staff: no word of a payment, and
        // no note that only repeats the status.
        let mut overdue = ctx();
        overdue["hosting"]["note"] = "suspended: renewal INV-2026-000001 unpaid".into();
        overdue["hosting"]["by"] = "scheduler".into();
        let s = t.render("hosting_suspended", &overdue).unwrap();
        assert!(
            s.text
                .contains("(suspended: renewal INV-2026-000001 unpaid)"),
            "{}",
            s.text
        );
        assert!(s.text.contains("Once what is due is paid"), "{}", s.text);
        let mut by_staff = ctx();
        by_staff["hosting"]["note"] = "suspended".into();
        by_staff["hosting"]["by"] = "staff".into();
        let s = t.render("hosting_suspended", &by_staff).unwrap();
        assert!(s.text.contains("is suspended."), "{}", s.text);
        assert!(!s.text.contains("(suspended)"), "{}", s.text);
        assert!(!s.text.contains("paid"), "{}", s.text);
        // Staff's reason naming an unpaid invoice is not a suspension that paying lifts
        // (found by the mail audit: the wording followed the note's words).
        by_staff["hosting"]["note"] = "Abuse, and an invoice unpaid elsewhere".into();
        let s = t.render("hosting_suspended", &by_staff).unwrap();
        assert!(!s.text.contains("Once what is due is paid"), "{}", s.text);
        let ready = t.render("hosting_active", &ctx()).unwrap();
        assert_eq!(ready.subject, "ann.test is ready");
        for line in [
            "Plan: Starter (monthly)",
            "Username: anntest1",
            "Server: web1.acme.test",
            "Nameservers: ns1.acme.test, ns2.acme.test",
            "Next renewal: 2026-05-01",
        ] {
            assert!(ready.text.contains(line), "{line}: {}", ready.text);
        }
        let c = t.render("hosting_cancellation_requested", &ctx()).unwrap();
        assert_eq!(c.subject, "Cancellation of ann.test");
        assert!(c.text.contains("on 2026-05-01"), "{}", c.text);
        let mut now = ctx();
        now["cancellation"]["type"] = "immediate".into();
        let c = t.render("hosting_cancellation_requested", &now).unwrap();
        assert!(c.text.contains("is being cancelled now"), "{}", c.text);
        let r = t.render("payment_refunded", &ctx()).unwrap();
        assert_eq!(r.subject, "Refund of 2.50 USD: invoice INV-2026-000001");
        assert!(r.text.contains("to your account credit"), "{}", r.text);
        let mut cash = ctx();
        cash["refund"]["to"] = "cash".into();
        let r = t.render("payment_refunded", &cash).unwrap();
        assert!(r.text.contains("by the way you paid it"), "{}", r.text);
        // A termination's note that only repeats its status is left out.
        let mut ended = ctx();
        ended["hosting"]["note"] = "terminated".into();
        let s = t.render("hosting_terminated", &ended).unwrap();
        assert!(s.text.contains("is terminated."), "{}", s.text);
        assert!(!s.text.contains("(terminated)"), "{}", s.text);
    }

    #[test]
    fn a_file_in_the_directory_replaces_its_default() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("invoice_paid.txt"),
            "{% extends \"layout.txt\" %}{% block subject %}Merci {{ invoice.number }}{% endblock %}{% block body %}Reçu {{ invoice.total }}{% endblock %}",
        )
        .unwrap();
        let t = Templates::load(Some(dir.path())).unwrap();
        assert_eq!(t.overridden, ["invoice_paid.txt"]);
        let r = t.render("invoice_paid", &ctx()).unwrap();
        assert_eq!(r.subject, "Merci INV-2026-000001");
        assert!(r.text.contains("Reçu 12.00 USD"), "{}", r.text);
        assert!(
            r.html.contains("is paid"),
            "the HTML one is still the default"
        );
    }

    /// Every field the documentation names can be used (found by the mail audit: a
    /// template using `event.id` was refused at start).
    #[test]
    fn a_template_may_use_every_field_of_the_context() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("hosting_suspended.txt"),
            "{% extends \"layout.txt\" %}{% block subject %}{{ hosting.domain }} is suspended\
             {% endblock %}{% block body %}{{ event.id }} {{ event.kind }} {{ event.data.number }} \
             {{ organization.id }} {{ invoice.id }} {{ invoice.status }} {{ invoice.total_minor }} \
             {{ order.id }} {{ hosting.id }} {{ invoice.received }} \
             {{ invoice.to_credit_minor / 100 }} {{ invoice.received_minor / 100 }} \
             {{ hosting.username }} {{ hosting.server.ns1 }} {{ cancellation.effective_date }} \
             {{ refund.amount_minor / 100 }} \
             {{ event.data.reason }}{% endblock %}",
        )
        .unwrap();
        let t = Templates::load(Some(dir.path())).unwrap();
        let r = t.render("hosting_suspended", &ctx()).unwrap();
        assert!(
            r.text.contains("evt_hottv3r9a5i7hjhwLOUeX0OR"),
            "{}",
            r.text
        );
    }

    #[test]
    fn a_broken_template_is_refused_when_loaded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("layout.html"), "{% block body %}").unwrap();
        let e = Templates::load(Some(dir.path())).unwrap_err();
        assert!(e.contains("layout.html"), "{e}");
        let e = Templates::load(Some(&dir.path().join("nope"))).unwrap_err();
        assert!(e.contains("not a directory"), "{e}");
        // Parses, fails each time it renders: refused at start too.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("invoice_paid.txt"),
            "{% block subject %}Paid{% endblock %}{{ invoice.number | nosuchfilter }}",
        )
        .unwrap();
        let e = Templates::load(Some(dir.path())).unwrap_err();
        assert!(
            e.contains("invoice_paid") && e.contains("nosuchfilter"),
            "{e}"
        );
    }

    /// A misspelt file is named with the template it was likely meant for (found by the
    /// operator audit: `invoice_payed.txt` was never read, without a word).
    #[test]
    fn files_that_are_no_templates_name_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("invoice_payed.txt"), "x").unwrap();
        std::fs::write(dir.path().join(".invoice_paid.txt.swp"), "x").unwrap();
        std::fs::write(dir.path().join("layout.txt"), TEMPLATES[0].1).unwrap();
        let t = Templates::load(Some(dir.path())).unwrap();
        assert_eq!(
            t.unknown,
            vec![("invoice_payed.txt".to_owned(), "invoice_paid.txt")]
        );
        assert_eq!(t.overridden, vec!["layout.txt"]);
    }
}
