//! Error codes (in `error` frames and HTTP error bodies) and WebSocket close codes.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The `code` of an `error` frame or of an HTTP error body.
///
/// Serialized in `snake_case` (`"bad_request"`, `"too_large"`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Unknown `type`, bad JSON, missing or wrong-typed fields, invalid ids or content.
    BadRequest,
    /// No valid credentials.
    Unauthorized,
    /// Valid credentials that do not allow this.
    Forbidden,
    /// The thing asked for does not exist (or belongs to someone else).
    NotFound,
    /// A reply is still streaming in this conversation.
    Busy,
    /// A frame, body or content over its size limit.
    TooLarge,
    /// The caller sends too fast.
    RateLimited,
    /// The store cannot be reached; nothing was changed.
    Unavailable,
    /// The store is reachable but has no room for writes (out of memory or
    /// disk); nothing was changed. Retry later.
    StoreFull,
    /// A bug or an unexpected failure on the server.
    Internal,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: [Self; 10] = [
        Self::BadRequest,
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotFound,
        Self::Busy,
        Self::TooLarge,
        Self::RateLimited,
        Self::Unavailable,
        Self::StoreFull,
        Self::Internal,
    ];

    /// The code as it appears on the wire, e.g. `"bad_request"`.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::Busy => "busy",
            Self::TooLarge => "too_large",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::StoreFull => "store_full",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status that carries this code on the HTTP API.
    #[must_use]
    pub fn http_status(&self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::Busy => 409,
            Self::TooLarge => 413,
            Self::RateLimited => 429,
            Self::Unavailable | Self::StoreFull => 503,
            Self::Internal => 500,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the server closes a WebSocket, with its close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CloseCode {
    /// `1000`: normal closure.
    Normal,
    /// `1001`: the server is shutting down; reconnect elsewhere and resume.
    GoingAway,
    /// `1007`: a text frame was not valid UTF-8 (RFC 6455 §8.1 requires
    /// failing the connection).
    InvalidData,
    /// `1008`: policy violation.
    Policy,
    /// `1009`: an inbound frame was over the frame size limit.
    TooLarge,
    /// `4000`: no traffic within the idle timeout.
    IdleTimeout,
    /// `4008`: the client reads too slowly to keep up; reconnect and resume, nothing is lost.
    TooSlow,
}

impl CloseCode {
    /// Every close code, in declaration order.
    pub const ALL: [Self; 7] = [
        Self::Normal,
        Self::GoingAway,
        Self::InvalidData,
        Self::Policy,
        Self::TooLarge,
        Self::IdleTimeout,
        Self::TooSlow,
    ];

    /// The numeric WebSocket close code.
    #[must_use]
    pub fn code(&self) -> u16 {
        match self {
            Self::Normal => 1000,
            Self::GoingAway => 1001,
            Self::InvalidData => 1007,
            Self::Policy => 1008,
            Self::TooLarge => 1009,
            Self::IdleTimeout => 4000,
            Self::TooSlow => 4008,
        }
    }

    /// A short reason text for the close frame (well under the 123-byte limit).
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::GoingAway => "server shutting down",
            Self::InvalidData => "invalid UTF-8",
            Self::Policy => "policy violation",
            Self::TooLarge => "frame too large",
            Self::IdleTimeout => "idle timeout",
            Self::TooSlow => "too slow",
        }
    }

    /// The close code with number `code`, if it is one of ours.
    #[must_use]
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_serialize_as_their_wire_names() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: Result<ErrorCode, _> = serde_json::from_str(&json);
            assert_eq!(back.ok(), Some(code));
        }
    }

    #[test]
    fn error_codes_map_to_http_statuses() {
        let statuses: Vec<u16> = ErrorCode::ALL.iter().map(ErrorCode::http_status).collect();
        assert_eq!(statuses, [400, 401, 403, 404, 409, 413, 429, 503, 503, 500]);
    }

    #[test]
    fn close_codes_have_protocol_numbers() {
        let codes: Vec<u16> = CloseCode::ALL.iter().map(CloseCode::code).collect();
        assert_eq!(codes, [1000, 1001, 1007, 1008, 1009, 4000, 4008]);
        for c in CloseCode::ALL {
            assert_eq!(CloseCode::from_code(c.code()), Some(c));
            assert!(!c.reason().is_empty() && c.reason().len() <= 123);
        }
        assert_eq!(CloseCode::from_code(1234), None);
    }
}
