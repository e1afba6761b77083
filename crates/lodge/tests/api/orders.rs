//! Issue: ordering web hosting through /v1.
