//! Operations endpoints and the OpenAPI document.
