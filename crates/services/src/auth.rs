//! Credentials: API keys (SHA-256 digests of high-entropy secrets), passwords (argon2id),
//! JWT access/refresh tokens, `/apiv2` sessions, and what a caller may do in an organization.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use lodge_core::{ApiKeyId, OrganizationId, ProjectId, UserId};
use lodge_store::{keys, orgs, tokens, users, StoreError};
use rand::distributions::Alphanumeric;
use rand::Rng;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Lodge, Result, ServiceError};

/// A role inside an organization, weakest last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Owner,
    Editor,
    Viewer,
    Guest,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "owner" => Some(Role::Owner),
            "editor" => Some(Role::Editor),
            "viewer" => Some(Role::Viewer),
            "guest" => Some(Role::Guest),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Editor => "editor",
            Role::Viewer => "viewer",
            Role::Guest => "guest",
        }
    }
    /// May order, create projects and manage resources.
    pub fn can_write(self) -> bool {
        matches!(self, Role::Owner | Role::Editor)
    }
    /// May manage billing, keys and members.
    pub fn is_owner(self) -> bool {
        self == Role::Owner
    }
}

/// What a key may be used for.
pub const SCOPES: [&str; 3] = ["read", "write", "admin"];
pub const DEFAULT_SCOPES: &str = "read write";

/// How the caller proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    ApiKey(ApiKeyId),
    Jwt,
    Session,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: UserId,
    pub is_staff: bool,
    pub credential: Credential,
    /// A key issued for one organization can only reach that one.
    pub organization: Option<OrganizationId>,
    pub scopes: Vec<String>,
    /// A stable id for rate limiting.
    pub rate_key: String,
}

impl Principal {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// The caller's standing in one organization.
#[derive(Debug, Clone)]
pub struct Access {
    pub organization: OrganizationId,
    pub role: Role,
    principal: Principal,
    /// The role is staff's (an operator acting as the owner of an organization it is not
    /// a member of), not a membership's.
    as_operator: bool,
}

impl Access {
    /// Who acts, as the history, ledger and events record it: `staff:<user>` for staff
    /// acting through a customer route as the operator (the customer sees `staff`), else
    /// `user:<user>` (found by the staff audit: a plan change made by staff was recorded
    /// and shown to the customer as a user's, with the staff member's id).
    pub fn actor(&self) -> String {
        if self.as_operator {
            format!("staff:{}", self.principal.user)
        } else {
            format!("user:{}", self.principal.user)
        }
    }

    /// Staff acting through a customer route as the operator.
    pub fn as_operator(&self) -> bool {
        self.as_operator
    }

    /// `403` unless the caller may change things here (also guarding a few reads only
    /// writers make, as a domain's transfer code: the words fit both).
    pub fn require_write(&self) -> Result<()> {
        if !self.role.can_write() {
            return Err(ServiceError::Forbidden(format!(
                "Your role ({}) may not do this: it is for the organization's owners and editors.",
                self.role.as_str()
            )));
        }
        if !self.principal.has_scope("write") {
            return Err(ServiceError::Forbidden(
                "This API key is read-only (it has no write scope): it may not do this.".to_owned(),
            ));
        }
        Ok(())
    }

    /// `403` unless the caller owns the organization (billing, keys, members), with a key
    /// that may write: the role is said first (found by the authorization audit: a viewer
    /// listing keys was told it "may read").
    pub fn require_owner(&self) -> Result<()> {
        if !self.role.is_owner() {
            return Err(ServiceError::Forbidden(
                "Only an owner of the organization may do this.".to_owned(),
            ));
        }
        self.require_write()
    }

    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// `403` for a guest: it sees only the projects it was added to, not what is the whole
    /// organization's (its invoices, its credit, its account as `/apiv2` shows it).
    pub fn require_org_wide(&self) -> Result<()> {
        if self.role == Role::Guest {
            return Err(ServiceError::Forbidden(
                "A guest sees only the projects it was added to, not the organization's billing or account.".to_owned(),
            ));
        }
        Ok(())
    }

