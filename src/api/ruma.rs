//! The glue between axum and ruma: the `Ruma<R>` extractor parses a ruma request
//! type after authenticating per the endpoint's metadata; `RumaResponse` and
//! `Error` turn into HTTP responses; `RumaHandler` registers a handler on every
//! path ruma declares for its endpoint (r0, v3, unstable).

use std::{future::Future, net::SocketAddr};

use axum::{
    Router,
    extract::{ConnectInfo, FromRequest, FromRequestParts, RawPathParams, Request, State},
    response::{IntoResponse, Response},
    routing::{MethodFilter, on},
};
use bytes::{Bytes, BytesMut};
use http::{StatusCode, request::Parts};
use ruma::api::{
    IncomingRequest, IncomingRequestExt, OutgoingResponse, OutgoingResponseExt,
    auth_scheme::{
        AccessToken, AccessTokenOptional, AppserviceToken, AppserviceTokenOptional, NoAccessToken,
        NoAuthentication,
    },
    client::uiaa::UiaaResponse,
    error::{DeserializationError, ErrorKind, FromHttpRequestError, StandardErrorBody},
    path_builder::PathBuilder,
};

use super::AppState;
use crate::{
    auth::Identity,
    error::{Error, Result},
};

/// How an endpoint authenticates its caller, read off ruma's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    /// No access token is read.
    None,
    /// An access token is required.
    Required,
    /// An access token is used when given.
    Optional,
    /// An application service token is required (no appservices are registered yet).
    Appservice,
}

pub trait AuthRequirement {
    const KIND: AuthKind;
}

impl AuthRequirement for NoAuthentication {
    const KIND: AuthKind = AuthKind::None;
}
impl AuthRequirement for NoAccessToken {
    const KIND: AuthKind = AuthKind::None;
}
impl AuthRequirement for AccessToken {
    const KIND: AuthKind = AuthKind::Required;
}
impl AuthRequirement for AccessTokenOptional {
    const KIND: AuthKind = AuthKind::Optional;
}
impl AuthRequirement for AppserviceToken {
    const KIND: AuthKind = AuthKind::Appservice;
}
impl AuthRequirement for AppserviceTokenOptional {
    const KIND: AuthKind = AuthKind::None;
}

/// A parsed, authenticated ruma request.
pub struct Ruma<R> {
    pub body: R,
    pub identity: Option<Identity>,
    /// The request body as received (for data kept byte-for-byte).
    pub raw_body: Bytes,
    pub client_ip: String,
}

impl<R> Ruma<R> {
    /// The caller; only endpoints whose metadata requires a token may call this.
    pub fn identity(&self) -> Result<&Identity> {
        self.identity.as_ref().ok_or_else(Error::missing_token)
    }
}

impl<R> FromRequest<AppState> for Ruma<R>
where
    R: IncomingRequest + Send,
    R::Authentication: AuthRequirement,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self> {
        let (mut parts, body) = req.into_parts();
        let path_params = RawPathParams::from_request_parts(&mut parts, state)
            .await
            .map_err(|e| Error::invalid_param(format!("Bad path parameter: {e}")))?;
        let client_ip = client_ip(&parts, state.config.http.trust_forwarded_for);
        let token = access_token(&parts);
        let identity = match (<R::Authentication as AuthRequirement>::KIND, token) {
            (AuthKind::None, _) | (AuthKind::Optional, None) => None,
            (AuthKind::Required, None) | (AuthKind::Appservice, None) => {
                return Err(Error::missing_token());
            }
            (AuthKind::Required | AuthKind::Optional, Some(token)) => {
                Some(state.auth.sessions.authenticate(&token, &client_ip)?)
            }
            (AuthKind::Appservice, Some(_)) => {
                return Err(Error::unknown_token(
                    false,
                    "No application service has this token",
                ));
            }
        };

        let raw_body = read_body(body, state.config.http.max_request_bytes).await?;
        let request = http::Request::from_parts(parts, raw_body.as_ref());
        let mut args: Vec<&str> = path_params.iter().map(|(_, value)| value).collect();
        // Routes registered by `ruma_empty_last` leave out a trailing empty
        // parameter (an empty state key): supply it.
        while args.len() < R::_path_parameters().len() {
            args.push("");
        }
        let body =
            R::try_from_http_request(request, &args).map_err(|e| request_error(e, &raw_body))?;
        Ok(Ruma {
            body,
            identity,
            raw_body: raw_body.clone(),
            client_ip,
        })
    }
}

pub async fn read_body(body: axum::body::Body, limit: usize) -> Result<Bytes> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            Error::too_large(format!(
                "The request body is larger than the limit of {limit} bytes"
            ))
        } else {
            Error::bad_json(format!("Could not read the request body: {e}"))
        }
    })
}

/// Malformed JSON is M_NOT_JSON; JSON of the wrong shape is M_BAD_JSON; a bad
/// identifier or query parameter is M_INVALID_PARAM.
fn request_error(e: FromHttpRequestError, body: &[u8]) -> Error {
    match e {
        FromHttpRequestError::Deserialization(DeserializationError::Json(json)) => {
            let trimmed = body.iter().all(u8::is_ascii_whitespace);
            if !trimmed && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
                Error::not_json(format!("The request body is not valid JSON: {json}"))
            } else {
                Error::bad_json(format!("The request body has the wrong shape: {json}"))
            }
        }
        FromHttpRequestError::Deserialization(DeserializationError::Ident(e)) => {
            Error::invalid_param(format!("Invalid identifier: {e}"))
        }
        FromHttpRequestError::Deserialization(DeserializationError::Query(e)) => {
            Error::invalid_param(format!("Invalid query parameter: {e}"))
        }
        FromHttpRequestError::Deserialization(e) => {
            Error::invalid_param(format!("Invalid request: {e}"))
        }
        FromHttpRequestError::MethodMismatch { expected, received } => Error::unrecognized(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("Method {received} is not allowed here; use {expected}"),
        ),
        other => Error::bad_json(format!("Invalid request: {other}")),
    }
}

