//! Registrars from the configuration file: each EPP server with its host, port, client id,
//! password (sealed with the node's secret key, as every secret Lodge keeps at rest), TLS
//! files and the TLDs it serves. Names of TLDs no registrar serves stay with the manual
//! registrar (staff).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::epp::{EppRegistrar, EppSettings};
use super::{ByTld, ManualRegistrar, Registrar, RegistrarError};
use crate::crypto::Sealer;

/// One `[[registrars]]` table of `lodge.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrarFile {
    /// Stored on the domains it registers (e.g. `epp-verisign`).
    pub name: String,
    /// The protocol: `epp` (the only one so far).
    #[serde(default = "epp")]
    pub kind: String,
    pub host: String,
    /// Default 700 (RFC 5734).
    #[serde(default = "port_700")]
    pub port: u16,
    pub client_id: String,
    /// The password sealed with the node's secret key (`lodge seal` prints it).
    pub password_sealed: String,
    /// PEM of the CA that signs the server's certificate (default: the system's store).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM of the client certificate (chain) and its key, when the registry asks for one.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The TLDs it serves (`com`, `co.uk`, …).
    pub tlds: Vec<String>,
    /// Nameservers of registrations that name none.
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// Per-command timeout (default 30 s).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

fn epp() -> String {
    "epp".into()
}

fn port_700() -> u16 {
    700
}

fn read(what: &str, name: &str, path: &PathBuf) -> Result<String, RegistrarError> {
    std::fs::read_to_string(path).map_err(|e| {
        RegistrarError(format!(
            "registrar {name:?}: reading the {what} {}: {e}",
            path.display()
        ))
    })
}

/// The registrars of the configuration, routed by TLD (the manual registrar for the
/// rest); `None` when none is configured. A bad entry is refused with its name.
pub fn from_files(
    files: &[RegistrarFile],
    sealer: &Sealer,
) -> Result<Option<Arc<dyn Registrar>>, RegistrarError> {
    if files.is_empty() {
        return Ok(None);
    }
    let mut routed = ByTld::new(Arc::new(ManualRegistrar));
    let mut names: Vec<&str> = Vec::new();
    for f in files {
        if names.contains(&f.name.as_str()) {
            return Err(RegistrarError(format!(
                "registrar {:?} is configured twice",
                f.name
            )));
        }
        names.push(&f.name);
        // Names Lodge records itself: one of them configured would take those domains.
        if ["manual", "none", "by-tld"].contains(&f.name.as_str()) {
            return Err(RegistrarError(format!(
                "registrar {:?}: the name is reserved (manual, none and by-tld are recorded by Lodge itself)",
                f.name
            )));
        }
        if f.kind != "epp" {
            return Err(RegistrarError(format!(
                "registrar {:?}: unknown kind {:?} (only \"epp\")",
                f.name, f.kind
            )));
        }
        if f.tlds.is_empty() {
            return Err(RegistrarError(format!(
                "registrar {:?} serves no TLD",
                f.name
            )));
        }
        let password = sealer.open(&f.password_sealed).map_err(|_| {
            RegistrarError(format!(
                "registrar {:?}: password_sealed does not open with this node's secret key (seal it with `lodge seal`)",
                f.name
            ))
        })?;
        let client_cert_pem = match (&f.cert_file, &f.key_file) {
            (Some(c), Some(k)) => Some((
                read("client certificate", &f.name, c)?,
                read("client key", &f.name, k)?.into(),
            )),
            (None, None) => None,
            _ => {
                return Err(RegistrarError(format!(
                    "registrar {:?}: cert_file and key_file go together",
                    f.name
                )))
            }
        };
        let ca_pem = f
            .ca_file
            .as_ref()
            .map(|p| read("CA file", &f.name, p))
            .transpose()?;
        let driver = EppRegistrar::new(EppSettings {
            name: f.name.clone(),
            host: f.host.clone(),
            port: f.port,
            client_id: f.client_id.clone(),
            password: password.into(),
            ca_pem,
            client_cert_pem,
            timeout: Duration::from_secs(f.timeout_secs.unwrap_or(30)),
            default_nameservers: f.nameservers.clone(),
        })
        .map_err(|e| RegistrarError(format!("registrar {:?}: {e}", f.name)))?;
        let driver: Arc<dyn Registrar> = Arc::new(driver);
        for tld in &f.tlds {
            routed = routed.route(tld, driver.clone());
        }
    }
    Ok(Some(Arc::new(routed)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lodge_core::DomainName;

    fn file(
        dir: &std::path::Path,
        server: &lodge_testkit::epp::EppServer,
        sealed: String,
    ) -> RegistrarFile {
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, server.ca_pem()).unwrap();
        RegistrarFile {
            name: "epp-test".into(),
            kind: "epp".into(),
            host: "127.0.0.1".into(),
            port: server.port(),
            client_id: "lodge".into(),
            password_sealed: sealed,
            ca_file: Some(ca),
            cert_file: None,
            key_file: None,
            tlds: vec!["com".into(), ".CO.UK".into()],
            nameservers: vec![],
            timeout_secs: Some(5),
        }
    }

    #[tokio::test]
    async fn configured_registrars_serve_their_tlds_and_the_rest_stay_manual() {
        let server = lodge_testkit::epp::EppServer::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::new(&[7; 32]);
        let f = file(dir.path(), &server, sealer.seal("lodge-secret").unwrap());
        let r = from_files(std::slice::from_ref(&f), &sealer)
            .unwrap()
            .unwrap();
        let name = |s: &str| DomainName::parse(s).unwrap();
        assert_eq!(r.name_for(&name("example.com")), "epp-test");
        assert_eq!(r.name_for(&name("example.co.uk")), "epp-test");
        assert_eq!(r.name_for(&name("example.org")), "manual");
        assert!(r.has_registry(&name("example.com")));
        assert!(!r.has_registry(&name("example.org")));
        assert_eq!(
            r.check(&name("example.com")).await.unwrap(),
            super::super::Availability::Available
        );
        assert_eq!(r.queues().len(), 1);

        // Nothing configured: the default registrar stays.
        assert!(from_files(&[], &sealer).unwrap().is_none());
        // Sealed with another key: refused at start, naming the registrar.
        let other = Sealer::new(&[8; 32]);
        let e = from_files(
            &[file(dir.path(), &server, other.seal("x").unwrap())],
            &sealer,
        )
        .unwrap_err();
        assert!(
            e.0.contains("epp-test") && e.0.contains("lodge seal"),
            "{e}"
        );
        // A missing CA file, a lone certificate: refused with the reason.
        let mut bad = f.clone();
        bad.ca_file = Some(dir.path().join("missing.pem"));
        assert!(from_files(&[bad], &sealer)
            .unwrap_err()
            .0
            .contains("CA file"));
        let mut bad = f.clone();
        bad.cert_file = Some(dir.path().join("ca.pem"));
        assert!(from_files(&[bad], &sealer)
            .unwrap_err()
            .0
            .contains("go together"));
        // A name Lodge records itself would take the domains recorded with it.
        for reserved in ["manual", "none", "by-tld"] {
            let mut bad = f.clone();
            bad.name = reserved.into();
            let e = from_files(&[bad], &sealer).unwrap_err();
            assert!(e.0.contains("reserved"), "{e}");
        }
        let e = from_files(&[f.clone(), f], &sealer).unwrap_err();
        assert!(e.0.contains("twice"), "{e}");
    }
}
