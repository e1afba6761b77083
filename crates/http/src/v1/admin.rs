//! The staff API (`/v1/admin/…`): onboarding customers and editing the catalog.
//! Every route needs a staff credential with the `admin` scope.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use lodge_core::{CouponId, OfferId, OrganizationId, PlanGroupId, PlanId, UserId};
use lodge_services::catalog::{
    CatalogFile, CatalogItem, CouponSpec, GroupSpec, ImportSummary, OfferSpec, PlanSpec, TldSpec,
};
use lodge_services::tenancy::{NewOrganization, NewUser};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::keys::{parse_expiry, Scopes};
use crate::error::{ApiError, ApiResult};
use crate::extract::V1Path as Path;
use crate::extract::{path_id, Staff, V1Json};
use crate::wire::{self, ApiKey, CreatedApiKey, HostingPlan, Organization, PlanGroup, TldInfo};
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_user))
        .routes(routes!(create_organization))
        .routes(routes!(add_member))
        .routes(routes!(set_quotas))
        .routes(routes!(create_org_key))
        .routes(routes!(import_catalog))
        .routes(routes!(export_catalog))
        .routes(routes!(upsert_group))
        .routes(routes!(set_group_active))
        .routes(routes!(list_plans, upsert_plan))
        .routes(routes!(set_plan_active))
        .routes(routes!(list_offers, upsert_offer))
        .routes(routes!(deactivate_offer))
        .routes(routes!(list_coupons, upsert_coupon))
        .routes(routes!(deactivate_coupon))
        .routes(routes!(list_tlds, upsert_tld))
        .routes(routes!(set_tld_active))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub email: String,
    #[serde(default)]
    pub name: String,
    /// At least 8 characters; omit for a user who only uses API keys.
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub is_staff: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: String,
    pub is_staff: bool,
    pub is_active: bool,
    #[schema(format = DateTime)]
    pub created: String,
}

impl User {
    pub fn from_row(u: lodge_services::model::UserRow) -> Self {
        User {
            id: u.id.to_string(),
            email: u.email,
            name: u.name,
            is_staff: u.is_staff == 1,
            is_active: u.is_active == 1,
            created: wire::ts(u.created_at),
        }
    }
}

/// Creates a user (a customer's person, or staff).
#[utoipa::path(post, path = "/v1/admin/users", tag = "admin", security(("bearer" = [])),
    request_body = CreateUser,
    responses((status = 201, body = User), (status = 400), (status = 401), (status = 403)))]
async fn create_user(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    V1Json(b): V1Json<CreateUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    let u = st
        .lodge
        .create_user(NewUser {
            email: &b.email,
            name: &b.name,
            password: b.password.as_deref(),
            is_staff: b.is_staff,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(User::from_row(u))))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrganization {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// `personal` (default) or `professional`.
    #[serde(default)]
    pub organization_type: Option<String>,
    #[serde(default)]
    #[schema(max_length = 100)]
    pub company_name: Option<String>,
    /// ISO 3166-1 alpha-2 (any case; kept in capitals).
    #[serde(default)]
    pub country: Option<String>,
    /// A user made owner of the new organization.
    #[serde(default)]
    pub owner_id: Option<String>,
}

/// Creates an organization with its default project.
#[utoipa::path(post, path = "/v1/admin/organizations", tag = "admin", security(("bearer" = [])),
    request_body = CreateOrganization,
    responses((status = 201, body = Organization), (status = 400), (status = 401), (status = 403)))]
async fn create_organization(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    V1Json(b): V1Json<CreateOrganization>,
) -> ApiResult<(StatusCode, Json<Organization>)> {
    let owner =
        match b.owner_id.as_deref() {
            None => None,
            Some(s) => Some(s.parse::<UserId>().map_err(|_| {
                lodge_services::ServiceError::field("owner_id", "Not a valid UUID.")
            })?),
        };
    let o = st
        .lodge
        .create_organization(NewOrganization {
            name: &b.name,
            organization_type: b.organization_type.as_deref(),
            company_name: b.company_name.as_deref(),
            country: b.country.as_deref(),
            owner,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(Organization::from_row(o))))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetQuotas {
    /// Each optional (unchanged when absent), 0 to 1,000,000.
    #[serde(default)]
    pub user_quota: Option<i64>,
    #[serde(default)]
    pub project_quota: Option<i64>,
    /// Hosting accounts not ended, pending orders included.
    #[serde(default)]
    pub instance_quota: Option<i64>,
    /// Domains held, or being registered or transferred.
    #[serde(default)]
    pub domain_quota: Option<i64>,
}

/// Sets an organization's quotas (orders beyond them are refused; lowering one ends
/// nothing).
#[utoipa::path(patch, path = "/v1/admin/organizations/{organization_id}/quotas", tag = "admin", security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID")),
    request_body = SetQuotas,
    responses((status = 200, body = Organization), (status = 400), (status = 401), (status = 403), (status = 404)))]
