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
