//! The upload form of the Files API: `multipart/form-data` with the fields `purpose` (which
//! must be `batch`) and `file` (a filename and the JSONL bytes), read with multer.

use bytes::Bytes;
use hyper::StatusCode;

use super::store::ApiError;

/// The file of an upload form.
pub(super) struct Upload {
    pub filename: String,
    pub bytes: Bytes,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

/// Reads the form in `body`, whose `Content-Type` is `content_type`.
pub(super) async fn read_form(content_type: Option<&str>, body: Bytes) -> Result<Upload, ApiError> {
    let boundary = content_type
        .and_then(|ct| multer::parse_boundary(ct).ok())
        .ok_or_else(|| bad("The body must be multipart/form-data with a boundary."))?;
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let broken = |e: multer::Error| bad(format!("The multipart body cannot be read: {e}"));
    let mut purpose = None;
    let mut file = None;
    while let Some(field) = form.next_field().await.map_err(broken)? {
        match field.name() {
            Some("purpose") => purpose = Some(field.text().await.map_err(broken)?),
            Some("file") => {
                let filename = field.file_name().unwrap_or("upload.jsonl").to_owned();
                file = Some(Upload {
                    filename,
                    bytes: field.bytes().await.map_err(broken)?,
                });
            }
            _ => {}
        }
    }
    match purpose.as_deref() {
        Some("batch") => {}
        Some(other) => {
            return Err(bad(format!(
                "Invalid purpose {other:?}: this endpoint takes only 'batch'."
            )));
        }
        None => return Err(bad("Missing required parameter: 'purpose'.")),
    }
    file.ok_or_else(|| bad("Missing required parameter: 'file'."))
}
