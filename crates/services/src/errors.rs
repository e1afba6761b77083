//! Field errors with stable codes, and errors as a caller is told them.
//!
//! A field error has a machine code ([`FieldCode`]) besides its English message. `/v1` sends
//! the messages (`{"plan_id": ["No such plan."]}`: a [`FieldError`] serializes as its
//! message); `/apiv2` words each error InterServer's way from its field and code, never from
//! the message.

use std::collections::BTreeMap;
use std::fmt;

use lodge_store::StoreError;
use serde::{Serialize, Serializer};

use crate::{Result, ServiceError};

/// What is wrong with a field, for a program to act on. The codes are stable; the messages
/// may be reworded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldCode {
    /// The value is not acceptable (the message says why): the default.
    Invalid,
    /// The field is missing or blank.
    Required,
    /// Not a valid domain name.
    InvalidDomain,
    /// No server has room for the plan.
    ServersFull,
    /// The plan is sold once per organization (a trial), and the organization has had it.
    OncePerOrganization,
}

impl FieldCode {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldCode::Invalid => "invalid",
            FieldCode::Required => "required",
            FieldCode::InvalidDomain => "invalid_domain",
            FieldCode::ServersFull => "servers_full",
            FieldCode::OncePerOrganization => "once_per_organization",
        }
    }
}

impl fmt::Display for FieldCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One error on one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub code: FieldCode,
    pub message: String,
}

impl FieldError {
    pub fn new(code: FieldCode, message: impl Into<String>) -> Self {
        FieldError {
            code,
            message: message.into(),
        }
    }

    /// A message with the default code ([`FieldCode::Invalid`]).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(FieldCode::Invalid, message)
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Its message: `/v1`'s shape (`{"field": ["message"]}`) is unchanged by the codes.
impl Serialize for FieldError {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.message)
    }
}

/// Field-keyed errors (`{"plan_id": ["…"]}`); `non_field_errors` for rules that span
/// several fields.
pub type FieldErrors = BTreeMap<String, Vec<FieldError>>;

impl ServiceError {
    /// One message on one field, with the default code.
    pub fn field(field: &str, msg: impl Into<String>) -> Self {
        Self::field_coded(field, FieldCode::Invalid, msg)
    }

    /// One message on one field, with its code.
    pub fn field_coded(field: &str, code: FieldCode, msg: impl Into<String>) -> Self {
        let mut m = FieldErrors::new();
        m.insert(field.to_owned(), vec![FieldError::new(code, msg)]);
        ServiceError::Invalid(m)
    }

    /// Whether this is the database being unreachable for a moment (answered 503 with
    /// `Retry-After`, not 500).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ServiceError::Store(e) if e.is_unavailable())
    }

    /// A service's outage ([`ServiceError::Unavailable`]) said as a refusal of `field`,
    /// for a form that shows it beside its other bad fields rather than as a 503; any other
    /// error unchanged.
    pub fn unavailable_on(self, field: &str) -> Self {
        match self {
            ServiceError::Unavailable(why) => ServiceError::field(field, why),
            other => other,
        }
    }

    /// The error as a caller is told it: a storage error that means "no such row" is
    /// [`ServiceError::NotFound`], a write refused by a unique constraint a
    /// [`ServiceError::Conflict`] (the constraint is logged, not told); anything else is
    /// unchanged.
    pub fn for_caller(self) -> Self {
        match self {
            ServiceError::Store(StoreError::NotFound) => ServiceError::NotFound,
            ServiceError::Store(StoreError::Conflict(what)) => {
                tracing::info!(constraint = %what, "conflicting write refused");
                ServiceError::Conflict("This conflicts with an existing record.".into())
            }
            other => other,
        }
    }
}

/// The invisible characters that reorder the text around them (bidi embeddings, overrides
/// and isolates): a name holding one shows something other than what it is.
pub(crate) fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Collects field errors so a request reports every bad field at once.
#[derive(Debug, Default)]
pub struct Validator {
    errors: FieldErrors,
}

