//! Issue: provisioning (worker, scheduler, servers, the nginx driver).
