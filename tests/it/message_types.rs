//! Every inbound message type of Meta's webhook reference, typed and shown through the API:
//! `content`, `media`, `text`; replies (`reply_to`), reactions, referrals, forwarding; a status
//! callback's `pricing` and the billable-messages count; all of it across restarts.

use crate::common::*;
use serde_json::{json, Value};

/// A message of `kind` whose `kind` part is `part`, with `extra` keys merged in.
fn msg(wamid: &str, from: &str, ts: i64, kind: &str, part: Value) -> Value {
    let mut m = json!({"from": from, "id": wamid, "timestamp": ts.to_string(), "type": kind});
    m[kind] = part;
    m
}

fn webhook_of(messages: Vec<Value>) -> Value {
    envelope(vec![entry(vec![change(N1, messages, vec![])])])
}

fn by_wamid<'a>(msgs: &'a [Value], w: &str) -> &'a Value {
    msgs.iter()
        .find(|m| m["wamid"] == json!(w))
        .unwrap_or_else(|| panic!("{w} missing from {msgs:#?}"))
}

/// One webhook with one message of every type: each is kept, with the right type, summary text,
/// typed content and media; the unknown one verbatim; and all of it again after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_inbound_type_is_shown_typed() {
    let mut tb = TB::start().await;
    let cust = customer();
    let t = now() - 100;
    let w: Vec<String> = (0..18).map(|_| wamid()).collect();
    let sha = "SfInY0gGKTsJlUWbwxC1k+FAD0FZHvzwfpvO0zX0GUI=";
    let contacts = json!([{
        "addresses": [{"city": "Menlo Park", "country": "United States", "country_code": "us",
                       "state": "CA", "street": "1 Hacker Way", "type": "WORK", "zip": "94025"}],
        "birthday": "2012-08-18",
        "emails": [{"email": "kerry@example.com", "type": "WORK"}],
        "name": {"first_name": "Kerry", "last_name": "Fisher", "formatted_name": "Kerry Fisher"},
        "org": {"company": "Example Inc", "title": "Manager"},
        "phones": [{"phone": "+1 (650) 555-1234", "wa_id": "16505551234", "type": "WORK"}],
        "urls": [{"url": "https://www.example.com", "type": "WORK"}]
    }]);
    let order = json!({"catalog_id": "194836987003835", "text": "Deliver by Friday please",
        "product_items": [{"product_retailer_id": "di9ozbzfi4", "quantity": 2,
                           "item_price": 30, "currency": "USD"}]});
    let unknown = json!({"from": cust, "id": w[17], "timestamp": (t + 17).to_string(),
        "type": "hologram", "hologram": {"frames": [1, 2, {"z": null}], "colour": "teal"},
        "brand_new_field": true});
    let messages = vec![
        msg(
            &w[0],
            &cust,
            t,
            "text",
            json!({"body": "Does it come in another color?"}),
        ),
        msg(
            &w[1],
            &cust,
            t + 1,
            "image",
            json!({"caption": "Taj Mahal", "mime_type": "image/jpeg",
            "sha256": sha, "id": "1003383421387256",
            "url": "https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1"}),
        ),
        msg(
            &w[2],
            &cust,
            t + 2,
            "audio",
            json!({"mime_type": "audio/ogg; codecs=opus",
            "sha256": sha, "id": "2003383421387256", "voice": true}),
        ),
        msg(
            &w[3],
            &cust,
            t + 3,
            "video",
            json!({"caption": "unboxing", "mime_type": "video/mp4",
            "sha256": sha, "id": "3003383421387256"}),
        ),
        msg(
            &w[4],
            &cust,
            t + 4,
            "document",
            json!({"filename": "invoice-0042.pdf",
            "mime_type": "application/pdf", "sha256": sha, "id": "4003383421387256"}),
        ),
        msg(
            &w[5],
            &cust,
            t + 5,
            "sticker",
            json!({"mime_type": "image/webp", "sha256": sha,
            "id": "5003383421387256", "animated": true}),
        ),
        msg(
            &w[6],
            &cust,
            t + 6,
            "location",
            json!({"latitude": 37.483307, "longitude": -122.148981,
            "name": "Pablo Morales", "address": "1 Hacker Way, Menlo Park, CA 94025",
            "url": "https://www.example.com"}),
        ),
        msg(&w[7], &cust, t + 7, "contacts", contacts.clone()),
        msg(
            &w[8],
            &cust,
            t + 8,
            "interactive",
            json!({"type": "button_reply",
            "button_reply": {"id": "reschedule-yes", "title": "Yes, reschedule"}}),
        ),
        msg(
            &w[9],
            &cust,
            t + 9,
            "interactive",
            json!({"type": "list_reply",
            "list_reply": {"id": "slot-tue-9", "title": "Tuesday 9:00", "description": "Morning slot"}}),
        ),
        msg(
            &w[10],
            &cust,
            t + 10,
            "interactive",
            json!({"type": "nfm_reply",
            "nfm_reply": {"name": "flow", "body": "Sent",
                          "response_json": "{\"flow_token\":\"FT-1\",\"rating\":\"5\"}"}}),
        ),
        msg(
            &w[11],
            &cust,
            t + 11,
            "button",
            json!({"payload": "STOP_PROMOS", "text": "Stop promotions"}),
        ),
        msg(&w[12], &cust, t + 12, "order", order.clone()),
        msg(
            &w[13],
            &cust,
            t + 13,
            "system",
            json!({"body": "Kerry's security code changed",
            "identity": "acknowledged", "type": "customer_identity_changed"}),
        ),
        json!({"from": cust, "id": w[14], "timestamp": (t + 14).to_string(), "type": "unsupported",
               "errors": [{"code": 131051, "title": "Message type unknown",
                           "message": "Message type unknown",
                           "error_data": {"details": "Message type is currently not supported"}}],
               "unsupported": {"type": "edit"}}),
        msg(
            &w[15],
            &cust,
            t + 15,
            "image",
            json!({"mime_type": "image/png", "sha256": sha,
            "id": "6003383421387256"}),
        ),
        msg(
            &w[16],
            &cust,
            t + 16,
            "text",
            json!({"body": "second text"}),
        ),
        unknown.clone(),
    ];
    assert_eq!(tb.webhook(&webhook_of(messages)).await, 200);
    let id = tb.conv_id(N1, &cust).await;
    let msgs = tb.messages(&id).await;
    assert_eq!(msgs.len(), 18, "{msgs:#?}");

    let m = |i: usize| by_wamid(&msgs, &w[i]).clone();
    let expect = |i: usize, kind: &str, text: Value, content: Value| {
        let got = m(i);
        assert_eq!(got["type"], json!(kind), "{got:#}");
        assert_eq!(got["text"], text, "{got:#}");
        assert_eq!(got["content"], content, "{got:#}");
        assert_eq!(got["direction"], json!("inbound"));
        assert_eq!(got["status"], json!("received"));
        assert_eq!(got["reactions"], json!([]));
        assert!(got["reply_to"].is_null());
        assert_eq!(got["forwarded"], json!(false));
    };
    let null = Value::Null;
    expect(
        0,
        "text",
        json!("Does it come in another color?"),
        null.clone(),
    );
    expect(1, "image", json!("Taj Mahal"), null.clone());
    expect(
        2,
        "audio",
        null.clone(),
        json!({"type": "audio", "voice": true}),
    );
    expect(3, "video", json!("unboxing"), null.clone());
    expect(4, "document", json!("invoice-0042.pdf"), null.clone());
    expect(
        5,
        "sticker",
        null.clone(),
        json!({"type": "sticker", "animated": true}),
    );
    expect(
        6,
        "location",
        json!("Pablo Morales"),
        json!({"type": "location", "latitude": 37.483307, "longitude": -122.148981,
               "name": "Pablo Morales", "address": "1 Hacker Way, Menlo Park, CA 94025",
               "url": "https://www.example.com"}),
    );
    expect(
        7,
        "contacts",
        json!("Kerry Fisher"),
        json!({"type": "contacts", "contacts": contacts}),
    );
    expect(
        8,
        "interactive",
        json!("Yes, reschedule"),
        json!({"type": "button_reply", "id": "reschedule-yes", "title": "Yes, reschedule"}),
    );
    expect(
        9,
        "interactive",
        json!("Tuesday 9:00"),
        json!({"type": "list_reply", "id": "slot-tue-9", "title": "Tuesday 9:00",
               "description": "Morning slot"}),
    );
    expect(
        10,
        "interactive",
        json!("Sent"),
        json!({"type": "nfm_reply", "name": "flow", "body": "Sent",
               "response_json": "{\"flow_token\":\"FT-1\",\"rating\":\"5\"}"}),
    );
    expect(
        11,
        "button",
        json!("Stop promotions"),
        json!({"type": "button", "payload": "STOP_PROMOS", "text": "Stop promotions"}),
    );
    expect(
        12,
        "order",
        json!("Deliver by Friday please"),
        json!({"type": "order", "order": order}),
    );
    expect(
        13,
        "system",
        json!("Kerry's security code changed"),
        json!({"type": "system", "kind": "customer_identity_changed",
               "body": "Kerry's security code changed"}),
    );
    expect(
        14,
        "unsupported",
        null.clone(),
        json!({"type": "unsupported", "kind": "edit", "errors": [{"code": 131051,
               "title": "Message type unknown", "message": "Message type unknown",
               "error_data": {"details": "Message type is currently not supported"}}]}),
    );
    expect(15, "image", null.clone(), null.clone());
    expect(17, "hologram", null.clone(), null.clone());

    // Media: Meta's id, type and digest; not downloaded yet (that is the media fetcher's).
    let media = |i: usize| m(i)["media"].clone();
    assert_eq!(
        media(1),
        json!({"id": "1003383421387256", "mime_type": "image/jpeg", "sha256": sha,
               "size": null, "caption": "Taj Mahal", "downloaded": false})
    );
    assert_eq!(media(2)["id"], json!("2003383421387256"));
    assert_eq!(media(2)["mime_type"], json!("audio/ogg; codecs=opus"));
    assert_eq!(media(3)["caption"], json!("unboxing"));
    assert_eq!(
        media(4),
        json!({"id": "4003383421387256", "mime_type": "application/pdf", "sha256": sha,
               "size": null, "filename": "invoice-0042.pdf", "downloaded": false})
    );
    assert_eq!(media(5)["mime_type"], json!("image/webp"));
    assert_eq!(media(15)["id"], json!("6003383421387256"));
    for i in [0, 6, 7, 8, 12, 14, 17] {
        assert!(m(i).get("media").is_none(), "{:#}", m(i));
    }
    // The unknown type is kept verbatim; every message keeps its original JSON.
    assert_eq!(m(17)["raw"], unknown);
    assert_eq!(m(7)["raw"]["contacts"], contacts);

    // Everything is durable: a crash and a restart show the same messages.
    tb.crash_and_restart().await;
    assert_eq!(tb.messages(&id).await, msgs, "after a crash");
    tb.restart().await;
    assert_eq!(tb.messages(&id).await, msgs, "after a restart");
}

