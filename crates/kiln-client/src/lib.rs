//! kiln-client
