//! Meta's outbound `interactive` object (reply buttons or a list), checked before it is stored.
//!
//! The agent API passes Meta's object through as given, so the checks here are Meta's own
//! limits: an object the Graph API would refuse is refused with 400 before anything is stored or
//! sent, not discovered as a failed message later. Only `button` and `list` are accepted.
//!
//! Limits (Meta's Cloud API reference): body text 1–1024 characters for buttons, 1–4096 for a
//! list; footer text ≤ 60; a text header ≤ 60. Buttons: 1–3, each `type: "reply"` with a unique
//! `id` (≤ 256) and a unique `title` (1–20). List: `action.button` 1–20, 1–10 sections, 1–10
//! rows in all, each row a unique `id` (≤ 200), a `title` (1–24) and an optional `description`
//! (≤ 72); with more than one section every section has a `title` (≤ 24).

use std::collections::HashSet;

use serde_json::Value;

/// A checked interactive object: its JSON as sent to Meta, and its body text (what the message
/// shows as `text`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub json: String,
    pub summary: String,
}

pub const MAX_BUTTONS: usize = 3;
pub const MAX_ROWS: usize = 10;
pub const MAX_SECTIONS: usize = 10;

/// Checks Meta's `interactive` object; the error names the first problem found.
pub fn check(v: &Value) -> Result<Checked, String> {
    let obj = v.as_object().ok_or("\"interactive\" must be an object")?;
    let kind = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or("\"interactive.type\" must be \"button\" or \"list\"")?;
    let body_max = match kind {
        "button" => 1024,
        "list" => 4096,
        other => {
            return Err(format!(
                "\"interactive.type\" {other:?} is not supported; use \"button\" or \"list\""
            ))
        }
    };
    let body = text_at(v, "/body/text", "interactive.body.text", 1, body_max)?;
    if v.get("footer").is_some() {
        text_at(v, "/footer/text", "interactive.footer.text", 1, 60)?;
    }
    if let Some(h) = v.get("header") {
        check_header(kind, h)?;
    }
    match kind {
        "button" => check_buttons(v)?,
        _ => check_list(v)?,
    }
    Ok(Checked {
        json: v.to_string(),
        summary: body,
    })
}

fn check_header(kind: &str, h: &Value) -> Result<(), String> {
    let t = h
        .get("type")
        .and_then(Value::as_str)
        .ok_or("\"interactive.header.type\" is required")?;
    match (kind, t) {
        (_, "text") => text_at(h, "/text", "interactive.header.text", 1, 60).map(|_| ()),
        ("button", "image" | "video" | "document") => match h.get(t) {
            Some(Value::Object(_)) => Ok(()),
            _ => Err(format!("\"interactive.header.{t}\" must be an object")),
        },
        _ => Err(format!(
            "\"interactive.header.type\" {t:?} is not allowed for a {kind}"
        )),
    }
}

fn check_buttons(v: &Value) -> Result<(), String> {
    let buttons = v
        .pointer("/action/buttons")
        .and_then(Value::as_array)
        .ok_or("\"interactive.action.buttons\" must be an array")?;
    if buttons.is_empty() || buttons.len() > MAX_BUTTONS {
        return Err(format!(
            "\"interactive.action.buttons\" must hold 1 to {MAX_BUTTONS} buttons, not {}",
            buttons.len()
        ));
    }
    let (mut ids, mut titles) = (HashSet::new(), HashSet::new());
    for (i, b) in buttons.iter().enumerate() {
        if b.get("type").and_then(Value::as_str) != Some("reply") {
            return Err(format!(
                "\"interactive.action.buttons[{i}].type\" must be \"reply\""
            ));
        }
        let id = text_at(b, "/reply/id", &format!("buttons[{i}].reply.id"), 1, 256)?;
        let title = text_at(
            b,
            "/reply/title",
            &format!("buttons[{i}].reply.title"),
            1,
            20,
        )?;
        if !ids.insert(id) {
            return Err(format!("buttons[{i}].reply.id is used twice"));
        }
        if !titles.insert(title) {
            return Err(format!("buttons[{i}].reply.title is used twice"));
        }
    }
    Ok(())
}

