//! StreamJob lifecycle against a real cluster: deploy, edit, rescale, suspend/resume, restart,
//! delete, invalid and malformed specs. Each test uses its own namespace and job.

use anyhow::{ensure, Result};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::Client;
use std::time::Duration;
use weir_e2e::*;

const REVISION: &str = "weir.dev/revision";
const NONCE: &str = "weir.dev/restart-nonce";

async fn setup(test: &str) -> Result<Option<(Client, TestNamespace)>> {
    if !enabled(test) {
        return Ok(None);
    }
    let client = client().await?;
    shared_operator(&client).await?;
    let ns = TestNamespace::create(&client, test).await?;
    Ok(Some((client, ns)))
}

/// Deploys `job` and waits for its status revision and that many pods carrying it.
/// Waits for phase Running with `replicas` ready pods.
async fn wait_running(client: &Client, ns: &str, job: &str, replicas: i32) -> Result<()> {
    wait_for(
        &format!("phase Running with {replicas} ready replicas"),
        Duration::from_secs(120),
        || async {
            let s = job_status(client, ns, job).await?;
            if s["phase"] == "Running" && s["readyReplicas"] == replicas {
                Ok(Some(()))
            } else {
                Err(s.to_string())
            }
        },
    )
    .await
}

async fn deploy(client: &Client, ns: &str, job: &str, parallelism: i32) -> Result<String> {
    apply_job(client, ns, &job_manifest(job, parallelism)).await?;
    let status = wait_observed(client, ns, job).await?;
    let revision = status["revision"].as_str().unwrap_or_default().to_string();
    ensure!(!revision.is_empty(), "no revision in status {status}");
    wait_pods(
        client,
        ns,
        job,
        usize::try_from(parallelism)?,
        REVISION,
        &revision,
    )
    .await?;
    Ok(revision)
}

#[tokio::test]
async fn deploy_creates_children_and_status() -> Result<()> {
    let Some((client, ns)) = setup("deploy").await? else {
        return Ok(());
    };
    let ns = &ns.name;
    let revision = deploy(&client, ns, "nexmark", 2).await?;

    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get("nexmark-config")
        .await?;
    let config = cm
        .data
        .as_ref()
        .and_then(|d| d.get("job.yaml"))
        .cloned()
        .unwrap_or_default();
    let parsed = weir_crds::manifest::parse_stream_job("job.yaml", &config)?;
    ensure!(parsed.spec.parallelism == 2, "config: {config}");
    let svc = Api::<Service>::namespaced(client.clone(), ns)
        .get("nexmark")
        .await?;
    ensure!(
        svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None"),
        "service is not headless: {svc:?}"
    );
    let sts = job_stateful_set(&client, ns, "nexmark")
        .await
        .map_err(anyhow::Error::msg)?
        .ok_or_else(|| anyhow::anyhow!("no StatefulSet"))?;
    let spec = sts.spec.clone().unwrap_or_default();
    ensure!(spec.replicas == Some(2));
    ensure!(spec.pod_management_policy.as_deref() == Some("Parallel"));
    ensure!(template_annotation(&sts, REVISION).as_deref() == Some(revision.as_str()));
    for meta in [&cm.metadata, &svc.metadata, &sts.metadata] {
        let owner = meta.owner_references.clone().unwrap_or_default();
        ensure!(
            owner.len() == 1 && owner[0].kind == "StreamJob" && owner[0].name == "nexmark",
            "owner references: {owner:?}"
        );
    }
    let pods = job_pods(&client, ns, "nexmark")
        .await
        .map_err(anyhow::Error::msg)?;
    let pod_spec = pods[0].spec.clone().unwrap_or_default();
    let c = &pod_spec.containers[0];
    ensure!(c.image.as_deref() == Some(runtime_image().as_str()));
    ensure!(
        c.args.clone().unwrap_or_default() == ["worker", "--config", "/etc/weir/job.yaml"],
        "args: {:?}",
        c.args
    );
    let labels = pods[0].metadata.labels.clone().unwrap_or_default();
    ensure!(
        labels.get("team").map(String::as_str) == Some("e2e"),
        "{labels:?}"
    );

    let status = job_status(&client, ns, "nexmark")
        .await
        .map_err(anyhow::Error::msg)?;
    ensure!(
        condition(&status, "SpecValid").is_some_and(|c| c["status"] == "True"),
        "{status}"
    );
    ensure!(
        ["Deploying", "Running"].contains(&status["phase"].as_str().unwrap_or_default()),
        "{status}"
    );
    wait_event(&client, ns, "nexmark", "Normal", "Deploying").await?;
    Ok(())
}

