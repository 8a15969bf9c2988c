//! The words on the gateway's own pages (login, logout, sessions, errors), in English and
//! Simplified Chinese, and how a request's language is chosen.
//!
//! Only text a person reads is translated. JSON error codes (`"error": "unauthenticated"`) and
//! audit events stay fixed, since programs match on them; JSON `message`s follow the page
//! language, since SPAs show them.

use pingora::http::RequestHeader;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    En,
    ZhCn,
}

/// `[login] language`: one language for everyone, or the browser's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LanguageChoice {
    Auto,
    Fixed(Language),
}

impl LanguageChoice {
    pub fn parse(text: &str) -> Result<LanguageChoice, String> {
        match text {
            "auto" => Ok(LanguageChoice::Auto),
            "en" => Ok(LanguageChoice::Fixed(Language::En)),
            "zh-CN" => Ok(LanguageChoice::Fixed(Language::ZhCn)),
            _ => Err(format!(
                "`{text}` is not a language: use \"auto\" (Accept-Language), \"en\" or \"zh-CN\""
            )),
        }
    }

    /// The texts for this request.
    pub fn texts(self, req: &RequestHeader) -> &'static Texts {
        let language = match self {
            LanguageChoice::Fixed(language) => language,
            LanguageChoice::Auto => from_accept_language(
                req.headers
                    .get("accept-language")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
            ),
        };
        Texts::of(language)
    }
}

/// The supported language the browser ranks highest; English when it names none of ours.
/// Every `zh` variant gets Simplified Chinese: a Traditional-Chinese reader is better served by
/// it than by English, the only other choice.
pub fn from_accept_language(header: &str) -> Language {
    let mut best: Option<(f32, usize, Language)> = None;
    for (position, entry) in header.split(',').take(16).enumerate() {
        let mut parts = entry.split(';');
        let tag = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let quality = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let primary = tag.split('-').next().unwrap_or("");
        let language = match primary {
            "zh" => Language::ZhCn,
            "en" => Language::En,
            _ => continue,
        };
        if quality <= 0.0 {
            continue;
        }
        // Higher quality wins; on a tie, the one listed first.
        let better = best.is_none_or(|(q, p, _)| quality > q || (quality == q && position < p));
        if better {
            best = Some((quality, position, language));
        }
    }
    best.map_or(Language::En, |(_, _, language)| language)
}

/// Every sentence on the gateway's pages. `{n}` in a text is replaced by a number.
pub struct Texts {
    /// The `lang` attribute of the page.
    pub html_lang: &'static str,
    pub sign_in: &'static str,
    pub username: &'static str,
    pub password: &'static str,
    pub signed_in: &'static str,
    pub invalid_credentials: &'static str,
    pub form_expired: &'static str,
    pub too_many_attempts: &'static str,
    pub session_limit: &'static str,
    pub sign_out: &'static str,
    pub signed_in_as: &'static str,
    pub sign_out_everywhere: &'static str,
    pub see_sessions: &'static str,
    pub your_sessions: &'static str,
    pub your_active_sessions: &'static str,
    pub column_signed_in: &'static str,
    pub column_last_seen: &'static str,
    pub column_ip: &'static str,
    pub column_browser: &'static str,
    pub this_browser: &'static str,
    pub end: &'static str,
    pub service_unavailable: &'static str,
    pub app_unreachable: &'static str,
    pub try_again_shortly: &'static str,
    pub gateway_timeout: &'static str,
    pub app_too_slow: &'static str,
    pub bad_request: &'static str,
    pub not_understood: &'static str,
    pub error: &'static str,
    pub something_went_wrong: &'static str,
    pub temporarily_unavailable: &'static str,
    pub sign_in_unavailable: &'static str,
    pub request_refused: &'static str,
    pub not_from_this_site: &'static str,
    pub access_denied: &'static str,
    pub no_access: &'static str,
    // Messages of JSON errors (their codes are fixed; see the module doc).
    pub sign_in_first: &'static str,
    pub method_not_allowed: &'static str,
    pub body_too_large: &'static str,
    pub body_unreadable: &'static str,
    pub cross_site_refused: &'static str,
    pub sessions_unavailable: &'static str,
    pub users_unavailable: &'static str,
    pub dot_segments: &'static str,
    pub which_session: &'static str,
    pub expected_credentials: &'static str,
    pub post_json: &'static str,
    pub post_form_or_json: &'static str,
}

impl Texts {
    pub fn of(language: Language) -> &'static Texts {
        match language {
            Language::En => &EN,
            Language::ZhCn => &ZH_CN,
        }
    }

    /// `text` with its `{n}` filled in.
    pub fn with_number(text: &str, n: u64) -> String {
        text.replace("{n}", &n.to_string())
    }
}

