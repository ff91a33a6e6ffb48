//! `/api/v1/media`: agents upload media (`POST`, the raw bytes with their `Content-Type`) and
//! download what they may see (`GET /{id}`, with `Range`).
//!
//! Translation only: limits, storage and visibility are [`crate::media`]'s. The upload route
//! alone takes bodies up to [`MAX_MEDIA_BYTES`] (Meta's largest, a document): its own
//! `DefaultBodyLimit` overrides the router's, and the body is streamed, never buffered whole.

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::auth::Auth;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiPath, ApiQuery};
use super::AppState;
use crate::error::{Code, Error};
use crate::media::{ByteRange, MediaError, MAX_MEDIA_BYTES};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/media",
            post(upload).layer(DefaultBodyLimit::max(MAX_MEDIA_BYTES as usize + 1)),
        )
        .route("/api/v1/media/{id}", get(download))
}

impl From<MediaError> for ApiError {
    fn from(e: MediaError) -> Self {
        match e {
            MediaError::NotFound => ApiError::not_found(),
            MediaError::TooLarge(m) => ApiError::new(Code::PayloadTooLarge, m),
            MediaError::Unsupported(m) => ApiError::new(Code::UnsupportedMediaType, m),
            MediaError::Invalid(m) | MediaError::Body(m) => ApiError::invalid(m),
            MediaError::Range { size } => ApiError::new(
                Code::RangeNotSatisfiable,
                format!("the range is outside the media's {size} bytes"),
            ),
            MediaError::Store(e) => Error::from(e).into(),
            MediaError::Objects(_) => ApiError::new(
                Code::StorageError,
                "media storage failure; nothing was stored",
            ),
        }
    }
}

#[derive(Deserialize)]
struct UploadParams {
    filename: Option<String>,
}

async fn upload(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(params): ApiQuery<UploadParams>,
    req: Request,
) -> ApiResult<Response> {
    let media = &s.media;
    let headers = req.headers();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // A body slower than `server.min_body_rate` is the contract's 408, as for the webhook.
    let too_slow = std::sync::atomic::AtomicBool::new(false);
    let body = req.into_body().into_data_stream().map(|chunk| {
        chunk.inspect_err(|e| {
            if super::server::is_too_slow(e) {
                too_slow.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        })
    });
    let uploaded = media
        .upload(
            &caller,
            &content_type,
            params.filename,
            length,
            body,
            s.ctx.now(),
        )
        .await;
    let record = match uploaded {
        Ok(r) => r,
        Err(MediaError::Body(_)) if too_slow.load(std::sync::atomic::Ordering::Relaxed) => {
            return Err(ApiError::new(
                Code::RequestTimeout,
                "the body arrived slower than the server's minimum rate",
            ))
        }
        Err(e) => return Err(e.into()),
    };
    Ok((StatusCode::CREATED, Json(json!({ "id": record.id }))).into_response())
}

/// The one range of `Range: bytes=…`; None (serve it all) for anything else: no header, other
/// units, several ranges, or syntax this does not read (RFC 9110 lets a server ignore those).
fn parse_range(headers: &HeaderMap) -> Option<ByteRange> {
    let v = headers.get(header::RANGE)?.to_str().ok()?.trim();
    let spec = v.strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        return Some(ByteRange::Suffix(b.parse().ok()?));
    }
    let start = a.parse().ok()?;
    let end = if b.is_empty() {
        None
    } else {
        Some(b.parse().ok()?)
    };
    Some(ByteRange::From(start, end))
}

async fn download(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Response {
    let media = &s.media;
    let range = parse_range(&headers);
    let opened = match media.open(&caller, &id, range).await {
        Ok(o) => o,
        Err(MediaError::Range { size }) => {
            let mut resp = ApiError::from(MediaError::Range { size }).into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return resp;
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    let partial = range.is_some();
    let len = opened.range.end - opened.range.start;
    let mut resp = Response::new(Body::from_stream(opened.body));
    *resp.status_mut() = if partial {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&opened.mime_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if partial {
        let cr = format!(
            "bytes {}-{}/{}",
            opened.range.start,
            opened.range.end.saturating_sub(1),
            opened.size
        );
        if let Ok(v) = HeaderValue::from_str(&cr) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(v: &str) -> Option<ByteRange> {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(v).expect("header"));
        parse_range(&h)
    }

    #[test]
    fn ranges_parse() {
        assert_eq!(range("bytes=0-9"), Some(ByteRange::From(0, Some(9))));
        assert_eq!(range("bytes=5-"), Some(ByteRange::From(5, None)));
        assert_eq!(range("bytes=-3"), Some(ByteRange::Suffix(3)));
        assert_eq!(range("bytes=0-1,4-5"), None);
        assert_eq!(range("items=0-1"), None);
        assert_eq!(range("bytes=x-1"), None);
    }
}
