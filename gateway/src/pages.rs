//! The few HTML pages the gateway serves itself: login, logout confirmation, the user's session
//! list, and error pages. Plain HTML and inline CSS, no scripts, so they work under a strict CSP.
//!
//! Every page is rendered in the request's language ([`Texts`]).
//!
//! The login page may be replaced by the operator (`[login] template`): the file is HTML with
//! the placeholders `{{action}}`, `{{csrf_token}}`, `{{next}}`, `{{username}}` and `{{error}}`,
//! and, for its own words in the visitor's language, `{{lang}}`, `{{title}}`,
//! `{{username_label}}`, `{{password_label}}` and `{{submit}}`; each is substituted already
//! HTML-escaped.

use crate::i18n::Texts;

const STYLE: &str =
    "body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;background:#f4f6f8;\
color:#1d2733;margin:0;display:flex;min-height:100vh;align-items:center;justify-content:center}\
main{background:#fff;padding:2rem 2.5rem;border-radius:10px;box-shadow:0 2px 12px rgba(0,0,0,.08);\
width:100%;max-width:26rem}h1{font-size:1.4rem;margin:0 0 1.2rem}label{display:block;\
font-size:.9rem;margin:.8rem 0 .3rem}input[type=text],input[type=password]{width:100%;\
box-sizing:border-box;padding:.6rem;border:1px solid #c5ced8;border-radius:6px;font-size:1rem}\
button{margin-top:1.2rem;width:100%;padding:.7rem;border:0;border-radius:6px;background:#1f6feb;\
color:#fff;font-size:1rem;cursor:pointer}button.secondary{background:#6e7781}\
.error{background:#fde8e8;color:#9b1c1c;padding:.6rem .8rem;border-radius:6px;font-size:.9rem}\
table{width:100%;border-collapse:collapse;font-size:.85rem}td,th{text-align:left;padding:.4rem;\
border-bottom:1px solid #e5e9ee}main.wide{max-width:56rem}p.note{color:#57606a;font-size:.85rem}";

/// The default login page; an operator's template uses the same placeholders.
pub const DEFAULT_LOGIN_TEMPLATE: &str = r#"<!doctype html>
<html lang="{{lang}}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{{title}}</title><style>{{style}}</style></head>
<body><main>
<h1>{{title}}</h1>
{{error}}
<form method="post" action="{{action}}">
<input type="hidden" name="csrf_token" value="{{csrf_token}}">
<input type="hidden" name="next" value="{{next}}">
<label for="username">{{username_label}}</label>
<input type="text" id="username" name="username" value="{{username}}" autocomplete="username" autofocus required>
<label for="password">{{password_label}}</label>
<input type="password" id="password" name="password" autocomplete="current-password" required>
<button type="submit">{{submit}}</button>
</form>
</main></body></html>
"#;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

pub struct LoginPage<'a> {
    pub action: &'a str,
    pub csrf_token: &'a str,
    pub next: &'a str,
    pub username: &'a str,
    pub error: Option<&'a str>,
}

pub fn login(template: &str, texts: &Texts, page: &LoginPage) -> String {
    let error = page
        .error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    template
        .replace("{{style}}", STYLE)
        .replace("{{action}}", &escape(page.action))
        .replace("{{csrf_token}}", &escape(page.csrf_token))
        .replace("{{next}}", &escape(page.next))
        .replace("{{username}}", &escape(page.username))
        .replace("{{error}}", &error)
        .replace("{{lang}}", texts.html_lang)
        .replace("{{title}}", &escape(texts.sign_in))
        .replace("{{username_label}}", &escape(texts.username))
        .replace("{{password_label}}", &escape(texts.password))
        .replace("{{submit}}", &escape(texts.sign_in))
}

fn shell(texts: &Texts, title: &str, class: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{}</title>\
<style>{STYLE}</style></head><body><main class=\"{class}\">{body}</main></body></html>",
        escape(title),
        lang = texts.html_lang,
    )
}

