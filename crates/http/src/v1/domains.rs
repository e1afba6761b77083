//! Domains of a project: reading them, auto-renew, nameservers, the transfer lock and code
//! (at the registry); the availability check before ordering; staff's list with the
//! registry state.

use axum::extract::{Query, State};
use axum::Json;
use lodge_core::{DomainId, OrganizationId, ProjectId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiResult;
use crate::extract::V1Path as Path;
use crate::extract::{path_id, Caller, PageQuery, Paginated, Staff, V1Later};
use crate::wire::{money_str, Domain};
use crate::AppState;

/// The domains of a project.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/projects/{project_id}/domains",
    tag = "hosting", security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID"),
           ("project_id" = String, Path, description = "Project UUID"), PageQuery),
    responses((status = 200, body = Paginated<Domain>), (status = 401), (status = 404)))]
pub async fn list_domains(
    State(st): State<AppState>,
    Caller(p): Caller,
    Path((org, project)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Paginated<Domain>>> {
    let org: OrganizationId = path_id(&org)?;
    let project: ProjectId = path_id(&project)?;
    let (access, row) = st.lodge.project_access(&p, org, project).await?;
    let req = q.resolve()?;
    let page = st
        .lodge
        .project_domains(&access, &row, req.limit(), req.offset())
        .await?;
    let catalog = st.lodge.catalog().await?;
    let path = format!("/v1/organizations/{org}/projects/{project}/domains");
    Ok(Json(Paginated::new(
        &st,
        &path,
        req,
        page.count,
        page.rows
            .into_iter()
            .map(|d| Domain::new(d, &catalog))
            .collect(),
    )?))
}

/// One domain.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/projects/{project_id}/domains/{domain_id}",
    tag = "hosting", security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID"),
           ("project_id" = String, Path, description = "Project UUID"),
           ("domain_id" = String, Path, description = "Domain UUID")),
    responses((status = 200, body = Domain), (status = 401), (status = 404)))]
