//! Webhook admission cost: `X-Hub-Signature-256` verification and parsing of Meta's webhook
//! bodies, separately and together (what `POST /webhook` does before anything is stored).
//!
//! Compared:
//! - `fixture/*`: the single-message fixture `tests/fixtures/whatsapp/text_message.json`
//!   (one text message, 500 bytes), the common case of one delivery per request;
//! - `batch_100/*`: one body carrying 100 text messages from 100 customers in one change, the
//!   shape Meta uses when it batches under load.
//!
//! For each body: `verify` (HMAC-SHA256 over the raw bytes + constant-time compare), `parse`
//! (JSON → `Notification`, including re-serialising each message as its `raw`), and
//! `verify_parse` (both, as the HTTP handler does). Throughput is reported in elements =
//! messages, so the two bodies are directly comparable per message: the batch shows how much of
//! the per-request cost amortises.
//!
//! Machine note: these benches are meant for a small shared machine, so warm-up and measurement
//! times are short (1 s / 3 s, 10 samples); expect a few percent of noise between runs.

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use switchboard::whatsapp::{signature, webhook};

const SECRET: &[u8] = b"bench-app-secret";
const FIXTURE: &str = include_str!("../tests/fixtures/whatsapp/text_message.json");

/// One body with `n` text messages from `n` distinct customers (one entry, one change).
fn batch_body(n: usize) -> Vec<u8> {
    common::webhook_body(n, |i| {
        (
            format!("Customer {i}"),
            format!("4915100{i:05}"),
            format!("wamid.HBgLNDkxNTEwMDAwMDAVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA{i:05}="),
        )
    })
}

fn header_for(body: &[u8]) -> String {
    format!("sha256={}", signature::sign(SECRET, body))
}

fn bench_body(c: &mut Criterion, name: &str, body: &[u8], messages: usize) {
    let header = header_for(body);
    // Sanity, outside timing: the body verifies and parses to the expected number of messages.
    assert!(signature::verify(SECRET, body, Some(&header)));
    assert_eq!(
        webhook::parse(body).expect("parse").messages.len(),
        messages
    );

    let mut g = c.benchmark_group(format!("webhook/{name}"));
    g.throughput(Throughput::Elements(messages as u64));
    g.bench_function("verify", |b| {
        b.iter(|| {
            signature::verify(
                black_box(SECRET),
                black_box(body),
                black_box(Some(header.as_str())),
            )
        })
    });
    g.bench_function("parse", |b| {
        b.iter(|| webhook::parse(black_box(body)).expect("parse"))
    });
    g.bench_function("verify_parse", |b| {
        b.iter(|| {
            assert!(signature::verify(
                SECRET,
                black_box(body),
                Some(header.as_str())
            ));
            webhook::parse(black_box(body)).expect("parse")
        })
    });
    g.finish();
}

fn webhook_benches(c: &mut Criterion) {
    bench_body(c, "fixture", FIXTURE.as_bytes(), 1);
    let batch = batch_body(100);
    println!(
        "batch_100 body: {} bytes; fixture body: {} bytes",
        batch.len(),
        FIXTURE.len()
    );
    bench_body(c, "batch_100", &batch, 100);
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = webhook_benches
}
criterion_main!(benches);
