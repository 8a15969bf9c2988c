//! The few HTML pages the gateway serves itself: login, logout confirmation, the user's session
//! list, and error pages. Plain HTML and inline CSS, no scripts, so they work under a strict CSP.
//!
//! Every page is rendered in the request's language ([`Texts`]), through [minijinja] templates:
//! each value is substituted once and HTML-escaped, so text a visitor typed (a username, a
//! `next` path) can never expand into markup or into another placeholder.
//!
//! The login page may be replaced by the operator (`[login] template`): the file is a minijinja
//! template, HTML with the placeholders `{{action}}`, `{{csrf_token}}`, `{{next}}`,
//! `{{username}}`, `{{error}}` (the error paragraph, or nothing) and `{{style}}` (the built-in
//! CSS), and, for its own words in the visitor's language, `{{lang}}`, `{{title}}`,
//! `{{username_label}}`, `{{password_label}}` and `{{submit}}`. Every value is HTML-escaped
//! except `error` and `style`, which are markup the gateway built. [`check_login_template`]
//! vets such a file at start-up; should one still fail to render, the built-in page is served.

use std::sync::LazyLock;

use minijinja::value::Value;
use minijinja::{context, AutoEscape, Environment, Error, Output, State};

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

// The built-in pages other than login. Each extends the shell (`lang`, `title`, `class`). The
// `\`-continued lines keep the output on one line, as the pages always were.
const SHELL: &str = "<!doctype html><html lang=\"{{ lang }}\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{{ title }}</title>\
<style>{{ style }}</style></head><body><main class=\"{{ class }}\">{% block body %}{% endblock %}\
</main></body></html>";

const LOGOUT: &str = "{% extends \"shell.html\" %}{% block body %}\
<h1>{{ sign_out }}</h1><p>{{ signed_in_as }} <strong>{{ user }}</strong></p>\
<form method=\"post\" action=\"{{ action }}\"><input type=\"hidden\" name=\"csrf_token\" value=\"{{ token }}\">\
<button type=\"submit\">{{ sign_out }}</button></form>\
<form method=\"post\" action=\"{{ action }}\"><input type=\"hidden\" name=\"csrf_token\" value=\"{{ token }}\">\
<input type=\"hidden\" name=\"scope\" value=\"all\">\
<button type=\"submit\" class=\"secondary\">{{ everywhere }}</button></form>\
<p class=\"note\"><a href=\"{{ sessions }}\">{{ see_sessions }}</a></p>\
{% endblock %}";

const SESSIONS: &str = "{% extends \"shell.html\" %}{% block body %}\
<h1>{{ heading }}</h1><table><thead><tr><th>{{ column_signed_in }}</th><th>{{ column_last_seen }}</th>\
<th>{{ column_ip }}</th><th>{{ column_browser }}</th><th></th></tr></thead><tbody>\
{% for row in rows %}<tr><td>{{ row.created }}</td><td>{{ row.last_seen }}</td><td>{{ row.ip }}</td>\
<td>{{ row.browser }}</td><td>{% if row.current %}<em>{{ this_browser }}</em>{% else %}\
<form method=\"post\" action=\"{{ action }}\"><input type=\"hidden\" name=\"csrf_token\" value=\"{{ token }}\">\
<input type=\"hidden\" name=\"handle\" value=\"{{ row.handle }}\">\
<button type=\"submit\" class=\"secondary\">{{ end_label }}</button></form>{% endif %}</td></tr>{% endfor %}\
</tbody></table>\
<form method=\"post\" action=\"{{ logout }}\"><input type=\"hidden\" name=\"csrf_token\" value=\"{{ token }}\">\
<input type=\"hidden\" name=\"scope\" value=\"all\"><button type=\"submit\">{{ everywhere }}</button></form>\
{% endblock %}";

const ERROR: &str = "{% extends \"shell.html\" %}{% block body %}\
<h1>{{ title }}</h1><p>{{ message }}</p>{% endblock %}";

/// The name an operator's login template is compiled under: `.html` turns on auto-escaping.
const LOGIN_NAME: &str = "login.html";

const BUILT_IN: [(&str, &str); 5] = [
    ("shell.html", SHELL),
    (LOGIN_NAME, DEFAULT_LOGIN_TEMPLATE),
    ("logout.html", LOGOUT),
    ("sessions.html", SESSIONS),
    ("error.html", ERROR),
];

/// The built-in templates, compiled once. They are constants, so they compile (a test proves
/// it); were one not to, its pages would fall back to [`bare_page`] rather than panic.
static PAGES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_keep_trailing_newline(true);
    env.set_formatter(format_value);
    env.add_global("style", Value::from_safe_string(STYLE.to_owned()));
    for (name, source) in BUILT_IN {
        if let Err(e) = env.add_template(name, source) {
            log::error!("built-in page template {name}: {}", describe(&e));
        }
    }
    env
});

