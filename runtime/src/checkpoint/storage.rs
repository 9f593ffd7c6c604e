//! Checkpoint storage backends (`file://` and `s3://`) behind object_store, with blocking calls
//! for the coordinator thread. S3 credentials and endpoint come from the environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT`, `AWS_REGION`); plain-http
//! endpoints are allowed (in-cluster MinIO and the like).

use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, PutPayload};
use std::sync::Arc;

/// A storage operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The storage URL is not usable.
    #[error("checkpoint storage '{url}': {message}")]
    Config {
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
    /// A read, write, list or delete failed.
    #[error("checkpoint storage {action} {path}: {source}")]
    Io {
        /// What was done.
        action: &'static str,
        /// Full object path.
        path: String,
        /// The object store error.
        source: object_store::Error,
    },
}

/// One job's checkpoint area: `<storage>/<namespace>/<job>/`.
#[derive(Clone)]
pub struct CheckpointStorage {
    store: Arc<dyn ObjectStore>,
    root: String,
    url: String,
    rt: tokio::runtime::Handle,
    local_root: Option<std::path::PathBuf>,
}

impl CheckpointStorage {
    /// Opens the job root under `url` (`file:///dir` or `s3://bucket/prefix`).
    pub fn open(
        url: &str,
        namespace: &str,
        job: &str,
        rt: tokio::runtime::Handle,
    ) -> Result<Self, StorageError> {
        let cfg = |message: String| StorageError::Config {
            url: url.to_string(),
            message,
        };
        let mut local_root = None;
        let (store, prefix): (Arc<dyn ObjectStore>, String) = if let Some(path) =
            url.strip_prefix("file://")
        {
            std::fs::create_dir_all(path)
                .map_err(|e| cfg(format!("cannot create directory {path}: {e}")))?;
            let fs = object_store::local::LocalFileSystem::new_with_prefix(path)
                .map_err(|e| cfg(e.to_string()))?;
            local_root = Some(std::path::PathBuf::from(path).join(namespace).join(job));
            (Arc::new(fs), String::new())
        } else if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(cfg("no bucket name".into()));
            }
            let mut b = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_allow_http(true);
            if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err()
            {
                b = b.with_region("us-east-1");
            }
            let s3 = b.build().map_err(|e| cfg(e.to_string()))?;
            (Arc::new(s3), prefix.trim_matches('/').to_string())
        } else {
            return Err(cfg("must start with file:/// or s3://".into()));
        };
        let mut parts: Vec<&str> = vec![];
        if !prefix.is_empty() {
            parts.push(&prefix);
        }
        parts.push(namespace);
        parts.push(job);
        Ok(CheckpointStorage {
            store,
            root: parts.join("/"),
            url: format!("{}/{namespace}/{job}", url.trim_end_matches('/')),
            rt,
            local_root,
        })
    }

    /// The job root as a URL, for messages and status.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, rel: &str) -> ObjPath {
        ObjPath::from(format!("{}/{}", self.root, rel.trim_start_matches('/')))
    }

    fn io(&self, action: &'static str, rel: &str) -> impl Fn(object_store::Error) -> StorageError {
        let path = format!("{}/{}", self.url, rel);
        move |source| StorageError::Io {
            action,
            path: path.clone(),
            source,
        }
    }

    /// Writes `bytes` at `rel` (atomically replacing).
    pub fn put(&self, rel: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        let p = self.path(rel);
        self.rt
            .block_on(self.store.put(&p, PutPayload::from(bytes)))
            .map(|_| ())
            .map_err(self.io("write", rel))
    }

    /// Reads `rel`; `Ok(None)` if it does not exist.
    pub fn get(&self, rel: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let p = self.path(rel);
        let res = self.rt.block_on(async {
            match self.store.get(&p).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        res.map(|b| b.map(|b| b.to_vec()))
            .map_err(self.io("read", rel))
    }

    /// The size of `rel`, or `None` if absent.
    pub fn size(&self, rel: &str) -> Result<Option<u64>, StorageError> {
        let p = self.path(rel);
        match self.rt.block_on(self.store.head(&p)) {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.io("stat", rel)(e)),
        }
    }

    /// Directory names directly under `rel` (e.g. `chk-3`).
    pub fn list_dirs(&self, rel: &str) -> Result<Vec<String>, StorageError> {
        let p = if rel.is_empty() {
            ObjPath::from(self.root.clone())
        } else {
            self.path(rel)
        };
        let res = self
            .rt
            .block_on(self.store.list_with_delimiter(Some(&p)))
            .map_err(self.io("list", rel))?;
        Ok(res
            .common_prefixes
            .iter()
            .filter_map(|c| c.filename().map(str::to_string))
            .collect())
    }

    /// All objects under `rel` (recursive), as (path relative to the job root, size).
    pub fn list_files(&self, rel: &str) -> Result<Vec<(String, u64)>, StorageError> {
        let p = self.path(rel);
        let prefix = format!("{}/", self.root);
        let metas: Vec<object_store::ObjectMeta> = self
            .rt
            .block_on(self.store.list(Some(&p)).try_collect())
            .map_err(self.io("list", rel))?;
        Ok(metas
            .into_iter()
            .map(|m| {
                let full = m.location.to_string();
                (
                    full.strip_prefix(&prefix).unwrap_or(&full).to_string(),
                    m.size,
                )
            })
            .collect())
    }

    /// Deletes `rel` (missing is fine).
    pub fn delete(&self, rel: &str) -> Result<(), StorageError> {
        let p = self.path(rel);
        match self.rt.block_on(self.store.delete(&p)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.io("delete", rel)(e)),
        }
    }

    /// Deletes everything under `rel`.
    pub fn delete_dir(&self, rel: &str) -> Result<(), StorageError> {
        for (f, _) in self.list_files(rel)? {
            self.delete(&f)?;
        }
        if let Some(root) = &self.local_root {
            // the local backend leaves empty directories behind, which would list as checkpoints
            let _ = std::fs::remove_dir_all(root.join(rel));
        }
        Ok(())
    }
}
