//! HTTP plumbing shared by the gateway's own endpoints and the proxy path: reading requests
//! ([`request`]), building answers ([`reply`]), cookies ([`cookies`]), and the headers the
//! gateway owns on the way upstream ([`forward`]).

pub mod cookies;
pub mod forward;
pub mod head;
pub mod reply;
pub mod request;
