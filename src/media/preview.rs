//! URL previews (`preview_url`): the server fetches a page a user posted and
//! returns its OpenGraph data, with the preview image stored as media.
//!
//! Off by default: fetching arbitrary URLs from inside a network is a
//! server-side request forgery risk. When on, every address a host name
//! resolves to, every IP literal and every redirect target is checked against
//! the deny-list (loopback, private and link-local ranges by default), so
//! neither DNS tricks nor redirects reach inside. Fetches are bounded in bytes
//! and time; results are cached for an hour.

use std::{
    net::{IpAddr, SocketAddr},
    num::NonZeroUsize,
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http::StatusCode;
use lru::LruCache;
use parking_lot::Mutex;
use ruma::{UserId, api::error::ErrorKind};
use serde_json::{Map, Value, json};

use super::{Media, iprange::IpRange};
use crate::{
    config::UrlPreviewConfig,
    error::{Error, Result},
    util::now_ms,
};

const CACHE_ENTRIES: usize = 1000;
const CACHE_MS: u64 = 3600 * 1000;
const MAX_REDIRECTS: usize = 5;

#[derive(Debug, Clone)]
struct Ranges {
    deny: Vec<IpRange>,
    allow: Vec<IpRange>,
}

impl Ranges {
    fn allows(&self, ip: IpAddr) -> bool {
        super::iprange::allowed(ip, &self.deny, &self.allow)
    }

    /// Whether a URL's host may be fetched as far as can be told without
    /// resolving it (IP literals); names are checked when resolved.
    fn allows_url(&self, url: &reqwest::Url) -> bool {
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.allows(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.allows(IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => true,
            None => false,
        }
    }
}

/// Resolves names like the system does, then drops denied addresses.
struct CheckedResolver(Arc<Ranges>);

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let ranges = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| ranges.allows(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!("{host} resolves to no address previews may fetch").into());
            }
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[derive(Debug)]
pub struct Previews {
    enabled: bool,
    ranges: Arc<Ranges>,
    max_bytes: usize,
    http: Option<reqwest::Client>,
    cache: Mutex<LruCache<String, (u64, Value)>>,
}

impl std::fmt::Debug for CheckedResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CheckedResolver")
    }
}

impl Previews {
    pub fn new(config: &UrlPreviewConfig) -> Self {
        let parse = |list: &[String]| list.iter().filter_map(|r| IpRange::parse(r)).collect();
        let ranges = Arc::new(Ranges {
            deny: parse(&config.ip_range_denylist),
            allow: parse(&config.ip_range_allowlist),
        });
        let http = config.enabled.then(|| {
            let for_redirects = ranges.clone();
            let policy = reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    attempt.error("too many redirects")
                } else if !for_redirects.allows_url(attempt.url()) {
                    attempt.error("redirect to an address previews may not fetch")
                } else {
                    attempt.follow()
                }
            });
            reqwest::Client::builder()
                .timeout(Duration::from_millis(config.timeout_ms))
                .connect_timeout(Duration::from_millis(config.timeout_ms))
                .redirect(policy)
                .dns_resolver(Arc::new(CheckedResolver(ranges.clone())))
                .user_agent(concat!(
                    "bigd/",
                    env!("CARGO_PKG_VERSION"),
                    " (URL preview)"
                ))
                .build()
                .ok()
        });
        Self {
            enabled: config.enabled,
            ranges,
            max_bytes: config.max_page_bytes,
            http: http.flatten(),
            cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(CACHE_ENTRIES).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// The OpenGraph preview of `url`.
    pub async fn preview(&self, media: &Media, user: &UserId, url: &str) -> Result<Value> {
        let Some(http) = self.http.as_ref().filter(|_| self.enabled) else {
            return Err(Error::forbidden("URL previews are disabled on this server"));
        };
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| Error::invalid_param(format!("Not a valid URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::invalid_param(
                "Only http and https URLs are previewed",
            ));
        }
        if let Some((at, preview)) = self.cache.lock().get(url)
            && now_ms().saturating_sub(*at) < CACHE_MS
        {
            return Ok(preview.clone());
        }
        if !self.ranges.allows_url(&parsed) {
            return Err(refused("That address may not be previewed"));
        }
        let (content_type, body) = self.fetch(http, parsed.clone()).await?;
        let mut og = Map::new();
        if content_type.starts_with("image/") {
            self.attach_image(media, user, &content_type, body, &mut og)
                .await?;
        } else if content_type.starts_with("text/html") || content_type.is_empty() {
            let page = String::from_utf8_lossy(&body);
            og = parse_html(&page);
            if let Some(image) = og
                .get("og:image")
                .and_then(Value::as_str)
                .map(str::to_owned)
            {
                og.remove("og:image");
                if let Ok(image_url) = parsed.join(&image)
                    && self.ranges.allows_url(&image_url)
                    && let Ok((kind, bytes)) = self.fetch(http, image_url).await
                    && kind.starts_with("image/")
                {
                    // A preview without its image is still a preview.
                    let _ = self.attach_image(media, user, &kind, bytes, &mut og).await;
                }
            }
        } else {
            return Err(Error::new(
                StatusCode::BAD_GATEWAY,
                ErrorKind::Unknown,
                format!("Cannot preview content of type {content_type}"),
            ));
        }
        let preview = Value::Object(og);
        self.cache
            .lock()
            .put(url.to_owned(), (now_ms(), preview.clone()));
        Ok(preview)
    }

    /// GETs `url`, reading at most `max_bytes`; returns (content type, body).
    async fn fetch(&self, http: &reqwest::Client, url: reqwest::Url) -> Result<(String, Bytes)> {
        let mut response = http.get(url).send().await.map_err(|e| {
            Error::new(
                StatusCode::BAD_GATEWAY,
                ErrorKind::Unknown,
                format!("Could not fetch the URL: {e}"),
            )
        })?;
        if !response.status().is_success() {
            return Err(Error::new(
                StatusCode::BAD_GATEWAY,
                ErrorKind::Unknown,
                format!("The URL answered {}", response.status()),
            ));
        }
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            Error::new(
                StatusCode::BAD_GATEWAY,
                ErrorKind::Unknown,
                format!("Reading the URL failed: {e}"),
            )
        })? {
            let room = self.max_bytes.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() >= self.max_bytes {
                break;
            }
        }
        Ok((content_type, Bytes::from(body)))
    }

    async fn attach_image(
        &self,
        media: &Media,
        user: &UserId,
        content_type: &str,
        bytes: Bytes,
        og: &mut Map<String, Value>,
    ) -> Result<()> {
        if bytes.len() >= self.max_bytes {
            return Err(refused("The image is larger than previews fetch"));
        }
        let size = bytes.len();
        let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(bytes)]);
        let id = media
            .upload(user, Some(content_type.to_owned()), None, stream)
            .await?;
        og.insert(
            "og:image".into(),
            json!(format!("mxc://{}/{id}", media.server_name())),
        );
        og.insert("og:image:type".into(), json!(content_type));
        og.insert("matrix:image:size".into(), json!(size));
        if let Some(record) = media.record(&id)?
            && let Some(sha) = &record.sha256
            && let Ok((_, w, h)) = super::thumbnail::probe(&media.content_path(sha))
        {
            og.insert("og:image:width".into(), json!(w));
            og.insert("og:image:height".into(), json!(h));
        }
        Ok(())
    }
}