pub async fn get_domain(
    State(st): State<AppState>,
    Caller(p): Caller,
    Path((org, project, id)): Path<(String, String, String)>,
) -> ApiResult<Json<Domain>> {
    let org: OrganizationId = path_id(&org)?;
    let project: ProjectId = path_id(&project)?;
    let id: DomainId = path_id(&id)?;
    let (access, _) = st.lodge.project_access(&p, org, project).await?;
    let d = st.lodge.project_domain(&access, project, id).await?;
    Ok(Json(Domain::new(d, &*st.lodge.catalog().await?)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoRenew {
    pub auto_renew: bool,
}

/// Turns automatic renewal on or off.
#[utoipa::path(put, path = "/v1/organizations/{organization_id}/projects/{project_id}/domains/{domain_id}/auto-renew",
    tag = "hosting", security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID"),
           ("project_id" = String, Path, description = "Project UUID"),
           ("domain_id" = String, Path, description = "Domain UUID")),
    request_body = AutoRenew,
    responses((status = 200, body = Domain), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn set_auto_renew(
    State(st): State<AppState>,
    Caller(p): Caller,
    Path((org, project, id)): Path<(String, String, String)>,
    body: V1Later<AutoRenew>,
) -> ApiResult<Json<Domain>> {
    let org: OrganizationId = path_id(&org)?;
    let project: ProjectId = path_id(&project)?;
    let id: DomainId = path_id(&id)?;
    let (access, _) = st.lodge.project_access(&p, org, project).await?;
    access.require_write()?; // the role before the body, as V1Later promises
    let body = body.get()?;
    let d = st
        .lodge
        .set_auto_renew(&access, project, id, body.auto_renew)
        .await?;
    Ok(Json(Domain::new(d, &*st.lodge.catalog().await?)))
}

/// A name's availability and first-year prices.
#[derive(Debug, Serialize, ToSchema)]
pub struct DomainCheck {
    pub name: String,
    /// `available`, `unavailable` or `unknown` (the registrar cannot tell).
    pub availability: String,
    /// One year's registration price (`null`: the TLD is not sold).
    pub register: Option<String>,
    pub transfer: Option<String>,
    pub renew: Option<String>,
    pub currency: String,
}

/// Whether a name can be registered (the registrar's `check`), and its price (the TLD table).
#[utoipa::path(get, path = "/v1/domains/check/{name}", tag = "hosting", security(("bearer" = [])),
    params(("name" = String, Path, description = "The name to check, e.g. `example.com` (an internationalized name in its own letters or in its `xn--` form; a trailing dot is ignored)", pattern = r"^[A-Za-z0-9.\u0080-\uFFFF-]{1,253}$", max_length = 253)),
    responses((status = 200, body = DomainCheck), (status = 400), (status = 401)))]
pub async fn check_domain(
    State(st): State<AppState>,
    Caller(_p): Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<DomainCheck>> {
    let c = st.lodge.check(&name).await?;
    let money = |m: Option<i64>| m.map(|m| money_str(m, c.currency));
    Ok(Json(DomainCheck {
        availability: c.availability.to_owned(),
        register: money(c.register_minor),
        transfer: money(c.transfer_minor),
        renew: money(c.renew_minor),
        currency: c.currency.to_string(),
        name: c.name,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Nameservers {
    /// 2 to 13 host names.
    pub nameservers: Vec<String>,
}

/// Replaces a domain's nameservers at the registry.
#[utoipa::path(put, path = "/v1/organizations/{organization_id}/projects/{project_id}/domains/{domain_id}/nameservers",
    tag = "hosting", security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID"),
           ("project_id" = String, Path, description = "Project UUID"),
           ("domain_id" = String, Path, description = "Domain UUID")),
    request_body = Nameservers,
    responses((status = 200, body = Domain), (status = 400), (status = 401), (status = 403), (status = 404),
              (status = 409, description = "Not active, or the registrar refused")))]
pub async fn set_nameservers(
    State(st): State<AppState>,
    Caller(p): Caller,
    Path((org, project, id)): Path<(String, String, String)>,
    body: V1Later<Nameservers>,
) -> ApiResult<Json<Domain>> {
    let org: OrganizationId = path_id(&org)?;
    let project: ProjectId = path_id(&project)?;
    let id: DomainId = path_id(&id)?;
    let (access, _) = st.lodge.project_access(&p, org, project).await?;
    access.require_write()?; // the role before the body, as V1Later promises
    let body = body.get()?;
    let d = st
        .lodge
        .set_nameservers(&access, project, id, &body.nameservers)
        .await?;
    Ok(Json(Domain::new(d, &*st.lodge.catalog().await?)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    /// Locked against transfer (`clientTransferProhibited`).
    pub locked: bool,
}

/// Locks or unlocks a domain against transfer at the registry.
#[utoipa::path(put, path = "/v1/organizations/{organization_id}/projects/{project_id}/domains/{domain_id}/lock",
    tag = "hosting", security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID"),
           ("project_id" = String, Path, description = "Project UUID"),
           ("domain_id" = String, Path, description = "Domain UUID")),
    request_body = Lock,
    responses((status = 200, body = Domain), (status = 400), (status = 401), (status = 403), (status = 404),
              (status = 409, description = "Not active, or the registrar refused")))]
pub async fn set_lock(
    State(st): State<AppState>,
    Caller(p): Caller,
    Path((org, project, id)): Path<(String, String, String)>,
    body: V1Later<Lock>,
) -> ApiResult<Json<Domain>> {
    let org: OrganizationId = path_id(&org)?;
    let project: ProjectId = path_id(&project)?;
    let id: DomainId = path_id(&id)?;
    let (access, _) = st.lodge.project_access(&p, org, project).await?;
    access.require_write()?; // the role before the body, as V1Later promises
    let body = body.get()?;
    let d = st
        .lodge
        .set_domain_lock(&access, project, id, body.locked)
        .await?;
    Ok(Json(Domain::new(d, &*st.lodge.catalog().await?)))
}

/// A domain's transfer code.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuthCode {
    /// `null` when the registrar cannot tell it.
    pub auth_code: Option<String>,
}

/// The transfer code (EPP `authInfo`) of an active domain, to move it to another registrar.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/projects/{project_id}/domains/{domain_id}/auth-code",
    tag = "hosting", security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID"),
           ("project_id" = String, Path, description = "Project UUID"),
           ("domain_id" = String, Path, description = "Domain UUID")),
    responses((status = 200, body = AuthCode), (status = 401), (status = 403), (status = 404),
              (status = 409, description = "Not active, or the registrar refused")))]