/// Needs a runtime image whose `worker` serves /readyz on 8081.
#[tokio::test]
async fn pods_become_ready_and_the_job_running() -> Result<()> {
    let Some((client, ns)) = setup("running").await? else {
        return Ok(());
    };
    let ns = &ns.name;
    deploy(&client, ns, "nexmark", 2).await?;
    wait_running(&client, ns, "nexmark", 2).await?;
    // the plan the pods run, read from them: 4 generator partitions, a filter, no exchange
    wait_for("status.plan", Duration::from_secs(60), || async {
        let s = job_status(&client, ns, "nexmark").await?;
        let plan = &s["plan"];
        if plan["tasks"] == 4 && plan["stages"] == 1 && plan["keyGroups"] == 128 {
            Ok(Some(()))
        } else {
            Err(plan.to_string())
        }
    })
    .await?;
    ensure!(condition(
        &job_status(&client, ns, "nexmark")
            .await
            .map_err(anyhow::Error::msg)?,
        "Ready"
    )
    .is_some_and(|c| c["status"] == "True"));
    wait_event(&client, ns, "nexmark", "Normal", "Running").await?;
    Ok(())
}

#[tokio::test]
async fn spec_edit_rolls_out_a_new_revision() -> Result<()> {
    let Some((client, ns)) = setup("upgrade").await? else {
        return Ok(());
    };
    let ns = &ns.name;
    let r1 = deploy(&client, ns, "nexmark", 2).await?;
    let mut edited = job_manifest("nexmark", 2);
    edited["spec"]["pipeline"]["operators"][0]["filter"] = "e.type == 'auction'".into();
    apply_job(&client, ns, &edited).await?;
    let status = wait_observed(&client, ns, "nexmark").await?;
    let r2 = status["revision"].as_str().unwrap_or_default().to_string();
    ensure!(
        r2 != r1 && !r2.is_empty(),
        "revision did not change: {status}"
    );
    ensure!(
        ["Upgrading", "Running"].contains(&status["phase"].as_str().unwrap_or_default()),
        "{status}"
    );
    let pods = wait_pods(&client, ns, "nexmark", 2, REVISION, &r2).await?;
    ensure!(pods.len() == 2);
    let note = wait_event(&client, ns, "nexmark", "Normal", "Upgrading").await?;
    ensure!(note.contains(&r2), "{note}");
    Ok(())
}

#[tokio::test]
async fn parallelism_change_rescales() -> Result<()> {
    let Some((client, ns)) = setup("rescale").await? else {
        return Ok(());
    };
    let ns = &ns.name;
    deploy(&client, ns, "nexmark", 1).await?;
    apply_job(&client, ns, &job_manifest("nexmark", 3)).await?;
    let status = wait_observed(&client, ns, "nexmark").await?;
    let revision = status["revision"].as_str().unwrap_or_default().to_string();
    let pods = wait_pods(&client, ns, "nexmark", 3, REVISION, &revision).await?;
    for pod in &pods {
        let env = pod.spec.clone().unwrap_or_default().containers[0]
            .env
            .clone()
            .unwrap_or_default();
        let replicas = env
            .iter()
            .find(|e| e.name == "WEIR_REPLICAS")
            .and_then(|e| e.value.clone());
        ensure!(replicas.as_deref() == Some("3"), "{env:?}");
    }
    wait_event(&client, ns, "nexmark", "Normal", "Scaled").await?;
    Ok(())
}