/// `context.id` becomes `reply_to`, our id of the quoted message, when it is one of the
/// conversation's (inbound or outbound, stored before or in the same webhook); a wamid we do
/// not hold, or another conversation's, gives null, and `raw` still has the context.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quoted_messages_link_by_our_id() {
    let mut tb = TB::start().await;
    let (conv, cust, reply_id, reply_wamid) = accepted_reply(&tb).await;
    let first = tb.messages(&conv).await[0].clone();
    let first_wamid = first["wamid"].as_str().unwrap().to_owned();
    let other = customer();
    let other_wamid = tb.send_text(N1, &other, "someone else").await;

    let t = now() - 50;
    let (q_in, q_out, q_none, q_other, q_same, fwd, ffwd) = (
        wamid(),
        wamid(),
        wamid(),
        wamid(),
        wamid(),
        wamid(),
        wamid(),
    );
    let quoting = |w: &str, ts: i64, text: &str, quoted: &str| {
        let mut m = text_msg(w, &cust, ts, text);
        m["context"] = json!({"from": N1_DISPLAY, "id": quoted});
        m
    };
    let mut forwarded = text_msg(&fwd, &cust, t + 5, "fwd");
    forwarded["context"] = json!({"forwarded": true});
    let mut often = text_msg(&ffwd, &cust, t + 6, "often");
    often["context"] = json!({"frequently_forwarded": true});
    let body = webhook_of(vec![
        quoting(&q_in, t, "about my first message", &first_wamid),
        quoting(&q_out, t + 1, "about your answer", &reply_wamid),
        quoting(&q_none, t + 2, "about something old", "wamid.NEVER_SEEN"),
        quoting(&q_other, t + 3, "about another chat", &other_wamid),
        quoting(&q_same, t + 4, "about what I just said", &q_in),
        forwarded,
        often,
    ]);
    assert_eq!(tb.webhook(&body).await, 200);
    let check = |msgs: &[Value]| {
        let reply_to = |w: &str| by_wamid(msgs, w)["reply_to"].clone();
        assert_eq!(reply_to(&q_in), first["id"]);
        assert_eq!(reply_to(&q_out), json!(reply_id));
        assert_eq!(reply_to(&q_none), Value::Null);
        assert_eq!(
            by_wamid(msgs, &q_none)["raw"]["context"]["id"],
            json!("wamid.NEVER_SEEN")
        );
        assert_eq!(reply_to(&q_other), Value::Null, "another conversation's");
        assert_eq!(reply_to(&q_same), by_wamid(msgs, &q_in)["id"]);
        let flags = |w: &str| {
            let m = by_wamid(msgs, w);
            (m["forwarded"].clone(), m["frequently_forwarded"].clone())
        };
        assert_eq!(flags(&fwd), (json!(true), json!(false)));
        assert_eq!(flags(&ffwd), (json!(true), json!(true)));
        assert_eq!(flags(&q_in), (json!(false), json!(false)));
    };
    check(&tb.messages(&conv).await);
    tb.restart().await;
    check(&tb.messages(&conv).await);
}

