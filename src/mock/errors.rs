//! The mock's error answers: each kind's status and per-style code, the messages of the 400s
//! that several styles share, and the two error body shapes (OpenAI's for chat and responses,
//! DashScope's for native).

use bytes::Bytes;
use hyper::StatusCode;
use serde::Serialize;

use super::wire::{Style, to_json};

pub(crate) const STREAM_ONLY: &str =
    "This model only support stream mode, please enable the stream parameter to access the model.";
pub(crate) const PARTIAL_THINKING: &str = "partial mode is not supported in thinking mode";
pub(crate) const NATIVE_INCREMENTAL: &str =
    "The incremental_output parameter must be \"true\" when enable_thinking is true";
pub(crate) const JSON_WORD: &str = "'messages' must contain the word 'json' in some form, to use \
     'response_format' of type 'json_object'";
pub(crate) const OUTPUT_MODERATION: &str = "Output data may contain inappropriate content.";
pub(crate) const MAX_TOKENS_RANGE: &str = "Range of max_tokens should be [1, 2147483647].";
pub(crate) const THINKING_BUDGET_RANGE: &str =
    "Range of thinking_budget should be [1, 2147483647].";

/// The kinds of error answer, each with a fixed status and per-style code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorAnswer {
    InvalidParameter,
    TooLarge,
    InputModeration,
    OutputModeration,
    InvalidApiKey,
    RateLimited,
    Internal,
}

impl ErrorAnswer {
    pub(crate) fn status(self) -> StatusCode {
        match self {
            ErrorAnswer::InvalidParameter
            | ErrorAnswer::TooLarge
            | ErrorAnswer::InputModeration
            | ErrorAnswer::OutputModeration => StatusCode::BAD_REQUEST,
            ErrorAnswer::InvalidApiKey => StatusCode::UNAUTHORIZED,
            ErrorAnswer::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorAnswer::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// (`type`, `code`) of the OpenAI-style body (chat and responses).
    pub(crate) fn openai(self) -> (&'static str, &'static str) {
        match self {
            ErrorAnswer::InvalidParameter => ("invalid_request_error", "invalid_parameter_error"),
            ErrorAnswer::TooLarge => ("invalid_request_error", "invalid_request_error"),
            ErrorAnswer::InputModeration | ErrorAnswer::OutputModeration => {
                ("data_inspection_failed", "data_inspection_failed")
            }
            ErrorAnswer::InvalidApiKey => ("invalid_request_error", "invalid_api_key"),
            ErrorAnswer::RateLimited => ("limit_requests", "limit_requests"),
            ErrorAnswer::Internal => ("internal_error", "internal_error"),
        }
    }

    /// `code` of the DashScope native body.
    pub(crate) fn native(self) -> &'static str {
        match self {
            ErrorAnswer::InvalidParameter | ErrorAnswer::TooLarge => "InvalidParameter",
            ErrorAnswer::InputModeration | ErrorAnswer::OutputModeration => "DataInspectionFailed",
            ErrorAnswer::InvalidApiKey => "InvalidApiKey",
            ErrorAnswer::RateLimited => "Throttling.RateQuota",
            ErrorAnswer::Internal => "InternalError",
        }
    }

    /// The message when the caller has none of its own.
    pub(crate) fn message(self, style: Style) -> &'static str {
        match self {
            ErrorAnswer::InvalidParameter => {
                "<400> InternalError.Algo.InvalidParameter: mock-triggered invalid parameter"
            }
            ErrorAnswer::TooLarge => "Payload Too Large",
            ErrorAnswer::InputModeration => "Input data may contain inappropriate content.",
            ErrorAnswer::OutputModeration => OUTPUT_MODERATION,
            ErrorAnswer::InvalidApiKey if style == Style::Native => "Invalid API-key provided.",
            ErrorAnswer::InvalidApiKey => "Incorrect API key provided. ",
            ErrorAnswer::RateLimited => "Requests rate limit exceeded, please try again later.",
            ErrorAnswer::Internal => "An internal error has occurred, please try again later.",
        }
    }

    /// The error body in `style`.
    pub(crate) fn body(self, style: Style, message: &str, request_id: &str) -> Bytes {
        match style {
            Style::Chat | Style::Responses => {
                let (kind, code) = self.openai();
                openai_body(message, kind, Some(code), request_id)
            }
            Style::Native => native_body(self.native(), message, request_id),
        }
    }
}

/// The OpenAI-style error object: `{"error":{"message","type","param":null,"code"},
/// "request_id"}`.
#[derive(Serialize)]
pub(crate) struct OpenAiError<'a> {
    error: ErrorInfo<'a>,
    request_id: &'a str,
}

#[derive(Serialize)]
struct ErrorInfo<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<()>,
    code: Option<&'a str>,
}

impl<'a> OpenAiError<'a> {
    pub(crate) fn new(
        message: &'a str,
        kind: &'a str,
        code: Option<&'a str>,
        request_id: &'a str,
    ) -> OpenAiError<'a> {
        OpenAiError {
            error: ErrorInfo {
                message,
                kind,
                param: None,
                code,
            },
            request_id,
        }
    }
}

/// An OpenAI-style error body.
pub(crate) fn openai_body(
    message: &str,
    kind: &str,
    code: Option<&str>,
    request_id: &str,
) -> Bytes {
    to_json(
        &OpenAiError::new(message, kind, code, request_id),
        160 + message.len(),
    )
}

/// The DashScope native error object: `{"request_id", "code", "message"}`.
#[derive(Serialize)]
pub(crate) struct NativeError<'a> {
    pub(crate) request_id: &'a str,
    pub(crate) code: &'a str,
    pub(crate) message: &'a str,
}

/// The native error body.
pub(crate) fn native_body(code: &str, message: &str, request_id: &str) -> Bytes {
    to_json(
        &NativeError {
            request_id,
            code,
            message,
        },
        100 + message.len(),
    )
}