#[tokio::test]
async fn suspend_scales_to_zero_and_resume_brings_pods_back() -> Result<()> {
    let Some((client, ns)) = setup("suspend").await? else {
        return Ok(());
    };
    let ns = &ns.name;
    let revision = deploy(&client, ns, "nexmark", 2).await?;
    // Suspend a running job: deleting a pod whose volumes are still being set up can leave it
    // Terminating for minutes on this kubelet (v1.20), which is not what this test is about.
    wait_running(&client, ns, "nexmark", 2).await?;
    let mut suspended = job_manifest("nexmark", 2);
    suspended["spec"]["state"] = "suspended".into();
    apply_job(&client, ns, &suspended).await?;
    wait_for(
        "phase Suspended with no pods",
        Duration::from_secs(120),
        || async {
            let s = job_status(&client, ns, "nexmark").await?;
            let pods = job_pods(&client, ns, "nexmark").await?;
            if s["phase"] == "Suspended" && pods.is_empty() {
                Ok(Some(()))
            } else {
                Err(format!("phase {} with {} pods", s["phase"], pods.len()))
            }
        },
    )
    .await?;
    let sts = job_stateful_set(&client, ns, "nexmark")
        .await
        .map_err(anyhow::Error::msg)?;
    ensure!(sts.and_then(|s| s.spec).and_then(|s| s.replicas) == Some(0));
    wait_event(&client, ns, "nexmark", "Normal", "Suspended").await?;

    apply_job(&client, ns, &job_manifest("nexmark", 2)).await?;
    wait_pods(&client, ns, "nexmark", 2, REVISION, &revision).await?;
    let status = wait_observed(&client, ns, "nexmark").await?;
    ensure!(
        status["revision"] == revision.as_str(),
        "resume changed the revision: {status}"
    );
    wait_for(
        "phase leaves Suspended",
        Duration::from_secs(60),
        || async {
            let s = job_status(&client, ns, "nexmark").await?;
            if ["Deploying", "Running"].contains(&s["phase"].as_str().unwrap_or_default()) {
                Ok(Some(()))
            } else {
                Err(s.to_string())
            }
        },
    )
    .await?;
    wait_event(&client, ns, "nexmark", "Normal", "Resumed").await?;
    Ok(())
}

#[tokio::test]
async fn restart_nonce_restarts_every_pod() -> Result<()> {
    let Some((client, ns)) = setup("restart").await? else {
        return Ok(());
    };
    let ns = &ns.name;
    deploy(&client, ns, "nexmark", 2).await?;
    wait_running(&client, ns, "nexmark", 2).await?;
    let before: Vec<_> = job_pods(&client, ns, "nexmark")
        .await
        .map_err(anyhow::Error::msg)?
        .into_iter()
        .filter_map(|p| p.metadata.uid)
        .collect();
    let mut restarted = job_manifest("nexmark", 2);
    restarted["spec"]["restartNonce"] = "first".into();
    apply_job(&client, ns, &restarted).await?;
    let pods = wait_pods(&client, ns, "nexmark", 2, NONCE, "first").await?;
    for pod in &pods {
        ensure!(
            !before.contains(pod.metadata.uid.as_ref().unwrap_or(&String::new())),
            "pod {:?} was not restarted",
            pod.metadata.name
        );
    }
    let status = wait_observed(&client, ns, "nexmark").await?;
    ensure!(status["observedRestartNonce"] == "first", "{status}");
    wait_event(&client, ns, "nexmark", "Normal", "Restarted").await?;
    Ok(())
}