/// Writes a value into a page, HTML-escaped with [`escape`] (so pages read exactly as they did
/// before templates) unless it is markup the gateway marked safe.
fn format_value(out: &mut Output, state: &State, value: &Value) -> Result<(), Error> {
    match value.as_str() {
        Some(text) if state.auto_escape() == AutoEscape::Html && !value.is_safe() => {
            Ok(out.write_str(&escape(text))?)
        }
        _ => minijinja::escape_formatter(out, state, value),
    }
}

/// A template error in one line, with where it is: `line 3: syntax error: unexpected ...`.
fn describe(e: &Error) -> String {
    let mut text = match e.line() {
        Some(line) => format!("line {line}: {}", e.kind()),
        None => e.kind().to_string(),
    };
    if let Some(detail) = e.detail() {
        text.push_str(": ");
        text.push_str(detail);
    }
    text
}

/// Renders a built-in page. Should that ever fail, logs it and serves a page with just the
/// title: never a panic, never a 500 of its own.
fn render(name: &str, ctx: Value, texts: &Texts, title: &str) -> String {
    match PAGES.get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => html,
        Err(e) => {
            log::error!("page {name} failed to render: {}", describe(&e));
            bare_page(texts, title)
        }
    }
}

fn bare_page(texts: &Texts, title: &str) -> String {
    format!(
        "<!doctype html><html lang=\"{}\"><head><meta charset=\"utf-8\"><title>{title}</title>\
</head><body><h1>{title}</h1></body></html>",
        escape(texts.html_lang),
        title = escape(title),
    )
}

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

fn login_context(texts: &Texts, page: &LoginPage) -> Value {
    let error = page
        .error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    context! {
        action => page.action,
        csrf_token => page.csrf_token,
        next => page.next,
        username => page.username,
        error => Value::from_safe_string(error),
        lang => texts.html_lang,
        title => texts.sign_in,
        username_label => texts.username,
        password_label => texts.password,
        submit => texts.sign_in,
    }
}

/// The login page, from the operator's `template` (or [`DEFAULT_LOGIN_TEMPLATE`]). An operator
/// template that fails to compile or render is logged and the built-in page served instead.
pub fn login(template: &str, texts: &Texts, page: &LoginPage) -> String {
    let ctx = login_context(texts, page);
    if template != DEFAULT_LOGIN_TEMPLATE {
        let rendered = PAGES
            .template_from_named_str(LOGIN_NAME, template)
            .and_then(|t| t.render(&ctx));
        match rendered {
            Ok(html) => return html,
            Err(e) => log::error!(
                "login template: {}; serving the built-in login page",
                describe(&e)
            ),
        }
    }
    render(LOGIN_NAME, ctx, texts, texts.sign_in)
}

/// Checks an operator's login template (`[login] template`): it must compile and render with
/// sample values, with and without an error message. The error names the line.
pub fn check_login_template(text: &str) -> Result<(), String> {
    let template = PAGES
        .template_from_named_str(LOGIN_NAME, text)
        .map_err(|e| describe(&e))?;
    for error in [None, Some("error")] {
        let sample = LoginPage {
            action: "/login",
            csrf_token: "token",
            next: "/",
            username: "user",
            error,
        };
        template
            .render(login_context(&crate::i18n::EN, &sample))
            .map_err(|e| describe(&e))?;
    }
    Ok(())
}

/// Sign-out confirmation: `GET /logout` must not log anyone out (link prefetchers follow GETs).
pub fn logout_confirm(
    texts: &Texts,
    action: &str,
    csrf_token: &str,
    username: &str,
    sessions_path: &str,
) -> String {
    let ctx = context! {
        lang => texts.html_lang,
        title => texts.sign_out,
        class => "",
        sign_out => texts.sign_out,
        signed_in_as => texts.signed_in_as,
        everywhere => texts.sign_out_everywhere,
        see_sessions => texts.see_sessions,
        user => username,
        action => action,
        token => csrf_token,
        sessions => sessions_path,
    };
    render("logout.html", ctx, texts, texts.sign_out)
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
    let rows: Vec<Value> = rows
        .iter()
        .map(|row| {
            context! {
                handle => row.handle,
                created => row.created,
                last_seen => row.last_seen,
                ip => row.ip,
                browser => row.browser,
                current => row.current,
            }
        })
        .collect();
    let ctx = context! {
        lang => texts.html_lang,
        title => texts.your_sessions,
        class => "wide",
        heading => texts.your_active_sessions,
        column_signed_in => texts.column_signed_in,
        column_last_seen => texts.column_last_seen,
        column_ip => texts.column_ip,
        column_browser => texts.column_browser,
        this_browser => texts.this_browser,
        end_label => texts.end,
        everywhere => texts.sign_out_everywhere,
        action => action,
        logout => logout,
        token => csrf_token,
        rows => rows,
    };
    render("sessions.html", ctx, texts, texts.your_sessions)
}

