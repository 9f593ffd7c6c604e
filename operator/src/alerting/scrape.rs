//! Fetching runtime pods' `/metrics` for [`crate::alerting::aggregate`] (the I/O edge of
//! health aggregation): pods are scraped concurrently with a timeout; pods that are not ready
//! are not scraped, and a failed scrape becomes the pod's `body` error.

use crate::alerting::aggregate::{JobScrape, PodScrape};
use crate::pod_admin::{is_ready, AdminTarget};
use chrono::Utc;
use k8s_openapi::api::core::v1::Pod;
use std::time::Duration;

/// Bodies larger than this are refused (a runtime pod exposes a few KB per task).
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// One runtime pod to scrape.
#[derive(Clone, Debug, PartialEq)]
pub struct PodTarget {
    /// Pod name.
    pub pod: String,
    /// `http://IP:PORT/metrics`, or `None` before the pod has an IP.
    pub url: Option<String>,
    /// The pod's Ready condition.
    pub ready: bool,
    /// Sum of its containers' restart counts.
    pub container_restarts: u64,
}

impl PodTarget {
    /// The target for a runtime pod whose admin server listens on `admin_port`.
    pub fn from_pod(pod: &Pod, admin_port: u16) -> Self {
        let container_restarts = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map(|cs| {
                cs.iter()
                    .map(|c| u64::try_from(c.restart_count).unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0);
        let admin = AdminTarget::with_port(pod, admin_port);
        PodTarget {
            pod: admin.pod,
            url: admin.base.map(|b| format!("{b}/metrics")),
            ready: is_ready(pod),
            container_restarts,
        }
    }
}

async fn fetch(client: &reqwest::Client, url: &str, timeout: Duration) -> Result<String, String> {
    let resp = client
        .get(url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("GET {url}: HTTP {}", status.as_u16()));
    }
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        return Err(format!("GET {url}: body over {MAX_BODY_BYTES} bytes"));
    }
    let body = resp.text().await.map_err(|e| format!("GET {url}: {e}"))?;
    if body.len() > MAX_BODY_BYTES {
        return Err(format!("GET {url}: body over {MAX_BODY_BYTES} bytes"));
    }
    Ok(body)
}

/// Scrapes the ready pods of `job` concurrently.
pub async fn scrape_job(
    client: &reqwest::Client,
    job: &str,
    targets: &[PodTarget],
    timeout: Duration,
) -> JobScrape {
    let at = Utc::now();
    let pods = futures::future::join_all(targets.iter().map(|t| async move {
        let body = match (&t.url, t.ready) {
            (_, false) => Err("not ready; not scraped".to_string()),
            (None, true) => Err("no pod IP yet".to_string()),
            (Some(url), true) => fetch(client, url, timeout).await,
        };
        PodScrape {
            pod: t.pod.clone(),
            ready: t.ready,
            container_restarts: t.container_restarts,
            at: Utc::now(),
            body,
        }
    }))
    .await;
    JobScrape {
        job: job.to_string(),
        pods,
        at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerting::notify::test_server::TestServer;

    const POD: &str = r#"
metadata: {name: ctr-0}
status:
  podIP: 10.1.2.3
  conditions: [{type: Ready, status: "True"}]
  containerStatuses:
    - {name: runtime, restartCount: 2, ready: true, image: x, imageID: y}
"#;

    #[test]
    fn targets_come_from_pod_status() {
        let pod: Pod = match serde_yaml::from_str(POD) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        let t = PodTarget::from_pod(&pod, 9090);
        assert_eq!(t.url.as_deref(), Some("http://10.1.2.3:9090/metrics"));
        assert!(t.ready);
        assert_eq!(t.container_restarts, 2);
        let t = PodTarget::from_pod(&Pod::default(), 9090);
        assert_eq!((t.url, t.ready), (None, false));
    }

    #[tokio::test]
    async fn ready_pods_are_scraped_and_failures_are_reasons() {
        let server = TestServer::start(|r| match r.path.as_str() {
            "/ok/metrics" => (
                200,
                "weir_task_records_in_total{job=\"ads\",task=\"0\"} 5\n".into(),
            ),
            _ => (503, "starting".into()),
        })
        .await;
        let target = |pod: &str, path: &str, ready| PodTarget {
            pod: pod.into(),
            url: Some(format!("{}/{path}/metrics", server.base)),
            ready,
            container_restarts: 0,
        };
        let targets = [
            target("ads-0", "ok", true),
            target("ads-1", "down", true),
            target("ads-2", "ok", false),
            PodTarget {
                url: None,
                ..target("ads-3", "ok", true)
            },
        ];
        let s = scrape_job(
            &reqwest::Client::new(),
            "ads",
            &targets,
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(s.pods.len(), 4);
        assert!(s.pods[0]
            .body
            .as_ref()
            .is_ok_and(|b| b.contains("weir_task_records_in_total")));
        assert!(
            s.pods[1]
                .body
                .as_ref()
                .is_err_and(|e| e.ends_with("HTTP 503")),
            "{:?}",
            s.pods[1].body
        );
        assert_eq!(s.pods[2].body, Err("not ready; not scraped".to_string()));
        assert_eq!(s.pods[3].body, Err("no pod IP yet".to_string()));
        assert_eq!(
            server.received().len(),
            2,
            "only ready pods with an IP are fetched"
        );
    }
}