/// The caller of a request handled without a ruma request type (streamed
/// media, our JSON extensions): the access token is required.
pub fn authenticate(state: &AppState, parts: &Parts) -> Result<Identity> {
    let token = access_token(parts).ok_or_else(Error::missing_token)?;
    let ip = client_ip(parts, state.config.http.trust_forwarded_for);
    state.auth.sessions.authenticate(&token, &ip)
}

/// `Authorization: Bearer <token>`, or the deprecated `access_token` query parameter.
pub fn access_token(parts: &Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        return value.strip_prefix("Bearer ").map(|t| t.trim().to_owned());
    }
    let query = parts.uri.query()?;
    form_urlencoded_pairs(query)
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v)
}

fn form_urlencoded_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| percent_decode(&s.replace('+', " "));
        Some((decode(k)?, decode(v)?))
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The peer address, or the first `X-Forwarded-For` hop when configured to trust it.
pub fn client_ip(parts: &Parts, trust_forwarded_for: bool) -> String {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    client_ip_of(&parts.headers, peer, trust_forwarded_for)
}

/// [`client_ip`] from the request's headers and peer address.
pub fn client_ip_of(
    headers: &http::HeaderMap,
    peer: Option<SocketAddr>,
    trust_forwarded_for: bool,
) -> String {
    let forwarded = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    // The last hop is the one our trusted proxy appended; earlier ones are the
    // client's to choose.
    if trust_forwarded_for
        && let Some(first) = forwarded
            .and_then(|f| f.rsplit(',').next())
            .map(str::trim)
            .filter(|s| !s.is_empty())
    {
        return first.to_owned();
    }
    peer.map(|addr| addr.ip().to_string())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// A ruma response type as an HTTP response.
pub struct RumaResponse<T>(pub T);

impl<T: OutgoingResponse> IntoResponse for RumaResponse<T> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<BytesMut>() {
            Ok(response) => response.map(|body| axum::body::Body::from(body.freeze())),
            Err(e) => Error::internal(format!("cannot serialise a response: {e}")).into_response(),
        }
    }
}

impl<T: OutgoingResponse> From<T> for RumaResponse<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, kind, message) = match self {
            Error::Matrix {
                status,
                kind,
                message,
            } => (status, kind, message),
            Error::Uiaa(info) => {
                return RumaResponse(UiaaResponse::AuthResponse(*info)).into_response();
            }
            Error::Storage(e) => {
                tracing::error!(error = %e, "storage error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorKind::Unknown,
                    "Internal server error".to_owned(),
                )
            }
            Error::Internal(e) => {
                tracing::error!(error = %e, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorKind::Unknown,
                    "Internal server error".to_owned(),
                )
            }
        };
        let body = ruma::api::error::ErrorBody::Standard(StandardErrorBody::new(kind, message));
        RumaResponse(ruma::api::error::Error::new(status, body)).into_response()
    }
}

/// A handler taking `State` and a `Ruma<R>`: it knows its own method and paths.
pub trait RumaHandler<R> {
    fn add_to(self, router: Router<AppState>) -> Router<AppState>;
    fn add_to_without_last(self, router: Router<AppState>) -> Router<AppState>;
}

impl<R, F, Fut, Resp> RumaHandler<R> for F
where
    F: FnOnce(State<AppState>, Ruma<R>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp>> + Send + 'static,
    Resp: IntoResponse + 'static,
    R: IncomingRequest + Send + 'static,
    R::Authentication: AuthRequirement,
{
    fn add_to(self, mut router: Router<AppState>) -> Router<AppState> {
        let filter =
            MethodFilter::try_from(R::METHOD).expect("ruma endpoints use standard methods");
        for path in R::PATH_BUILDER.all_paths() {
            router = router.route(path, on(filter, self.clone()));
        }
        router
    }

    fn add_to_without_last(self, mut router: Router<AppState>) -> Router<AppState> {
        let filter =
            MethodFilter::try_from(R::METHOD).expect("ruma endpoints use standard methods");
        for path in R::PATH_BUILDER.all_paths() {
            router = router.route(path, on(filter, self.clone()));
            if let Some((base, last)) = path.rsplit_once('/')
                && last.starts_with('{')
            {
                router = router.route(base, on(filter, self.clone()));
                router = router.route(&format!("{base}/"), on(filter, self.clone()));
            }
        }
        router
    }
}

pub trait RouterExt {
    fn ruma<R, H: RumaHandler<R>>(self, handler: H) -> Self;
    /// Like `ruma`, and also serves the paths with the last parameter empty
    /// (`.../state/m.room.name` and `.../state/m.room.name/` for state key "").
    fn ruma_empty_last<R, H: RumaHandler<R>>(self, handler: H) -> Self;
}

impl RouterExt for Router<AppState> {
    fn ruma<R, H: RumaHandler<R>>(self, handler: H) -> Self {
        handler.add_to(self)
    }

    fn ruma_empty_last<R, H: RumaHandler<R>>(self, handler: H) -> Self {
        handler.add_to_without_last(self)
    }
}
