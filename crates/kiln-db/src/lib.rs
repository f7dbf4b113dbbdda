//! kiln-db
