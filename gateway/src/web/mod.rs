//! HTTP plumbing shared by the gateway's own endpoints and the proxy path: reading requests
//! ([`request`]), building answers ([`reply`]), cookies ([`cookies`]), the headers the
//! gateway owns on the way upstream ([`forward`]), and editing a request or response head as
//! plain `http` parts ([`head`]).

pub mod cookies;
pub mod forward;
pub mod head;
pub mod reply;
pub mod request;