fn reaction(w: &str, from: &str, ts: i64, target: &str, emoji: Option<&str>) -> Value {
    let mut r = json!({"message_id": target});
    if let Some(e) = emoji {
        r["emoji"] = json!(e);
    }
    msg(w, from, ts, "reaction", r)
}

/// A reaction is no message: it sets the customer's reaction on the message it names (inbound
/// or outbound), a later one replaces it, an empty or absent emoji removes it; each change is a
/// `message.updated` event; redeliveries change nothing, also after a restart; a reaction to a
/// message we do not hold is kept and counted, never a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactions_attach_to_their_message() {
    if reran_alone!() {
        return;
    }
    let mut tb = TB::start().await;
    let (conv, cust, reply_id, reply_wamid) = accepted_reply(&tb).await;
    let first = tb.messages(&conv).await[0].clone();
    let first_wamid = first["wamid"].as_str().unwrap().to_owned();
    let first_id = first["id"].as_str().unwrap().to_owned();
    let mut sse = Sse::connect(&tb, BOB).await;
    let t = now() - 50;
    let reactions_of = |msgs: &[Value], id: &str| -> Value {
        msgs.iter()
            .find(|m| m["id"] == json!(id))
            .map(|m| m["reactions"].clone())
            .unwrap_or_else(|| panic!("{id} missing"))
    };
    let count = tb.messages(&conv).await.len();

    // Set, on the customer's own message and on the agent's reply.
    let (r1, r2, r3, r4, r5, r6) = (wamid(), wamid(), wamid(), wamid(), wamid(), wamid());
    let body = webhook_of(vec![
        reaction(&r1, &cust, t, &first_wamid, Some("👍")),
        reaction(&r2, &cust, t + 1, &reply_wamid, Some("🙏")),
    ]);
    assert_eq!(tb.webhook(&body).await, 200);
    let msgs = tb.messages(&conv).await;
    assert_eq!(msgs.len(), count, "a reaction is no message: {msgs:#?}");
    let mine = json!([{"by": "customer", "emoji": "👍"}]);
    assert_eq!(reactions_of(&msgs, &first_id), mine);
    assert_eq!(
        reactions_of(&msgs, &reply_id),
        json!([{"by": "customer", "emoji": "🙏"}])
    );
    let ev = sse
        .wait_for("message.updated with 👍", |e| {
            e.event == "message.updated" && e.data["message"]["reactions"] == mine
        })
        .await;
    assert_eq!(ev.data["message"]["id"], json!(first_id));

    // Replaced, then the first one redelivered: it changes nothing.
    assert_eq!(
        tb.webhook(&webhook_of(vec![reaction(
            &r3,
            &cust,
            t + 2,
            &first_wamid,
            Some("❤️")
        )]))
        .await,
        200
    );
    assert_eq!(
        tb.webhook(&webhook_of(vec![reaction(
            &r1,
            &cust,
            t,
            &first_wamid,
            Some("👍")
        )]))
        .await,
        200
    );
    let heart = json!([{"by": "customer", "emoji": "❤️"}]);
    assert_eq!(reactions_of(&tb.messages(&conv).await, &first_id), heart);

    // A reaction to a message we do not hold: kept verbatim and counted, no message.
    assert_eq!(
        tb.webhook(&webhook_of(vec![reaction(
            &r4,
            &cust,
            t + 3,
            "wamid.UNKNOWN",
            Some("😮")
        )]))
        .await,
        200
    );
    assert_eq!(tb.messages(&conv).await.len(), count);

    // After a restart the redeliveries are still recognised.
    tb.restart().await;
    let msgs = tb.messages(&conv).await;
    assert_eq!(reactions_of(&msgs, &first_id), heart, "after a restart");
    for (w, target, emoji) in [
        (&r1, &first_wamid, "👍"),
        (&r2, &reply_wamid, "🙏"),
        (&r4, &"wamid.UNKNOWN".to_string(), "😮"),
    ] {
        let body = webhook_of(vec![reaction(w, &cust, t, target, Some(emoji))]);
        assert_eq!(tb.webhook(&body).await, 200);
    }
    assert_eq!(reactions_of(&tb.messages(&conv).await, &first_id), heart);

    // Removed: by an empty emoji, and by none at all.
    let body = webhook_of(vec![
        reaction(&r5, &cust, t + 4, &first_wamid, Some("")),
        reaction(&r6, &cust, t + 5, &reply_wamid, None),
    ]);
    assert_eq!(tb.webhook(&body).await, 200);
    let msgs = tb.messages(&conv).await;
    assert_eq!(reactions_of(&msgs, &first_id), json!([]));
    assert_eq!(reactions_of(&msgs, &reply_id), json!([]));
    assert_eq!(msgs.len(), count);
    tb.crash_and_restart().await;
    let msgs = tb.messages(&conv).await;
    assert_eq!(reactions_of(&msgs, &first_id), json!([]), "after a crash");

    let text = tb.metrics().await;
    let reactions = |outcome: &str| {
        metric_sum(
            &text,
            "switchboard_inbound_reactions_total",
            &[&format!("outcome=\"{outcome}\"")],
        )
    };
    // Counted once each (the process keeps its counters across the in-process restarts),
    // redeliveries not at all.
    assert_eq!(reactions("applied"), Some(3.0), "{text}");
    assert_eq!(reactions("removed"), Some(2.0), "{text}");
    assert_eq!(reactions("unknown_target"), Some(1.0), "{text}");
}