async fn set_quotas(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    Path(id): Path<String>,
    V1Json(b): V1Json<SetQuotas>,
) -> ApiResult<Json<Organization>> {
    let org: OrganizationId = path_id(&id)?;
    let o = st
        .lodge
        .set_quotas(
            org,
            [
                ("user_quota", b.user_quota),
                ("project_quota", b.project_quota),
                ("instance_quota", b.instance_quota),
                ("domain_quota", b.domain_quota),
            ],
        )
        .await?;
    Ok(Json(Organization::from_row(o)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    pub user_id: String,
    /// `owner`, `editor`, `viewer` or `guest`.
    pub role: String,
    /// For a guest: the projects it may see.
    #[serde(default)]
    pub project_ids: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Membership {
    pub organization_id: String,
    pub user_id: String,
    pub role: String,
}

/// Adds a user to an organization with a role (or changes its role).
#[utoipa::path(post, path = "/v1/admin/organizations/{organization_id}/members", tag = "admin",
    security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID")),
    request_body = AddMember,
    responses((status = 201, body = Membership), (status = 400), (status = 401), (status = 403), (status = 404)))]
async fn add_member(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    Path(org): Path<String>,
    V1Json(b): V1Json<AddMember>,
) -> ApiResult<(StatusCode, Json<Membership>)> {
    let org: OrganizationId = path_id(&org)?;
    let user: UserId = b
        .user_id
        .parse()
        .map_err(|_| lodge_services::ServiceError::field("user_id", "Not a valid UUID."))?;
    st.lodge.staff_organization(org).await?;
    let projects = b
        .project_ids
        .iter()
        .map(|p| {
            p.parse().map_err(|_| {
                lodge_services::ServiceError::field("project_ids", "Not a valid UUID.")
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // One transaction: a refused request (an unknown project) adds no one.
    st.lodge
        .add_member_to_projects(org, user, &b.role, &projects)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(Membership {
            organization_id: org.to_string(),
            user_id: user.to_string(),
            role: b.role,
        }),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrgKey {
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    #[serde(default)]
    pub scopes: Option<Scopes>,
    #[serde(default)]
    pub expires: Option<String>,
    /// The member who holds the key (default: the first owner).
    #[serde(default)]
    pub user_id: Option<String>,
}

/// Issues an API key for an organization (the secret is shown once).
#[utoipa::path(post, path = "/v1/admin/organizations/{organization_id}/api-keys", tag = "admin",
    security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID")),
    request_body = CreateOrgKey,
    responses((status = 201, body = CreatedApiKey), (status = 400), (status = 401), (status = 403), (status = 404)))]
async fn create_org_key(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    Path(org): Path<String>,
    V1Json(b): V1Json<CreateOrgKey>,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    let org: OrganizationId = path_id(&org)?;
    st.lodge.staff_organization(org).await?;
    let user = b
        .user_id
        .as_deref()
        .map(|s| {
            s.parse::<UserId>()
                .map_err(|_| lodge_services::ServiceError::field("user_id", "Not a valid UUID."))
        })
        .transpose()?;
    let scopes = b.scopes.as_ref().map(Scopes::joined);
    if scopes.as_deref().is_some_and(|s| s.contains("admin")) {
        return Err(lodge_services::ServiceError::field(
            "scopes",
            "Organization keys cannot have the admin scope.",
        )
        .into());
    }
    let expires = parse_expiry(b.expires.as_deref())?;
    let issued = st
        .lodge
        .create_org_key(org, user, &b.name, scopes.as_deref(), expires)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKey {
            key: ApiKey::from_row(&issued.row, st.lodge.now_us()),
            key_secret: issued.secret,
        }),
    ))
}

/// Imports a whole catalog (the JSON form of `lodge catalog import`): creates or updates
/// groups and plans by slug, offers by legacy id, coupons by code, TLDs by name.
#[utoipa::path(post, path = "/v1/admin/catalog/import", tag = "admin", security(("bearer" = [])),
    request_body = CatalogFile,
    responses((status = 200, body = ImportSummary), (status = 400), (status = 401), (status = 403)))]
