//! The operator process on a real cluster: it converges after being killed mid-reconcile, and
//! of two replicas sharing a Lease exactly one leads.

use anyhow::{ensure, Context as _, Result};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use kube::Client;
use std::time::Duration;
use weir_e2e::*;

const REVISION: &str = "weir.dev/revision";

async fn operator_pods(client: &Client, namespace: &str, release: &str) -> Result<Vec<Pod>> {
    Ok(Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={release}")))
        .await?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect())
}

async fn kill_pods(client: &Client, namespace: &str, pods: &[Pod]) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    for pod in pods {
        api.delete(pod.metadata.name.as_deref().unwrap_or_default(), &now)
            .await?;
    }
    Ok(())
}

#[tokio::test]
async fn killed_operator_converges_after_restart() -> Result<()> {
    if !enabled("killed_operator_converges_after_restart") {
        return Ok(());
    }
    let client = client().await?;
    shared_operator(&client).await?;
    let ns = TestNamespace::create(&client, "kill").await?;
    let ns = &ns.name;
    apply_job(&client, ns, &job_manifest("nexmark", 1)).await?;
    let old = operator_pods(&client, OPERATOR_NAMESPACE, OPERATOR_RELEASE).await?;
    ensure!(!old.is_empty(), "no operator pod found");
    // Edit and kill at once: the operator is mid-reconcile or has not seen the edit yet.
    let mut edited = job_manifest("nexmark", 2);
    edited["spec"]["pipeline"]["operators"][0]["filter"] = "e.type == 'person'".into();
    apply_job(&client, ns, &edited).await?;
    kill_pods(&client, OPERATOR_NAMESPACE, &old).await?;

    wait_operator_ready(&client, OPERATOR_NAMESPACE, OPERATOR_RELEASE).await?;
    let status = wait_observed(&client, ns, "nexmark").await?;
    let revision = status["revision"].as_str().unwrap_or_default().to_string();
    let sts = job_stateful_set(&client, ns, "nexmark")
        .await
        .map_err(anyhow::Error::msg)?
        .context("no StatefulSet after the restart")?;
    ensure!(template_annotation(&sts, REVISION).as_deref() == Some(revision.as_str()));
    ensure!(sts.spec.and_then(|s| s.replicas) == Some(2));
    wait_pods(&client, ns, "nexmark", 2, REVISION, &revision).await?;
    Ok(())
}

fn leader_gauge(metrics: &str) -> Option<i64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("weir_operator_leader "))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn two_replicas_elect_exactly_one_leader() -> Result<()> {
    if !enabled("two_replicas_elect_exactly_one_leader") {
        return Ok(());
    }
    let client = client().await?;
    // Two releases share one Lease. They run with hostNetwork on a single node, so each needs
    // its own admin port; that is why this is two releases rather than replicas=2.
    const NS: &str = "weir-e2e-ha";
    const LEASE: &str = "weir-e2e-ha";
    let jobs = TestNamespace::create(&client, "ha-jobs").await?;
    let replicas = [("weir-e2e-ha-a", 18081_u16), ("weir-e2e-ha-b", 18082_u16)];
    for (name, port) in replicas {
        install(
            &client,
            &Release {
                name,
                namespace: NS,
                admin_port: port,
                lease_name: LEASE,
                watch_namespaces: &[jobs.name.as_str()],
            },
        )
        .await?;
    }
    let result = check_one_leader(&client, NS, LEASE, &replicas).await;
    for (name, _) in replicas {
        let helm = repo_root().join("tests/cluster/helm.py");
        let _ = run(&helm.to_string_lossy(), &["uninstall", name, "-n", NS]);
    }
    result
}

async fn check_one_leader(
    client: &Client,
    ns: &str,
    lease: &str,
    replicas: &[(&str, u16)],
) -> Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let mut pods = vec![];
    for (release, _) in replicas {
        let p = operator_pods(client, ns, release).await?;
        ensure!(p.len() == 1, "release {release}: {} pods", p.len());
        pods.push(p[0].metadata.name.clone().unwrap_or_default());
    }
    let holder = wait_for(
        "a Lease holder among the replicas",
        Duration::from_secs(60),
        || async {
            let l = leases.get_opt(lease).await.map_err(|e| e.to_string())?;
            let holder = l
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity)
                .unwrap_or_default();
            if pods.contains(&holder) {
                Ok(Some(holder))
            } else {
                Err(format!("holder '{holder}', pods {pods:?}"))
            }
        },
    )
    .await?;
    // Exactly one leader gauge is 1, and it is the holder's.
    let gauges = wait_for(
        "both replicas' leader gauges",
        Duration::from_secs(30),
        || async {
            let mut gauges = vec![];
            for (_, port) in replicas {
                let text = http_get(*port, "/metrics")
                    .await
                    .map_err(|e| e.to_string())?;
                gauges.push(leader_gauge(&text).ok_or(text)?);
            }
            Ok(Some(gauges))
        },
    )
    .await?;
    ensure!(
        gauges.iter().filter(|g| **g == 1).count() == 1,
        "leader gauges {gauges:?}"
    );
    let leader_index = pods.iter().position(|p| *p == holder).unwrap_or_default();
    ensure!(
        gauges[leader_index] == 1,
        "holder {holder} but gauges {gauges:?}"
    );
    // The standby is ready too (it serves /readyz while waiting).
    for (_, port) in replicas {
        let readyz = http_get(*port, "/readyz").await?;
        ensure!(readyz.starts_with("HTTP/1.1 200"), "{readyz}");
    }

    // The leader goes away (SIGTERM releases the Lease): the standby takes over.
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    api.delete(&holder, &DeleteParams::default()).await?;
    let other = pods[1 - leader_index].clone();
    wait_for(
        "the standby to take the Lease over",
        Duration::from_secs(60),
        || async {
            let l = leases.get_opt(lease).await.map_err(|e| e.to_string())?;
            let now = l
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity)
                .unwrap_or_default();
            if now == other {
                Ok(Some(()))
            } else {
                Err(format!("holder '{now}'"))
            }
        },
    )
    .await?;
    let port = replicas[1 - leader_index].1;
    wait_for(
        "the new leader's gauge at 1",
        Duration::from_secs(30),
        || async {
            let text = http_get(port, "/metrics")
                .await
                .map_err(|e| e.to_string())?;
            if leader_gauge(&text) == Some(1) {
                Ok(Some(()))
            } else {
                Err(text)
            }
        },
    )
    .await
}
