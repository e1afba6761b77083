//! Black-box HTTP tests against the real server, each on SQLite and on PostgreSQL.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    dead_code
)]

mod harness;

mod apiv2;
mod checkout;
mod copy;
mod coupons;
mod demo;
mod dns;
mod epp;
mod events;
mod foundation;
mod fuzz;
mod hardening;
mod mail;
mod openapi;
mod ops;
mod orders;
mod pages;
mod panels;
mod payment_tokens;
mod plan_change;
mod provisioning;
mod races;
mod refunds;
mod registrar;
mod renewals;
mod retries;
mod scale_out;
mod shutdown_checks;
mod slow_clients;
mod stack;
mod stripe;
mod tls;
mod webhooks;
