// Flux's envsubst (the version kustomize-controller v1.9.5 uses, through fluxcd/pkg/kustomize
// v1.35.6) as a JSON filter, for tests/envsubst_flux.rs: reads [{vars, input, strict}] on stdin,
// prints one [output, error] line per case.
module envsubst-check

go 1.26.0

require github.com/fluxcd/pkg/envsubst v1.7.1
