//! The headless Service giving each runtime pod a stable DNS name and exposing its admin port.

use super::JobIdentity;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The runtime's admin port (/metrics, /healthz, /readyz, /status, /checkpoints).
pub const ADMIN_PORT: i32 = 8081;

/// Headless Service `<job>` selecting the job's pods, ready or not.
pub fn headless_service(id: &JobIdentity) -> Service {
    Service {
        metadata: id.child_meta(id.name.clone()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            selector: Some(id.selector()),
            publish_not_ready_addresses: Some(true),
            ports: Some(vec![ServicePort {
                name: Some("admin".to_string()),
                port: ADMIN_PORT,
                target_port: Some(IntOrString::String("admin".to_string())),
                protocol: Some("TCP".to_string()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{children, fixtures};
    use super::*;

    #[test]
    fn the_service_is_headless_and_selects_the_job_pods() {
        let svc = children(&fixtures::job("job.yaml")).expect("build").service;
        let spec = svc.spec.expect("spec");
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(
            spec.selector
                .as_ref()
                .and_then(|s| s.get(super::super::JOB_LABEL)),
            Some(&"bids".to_string())
        );
        assert_eq!(spec.ports.as_deref().map(|p| p[0].port), Some(ADMIN_PORT));
    }
}
