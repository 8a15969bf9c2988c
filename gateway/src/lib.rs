//! An authentication gateway: a pingora reverse proxy that keeps sessions in Redis, serves login
//! and logout itself, and forwards only authenticated requests, with identity headers it sets,
//! to a legacy web app.
//!
//! Reading order: [`proxy`] is the request pipeline top to bottom; [`app`] holds what it needs;
//! [`routes`] are the endpoints the gateway answers itself; [`session`] is the session model and
//! its Redis store; [`config`] is the operator's file; [`errors`] says which error goes where.

pub mod admin;
pub mod app;
pub mod assertion;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod database;
pub mod env;
pub mod errors;
pub mod i18n;
pub mod identity;
pub mod metrics;
pub mod operator;
pub mod pages;
pub mod password;
pub mod proxy;
pub mod redis_conn;
pub mod routes;
pub mod server;
pub mod session;
pub mod throttle;
pub mod users;
pub mod web;

#[cfg(test)]
pub(crate) mod testing;