async fn import_catalog(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    V1Json(file): V1Json<CatalogFile>,
) -> ApiResult<Json<ImportSummary>> {
    Ok(Json(st.lodge.import_catalog(&file).await?))
}

/// The stored catalog as a catalog file (the JSON form of `lodge catalog export`): every
/// item whole, inactive and hidden ones included, ready to edit and import back.
#[utoipa::path(get, path = "/v1/admin/catalog/export", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = CatalogFile), (status = 400, description = "A query parameter it does not take"), (status = 401), (status = 403)))]
async fn export_catalog(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    _: crate::extract::OnlyParams<crate::extract::NoParams>,
) -> ApiResult<Json<CatalogFile>> {
    Ok(Json(st.lodge.export_catalog().await?))
}

/// Creates or updates (by slug) a plan group.
#[utoipa::path(post, path = "/v1/admin/plan-groups", tag = "admin", security(("bearer" = [])),
    request_body = GroupSpec,
    responses((status = 200, body = PlanGroup), (status = 400), (status = 401), (status = 403)))]
async fn upsert_group(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    V1Json(g): V1Json<GroupSpec>,
) -> ApiResult<Json<PlanGroup>> {
    let slug = g.slug.clone();
    st.lodge
        .import_catalog_item(&CatalogFile {
            groups: vec![g],
            ..Default::default()
        })
        .await?;
    let c = st.lodge.catalog().await?;
    let g = c
        .groups
        .iter()
        .find(|x| x.slug == slug)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(PlanGroup::from(g)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Activation {
    pub is_active: bool,
}

/// Activates or deactivates a plan group (its plans are no longer sold while inactive).
#[utoipa::path(post, path = "/v1/admin/plan-groups/{group_id}/active", tag = "admin",
    security(("bearer" = [])),
    params(("group_id" = String, Path, description = "Plan group UUID")),
    request_body = Activation,
    responses((status = 204), (status = 401), (status = 403), (status = 404)))]
async fn set_group_active(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    Path(id): Path<String>,
    V1Json(b): V1Json<Activation>,
) -> ApiResult<StatusCode> {
    let id: PlanGroupId = path_id(&id)?;
    st.lodge
        .set_catalog_item_active(CatalogItem::Group(id), b.is_active)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every plan, including hidden and inactive ones.
#[utoipa::path(get, path = "/v1/admin/plans", tag = "admin", operation_id = "admin_list_plans", security(("bearer" = [])),
    responses((status = 200, body = Vec<StaffPlan>), (status = 400, description = "A query parameter it does not take"), (status = 401), (status = 403)))]
async fn list_plans(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    _: crate::extract::OnlyParams<crate::extract::NoParams>,
) -> ApiResult<Json<Vec<StaffPlan>>> {
    let c = st.lodge.catalog().await?;
    Ok(Json(c.plans.iter().map(StaffPlan::from).collect()))
}

/// A plan as staff see it: the customers' view and what decides where and how it is sold.
#[derive(Debug, Serialize, ToSchema)]
pub struct StaffPlan {
    #[serde(flatten)]
    pub plan: HostingPlan,
    /// Not listed to customers (still shown by id).
    pub hidden: bool,
    /// Sold once per organization (a trial): a second order is refused.
    pub once_per_organization: bool,
    /// The provisioning driver of the servers that host it (`nginx`, `directadmin`, …).
    pub driver: String,
    pub display_order: i64,
}

impl From<&lodge_services::catalog::Plan> for StaffPlan {
    fn from(p: &lodge_services::catalog::Plan) -> Self {
        StaffPlan {
            plan: HostingPlan::from(p),
            hidden: p.row.hidden == 1,
            once_per_organization: p.row.once_per_organization == 1,
            driver: p.row.driver.clone(),
            display_order: p.row.display_order,
        }
    }
}

/// Creates or updates (by slug) a plan with its prices.
#[utoipa::path(post, path = "/v1/admin/plans", tag = "admin", security(("bearer" = [])),
    request_body = PlanSpec,
    responses((status = 200, body = StaffPlan), (status = 400), (status = 401), (status = 403)))]