/// A click-to-WhatsApp ad's `referral` is kept on the message and shown as Meta sent it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ad_referrals_are_kept() {
    let mut tb = TB::start().await;
    let cust = customer();
    let w = wamid();
    let referral = json!({
        "source_url": "https://fb.me/3cr4Wqqkx", "source_id": "120201234567890",
        "source_type": "ad", "headline": "Spring sale", "body": "20% off all shoes",
        "media_type": "image", "image_url": "https://scontent.xx.fbcdn.net/v/t45.jpg",
        "ctwa_clid": "ARAkLkA8rmlFeiCktEJQ-QTwRiyYHAFDLMNDBH0CD3qpjd0HR4irJ6LEkR7JwFF4XvnO2E4Nx0-eM-GABDLOPaOdRMXP6FA",
        "welcome_message": {"text": "Hi! How can we help?"}
    });
    let mut m = text_msg(&w, &cust, now() - 10, "Can I get more info about this?");
    m["referral"] = referral.clone();
    assert_eq!(tb.webhook(&webhook_of(vec![m])).await, 200);
    let id = tb.conv_id(N1, &cust).await;
    let shown = by_wamid(&tb.messages(&id).await, &w).clone();
    assert_eq!(shown["referral"], referral);
    assert_eq!(shown["text"], json!("Can I get more info about this?"));
    tb.restart().await;
    assert_eq!(by_wamid(&tb.messages(&id).await, &w)["referral"], referral);
    // A message without one shows none.
    let plain = tb.send_text(N1, &cust, "thanks").await;
    assert!(by_wamid(&tb.messages(&id).await, &plain)
        .get("referral")
        .is_none());
}

