//! Login throttling: [`lodge_services::logins`] (counts in the database, shared by every
//! node), re-exported where the HTTP layer's configuration names it.

pub use lodge_services::logins::{LoginGuard, LoginLimits};
