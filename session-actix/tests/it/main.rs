//! session-actix's integration tests: the scenarios every integration runs
//! (`session_testing::scenarios`) through `actix_web::test`, and the cookies an axum service
//! and an actix one exchange under one key.

mod scenarios;
mod shared_cookies;
