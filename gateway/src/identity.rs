//! [`Identity`]: who a signed-in user is, as the credential sources establish it, the session
//! record keeps it, and the gateway tells the app (the `X-Auth-*` headers; see
//! [`crate::assertion`] for the signature over them).

/// Who a logged-in user is, as the gateway tells the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub id: String,
    pub username: String,
    pub roles: Vec<String>,
}
