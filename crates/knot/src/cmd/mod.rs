//! One module per `knot` subcommand.

pub(crate) mod config;
pub(crate) mod connect;
pub(crate) mod demo;
pub(crate) mod dht;
pub(crate) mod health;
pub(crate) mod id;
pub(crate) mod peers;
pub(crate) mod ping;
pub(crate) mod run;
pub(crate) mod status;
