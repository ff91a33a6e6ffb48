//! Meta's limits on media a business sends: which types each kind takes and how large a file
//! may be. Checked before an upload is accepted (from `Content-Length`, then while the bytes
//! stream in), so nothing Meta would refuse is ever stored or queued.

/// What kind of WhatsApp message a media becomes, by its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Image,
    Audio,
    Video,
    Document,
    Sticker,
}

impl MediaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Audio => "audio",
            Self::Video => "video",
            Self::Document => "document",
            Self::Sticker => "sticker",
        }
    }

    /// Meta's size limit for this kind, in bytes.
    pub fn max_bytes(self) -> u64 {
        const MB: u64 = 1024 * 1024;
        match self {
            Self::Image => 5 * MB,
            Self::Audio | Self::Video => 16 * MB,
            Self::Document => 100 * MB,
            Self::Sticker => 500 * 1024,
        }
    }
}

/// The largest file of any kind (a document): the upload route's body limit, and the most a
/// fetch of inbound media will store.
pub const MAX_MEDIA_BYTES: u64 = 100 * 1024 * 1024;

/// Types Meta accepts as documents (besides which it takes none).
const DOCUMENT_TYPES: [&str; 8] = [
    "text/plain",
    "application/pdf",
    "application/msword",
    "application/vnd.ms-excel",
    "application/vnd.ms-powerpoint",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
];

/// The kind a `Content-Type` makes (parameters such as `; codecs=opus` ignored, case-insensitive),
/// or None when Meta takes no media of that type.
pub fn kind_of(content_type: &str) -> Option<MediaKind> {
    let essence = essence(content_type);
    Some(match essence.as_str() {
        "image/jpeg" | "image/png" => MediaKind::Image,
        "image/webp" => MediaKind::Sticker,
        "audio/aac" | "audio/amr" | "audio/mpeg" | "audio/mp4" | "audio/ogg" => MediaKind::Audio,
        "video/mp4" | "video/3gpp" => MediaKind::Video,
        t if DOCUMENT_TYPES.contains(&t) => MediaKind::Document,
        _ => return None,
    })
}

/// The type without parameters, lower case (`Audio/OGG; codecs=opus` → `audio/ogg`).
pub fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_map_to_kinds_and_limits() {
        assert_eq!(kind_of("image/jpeg"), Some(MediaKind::Image));
        assert_eq!(kind_of("Audio/OGG; codecs=opus"), Some(MediaKind::Audio));
        assert_eq!(kind_of("application/pdf"), Some(MediaKind::Document));
        assert_eq!(
            kind_of("image/webp").map(MediaKind::max_bytes),
            Some(500 * 1024)
        );
        assert_eq!(kind_of("image/gif"), None);
        assert_eq!(kind_of("video/quicktime"), None);
        assert_eq!(kind_of(""), None);
        assert_eq!(MediaKind::Document.max_bytes(), MAX_MEDIA_BYTES);
    }
}
