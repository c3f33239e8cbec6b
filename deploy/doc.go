// Package deploy holds what it takes to run strangler somewhere else than
// a developer's machine, and the tests that keep it honest:
//
//   - kubernetes/: a kustomize base (Deployment, Service,
//     PodDisruptionBudget, ConfigMap, ServiceMonitor, PrometheusRule),
//     decoded strictly into the Kubernetes API types by kubernetes_test.go;
//   - image.sh: the container image with buildah, pulling nothing
//     (make image; image_test.go runs it, opt-in);
//   - release.sh: static release archives for linux/amd64 and linux/arm64
//     (make release; release_test.go checks them, opt-in).
//
// The package has no code of its own beyond this comment.
package deploy
