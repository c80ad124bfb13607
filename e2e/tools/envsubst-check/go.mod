// Flux's envsubst and YAML round trip (the versions kustomize-controller v1.9.5 builds with:
// fluxcd/pkg/envsubst v1.7.1, sigs.k8s.io/yaml v1.6.0, go.yaml.in/yaml/v2 v2.4.4) as a JSON
// filter for tests/envsubst_flux.rs.
module envsubst-check

go 1.26.0

require (
	github.com/fluxcd/pkg/envsubst v1.7.1
	sigs.k8s.io/yaml v1.6.0
)

require go.yaml.in/yaml/v2 v2.4.4 // indirect
