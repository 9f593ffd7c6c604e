//! HTTP calls to the runtime pods' admin API: `GET /status` and the final checkpoint
//! `POST /checkpoint?final=true`, concurrently over a job's pods, with timeouts.

use crate::build::ADMIN_PORT;
use crate::restore::{FinalCheckpoint, PodReport};
use k8s_openapi::api::core::v1::Pod;
use std::time::Duration;

/// A runtime pod's admin server.
#[derive(Clone, Debug, PartialEq)]
pub struct AdminTarget {
    /// Pod name, for messages.
    pub pod: String,
    /// `http://IP:PORT`, if the pod has an IP.
    pub base: Option<String>,
}

impl AdminTarget {
    /// The admin server of a runtime pod.
    pub fn of(pod: &Pod) -> Self {
        Self::with_port(pod, ADMIN_PORT)
    }

    /// The admin server of a runtime pod listening on `port`.
    pub fn with_port(pod: &Pod, port: impl std::fmt::Display) -> Self {
        let base = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_ref())
            .filter(|ip| !ip.is_empty())
            .map(|ip| {
                if ip.contains(':') {
                    format!("http://[{ip}]:{port}")
                } else {
                    format!("http://{ip}:{port}")
                }
            });
        AdminTarget {
            pod: pod.metadata.name.clone().unwrap_or_default(),
            base,
        }
    }

    fn url(&self, path: &str) -> Result<String, String> {
        self.base
            .as_ref()
            .map(|b| format!("{b}{path}"))
            .ok_or_else(|| format!("pod {} has no IP yet", self.pod))
    }
}

/// Whether the pod's Ready condition is true.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// `GET /status` of one pod.
pub async fn pod_report(
    http: &reqwest::Client,
    target: &AdminTarget,
    timeout: Duration,
) -> Result<PodReport, String> {
    let name = &target.pod;
    let url = target.url("/status")?;
    let resp = http
        .get(&url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| format!("pod {name}: GET {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!(
            "pod {name}: GET {url}: HTTP {}",
            resp.status().as_u16()
        ));
    }
    resp.json::<PodReport>()
        .await
        .map_err(|e| format!("pod {name}: GET {url}: unreadable status: {e}"))
}

/// `GET /status` of every pod; pods that do not answer are left out.
pub async fn pod_reports(
    http: &reqwest::Client,
    targets: &[AdminTarget],
    timeout: Duration,
) -> Vec<PodReport> {
    let all = futures::future::join_all(targets.iter().map(|t| pod_report(http, t, timeout))).await;
    all.into_iter()
        .filter_map(|r| {
            r.map_err(|e| tracing::debug!(error = %e, "pod status"))
                .ok()
        })
        .collect()
}

async fn final_checkpoint_one(
    http: &reqwest::Client,
    target: &AdminTarget,
    timeout: Duration,
) -> Result<u64, String> {
    let name = &target.pod;
    let url = target.url("/checkpoint?final=true")?;
    let resp = http.post(&url).timeout(timeout).send().await.map_err(|e| {
        if e.is_timeout() {
            format!("pod {name}: no answer within {}s", timeout.as_secs())
        } else {
            format!("pod {name}: POST {url}: {e}")
        }
    })?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    if !status.is_success() {
        let why = body
            .get("error")
            .and_then(|e| e.as_str())
            .unwrap_or("no reason given");
        if why.contains("is stopped") {
            // It already stopped after a final checkpoint (an earlier request, the end of a
            // bounded input, or SIGTERM): that checkpoint is the final one.
            let report = pod_report(http, target, timeout).await?;
            if let Some(c) = report.last_checkpoint {
                return Ok(c.id);
            }
        }
        return Err(format!("pod {name}: HTTP {}: {why}", status.as_u16()));
    }
    body.get("checkpointId")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| format!("pod {name}: the answer has no checkpointId: {body}"))
}

