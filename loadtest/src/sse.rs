//! Incremental parser for `text/event-stream` (Server-Sent Events).
//!
//! Feed it raw chunks as they arrive (they may split lines anywhere, even inside a UTF-8
//! character); it returns complete events. Follows the SSE rules that matter here: lines end in
//! `\n`, `\r\n` or `\r`; `field: value` (one optional space after the colon is dropped); several
//! `data:` lines are joined with `\n`; a blank line dispatches the event; lines starting with `:`
//! are comments (keep-alives). A single line longer than `MAX_LINE` is discarded so a misbehaving
//! server cannot make us buffer without bound.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The joined `data:` lines.
    pub data: String,
}

const MAX_LINE: usize = 8 * 1024 * 1024;

/// Parser state.
#[derive(Default)]
pub struct SseParser {
    line: Vec<u8>,
    skipping: bool,
    last_was_cr: bool,
    event: Option<String>,
    data: Vec<String>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds a chunk; returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for &b in chunk {
            if self.last_was_cr && b == b'\n' {
                // Second half of a CRLF: the line already ended at the CR.
                self.last_was_cr = false;
                continue;
            }
            self.last_was_cr = b == b'\r';
            if b == b'\n' || b == b'\r' {
                let line = std::mem::take(&mut self.line);
                if std::mem::take(&mut self.skipping) {
                    continue;
                }
                if let Some(ev) = self.line_done(&line) {
                    out.push(ev);
                }
            } else if !self.skipping {
                if self.line.len() >= MAX_LINE {
                    self.line.clear();
                    self.skipping = true;
                } else {
                    self.line.push(b);
                }
            }
        }
        out
    }

    fn line_done(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            let event = self.event.take();
            if self.data.is_empty() {
                return None;
            }
            let data = std::mem::take(&mut self.data).join("\n");
            return Some(SseEvent { event, data });
        }
        if line[0] == b':' {
            return None;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.find(':') {
            Some(i) => {
                let v = &text[i + 1..];
                (&text[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (&text[..], ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => self.data.push(value.to_string()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_split_chunks() {
        let mut p = SseParser::new();
        let stream = b": keep-alive\n\nevent: conversation.created\ndata: {\"type\":\"conversation.created\"}\n\nevent: x\r\ndata: a\r\ndata: b\r\n\r\n";
        let mut events = Vec::new();
        for chunk in stream.chunks(3) {
            events.extend(p.push(chunk));
        }
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: Some("conversation.created".into()),
                    data: "{\"type\":\"conversation.created\"}".into()
                },
                SseEvent {
                    event: Some("x".into()),
                    data: "a\nb".into()
                },
            ]
        );
    }

    #[test]
    fn utf8_split_and_no_space() {
        let mut p = SseParser::new();
        let s = "data:grüße\n\n".as_bytes();
        let mut events = p.push(&s[..7]);
        events.extend(p.push(&s[7..]));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "grüße");
        assert_eq!(events[0].event, None);
    }

    #[test]
    fn lone_cr_line_endings() {
        let mut p = SseParser::new();
        let ev = p.push(b"data: 1\r\rdata: 2\r\r");
        assert_eq!(ev.len(), 2);
    }
}
