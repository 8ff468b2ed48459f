//! The web UI of `bocb serve`: a page and its script and style, embedded in
//! the binary (no Node toolchain, no CDN), and the JSON views under
//! `/api/ui/` that the page reads with the API's token.
//!
//! The assets hold no data, so they are served without the token; every
//! view is an API request and needs it (`Authorization: Bearer TOKEN`, which
//! a cross-site page cannot send, so no action can be forged through the
//! browser). The page keeps the token in the browser's local storage; the
//! service prints a link that carries it in the URL's fragment, which never
//! reaches a server or its logs.
//!
//! Live updates are conditional polls: every view answers with an `ETag`
//! and a `304` when nothing changed, and the growing parts take a cursor
//! (`since` epochs of a trial, `from` bytes of a log, `cursor` seconds of
//! a pair's curves), so one new epoch never re-sends a trial's history.

pub mod views;

use crate::analysis::render::escape;

/// A static asset of the page: its content type and text.
pub struct Asset {
    pub content_type: &'static str,
    pub body: String,
}

const INDEX: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// The asset at `path` (below the base path), if it is one. The page learns
/// the base path from the `<base>` element, so it works behind a reverse
/// proxy that forwards `BASE/...` unchanged.
pub fn asset(path: &str, base_path: &str) -> Option<Asset> {
    match path {
        "/" | "/index.html" => Some(Asset {
            content_type: "text/html; charset=utf-8",
            body: INDEX.replace("{{BASE}}", &escape(&format!("{base_path}/"))),
        }),
        "/ui/app.js" => Some(Asset {
            content_type: "text/javascript; charset=utf-8",
            body: APP_JS.to_string(),
        }),
        "/ui/app.css" => Some(Asset {
            content_type: "text/css; charset=utf-8",
            body: APP_CSS.to_string(),
        }),
        _ => None,
    }
}

/// A `--base-path` that is no URL path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "--base-path `{0}` must be a URL path such as /bocb (letters, digits, `-._~` between slashes)"
)]
pub struct BadBasePath(pub String);

/// `--base-path`: empty, or `/` followed by segments, without a trailing
/// slash (`/bocb`, `/lab/bocb`).
pub fn normalize_base_path(text: &str) -> Result<String, BadBasePath> {
    let trimmed = text.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    let valid = trimmed.starts_with('/')
        && trimmed[1..].split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c))
        });
    if valid {
        Ok(trimmed.to_string())
    } else {
        Err(BadBasePath(text.to_string()))
    }
}

/// `path` below `base_path`, or `None` when it lies outside it.
pub fn strip_base<'a>(path: &'a str, base_path: &str) -> Option<&'a str> {
    if base_path.is_empty() {
        return Some(path);
    }
    match path.strip_prefix(base_path)? {
        "" => Some("/"),
        rest if rest.starts_with('/') => Some(rest),
        _ => None,
    }
}

/// The link the service prints: the page at `url` (its base path
/// included) with the token in the fragment.
pub fn login_link(url: &str, token: &str) -> String {
    format!("{url}/#token={token}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_paths_are_checked_and_stripped() {
        assert_eq!(normalize_base_path("").unwrap(), "");
        assert_eq!(normalize_base_path("/").unwrap(), "");
        assert_eq!(normalize_base_path("/lab/bocb/").unwrap(), "/lab/bocb");
        assert!(normalize_base_path("bocb").is_err());
        assert!(normalize_base_path("/a/../b").is_err());
        assert!(normalize_base_path("/a\"><script>").is_err());
        assert_eq!(strip_base("/bocb/api/x", "/bocb"), Some("/api/x"));
        assert_eq!(strip_base("/bocb", "/bocb"), Some("/"));
        assert_eq!(strip_base("/bocbx/api", "/bocb"), None);
        assert_eq!(strip_base("/api/x", ""), Some("/api/x"));
    }

    #[test]
    fn the_page_names_its_base_and_assets_are_embedded() {
        let page = asset("/", "/lab").unwrap();
        assert!(page.body.contains(r#"<base href="/lab/">"#));
        assert!(asset("/ui/app.js", "")
            .unwrap()
            .body
            .contains("function h("));
        assert!(asset("/ui/app.css", "").is_some());
        assert!(asset("/ui/other.js", "").is_none());
        assert_eq!(
            escape(r#"<img src=x onerror="alert(1)">"#),
            "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;"
        );
    }
}