fn priced(wamid: &str, status: &str, ts: i64, to: &str, pricing: &Value) -> Value {
    let mut s = status_obj(wamid, status, ts, to);
    s["pricing"] = pricing.clone();
    s
}

/// A status callback's `pricing` is kept on its message; a message Meta charges for is counted
/// once per number and category however many of its statuses carry the price; a free one is
/// kept, not counted; a category Meta has not listed counts as `other`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pricing_is_kept_and_billable_messages_counted_once() {
    if reran_alone!() {
        return;
    }
    let mut tb = TB::start().await;
    let (utility_conv, cust_u, utility_id, utility_w) = accepted_reply(&tb).await;
    let (free_conv, cust_f, free_id, free_w) = accepted_reply(&tb).await;
    let (new_conv, cust_n, new_id, new_w) = accepted_reply(&tb).await;
    let utility = json!({"billable": true, "pricing_model": "PMP", "category": "utility",
                         "type": "regular"});
    let free = json!({"billable": false, "pricing_model": "PMP", "category": "service",
                      "type": "free_customer_service"});
    let novel = json!({"pricing_model": "PMP", "category": "brand_new_category",
                       "type": "regular"});
    let t = now();
    // Every status of the first message says its price; a redelivery says it again.
    let statuses = vec![
        priced(&utility_w, "sent", t, &cust_u, &utility),
        priced(&utility_w, "delivered", t + 1, &cust_u, &utility),
        priced(&free_w, "sent", t, &cust_f, &free),
        status_obj(&new_w, "sent", t, &cust_n),
    ];
    assert_eq!(tb.webhook(&status_webhook(N1, statuses)).await, 200);
    assert_eq!(
        tb.webhook(&status_webhook(
            N1,
            vec![
                priced(&utility_w, "read", t + 2, &cust_u, &utility),
                priced(&utility_w, "delivered", t + 1, &cust_u, &utility),
                priced(&new_w, "delivered", t + 1, &cust_n, &novel),
            ]
        ))
        .await,
        200
    );
    let expected = [
        (&utility_conv, &utility_id, "read", &utility),
        (&free_conv, &free_id, "sent", &free),
        (&new_conv, &new_id, "delivered", &novel),
    ];
    for (conv, id, status, pricing) in expected {
        let m = tb.wait_status(conv, id, status).await;
        assert_eq!(&m["pricing"], pricing, "{m:#}");
    }
    let text = tb.metrics().await;
    let billed = |category: &str| {
        metric_sum(
            &text,
            "switchboard_billable_messages_total",
            &[
                &format!("number=\"{N1}\""),
                &format!("category=\"{category}\""),
            ],
        )
    };
    assert_eq!(billed("utility"), Some(1.0), "{text}");
    assert_eq!(billed("service"), Some(0.0), "free: kept, not counted");
    assert_eq!(billed("other"), Some(1.0), "{text}");
    assert_eq!(billed("marketing"), Some(0.0));

    // Kept across a restart, and a status after it does not count the message again.
    tb.restart().await;
    for (conv, id, status, pricing) in expected {
        let m = tb.wait_status(conv, id, status).await;
        assert_eq!(&m["pricing"], pricing, "after a restart: {m:#}");
    }
    let again = priced(&utility_w, "read", t + 3, &cust_u, &utility);
    assert_eq!(tb.webhook(&status_webhook(N1, vec![again])).await, 200);
    let text = tb.metrics().await;
    assert_eq!(
        metric_sum(
            &text,
            "switchboard_billable_messages_total",
            &[&format!("number=\"{N1}\""), "category=\"utility\""],
        ),
        Some(1.0),
        "{text}"
    );
}