pub async fn get_auth_code(
    State(st): State<AppState>,
    Caller(p): Caller,
    Path((org, project, id)): Path<(String, String, String)>,
) -> ApiResult<Json<AuthCode>> {
    let org: OrganizationId = path_id(&org)?;
    let project: ProjectId = path_id(&project)?;
    let id: DomainId = path_id(&id)?;
    let (access, _) = st.lodge.project_access(&p, org, project).await?;
    let auth_code = st.lodge.domain_auth_code(&access, project, id).await?;
    Ok(Json(AuthCode { auth_code }))
}

/// A domain with its registry state (staff).
#[derive(Debug, Serialize, ToSchema)]
pub struct RegistryDomain {
    #[serde(flatten)]
    pub domain: Domain,
    pub organization_id: String,
    pub project_id: String,
    /// The registrar that holds it (`manual`, or a configured EPP registrar's name).
    pub registrar: String,
    /// What Lodge waits for from the registry: `registering`, `transferring` or `null`.
    pub registry_stage: Option<String>,
    /// The EPP statuses the registry last reported.
    pub registry_statuses: Vec<String>,
    /// The day the registry was last read back.
    pub registry_synced_on: Option<String>,
    /// The registrar's last error about it.
    pub registry_error: Option<String>,
}

/// Every domain with its registry state, newest first (staff).
#[utoipa::path(get, path = "/v1/admin/domains", tag = "admin", security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, body = Paginated<RegistryDomain>), (status = 400, description = "A query parameter it does not take"), (status = 401), (status = 403)))]
pub async fn admin_list_domains(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    _: crate::extract::OnlyParams<crate::extract::PageParams>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Paginated<RegistryDomain>>> {
    let req = q.resolve()?;
    let (rows, count) = st.lodge.all_domains(req.limit(), req.offset()).await?;
    let catalog = st.lodge.catalog().await?;
    let results = rows
        .into_iter()
        .map(|d| RegistryDomain {
            organization_id: d.organization_id.to_string(),
            project_id: d.project_id.to_string(),
            registrar: d.registrar.clone(),
            registry_stage: d.registry_stage.clone(),
            registry_statuses: serde_json::from_str(&d.registry_statuses).unwrap_or_default(),
            registry_synced_on: d.registry_synced_on.clone(),
            registry_error: d.registry_error.clone(),
            domain: Domain::new(d, &catalog),
        })
        .collect();
    Ok(Json(Paginated::new(
        &st,
        "/v1/admin/domains",
        req,
        count,
        results,
    )?))
}

/// One record set of a zone: a name, a type, a TTL and its values.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DnsRecord {
    /// Absolute (`www.example.com`) in answers; in a request also relative to the zone
    /// (`www`, `@` for the apex). With a final dot, the name must be inside the zone.
    #[schema(value_type = String)]
    pub name: Option<String>,
    /// A, AAAA, CNAME, MX, TXT, SRV or CAA (NS and SOA are Lodge's).
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: Option<String>,
    /// Seconds, 60 to 604800 (default: the installation's, 3600 unless configured).
    pub ttl: Option<i64>,
    /// As in a zone file (`192.0.2.1`, `10 mail.example.com.`, `0 5 5060 sip.example.com.`,
    /// `0 issue "letsencrypt.org"`), except TXT: the text itself, unquoted.
    #[schema(value_type = Vec<String>)]
    pub values: Option<Vec<String>>,
}

