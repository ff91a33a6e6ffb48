//! A message's media as Meta's webhook describes it (`image`, `audio`, `video`, `document`,
//! `sticker`: `id`, `mime_type`, `sha256`, `caption`, `filename`).
//!
//! Kept apart from the webhook parser on purpose: the typed parse of every message type is
//! another change; until it gives messages their media, the conversation actor asks this
//! function, and only when the message has none.

use serde_json::Value;

use crate::domain::message::MediaInfo;

/// Meta's message types that carry media.
pub const MEDIA_TYPES: [&str; 5] = ["image", "audio", "video", "document", "sticker"];

/// The media of a message of type `kind` whose JSON is `raw`, if it has one.
pub fn media_of(kind: &str, raw: &str) -> Option<MediaInfo> {
    if !MEDIA_TYPES.contains(&kind) {
        return None;
    }
    let v: Value = serde_json::from_str(raw).ok()?;
    let m = v.get(kind)?;
    let text = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
    let id = text("id").filter(|id| !id.is_empty())?;
    Some(MediaInfo {
        id,
        mime_type: text("mime_type").unwrap_or_else(|| "application/octet-stream".into()),
        sha256: text("sha256"),
        size: m.get("file_size").and_then(Value::as_u64),
        filename: text("filename"),
        caption: text("caption"),
        downloaded: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_media_objects() {
        let raw = r#"{"type":"image","image":{"caption":"Taj","mime_type":"image/jpeg","sha256":"abc=","id":"1003"}}"#;
        let m = media_of("image", raw).expect("media");
        assert_eq!(m.id, "1003");
        assert_eq!(m.caption.as_deref(), Some("Taj"));
        assert!(!m.downloaded);
        assert_eq!(media_of("text", raw), None);
        assert_eq!(media_of("image", r#"{"image":{}}"#), None);
    }
}
