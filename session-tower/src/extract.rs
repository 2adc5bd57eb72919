//! The axum extractor (feature `axum`).

use axum_core::extract::FromRequestParts;
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;

use crate::{LazySession, Session, SessionRejection};

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let lazy = parts
            .extensions
            .get::<LazySession>()
            .ok_or(SessionRejection::MissingLayer)?;
        lazy.get().await.map(Session)
    }
}

impl IntoResponse for SessionRejection {
    fn into_response(self) -> Response {
        (self.status(), self.to_string()).into_response()
    }
}