fn refused(message: &str) -> Error {
    Error::forbidden(message)
}

/// The page's OpenGraph properties, with `<title>` and the description meta
/// tag as fallbacks.
pub fn parse_html(page: &str) -> Map<String, Value> {
    let lower = page.to_ascii_lowercase();
    let mut og = Map::new();
    let mut description = None;
    let mut from = 0;
    while let Some(at) = lower[from..].find("<meta") {
        let start = from + at;
        let end = lower[start..].find('>').map_or(lower.len(), |e| start + e);
        let attrs = attributes(&page[start + 5..end]);
        let key = attrs
            .iter()
            .find(|(k, _)| k == "property" || k == "name")
            .map(|(_, v)| v.to_ascii_lowercase());
        let content = attrs.iter().find(|(k, _)| k == "content").map(|(_, v)| v);
        if let (Some(key), Some(content)) = (key, content) {
            if key.starts_with("og:") && !og.contains_key(&key) {
                og.insert(key, json!(content));
            } else if key == "description" {
                description = Some(content.clone());
            }
        }
        from = end;
    }
    if !og.contains_key("og:title")
        && let Some(start) = lower.find("<title")
        && let Some(open_end) = lower[start..].find('>')
        && let Some(close) = lower[start..].find("</title")
    {
        let text = &page[start + open_end + 1..start + close];
        og.insert("og:title".into(), json!(decode_entities(text.trim())));
    }
    if !og.contains_key("og:description")
        && let Some(description) = description
    {
        og.insert("og:description".into(), json!(description));
    }
    og
}

/// `key="value"` pairs of a tag, names lower-cased, entities decoded.
fn attributes(tag: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let bytes = tag.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'/') {
            i += 1;
        }
        let name_start = i;
        while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'=' {
            i += 1;
        }
        let name = tag[name_start..i].to_ascii_lowercase();
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] != b'=' {
            if name.is_empty() {
                i += 1;
            }
            continue;
        }
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let value = if i < bytes.len() && (bytes[i] == b'"' || bytes[i] == b'\'') {
            let quote = bytes[i];
            let start = i + 1;
            let end = tag[start..]
                .bytes()
                .position(|b| b == quote)
                .map_or(tag.len(), |p| start + p);
            i = end + 1;
            &tag[start..end]
        } else {
            let start = i;
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            &tag[start..i]
        };
        out.push((name, decode_entities(value)));
    }
    out
}

fn decode_entities(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opengraph_and_fallbacks_are_read() {
        let page = r#"<html><head><TITLE>Plain title</TITLE>
            <meta property="og:title" content="Tom &amp; Jerry">
            <meta name='description' content='A cartoon'>
            <meta property=og:image content="/img.png" />
            </head></html>"#;
        let og = parse_html(page);
        assert_eq!(og["og:title"], "Tom & Jerry");
        assert_eq!(og["og:description"], "A cartoon");
        assert_eq!(og["og:image"], "/img.png");
        let og = parse_html("<title> Only a title </title>");
        assert_eq!(og["og:title"], "Only a title");
    }
}
