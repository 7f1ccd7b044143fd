//! The API styles a request can be sent in. A leaf, so that settings can name a style without
//! depending on the code that builds and reads each one (`style` and the style modules).

/// The API style requests are sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// OpenAI-compatible Chat Completions.
    Chat,
    /// OpenAI-compatible Responses.
    Responses,
    /// DashScope native text generation.
    Dashscope,
}