#[tokio::test]
async fn delete_removes_children() -> Result<()> {
    let Some((client, ns)) = setup("delete").await? else {
        return Ok(());
    };
    let ns = &ns.name;
    deploy(&client, ns, "nexmark", 1).await?;
    stream_jobs(&client, ns)
        .delete("nexmark", &DeleteParams::default())
        .await?;
    wait_for(
        "job, children and pods gone",
        Duration::from_secs(120),
        || async {
            let job = stream_jobs(&client, ns)
                .get_opt("nexmark")
                .await
                .map_err(|e| e.to_string())?;
            let sts = job_stateful_set(&client, ns, "nexmark").await?;
            let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
                .get_opt("nexmark-config")
                .await
                .map_err(|e| e.to_string())?;
            let svc = Api::<Service>::namespaced(client.clone(), ns)
                .get_opt("nexmark")
                .await
                .map_err(|e| e.to_string())?;
            let pods = job_pods(&client, ns, "nexmark").await?;
            let left = (
                job.is_some(),
                sts.is_some(),
                cm.is_some(),
                svc.is_some(),
                pods.len(),
            );
            if left == (false, false, false, false, 0) {
                Ok(Some(()))
            } else {
                Err(format!("(job, sts, cm, svc, pods) = {left:?}"))
            }
        },
    )
    .await
}