/// A reaction may name a message of its own webhook (and then shows on it from the start); a
/// webhook holding nothing but a reaction to a message we do not hold opens no conversation,
/// and neither does its redelivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactions_within_one_webhook_and_alone() {
    let mut tb = TB::start().await;
    let cust = customer();
    let t = now() - 20;
    let (w, r) = (wamid(), wamid());
    let body = webhook_of(vec![
        text_msg(&w, &cust, t, "look at this"),
        reaction(&r, &cust, t + 1, &w, Some("😂")),
    ]);
    assert_eq!(tb.webhook(&body).await, 200);
    let id = tb.conv_id(N1, &cust).await;
    let msgs = tb.messages(&id).await;
    assert_eq!(msgs.len(), 1, "{msgs:#?}");
    assert_eq!(
        msgs[0]["reactions"],
        json!([{"by": "customer", "emoji": "😂"}])
    );

    let stranger = customer();
    let body = webhook_of(vec![reaction(
        &wamid(),
        &stranger,
        t,
        "wamid.SOMEONE_ELSES",
        Some("👍"),
    )]);
    for _ in 0..2 {
        assert_eq!(tb.webhook(&body).await, 200);
        assert!(tb.conv_of(N1, &stranger).await.is_none());
    }
    tb.restart().await;
    assert_eq!(tb.webhook(&body).await, 200);
    assert!(tb.conv_of(N1, &stranger).await.is_none());
    assert_eq!(tb.messages(&id).await, msgs);
}
