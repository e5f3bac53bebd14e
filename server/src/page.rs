//! The web chat page served at `GET /`: one self-contained HTML document.
//!
//! The sources are `assets/index.html`, `assets/style.css` and
//! `assets/app.js`, embedded at compile time. `index.html` links the other
//! two by relative name, so it also works opened from the folder while
//! editing; [`page`] inlines them so the server answers `/` with one
//! document and needs no other route.

/// `assets/index.html` as written (links `style.css` and `app.js`).
pub const INDEX_HTML: &str = include_str!("../assets/index.html");
/// `assets/style.css`.
pub const STYLE_CSS: &str = include_str!("../assets/style.css");
/// `assets/app.js`.
pub const APP_JS: &str = include_str!("../assets/app.js");

const STYLE_LINK: &str = r#"<link rel="stylesheet" href="style.css">"#;
const SCRIPT_TAG: &str = r#"<script src="app.js"></script>"#;

/// The page with its stylesheet and script inlined.
#[must_use]
pub fn page() -> String {
    INDEX_HTML
        .replacen(STYLE_LINK, &format!("<style>\n{STYLE_CSS}</style>"), 1)
        .replacen(SCRIPT_TAG, &format!("<script>\n{APP_JS}</script>"), 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_has_the_element_ids_browser_tests_use() {
        let p = page();
        for id in [
            "session", "user", "token", "connect", "input", "send", "cancel", "status", "log",
            "banner",
        ] {
            assert!(p.contains(&format!(r#"id="{id}""#)), "missing #{id}");
        }
    }

    #[test]
    fn page_inlines_its_stylesheet_and_script() {
        let p = page();
        assert!(!p.contains(STYLE_LINK), "style.css not inlined");
        assert!(!p.contains(SCRIPT_TAG), "app.js not inlined");
        assert!(p.contains(STYLE_CSS) && p.contains(APP_JS));
        assert!(p.starts_with("<!doctype html>"));
    }

    #[test]
    fn inlined_sources_cannot_close_their_own_tags() {
        assert!(!APP_JS.to_ascii_lowercase().contains("</script"));
        assert!(!STYLE_CSS.to_ascii_lowercase().contains("</style"));
    }

    #[test]
    fn script_speaks_the_protocol_names_it_relies_on() {
        for needle in [
            "/v1/ws?",
            "session_id",
            "user_id",
            "\"token\"",
            "resume",
            "from_seq",
            "cancel_result",
            "resume_unavailable",
            "client_message_id",
            "msg assistant",
            "msg user",
            "dataset.messageId",
            "dataset.status",
            "sessionStorage",
        ] {
            assert!(APP_JS.contains(needle), "app.js lacks {needle}");
        }
        for state in ["connecting", "open", "reconnecting"] {
            assert!(APP_JS.contains(&format!("\"{state}\"")), "state {state}");
        }
        for status in [
            "streaming",
            "cancelling",
            "cancelled",
            "completed",
            "failed",
        ] {
            assert!(APP_JS.contains(&format!("\"{status}\"")), "status {status}");
        }
    }
}