#[tokio::test]
async fn invalid_spec_is_reported_and_running_pods_are_untouched() -> Result<()> {
    let Some((client, ns)) = setup("invalid").await? else {
        return Ok(());
    };
    let ns = &ns.name;
    let revision = deploy(&client, ns, "nexmark", 2).await?;
    let uids: Vec<_> = job_pods(&client, ns, "nexmark")
        .await
        .map_err(anyhow::Error::msg)?
        .into_iter()
        .filter_map(|p| p.metadata.uid)
        .collect();
    let phase_before = job_status(&client, ns, "nexmark")
        .await
        .map_err(anyhow::Error::msg)?["phase"]
        .clone();

    let mut invalid = job_manifest("nexmark", 2);
    invalid["spec"]["pipeline"]["operators"][0]["input"] = "nowhere".into();
    invalid["spec"]["pipeline"]["operators"][0]["filter"] = "e.type ==".into();
    apply_job(&client, ns, &invalid).await?;
    let status = wait_observed(&client, ns, "nexmark").await?;
    let spec_valid = condition(&status, "SpecValid").cloned().unwrap_or_default();
    ensure!(spec_valid["status"] == "False", "{status}");
    let message = spec_valid["message"].as_str().unwrap_or_default();
    ensure!(
        message.contains("spec.pipeline.operators[0].input"),
        "{message}"
    );
    ensure!(
        message.contains("spec.pipeline.operators[0].filter"),
        "{message}"
    );
    ensure!(
        status["phase"] != "Failed",
        "a deployed job must keep its phase: {status}"
    );
    ensure!(status["revision"] == revision.as_str(), "{status}");
    let note = wait_event(&client, ns, "nexmark", "Warning", "SpecInvalid").await?;
    ensure!(note.contains("spec.pipeline.operators[0].input"), "{note}");

    // Pods and StatefulSet untouched for a while.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let sts = job_stateful_set(&client, ns, "nexmark")
        .await
        .map_err(anyhow::Error::msg)?;
    ensure!(
        sts.as_ref()
            .and_then(|s| template_annotation(s, REVISION))
            .as_deref()
            == Some(revision.as_str())
    );
    let now: Vec<_> = job_pods(&client, ns, "nexmark")
        .await
        .map_err(anyhow::Error::msg)?
        .into_iter()
        .filter_map(|p| p.metadata.uid)
        .collect();
    ensure!(now == uids, "pods changed: {uids:?} -> {now:?}");
    let phase_now = job_status(&client, ns, "nexmark")
        .await
        .map_err(anyhow::Error::msg)?["phase"]
        .clone();
    ensure!(
        phase_now == phase_before || phase_now == "Running",
        "{phase_before} -> {phase_now}"
    );

    // Specs Kubernetes or the runtime's CEL would only refuse later: caught now, pods untouched.
    let mut later = job_manifest("nexmark", 2);
    later["spec"]["pipeline"]["operators"][0]["filter"] = "lower(e.type) == 'bid'".into();
    later["spec"]["resources"] = serde_json::json!({"limits": {"memory": "1GB"}});
    later["spec"]["alerting"] = serde_json::json!({"rules": {
        "backpressureHigh": {"warning": 0.95},
        "noSuchRule": {"disabled": true}
    }});
    apply_job(&client, ns, &later).await?;
    let status = wait_for(
        "SpecValid=False naming the new checks' fields",
        Duration::from_secs(60),
        || async {
            let s = job_status(&client, ns, "nexmark").await?;
            let c = condition(&s, "SpecValid").cloned().unwrap_or_default();
            if c["status"] == "False"
                && c["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("spec.resources.limits.memory"))
            {
                Ok(Some(s))
            } else {
                Err(s.to_string())
            }
        },
    )
    .await?;
    let message = condition(&status, "SpecValid").cloned().unwrap_or_default()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for field in [
        "spec.pipeline.operators[0].filter",
        "spec.alerting.rules.backpressureHigh.warning",
        "spec.alerting.rules.noSuchRule",
    ] {
        ensure!(message.contains(field), "{field} not named: {message}");
    }
    ensure!(message.contains("lower"), "{message}");
    let still: Vec<_> = job_pods(&client, ns, "nexmark")
        .await
        .map_err(anyhow::Error::msg)?
        .into_iter()
        .filter_map(|p| p.metadata.uid)
        .collect();
    ensure!(still == uids, "pods changed: {uids:?} -> {still:?}");

    // A name too long for the pods Kubernetes would create: refused before any exists.
    let long_name = "n".repeat(53);
    let mut long = job_manifest(&long_name, 1);
    long["metadata"]["name"] = long_name.clone().into();
    apply_job(&client, ns, &long).await?;
    let status = wait_observed(&client, ns, &long_name).await?;
    let c = condition(&status, "SpecValid").cloned().unwrap_or_default();
    ensure!(
        c["status"] == "False"
            && c["message"]
                .as_str()
                .is_some_and(|m| m.contains("metadata.name")),
        "{status}"
    );
    ensure!(
        job_stateful_set(&client, ns, &long_name)
            .await
            .map_err(anyhow::Error::msg)?
            .is_none(),
        "a StatefulSet was created for {long_name}"
    );

    // A job that was never deployed fails.
    let mut fresh = invalid.clone();
    fresh["metadata"]["name"] = "fresh".into();
    apply_job(&client, ns, &fresh).await?;
    let status = wait_observed(&client, ns, "fresh").await?;
    ensure!(status["phase"] == "Failed", "{status}");
    ensure!(job_stateful_set(&client, ns, "fresh")
        .await
        .map_err(anyhow::Error::msg)?
        .is_none());
    Ok(())
}

#[tokio::test]
async fn a_malformed_job_does_not_block_a_valid_one() -> Result<()> {
    let Some((client, ns)) = setup("malformed").await? else {
        return Ok(());
    };
    let ns = &ns.name;
    // Passes the schema's duration pattern, but overflows when deserialised.
    let mut malformed = job_manifest("broken", 1);
    malformed["spec"]["checkpoint"]["interval"] = "99999999999999999999s".into();
    apply_job(&client, ns, &malformed).await?;
    deploy(&client, ns, "nexmark", 1).await?;

    let status = wait_observed(&client, ns, "broken").await?;
    let spec_valid = condition(&status, "SpecValid").cloned().unwrap_or_default();
    ensure!(spec_valid["status"] == "False", "{status}");
    ensure!(
        spec_valid["message"]
            .as_str()
            .unwrap_or_default()
            .contains("spec.checkpoint.interval"),
        "{spec_valid}"
    );
    ensure!(status["phase"] == "Failed", "{status}");
    wait_event(&client, ns, "broken", "Warning", "SpecInvalid").await?;

    // The valid job keeps being reconciled after the malformed one: edit it.
    apply_job(&client, ns, &job_manifest("nexmark", 2)).await?;
    let status = wait_observed(&client, ns, "nexmark").await?;
    let revision = status["revision"].as_str().unwrap_or_default().to_string();
    wait_pods(&client, ns, "nexmark", 2, REVISION, &revision).await?;
    Ok(())
}

/// An upgrade to a spec whose pods crash (the runtime refuses an invalid `WEIR_ADMIN_PORT`
/// from `podTemplate.env` and exits) goes `Failed` once `spec.upgrade.progressDeadline` (40 s)
/// passes, with the crash and the container's termination message in status, a Warning event
/// and a critical `deployFailed` alert delivered to the critical subscriber — although the
/// job was Upgrading and no task of the new revision ever reported.
#[tokio::test]
async fn an_upgrade_whose_pods_crash_fails_at_its_progress_deadline_and_pages() -> Result<()> {
    if !enabled("deadline") {
        return Ok(());
    }
    if runtime_image().contains("standin") {
        println!("deadline: skipped: needs the real runtime's refusal of a bad WEIR_ADMIN_PORT, WEIR_E2E_RUNTIME_IMAGE is the stand-in");
        return Ok(());
    }
    let client = client().await?;
    run(
        "kubectl",
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager",
            TEST_MANAGER,
            "-f",
            "crds/alertsubscription.yaml",
        ],
    )?;
    shared_operator(&client).await?;
    let ns = TestNamespace::create(&client, "deadline").await?;
    let ns = &ns.name;

    let (port, received) = weir_e2e::webhook::start().await?;
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "critical-hook"},
        "stringData": {"url": format!("http://127.0.0.1:{port}/critical")},
    });
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), ns)
        .patch(
            "critical-hook",
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await?;
    let subscription = serde_json::json!({
        "apiVersion": "weir.dev/v1alpha1",
        "kind": "AlertSubscription",
        "metadata": {"name": "oncall"},
        "spec": {
            "selector": {"matchLabels": {"team": "e2e"}},
            "minSeverity": "critical",
            "channels": [{"name": "hook", "webhook": {"urlSecret": {"name": "critical-hook", "key": "url"}}}]
        }
    });
    let subscriptions: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::erase::<weir_crds::AlertSubscription>(&()),
    );
    subscriptions
        .patch(
            "oncall",
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(&subscription),
        )
        .await?;

    let mut job = job_manifest("nexmark", 1);
    job["spec"]["upgrade"] = serde_json::json!({"progressDeadline": "40s"});
    apply_job(&client, ns, &job).await?;
    wait_for("phase Running", Duration::from_secs(180), || async {
        let s = job_status(&client, ns, "nexmark").await?;
        if s["phase"] == "Running" {
            Ok(Some(()))
        } else {
            Err(s.to_string())
        }
    })
    .await?;

    let mut crashing = job.clone();
    crashing["spec"]["podTemplate"]["env"] = serde_json::json!([
        {"name": "RUST_LOG", "value": "info"},
        {"name": "WEIR_ADMIN_PORT", "value": "not-a-port"}
    ]);
    apply_job(&client, ns, &crashing).await?;
    let status = wait_for(
        "phase Failed by the progress deadline",
        Duration::from_secs(180),
        || async {
            let s = job_status(&client, ns, "nexmark").await?;
            if s["phase"] == "Failed" {
                Ok(Some(s))
            } else {
                Err(s.to_string())
            }
        },
    )
    .await?;
    let failure = &status["progress"]["failure"];
    ensure!(failure["reason"] == "CrashLoop", "{status}");
    ensure!(
        failure["message"]
            .as_str()
            .unwrap_or_default()
            .contains("WEIR_ADMIN_PORT"),
        "the container's termination message is the reason: {status}"
    );
    // Not before the deadline: the transition started at least 40 s before it failed.
    let progress: weir_crds::stream_job::ProgressStatus =
        serde_json::from_value(status["progress"].clone())?;
    let waited = progress
        .failure
        .as_ref()
        .map(|f| (f.time - progress.started_at).num_seconds())
        .unwrap_or_default();
    ensure!(
        waited >= 40 && progress.step == "Upgrading",
        "failed {waited}s after the upgrade started: {status}"
    );
    let ready = condition(&status, "Ready").cloned().unwrap_or_default();
    ensure!(
        ready["status"] == "False" && ready["reason"] == "ProgressDeadlineExceeded",
        "{ready}"
    );
    let note = wait_event(
        &client,
        ns,
        "nexmark",
        "Warning",
        "ProgressDeadlineExceeded",
    )
    .await?;
    ensure!(
        note.contains("Upgrading did not complete within the progress deadline of 40s")
            && note.contains("WEIR_ADMIN_PORT"),
        "{note}"
    );
    wait_for(
        "a critical deployFailed webhook",
        Duration::from_secs(120),
        || async {
            let bodies = weir_e2e::webhook::bodies_to(&received, "/critical");
            if bodies.iter().any(|b| b.contains("deployFailed")) {
                Ok(Some(()))
            } else {
                Err(format!("{bodies:?}"))
            }
        },
    )
    .await?;
    Ok(())
}

