//! The thin HTTP layer: one axum router over the services.

pub mod client;
pub mod federation;
mod media;
pub mod ruma;
mod well_known;
pub mod ws;

use std::{sync::Arc, time::Duration};

use axum::{Router, response::IntoResponse};
use http::{HeaderName, Method, StatusCode, header};
use tower_http::{
    catch_panic::CatchPanicLayer,
    cors::{Any, CorsLayer},
    sensitive_headers::SetSensitiveRequestHeadersLayer,
    trace::TraceLayer,
};

use crate::{Services, error::Error};

pub type AppState = Arc<Services>;

pub fn router(services: AppState) -> Router {
    let router = federation::routes(client::routes(Router::new()))
        .merge(well_known::routes())
        .merge(ws::routes())
        .merge(media::routes());
    router
        .fallback(|| async {
            Error::unrecognized(
                StatusCode::NOT_FOUND,
                "Unrecognized request: no such endpoint",
            )
        })
        .method_not_allowed_fallback(|| async {
            Error::unrecognized(
                StatusCode::METHOD_NOT_ALLOWED,
                "This endpoint does not accept that method",
            )
        })
        .with_state(services)
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a request handler panicked");
            Error::internal("request handler panicked").into_response()
        }))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
        ]))
        .layer(cors())
}

/// The CORS headers the spec requires on every response, preflights included.
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            HeaderName::from_static("x-requested-with"),
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
        ])
        .max_age(Duration::from_secs(24 * 3600))
}

/// One INFO span per request: method and path only, since query strings may
/// carry access tokens (`?access_token=`) and must not reach the logs.
fn request_span(request: &http::Request<axum::body::Body>) -> tracing::Span {
    tracing::info_span!("request", method = %request.method(), path = %request.uri().path())
}