impl Validator {
    pub fn new() -> Self {
        Self::default()
    }
    /// A message with the default code ([`FieldCode::Invalid`]).
    pub fn add(&mut self, field: &str, msg: impl Into<String>) {
        self.add_coded(field, FieldCode::Invalid, msg);
    }
    pub fn add_coded(&mut self, field: &str, code: FieldCode, msg: impl Into<String>) {
        self.errors
            .entry(field.to_owned())
            .or_default()
            .push(FieldError::new(code, msg));
    }
    /// "This field is required." ([`FieldCode::Required`]).
    pub fn required(&mut self, field: &str) {
        self.add_coded(field, FieldCode::Required, "This field is required.");
    }
    /// A one-line text a person typed (a name, a city): at most `max` characters, no
    /// control characters (it may go into a mail header), nor Unicode's line and paragraph
    /// separators (U+2028, U+2029), which break the line where it is shown.
    pub fn line(&mut self, field: &str, value: &str, max: usize) {
        if value.chars().count() > max {
            self.add(field, format!("At most {max} characters."));
        } else if value.chars().any(|c| c.is_control() || is_bidi_control(c)) {
            self.add(field, "Control characters are not allowed.");
        } else if value.contains(['\u{2028}', '\u{2029}']) {
            self.add(
                field,
                "One line: line and paragraph separators are not allowed.",
            );
        }
    }
    /// A text a person typed over several lines (a comment): at most `max` characters,
    /// no control characters but line breaks and tabs.
    pub fn text(&mut self, field: &str, value: &str, max: usize) {
        if value.chars().count() > max {
            self.add(field, format!("At most {max} characters."));
        } else if value
            .chars()
            .any(|c| (c.is_control() && !matches!(c, '\n' | '\r' | '\t')) || is_bidi_control(c))
        {
            self.add(
                field,
                "Control characters other than line breaks and tabs are not allowed.",
            );
        }
    }
    pub fn has(&self, field: &str) -> bool {
        self.errors.contains_key(field)
    }
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }
    /// `Err(Invalid)` if anything was added.
    pub fn finish(self) -> Result<()> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ServiceError::Invalid(self.errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_errors_serialize_as_messages_only() {
        let mut v = Validator::new();
        v.required("domain_name");
        v.add_coded("plan_id", FieldCode::ServersFull, "Full.");
        v.add("plan_id", "Another.");
        let Err(ServiceError::Invalid(fields)) = v.finish() else {
            panic!("errors were added");
        };
        assert_eq!(
            serde_json::to_value(&fields).unwrap(),
            serde_json::json!({
                "domain_name": ["This field is required."],
                "plan_id": ["Full.", "Another."],
            })
        );
        let codes: Vec<FieldCode> = fields["plan_id"].iter().map(|e| e.code).collect();
        assert_eq!(codes, [FieldCode::ServersFull, FieldCode::Invalid]);
        assert_eq!(fields["domain_name"][0].code, FieldCode::Required);
    }

    #[test]
    fn a_line_is_one_line() {
        for bad in ["a\nb", "a\u{85}b", "a\u{2028}b", "a\u{2029}b", "a\u{202E}b"] {
            let mut v = Validator::new();
            v.line("name", bad, 100);
            assert!(v.has("name"), "{bad:?}");
        }
        let mut v = Validator::new();
        v.line("name", "Zoë's Café — Ünïcode ok", 100);
        assert!(v.is_empty());
        let mut v = Validator::new();
        v.text("comment", "two\nlines\tand a tab", 100);
        assert!(v.is_empty());
    }

    #[test]
    fn field_keeps_its_default_code_and_field_coded_its_own() {
        let ServiceError::Invalid(f) = ServiceError::field("x", "Bad.") else {
            panic!("a field error");
        };
        assert_eq!(f["x"], [FieldError::invalid("Bad.")]);
        let ServiceError::Invalid(f) =
            ServiceError::field_coded("x", FieldCode::InvalidDomain, "Bad.")
        else {
            panic!("a field error");
        };
        assert_eq!(f["x"][0].code.as_str(), "invalid_domain");
    }

    #[test]
    fn storage_errors_are_told_as_not_found_and_conflict() {
        assert!(matches!(
            ServiceError::Store(StoreError::NotFound).for_caller(),
            ServiceError::NotFound
        ));
        assert!(matches!(
            ServiceError::Store(StoreError::Conflict(lodge_store::Conflict::UserEmail)).for_caller(),
            ServiceError::Conflict(m) if !m.contains("users")
        ));
        assert!(matches!(
            ServiceError::Store(StoreError::Corrupt("x".into())).for_caller(),
            ServiceError::Store(_)
        ));
    }
}