async fn upsert_plan(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    V1Json(p): V1Json<PlanSpec>,
) -> ApiResult<Json<StaffPlan>> {
    let slug = p.slug.clone();
    st.lodge
        .import_catalog_item(&CatalogFile {
            plans: vec![p],
            ..Default::default()
        })
        .await?;
    let c = st.lodge.catalog().await?;
    let plan = c
        .plans
        .iter()
        .find(|x| x.row.slug == slug)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(StaffPlan::from(plan)))
}

/// Activates or deactivates a plan (an inactive plan cannot be ordered or listed).
#[utoipa::path(post, path = "/v1/admin/plans/{plan_id}/active", tag = "admin",
    security(("bearer" = [])),
    params(("plan_id" = String, Path, description = "Plan UUID")),
    request_body = Activation,
    responses((status = 204), (status = 401), (status = 403), (status = 404)))]
async fn set_plan_active(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    Path(id): Path<String>,
    V1Json(b): V1Json<Activation>,
) -> ApiResult<StatusCode> {
    let id: PlanId = path_id(&id)?;
    st.lodge
        .set_catalog_item_active(CatalogItem::Plan(id), b.is_active)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Offer {
    pub id: String,
    pub legacy_id: i64,
    pub plan_id: String,
    pub intro_total: String,
    pub intro_months: i64,
    pub renewal: String,
    pub renewal_months: i64,
    pub allow_coupon: bool,
    pub is_active: bool,
}

fn offers(c: &lodge_services::catalog::Catalog) -> Vec<Offer> {
    c.offers
        .iter()
        .map(|o| Offer {
            id: o.id.to_string(),
            legacy_id: o.legacy_id,
            plan_id: o.plan_id.to_string(),
            intro_total: wire::money_str(o.intro_total_minor, c.currency),
            intro_months: o.intro_months,
            renewal: wire::money_str(o.renewal_minor, c.currency),
            renewal_months: o.renewal_months,
            allow_coupon: o.allow_coupon == 1,
            is_active: o.is_active == 1,
        })
        .collect()
}

/// Every service offer.
#[utoipa::path(get, path = "/v1/admin/offers", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Vec<Offer>), (status = 400, description = "A query parameter it does not take"), (status = 401), (status = 403)))]
async fn list_offers(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    _: crate::extract::OnlyParams<crate::extract::NoParams>,
) -> ApiResult<Json<Vec<Offer>>> {
    Ok(Json(offers(&*st.lodge.catalog().await?)))
}

/// Creates a service offer (an intro price), or updates the one with the same `legacy_id`.
#[utoipa::path(post, path = "/v1/admin/offers", tag = "admin", security(("bearer" = [])),
    request_body = OfferSpec,
    responses((status = 200, body = Vec<Offer>, description = "All offers after the change"),
              (status = 400), (status = 401), (status = 403)))]
async fn upsert_offer(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    V1Json(o): V1Json<OfferSpec>,
) -> ApiResult<Json<Vec<Offer>>> {
    st.lodge
        .import_catalog_item(&CatalogFile {
            offers: vec![o],
            ..Default::default()
        })
        .await?;
    Ok(Json(offers(&*st.lodge.catalog().await?)))
}

/// Deactivates a service offer.
#[utoipa::path(post, path = "/v1/admin/offers/{offer_id}/deactivate", tag = "admin",
    security(("bearer" = [])),
    params(("offer_id" = String, Path, description = "Offer UUID")),
    responses((status = 204), (status = 401), (status = 403), (status = 404)))]
