//! The service's client side, all a build without training has of
//! `service`: reads through a running service, and the commands that talk
//! to one. `mod.rs` is the whole service (server, queue, workers).

pub mod client;
pub mod reader;

pub use client::{CERT_FILE, DEFAULT_PORT, TOKEN_FILE, URL_FILE};