/// With `spec.upgrade.rollback: true`, the same crashing upgrade goes back to the revision that
/// ran before: `status.rollback` names the failed generation and why, the pods run the old
/// revision again restored from a checkpoint (restore record reason `rollback`), and the failed
/// generation is not tried again while the spec stays the same.
#[tokio::test]
async fn a_failed_upgrade_rolls_back_to_the_last_stable_revision() -> Result<()> {
    let Some((client, ns)) = setup("rollback").await? else {
        return Ok(());
    };
    if runtime_image().contains("standin") {
        println!("rollback: skipped: needs the real runtime's refusal of a bad WEIR_ADMIN_PORT, WEIR_E2E_RUNTIME_IMAGE is the stand-in");
        return Ok(());
    }
    let ns = &ns.name;
    let mut job = job_manifest("nexmark", 1);
    job["spec"]["upgrade"] = serde_json::json!({"progressDeadline": "40s", "rollback": true});
    apply_job(&client, ns, &job).await?;
    let running = wait_for(
        "phase Running with a stable revision kept",
        Duration::from_secs(180),
        || async {
            let s = job_status(&client, ns, "nexmark").await?;
            if s["phase"] == "Running" && s["lastStable"]["revision"].is_string() {
                Ok(Some(s))
            } else {
                Err(s.to_string())
            }
        },
    )
    .await?;
    let stable = running["revision"].as_str().unwrap_or_default().to_string();
    ensure!(
        running["lastStable"]["revision"] == stable.as_str(),
        "{running}"
    );

    let mut crashing = job.clone();
    crashing["spec"]["podTemplate"]["env"] = serde_json::json!([
        {"name": "RUST_LOG", "value": "info"},
        {"name": "WEIR_ADMIN_PORT", "value": "not-a-port"}
    ]);
    apply_job(&client, ns, &crashing).await?;
    let generation = stream_jobs(&client, ns)
        .get("nexmark")
        .await?
        .metadata
        .generation;
    let status = wait_for(
        "rolled back: Running on the stable revision",
        Duration::from_secs(240),
        || async {
            let s = job_status(&client, ns, "nexmark").await?;
            if s["rollback"]["failedGeneration"].as_i64() == generation
                && s["phase"] == "Running"
                && s["revision"] == stable.as_str()
            {
                Ok(Some(s))
            } else {
                Err(s.to_string())
            }
        },
    )
    .await?;
    let rollback = &status["rollback"];
    ensure!(rollback["toRevision"] == stable.as_str(), "{status}");
    ensure!(
        rollback["reason"]
            .as_str()
            .is_some_and(|r| r.contains("WEIR_ADMIN_PORT")),
        "{status}"
    );
    let last = status["restores"]
        .as_array()
        .and_then(|r| r.last())
        .cloned()
        .unwrap_or_default();
    ensure!(
        last["reason"] == "rollback" && last["revision"] == stable.as_str(),
        "{status}"
    );
    wait_event(&client, ns, "nexmark", "Warning", "RollingBack").await?;
    let pods = wait_pods(&client, ns, "nexmark", 1, REVISION, &stable).await?;
    ensure!(pods.len() == 1);
    // The failed generation is not tried again: still the stable revision a while later.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let later = job_status(&client, ns, "nexmark")
        .await
        .map_err(anyhow::Error::msg)?;
    ensure!(
        later["revision"] == stable.as_str() && later["phase"] == "Running",
        "{later}"
    );
    Ok(())
}
