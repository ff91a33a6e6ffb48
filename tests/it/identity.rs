//! One contact, two ids: customers known by their phone (`wa_id`), their business-scoped user id
//! (BSUID, `user_id`) or both; linking, racing links, `system` messages that move ids, sends by
//! `recipient`, routing by the BSUID's country, restarts, and a data directory written before
//! contacts existed.

use std::path::Path;

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::common::*;

/// A fresh BSUID in `country` (`US.…`: the country, a dot, digits).
fn bsuid(country: &str) -> String {
    let digits: String = uniq("").chars().filter(|c| c.is_ascii_digit()).collect();
    format!("{country}.1349120865{digits}")
}

/// A text message webhook naming the sender by `phone`, `user_id` or both (in the message and
/// in its contact, as Meta does), with `username` in the contact's profile.
fn id_webhook(
    number: &str,
    phone: Option<&str>,
    user_id: Option<&str>,
    username: Option<&str>,
    text: &str,
) -> (String, Value) {
    let w = wamid();
    let mut msg =
        json!({"id": w, "timestamp": now().to_string(), "type": "text", "text": {"body": text}});
    let mut contact = json!({"profile": {"name": "Ana K"}});
    if let Some(p) = phone {
        msg["from"] = json!(p);
        contact["wa_id"] = json!(p);
    }
    if let Some(u) = user_id {
        msg["from_user_id"] = json!(u);
        contact["user_id"] = json!(u);
    }
    if let Some(name) = username {
        contact["profile"]["username"] = json!(name);
    }
    (w, raw_webhook(number, vec![contact], vec![msg]))
}

fn raw_webhook(number: &str, contacts: Vec<Value>, messages: Vec<Value>) -> Value {
    envelope(vec![entry(vec![json!({"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": display_of(number), "phone_number_id": number},
        "contacts": contacts,
        "messages": messages,
    }})])])
}

/// Meta's `system` message (no contacts): `from`/`from_user_id` the old ids, `system` the new.
fn system_webhook(number: &str, old: (Option<&str>, Option<&str>), system: Value) -> Value {
    let mut msg =
        json!({"id": wamid(), "timestamp": now().to_string(), "type": "system", "system": system});
    if let Some(p) = old.0 {
        msg["from"] = json!(p);
    }
    if let Some(u) = old.1 {
        msg["from_user_id"] = json!(u);
    }
    raw_webhook(number, vec![], vec![msg])
}

async fn post(tb: &TB, body: &Value) {
    let status = tb.webhook(body).await;
    assert_eq!(status, 200, "webhook refused: {body}");
}

async fn send(
    tb: &TB,
    phone: Option<&str>,
    user_id: Option<&str>,
    username: Option<&str>,
) -> String {
    let (w, body) = id_webhook(N1, phone, user_id, username, "hello");
    post(tb, &body).await;
    w
}

/// The conversations `customer` (either id) finds on N1, as the admin sees them.
async fn found(tb: &TB, customer: &str) -> Vec<Value> {
    tb.list(ROOT, &format!("customer={customer}&number={N1}"))
        .await
}

/// The one conversation `customer` finds on N1.
async fn the_conv(tb: &TB, customer: &str) -> Value {
    let convs = found(tb, customer).await;
    assert_eq!(convs.len(), 1, "conversations for {customer}: {convs:?}");
    convs.into_iter().next().expect("one")
}

