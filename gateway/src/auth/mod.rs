//! Who a user is, and how often they may guess: the users file ([`users`]), the app's own
//! user table ([`database`]), password hashes in every format a Flask app writes
//! ([`password`]), the authenticator that asks them in order with constant-cost refusals
//! ([`credentials`]), and failed-login throttling ([`throttle`]).

pub mod credentials;
pub mod database;
pub mod hashing;
pub mod password;
pub mod throttle;
pub mod users;