pub static EN: Texts = Texts {
    html_lang: "en",
    sign_in: "Sign in",
    username: "Username",
    password: "Password",
    signed_in: "Signed in.",
    invalid_credentials: "Invalid username or password.",
    form_expired: "This sign-in form has expired. Please try again.",
    too_many_attempts: "Too many failed sign-in attempts. Try again in {n} minute(s).",
    session_limit: "You already have {n} active session(s), the most allowed. \
                    Sign out on another device first.",
    sign_out: "Sign out",
    signed_in_as: "Signed in as",
    sign_out_everywhere: "Sign out everywhere",
    see_sessions: "See your active sessions",
    your_sessions: "Your sessions",
    your_active_sessions: "Your active sessions",
    column_signed_in: "Signed in",
    column_last_seen: "Last seen",
    column_ip: "IP",
    column_browser: "Browser",
    this_browser: "this browser",
    end: "End",
    service_unavailable: "Service unavailable",
    app_unreachable: "The application is not reachable right now. Please try again shortly.",
    try_again_shortly: "Please try again shortly.",
    gateway_timeout: "Gateway timeout",
    app_too_slow: "The application took too long to answer.",
    bad_request: "Bad request",
    not_understood: "The request could not be understood.",
    error: "Error",
    something_went_wrong: "Something went wrong.",
    temporarily_unavailable: "Temporarily unavailable",
    sign_in_unavailable: "Sign-in is briefly unavailable. Please try again in a moment.",
    request_refused: "Request refused",
    not_from_this_site: "This form was not submitted from this site.",
    access_denied: "Access denied",
    no_access: "Your account does not have access to this page.",
    sign_in_first: "Sign in first.",
    method_not_allowed: "Method not allowed.",
    body_too_large: "Request body too large.",
    body_unreadable: "Request body unreadable.",
    cross_site_refused: "Cross-site request refused.",
    sessions_unavailable: "Sessions cannot be checked right now; retry shortly.",
    users_unavailable: "Users cannot be checked right now; retry shortly.",
    dot_segments: "Paths with . or .. segments are refused.",
    which_session: "Which session? (field `handle`)",
    expected_credentials: "Expected {\"username\": ..., \"password\": ...}.",
    post_json: "Post application/json.",
    post_form_or_json: "Post a form or application/json.",
};

pub static ZH_CN: Texts = Texts {
    html_lang: "zh-CN",
    sign_in: "登录",
    username: "用户名",
    password: "密码",
    signed_in: "登录成功。",
    invalid_credentials: "用户名或密码错误。",
    form_expired: "登录表单已过期，请重试。",
    too_many_attempts: "登录失败次数过多，请 {n} 分钟后再试。",
    session_limit: "您已有 {n} 个活动会话，已达上限。请先在其他设备上退出登录。",
    sign_out: "退出登录",
    signed_in_as: "当前登录用户",
    sign_out_everywhere: "退出所有设备",
    see_sessions: "查看您的活动会话",
    your_sessions: "您的会话",
    your_active_sessions: "您的活动会话",
    column_signed_in: "登录时间",
    column_last_seen: "最近活动",
    column_ip: "IP 地址",
    column_browser: "浏览器",
    this_browser: "当前浏览器",
    end: "结束",
    service_unavailable: "服务不可用",
    app_unreachable: "应用暂时无法访问，请稍后再试。",
    try_again_shortly: "请稍后再试。",
    gateway_timeout: "网关超时",
    app_too_slow: "应用响应超时。",
    bad_request: "请求无效",
    not_understood: "无法理解该请求。",
    error: "错误",
    something_went_wrong: "出错了。",
    temporarily_unavailable: "暂时不可用",
    sign_in_unavailable: "登录服务暂时不可用，请稍后再试。",
    request_refused: "请求被拒绝",
    not_from_this_site: "该表单并非从本站提交。",
    access_denied: "拒绝访问",
    no_access: "您的账号无权访问此页面。",
    sign_in_first: "请先登录。",
    method_not_allowed: "不支持该请求方法。",
    body_too_large: "请求体过大。",
    body_unreadable: "无法读取请求体。",
    cross_site_refused: "已拒绝跨站请求。",
    sessions_unavailable: "暂时无法校验会话，请稍后重试。",
    users_unavailable: "暂时无法校验用户，请稍后重试。",
    dot_segments: "拒绝包含 . 或 .. 路径段的请求。",
    which_session: "要结束哪个会话？（字段 `handle`）",
    expected_credentials: "请求体应为 {\"username\": ..., \"password\": ...}。",
    post_json: "请以 application/json 提交。",
    post_form_or_json: "请以表单或 application/json 提交。",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browser_preference_picks_the_language() {
        for (header, want) in [
            ("zh-CN,zh;q=0.9,en;q=0.8", Language::ZhCn),
            ("zh", Language::ZhCn),
            ("zh-TW", Language::ZhCn),
            ("en-US,en;q=0.9,zh-CN;q=0.8", Language::En),
            ("fr-FR,zh-CN;q=0.5,en;q=0.4", Language::ZhCn),
            ("fr-FR,de", Language::En),
            ("", Language::En),
            ("zh;q=0, en", Language::En),
            ("en;q=0.5, zh;q=0.5", Language::En),
            ("en;q=oops, zh;q=0.9", Language::En),
            (";;;,,,=", Language::En),
        ] {
            assert_eq!(from_accept_language(header), want, "{header:?}");
        }
    }

    #[test]
    fn configured_language_overrides_the_browser() {
        let mut req = RequestHeader::build("GET", b"/login", None).unwrap();
        req.insert_header("accept-language", "zh-CN").unwrap();
        assert_eq!(LanguageChoice::Auto.texts(&req).html_lang, "zh-CN");
        assert_eq!(
            LanguageChoice::Fixed(Language::En).texts(&req).html_lang,
            "en"
        );
        assert_eq!(
            LanguageChoice::parse("zh-CN"),
            Ok(LanguageChoice::Fixed(Language::ZhCn))
        );
        assert!(LanguageChoice::parse("zh").is_err());
    }

    #[test]
    fn numbers_are_filled_in() {
        assert_eq!(
            Texts::with_number(ZH_CN.too_many_attempts, 3),
            "登录失败次数过多，请 3 分钟后再试。"
        );
    }
}