    /// Guests see only the projects they were added to.
    pub fn guest_user(&self) -> Option<UserId> {
        (self.role == Role::Guest).then_some(self.principal.user)
    }
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn random_token(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut rand::thread_rng());
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ServiceError::Internal(format!("password hashing failed: {e}")))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    typ: String,
    iat: i64,
    exp: i64,
    jti: String,
    /// A refresh token's family (the chain that began at one login), and an access token's
    /// issued with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fam: Option<String>,
}

/// A pair of tokens from login or refresh.
#[derive(Debug, Clone, Serialize)]
pub struct TokenPair {
    pub access: String,
    pub refresh: String,
}

/// A freshly issued API key: the secret is only ever available here.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub row: keys::ApiKeyRow,
    pub secret: String,
}

pub struct NewKey<'a> {
    pub name: &'a str,
    pub user: UserId,
    pub organization: Option<OrganizationId>,
    pub scopes: Option<&'a str>,
    /// Unix microseconds.
    pub expires_at: Option<i64>,
}

impl Lodge {
    /// Resolves a bearer token (an API key or a JWT access token).
    pub async fn authenticate_bearer(&self, token: &str) -> Result<Principal> {
        if token.split('.').count() == 3 && !token.starts_with(&self.settings.key_prefix) {
            return self.authenticate_jwt(token).await;
        }
        self.authenticate_key(token).await
    }

    pub async fn authenticate_key(&self, secret: &str) -> Result<Principal> {
        let unauthorized = || ServiceError::Unauthorized("Invalid API key.".to_owned());
        if secret.is_empty() || secret.len() > 256 {
            return Err(unauthorized());
        }
        let digest = sha256_hex(secret);
        let (mut key, user) = match self.key_cache.get(&digest) {
            Some(hit) => hit,
            None => {
                let key = keys::by_digest(self.store.reader(), &digest)
                    .await?
                    .ok_or_else(unauthorized)?;
                let user = users::by_id(self.store.reader(), key.user_id)
                    .await?
                    .ok_or_else(unauthorized)?;
                self.key_cache.put(&digest, &key, &user);
                (key, user)
            }
        };
        let now = self.now_us();
        if key.revoked_at.is_some() {
            return Err(ServiceError::Unauthorized(
                "This API key has been revoked.".to_owned(),
            ));
        }
        if key.expires_at.is_some_and(|e| e <= now) {
            return Err(ServiceError::Unauthorized(
                "This API key has expired.".to_owned(),
            ));
        }
        if !user.is_active() {
            return Err(unauthorized());
        }
        // Record use at most once a minute per key, off the request's path.
        if key.last_used_at.is_none_or(|t| now - t > 60_000_000) {
            key.last_used_at = Some(now);
            self.key_cache.put(&digest, &key, &user);
            let store = self.store.clone();
            let id = key.id;
            tokio::spawn(async move {
                if let Err(e) = keys::touch(store.writer(), id, now).await {
                    tracing::warn!(error = %e, "could not record API key use");
                }
            });
        }
        Ok(Principal {
            user: user.id,
            is_staff: user.is_staff(),
            credential: Credential::ApiKey(key.id),
            organization: key.organization()?,
            // An organization's key never carries the admin scope, whatever was stored (an
            // older CLI issued such keys: found by the re-audit).
            scopes: key
                .scopes
                .split_whitespace()
                .filter(|s| key.organization_id.is_none() || *s != "admin")
                .map(str::to_owned)
                .collect(),
            rate_key: format!("key:{}", key.id),
        })
    }