/// A short page for errors a person may see (503, 502, 403).
pub fn error(texts: &Texts, title: &str, message: &str) -> String {
    let ctx = context! {
        lang => texts.html_lang,
        title => title,
        class => "",
        message => message,
    };
    render("error.html", ctx, texts, title)
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

    fn page<'a>(next: &'a str, username: &'a str, error: Option<&'a str>) -> LoginPage<'a> {
        LoginPage {
            action: "/login",
            csrf_token: "t",
            next,
            username,
            error,
        }
    }

    #[test]
    fn built_in_templates_compile() {
        for (name, _) in BUILT_IN {
            assert!(PAGES.get_template(name).is_ok(), "{name}");
        }
        assert_eq!(check_login_template(DEFAULT_LOGIN_TEMPLATE), Ok(()));
    }

    #[test]
    fn a_placeholder_in_user_text_is_not_expanded() {
        let en = &crate::i18n::EN;
        let html = login(
            DEFAULT_LOGIN_TEMPLATE,
            en,
            &page("/x{{error}}", "", Some(en.invalid_credentials)),
        );
        assert!(
            html.contains("name=\"next\" value=\"/x{{error}}\""),
            "{html}"
        );
        assert_eq!(html.matches("<p class=\"error\"").count(), 1, "{html}");
        let html = login(DEFAULT_LOGIN_TEMPLATE, en, &page("/x{{error}}", "", None));
        assert!(!html.contains("<p class=\"error\""), "{html}");
    }

    #[test]
    fn usernames_are_escaped_and_inert() {
        let username = "<script>alert('x')</script>\"{{ 7*7 }}{% if true %}yes{% endif %}{# c #}";
        let html = login(
            DEFAULT_LOGIN_TEMPLATE,
            &crate::i18n::EN,
            &page("/", username, None),
        );
        let expected = "value=\"&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&quot;\
{{ 7*7 }}{% if true %}yes{% endif %}{# c #}\"";
        assert!(html.contains(expected), "{html}");
        assert!(!html.contains("<script>") && !html.contains("49"), "{html}");
        let html = logout_confirm(&crate::i18n::EN, "/logout", "t", username, "/s");
        assert!(
            html.contains("<strong>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&quot;{{ 7*7 }}")
        );
    }

    #[test]
    fn an_operator_template_fills_each_placeholder_once() {
        let template = "<html lang=\"{{lang}}\"><style>{{style}}</style>{{error}}\
[{{action}}][{{csrf_token}}][{{next}}][{{username}}][{{title}}]\
[{{username_label}}][{{password_label}}][{{submit}}]</html>";
        assert_eq!(check_login_template(template), Ok(()));
        let zh = &crate::i18n::ZH_CN;
        let page = LoginPage {
            action: "/auth/login",
            csrf_token: "tok&en",
            next: "/n?a=1",
            username: "bob",
            error: Some("bad <x>"),
        };
        let html = login(template, zh, &page);
        let expected = format!(
            "<html lang=\"zh-CN\"><style>{STYLE}</style>\
<p class=\"error\" role=\"alert\">bad &lt;x&gt;</p>\
[/auth/login][tok&amp;en][/n?a=1][bob][{title}][{user}][{password}][{title}]</html>",
            title = zh.sign_in,
            user = zh.username,
            password = zh.password,
        );
        assert_eq!(html, expected);
    }

    #[test]
    fn a_broken_operator_template_is_reported_and_falls_back() {
        let en = &crate::i18n::EN;
        let broken = "<html>\n<h1>{{title}}</h1>\n<form action=\"{{action}\">\n</html>";
        let message = check_login_template(broken).unwrap_err();
        assert!(message.starts_with("line 3:"), "{message}");
        let fails_at_render = "<html>\n{{ title|no_such_filter }}\n</html>";
        let message = check_login_template(fails_at_render).unwrap_err();
        assert!(message.starts_with("line 2:"), "{message}");
        let page = page("/", "bob", Some("Invalid"));
        let built_in = login(DEFAULT_LOGIN_TEMPLATE, en, &page);
        assert!(built_in.contains("<form method=\"post\" action=\"/login\">"));
        assert_eq!(login(broken, en, &page), built_in);
        assert_eq!(login(fails_at_render, en, &page), built_in);
    }

    #[test]
    fn the_session_list_escapes_and_translates() {
        let zh = &crate::i18n::ZH_CN;
        let row = |handle: &str, current| SessionRow {
            handle: handle.to_owned(),
            created: "2026-01-01".to_owned(),
            last_seen: "2026-01-02".to_owned(),
            ip: "192.0.2.1".to_owned(),
            browser: "<img src=x>{{ x }}".to_owned(),
            current,
        };
        let html = sessions(
            zh,
            "/s/end",
            "/logout",
            "t",
            &[row("a\"b", false), row("c", true)],
        );
        assert!(html.contains("lang=\"zh-CN\"") && html.contains(zh.your_active_sessions));
        assert!(
            html.contains("name=\"handle\" value=\"a&quot;b\""),
            "{html}"
        );
        assert_eq!(
            html.matches("&lt;img src=x&gt;{{ x }}").count(),
            2,
            "{html}"
        );
        assert_eq!(html.matches(zh.this_browser).count(), 1);
    }
}
