//! Answers the gateway writes itself (login pages, redirects, JSON errors, 503s), as plain
//! values: proxy.rs sends them; tests read them.

use bytes::Bytes;

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

impl Reply {
    pub fn new(status: u16, content_type: &str, body: impl Into<Bytes>) -> Reply {
        Reply {
            status,
            headers: vec![("content-type", content_type.to_string())],
            body: body.into(),
        }
    }

    pub fn html(status: u16, body: String) -> Reply {
        Reply::new(status, "text/html; charset=utf-8", body).header(
            // Gateway pages never load anything from elsewhere and must not be framed.
            "content-security-policy",
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        )
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Reply {
        Reply::new(status, "application/json", value.to_string())
    }

    /// `{"error": code, "message": message}`.
    pub fn json_error(status: u16, code: &str, message: &str) -> Reply {
        Reply::json(status, &error_body(code, message))
    }

    pub fn redirect(status: u16, location: &str) -> Reply {
        Reply::new(status, "text/plain; charset=utf-8", Bytes::new()).header("location", location)
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

/// The JSON body of every error the gateway answers, on both listeners: `code` is fixed for
/// programs, `message` is for people.
pub fn error_body(code: &str, message: &str) -> serde_json::Value {
    serde_json::json!({ "error": code, "message": message })
}