/// Sign-out confirmation: `GET /logout` must not log anyone out (link prefetchers follow GETs).
pub fn logout_confirm(
    texts: &Texts,
    action: &str,
    csrf_token: &str,
    username: &str,
    sessions_path: &str,
) -> String {
    shell(
        texts,
        texts.sign_out,
        "",
        &format!(
            "<h1>{sign_out}</h1><p>{signed_in_as} <strong>{user}</strong></p>\
<form method=\"post\" action=\"{action}\"><input type=\"hidden\" name=\"csrf_token\" value=\"{token}\">\
<button type=\"submit\">{sign_out}</button></form>\
<form method=\"post\" action=\"{action}\"><input type=\"hidden\" name=\"csrf_token\" value=\"{token}\">\
<input type=\"hidden\" name=\"scope\" value=\"all\">\
<button type=\"submit\" class=\"secondary\">{everywhere}</button></form>\
<p class=\"note\"><a href=\"{sessions}\">{see_sessions}</a></p>",
            sign_out = escape(texts.sign_out),
            signed_in_as = escape(texts.signed_in_as),
            everywhere = escape(texts.sign_out_everywhere),
            see_sessions = escape(texts.see_sessions),
            user = escape(username),
            action = escape(action),
            token = escape(csrf_token),
            sessions = escape(sessions_path),
        ),
    )
}

/// One row of the user's own session list.
pub struct SessionRow {
    pub handle: String,
    pub created: String,
    pub last_seen: String,
    pub ip: String,
    pub browser: String,
    pub current: bool,
}

pub fn sessions(
    texts: &Texts,
    action: &str,
    logout: &str,
    csrf_token: &str,
    rows: &[SessionRow],
) -> String {
    let mut table = format!(
        "<table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th></th></tr></thead><tbody>",
        escape(texts.column_signed_in),
        escape(texts.column_last_seen),
        escape(texts.column_ip),
        escape(texts.column_browser),
    );
    for row in rows {
        let end = if row.current {
            format!("<em>{}</em>", escape(texts.this_browser))
        } else {
            format!(
                "<form method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"csrf_token\" value=\"{}\">\
<input type=\"hidden\" name=\"handle\" value=\"{}\"><button type=\"submit\" class=\"secondary\">{}</button></form>",
                escape(action),
                escape(csrf_token),
                escape(&row.handle),
                escape(texts.end),
            )
        };
        table.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{end}</td></tr>",
            escape(&row.created),
            escape(&row.last_seen),
            escape(&row.ip),
            escape(&row.browser),
        ));
    }
    table.push_str("</tbody></table>");
    shell(
        texts,
        texts.your_sessions,
        "wide",
        &format!(
            "<h1>{heading}</h1>{table}\
<form method=\"post\" action=\"{logout}\"><input type=\"hidden\" name=\"csrf_token\" value=\"{token}\">\
<input type=\"hidden\" name=\"scope\" value=\"all\"><button type=\"submit\">{everywhere}</button></form>",
            heading = escape(texts.your_active_sessions),
            everywhere = escape(texts.sign_out_everywhere),
            logout = escape(logout),
            token = escape(csrf_token),
        ),
    )
}

/// A short page for errors a person may see (503, 502, 403).
pub fn error(texts: &Texts, title: &str, message: &str) -> String {
    shell(
        texts,
        title,
        "",
        &format!("<h1>{}</h1><p>{}</p>", escape(title), escape(message)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_text_is_escaped() {
        let html = login(
            DEFAULT_LOGIN_TEMPLATE,
            &crate::i18n::EN,
            &LoginPage {
                action: "/login",
                csrf_token: "t",
                next: "/x\"><script>",
                username: "<b>",
                error: Some("Invalid username or password."),
            },
        );
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;b&gt;"));
        assert!(html.contains("Invalid username or password."));
        assert!(html.contains("name=\"csrf_token\" value=\"t\""));
    }

    #[test]
    fn pages_speak_the_chosen_language() {
        let zh = &crate::i18n::ZH_CN;
        let page = LoginPage {
            action: "/auth/login",
            csrf_token: "t",
            next: "",
            username: "",
            error: Some(zh.invalid_credentials),
        };
        let html = login(DEFAULT_LOGIN_TEMPLATE, zh, &page);
        for text in [
            "lang=\"zh-CN\"",
            "<title>登录</title>",
            ">用户名<",
            ">密码<",
            "用户名或密码错误",
        ] {
            assert!(html.contains(text), "{text} in {html}");
        }
        assert!(!html.contains("{{"), "unfilled placeholder in {html}");
        let html = logout_confirm(zh, "/logout", "t", "alice", "/s");
        assert!(html.contains("退出所有设备") && html.contains("lang=\"zh-CN\""));
        let html = error(&crate::i18n::EN, "Bad request", "x");
        assert!(html.contains("lang=\"en\""));
    }
}
