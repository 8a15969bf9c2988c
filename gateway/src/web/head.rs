//! Editing a request or response head as plain `http` parts.
//!
//! pingora's `RequestHeader` keeps a second map with each header name's original spelling, and
//! its `insert_header` parses the name afresh, allocates it (twice for a name `http` does not
//! know) and updates both maps: about 1.7k instructions per header, the largest single share
//! of the gateway's own work on a proxied request (benches/README.md). [`edit_request`] takes
//! the parts out, lets the caller edit a plain `HeaderMap` with names built once, and puts
//! them back without the spelling map. Header names then go on the wire the way HTTP/2 always
//! sends them: standard ones title-cased (`Host`, `Content-Type`), others lower-case; HTTP
//! header names are case-insensitive (RFC 9110 §5.1).

use http::request::Parts;
use pingora::http::{RequestHeader, ResponseHeader};

/// Runs `edit` on `req`'s parts and puts them back, without the header spelling map.
///
/// The request target survives as it was: one that does not round-trip through the `Uri`
/// (not UTF-8, or absolute-form) is put back byte for byte.
pub fn edit_request<T>(req: &mut RequestHeader, edit: impl FnOnce(&mut Parts) -> T) -> T {
    let uri_target = req
        .uri
        .path_and_query()
        .map_or(&b""[..], |pq| pq.as_str().as_bytes());
    let kept_target = (req.raw_path() != uri_target).then(|| req.raw_path().to_vec());
    let send_end_stream = req.send_end_stream();

    let placeholder = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts: Parts = std::mem::replace(req, placeholder).into();
    let result = edit(&mut parts);
    *req = RequestHeader::from(parts);

    if let Some(target) = kept_target {
        // The same bytes pingora accepted when it read the request: this cannot fail, and if
        // it did, the target would stay the `Uri`'s rendering of it, which is valid too.
        if let Err(e) = req.set_raw_path(&target) {
            log::warn!("request target could not be restored: {e}");
        }
    }
    if let Some(end) = send_end_stream {
        req.set_send_end_stream(end);
    }
    result
}

/// [`edit_request`] for a response: the app's headers reach the client with the same spelling
/// rule, and a reason phrase of the app's own (`200 Fine`) is kept.
pub fn edit_response<T>(
    resp: &mut ResponseHeader,
    edit: impl FnOnce(&mut http::response::Parts) -> T,
) -> T {
    let own_reason = resp
        .get_reason_phrase()
        .filter(|reason| Some(*reason) != resp.status.canonical_reason())
        .map(str::to_string);

    let placeholder = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts: http::response::Parts = std::mem::replace(resp, placeholder).into();
    let result = edit(&mut parts);
    *resp = ResponseHeader::from(parts);

    if own_reason.is_some() {
        // Accepted by pingora when it read the response; it validates nothing more here.
        if let Err(e) = resp.set_reason_phrase(own_reason.as_deref()) {
            log::warn!("reason phrase could not be restored: {e}");
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    fn wire(req: &RequestHeader) -> String {
        let mut buf = bytes::BytesMut::new();
        req.header_to_h1_wire(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }

    #[test]
    fn headers_edited_as_parts_reach_the_wire_and_the_rest_is_kept() {
        let mut req = RequestHeader::build("POST", b"/reports?year=2024", None).unwrap();
        req.append_header("Host", "gw.example").unwrap();
        req.append_header("X-Custom", "a").unwrap();
        req.append_header("x-custom", "b").unwrap();
        req.append_header("Cookie", "app=1").unwrap();
        edit_request(&mut req, |parts| {
            parts.headers.remove(http::header::COOKIE);
            parts.headers.insert(
                HeaderName::from_static("x-auth-user"),
                HeaderValue::from_static("alice"),
            );
        });
        assert!(!req.has_case());
        assert_eq!(req.method, http::Method::POST);
        assert_eq!(req.raw_path(), b"/reports?year=2024");
        let text = wire(&req);
        assert!(text.contains("Host: gw.example\r\n"), "{text}");
        assert!(text.contains("x-custom: a\r\nx-custom: b\r\n"), "{text}");
        assert!(text.contains("x-auth-user: alice\r\n"), "{text}");
        assert!(!text.to_ascii_lowercase().contains("cookie"), "{text}");
    }

    #[test]
    fn a_target_the_uri_cannot_hold_goes_on_byte_for_byte() {
        for target in [
            &b"/caf\xe9?q=\xff"[..],
            b"http://other.example/x?y=1",
            b"*",
            b"/plain",
        ] {
            let mut req = RequestHeader::build("GET", target, None).unwrap();
            let before = req.raw_path().to_vec();
            let uri_before = req.uri.clone();
            edit_request(&mut req, |_| ());
            assert_eq!(
                req.raw_path(),
                before,
                "{}",
                String::from_utf8_lossy(target)
            );
            assert_eq!(req.uri, uri_before);
        }
    }

    #[test]
    fn a_response_keeps_its_status_reason_and_headers() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.set_reason_phrase(Some("Fine")).unwrap();
        resp.append_header("X-Frame-Options", "DENY").unwrap();
        resp.append_header("Set-Cookie", "a=1").unwrap();
        resp.append_header("Set-Cookie", "b=2").unwrap();
        edit_response(&mut resp, |parts| {
            parts.headers.insert(
                HeaderName::from_static("x-request-id"),
                HeaderValue::from_static("r1"),
            );
        });
        assert_eq!(resp.status, 200);
        assert_eq!(resp.get_reason_phrase(), Some("Fine"));
        let mut buf = bytes::BytesMut::new();
        resp.header_to_h1_wire(&mut buf);
        let text = String::from_utf8_lossy(&buf).into_owned();
        assert!(text.contains("x-frame-options: DENY\r\n"), "{text}");
        assert!(
            text.contains("Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n"),
            "{text}"
        );
        assert!(text.contains("x-request-id: r1\r\n"), "{text}");

        let mut plain = ResponseHeader::build(404, None).unwrap();
        edit_response(&mut plain, |_| ());
        assert_eq!(plain.get_reason_phrase(), Some("Not Found"));
    }
}
