//! Black-box tests: bigd started in-process, talked to over real HTTP on loopback.

mod access;
mod account_data;
mod accounts;
mod ai;
mod cli;
mod common;
mod devices;
mod discovery;
mod e2ee;
mod ephemeral;
mod http_layer;
mod media;
mod presence;
mod profile;
mod push;
mod rate_limits;
mod relations;
mod restart;
mod rooms;
mod sync;
mod timeline;
mod tokens;
mod websocket;
