//! Issue: InterServer's /apiv2 dialect.