    async fn authenticate_jwt(&self, token: &str) -> Result<Principal> {
        let claims = self.decode_jwt(token, "access")?;
        let user = self.active_user(&claims.sub).await?;
        // A token issued before the user's sessions ended (a new password, a deactivation)
        // is over too (found by the secrets audit: it stayed good for its 15 minutes, and
        // came back when the user was reactivated). `iat` is in seconds: a token issued
        // earlier in the same second as the change is let through.
        if claims.iat < user.tokens_after.div_euclid(1_000_000) {
            return Err(ServiceError::Unauthorized(
                "Invalid or expired token.".to_owned(),
            ));
        }
        // Nor is one of a login whose refresh tokens were revoked (one used twice: stolen),
        // rather than good for the rest of its 15 minutes (found by the attacker's audit).
        if let Some(family) = &claims.fam {
            let mut db = self.store.read_conn().await?;
            if tokens::family_revoked(&mut db, family).await? {
                return Err(ServiceError::Unauthorized(
                    "Invalid or expired token.".to_owned(),
                ));
            }
        }
        Ok(Principal {
            user: user.id,
            is_staff: user.is_staff(),
            credential: Credential::Jwt,
            organization: None,
            scopes: SCOPES
                .iter()
                .filter(|s| **s != "admin" || user.is_staff())
                .map(|s| (*s).to_owned())
                .collect(),
            rate_key: format!("user:{}", user.id),
        })
    }

    async fn active_user(&self, id: &str) -> Result<users::UserRow> {
        let unauthorized = || ServiceError::Unauthorized("Invalid token.".to_owned());
        let id: UserId = id.parse().map_err(|_| unauthorized())?;
        users::by_id(self.store.reader(), id)
            .await?
            .filter(|u| u.is_active())
            .ok_or_else(unauthorized)
    }