fn check_list(v: &Value) -> Result<(), String> {
    text_at(v, "/action/button", "interactive.action.button", 1, 20)?;
    let sections = v
        .pointer("/action/sections")
        .and_then(Value::as_array)
        .ok_or("\"interactive.action.sections\" must be an array")?;
    if sections.is_empty() || sections.len() > MAX_SECTIONS {
        return Err(format!(
            "\"interactive.action.sections\" must hold 1 to {MAX_SECTIONS} sections, not {}",
            sections.len()
        ));
    }
    let mut ids = HashSet::new();
    let mut rows_total = 0;
    for (i, s) in sections.iter().enumerate() {
        if sections.len() > 1 || s.get("title").is_some() {
            text_at(s, "/title", &format!("sections[{i}].title"), 1, 24)?;
        }
        let rows = s
            .get("rows")
            .and_then(Value::as_array)
            .filter(|r| !r.is_empty())
            .ok_or_else(|| format!("sections[{i}].rows must be a non-empty array"))?;
        rows_total += rows.len();
        if rows_total > MAX_ROWS {
            return Err(format!("a list holds at most {MAX_ROWS} rows in all"));
        }
        for (j, r) in rows.iter().enumerate() {
            let at = format!("sections[{i}].rows[{j}]");
            let id = text_at(r, "/id", &format!("{at}.id"), 1, 200)?;
            text_at(r, "/title", &format!("{at}.title"), 1, 24)?;
            if r.get("description").is_some() {
                text_at(r, "/description", &format!("{at}.description"), 0, 72)?;
            }
            if !ids.insert(id) {
                return Err(format!("{at}.id is used twice"));
            }
        }
    }
    Ok(())
}

/// The string at `pointer`, not blank, `min` to `max` characters long.
fn text_at(v: &Value, pointer: &str, name: &str, min: usize, max: usize) -> Result<String, String> {
    let s = v
        .pointer(pointer)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("\"{name}\" must be a string"))?;
    let n = s.chars().count();
    if (min > 0 && s.trim().is_empty()) || n < min || n > max {
        return Err(format!("\"{name}\" must be {min} to {max} characters"));
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn buttons(n: usize) -> Value {
        let bs: Vec<Value> = (0..n)
            .map(|i| json!({"type": "reply", "reply": {"id": format!("b{i}"), "title": format!("Option {i}")}}))
            .collect();
        json!({"type": "button", "body": {"text": "Pick one"}, "action": {"buttons": bs}})
    }

    fn list(rows: usize) -> Value {
        let rs: Vec<Value> = (0..rows)
            .map(|i| json!({"id": format!("r{i}"), "title": format!("Row {i}")}))
            .collect();
        json!({"type": "list", "body": {"text": "Choose"}, "action": {"button": "Menu",
               "sections": [{"title": "All", "rows": rs}]}})
    }

    #[test]
    fn accepts_meta_shaped_buttons_and_lists() {
        let c = check(&buttons(3)).expect("3 buttons");
        assert_eq!(c.summary, "Pick one");
        assert_eq!(
            serde_json::from_str::<Value>(&c.json).expect("json"),
            buttons(3)
        );
        check(&list(10)).expect("10 rows");
        let mut h = buttons(1);
        h["header"] = json!({"type": "image", "image": {"link": "https://example.com/a.png"}});
        h["footer"] = json!({"text": "Thanks"});
        check(&h).expect("header and footer");
    }

    #[test]
    fn refuses_what_meta_would_refuse() {
        let mut no_body = buttons(1);
        no_body["body"] = json!({});
        let mut long_title = buttons(1);
        long_title["action"]["buttons"][0]["reply"]["title"] = json!("x".repeat(21));
        let mut twice = buttons(2);
        twice["action"]["buttons"][1]["reply"]["id"] = json!("b0");
        let mut list_header = list(1);
        list_header["header"] = json!({"type": "image", "image": {}});
        for (bad, why) in [
            (json!("text"), "not an object"),
            (json!({"type": "product", "body": {"text": "x"}}), "type"),
            (no_body, "body.text"),
            (buttons(0), "no buttons"),
            (buttons(4), "4 buttons"),
            (long_title, "title over 20"),
            (twice, "duplicate id"),
            (list(11), "11 rows"),
            (list(0), "no rows"),
            (list_header, "image header on a list"),
        ] {
            assert!(check(&bad).is_err(), "{why}: {bad}");
        }
    }
}