/// Asks every pod for a final checkpoint at once; all must complete the same one.
pub async fn final_checkpoint(
    http: &reqwest::Client,
    targets: &[AdminTarget],
    timeout: Duration,
) -> FinalCheckpoint {
    if targets.is_empty() {
        return FinalCheckpoint::Skipped("no pod is running".into());
    }
    let results = futures::future::join_all(
        targets
            .iter()
            .map(|t| final_checkpoint_one(http, t, timeout)),
    )
    .await;
    let mut ids = vec![];
    let mut errors = vec![];
    for r in results {
        match r {
            Ok(id) => ids.push(id),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return FinalCheckpoint::Failed(errors.join("; "));
    }
    ids.sort_unstable();
    ids.dedup();
    match ids.as_slice() {
        [id] => FinalCheckpoint::Taken(*id),
        _ => FinalCheckpoint::Failed(format!("pods completed different checkpoints: {ids:?}")),
    }
}

/// The termination messages of the pods' runtime containers (current or last state).
pub fn termination_messages(pods: &[Pod]) -> Vec<(String, String)> {
    let mut out = vec![];
    for pod in pods {
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.clone())
            .unwrap_or_default();
        for c in statuses {
            let terminated = c
                .state
                .as_ref()
                .and_then(|s| s.terminated.clone())
                .or_else(|| c.last_state.as_ref().and_then(|s| s.terminated.clone()));
            if let Some(msg) = terminated.and_then(|t| t.message) {
                out.push((pod.metadata.name.clone().unwrap_or_default(), msg));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerting::notify::test_server::TestServer;

    fn target(base: &str) -> AdminTarget {
        AdminTarget {
            pod: "job-0".into(),
            base: Some(base.to_string()),
        }
    }

    #[test]
    fn targets_and_termination_messages_come_from_the_pod() {
        let pod: Pod = serde_yaml::from_str(
            r#"
metadata: {name: job-0}
status:
  podIP: 10.1.2.3
  conditions: [{type: Ready, status: "True"}]
  containerStatuses:
    - name: runtime
      ready: false
      restartCount: 3
      image: x
      imageID: y
      state: {waiting: {reason: CrashLoopBackOff}}
      lastState: {terminated: {exitCode: 1, message: "refusing to start without state: x"}}
"#,
        )
        .expect("pod");
        assert_eq!(
            AdminTarget::of(&pod).base,
            Some(format!("http://10.1.2.3:{ADMIN_PORT}"))
        );
        assert!(is_ready(&pod));
        assert_eq!(
            termination_messages(&[pod]),
            vec![(
                "job-0".to_string(),
                "refusing to start without state: x".to_string()
            )]
        );
    }

    #[tokio::test]
    async fn final_checkpoint_outcomes() {
        let http = reqwest::Client::new();
        let ok = TestServer::start(|r| {
            assert_eq!(r.path, "/checkpoint");
            assert_eq!(r.query.get("final").map(String::as_str), Some("true"));
            (200, r#"{"checkpointId": 42, "final": true}"#.into())
        })
        .await;
        let t = target(&ok.base);
        assert_eq!(
            final_checkpoint(&http, &[t.clone(), t], Duration::from_secs(5)).await,
            FinalCheckpoint::Taken(42)
        );
        let failing =
            TestServer::start(|_| (500, r#"{"error": "writing marker: disk full"}"#.into())).await;
        match final_checkpoint(&http, &[target(&failing.base)], Duration::from_secs(5)).await {
            FinalCheckpoint::Failed(why) => {
                assert!(why.contains("job-0") && why.contains("disk full"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        let stopped = TestServer::start(|r| {
            if r.path == "/status" {
                (
                    200,
                    r#"{"phase": "Finished", "lastCheckpoint": {"id": 17}}"#.into(),
                )
            } else {
                (
                    500,
                    r#"{"error": "the job is stopped; no more checkpoints"}"#.into(),
                )
            }
        })
        .await;
        assert_eq!(
            final_checkpoint(&http, &[target(&stopped.base)], Duration::from_secs(5)).await,
            FinalCheckpoint::Taken(17)
        );
        // a port nothing listens on
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = closed.local_addr().expect("addr");
        drop(closed);
        match final_checkpoint(
            &http,
            &[target(&format!("http://{addr}"))],
            Duration::from_secs(5),
        )
        .await
        {
            FinalCheckpoint::Failed(why) => assert!(why.contains("job-0"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            final_checkpoint(&http, &[], Duration::from_secs(1)).await,
            FinalCheckpoint::Skipped("no pod is running".into())
        );
    }

    #[tokio::test]
    async fn status_reports_are_parsed() {
        let http = reqwest::Client::new();
        let server = TestServer::start(|_| {
            (
                200,
                r#"{"job": "j", "phase": "Running", "restoredFrom": 7, "lastCheckpoint": {"id": 9, "completedAt": "2026-11-21T12:00:00Z", "size": 100, "path": "file:///c/ns/j/chk-9"}, "consecutiveCheckpointFailures": 0, "tasks": []}"#.into(),
            )
        })
        .await;
        let reports = pod_reports(&http, &[target(&server.base)], Duration::from_secs(5)).await;
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].restored_from, Some(7));
        assert_eq!(reports[0].last_checkpoint.as_ref().map(|c| c.id), Some(9));
    }
}
