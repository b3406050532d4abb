//! `GET /s/{token}`: the public, read-only page of a share link. Unknown tokens (and every
//! token while sharing is off) get a 404 page, revoked or expired links a 410 page. Every
//! answer carries the same strict headers: no script may run, only the page's own inline
//! stylesheet applies, nothing is loaded from elsewhere, no referrer leaves, search engines
//! keep out, and nothing is cached (a revoked link must stop working at once).

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;

use super::render::{self, SharePage};
use super::{snapshot, store};
use crate::context::App;
use crate::rate_limit::Refusal;
use crate::rpc::RequestInfo;

pub fn routes(app: App) -> axum::Router {
    axum::Router::new()
        .route("/s/{token}", get(share_page))
        .with_state(app)
}

const VIEW_WINDOW: Duration = Duration::from_secs(60);

async fn share_page(
    State(app): State<App>,
    Path(token): Path<String>,
    extensions: Extensions,
    headers: HeaderMap,
) -> Response {
    if !app.config.sharing.enabled {
        return not_found();
    }
    let request = RequestInfo::of_route(&extensions, headers, app.config.trust_proxy);
    if let Err(refusal) = count_view(&app, &request).await {
        return refused(refusal);
    }
    if !snapshot::looks_like_token(&token) {
        return not_found();
    }
    let hash = snapshot::token_hash(&app.auth.token_mac, &token);
    let share = match store::find_by_token_hash(&app.db, &hash).await {
        Ok(Some(share)) => share,
        Ok(None) => return not_found(),
        Err(error) => {
            tracing::error!(%error, "could not look up a share link");
            return unavailable();
        }
    };
    let now = Utc::now();
    if share.revoked_at.is_some() || share.expires_at.is_some_and(|at| at <= now) {
        return answer(
            StatusCode::GONE,
            render::status_page(
                "This link no longer works",
                "Its owner revoked it, or it has expired.",
            ),
        );
    }
    // Rendering a long snapshot takes a while (milliseconds per message): off the async
    // runtime, so other requests keep flowing meanwhile.
    let rendered = tokio::task::spawn_blocking(move || {
        let messages = snapshot::from_json(share.messages);
        render::share_page(&SharePage {
            title: &share.title,
            shared_at: share.created_at,
            messages: &messages,
        })
    })
    .await;
    match rendered {
        Ok(html) => answer(StatusCode::OK, html),
        Err(error) => {
            tracing::error!(%error, "could not render a share page");
            unavailable()
        }
    }
}

fn unavailable() -> Response {
    answer(
        StatusCode::SERVICE_UNAVAILABLE,
        render::status_page(
            "Try again shortly",
            "This conversation cannot be shown right now.",
        ),
    )
}

/// Counts a view against the client IP's budget (`ALIAS_SHARE_PAGE_LIMIT_PER_MINUTE`), so
/// nobody can walk the token space or hammer the database through this page.
async fn count_view(app: &App, request: &RequestInfo) -> Result<(), Refusal> {
    app.auth
        .rate_limits
        .hit(
            &format!("ip:share_page:{}", request.client_ip),
            app.config.sharing.page_views_per_minute,
            VIEW_WINDOW,
        )
        .await
}

fn refused(refusal: Refusal) -> Response {
    match refusal {
        Refusal::Limited(retry) => {
            let mut response = answer(
                StatusCode::TOO_MANY_REQUESTS,
                render::status_page(
                    "Too many views",
                    &format!("Try again in {} seconds.", retry.0),
                ),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry.0));
            response
        }
        Refusal::Unavailable => unavailable(),
    }
}

fn not_found() -> Response {
    answer(
        StatusCode::NOT_FOUND,
        render::status_page(
            "No such conversation",
            "This link does not lead to a shared conversation. Check that it was copied whole.",
        ),
    )
}

fn answer(status: StatusCode, html: String) -> Response {
    let mut response = (status, Html(html)).into_response();
    let headers = response.headers_mut();
    let policy = format!(
        "default-src 'none'; style-src {}; img-src 'none'; base-uri 'none'; \
         form-action 'none'; frame-ancestors 'none'",
        render::style_hash()
    );
    if let Ok(policy) = HeaderValue::from_str(&policy) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    for (name, value) in [
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.insert(
        "x-robots-tag",
        HeaderValue::from_static("noindex, nofollow, noarchive"),
    );
    response
}
