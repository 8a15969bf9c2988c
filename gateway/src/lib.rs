//! An authentication gateway: a pingora reverse proxy that keeps sessions in Redis, serves login
//! and logout itself, and forwards only authenticated requests, with identity headers it sets,
//! to a legacy web app.
//!
//! Reading order: [`proxy`] is the request pipeline top to bottom, and the only code that touches
//! pingora's `Session`; [`app`] wires what it needs; [`routes`] are the endpoints the gateway
//! answers itself, as plain functions; [`session`] is the session model, its store and expiry
//! rules; [`auth`] is who a user is; [`web`] is the HTTP vocabulary they share; [`config`] is
//! the operator's file; [`errors`] says which error goes where. `testing` (tests only) builds
//! the whole app over memory and a manual clock.

pub mod access;
pub mod admin;
pub mod app;
pub mod assertion;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod env;
pub mod errors;
pub mod i18n;
pub mod identity;
pub mod logs;
pub mod metrics;
pub mod operator;
pub mod pages;
pub mod proxy;
pub mod redis_conn;
pub mod reload;
pub mod routes;
pub mod server;
pub mod session;
pub mod web;

#[cfg(test)]
mod fuzz_props;
#[cfg(test)]
pub(crate) mod testing;