/// A domain's DNS zone as its owner may edit it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DomainRecords {
    pub zone: String,
    /// The zone's nameservers (set by Lodge from the hosting server's ns1/ns2).
    pub nameservers: Vec<String>,
    /// The editable record sets (NS and SOA are not listed).
    pub records: Vec<DnsRecord>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct DomainRecordsInput {
    /// Every editable record set the zone is to have: the ones left out are deleted.
    pub records: Vec<DnsRecord>,
}

impl From<lodge_services::dns::records::ZoneView> for DomainRecords {
    fn from(z: lodge_services::dns::records::ZoneView) -> Self {
        DomainRecords {
            zone: z.zone,
            nameservers: z.nameservers,
            records: z
                .records
                .into_iter()
                .map(|r| DnsRecord {
                    name: Some(r.name),
                    kind: Some(r.kind),
                    ttl: Some(i64::from(r.ttl)),
                    values: Some(r.values),
                })
                .collect(),
        }
    }
}

/// The DNS records of a domain's zone (on Lodge's PowerDNS, made with its hosting account).
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/projects/{project_id}/domains/{domain_id}/records",
    tag = "hosting", security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID"),
           ("project_id" = String, Path, description = "Project UUID"),
           ("domain_id" = String, Path, description = "Domain UUID")),
    responses((status = 200, body = DomainRecords), (status = 401), (status = 404),
              (status = 409, description = "DNS hosting is off, or the domain has no zone here")))]
pub async fn get_records(
    State(st): State<AppState>,
    Caller(p): Caller,
    Path((org, project, id)): Path<(String, String, String)>,
) -> ApiResult<Json<DomainRecords>> {
    let org: OrganizationId = path_id(&org)?;
    let project: ProjectId = path_id(&project)?;
    let id: DomainId = path_id(&id)?;
    let (access, _) = st.lodge.project_access(&p, org, project).await?;
    let zone = st.lodge.domain_records(&access, project, id).await?;
    Ok(Json(zone.into()))
}

/// Replaces the editable records of a domain's zone at once (one atomic change).
#[utoipa::path(put, path = "/v1/organizations/{organization_id}/projects/{project_id}/domains/{domain_id}/records",
    tag = "hosting", security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID"),
           ("project_id" = String, Path, description = "Project UUID"),
           ("domain_id" = String, Path, description = "Domain UUID")),
    request_body = DomainRecordsInput,
    responses((status = 200, body = DomainRecords), (status = 400), (status = 401), (status = 403),
              (status = 404),
              (status = 409, description = "DNS hosting is off, the domain has no zone here, or the DNS server refused")))]
pub async fn put_records(
    State(st): State<AppState>,
    Caller(p): Caller,
    Path((org, project, id)): Path<(String, String, String)>,
    body: V1Later<DomainRecordsInput>,
) -> ApiResult<Json<DomainRecords>> {
    let org: OrganizationId = path_id(&org)?;
    let project: ProjectId = path_id(&project)?;
    let id: DomainId = path_id(&id)?;
    let (access, _) = st.lodge.project_access(&p, org, project).await?;
    access.require_write()?; // the role before the body, as V1Later promises
    let body = body.get()?;
    let input: Vec<lodge_services::dns::records::RecordInput> = body
        .records
        .into_iter()
        .map(|r| lodge_services::dns::records::RecordInput {
            name: r.name,
            kind: r.kind,
            ttl: r.ttl,
            values: r.values,
        })
        .collect();
    let zone = st
        .lodge
        .set_domain_records(&access, project, id, &input)
        .await?;
    Ok(Json(zone.into()))
}
