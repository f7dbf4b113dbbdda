//! Wire types, and nothing else: the JSON objects of the HTTP API ([`api`])
//! and the master↔worker protocol ([`wire`]). No logic lives here; the master
//! and worker convert to and from their own types at the edge.

pub mod api;
pub mod tls;
pub mod wire;
