//! The object store media bytes live in, built from `[media]`: a directory (`backend =
//! "local"`, default `<storage.path>/media`) or an S3-compatible bucket (`backend = "s3"`:
//! `bucket`, and `endpoint`, `region`, credentials, `allow_http` as needed; credentials not given
//! come from the usual `AWS_*` environment).

use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::ObjectStore;

use crate::config::{Config, MediaBackend};

/// Builds the configured store; an error names the problem (a config error: exit 2).
pub fn build(config: &Config) -> Result<Arc<dyn ObjectStore>, String> {
    let m = &config.media;
    match m.backend {
        MediaBackend::Local => {
            let dir = m
                .path
                .clone()
                .unwrap_or_else(|| config.storage.path.join("media"));
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("media.path: cannot create {}: {e}", dir.display()))?;
            let fs = LocalFileSystem::new_with_prefix(&dir)
                .map_err(|e| format!("media.path: cannot use {}: {e}", dir.display()))?;
            Ok(Arc::new(fs))
        }
        MediaBackend::S3 => {
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(m.bucket.clone().unwrap_or_default())
                .with_allow_http(m.allow_http);
            if let Some(e) = &m.endpoint {
                b = b.with_endpoint(e);
            }
            if let Some(r) = &m.region {
                b = b.with_region(r);
            }
            if let Some(k) = &m.access_key_id {
                b = b.with_access_key_id(k);
            }
            if let Some(s) = &m.secret_access_key {
                b = b.with_secret_access_key(s);
            }
            let s3 = b
                .build()
                .map_err(|e| format!("media: cannot use the bucket: {e}"))?;
            Ok(Arc::new(s3))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(media: &str, dir: &std::path::Path) -> Config {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = {:?}\n[whatsapp]\napp_secret = \"s\"\nverify_token = \"v\"\naccess_token = \"a\"\nwaba_id = \"w\"\n[[numbers]]\nphone_number_id = \"1\"\ndefault_team = \"t\"\n[[teams]]\nid = \"t\"\n[media]\n{media}\n",
            dir.display().to_string()
        );
        Config::from_toml_str(&text).expect("config")
    }

    #[tokio::test]
    async fn local_by_default_and_s3_by_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let local = build(&config("", dir.path())).expect("local store");
        let path = object_store::path::Path::from("media/x");
        local
            .put(&path, bytes::Bytes::from_static(b"abc").into())
            .await
            .expect("put");
        assert!(
            dir.path().join("media/media/x").exists(),
            "under <storage.path>/media"
        );
        // An S3-compatible endpoint builds without touching the network.
        let s3 = "backend = \"s3\"\nbucket = \"b\"\nendpoint = \"http://127.0.0.1:9\"\nregion = \"eu-west-1\"\naccess_key_id = \"k\"\nsecret_access_key = \"s\"\nallow_http = true";
        assert!(build(&config(s3, dir.path())).is_ok());
    }
}