fn id_of(c: &Value) -> String {
    c["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn a_username_only_customer_gets_a_conversation_that_a_later_phone_joins() {
    let mut tb = TB::start().await;
    let user = bsuid("US");
    send(&tb, None, Some(&user), Some("ana.k")).await;
    let c = the_conv(&tb, &user).await;
    assert_eq!(c["customer"], json!(user));
    assert_eq!(c["customer_user_id"], json!(user));
    assert_eq!(c["customer_phone"], Value::Null);
    assert_eq!(c["customer_username"], json!("ana.k"));
    assert!(!id_of(&c).contains('\0'));

    // Later Meta names both: the same conversation, now shown by its phone.
    let phone = customer();
    send(&tb, Some(&phone), Some(&user), Some("ana.k")).await;
    let by_phone = the_conv(&tb, &phone).await;
    assert_eq!(id_of(&by_phone), id_of(&c));
    assert_eq!(by_phone["customer"], json!(phone));
    assert_eq!(by_phone["customer_phone"], json!(phone));
    assert_eq!(by_phone["customer_user_id"], json!(user));
    // Either id, with or without the number, finds it; a phone-only message lands there too.
    assert_eq!(id_of(&the_conv(&tb, &user).await), id_of(&c));
    let everywhere = tb.list(ROOT, &format!("customer={user}")).await;
    assert_eq!(everywhere.len(), 1);
    send(&tb, Some(&phone), None, None).await;
    assert_eq!(tb.messages(&id_of(&c)).await.len(), 3);

    // All of it survives a restart (the contact index is durable, not only remembered).
    tb.restart().await;
    send(&tb, None, Some(&user), None).await;
    let after = the_conv(&tb, &user).await;
    assert_eq!(id_of(&after), id_of(&c));
    assert_eq!(id_of(&the_conv(&tb, &phone).await), id_of(&c));
    assert_eq!(tb.messages(&id_of(&c)).await.len(), 4);
    assert_eq!(after["customer_username"], json!("ana.k"));
    tb.shutdown().await;
}

#[tokio::test]
async fn a_phone_only_conversation_is_linked_by_a_webhook_naming_both_ids() {
    let mut tb = TB::start().await;
    let phone = customer();
    let user = bsuid("DE");
    send(&tb, Some(&phone), None, None).await;
    let c = the_conv(&tb, &phone).await;
    assert_eq!(c["customer_user_id"], Value::Null);
    assert!(found(&tb, &user).await.is_empty());

    send(&tb, Some(&phone), Some(&user), None).await;
    // From now on the user id alone finds it (Meta may leave the phone out).
    send(&tb, None, Some(&user), None).await;
    let linked = the_conv(&tb, &user).await;
    assert_eq!(id_of(&linked), id_of(&c));
    assert_eq!(linked["customer"], json!(phone));
    assert_eq!(tb.messages(&id_of(&c)).await.len(), 3);
    tb.restart().await;
    assert_eq!(id_of(&the_conv(&tb, &user).await), id_of(&c));
    tb.shutdown().await;
}

/// Webhooks for one person race: whichever is handled first makes the contact, the others find
/// it, and each person ends with exactly one conversation holding every message. Per person, a
/// webhook naming both ids races one naming the phone only, one naming the user id only, or
/// another naming both (a phone-only and a user-id-only webhook that both come before any
/// webhook linking them are two contacts; see README, "Customers").
#[tokio::test]
async fn racing_webhooks_make_one_conversation_per_person() {
    let mut tb = TB::start().await;
    const PEOPLE: usize = 24;
    let people: Vec<(String, String)> = (0..PEOPLE).map(|_| (customer(), bsuid("US"))).collect();
    let mut bodies = Vec::new();
    for (i, (phone, user)) in people.iter().enumerate() {
        let (p, u) = (Some(phone.as_str()), Some(user.as_str()));
        let other = match i % 3 {
            0 => (p, None),
            1 => (None, u),
            _ => (p, u),
        };
        for _ in 0..2 {
            bodies.push(id_webhook(N1, p, u, None, "both").1);
            bodies.push(id_webhook(N1, other.0, other.1, None, "one").1);
        }
    }
    let statuses = join_all(bodies.iter().map(|b| tb.webhook(b))).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let all = tb.list(ROOT, &format!("number={N1}")).await;
    assert_eq!(all.len(), PEOPLE, "one conversation per person");
    for (phone, user) in &people {
        let c = the_conv(&tb, phone).await;
        assert_eq!(id_of(&the_conv(&tb, user).await), id_of(&c));
        assert_eq!(
            (c["customer_phone"].clone(), c["customer_user_id"].clone()),
            (json!(phone), json!(user))
        );
        assert_eq!(tb.messages(&id_of(&c)).await.len(), 4);
    }
    tb.restart().await;
    for (phone, user) in &people {
        assert_eq!(
            id_of(&the_conv(&tb, phone).await),
            id_of(&the_conv(&tb, user).await)
        );
    }
    tb.shutdown().await;
}

#[tokio::test]
async fn system_messages_move_ids_and_open_nothing() {
    let mut tb = TB::start().await;
    let (old_phone, new_phone) = (customer(), customer());
    let (old_user, new_user) = (bsuid("US"), bsuid("US"));
    send(&tb, Some(&old_phone), Some(&old_user), None).await;
    let c = id_of(&the_conv(&tb, &old_phone).await);
    let metric = |text: &str| metric_sum(text, "switchboard_inbound_system_messages_total", &[]);
    let before = metric(&tb.metrics().await).unwrap_or(0.0);

    post(
        &tb,
        &system_webhook(
            N1,
            (Some(&old_phone), Some(&old_user)),
            json!({"body": "User Ana changed from one number to another", "wa_id": new_phone,
                   "type": "user_changed_number"}),
        ),
    )
    .await;
    assert!(found(&tb, &old_phone).await.is_empty());
    let moved = the_conv(&tb, &new_phone).await;
    assert_eq!(id_of(&moved), c);
    assert_eq!(moved["customer"], json!(new_phone));
    post(
        &tb,
        &system_webhook(
            N1,
            (None, Some(&old_user)),
            json!({"body": "User Ana changed their user id", "user_id": new_user,
                   "type": "user_changed_user_id"}),
        ),
    )
    .await;
    assert!(found(&tb, &old_user).await.is_empty());
    assert_eq!(id_of(&the_conv(&tb, &new_user).await), c);
    // Both notices are shown in the conversation, typed, without opening anything; a system
    // message for a customer nobody knows opens none.
    let msgs = tb.messages(&c).await;
    let kinds: Vec<_> = msgs.iter().map(|m| m["type"].clone()).collect();
    assert_eq!(kinds, [json!("text"), json!("system"), json!("system")]);
    assert_eq!(msgs[1]["content"]["kind"], json!("user_changed_number"));
    assert_eq!(msgs[2]["content"]["kind"], json!("user_changed_user_id"));
    let stranger = customer();
    post(
        &tb,
        &system_webhook(
            N1,
            (Some(&stranger), None),
            json!({"body": "x", "wa_id": customer(), "type": "user_changed_number"}),
        ),
    )
    .await;
    assert!(found(&tb, &stranger).await.is_empty());
    assert_eq!(tb.list(ROOT, &format!("number={N1}")).await.len(), 1);
    let after = metric(&tb.metrics().await).unwrap_or(0.0);
    assert!(
        after - before >= 3.0,
        "system messages counted: {before} → {after}"
    );

    // The moved ids hold after a restart, and a message by the new user id alone lands there.
    tb.restart().await;
    send(&tb, None, Some(&new_user), None).await;
    assert_eq!(id_of(&the_conv(&tb, &new_phone).await), c);
    assert_eq!(tb.messages(&c).await.len(), 4);
    assert!(found(&tb, &old_phone).await.is_empty());
    tb.shutdown().await;
}

#[tokio::test]
async fn a_reply_to_a_username_only_customer_goes_to_its_user_id_and_its_statuses_apply() {
    let tb = TB::start().await;
    let user = bsuid("BR");
    send(&tb, None, Some(&user), Some("bia")).await;
    let conv = id_of(&the_conv(&tb, &user).await);
    tb.must_claim(BOB, &conv).await;
    let m = tb.must_reply(BOB, &conv, "olá").await;
    let id = m["id"].as_str().expect("id").to_owned();
    let accepted = tb.wait_status(&conv, &id, "accepted").await;
    let sends = tb.graph.sends_for(&id);
    assert_eq!(sends.len(), 1, "{sends:?}");
    assert_eq!(sends[0].body["recipient"], json!(user));
    assert!(sends[0].body.get("to").is_none(), "{}", sends[0].body);
    // Meta's statuses for such a send name `recipient_user_id`, no `recipient_id`.
    let wamid = accepted["wamid"].as_str().expect("wamid").to_owned();
    let status = json!({"id": wamid, "status": "delivered", "timestamp": now().to_string(),
                        "recipient_user_id": user});
    assert_eq!(tb.webhook(&status_webhook(N1, vec![status])).await, 200);
    tb.wait_status(&conv, &id, "delivered").await;

    // Once the phone is known, replies go `to` it.
    let phone = customer();
    send(&tb, Some(&phone), Some(&user), None).await;
    let m = tb.must_reply(BOB, &conv, "again").await;
    let id = m["id"].as_str().expect("id").to_owned();
    tb.wait_status(&conv, &id, "accepted").await;
    let sends = tb.graph.sends_for(&id);
    assert_eq!(sends[0].body["to"], json!(phone));
    assert!(sends[0].body.get("recipient").is_none());
}

#[tokio::test]
async fn country_routing_reads_the_bsuid_prefix_when_the_phone_is_unknown() {
    let tb = TB::start_with(|cfg| {
        cfg.extra.push_str(
            r#"
[[routing.rules]]
name = "austria"
when = { country = ["AT"] }
then = { team = "sales" }
"#,
        );
    })
    .await;
    let austrian = bsuid("AT");
    send(&tb, None, Some(&austrian), None).await;
    assert_eq!(the_conv(&tb, &austrian).await["team"], json!("sales"));
    let german = bsuid("DE");
    send(&tb, None, Some(&german), None).await;
    assert_eq!(the_conv(&tb, &german).await["team"], json!("support"));
}

#[tokio::test]
async fn a_message_naming_no_customer_is_kept_and_counted_not_a_conversation() {
    let tb = TB::start().await;
    let count = |text: &str| metric_sum(text, "switchboard_inbound_no_customer_total", &[]);
    let before = count(&tb.metrics().await).unwrap_or(0.0);
    let msg = json!({"id": wamid(), "timestamp": now().to_string(), "type": "text",
                     "text": {"body": "who am I"}});
    post(
        &tb,
        &raw_webhook(N1, vec![json!({"profile": {"name": "Nobody"}})], vec![msg]),
    )
    .await;
    let after = count(&tb.metrics().await).unwrap_or(0.0);
    assert!(after - before >= 1.0, "{before} → {after}");
    assert!(tb.list(ROOT, &format!("number={N1}")).await.is_empty());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create");
    for e in std::fs::read_dir(from).expect("read fixture") {
        let e = e.expect("entry");
        if e.file_name() != "README.md" {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }
}

/// tests/fixtures/legacy-store was written by the broker before contacts existed (see its
/// README): its conversations are found by phone at once, by user id once a webhook links it,
/// and all of it holds across a restart.
#[tokio::test]
async fn a_store_from_before_contacts_is_found_by_phone_then_by_user_id() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy-store");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    copy_dir(&fixture, &db);
    let mut tb = TB::start_with(|cfg| cfg.storage_path = db.clone()).await;
    const ANA: &str = "4915112345678";
    const ANA_CONV: &str = "ccea1d741810508cb";
    let ana = the_conv(&tb, ANA).await;
    assert_eq!(id_of(&ana), ANA_CONV);
    assert_eq!(ana["customer_phone"], json!(ANA));
    assert_eq!(ana["customer_user_id"], Value::Null);
    assert_eq!(ana["customer_name"], json!("Legacy Ana"));
    assert_eq!(tb.messages(ANA_CONV).await.len(), 2);
    let ben = the_conv(&tb, "14155550123").await;
    assert_eq!(
        (ben["id"].clone(), ben["assignee"].clone()),
        (json!("cb474b1a187cb11a0"), json!("bob"))
    );
    // A customer stored under its user id before contacts existed is that user id's contact.
    let cy = the_conv(&tb, "US.777000111").await;
    assert_eq!(id_of(&cy), "c4acc57b574a2f314");
    assert_eq!(cy["customer_user_id"], json!("US.777000111"));
    send(&tb, None, Some("US.777000111"), None).await;
    assert_eq!(tb.messages("c4acc57b574a2f314").await.len(), 2);

    // Not linked yet: its user id finds nothing. A webhook naming both ids links it.
    let user = "DE.55501234567";
    assert!(found(&tb, user).await.is_empty());
    send(&tb, Some(ANA), Some(user), Some("ana")).await;
    assert_eq!(id_of(&the_conv(&tb, user).await), ANA_CONV);
    send(&tb, None, Some(user), None).await;
    assert_eq!(tb.messages(ANA_CONV).await.len(), 4);
    assert_eq!(tb.list(ROOT, &format!("number={N1}")).await.len(), 3);

    tb.restart().await;
    let ana = the_conv(&tb, user).await;
    assert_eq!(id_of(&ana), ANA_CONV);
    assert_eq!(
        (
            ana["customer_phone"].clone(),
            ana["customer_username"].clone()
        ),
        (json!(ANA), json!("ana"))
    );
    assert_eq!(id_of(&the_conv(&tb, ANA).await), ANA_CONV);
    // Ben, never written since, is still found by his phone after the restart.
    assert_eq!(
        id_of(&the_conv(&tb, "14155550123").await),
        "cb474b1a187cb11a0"
    );
    tb.shutdown().await;
}

/// A new customer's first webhook reads storage once (the contact index and the record at its
/// derived conversation id, in one blocking-pool hop) and its conversation's activation reads
/// nothing more; a known customer's next message reads nothing. It took three hops before
/// (the index, the derived record, the activation reading that record again), the largest
/// part of what a reply wave of new customers costs per webhook (BENCHMARKS.md). The fewest
/// reads over three tries, so a background read landing in one window cannot fail it. Alone in
/// its process: the read counter is process-wide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_customer_costs_one_storage_read_and_a_known_one_none() {
    if reran_alone!() {
        return;
    }
    let tb = TB::start().await;
    let reads = |t: &str| metric_sum(t, "switchboard_store_reads_total", &[]).unwrap_or(0.0);
    // What a scrape itself reads (RocksDB's memory gauges).
    let a = reads(&tb.metrics().await);
    let scrape = reads(&tb.metrics().await) - a;
    let mut new_customer = f64::MAX;
    let mut known_customer = f64::MAX;
    for user in [None, Some(bsuid("US")), None] {
        let phone = customer();
        let before = reads(&tb.metrics().await);
        send(&tb, Some(&phone), user.as_deref(), None).await;
        let after = reads(&tb.metrics().await);
        new_customer = new_customer.min(after - before - scrape);
        send(&tb, Some(&phone), user.as_deref(), None).await;
        known_customer = known_customer.min(reads(&tb.metrics().await) - after - scrape);
        assert_eq!(
            tb.messages(&id_of(&the_conv(&tb, &phone).await))
                .await
                .len(),
            2
        );
    }
    assert_eq!(
        new_customer, 1.0,
        "storage reads for a new customer's webhook"
    );
    assert_eq!(
        known_customer, 0.0,
        "storage reads for a known customer's webhook"
    );
}
