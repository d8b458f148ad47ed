//! The protocols every node runs: ping and address exchange. Everything
//! else is a service in a crate of its own (see [`crate::service`]).

pub mod address;
pub mod ping;