async fn deactivate_offer(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id: OfferId = path_id(&id)?;
    st.lodge
        .set_catalog_item_active(CatalogItem::Offer(id), false)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Coupon {
    pub id: String,
    /// Its numeric id, the `couponCode` of an `/apiv2` quote that applies it.
    pub legacy_id: i64,
    pub code: String,
    /// `percent`, `fixed_amount` or `fixed_price` (InterServer types 1, 2, 3).
    pub kind: String,
    /// A percentage or an amount, as a decimal string.
    pub value: String,
    pub recurring: bool,
    pub plan_id: Option<String>,
    pub max_uses: Option<i64>,
    pub uses: i64,
    #[schema(format = DateTime)]
    pub expires: Option<String>,
    pub is_active: bool,
    /// The billing cycles it applies to; `null`: every cycle.
    pub cycles: Option<Vec<String>>,
}

fn coupons(c: &lodge_services::catalog::Catalog) -> Vec<Coupon> {
    c.coupons
        .iter()
        .map(|x| Coupon {
            id: x.id.to_string(),
            legacy_id: x.legacy_id,
            code: x.code.clone(),
            kind: match x.kind {
                1 => "percent",
                2 => "fixed_amount",
                _ => "fixed_price",
            }
            .to_owned(),
            value: if x.kind == 1 {
                format!("{}.{:02}", x.value / 100, x.value % 100)
            } else {
                wire::money_str(x.value, c.currency)
            },
            recurring: x.recurring == 1,
            plan_id: x.plan_id.clone(),
            max_uses: x.max_uses,
            uses: x.uses,
            expires: wire::ts_opt(x.expires_at),
            is_active: x.is_active == 1,
            cycles: x
                .cycles
                .as_ref()
                .map(|list| list.split(',').map(str::to_owned).collect()),
        })
        .collect()
}

/// Every coupon.
#[utoipa::path(get, path = "/v1/admin/coupons", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Vec<Coupon>), (status = 400, description = "A query parameter it does not take"), (status = 401), (status = 403)))]
async fn list_coupons(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    _: crate::extract::OnlyParams<crate::extract::NoParams>,
) -> ApiResult<Json<Vec<Coupon>>> {
    // Uses move with every order, not with the catalog's version: read them as they are.
    Ok(Json(coupons(&*st.lodge.catalog_uncached().await?)))
}

/// Creates or updates (by code) a coupon.
#[utoipa::path(post, path = "/v1/admin/coupons", tag = "admin", security(("bearer" = [])),
    request_body = CouponSpec,
    responses((status = 200, body = Coupon), (status = 400), (status = 401), (status = 403)))]
async fn upsert_coupon(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    V1Json(cs): V1Json<CouponSpec>,
) -> ApiResult<Json<Coupon>> {
    let code = cs.code.clone();
    st.lodge
        .import_catalog_item(&CatalogFile {
            coupons: vec![cs],
            ..Default::default()
        })
        .await?;
    // The coupon the code names, whatever its case (kept as first written).
    let catalog = st.lodge.catalog().await?;
    let id = catalog.coupon(&code).map(|c| c.id.to_string());
    coupons(&catalog)
        .into_iter()
        .find(|c| Some(&c.id) == id.as_ref())
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

/// Deactivates a coupon.
#[utoipa::path(post, path = "/v1/admin/coupons/{coupon_id}/deactivate", tag = "admin",
    security(("bearer" = [])),
    params(("coupon_id" = String, Path, description = "Coupon UUID")),
    responses((status = 204), (status = 401), (status = 403), (status = 404)))]
async fn deactivate_coupon(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id: CouponId = path_id(&id)?;
    st.lodge
        .set_catalog_item_active(CatalogItem::Coupon(id), false)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every TLD with its prices.
#[utoipa::path(get, path = "/v1/admin/tlds", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Vec<TldInfo>), (status = 400, description = "A query parameter it does not take"), (status = 401), (status = 403)))]
async fn list_tlds(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    _: crate::extract::OnlyParams<crate::extract::NoParams>,
) -> ApiResult<Json<Vec<TldInfo>>> {
    Ok(Json(wire::tlds(&*st.lodge.catalog().await?)))
}

/// Creates or updates a TLD and its price table.
#[utoipa::path(post, path = "/v1/admin/tlds", tag = "admin", security(("bearer" = [])),
    request_body = TldSpec,
    responses((status = 200, body = TldInfo), (status = 400), (status = 401), (status = 403)))]
async fn upsert_tld(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    V1Json(t): V1Json<TldSpec>,
) -> ApiResult<Json<TldInfo>> {
    let name = t.tld.trim().trim_start_matches('.').to_lowercase();
    st.lodge
        .import_catalog_item(&CatalogFile {
            tlds: vec![t],
            ..Default::default()
        })
        .await?;
    wire::tlds(&*st.lodge.catalog().await?)
        .into_iter()
        .find(|x| x.tld == name)
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

/// Opens or closes a TLD for sale.
#[utoipa::path(post, path = "/v1/admin/tlds/{tld}/active", tag = "admin",
    security(("bearer" = [])),
    params(("tld" = String, Path, description = "The TLD, e.g. com")),
    request_body = Activation,
    responses((status = 204), (status = 401), (status = 403), (status = 404)))]
async fn set_tld_active(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    Path(tld): Path<String>,
    V1Json(b): V1Json<Activation>,
) -> ApiResult<StatusCode> {
    st.lodge
        .set_catalog_item_active(CatalogItem::Tld(&tld.to_lowercase()), b.is_active)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