    fn decode_jwt(&self, token: &str, typ: &str) -> Result<Claims> {
        let unauthorized = || ServiceError::Unauthorized("Invalid or expired token.".to_owned());
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked against Lodge's clock below, not the system's.
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let key = DecodingKey::from_secret(self.settings.jwt_secret.expose_secret().as_bytes());
        let data =
            jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|_| unauthorized())?;
        let now = self.clock.now().as_second();
        if data.claims.typ != typ || data.claims.exp <= now {
            return Err(unauthorized());
        }
        Ok(data.claims)
    }

    fn claims(&self, user: UserId, typ: &str, ttl: i64, fam: Option<String>) -> Claims {
        let now = self.clock.now().as_second();
        Claims {
            sub: user.to_string(),
            typ: typ.to_owned(),
            iat: now,
            exp: now + ttl,
            jti: random_token(16),
            fam,
        }
    }

    fn sign(&self, claims: &Claims) -> Result<String> {
        let key = EncodingKey::from_secret(self.settings.jwt_secret.expose_secret().as_bytes());
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key)
            .map_err(|e| ServiceError::Internal(format!("token signing failed: {e}")))
    }

    /// Checks a user's password; the same answer for an unknown email and a bad password.
    pub async fn check_password(&self, email: &str, password: &str) -> Result<users::UserRow> {
        let refused = || ServiceError::Unauthorized("Invalid email or password.".to_owned());
        let user = users::by_email(self.store.reader(), &email.trim().to_lowercase())
            .await?
            .filter(|u| u.is_active());
        let Some(user) = user else {
            // Spend the same time as a real check so timing does not reveal accounts.
            let _ = hash_password(password);
            return Err(refused());
        };
        let ok = match user.password_hash.as_deref() {
            Some(h) => verify_password(password, h),
            // A user without a password (API keys only) takes as long to refuse as any
            // other (found by the security audit: 0.3 ms against 22, which told such
            // accounts apart).
            None => {
                let _ = hash_password(password);
                false
            }
        };
        if ok {
            Ok(user)
        } else {
            Err(refused())
        }
    }

    /// `POST /v1/auth/login`.
    pub async fn login(&self, email: &str, password: &str) -> Result<TokenPair> {
        let user = self.check_password(email, password).await?;
        let mut tx = self.store.begin().await?;
        let pair = self.token_pair(&mut *tx, user.id, random_token(16)).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(pair)
    }

    /// `POST /v1/auth/refresh`: a refresh token works once and gives the next pair of its
    /// family. A token of the family used again (stolen, or replayed) revokes the whole
    /// family: whoever holds its newest token must log in again. Of two refreshes with one
    /// token at once, one wins; the other counts as a reuse.
    pub async fn refresh(&self, refresh: &str) -> Result<TokenPair> {
        let unauthorized = || ServiceError::Unauthorized("Invalid or expired token.".to_owned());
        let claims = self.decode_jwt(refresh, "refresh")?;
        let user = self.active_user(&claims.sub).await?;
        let now = self.now_us();
        let mut tx = self.store.begin().await?;
        let Some(row) = tokens::get(&mut *tx, &claims.jti).await? else {
            return Err(unauthorized());
        };
        if row.user_id != user.id || row.expires_at <= now {
            return Err(unauthorized());
        }
        if !tokens::use_once(&mut *tx, &claims.jti, now).await? {
            let revoked = tokens::revoke_family(&mut *tx, &row.family).await?;
            tx.commit().await.map_err(StoreError::from)?;
            tracing::warn!(
                user = %user.id,
                revoked,
                "a refresh token was used twice: its family is revoked"
            );
            return Err(unauthorized());
        }
        let pair = self.token_pair(&mut *tx, user.id, row.family).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(pair)
    }

    /// A new access token and the next refresh token of `family` (recorded live).
    async fn token_pair<C: lodge_store::SqlConn>(
        &self,
        conn: &mut C,
        user: UserId,
        family: String,
    ) -> Result<TokenPair> {
        let refresh = self.claims(
            user,
            "refresh",
            self.settings.refresh_ttl_secs,
            Some(family.clone()),
        );
        tokens::insert(
            conn,
            &refresh.jti,
            &family,
            user,
            refresh.exp.saturating_mul(1_000_000),
            self.now_us(),
        )
        .await?;
        // The access token names its family too, so that revoking the family ends it.
        let access = self.claims(user, "access", self.settings.access_ttl_secs, Some(family));
        Ok(TokenPair {
            access: self.sign(&access)?,
            refresh: self.sign(&refresh)?,
        })
    }

    /// `POST /apiv2/login`: a session id for the `sessionid` header, acting for the login's
    /// home organization ([`home_organization`]) from now on, whatever its memberships
    /// become (a change of account takes a new login); `None`, and no session made, when the
    /// login has no account to act for (none, or only as a guest, which sees none).
    pub async fn open_session(
        &self,
        email: &str,
        password: &str,
    ) -> Result<(users::UserRow, Option<(String, orgs::OrgRow)>)> {
        let user = self.check_password(email, password).await?;
        let organizations = orgs::for_user(self.store.reader(), user.id).await?;
        let Some(home) = home_organization(&organizations)
            .filter(|o| o.member_role.as_deref() != Some("guest"))
            .cloned()
        else {
            return Ok((user, None));
        };
        let secret = random_token(48);
        let now = self.now_us();
        keys::insert_session(
            self.store.writer(),
            &sha256_hex(&secret),
            user.id,
            home.id,
            now + self.settings.session_ttl_secs * 1_000_000,
            now,
        )
        .await?;
        Ok((user, Some((secret, home))))
    }

    pub async fn authenticate_session(&self, session: &str) -> Result<Principal> {
        let unauthorized = || ServiceError::Unauthorized("Invalid or expired session.".to_owned());
        if session.is_empty() || session.len() > 256 {
            return Err(unauthorized());
        }
        let digest = sha256_hex(session);
        let (user, organization) = keys::session_user(self.store.reader(), &digest, self.now_us())
            .await?
            .ok_or_else(unauthorized)?;
        let user = self.active_user(&user.to_string()).await?;
        Ok(Principal {
            user: user.id,
            is_staff: user.is_staff(),
            credential: Credential::Session,
            // The account it was opened for (found by the upgrade audit: chosen again on
            // every request, it switched accounts when the memberships changed).
            organization,
            scopes: vec!["read".to_owned(), "write".to_owned()],
            rate_key: format!("session:{}", &digest[..16]),
        })
    }

    pub async fn close_session(&self, session: &str) -> Result<()> {
        keys::revoke_session(self.store.writer(), &sha256_hex(session), self.now_us()).await?;
        Ok(())
    }

    /// The caller's role in `org`, or `NotFound` when it has none (existence is not revealed).
    pub async fn access(&self, p: &Principal, org: OrganizationId) -> Result<Access> {
        let mut db = self.store.read_conn().await?;
        self.access_on(&mut db, p, org).await
    }

    async fn access_on<C: lodge_store::SqlConn>(
        &self,
        db: &mut C,
        p: &Principal,
        org: OrganizationId,
    ) -> Result<Access> {
        if p.organization.is_some_and(|o| o != org) {
            return Err(ServiceError::NotFound);
        }
        let role = orgs::role_of(db, org, p.user).await?;
        if role.is_none() && self.is_operator(p) && !orgs::exists(db, org).await? {
            return Err(ServiceError::NotFound);
        }
        Ok(Access {
            organization: org,
            as_operator: role.is_none(),
            role: self.role_or_staff(p, role)?,
            principal: p.clone(),
        })
    }

    /// Staff with the admin scope act as owners of every organization.
    fn is_operator(&self, p: &Principal) -> bool {
        p.is_staff && p.has_scope("admin")
    }

    /// The caller's role from its membership (`None`: none) in an organization that exists:
    /// an operator without one acts as its owner; anyone else is not shown it.
    fn role_or_staff(&self, p: &Principal, membership: Option<String>) -> Result<Role> {
        match membership {
            Some(r) => {
                Role::parse(&r).ok_or_else(|| ServiceError::Internal(format!("unknown role {r:?}")))
            }
            None if self.is_operator(p) => Ok(Role::Owner),
            None => Err(ServiceError::NotFound),
        }
    }

    /// The caller's organization as an `/apiv2` customer: the key's organization, or the
    /// user's home one ([`home_organization`]).
    pub async fn customer_access(&self, p: &Principal) -> Result<Access> {
        let org = match p.organization {
            Some(o) => o,
            None => home_organization(&orgs::for_user(self.store.reader(), p.user).await?)
                .map(|o| o.id)
                .ok_or_else(|| {
                    ServiceError::Unauthorized("This login has no customer account.".to_owned())
                })?,
        };
        // `/apiv2` shows and bills the whole account: not a guest's.
        let access = match self.access(p, org).await {
            // A session whose user left the account it was opened for.
            Err(ServiceError::NotFound) if matches!(p.credential, Credential::Session) => {
                return Err(ServiceError::Unauthorized(
                    "This login no longer has access to the account it was opened for: log in \
                     again."
                        .to_owned(),
                ))
            }
            access => access?,
        };
        access.require_org_wide()?;
        Ok(access)
    }

    /// Access to a project of `org`: `NotFound` for another organization's project or, for a
    /// guest, a project it was not added to.
    pub async fn project_access(
        &self,
        p: &Principal,
        org: OrganizationId,
        project: ProjectId,
    ) -> Result<(Access, orgs::ProjectRow)> {
        if p.organization.is_some_and(|o| o != org) {
            return Err(ServiceError::NotFound);
        }
        // The project and the caller's role in one read (a guest's project membership is a
        // second): no project there or no role answer the same.
        let mut db = self.store.read_conn().await?;
        let (role, row) = orgs::project_with_role(&mut db, org, project, p.user)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let access = Access {
            organization: org,
            as_operator: role.is_none(),
            role: self.role_or_staff(p, role)?,
            principal: p.clone(),
        };
        if let Some(guest) = access.guest_user() {
            if !orgs::is_project_member(&mut db, project, guest).await? {
                return Err(ServiceError::NotFound);
            }
        }
        Ok((access, row))
    }

    /// Staff-only operations (the admin API, the operator's CLI acts as staff directly).
    pub fn require_staff(&self, p: &Principal) -> Result<()> {
        if self.is_operator(p) {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(
                "This endpoint is for staff credentials only.".to_owned(),
            ))
        }
    }

    /// Issues an API key. The secret is returned once and only its digest is stored.
    pub async fn create_key(&self, k: NewKey<'_>) -> Result<IssuedKey> {
        let mut v = crate::Validator::new();
        let name = k.name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            v.add("name", "A name of 1 to 100 characters is required.");
        } else {
            v.line("name", name, 100);
        }
        let scopes = k.scopes.unwrap_or(DEFAULT_SCOPES);
        let mut scopes: Vec<&str> = scopes
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .collect();
        // Each once, in the order given.
        let mut seen = std::collections::BTreeSet::new();
        scopes.retain(|s| seen.insert(*s));
        if scopes.is_empty() {
            v.add("scopes", "At least one scope is required.");
        } else if !scopes.contains(&"read") {
            // Every key reads what it may change (an order's answer is the order): a key
            // without `read` would read all the same (found by the authorization audit).
            v.add(
                "scopes",
                "Every key has the read scope: give [\"read\"] or [\"read\", \"write\"].",
            );
        }
        for s in &scopes {
            if !SCOPES.contains(s) {
                v.add(
                    "scopes",
                    format!("Unknown scope {s:?}: use read, write or admin."),
                );
            }
        }
        let now = self.now_us();
        if k.expires_at.is_some_and(|e| e <= now) {
            v.add("expires", "The expiry must be in the future.");
        }
        v.finish()?;
        let secret = format!("{}{}", self.settings.key_prefix, random_token(40));
        let display_prefix: String = secret
            .chars()
            .take(self.settings.key_prefix.len() + 6)
            .collect();
        let mut conn = self.store.write_conn().await?;
        let row = keys::insert(
            &mut conn,
            &keys::NewApiKey {
                id: ApiKeyId::new(),
                digest: &sha256_hex(&secret),
                display_prefix: &display_prefix,
                name,
                user_id: k.user,
                organization_id: k.organization,
                scopes: &scopes.join(" "),
                expires_at: k.expires_at,
                now,
            },
        )
        .await?;
        Ok(IssuedKey { row, secret })
    }

    /// Creates a key in an organization as its owner (CLI and `/v1` key creation).
    pub async fn create_org_key(
        &self,
        org: OrganizationId,
        user: Option<UserId>,
        name: &str,
        scopes: Option<&str>,
        expires_at: Option<i64>,
    ) -> Result<IssuedKey> {
        let user = match user {
            Some(u) => u,
            None => match orgs::first_owner(self.store.reader(), org).await? {
                Some(owner) => owner,
                None if !orgs::exists(&mut self.store.read_conn().await?, org).await? => {
                    return Err(ServiceError::field("organization", "No such organization."))
                }
                None => {
                    return Err(ServiceError::field(
                        "organization",
                        "This organization has no owner to hold the key.",
                    ))
                }
            },
        };
        if orgs::role_of(&mut self.store.read_conn().await?, org, user)
            .await?
            .is_none()
        {
            return Err(ServiceError::field(
                "user",
                "That user is not a member of the organization.",
            ));
        }
        // An organization's key acts for that organization only: the admin API's scope is
        // for staff keys (found by the operator audit: the CLI issued one).
        if scopes.is_some_and(|s| {
            s.split(|c: char| c == ',' || c.is_whitespace())
                .any(|x| x.eq_ignore_ascii_case("admin"))
        }) {
            return Err(ServiceError::field(
                "scopes",
                "An organization's key takes read and write; admin is for staff keys (lodge keys create-staff).",
            ));
        }
        self.create_key(NewKey {
            name,
            user,
            organization: Some(org),
            scopes,
            expires_at,
        })
        .await
    }

    /// Staff: the keys of an organization (`Some`) or the staff keys (`None`), oldest
    /// first, revoked ones too.
    pub async fn keys_of(&self, org: Option<OrganizationId>) -> Result<Vec<keys::ApiKeyRow>> {
        Ok(keys::list(self.store.reader(), org).await?)
    }

    /// Staff: revokes any key by its id (`lodge keys revoke`), a staff key too.
    pub async fn revoke_any_key(&self, id: ApiKeyId) -> Result<keys::ApiKeyRow> {
        let mut conn = self.store.write_conn().await?;
        keys::by_id(&mut *conn, id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        keys::revoke(&mut conn, id, self.now_us()).await?;
        self.key_cache.forget_key(id);
        keys::by_id(&mut *conn, id)
            .await?
            .ok_or(ServiceError::NotFound)
    }

    pub async fn revoke_key(&self, access: &Access, id: ApiKeyId) -> Result<keys::ApiKeyRow> {
        access.require_owner()?;
        let key = keys::by_id_in_org(self.store.reader(), access.organization, id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let mut conn = self.store.write_conn().await?;
        keys::revoke(&mut conn, id, self.now_us()).await?;
        self.key_cache.forget_key(id);
        Ok(key)
    }
}

type CachedKeys =
    std::collections::HashMap<String, (keys::ApiKeyRow, users::UserRow, std::time::Instant)>;

/// Recently checked API keys, so a busy key does not cost two queries per request. Entries
/// live [`KeyCache::TTL`]: a revocation takes effect at once on the node that made it (the
/// entry is dropped) and within that time on the others.
#[derive(Debug, Default, Clone)]
pub struct KeyCache {
    inner: std::sync::Arc<std::sync::Mutex<CachedKeys>>,
}

impl KeyCache {
    pub const TTL: std::time::Duration = std::time::Duration::from_secs(2);
    const MAX_ENTRIES: usize = 10_000;

    fn get(&self, digest: &str) -> Option<(keys::ApiKeyRow, users::UserRow)> {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.get(digest)
            .filter(|(_, _, at)| at.elapsed() < Self::TTL)
            .map(|(k, u, _)| (k.clone(), u.clone()))
    }

    fn put(&self, digest: &str, key: &keys::ApiKeyRow, user: &users::UserRow) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= Self::MAX_ENTRIES {
            map.retain(|_, (_, _, at)| at.elapsed() < Self::TTL);
            if map.len() >= Self::MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(
            digest.to_owned(),
            (key.clone(), user.clone(), std::time::Instant::now()),
        );
    }

    /// Drops a key (after its revocation).
    pub fn forget_key(&self, id: ApiKeyId) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (k, _, _)| k.id != id);
    }

    /// Drops every key of a user (deactivated, activated, or removed from an organization):
    /// this node answers from the user's new state at once.
    pub fn forget_user(&self, id: UserId) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (_, u, _)| u.id != id);
    }
}

/// The organization a user's `/apiv2` session (InterServer's client knows one account per
/// login) acts for: the one it has the most say in (owner, then editor, viewer, guest),
/// the oldest of those. The first by age alone switched a customer's whole account the day
/// staff added them to an older organization as a viewer (found by the /apiv2 audit).
pub fn home_organization(list: &[orgs::OrgRow]) -> Option<&orgs::OrgRow> {
    let rank = |o: &orgs::OrgRow| match o.member_role.as_deref().and_then(Role::parse) {
        Some(Role::Owner) => 0,
        Some(Role::Editor) => 1,
        Some(Role::Viewer) => 2,
        _ => 3,
    };
    list.iter().min_by_key(|o| (rank(o), o.legacy_id))
}
