//! The `--baseline` target: a trivial HTTP server that reads each request body and answers 200.
//!
//! It is driven by the same generator, in the same mode and for the same duration as the broker,
//! so `broker throughput / baseline throughput` says how much of the machine's HTTP capacity the
//! broker keeps while doing durable work. It binds 127.0.0.1:0 only and holds no state.

use std::net::SocketAddr;

use axum::http::StatusCode;
use axum::Router;
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A running baseline server.
pub struct Baseline {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Baseline {
    pub async fn start() -> anyhow::Result<Baseline> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new().fallback(|body: Bytes| async move {
            std::hint::black_box(body.len());
            StatusCode::OK
        });
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("baseline server stopped: {e}");
            }
        });
        Ok(Baseline { addr, task })
    }

    /// Same path as the broker's webhook endpoint.
    pub fn webhook_url(&self) -> String {
        format!("http://{}/webhooks/whatsapp", self.addr)
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        self.task.abort();
    }
}
